//! Membership changes that always finish, and a shard manager fenced at each shard's own Raft:
//! a voter change cut between its joint and uniform steps is finished, and a change sent by a
//! deposed manager is refused once the new manager has rolled its move back. Each test ends
//! with the placement check the fault suite also runs: map replicas equal the uniform Raft
//! voters, and every voter runs a replica holding the leader's data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use scalestore::{ClusterOptions, EmbeddedCluster, ManagerOptions, ReadConsistency, META_GROUP};

const SETTLE: Duration = Duration::from_secs(60);

async fn start(
    nodes: usize,
    shards: usize,
    replication: usize,
    move_attempts: u32,
) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes,
        shards,
        replication: Some(replication),
        manager: ManagerOptions {
            dead_node_timeout: Duration::from_secs(600),
            move_attempts,
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
    cluster
}

async fn preload(cluster: &EmbeddedCluster, n: usize) -> BTreeMap<String, String> {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|i| (format!("pre-{i}"), format!("p{i}")))
        .collect();
    cluster.client().batch_put(&pairs).await.expect("load");
    pairs.into_iter().collect()
}

async fn assert_reads_back(cluster: &EmbeddedCluster, pairs: &BTreeMap<String, String>) {
    let keys: Vec<&String> = pairs.keys().collect();
    let got = cluster
        .client()
        .batch_get(&keys, ReadConsistency::Linearizable)
        .await
        .expect("batch get");
    for (k, v) in keys.iter().zip(got) {
        assert_eq!(v.as_deref(), Some(pairs[*k].as_bytes()), "write {k} lost");
    }
}

/// Every shard's leader has a uniform membership whose voters are exactly the map's replicas.
fn assert_uniform_with_map_voters(cluster: &EmbeddedCluster) {
    let map = cluster.map();
    for shard in &map.shards {
        let leader = cluster
            .group_status(shard.id)
            .expect("status")
            .into_iter()
            .find(|s| s.is_leader)
            .expect("leader");
        assert!(
            !leader.is_joint(),
            "shard {} left in joint consensus: {:?}",
            shard.id,
            leader.voter_sets
        );
        let mut voters = leader.uniform_voters().expect("uniform");
        voters.sort();
        let mut replicas = shard.replicas.clone();
        replicas.sort();
        assert_eq!(voters, replicas, "shard {} voters vs map", shard.id);
    }
}

async fn assert_placement_agrees(cluster: &EmbeddedCluster) {
    let problems = cluster.placement_problems(Duration::from_secs(30)).await;
    assert!(problems.is_empty(), "map and Raft disagree: {problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_config_left_by_an_interrupted_r_increase_is_finished_uniform() {
    let cluster = start(4, 4, 2, 20).await;
    let pairs = preload(&cluster, 200).await;
    // The first two voter changes (adding a third replica) stop after the joint step, and
    // leadership moves: the union of the joint halves already equals the target voters.
    cluster.failpoints().interrupt_after_joint_step(2);
    cluster.set_replication(3).await.expect("R=3");
    cluster.wait_until_settled(SETTLE).await.expect("settled");
    assert_eq!(
        cluster.failpoints().interrupts_left(),
        0,
        "both voter changes were interrupted"
    );
    assert_uniform_with_map_voters(&cluster);
    assert!(cluster.map().shards.iter().all(|s| s.replicas.len() == 3));
    assert_placement_agrees(&cluster).await;
    assert_reads_back(&cluster, &pairs).await;
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_config_left_by_an_interrupted_replacement_is_finished_uniform() {
    let cluster = start(4, 8, 3, 20).await;
    let pairs = preload(&cluster, 200).await;
    // A fifth node gets replicas by replacement (one in, one out); the first two such voter
    // changes stop after the joint step.
    cluster.failpoints().interrupt_after_joint_step(2);
    let five = cluster.add_node().await.expect("add node");
    let map = cluster.wait_until_settled(SETTLE).await.expect("settled");
    assert_eq!(cluster.failpoints().interrupts_left(), 0);
    assert!(!map.shards_on(five).is_empty(), "node {five} got replicas");
    assert_uniform_with_map_voters(&cluster);
    assert_placement_agrees(&cluster).await;
    assert_reads_back(&cluster, &pairs).await;
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joint_config_of_a_move_given_up_is_changed_back_before_the_move_is_cleared() {
    let cluster = start(4, 8, 3, 3).await;
    let pairs = preload(&cluster, 200).await;
    // The first replacement stops after its joint step, the next attempts fail: the manager
    // gives the move up while the group is joint, and must settle it on the map's voters.
    cluster.failpoints().interrupt_after_joint_step(1);
    cluster.failpoints().fail_voter_changes(2);
    cluster.add_node().await.expect("add node");
    cluster.wait_until_settled(SETTLE).await.expect("settled");
    assert_eq!(cluster.failpoints().interrupts_left(), 0);
    assert_eq!(cluster.failpoints().failures_left(), 0);
    let kinds: Vec<String> = cluster.events().into_iter().map(|e| e.kind).collect();
    assert!(
        kinds.iter().any(|k| k == "move_rolled_back"),
        "the move was given up: {kinds:?}"
    );
    assert_uniform_with_map_voters(&cluster);
    assert_placement_agrees(&cluster).await;
    assert_reads_back(&cluster, &pairs).await;
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_voter_change_from_a_deposed_manager_is_refused_after_the_roll_back() {
    let cluster = start(4, 4, 3, 3).await;
    let pairs = preload(&cluster, 200).await;
    let failpoints = cluster.failpoints().clone();
    // The manager's voter change reaches the shard's leader and waits there (a message the
    // network delays); the new manager's own attempts fail until it rolls the move back.
    failpoints.hold_next_voter_change();
    failpoints.fail_voter_changes(3);
    cluster.set_replication(2).await.expect("R=2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !failpoints.is_holding() {
        assert!(Instant::now() < deadline, "no voter change was sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let old_manager = cluster
        .wait_for_leader(META_GROUP, Duration::from_secs(10))
        .await
        .expect("manager leader");
    let holder = failpoints.holder();
    // Depose the manager: leadership of the manager's group moves away, and the old manager
    // is cut off (unless it is the shard leader holding the change, which must stay leader).
    let other = cluster
        .map()
        .meta_replicas
        .iter()
        .copied()
        .find(|n| *n != old_manager && Some(*n) != holder)
        .expect("another manager replica");
    cluster
        .node(old_manager)
        .expect("node")
        .raft(META_GROUP)
        .expect("meta")
        .trigger()
        .transfer_leader(other)
        .await
        .expect("transfer");
    // Nothing to plan any more once the new manager has rolled the move back.
    cluster.set_replication(3).await.expect("R=3");
    if holder != Some(old_manager) {
        cluster.faults().isolate(old_manager);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster
        .events()
        .iter()
        .any(|e| e.kind == "move_rolled_back")
    {
        assert!(
            Instant::now() < deadline,
            "the new manager did not roll back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cluster.map().pending_move.is_none());
    // The old manager's change now arrives.
    cluster.faults().heal();
    failpoints.release();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_uniform_with_map_voters(&cluster);
    assert_placement_agrees(&cluster).await;
    assert_reads_back(&cluster, &pairs).await;
    cluster.shutdown().await.expect("shutdown");
}
