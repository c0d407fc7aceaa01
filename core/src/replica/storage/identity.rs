//! The identity and format marker of a node's data dir. A dir of another cluster, another node, an
//! unknown format, or something that is not ScaleStore's is refused before anything in it changes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::NodeId;

pub const IDENTITY_FILE: &str = "SCALESTORE_IDENTITY";
pub const FORMAT_NAME: &str = "scalestore-node";
/// 2: shards may have range descriptors and split entries in their logs (a build that reads
/// only 1 would serve a split shard's moved keys as its own). A version-1 dir holds neither, so
/// it is upgraded in place: its marker is rewritten, nothing else changes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format this build upgrades in place.
pub const OLDEST_UPGRADABLE: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: String,
    pub format_version: u32,
    pub cluster_id: String,
    pub node_id: NodeId,
}

impl Identity {
    pub fn new(cluster_id: &str, node_id: NodeId) -> Self {
        Identity {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            cluster_id: cluster_id.into(),
            node_id,
        }
    }

    /// Claims `dir` for this identity: creates it (and the marker) when absent or empty, accepts it
    /// when its marker matches, refuses it otherwise without writing anything.
    pub fn claim(&self, dir: &Path) -> Result<()> {
        let refuse = |reason: String| Error::DataDir {
            path: dir.to_path_buf(),
            reason,
        };
        let marker = dir.join(IDENTITY_FILE);
        let is_empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(refuse(format!("cannot read: {e}"))),
        };
        if is_empty {
            fs::create_dir_all(dir)?;
            return write_synced(
                &marker,
                &serde_json::to_vec_pretty(self).map_err(Error::storage)?,
            );
        }
        let bytes = match fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(refuse(format!(
                    "not empty and has no {IDENTITY_FILE}: not a ScaleStore data dir"
                )))
            }
            Err(e) => return Err(refuse(format!("cannot read {IDENTITY_FILE}: {e}"))),
        };
        let found: Identity = serde_json::from_slice(&bytes)
            .map_err(|e| refuse(format!("corrupt {IDENTITY_FILE}: {e}")))?;
        if found.format != FORMAT_NAME {
            return Err(refuse(format!("unknown format {:?}", found.format)));
        }
        if !(OLDEST_UPGRADABLE..=FORMAT_VERSION).contains(&found.format_version) {
            return Err(refuse(format!(
                "format version {} is not supported (this build reads {OLDEST_UPGRADABLE} to {FORMAT_VERSION})",
                found.format_version
            )));
        }
        if found.cluster_id != self.cluster_id {
            return Err(refuse(format!(
                "belongs to cluster {}, not {}",
                found.cluster_id, self.cluster_id
            )));
        }
        if found.node_id != self.node_id {
            return Err(refuse(format!(
                "belongs to node {}, not node {}",
                found.node_id, self.node_id
            )));
        }
        if found.format_version < FORMAT_VERSION {
            tracing::info!(
                dir = %dir.display(),
                from = found.format_version,
                to = FORMAT_VERSION,
                "data dir format upgraded in place"
            );
            let upgraded = Identity {
                format_version: FORMAT_VERSION,
                ..found
            };
            write_synced(
                &marker,
                &serde_json::to_vec_pretty(&upgraded).map_err(Error::storage)?,
            )?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync dir).
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_dir_is_claimed_and_reclaimed_by_the_same_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Identity::new("c1", 3);
        id.claim(&dir.path().join("n3")).expect("claim new");
        id.claim(&dir.path().join("n3")).expect("reclaim");
    }

    #[test]
    fn dir_of_other_cluster_node_or_format_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1");
        Identity::new("c1", 1).claim(&path).expect("claim");
        let before = fs::read(path.join(IDENTITY_FILE)).expect("read");
        for other in [Identity::new("c2", 1), Identity::new("c1", 2)] {
            let err = other.claim(&path).expect_err("must refuse");
            assert!(matches!(err, Error::DataDir { .. }), "{err}");
        }
        let mut future = Identity::new("c1", 1);
        future.format_version = 99;
        fs::write(
            path.join(IDENTITY_FILE),
            serde_json::to_vec(&future).expect("json"),
        )
        .expect("w");
        let err = Identity::new("c1", 1)
            .claim(&path)
            .expect_err("unknown version");
        assert!(err.to_string().contains("format version 99"), "{err}");
        fs::write(path.join(IDENTITY_FILE), &before).expect("restore");

        let foreign = dir.path().join("foreign");
        fs::create_dir_all(&foreign).expect("mkdir");
        fs::write(foreign.join("CURRENT"), b"MANIFEST-000001\n").expect("w");
        let err = Identity::new("c1", 1).claim(&foreign).expect_err("foreign");
        assert!(
            err.to_string().contains("not a ScaleStore data dir"),
            "{err}"
        );
        assert_eq!(
            fs::read_dir(&foreign).expect("ls").count(),
            1,
            "nothing added"
        );
    }

    #[test]
    fn a_version_1_dir_is_upgraded_in_place_and_a_newer_one_refused_naming_both_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n1");
        let mut old = Identity::new("c1", 1);
        old.format_version = 1;
        fs::create_dir_all(&path).expect("mkdir");
        fs::write(
            path.join(IDENTITY_FILE),
            serde_json::to_vec(&old).expect("json"),
        )
        .expect("w");
        fs::write(path.join("CURRENT"), b"MANIFEST-000001\n").expect("w");
        Identity::new("c1", 1)
            .claim(&path)
            .expect("a version-1 dir is taken");
        let now: Identity =
            serde_json::from_slice(&fs::read(path.join(IDENTITY_FILE)).expect("r")).expect("json");
        assert_eq!(now.format_version, FORMAT_VERSION);
        assert_eq!(
            fs::read(path.join("CURRENT")).expect("r"),
            b"MANIFEST-000001\n"
        );
        // A version-1 dir of another node is refused untouched, not upgraded.
        let other = dir.path().join("n2");
        fs::create_dir_all(&other).expect("mkdir");
        let bytes = serde_json::to_vec(&old).expect("json");
        fs::write(other.join(IDENTITY_FILE), &bytes).expect("w");
        assert!(Identity::new("c1", 2).claim(&other).is_err());
        assert_eq!(fs::read(other.join(IDENTITY_FILE)).expect("r"), bytes);
        let mut newer = Identity::new("c1", 1);
        newer.format_version = FORMAT_VERSION + 1;
        fs::write(
            path.join(IDENTITY_FILE),
            serde_json::to_vec(&newer).expect("json"),
        )
        .expect("w");
        let err = Identity::new("c1", 1).claim(&path).expect_err("newer");
        let message = err.to_string();
        assert!(
            message.contains("format version 3") && message.contains("1 to 2"),
            "{message}"
        );
    }
}
