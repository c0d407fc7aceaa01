//! A client keeps working while the cluster changes under it: a removed node in its leader
//! hints or cached map costs a retry elsewhere, never a failed write, and one shard without a
//! leader does not hold up its writes to the other shards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scalestore::{Client, ClientOptions, ClusterOptions, EmbeddedCluster, ReadConsistency};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_node_in_a_clients_hints_and_map_costs_no_write() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 5,
        shards: 8,
        replication: Some(3),
        ..Default::default()
    })
    .await
    .expect("start");
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let options = ClientOptions {
        timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let keys = cluster.map().key_per_shard("key-");
    // An idle client that learned every shard's leader (node 5 leads some) and the map listing
    // node 5, before the node goes.
    let idle = Client::new(cluster.transport(), options);
    for k in keys.values() {
        idle.put(k, "before").await.expect("first write");
    }
    let led_by_five = cluster
        .status()
        .expect("status")
        .nodes
        .iter()
        .find(|n| n.node == 5)
        .map(|n| n.leaders)
        .unwrap_or(0);
    assert!(led_by_five > 0, "node 5 leads a shard the client talked to");

    // A busy client writes all through the removal.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let busy = Client::new(cluster.transport(), options);
    let writer = {
        let (stop, acked, failures) = (stop.clone(), acked.clone(), failures.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let (k, v) = (format!("busy-{i}"), format!("v{i}"));
                match busy.put(&k, &v).await {
                    Ok(()) => {
                        acked.lock().expect("lock").insert(k, v);
                    }
                    Err(e) => failures.lock().expect("lock").push(format!("{k}: {e}")),
                }
                i += 1;
            }
        })
    };
    cluster
        .remove_node(5, Duration::from_secs(120))
        .await
        .expect("remove node 5");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");

    // The idle client still names node 5 as leader of some shards.
    for k in keys.values() {
        idle.put(k, "after")
            .await
            .unwrap_or_else(|e| panic!("write to {k} after node 5 left: {e}"));
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "writes failed: {failures:?}");
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() > 20, "the busy client got work done");
    let check = cluster.client();
    let got = check
        .batch_get(
            &acked.keys().collect::<Vec<_>>(),
            ReadConsistency::Linearizable,
        )
        .await
        .expect("read back");
    for ((k, v), got) in acked.iter().zip(got) {
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "write {k} lost");
    }
    for k in keys.values() {
        assert_eq!(
            check.get(k).await.expect("get").as_deref(),
            Some(&b"after"[..])
        );
    }
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaderless_shard_does_not_stall_a_fresh_clients_writes_to_other_shards() {
    // One replica per shard, one shard per node: stopping node 1 takes shard 0's only replica
    // away and leaves the others whole.
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 3,
        shards: 3,
        replication: Some(1),
        ..Default::default()
    })
    .await
    .expect("start");
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let map = cluster.map();
    let keys = map.key_per_shard("key-");
    let options = ClientOptions {
        timeout: Duration::from_secs(8),
        ..Default::default()
    };
    // Usual latency of a fresh client's first write (it opens a session) to each shard.
    let mut usual = Duration::ZERO;
    for (shard, k) in &keys {
        let fresh = Client::new(cluster.transport(), options);
        let started = Instant::now();
        fresh.put(k, "warm").await.expect("write");
        usual = usual.max(started.elapsed());
        println!(
            "fresh client, first write to shard {shard}: {:?}",
            started.elapsed()
        );
    }
    let dead_shard = 0;
    let down = map.shard(dead_shard).expect("shard").replicas[0];
    cluster.stop_node(down).await.expect("stop");

    let client = Client::new(cluster.transport(), options);
    client.shard_map().await.expect("map");
    let stuck = {
        let (client, k) = (client.clone(), keys[&dead_shard].clone());
        tokio::spawn(async move { client.put(&k, "never").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others = keys
        .iter()
        .filter(|(s, _)| **s != dead_shard)
        .map(|(s, k)| {
            let (client, s, k) = (client.clone(), *s, k.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                client
                    .put(&k, "while-one-shard-is-down")
                    .await
                    .expect("write");
                (s, started.elapsed())
            })
        })
        .collect::<Vec<_>>();
    for task in others {
        let (shard, took) = task.await.expect("task");
        println!(
            "shard {shard}: {took:?} while shard {dead_shard} has no replica up (usual {usual:?})"
        );
        assert!(
            took < Duration::from_secs(2),
            "a write to shard {shard} waited {took:?} behind the leaderless shard {dead_shard}"
        );
    }
    assert!(
        stuck.await.expect("task").is_err(),
        "shard {dead_shard} had no replica"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// The manager's group holds the cluster map: a request naming it, through the same door every
/// client uses, is refused and the map is untouched. Reading its status stays allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_requests_aimed_at_the_managers_group_are_refused_and_change_nothing() {
    use scalestore::protocol::{ClientRequest, ClientResponse};
    use scalestore::{Command, Error, META_GROUP};

    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 3,
        shards: 2,
        ..Default::default()
    })
    .await
    .expect("start");
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let before = cluster.map();
    let transport = cluster.transport();
    let leader = cluster
        .wait_for_leader(META_GROUP, Duration::from_secs(10))
        .await
        .expect("manager leader");
    let raw = [
        ClientRequest::Write {
            group: META_GROUP,
            command: Command::Put {
                key: b"cluster-map".to_vec(),
                value: b"{}".to_vec(),
            },
            session: None,
        },
        ClientRequest::Write {
            group: META_GROUP,
            command: Command::Delete {
                key: b"cluster-map".to_vec(),
            },
            session: None,
        },
        ClientRequest::Read {
            group: META_GROUP,
            key: b"cluster-map".to_vec(),
            consistency: ReadConsistency::Linearizable,
        },
        ClientRequest::OpenSession { group: META_GROUP },
    ];
    for request in raw {
        for (node, forward) in [(leader, false), (leader, true), (leader % 3 + 1, true)] {
            let answer = transport.call(node, request.clone(), forward).await;
            assert!(
                matches!(answer, Err(Error::InvalidArgument(_))),
                "{request:?} at node {node}: {answer:?}"
            );
        }
    }
    let status = transport
        .call(
            leader,
            ClientRequest::GroupStatus { group: META_GROUP },
            false,
        )
        .await;
    assert!(
        matches!(status, Ok(ClientResponse::GroupStatus(_))),
        "{status:?}"
    );
    // The map still works and says what it said.
    let client = cluster.client();
    client.put("after", "1").await.expect("write");
    let map = client.refresh_map().await.expect("map");
    assert_eq!(map.shards, before.shards);
    assert_eq!(map.epoch, before.epoch);
    cluster.shutdown().await.expect("shutdown");
}
