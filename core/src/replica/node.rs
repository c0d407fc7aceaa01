//! A node: one RocksDB, one peer transport, and the Raft groups it hosts. It answers client
//! requests (forwarding to the leader when asked to) and Raft RPCs from its peers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::{Precondition, VoteResponse};
use openraft::storage::Snapshot;
use openraft::{BasicNode, ChangeMembers, EntryPayload, LinearizerOption, Membership, ReadPolicy};

use crate::config::{Limits, RaftTiming, StorageOptions, TestSwitches, WallClock};
use crate::error::{Error, Result};
use crate::replica::failpoints::Failpoints;
use crate::replica::hibernation::Hibernation;
use crate::replica::network::{AdminReply, AdminRequest};
use crate::replica::network::{
    GroupNetworkFactory, PeerRequest, PeerResponse, PeerTransport, RaftReply, RaftRpc, PEER_TIMEOUT,
};
use crate::replica::snapshot_transfer;
use crate::replica::storage::identity::Identity;
use crate::replica::storage::{
    count, GroupInstance, NodeStore, SnapshotFile, StorageStats, WriterFaults,
};
use crate::replica::Raft;
use crate::sharding::{ShardMap, META_GROUP};
// Where the status type lived before it moved to the shared vocabulary.
pub use crate::protocol::GroupStatus;
use crate::protocol::{ClientRequest, ClientResponse};
use crate::types::{
    CommandResult, GroupId, LogId, NodeId, Proposal, ProposalBody, ReadConsistency, SnapshotMeta,
    TypeConfig, Vote,
};

/// Everything a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub cluster_id: String,
    pub timing: RaftTiming,
    pub limits: Limits,
    pub storage: StorageOptions,
    pub testing: TestSwitches,
    /// Faults armed at run time inside voter changes (tests only; all off by default).
    pub failpoints: Arc<Failpoints>,
    /// This node's wall clock: every wall-clock reading a node makes goes through it, so the
    /// clock-jump fault reaches it. Log time does not read it (see `Node::log_time`).
    pub clock: Arc<WallClock>,
}

/// A leader's log clock: the group's log time when this node's term began, and the monotonic
/// instant of that moment.
#[derive(Debug, Clone, Copy)]
struct LeaderClock {
    term: u64,
    base_ms: u64,
    since: Instant,
}

pub struct Node {
    stopping: AtomicBool,
    config: NodeConfig,
    /// The node's store: `None` only for the moment a failed store is closed and reopened.
    store: RwLock<Option<Arc<NodeStore>>>,
    /// Counters of the store, kept across reopens.
    stats: Arc<StorageStats>,
    dir: PathBuf,
    /// Groups stopped because the store failed, started again once it is reopened.
    fenced: std::sync::Mutex<Vec<GroupId>>,
    peers: Arc<dyn PeerTransport>,
    groups: RwLock<BTreeMap<GroupId, Raft>>,
    /// The running state machine instance of each started group (see [`GroupInstance`]).
    instances: std::sync::Mutex<BTreeMap<GroupId, Arc<GroupInstance>>>,
    shard_map: RwLock<Arc<ShardMap>>,
    /// Per group this node leads: where its log clock stood when the term began, and when.
    leader_clocks: std::sync::Mutex<BTreeMap<GroupId, LeaderClock>>,
    /// Held while a group starts (see `start_group`).
    starting: tokio::sync::Mutex<()>,
    /// Groups whose stored state could not be started (a corrupt or unreadable store of one
    /// group), with the error: the node serves its other groups and reports these.
    unstartable: std::sync::Mutex<BTreeMap<GroupId, String>>,
    /// Snapshots arriving in chunks.
    snapshots_in: snapshot_transfer::Receiver,
    /// Per group, the transfer whose snapshot is being (or was last) installed, and the install's
    /// outcome: a sender that asks again after its wait ran out waits for this install.
    installs_in: std::sync::Mutex<BTreeMap<GroupId, (u64, Installing)>>,
    /// Which groups sleep (see [`hibernation`](crate::replica::hibernation)).
    hibernation: Hibernation,
    /// Background tasks of this node (the shard manager); aborted at shutdown.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// A snapshot install's outcome, for every sender waiting on it.
type Installing = futures::future::Shared<
    std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openraft::raft::SnapshotResponse<TypeConfig>>>
                + Send,
        >,
    >,
>;

impl Node {
    /// Opens the node's data dir (refusing a foreign one) and its store. Groups are added after.
    pub fn open_with_map(
        config: NodeConfig,
        dir: &Path,
        peers: Arc<dyn PeerTransport>,
        shard_map: Arc<ShardMap>,
    ) -> Result<Arc<Node>> {
        let node = Node::open(config, dir, peers)?;
        node.set_shard_map(shard_map);
        Ok(node)
    }

    /// Opens with a one-shard map (every key in group 0) until [`set_shard_map`](Self::set_shard_map).
    pub fn open(
        config: NodeConfig,
        dir: &Path,
        peers: Arc<dyn PeerTransport>,
    ) -> Result<Arc<Node>> {
        let identity = Identity::new(&config.cluster_id, config.id);
        let config_id = config.id;
        let faults = WriterFaults {
            node: config_id,
            failpoints: config.failpoints.clone(),
        };
        let store = NodeStore::open_for_node(
            dir,
            &identity,
            config.storage,
            Arc::new(StorageStats::default()),
            faults,
        )?;
        let hibernation = Hibernation::new(&config.timing);
        Ok(Arc::new(Node {
            stopping: AtomicBool::new(false),
            config,
            stats: store.stats().clone(),
            store: RwLock::new(Some(store)),
            dir: dir.to_path_buf(),
            fenced: std::sync::Mutex::new(Vec::new()),
            peers,
            groups: RwLock::new(BTreeMap::new()),
            instances: std::sync::Mutex::new(BTreeMap::new()),
            shard_map: RwLock::new(Arc::new(ShardMap::uniform(1, &[config_id], 1)?)),
            leader_clocks: std::sync::Mutex::new(BTreeMap::new()),
            starting: tokio::sync::Mutex::new(()),
            unstartable: std::sync::Mutex::new(BTreeMap::new()),
            snapshots_in: snapshot_transfer::Receiver::default(),
            installs_in: std::sync::Mutex::new(BTreeMap::new()),
            hibernation,
            tasks: std::sync::Mutex::new(Vec::new()),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The node's way to its peers.
    pub fn peers(&self) -> &Arc<dyn PeerTransport> {
        &self.peers
    }

    /// The node's store (`Unavailable` for the moment a failed store is being reopened).
    pub fn store(&self) -> Result<Arc<NodeStore>> {
        self.store
            .read()
            .ok()
            .and_then(|s| s.clone())
            .ok_or_else(|| Error::Unavailable(format!("node {} is reopening its store", self.id())))
    }

    pub fn storage_stats(&self) -> Arc<StorageStats> {
        self.stats.clone()
    }

    /// Why this node cannot persist, while it cannot (its store failed a write, say on a full
    /// disk). Meanwhile it serves no group; see [`fence_failed_store`](Self::fence_failed_store).
    pub fn storage_failure(&self) -> Option<String> {
        match self.store() {
            Ok(store) => store.failure(),
            Err(e) => Some(e.to_string()),
        }
    }

    /// Stops every group because the store failed: a replica that cannot persist must not vote,
    /// lead or acknowledge, and its leaderships move to other replicas at once (instead of each
    /// group failing, restarting and failing again). Returns the groups stopped.
    pub async fn fence_failed_store(&self) -> Vec<GroupId> {
        let groups = self.groups();
        for group in &groups {
            self.stop_group(*group).await;
        }
        if let Ok(mut fenced) = self.fenced.lock() {
            for g in &groups {
                if !fenced.contains(g) {
                    fenced.push(*g);
                }
            }
        }
        groups
    }

    /// Reopens a failed store once its disk has room again (a write and sync of
    /// [`SPACE_PROBE_BYTES`](crate::replica::storage::SPACE_PROBE_BYTES) succeeds), then starts
    /// the groups [`fence_failed_store`](Self::fence_failed_store) stopped: they resume from what
    /// is on disk and catch up from their leaders. Returns them.
    pub async fn reopen_failed_store(&self) -> Result<Vec<GroupId>> {
        let _starting = self.starting.lock().await;
        let dir = self.dir.clone();
        crate::sim::blocking(move || crate::replica::storage::probe_space(&dir))
            .await
            .map_err(|e| Error::Storage(format!("space probe: {e}")))?
            .map_err(|e| Error::Storage(format!("no room in {}: {e}", self.dir.display())))?;
        // Every group is stopped: close the failed store once nothing else holds it. (A slot
        // already empty is an earlier attempt that closed it and could not open it again.)
        let current = self.store.read().ok().and_then(|s| s.clone());
        if let Some(old) = current {
            let deadline = Instant::now() + Duration::from_secs(10);
            // Held by the slot and `old` alone; the slot keeps it while others still use it.
            while Arc::strong_count(&old) > 2 {
                if Instant::now() > deadline {
                    return Err(Error::Unavailable(
                        "the failed store is still in use; retrying later".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if let Ok(mut slot) = self.store.write() {
                slot.take();
            }
            let closed = old.closed();
            drop(old);
            while !closed.load(std::sync::atomic::Ordering::SeqCst) {
                if Instant::now() > deadline {
                    return Err(Error::Unavailable(
                        "the failed store is still closing; retrying later".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let identity = Identity::new(&self.config.cluster_id, self.config.id);
        let (dir, options, stats) = (self.dir.clone(), self.config.storage, self.stats.clone());
        let faults = WriterFaults {
            node: self.id(),
            failpoints: self.config.failpoints.clone(),
        };
        let store = crate::sim::blocking(move || {
            NodeStore::open_for_node(&dir, &identity, options, stats, faults)
        })
        .await
        .map_err(|e| Error::Storage(format!("reopening the store: {e}")))??;
        count(&self.stats.reopens, 1);
        if let Ok(mut slot) = self.store.write() {
            *slot = Some(store);
        }
        drop(_starting);
        let fenced: Vec<GroupId> = self
            .fenced
            .lock()
            .map(|mut f| f.drain(..).collect())
            .unwrap_or_default();
        let mut started = Vec::new();
        for group in fenced {
            // A group that does not start now is started by the manager's next check.
            match self.start_group(group).await {
                Ok(_) => started.push(group),
                Err(e) => {
                    tracing::warn!(node = self.id(), group, error = %e, "restart after reopen")
                }
            }
        }
        Ok(started)
    }

    /// Starts the Raft instance of `group` on this node from whatever its storage holds.
    pub async fn start_group(&self, group: GroupId) -> Result<Raft> {
        // One start at a time: two racing calls must not both build a Raft for the group (the
        // one not kept would outlive the node's shutdown).
        let _starting = self.starting.lock().await;
        if let Some(r) = self.raft(group) {
            return Ok(r);
        }
        let store = self.store()?;
        if let Some(error) = store.failure() {
            return Err(Error::Unavailable(format!(
                "node {} cannot persist ({error}); it starts group {group} once its store reopens",
                self.id()
            )));
        }
        let network = GroupNetworkFactory {
            node: self.id(),
            group,
            transport: self.peers.clone(),
            failpoints: self.config.failpoints.clone(),
            stats: self.stats.clone(),
        };
        // A group restarted in a running process (after a Fatal error, or re-created) starts
        // from what is durable: nothing still in RocksDB's WAL buffer counts as written.
        store.sync().await?;
        // Opening may finish an install a crash cut short (a whole snapshot's I/O): not on an
        // async worker thread.
        let (opening, ttl) = (store.clone(), self.config.timing.session_ttl_ms);
        let instance = GroupInstance::new(self.id(), self.config.failpoints.clone());
        let opened = instance.clone();
        // One log store for Raft and the state machine: an apply waits for its entries' writes.
        let log = store.log_store(group);
        let sm_log = log.clone();
        let state_machine =
            crate::sim::blocking(move || opening.state_machine_of(group, ttl, opened, sm_log))
                .await
                .map_err(|e| Error::Storage(format!("opening group {group}: {e}")))??;
        let raft = Raft::new(
            self.id(),
            self.config.timing.to_openraft()?,
            network,
            log,
            state_machine,
        )
        .await
        .map_err(|e| Error::Fatal {
            group,
            message: e.to_string(),
        })?;
        if let Ok(mut instances) = self.instances.lock() {
            instances.insert(group, instance);
        }
        if let Ok(mut u) = self.unstartable.lock() {
            u.remove(&group);
        }
        self.groups
            .write()
            .map_err(|_| Error::Unavailable("node state poisoned".into()))?
            .insert(group, raft.clone());
        self.hibernation.forget(group);
        Ok(raft)
    }

    /// Starts the children this node built by applying splits (see
    /// `replica::storage::split`), and returns them. Where this node led the parent, it
    /// campaigns for the child at once: the child's replicas all voted in the split entry's
    /// term, and the parent's leader is the natural first leader (it has every entry).
    pub async fn start_born_children(&self) -> Vec<(GroupId, Result<()>)> {
        let Ok(store) = self.store() else {
            return Vec::new();
        };
        let mut started = Vec::new();
        for (parent, child) in store.take_born() {
            let outcome = match self.start_group(child).await {
                Ok(raft) => {
                    let led_parent = self.raft(parent).is_some_and(|p| p.is_leader());
                    if led_parent {
                        if let Err(e) = raft.trigger().elect(false).await {
                            tracing::debug!(child, error = %e, "campaign for a split's child");
                        }
                    }
                    Ok(())
                }
                Err(e) => {
                    self.mark_unstartable(child, &e);
                    Err(e)
                }
            };
            started.push((child, outcome));
        }
        started
    }

    /// Makes `members` the first membership of `group` (once, on one node, for a new group).
    pub async fn initialize_group(&self, group: GroupId, members: &[NodeId]) -> Result<()> {
        let raft = self.raft_or_wrong_shard(group)?;
        let members: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|id| {
                (
                    *id,
                    BasicNode {
                        addr: format!("node-{id}"),
                    },
                )
            })
            .collect();
        raft.initialize(members).await.map_err(|e| Error::Fatal {
            group,
            message: e.to_string(),
        })
    }

    pub(crate) fn hibernation(&self) -> &Hibernation {
        &self.hibernation
    }

    /// Groups on this node's disk that could not start, with why: one group's broken store
    /// keeps only that group down, and is reported here (`status`, metrics, events).
    pub fn unstartable_groups(&self) -> BTreeMap<GroupId, String> {
        self.unstartable
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// Records that `group` could not start on this node (see
    /// [`unstartable_groups`](Self::unstartable_groups)).
    pub(crate) fn mark_unstartable(&self, group: GroupId, error: &Error) {
        tracing::error!(node = self.id(), group, %error, "group could not start; the node serves its other groups");
        if let Ok(mut u) = self.unstartable.lock() {
            u.insert(group, error.to_string());
        }
    }

    /// The groups whose Raft timers this node has stopped because they are idle.
    pub fn asleep_groups(&self) -> Vec<GroupId> {
        self.hibernation.asleep()
    }

    /// How many times a group on this node fell asleep, and woke.
    pub fn hibernation_counts(&self) -> (u64, u64) {
        (
            self.hibernation.sleeps.load(Ordering::Relaxed),
            self.hibernation.wakes.load(Ordering::Relaxed),
        )
    }

    pub fn raft(&self, group: GroupId) -> Option<Raft> {
        self.groups.read().ok()?.get(&group).cloned()
    }

    /// Calls `f` with every group this node runs, under one look at the group table (no
    /// handle cloned): for loops that visit every group often.
    pub fn each_group(&self, mut f: impl FnMut(GroupId, &Raft)) {
        if let Ok(groups) = self.groups.read() {
            for (group, raft) in groups.iter() {
                f(*group, raft);
            }
        }
    }

    pub fn groups(&self) -> Vec<GroupId> {
        let mut g: Vec<_> = self
            .groups
            .read()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        g.sort();
        g
    }

    /// The groups this node leads, from their metrics (no message sent, nothing woken).
    pub fn leading(&self) -> Vec<crate::replica::network::Led> {
        let rafts: Vec<(GroupId, Raft)> = self
            .groups
            .read()
            .map(|g| g.iter().map(|(id, r)| (*id, r.clone())).collect())
            .unwrap_or_default();
        rafts
            .into_iter()
            .filter_map(|(group, raft)| {
                let watched = raft.metrics();
                let m = watched.borrow_watched();
                (m.state == openraft::ServerState::Leader).then(|| crate::replica::network::Led {
                    group,
                    term: m.current_term,
                    joint: m.membership_config.membership().get_joint_config().len() > 1,
                })
            })
            .collect()
    }

    fn raft_or_wrong_shard(&self, group: GroupId) -> Result<Raft> {
        if let Some(r) = self.raft(group) {
            return Ok(r);
        }
        if let Some(error) = self
            .unstartable
            .lock()
            .ok()
            .and_then(|u| u.get(&group).cloned())
        {
            // Retryable: another replica of the group answers.
            return Err(Error::Unavailable(format!(
                "group {group} could not start on node {}: {error}",
                self.id()
            )));
        }
        Err(Error::GroupNotHosted {
            group,
            node: self.id(),
        })
    }

    pub fn status(&self, group: GroupId) -> Result<GroupStatus> {
        let raft = self.raft_or_wrong_shard(group)?;
        let m = raft.metrics().borrow_watched().clone();
        Ok(GroupStatus {
            group,
            node: self.id(),
            is_leader: m.current_leader == Some(self.id()),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            purged_index: m.purged.as_ref().map(|l| l.index),
            voter_sets: m
                .membership_config
                .membership()
                .get_joint_config()
                .iter()
                .map(|set| set.iter().copied().collect())
                .collect(),
            learners: m.membership_config.membership().learner_ids().collect(),
            membership_log_id: *m.membership_config.log_id(),
            committed_members: m
                .committed_membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect(),
            shard_version: self.store()?.shard_version(group)?,
        })
    }

    /// Serves a request that came from a client (the door every client uses, in process or over
    /// the network): the shard manager's group, which holds the cluster map, is off limits except
    /// for its status. Peers and the manager itself use [`handle_client`](Self::handle_client).
    pub async fn serve_client(
        &self,
        request: ClientRequest,
        forward: bool,
    ) -> Result<ClientResponse> {
        let internal = request.group() == Some(META_GROUP)
            && !matches!(request, ClientRequest::GroupStatus { .. });
        if internal {
            return Err(Error::InvalidArgument(format!(
                "group {META_GROUP} is the shard manager's (it holds the cluster map); clients cannot address it"
            )));
        }
        self.handle_client(request, forward).await
    }

    /// Serves a client request. With `forward`, a request that needs another node (the group's
    /// leader, or a replica when this node does not host the group) is passed on to it; without,
    /// the caller gets `NotLeader` (with a hint) or `GroupNotHosted`.
    pub async fn handle_client(
        &self,
        request: ClientRequest,
        forward: bool,
    ) -> Result<ClientResponse> {
        self.check_running()?;
        let outcome = self.serve_locally(&request).await;
        let next = match (&outcome, request.group()) {
            (
                Err(Error::NotLeader {
                    leader: Some(l), ..
                }),
                _,
            ) if forward && *l != self.id() => {
                vec![*l]
            }
            (Err(Error::GroupNotHosted { .. }), Some(group)) if forward => self
                .shard_map()
                .shard(group)
                .map(|s| s.replicas.clone())
                .unwrap_or_default(),
            (Err(Error::Fatal { .. }), _) if self.is_stopping() => {
                return Err(self.stopping_error())
            }
            _ => return outcome,
        };
        self.forward(request, next).await.or(outcome)
    }

    /// Passes `request` on, following leader hints for a few hops.
    async fn forward(
        &self,
        request: ClientRequest,
        mut targets: Vec<NodeId>,
    ) -> Result<ClientResponse> {
        let mut last = Err(Error::Unavailable("no node to forward to".into()));
        let mut hops = 0;
        while let Some(target) = targets.first().copied() {
            targets.remove(0);
            if target == self.id() || hops >= 4 {
                continue;
            }
            hops += 1;
            let sent = self
                .peers
                .send(
                    self.id(),
                    target,
                    PeerRequest::Client(request.clone()),
                    PEER_TIMEOUT,
                )
                .await;
            last = match sent {
                Ok(PeerResponse::Client(r)) => return Ok(r),
                Ok(_) => Err(Error::Unavailable("unexpected reply kind".into())),
                Err(e) => Err(e),
            };
            if let Err(Error::NotLeader {
                leader: Some(l), ..
            }) = &last
            {
                targets.insert(0, *l);
            }
        }
        last
    }

    /// Whether the node is shutting down (or crashed): it serves nothing any more.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn stopping_error(&self) -> Error {
        Error::Unavailable(format!("node {} is stopping", self.id()))
    }

    fn check_running(&self) -> Result<()> {
        if self.is_stopping() {
            return Err(self.stopping_error());
        }
        Ok(())
    }

    /// The cluster map this node routes by.
    pub fn shard_map(&self) -> Arc<ShardMap> {
        self.shard_map
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_shard_map(&self, map: Arc<ShardMap>) {
        if let Ok(mut m) = self.shard_map.write() {
            *m = map;
        }
    }

    /// Serves a request of the shard manager.
    pub async fn handle_admin(&self, request: AdminRequest) -> Result<AdminReply> {
        let raft_err = |group: GroupId, e: &dyn std::fmt::Display| {
            Error::Unavailable(format!("group {group}: {e}"))
        };
        match request {
            AdminRequest::Ping => Ok(AdminReply::Groups {
                node: self.id(),
                groups: self.groups(),
                leading: self.leading(),
                unstartable: self.unstartable_groups().into_keys().collect(),
            }),
            AdminRequest::Liveness { from, asleep } => {
                self.hibernation.heard(from, asleep);
                Ok(AdminReply::Liveness {
                    node: self.id(),
                    asleep: self.hibernation.claims(),
                })
            }
            AdminRequest::StartGroup { group } => {
                self.start_group(group).await?;
                Ok(AdminReply::Done)
            }
            AdminRequest::DestroyGroup { group, excluded_at } => {
                if let Ok(status) = self.status(group) {
                    let named =
                        status.voters.contains(&self.id()) || status.learners.contains(&self.id());
                    if named && status.membership_log_id > excluded_at {
                        return Err(Error::Unavailable(format!(
                            "group {group}: node {} was added back since {excluded_at:?}",
                            self.id()
                        )));
                    }
                }
                self.destroy_group(group).await?;
                Ok(AdminReply::Done)
            }
            AdminRequest::AddLearner { group, node } => {
                let raft = self.raft_or_wrong_shard(group)?;
                self.awake(group, &raft).await;
                raft.add_learner(
                    node,
                    BasicNode {
                        addr: format!("node-{node}"),
                    },
                    true,
                )
                .await
                .map_err(|e| raft_err(group, &e))?;
                Ok(AdminReply::Done)
            }
            AdminRequest::ChangeVoters {
                group,
                voters,
                fence,
            } => {
                self.change_voters(group, voters, fence).await?;
                Ok(AdminReply::Done)
            }
            AdminRequest::ResetVoters {
                group,
                voters,
                fence,
            } => {
                self.reset_voters(group, voters, fence).await?;
                Ok(AdminReply::Done)
            }
            AdminRequest::TransferLeader { group, to } => {
                let raft = self.raft_or_wrong_shard(group)?;
                self.awake(group, &raft).await;
                raft.trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(|e| raft_err(group, &e))?;
                Ok(AdminReply::Done)
            }
            AdminRequest::Status { group } => Ok(AdminReply::Status(Box::new(self.status(group)?))),
            AdminRequest::Split(plan) => {
                let group = plan.parent;
                match self.propose(group, ProposalBody::Split(plan)).await? {
                    CommandResult::Split { version } => Ok(AdminReply::Split { version }),
                    other => Err(Error::Unavailable(format!(
                        "group {group} answered a split with {other:?}"
                    ))),
                }
            }
            AdminRequest::Size { group } => {
                let store = self.store()?;
                let size = crate::sim::blocking(move || store.approximate_size(group))
                    .await
                    .map_err(|e| Error::Storage(format!("size of group {group}: {e}")))??;
                Ok(AdminReply::Size(size))
            }
            AdminRequest::SetMap(map) => {
                let newer = map.epoch >= self.shard_map().epoch;
                if newer {
                    self.set_shard_map(Arc::new(*map));
                }
                Ok(AdminReply::Done)
            }
        }
    }

    /// Makes `voters` the voter set of `group` (this node leads it), through joint consensus.
    /// With a `fence`, only while the effective membership is still the one logged there: a
    /// change planned against an older membership is refused.
    async fn change_voters(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
        fence: Option<LogId>,
    ) -> Result<()> {
        let raft = self.raft_or_wrong_shard(group)?;
        let failpoints = &self.config.failpoints;
        if !failpoints.held(self.id()).await && failpoints.take_fail() {
            return Err(Error::Unavailable(format!(
                "group {group}: voter change failed (failpoint)"
            )));
        }
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let fence = fence.map(|f| Precondition::LastMembershipLogId {
            last_membership_log_id: Some(f),
        });
        let moves_voters = {
            let stored = raft.metrics().borrow_watched().membership_config.clone();
            stored.membership().get_joint_config()[..] != [voters.clone()]
                && stored.membership().get_joint_config().len() == 1
        };
        if moves_voters && failpoints.take_interrupt() {
            return self.stop_after_joint_step(&raft, group, voters).await;
        }
        self.awake(group, &raft).await;
        raft.change_membership_if(ChangeMembers::ReplaceAllVoters(voters), false, fence)
            .await
            .map_err(|e| Error::Unavailable(format!("group {group}: {e}")))?;
        Ok(())
    }

    /// Makes `group`'s membership uniform with exactly `voters`, and no learners besides, by
    /// changes that each write a membership entry; if nothing differs, writes the same membership
    /// again. Either way the effective membership's log id moves on, so a voter change fenced by
    /// an earlier one (a deposed manager's) is refused from then on.
    async fn reset_voters(
        &self,
        group: GroupId,
        voters: Vec<NodeId>,
        fence: Option<LogId>,
    ) -> Result<()> {
        let raft = self.raft_or_wrong_shard(group)?;
        self.awake(group, &raft).await;
        let unavailable =
            |e: &dyn std::fmt::Display| Error::Unavailable(format!("group {group}: {e}"));
        let voters: BTreeSet<NodeId> = voters.into_iter().collect();
        let stored = raft.metrics().borrow_watched().membership_config.clone();
        if fence.is_some() && fence != *stored.log_id() {
            return Err(Error::Unavailable(format!(
                "group {group}: membership changed since {fence:?}"
            )));
        }
        let observed = [Precondition::LastMembershipLogId {
            last_membership_log_id: *stored.log_id(),
        }];
        let current = stored.membership();
        let extra_learners: BTreeSet<NodeId> = current
            .learner_ids()
            .filter(|l| !voters.contains(l))
            .collect();
        if current.get_joint_config()[..] != [voters.clone()] {
            raft.change_membership_if(
                ChangeMembers::ReplaceAllVoters(voters.clone()),
                false,
                observed,
            )
            .await
            .map_err(|e| unavailable(&e))?;
        } else if extra_learners.is_empty() {
            raft.append_membership(current.clone(), EntryPayload::Blank, observed)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        let learners: BTreeSet<NodeId> = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .learner_ids()
            .filter(|l| !voters.contains(l))
            .collect();
        if !learners.is_empty() {
            raft.change_membership(ChangeMembers::RemoveNodes(learners), false)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }

    /// The failpoint of a voter change cut between its steps: commits only the joint config, then
    /// hands leadership to another voter and fails, as a leader change or a timed-out caller does.
    async fn stop_after_joint_step(
        &self,
        raft: &Raft,
        group: GroupId,
        voters: BTreeSet<NodeId>,
    ) -> Result<()> {
        let stored = raft.metrics().borrow_watched().membership_config.clone();
        let current = stored.membership();
        let [old] = &current.get_joint_config()[..] else {
            return Err(Error::Unavailable(format!(
                "group {group}: membership is joint already"
            )));
        };
        let nodes: BTreeMap<NodeId, BasicNode> =
            current.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let joint = Membership::new(vec![old.clone(), voters.clone()], nodes)
            .map_err(|e| Error::InvalidArgument(format!("group {group}: {e}")))?;
        let fence = Precondition::LastMembershipLogId {
            last_membership_log_id: *stored.log_id(),
        };
        raft.append_membership(joint, EntryPayload::Blank, [fence])
            .await
            .map_err(|e| Error::Unavailable(format!("group {group}: {e}")))?;
        if let Some(to) = voters.iter().find(|v| **v != self.id()) {
            let _ = raft.trigger().transfer_leader(*to).await;
        }
        Err(Error::Unavailable(format!(
            "group {group}: voter change interrupted after the joint step (failpoint)"
        )))
    }

    /// Stops this node's replica of `group` (its data stays), completely: Raft's tasks end, the
    /// state machine applies nothing more of what was queued, and this returns once no task
    /// holds the instance's state machine (a snapshot build or install, openraft's apply
    /// worker), so whatever comes next (deleting the group, starting it again) sees no write
    /// of the old instance after it.
    pub async fn stop_group(&self, group: GroupId) {
        let raft = self.groups.write().ok().and_then(|mut g| g.remove(&group));
        self.hibernation.forget(group);
        let instance = self
            .instances
            .lock()
            .ok()
            .and_then(|mut i| i.remove(&group));
        if let Some(instance) = &instance {
            instance.stop();
        }
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        let Some(instance) = instance else { return };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&instance) > 1 {
            if Instant::now() > deadline {
                tracing::error!(
                    node = self.id(),
                    group,
                    "a stopped group's state machine is still held after 30 s"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops this node's replica of `group` and deletes its data: the disk is reclaimed and the
    /// node answers `GroupNotHosted` for the group from now on.
    pub async fn destroy_group(&self, group: GroupId) -> Result<()> {
        self.stop_group(group).await;
        self.store()?.delete_group(group).await
    }

    /// Refuses a write whose keys the map does not place in `group`, before it is proposed.
    /// A shard that has been split (as this replica or the map knows) decides at apply
    /// instead, from its descriptor and after the exactly-once lookup: a retry of a write it
    /// applied before the split must get its first result, not a `WrongShard` that would send it
    /// to the child to be applied twice. (Its split entry precedes any write proposed now, so
    /// the descriptor is in place when the write applies.) A map that records no split of the
    /// shard still has its whole original range, which covers any such retry: no storage read
    /// is needed to tell.
    fn check_write_owned(
        &self,
        group: GroupId,
        command: &crate::types::Command,
        in_session: bool,
    ) -> Result<()> {
        if group == META_GROUP || !in_session {
            return self.check_owned(group, command.keys());
        }
        let split_in_map = self.shard_map().shard(group).is_some_and(|s| s.version > 0);
        if split_in_map {
            return Ok(());
        }
        self.check_owned(group, command.keys())
    }

    /// Refuses keys that the map does not place in `group`.
    fn check_owned<'k>(
        &self,
        group: GroupId,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<()> {
        if group == META_GROUP {
            return Ok(());
        }
        let map = self.shard_map();
        for key in keys {
            if map.shard_of(key) != group {
                return Err(Error::WrongShard {
                    group,
                    node: self.id(),
                });
            }
        }
        Ok(())
    }

    async fn serve_locally(&self, request: &ClientRequest) -> Result<ClientResponse> {
        match request {
            ClientRequest::Write {
                group,
                command,
                session,
            } => {
                // The manager's own group holds the cluster map, which user limits do not bound.
                if *group != META_GROUP {
                    self.config.limits.check_command(command)?;
                }
                self.check_write_owned(*group, command, session.is_some())?;
                let body = ProposalBody::Write {
                    session: *session,
                    command: command.clone(),
                };
                self.propose(*group, body).await.map(ClientResponse::Write)
            }
            ClientRequest::OpenSession { group } => self
                .propose(*group, ProposalBody::OpenSession)
                .await
                .map(ClientResponse::Write),
            ClientRequest::Read {
                group,
                key,
                consistency,
            } => {
                if *group != META_GROUP {
                    self.config.limits.check_key(key)?;
                }
                self.check_owned(*group, [key.as_slice()])?;
                self.ensure_readable(*group, *consistency).await?;
                self.store()?.get(*group, key).map(ClientResponse::Read)
            }
            ClientRequest::ReadMany {
                group,
                keys,
                consistency,
            } => {
                let key_refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                self.config.limits.check_keys(&key_refs)?;
                self.check_owned(*group, key_refs.iter().copied())?;
                self.ensure_readable(*group, *consistency).await?;
                self.store()?
                    .get_many(*group, keys)
                    .map(ClientResponse::Values)
            }
            ClientRequest::Scan {
                group,
                start,
                end,
                limit,
                consistency,
                shard_version,
            } => {
                if *group != META_GROUP {
                    self.config.limits.check_scan_page(*limit)?;
                }
                self.ensure_readable(*group, *consistency).await?;
                let (items, more) =
                    self.store()?
                        .scan_at(*group, *shard_version, start, end.as_deref(), *limit)?;
                Ok(ClientResponse::Scan { items, more })
            }
            ClientRequest::GroupStatus { group } => {
                self.status(*group).map(ClientResponse::GroupStatus)
            }
            ClientRequest::GetShardMap => Ok(ClientResponse::ShardMap((*self.shard_map()).clone())),
        }
    }

    pub(crate) async fn propose(
        &self,
        group: GroupId,
        body: ProposalBody,
    ) -> Result<CommandResult> {
        let raft = self.raft_or_wrong_shard(group)?;
        self.awake(group, &raft).await;
        // Replicas judge session expiry by the log time stamped here alone.
        let time_ms = self.log_time(group, &raft)?;
        let proposal = Proposal { time_ms, body };
        let mut written = raft.client_write(proposal.clone()).await;
        if matches!(&written, Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) if f.leader_id.is_none())
            && raft.metrics().borrow_watched().state == openraft::ServerState::Leader
        {
            // Still leader, but its lease ran out while the group slept (a write that raced
            // the one that woke it): one heartbeat round renews it.
            let _ = raft.ensure_linearizable(ReadPolicy::ReadIndex).await;
            written = raft.client_write(proposal).await;
        }
        match written {
            Ok(resp) => match resp.data {
                CommandResult::SessionExpired { session } => {
                    Err(Error::SessionExpired { group, session })
                }
                CommandResult::Rejected { reason } => Err(Error::InvalidArgument(reason)),
                CommandResult::WrongShard => Err(Error::WrongShard {
                    group,
                    node: self.id(),
                }),
                other => Ok(other),
            },
            Err(e) => Err(self.raft_error(group, e, |api| match api {
                ClientWriteError::ForwardToLeader(f) => Some(f.leader_id),
                _ => None,
            })),
        }
    }

    /// Wakes `group` on this node (see [`hibernation`](crate::replica::hibernation)). A leader
    /// that slept has let its lease run out, and openraft takes no write without one: its
    /// first heartbeat round after waking renews it before the caller goes on.
    async fn awake(&self, group: GroupId, raft: &Raft) {
        // Only a wake reads the role: this runs before every write and read.
        let was_asleep = self.hibernation.active(group, raft);
        if was_asleep && raft.metrics().borrow_watched().state == openraft::ServerState::Leader {
            let _ = raft.ensure_linearizable(ReadPolicy::ReadIndex).await;
        }
    }

    /// The log time to stamp on a new entry of `group`: where the group's log clock stood when
    /// this node's term began, plus the time elapsed since on this node's monotonic clock. No
    /// wall clock is read, so a leader whose clock jumps (a day ahead, or back) moves log time by
    /// nothing; the state machine keeps log time from going back across leaders.
    fn log_time(&self, group: GroupId, raft: &Raft) -> Result<u64> {
        let term = raft.metrics().borrow_watched().current_term;
        let mut clocks = self
            .leader_clocks
            .lock()
            .map_err(|_| Error::Unavailable("node state poisoned".into()))?;
        let clock = match clocks.get(&group) {
            Some(c) if c.term == term => *c,
            _ => {
                let c = LeaderClock {
                    term,
                    base_ms: self.store()?.log_clock(group)?,
                    since: Instant::now(),
                };
                clocks.insert(group, c);
                c
            }
        };
        Ok(clock.base_ms + clock.since.elapsed().as_millis() as u64)
    }

    /// Converts an openraft error: a redirect becomes `NotLeader`, another API error
    /// `Unavailable` (retryable), a fatal one `Fatal`.
    fn raft_error<E: std::fmt::Display>(
        &self,
        group: GroupId,
        e: RaftError<TypeConfig, E>,
        redirect: impl Fn(&E) -> Option<Option<NodeId>>,
    ) -> Error {
        match e {
            RaftError::APIError(api) => match redirect(&api) {
                Some(leader) => Error::NotLeader {
                    group,
                    node: self.id(),
                    leader,
                },
                None => Error::Unavailable(format!("group {group}: {api}")),
            },
            RaftError::Fatal(f) => Error::Fatal {
                group,
                message: f.to_string(),
            },
        }
    }

    /// Makes the local state machine good enough for a read at `consistency`.
    pub(crate) async fn ensure_readable(
        &self,
        group: GroupId,
        consistency: ReadConsistency,
    ) -> Result<()> {
        let raft = self.raft_or_wrong_shard(group)?;
        let option: LinearizerOption = match consistency {
            ReadConsistency::Stale => return self.check_listed(group),
            ReadConsistency::Linearizable
                if self.config.testing.unsafe_local_linearizable_reads && group != META_GROUP =>
            {
                return Ok(())
            }
            ReadConsistency::Linearizable => ReadPolicy::ReadIndex.into(),
            // Served from the leader's lease while it holds, with no round trip. A lease that
            // ran out (the group slept; heartbeat acks are late) is not an error: a heartbeat
            // round goes out at once and the read waits up to one lease for its acks (like a
            // ReadIndex round). openraft's `LeaseRead` fails such a read at once, so every lease
            // read that reached a waking shard but the one that woke it failed.
            ReadConsistency::Lease => LinearizerOption::new(None, true),
        };
        let leading = raft.metrics().borrow_watched().state == openraft::ServerState::Leader;
        // A leader that slept has let its lease run out: its first read confirms leadership
        // by a heartbeat round (and a follower's read is forwarded: it wakes nothing).
        let option = match leading && self.hibernation.active(group, &raft) {
            true => ReadPolicy::ReadIndex.into(),
            false => option,
        };
        match raft.ensure_linearizable(option).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.raft_error(group, e, |api| match api {
                LinearizableReadError::ForwardToLeader(f) => Some(f.leader_id),
                _ => None,
            })),
        }
    }

    /// Refuses to answer from a replica that the node's map does not list (nor bring in): one
    /// that was moved away while this node was down runs until the manager deletes it, and its
    /// data is as old as that.
    fn check_listed(&self, group: GroupId) -> Result<()> {
        let map = self.shard_map();
        let listed = map
            .replicas_of(group)
            .is_some_and(|r| r.contains(&self.id()))
            || map
                .pending_move
                .is_some_and(|m| m.group == group && m.to == Some(self.id()));
        if group == META_GROUP || listed {
            Ok(())
        } else {
            Err(Error::GroupNotHosted {
                group,
                node: self.id(),
            })
        }
    }

    /// Serves a request from a peer node that names the node it is for: one meant for another
    /// node (sent to an address this node now holds) is refused unread with `WrongNode`.
    pub async fn handle_peer_for(&self, to: NodeId, request: PeerRequest) -> Result<PeerResponse> {
        self.check_addressed(to)?;
        self.handle_peer(request).await
    }

    /// Refuses (and logs) a message or call that names another node as its target: it was sent
    /// to an address this node now holds, and serving it would answer for that node.
    pub fn check_addressed(&self, to: NodeId) -> Result<()> {
        if to == self.id() {
            return Ok(());
        }
        tracing::warn!(
            node = self.id(),
            asked = to,
            "refused a message meant for another node"
        );
        Err(Error::WrongNode {
            asked: to,
            answered: self.id(),
        })
    }

    /// The install of `group`'s transfer `transfer`, when this chunk asks for it again (its last
    /// chunk, sent again after the sender's wait ran out). A transfer starting over (a chunk at
    /// offset 0) forgets the group's last install.
    fn installing(
        &self,
        group: GroupId,
        transfer: u64,
        offset: u64,
        last: &Option<Box<(Vote, SnapshotMeta)>>,
    ) -> Option<Installing> {
        let mut installs = self.installs_in.lock().ok()?;
        if offset == 0 {
            installs.remove(&group);
        }
        match installs.get(&group) {
            Some((t, installing)) if *t == transfer && last.is_some() => Some(installing.clone()),
            _ => None,
        }
    }

    /// Serves a request from a peer node.
    pub async fn handle_peer(&self, request: PeerRequest) -> Result<PeerResponse> {
        self.check_running()?;
        match request {
            PeerRequest::Client(req) => self
                .handle_client(req, false)
                .await
                .map(PeerResponse::Client),
            PeerRequest::Admin(req) => self.handle_admin(req).await.map(PeerResponse::Admin),
            PeerRequest::Raft { group, rpc } => {
                let raft = self.raft_or_wrong_shard(group)?;
                if matches!(rpc, RaftRpc::PreVote(_))
                    && self.hibernation.refuses_pre_vote(group, &raft)
                {
                    // The group sleeps under a leader known to be alive (see `hibernation`):
                    // refused, and the sleeping replica stays asleep.
                    let vote = raft.metrics().borrow_watched().vote;
                    let refused = VoteResponse::new(vote, None, false);
                    return Ok(PeerResponse::Raft(RaftReply::Vote(refused)));
                }
                self.hibernation.message(group, &raft, &rpc);
                let fatal = move |e: &dyn std::fmt::Display| Error::Fatal {
                    group,
                    message: e.to_string(),
                };
                let reply = match rpc {
                    RaftRpc::Append(r) => {
                        RaftReply::Append(raft.append_entries(r).await.map_err(|e| fatal(&e))?)
                    }
                    RaftRpc::Vote(r) => RaftReply::Vote(raft.vote(r).await.map_err(|e| fatal(&e))?),
                    RaftRpc::PreVote(r) => {
                        RaftReply::Vote(raft.pre_vote(r).await.map_err(|e| fatal(&e))?)
                    }
                    RaftRpc::SnapshotChunk {
                        transfer,
                        offset,
                        data,
                        last,
                    } => {
                        if let Some(installing) = self.installing(group, transfer, offset, &last) {
                            // Asked again while (or after) installing this very transfer.
                            return installing
                                .await
                                .map(|r| PeerResponse::Raft(RaftReply::Snapshot(r)));
                        }
                        let dir = self.dir.clone();
                        count(&self.stats.snapshot_bytes_received, data.len() as u64);
                        let complete = self
                            .snapshots_in
                            .chunk(&dir, group, transfer, offset, data, last.is_some())
                            .await?;
                        match (complete, last) {
                            (Some(mut path), Some(last)) => {
                                if self.config.failpoints.take_fail_snapshot_install() {
                                    // The state machine will not find its file: an I/O error.
                                    let _ = std::fs::remove_file(&path);
                                    path.set_extension("missing");
                                }
                                let (vote, meta) = *last;
                                let snapshot = Snapshot {
                                    meta,
                                    snapshot: SnapshotFile { path },
                                };
                                let delay = self.config.failpoints.install_delay(self.id());
                                // Its own task: a sender whose wait runs out does not cut it.
                                let task = tokio::spawn(async move {
                                    if let Some(delay) = delay {
                                        tokio::time::sleep(delay).await;
                                    }
                                    raft.install_full_snapshot(vote, snapshot)
                                        .await
                                        .map_err(|e| fatal(&e))
                                });
                                let installing: Installing =
                                    futures::FutureExt::shared(Box::pin(async move {
                                        task.await.map_err(|e| Error::Fatal {
                                            group,
                                            message: format!("snapshot install task: {e}"),
                                        })?
                                    }));
                                if let Ok(mut installs) = self.installs_in.lock() {
                                    installs.insert(group, (transfer, installing.clone()));
                                }
                                RaftReply::Snapshot(installing.await?)
                            }
                            _ => RaftReply::SnapshotChunkStored,
                        }
                    }
                    RaftRpc::TransferLeader(r) => RaftReply::TransferLeader(
                        raft.handle_transfer_leader(r)
                            .await
                            .map_err(|e| fatal(&e))?,
                    ),
                };
                Ok(PeerResponse::Raft(reply))
            }
        }
    }

    /// Stops every group and waits until nothing but this handle refers to the RocksDB, so the
    /// store closes when the node is dropped.
    /// Runs `task` until the node shuts down.
    pub fn spawn_task(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut t) = self.tasks.lock() {
            t.push(task);
        }
    }

    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        if let Ok(mut instances) = self.instances.lock() {
            for (_, instance) in std::mem::take(&mut *instances) {
                instance.stop();
            }
        }
        let rafts: Vec<Raft> = self
            .groups
            .write()
            .map(|mut g| std::mem::take(&mut *g).into_values().collect())
            .unwrap_or_default();
        for raft in rafts {
            let _ = raft.shutdown().await;
        }
        let Ok(store) = self.store() else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&store) > 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if Arc::strong_count(&store) > 2 {
            tracing::warn!(node = self.id(), "store still referenced after shutdown");
        }
    }
}
