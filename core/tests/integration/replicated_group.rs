//! One Raft group replicated over an embedded cluster: elections, replication, every operation's
//! semantics, read consistency levels, limits, and data dir safety.

use std::time::Duration;

use scalestore::protocol::ClientRequest;
use scalestore::types::Command;
use scalestore::{ClusterOptions, EmbeddedCluster, Error, Limits, ReadConsistency};

const WAIT: Duration = Duration::from_secs(20);

async fn start(nodes: usize) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        replication: Some(nodes),
        nodes,
        ..Default::default()
    })
    .await
    .expect("start cluster");
    cluster.wait_for_leader(0, WAIT).await.expect("leader");
    cluster
}

async fn assert_single_leader(nodes: usize) {
    let cluster = start(nodes).await;
    let statuses = cluster.group_status(0).expect("status");
    assert_eq!(statuses.len(), nodes);
    let leaders: Vec<_> = statuses.iter().filter(|s| s.is_leader).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {statuses:?}");
    let leader = leaders[0];
    for s in &statuses {
        assert_eq!(s.leader, Some(leader.node), "every node knows the leader");
        assert_eq!(s.term, leader.term, "in the same term");
        assert_eq!(s.voters.len(), nodes, "every node is a voter");
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_group_elects_exactly_one_leader() {
    assert_single_leader(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_node_group_elects_exactly_one_leader() {
    assert_single_leader(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_commit_and_replicate_to_every_node() {
    let cluster = start(3).await;
    let client = cluster.client();
    for i in 0..200u32 {
        client
            .put(format!("key-{i}"), format!("value-{i}"))
            .await
            .expect("put");
    }
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    for id in cluster.node_ids() {
        let store = cluster.node(id).expect("node").store().expect("store");
        let data = store.scan_group(0).expect("scan");
        assert_eq!(data.len(), 200, "node {id} holds every key");
        for i in 0..200u32 {
            let got = store.get(0, format!("key-{i}").as_bytes()).expect("get");
            assert_eq!(
                got,
                Some(format!("value-{i}").into_bytes()),
                "node {id} key-{i}"
            );
        }
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_returns_its_documented_result() {
    let cluster = start(3).await;
    let c = cluster.client();

    assert_eq!(
        c.get("k").await.expect("get"),
        None,
        "absent key reads None"
    );
    c.put("k", "v1").await.expect("put");
    assert_eq!(c.get("k").await.expect("get"), Some(b"v1".to_vec()));
    c.put("k", "v2").await.expect("overwrite");
    assert_eq!(c.get("k").await.expect("get"), Some(b"v2".to_vec()));

    assert!(
        c.delete("k").await.expect("delete"),
        "delete of a present key reports it existed"
    );
    assert!(
        !c.delete("k").await.expect("delete"),
        "delete of an absent key reports it did not"
    );
    assert_eq!(c.get("k").await.expect("get"), None);

    assert_eq!(
        c.append("log", "ab").await.expect("append"),
        2,
        "append to absent = new value"
    );
    assert_eq!(
        c.append("log", "cde").await.expect("append"),
        5,
        "returns the new length"
    );
    assert_eq!(c.get("log").await.expect("get"), Some(b"abcde".to_vec()));
    assert_eq!(
        c.append("log", "").await.expect("append"),
        5,
        "empty append keeps the length"
    );

    let r = c.cas("c", None, "first").await.expect("cas");
    assert!(r.success, "expected absent and absent: swaps");
    assert_eq!(r.current, Some(b"first".to_vec()));
    let r = c.cas("c", None, "second").await.expect("cas");
    assert!(!r.success, "expected absent but present: fails");
    assert_eq!(
        r.current,
        Some(b"first".to_vec()),
        "failure reports the current value"
    );
    let r = c.cas("c", Some(b"wrong"), "second").await.expect("cas");
    assert!(!r.success);
    assert_eq!(
        c.get("c").await.expect("get"),
        Some(b"first".to_vec()),
        "failed cas wrote nothing"
    );
    let r = c.cas("c", Some(b"first"), "second").await.expect("cas");
    assert!(r.success);
    assert_eq!(c.get("c").await.expect("get"), Some(b"second".to_vec()));
    let r = c.cas("absent", Some(b"x"), "y").await.expect("cas");
    assert!(
        !r.success && r.current.is_none(),
        "expected a value on an absent key: fails"
    );

    // Binary keys and values round-trip untouched, empty values too.
    c.put([0u8, 255, 10], [1u8, 0, 2]).await.expect("put");
    assert_eq!(
        c.get([0u8, 255, 10]).await.expect("get"),
        Some(vec![1u8, 0, 2])
    );
    c.put("empty", "").await.expect("put");
    assert_eq!(
        c.get("empty").await.expect("get"),
        Some(vec![]),
        "empty value is not absent"
    );

    for consistency in [ReadConsistency::Linearizable, ReadConsistency::Lease] {
        assert_eq!(
            c.get_with("c", consistency).await.expect("read"),
            Some(b"second".to_vec()),
            "{consistency:?}"
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_read_through_pinned_client_is_answered_by_that_replica() {
    let cluster = start(3).await;
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    cluster.client().put("x", "1").await.expect("put");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let pinned = cluster.client_pinned(follower).expect("pin");
    assert_eq!(pinned.pinned_node(), Some(follower));
    assert_eq!(
        pinned
            .get_with("x", ReadConsistency::Stale)
            .await
            .expect("stale"),
        Some(b"1".to_vec())
    );
    // Linearizable reads entering through the follower are forwarded to the leader.
    assert_eq!(
        pinned.get("x").await.expect("linearizable"),
        Some(b"1".to_vec())
    );
    pinned
        .put("y", "2")
        .await
        .expect("write through a follower is forwarded");

    // With every other node down, the follower alone still answers a stale read from its own
    // replica, and cannot answer a linearizable one: the stale read really is local.
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    for n in cluster.node_ids().into_iter().filter(|n| *n != follower) {
        cluster.stop_node(n).await.expect("stop");
    }
    assert_eq!(
        pinned
            .get_with("y", ReadConsistency::Stale)
            .await
            .expect("stale read alone"),
        Some(b"2".to_vec())
    );
    let short = scalestore::Client::new(
        std::sync::Arc::new(OnlyNode(cluster.node(follower).expect("node"))),
        scalestore::ClientOptions {
            timeout: Duration::from_millis(1500),
            ..Default::default()
        },
    )
    .pinned_to(follower)
    .expect("pin");
    let err = short
        .get("y")
        .await
        .expect_err("no quorum: no linearizable read");
    assert!(
        matches!(err, Error::Timeout { .. } | Error::Unavailable(_)),
        "{err}"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// A transport that reaches exactly one node (to give a client a short deadline).
struct OnlyNode(std::sync::Arc<scalestore::Node>);

#[async_trait::async_trait]
impl scalestore::Transport for OnlyNode {
    async fn call(
        &self,
        node: u64,
        request: ClientRequest,
        forward: bool,
    ) -> scalestore::Result<scalestore::protocol::ClientResponse> {
        if node != self.0.id() {
            return Err(Error::UnknownNode(node));
        }
        self.0.handle_client(request, forward).await
    }
    fn nodes(&self) -> Vec<u64> {
        vec![self.0.id()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_input_is_refused_and_nothing_is_written() {
    let limits = Limits {
        max_key_bytes: 16,
        max_value_bytes: 64,
        ..Default::default()
    };
    let cluster = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        nodes: 3,
        limits,
        client: scalestore::ClientOptions {
            limits,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("start");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let c = cluster.client();
    c.put("ok", "fine").await.expect("within limits");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    let log_before = cluster
        .node(leader)
        .expect("node")
        .status(0)
        .expect("status")
        .last_log_index;

    let long_key = "k".repeat(17);
    let big = vec![7u8; 65];
    let cases: Vec<(&str, scalestore::Result<()>)> = vec![
        ("long key put", c.put(&long_key, "v").await),
        ("big value put", c.put("ok", &big).await),
        ("big append", c.append("ok", &big).await.map(|_| ())),
        (
            "big cas new",
            c.cas("ok", Some(b"fine"), &big).await.map(|_| ()),
        ),
        (
            "big cas expected",
            c.cas("ok", Some(&big), "x").await.map(|_| ()),
        ),
        ("empty key", c.put("", "v").await),
        ("long key get", c.get(&long_key).await.map(|_| ())),
    ];
    for (what, res) in cases {
        assert!(
            matches!(res, Err(Error::InvalidArgument(_))),
            "{what}: {res:?}"
        );
    }
    // The node checks too, for requests that do not come through this client.
    let raw = ClientRequest::Write {
        group: 0,
        command: Command::Put {
            key: b"ok".to_vec(),
            value: big.clone(),
        },
        session: None,
    };
    let res = cluster
        .node(leader)
        .expect("node")
        .handle_client(raw, false)
        .await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");

    assert_eq!(
        c.get("ok").await.expect("get"),
        Some(b"fine".to_vec()),
        "value unchanged"
    );
    let log_after = cluster
        .node(leader)
        .expect("node")
        .status(0)
        .expect("status")
        .last_log_index;
    assert_eq!(log_before, log_after, "nothing reached the log");
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_cluster_keeps_its_data_and_refuses_contradicting_arguments() {
    let root = tempfile::tempdir().expect("tempdir");
    let opts = ClusterOptions {
        shards: 1,
        nodes: 3,
        root_dir: Some(root.path().to_path_buf()),
        ..Default::default()
    };
    let cluster = EmbeddedCluster::start(opts.clone()).await.expect("start");
    let id = cluster.cluster_id().to_string();
    cluster.wait_for_leader(0, WAIT).await.expect("leader");
    for i in 0..50 {
        cluster
            .client()
            .put(format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    cluster.shutdown().await.expect("shutdown");
    assert!(root.path().join("node-1").exists(), "a given root is kept");

    let err = EmbeddedCluster::start(ClusterOptions {
        nodes: 5,
        ..opts.clone()
    })
    .await
    .err()
    .expect("5 nodes contradict the stored 3");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    let cluster = EmbeddedCluster::start(opts).await.expect("reopen");
    assert_eq!(cluster.cluster_id(), id, "same cluster");
    cluster
        .wait_for_leader(0, WAIT)
        .await
        .expect("leader after reopen");
    for i in 0..50 {
        assert_eq!(
            cluster.client().get(format!("k{i}")).await.expect("get"),
            Some(format!("v{i}").into_bytes())
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_root_is_removed_on_shutdown() {
    let cluster = start(1).await;
    cluster.client().put("a", "b").await.expect("put");
    let root = cluster.root_dir().expect("root").to_path_buf();
    assert!(root.exists());
    cluster.shutdown().await.expect("shutdown");
    assert!(!root.exists(), "temporary root removed");
}

/// A call in flight when the nodes stop keeps its node, and so its RocksDB, open; the store's
/// close writes files. Removing the temporary root under it failed in CI ("directory not
/// empty"): shutdown now removes the root only after every node is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_the_temporary_root_only_after_calls_in_flight_release_their_nodes() {
    let cluster = start(1).await;
    for i in 0..200 {
        cluster
            .client()
            .put(format!("k{i}"), vec![7u8; 1000])
            .await
            .expect("put");
    }
    let root = cluster.root_dir().expect("root").to_path_buf();
    // Stands for a call that reached node 1 and has not returned yet.
    let held = cluster.node(1).expect("node 1");
    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let releaser = tokio::spawn({
        let released = released.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            released.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(held);
        }
    });
    cluster.shutdown().await.expect("shutdown");
    assert!(
        released.load(std::sync::atomic::Ordering::SeqCst),
        "shutdown returned while a call still held a node (its store open)"
    );
    assert!(!root.exists(), "temporary root removed");
    releaser.await.expect("releaser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_dirs_are_refused_untouched() {
    // A non-empty dir that is not a ScaleStore cluster.
    let foreign = tempfile::tempdir().expect("tempdir");
    std::fs::write(foreign.path().join("notes.txt"), b"mine").expect("write");
    let err = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        root_dir: Some(foreign.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .err()
    .expect("refused");
    assert!(matches!(err, Error::DataDir { .. }), "{err}");
    let names: Vec<_> = std::fs::read_dir(foreign.path())
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("notes.txt")],
        "nothing added"
    );

    // A node dir that belongs to another cluster.
    let a = tempfile::tempdir().expect("a");
    let b = tempfile::tempdir().expect("b");
    for root in [a.path(), b.path()] {
        let c = EmbeddedCluster::start(ClusterOptions {
            shards: 1,
            nodes: 1,
            root_dir: Some(root.to_path_buf()),
            ..Default::default()
        })
        .await
        .expect("start");
        c.shutdown().await.expect("shutdown");
    }
    std::fs::remove_dir_all(a.path().join("node-1")).expect("rm");
    std::fs::rename(b.path().join("node-1"), a.path().join("node-1")).expect("mv");
    let identity =
        std::fs::read(a.path().join("node-1").join("SCALESTORE_IDENTITY")).expect("read");
    let err = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        nodes: 1,
        root_dir: Some(a.path().to_path_buf()),
        ..Default::default()
    })
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("belongs to cluster"), "{err}");
    let after = std::fs::read(a.path().join("node-1").join("SCALESTORE_IDENTITY")).expect("read");
    assert_eq!(identity, after, "identity untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_client_and_unknown_node_get_typed_errors() {
    let cluster = start(3).await;
    let c = cluster.client();
    assert!(matches!(
        cluster.client_pinned(9),
        Err(Error::UnknownNode(9))
    ));
    assert!(matches!(cluster.node(0), Err(Error::UnknownNode(0))));
    c.put("a", "1").await.expect("put");
    c.clone().close();
    assert!(
        matches!(c.get("a").await, Err(Error::Closed(_))),
        "clones share closing"
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_scan_pages_and_entries_are_refused_and_nothing_is_written() {
    // Default limits: 10,000 items and 16 MiB per batch, 10,000 items per scan page.
    let cluster = start(3).await;
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let c = cluster.client();
    c.put("ok", "fine").await.expect("within limits");
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    let node = cluster.node(leader).expect("node");
    let log_before = node.status(0).expect("status").last_log_index;

    let many: Vec<(String, String)> = (0..10_001)
        .map(|i| (format!("many-{i}"), "v".to_string()))
        .collect();
    let heavy: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("heavy-{i}"), vec![1u8; 1024 * 1024]))
        .collect();
    let keys: Vec<String> = many.iter().map(|(k, _)| k.clone()).collect();
    let cases: Vec<(&str, scalestore::Result<()>)> = vec![
        ("10,001 pairs", c.batch_put(&many).await),
        ("20 MiB of pairs", c.batch_put(&heavy).await),
        (
            "10,001 keys read",
            c.batch_get(&keys, ReadConsistency::Linearizable)
                .await
                .map(|_| ()),
        ),
        (
            "scan page of 10,001",
            c.scan(&scalestore::ScanOptions {
                limit: 10_001,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
    ];
    for (what, res) in cases {
        assert!(
            matches!(res, Err(Error::InvalidArgument(_))),
            "{what}: {res:?}"
        );
    }
    // The node checks too, for requests that do not come through this client.
    let raw = [
        ClientRequest::Write {
            group: 0,
            command: Command::PutMany {
                pairs: many
                    .iter()
                    .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                    .collect(),
            },
            session: None,
        },
        ClientRequest::ReadMany {
            group: 0,
            keys: keys.iter().map(|k| k.clone().into_bytes()).collect(),
            consistency: ReadConsistency::Linearizable,
        },
        ClientRequest::Scan {
            group: 0,
            start: Vec::new(),
            end: None,
            limit: 10_001,
            consistency: ReadConsistency::Linearizable,
            shard_version: None,
        },
    ];
    for request in raw {
        let what = format!("{request:?}").chars().take(60).collect::<String>();
        let res = node.handle_client(request, true).await;
        assert!(
            matches!(res, Err(Error::InvalidArgument(_))),
            "node accepted {what}: {res:?}"
        );
    }
    assert_eq!(
        node.status(0).expect("status").last_log_index,
        log_before,
        "nothing reached the log"
    );
    assert_eq!(c.get("many-0").await.expect("get"), None);
    assert_eq!(c.get("heavy-0").await.expect("get"), None);
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_start_group_calls_start_one_replica_that_stops_with_the_node() {
    let cluster = start(3).await;
    let node = cluster.node(1).expect("node");
    let starts = (0..8).map(|_| {
        let node = node.clone();
        tokio::spawn(async move {
            node.handle_admin(scalestore::network::AdminRequest::StartGroup { group: 77 })
                .await
        })
    });
    for started in futures::future::join_all(starts).await {
        started.expect("task").expect("start group");
    }
    drop(node);
    // A second Raft instance started by a racing call would outlive the node's shutdown and
    // keep its RocksDB open.
    cluster
        .crash_node(1)
        .await
        .expect("every replica of node 1 stopped with it");
    cluster.restart_node(1).await.expect("restart");
    cluster.shutdown().await.expect("shutdown");
}
