//! openraft's log storage for one group, inside the node's shared RocksDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::keys::{self, CF_LOG, CF_RAFT};
use super::syncer::SyncRequest;
use super::{encode, io_err, NodeStore};
use crate::types::{Entry, GroupId, LogId, TypeConfig, Vote};

/// Log, vote and log metadata of one group. Cheap to clone; clones share the node's RocksDB
/// and the group's cache of recent entries.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    store: Arc<NodeStore>,
    recent: Arc<Mutex<RecentEntries>>,
}

/// Bytes of encoded entries the cache of one group holds at most.
const RECENT_BYTES: usize = 4 << 20;

/// The newest entries of the log, contiguous, as appended: the leader replicates and applies
/// what it just wrote, and a follower applies what it just received, without a RocksDB read
/// and a decode each time. Every change to the log changes it under its lock, together with
/// the RocksDB write, so it only ever holds entries that are in RocksDB.
#[derive(Default)]
struct RecentEntries {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.index() + 1 == entry.index());
        if !follows {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.bytes > RECENT_BYTES {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Keeps the entries up to `last` (inclusive; `None`: none).
    fn truncate_after(&mut self, last: Option<u64>) {
        while let Some((entry, size)) = self.entries.back() {
            if last.is_some_and(|l| entry.index() <= l) {
                break;
            }
            self.bytes -= *size;
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to `upto` (inclusive).
    fn purge(&mut self, upto: u64) {
        while let Some((entry, size)) = self.entries.front() {
            if entry.index() > upto {
                break;
            }
            self.bytes -= *size;
            self.entries.pop_front();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries `start..end`, only when every one of them is here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.0.index();
        if start < first || end == 0 || end - 1 > last || start >= end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(
            self.entries
                .range(from..to)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

impl LogStore {
    pub(crate) fn new(group: GroupId, store: Arc<NodeStore>) -> Self {
        LogStore {
            group,
            store,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> io::Result<MutexGuard<'_, RecentEntries>> {
        self.recent
            .lock()
            .map_err(|_| io::Error::other("log cache lock poisoned"))
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
        if let Some(end) = end {
            if let Some(hit) = self.recent()?.get(start, end) {
                return Ok(hit);
            }
        }
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
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)?;
            batch.put_cf(cf, keys::log_key(self.group, entry.index()), &bytes);
            appended.push((entry, bytes.len()));
        }
        // Visible to readers now; durable (and acknowledged) after the shared WAL fsync.
        {
            let mut recent = self.recent()?;
            if let Err(e) = self.store.write(batch) {
                recent.clear();
                return Err(e);
            }
            for (entry, size) in appended {
                recent.push(entry, size);
            }
        }
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
        let mut recent = self.recent()?;
        recent.truncate_after(last_log_id.map(|l| l.index()));
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
        let mut recent = self.recent()?;
        recent.purge(log_id.index());
        self.store.write(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TypeConfig;

    fn entry(index: u64) -> Entry {
        openraft::testing::blank_ent::<TypeConfig>(1, 1, index)
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|es| es.iter().map(|e| e.index()).collect())
    }

    #[test]
    fn the_cache_answers_only_ranges_it_holds_whole_and_follows_truncate_and_purge() {
        let mut recent = RecentEntries::default();
        for i in 5..=9 {
            recent.push(entry(i), 10);
        }
        assert_eq!(indexes(recent.get(6, 9)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(recent.get(4, 7)), None, "5 is the first held");
        assert_eq!(indexes(recent.get(8, 11)), None, "10 is not held");
        recent.truncate_after(Some(7));
        assert_eq!(indexes(recent.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(recent.get(7, 9)), None, "8 was truncated");
        recent.purge(5);
        assert_eq!(indexes(recent.get(5, 6)), None, "5 was purged");
        assert_eq!(recent.bytes, 20);
        // A gap (say, after a snapshot) starts the cache over.
        recent.push(entry(20), 10);
        assert_eq!(indexes(recent.get(6, 7)), None);
        assert_eq!(indexes(recent.get(20, 21)), Some(vec![20]));
        recent.truncate_after(None);
        assert_eq!((recent.entries.len(), recent.bytes), (0, 0));
    }

    #[test]
    fn the_cache_keeps_at_most_its_byte_budget_dropping_the_oldest() {
        let mut recent = RecentEntries::default();
        let size = RECENT_BYTES / 4;
        for i in 1..=6 {
            recent.push(entry(i), size);
        }
        assert_eq!(recent.bytes, 4 * size);
        assert_eq!(recent.first_index(), Some(3));
        assert_eq!(indexes(recent.get(3, 7)), Some(vec![3, 4, 5, 6]));
    }
}
