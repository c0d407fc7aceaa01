//! openraft's log storage for one group, inside the node's shared RocksDB. Every change goes
//! through the node's log writer (one queue for every group of the node), so `append` returns
//! as soon as its entries are queued and readable here: they stay pinned in the group's cache
//! of recent entries until the writer has put them in RocksDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::keys::{self, CF_LOG, CF_RAFT};
use super::writer::{Done, Op, Request, STOPPED};
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

/// Bytes of encoded entries the cache of one group holds at most, beyond entries not yet
/// written (those stay whatever their size).
const RECENT_BYTES: usize = 4 << 20;

/// The newest entries of the log, contiguous, as appended: the leader replicates and applies
/// what it just wrote, and a follower applies what it just received, without a RocksDB read
/// and a decode each time. Every change to the log is numbered here (`queued`) and queued to
/// the log writer under this lock, so queue order is number order; the writer reports each
/// number written (`written`). An entry pushed after the last written number is pinned: it
/// may not be in RocksDB yet, so it is never evicted.
#[derive(Default)]
struct RecentEntries {
    /// Entries, their encoded size, and the number of the change that pushed them.
    entries: VecDeque<(Entry, usize, u64)>,
    bytes: usize,
    /// Number of the last change queued to the writer, and of the last one it wrote.
    queued: u64,
    written: u64,
    /// Told whether the writer wrote change number N (and every one before it), by N.
    waiters: Vec<(u64, tokio::sync::oneshot::Sender<bool>)>,
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _, _)| e.index())
    }

    /// Numbers the next change to the log.
    fn next_change(&mut self) -> u64 {
        self.queued += 1;
        self.queued
    }

    /// Whether a change queued to the writer may not be in RocksDB yet.
    fn pending(&self) -> bool {
        self.written < self.queued
    }

    fn push(&mut self, entry: Entry, size: usize, change: u64) {
        let follows = self
            .entries
            .back()
            .is_none_or(|(last, _, _)| last.index() + 1 == entry.index());
        if !follows {
            self.clear();
        }
        self.bytes += size;
        self.entries.push_back((entry, size, change));
        self.evict();
    }

    /// Drops the oldest written entries while over budget.
    fn evict(&mut self) {
        while self.bytes > RECENT_BYTES {
            match self.entries.front() {
                Some((_, size, change)) if *change <= self.written => {
                    self.bytes -= *size;
                    self.entries.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The writer wrote change `change` (and every one before it), or failed to.
    fn written(&mut self, change: u64, ok: bool) {
        if !ok {
            // The store failed: it is reopened and its groups restarted, which start over.
            self.clear();
        }
        self.written = self.written.max(change);
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].0 <= change {
                let (_, tx) = self.waiters.swap_remove(i);
                let _ = tx.send(ok);
            } else {
                i += 1;
            }
        }
        self.evict();
    }

    /// Keeps the entries up to `last` (inclusive; `None`: none).
    fn truncate_after(&mut self, last: Option<u64>) {
        while let Some((entry, size, _)) = self.entries.back() {
            if last.is_some_and(|l| entry.index() <= l) {
                break;
            }
            self.bytes -= *size;
            self.entries.pop_back();
        }
    }

    /// Drops the entries up to `upto` (inclusive).
    fn purge(&mut self, upto: u64) {
        while let Some((entry, size, _)) = self.entries.front() {
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

    /// The number of the change that pushed the entry at `index`, if that entry is `id`.
    fn change_of(&self, id: &LogId) -> Option<u64> {
        let first = self.first_index()?;
        let offset = id.index().checked_sub(first)?;
        let (entry, _, change) = self.entries.get(usize::try_from(offset).ok()?)?;
        (entry.log_id() == *id).then_some(*change)
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
                .map(|(e, _, _)| e.clone())
                .collect(),
        )
    }
}

impl LogStore {
    pub(crate) fn new(group: GroupId, store: Arc<NodeStore>) -> Self {
        let log = LogStore {
            group,
            store,
            recent: Arc::default(),
        };
        // Change 1 is an empty one, queued before anything else is read: a group restarted in
        // a running process reads (and applies) only once the writes of its previous instance
        // are in RocksDB.
        let _ = log.queue(Vec::new(), Done::Nothing, |_, _| {});
        log
    }

    fn recent(&self) -> io::Result<MutexGuard<'_, RecentEntries>> {
        self.recent
            .lock()
            .map_err(|_| io::Error::other("log cache lock poisoned"))
    }

    /// Queues `ops` to the node's log writer as the next change of this group, with
    /// `push` run on the cache under the same lock (queue order is change order).
    fn queue(
        &self,
        ops: Vec<Op>,
        done: Done,
        push: impl FnOnce(&mut RecentEntries, u64),
    ) -> io::Result<()> {
        self.store.check_not_frozen()?;
        let refused = {
            let mut recent = self.recent()?;
            let change = recent.next_change();
            push(&mut recent, change);
            let cache = self.recent.clone();
            let after_write = Box::new(move |ok: bool| {
                if let Ok(mut recent) = cache.lock() {
                    recent.written(change, ok);
                }
            });
            self.store
                .submit(Request {
                    ops,
                    after_write: Some(after_write),
                    done,
                })
                .err()
        };
        // Failed with the cache's lock released: the request's callback takes it.
        match refused {
            Some(request) => {
                request.fail(STOPPED.into());
                Err(io_err(STOPPED))
            }
            None => Ok(()),
        }
    }

    /// Returns once entry `last`, and every change of this group queued before it, is in
    /// RocksDB: an apply waits here, so an applied index never reaches disk (by any flush of
    /// the state machine's memtable) ahead of the log entries it names. It waits for the change
    /// that appended `last` only, not for appends queued after it (a busy leader always has
    /// some), and costs nothing once that change is written. An entry not in the cache waits
    /// for every change queued so far.
    pub(crate) async fn written_through(&self, last: &LogId) -> io::Result<()> {
        let rx = {
            let mut recent = self.recent()?;
            let change = recent.change_of(last).unwrap_or(recent.queued);
            if change <= recent.written {
                return Ok(());
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            recent.waiters.push((change, tx));
            rx
        };
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(io_err(format!(
                "group {}: the log writes an apply waits for failed",
                self.group
            ))),
        }
    }

    /// Returns once every change of this group queued so far is in RocksDB (readable there).
    async fn written(&self) -> io::Result<()> {
        if !self.recent()?.pending() {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(Vec::new(), Done::Written(tx), |_, _| {})?;
        rx.await.map_err(io_err)?.map_err(io_err)
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

    fn put_raft(&self, tag: u8, value: Vec<u8>) -> Op {
        Op::Put {
            cf: CF_RAFT,
            key: keys::raft_key(self.group, tag).to_vec(),
            value,
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
        // Not all in the cache: from RocksDB, once it holds every change queued so far.
        self.written().await?;
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
        self.written().await?;
        self.store
            .get_value(CF_RAFT, &keys::raft_key(self.group, keys::RAFT_VOTE))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        self.written().await?;
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
        let op = self.put_raft(keys::RAFT_VOTE, encode(vote)?);
        // Durability first: a vote must never be forgotten once granted.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(vec![op], Done::Durable(tx), |_, _| {})?;
        rx.await.map_err(io_err)?.map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let op = self.put_raft(keys::RAFT_COMMITTED, encode(&committed)?);
        self.queue(vec![op], Done::Nothing, |_, _| {})
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        self.written().await?;
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
        let mut ops = Vec::new();
        let mut appended = Vec::new();
        for entry in entries {
            let bytes = encode(&entry)?;
            let key = keys::log_key(self.group, entry.index()).to_vec();
            appended.push((entry, bytes.len()));
            ops.push(Op::Put {
                cf: CF_LOG,
                key,
                value: bytes,
            });
        }
        // Readable from the cache now; in RocksDB after the writer's next round, and
        // acknowledged to Raft once that round's WAL fsync is done.
        self.queue(ops, Done::Raft(callback), |recent, change| {
            for (entry, size) in appended {
                recent.push(entry, size, change);
            }
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map(|l| l.index() + 1).unwrap_or(0);
        let op = Op::DeleteRange {
            cf: CF_LOG,
            from: keys::log_key(self.group, from).to_vec(),
            to: keys::group_end(self.group),
        };
        self.queue(vec![op], Done::Nothing, |recent, _| {
            recent.truncate_after(last_log_id.map(|l| l.index()))
        })
    }

    /// openraft purges only behind a snapshot, and a snapshot becomes current only once the
    /// applies it covers are flushed (they are written without the WAL): so the entries a
    /// crashed node applies again at its next start are never purged.
    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let ops = vec![
            self.put_raft(keys::RAFT_PURGED, encode(&log_id)?),
            Op::DeleteRange {
                cf: CF_LOG,
                from: keys::log_key(self.group, 0).to_vec(),
                to: keys::log_key(self.group, log_id.index() + 1).to_vec(),
            },
        ];
        self.queue(ops, Done::Nothing, |recent, _| recent.purge(log_id.index()))
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

    /// Issue 31's fourth defect: a panic in a writer round dropped the round's requests (the
    /// group's flush callback never fired, so it waited forever) and killed the writer's thread;
    /// the next change then failed to queue and, failing its request under the cache's lock,
    /// deadlocked on that lock. Now the round's requests fail, the store counts as failed (as
    /// after a failed sync), and later changes fail at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_round_that_panics_fails_its_callers_and_the_store_instead_of_hanging() {
        use crate::config::StorageOptions;
        use crate::replica::failpoints::Failpoints;
        use crate::replica::storage::identity::Identity;
        use crate::replica::storage::WriterFaults;
        use openraft::type_config::TypeConfigExt;
        use std::time::Duration;

        let dir = tempfile::tempdir().expect("tempdir");
        let failpoints = Arc::new(Failpoints::default());
        let faults = WriterFaults {
            node: 1,
            failpoints: failpoints.clone(),
        };
        let store = NodeStore::open_for_node(
            dir.path(),
            &Identity::new("writer-panic", 1),
            StorageOptions::default(),
            Arc::default(),
            faults,
        )
        .expect("open");
        let mut log = store.log_store(7);
        log.read_vote()
            .await
            .expect("the log's first change is written");

        failpoints.panic_in_writer_rounds(1);
        let (tx, rx) = TypeConfig::oneshot();
        log.append(vec![entry(1)], IOFlushed::signal(tx))
            .await
            .expect("queued");
        let flushed = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the flush callback fires instead of hanging")
            .expect("the callback is answered, not dropped");
        assert!(flushed.is_err(), "the append failed");
        assert!(
            store.failure().is_some_and(|f| f.contains("panicked")),
            "the store counts as failed: {:?}",
            store.failure()
        );

        // The next append, from a thread of its own so that a deadlock shows as a timeout.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let (mut again, runtime) = (log.clone(), tokio::runtime::Handle::current());
        std::thread::spawn(move || {
            let result = runtime.block_on(async {
                let (tx, rx) = TypeConfig::oneshot();
                again.append(vec![entry(2)], IOFlushed::signal(tx)).await?;
                rx.await.map_err(io_err)?
            });
            let _ = done_tx.send(result);
        });
        let second = done_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a change after the panic returns instead of hanging");
        assert!(second.is_err(), "and fails: the store must be reopened");
    }

    #[test]
    fn the_cache_answers_only_ranges_it_holds_whole_and_follows_truncate_and_purge() {
        let mut recent = RecentEntries::default();
        for i in 5..=9 {
            recent.push(entry(i), 10, 0);
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
        recent.push(entry(20), 10, 0);
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
            recent.push(entry(i), size, 0);
        }
        assert_eq!(recent.bytes, 4 * size);
        assert_eq!(recent.first_index(), Some(3));
        assert_eq!(indexes(recent.get(3, 7)), Some(vec![3, 4, 5, 6]));
    }

    #[test]
    fn entries_not_yet_written_stay_pinned_past_the_budget_until_the_writer_reports_them() {
        let mut recent = RecentEntries::default();
        let size = RECENT_BYTES / 4;
        for i in 1..=6 {
            let change = recent.next_change();
            recent.push(entry(i), size, change);
        }
        assert!(recent.pending());
        assert_eq!(
            recent.first_index(),
            Some(1),
            "nothing written: nothing evicted"
        );
        assert_eq!(indexes(recent.get(1, 7)), Some(vec![1, 2, 3, 4, 5, 6]));
        // An apply of entries up to 3 waits for change 3 only, not for the appends after it.
        assert_eq!(recent.change_of(&entry(3).log_id()), Some(3));
        let other_term = openraft::testing::blank_ent::<TypeConfig>(2, 1, 3).log_id();
        assert_eq!(
            recent.change_of(&other_term),
            None,
            "not the entry held at 3"
        );
        assert_eq!(recent.change_of(&entry(9).log_id()), None);
        recent.written(3, true);
        assert!(recent.pending());
        assert_eq!(
            recent.first_index(),
            Some(3),
            "1 and 2 written and over budget"
        );
        recent.written(6, true);
        assert!(!recent.pending());
        assert_eq!(recent.first_index(), Some(3), "within budget again");
        // A failed write drops the cache: the store is reopened and the group restarted.
        let change = recent.next_change();
        recent.push(entry(7), 10, change);
        recent.written(change, false);
        assert_eq!((recent.entries.len(), recent.bytes), (0, 0));
    }
}
