//! Snapshots between nodes travel as bytes, in bounded chunks, through the `PeerTransport` (the
//! path gRPC will carry), never as a path into the sender's directory. The sender opens its file
//! once and streams from that handle, so its next `build_snapshot` deleting the file cannot cut
//! the transfer. The receiver writes the chunks to a file of its own, and only a complete file
//! whose checksum verifies is handed to `install_full_snapshot`. A cut transfer leaves nothing
//! behind that the next one cannot replace: the sender starts again from the first chunk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::replica::storage::snapshot;
use crate::types::GroupId;

/// Bytes per chunk: big enough to stream fast, small enough to bound memory per transfer.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Reads the next chunk of `file` on a blocking thread. Returns the file back, with the chunk
/// (empty at the end).
pub(crate) async fn read_chunk(mut file: File) -> Result<(File, Vec<u8>)> {
    crate::sim::blocking(move || {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        Ok((file, buf))
    })
    .await
    .map_err(|e| Error::Storage(format!("snapshot read task: {e}")))?
}

struct Incoming {
    path: PathBuf,
    file: Option<File>,
    next_offset: u64,
}

/// A node's snapshots being received, by group and transfer id.
#[derive(Default)]
pub(crate) struct Receiver {
    incoming: tokio::sync::Mutex<BTreeMap<(GroupId, u64), Incoming>>,
}

impl Receiver {
    /// Takes one chunk of transfer `transfer` of `group`. A chunk at offset 0 starts the
    /// transfer (dropping any other unfinished one of the group); a chunk out of order fails
    /// and drops the transfer. With `last`, the file is completed, fsynced and verified, and its
    /// path returned (it lives under `node_dir`'s snapshot dir of the group).
    pub(crate) async fn chunk(
        &self,
        node_dir: &Path,
        group: GroupId,
        transfer: u64,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    ) -> Result<Option<PathBuf>> {
        // The node-wide lock guards bookkeeping only: no file I/O (a write, an fsync, a whole
        // file's checksum) runs under it, so one big snapshot does not stall the others.
        if offset == 0 {
            let stale: Vec<Incoming> = {
                let mut incoming = self.incoming.lock().await;
                let keys: Vec<(GroupId, u64)> = incoming
                    .keys()
                    .filter(|(g, _)| *g == group)
                    .copied()
                    .collect();
                keys.iter().filter_map(|k| incoming.remove(k)).collect()
            };
            for old in stale {
                remove_quietly(old.path).await;
            }
            let dir = snapshot::group_dir(node_dir, group);
            let path = dir.join(format!("recv-{transfer}.partial"));
            let file = blocking({
                let path = path.clone();
                move || {
                    std::fs::create_dir_all(&dir)?;
                    File::create(&path)
                }
            })
            .await?;
            self.incoming.lock().await.insert(
                (group, transfer),
                Incoming {
                    path,
                    file: Some(file),
                    next_offset: 0,
                },
            );
        }
        let (mut file, path) = {
            let mut incoming = self.incoming.lock().await;
            let Some(entry) = incoming.get_mut(&(group, transfer)) else {
                return Err(Error::Unavailable(format!(
                    "group {group}: snapshot transfer {transfer} unknown here (start again)"
                )));
            };
            if entry.next_offset != offset {
                let expected = entry.next_offset;
                let gone = incoming.remove(&(group, transfer));
                drop(incoming);
                if let Some(gone) = gone {
                    remove_quietly(gone.path).await;
                }
                return Err(Error::Unavailable(format!(
                    "group {group}: snapshot chunk at {offset}, expected {expected} (start again)"
                )));
            }
            let Some(file) = entry.file.take() else {
                return Err(Error::Unavailable("snapshot file busy".into()));
            };
            (file, entry.path.clone())
        };
        let len = data.len() as u64;
        let written = blocking(move || {
            file.write_all(&data)?;
            if last {
                file.sync_all()?;
            }
            Ok(file)
        })
        .await;
        {
            let mut incoming = self.incoming.lock().await;
            match written {
                Ok(file) if !last => {
                    // Put back unless a newer transfer of the group replaced this one.
                    return match incoming.get_mut(&(group, transfer)) {
                        Some(entry) => {
                            entry.next_offset += len;
                            entry.file = Some(file);
                            Ok(None)
                        }
                        None => Err(Error::Unavailable(format!(
                            "group {group}: snapshot transfer {transfer} was replaced (start again)"
                        ))),
                    };
                }
                Ok(_) => {
                    incoming.remove(&(group, transfer));
                }
                Err(e) => {
                    incoming.remove(&(group, transfer));
                    drop(incoming);
                    remove_quietly(path).await;
                    return Err(e);
                }
            }
        }
        let complete = path.with_extension("sss");
        let finished = blocking({
            let (partial, complete) = (path.clone(), complete.clone());
            move || {
                snapshot::verify(&partial)?;
                std::fs::rename(&partial, &complete)?;
                if let Some(dir) = complete.parent() {
                    File::open(dir)?.sync_all()?;
                }
                Ok(())
            }
        })
        .await;
        if let Err(e) = finished {
            remove_quietly(path).await;
            return Err(e);
        }
        Ok(Some(complete))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    crate::sim::blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("snapshot file task: {e}")))?
        .map_err(Error::from)
}

async fn remove_quietly(path: PathBuf) {
    let _ = crate::sim::blocking(move || std::fs::remove_file(path)).await;
}
