//! The embedded cluster: N nodes in one process, each with its own data dir under a root dir.
//! The root dir is temporary (removed on shutdown) unless one is given; a given dir is kept and
//! reopened with its stored configuration, and arguments that contradict it are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::{Limits, RaftTiming, StorageOptions, TestSwitches};
use crate::embedded::faults::Faults;
use crate::embedded::inproc::InProcNetwork;
use crate::error::{Error, Result};
use crate::host::{self, HostServices};
pub use crate::host::{ClusterStatus, NodeStatus, ShardStatus};
use crate::placement::events::{Event, EventLog};
use crate::placement::manager::{self, ManagerOptions};
use crate::proof::history::RecordSwitch;
use crate::replica::failpoints::Failpoints;
use crate::replica::node::{GroupStatus, Node, NodeConfig};
use crate::replica::storage::identity::write_synced;
use crate::replica::storage::{lose_unsynced_writes, StorageStats};
use crate::routing::client::{Client, ClientOptions};
use crate::routing::transport::Transport;
use crate::sharding::{NodeState, ShardMap, SplitPlan, META_GROUP};
use crate::types::{GroupId, NodeId};

const CLUSTER_FILE: &str = "scalestore-cluster.json";
const LOCK_FILE: &str = "scalestore.lock";

/// Takes the root's lock for as long as the returned file is open.
fn lock_root(root: &Path) -> Result<std::fs::File> {
    let path = root.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataDir {
            path: root.to_path_buf(),
            reason: "held by another open cluster (in this process or another)".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// How to start an embedded cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes (ids 1..=nodes). For a reopened dir, must match the stored value.
    pub nodes: usize,
    /// Root of the node data dirs. `None`: a temporary dir removed on shutdown.
    pub root_dir: Option<PathBuf>,
    pub timing: RaftTiming,
    pub limits: Limits,
    pub storage: StorageOptions,
    pub client: ClientOptions,
    /// Seed of the fault schedule; `None` picks one at random (see [`EmbeddedCluster::seed`]).
    pub seed: Option<u64>,
    /// Number of shards (Raft groups), fixed at creation. Default 16.
    pub shards: usize,
    /// Replicas per shard, 1 to `nodes`. `None`: min(3, nodes).
    pub replication: Option<usize>,
    /// Shard manager timing (dead-node timeout, tick).
    pub manager: ManagerOptions,
    /// Guarantee-breaking switches for tests that prove the checks bite.
    pub testing: TestSwitches,
}

impl ClusterOptions {
    /// Options for `root` (`None`: a new temporary cluster) where `None` means "as stored":
    /// the root's stored cluster decides what is not given, and a new cluster gets 3 nodes, 8
    /// shards and min(3, nodes) replicas. Given values that contradict the stored cluster are
    /// refused at start (`InvalidArgument`).
    pub fn for_dir(
        root: Option<&Path>,
        nodes: Option<usize>,
        shards: Option<usize>,
        replication: Option<usize>,
    ) -> Result<ClusterOptions> {
        let stored = match root {
            Some(root) => match std::fs::read(root.join(CLUSTER_FILE)) {
                Ok(bytes) => Some(serde_json::from_slice::<StoredCluster>(&bytes).map_err(
                    |e| Error::DataDir {
                        path: root.join(CLUSTER_FILE),
                        reason: format!("corrupt cluster file: {e}"),
                    },
                )?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        for (name, value) in [
            ("nodes", nodes),
            ("shards", shards),
            ("replication", replication),
        ] {
            if value == Some(0) {
                return Err(Error::InvalidArgument(format!("{name} must be at least 1")));
            }
        }
        let (nodes, shards) = match &stored {
            Some(s) => (
                nodes.unwrap_or(s.nodes),
                shards.unwrap_or(s.map.shards.len()),
            ),
            None => (nodes.unwrap_or(3), shards.unwrap_or(8)),
        };
        if let Some(r) = replication {
            if r > nodes && stored.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "replication {r} needs at least {r} nodes; asked for {nodes}"
                )));
            }
        }
        Ok(ClusterOptions {
            nodes,
            shards,
            replication,
            root_dir: root.map(Path::to_path_buf),
            ..ClusterOptions::default()
        })
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            root_dir: None,
            timing: RaftTiming::default(),
            limits: Limits::default(),
            storage: StorageOptions::default(),
            client: ClientOptions::default(),
            seed: None,
            shards: 16,
            replication: None,
            manager: ManagerOptions::default(),
            testing: TestSwitches::default(),
        }
    }
}

/// What a cluster's root dir remembers about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCluster {
    format_version: u32,
    cluster_id: String,
    /// Number of member nodes (kept current as nodes join and leave).
    nodes: usize,
    replication: usize,
    /// The map at creation; the live map is in the manager's group.
    map: ShardMap,
    /// Member node ids (kept current as nodes join and leave).
    #[serde(default)]
    node_ids: Vec<NodeId>,
}

enum Root {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Root {
    fn path(&self) -> &Path {
        match self {
            Root::Temp(t) => t.path(),
            Root::Kept(p) => p,
        }
    }
}

pub struct EmbeddedCluster {
    root: Option<Root>,
    stored: Mutex<StoredCluster>,
    cluster_id: String,
    events: Arc<EventLog>,
    options: ClusterOptions,
    network: Arc<InProcNetwork>,
    nodes: Mutex<BTreeMap<NodeId, Arc<Node>>>,
    /// WAL lengths on disk of crashed nodes, cut back at restart in lose-unsynced mode.
    crashed: Mutex<BTreeMap<NodeId, BTreeMap<PathBuf, u64>>>,
    /// Faults inside voter changes, shared by every node of this cluster.
    failpoints: Arc<Failpoints>,
    /// Snapshots installed by node incarnations that have since stopped.
    snapshots_installed_before: std::sync::atomic::AtomicU64,
    /// Every client of this cluster records while this holds a history.
    recording: RecordSwitch,
    /// Held (an exclusive lock on the root's lock file) while the cluster is open, so a second
    /// open of the same root, in this process or another, is refused.
    _root_lock: std::fs::File,
}

impl EmbeddedCluster {
    /// Starts (or reopens) a cluster and, for a new one, initializes its group on all nodes.
    pub async fn start(options: ClusterOptions) -> Result<EmbeddedCluster> {
        if options.nodes == 0 {
            return Err(Error::InvalidArgument(
                "a cluster needs at least one node".into(),
            ));
        }
        options.timing.to_openraft()?;
        let root = match &options.root_dir {
            None => Root::Temp(tempfile::Builder::new().prefix("scalestore-").tempdir()?),
            Some(p) => {
                std::fs::create_dir_all(p)?;
                Root::Kept(p.clone())
            }
        };
        let lock_path = root.path().join(LOCK_FILE);
        let lock_existed = lock_path.exists();
        let root_lock = lock_root(root.path())?;
        let mut stored = match load_or_create(root.path(), &options) {
            Ok(stored) => stored,
            Err(e) => {
                // A refused dir is left as it was found: without the lock file this call made.
                if !lock_existed {
                    drop(root_lock);
                    let _ = std::fs::remove_file(&lock_path);
                }
                return Err(e);
            }
        };
        if stored.node_ids.is_empty() {
            stored.node_ids = (1..=stored.nodes as NodeId).collect();
        }
        let ids = stored.node_ids.clone();
        let seed = options.seed.unwrap_or_else(crate::sim::random_u64);
        let network = InProcNetwork::new(ids.clone(), Arc::new(Faults::new(seed)));
        network.set_stray_random(options.testing.stray_random);
        let events = Arc::new(EventLog::default());
        network.set_event_log(events.clone());
        let cluster = EmbeddedCluster {
            root: Some(root),
            cluster_id: stored.cluster_id.clone(),
            stored: Mutex::new(stored),
            events,
            options,
            network,
            nodes: Mutex::new(BTreeMap::new()),
            crashed: Mutex::new(BTreeMap::new()),
            failpoints: Arc::new(Failpoints::default()),
            snapshots_installed_before: std::sync::atomic::AtomicU64::new(0),
            recording: RecordSwitch::default(),
            _root_lock: root_lock,
        };
        for id in &ids {
            cluster.start_node(*id).await?;
        }
        // Only ever does anything for a new cluster: later replicas join through the manager.
        let initial = cluster.initial_map();
        for id in &ids {
            if let Ok(node) = cluster.node(*id) {
                host::initialize_groups(&node, &initial, false).await?;
            }
        }
        let any = cluster.any_node()?;
        host::publish_initial_map(&any, &initial, Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn node_dir(&self, id: NodeId) -> Result<PathBuf> {
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| Error::Closed("cluster shut down".into()))?;
        Ok(root.path().join(format!("node-{id}")))
    }

    async fn start_node(&self, id: NodeId) -> Result<Arc<Node>> {
        let config = NodeConfig {
            id,
            cluster_id: self.cluster_id.clone(),
            timing: self.options.timing,
            limits: self.options.limits,
            storage: self.options.storage,
            testing: self.options.testing,
            failpoints: self.failpoints.clone(),
            clock: self.network.faults().clock(id),
        };
        let dir = self.node_dir(id)?;
        let synced = self.crashed.lock().ok().and_then(|mut c| c.remove(&id));
        if let Some(synced) = synced {
            if self.options.storage.lose_unsynced_on_crash {
                let lost = lose_unsynced_writes(&dir.join("db"), &synced)?;
                tracing::info!(
                    node = id,
                    lost_bytes = lost,
                    "crash lost unsynced WAL bytes"
                );
            }
        }
        let services = HostServices {
            manager: self.options.manager,
            events: self.events.clone(),
        };
        let node =
            host::start_node(config, &dir, self.network.clone(), self.map(), &services).await?;
        self.network.register(node.clone());
        self.lock_nodes()?.insert(id, node.clone());
        self.events
            .record("node_started", format!("node {id} is up"));
        Ok(node)
    }

    fn lock_nodes(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<NodeId, Arc<Node>>>> {
        self.nodes
            .lock()
            .map_err(|_| Error::Unavailable("cluster state poisoned".into()))
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    fn initial_map(&self) -> ShardMap {
        self.stored
            .lock()
            .map(|s| s.map.clone())
            .unwrap_or_else(|p| p.into_inner().map.clone())
    }

    fn any_node(&self) -> Result<Arc<Node>> {
        self.lock_nodes()?
            .values()
            .find(|n| !n.is_stopping())
            .cloned()
            .ok_or_else(|| Error::Unavailable("no node is running".into()))
    }

    /// Runs a map operation through some running node, moving to another if that one fails
    /// or stops, for up to `timeout`.
    async fn via_any_node<T, F, Fut>(&self, timeout: Duration, op: F) -> Result<T>
    where
        F: Fn(Arc<Node>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + timeout;
        // Each failure moves on to the next running node: one cut off from the manager's group
        // (a partition) must not hold every map operation until the deadline.
        let mut turn = 0usize;
        loop {
            let running: Vec<Arc<Node>> = self
                .lock_nodes()?
                .values()
                .filter(|n| !n.is_stopping())
                .cloned()
                .collect();
            let result = match running.get(turn % running.len().max(1)) {
                Some(node) => op(node.clone()).await,
                None => Err(Error::Unavailable("no node is running".into())),
            };
            turn += 1;
            match result {
                Err(e)
                    if (e.is_retryable() || matches!(e, Error::Timeout { .. }))
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    async fn read_map_anywhere(&self) -> Result<ShardMap> {
        self.via_any_node(Duration::from_secs(30), |n| async move {
            manager::read_map(&n).await.map(|(m, _)| m)
        })
        .await
    }

    async fn update_map_anywhere(
        &self,
        change: impl Fn(&mut ShardMap) -> Result<bool> + Clone,
    ) -> Result<ShardMap> {
        self.via_any_node(Duration::from_secs(30), |n| {
            let change = change.clone();
            async move { manager::update_map(&n, change).await }
        })
        .await
    }

    /// The bounded log of cluster events (elections, moves, nodes up and down), oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.snapshot()
    }

    /// The event log itself, shared with whatever serves this cluster (the gRPC server).
    pub fn event_log(&self) -> Arc<EventLog> {
        self.events.clone()
    }

    pub fn root_dir(&self) -> Option<&Path> {
        self.root.as_ref().map(Root::path)
    }

    /// Every node of the cluster, up or not.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.stored
            .lock()
            .map(|s| s.node_ids.clone())
            .unwrap_or_default()
    }

    /// Every shard (Raft group) of the cluster.
    pub fn groups(&self) -> Vec<GroupId> {
        self.map().shard_ids()
    }

    /// The cluster map.
    pub fn map(&self) -> Arc<ShardMap> {
        // The newest map any running node knows (nodes learn each change from the manager).
        let nodes: Vec<Arc<Node>> = self
            .lock_nodes()
            .map(|n| n.values().cloned().collect())
            .unwrap_or_default();
        nodes
            .iter()
            .map(|n| n.shard_map())
            .max_by_key(|m| m.epoch)
            .unwrap_or_else(|| Arc::new(self.initial_map()))
    }

    /// The shard owning `key`.
    pub fn shard_of(&self, key: &[u8]) -> GroupId {
        self.map().shard_of(key)
    }

    /// Status of every shard (as its leader, or any replica, reports it) and every node.
    pub fn status(&self) -> Result<ClusterStatus> {
        let nodes: Vec<Arc<Node>> = self.lock_nodes()?.values().cloned().collect();
        let mut shards = Vec::new();
        let map = self.map();
        for shard in &map.shards {
            let seen: Vec<GroupStatus> = nodes
                .iter()
                .filter_map(|n| n.status(shard.id).ok())
                .collect();
            let best = host::best_view(&seen);
            let size = best
                .and_then(|b| nodes.iter().find(|n| n.id() == b.node))
                .and_then(|n| n.store().ok()?.approximate_size(shard.id).ok());
            shards.push(host::shard_status(shard, best, size.unwrap_or(0)));
        }
        let nodes = self
            .node_ids()
            .into_iter()
            .map(|id| {
                let node = nodes.iter().find(|n| n.id() == id);
                let hosted = map.shards_on(id);
                let leaders = node
                    .map(|n| {
                        hosted
                            .iter()
                            .filter(|g| n.status(**g).map(|s| s.is_leader).unwrap_or(false))
                            .count()
                    })
                    .unwrap_or(0);
                NodeStatus {
                    node: id,
                    up: node.is_some(),
                    shards: hosted,
                    leaders,
                    unstartable: node
                        .map(|n| n.unstartable_groups().into_keys().collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(ClusterStatus { shards, nodes })
    }

    /// Waits until every shard has one leader its running replicas agree on.
    pub async fn wait_for_all_leaders(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for g in self.groups() {
            self.wait_for_leader(g, deadline.saturating_duration_since(Instant::now()))
                .await?;
        }
        Ok(())
    }

    /// Waits until every running replica of every shard has applied its leader's commit index.
    pub async fn wait_for_all_replication(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for g in self.groups() {
            self.wait_for_replication(g, deadline.saturating_duration_since(Instant::now()))
                .await?;
        }
        Ok(())
    }

    /// The leader of `shard` now (of several that believe they lead, the one of the highest
    /// term), without waiting; `None` while it has none.
    pub fn leader_of(&self, shard: GroupId) -> Result<Option<NodeId>> {
        if !self.groups().contains(&shard) {
            return Err(Error::InvalidArgument(format!("no shard {shard}")));
        }
        let nodes: Vec<Arc<Node>> = self.lock_nodes()?.values().cloned().collect();
        Ok(nodes
            .iter()
            .filter_map(|n| n.status(shard).ok())
            .filter(|s| s.is_leader)
            .max_by_key(|s| s.term)
            .map(|s| s.node))
    }

    /// A running node.
    pub fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        if !self.node_ids().contains(&id) {
            return Err(Error::UnknownNode(id));
        }
        self.lock_nodes()?
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::Unavailable(format!("node {id} is down")))
    }

    /// The in-process network: reaches each node's current incarnation across restarts.
    pub fn network(&self) -> Arc<InProcNetwork> {
        self.network.clone()
    }

    /// The in-process transport, for clients built with custom options.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.network.clone()
    }

    /// A client that finds the leader itself.
    pub fn client(&self) -> Client {
        Client::new_switched(
            self.network.clone(),
            self.options.client,
            self.recording.clone(),
        )
    }

    /// The switch that makes every client of this cluster (made by [`client`](Self::client)
    /// or [`client_pinned`](Self::client_pinned), before or after) record while it is on.
    pub fn recording(&self) -> &RecordSwitch {
        &self.recording
    }

    /// A client whose requests enter through `node` (and whose `Stale` reads it answers).
    pub fn client_pinned(&self, node: NodeId) -> Result<Client> {
        self.client().pinned_to(node)
    }

    pub fn storage_stats(&self, node: NodeId) -> Result<Arc<StorageStats>> {
        Ok(self.node(node)?.storage_stats())
    }

    /// Status of `group` on every running node that hosts it.
    pub fn group_status(&self, group: GroupId) -> Result<Vec<GroupStatus>> {
        if group != META_GROUP && self.map().shard(group).is_none() {
            return Err(Error::InvalidArgument(format!("no shard {group}")));
        }
        let nodes: Vec<Arc<Node>> = self.lock_nodes()?.values().cloned().collect();
        Ok(nodes.iter().filter_map(|n| n.status(group).ok()).collect())
    }

    /// Waits until the running nodes agree on one leader of `group`, and returns it.
    pub async fn wait_for_leader(&self, group: GroupId, timeout: Duration) -> Result<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.group_status(group)?;
            let leaders: Vec<NodeId> = statuses
                .iter()
                .filter(|s| s.is_leader)
                .map(|s| s.node)
                .collect();
            if let [leader] = leaders[..] {
                let term = statuses.iter().find(|s| s.node == leader).map(|s| s.term);
                if statuses
                    .iter()
                    .all(|s| s.leader == Some(leader) && Some(s.term) == term)
                {
                    return Ok(leader);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for a leader of group {group}: {statuses:?}"),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running node has applied `group`'s log up to the leader's commit index.
    pub async fn wait_for_replication(&self, group: GroupId, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.group_status(group)?;
            let leader = statuses
                .iter()
                .filter(|s| s.is_leader)
                .max_by_key(|s| s.committed_index);
            if let Some((c, voters)) =
                leader.and_then(|l| Some((l.committed_index?, l.voters.clone())))
            {
                // Every running voter must answer: one whose group is restarting (stopped
                // for a moment) has not replicated anything yet.
                let running = self.running_nodes();
                let reported = voters
                    .iter()
                    .filter(|v| running.contains(v))
                    .all(|v| statuses.iter().any(|s| s.node == *v));
                if reported && statuses.iter().all(|s| s.applied_index >= Some(c)) {
                    return Ok(c);
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for group {group} to replicate: {statuses:?}"),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Adds a node: it starts empty, joins the map, and the shard manager moves about
    /// S*R/(N+1) replicas to it one at a time while writes go on (see
    /// [`wait_until_settled`](Self::wait_until_settled)).
    pub async fn add_node(&self) -> Result<NodeId> {
        let id = self.node_ids().into_iter().max().unwrap_or(0) + 1;
        self.network.add_member(id);
        self.start_node(id).await?;
        self.update_map_anywhere(host::join(id, None)).await?;
        self.persist_members(|s| s.node_ids.push(id))?;
        self.events
            .record("node_added", format!("node {id} joined"));
        Ok(id)
    }

    /// Decommissions node `id`: its replicas (and leaderships) are moved away first, then it
    /// leaves the map and stops. Waits up to `timeout`.
    pub async fn remove_node(&self, id: NodeId, timeout: Duration) -> Result<()> {
        if !self.node_ids().contains(&id) {
            return Err(Error::UnknownNode(id));
        }
        host::check_removal(&self.read_map_anywhere().await?, id)?;
        self.update_map_anywhere(host::leave(id)).await?;
        let deadline = Instant::now() + timeout;
        loop {
            let gone =
                matches!(self.read_map_anywhere().await, Ok(map) if !map.nodes.contains_key(&id));
            if gone {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("decommissioning node {id}"),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.running_nodes().contains(&id) {
            self.crash_node(id).await?;
        }
        self.network.remove_member(id);
        self.persist_members(|s| s.node_ids.retain(|n| *n != id))?;
        Ok(())
    }

    /// Splits `shard` at ring position `at` (default: the middle of its largest range) while it
    /// serves: the upper part becomes a new shard on the same replicas. Returns the plan once
    /// the map records it (the child's id is `plan.child`). A shard that does not exist, or a
    /// position outside it or at the start of its range, is `InvalidArgument`; a shard being
    /// moved or split is a retryable `Unavailable` (busy). Nothing changes on error.
    pub async fn split(&self, shard: GroupId, at: Option<u64>) -> Result<SplitPlan> {
        let node = self.any_node()?;
        crate::placement::split::split(&node, shard, at, &self.events).await
    }

    /// Changes the replication factor of every shard on the running cluster (up or down); the
    /// manager adds or drops replicas one at a time.
    pub async fn set_replication(&self, replication: usize) -> Result<()> {
        host::check_replication(&self.read_map_anywhere().await?, replication)?;
        self.update_map_anywhere(host::replicate(replication))
            .await?;
        self.persist_members(|s| s.replication = replication)?;
        self.events.record(
            "replication_changed",
            format!("replication factor is now {replication}"),
        );
        Ok(())
    }

    /// Waits until the manager has nothing left to do: no move pending or planned, no node
    /// leaving, and leaders per live node within one of each other where the placement allows.
    pub async fn wait_until_settled(&self, timeout: Duration) -> Result<ShardMap> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(any) = self.any_node() {
                if let Ok((map, _)) = manager::read_map(&any).await {
                    let down: BTreeSet<NodeId> = map
                        .nodes
                        .keys()
                        .filter(|n| !self.running_nodes().contains(n))
                        .copied()
                        .collect();
                    let idle = map.pending_move.is_none()
                        && map.pending_split.is_none()
                        && manager::plan(&map, &down).is_none()
                        && map.nodes.values().all(|s| *s == NodeState::Active);
                    if idle && self.memberships_match(&map) && self.leaders_balanced(&map, &down) {
                        return Ok(map);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "waiting for the shard manager to settle: {:?}",
                        self.status().ok()
                    ),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether every shard's Raft membership (as its leader reports) is uniform with exactly the
    /// map's replicas as voters (a joint config is unfinished work), and no running node runs a
    /// replica outside the map.
    fn memberships_match(&self, map: &ShardMap) -> bool {
        let nodes: Vec<Arc<Node>> = self
            .lock_nodes()
            .map(|n| n.values().cloned().collect())
            .unwrap_or_default();
        let orphans = nodes.iter().any(|n| {
            n.groups()
                .iter()
                .any(|g| map.replicas_of(*g).is_some_and(|r| !r.contains(&n.id())))
        });
        !orphans
            && map.shards.iter().all(|s| {
                let Ok(statuses) = self.group_status(s.id) else {
                    return false;
                };
                let Some(leader) = statuses.iter().find(|st| st.is_leader) else {
                    return false;
                };
                let mut replicas = s.replicas.clone();
                replicas.sort();
                leader.uniform_voters().map(|mut v| {
                    v.sort();
                    v
                }) == Some(replicas)
            })
    }

    /// Whether the manager has no leader transfer left to make.
    fn leaders_balanced(&self, map: &ShardMap, down: &BTreeSet<NodeId>) -> bool {
        let Ok(status) = self.status() else {
            return false;
        };
        let leader_of: BTreeMap<GroupId, NodeId> = status
            .shards
            .iter()
            .filter_map(|s| s.leader.map(|l| (s.shard, l)))
            .collect();
        leader_of.len() == map.shards.len()
            && manager::leader_transfer(map, &leader_of, down).is_none()
    }

    fn persist_members(&self, change: impl FnOnce(&mut StoredCluster)) -> Result<()> {
        let mut stored = self
            .stored
            .lock()
            .map_err(|_| Error::Unavailable("cluster state poisoned".into()))?;
        change(&mut stored);
        stored.nodes = stored.node_ids.len();
        let root = self
            .root
            .as_ref()
            .ok_or_else(|| Error::Closed("cluster shut down".into()))?;
        let bytes = serde_json::to_vec_pretty(&*stored).map_err(Error::storage)?;
        write_synced(&root.path().join(CLUSTER_FILE), &bytes)
    }

    /// Crash-stops node `id`: it leaves the network at once, every Raft task of its groups is
    /// stopped and joined, and its RocksDB handle dropped, so nothing survives but what is on
    /// disk. In lose-unsynced mode, what was not fsynced is lost too (at restart).
    pub async fn crash_node(&self, id: NodeId) -> Result<()> {
        if !self.node_ids().contains(&id) {
            return Err(Error::UnknownNode(id));
        }
        let node = self.lock_nodes()?.remove(&id);
        let node =
            node.ok_or_else(|| Error::InvalidArgument(format!("node {id} is already down")))?;
        self.network.unregister(id);
        self.snapshots_installed_before.fetch_add(
            node.storage_stats()
                .snapshots_installed
                .load(std::sync::atomic::Ordering::Relaxed),
            std::sync::atomic::Ordering::Relaxed,
        );
        let dir = self.node_dir(id)?;
        let kept = dir.join("db.at-crash");
        let (synced, store) = {
            let store = node.store()?;
            let storage = self.options.storage;
            if storage.lose_unflushed_on_crash || storage.lose_unsynced_on_crash {
                // The files as a killed process leaves them: RocksDB's close below would write
                // out the WAL buffer and flush the applies it holds only in memtables (they
                // are written without the WAL). The power-loss mode then cuts the WAL back to
                // what was synced, at restart.
                let (frozen, into) = (store.clone(), kept.clone());
                crate::sim::blocking(move || frozen.freeze_for_crash(&into))
                    .await
                    .map_err(|e| Error::Storage(format!("crash copy: {e}")))??;
            }
            (store.synced_wal(), store.closed())
        };
        node.shutdown().await;
        drop(node);
        // Nothing may touch the files after the "crash": wait until the RocksDB handle is gone
        // and closed (calls that were inside the node when it stopped finish promptly).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.load(std::sync::atomic::Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "node {id} did not release its store"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if kept.exists() {
            std::fs::remove_dir_all(dir.join("db"))?;
            std::fs::rename(&kept, dir.join("db"))?;
        }
        self.events
            .record("node_stopped", format!("node {id} stopped"));
        let synced = synced.lock().map(|s| s.clone()).unwrap_or_default();
        self.crashed
            .lock()
            .map_err(|_| Error::Unavailable("cluster state poisoned".into()))?
            .insert(id, synced);
        Ok(())
    }

    /// Same as [`crash_node`](Self::crash_node): the embedded cluster has no gentler stop, since
    /// every acknowledged write is already on disk.
    pub async fn stop_node(&self, id: NodeId) -> Result<()> {
        self.crash_node(id).await
    }

    /// Crash-stops every running node (see [`crash_node`](Self::crash_node)).
    pub async fn crash_all(&self) -> Result<()> {
        let up: Vec<NodeId> = self.lock_nodes()?.keys().copied().collect();
        for id in up {
            self.crash_node(id).await?;
        }
        Ok(())
    }

    /// Nodes currently running.
    pub fn running_nodes(&self) -> Vec<NodeId> {
        self.lock_nodes()
            .map(|n| n.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The fault controller: partitions, message loss, delay (see [`Faults`]).
    pub fn faults(&self) -> &Arc<Faults> {
        self.network.faults()
    }

    /// Snapshots installed on every node since the cluster started, restarts included.
    pub fn snapshots_installed(&self) -> u64 {
        let running: u64 = self
            .running_nodes()
            .into_iter()
            .filter_map(|n| self.storage_stats(n).ok())
            .map(|s| {
                s.snapshots_installed
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        running
            + self
                .snapshots_installed_before
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Faults inside voter changes (interrupt after the joint step, fail, hold), shared by
    /// every node of this cluster.
    pub fn failpoints(&self) -> &Arc<Failpoints> {
        &self.failpoints
    }

    /// Where the cluster map and the groups' Raft memberships disagree: for every group (the
    /// manager's included) the leader's membership must be uniform with exactly the map's
    /// replicas as voters, no move may be pending, every voter must run a replica that has
    /// applied what the leader committed and holds the leader's data, and no running node may
    /// host a replica outside the map. Waits up to `timeout` for moves to finish and replicas to
    /// catch up; returns what still disagrees then (empty: everything agrees).
    pub async fn placement_problems(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let problems = match self.read_map_anywhere().await {
                Ok(map) => self.placement_problems_in(&map),
                Err(e) => vec![format!("cluster map unreadable: {e}")],
            };
            if problems.is_empty() || Instant::now() >= deadline {
                return problems;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn placement_problems_in(&self, map: &ShardMap) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(mv) = &map.pending_move {
            problems.push(format!("a move is pending: {mv:?}"));
        }
        let nodes: BTreeMap<NodeId, Arc<Node>> =
            self.lock_nodes().map(|n| n.clone()).unwrap_or_default();
        let groups = map.shard_ids().into_iter().chain([META_GROUP]);
        for group in groups {
            let mut replicas = map.replicas_of(group).unwrap_or_default().to_vec();
            replicas.sort();
            for (id, node) in &nodes {
                if node.raft(group).is_some() && !replicas.contains(id) {
                    problems.push(format!(
                        "group {group}: node {id} runs a replica outside the map {replicas:?}"
                    ));
                }
            }
            let leader = nodes
                .values()
                .filter_map(|n| n.status(group).ok())
                .find(|s| s.is_leader);
            let Some(leader) = leader else {
                problems.push(format!("group {group}: no leader"));
                continue;
            };
            let voters = leader.uniform_voters().map(|mut v| {
                v.sort();
                v
            });
            if voters.as_ref() != Some(&replicas) {
                problems.push(format!(
                    "group {group}: map replicas {replicas:?}, Raft voters {:?}",
                    leader.voter_sets
                ));
            }
            let data = |node: &Node| node.store()?.scan_group(group);
            let Some(leader_data) = nodes.get(&leader.node).and_then(|n| data(n).ok()) else {
                problems.push(format!("group {group}: leader's data unreadable"));
                continue;
            };
            for voter in &replicas {
                let Some(node) = nodes.get(voter) else {
                    problems.push(format!("group {group}: voter {voter} is not running"));
                    continue;
                };
                let Ok(status) = node.status(group) else {
                    problems.push(format!("group {group}: voter {voter} hosts no replica"));
                    continue;
                };
                if status.applied_index != leader.applied_index
                    || leader.applied_index != leader.committed_index
                {
                    problems.push(format!(
                        "group {group}: voter {voter} applied {:?}, leader committed {:?} applied {:?}",
                        status.applied_index, leader.committed_index, leader.applied_index
                    ));
                } else if data(node).ok().as_ref() != Some(&leader_data) {
                    problems.push(format!(
                        "group {group}: voter {voter} holds other data than the leader"
                    ));
                }
            }
        }
        problems
    }

    /// The seed of the fault schedule (print it when a run fails; pass it back to replay).
    pub fn seed(&self) -> u64 {
        self.network.faults().seed()
    }

    /// Restarts a stopped node from its data dir.
    pub async fn restart_node(&self, id: NodeId) -> Result<()> {
        if !self.node_ids().contains(&id) {
            return Err(Error::UnknownNode(id));
        }
        if self.lock_nodes()?.contains_key(&id) {
            return Err(Error::InvalidArgument(format!("node {id} is already up")));
        }
        self.start_node(id).await.map(|_| ())
    }

    /// Stops every node and, for a temporary root, removes it. Data in a given root is kept.
    pub async fn shutdown(mut self) -> Result<()> {
        let stopped = self.stop_all().await;
        if let Some(Root::Temp(t)) = self.root.take() {
            remove_once_released(t.keep(), &stopped).await?;
        }
        Ok(())
    }

    /// Stops every node; returns handles that tell when each node is gone (its RocksDB closes
    /// when the last call still holding the node ends).
    async fn stop_all(&self) -> Vec<Weak<Node>> {
        let nodes: Vec<Arc<Node>> = match self.nodes.lock() {
            Ok(mut n) => std::mem::take(&mut *n).into_values().collect(),
            Err(_) => return Vec::new(),
        };
        for node in &nodes {
            self.network.unregister(node.id());
        }
        let mut stopped = Vec::new();
        for node in nodes {
            node.shutdown().await;
            stopped.push(Arc::downgrade(&node));
        }
        stopped
    }
}

/// Removes a temporary root once no call holds a node of it any more. A call in flight when
/// the nodes stopped keeps its node, and so its RocksDB, open; the store's close writes files
/// (a flush, the manifest), so removing the directory under it fails with "directory not
/// empty" (seen in CI). The removal is retried while a closing store may still be writing.
async fn remove_once_released(path: PathBuf, nodes: &[Weak<Node>]) -> Result<()> {
    let deadline = Instant::now() + RELEASE_WAIT;
    while nodes.iter().any(|n| n.strong_count() > 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        match crate::sim::blocking({
            let path = path.clone();
            move || std::fs::remove_dir_all(&path)
        })
        .await
        .and_then(|removed| removed)
        {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if attempts < 50 => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                return Err(Error::Storage(format!(
                    "could not remove the temporary data dir {path:?}: {e}"
                )))
            }
        }
    }
}

/// How long a shutdown waits for calls in flight to let go of the nodes they reached.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

fn load_or_create(root: &Path, options: &ClusterOptions) -> Result<StoredCluster> {
    let path = root.join(CLUSTER_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredCluster =
                serde_json::from_slice(&bytes).map_err(|e| Error::DataDir {
                    path: path.clone(),
                    reason: format!("corrupt cluster file: {e}"),
                })?;
            if stored.format_version != 1 {
                return Err(Error::DataDir {
                    path,
                    reason: format!("unsupported cluster format {}", stored.format_version),
                });
            }
            let replication = options.replication.unwrap_or(stored.replication);
            if stored.map.shards.len() != options.shards || stored.replication != replication {
                return Err(Error::InvalidArgument(format!(
                    "{root:?} holds {} shards with {} replicas; asked for {} with {}",
                    stored.map.shards.len(),
                    stored.replication,
                    options.shards,
                    replication
                )));
            }
            if stored.nodes != options.nodes {
                return Err(Error::InvalidArgument(format!(
                    "{root:?} holds a cluster of {} nodes; asked for {}",
                    stored.nodes, options.nodes
                )));
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let not_empty = std::fs::read_dir(root)?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name() != LOCK_FILE);
            if not_empty {
                return Err(Error::DataDir {
                    path: root.to_path_buf(),
                    reason: format!(
                        "not empty and has no {CLUSTER_FILE}: not a ScaleStore cluster dir"
                    ),
                });
            }
            let replication = options.replication.unwrap_or(options.nodes.min(3));
            let ids: Vec<NodeId> = (1..=options.nodes as NodeId).collect();
            let map = ShardMap::uniform(options.shards, &ids, replication)?;
            let stored = StoredCluster {
                format_version: 1,
                cluster_id: new_cluster_id(),
                nodes: options.nodes,
                replication,
                map,
                node_ids: ids.clone(),
            };
            let bytes = serde_json::to_vec_pretty(&stored).map_err(Error::storage)?;
            write_synced(&path, &bytes)?;
            Ok(stored)
        }
        Err(e) => Err(e.into()),
    }
}

impl Drop for EmbeddedCluster {
    /// A cluster dropped without `shutdown` still stops its nodes (in the background).
    fn drop(&mut self) {
        let nodes: Vec<Arc<Node>> = match self.nodes.lock() {
            Ok(mut n) => std::mem::take(&mut *n).into_values().collect(),
            Err(_) => return,
        };
        for node in &nodes {
            self.network.unregister(node.id());
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for node in nodes {
                    node.shutdown().await;
                }
            });
        }
    }
}

fn new_cluster_id() -> String {
    format!(
        "{:016x}{:016x}",
        crate::sim::random_u64(),
        crate::sim::random_u64()
    )
}
