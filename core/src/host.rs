//! One node's life in a process, shared by the embedded cluster and the server: open its store,
//! start the replicas it holds, run its shard manager and leader watch; bootstrap a new cluster;
//! and the map changes behind join, decommission and replication changes. The embedded cluster
//! runs many hosts in one process over an in-process network; the server runs one per process
//! over gRPC. Neither adds behaviour of its own here.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::placement::events::EventLog;
use crate::placement::manager::{self, ManagerOptions};
use crate::placement::watch;
use crate::replica::network::{AdminReply, AdminRequest, PeerTransport};
use crate::replica::node::{GroupStatus, Node, NodeConfig};
use crate::sharding::{NodeState, ShardInfo, ShardMap, META_GROUP};
pub use crate::status::{ClusterStatus, NodeStatus, ShardStatus};
use crate::types::{GroupId, NodeId};

/// What a started node runs besides its replicas.
#[derive(Clone)]
pub struct HostServices {
    pub manager: ManagerOptions,
    /// Where the node records events (elections, moves, nodes up and down).
    pub events: Arc<EventLog>,
}

/// Opens node `config.id` in `dir` and starts it: every replica on its disk (a new node: the
/// groups `map` gives it, or none), its shard manager and its leader watch. A previous
/// incarnation in this process may still be letting go of the RocksDB lock: retried briefly.
pub async fn start_node(
    config: NodeConfig,
    dir: &Path,
    peers: Arc<dyn PeerTransport>,
    map: Arc<ShardMap>,
    services: &HostServices,
) -> Result<Arc<Node>> {
    let id = config.id;
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        match Node::open_with_map(config.clone(), dir, peers.clone(), map.clone()) {
            Ok(n) => break n,
            Err(Error::Storage(e)) if e.contains("lock") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    };
    // A replica moved away while the node was down starts too: only its group's leader can tell
    // that it is no member any more (a removed voter never receives the config that removes
    // it), and the shard manager deletes it once the leader has committed a membership
    // without it.
    let on_disk = node.store()?.groups_with_state()?;
    let mut groups: BTreeSet<GroupId> = on_disk.iter().copied().collect();
    if on_disk.is_empty() {
        groups.extend(map.groups_on(id));
    }
    // One group whose store cannot start (openraft refuses it as corrupted, say) keeps only
    // that group down: the node starts the others and reports it.
    for group in groups {
        if let Err(e) = node.start_group(group).await {
            node.mark_unstartable(group, &e);
            services.events.record(
                "group_unstartable",
                format!("group {group} on node {id} could not start: {e}"),
            );
        }
    }
    node.spawn_task(manager::spawn(
        &node,
        services.manager,
        services.events.clone(),
    ));
    node.spawn_task(watch::spawn(&node, services.events.clone()));
    node.spawn_task(crate::replica::hibernation::spawn(&node));
    Ok(node)
}

/// For a new cluster: initializes each group of `initial` whose first replica is `node` (so it
/// also becomes the group's first leader, spreading leaders evenly). With `any_voter`, also
/// every other group `node` is an initial voter of: for a cluster whose first member has not
/// started, so its groups still form (openraft's initialization is idempotent for the same
/// membership, so two voters doing it agree). A group already initialized is left alone, so
/// this is safe to repeat at every start.
pub async fn initialize_groups(node: &Node, initial: &ShardMap, any_voter: bool) -> Result<()> {
    let groups = initial
        .shards
        .iter()
        .map(|s| (s.id, s.replicas.clone()))
        .chain([(META_GROUP, initial.meta_replicas.clone())]);
    for (group, replicas) in groups {
        let first = replicas.first() == Some(&node.id());
        let stand_in = any_voter && replicas.contains(&node.id());
        if !(first || stand_in) {
            continue;
        }
        let Some(raft) = node.raft(group) else {
            continue;
        };
        let initialized = raft.is_initialized().await.map_err(|e| Error::Fatal {
            group,
            message: e.to_string(),
        })?;
        if !initialized {
            node.initialize_group(group, &replicas).await?;
        }
    }
    Ok(())
}

/// The live map: `initial` is written into the manager's group once (by whichever node gets
/// there first) and read back ever after; every node is told. Waits up to `timeout` for the
/// manager's group to elect a leader.
pub async fn publish_initial_map(
    node: &Node,
    initial: &ShardMap,
    timeout: Duration,
) -> Result<ShardMap> {
    let deadline = Instant::now() + timeout;
    let map = loop {
        match manager::read_map_if_written(node).await {
            Ok(Some((map, _))) => break map,
            Ok(None) => {
                manager::cas_map(node, None, initial).await?;
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    manager::broadcast_map(node, &map).await;
    Ok(map)
}

/// The map change that makes `id` an active member (listening at `address`, for processes).
/// Returns whether the map changed, as [`manager::update_map`] expects.
pub fn join(id: NodeId, address: Option<String>) -> impl Fn(&mut ShardMap) -> Result<bool> + Clone {
    move |m| {
        if m.nodes.get(&id) == Some(&NodeState::Leaving) {
            return Err(Error::InvalidArgument(format!(
                "node {id} is being decommissioned; it cannot join again until it has left"
            )));
        }
        let mut changed = m.nodes.insert(id, NodeState::Active).is_none();
        if let Some(a) = &address {
            changed |= m.addresses.insert(id, a.clone()).as_ref() != Some(a);
        }
        Ok(changed)
    }
}

/// Refuses a decommission that would leave fewer active nodes than replicas per shard.
pub fn check_removal(map: &ShardMap, id: NodeId) -> Result<()> {
    if !map.nodes.contains_key(&id) {
        return Err(Error::UnknownNode(id));
    }
    let staying = map.active_nodes().into_iter().filter(|n| *n != id).count();
    if staying < map.replication {
        return Err(Error::InvalidArgument(format!(
            "removing node {id} would leave {staying} nodes for {} replicas per shard; lower the replication factor first",
            map.replication
        )));
    }
    Ok(())
}

/// The map change that starts decommissioning `id`: the manager moves its replicas (and
/// leaderships) away, then drops it from the map.
pub fn leave(id: NodeId) -> impl Fn(&mut ShardMap) -> Result<bool> + Clone {
    move |m| {
        check_removal(m, id)?;
        Ok(m.nodes.get(&id) == Some(&NodeState::Active)
            && m.nodes.insert(id, NodeState::Leaving).is_some())
    }
}

/// Refuses a replication factor outside 1..=active nodes.
pub fn check_replication(map: &ShardMap, replication: usize) -> Result<()> {
    let active = map.active_nodes().len();
    if replication == 0 || replication > active {
        return Err(Error::InvalidArgument(format!(
            "replication factor {replication} must be between 1 and the {active} active nodes"
        )));
    }
    Ok(())
}

/// The map change to `replication` replicas per shard; the manager adds or drops replicas one at
/// a time.
pub fn replicate(replication: usize) -> impl Fn(&mut ShardMap) -> Result<bool> + Clone {
    move |m| {
        check_replication(m, replication)?;
        let changed = m.replication != replication;
        m.replication = replication;
        Ok(changed)
    }
}

/// Status of every shard (as its leader, or the most advanced replica, reports it) and every
/// node of `node`'s map, asked over the peer network: what a process serving one node reports
/// for the whole cluster.
pub async fn cluster_status(node: &Node) -> Result<ClusterStatus> {
    let map = node.shard_map();
    let ask = Duration::from_millis(800);
    let shard_asks = map.shards.iter().map(|shard| async move {
        let statuses = shard
            .replicas
            .iter()
            .map(|r| manager::admin(node, *r, AdminRequest::Status { group: shard.id }, ask));
        let seen: Vec<GroupStatus> = futures::future::join_all(statuses)
            .await
            .into_iter()
            .filter_map(|reply| match reply {
                Ok(AdminReply::Status(s)) => Some(*s),
                _ => None,
            })
            .collect();
        let best = best_view(&seen);
        let size = match best {
            Some(b) => {
                match manager::admin(node, b.node, AdminRequest::Size { group: shard.id }, ask)
                    .await
                {
                    Ok(AdminReply::Size(n)) => n,
                    _ => 0,
                }
            }
            None => 0,
        };
        shard_status(shard, best, size)
    });
    let shards: Vec<ShardStatus> = futures::future::join_all(shard_asks).await;
    let pings = map.nodes.keys().map(|n| async move {
        match manager::admin(node, *n, AdminRequest::Ping, ask).await {
            Ok(AdminReply::Groups { unstartable, .. }) => (*n, true, unstartable),
            Ok(_) => (*n, true, Vec::new()),
            Err(_) => (*n, false, Vec::new()),
        }
    });
    let up: Vec<(NodeId, bool, Vec<GroupId>)> = futures::future::join_all(pings).await;
    let nodes = up
        .into_iter()
        .map(|(id, up, unstartable)| NodeStatus {
            node: id,
            up,
            unstartable,
            shards: map.shards_on(id),
            leaders: shards.iter().filter(|s| s.leader == Some(id)).count(),
        })
        .collect();
    Ok(ClusterStatus { shards, nodes })
}

/// The replica whose view of a shard counts: the leader of the highest term, else the replica
/// furthest along.
pub(crate) fn best_view(seen: &[GroupStatus]) -> Option<&GroupStatus> {
    seen.iter()
        .filter(|s| s.is_leader)
        .max_by_key(|s| s.term)
        .or_else(|| seen.iter().max_by_key(|s| (s.term, s.applied_index)))
}

/// A shard's status as `best` (see [`best_view`]) reports it.
pub(crate) fn shard_status(
    shard: &ShardInfo,
    best: Option<&GroupStatus>,
    approximate_bytes: u64,
) -> ShardStatus {
    ShardStatus {
        shard: shard.id,
        ranges: shard.ranges.clone(),
        replicas: shard.replicas.clone(),
        leader: best.and_then(|b| b.leader),
        term: best.map(|b| b.term).unwrap_or(0),
        committed_index: best.and_then(|b| b.committed_index),
        applied_index: best.and_then(|b| b.applied_index),
        approximate_bytes,
        voter_sets: best.map(|b| b.voter_sets.clone()).unwrap_or_default(),
        joint: best.is_some_and(GroupStatus::is_joint),
    }
}

/// Moves every leadership `node` holds (the manager's group's included) to another voter,
/// waiting up to `timeout`: what a node does before a graceful stop.
pub async fn hand_off_leaderships(node: &Node, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0usize;
    loop {
        attempt += 1;
        let led: Vec<GroupStatus> = node
            .groups()
            .into_iter()
            .filter_map(|g| node.status(g).ok())
            .filter(|s| s.is_leader)
            .collect();
        if led.is_empty() || Instant::now() >= deadline {
            if !led.is_empty() {
                tracing::warn!(groups = led.len(), "stopping while still leading");
            }
            return;
        }
        for s in led {
            // Each round asks the next voter: one that is down or behind does not hold the
            // hand-off up.
            let others: Vec<NodeId> = s
                .voters
                .iter()
                .copied()
                .filter(|v| *v != node.id())
                .collect();
            let Some(to) = others.get(attempt % others.len().max(1)).copied() else {
                continue;
            };
            if let Some(raft) = node.raft(s.group) {
                let _ = raft.trigger().transfer_leader(to).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
