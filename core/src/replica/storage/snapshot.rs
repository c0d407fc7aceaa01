//! Snapshot files: a group's state machine, read from a RocksDB snapshot (writes go on meanwhile),
//! streamed record by record into a checksummed file under the node's `snapshots/` dir.
//!
//! Format: `SSSNAP01`, then per record `u32 key_len, key, u32 value_len, value` (keys are the
//! state machine keys without the group prefix), then `u64 record_count, u32 crc32` of all
//! preceding bytes. All integers little-endian.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{GroupId, LogId, StoredMembership};

const MAGIC: &[u8; 8] = b"SSSNAP01";

/// A snapshot's data: a file on the node's own disk. Between nodes it travels as chunks (see
/// `replica::snapshot_transfer`); it is never loaded into memory whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub path: PathBuf,
}

/// What the state machine records about its current snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    pub last_log_id: Option<LogId>,
    pub last_membership: StoredMembership,
    pub file_name: String,
}

pub(crate) fn group_dir(node_dir: &Path, group: GroupId) -> PathBuf {
    node_dir.join("snapshots").join(format!("g{group}"))
}

pub(crate) fn file_name_for(last_log_id: Option<&LogId>, seq: u64) -> String {
    match last_log_id {
        Some(l) => format!("snap-{}-{}-{seq}.sss", l.index(), l.committed_leader_id()),
        None => format!("snap-empty-{seq}.sss"),
    }
    .replace(['/', ' ', ':'], "_")
}

/// Streams records into `path` (written under a temporary name, fsynced, then renamed).
pub(crate) struct SnapshotWriter {
    out: BufWriter<File>,
    hasher: crc32fast::Hasher,
    count: u64,
    tmp: PathBuf,
    path: PathBuf,
}

impl SnapshotWriter {
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("partial");
        let mut w = SnapshotWriter {
            out: BufWriter::new(File::create(&tmp)?),
            hasher: crc32fast::Hasher::new(),
            count: 0,
            tmp,
            path: path.to_path_buf(),
        };
        w.put_raw(MAGIC)?;
        Ok(w)
    }

    fn put_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    pub(crate) fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.put_raw(&(key.len() as u32).to_le_bytes())?;
        self.put_raw(key)?;
        self.put_raw(&(value.len() as u32).to_le_bytes())?;
        self.put_raw(value)?;
        self.count += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<u64> {
        let count = self.count;
        self.put_raw(&count.to_le_bytes())?;
        let crc = self.hasher.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(count)
    }
}

/// Reads every record of a snapshot file, verifying the checksum before returning any.
pub(crate) fn read_records(
    path: &Path,
    mut each: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<u64> {
    verify(path)?;
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    let total = fs::metadata(path)?.len();
    let body_end = total - 12;
    let mut pos = 8u64;
    let mut n = 0;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    while pos < body_end {
        read_chunk(&mut r, &mut k)?;
        read_chunk(&mut r, &mut v)?;
        pos += 8 + k.len() as u64 + v.len() as u64;
        each(&k, &v)?;
        n += 1;
    }
    Ok(n)
}

fn read_chunk(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    r.read_exact(buf)
}

/// Checks the magic and checksum of a complete snapshot file.
pub(crate) fn verify(path: &Path) -> io::Result<()> {
    let corrupt = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot {path:?}: {why}"),
        )
    };
    let mut r = BufReader::new(File::open(path)?);
    let total = fs::metadata(path)?.len();
    if total < 8 + 12 {
        return Err(corrupt("too short"));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut remaining = total - 4;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    while remaining > 0 {
        let n = remaining.min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n])?;
        if first && &buf[..8] != MAGIC {
            return Err(corrupt("bad magic"));
        }
        first = false;
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    let mut crc = [0u8; 4];
    r.read_exact(&mut crc)?;
    if hasher.finalize() != u32::from_le_bytes(crc) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_file_round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sss");
        let mut w = SnapshotWriter::create(&path).expect("create");
        w.record(b"a", b"1").expect("rec");
        w.record(b"bb", b"").expect("rec");
        assert_eq!(w.finish().expect("finish"), 2);
        let mut got = vec![];
        read_records(&path, |k, v| {
            got.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .expect("read");
        assert_eq!(
            got,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), vec![])]
        );

        let mut bytes = fs::read(&path).expect("read");
        bytes[10] ^= 0xff;
        fs::write(&path, bytes).expect("write");
        let err = read_records(&path, |_, _| Ok(())).expect_err("corrupt");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
