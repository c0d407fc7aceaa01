//! Group commit for log appends. Appends write to RocksDB at once (visible to readers) and hand
//! their completion callback here; one thread per node fsyncs the shared WAL once for every
//! callback waiting, of any group, and only then tells Raft the entries are durable.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::storage::IOFlushed;
use rocksdb::DB;

use super::{count, StorageStats};
use crate::error::Result;
use crate::types::TypeConfig;

pub(crate) struct Syncer {
    tx: Option<mpsc::Sender<IOFlushed<TypeConfig>>>,
    handle: Option<JoinHandle<()>>,
}

impl Syncer {
    pub(crate) fn spawn(db: Arc<DB>, sync: bool, stats: Arc<StorageStats>) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let handle = std::thread::Builder::new()
            .name("scalestore-wal-sync".into())
            .spawn(move || run(db, rx, sync, stats))?;
        Ok(Syncer {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Completes `callback` once everything written before this call is on disk.
    pub(crate) fn request(&self, callback: IOFlushed<TypeConfig>) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError(cb)) = tx.send(callback) {
                    cb.io_completed(Err(std::io::Error::other("wal syncer stopped")));
                }
            }
            None => callback.io_completed(Err(std::io::Error::other("wal syncer stopped"))),
        }
    }

    pub(crate) fn stop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(
    db: Arc<DB>,
    rx: mpsc::Receiver<IOFlushed<TypeConfig>>,
    sync: bool,
    stats: Arc<StorageStats>,
) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let result = if sync {
            count(&stats.log_syncs, 1);
            db.flush_wal(true).map_err(|e| e.into_string())
        } else {
            Ok(())
        };
        count(&stats.log_appends, waiting.len() as u64);
        for cb in waiting {
            cb.io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
}
