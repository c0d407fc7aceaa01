//! A large shard reaches a new replica by snapshot in bounded memory. Its own test binary, so
//! the process's resident memory is this test's alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalestore::{ClusterOptions, EmbeddedCluster, ManagerOptions, RaftTiming};

/// Resident set size of this process, in bytes (Linux).
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_a_200_mb_shard_installs_on_a_new_replica_in_bounded_memory() {
    const MB: u64 = 1024 * 1024;
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 4,
        shards: 1,
        replication: Some(3),
        timing: RaftTiming {
            snapshot_logs_since_last: 50,
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        },
        manager: ManagerOptions {
            dead_node_timeout: Duration::from_secs(600),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("start");
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    // 210 values of 1,000,000 bytes: a 200 MB shard, written 8 at a time.
    let client = cluster.client();
    let value = Arc::new(vec![b'x'; 1_000_000]);
    let mut next = 0;
    while next < 210 {
        let writes = (next..(next + 8).min(210)).map(|i| {
            let (client, value) = (client.clone(), value.clone());
            async move { client.put(format!("big-{i:03}"), value.as_slice()).await }
        });
        for w in futures::future::join_all(writes).await {
            w.expect("put");
        }
        next += 8;
    }
    // The log behind the newest snapshot is purged: a new replica can only start from it.
    // Where a snapshot falls depends on how applies were batched (one every 50 entries or
    // more), so small writes follow until the next snapshot is due (50 entries past the last
    // one), then none while it is built and the log is purged.
    let leader = cluster
        .wait_for_leader(0, Duration::from_secs(10))
        .await
        .expect("leader");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut filler = 0;
    loop {
        let status = cluster
            .node(leader)
            .expect("node")
            .status(0)
            .expect("status");
        if status.purged_index.unwrap_or(0) + 20 >= status.applied_index.unwrap_or(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot purged the log: {status:?}"
        );
        let applied = status.applied_index.unwrap_or(0);
        if applied < status.snapshot_index.unwrap_or(0) + 50 {
            client
                .put(format!("filler-{filler:03}"), b"f".as_slice())
                .await
                .expect("filler put");
            filler += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let baseline = vm_rss();
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(vm_rss(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    cluster.set_replication(4).await.expect("R=4");
    cluster
        .wait_until_settled(Duration::from_secs(300))
        .await
        .expect("settled");
    cluster
        .wait_for_replication(0, Duration::from_secs(300))
        .await
        .expect("the new replica caught up");
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");

    let new_node = 4;
    let installed = cluster
        .storage_stats(new_node)
        .expect("stats")
        .snapshots_installed
        .load(Ordering::SeqCst);
    assert!(
        installed >= 1,
        "the new replica came by snapshot: {:?} {:?}",
        cluster.map().shards,
        cluster.node(new_node).expect("node").status(0)
    );
    let rows = cluster
        .node(new_node)
        .expect("node")
        .store()
        .expect("store")
        .scan_group(0)
        .expect("scan");
    assert_eq!(
        rows.len(),
        210 + filler,
        "every value reached the new replica"
    );
    let growth = peak.load(Ordering::SeqCst).saturating_sub(baseline);
    println!(
        "200 MB shard installed on node {new_node} in {took:?}: VmRSS {} MB before, peak {} MB, growth {} MB",
        baseline / MB,
        peak.load(Ordering::SeqCst) / MB,
        growth / MB
    );
    assert!(
        growth < 150 * MB,
        "memory grew by {} MB during the install",
        growth / MB
    );
    cluster.shutdown().await.expect("shutdown");
}
