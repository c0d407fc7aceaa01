//! The node's log writer. Every group's log appends, votes, truncations, purges and committed
//! marks, and every other write that must be ordered with them or made durable, are queued here
//! in the order they are made. One writer takes whatever is queued, of any group, writes it as
//! one RocksDB `WriteBatch` (one write, operations in queue order, so each group's order holds),
//! makes it durable with one WAL flush and fsync when anyone in the round waits for that, and
//! only then fires the callbacks. A failed write or sync fails every request of the round.
//!
//! A round ([`Worker::round`]) is plain synchronous code: it runs on the writer's own thread,
//! or, in a deterministic run (`crate::sim`), in a task of the run's one thread. Every durable write of the node goes
//! through here, so the writer also knows how much of each WAL file is on disk: what survives a
//! crash in the lose-unsynced test mode.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use rocksdb::{WriteBatch, WriteOptions, DB};

use super::{count, record_failure, Failure, StorageStats};
use crate::error::Result;
use crate::replica::failpoints::Failpoints;
use crate::types::{NodeId, TypeConfig};

/// Bytes of each WAL file known to be on disk.
pub type SyncedWal = Arc<Mutex<BTreeMap<PathBuf, u64>>>;

/// One change of a queued write, in a column family named by its constant (see `keys`).
pub(crate) enum Op {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    DeleteRange {
        cf: &'static str,
        from: Vec<u8>,
        to: Vec<u8>,
    },
}

/// Who is told, and when, that a queued write is done.
pub(crate) enum Done {
    /// openraft's log flush callback: once the write is on disk.
    Raft(IOFlushed<TypeConfig>),
    /// Anyone waiting for durability: once everything queued before is on disk.
    Durable(tokio::sync::oneshot::Sender<std::result::Result<(), String>>),
    /// Anyone waiting until RocksDB holds the write (readable, not yet durable).
    Written(tokio::sync::oneshot::Sender<std::result::Result<(), String>>),
    /// Nobody: the write becomes durable with the next sync.
    Nothing,
}

impl Done {
    fn needs_sync(&self) -> bool {
        matches!(self, Done::Raft(_) | Done::Durable(_))
    }

    fn complete(self, result: std::result::Result<(), String>) {
        match self {
            Done::Raft(cb) => cb.io_completed(result.map_err(std::io::Error::other)),
            Done::Durable(tx) | Done::Written(tx) => {
                let _ = tx.send(result);
            }
            Done::Nothing => {}
        }
    }
}

/// Told, right after the round's write, whether it reached RocksDB (a log store unpins what it
/// had held in its cache until then).
pub(crate) type AfterWrite = Box<dyn FnOnce(bool) + Send>;

/// One queued write.
pub(crate) struct Request {
    pub(crate) ops: Vec<Op>,
    pub(crate) after_write: Option<AfterWrite>,
    pub(crate) done: Done,
}

impl Request {
    pub(crate) fn new(ops: Vec<Op>, done: Done) -> Self {
        Request {
            ops,
            after_write: None,
            done,
        }
    }

    pub(crate) fn fail(self, error: String) {
        if let Some(after) = self.after_write {
            after(false);
        }
        self.done.complete(Err(error));
    }
}

/// How the writer makes writes durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncMode {
    /// fsync the WAL (off: acknowledge once written to the OS).
    pub fsync: bool,
    /// Record the WAL's synced length at every sync (for the crash simulation).
    pub track_synced: bool,
}

/// Faults a test arms in one node's writer (see [`Failpoints`]).
#[derive(Clone, Default)]
pub(crate) struct WriterFaults {
    pub node: NodeId,
    pub failpoints: Arc<Failpoints>,
}

pub(crate) struct Writer {
    runner: Runner,
    synced: SyncedWal,
    /// Held while a round writes and syncs: a simulated crash waits for a round under way.
    gate: Arc<Mutex<()>>,
}

/// Where rounds run: a thread of their own, or (in a deterministic run, see `crate::sim`) a
/// task of the run's one thread, each round taking a seeded virtual time.
enum Runner {
    Thread {
        tx: Option<mpsc::Sender<Request>>,
        handle: Option<JoinHandle<()>>,
    },
    Task {
        queue: Arc<Mutex<Vec<Request>>>,
        wake: Arc<tokio::sync::Notify>,
        /// The task holds it weakly: the store's RocksDB closes with the store.
        worker: Option<Arc<Worker>>,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Writer {
    pub(crate) fn spawn(
        db: Arc<DB>,
        wal_dir: PathBuf,
        mode: SyncMode,
        stats: Arc<StorageStats>,
        failure: Failure,
        frozen: Arc<AtomicBool>,
        faults: WriterFaults,
    ) -> Result<Self> {
        let synced: SyncedWal = Arc::new(Mutex::new(wal_sizes(&wal_dir)));
        let gate = Arc::new(Mutex::new(()));
        let worker = Worker {
            db,
            wal_dir,
            mode,
            stats,
            synced: synced.clone(),
            failure,
            frozen,
            gate: gate.clone(),
            faults,
            broken: AtomicBool::new(false),
        };
        let runner = if crate::sim::is_deterministic() {
            Self::task(worker)
        } else {
            let (tx, rx) = mpsc::channel::<Request>();
            let handle = std::thread::Builder::new()
                .name("scalestore-log-writer".into())
                .spawn(move || {
                    while let Ok(first) = rx.recv() {
                        worker.wait_while_held();
                        let mut round = vec![first];
                        round.extend(rx.try_iter());
                        worker.run(round);
                    }
                })?;
            Runner::Thread {
                tx: Some(tx),
                handle: Some(handle),
            }
        };
        Ok(Writer {
            runner,
            synced,
            gate,
        })
    }

    fn task(worker: Worker) -> Runner {
        let worker = Arc::new(worker);
        let queue: Arc<Mutex<Vec<Request>>> = Arc::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (queue, wake, worker) = (queue.clone(), wake.clone(), Arc::downgrade(&worker));
            async move {
                loop {
                    wake.notified().await;
                    crate::sim::pause(crate::sim::Cost::LogRound).await;
                    let round = take_queued(&queue);
                    match worker.upgrade() {
                        Some(w) if !round.is_empty() => w.run(round),
                        Some(_) => {}
                        None => {
                            round.into_iter().for_each(|r| r.fail(STOPPED.into()));
                            return;
                        }
                    }
                }
            }
        });
        Runner::Task {
            queue,
            wake,
            worker: Some(worker),
            task,
        }
    }

    /// Returns once no round is under way (one that starts later sees the store frozen).
    pub(crate) fn drain(&self) {
        drop(self.hold());
    }

    /// Keeps rounds out while held: a write made meanwhile sees no round take the WAL's length.
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `request` behind everything queued before it; gives it back when the writer has
    /// stopped, for the caller to fail once it holds no lock that the request's callbacks take.
    pub(crate) fn submit(&self, request: Request) -> std::result::Result<(), Request> {
        match &self.runner {
            Runner::Thread { tx: Some(tx), .. } => {
                tx.send(request).map_err(|mpsc::SendError(r)| r)?;
            }
            Runner::Task {
                queue,
                wake,
                worker: Some(_),
                ..
            } => {
                queue
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(request);
                wake.notify_one();
            }
            _ => return Err(request),
        }
        Ok(())
    }

    /// Where rounds run as a task (a deterministic run), runs one now, on the caller's thread,
    /// with everything queued and a sync; `None` where they run on the writer's thread.
    pub(crate) fn round_inline(&self) -> Option<std::result::Result<(), String>> {
        let Runner::Task {
            queue,
            worker: Some(worker),
            ..
        } = &self.runner
        else {
            return None;
        };
        let mut round = take_queued(queue);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        round.push(Request::new(Vec::new(), Done::Durable(tx)));
        worker.run(round);
        Some(rx.try_recv().unwrap_or_else(|_| Err(STOPPED.into())))
    }

    pub(crate) fn synced(&self) -> SyncedWal {
        self.synced.clone()
    }

    /// Finishes what is queued, then stops.
    pub(crate) fn stop(&mut self) {
        match &mut self.runner {
            Runner::Thread { tx, handle } => {
                tx.take();
                if let Some(h) = handle.take() {
                    let _ = h.join();
                }
            }
            Runner::Task {
                queue,
                worker,
                task,
                ..
            } => {
                task.abort();
                let round = take_queued(queue);
                if let Some(w) = worker.take() {
                    if !round.is_empty() {
                        w.run(round);
                    }
                }
            }
        }
    }
}

pub(crate) const STOPPED: &str = "the log writer stopped";

/// Everything queued for a round run as a task, in queue order; the queue is left empty.
fn take_queued(queue: &Mutex<Vec<Request>>) -> Vec<Request> {
    std::mem::take(&mut *queue.lock().unwrap_or_else(|e| e.into_inner()))
}

/// What the writer owns.
struct Worker {
    db: Arc<DB>,
    wal_dir: PathBuf,
    mode: SyncMode,
    stats: Arc<StorageStats>,
    synced: SyncedWal,
    failure: Failure,
    /// A simulated crash froze the store: nothing more is written.
    frozen: Arc<AtomicBool>,
    gate: Arc<Mutex<()>>,
    faults: WriterFaults,
    /// A round panicked: the store failed, and every later request fails at once (the node
    /// reopens the store, which starts a new writer).
    broken: AtomicBool,
}

impl Worker {
    fn wait_while_held(&self) {
        self.faults
            .failpoints
            .wait_while_writer_held(self.faults.node);
    }

    /// Runs one round. A panic inside it fails the store (as a failed write does) and every
    /// request of the round not yet answered, so no caller waits forever for a callback.
    fn run(&self, requests: Vec<Request>) {
        let mut requests = requests;
        if self.broken.load(Ordering::SeqCst) {
            requests.into_iter().for_each(|r| r.fail(BROKEN.into()));
            return;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.round(&mut requests)));
        if let Err(panic) = outcome {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let error = format!("{BROKEN}: {what}");
            self.broken.store(true, Ordering::SeqCst);
            record_failure(&self.failure, &self.stats, &error);
            requests.drain(..).for_each(|r| r.fail(error.clone()));
        }
    }

    /// One round: every queued request written in one batch, synced once if anyone waits for
    /// durability, then every callback fired. Requests are taken from `requests` as they are
    /// answered: what a panic leaves there was not.
    fn round(&self, requests: &mut Vec<Request>) {
        if self.faults.failpoints.take_writer_panic() {
            panic!("a log writer round panicked (failpoint)");
        }
        let needs_sync = requests.iter().any(|r| r.done.needs_sync());
        let synced = {
            let _writing = self.gate.lock();
            let written = self.write(requests);
            // Readable in RocksDB from now on: caches unpin, and applies waiting for these log
            // writes go on (a later flush of their applies syncs the WAL first).
            for r in requests.iter_mut() {
                if let Some(after) = r.after_write.take() {
                    after(written.is_ok());
                }
            }
            match &written {
                Ok(()) if needs_sync => self.sync(),
                other => other.clone(),
            }
        };
        if let Err(e) = &synced {
            if !self.frozen.load(Ordering::SeqCst) {
                record_failure(&self.failure, &self.stats, e);
            }
        }
        let raft = requests
            .iter()
            .filter(|r| matches!(r.done, Done::Raft(_)))
            .count();
        count(&self.stats.log_appends, raft as u64);
        for r in requests.drain(..) {
            r.done.complete(synced.clone());
        }
    }

    /// Writes every request's changes as one batch (visible at once; with manual WAL flush the
    /// WAL record waits in RocksDB's buffer for the sync).
    fn write(&self, requests: &[Request]) -> std::result::Result<(), String> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err("the node crashed (simulated): nothing more is written".into());
        }
        let mut batch = WriteBatch::default();
        for op in requests.iter().flat_map(|r| &r.ops) {
            let cf = |name: &str| {
                self.db
                    .cf_handle(name)
                    .ok_or_else(|| format!("column family {name} missing"))
            };
            match op {
                Op::Put {
                    cf: name,
                    key,
                    value,
                } => batch.put_cf(cf(name)?, key, value),
                Op::DeleteRange { cf: name, from, to } => {
                    batch.delete_range_cf(cf(name)?, from, to)
                }
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        count(&self.stats.log_writes, 1);
        self.db
            .write_opt(batch, &WriteOptions::default())
            .map_err(|e| e.into_string())
    }

    /// Writes the WAL buffered in RocksDB to its file and fsyncs it (with fsync off: hands it
    /// to the OS).
    fn sync(&self) -> std::result::Result<(), String> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err("the node crashed (simulated): nothing more is written".into());
        }
        // Sizes taken before the fsync are covered by it; bytes written meanwhile by direct
        // writes wait for the next one.
        if let Some(delay) = self.faults.failpoints.sync_delay(self.faults.node) {
            std::thread::sleep(delay);
        }
        let sizes = self.mode.track_synced.then(|| wal_sizes(&self.wal_dir));
        let started = std::time::Instant::now();
        let result = self
            .db
            .flush_wal(self.mode.fsync)
            .map_err(|e| e.into_string());
        if self.mode.fsync {
            count(&self.stats.log_syncs, 1);
            self.stats.fsync_latency.record(started.elapsed());
            if let (Ok(()), Some(sizes), Ok(mut s)) = (&result, sizes, self.synced.lock()) {
                *s = sizes;
            }
        }
        result
    }
}

const BROKEN: &str = "the log writer failed (a round panicked)";

fn wal_sizes(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                if let Ok(m) = e.metadata() {
                    out.insert(p, m.len());
                }
            }
        }
    }
    out
}

/// Cuts every WAL file in `dir` back to its synced length (files never synced: to nothing), as
/// a power loss would. Call only while the DB is closed.
pub fn lose_unsynced_writes(dir: &Path, synced: &BTreeMap<PathBuf, u64>) -> std::io::Result<u64> {
    let mut lost = 0;
    for (path, len) in wal_sizes(dir) {
        let keep = synced.get(&path).copied().unwrap_or(0).min(len);
        if keep < len {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(keep)?;
            lost += len - keep;
        }
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::storage::keys::{ALL_CFS, CF_LOG, CF_RAFT};
    use tokio::sync::oneshot;

    type Reply = oneshot::Receiver<std::result::Result<(), String>>;

    fn worker(dir: &Path) -> Worker {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_manual_wal_flush(true);
        let db = DB::open_cf(&opts, dir.join("db"), ALL_CFS).expect("open");
        Worker {
            db: Arc::new(db),
            wal_dir: dir.join("db"),
            mode: SyncMode {
                fsync: true,
                track_synced: false,
            },
            stats: Arc::default(),
            synced: SyncedWal::default(),
            failure: Failure::default(),
            frozen: Arc::default(),
            gate: Arc::default(),
            faults: WriterFaults::default(),
            broken: AtomicBool::new(false),
        }
    }

    fn put(cf: &'static str, key: &[u8], value: &[u8]) -> Op {
        Op::Put {
            cf,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn durable(ops: Vec<Op>) -> (Request, Reply) {
        let (tx, rx) = oneshot::channel();
        (Request::new(ops, Done::Durable(tx)), rx)
    }

    /// A request that records whether its write reached RocksDB.
    fn watched(ops: Vec<Op>, seen: &Arc<Mutex<Vec<bool>>>) -> (Request, Reply) {
        let (tx, rx) = oneshot::channel();
        let seen = seen.clone();
        let mut request = Request::new(ops, Done::Written(tx));
        request.after_write = Some(Box::new(move |ok| seen.lock().expect("lock").push(ok)));
        (request, rx)
    }

    fn get(w: &Worker, cf: &str, key: &[u8]) -> Option<Vec<u8>> {
        let handle = w.db.cf_handle(cf).expect("cf");
        w.db.get_cf(handle, key).expect("get")
    }

    #[test]
    fn one_round_writes_every_groups_changes_in_one_write_and_one_fsync_in_queue_order() {
        let dir = tempfile::tempdir().expect("dir");
        let w = worker(dir.path());
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Group 1 appends, truncates and appends again; group 2 saves a vote between.
        let (a, ra) = durable(vec![put(CF_LOG, b"1-5", b"old")]);
        let (b, rb) = durable(vec![put(CF_RAFT, b"2-vote", b"v")]);
        let (c, rc) = watched(
            vec![Op::DeleteRange {
                cf: CF_LOG,
                from: b"1-5".to_vec(),
                to: b"1-~".to_vec(),
            }],
            &seen,
        );
        let (d, rd) = durable(vec![put(CF_LOG, b"1-5", b"new")]);
        w.run(vec![a, b, c, Request::new(Vec::new(), Done::Nothing), d]);
        for mut r in [ra, rb, rc, rd] {
            assert_eq!(r.try_recv().expect("completed"), Ok(()));
        }
        assert_eq!(*seen.lock().expect("lock"), vec![true]);
        assert_eq!(get(&w, CF_LOG, b"1-5"), Some(b"new".to_vec()));
        assert_eq!(get(&w, CF_RAFT, b"2-vote"), Some(b"v".to_vec()));
        assert_eq!(w.stats.log_writes.load(Ordering::Relaxed), 1);
        assert_eq!(w.stats.log_syncs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_round_that_nobody_waits_on_for_durability_is_written_but_not_synced() {
        let dir = tempfile::tempdir().expect("dir");
        let w = worker(dir.path());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, mut ra) = watched(vec![put(CF_RAFT, b"1-committed", b"9")], &seen);
        w.run(vec![a]);
        assert_eq!(ra.try_recv().expect("completed"), Ok(()));
        assert_eq!(get(&w, CF_RAFT, b"1-committed"), Some(b"9".to_vec()));
        assert_eq!(w.stats.log_syncs.load(Ordering::Relaxed), 0);
        // The next durable round covers it.
        let (b, mut rb) = durable(Vec::new());
        w.run(vec![b]);
        assert_eq!(rb.try_recv().expect("completed"), Ok(()));
        assert_eq!(w.stats.log_syncs.load(Ordering::Relaxed), 1);
        assert_eq!(
            w.stats.log_writes.load(Ordering::Relaxed),
            1,
            "nothing to write"
        );
    }

    #[test]
    fn a_failed_round_fails_every_waiter_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let w = worker(dir.path());
        w.frozen.store(true, Ordering::SeqCst);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, mut ra) = durable(vec![put(CF_LOG, b"1-1", b"x")]);
        let (b, mut rb) = watched(vec![put(CF_LOG, b"2-1", b"y")], &seen);
        w.run(vec![a, b]);
        assert!(ra.try_recv().expect("completed").is_err());
        assert!(rb.try_recv().expect("completed").is_err());
        assert_eq!(*seen.lock().expect("lock"), vec![false]);
        assert_eq!(get(&w, CF_LOG, b"1-1"), None);
        assert_eq!(get(&w, CF_LOG, b"2-1"), None);
    }
}
