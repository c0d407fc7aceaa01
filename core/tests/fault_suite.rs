//! The seeded fault suite: every nemesis, several seeds, each run checked for linearizability,
//! lost or doubled acknowledged writes, and recovery after healing — and proof that the checks
//! bite when a guarantee is switched off.
//!
//! Seeds per nemesis: `SCALESTORE_SUITE_SEEDS` (default 4); a failure prints the seed and the
//! command that replays it.

use std::time::Duration;

use scalestore::suite::{run, Nemesis, RunOptions};
use scalestore::TestSwitches;

fn seeds() -> Vec<u64> {
    let n: u64 = std::env::var("SCALESTORE_SUITE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    (1..=n).collect()
}

/// One run at a time: a run's clusters get the machine (2 cores) to themselves, as in a soak,
/// so elections and timeouts are the nemesis's doing, not other runs'.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_run_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME.lock().await
}

async fn assert_nemesis_passes(nemesis: Nemesis) {
    let _alone = one_run_at_a_time().await;
    for seed in seeds() {
        let report = run(RunOptions {
            nemesis,
            seed,
            duration: Duration::from_secs(3),
            ..Default::default()
        })
        .await
        .expect("run");
        println!("{report}");
        assert!(
            report.passed(),
            "{report}\nreplay: scripts/soak.sh --nemesis {nemesis} --seed {seed} --seconds 0"
        );
        assert!(
            report.operations > 20,
            "the clients got work done: {report}"
        );
        if nemesis == Nemesis::SnapshotStorm {
            assert!(
                report.snapshots_installed > 0,
                "restarted nodes caught up by snapshot: {report}"
            );
        }
    }
}

macro_rules! nemesis_test {
    ($name:ident, $nemesis:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            assert_nemesis_passes($nemesis).await;
        }
    };
}

nemesis_test!(histories_stay_linearizable_without_faults, Nemesis::None);
nemesis_test!(
    histories_stay_linearizable_while_partitions_move_leaders,
    Nemesis::MovingPartitions
);
nemesis_test!(
    histories_stay_linearizable_under_many_partitions,
    Nemesis::ManyPartitions
);
nemesis_test!(
    histories_stay_linearizable_through_crashes_and_restarts,
    Nemesis::CrashRestart
);
nemesis_test!(
    histories_stay_linearizable_when_every_node_crashes_at_once,
    Nemesis::CrashAll
);
nemesis_test!(
    histories_stay_linearizable_over_a_lossy_reordering_network,
    Nemesis::LossyNetwork
);
nemesis_test!(
    histories_stay_linearizable_while_nodes_join_leave_and_r_changes,
    Nemesis::Membership
);
nemesis_test!(
    histories_stay_linearizable_when_the_manager_leader_crashes_mid_move,
    Nemesis::ManagerCrash
);
nemesis_test!(
    histories_stay_linearizable_and_sessions_live_while_clocks_jump,
    Nemesis::ClockJumps
);
nemesis_test!(
    histories_stay_linearizable_while_leaders_change_during_membership_changes,
    Nemesis::LeaderChangesDuringMembership
);
nemesis_test!(
    histories_stay_linearizable_through_a_snapshot_storm,
    Nemesis::SnapshotStorm
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_linearizable_reads_answered_without_read_index() {
    let _alone = one_run_at_a_time().await;
    for seed in 1..=6 {
        let report = run(RunOptions {
            nemesis: Nemesis::MovingPartitions,
            seed,
            duration: Duration::from_secs(3),
            testing: TestSwitches {
                unsafe_local_linearizable_reads: true,
            },
            ..Default::default()
        })
        .await
        .expect("run");
        println!("{report}");
        if !report.verdict.is_linearizable() {
            return;
        }
    }
    panic!("local reads without ReadIndex went unnoticed in 6 runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_catches_acknowledged_writes_lost_without_log_sync() {
    let _alone = one_run_at_a_time().await;
    for seed in 1..=6 {
        let report = run(RunOptions {
            nemesis: Nemesis::CrashAll,
            seed,
            duration: Duration::from_secs(3),
            sync: false,
            ..Default::default()
        })
        .await
        .expect("run");
        println!("{report}");
        if !report.lost_appends.is_empty() || !report.verdict.is_linearizable() {
            return;
        }
    }
    panic!("skipping the log sync went unnoticed in 6 runs");
}
