//! The seeded fault suite: every nemesis, several seeds, each run checked for linearizability,
//! lost or doubled acknowledged writes, and recovery after healing — and proof that the checks
//! bite when a guarantee is switched off.
//!
//! Seeds per nemesis: `SCALESTORE_SUITE_SEEDS` (default 4); a failure prints the seed and the
//! command that replays it.
//!
//! The deterministic mode (one thread, virtual time, one seeded random source) is tested at the
//! end: a seed run twice in fresh processes gives the same digest, another seed another one, a
//! stray draw from the OS's randomness breaks that, and the bite tests bite there too.

use std::time::Duration;

use scalestore::suite::{run, run_deterministic_with, Nemesis, RunOptions};
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
nemesis_test!(
    histories_stay_linearizable_when_nodes_with_slow_fsyncs_crash,
    Nemesis::SlowSyncCrashes
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
                ..Default::default()
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
            // No snapshot: each one flushes every apply before it to disk, so a crash right
            // after one loses nothing even without the log sync (the weakness that made the
            // integration test's crash check miss now and then).
            snapshot_every: u64::MAX / 2,
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

/// What a deterministic child run was asked to do (`SCALESTORE_REPLAY_CHILD`), run in this
/// process: `<nemesis> <seed> <stray: 0|1>`. It prints its report and `digest: <hex>`.
const CHILD: &str = "SCALESTORE_REPLAY_CHILD";

#[test]
fn replay_child() {
    let Ok(spec) = std::env::var(CHILD) else {
        return; // Only does anything in a child started by the tests below.
    };
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let nemesis: Nemesis = parts[0].parse().expect("nemesis");
    let run = run_deterministic_with(RunOptions {
        nemesis,
        seed: parts[1].parse().expect("seed"),
        testing: TestSwitches {
            stray_random: parts[2] == "1",
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("run");
    println!("report: {}", run.report);
    println!("draws: {}", run.draws);
    println!("digest: {}", run.digest);
}

/// Runs one deterministic scenario in a fresh process; returns its digest and report line.
fn run_in_fresh_process(nemesis: Nemesis, seed: u64, stray: bool) -> (String, String) {
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "replay_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{nemesis} {seed} {}", u8::from(stray)))
        .output()
        .expect("child");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "child {nemesis} {seed} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(prefix).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
            .to_string()
    };
    (line("digest: "), line("report: "))
}

#[test]
fn one_seed_run_twice_in_fresh_processes_gives_identical_digests_and_two_seeds_different_ones() {
    let _alone = ONE_RUN_AT_A_TIME.blocking_lock();
    for nemesis in [
        Nemesis::None,
        Nemesis::LossyNetwork,
        Nemesis::CrashRestart,
        Nemesis::CrashAll,
        Nemesis::Membership,
    ] {
        let (first, report) = run_in_fresh_process(nemesis, 11, false);
        println!("{report}\ndigest: {first}");
        assert!(report.ends_with("PASS"), "{report}");
        let (again, _) = run_in_fresh_process(nemesis, 11, false);
        assert_eq!(first, again, "{nemesis}: seed 11 replayed differently");
        let (other, report) = run_in_fresh_process(nemesis, 12, false);
        println!("{report}\ndigest: {other}");
        assert_ne!(first, other, "{nemesis}: seeds 11 and 12 gave one digest");
    }
}

#[test]
fn a_stray_random_draw_in_the_message_path_makes_one_seed_replay_differently() {
    let _alone = ONE_RUN_AT_A_TIME.blocking_lock();
    let (first, _) = run_in_fresh_process(Nemesis::LossyNetwork, 11, true);
    let (again, _) = run_in_fresh_process(Nemesis::LossyNetwork, 11, true);
    assert_ne!(
        first, again,
        "a draw from the OS's randomness went unnoticed by the replay check"
    );
}

#[test]
fn the_deterministic_mode_catches_linearizable_reads_answered_without_read_index() {
    let _alone = ONE_RUN_AT_A_TIME.blocking_lock();
    // Fixed seeds tried in order: a deterministic run is the same run every time, but a change
    // to the schedule (a timing, a backoff) moves where a fault shows, so one seed alone would
    // pin the test to today's code. Across seeds 1-12 the fault showed on 10.
    let mut runs = Vec::new();
    for seed in BROKEN_READS_SEEDS {
        let run = run_deterministic_with(RunOptions {
            nemesis: Nemesis::MovingPartitions,
            seed,
            testing: TestSwitches {
                unsafe_local_linearizable_reads: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("run");
        println!("{}", run.report);
        if !run.report.verdict.is_linearizable() {
            return;
        }
        runs.push(run.report.to_string());
    }
    panic!("local reads without ReadIndex went unnoticed: {runs:#?}");
}

#[test]
fn the_deterministic_mode_catches_acknowledged_writes_lost_without_log_sync() {
    let _alone = ONE_RUN_AT_A_TIME.blocking_lock();
    let run = run_deterministic_with(RunOptions {
        nemesis: Nemesis::CrashAll,
        seed: SKIPPED_SYNC_SEED,
        sync: false,
        ..Default::default()
    })
    .expect("run");
    println!("{}", run.report);
    assert!(
        !run.report.lost_appends.is_empty() || !run.report.verdict.is_linearizable(),
        "skipping the log sync went unnoticed: {}",
        run.report
    );
}

/// Fixed seeds on which the bite tests' faults show (a deterministic run is the same run on
/// every machine and every time).
const BROKEN_READS_SEEDS: [u64; 5] = [1, 2, 3, 4, 5];
const SKIPPED_SYNC_SEED: u64 = 1;
