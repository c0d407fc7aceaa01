//! Keys spread over many Raft groups: even spread, routing, cross-shard scans and batches,
//! per-shard fault tolerance, and recovery from a stale map.

use std::collections::BTreeSet;
use std::time::Duration;

use scalestore::protocol::ClientRequest;
use scalestore::types::Command;
use scalestore::{
    ring_position, Client, ClientOptions, ClusterOptions, EmbeddedCluster, Error, ReadConsistency,
    ScanOptions, ShardMap,
};

const WAIT: Duration = Duration::from_secs(30);

async fn start_16_shards(nodes: usize) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes,
        shards: 16,
        replication: Some(3),
        ..Default::default()
    })
    .await
    .expect("start");
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    cluster
}

#[test]
fn keys_spread_evenly_over_shards() {
    let map = ShardMap::uniform(16, &[1, 2, 3], 3).expect("map");
    let n = 160_000;
    let mut counts = vec![0u64; 16];
    for i in 0..n {
        counts[map.shard_of(format!("user:{i}").as_bytes()) as usize] += 1;
    }
    let expected = n as f64 / 16.0;
    let chi2: f64 = counts
        .iter()
        .map(|c| (*c as f64 - expected).powi(2) / expected)
        .sum();
    // 15 degrees of freedom: p = 0.001 at 37.7.
    assert!(chi2 < 37.7, "chi-square {chi2:.1} over {counts:?}");
    let (min, max) = (
        counts.iter().min().expect("min"),
        counts.iter().max().expect("max"),
    );
    assert!((*max as f64) / (*min as f64) < 1.05, "{counts:?}");
}

#[test]
fn ring_position_matches_documented_test_vectors() {
    // The same vectors as README.md "Keys to shards"; any client in any language must agree.
    assert_eq!(ring_position(b""), 0xef46db3751d8e999);
    assert_eq!(ring_position(b"a"), 0xd24ec4f1a98c6e5b);
    assert_eq!(ring_position(b"user:42"), 0xdc1fea7da8d2d1c2);
    let map = ShardMap::uniform(16, &[1], 1).expect("map");
    assert_eq!(
        map.shard_of(b"user:42"),
        0xd,
        "top 4 bits pick the shard of 16"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_sixteen_shards_serve_every_operation_on_every_shard() {
    let cluster = start_16_shards(3).await;
    let client = cluster.client();
    let keys = cluster.map().key_per_shard("key-");
    assert_eq!(keys.len(), 16);
    for (shard, key) in &keys {
        assert_eq!(client.shard_of(key).await.expect("shard_of"), *shard);
        client.put(key, "v").await.expect("put");
        assert_eq!(client.get(key).await.expect("get"), Some(b"v".to_vec()));
        assert_eq!(client.append(key, "w").await.expect("append"), 2);
        let cas = client.cas(key, Some(b"vw"), "x").await.expect("cas");
        assert!(cas.success);
        assert!(
            !client
                .cas(key, Some(b"vw"), "y")
                .await
                .expect("cas")
                .success
        );
        assert!(client.delete(key).await.expect("delete"));
        assert!(!client.delete(key).await.expect("delete"));
        client
            .put(key, format!("final-{shard}"))
            .await
            .expect("put");
        let leader = client
            .shard_leader(*shard)
            .await
            .expect("leader")
            .expect("known");
        assert!(cluster
            .map()
            .shard(*shard)
            .expect("shard")
            .replicas
            .contains(&leader));
    }
    cluster
        .wait_for_all_replication(WAIT)
        .await
        .expect("replicated");
    for (shard, key) in &keys {
        for n in &cluster.map().shard(*shard).expect("shard").replicas {
            let got = cluster
                .node(*n)
                .expect("node")
                .store()
                .expect("store")
                .get(*shard, key.as_bytes())
                .expect("get");
            assert_eq!(
                got,
                Some(format!("final-{shard}").into_bytes()),
                "replica {n} of shard {shard}"
            );
        }
    }
    // Placement is balanced: replicas and leaders per node differ by at most one.
    let status = cluster.status().expect("status");
    let replicas: Vec<usize> = status.nodes.iter().map(|n| n.shards.len()).collect();
    let leaders: Vec<usize> = status.nodes.iter().map(|n| n.leaders).collect();
    let spread = |v: &[usize]| v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0);
    assert!(spread(&replicas) <= 1, "{replicas:?}");
    assert!(spread(&leaders) <= 1, "{leaders:?}");
    assert_eq!(leaders.iter().sum::<usize>(), 16);
    for s in &status.shards {
        assert!(s.leader.is_some(), "{s:?}");
        assert!(
            s.approximate_bytes > 0,
            "shard {} holds data: {s:?}",
            s.shard
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_over_all_shards_returns_every_key_once_in_order_across_pages() {
    let cluster = start_16_shards(3).await;
    let client = cluster.client();
    let pairs: Vec<(String, String)> = (0..300)
        .map(|i| (format!("k{i:04}"), format!("v{i}")))
        .collect();
    client.batch_put(&pairs).await.expect("batch put");
    let shards: BTreeSet<u64> = pairs
        .iter()
        .map(|(k, _)| cluster.shard_of(k.as_bytes()))
        .collect();
    assert_eq!(shards.len(), 16, "the keys span every shard");
    let values = client
        .batch_get(&["k0007", "nope", "k0299"], ReadConsistency::Linearizable)
        .await
        .expect("batch get");
    assert_eq!(
        values,
        vec![Some(b"v7".to_vec()), None, Some(b"v299".to_vec())]
    );

    let mut options = ScanOptions {
        limit: 7,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.scan(&options).await.expect("scan");
        assert!(page.items.len() <= 7);
        pages += 1;
        seen.extend(
            page.items
                .into_iter()
                .map(|(k, _)| String::from_utf8(k).expect("utf8")),
        );
        match page.cursor {
            Some(c) => options.cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(seen, want, "every key once, in order");
    assert!(pages >= 300 / 7, "{pages} pages");

    let ranged = client
        .scan_all(&ScanOptions {
            start: Some(b"k0100".to_vec()),
            end: Some(b"k0110".to_vec()),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("range scan");
    assert_eq!(ranged.len(), 10);
    assert_eq!(ranged[0], (b"k0100".to_vec(), b"v100".to_vec()));
    let prefixed = client
        .scan_all(&ScanOptions {
            prefix: Some(b"k02".to_vec()),
            limit: 50,
            ..Default::default()
        })
        .await
        .expect("prefix scan");
    assert_eq!(prefixed.len(), 100);
    assert!(prefixed.iter().all(|(k, _)| k.starts_with(b"k02")));
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_keeps_serving_with_one_node_down_and_the_node_catches_up() {
    let cluster = start_16_shards(3).await;
    let client = cluster.client();
    let keys = cluster.map().key_per_shard("key-");
    cluster.crash_node(2).await.expect("crash");
    for key in keys.values() {
        client
            .put(key, "while-down")
            .await
            .expect("every shard still commits");
    }
    cluster.restart_node(2).await.expect("restart");
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    cluster
        .wait_for_all_replication(WAIT)
        .await
        .expect("caught up");
    let node = cluster.node(2).expect("node");
    for (shard, key) in &keys {
        assert_eq!(
            node.store()
                .expect("store")
                .get(*shard, key.as_bytes())
                .expect("get"),
            Some(b"while-down".to_vec())
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sent_to_the_wrong_group_is_refused_and_the_client_recovers() {
    let cluster = start_16_shards(3).await;
    let key = b"some-key".to_vec();
    let owner = cluster.shard_of(&key);
    let wrong = (owner + 1) % 16;
    let host = cluster.map().shard(wrong).expect("shard").replicas[0];
    let request = ClientRequest::Write {
        group: wrong,
        command: Command::Put {
            key: key.clone(),
            value: b"x".to_vec(),
        },
        session: None,
    };
    let err = cluster
        .node(host)
        .expect("node")
        .handle_client(request, false)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, Error::WrongShard { group, .. } if group == wrong),
        "{err}"
    );

    // A client holding a stale map (every shard's ranges rotated) is refused, refreshes, and
    // lands the write on the right shard.
    let mut stale = (*cluster.map()).clone();
    let ranges: Vec<_> = stale.shards.iter().map(|s| s.ranges.clone()).collect();
    for (i, s) in stale.shards.iter_mut().enumerate() {
        s.ranges = ranges[(i + 1) % ranges.len()].clone();
    }
    stale.rebuild_index().expect("still tiles");
    assert_ne!(stale.shard_of(&key), owner);
    let client = Client::with_shard_map(cluster.transport(), ClientOptions::default(), stale);
    client
        .put(&key, "landed")
        .await
        .expect("recovers from WrongShard");
    assert!(client.map_refreshes() >= 1, "the map was refreshed");
    assert_eq!(client.shard_of(&key).await.expect("shard"), owner);
    let leader = cluster.wait_for_leader(owner, WAIT).await.expect("leader");
    cluster
        .wait_for_replication(owner, WAIT)
        .await
        .expect("replicated");
    let got = cluster
        .node(leader)
        .expect("node")
        .store()
        .expect("store")
        .get(owner, &key)
        .expect("get");
    assert_eq!(got, Some(b"landed".to_vec()));
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_reaches_shards_its_node_does_not_host() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 5,
        shards: 8,
        replication: Some(1),
        ..Default::default()
    })
    .await
    .expect("start");
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let pinned = cluster.client_pinned(1).expect("pin");
    let keys = cluster.map().key_per_shard("key-");
    for (shard, key) in &keys {
        pinned.put(key, "p").await.expect("forwarded write");
        assert_eq!(
            pinned.get(key).await.expect("forwarded read"),
            Some(b"p".to_vec()),
            "shard {shard}"
        );
        assert_eq!(
            pinned
                .get_with(key, ReadConsistency::Stale)
                .await
                .expect("stale"),
            Some(b"p".to_vec())
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

/// A batch write is atomic per shard, so a batch read of the same shard must see all of it or
/// none of it: two keys written together always read back equal, at every consistency.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_get_sees_a_batch_put_of_one_shard_whole_or_not_at_all() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 3,
        shards: 4,
        replication: Some(3),
        ..Default::default()
    })
    .await
    .expect("start");
    cluster.wait_for_all_leaders(WAIT).await.expect("leaders");
    let client = cluster.client();
    let a = b"atomic:a".to_vec();
    let shard = client.shard_of(&a).await.expect("shard");
    let mut b = None;
    for i in 0..10_000 {
        let candidate = format!("atomic:b{i}").into_bytes();
        if client.shard_of(&candidate).await.expect("shard") == shard {
            b = Some(candidate);
            break;
        }
    }
    let b = b.expect("a second key of the same shard");
    client
        .batch_put(&[(a.clone(), b"0".to_vec()), (b.clone(), b"0".to_vec())])
        .await
        .expect("first batch");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, a, b, stop) = (client.clone(), a.clone(), b.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 1u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v = i.to_string().into_bytes();
                client
                    .batch_put(&[(a.clone(), v.clone()), (b.clone(), v)])
                    .await
                    .expect("batch put");
                i += 1;
            }
            i
        })
    };
    let mut readers = Vec::new();
    for consistency in [
        ReadConsistency::Linearizable,
        ReadConsistency::Lease,
        ReadConsistency::Stale,
    ] {
        let (client, a, b, stop) = (client.clone(), a.clone(), b.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let values = client
                    .batch_get(&[a.clone(), b.clone()], consistency)
                    .await
                    .expect("batch get");
                assert_eq!(
                    values[0], values[1],
                    "a {consistency:?} batch read saw half of a batch write"
                );
                assert!(values[0].is_some(), "both keys were written before");
                reads += 1;
            }
            reads
        }));
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.expect("writer");
    for r in readers {
        let reads = r.await.expect("reader");
        assert!(reads > 100, "only {reads} reads in 8 s");
    }
    assert!(writes > 100, "only {writes} writes in 8 s");
    let last = (writes - 1).to_string().into_bytes();
    assert_eq!(
        client
            .batch_get(&[a, b], ReadConsistency::Linearizable)
            .await
            .expect("final read"),
        vec![Some(last.clone()), Some(last)]
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_prefix_deletes_every_matching_key_on_every_shard_once_and_counts_them() {
    let cluster = start_16_shards(3).await;
    let client = cluster.client();
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("doomed/{i:03}"), format!("v{i}")))
        .chain((0..50).map(|i| (format!("kept/{i:03}"), format!("k{i}"))))
        .collect();
    client.batch_put(&pairs).await.expect("put");
    client
        .put("doomed", "the prefix itself")
        .await
        .expect("put");
    client
        .put("doome", "shorter: not matched")
        .await
        .expect("put");
    let shards: BTreeSet<u64> = {
        let map = client.shard_map().await.expect("map");
        (0..200)
            .map(|i| map.shard_of(format!("doomed/{i:03}").as_bytes()))
            .collect()
    };
    assert!(shards.len() > 8, "the prefix spans many shards: {shards:?}");

    assert_eq!(client.delete_prefix("doomed").await.expect("delete"), 201);
    let left = client
        .scan_all(&ScanOptions::default())
        .await
        .expect("scan");
    let keys: Vec<String> = left
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(keys.len(), 51, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("kept/") || k == "doome"));
    assert_eq!(
        client.get("kept/007").await.expect("get"),
        Some(b"k7".to_vec())
    );
    assert_eq!(client.delete_prefix("doomed").await.expect("again"), 0);
    let long = vec![b'p'; 100_000];
    assert!(matches!(
        client.delete_prefix(&long).await,
        Err(Error::InvalidArgument(_))
    ));
    // An empty prefix is every key.
    assert_eq!(client.delete_prefix("").await.expect("all"), 51);
    assert!(client
        .scan_all(&ScanOptions::default())
        .await
        .expect("scan")
        .is_empty());
    cluster.shutdown().await.expect("shutdown");
}
