//! Group commit. Appends write to RocksDB at once (visible to readers) and hand their completion
//! here; one thread per node fsyncs the shared WAL once for everything waiting, of any group,
//! and only then reports it durable. Every durable write of the node goes through here, so the
//! syncer also knows how much of each WAL file is on disk — what survives a crash in the
//! lose-unsynced test mode.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use rocksdb::DB;

use super::{count, record_failure, Failure, StorageStats};
use crate::error::Result;
use crate::types::TypeConfig;

/// Bytes of each WAL file known to be on disk.
pub type SyncedWal = Arc<Mutex<BTreeMap<PathBuf, u64>>>;

pub(crate) enum SyncRequest {
    /// openraft's log flush callback.
    Raft(IOFlushed<TypeConfig>),
    /// Anyone else waiting for durability.
    Wait(tokio::sync::oneshot::Sender<std::result::Result<(), String>>),
}

impl SyncRequest {
    fn complete(self, result: std::result::Result<(), String>) {
        match self {
            SyncRequest::Raft(cb) => cb.io_completed(result.map_err(std::io::Error::other)),
            SyncRequest::Wait(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// How the syncer makes writes durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncMode {
    /// fsync the WAL (off: acknowledge once written to the OS).
    pub fsync: bool,
    /// Record the WAL's synced length at every sync (for the crash simulation).
    pub track_synced: bool,
}

pub(crate) struct Syncer {
    tx: Option<mpsc::Sender<SyncRequest>>,
    handle: Option<JoinHandle<()>>,
    synced: SyncedWal,
    /// Held while the WAL is flushed: a simulated crash waits for a flush under way.
    gate: Arc<Mutex<()>>,
}

impl Syncer {
    pub(crate) fn spawn(
        db: Arc<DB>,
        wal_dir: PathBuf,
        mode: SyncMode,
        stats: Arc<StorageStats>,
        failure: Failure,
        frozen: Arc<AtomicBool>,
    ) -> Result<Self> {
        let synced: SyncedWal = Arc::new(Mutex::new(wal_sizes(&wal_dir)));
        let (tx, rx) = mpsc::channel::<SyncRequest>();
        let synced_in_thread = synced.clone();
        let gate = Arc::new(Mutex::new(()));
        let worker = Worker {
            db,
            wal_dir,
            mode,
            stats,
            synced: synced_in_thread,
            failure,
            frozen,
            gate: gate.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("scalestore-wal-sync".into())
            .spawn(move || worker.run(rx))?;
        Ok(Syncer {
            tx: Some(tx),
            handle: Some(handle),
            synced,
            gate,
        })
    }

    /// Returns once no WAL flush is under way (one that starts later sees the store frozen).
    pub(crate) fn drain(&self) {
        drop(self.gate.lock());
    }

    /// Completes `request` once everything written before this call is on disk.
    pub(crate) fn request(&self, request: SyncRequest) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(r)) = tx.send(request) {
                    r.complete(Err("wal syncer stopped".into()));
                }
            }
            None => request.complete(Err("wal syncer stopped".into())),
        }
    }

    pub(crate) fn synced(&self) -> SyncedWal {
        self.synced.clone()
    }

    pub(crate) fn stop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What the syncer thread owns.
struct Worker {
    db: Arc<DB>,
    wal_dir: PathBuf,
    mode: SyncMode,
    stats: Arc<StorageStats>,
    synced: SyncedWal,
    failure: Failure,
    /// A simulated crash froze the store: nothing more is flushed.
    frozen: Arc<AtomicBool>,
    gate: Arc<Mutex<()>>,
}

impl Worker {
    /// Writes the WAL buffered in RocksDB (manual WAL flush) to its file, and fsyncs it.
    fn flush(&self) -> std::result::Result<(), String> {
        let _flushing = self.gate.lock();
        if self.frozen.load(Ordering::SeqCst) {
            return Err("the node crashed (simulated): nothing more is written".into());
        }
        self.db
            .flush_wal(self.mode.fsync)
            .map_err(|e| e.into_string())
    }

    fn run(self, rx: mpsc::Receiver<SyncRequest>) {
        let Worker {
            ref wal_dir,
            mode,
            ref stats,
            ref synced,
            ref failure,
            ..
        } = self;
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            waiting.extend(rx.try_iter());
            // Sizes taken before the fsync are covered by it; bytes written meanwhile wait for
            // the next one (their callbacks are not in this batch).
            let sizes = mode.track_synced.then(|| wal_sizes(wal_dir));
            let started = std::time::Instant::now();
            let result = self.flush();
            if mode.fsync {
                count(&stats.log_syncs, 1);
                stats.fsync_latency.record(started.elapsed());
            }
            match &result {
                Ok(()) => {
                    if let (Some(sizes), true, Ok(mut s)) = (sizes, mode.fsync, synced.lock()) {
                        *s = sizes;
                    }
                }
                Err(_) if self.frozen.load(Ordering::SeqCst) => {}
                Err(e) => record_failure(failure, stats, e),
            }
            let raft = waiting
                .iter()
                .filter(|r| matches!(r, SyncRequest::Raft(_)))
                .count();
            count(&stats.log_appends, raft as u64);
            for r in waiting {
                r.complete(result.clone());
            }
        }
    }
}

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
