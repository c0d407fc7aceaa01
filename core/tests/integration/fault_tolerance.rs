//! Crashes, partitions and lost messages: what "fault tolerant" means, in tests that would fail
//! if it were not true.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scalestore::network::AdminRequest;
use scalestore::protocol::{ClientRequest, ClientResponse};
use scalestore::{
    Client, ClientOptions, ClusterOptions, EmbeddedCluster, Error, ManagerOptions, NetworkFaults,
    NodeId, RaftTiming, ReadConsistency, StorageOptions, META_GROUP,
};

const WAIT: Duration = Duration::from_secs(30);

async fn start_with(nodes: usize, f: impl FnOnce(&mut ClusterOptions)) -> EmbeddedCluster {
    let mut options = ClusterOptions {
        shards: 1,
        replication: Some(nodes),
        nodes,
        ..Default::default()
    };
    f(&mut options);
    let cluster = EmbeddedCluster::start(options).await.expect("start");
    cluster.wait_for_leader(0, WAIT).await.expect("leader");
    cluster
}

/// A client of `cluster` pinned to `node` that gives up after `timeout`.
fn pinned_with_timeout(cluster: &EmbeddedCluster, node: u64, timeout: Duration) -> Client {
    let options = ClientOptions {
        timeout,
        ..Default::default()
    };
    Client::new(cluster.transport(), options)
        .pinned_to(node)
        .expect("pin")
}

/// What `node`'s replica of shard 0 holds for `key` (`None` also while it installs a
/// snapshot: its reads are refused, retryably, until the install is whole).
fn stale_value(cluster: &EmbeddedCluster, node: u64, key: &str) -> Option<Vec<u8>> {
    match cluster
        .node(node)
        .expect("node")
        .store()
        .expect("store")
        .get(0, key.as_bytes())
    {
        Ok(v) => v,
        Err(Error::Unavailable(_)) => None,
        Err(e) => panic!("get {key} on node {node}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_leader_is_elected_after_the_leader_crashes() {
    let cluster = start_with(3, |_| {}).await;
    let client = cluster.client();
    client.put("before", "1").await.expect("put");
    let old = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    cluster.crash_node(old).await.expect("crash");
    let new = cluster.wait_for_leader(0, WAIT).await.expect("new leader");
    assert_ne!(new, old, "a surviving node leads");
    client
        .put("after", "2")
        .await
        .expect("write under the new leader");
    assert_eq!(
        client.get("before").await.expect("get"),
        Some(b"1".to_vec()),
        "nothing lost"
    );
    cluster.restart_node(old).await.expect("restart");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("caught up");
    assert_eq!(
        stale_value(&cluster, old, "after"),
        Some(b"2".to_vec()),
        "restarted node caught up"
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_minority_cannot_commit_or_read_while_majority_works_then_converges() {
    let cluster = start_with(5, |_| {}).await;
    let client = cluster.client();
    client.put("k", "old").await.expect("put");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let others: Vec<u64> = cluster
        .node_ids()
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    let minority = [leader, others[0]];
    let majority = [others[1], others[2], others[3]];
    cluster.faults().partition(&[&minority, &majority]);

    let stuck = pinned_with_timeout(&cluster, leader, Duration::from_millis(1500));
    let err = stuck
        .put("minority", "x")
        .await
        .expect_err("minority cannot commit");
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Unavailable(_)),
        "{err}"
    );
    let err = stuck
        .get("k")
        .await
        .expect_err("minority cannot serve a linearizable read");
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Unavailable(_)),
        "{err}"
    );

    let majority_client = cluster.client_pinned(majority[0]).expect("pin");
    majority_client
        .put("k", "new")
        .await
        .expect("majority keeps working");
    assert_eq!(
        majority_client.get("k").await.expect("get"),
        Some(b"new".to_vec())
    );

    cluster.faults().heal();
    cluster
        .wait_for_leader(0, WAIT)
        .await
        .expect("one leader after heal");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("converged");
    for n in cluster.node_ids() {
        assert_eq!(
            stale_value(&cluster, n, "k"),
            Some(b"new".to_vec()),
            "node {n} converged"
        );
        assert_eq!(
            stale_value(&cluster, n, "minority"),
            None,
            "node {n}: uncommitted write discarded"
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_read_from_a_partitioned_follower_can_be_old_while_linearizable_cannot() {
    let cluster = start_with(3, |_| {}).await;
    let client = cluster.client();
    client.put("x", "1").await.expect("put");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("follower");
    cluster.faults().isolate(follower);
    client.put("x", "2").await.expect("majority writes");

    let pinned = pinned_with_timeout(&cluster, follower, Duration::from_millis(1500));
    assert_eq!(
        pinned
            .get_with("x", ReadConsistency::Stale)
            .await
            .expect("stale read"),
        Some(b"1".to_vec()),
        "a stale read may return old data"
    );
    match pinned.get("x").await {
        Ok(v) => assert_eq!(
            v,
            Some(b"2".to_vec()),
            "a linearizable read never returns old data"
        ),
        Err(e) => assert!(
            matches!(e, Error::Timeout { .. } | Error::Unavailable(_)),
            "{e}"
        ),
    }
    cluster.faults().heal();
    cluster.wait_for_replication(0, WAIT).await.expect("healed");
    assert_eq!(
        pinned
            .get_with("x", ReadConsistency::Stale)
            .await
            .expect("stale read"),
        Some(b"2".to_vec())
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_follower_restarts_and_catches_up_from_the_log() {
    let cluster = start_with(3, |_| {}).await;
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("follower");
    cluster.crash_node(follower).await.expect("crash");
    let client = cluster.client();
    for i in 0..100 {
        client
            .put(format!("k{i}"), format!("v{i}"))
            .await
            .expect("put with one node down");
    }
    cluster.restart_node(follower).await.expect("restart");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("caught up");
    for i in 0..100 {
        assert_eq!(
            stale_value(&cluster, follower, &format!("k{i}")),
            Some(format!("v{i}").into_bytes())
        );
    }
    let stats = cluster.storage_stats(follower).expect("stats");
    assert_eq!(
        stats.snapshots_installed.load(Ordering::SeqCst),
        0,
        "the log sufficed"
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_far_behind_is_brought_up_by_a_snapshot() {
    let (cluster, leader, follower) = start_with_a_crashed_follower().await;
    let client = cluster.client();
    for i in 0..300 {
        client
            .append(format!("k{}", i % 30), "x")
            .await
            .expect("append");
    }
    wait_until_purged_past(&cluster, leader, 100).await;
    cluster.restart_node(follower).await.expect("restart");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("caught up");
    let stats = cluster.storage_stats(follower).expect("stats");
    assert!(
        stats.snapshots_installed.load(Ordering::SeqCst) >= 1,
        "caught up by snapshot"
    );
    for i in 0..30 {
        assert_eq!(
            stale_value(&cluster, follower, &format!("k{i}")),
            Some(b"xxxxxxxxxx".to_vec()),
            "k{i}"
        );
    }
    // The snapshot carried the session table: the follower refuses nothing the leader accepts.
    let status = cluster
        .node(follower)
        .expect("node")
        .status(0)
        .expect("status");
    assert!(status.snapshot_index.is_some(), "{status:?}");
    cluster.shutdown().await.expect("shutdown");
}

/// Runs `writers` clients writing distinct keys until `stop`, recording every acknowledged write.
fn spawn_writers(
    cluster: &EmbeddedCluster,
    writers: usize,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let client = Client::new(
                cluster.transport(),
                ClientOptions {
                    timeout: Duration::from_millis(500),
                    ..Default::default()
                },
            );
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let (k, v) = (format!("w{w}-{i}"), format!("value-{i}"));
                    match client.put(&k, &v).await {
                        Ok(()) => {
                            acked.lock().expect("lock").insert(k, v);
                        }
                        Err(_) => break,
                    }
                }
            })
        })
        .collect()
}

async fn crash_everything_mid_write(sync: bool) -> (usize, usize) {
    crash_everything_mid_write_with(StorageOptions {
        sync,
        lose_unsynced_on_crash: true,
        ..Default::default()
    })
    .await
}

async fn crash_everything_mid_write_with(storage: StorageOptions) -> (usize, usize) {
    let cluster = start_with(3, |o| {
        o.storage = storage;
        // No snapshot during the run: a snapshot flushes every apply before it to disk, so a
        // run that happened to build one just before the crash (at 10,000 entries, reached on
        // a fast run) kept every write even with sync off, and the bite test did not bite. The
        // crash tests are stricter without one too: every acknowledged write survives through
        // the log alone.
        o.timing = RaftTiming {
            snapshot_logs_since_last: u64::MAX / 2,
            ..Default::default()
        };
    })
    .await;
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let writers = spawn_writers(&cluster, 4, acked.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.crash_all().await.expect("crash all");
    for w in writers {
        let _ = w.await;
    }
    for n in cluster.node_ids() {
        cluster.restart_node(n).await.expect("restart");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 50, "the writers got going: {}", acked.len());
    // Count acknowledged writes that no replica holds any more (read each replica's own state
    // once the group has re-formed, or directly if it cannot).
    let _ = cluster.wait_for_leader(0, Duration::from_secs(5)).await;
    let _ = cluster
        .wait_for_replication(0, Duration::from_secs(5))
        .await;
    let lost = acked
        .iter()
        .filter(|(k, v)| {
            cluster
                .node_ids()
                .into_iter()
                .all(|n| stale_value(&cluster, n, k).as_deref() != Some(v.as_bytes()))
        })
        .count();
    cluster.shutdown().await.expect("shutdown");
    (lost, acked.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_crash_loses_no_acknowledged_write_when_losing_unsynced_data() {
    let (lost, acked) = crash_everything_mid_write(true).await;
    assert_eq!(lost, 0, "{lost} of {acked} acknowledged writes lost");
}

/// The crash of a killed process, with the WAL flushed manually as in production: what RocksDB
/// still buffered is lost, and no acknowledged write was only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_cluster_crash_loses_no_acknowledged_write_when_killed_processes_lose_their_wal_buffers(
) {
    let (lost, acked) = crash_everything_mid_write_with(StorageOptions {
        lose_unflushed_on_crash: true,
        ..Default::default()
    })
    .await;
    assert_eq!(lost, 0, "{lost} of {acked} acknowledged writes lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sync_a_full_cluster_crash_loses_acknowledged_writes() {
    let (lost, acked) = crash_everything_mid_write(false).await;
    assert!(
        lost > 0,
        "the lose-unsynced mode must bite when sync is off ({acked} acked)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_after_a_full_restart_see_every_acknowledged_write() {
    let cluster = start_with(3, |o| {
        o.storage.lose_unsynced_on_crash = true;
    })
    .await;
    let client = cluster.client();
    for i in 0..50 {
        client.put(format!("k{i}"), "v").await.expect("put");
    }
    cluster.crash_all().await.expect("crash");
    for n in cluster.node_ids() {
        cluster.restart_node(n).await.expect("restart");
    }
    cluster
        .wait_for_leader(0, WAIT)
        .await
        .expect("leader again");
    for i in 0..50 {
        let got = client.get(format!("k{i}")).await.expect("get");
        assert_eq!(
            got,
            Some(b"v".to_vec()),
            "k{i}: a linearizable read sees every acked write"
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_faults_report_their_seed() {
    let cluster = start_with(1, |o| o.seed = Some(42)).await;
    assert_eq!(cluster.seed(), 42);
    cluster.faults().set_network(NetworkFaults {
        delay: Duration::from_millis(1),
        ..Default::default()
    });
    cluster
        .client()
        .put("a", "b")
        .await
        .expect("put through a slow network");
    cluster.shutdown().await.expect("shutdown");
}

/// Crashes a follower, writes `values` values of `value_bytes` while it is down, and waits until
/// the leader has purged its log behind a snapshot, so the follower can only catch up by one.
async fn follower_needing_a_snapshot(
    values: usize,
    value_bytes: usize,
) -> (EmbeddedCluster, NodeId, NodeId) {
    let (cluster, leader, follower) = start_with_a_crashed_follower().await;
    let client = cluster.client();
    let value = vec![b'v'; value_bytes];
    for i in 0..values {
        client.put(format!("big-{i}"), &value).await.expect("put");
    }
    // Every node that could lead must have purged: on a loaded machine leadership can move to
    // the other voter, and a leader still holding the log catches the follower up without a
    // snapshot (CI saw this once: caught up, no snapshot installed).
    for node in cluster.node_ids().into_iter().filter(|n| *n != follower) {
        wait_until_purged_past(&cluster, node, values as u64 / 2 - 1).await;
    }
    (cluster, leader, follower)
}

/// Three nodes snapshotting every 20 entries and keeping no log behind a snapshot, with one
/// follower crashed: it can only come back by snapshot once the leader purges.
async fn start_with_a_crashed_follower() -> (EmbeddedCluster, NodeId, NodeId) {
    let cluster = start_with(3, |o| {
        o.timing = RaftTiming {
            snapshot_logs_since_last: 20,
            max_in_snapshot_log_to_keep: 0,
            ..Default::default()
        };
    })
    .await;
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("follower");
    cluster.crash_node(follower).await.expect("crash");
    (cluster, leader, follower)
}

/// Waits until `node` has purged its log past `index`, behind a snapshot the crashed follower
/// never saw.
async fn wait_until_purged_past(cluster: &EmbeddedCluster, node: NodeId, index: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let purged = cluster
            .node(node)
            .expect("node")
            .status(0)
            .expect("status")
            .purged_index;
        if purged.unwrap_or(0) > index {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {node} never purged: {purged:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn assert_follower_caught_up_by_snapshot(
    cluster: &EmbeddedCluster,
    leader: NodeId,
    follower: NodeId,
) {
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("caught up");
    let stats = cluster.storage_stats(follower).expect("stats");
    assert!(
        stats.snapshots_installed.load(Ordering::SeqCst) >= 1,
        "caught up by snapshot"
    );
    let data = |n: NodeId| {
        cluster
            .node(n)
            .expect("node")
            .store()
            .expect("store")
            .scan_group(0)
            .expect("scan")
    };
    assert!(
        data(follower) == data(leader),
        "follower holds the leader's data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_file_deleted_on_the_sender_mid_transfer_still_brings_the_follower_up() {
    let (cluster, leader, follower) = follower_needing_a_snapshot(60, 64 * 1024).await;
    // The sender's next snapshot build deletes the file a transfer is reading.
    cluster.failpoints().delete_sent_snapshots(1);
    cluster.restart_node(follower).await.expect("restart");
    assert_follower_caught_up_by_snapshot(&cluster, leader, follower).await;
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_transfer_cut_mid_way_is_sent_again_and_the_follower_catches_up() {
    // About 4 MB of data: a transfer of several 1 MiB chunks.
    let (cluster, leader, follower) = follower_needing_a_snapshot(60, 64 * 1024).await;
    cluster.failpoints().cut_snapshot_transfers(1);
    cluster.restart_node(follower).await.expect("restart");
    assert_follower_caught_up_by_snapshot(&cluster, leader, follower).await;
    assert_eq!(
        cluster.failpoints().snapshot_transfers_cut(),
        1,
        "a transfer was cut before the one that succeeded"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// An install slower than the sender's wait is waited for again, not sent again: the sender
/// asks again with the last chunk, and the receiver, already installing that transfer, answers
/// once the install is done. (Before, a slow install was answered with a timeout and the whole
/// snapshot was sent again, and again, however complete the first transfer had been.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_slower_than_its_wait_is_waited_for_again_not_sent_again() {
    // About 4 MB of data: a transfer of several 1 MiB chunks.
    let (cluster, leader, follower) = follower_needing_a_snapshot(60, 64 * 1024).await;
    cluster
        .failpoints()
        .slow_snapshot_installs_on(follower, Duration::from_secs(3));
    // Asked three or four times (of the six a sender asks before it gives up).
    cluster
        .failpoints()
        .snapshot_install_wait(Duration::from_secs(1));
    cluster.restart_node(follower).await.expect("restart");
    assert_follower_caught_up_by_snapshot(&cluster, leader, follower).await;
    let stats = cluster.storage_stats(follower).expect("stats");
    let received = stats.snapshot_bytes_received.load(Ordering::SeqCst);
    let data = 60 * 64 * 1024;
    assert!(
        received < data * 3 / 2,
        "the snapshot crossed once ({received} bytes received for {data} bytes of data)"
    );
    assert_eq!(stats.snapshots_installed.load(Ordering::SeqCst), 1);
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_install_that_fails_makes_the_group_restart_itself_and_catch_up() {
    let (cluster, leader, follower) = follower_needing_a_snapshot(60, 16 * 1024).await;
    // The first install fails with a storage error: openraft stops the group (Fatal).
    cluster.failpoints().fail_snapshot_installs(1);
    cluster.restart_node(follower).await.expect("restart");
    assert_follower_caught_up_by_snapshot(&cluster, leader, follower).await;
    let restarts: Vec<String> = cluster
        .events()
        .into_iter()
        .filter(|e| e.kind == "group_restarted")
        .map(|e| e.detail)
        .collect();
    assert!(
        restarts
            .iter()
            .any(|d| d.contains(&format!("node {follower}"))),
        "the node restarted its Fatal group and said so: {restarts:?}"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// A follower of shard 0 (and its node) that has applied a first write of `client`'s.
async fn a_follower_that_applied_a_write(
    cluster: &EmbeddedCluster,
    client: &Client,
) -> (NodeId, Arc<scalestore::node::Node>) {
    client.put("warm", "up").await.expect("put");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let deadline = std::time::Instant::now() + WAIT;
    while stale_value(cluster, follower, "warm").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "follower never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (follower, cluster.node(follower).expect("node"))
}

/// A group destroyed while its state machine is inside an apply stops completely: the late
/// apply writes nothing back into the deleted range, and the group started again on that node
/// is empty (no applied id that would make openraft skip the entries it never saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_destroyed_during_an_apply_stops_completely_and_starts_again_empty() {
    let cluster = start_with(3, |_| {}).await;
    let client = cluster.client();
    let (follower, node) = a_follower_that_applied_a_write(&cluster, &client).await;
    cluster
        .failpoints()
        .slow_applies_on(follower, Duration::from_millis(1500));
    for i in 0..10 {
        client.put(format!("late-{i}"), "v").await.expect("put");
    }
    // The follower is asleep inside an apply of these writes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.faults().isolate(follower);
    node.destroy_group(0).await.expect("destroy");
    cluster
        .failpoints()
        .slow_applies_on(follower, Duration::ZERO);
    // A late apply of the old instance would have written by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = node.store().expect("store");
    let left = store.dump_group(0).expect("dump");
    assert!(
        left.is_empty(),
        "the destroyed group left {} keys behind: {:?}",
        left.len(),
        left.iter().take(5).collect::<Vec<_>>()
    );
    let raft = node.start_group(0).await.expect("start again");
    use openraft::async_runtime::watch::WatchReceiver;
    let applied = raft.metrics().borrow_watched().last_applied;
    assert_eq!(
        applied, None,
        "a re-created group starts from an empty state"
    );
    assert!(store.scan_group(0).expect("scan").is_empty());
    cluster.faults().heal();
    cluster.shutdown().await.expect("shutdown");
}

/// A group restarted in a running process (what the watch does to a Fatal group) while its
/// state machine still has applies queued: the old instance applies nothing after the stop, the
/// new one starts from what is durable, so every appended token is in the value exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_restarted_while_applies_are_queued_applies_each_entry_once() {
    let cluster = start_with(3, |_| {}).await;
    let client = cluster.client();
    let (follower, node) = a_follower_that_applied_a_write(&cluster, &client).await;
    cluster
        .failpoints()
        .slow_applies_on(follower, Duration::from_millis(700));
    let mut expected = String::new();
    for i in 0..12 {
        let token = format!("<{i}>");
        client.append("tokens", &token).await.expect("append");
        expected.push_str(&token);
    }
    // Applies are queued behind the slow one; restart the group as the watch restarts a
    // Fatal group.
    node.stop_group(0).await;
    cluster
        .failpoints()
        .slow_applies_on(follower, Duration::ZERO);
    node.start_group(0).await.expect("start again");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got =
            stale_value(&cluster, follower, "tokens").map(|v| String::from_utf8(v).expect("utf8"));
        if got.as_deref() == Some(expected.as_str()) {
            break;
        }
        if let Some(v) = &got {
            for i in 0..12 {
                let token = format!("<{i}>");
                assert!(
                    v.matches(token.as_str()).count() <= 1,
                    "{token} applied twice on node {follower}: {v}"
                );
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {follower} holds {got:?}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await.expect("shutdown");
}

/// Every shard of an idle cluster stops its Raft timers on every replica (hibernation; the
/// manager's group, which the manager reads every tick, stays awake); a write wakes its shard
/// and reaches every replica; a killed leader's sleeping shards elect new leaders among the
/// rest, and writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_groups_sleep_on_every_replica_and_wake_for_a_write_or_a_dead_leader() {
    let cluster = start_with(3, |o| o.shards = 4).await;
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let client = cluster.client();
    client.put("k", "1").await.expect("put");
    let all_asleep = |cluster: &EmbeddedCluster| {
        cluster.running_nodes().into_iter().all(|n| {
            let node = cluster.node(n).expect("node");
            let shards: Vec<u64> = node
                .groups()
                .into_iter()
                .filter(|g| *g != META_GROUP)
                .collect();
            node.asleep_groups() == shards
        })
    };
    let wait_all_asleep = |what: &'static str| {
        let cluster = &cluster;
        async move {
            let deadline = std::time::Instant::now() + WAIT;
            while !all_asleep(cluster) {
                if std::time::Instant::now() >= deadline {
                    let seen: Vec<String> = cluster
                        .running_nodes()
                        .into_iter()
                        .map(|n| {
                            let node = cluster.node(n).expect("node");
                            format!(
                                "node {n}: groups {:?} asleep {:?} (sleeps, wakes) {:?}",
                                node.groups(),
                                node.asleep_groups(),
                                node.hibernation_counts()
                            )
                        })
                        .collect();
                    panic!("never all asleep {what}: {seen:#?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_all_asleep("at first").await;
    // A write wakes its shard; every replica applies it.
    client.put("k", "2").await.expect("put");
    let shard = cluster.shard_of(b"k");
    for n in cluster.node_ids() {
        let pinned = cluster.client_pinned(n).expect("pinned");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let got = pinned
                .get_with("k", ReadConsistency::Stale)
                .await
                .ok()
                .flatten();
            if got.as_deref() == Some(b"2".as_slice()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {n} never applied k = 2"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(client.get("k").await.expect("get"), Some(b"2".to_vec()));
    // Asleep again; then the shard's leader dies: the others notice its node is silent, wake,
    // and elect a leader for each group it led.
    wait_all_asleep("after the write").await;
    let leader = cluster.wait_for_leader(shard, WAIT).await.expect("leader");
    let led: Vec<u64> = cluster
        .groups()
        .into_iter()
        .filter(|g| cluster.leader_of(*g).ok().flatten() == Some(leader))
        .collect();
    cluster.crash_node(leader).await.expect("crash");
    for group in led {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let now = cluster.leader_of(group).ok().flatten();
            if now.is_some_and(|l| l != leader) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "group {group} never failed over"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    client.put("k", "3").await.expect("put after failover");
    assert_eq!(client.get("k").await.expect("get"), Some(b"3".to_vec()));
    cluster.shutdown().await.expect("shutdown");
}

/// Waits until every running replica of each of `groups` has stopped its Raft ticker.
async fn wait_until_asleep(cluster: &EmbeddedCluster, groups: &[u64]) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let awake: Vec<(NodeId, u64)> = cluster
            .running_nodes()
            .into_iter()
            .flat_map(|n| {
                let node = cluster.node(n).expect("node");
                let (hosted, asleep) = (node.groups(), node.asleep_groups());
                groups
                    .iter()
                    .filter(|g| hosted.contains(g) && !asleep.contains(g))
                    .map(|g| (n, *g))
                    .collect::<Vec<_>>()
            })
            .collect();
        if awake.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "(node, group) never asleep: {awake:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A sleeping shard's leader has let its lease run out. The lease reads that reach it as it
/// wakes (the one that wakes it, and those that follow before its first heartbeat round
/// returns) wait for that round instead of failing, and all of them read the value written
/// before the shard fell asleep. Three sleep/wake cycles, 16 concurrent reads each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_reads_of_a_waking_shard_all_succeed() {
    let cluster = start_with(3, |o| o.shards = 2).await;
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let (group, key) = cluster
        .map()
        .key_per_shard("lease-")
        .into_iter()
        .next()
        .expect("a shard");
    let client = cluster.client();
    client.put(&key, "v").await.expect("put");
    let mut failed_per_cycle = Vec::new();
    for cycle in 0..3 {
        wait_until_asleep(&cluster, &[group]).await;
        // The leader's lease, renewed by its last heartbeats before it slept, runs out.
        tokio::time::sleep(RaftTiming::default().election_timeout() * 2).await;
        let leader = cluster.wait_for_leader(group, WAIT).await.expect("leader");
        let node = cluster.node(leader).expect("node");
        let reads: Vec<_> = (0..16)
            .map(|_| {
                let (node, key) = (node.clone(), key.clone());
                tokio::spawn(async move {
                    let request = ClientRequest::Read {
                        group,
                        key: key.into_bytes(),
                        consistency: ReadConsistency::Lease,
                    };
                    node.handle_client(request, false).await
                })
            })
            .collect();
        let mut failed = Vec::new();
        for read in futures::future::join_all(reads).await {
            match read.expect("read task") {
                Ok(ClientResponse::Read(value)) => assert_eq!(
                    value.as_deref(),
                    Some(b"v".as_slice()),
                    "cycle {cycle}: a lease read of {key} on the leader"
                ),
                Ok(other) => panic!("cycle {cycle}: a read answered {other:?}"),
                Err(e) => failed.push(e.to_string()),
            }
        }
        failed_per_cycle.push(failed);
    }
    assert!(
        failed_per_cycle.iter().all(|f| f.is_empty()),
        "lease reads failed while their shard woke (per cycle, of 16): {:?}",
        failed_per_cycle
            .iter()
            .map(|f| (f.len(), f.first().cloned()))
            .collect::<Vec<_>>()
    );
    cluster.shutdown().await.expect("shutdown");
}

/// An awake leader serves a lease read from its lease: cut off from both followers a moment
/// after a write (its lease still runs), it answers a lease read with the written value, while a
/// linearizable read, which needs a quorum round, fails. (A lease read that paid a ReadIndex
/// round would fail too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awake_leader_serves_lease_reads_from_its_lease_without_a_quorum_round() {
    let cluster = start_with(3, |_| {}).await;
    let client = cluster.client();
    client.put("k", "v").await.expect("put");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let node = cluster.node(leader).expect("node");
    let read = |consistency| ClientRequest::Read {
        group: 0,
        key: b"k".to_vec(),
        consistency,
    };
    // A write at the leader keeps the group awake and renews the lease.
    client.put("k", "w").await.expect("put");
    cluster.faults().isolate(leader);
    let lease = node
        .handle_client(read(ReadConsistency::Lease), false)
        .await;
    let linearizable = node
        .handle_client(read(ReadConsistency::Linearizable), false)
        .await;
    cluster.faults().heal();
    match lease {
        Ok(ClientResponse::Read(value)) => assert_eq!(value.as_deref(), Some(b"w".as_slice())),
        other => panic!("a lease read inside the lease: {other:?}"),
    }
    assert!(
        linearizable.is_err(),
        "a linearizable read of a leader cut off from every follower: {linearizable:?}"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// What one replica says of its group: (node, term, leader).
type View = (NodeId, u64, Option<NodeId>);
type Views = BTreeMap<u64, Vec<View>>;

/// Per group, what each running replica says: (node, term, leader). A replica that reports
/// term 0 has not loaded its state yet (a group just started): it says nothing.
fn views(cluster: &EmbeddedCluster, groups: &[u64]) -> Views {
    groups
        .iter()
        .map(|g| {
            let mut seen: Vec<_> = cluster
                .group_status(*g)
                .expect("status")
                .into_iter()
                .filter(|s| s.term > 0)
                .map(|s| (s.node, s.term, s.leader))
                .collect();
            seen.sort();
            (*g, seen)
        })
        .collect()
}

/// A 3-node cluster of 32 shards whose manager never acts (no leader balancing: every leader
/// change the tests see comes from an election), with node 3 leading no group (nor the
/// manager's), every shard written once, and every group asleep on every replica. Returns
/// the cluster, its client (sessions open with every shard), the groups (shards and the
/// manager's) and one key per shard.
async fn sleeping_cluster_with_a_pure_follower(
    follower: NodeId,
) -> (EmbeddedCluster, Client, Vec<u64>, BTreeMap<u64, String>) {
    let cluster = start_with(3, |o| {
        o.shards = 32;
        o.storage.lose_unsynced_on_crash = true;
        o.manager = ManagerOptions {
            tick: Duration::from_secs(3600),
            ..Default::default()
        };
    })
    .await;
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let mut groups = cluster.groups();
    groups.push(META_GROUP);
    let to = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != follower)
        .expect("another node");
    for group in &groups {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let leaders: Vec<NodeId> = cluster
                .group_status(*group)
                .expect("status")
                .into_iter()
                .filter(|s| s.is_leader)
                .map(|s| s.node)
                .collect();
            if !leaders.is_empty() && !leaders.contains(&follower) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "group {group} stays led by node {follower}"
            );
            if leaders.contains(&follower) {
                let transfer = AdminRequest::TransferLeader { group: *group, to };
                let node = cluster.node(follower).expect("node");
                let _ = node.handle_admin(transfer).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let keys = cluster.map().key_per_shard("sleeper-");
    assert_eq!(keys.len(), 32);
    let client = cluster.client();
    // Every shard written at once, then nothing: the last committed marks of many shards
    // arrive after the last synced write of their followers.
    let puts = keys.values().map(|k| client.put(k, "before"));
    for put in futures::future::join_all(puts).await {
        put.expect("put");
    }
    wait_until_asleep(&cluster, &groups).await;
    (cluster, client, groups, keys)
}

/// Whether a replica says something of its group that none said before: another term or
/// leader (a replica that is down, or still loading, says nothing).
fn moved(before: &[View], now: &[View]) -> bool {
    now.iter().any(|v| !before.contains(v))
}

/// Watches every group for `watch`: returns each group in which a replica took another term
/// or leader, with what was seen then.
async fn changes_within(
    cluster: &EmbeddedCluster,
    groups: &[u64],
    before: &Views,
    watch: Duration,
) -> Views {
    let mut changed = BTreeMap::new();
    let end = std::time::Instant::now() + watch;
    while std::time::Instant::now() < end {
        for (group, now) in views(cluster, groups) {
            if moved(&before[&group], &now) && !changed.contains_key(&group) {
                changed.insert(group, now);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    changed
}

/// Writes each key once more, one at a time, each waking its shard; every write must take
/// less than one (minimum) election timeout: a write that waits for an election cannot.
/// Returns the writes over that bound, and the slowest.
async fn wake_each_shard(
    client: &Client,
    keys: &BTreeMap<u64, String>,
) -> (Vec<(u64, Duration)>, Duration) {
    let target = Duration::from_millis(RaftTiming::default().election_timeout_min_ms);
    let mut slow = Vec::new();
    let mut slowest = Duration::ZERO;
    for (group, key) in keys {
        let started = std::time::Instant::now();
        client.put(key, "after").await.expect("put after");
        let took = started.elapsed();
        slowest = slowest.max(took);
        if took >= target {
            slow.push((*group, took));
        }
    }
    (slow, slowest)
}

/// Every running replica of every shard holds `value` for the shard's key.
async fn wait_for_value_everywhere(
    cluster: &EmbeddedCluster,
    keys: &BTreeMap<u64, String>,
    value: &str,
) {
    for n in cluster.running_nodes() {
        let store = cluster.node(n).expect("node").store().expect("store");
        for (group, key) in keys {
            let deadline = std::time::Instant::now() + WAIT;
            loop {
                let got = store.get(*group, key.as_bytes()).ok().flatten();
                if got.as_deref() == Some(value.as_bytes()) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {n} holds {got:?} for {key} (group {group}), not {value}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A follower of 32 sleeping shards (it leads none) crashes and loses what it had not synced
/// (its last committed marks), and restarts: no group changes term or leader on any replica
/// within 2 s, the first write to each shard takes less than an election timeout, and every
/// replica, the restarted one included, ends up holding every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_deposes_no_sleeping_leader() {
    let follower = 3;
    let (cluster, client, groups, keys) = sleeping_cluster_with_a_pure_follower(follower).await;
    wait_for_value_everywhere(&cluster, &keys, "before").await;
    let before = views(&cluster, &groups);
    cluster.crash_node(follower).await.expect("crash");
    let others = views(&cluster, &groups);
    cluster.restart_node(follower).await.expect("restart");
    // Groups the restarted node came back with less than its whole log committed.
    let restarted = cluster.node(follower).expect("node");
    let uncommitted: Vec<u64> = groups
        .iter()
        .copied()
        .filter(|g| {
            restarted
                .status(*g)
                .is_ok_and(|s| s.committed_index < s.last_log_index)
        })
        .collect();
    let changed = changes_within(&cluster, &groups, &before, Duration::from_secs(2)).await;
    assert!(
        changed.is_empty(),
        "{} of {} groups changed term or leader after node {follower} restarted: {changed:?} \
         (before: {:?}; restarted with committed < last: {uncommitted:?})",
        changed.len(),
        groups.len(),
        changed.keys().map(|g| (g, &before[g])).collect::<Vec<_>>()
    );
    let (slow, slowest) = wake_each_shard(&client, &keys).await;
    assert!(
        slow.is_empty(),
        "first writes to a waking shard slower than an election timeout: {slow:?}"
    );
    assert_eq!(
        views(&cluster, &groups)
            .into_iter()
            .filter(|(g, v)| moved(&before[g], v))
            .count(),
        0,
        "no term changed for the writes either (slowest write {slowest:?}, while down: {others:?})"
    );
    wait_for_value_everywhere(&cluster, &keys, "after").await;
    cluster.shutdown().await.expect("shutdown");
}

/// A follower of 32 sleeping shards hears nothing from the other nodes for longer than
/// hibernation's `silent_after` (it is cut off for 1.5 s), so it wakes its replicas and stands
/// for election, in vain; once back, it deposes no leader: no term or leader changes on any
/// replica within 2 s of the heal, the first write to each shard takes less than an election
/// timeout, and every replica holds every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_a_long_silence_deposes_no_sleeping_leader() {
    let follower = 3;
    let (cluster, client, groups, keys) = sleeping_cluster_with_a_pure_follower(follower).await;
    let before = views(&cluster, &groups);
    cluster.faults().isolate(follower);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still_asleep = cluster.node(follower).expect("node").asleep_groups();
    cluster.faults().heal();
    assert!(
        still_asleep.is_empty(),
        "node {follower} heard nothing for 1.5 s and kept {still_asleep:?} asleep"
    );
    let changed = changes_within(&cluster, &groups, &before, Duration::from_secs(2)).await;
    assert!(
        changed.is_empty(),
        "{} of {} groups changed term or leader after node {follower} came back: {changed:?}",
        changed.len(),
        groups.len(),
    );
    let (slow, slowest) = wake_each_shard(&client, &keys).await;
    assert!(
        slow.is_empty(),
        "first writes to a waking shard slower than an election timeout: {slow:?}"
    );
    assert_eq!(
        views(&cluster, &groups)
            .into_iter()
            .filter(|(g, v)| moved(&before[g], v))
            .count(),
        0,
        "no term changed for the writes either (slowest write {slowest:?})"
    );
    wait_for_value_everywhere(&cluster, &keys, "after").await;
    cluster.shutdown().await.expect("shutdown");
}

/// A group whose stored state cannot start (here: an applied index of a term its log never had,
/// as issue 31's first defect could leave one after a power loss) keeps only that group down:
/// the node starts and serves its other groups, and reports the broken one in its status and
/// its events. Before, the node's start failed as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_start_keeps_only_itself_down_and_is_reported() {
    use futures::stream;
    use openraft::storage::RaftStateMachine;
    use scalestore::storage::identity::Identity;
    use scalestore::storage::NodeStore;
    use scalestore::types::TypeConfig;

    let cluster = start_with(3, |o| o.shards = 2).await;
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let client = cluster.client();
    let key_in = |shard: u64| {
        (0..)
            .map(|i| format!("key-{i}"))
            .find(|k| cluster.shard_of(k.as_bytes()) == shard)
            .expect("a key")
    };
    let (key0, key1) = (key_in(0), key_in(1));
    client.put(&key0, "zero").await.expect("put");
    client.put(&key1, "one").await.expect("put");

    let victim: NodeId = 2;
    cluster.stop_node(victim).await.expect("stop");
    {
        let dir = cluster
            .root_dir()
            .expect("root")
            .join(format!("node-{victim}"));
        let identity = Identity::new(cluster.cluster_id(), victim);
        let store = NodeStore::open(&dir, &identity, StorageOptions::default()).expect("open");
        let mut sm = store.state_machine(1, 60_000).expect("sm");
        let alien = openraft::testing::blank_ent::<TypeConfig>(999, victim, 1);
        sm.apply(stream::iter([Ok((alien, None))]))
            .await
            .expect("apply");
        let closed = store.closed();
        drop((sm, store));
        while !closed.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    cluster
        .restart_node(victim)
        .await
        .expect("the node starts although one of its groups cannot");

    let node = cluster.node(victim).expect("node");
    let unstartable = node.unstartable_groups();
    assert_eq!(
        unstartable.keys().copied().collect::<Vec<_>>(),
        vec![1],
        "{unstartable:?}"
    );
    assert!(node.raft(0).is_some(), "the node runs its other group");
    let status = cluster.status().expect("status");
    let reported = status
        .nodes
        .iter()
        .find(|n| n.node == victim)
        .expect("victim in status");
    assert_eq!(reported.unstartable, vec![1]);
    assert!(cluster
        .events()
        .iter()
        .any(|e| e.kind == "group_unstartable" && e.detail.contains("group 1")));

    // Its healthy group follows new writes; the broken one's shard is served by the others.
    client.put(&key0, "zero again").await.expect("put");
    let deadline = tokio::time::Instant::now() + WAIT;
    while stale_value(&cluster, victim, &key0).as_deref() != Some(b"zero again".as_slice()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim's group 0 catches up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(client.get(&key1).await.expect("get"), Some(b"one".to_vec()));
    client.put(&key1, "one again").await.expect("put");
    cluster.shutdown().await.expect("shutdown");
}
