//! The state machine of one group: user data lives in RocksDB; a batch of entries and the new
//! last-applied log id are written in one atomic WriteBatch.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use serde::{Deserialize, Serialize};

use super::keys::{self, CF_SM};
use super::snapshot::{self, SnapshotFile, SnapshotRecord, SnapshotWriter};
use super::split;
use super::{count, encode, io_err, GroupInstance, LogStore, NodeStore};
use crate::sharding::ShardDescriptor;
use crate::types::{
    Command, CommandResult, GroupId, LogId, Proposal, ProposalBody, SnapshotMeta, StoredMembership,
    TypeConfig,
};

type SnapshotOf = Snapshot<
    openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>,
    u64,
    openraft::BasicNode,
    SnapshotFile,
>;

/// One group's state machine. Clones share the RocksDB; openraft owns one in its apply worker.
#[derive(Clone)]
pub struct StateMachine {
    group: GroupId,
    store: Arc<NodeStore>,
    snapshot_seq: Arc<AtomicU64>,
    session_ttl_ms: u64,
    /// Log time of the last session sweep (local bookkeeping; not replicated).
    last_sweep_ms: Arc<AtomicU64>,
    /// Where an unfinished session sweep resumes (local bookkeeping; not replicated).
    sweep_cursor: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    /// Held while the current-snapshot record changes: a build finishing during an install must
    /// not make its older snapshot current (nor delete the installed one's file).
    record_lock: Arc<std::sync::Mutex<()>>,
    /// The instance this clone belongs to: once stopped, nothing more is written.
    instance: Arc<GroupInstance>,
    /// The group's log store (the one its Raft instance appends through): an apply waits until
    /// the log writes of its entries are in RocksDB.
    log: LogStore,
}

impl StateMachine {
    pub(crate) fn new(
        group: GroupId,
        store: Arc<NodeStore>,
        session_ttl_ms: u64,
        instance: Arc<GroupInstance>,
        log: LogStore,
    ) -> crate::error::Result<Self> {
        std::fs::create_dir_all(snapshot::group_dir(store.dir(), group))?;
        let installing: Option<SnapshotRecord> =
            store.get_value(CF_SM, &keys::sm_meta_key(group, keys::SM_INSTALLING))?;
        if let Some(record) = installing {
            // A crash cut an install short: do it again from the same (verified) file.
            let path = snapshot::group_dir(store.dir(), group).join(&record.file_name);
            begin_install(&store, group, &record)?;
            finish_install(&store, group, &record, &path, &std::sync::Mutex::new(()))?;
            count(&store.stats.snapshot_installs_redone, 1);
        }
        Ok(StateMachine {
            group,
            store,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            session_ttl_ms,
            last_sweep_ms: Arc::new(AtomicU64::new(0)),
            record_lock: Arc::new(std::sync::Mutex::new(())),
            sweep_cursor: Arc::new(std::sync::Mutex::new(None)),
            instance,
            log,
        })
    }

    /// Refuses to write for an instance that was stopped (its group may be deleted or running
    /// again as a new instance).
    fn check_running(&self) -> io::Result<()> {
        if self.instance.is_stopped() {
            return Err(io_err(format!("group {} was stopped", self.group)));
        }
        Ok(())
    }

    fn read_applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let applied = self
            .store
            .get_value::<Option<LogId>>(CF_SM, &keys::sm_meta_key(self.group, keys::SM_APPLIED))?
            .flatten();
        let membership = self
            .store
            .get_value::<Option<StoredMembership>>(
                CF_SM,
                &keys::sm_meta_key(self.group, keys::SM_MEMBERSHIP),
            )?
            .flatten();
        Ok((applied, membership.unwrap_or_default()))
    }

    fn current_record(&self) -> io::Result<Option<SnapshotRecord>> {
        self.store.get_value(
            CF_SM,
            &keys::sm_meta_key(self.group, keys::SM_SNAPSHOT_META),
        )
    }

    fn snapshot_path(&self, file_name: &str) -> std::path::PathBuf {
        snapshot::group_dir(self.store.dir(), self.group).join(file_name)
    }

    /// Removes this group's finished snapshot files except the current one and the one an
    /// install is working on. Every change to the set of finished files (a build's file
    /// appearing, an install's file moved in, old ones removed) happens under the record lock,
    /// whose guard the caller shows: so a removal never deletes a file that is about to become
    /// current (a build that lost that race left the node unable to send its snapshot: openraft
    /// found no current snapshot and stopped the group). Files still being written (`.partial`,
    /// a received `recv-*`) are left to their writers. Directory I/O: call on a blocking thread.
    ///
    /// The record is made durable first: in a power loss, a record write that had not reached
    /// the disk came back naming a file this had already deleted (found by the snapshot storm).
    fn remove_stale_snapshots(&self, _recording: &std::sync::MutexGuard<'_, ()>) -> io::Result<()> {
        self.store.sync_blocking()?;
        let installing: Option<SnapshotRecord> = self
            .store
            .get_value(CF_SM, &keys::sm_meta_key(self.group, keys::SM_INSTALLING))?;
        let keep: Vec<String> = self
            .current_record()?
            .into_iter()
            .chain(installing)
            .map(|r| r.file_name)
            .collect();
        let dir = snapshot::group_dir(self.store.dir(), self.group);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let finished = name.starts_with("snap-") && name.ends_with(".sss");
                if finished && !keep.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

/// A client session as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SessionState {
    last_active_ms: u64,
    first_unacked: u64,
    /// Results of this session's writes at or above `first_unacked`, by sequence number.
    results: BTreeMap<u64, CommandResult>,
}

/// The state as of the batch being built: pending writes first, then RocksDB.
pub(super) struct BatchView<'a> {
    pub(super) store: &'a NodeStore,
    pub(super) group: GroupId,
    session_ttl_ms: u64,
    /// Log time: the largest leader timestamp applied so far.
    pub(super) clock_ms: u64,
    pub(super) batch: WriteBatch,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
    sessions: HashMap<u64, Option<SessionState>>,
    duplicates: u64,
    expired: u64,
    /// What the shard owns, as of the batch (`None`: never split; see [`split`](super::split)).
    pub(super) descriptor: Option<ShardDescriptor>,
    /// Whether the batch applies a split (it is then written durably), and the children this
    /// node built.
    pub(super) split: bool,
    pub(super) born: Vec<GroupId>,
}

impl BatchView<'_> {
    pub(super) fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        self.store
            .db
            .get_cf(self.store.cf(CF_SM), keys::data_key(self.group, key))
            .map_err(io_err)
    }

    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.batch.put_cf(
            self.store.cf(CF_SM),
            keys::data_key(self.group, key),
            &value,
        );
        self.pending.insert(key.to_vec(), Some(value));
    }

    pub(super) fn delete(&mut self, key: &[u8]) {
        self.batch
            .delete_cf(self.store.cf(CF_SM), keys::data_key(self.group, key));
        self.pending.insert(key.to_vec(), None);
    }

    /// Every key of the group starting with `prefix`, as this batch sees it (stored keys not
    /// deleted earlier in the batch, and keys the batch put).
    pub(super) fn keys_with_prefix(&self, prefix: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let cf = self.store.cf(CF_SM);
        let from = keys::data_key(self.group, prefix);
        let mut found = std::collections::BTreeSet::new();
        for item in self.store.db.iterator_cf(
            cf,
            rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
        ) {
            let (stored, _) = item.map_err(io_err)?;
            if !stored.starts_with(&from) {
                break;
            }
            let key = stored[from.len() - prefix.len()..].to_vec();
            if !matches!(self.pending.get(&key), Some(None)) {
                found.insert(key);
            }
        }
        for (key, value) in &self.pending {
            if value.is_some() && key.starts_with(prefix) {
                found.insert(key.clone());
            }
        }
        Ok(found.into_iter().collect())
    }

    fn session(&self, id: u64) -> io::Result<Option<SessionState>> {
        if let Some(s) = self.sessions.get(&id) {
            return Ok(s.clone());
        }
        decode_opt(
            self.store
                .db
                .get_cf(self.store.cf(CF_SM), keys::session_key(self.group, id))
                .map_err(io_err)?,
        )
    }

    fn put_session(&mut self, id: u64, state: SessionState) -> io::Result<()> {
        self.batch.put_cf(
            self.store.cf(CF_SM),
            keys::session_key(self.group, id),
            encode(&state)?,
        );
        self.sessions.insert(id, Some(state));
        Ok(())
    }

    fn drop_session(&mut self, id: u64) {
        self.batch
            .delete_cf(self.store.cf(CF_SM), keys::session_key(self.group, id));
        self.sessions.insert(id, None);
        self.expired += 1;
    }

    fn is_expired(&self, s: &SessionState) -> bool {
        s.last_active_ms.saturating_add(self.session_ttl_ms) < self.clock_ms
    }

    fn apply_proposal(&mut self, index: u64, proposal: Proposal) -> io::Result<CommandResult> {
        // Log time never goes back, even if a new leader's clock is behind the old one's.
        self.clock_ms = self.clock_ms.max(proposal.time_ms);
        match proposal.body {
            ProposalBody::OpenSession => {
                let state = SessionState {
                    last_active_ms: self.clock_ms,
                    first_unacked: 0,
                    results: BTreeMap::new(),
                };
                self.put_session(index, state)?;
                Ok(CommandResult::SessionOpened { session: index })
            }
            ProposalBody::Split(_) => Err(io_err("a split is applied by apply_split")),
            ProposalBody::Write {
                session: None,
                command,
            } => {
                if !self.owns(&command) {
                    return Ok(CommandResult::WrongShard);
                }
                self.apply_command(command)
            }
            ProposalBody::Write {
                session: Some(r),
                command,
            } => {
                let Some(mut state) = self.session(r.session)? else {
                    return Ok(CommandResult::SessionExpired { session: r.session });
                };
                if self.is_expired(&state) {
                    self.drop_session(r.session);
                    return Ok(CommandResult::SessionExpired { session: r.session });
                }
                let result = if let Some(first) = state.results.get(&r.seq) {
                    self.duplicates += 1;
                    first.clone()
                } else if r.seq < state.first_unacked {
                    CommandResult::Rejected {
                        reason: format!(
                            "sequence {} of session {} was already acknowledged",
                            r.seq, r.session
                        ),
                    }
                } else if !self.owns(&command) {
                    // Not applied, so not recorded: every copy of it is refused alike.
                    CommandResult::WrongShard
                } else {
                    let result = self.apply_command(command)?;
                    state.results.insert(r.seq, result.clone());
                    result
                };
                state.first_unacked = state.first_unacked.max(r.first_unacked);
                let keep_from = state.first_unacked;
                state.results.retain(|seq, _| *seq >= keep_from);
                state.last_active_ms = self.clock_ms;
                self.put_session(r.session, state)?;
                Ok(result)
            }
        }
    }

    fn apply_command(&mut self, command: Command) -> io::Result<CommandResult> {
        Ok(match command {
            Command::Put { key, value } => {
                self.put(&key, value);
                CommandResult::Put
            }
            Command::Delete { key } => {
                let existed = self.get(&key)?.is_some();
                if existed {
                    self.delete(&key);
                }
                CommandResult::Delete { existed }
            }
            Command::Append { key, value } => {
                let mut current = self.get(&key)?.unwrap_or_default();
                current.extend_from_slice(&value);
                let new_len = current.len() as u64;
                self.put(&key, current);
                CommandResult::Append { new_len }
            }
            Command::PutMany { pairs } => {
                let count = pairs.len() as u64;
                for (k, v) in pairs {
                    self.put(&k, v);
                }
                CommandResult::PutMany { count }
            }
            Command::DeletePrefix { prefix } => {
                let doomed = self.keys_with_prefix(&prefix)?;
                for key in &doomed {
                    self.delete(key);
                }
                CommandResult::DeletePrefix {
                    count: doomed.len() as u64,
                }
            }
            Command::Cas { key, expected, new } => {
                let current = self.get(&key)?;
                if current == expected {
                    self.put(&key, new.clone());
                    CommandResult::Cas {
                        success: true,
                        current: Some(new),
                    }
                } else {
                    CommandResult::Cas {
                        success: false,
                        current,
                    }
                }
            }
        })
    }

    /// Deletes sessions idle past the TTL, visiting at most `step` stored sessions from `from`
    /// (the start when `None`); returns where the next step starts, or `None` when the pass is
    /// complete. Whether a session is swept in this batch or a later one changes no answer: an
    /// expired session is refused on access either way.
    fn sweep_sessions(
        &mut self,
        from: Option<Vec<u8>>,
        step: usize,
    ) -> io::Result<Option<Vec<u8>>> {
        let (start, end) = keys::sessions_range(self.group);
        let from = from.unwrap_or(start);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end);
        let mut expired = Vec::new();
        let mut next = None;
        for (visited, kv) in self
            .store
            .db
            .iterator_cf_opt(
                self.store.cf(CF_SM),
                ro,
                IteratorMode::From(&from, Direction::Forward),
            )
            .enumerate()
        {
            let (k, v) = kv.map_err(io_err)?;
            if visited == step {
                next = Some(k.to_vec());
                break;
            }
            let Some(id) = keys::session_id_of(&k) else {
                continue;
            };
            if self.sessions.contains_key(&id) {
                continue;
            }
            let state: SessionState = postcard::from_bytes(&v).map_err(io_err)?;
            if self.is_expired(&state) {
                expired.push(id);
            }
        }
        for (id, state) in &self.sessions {
            if matches!(state, Some(s) if self.is_expired(s)) {
                expired.push(*id);
            }
        }
        for id in expired {
            self.drop_session(id);
        }
        Ok(next)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.read_applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        if let Some(delay) = self.instance.apply_delay() {
            tokio::time::sleep(delay).await;
        }
        let started = std::time::Instant::now();
        crate::sim::pause(crate::sim::Cost::Apply).await;
        let clock_key = keys::replicated_meta_key(self.group, keys::SM_CLOCK);
        let clock_ms = self.store.get_value::<u64>(CF_SM, &clock_key)?.unwrap_or(0);
        let mut view = BatchView {
            store: &self.store,
            group: self.group,
            session_ttl_ms: self.session_ttl_ms,
            clock_ms,
            batch: WriteBatch::default(),
            pending: HashMap::new(),
            sessions: HashMap::new(),
            duplicates: 0,
            expired: 0,
            descriptor: split::read_descriptor(&self.store, self.group)?,
            split: false,
            born: Vec::new(),
        };
        let mut responders = Vec::new();
        let mut last_applied = None;
        let mut membership: Option<StoredMembership> = None;
        let mut n = 0;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::None,
                EntryPayload::Normal(Proposal {
                    time_ms,
                    body: ProposalBody::Split(plan),
                }) => {
                    view.clock_ms = view.clock_ms.max(time_ms);
                    let current = match &membership {
                        Some(m) => m.clone(),
                        None => self.read_applied()?.1,
                    };
                    view.apply_split(log_id, plan, current)?
                }
                EntryPayload::Normal(proposal) => view.apply_proposal(log_id.index(), proposal)?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m));
                    CommandResult::None
                }
            };
            last_applied = Some(log_id);
            n += 1;
            if let Some(r) = responder {
                responders.push((r, result));
            }
        }
        let Some(last_applied) = last_applied else {
            return Ok(());
        };
        // Entries are applied as soon as they are committed and queued here, which may be
        // before this node's log writer has put them in RocksDB (they are read from the
        // cache). The applied index must not reach disk ahead of them: any flush of the
        // memtable (another group's snapshot, a full memtable) could make it durable while a
        // crash takes the entries, and the group would not start again.
        self.log.written_through(&last_applied).await?;
        // Sessions are swept a step per applied batch until a pass is complete, never by one
        // full scan inside an apply.
        let sweep_every = (self.session_ttl_ms / 4).max(1);
        {
            let mut cursor = self.sweep_cursor.lock().map_err(io_err)?;
            let due = view.clock_ms
                >= self
                    .last_sweep_ms
                    .load(Ordering::Relaxed)
                    .saturating_add(sweep_every);
            if cursor.is_some() || due {
                *cursor = view.sweep_sessions(cursor.take(), SWEEP_STEP)?;
                if cursor.is_none() {
                    self.last_sweep_ms.store(view.clock_ms, Ordering::Relaxed);
                }
            }
        }
        let (duplicates, expired, clock_ms) = (view.duplicates, view.expired, view.clock_ms);
        let (split, born) = (view.split, std::mem::take(&mut view.born));
        let cf = self.store.cf(CF_SM);
        let mut batch = view.batch;
        batch.put_cf(cf, clock_key, encode(&clock_ms)?);
        batch.put_cf(
            cf,
            keys::sm_meta_key(self.group, keys::SM_APPLIED),
            encode(&Some(last_applied))?,
        );
        if let Some(m) = membership {
            batch.put_cf(
                cf,
                keys::sm_meta_key(self.group, keys::SM_MEMBERSHIP),
                encode(&Some(m))?,
            );
        }
        self.check_running()?;
        if split {
            // A split builds a child whose Raft state must never be durable without its data,
            // nor the parent's applied index behind it: the applies before are flushed, then
            // this batch goes through the WAL and is synced (see `split`).
            let store = self.store.clone();
            crate::sim::blocking(move || store.flush_applied()).await??;
            self.store.write(batch)?;
            self.store.sync().await?;
            self.store.note_born(self.group, &born);
            count(&self.store.stats.splits_applied, 1);
            count(
                &self.store.stats.split_stall_us,
                started.elapsed().as_micros() as u64,
            );
        } else {
            // The log is in RocksDB; the state machine is rebuilt from it after a crash, so
            // neither the WAL nor an fsync.
            self.store.write_unlogged(batch)?;
        }
        count(&self.store.stats.entries_applied, n);
        count(&self.store.stats.duplicates_suppressed, duplicates);
        count(&self.store.stats.sessions_expired, expired);
        for (r, result) in responders {
            r.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> io::Result<()> {
        self.check_running()?;
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let file_name = snapshot::file_name_for(meta.last_log_id.as_ref(), seq);
        let own_path = self.snapshot_path(&file_name);
        let record = SnapshotRecord {
            last_log_id: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            file_name: file_name.clone(),
        };
        let (store, group) = (self.store.clone(), self.group);
        // Reads of the group are refused (retryably) until the new state is whole.
        let _installing = self.store.begin_installing(group);
        let (this, marked, from) = (self.clone(), record.clone(), snapshot.path.clone());
        let to = own_path.clone();
        crate::sim::blocking(move || -> io::Result<()> {
            // The file moves in and the marker names it under the record lock, so no removal
            // can take it in between.
            let _recording = this.record_lock.lock().map_err(io_err)?;
            if from != to {
                // A received file (verified, fsynced) in this group's dir: renamed, not copied.
                std::fs::rename(&from, &to)?;
                if let Some(dir) = to.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
            }
            // Old state out and the marker in, durably before any new data: a crash from here
            // on leaves the marker, and the next start installs the same file again.
            begin_install(&store, group, &marked)
        })
        .await
        .map_err(io_err)??;
        self.store.sync().await?;
        let (store, lock) = (self.store.clone(), self.record_lock.clone());
        let (installing, path) = (record.clone(), own_path.clone());
        crate::sim::blocking(move || finish_install(&store, group, &installing, &path, &lock))
            .await
            .map_err(io_err)??;
        self.store.sync().await?;
        count(&self.store.stats.snapshots_installed, 1);
        let this = self.clone();
        crate::sim::blocking(move || -> io::Result<()> {
            let recording = this.record_lock.lock().map_err(io_err)?;
            this.remove_stale_snapshots(&recording)
        })
        .await
        .map_err(io_err)??;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf>> {
        let Some(record) = self.current_record()? else {
            return Ok(None);
        };
        let path = self.snapshot_path(&record.file_name);
        if !path.exists() {
            tracing::warn!(group = self.group, file = %record.file_name, "current snapshot file is missing");
            return Ok(None);
        }
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: record.last_log_id,
                last_membership: record.last_membership,
            },
            snapshot: SnapshotFile { path },
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> io::Result<SnapshotOf> {
        let this = self.clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let record = crate::sim::blocking(move || -> io::Result<SnapshotRecord> {
            let store = &this.store;
            let group = this.group;
            let cf = store.cf(CF_SM);
            // A RocksDB snapshot: a consistent view while applies continue.
            let snap = store.db.snapshot();
            let get = |tag| -> io::Result<Option<Vec<u8>>> {
                snap.get_cf(cf, keys::sm_meta_key(group, tag))
                    .map_err(io_err)
            };
            let last_log_id = decode_opt::<Option<LogId>>(get(keys::SM_APPLIED)?)?.flatten();
            let last_membership =
                decode_opt::<Option<StoredMembership>>(get(keys::SM_MEMBERSHIP)?)?
                    .flatten()
                    .unwrap_or_default();
            let file_name = snapshot::file_name_for(last_log_id.as_ref(), seq);
            let mut writer = SnapshotWriter::create(&this.snapshot_path(&file_name))?;
            let (start, end) = keys::snapshot_range(group);
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end);
            ro.set_snapshot(&snap);
            for (i, kv) in store
                .db
                .iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward))
                .enumerate()
            {
                // A stopped group's build ends early: its stop waits for it.
                if i % 4096 == 0 {
                    this.check_running()?;
                }
                let (k, v) = kv.map_err(io_err)?;
                writer.record(&k[8..], &v)?;
            }
            let record = SnapshotRecord {
                last_log_id,
                last_membership,
                file_name,
            };
            // Applies are written without the WAL: the snapshot becomes current (and the log
            // behind it may be purged) only once what it covers is on disk in RocksDB too.
            store.flush_applied()?;
            // The finished file appears, and becomes current or not, under the record lock.
            let recording = this.record_lock.lock().map_err(io_err)?;
            this.check_running()?;
            writer.finish()?;
            let newer_exists = this
                .current_record()?
                .is_some_and(|current| current.last_log_id > record.last_log_id);
            if !newer_exists {
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    cf,
                    keys::sm_meta_key(group, keys::SM_SNAPSHOT_META),
                    encode(&record)?,
                );
                store.write(batch)?;
                this.remove_stale_snapshots(&recording)?;
            }
            Ok(record)
        })
        .await
        .map_err(io_err)??;
        count(&self.store.stats.snapshots_built, 1);
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: record.last_log_id,
                last_membership: record.last_membership,
            },
            snapshot: SnapshotFile {
                path: self.snapshot_path(&record.file_name),
            },
        })
    }
}

/// First step of installing a snapshot: the group's whole state machine range deleted, and the
/// install marker written, in one batch.
fn begin_install(store: &NodeStore, group: GroupId, record: &SnapshotRecord) -> io::Result<()> {
    let cf = store.cf(CF_SM);
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(
        cf,
        keys::group_prefix(group).to_vec(),
        keys::group_end(group),
    );
    batch.put_cf(
        cf,
        keys::sm_meta_key(group, keys::SM_INSTALLING),
        encode(record)?,
    );
    store.write(batch)
}

/// Stored sessions a sweep visits per applied batch.
const SWEEP_STEP: usize = 256;

/// Key and value bytes per SST file written for an install.
const SST_BYTES: usize = 64 * 1024 * 1024;

/// Second step: the snapshot's records (in key order) written to SST files of bounded size and
/// ingested into RocksDB in one atomic call (as TiKV installs snapshots: memory stays bounded by
/// one SST writer, whatever the shard's size, and nothing goes through the memtable), then the
/// group's meta written and the marker removed in one batch.
fn finish_install(
    store: &NodeStore,
    group: GroupId,
    record: &SnapshotRecord,
    path: &std::path::Path,
    record_lock: &std::sync::Mutex<()>,
) -> io::Result<()> {
    let cf = store.cf(CF_SM);
    let dir = snapshot::group_dir(store.dir(), group);
    let sst_options = rocksdb::Options::default();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut writer: Option<rocksdb::SstFileWriter<'_>> = None;
    let mut in_file = 0usize;
    let mut key = Vec::new();
    snapshot::read_records(path, |k, v| {
        if writer.is_none() {
            let file = dir.join(format!("ingest-{}.sst", files.len()));
            let _ = std::fs::remove_file(&file);
            let w = rocksdb::SstFileWriter::create(&sst_options);
            w.open(&file).map_err(io_err)?;
            files.push(file);
            writer = Some(w);
            in_file = 0;
        }
        key.clear();
        key.extend_from_slice(&keys::group_prefix(group));
        key.extend_from_slice(k);
        if let Some(w) = writer.as_mut() {
            w.put(&key, v).map_err(io_err)?;
        }
        in_file += key.len() + v.len();
        if in_file >= SST_BYTES {
            if let Some(mut w) = writer.take() {
                w.finish().map_err(io_err)?;
            }
        }
        Ok(())
    })?;
    if let Some(mut w) = writer.take() {
        w.finish().map_err(io_err)?;
    }
    if !files.is_empty() {
        let mut ingest = rocksdb::IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        let _files = store.files_stay();
        store.check_not_frozen()?;
        store
            .db
            .ingest_external_file_cf_opts(cf, &ingest, files.clone())
            .map_err(io_err)?;
    }
    for f in &files {
        let _ = std::fs::remove_file(f);
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(
        cf,
        keys::sm_meta_key(group, keys::SM_APPLIED),
        encode(&record.last_log_id)?,
    );
    batch.put_cf(
        cf,
        keys::sm_meta_key(group, keys::SM_MEMBERSHIP),
        encode(&Some(record.last_membership.clone()))?,
    );
    batch.put_cf(
        cf,
        keys::sm_meta_key(group, keys::SM_SNAPSHOT_META),
        encode(record)?,
    );
    batch.delete_cf(cf, keys::sm_meta_key(group, keys::SM_INSTALLING));
    let _recording = record_lock.lock().map_err(io_err)?;
    store.write(batch)
}

fn decode_opt<T: serde::de::DeserializeOwned>(bytes: Option<Vec<u8>>) -> io::Result<Option<T>> {
    bytes
        .map(|b| postcard::from_bytes(&b).map_err(io_err))
        .transpose()
}

#[cfg(test)]
mod tests {
    use futures::stream;

    use super::*;
    use crate::config::StorageOptions;
    use crate::replica::storage::identity::Identity;

    const GROUP: GroupId = 3;
    const TTL: u64 = 60_000;

    fn open(dir: &std::path::Path) -> Arc<NodeStore> {
        NodeStore::open(dir, &Identity::new("marker", 1), StorageOptions::default())
            .expect("open store")
    }

    fn puts(first: u64, keys: impl Iterator<Item = String>) -> Vec<crate::types::Entry> {
        keys.zip(first..)
            .map(|(key, index)| {
                crate::types::Entry::new_normal(
                    openraft::testing::log_id::<TypeConfig>(1, 1, index),
                    Proposal {
                        time_ms: 1_000 + index,
                        body: ProposalBody::Write {
                            session: None,
                            command: Command::Put {
                                value: format!("value of {key}").into_bytes(),
                                key: key.into_bytes(),
                            },
                        },
                    },
                )
            })
            .collect()
    }

    async fn apply(sm: &mut StateMachine, entries: Vec<crate::types::Entry>) {
        sm.apply(stream::iter(entries.into_iter().map(|e| Ok((e, None)))))
            .await
            .expect("apply");
    }

    /// A crash right after an install's first durable step (old state deleted, marker written)
    /// leaves a group with no data and no applied index; the next start must finish the same
    /// install from the same file, and nothing else can (the node has no leader to ask).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_install_cut_after_its_marker_is_finished_when_the_group_next_starts() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let leader = open(leader_dir.path());
        let mut source = leader.state_machine(GROUP, TTL).expect("sm");
        apply(
            &mut source,
            puts(1, (0..300).map(|i| format!("key-{i:03}"))),
        )
        .await;
        let built = source.build_snapshot().await.expect("build");

        let follower_dir = tempfile::tempdir().expect("tempdir");
        let record = {
            let follower = open(follower_dir.path());
            let mut old = follower.state_machine(GROUP, TTL).expect("sm");
            // Old state of the follower's own, which the snapshot replaces.
            apply(&mut old, puts(1, (0..5).map(|i| format!("old-{i}")))).await;
            let record = SnapshotRecord {
                last_log_id: built.meta.last_log_id,
                last_membership: built.meta.last_membership.clone(),
                file_name: snapshot::file_name_for(built.meta.last_log_id.as_ref(), 7),
            };
            // The received file, verified and in place; then the first step, then the crash.
            let dir = snapshot::group_dir(follower.dir(), GROUP);
            std::fs::copy(&built.snapshot.path, dir.join(&record.file_name)).expect("copy");
            begin_install(&follower, GROUP, &record).expect("begin");
            follower.sync().await.expect("sync");
            record
        };

        let follower = open(follower_dir.path());
        let mut restarted = follower.state_machine(GROUP, TTL).expect("sm");
        let (applied, membership) = restarted.applied_state().await.expect("applied");
        assert_eq!(applied, built.meta.last_log_id, "the install was finished");
        assert_eq!(membership, built.meta.last_membership);
        assert_eq!(
            follower.scan_group(GROUP).expect("scan"),
            leader.scan_group(GROUP).expect("scan"),
            "the follower holds exactly the snapshot's data, none of its old state"
        );
        assert_eq!(
            follower
                .stats()
                .snapshot_installs_redone
                .load(Ordering::SeqCst),
            1
        );
        let marker: Option<SnapshotRecord> = follower
            .get_value(CF_SM, &keys::sm_meta_key(GROUP, keys::SM_INSTALLING))
            .expect("read marker");
        assert_eq!(marker, None, "the marker is gone once the install is done");
        let current = restarted
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("a current snapshot");
        assert_eq!(
            current.snapshot.path.file_name(),
            Some(std::ffi::OsStr::new(&record.file_name))
        );
    }

    /// Opens, applies 1..=10, builds a snapshot, applies 11..=20, crashes (the files as the
    /// process left them) or closes, and reopens: what the group's state machine then holds
    /// (its applied index, and whether entry 15's key is there).
    async fn apply_snapshot_apply_reopen(crash: bool) -> (u64, bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::new("unlogged", 1);
        let options = StorageOptions::default();
        let kept = dir.path().join("db.at-crash");
        {
            let store = NodeStore::open(dir.path(), &identity, options).expect("open");
            let mut sm = store.state_machine(GROUP, TTL).expect("sm");
            apply(&mut sm, puts(1, (1..=10).map(|i| format!("key-{i}")))).await;
            let built = sm.build_snapshot().await.expect("build");
            assert_eq!(built.meta.last_log_id.map(|l| l.index()), Some(10));
            apply(&mut sm, puts(11, (11..=20).map(|i| format!("key-{i}")))).await;
            assert!(store.get(GROUP, b"key-15").expect("get").is_some());
            drop(sm);
            if crash {
                store.freeze_for_crash(&kept).expect("freeze");
            }
            let gone = Arc::downgrade(&store);
            drop(store);
            while gone.strong_count() > 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if crash {
            std::fs::remove_dir_all(dir.path().join("db")).expect("remove");
            std::fs::rename(&kept, dir.path().join("db")).expect("rename");
        }
        let store = NodeStore::open(dir.path(), &identity, options).expect("reopen");
        let mut sm = store.state_machine(GROUP, TTL).expect("sm");
        let (applied, _) = sm.applied_state().await.expect("applied");
        let current = sm.get_current_snapshot().await.expect("current");
        assert_eq!(
            current.and_then(|c| c.meta.last_log_id).map(|l| l.index()),
            Some(10)
        );
        assert!(
            store.get(GROUP, b"key-5").expect("get").is_some(),
            "what the current snapshot covers is on disk"
        );
        let applied = applied.map(|l| l.index()).unwrap_or(0);
        (applied, store.get(GROUP, b"key-15").expect("get").is_some())
    }

    /// Issue 31's first defect: a follower applies entries its log writer has not yet put in
    /// RocksDB (a slow fsync, a write stall), reading them from the log's cache. Here the
    /// durable log holds a stale tail (term 1, 3..=5); a new leader's truncate and entries
    /// (term 2, 3..=4) are queued behind a held writer, read from the cache and applied, and
    /// the state machine's memtable is flushed (as another group's snapshot does). Then power
    /// is lost. If the applied index (term 2, 4) reached disk without its entries, openraft
    /// finds applied ahead of the log and refuses to start the group: the node stays down.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_apply_waits_for_its_log_writes_so_a_crash_never_leaves_applied_ahead_of_the_log() {
        use crate::replica::failpoints::Failpoints;
        use crate::replica::storage::WriterFaults;
        use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage, StorageHelper};
        use openraft::type_config::TypeConfigExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let identity = Identity::new("applied-ahead", 1);
        let options = StorageOptions {
            lose_unsynced_on_crash: true,
            ..StorageOptions::default()
        };
        let failpoints = Arc::new(Failpoints::default());
        let open = || {
            let faults = WriterFaults {
                node: 1,
                failpoints: failpoints.clone(),
            };
            NodeStore::open_for_node(dir.path(), &identity, options, Arc::default(), faults)
                .expect("open")
        };
        let blank =
            |term: u64, indexes: std::ops::RangeInclusive<u64>| -> Vec<crate::types::Entry> {
                indexes
                    .map(|i| openraft::testing::blank_ent::<TypeConfig>(term, 1, i))
                    .collect()
            };
        let kept = dir.path().join("db.at-crash");
        let synced = {
            let store = open();
            let (mut log, sm) = store.group_storage(GROUP, TTL).expect("storage");
            let (tx, rx) = TypeConfig::oneshot();
            log.append(blank(1, 0..=5), IOFlushed::signal(tx))
                .await
                .expect("append");
            rx.await.expect("flushed").expect("flush ok");
            store.sync().await.expect("sync");

            failpoints.hold_log_writer(1);
            let agreed = blank(1, 2..=2)[0].log_id();
            log.truncate_after(Some(agreed)).await.expect("truncate");
            log.append(blank(2, 3..=4), IOFlushed::noop())
                .await
                .expect("append");
            let fresh = log.try_get_log_entries(3..5).await.expect("from the cache");
            assert_eq!(
                fresh.iter().map(|e| e.log_id()).collect::<Vec<_>>(),
                blank(2, 3..=4)
                    .iter()
                    .map(|e| e.log_id())
                    .collect::<Vec<_>>()
            );
            let mut applying_sm = sm.clone();
            let applying = tokio::spawn(async move {
                applying_sm
                    .apply(stream::iter(fresh.into_iter().map(|e| Ok((e, None)))))
                    .await
            });
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let flushing = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.flush_applied())
            };
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let (frozen, into) = (store.clone(), kept.clone());
            tokio::task::spawn_blocking(move || frozen.freeze_for_crash(&into))
                .await
                .expect("join")
                .expect("freeze");
            failpoints.release_log_writer(1);
            let _ = applying.await;
            let _ = flushing.await;
            let (synced, closed) = (store.synced_wal(), store.closed());
            drop((log, sm, store));
            while !closed.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let synced = synced.lock().expect("lock").clone();
            synced
        };
        std::fs::remove_dir_all(dir.path().join("db")).expect("remove");
        std::fs::rename(&kept, dir.path().join("db")).expect("rename");
        crate::replica::storage::lose_unsynced_writes(&dir.path().join("db"), &synced)
            .expect("cut the WAL back");

        let store = open();
        let (mut log, mut sm) = store.group_storage(GROUP, TTL).expect("storage");
        let state = StorageHelper::new(&mut log, &mut sm)
            .with_id(1)
            .get_initial_state()
            .await;
        assert!(
            state.is_ok(),
            "the group must start after the crash: {:?}",
            state.err()
        );
        let (applied, _) = sm.applied_state().await.expect("applied");
        let last = log.get_log_state().await.expect("log state").last_log_id;
        assert!(
            applied.is_none() || applied.map(|a| a.index()) <= last.map(|l| l.index()),
            "applied {applied:?} is within the log (last {last:?})"
        );
    }

    /// Applies are written without the WAL: a crash takes the unflushed ones, with their
    /// applied index (the group applies them again from its log), but never what a current
    /// snapshot covers, since the log behind it may be purged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn applies_off_the_wal_are_lost_in_a_crash_but_never_behind_the_current_snapshot() {
        assert_eq!(apply_snapshot_apply_reopen(true).await, (10, false));
        // The control: a clean close writes them out.
        assert_eq!(apply_snapshot_apply_reopen(false).await, (20, true));
    }
}
