//! The shard manager. The cluster map lives in the manager's own Raft group (`META_GROUP`) under
//! one key, changed only by compare-and-swap with a bumped epoch. Every node runs the manager
//! loop; only the node leading `META_GROUP` acts. Each tick it reconciles the cluster with the
//! map: finish (or roll back) the one pending move, else plan the next one — replace replicas on
//! leaving or dead nodes, reach the target replication factor, even out replicas per node — and
//! finally even out leaders. A move is recorded in the map before it starts (add learner, catch
//! up, change voters, drop the old replica's data), so a new manager leader completes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::placement::events::EventLog;
use crate::protocol::{ClientRequest, ClientResponse};
use crate::replica::network::{AdminReply, AdminRequest, Led, PeerRequest, PeerResponse};
use crate::replica::node::{GroupStatus, Node};
use crate::sharding::{NodeState, PendingMove, ShardMap, META_GROUP};
use crate::types::{Command, CommandResult, GroupId, LogId, NodeId, ReadConsistency};

/// The key of the cluster map in the manager's group.
pub const MAP_KEY: &[u8] = b"cluster-map";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagerOptions {
    /// How often the manager reconciles.
    pub tick: Duration,
    /// A node unreachable this long has its replicas re-created elsewhere.
    pub dead_node_timeout: Duration,
    /// Failed attempts at a move before it is rolled back.
    pub move_attempts: u32,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            tick: Duration::from_millis(100),
            dead_node_timeout: Duration::from_secs(30),
            move_attempts: 20,
        }
    }
}

/// How a map operation reaches the manager's group: through whichever node leads it (any
/// caller), or only on this node while it leads (the manager itself: a deposed manager's read or
/// write then fails instead of being forwarded to the new leader and taking effect there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    AnyNode,
    ThisLeader,
}

/// Runs `op` again while it fails in a way a retry may fix (no leader yet, leader moving), for
/// up to ten seconds. With `Via::ThisLeader`, losing leadership ends it at once.
async fn retrying<T, F, Fut>(node: &Node, via: Via, op: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut backoff = Duration::from_millis(5);
    loop {
        match op().await {
            Err(e @ Error::NotLeader { .. }) if via == Via::ThisLeader => return Err(e),
            // A stopping node gives up at once, so nobody holds on to it.
            Err(e)
                if (e.is_retryable() || matches!(e, Error::Timeout { .. }))
                    && Instant::now() < deadline
                    && !node.is_stopping() =>
            {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Reads the map from the manager's group (linearizably), with its stored bytes.
pub async fn read_map(node: &Node) -> Result<(ShardMap, Vec<u8>)> {
    read_map_via(node, Via::AnyNode).await
}

async fn read_map_via(node: &Node, via: Via) -> Result<(ShardMap, Vec<u8>)> {
    // A new cluster writes its map right after its groups elect leaders: a request that comes
    // in between (say, an admin call as soon as every shard shows a leader) waits for it.
    let deadline = Instant::now() + MAP_WRITTEN_WAIT;
    loop {
        if let Some(map) = retrying(node, via, || read_map_once(node, via)).await? {
            return Ok(map);
        }
        if Instant::now() >= deadline || node.is_stopping() {
            return Err(Error::Unavailable("cluster map not written yet".into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a map read waits for a new cluster's first map.
const MAP_WRITTEN_WAIT: Duration = Duration::from_secs(5);

/// [`read_map`], with `None` while no map has been written (a new cluster).
pub async fn read_map_if_written(node: &Node) -> Result<Option<(ShardMap, Vec<u8>)>> {
    retrying(node, Via::AnyNode, || read_map_once(node, Via::AnyNode)).await
}

async fn read_map_once(node: &Node, via: Via) -> Result<Option<(ShardMap, Vec<u8>)>> {
    let request = ClientRequest::Read {
        group: META_GROUP,
        key: MAP_KEY.to_vec(),
        consistency: ReadConsistency::Linearizable,
    };
    match node.handle_client(request, via == Via::AnyNode).await? {
        ClientResponse::Read(Some(bytes)) => {
            let map = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Storage(format!("corrupt cluster map: {e}")))?;
            Ok(Some((map, bytes)))
        }
        ClientResponse::Read(None) => Ok(None),
        other => Err(Error::Unavailable(format!("unexpected response {other:?}"))),
    }
}

/// Writes `new` if the stored map is still `expected` (None: no map yet). Returns whether it did.
/// A retried write that was applied the first time reports false; callers re-read the map.
pub async fn cas_map(node: &Node, expected: Option<Vec<u8>>, new: &ShardMap) -> Result<bool> {
    let via = Via::AnyNode;
    retrying(node, via, || cas_map_once(node, expected.clone(), new, via)).await
}

async fn cas_map_once(
    node: &Node,
    expected: Option<Vec<u8>>,
    new: &ShardMap,
    via: Via,
) -> Result<bool> {
    let bytes = serde_json::to_vec(new).map_err(Error::storage)?;
    let request = ClientRequest::Write {
        group: META_GROUP,
        command: Command::Cas {
            key: MAP_KEY.to_vec(),
            expected,
            new: bytes,
        },
        session: None,
    };
    match node.handle_client(request, via == Via::AnyNode).await? {
        ClientResponse::Write(CommandResult::Cas { success, .. }) => Ok(success),
        other => Err(Error::Unavailable(format!("unexpected response {other:?}"))),
    }
}

/// Applies `change` to the map (retrying on concurrent changes), bumps the epoch, and tells
/// every node. `change` returns false to leave the map as it is.
pub async fn update_map(
    node: &Node,
    change: impl Fn(&mut ShardMap) -> Result<bool>,
) -> Result<ShardMap> {
    update_map_via(node, Via::AnyNode, change).await
}

/// [`update_map`] by the manager: only while this node leads the manager's group.
async fn manager_update_map(
    node: &Node,
    change: impl Fn(&mut ShardMap) -> Result<bool>,
) -> Result<ShardMap> {
    update_map_via(node, Via::ThisLeader, change).await
}

pub(crate) async fn update_map_via(
    node: &Node,
    via: Via,
    change: impl Fn(&mut ShardMap) -> Result<bool>,
) -> Result<ShardMap> {
    for _ in 0..20 {
        let (map, bytes) = read_map_via(node, via).await?;
        let mut new = map.clone();
        if !change(&mut new)? {
            return Ok(map);
        }
        new.epoch = map.epoch + 1;
        let written = retrying(node, via, || {
            cas_map_once(node, Some(bytes.clone()), &new, via)
        })
        .await?;
        if written {
            broadcast_map(node, &new).await;
            return Ok(new);
        }
    }
    Err(Error::Unavailable("cluster map kept changing".into()))
}

/// Best effort: every node of the map learns it now (nodes also learn it on their next request).
pub async fn broadcast_map(node: &Node, map: &ShardMap) {
    node.set_shard_map(Arc::new(map.clone()));
    let sends = map.nodes.keys().filter(|n| **n != node.id()).map(|n| {
        admin(
            node,
            *n,
            AdminRequest::SetMap(Box::new(map.clone())),
            Duration::from_millis(500),
        )
    });
    futures::future::join_all(sends).await;
}

/// Sends an admin request to `target` (this node included) with a deadline.
pub async fn admin(
    node: &Node,
    target: NodeId,
    request: AdminRequest,
    timeout: Duration,
) -> Result<AdminReply> {
    let call = async {
        if target == node.id() {
            return node.handle_admin(request).await;
        }
        match node
            .peers()
            .send(node.id(), target, PeerRequest::Admin(request), timeout)
            .await?
        {
            PeerResponse::Admin(r) => Ok(r),
            _ => Err(Error::Unavailable("unexpected reply kind".into())),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("admin request to node {target}"),
            waited_ms: timeout.as_millis() as u64,
        })?
}

async fn status_of(node: &Node, target: NodeId, group: GroupId) -> Result<GroupStatus> {
    match admin(
        node,
        target,
        AdminRequest::Status { group },
        Duration::from_millis(500),
    )
    .await?
    {
        AdminReply::Status(s) => Ok(*s),
        _ => Err(Error::Unavailable("no status".into())),
    }
}

/// The leader of `group`, as its replicas report it. Every candidate is asked; of several
/// nodes that believe they lead (an old leader cut off has not stepped down yet), the one of the
/// highest term is the leader, and only its view of the membership counts.
pub(crate) async fn find_leader(
    node: &Node,
    group: GroupId,
    candidates: &[NodeId],
) -> Result<(NodeId, GroupStatus)> {
    let asks = candidates.iter().map(|r| status_of(node, *r, group));
    let seen: Vec<GroupStatus> = futures::future::join_all(asks)
        .await
        .into_iter()
        .filter_map(Result::ok)
        .collect();
    let claimed = seen.iter().filter(|s| s.is_leader).max_by_key(|s| s.term);
    let highest_term = seen.iter().map(|s| s.term).max().unwrap_or(0);
    if let Some(s) = claimed.filter(|s| s.term >= highest_term) {
        return Ok((s.node, s.clone()));
    }
    // Nobody asked leads at the highest term seen: follow that term's hint (the leader may be
    // a node outside `candidates`, such as a replica being added).
    let hint = seen
        .iter()
        .filter(|s| s.term == highest_term)
        .find_map(|s| s.leader);
    if let Some(l) = hint {
        if let Ok(ls) = status_of(node, l, group).await {
            if ls.is_leader && ls.term >= highest_term {
                return Ok((l, ls));
            }
        }
    }
    Err(Error::Unavailable(format!(
        "group {group} has no reachable leader"
    )))
}

/// The next move that brings `map` closer to its target, if any. `down`: nodes not to use.
pub fn plan(map: &ShardMap, down: &BTreeSet<NodeId>) -> Option<PendingMove> {
    let live: Vec<NodeId> = map
        .active_nodes()
        .into_iter()
        .filter(|n| !down.contains(n))
        .collect();
    let load = map.load();
    let least_loaded = |exclude: &[NodeId]| -> Option<NodeId> {
        live.iter()
            .filter(|n| !exclude.contains(n))
            .min_by_key(|n| (load.get(n).copied().unwrap_or(0), **n))
            .copied()
    };
    let unwanted = |n: &NodeId| map.nodes.get(n) != Some(&NodeState::Active) || down.contains(n);
    let groups = std::iter::once(META_GROUP).chain(map.shard_ids());
    for group in groups {
        let replicas = map.replicas_of(group)?.to_vec();
        let target = if group == META_GROUP {
            3.min(live.len()).max(1)
        } else {
            map.replication
        };
        // Replace replicas on leaving or dead nodes.
        if let Some(bad) = replicas.iter().find(|n| unwanted(n)) {
            if let Some(to) = least_loaded(&replicas) {
                return Some(PendingMove::new(group, Some(*bad), Some(to)));
            }
            // No spare node: a leaving (live) node's replica may still go if enough remain.
            if !down.contains(bad) && replicas.len() > target {
                return Some(PendingMove::new(group, Some(*bad), None));
            }
        }
        if replicas.len() < target {
            if let Some(to) = least_loaded(&replicas) {
                return Some(PendingMove::new(group, None, Some(to)));
            }
        }
        if replicas.len() > target {
            let from = replicas
                .iter()
                .max_by_key(|n| (load.get(n).copied().unwrap_or(0), **n))?;
            return Some(PendingMove::new(group, Some(*from), None));
        }
    }
    // Even out shard replicas per live node.
    let (max_node, max) = live
        .iter()
        .map(|n| (*n, load.get(n).copied().unwrap_or(0)))
        .max_by_key(|(n, l)| (*l, *n))?;
    let (min_node, min) = live
        .iter()
        .map(|n| (*n, load.get(n).copied().unwrap_or(0)))
        .min_by_key(|(n, l)| (*l, *n))?;
    if max > min + 1 {
        let shard = map
            .shards
            .iter()
            .find(|s| s.replicas.contains(&max_node) && !s.replicas.contains(&min_node))?;
        return Some(PendingMove::new(shard.id, Some(max_node), Some(min_node)));
    }
    None
}

/// What the manager remembers between ticks (reset when leadership moves).
#[derive(Default)]
struct ManagerState {
    last_seen: BTreeMap<NodeId, Instant>,
    down: BTreeSet<NodeId>,
    /// Nodes whose last ping went unanswered (down or not yet): no leadership goes to them.
    unanswered: BTreeSet<NodeId>,
    move_failures: u32,
}

/// Starts the manager loop of `node` (it acts only while `node` leads the manager's group).
pub fn spawn(
    node: &Arc<Node>,
    options: ManagerOptions,
    events: Arc<EventLog>,
) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(node);
    tokio::spawn(run(weak, options, events))
}

async fn run(weak: Weak<Node>, options: ManagerOptions, events: Arc<EventLog>) {
    let mut state: Option<ManagerState> = None;
    loop {
        tokio::time::sleep(options.tick).await;
        let Some(node) = weak.upgrade() else { return };
        let leads = node.raft(META_GROUP).is_some_and(|r| r.is_leader());
        if !leads {
            state = None;
            continue;
        }
        if state.is_none() {
            // A new manager tells every node the map: nodes that restarted (a whole cluster
            // after a crash, say) start from an older map and would route by it.
            if let Ok((map, _)) = read_map_via(&node, Via::ThisLeader).await {
                broadcast_map(&node, &map).await;
            }
        }
        let st = state.get_or_insert_with(ManagerState::default);
        if let Err(e) = reconcile(&node, &options, &events, st).await {
            tracing::debug!(node = node.id(), error = %e, "manager tick");
        }
    }
}

async fn reconcile(
    node: &Node,
    options: &ManagerOptions,
    events: &EventLog,
    st: &mut ManagerState,
) -> Result<()> {
    let (map, _) = read_map_via(node, Via::ThisLeader).await?;
    // Liveness: a fresh manager gives every node a full timeout before calling it dead.
    let now = Instant::now();
    let pings = map.nodes.keys().map(|n| async move {
        (
            *n,
            admin(node, *n, AdminRequest::Ping, Duration::from_millis(300)).await,
        )
    });
    let mut hosted: BTreeMap<NodeId, Vec<GroupId>> = BTreeMap::new();
    let mut leading: Vec<(NodeId, Led)> = Vec::new();
    for (n, reply) in futures::future::join_all(pings).await {
        // An answer from another node (one now at `n`'s old address) says nothing of `n`.
        let reply = match reply {
            Ok(AdminReply::Groups { node, .. }) if node != n => {
                tracing::warn!(
                    asked = n,
                    answered = node,
                    "a ping for one node was answered by another"
                );
                Err(Error::WrongNode {
                    asked: n,
                    answered: node,
                })
            }
            other => other,
        };
        let seen = st.last_seen.entry(n).or_insert(now);
        if reply.is_err() {
            st.unanswered.insert(n);
        } else {
            st.unanswered.remove(&n);
        }
        if let Ok(reply) = reply {
            *seen = now;
            if let AdminReply::Groups {
                groups, leading: l, ..
            } = reply
            {
                hosted.insert(n, groups);
                leading.extend(l.into_iter().map(|l| (n, l)));
            }
            if st.down.remove(&n) {
                events.record("node_up", format!("node {n} is reachable again"));
            }
        } else if now.duration_since(*seen) >= options.dead_node_timeout && st.down.insert(n) {
            events.record(
                "node_down",
                format!("node {n} unreachable for {:?}", options.dead_node_timeout),
            );
        }
    }
    if let Some(plan) = map.pending_split {
        return crate::placement::split::finish(node, &plan, Via::ThisLeader, events)
            .await
            .map(|_| ());
    }
    if let Some(mv) = map.pending_move {
        return drive(node, options, &map, mv, events, st).await;
    }
    if remove_orphans(node, &map, &hosted, events).await {
        return Ok(());
    }
    if let Some(mut mv) = plan(&map, &st.down) {
        // The membership the move starts from (see `PendingMove::fence`).
        let (_, status) = find_leader(node, mv.group, &candidates(&map, &mv)).await?;
        mv.fence = status.membership_log_id;
        let started = manager_update_map(node, |m| {
            if m.pending_move.is_some() || m.pending_split.is_some() {
                return Ok(false);
            }
            m.pending_move = Some(mv);
            Ok(true)
        })
        .await?;
        if started.pending_move.as_ref() == Some(&mv) {
            events.record("move_started", describe(&mv));
            return drive(node, options, &started, mv, events, st).await;
        }
        return Ok(());
    }
    // Leaving nodes that hold nothing any more leave the map.
    let empty_leaving: Vec<NodeId> = map
        .nodes
        .iter()
        .filter(|(n, s)| **s == NodeState::Leaving && map.groups_on(**n).is_empty())
        .map(|(n, _)| *n)
        .collect();
    if !empty_leaving.is_empty() {
        manager_update_map(node, |m| {
            let before = m.nodes.len();
            m.nodes.retain(|n, _| !empty_leaving.contains(n));
            m.addresses.retain(|n, _| !empty_leaving.contains(n));
            Ok(m.nodes.len() != before)
        })
        .await?;
        for n in empty_leaving {
            events.record("node_removed", format!("node {n} left the cluster"));
        }
        return Ok(());
    }
    balance_leaders(node, &map, &leading, events, st).await
}

fn describe(mv: &PendingMove) -> String {
    let group = if mv.group == META_GROUP {
        "manager group".to_string()
    } else {
        format!("shard {}", mv.group)
    };
    match (mv.from, mv.to) {
        (Some(f), Some(t)) => format!("{group}: replica node {f} -> node {t}"),
        (None, Some(t)) => format!("{group}: new replica on node {t}"),
        (Some(f), None) => format!("{group}: drop replica on node {f}"),
        (None, None) => format!("{group}: nothing"),
    }
}

/// Nodes that may know the leader of the move's group: its replicas and the incoming one (a
/// voter change cut short may have handed leadership to it).
fn candidates(map: &ShardMap, mv: &PendingMove) -> Vec<NodeId> {
    let mut nodes = map
        .replicas_of(mv.group)
        .map(<[NodeId]>::to_vec)
        .unwrap_or_default();
    nodes.extend(mv.to.filter(|t| !nodes.contains(t)));
    nodes
}

fn sorted(mut nodes: Vec<NodeId>) -> Vec<NodeId> {
    nodes.sort();
    nodes
}

/// Whether this node still leads the manager's group (a local view: a partitioned old leader
/// may still believe it does, which is why voter changes are also fenced at the shard).
fn still_manager(node: &Node) -> Result<()> {
    if node.raft(META_GROUP).is_some_and(|r| r.is_leader()) {
        Ok(())
    } else {
        Err(Error::Unavailable(format!(
            "node {} no longer leads the manager's group",
            node.id()
        )))
    }
}

/// Drives the pending move to completion: start and catch up the new replica, hand leadership
/// off a leaving leader, record the fence, change the voters (finishing a joint config left by
/// an earlier attempt), record the move in the map, delete the old replica. After
/// `move_attempts` failed attempts, rolls it back instead (every tick until that is done).
async fn drive(
    node: &Node,
    options: &ManagerOptions,
    map: &ShardMap,
    mv: PendingMove,
    events: &EventLog,
    st: &mut ManagerState,
) -> Result<()> {
    let replicas = map
        .replicas_of(mv.group)
        .map(<[NodeId]>::to_vec)
        .unwrap_or_default();
    let mut voters: Vec<NodeId> = replicas
        .iter()
        .copied()
        .filter(|n| Some(*n) != mv.from)
        .collect();
    if let Some(to) = mv.to {
        if !voters.contains(&to) {
            voters.push(to);
        }
    }
    if st.move_failures >= options.move_attempts {
        // Given up: roll back, retried every tick until it is done.
        roll_back(node, map, &mv, &voters, events, st).await?;
        st.move_failures = 0;
        return Ok(());
    }
    let candidates = candidates(map, &mv);
    let outcome: Result<()> = async {
        still_manager(node)?;
        if mv.group == META_GROUP && mv.from == Some(node.id()) {
            // The manager does not remove itself: hand the manager role over first.
            if let Some(other) = voters
                .iter()
                .find(|n| **n != node.id() && !st.down.contains(n))
            {
                admin(
                    node,
                    node.id(),
                    AdminRequest::TransferLeader {
                        group: META_GROUP,
                        to: *other,
                    },
                    Duration::from_secs(2),
                )
                .await?;
            }
            return Err(Error::Unavailable(
                "handing the manager role over before moving it".into(),
            ));
        }
        let (leader, status) = find_leader(node, mv.group, &candidates).await?;
        if Some(leader) == mv.from {
            // Hand leadership to a staying voter first: removing the leader itself would leave
            // the group without one for an election timeout.
            if let Some(to) = status
                .voters
                .iter()
                .find(|v| voters.contains(v) && Some(**v) != mv.from)
            {
                admin(
                    node,
                    leader,
                    AdminRequest::TransferLeader {
                        group: mv.group,
                        to: *to,
                    },
                    Duration::from_secs(2),
                )
                .await?;
                return Err(Error::Unavailable(format!(
                    "moving leadership of group {} off node {leader}",
                    mv.group
                )));
            }
        }
        // Done only when the config is uniform with exactly the target voters: a joint config
        // (a change cut between its two steps) counts as unfinished, whatever its union.
        let done = status.uniform_voters().map(sorted) == Some(sorted(voters.clone()));
        if !done {
            if let Some(to) = mv.to.filter(|t| !status.voters.contains(t)) {
                admin(
                    node,
                    to,
                    AdminRequest::StartGroup { group: mv.group },
                    Duration::from_secs(10),
                )
                .await?;
                admin(
                    node,
                    leader,
                    AdminRequest::AddLearner {
                        group: mv.group,
                        node: to,
                    },
                    Duration::from_secs(60),
                )
                .await?;
            }
            let (leader, status) = find_leader(node, mv.group, &candidates).await?;
            let fence = status.membership_log_id;
            record_fence(node, &mv, fence).await?;
            admin(
                node,
                leader,
                AdminRequest::ChangeVoters {
                    group: mv.group,
                    voters: voters.clone(),
                    fence,
                },
                Duration::from_secs(30),
            )
            .await?;
        }
        if !finish(node, &mv, &voters).await? {
            return Err(Error::Unavailable(format!(
                "{} is no longer the pending move",
                describe(&mv)
            )));
        }
        if let Some(from) = mv.from.filter(|f| !st.down.contains(f)) {
            let _ = destroy_if_removed(node, mv.group, &voters, from).await;
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            st.move_failures = 0;
            events.record("move_finished", describe(&mv));
            Ok(())
        }
        Err(e) => {
            st.move_failures += 1;
            events.record(
                "move_attempt_failed",
                format!(
                    "{}: attempt {} of {} failed: {e}",
                    describe(&mv),
                    st.move_failures,
                    options.move_attempts
                ),
            );
            Err(e)
        }
    }
}

/// Records in the map the membership the next voter change of `mv` is planned against. Fails
/// if `mv` is no longer the pending move, or if this node cannot write the map any more.
async fn record_fence(node: &Node, mv: &PendingMove, fence: Option<LogId>) -> Result<()> {
    manager_update_map(node, |m| match m.pending_move.as_mut() {
        Some(p) if p.same_move(mv) => {
            p.fence = fence;
            Ok(true)
        }
        _ => Err(Error::Unavailable(format!(
            "{} is no longer the pending move",
            describe(mv)
        ))),
    })
    .await
    .map(|_| ())
}

/// Records a finished move in the map. Returns whether the map now shows it done (by this
/// call, or already).
async fn finish(node: &Node, mv: &PendingMove, voters: &[NodeId]) -> Result<bool> {
    let map = manager_update_map(node, |m| {
        if !m.pending_move.as_ref().is_some_and(|p| p.same_move(mv)) {
            return Ok(false);
        }
        if let Some(r) = m.replicas_of_mut(mv.group) {
            *r = voters.to_vec();
        }
        m.pending_move = None;
        Ok(true)
    })
    .await?;
    let pending = map.pending_move.as_ref().is_some_and(|p| p.same_move(mv));
    let replicas = map.replicas_of(mv.group).map(<[NodeId]>::to_vec);
    Ok(!pending && replicas.map(sorted) == Some(sorted(voters.to_vec())))
}

/// Deletes `target`'s replica of `group` if, and only if, the group's current leader has
/// committed a membership without it (and does not count it now either). A removed voter never
/// learns that it was removed, so its own view cannot decide. Returns whether it deleted.
async fn destroy_if_removed(
    node: &Node,
    group: GroupId,
    candidates: &[NodeId],
    target: NodeId,
) -> Result<bool> {
    let (leader, status) = find_leader(node, group, candidates).await?;
    let member = leader == target
        || status.committed_members.contains(&target)
        || status.voters.contains(&target)
        || status.learners.contains(&target);
    if member {
        return Ok(false);
    }
    still_manager(node)?;
    let destroy = AdminRequest::DestroyGroup {
        group,
        excluded_at: status.membership_log_id,
    };
    admin(node, target, destroy, Duration::from_secs(10)).await?;
    Ok(true)
}

/// Deletes replicas that nodes run outside the map (a node that was down while its replica
/// moved away, a move rolled back after its new replica started), each only once the group's
/// leader confirms it is no member. Returns whether it deleted any.
async fn remove_orphans(
    node: &Node,
    map: &ShardMap,
    hosted: &BTreeMap<NodeId, Vec<GroupId>>,
    events: &EventLog,
) -> bool {
    let mut removed = false;
    for (n, groups) in hosted {
        for group in groups {
            let Some(replicas) = map.replicas_of(*group) else {
                continue;
            };
            if replicas.contains(n) || still_manager(node).is_err() {
                continue;
            }
            match destroy_if_removed(node, *group, replicas, *n).await {
                Ok(true) => {
                    removed = true;
                    events.record(
                        "orphan_replica_removed",
                        format!("group {group}: node {n} ran a replica outside the map"),
                    );
                }
                // Still a member: a learner left by a late `AddLearner` is dropped now (and
                // deleted next tick); a voter outside the map is only reported.
                Ok(false) => {
                    if !drop_stray_learner(node, *group, replicas, *n).await {
                        tracing::warn!(
                            group,
                            node = n,
                            "a replica outside the map is still a voter of its group"
                        );
                    }
                }
                Err(_) => {}
            }
        }
    }
    removed
}

/// If `learner` is a learner of `group` that the map does not list, while the voters are just
/// the map's replicas (an `AddLearner` that landed after its move was rolled back), removes it
/// from the membership, fenced by the membership seen. Returns whether it was such a learner.
async fn drop_stray_learner(
    node: &Node,
    group: GroupId,
    replicas: &[NodeId],
    learner: NodeId,
) -> bool {
    let Ok((leader, status)) = find_leader(node, group, replicas).await else {
        return false;
    };
    let voters_match = status.uniform_voters().map(sorted) == Some(sorted(replicas.to_vec()));
    if !voters_match || !status.learners.contains(&learner) {
        return false;
    }
    let reset = AdminRequest::ResetVoters {
        group,
        voters: replicas.to_vec(),
        fence: status.membership_log_id,
    };
    if let Err(e) = admin(node, leader, reset, Duration::from_secs(30)).await {
        tracing::debug!(group, learner, error = %e, "dropping a stray learner");
    }
    true
}

/// Gives up on a move: if its voter change went through, records it as done; otherwise changes
/// the group's membership back to the map's replicas (always writing a new membership entry,
/// which a deposed manager's fenced change cannot pass), deletes the incoming replica, and only
/// then clears the move from the map. Without a reachable leader nothing can be changed back:
/// the move stays pending.
async fn roll_back(
    node: &Node,
    map: &ShardMap,
    mv: &PendingMove,
    voters: &[NodeId],
    events: &EventLog,
    st: &ManagerState,
) -> Result<()> {
    let replicas = map
        .replicas_of(mv.group)
        .map(<[NodeId]>::to_vec)
        .unwrap_or_default();
    let candidates = candidates(map, mv);
    let (leader, status) = find_leader(node, mv.group, &candidates).await?;
    if status.uniform_voters().map(sorted) == Some(sorted(voters.to_vec())) {
        // The voter change went through: the move is done, only the map lagged.
        if finish(node, mv, voters).await? {
            events.record("move_finished", describe(mv));
            if let Some(from) = mv.from.filter(|f| !st.down.contains(f)) {
                let _ = destroy_if_removed(node, mv.group, voters, from).await;
            }
        }
        return Ok(());
    }
    // Recording the fence proves this node still writes the map (a deposed manager cannot) and
    // serializes this change with any other manager's.
    record_fence(node, mv, status.membership_log_id).await?;
    admin(
        node,
        leader,
        AdminRequest::ResetVoters {
            group: mv.group,
            voters: replicas.clone(),
            fence: status.membership_log_id,
        },
        Duration::from_secs(30),
    )
    .await?;
    if let Some(to) = mv.to.filter(|t| !replicas.contains(t)) {
        let _ = destroy_if_removed(node, mv.group, &replicas, to).await;
    }
    manager_update_map(node, |m| {
        if !m.pending_move.as_ref().is_some_and(|p| p.same_move(mv)) {
            return Ok(false);
        }
        m.pending_move = None;
        Ok(true)
    })
    .await?;
    events.record("move_rolled_back", describe(mv));
    Ok(())
}

/// A leadership transfer that evens out leaders per node: from a leader with at least two more
/// leaderships than another replica of the same shard, to that replica (busiest first). Each
/// such transfer lowers the spread, so repeating it converges.
pub fn leader_transfer(
    map: &ShardMap,
    leader_of: &BTreeMap<GroupId, NodeId>,
    down: &BTreeSet<NodeId>,
) -> Option<(GroupId, NodeId, NodeId)> {
    let mut count: BTreeMap<NodeId, usize> = map
        .active_nodes()
        .into_iter()
        .filter(|n| !down.contains(n))
        .map(|n| (n, 0))
        .collect();
    for leader in leader_of.values() {
        if let Some(c) = count.get_mut(leader) {
            *c += 1;
        }
    }
    let mut best: Option<(usize, usize, GroupId, NodeId, NodeId)> = None;
    for shard in &map.shards {
        let Some(from) = leader_of.get(&shard.id) else {
            continue;
        };
        let Some(from_count) = count.get(from).copied() else {
            continue;
        };
        for to in &shard.replicas {
            let Some(to_count) = count.get(to).copied() else {
                continue;
            };
            if to != from && from_count >= to_count + 2 {
                let key = (from_count, usize::MAX - to_count, shard.id, *from, *to);
                if best.is_none_or(|b| (key.0, key.1) > (b.0, b.1)) {
                    best = Some(key);
                }
            }
        }
    }
    best.map(|(_, _, g, f, t)| (g, f, t))
}

/// Settles a joint config left without a move, else makes one leader transfer that evens out
/// leaders per node (leader changes are recorded by `placement::watch`). `leading`: what each
/// node's answer to this tick's ping says it leads, so a tick asks nothing per group unless a
/// group's membership is joint.
async fn balance_leaders(
    node: &Node,
    map: &ShardMap,
    leading: &[(NodeId, Led)],
    events: &EventLog,
    st: &mut ManagerState,
) -> Result<()> {
    // Per group, the claimant of the highest term.
    let mut claimed: BTreeMap<GroupId, (NodeId, Led)> = BTreeMap::new();
    for (n, led) in leading {
        if claimed
            .get(&led.group)
            .is_none_or(|(_, c)| c.term < led.term)
        {
            claimed.insert(led.group, (*n, *led));
        }
    }
    let mut leader_of = BTreeMap::new();
    let groups = map
        .shards
        .iter()
        .map(|s| (s.id, &s.replicas))
        .chain([(META_GROUP, &map.meta_replicas)]);
    for (group, replicas) in groups {
        let Some((leader, led)) = claimed.get(&group).copied() else {
            continue;
        };
        if led.joint {
            let Ok((leader, status)) = find_leader(node, group, replicas).await else {
                continue;
            };
            if !status.is_joint() {
                continue;
            }
            // A voter change cut between its steps with no move left to finish it (say, by an
            // older version): settle it on the map's replicas.
            still_manager(node)?;
            let reset = AdminRequest::ResetVoters {
                group,
                voters: replicas.clone(),
                fence: status.membership_log_id,
            };
            admin(node, leader, reset, Duration::from_secs(30)).await?;
            events.record(
                "membership_repaired",
                format!(
                    "group {group}: joint config {:?} settled on {replicas:?}",
                    status.voter_sets
                ),
            );
            return Ok(());
        }
        if group == META_GROUP {
            continue;
        }
        leader_of.insert(group, leader);
    }
    // Leadership goes only to nodes that answer: one crashed but not yet declared dead would
    // take the hand-off, fail it, and cost the shard an election every time.
    let excluded: BTreeSet<NodeId> = st.down.union(&st.unanswered).copied().collect();
    if let Some((group, from, to)) = leader_transfer(map, &leader_of, &excluded) {
        admin(
            node,
            from,
            AdminRequest::TransferLeader { group, to },
            Duration::from_secs(2),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(map: &ShardMap) -> usize {
        let load = map.load();
        let live: Vec<usize> = map.active_nodes().iter().map(|n| load[n]).collect();
        live.iter().max().unwrap_or(&0) - live.iter().min().unwrap_or(&0)
    }

    /// Applies planned moves to the map until none is left (what the manager does, minus Raft).
    fn settle(map: &mut ShardMap, down: &BTreeSet<NodeId>) -> usize {
        let mut moves = 0;
        while let Some(mv) = plan(map, down) {
            let r = map.replicas_of_mut(mv.group).expect("group");
            r.retain(|n| Some(*n) != mv.from);
            if let Some(t) = mv.to {
                r.push(t);
            }
            moves += 1;
            assert!(moves < 1000, "plan does not converge");
        }
        moves
    }

    #[test]
    fn adding_a_node_moves_about_its_share_and_balances() {
        let mut map = ShardMap::uniform(16, &[1, 2, 3, 4, 5], 3).expect("map");
        map.nodes.insert(6, NodeState::Active);
        let moves = settle(&mut map, &BTreeSet::new());
        // S*R/(N+1) = 48/6 = 8 replicas belong on the new node; nothing more should move.
        assert_eq!(map.load()[&6], 8);
        assert!(moves <= 9, "{moves} moves");
        assert!(spread(&map) <= 1);
    }

    #[test]
    fn leaving_and_dead_nodes_lose_every_replica_and_r_changes_both_ways() {
        let mut map = ShardMap::uniform(16, &[1, 2, 3, 4, 5], 3).expect("map");
        map.nodes.insert(5, NodeState::Leaving);
        settle(&mut map, &BTreeSet::new());
        assert!(map.groups_on(5).is_empty());
        assert!(map.shards.iter().all(|s| s.replicas.len() == 3));
        let down: BTreeSet<NodeId> = [4].into();
        settle(&mut map, &down);
        assert!(
            map.groups_on(4).is_empty(),
            "dead node's replicas re-created elsewhere"
        );
        map.replication = 2;
        settle(&mut map, &down);
        assert!(map.shards.iter().all(|s| s.replicas.len() == 2));
    }
}
