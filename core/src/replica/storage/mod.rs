//! One RocksDB per node holding, for every group the node hosts, the Raft log, the Raft metadata
//! and the state machine (see [`keys`] for the layout).

pub mod identity;
pub mod keys;
mod log_store;
pub(crate) mod snapshot;
pub(crate) mod split;
mod state_machine;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use log_store::LogStore;
pub use snapshot::SnapshotFile;
pub use state_machine::StateMachine;
pub use writer::{lose_unsynced_writes, SyncedWal};

use crate::config::StorageOptions;
use crate::error::{Error, Result};
use crate::types::GroupId;
use identity::Identity;
pub(crate) use writer::WriterFaults;
use writer::{Done, Op, Request, Writer};

/// A user key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One stored key: (column family, key, value).
pub type StoredKey = (String, Vec<u8>, Vec<u8>);

/// Counters a benchmark or test reads to see what the storage did.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// WAL fsyncs issued for log appends (one may cover appends of many groups).
    pub log_syncs: AtomicU64,
    /// Log append calls acknowledged to Raft.
    pub log_appends: AtomicU64,
    /// RocksDB writes of the log writer: one per round, carrying every group's queued log
    /// changes (appends / writes is the batching across groups).
    pub log_writes: AtomicU64,
    /// Flushes of the state machines' memtable (applies are written without the WAL, and are
    /// on disk once flushed).
    pub applied_flushes: AtomicU64,
    /// Entries applied to state machines.
    pub entries_applied: AtomicU64,
    /// Retried writes answered from the session table instead of being applied again.
    pub duplicates_suppressed: AtomicU64,
    /// Sessions removed because they were idle past the TTL.
    pub sessions_expired: AtomicU64,
    /// Splits applied by this node's replicas (each replica of a shard applies its splits).
    pub splits_applied: AtomicU64,
    /// How long the applies that carried those splits took, in µs, in all: the parent's stall
    /// (keys moved, the child built, the batch flushed and synced).
    pub split_stall_us: AtomicU64,
    /// Snapshots built from the local state machine.
    pub snapshots_built: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: AtomicU64,
    /// Installs cut short by a crash and finished when their group next started.
    pub snapshot_installs_redone: AtomicU64,
    /// Snapshots sent to other nodes (transfers completed) and their bytes.
    pub snapshots_sent: AtomicU64,
    pub snapshot_bytes_sent: AtomicU64,
    /// Snapshot bytes received from other nodes (chunks stored).
    pub snapshot_bytes_received: AtomicU64,
    /// Vote and pre-vote requests sent (one per peer asked): each round is an election this
    /// node started, or considered starting, because it heard from no leader in time.
    pub vote_requests_sent: AtomicU64,
    pub pre_vote_requests_sent: AtomicU64,
    /// How long each WAL fsync took.
    pub fsync_latency: LatencyHistogram,
    /// Writes and WAL syncs that failed (a full disk, say): each one left the store failing.
    pub write_failures: AtomicU64,
    /// Times the store was reopened after failing, once its disk had space again.
    pub reopens: AtomicU64,
}

/// The first write error of a store, once it has failed: RocksDB then refuses every write until
/// it is reopened (see [`NodeStore::failure`]).
pub(crate) type Failure = Arc<Mutex<Option<String>>>;

pub(crate) fn record_failure(failure: &Failure, stats: &StorageStats, error: &str) {
    count(&stats.write_failures, 1);
    if let Ok(mut f) = failure.lock() {
        if f.is_none() {
            tracing::error!(%error, "storage write failed; the node stops serving until it reopens");
            *f = Some(error.to_string());
        }
    }
}

/// Bytes a node must be able to write and sync in its data dir before it reopens a failed
/// store: room for the WAL and a memtable flush to make progress.
pub const SPACE_PROBE_BYTES: usize = 4 << 20;

/// Upper bounds of [`LatencyHistogram`]'s buckets, in microseconds (a last bucket takes the
/// rest).
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Latencies counted in fixed buckets with atomics (lock-free to record, cheap to read), for
/// whatever exports metrics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

impl LatencyHistogram {
    pub fn record(&self, took: std::time::Duration) {
        let micros = took.as_micros() as u64;
        let bucket = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(LATENCY_BUCKETS_MICROS.len());
        count(&self.counts[bucket], 1);
        count(&self.sum_micros, micros);
    }

    /// Count per bucket (the last one unbounded) and the sum of all latencies in microseconds.
    pub fn read(&self) -> (Vec<u64>, u64) {
        (
            self.counts
                .iter()
                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                .collect(),
            self.sum_micros.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// The process whose RocksDB background threads this process has: RocksDB keeps one set per
/// process (its default Env), started by the first store opened. A forked child inherits the
/// bookkeeping of that set but none of its threads, so no flush ever runs there.
static ROCKSDB_THREADS_OF: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether this process is a forked child of one that had opened a store (see
/// [`ROCKSDB_THREADS_OF`]).
fn forked_after_rocksdb() -> bool {
    let me = std::process::id();
    match ROCKSDB_THREADS_OF.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => false,
        Err(owner) => owner != me,
    }
}

/// The per-node store: one RocksDB shared by all groups, one log writer.
pub struct NodeStore {
    db: Arc<DB>,
    dir: PathBuf,
    writer: Writer,
    stats: Arc<StorageStats>,
    failure: Failure,
    /// Per group, how many times a snapshot install began or ended: odd while one runs (its
    /// state machine range is deleted, then filled). Reads check it around their RocksDB
    /// snapshot and never answer from a partial state.
    installs: Mutex<BTreeMap<GroupId, u64>>,
    /// Set by a simulated crash: nothing more reaches the files (see [`freeze_for_crash`]).
    ///
    /// [`freeze_for_crash`]: NodeStore::freeze_for_crash
    frozen: Arc<AtomicBool>,
    /// Held (shared) by a flush of the applies while it runs, and (alone) by a crash simulation
    /// while it copies the files: a copy never sees a flush half done.
    files: Arc<std::sync::RwLock<()>>,
    /// Applies are written without the WAL (see [`write_unlogged`](Self::write_unlogged)).
    /// Off in a forked child of a process that had opened a store: there RocksDB has no
    /// background thread to flush them, and a close would wait for one forever.
    unlogged_applies: bool,
    /// The node this store belongs to (named in `WrongShard` answers).
    node: crate::types::NodeId,
    /// Children this node built by applying splits, with their parents, not yet started by
    /// the node (see [`take_born`](Self::take_born)).
    born: Mutex<Vec<(GroupId, GroupId)>>,
    /// Set once this store is dropped and its RocksDB closed (the last field: fields drop in
    /// order, `db` first). A weak count at zero is not enough: the destructor may still run.
    closed: ClosedOnDrop,
}

/// Sets its flag when dropped.
struct ClosedOnDrop(Arc<AtomicBool>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// One running instance of a group's state machine, shared by every clone of it (openraft's
/// apply worker, snapshot builds and installs). Stopping the group marks it stopped, so queued
/// applies write nothing more, then waits until no clone is left before the group's data is
/// deleted or the group is started again: an old instance never writes into a new one's state.
pub struct GroupInstance {
    stopped: AtomicBool,
    node: crate::types::NodeId,
    failpoints: Arc<crate::replica::failpoints::Failpoints>,
}

impl GroupInstance {
    pub(crate) fn new(
        node: crate::types::NodeId,
        failpoints: Arc<crate::replica::failpoints::Failpoints>,
    ) -> Arc<Self> {
        Arc::new(GroupInstance {
            stopped: AtomicBool::new(false),
            node,
            failpoints,
        })
    }

    /// From now on the instance writes nothing.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn apply_delay(&self) -> Option<std::time::Duration> {
        self.failpoints.apply_delay(self.node)
    }
}

/// The retryable refusal of a read while a snapshot install of `group` runs.
fn installing(group: GroupId) -> Error {
    Error::Unavailable(format!(
        "group {group} is installing a snapshot on this node"
    ))
}

/// Marks a snapshot install of one group as running until dropped (see [`NodeStore::reads`]).
pub(crate) struct InstallGuard {
    store: Arc<NodeStore>,
    group: GroupId,
}

impl Drop for InstallGuard {
    fn drop(&mut self) {
        self.store.bump_installs(self.group);
    }
}

impl NodeStore {
    /// Opens (or creates) the node's store in `dir`, refusing a dir of another identity.
    pub fn open(dir: &Path, identity: &Identity, options: StorageOptions) -> Result<Arc<Self>> {
        Self::open_with_stats(dir, identity, options, Arc::new(StorageStats::default()))
    }

    /// [`open`](Self::open), counting into `stats` (a reopened store keeps its counters).
    pub fn open_with_stats(
        dir: &Path,
        identity: &Identity,
        options: StorageOptions,
        stats: Arc<StorageStats>,
    ) -> Result<Arc<Self>> {
        Self::open_for_node(dir, identity, options, stats, WriterFaults::default())
    }

    /// [`open_with_stats`](Self::open_with_stats) for a node whose log writer takes `faults`.
    pub(crate) fn open_for_node(
        dir: &Path,
        identity: &Identity,
        options: StorageOptions,
        stats: Arc<StorageStats>,
        faults: WriterFaults,
    ) -> Result<Arc<Self>> {
        identity.claim(dir)?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // The WAL is written to its file by the log writer, once per round, instead of by
        // every write: one write(2) for many groups' appends and applies. What was not synced
        // could be lost in a crash either way. In the crash-simulation mode every write still
        // goes to the file at once, so the synced WAL lengths the simulation cuts back to keep
        // their meaning.
        db_opts.set_manual_wal_flush(!options.lose_unsynced_on_crash);
        let cfs = keys::ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let unlogged_applies = !forked_after_rocksdb();
        if !unlogged_applies {
            tracing::warn!(
                "a forked child of a process that used RocksDB: this store writes its applies \
                 through the WAL (RocksDB's background threads stayed in the parent)"
            );
        }
        let db = DB::open_cf_descriptors(&db_opts, dir.join("db"), cfs)?;
        let db = Arc::new(db);
        let failure = Failure::default();
        let frozen = Arc::new(AtomicBool::new(false));
        let writer = Writer::spawn(
            db.clone(),
            dir.join("db"),
            writer::SyncMode {
                fsync: options.sync,
                track_synced: options.lose_unsynced_on_crash,
            },
            stats.clone(),
            failure.clone(),
            frozen.clone(),
            faults,
        )?;
        std::fs::create_dir_all(dir.join("snapshots"))?;
        Ok(Arc::new(NodeStore {
            db,
            dir: dir.to_path_buf(),
            writer,
            stats,
            failure,
            installs: Mutex::new(BTreeMap::new()),
            frozen,
            files: Arc::default(),
            unlogged_applies,
            node: identity.node_id,
            born: Mutex::new(Vec::new()),
            closed: ClosedOnDrop(Arc::default()),
        }))
    }

    /// A simulated process crash: from now on no write, WAL flush or sync of this store reaches
    /// its files, RocksDB's background work stops, and the data dir's RocksDB files are copied
    /// to `into` as they are: what a killed process leaves (the WAL buffer never written is
    /// lost). The caller puts the copy in place of the live files once the store is closed.
    pub fn freeze_for_crash(&self, into: &Path) -> Result<()> {
        self.frozen.store(true, Ordering::SeqCst);
        // A flush, round or write already past its check finishes before the copy starts.
        let _files = self.files.write().unwrap_or_else(|e| e.into_inner());
        self.writer.drain();
        // Flushes and compactions under way finish (no write starts new ones now), so the
        // files copied are one consistent state; memtables are not flushed: what they hold
        // only (applies are written without the WAL) dies with the process. Stopping RocksDB
        // first would flush them (it does, when a store has writes without the WAL).
        for cf in keys::ALL_CFS {
            self.db
                .set_options_cf(self.cf(cf), &[("disable_auto_compactions", "true")])?;
        }
        let mut settle = rocksdb::WaitForCompactOptions::default();
        settle.set_flush(false);
        settle.set_timeout(30_000_000);
        self.db.wait_for_compact(&settle)?;
        std::fs::create_dir_all(into)?;
        for entry in std::fs::read_dir(self.dir.join("db"))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                match std::fs::copy(entry.path(), into.join(entry.file_name())) {
                    // Deleted since listed: obsolete, as RocksDB deletes only such files.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        self.db.cancel_all_background_work(true);
        Ok(())
    }

    fn check_not_frozen(&self) -> std::io::Result<()> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err(io_err(
                "the node crashed (simulated): nothing more is written",
            ));
        }
        Ok(())
    }

    fn bump_installs(&self, group: GroupId) {
        if let Ok(mut installs) = self.installs.lock() {
            *installs.entry(group).or_insert(0) += 1;
        }
    }

    fn install_generation(&self, group: GroupId) -> u64 {
        self.installs
            .lock()
            .map(|i| i.get(&group).copied().unwrap_or(0))
            .unwrap_or(1)
    }

    /// Marks a snapshot install of `group` as running until the guard is dropped: reads of the
    /// group fail with a retryable error meanwhile.
    pub(crate) fn begin_installing(self: &Arc<Self>, group: GroupId) -> InstallGuard {
        self.bump_installs(group);
        InstallGuard {
            store: self.clone(),
            group,
        }
    }

    /// Runs `read` unless a snapshot install of `group` runs, and keeps its result only if no
    /// install began meanwhile: refused retryably otherwise, never answered from a state
    /// half deleted or half ingested.
    fn outside_installs<T>(&self, group: GroupId, read: impl FnOnce() -> Result<T>) -> Result<T> {
        let before = self.install_generation(group);
        if !before.is_multiple_of(2) {
            return Err(installing(group));
        }
        let value = read()?;
        if self.install_generation(group) != before {
            return Err(installing(group));
        }
        Ok(value)
    }

    /// Runs `read` against one RocksDB snapshot, so every key it reads comes from the same
    /// point in the apply order (a batch write of the group is seen whole or not at all), and
    /// outside snapshot installs of the group.
    fn reads<T>(
        &self,
        group: GroupId,
        read: impl FnOnce(&rocksdb::SnapshotWithThreadMode<'_, DB>) -> Result<T>,
    ) -> Result<T> {
        self.outside_installs(group, || read(&self.db.snapshot()))
    }

    /// The error that made this store stop persisting (a full disk, say), if one did. A failed
    /// RocksDB refuses every later write, so the store stays failed: the node stops its groups
    /// and reopens the store once [`probe_space`] passes.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> &Arc<StorageStats> {
        &self.stats
    }

    /// The log store of `group` in this node's RocksDB.
    pub fn log_store(self: &Arc<Self>, group: GroupId) -> LogStore {
        LogStore::new(group, self.clone())
    }

    /// The state machine of `group` in this node's RocksDB, with a log store of its own (see
    /// [`group_storage`](Self::group_storage) for the pair a Raft instance needs).
    pub fn state_machine(
        self: &Arc<Self>,
        group: GroupId,
        session_ttl_ms: u64,
    ) -> Result<StateMachine> {
        Ok(self.group_storage(group, session_ttl_ms)?.1)
    }

    /// The log store and state machine of `group`, sharing the log's cache: an apply waits
    /// until the log writes of the entries it applies are in RocksDB.
    pub fn group_storage(
        self: &Arc<Self>,
        group: GroupId,
        session_ttl_ms: u64,
    ) -> Result<(LogStore, StateMachine)> {
        let instance = GroupInstance::new(0, Default::default());
        let log = self.log_store(group);
        let sm = StateMachine::new(group, self.clone(), session_ttl_ms, instance, log.clone())?;
        Ok((log, sm))
    }

    /// [`state_machine`](Self::state_machine) as one running `instance` of the group, over
    /// `log`, the log store the group's Raft instance uses.
    pub(crate) fn state_machine_of(
        self: &Arc<Self>,
        group: GroupId,
        session_ttl_ms: u64,
        instance: Arc<GroupInstance>,
        log: LogStore,
    ) -> Result<StateMachine> {
        StateMachine::new(group, self.clone(), session_ttl_ms, instance, log)
    }

    /// Reads a user key of `group` from the local state machine, whatever this replica's role.
    /// A key the group's descriptor does not cover (it went to a shard split off) is refused
    /// with `WrongShard`, judged in the same RocksDB snapshot as the read.
    pub fn get(&self, group: GroupId, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.reads(group, |snapshot| {
            self.check_covered(group, snapshot, [key])?;
            Ok(snapshot.get_cf(self.cf(keys::CF_SM), keys::data_key(group, key))?)
        })
    }

    /// Reads many user keys of `group` from one RocksDB snapshot, in the order given.
    pub fn get_many(&self, group: GroupId, user_keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.reads(group, |snapshot| {
            self.check_covered(group, snapshot, user_keys.iter().map(Vec::as_slice))?;
            let cf = self.cf(keys::CF_SM);
            snapshot
                .multi_get_cf(user_keys.iter().map(|k| (cf, keys::data_key(group, k))))
                .into_iter()
                .map(|r| r.map_err(Error::from))
                .collect()
        })
    }

    /// The descriptor of `group` as of `snapshot` (`None`: never split).
    fn descriptor_in(
        &self,
        group: GroupId,
        snapshot: &rocksdb::SnapshotWithThreadMode<'_, DB>,
    ) -> Result<Option<crate::sharding::ShardDescriptor>> {
        match snapshot.get_cf(self.cf(keys::CF_SM), split::descriptor_key(group))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(postcard::from_bytes(&bytes).map_err(Error::storage)?)),
        }
    }

    /// Refuses (`WrongShard`) a key that `group`'s descriptor in `snapshot` does not cover.
    fn check_covered<'k>(
        &self,
        group: GroupId,
        snapshot: &rocksdb::SnapshotWithThreadMode<'_, DB>,
        user_keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<()> {
        if let Some(d) = self.descriptor_in(group, snapshot)? {
            if !user_keys.into_iter().all(|k| d.covers_key(k)) {
                return Err(Error::WrongShard {
                    group,
                    node: self.node,
                });
            }
        }
        Ok(())
    }

    /// The version of `group`'s range descriptor on this node (0: never split).
    pub fn shard_version(&self, group: GroupId) -> Result<u64> {
        Ok(split::read_descriptor(self, group)?.map_or(0, |d| d.version))
    }

    /// Records children built by a split of `parent` (see [`take_born`](Self::take_born)).
    fn note_born(&self, parent: GroupId, children: &[GroupId]) {
        if let Ok(mut born) = self.born.lock() {
            born.extend(children.iter().map(|c| (parent, *c)));
        }
    }

    /// Children built by applying splits since the last call, with their parents: the node
    /// starts them (they are on disk, so a restart would start them too).
    pub fn take_born(&self) -> Vec<(GroupId, GroupId)> {
        self.born
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }

    /// Up to `limit` user pairs of `group` with `start <= key < end`, in key order, and whether
    /// more remain. With `version`, only while the group's descriptor is at that version (the
    /// one the caller's map names): otherwise `WrongShard`, since the caller would miss keys a
    /// split moved, or get keys twice.
    pub fn scan(
        &self,
        group: GroupId,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, bool)> {
        self.scan_at(group, None, start, end, limit)
    }

    /// [`scan`](Self::scan) of the descriptor at `version` (see there).
    pub fn scan_at(
        &self,
        group: GroupId,
        version: Option<u64>,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<KeyValue>, bool)> {
        let upper = match end {
            Some(e) => keys::data_key(group, e),
            None => keys::data_range(group).1,
        };
        self.reads(group, |snapshot| {
            if let Some(wanted) = version {
                let found = self
                    .descriptor_in(group, snapshot)?
                    .map_or(0, |d| d.version);
                if found != wanted {
                    return Err(Error::WrongShard {
                        group,
                        node: self.node,
                    });
                }
            }
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_upper_bound(upper);
            ro.set_snapshot(snapshot);
            let from = keys::data_key(group, start);
            let mode = rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward);
            let mut items = Vec::new();
            for kv in self.db.iterator_cf_opt(self.cf(keys::CF_SM), ro, mode) {
                let (k, v) = kv?;
                if items.len() == limit {
                    return Ok((items, true));
                }
                items.push((keys::user_key_of(&k).to_vec(), v.to_vec()));
            }
            Ok((items, false))
        })
    }

    /// Iterates `cf` over `[start, end)`.
    fn range(
        &self,
        cf: &str,
        start: &[u8],
        end: Vec<u8>,
    ) -> rocksdb::DBIteratorWithThreadMode<'_, DB> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_upper_bound(end);
        self.db.iterator_cf_opt(
            self.cf(cf),
            ro,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        )
    }

    /// Approximate bytes of user data `group` holds on this node: RocksDB's estimate from its
    /// SST files, or, while the data is still all in memtables (small groups), an exact count.
    pub fn approximate_size(&self, group: GroupId) -> Result<u64> {
        let (start, end) = keys::data_range(group);
        let cf = self.cf(keys::CF_SM);
        let on_disk = self
            .db
            .get_approximate_sizes_cf(cf, &[rocksdb::Range::new(&start, &end)])
            .first()
            .copied()
            .unwrap_or(0);
        if on_disk > 0 {
            return Ok(on_disk);
        }
        let (items, _) = self.scan(group, b"", None, 100_000)?;
        Ok(items.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }

    /// Every user key/value of `group`, in key order (for tests and tools).
    pub fn scan_group(&self, group: GroupId) -> Result<Vec<KeyValue>> {
        Ok(self.scan(group, b"", None, usize::MAX)?.0)
    }

    /// Every key of `group` in every column family, as (column family, key, value): what the
    /// node stores for the group (used to prove groups are isolated and removals reclaim space).
    pub fn dump_group(&self, group: GroupId) -> Result<Vec<StoredKey>> {
        let mut out = Vec::new();
        for cf in keys::ALL_CFS {
            for kv in self.range(cf, &keys::group_prefix(group), keys::group_end(group)) {
                let (k, v) = kv?;
                out.push((cf.to_string(), k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }

    /// Groups with Raft state (a vote or log) on this node: the replicas it holds.
    pub fn groups_with_state(&self) -> Result<Vec<GroupId>> {
        let mut groups = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let mut iter = self.db.iterator_cf(
                self.cf(keys::CF_RAFT),
                rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
            );
            let Some(kv) = iter.next() else { break };
            let (k, _) = kv?;
            let Some(bytes) = k.get(..8) else { break };
            let group = u64::from_be_bytes(bytes.try_into().map_err(Error::storage)?);
            groups.push(group);
            if group == u64::MAX {
                break;
            }
            from = keys::group_end(group);
        }
        Ok(groups)
    }

    /// Deletes everything `group` has on this node (log, Raft state, state machine, snapshots),
    /// durably. The group must be stopped first.
    pub async fn delete_group(&self, group: GroupId) -> Result<()> {
        // Through the log writer: behind any write of the group still queued there.
        let ops = keys::ALL_CFS
            .iter()
            .map(|cf| Op::DeleteRange {
                cf,
                from: keys::group_prefix(group).to_vec(),
                to: keys::group_end(group),
            })
            .collect();
        self.write_durable(ops).await?;
        // Compaction and directory removal block for a while: not on an async worker thread.
        let (db, files, frozen) = (self.db.clone(), self.files.clone(), self.frozen.clone());
        let dir = snapshot::group_dir(&self.dir, group);
        crate::sim::blocking(move || -> std::io::Result<()> {
            let _files = files.read().unwrap_or_else(|e| e.into_inner());
            if frozen.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (start, end) = (keys::group_prefix(group).to_vec(), keys::group_end(group));
            for cf in keys::ALL_CFS {
                if let Some(handle) = db.cf_handle(cf) {
                    db.compact_range_cf(handle, Some(start.as_slice()), Some(end.as_slice()));
                }
            }
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Storage(format!("group deletion task: {e}")))??;
        Ok(())
    }

    /// Number of live client sessions `group` keeps on this node.
    /// The group's log clock as this replica has applied it (milliseconds of log time).
    pub fn log_clock(&self, group: GroupId) -> Result<u64> {
        let key = keys::replicated_meta_key(group, keys::SM_CLOCK);
        Ok(self.get_value::<u64>(keys::CF_SM, &key)?.unwrap_or(0))
    }

    pub fn session_count(&self, group: GroupId) -> Result<usize> {
        let (start, end) = keys::sessions_range(group);
        let mut n = 0;
        for kv in self.range(keys::CF_SM, &start, end) {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // Every column family in ALL_CFS is created at open, so this cannot fail.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} missing"))
    }

    fn get_value<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> std::io::Result<Option<T>> {
        match self.db.get_pinned_cf(self.cf(cf), key).map_err(io_err)? {
            None => Ok(None),
            Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(io_err),
        }
    }

    /// Writes `batch` at once, outside the log writer's queue (visible at once, durable at the
    /// next sync): for state machine writes outside `apply` (install marker and data, snapshot
    /// record), which no queued write of the log touches.
    fn write(&self, batch: WriteBatch) -> std::io::Result<()> {
        // Not while the writer takes the WAL's synced length (a record half written then would
        // be cut in half by the crash simulation), nor once a crash simulation has drained.
        let _wal = self.writer.hold();
        self.check_not_frozen()?;
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|e| {
                record_failure(&self.failure, &self.stats, e.as_ref());
                io_err(e)
            })
    }

    /// Writes `batch` of applied changes at once without the WAL: they are in RocksDB's
    /// memtable only, until [`flush_applied`](Self::flush_applied) (or RocksDB's own flush, or a
    /// clean close) writes them to disk. A crash before that loses them, and the applied index
    /// written in the same batch with them: the group applies those entries again from its log
    /// at its next start. The log is purged only behind a snapshot, which becomes current only
    /// once its index is flushed, so the entries to apply again are always there.
    fn write_unlogged(&self, batch: WriteBatch) -> std::io::Result<()> {
        if !self.unlogged_applies {
            return self.write(batch);
        }
        self.check_not_frozen()?;
        let mut options = WriteOptions::default();
        options.disable_wal(true);
        self.db.write_opt(batch, &options).map_err(|e| {
            record_failure(&self.failure, &self.stats, e.as_ref());
            io_err(e)
        })
    }

    /// Keeps a crash simulation from copying the files while held: for RocksDB calls that
    /// make or drop files (flush, ingest, manual compaction). Check the store is not frozen
    /// after taking it.
    fn files_stay(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.files.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes every group's applied changes to disk (one flush of the state machine's column
    /// family serves them all) and returns once they are there. Blocks: call on a blocking
    /// thread.
    ///
    /// Everything queued to the log writer before is written first: an applied index must
    /// never reach disk ahead of the log entries it names (applies wait for their own entries;
    /// this keeps the order for any write queued before the flush, too).
    fn flush_applied(&self) -> std::io::Result<()> {
        if !self.unlogged_applies {
            // Applies went through the WAL: the next sync makes them durable.
            return Ok(());
        }
        self.written_blocking()?;
        let _files = self.files_stay();
        self.check_not_frozen()?;
        let mut options = rocksdb::FlushOptions::default();
        options.set_wait(true);
        count(&self.stats.applied_flushes, 1);
        self.db
            .flush_cf_opt(self.cf(keys::CF_SM), &options)
            .map_err(|e| {
                record_failure(&self.failure, &self.stats, e.as_ref());
                io_err(e)
            })
    }

    /// Queues `request` to the log writer, behind everything queued before it. A writer that
    /// has stopped gives the request back: the caller fails it once it holds no lock that the
    /// request's callbacks take.
    pub(crate) fn submit(&self, request: Request) -> std::result::Result<(), Request> {
        self.writer.submit(request)
    }

    /// Queues `ops` to the log writer and returns once they are on disk (unless sync is
    /// switched off).
    async fn write_durable(&self, ops: Vec<Op>) -> std::io::Result<()> {
        self.check_not_frozen()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(refused) = self.submit(Request::new(ops, Done::Durable(tx))) {
            refused.fail(writer::STOPPED.into());
        }
        rx.await.map_err(io_err)?.map_err(io_err)
    }

    /// Returns once everything queued to the log writer so far is in RocksDB (not necessarily
    /// synced). Blocks: on a thread of the blocking pool it waits for the writer's thread; in a
    /// deterministic run (one thread) it runs a round itself.
    fn written_blocking(&self) -> std::io::Result<()> {
        if let Some(result) = self.writer.round_inline() {
            return result.map_err(std::io::Error::other);
        }
        self.check_not_frozen()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if let Err(refused) = self.submit(Request::new(Vec::new(), Done::Written(tx))) {
            refused.fail(writer::STOPPED.into());
        }
        rx.blocking_recv().map_err(io_err)?.map_err(io_err)
    }

    /// Returns once everything written or queued so far is on disk (with sync switched off:
    /// once it is handed to the OS, so a killed process keeps it).
    pub async fn sync(&self) -> std::io::Result<()> {
        self.write_durable(Vec::new()).await
    }

    /// [`sync`](Self::sync) from blocking code: on a thread of the blocking pool it waits for
    /// the writer's thread; in a deterministic run (one thread) it runs the round itself.
    pub(crate) fn sync_blocking(&self) -> std::io::Result<()> {
        match self.writer.round_inline() {
            Some(result) => result.map_err(std::io::Error::other),
            None => tokio::runtime::Handle::current().block_on(self.sync()),
        }
    }

    /// Becomes true once this store is dropped and its files closed (for crash simulation,
    /// which then replaces them).
    pub fn closed(&self) -> Arc<AtomicBool> {
        self.closed.0.clone()
    }

    /// How much of each WAL file is known to be on disk (for crash simulation).
    pub fn synced_wal(&self) -> SyncedWal {
        self.writer.synced()
    }
}

impl Drop for NodeStore {
    fn drop(&mut self) {
        self.writer.stop();
        // A closing store hands what RocksDB still buffers of its WAL to the OS.
        let _ = self.db.flush_wal(false);
    }
}

/// Whether `dir` has room again: writes and syncs [`SPACE_PROBE_BYTES`] there, then removes it.
pub fn probe_space(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join("space-probe");
    let result = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; SPACE_PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    result
}

pub(crate) fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(io_err)
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        io_err(e)
    }
}

pub(crate) fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

#[cfg(test)]
mod crash_tests {
    use super::*;
    use crate::replica::storage::identity::Identity;

    fn open(dir: &Path) -> Arc<NodeStore> {
        NodeStore::open(dir, &Identity::new("crash", 1), StorageOptions::default())
            .expect("open store")
    }

    fn put(store: &NodeStore, key: &[u8]) {
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(keys::CF_SM), keys::data_key(1, key), b"v");
        store.write(batch).expect("write");
    }

    /// Closes `store` and waits until RocksDB has released its files.
    fn close(store: Arc<NodeStore>) {
        let gone = Arc::downgrade(&store);
        drop(store);
        while gone.strong_count() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn a_process_crash_keeps_what_was_flushed_and_loses_the_wal_buffer() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        put(&store, b"flushed");
        store.sync().await.expect("sync");
        put(&store, b"buffered");
        let kept = dir.path().join("db.at-crash");
        store.freeze_for_crash(&kept).expect("freeze");
        assert!(store.sync().await.is_err(), "a crashed store syncs nothing");
        close(store);
        std::fs::remove_dir_all(dir.path().join("db")).expect("remove");
        std::fs::rename(&kept, dir.path().join("db")).expect("rename");
        let store = open(dir.path());
        assert_eq!(store.get(1, b"flushed").expect("get"), Some(b"v".to_vec()));
        assert_eq!(
            store.get(1, b"buffered").expect("get"),
            None,
            "what the WAL buffer held died with the process"
        );
    }

    /// The control: a plain close writes the buffer out, so a crash simulated by dropping the
    /// store alone would keep writes a killed process loses.
    #[tokio::test]
    async fn a_plain_close_writes_the_wal_buffer_out() {
        let dir = tempfile::tempdir().expect("dir");
        let store = open(dir.path());
        put(&store, b"buffered");
        close(store);
        let store = open(dir.path());
        assert_eq!(store.get(1, b"buffered").expect("get"), Some(b"v".to_vec()));
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;
    use crate::replica::storage::identity::Identity;

    #[test]
    fn reads_of_a_group_installing_a_snapshot_are_refused_retryably_until_it_is_whole() {
        let dir = tempfile::tempdir().expect("dir");
        let store = NodeStore::open(dir.path(), &Identity::new("reads", 1), Default::default())
            .expect("open");
        let mut batch = WriteBatch::default();
        batch.put_cf(store.cf(keys::CF_SM), keys::data_key(1, b"k"), b"v");
        batch.put_cf(store.cf(keys::CF_SM), keys::data_key(2, b"k"), b"w");
        store.write(batch).expect("write");
        let installing = store.begin_installing(1);
        let refused =
            |r: Result<()>| matches!(r, Err(Error::Unavailable(m)) if m.contains("installing"));
        assert!(refused(store.get(1, b"k").map(|_| ())));
        assert!(refused(store.get_many(1, &[b"k".to_vec()]).map(|_| ())));
        assert!(refused(store.scan(1, b"", None, 10).map(|_| ())));
        assert!(Error::Unavailable(String::new()).is_retryable());
        // Other groups read on.
        assert_eq!(store.get(2, b"k").expect("get"), Some(b"w".to_vec()));
        drop(installing);
        assert_eq!(store.get(1, b"k").expect("get"), Some(b"v".to_vec()));
        assert_eq!(
            store
                .get_many(1, &[b"k".to_vec(), b"none".to_vec()])
                .expect("get_many"),
            vec![Some(b"v".to_vec()), None]
        );
    }
}
