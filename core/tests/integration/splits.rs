//! Online splits: a shard divides into two while it serves, every replica building the child
//! from its own copy; nothing acknowledged is lost, every key is served by exactly one shard,
//! and the result survives a crash of the whole cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use scalestore::sharding::ring_position;
use scalestore::{
    ClusterOptions, EmbeddedCluster, Error, GroupId, RaftTiming, ScanOptions, StorageOptions,
};

const WAIT: Duration = Duration::from_secs(30);

async fn one_shard_cluster(storage: StorageOptions) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 3,
        shards: 1,
        replication: Some(3),
        storage,
        timing: RaftTiming {
            // No snapshot: every acknowledged write must survive through the log alone.
            snapshot_logs_since_last: u64::MAX / 2,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("start");
    cluster.wait_for_leader(0, WAIT).await.expect("leader");
    cluster
}

/// Writers that put `w{writer}-{i}` = `{i}` until stopped, recording what was acknowledged.
fn spawn_writers(
    cluster: &EmbeddedCluster,
    n: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..n)
        .map(|w| {
            let (client, stop, acked) = (cluster.client(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = format!("w{w}-{}", i % 50);
                    match client.put(&key, i.to_string()).await {
                        Ok(()) => {
                            acked.lock().expect("lock").insert(key, i.to_string());
                        }
                        Err(_) => failed += 1,
                    }
                    i += 1;
                }
                failed
            })
        })
        .collect()
}

/// Every key `node`'s replica of `group` holds.
fn held(cluster: &EmbeddedCluster, node: u64, group: GroupId) -> Vec<Vec<u8>> {
    let store = cluster.node(node).expect("node").store().expect("store");
    store
        .scan_group(group)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_under_writes_moves_the_upper_half_to_a_new_shard_and_loses_nothing() {
    let cluster = one_shard_cluster(StorageOptions::default()).await;
    let client = cluster.client();
    let preloaded: Vec<(String, String)> = (0..300)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    client.batch_put(&preloaded).await.expect("preload");

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let writers = spawn_writers(&cluster, 3, stop.clone(), acked.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let plan = cluster.split(0, None).await.expect("split");
    assert_eq!((plan.parent, plan.child, plan.at), (0, 1, 1 << 63));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let failed: usize = futures::future::join_all(writers)
        .await
        .into_iter()
        .map(|r| r.expect("writer"))
        .sum();
    assert_eq!(failed, 0, "no write failed across the split");

    // The map: two shards that tile the ring, the child on the parent's replicas.
    let map = cluster.map();
    assert_eq!(map.shard_ids(), vec![0, 1]);
    assert_eq!(map.shard_at((1 << 63) - 1), 0);
    assert_eq!(map.shard_at(1 << 63), 1);
    assert_eq!(map.shard(1).expect("child").replicas.len(), 3);
    assert!(map.pending_split.is_none());

    // Every value, through the client; every replica holds exactly its shard's keys.
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 20, "the writers got going: {}", acked.len());
    let mut expected: BTreeMap<String, String> = preloaded.into_iter().collect();
    expected.extend(acked);
    for (k, v) in &expected {
        let got = client.get(k).await.expect("get");
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "{k}");
    }
    cluster
        .wait_for_leader(1, WAIT)
        .await
        .expect("child leader");
    for node in cluster.node_ids() {
        for group in [0, 1] {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let keys = held(&cluster, node, group);
                let in_range = keys.iter().all(|k| map.shard_at(ring_position(k)) == group);
                assert!(
                    in_range,
                    "node {node} shard {group} holds a key of the other"
                );
                let want = expected
                    .keys()
                    .filter(|k| map.shard_of(k.as_bytes()) == group)
                    .count();
                if keys.len() == want {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node {node} shard {group}: {} keys, want {want}",
                    keys.len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // A scan of the whole key space returns every key exactly once.
    let scanned = client
        .scan_all(&ScanOptions {
            limit: 64,
            ..Default::default()
        })
        .await
        .expect("scan");
    let scanned_keys: Vec<String> = scanned
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(scanned_keys, expected.keys().cloned().collect::<Vec<_>>());
    // Both halves take writes.
    for (k, _) in expected.iter().take(40) {
        client.put(k, "after").await.expect("put");
        assert_eq!(
            client.get(k).await.expect("get").as_deref(),
            Some(&b"after"[..])
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_shards_and_their_data_survive_a_crash_of_the_whole_cluster_losing_unsynced_data() {
    let cluster = one_shard_cluster(StorageOptions {
        lose_unsynced_on_crash: true,
        ..Default::default()
    })
    .await;
    let client = cluster.client();
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    client.batch_put(&pairs).await.expect("put");
    let first = cluster.split(0, None).await.expect("split");
    let second = cluster.split(first.child, None).await.expect("split child");
    let third = cluster.split(0, None).await.expect("split parent again");
    assert_eq!((second.child, third.child), (2, 3));
    for (k, _) in pairs.iter().take(50) {
        client.put(k, "changed").await.expect("put");
    }
    cluster.crash_all().await.expect("crash");
    for n in cluster.node_ids() {
        cluster.restart_node(n).await.expect("restart");
    }
    // The nodes start from the map they had; the manager's new leader tells them the newest.
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.map().shard_ids() != vec![0, 1, 2, 3] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            cluster.map()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let client = cluster.client();
    for (i, (k, v)) in pairs.iter().enumerate() {
        let want = if i < 50 { "changed" } else { v.as_str() };
        assert_eq!(
            client.get(k).await.expect("get").as_deref(),
            Some(want.as_bytes()),
            "{k}"
        );
    }
    let all = client
        .scan_all(&ScanOptions::default())
        .await
        .expect("scan");
    assert_eq!(all.len(), pairs.len());
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_of_a_missing_shard_or_at_its_edge_is_refused_and_changes_nothing() {
    let cluster = one_shard_cluster(StorageOptions::default()).await;
    let before = cluster.map();
    let invalid = |r: scalestore::Result<_>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(invalid(cluster.split(7, None).await), "no such shard");
    assert!(
        invalid(cluster.split(0, Some(0)).await),
        "at the shard's start"
    );
    let plan = cluster.split(0, None).await.expect("split");
    assert!(
        invalid(cluster.split(0, Some(plan.at)).await),
        "at the parent's end (the child's start) is outside the parent"
    );
    assert!(
        invalid(cluster.split(plan.child, Some(plan.at)).await),
        "at the child's start"
    );
    let after = cluster.map();
    assert_eq!(after.shard_ids(), vec![0, 1]);
    assert_eq!(
        after.epoch,
        before.epoch + 2,
        "one epoch to plan, one to record"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// Exactly-once across a split without copying sessions: the shard checks ownership after the
/// exactly-once lookup, so a retry of a write it applied before the split gets the first
/// result (were it refused, the client would re-route it to the child and apply it twice),
/// while a new write of a key that moved is refused and applies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_before_a_split_gets_its_first_result_when_retried_after_it() {
    use scalestore::protocol::{ClientRequest, ClientResponse};
    use scalestore::types::{Command, CommandResult, SessionRef};

    let cluster = one_shard_cluster(StorageOptions::default()).await;
    let moving = (0..)
        .map(|i| format!("h{i}"))
        .find(|k| ring_position(k.as_bytes()) >= 1 << 63)
        .expect("a key of the upper half");
    let node = cluster.node(1).expect("node");
    let session = match node
        .handle_client(ClientRequest::OpenSession { group: 0 }, true)
        .await
        .expect("open session")
    {
        ClientResponse::Write(CommandResult::SessionOpened { session }) => session,
        other => panic!("{other:?}"),
    };
    let append = |value: &str, seq: u64| ClientRequest::Write {
        group: 0,
        command: Command::Append {
            key: moving.clone().into_bytes(),
            value: value.as_bytes().to_vec(),
        },
        session: Some(SessionRef {
            session,
            seq,
            first_unacked: 1,
        }),
    };
    let first = node
        .handle_client(append("a", 1), true)
        .await
        .expect("append");
    assert_eq!(
        first,
        ClientResponse::Write(CommandResult::Append { new_len: 1 })
    );
    let plan = cluster.split(0, None).await.expect("split");
    assert_eq!(cluster.map().shard_of(moving.as_bytes()), plan.child);
    for n in cluster.node_ids() {
        let retried = cluster
            .node(n)
            .expect("node")
            .handle_client(append("a", 1), true)
            .await;
        assert_eq!(
            retried.expect("the retry gets its first result"),
            ClientResponse::Write(CommandResult::Append { new_len: 1 }),
            "via node {n}"
        );
    }
    let fresh = node.handle_client(append("b", 2), true).await;
    assert!(
        matches!(fresh, Err(Error::WrongShard { group: 0, .. })),
        "{fresh:?}"
    );
    let client = cluster.client();
    assert_eq!(
        client.get(&moving).await.expect("get").as_deref(),
        Some(&b"a"[..]),
        "applied once, and now served by the child"
    );
    client
        .append(&moving, "c")
        .await
        .expect("append via the child");
    assert_eq!(
        client.get(&moving).await.expect("get").as_deref(),
        Some(&b"ac"[..])
    );
    cluster.shutdown().await.expect("shutdown");
}
