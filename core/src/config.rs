//! Tunables: request size limits, Raft timing, storage switches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::Command;

/// Size limits on what a client may send. Over a limit: `InvalidArgument`, nothing written.
/// The client checks before sending; every node checks again (requests may come from elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest key, in bytes (etcd and TiKV use a few KiB; default 4 KiB).
    pub max_key_bytes: usize,
    /// Largest value carried by a request, in bytes (default 1 MiB, etcd's default request size).
    pub max_value_bytes: usize,
    /// Most pairs in one `batch_put` or keys in one `batch_get` (default 10,000).
    pub max_batch_items: usize,
    /// Most key and value bytes in one `batch_put`, or key bytes in one `batch_get` (default
    /// 16 MiB). A binding splits a larger `put_many` into batches under both caps.
    pub max_batch_bytes: usize,
    /// Most items one scan page may ask for (default 10,000).
    pub max_scan_page: usize,
    /// Most key and value bytes one log entry may carry (default 16 MiB): one write, or one
    /// shard's part of a batch.
    pub max_entry_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_batch_items: 10_000,
            max_batch_bytes: 16 * 1024 * 1024,
            max_scan_page: 10_000,
            max_entry_bytes: 16 * 1024 * 1024,
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

    /// A batch of `items` items carrying `bytes` bytes (`what`: for the message).
    pub fn check_batch(&self, what: &str, items: usize, bytes: usize) -> Result<()> {
        if items > self.max_batch_items {
            return Err(Error::InvalidArgument(format!(
                "{what} has {items} items, limit is {} (split it)",
                self.max_batch_items
            )));
        }
        if bytes > self.max_batch_bytes {
            return Err(Error::InvalidArgument(format!(
                "{what} carries {bytes} bytes, limit is {} (split it)",
                self.max_batch_bytes
            )));
        }
        Ok(())
    }

    /// Keys of one read of many: count, total size, each key.
    pub fn check_keys(&self, keys: &[&[u8]]) -> Result<()> {
        let bytes = keys.iter().map(|k| k.len()).sum();
        self.check_batch("a batch read", keys.len(), bytes)?;
        keys.iter().try_for_each(|k| self.check_key(k))
    }

    pub fn check_scan_page(&self, limit: usize) -> Result<()> {
        if limit == 0 {
            return Err(Error::InvalidArgument(
                "scan limit must be at least 1".into(),
            ));
        }
        if limit > self.max_scan_page {
            return Err(Error::InvalidArgument(format!(
                "scan page of {limit} items asked, limit is {}",
                self.max_scan_page
            )));
        }
        Ok(())
    }

    pub fn check_command(&self, command: &Command) -> Result<()> {
        if let Command::DeletePrefix { prefix } = command {
            // An empty prefix is every key (as `etcdctl del "" --prefix`).
            if prefix.len() > self.max_key_bytes {
                return Err(Error::InvalidArgument(format!(
                    "prefix is {} bytes, limit is {}",
                    prefix.len(),
                    self.max_key_bytes
                )));
            }
            return Ok(());
        }
        let keys = command.keys();
        if keys.is_empty() {
            return Err(Error::InvalidArgument(
                "a write needs at least one key".into(),
            ));
        }
        let values = command.values();
        let bytes: usize = keys.iter().map(|k| k.len()).sum::<usize>()
            + values.iter().map(|v| v.len()).sum::<usize>();
        if let Command::PutMany { pairs } = command {
            self.check_batch("a batch write", pairs.len(), bytes)?;
        }
        if bytes > self.max_entry_bytes {
            return Err(Error::InvalidArgument(format!(
                "a log entry of {bytes} bytes asked, limit is {}",
                self.max_entry_bytes
            )));
        }
        keys.into_iter().try_for_each(|k| self.check_key(k))?;
        values.into_iter().try_for_each(|v| self.check_value(v))
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

/// How close (in entries) a new replica must be to its leader before a move makes it a voter.
pub const REPLICATION_LAG_THRESHOLD: u64 = 64;

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
            // A node cut off (or briefly stalled) asks first whether it could win before it
            // raises its term, as etcd and TiKV do: back on the network, it rejoins as a follower
            // instead of deposing a working leader (the fault suite saw shards lose their leader
            // for a second after every heal without it).
            enable_pre_vote: Some(true),
            // A blocking add_learner (a move's catch-up step) returns once the learner is
            // within this many entries of the leader. openraft's default (5,000) let a move
            // make a replica a voter before it had received its snapshot, whenever the shard's
            // log was shorter than that, however much data it held.
            replication_lag_threshold: REPLICATION_LAG_THRESHOLD,
            // A group under writes needs no heartbeats: a follower that acknowledged an append
            // within the last interval is not sent one (replication doubles as heartbeat, and
            // its answers renew the leader's lease). Heartbeats resume once writes stop.
            heartbeat_min_interval: Some(self.heartbeat_min_interval_ms()),
            // A replication stream that failed once waits before it tries that follower
            // again. openraft's default starts at 200 ms and doubles to 1 s, so two lost
            // messages in a row stalled a follower for 600 ms, and with both followers stalled
            // a shard stopped committing for over a second on a lossy link (the fault suite's
            // per-key floor failed on it in CI; a deterministic replay showed why). Starting
            // small keeps a lost message cheap; a node that stays down is still asked only
            // every 500 ms once the delays have grown.
            backoff: "10ms 20ms ...500ms".into(),
            ..Default::default()
        };
        let config = config
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("raft timing: {e}")))?;
        Ok(Arc::new(config))
    }

    /// One heartbeat interval, or less where the election timeout leaves less room: a
    /// suppressed heartbeat goes out at the first tick (`heartbeat * 13 / 64`) after
    /// `heartbeat + min_interval`, which must stay before any follower's election timeout.
    fn heartbeat_min_interval_ms(&self) -> u64 {
        let tick = self.heartbeat_ms * 13 / 64;
        let room = self
            .election_timeout_min_ms
            .saturating_sub(self.heartbeat_ms + tick + 1);
        self.heartbeat_ms.min(room)
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
    /// Test mode: a crashed node loses what RocksDB's WAL buffer held and never wrote to its
    /// file, as a killed process would (the files are kept as they were at the crash; RocksDB's
    /// close would otherwise write the buffer out). The WAL is flushed manually, as in
    /// production. `lose_unsynced_on_crash` takes precedence (it writes the WAL at once).
    pub lose_unflushed_on_crash: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            sync: true,
            lose_unsynced_on_crash: false,
            lose_unflushed_on_crash: false,
        }
    }
}

/// Switches that break guarantees on purpose, so tests can prove the checks bite. Never set
/// them outside tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TestSwitches {
    /// Answer `Linearizable` reads from the local replica without ReadIndex (any role).
    pub unsafe_local_linearizable_reads: bool,
    /// Every in-process message draws from the OS's randomness instead of the run's: a
    /// deterministic run twice with the same seed no longer agrees (proves the replay check
    /// bites).
    #[serde(default)]
    pub stray_random: bool,
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
        let system = crate::sim::unix_ms() as i64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_groups_skip_heartbeats_for_one_interval_and_never_past_an_election_timeout() {
        let default = RaftTiming::default();
        let config = default.to_openraft().expect("default timing");
        assert_eq!(config.heartbeat_min_interval, Some(default.heartbeat_ms));
        // Tight timings (the tests' fast clusters) get what fits, and openraft accepts it.
        for (heartbeat_ms, min, max) in [(50, 150, 300), (20, 60, 120), (100, 150, 300)] {
            let timing = RaftTiming {
                heartbeat_ms,
                election_timeout_min_ms: min,
                election_timeout_max_ms: max,
                ..RaftTiming::default()
            };
            let config = timing.to_openraft().expect("valid timing");
            let suppressed = config.heartbeat_min_interval.unwrap_or(0);
            assert!(suppressed <= heartbeat_ms);
            if suppressed > 0 {
                assert!(heartbeat_ms + suppressed + heartbeat_ms * 13 / 64 < min);
            }
        }
    }
}
