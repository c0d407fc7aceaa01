//! The state machine of one group: user data lives in RocksDB; a batch of entries and the new
//! last-applied log id are written in one atomic WriteBatch.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys::{self, CF_SM};
use super::snapshot::{self, SnapshotFile, SnapshotRecord, SnapshotWriter};
use super::{count, encode, io_err, NodeStore};
use crate::types::{
    Command, CommandResult, GroupId, LogId, SnapshotMeta, StoredMembership, TypeConfig,
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
}

impl StateMachine {
    pub(crate) fn new(group: GroupId, store: Arc<NodeStore>) -> crate::error::Result<Self> {
        std::fs::create_dir_all(snapshot::group_dir(store.dir(), group))?;
        Ok(StateMachine {
            group,
            store,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        })
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

    /// Removes snapshot files of this group other than `keep`.
    fn remove_old_snapshots(&self, keep: &str) {
        let dir = snapshot::group_dir(self.store.dir(), self.group);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy() != keep {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// Reads a key as of the batch being built: pending writes first, then RocksDB.
struct BatchView<'a> {
    store: &'a NodeStore,
    group: GroupId,
    batch: WriteBatch,
    pending: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

impl BatchView<'_> {
    fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
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

    fn delete(&mut self, key: &[u8]) {
        self.batch
            .delete_cf(self.store.cf(CF_SM), keys::data_key(self.group, key));
        self.pending.insert(key.to_vec(), None);
    }

    fn apply(&mut self, command: Command) -> io::Result<CommandResult> {
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
        let mut view = BatchView {
            store: &self.store,
            group: self.group,
            batch: WriteBatch::default(),
            pending: HashMap::new(),
        };
        let mut responders = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        let mut n = 0;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::None,
                EntryPayload::Normal(command) => view.apply(command)?,
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
        let cf = self.store.cf(CF_SM);
        let mut batch = view.batch;
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
        // The log is durable; the state machine is rebuilt from it after a crash, so no fsync.
        self.store.write(batch, false)?;
        count(&self.store.stats.entries_applied, n);
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
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let file_name = snapshot::file_name_for(meta.last_log_id.as_ref(), seq);
        let own_path = self.snapshot_path(&file_name);
        if snapshot.path != own_path {
            std::fs::copy(&snapshot.path, &own_path)?;
            std::fs::File::open(&own_path)?.sync_all()?;
        }
        let store = self.store.clone();
        let group = self.group;
        let record = SnapshotRecord {
            last_log_id: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            file_name: file_name.clone(),
        };
        let path = own_path.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let cf = store.cf(CF_SM);
            let mut batch = WriteBatch::default();
            // Replace the group's whole state machine atomically: old data out, snapshot in.
            batch.delete_range_cf(
                cf,
                keys::group_prefix(group).to_vec(),
                keys::group_end(group),
            );
            snapshot::read_records(&path, |k, v| {
                let mut key = keys::group_prefix(group).to_vec();
                key.extend_from_slice(k);
                batch.put_cf(cf, key, v);
                Ok(())
            })?;
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
                encode(&record)?,
            );
            store.write(batch, true)
        })
        .await
        .map_err(io_err)??;
        self.remove_old_snapshots(&file_name);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf>> {
        let Some(record) = self.current_record()? else {
            return Ok(None);
        };
        let path = self.snapshot_path(&record.file_name);
        if !path.exists() {
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
        let record = tokio::task::spawn_blocking(move || -> io::Result<SnapshotRecord> {
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
            let (start, end) = keys::data_range(group);
            let mut ro = ReadOptions::default();
            ro.set_iterate_upper_bound(end);
            ro.set_snapshot(&snap);
            for kv in
                store
                    .db
                    .iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward))
            {
                let (k, v) = kv.map_err(io_err)?;
                writer.record(&k[8..], &v)?;
            }
            writer.finish()?;
            let record = SnapshotRecord {
                last_log_id,
                last_membership,
                file_name,
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(
                cf,
                keys::sm_meta_key(group, keys::SM_SNAPSHOT_META),
                encode(&record)?,
            );
            store.write(batch, false)?;
            Ok(record)
        })
        .await
        .map_err(io_err)??;
        self.remove_old_snapshots(&record.file_name);
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

fn decode_opt<T: serde::de::DeserializeOwned>(bytes: Option<Vec<u8>>) -> io::Result<Option<T>> {
    bytes
        .map(|b| postcard::from_bytes(&b).map_err(io_err))
        .transpose()
}
