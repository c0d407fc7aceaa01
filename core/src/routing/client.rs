//! The one client type. It routes each key to its shard by a cached cluster map (refreshed on
//! `WrongShard`), finds the shard's leader (hints updated on `NotLeader`), retries `NotLeader` /
//! `Unavailable` with backoff under a deadline, writes exactly once through per-shard sessions,
//! and can be pinned to one node (requests enter the cluster through it and `Stale` reads are
//! answered by its replica).
//!
//! Atomicity: every single-key operation is atomic; `batch_put` is atomic per shard, not across
//! shards (a failed batch may have been applied on some shards); scans read each shard at its own
//! point in time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::placement::events::Event;
use crate::proof::history::{output_of_error, History, OpInput, OpOutput, Operation, RecordSwitch};
use crate::protocol::{ClientRequest, ClientResponse, GroupStatus};
use crate::routing::transport::Transport;
use crate::sharding::{ShardMap, SplitDone};
use crate::status::ClusterStatus;
use crate::types::{Command, CommandResult, GroupId, NodeId, ReadConsistency, SessionRef};

/// How many times one operation re-routes after `WrongShard` (a stale map) before it gives up:
/// enough to wait out a split's few moments between its apply and its record in the map.
const REROUTES: u32 = 40;

#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Deadline of one operation, retries included.
    pub timeout: Duration,
    /// How long connecting to a remote cluster may take (asking the endpoints for the map),
    /// apart from `timeout`, which bounds each call. Unused in process.
    pub connect_timeout: Duration,
    /// Longest wait for one attempt before trying another node (within `timeout`).
    pub attempt_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Checked before sending, so over-limit input fails fast (nodes check again).
    pub limits: Limits,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(5),
            backoff_max: Duration::from_millis(200),
            limits: Limits::default(),
        }
    }
}

impl ClientOptions {
    /// The options a remote client is connected with (the SDKs' and the CLI's `connect`):
    /// `timeout` for each call, the dial within `connect` (default: `timeout`), and each
    /// attempt within `attempt` (default: 2 s, never more than `timeout`).
    pub fn for_connect(
        timeout: Duration,
        connect: Option<Duration>,
        attempt: Option<Duration>,
    ) -> Self {
        let defaults = ClientOptions::default();
        ClientOptions {
            timeout,
            connect_timeout: connect.unwrap_or(timeout),
            attempt_timeout: attempt.unwrap_or(defaults.attempt_timeout.min(timeout)),
            ..defaults
        }
    }

    /// These options with the pause between retries changed where given: `initial` after the
    /// first failed attempt, doubling up to `max`. Refuses a zero `initial` (retries would
    /// spin) and an `initial` above `max`.
    pub fn with_backoff(
        mut self,
        initial: Option<Duration>,
        max: Option<Duration>,
    ) -> Result<Self> {
        if let Some(initial) = initial {
            self.backoff_initial = initial;
        }
        if let Some(max) = max {
            self.backoff_max = max;
        }
        if self.backoff_initial.is_zero() {
            return Err(Error::InvalidArgument(
                "the initial back-off must be above zero".into(),
            ));
        }
        if self.backoff_initial > self.backoff_max {
            return Err(Error::InvalidArgument(format!(
                "the initial back-off ({:?}) is above the largest ({:?})",
                self.backoff_initial, self.backoff_max
            )));
        }
        Ok(self)
    }
}

/// Outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub success: bool,
    /// The value after the operation (the new value on success, the unchanged one otherwise).
    pub current: Option<Vec<u8>>,
}

/// What to scan: keys with `start <= key < end` that begin with `prefix`, at most `limit` per
/// page, resuming after `cursor` (from the previous page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
    pub prefix: Option<Vec<u8>>,
    pub limit: usize,
    pub consistency: ReadConsistency,
    pub cursor: Option<Vec<u8>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            start: None,
            end: None,
            prefix: None,
            limit: 1000,
            consistency: ReadConsistency::Linearizable,
            cursor: None,
        }
    }
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One page of a scan, in key order. `cursor` is `Some` when more may follow: pass it back in
/// [`ScanOptions::cursor`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    pub items: Vec<KeyValue>,
    pub cursor: Option<Vec<u8>>,
}

/// An operation being recorded. If its caller drops the future before it returns (a
/// timeout around it, a cancelled task), it is still recorded, as unknown: it may have been
/// applied, and a history without it could make a later read of its effect look impossible.
struct PendingOp {
    history: History,
    op: Option<Operation>,
}

impl PendingOp {
    fn finish(&mut self) {
        if let Some(mut op) = self.op.take() {
            op.return_ns = self.history.now_ns();
            self.history.push(op);
        }
    }
}

impl Drop for PendingOp {
    fn drop(&mut self) {
        self.finish();
    }
}

/// This client's session with one group: writes are numbered so the group applies each once.
struct GroupSession {
    id: u64,
    next_seq: u64,
    in_flight: BTreeSet<u64>,
}

type SessionSlot = Arc<tokio::sync::Mutex<Option<GroupSession>>>;

struct Shared {
    transport: Arc<dyn Transport>,
    options: ClientOptions,
    leader_hints: Mutex<BTreeMap<GroupId, NodeId>>,
    map: RwLock<Option<Arc<ShardMap>>>,
    map_refreshes: AtomicU64,
    /// (group, node) pairs whose last attempt timed out, until when: an old leader cut off from
    /// its group keeps a request until the attempt timeout, and its side keeps naming it.
    suspects: Mutex<BTreeMap<(GroupId, NodeId), Instant>>,
    /// One slot per group, each behind its own lock: opening a session with one group (a round
    /// trip that may wait out a leaderless shard) holds up no other group's writes.
    sessions: Mutex<BTreeMap<GroupId, SessionSlot>>,
    closed: AtomicBool,
    rotate: AtomicUsize,
    /// A switch that makes every handle of this client record while it is on (the embedded
    /// cluster's `record`), and the client id this client has in the history it records into.
    switch: Option<RecordSwitch>,
    switch_client: Mutex<Option<(usize, u64)>>,
}

/// A handle to a cluster. Cheap to clone; clones share the map, leader hints, sessions and the
/// closed flag.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    pinned: Option<NodeId>,
    /// Where this handle records its operations, and under which client id.
    recorder: Option<(History, u64)>,
    /// This handle's deadline per operation, instead of the options' `timeout`.
    timeout: Option<Duration>,
}

impl Client {
    pub fn new(transport: Arc<dyn Transport>, options: ClientOptions) -> Self {
        Client {
            shared: Arc::new(Shared {
                transport,
                options,
                leader_hints: Mutex::new(BTreeMap::new()),
                map: RwLock::new(None),
                map_refreshes: AtomicU64::new(0),
                suspects: Mutex::new(BTreeMap::new()),
                sessions: Mutex::new(BTreeMap::new()),
                closed: AtomicBool::new(false),
                rotate: AtomicUsize::new(0),
                switch: None,
                switch_client: Mutex::new(None),
            }),
            pinned: None,
            recorder: None,
            timeout: None,
        }
    }

    /// A new client that records into whatever history `switch` holds while it is on.
    pub fn new_switched(
        transport: Arc<dyn Transport>,
        options: ClientOptions,
        switch: RecordSwitch,
    ) -> Self {
        let mut client = Client::new(transport, options);
        if let Some(shared) = Arc::get_mut(&mut client.shared) {
            shared.switch = Some(switch);
        }
        client
    }

    /// A handle whose operations each get `timeout` as their deadline (retries included).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout: Some(timeout),
            ..self.clone()
        }
    }

    /// This handle's deadline per operation.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.shared.options.timeout)
    }

    /// The history this handle records into now (its own, else the switch's), with its id there.
    fn recorder_now(&self) -> Option<(History, u64)> {
        if let Some(r) = &self.recorder {
            return Some(r.clone());
        }
        let history = self.shared.switch.as_ref()?.current()?;
        let mut slot = self.shared.switch_client.lock().ok()?;
        let id = match *slot {
            Some((identity, id)) if identity == history.identity() => id,
            _ => {
                let id = history.new_client_id();
                *slot = Some((history.identity(), id));
                id
            }
        };
        Some((history, id))
    }

    /// A handle that records every get, put, delete, append and cas it makes into `history`,
    /// under a client id of its own (shares everything else with `self`).
    pub fn recording(&self, history: &History) -> Client {
        Client {
            recorder: Some((history.clone(), history.new_client_id())),
            ..self.clone()
        }
    }

    /// Runs `op` and, if this handle records, appends it to the history.
    async fn recorded<T>(
        &self,
        key: &[u8],
        input: OpInput,
        op: impl std::future::Future<Output = Result<T>>,
        output: impl Fn(&T) -> OpOutput,
    ) -> Result<T> {
        let Some((history, client)) = self.recorder_now() else {
            return op.await;
        };
        let is_read = input.is_read();
        let mut pending = PendingOp {
            history,
            op: Some(Operation {
                client,
                key: key.to_vec(),
                input,
                invoke_ns: 0,
                return_ns: 0,
                output: OpOutput::Unknown {
                    error: "abandoned by its caller before it returned".into(),
                },
                error_kind: Some("abandoned".into()),
            }),
        };
        if let Some(op) = pending.op.as_mut() {
            op.invoke_ns = pending.history.now_ns();
        }
        let result = op.await;
        if let Some(op) = pending.op.as_mut() {
            op.output = match &result {
                Ok(v) => output(v),
                Err(e) => output_of_error(e, is_read),
            };
            op.error_kind = result.as_ref().err().map(|e| e.kind().to_string());
        }
        pending.finish();
        result
    }

    /// A client starting from a cluster map it already has (say, cached from an earlier run);
    /// a stale map is refreshed on the first `WrongShard`.
    pub fn with_shard_map(
        transport: Arc<dyn Transport>,
        options: ClientOptions,
        map: ShardMap,
    ) -> Self {
        let client = Client::new(transport, options);
        if let Ok(mut m) = client.shared.map.write() {
            *m = Some(Arc::new(map));
        }
        client
    }

    /// A client whose requests all enter the cluster through `node`.
    pub fn pinned_to(&self, node: NodeId) -> Result<Client> {
        if !self.shared.transport.nodes().contains(&node) {
            return Err(Error::UnknownNode(node));
        }
        Ok(Client {
            pinned: Some(node),
            ..self.clone()
        })
    }

    /// The size caps this client enforces before sending anything.
    pub fn limits(&self) -> Limits {
        self.shared.options.limits
    }

    pub fn pinned_node(&self) -> Option<NodeId> {
        self.pinned
    }

    /// Closes the client (and its clones): later calls fail with `Closed`.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// How many times the cluster map was fetched (the first fetch included).
    pub fn map_refreshes(&self) -> u64 {
        self.shared.map_refreshes.load(Ordering::Relaxed)
    }

    // ----- routing -----

    /// The cached cluster map, fetched on first use.
    pub async fn shard_map(&self) -> Result<Arc<ShardMap>> {
        if let Some(m) = self.shared.map.read().ok().and_then(|m| m.clone()) {
            return Ok(m);
        }
        self.refresh_map().await
    }

    /// Fetches the cluster map again.
    pub async fn refresh_map(&self) -> Result<Arc<ShardMap>> {
        let map = match self.execute(ClientRequest::GetShardMap).await? {
            ClientResponse::ShardMap(m) => Arc::new(m),
            other => return Err(unexpected(other)),
        };
        self.shared.map_refreshes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.shared.map.write() {
            let newer = m.as_ref().is_none_or(|old| old.epoch <= map.epoch);
            if newer {
                *m = Some(map.clone());
            }
        }
        Ok(map)
    }

    /// The shard owning `key`.
    pub async fn shard_of(&self, key: impl AsRef<[u8]>) -> Result<GroupId> {
        Ok(self.shard_map().await?.shard_of(key.as_ref()))
    }

    /// The shard's current leader, as its replicas report it.
    pub async fn shard_leader(&self, shard: GroupId) -> Result<Option<NodeId>> {
        Ok(self.shard_status(shard).await?.leader)
    }

    /// The whole cluster's status (nodes, shards, leaders, sizes), as a reachable node sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        self.check_open()?;
        self.bounded("cluster status", self.shared.transport.cluster_status())
            .await
    }

    /// Splits `shard` online at ring position `at` (default: the middle of its largest range):
    /// the part of its range from `at` on becomes a new shard (`child`) on its replicas.
    /// Returns once the cluster map records it. See
    /// [`EmbeddedCluster::split`](crate::EmbeddedCluster::split) for the errors.
    pub async fn split(&self, shard: GroupId, at: Option<u64>) -> Result<SplitDone> {
        self.check_open()?;
        let done = self
            .bounded("a split", self.shared.transport.split(shard, at))
            .await?;
        self.refresh_map().await?;
        Ok(done)
    }

    /// Recent cluster events, oldest first.
    pub async fn events(&self) -> Result<Vec<Event>> {
        self.check_open()?;
        self.bounded("cluster events", self.shared.transport.events())
            .await
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        Ok(())
    }

    async fn bounded<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let timeout = self.timeout();
        tokio::time::timeout(timeout, op)
            .await
            .map_err(|_| Error::Timeout {
                what: what.to_string(),
                waited_ms: timeout.as_millis() as u64,
            })?
    }

    /// Status of `shard` as one of its replicas reports it.
    pub async fn shard_status(&self, shard: GroupId) -> Result<GroupStatus> {
        match self
            .execute(ClientRequest::GroupStatus { group: shard })
            .await?
        {
            ClientResponse::GroupStatus(s) => {
                if let Some(l) = s.leader {
                    self.set_hint(shard, Some(l));
                }
                Ok(s)
            }
            other => Err(unexpected(other)),
        }
    }

    /// After a `WrongShard`: takes a fresh map. The map records a split only after the shard
    /// has applied it, so for a moment the fresh map may still name the old shard: then it
    /// waits a little before the next attempt (see [`REROUTES`]).
    async fn reroute(&self, attempt: &mut u32) -> Result<()> {
        *attempt += 1;
        let before = self.shard_map().await?.epoch;
        let map = self.refresh_map().await?;
        if map.epoch == before && *attempt > 1 {
            let wait = (10 * u64::from(*attempt)).min(200);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        Ok(())
    }

    /// Sends the request `build` makes for the shard owning `key`, refreshing the map and
    /// retrying on `WrongShard`.
    async fn routed(
        &self,
        key: &[u8],
        build: impl Fn(GroupId) -> ClientRequest,
    ) -> Result<ClientResponse> {
        let mut attempt = 0;
        loop {
            let group = self.shard_map().await?.shard_of(key);
            match self.execute(build(group)).await {
                Err(Error::WrongShard { .. }) if attempt < REROUTES => {
                    self.reroute(&mut attempt).await?;
                }
                other => return other,
            }
        }
    }

    // ----- operations -----

    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let op = self.write(Command::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        });
        let input = OpInput::Put {
            value: value.to_vec(),
        };
        self.recorded(key, input, op, |_| OpOutput::Put)
            .await
            .map(|_| ())
    }

    /// Linearizable read.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: ReadConsistency,
    ) -> Result<Option<Vec<u8>>> {
        let key = key.as_ref();
        let op = async {
            self.shared.options.limits.check_key(key)?;
            let build = |group| ClientRequest::Read {
                group,
                key: key.to_vec(),
                consistency,
            };
            match self.routed(key, build).await? {
                ClientResponse::Read(v) => Ok(v),
                other => Err(unexpected(other)),
            }
        };
        // Only linearizable reads are checkable; others are recorded as unknown-effect reads.
        let out = |v: &Option<Vec<u8>>| match consistency {
            ReadConsistency::Linearizable => OpOutput::Value { value: v.clone() },
            _ => OpOutput::Failed {
                error: format!("{consistency:?} read (not checked)"),
            },
        };
        self.recorded(key, OpInput::Get, op, out).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        let key = key.as_ref();
        let op = async {
            match self.write(Command::Delete { key: key.to_vec() }).await? {
                CommandResult::Delete { existed } => Ok(existed),
                other => Err(unexpected_result(other)),
            }
        };
        self.recorded(key, OpInput::Delete, op, |e| OpOutput::Deleted {
            existed: *e,
        })
        .await
    }

    /// Appends `value` to the key's value (absent = empty); returns the new length.
    pub async fn append(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<u64> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let op = async {
            let cmd = Command::Append {
                key: key.to_vec(),
                value: value.to_vec(),
            };
            match self.write(cmd).await? {
                CommandResult::Append { new_len } => Ok(new_len),
                other => Err(unexpected_result(other)),
            }
        };
        let input = OpInput::Append {
            value: value.to_vec(),
        };
        self.recorded(key, input, op, |n| OpOutput::Appended { new_len: *n })
            .await
    }

    /// Sets `key` to `new` if its value equals `expected` (`None` = absent).
    pub async fn cas(
        &self,
        key: impl AsRef<[u8]>,
        expected: Option<&[u8]>,
        new: impl AsRef<[u8]>,
    ) -> Result<CasOutcome> {
        let (key, new) = (key.as_ref(), new.as_ref());
        let op = async {
            let cmd = Command::Cas {
                key: key.to_vec(),
                expected: expected.map(<[u8]>::to_vec),
                new: new.to_vec(),
            };
            match self.write(cmd).await? {
                CommandResult::Cas { success, current } => Ok(CasOutcome { success, current }),
                other => Err(unexpected_result(other)),
            }
        };
        let input = OpInput::Cas {
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        };
        self.recorded(key, input, op, |c| OpOutput::Cas {
            success: c.success,
            current: c.current.clone(),
        })
        .await
    }

    /// Deletes every key starting with `prefix` (empty: every key) and returns how many. Each
    /// shard deletes its keys in one write (atomic within the shard, exactly once like every
    /// write), the shards in parallel: not atomic across shards, so a failure midway leaves some
    /// shards done. Not recorded into a history (it names no key).
    pub async fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<u64> {
        let command = Command::DeletePrefix {
            prefix: prefix.as_ref().to_vec(),
        };
        self.shared.options.limits.check_command(&command)?;
        let shards = self.shard_map().await?.shard_ids();
        let writes = shards
            .into_iter()
            .map(|group| self.write_in(group, command.clone()));
        let mut count = 0;
        for result in futures::future::join_all(writes).await {
            match result? {
                CommandResult::DeletePrefix { count: n } => count += n,
                other => return Err(unexpected_result(other)),
            }
        }
        Ok(count)
    }

    /// Reads many keys, split per shard and read in parallel; values in the order of `keys`.
    pub async fn batch_get<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        consistency: ReadConsistency,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
        self.shared.options.limits.check_keys(&keys)?;
        let mut attempt = 0;
        loop {
            let map = self.shard_map().await?;
            let mut by_shard: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
            for (i, k) in keys.iter().enumerate() {
                by_shard.entry(map.shard_of(k)).or_default().push(i);
            }
            let reads = by_shard.iter().map(|(group, idx)| {
                let request = ClientRequest::ReadMany {
                    group: *group,
                    keys: idx.iter().map(|i| keys[*i].to_vec()).collect(),
                    consistency,
                };
                async move { (idx, self.execute(request).await) }
            });
            let mut out = vec![None; keys.len()];
            let mut wrong_shard = false;
            for (idx, res) in futures::future::join_all(reads).await {
                match res {
                    Ok(ClientResponse::Values(values)) => {
                        for (i, v) in idx.iter().zip(values) {
                            out[*i] = v;
                        }
                    }
                    Err(Error::WrongShard { .. }) if attempt < REROUTES => wrong_shard = true,
                    Err(e) => return Err(e),
                    Ok(other) => return Err(unexpected(other)),
                }
            }
            if !wrong_shard {
                return Ok(out);
            }
            self.reroute(&mut attempt).await?;
        }
    }

    /// Writes many pairs, split per shard and written in parallel. Atomic per shard, not across
    /// shards: on error, some shards may have applied their part.
    pub async fn batch_put<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) -> Result<()> {
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
            .iter()
            .map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
            .collect();
        if pairs.is_empty() {
            return Ok(());
        }
        let limits = &self.shared.options.limits;
        let bytes = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        limits.check_batch("a batch write", pairs.len(), bytes)?;
        for (k, v) in &pairs {
            limits.check_key(k)?;
            limits.check_value(v)?;
        }
        let mut pending = pairs;
        let mut attempt = 0;
        loop {
            let map = self.shard_map().await?;
            let mut by_shard: BTreeMap<GroupId, Vec<KeyValue>> = BTreeMap::new();
            for (k, v) in pending {
                by_shard.entry(map.shard_of(&k)).or_default().push((k, v));
            }
            let writes = by_shard.into_iter().map(|(group, pairs)| async move {
                let cmd = Command::PutMany {
                    pairs: pairs.clone(),
                };
                (pairs, self.write_in(group, cmd).await)
            });
            pending = Vec::new();
            for (pairs, res) in futures::future::join_all(writes).await {
                match res {
                    Ok(_) => {}
                    Err(Error::WrongShard { .. }) if attempt < REROUTES => pending.extend(pairs),
                    Err(e) => return Err(e),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            self.reroute(&mut attempt).await?;
        }
    }

    /// One page of a scan over every shard, merged in key order.
    pub async fn scan(&self, options: &ScanOptions) -> Result<ScanPage> {
        self.shared.options.limits.check_scan_page(options.limit)?;
        let mut lower = options.start.clone().unwrap_or_default();
        if let Some(p) = &options.prefix {
            lower = lower.max(p.clone());
        }
        if let Some(c) = &options.cursor {
            // The smallest key after the cursor.
            let mut after = c.clone();
            after.push(0);
            lower = lower.max(after);
        }
        let prefix_end = options.prefix.as_deref().and_then(prefix_successor);
        let upper = match (options.end.clone(), prefix_end) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if upper.as_ref().is_some_and(|u| *u <= lower) {
            return Ok(ScanPage::default());
        }
        let mut attempt = 0;
        let (mut merged, mut more) = loop {
            match self.scan_every_shard(options, &lower, &upper).await {
                Err(Error::WrongShard { .. }) if attempt < REROUTES => {
                    self.reroute(&mut attempt).await?;
                }
                other => break other?,
            }
        };
        merged.sort_by(|a, b| a.0.cmp(&b.0));
        if merged.len() > options.limit {
            merged.truncate(options.limit);
            more = true;
        }
        let cursor = if more {
            merged.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(ScanPage {
            items: merged,
            cursor,
        })
    }

    /// One page of `[lower, upper)` from every shard of the map, each scanned at the version
    /// the map names (a shard whose descriptor moved on refuses: `WrongShard`), unsorted.
    async fn scan_every_shard(
        &self,
        options: &ScanOptions,
        lower: &[u8],
        upper: &Option<Vec<u8>>,
    ) -> Result<(Vec<KeyValue>, bool)> {
        let map = self.shard_map().await?;
        let scans = map.shards.iter().map(|shard| {
            let request = ClientRequest::Scan {
                group: shard.id,
                start: lower.to_vec(),
                end: upper.clone(),
                limit: options.limit,
                consistency: options.consistency,
                shard_version: Some(shard.version),
            };
            self.execute(request)
        });
        let mut merged = Vec::new();
        let mut more = false;
        for res in futures::future::join_all(scans).await {
            match res? {
                ClientResponse::Scan { items, more: m } => {
                    more |= m;
                    merged.extend(items);
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok((merged, more))
    }

    /// Every pair a scan yields, page by page (for small results; page with [`scan`](Self::scan)
    /// for large ones).
    pub async fn scan_all(&self, options: &ScanOptions) -> Result<Vec<KeyValue>> {
        let mut options = options.clone();
        let mut out = Vec::new();
        loop {
            let page = self.scan(&options).await?;
            out.extend(page.items);
            match page.cursor {
                Some(c) => options.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Up to `limit` pairs a scan yields (`None`: all of them), in key order, page by page.
    pub async fn scan_up_to(
        &self,
        options: &ScanOptions,
        limit: Option<usize>,
    ) -> Result<Vec<KeyValue>> {
        let mut options = options.clone();
        let mut out = Vec::new();
        loop {
            if let Some(limit) = limit {
                let left = limit.saturating_sub(out.len());
                if left == 0 {
                    return Ok(out);
                }
                options.limit = options.limit.min(left);
            }
            let page = self.scan(&options).await?;
            out.extend(page.items);
            match page.cursor {
                Some(c) => options.cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Writes any number of pairs as a sequence of [`batch_put`](Self::batch_put)s, each
    /// under the limits' item and byte caps. Each batch is atomic per shard; a failure stops
    /// the sequence (earlier batches stay written).
    pub async fn put_many(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let limits = self.shared.options.limits;
        // Every pair is checked first, so bad input writes nothing.
        for (key, value) in pairs {
            limits.check_key(key)?;
            limits.check_value(value)?;
        }
        let mut start = 0;
        while start < pairs.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < pairs.len() && end - start < limits.max_batch_items {
                let size = pairs[end].0.len() + pairs[end].1.len();
                if end > start && bytes + size > limits.max_batch_bytes {
                    break;
                }
                bytes += size;
                end += 1;
            }
            self.batch_put(&pairs[start..end]).await?;
            start = end;
        }
        Ok(())
    }

    // ----- writes with exactly-once sessions -----

    async fn write(&self, command: Command) -> Result<CommandResult> {
        self.shared.options.limits.check_command(&command)?;
        let key = command
            .keys()
            .first()
            .map(|k| k.to_vec())
            .unwrap_or_default();
        let mut attempt = 0;
        loop {
            let group = self.shard_map().await?.shard_of(&key);
            match self.write_in(group, command.clone()).await {
                Err(Error::WrongShard { .. }) if attempt < REROUTES => {
                    self.reroute(&mut attempt).await?;
                }
                other => return other,
            }
        }
    }

    /// Writes exactly once to `group`: the write carries this client's session and a sequence
    /// number, and every retry reuses them, so the group applies it once and answers retries
    /// with the first result.
    async fn write_in(&self, group: GroupId, command: Command) -> Result<CommandResult> {
        self.shared.options.limits.check_command(&command)?;
        loop {
            let session = self.begin_write(group).await?;
            let request = ClientRequest::Write {
                group,
                command: command.clone(),
                session: Some(session),
            };
            let (outcome, attempts) = self.execute_counted(request).await;
            self.end_write(group, session).await;
            match outcome {
                // Refused on its only attempt, so it was never applied: safe to send again
                // under a new session. After a retry, it may have been applied: report it.
                Err(Error::SessionExpired { .. }) if attempts == 1 => {
                    self.forget_session(group, session.session).await;
                }
                Err(e) => return Err(e),
                Ok(ClientResponse::Write(r)) => return Ok(r),
                Ok(other) => return Err(unexpected(other)),
            }
        }
    }

    /// This client's session slot for `group` (created empty on first use).
    fn session_slot(&self, group: GroupId) -> SessionSlot {
        let mut slots = self
            .shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        slots.entry(group).or_default().clone()
    }

    /// Allocates the next sequence number of this client's session with `group`, opening the
    /// session first if there is none. Only this group's slot is locked meanwhile.
    async fn begin_write(&self, group: GroupId) -> Result<SessionRef> {
        let slot = self.session_slot(group);
        let mut session = slot.lock().await;
        if session.is_none() {
            let id = match self.execute(ClientRequest::OpenSession { group }).await? {
                ClientResponse::Write(CommandResult::SessionOpened { session }) => session,
                other => return Err(unexpected(other)),
            };
            *session = Some(GroupSession {
                id,
                next_seq: 1,
                in_flight: BTreeSet::new(),
            });
        }
        let s = session
            .as_mut()
            .ok_or_else(|| Error::Unavailable("session slot emptied".into()))?;
        let seq = s.next_seq;
        s.next_seq += 1;
        s.in_flight.insert(seq);
        let first_unacked = s.in_flight.first().copied().unwrap_or(seq);
        Ok(SessionRef {
            session: s.id,
            seq,
            first_unacked,
        })
    }

    async fn end_write(&self, group: GroupId, r: SessionRef) {
        if let Some(s) = self.session_slot(group).lock().await.as_mut() {
            if s.id == r.session {
                s.in_flight.remove(&r.seq);
            }
        }
    }

    async fn forget_session(&self, group: GroupId, session: u64) {
        let slot = self.session_slot(group);
        let mut s = slot.lock().await;
        if s.as_ref().is_some_and(|s| s.id == session) {
            *s = None;
        }
    }

    /// The session id this client uses with `group`, if one is open.
    pub async fn session_id(&self, group: GroupId) -> Option<u64> {
        self.session_slot(group).lock().await.as_ref().map(|s| s.id)
    }

    // ----- sending with retries -----

    /// Sends `request` until it succeeds, fails for good, or the deadline passes.
    async fn execute(&self, request: ClientRequest) -> Result<ClientResponse> {
        self.execute_counted(request).await.0
    }

    /// [`execute`](Self::execute), also returning how many times the request was sent.
    async fn execute_counted(&self, request: ClientRequest) -> (Result<ClientResponse>, u32) {
        let mut attempts = 0;
        let result = self.execute_inner(request, &mut attempts).await;
        (result, attempts)
    }

    async fn execute_inner(
        &self,
        request: ClientRequest,
        attempts: &mut u32,
    ) -> Result<ClientResponse> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        let opts = self.shared.options;
        let started = Instant::now();
        let deadline = started + self.timeout();
        let group = request.group();
        let mut backoff = opts.backoff_initial;
        let mut last_err = None;
        loop {
            let target = self.target(group)?;
            *attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let call = self
                .shared
                .transport
                .call(target, request.clone(), self.pinned.is_some());
            // One attempt may not take the whole deadline: a node cut off from its group (an
            // isolated old leader) would hold the request until then. Retrying elsewhere is safe:
            // writes keep their session sequence number.
            let attempt = remaining.min(opts.attempt_timeout);
            let outcome = match tokio::time::timeout(attempt, call).await {
                Ok(r) => r,
                Err(_) if attempt < remaining => {
                    if let Some(g) = group {
                        self.suspect(g, target);
                    }
                    Err(Error::Unavailable(format!(
                        "node {target} did not answer within {:?}",
                        opts.attempt_timeout
                    )))
                }
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("request to node {target} (last error: {last_err:?})"),
                        waited_ms: started.elapsed().as_millis() as u64,
                    })
                }
            };
            match (outcome, group) {
                (Ok(resp), _) => {
                    if let (None, Some(g)) = (self.pinned, group) {
                        self.set_hint(g, Some(target));
                    }
                    return Ok(resp);
                }
                (Err(Error::NotLeader { leader, .. }), Some(g)) if self.pinned.is_none() => {
                    // A hint naming a node that just failed to answer for this group is the old
                    // leader cut off from its group: followers on its side still name it.
                    let leader = leader.filter(|l| !self.is_suspect(g, *l));
                    // A leader this client cannot address yet (it joined after the client's
                    // map): a fresh map from the node that named it carries its address.
                    if leader.is_some_and(|l| !self.shared.transport.nodes().contains(&l)) {
                        self.refresh_map_from(target).await;
                    }
                    let immediate = leader.is_some() && leader != Some(target);
                    self.set_hint(g, leader);
                    if leader.is_none() {
                        self.shared.rotate.fetch_add(1, Ordering::Relaxed);
                    }
                    last_err = Some(Error::NotLeader {
                        group: g,
                        node: target,
                        leader,
                    });
                    if immediate {
                        continue;
                    }
                }
                // The key belongs to another group: nothing was applied anywhere (ownership is
                // checked before proposing, and at apply after the exactly-once lookup: a write
                // applied before a split answers its retries with its first result), so the
                // caller may re-route under a new sequence.
                (Err(e @ Error::WrongShard { .. }), _) => return Err(e),
                // The replica moved: retry the same request (same sequence number, so it stays
                // exactly-once) at another replica, with a fresh map.
                (Err(e @ Error::GroupNotHosted { .. }), _) => {
                    if self.pinned.is_none() {
                        if let Some(g) = group {
                            self.set_hint(g, None);
                        }
                        self.shared.rotate.fetch_add(1, Ordering::Relaxed);
                        self.refresh_map_from(target).await;
                    }
                    last_err = Some(e);
                }
                // The node left the cluster (a stale hint or map named it), or another node
                // now answers at its address: nothing was served, so drop the hint, take a
                // fresh map from a node that is still a member, and try another replica.
                (Err(e @ (Error::UnknownNode(_) | Error::WrongNode { .. })), _)
                    if self.pinned.is_none() =>
                {
                    if let Some(g) = group {
                        self.set_hint(g, None);
                    }
                    self.shared.rotate.fetch_add(1, Ordering::Relaxed);
                    if let Ok(other) = self.target(None) {
                        self.refresh_map_from(other).await;
                    }
                    last_err = Some(e);
                }
                // The group stopped on that node (a storage failure); the node restarts it by
                // itself. Whether the request was applied is unknown, so it is retried like a
                // lost reply: same sequence number, another replica first.
                (Err(e), _) if e.is_retryable() || matches!(e, Error::Fatal { .. }) => {
                    if self.pinned.is_none() {
                        if let Some(g) = group {
                            self.set_hint(g, None);
                        }
                        self.shared.rotate.fetch_add(1, Ordering::Relaxed);
                    }
                    last_err = Some(e);
                }
                (Err(e), _) => return Err(e),
            }
            if Instant::now() + backoff >= deadline {
                return Err(Error::Timeout {
                    what: format!("retrying (last error: {last_err:?})"),
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(opts.backoff_max);
        }
    }

    /// Best effort: takes a newer map from `node` (used while retrying, without recursion).
    async fn refresh_map_from(&self, node: NodeId) {
        let Ok(ClientResponse::ShardMap(map)) = self
            .shared
            .transport
            .call(node, ClientRequest::GetShardMap, false)
            .await
        else {
            return;
        };
        if let Ok(mut m) = self.shared.map.write() {
            if m.as_ref().is_none_or(|old| old.epoch < map.epoch) {
                *m = Some(Arc::new(map));
                self.shared.map_refreshes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Where to send a request for `group`: the pinned node, the leader hint, else one of the
    /// group's replicas (or any node), rotating after failures.
    fn target(&self, group: Option<GroupId>) -> Result<NodeId> {
        if let Some(n) = self.pinned {
            return Ok(n);
        }
        let rotate = self.shared.rotate.load(Ordering::Relaxed);
        // Only nodes the transport still knows: a hint or a cached map may name one that left.
        let nodes = self.shared.transport.nodes();
        if let Some(g) = group {
            let hint = self
                .shared
                .leader_hints
                .lock()
                .ok()
                .and_then(|h| h.get(&g).copied());
            let suspects = self.suspects_of(g);
            if let Some(n) = hint.filter(|n| nodes.contains(n) && !suspects.contains(n)) {
                return Ok(n);
            }
            let map = self.shared.map.read().ok().and_then(|m| m.clone());
            if let Some(replicas) = map.as_ref().and_then(|m| m.shard(g)).map(|s| {
                s.replicas
                    .iter()
                    .copied()
                    .filter(|n| nodes.contains(n))
                    .collect::<Vec<_>>()
            }) {
                // Replicas that answered lately first; all of them if none did.
                let answering: Vec<NodeId> = replicas
                    .iter()
                    .copied()
                    .filter(|n| !suspects.contains(n))
                    .collect();
                let choice = if answering.is_empty() {
                    replicas
                } else {
                    answering
                };
                if !choice.is_empty() {
                    return Ok(choice[rotate % choice.len()]);
                }
            }
        }
        if nodes.is_empty() {
            return Err(Error::Unavailable("no nodes known".into()));
        }
        Ok(nodes[rotate % nodes.len()])
    }

    /// Marks `node` as not answering for `group`, for two attempt timeouts.
    fn suspect(&self, group: GroupId, node: NodeId) {
        let until = Instant::now() + self.shared.options.attempt_timeout * 2;
        if let Ok(mut s) = self.shared.suspects.lock() {
            s.retain(|_, t| *t > Instant::now());
            s.insert((group, node), until);
        }
    }

    fn is_suspect(&self, group: GroupId, node: NodeId) -> bool {
        self.suspects_of(group).contains(&node)
    }

    /// Nodes suspect for `group` now (one lock; no allocation while there are none).
    fn suspects_of(&self, group: GroupId) -> Vec<NodeId> {
        let Ok(s) = self.shared.suspects.lock() else {
            return Vec::new();
        };
        if s.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        s.iter()
            .filter(|((g, _), until)| *g == group && **until > now)
            .map(|((_, n), _)| *n)
            .collect()
    }

    fn set_hint(&self, group: GroupId, leader: Option<NodeId>) {
        if let Ok(mut h) = self.shared.leader_hints.lock() {
            match leader {
                Some(l) => h.insert(group, l),
                None => h.remove(&group),
            };
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn unexpected(resp: ClientResponse) -> Error {
    Error::Unavailable(format!("unexpected response {resp:?}"))
}

fn unexpected_result(r: CommandResult) -> Error {
    Error::Unavailable(format!("unexpected result {r:?}"))
}

#[cfg(test)]
mod tests {
    use super::{prefix_successor, ClientOptions};
    use std::time::Duration;

    #[test]
    fn a_connected_client_dials_within_its_call_timeout_unless_told_and_attempts_stay_within_it() {
        let s = Duration::from_secs;
        let defaults = ClientOptions::for_connect(s(10), None, None);
        assert_eq!(
            (
                defaults.timeout,
                defaults.connect_timeout,
                defaults.attempt_timeout
            ),
            (s(10), s(10), s(2))
        );
        let short = ClientOptions::for_connect(Duration::from_millis(500), None, None);
        assert_eq!(short.connect_timeout, Duration::from_millis(500));
        assert_eq!(short.attempt_timeout, Duration::from_millis(500));
        let given = ClientOptions::for_connect(s(60), Some(s(1)), Some(s(3)));
        assert_eq!(
            (given.timeout, given.connect_timeout, given.attempt_timeout),
            (s(60), s(1), s(3))
        );
    }

    #[test]
    fn a_back_off_is_changed_only_where_given_and_a_zero_or_inverted_one_is_refused() {
        let ms = Duration::from_millis;
        let defaults = ClientOptions::default();
        let slower = defaults
            .with_backoff(Some(ms(50)), Some(ms(2000)))
            .expect("valid");
        assert_eq!(
            (slower.backoff_initial, slower.backoff_max),
            (ms(50), ms(2000))
        );
        let capped = defaults.with_backoff(None, Some(ms(100))).expect("valid");
        assert_eq!(
            (capped.backoff_initial, capped.backoff_max),
            (defaults.backoff_initial, ms(100))
        );
        assert!(defaults.with_backoff(Some(ms(0)), None).is_err());
        assert!(defaults.with_backoff(Some(ms(300)), Some(ms(100))).is_err());
        assert!(defaults.with_backoff(None, Some(ms(1))).is_err());
    }

    #[test]
    fn prefix_successor_bounds_every_key_with_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
