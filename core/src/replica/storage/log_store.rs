//! openraft's log storage for one group, inside the node's shared RocksDB.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys::{self, CF_LOG, CF_RAFT};
use super::syncer::SyncRequest;
use super::{encode, io_err, NodeStore};
use crate::types::{Entry, GroupId, LogId, TypeConfig, Vote};

/// Log, vote and log metadata of one group. Cheap to clone; clones share the node's RocksDB.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    store: Arc<NodeStore>,
}

impl LogStore {
    pub(crate) fn new(group: GroupId, store: Arc<NodeStore>) -> Self {
        LogStore { group, store }
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(keys::log_key(self.group, 0).to_vec());
        let last = keys::log_key(self.group, u64::MAX);
        let mut iter = self.store.db.iterator_cf_opt(
            self.store.cf(CF_LOG),
            ro,
            IteratorMode::From(&last, Direction::Reverse),
        );
        match iter.next() {
            None => Ok(None),
            Some(kv) => {
                let (_, v) = kv.map_err(io_err)?;
                let entry: Entry = postcard::from_bytes(&v).map_err(io_err)?;
                Ok(Some(entry.log_id()))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let mut ro = ReadOptions::default();
        match end {
            Some(end) => ro.set_iterate_upper_bound(keys::log_key(self.group, end).to_vec()),
            None => ro.set_iterate_upper_bound(keys::group_end(self.group)),
        }
        let from = keys::log_key(self.group, start);
        let iter = self.store.db.iterator_cf_opt(
            self.store.cf(CF_LOG),
            ro,
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut entries = Vec::new();
        for kv in iter {
            let (_, v) = kv.map_err(io_err)?;
            entries.push(postcard::from_bytes::<Entry>(&v).map_err(io_err)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.store
            .get_value(CF_RAFT, &keys::raft_key(self.group, keys::RAFT_VOTE))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self
            .store
            .get_value(CF_RAFT, &keys::raft_key(self.group, keys::RAFT_PURGED))?;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        let cf = self.store.cf(CF_RAFT);
        batch.put_cf(
            cf,
            keys::raft_key(self.group, keys::RAFT_VOTE),
            encode(vote)?,
        );
        // Durability first: a vote must never be forgotten once granted.
        self.store.write_durable(batch).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        let cf = self.store.cf(CF_RAFT);
        batch.put_cf(
            cf,
            keys::raft_key(self.group, keys::RAFT_COMMITTED),
            encode(&committed)?,
        );
        self.store.write(batch)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self
            .store
            .get_value::<Option<LogId>>(CF_RAFT, &keys::raft_key(self.group, keys::RAFT_COMMITTED))?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.store.cf(CF_LOG);
        for entry in entries {
            batch.put_cf(
                cf,
                keys::log_key(self.group, entry.index()),
                encode(&entry)?,
            );
        }
        // Visible to readers now; durable (and acknowledged) after the shared WAL fsync.
        self.store.write(batch)?;
        self.store.syncer.request(SyncRequest::Raft(callback));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.store.cf(CF_LOG),
            keys::log_key(self.group, from).to_vec(),
            keys::group_end(self.group),
        );
        self.store.write(batch)
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.store.cf(CF_RAFT),
            keys::raft_key(self.group, keys::RAFT_PURGED),
            encode(&log_id)?,
        );
        batch.delete_range_cf(
            self.store.cf(CF_LOG),
            keys::log_key(self.group, 0),
            keys::log_key(self.group, log_id.index() + 1),
        );
        self.store.write(batch)
    }
}
