//! Tunables: request size limits, Raft timing, storage switches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::Command;

/// Size limits on what a client may write. Over a limit: `InvalidArgument`, nothing written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest key, in bytes (etcd and TiKV use a few KiB; default 4 KiB).
    pub max_key_bytes: usize,
    /// Largest value carried by a request, in bytes (default 1 MiB, etcd's default request size).
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument("key must not be empty".into()));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::InvalidArgument(format!(
                "key is {} bytes, limit is {}",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "value is {} bytes, limit is {}",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    pub fn check_command(&self, command: &Command) -> Result<()> {
        let keys = command.keys();
        if keys.is_empty() {
            return Err(Error::InvalidArgument(
                "a write needs at least one key".into(),
            ));
        }
        keys.into_iter().try_for_each(|k| self.check_key(k))?;
        command
            .values()
            .into_iter()
            .try_for_each(|v| self.check_value(v))
    }
}

/// Raft timing and log compaction, shared by every group of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot (for slow followers).
    pub max_in_snapshot_log_to_keep: u64,
    /// A client session idle this long (in leader-stamped log time) expires.
    pub session_ttl_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_logs_since_last: 10_000,
            max_in_snapshot_log_to_keep: 1_000,
            session_ttl_ms: 10 * 60 * 1000,
        }
    }
}

impl RaftTiming {
    pub fn to_openraft(&self) -> Result<Arc<openraft::Config>> {
        let config = openraft::Config {
            cluster_name: "scalestore".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            // The state machine is not fsynced and the committed index is not persisted, so a
            // restarted leader must not resume leadership on its stale view: it would serve a
            // "linearizable" read that misses an acknowledged write (found by the crash tests).
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        let config = config
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("raft timing: {e}")))?;
        Ok(Arc::new(config))
    }

    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }
}

/// Per-node storage switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageOptions {
    /// fsync the log and vote before acknowledging them to Raft. Turning this off is for
    /// experiments only: an acknowledged write can be lost in a crash.
    pub sync: bool,
    /// Test mode: a crashed node also loses every write it made after its last fsync (the WAL
    /// is cut back to what was synced), as a power loss would.
    pub lose_unsynced_on_crash: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sync: true,
            lose_unsynced_on_crash: false,
        }
    }
}

/// Switches that break guarantees on purpose, so tests can prove the checks bite. Never set
/// them outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TestSwitches {
    /// Answer `Linearizable` reads from the local replica without ReadIndex (any role).
    pub unsafe_local_linearizable_reads: bool,
}

/// A node's wall clock: the system clock plus an offset that a fault can set, so tests can make
/// one node's clock jump (NTP steps, a VM resumed) without touching the machine's.
#[derive(Debug, Default)]
pub struct WallClock {
    offset_ms: AtomicI64,
}

impl WallClock {
    /// Milliseconds since the Unix epoch, as this node's clock reads them.
    pub fn now_ms(&self) -> u64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        system
            .saturating_add(self.offset_ms.load(Ordering::Relaxed))
            .max(0) as u64
    }

    /// Moves this clock by `by_ms` (negative: back), on top of any earlier jump.
    pub fn jump(&self, by_ms: i64) {
        self.offset_ms.fetch_add(by_ms, Ordering::Relaxed);
    }

    /// Back to the system clock.
    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::Relaxed);
    }
}
