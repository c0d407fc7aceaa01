//! Faults injected inside a node's handling of voter changes, armed at run time by tests. The
//! network faults of the embedded cluster lose or delay whole messages; these reach the moments
//! between the steps of one membership change, which message faults cannot aim at. The embedded
//! cluster shares one set among its nodes ([`EmbeddedCluster::failpoints`]); all are off by
//! default and cost one atomic load when off.
//!
//! [`EmbeddedCluster::failpoints`]: crate::EmbeddedCluster::failpoints

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::types::NodeId;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Failpoints {
    interrupt_after_joint: AtomicU32,
    fail_voter_changes: AtomicU32,
    hold_armed: AtomicBool,
    holding: AtomicBool,
    /// The node holding the held change (0: none yet).
    holder: AtomicU64,
    release: Notify,
    delete_sent_snapshots: AtomicU32,
    cut_snapshot_transfers: AtomicU32,
    snapshot_transfers_cut: AtomicU64,
    fail_snapshot_installs: AtomicU32,
    /// Node whose state machine sleeps in every apply (0: none), and for how long (ms).
    slow_applies_node: AtomicU64,
    slow_applies_ms: AtomicU64,
    /// Node whose snapshot installs sleep first (0: none), and for how long (ms).
    slow_installs_node: AtomicU64,
    slow_installs_ms: AtomicU64,
    /// How long a sender waits for its last chunk's answer before it asks again (ms; 0: the
    /// default).
    install_wait_ms: AtomicU64,
    /// Nodes whose log writer takes no round until released.
    held_writers: std::sync::Mutex<std::collections::BTreeSet<NodeId>>,
    writers_released: std::sync::Condvar,
    /// Node whose log writer sleeps before every WAL sync (0: none), and for how long (ms).
    slow_syncs_node: AtomicU64,
    slow_syncs_ms: AtomicU64,
    /// Log writer rounds (of any node) that panic.
    panic_writer_rounds: AtomicU32,
}

impl Failpoints {
    /// The next `n` voter changes stop once the joint config is committed: leadership moves to
    /// another voter and the caller gets an error, as when the leader changes or the caller's
    /// call times out between openraft's two steps. The group is left in joint consensus.
    pub fn interrupt_after_joint_step(&self, n: u32) {
        self.interrupt_after_joint.store(n, Ordering::SeqCst);
    }

    /// The next `n` voter changes fail before changing anything.
    pub fn fail_voter_changes(&self, n: u32) {
        self.fail_voter_changes.store(n, Ordering::SeqCst);
    }

    /// The next voter change waits at the node that received it until [`release`](Self::release):
    /// a request delayed in the network, delivered after its sender lost its role.
    pub fn hold_next_voter_change(&self) {
        self.hold_armed.store(true, Ordering::SeqCst);
    }

    /// The next `n` snapshot transfers: once a transfer has started, the sender's snapshot file
    /// is deleted, as the sender's next `build_snapshot` would delete it.
    pub fn delete_sent_snapshots(&self, n: u32) {
        self.delete_sent_snapshots.store(n, Ordering::SeqCst);
    }

    /// The next `n` snapshot transfers are cut after their first chunk.
    pub fn cut_snapshot_transfers(&self, n: u32) {
        self.cut_snapshot_transfers.store(n, Ordering::SeqCst);
    }

    /// The next `n` snapshot installs fail inside the state machine (a storage error: openraft
    /// makes the group Fatal).
    pub fn fail_snapshot_installs(&self, n: u32) {
        self.fail_snapshot_installs.store(n, Ordering::SeqCst);
    }

    /// Every apply on `node` sleeps `delay` before it writes (a slow disk, or a long queue of
    /// entries): what a group's stop must wait out. `Duration::ZERO` turns it off.
    pub fn slow_applies_on(&self, node: NodeId, delay: std::time::Duration) {
        self.slow_applies_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.slow_applies_node.store(node, Ordering::SeqCst);
    }

    pub(crate) fn apply_delay(&self, node: NodeId) -> Option<std::time::Duration> {
        if self.slow_applies_node.load(Ordering::Relaxed) != node {
            return None;
        }
        let ms = self.slow_applies_ms.load(Ordering::SeqCst);
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    /// Every snapshot install on `node` sleeps `delay` first (a big snapshot's ingest on a slow
    /// disk). `Duration::ZERO` turns it off.
    pub fn slow_snapshot_installs_on(&self, node: NodeId, delay: std::time::Duration) {
        self.slow_installs_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.slow_installs_node.store(node, Ordering::SeqCst);
    }

    /// Senders wait `wait` for the answer to a transfer's last chunk (its install included)
    /// before they ask again, instead of a chunk's transfer time plus
    /// [`SNAPSHOT_INSTALL_TIMEOUT`](crate::network::SNAPSHOT_INSTALL_TIMEOUT).
    pub fn snapshot_install_wait(&self, wait: std::time::Duration) {
        self.install_wait_ms
            .store(wait.as_millis() as u64, Ordering::SeqCst);
    }

    pub(crate) fn install_delay(&self, node: NodeId) -> Option<std::time::Duration> {
        if self.slow_installs_node.load(Ordering::Relaxed) != node {
            return None;
        }
        let ms = self.slow_installs_ms.load(Ordering::SeqCst);
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    pub(crate) fn last_chunk_wait(&self) -> std::time::Duration {
        match self.install_wait_ms.load(Ordering::Relaxed) {
            0 => crate::network::SNAPSHOT_CHUNK_TIMEOUT + crate::network::SNAPSHOT_INSTALL_TIMEOUT,
            ms => std::time::Duration::from_millis(ms),
        }
    }

    pub(crate) fn take_fail_snapshot_install(&self) -> bool {
        take_one(&self.fail_snapshot_installs)
    }

    /// Snapshot transfers cut so far.
    pub fn snapshot_transfers_cut(&self) -> u64 {
        self.snapshot_transfers_cut.load(Ordering::SeqCst)
    }

    pub(crate) fn take_delete_sent_snapshot(&self) -> bool {
        take_one(&self.delete_sent_snapshots)
    }

    pub(crate) fn take_cut_snapshot_transfer(&self) -> bool {
        let cut = take_one(&self.cut_snapshot_transfers);
        if cut {
            self.snapshot_transfers_cut.fetch_add(1, Ordering::SeqCst);
        }
        cut
    }

    /// Interruptions armed by [`interrupt_after_joint_step`](Self::interrupt_after_joint_step)
    /// that have not fired yet.
    pub fn interrupts_left(&self) -> u32 {
        self.interrupt_after_joint.load(Ordering::SeqCst)
    }

    /// Voter-change failures armed that have not fired yet.
    pub fn failures_left(&self) -> u32 {
        self.fail_voter_changes.load(Ordering::SeqCst)
    }

    /// The node where the held voter change waits (or waited).
    pub fn holder(&self) -> Option<NodeId> {
        Some(self.holder.load(Ordering::SeqCst)).filter(|n| *n != 0)
    }

    /// Whether a voter change is waiting for [`release`](Self::release).
    pub fn is_holding(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// Lets the held voter change go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Called when a voter change arrives: waits if it is to be held. Returns whether it was.
    pub(crate) async fn held(&self, node: NodeId) -> bool {
        if !self.hold_armed.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.holder.store(node, Ordering::SeqCst);
        self.holding.store(true, Ordering::SeqCst);
        self.release.notified().await;
        self.holding.store(false, Ordering::SeqCst);
        true
    }

    /// The log writer of `node` takes no new round until [`release_log_writer`]: its queue
    /// grows, everything queued is readable from the groups' caches and nothing reaches RocksDB
    /// (a stalled disk, a RocksDB write stall). Only where rounds run on the writer's own thread
    /// (not in a deterministic run, whose one thread would wait forever).
    ///
    /// [`release_log_writer`]: Self::release_log_writer
    pub fn hold_log_writer(&self, node: NodeId) {
        if let Ok(mut held) = self.held_writers.lock() {
            held.insert(node);
        }
    }

    /// Lets the log writer of `node` go on.
    pub fn release_log_writer(&self, node: NodeId) {
        if let Ok(mut held) = self.held_writers.lock() {
            held.remove(&node);
        }
        self.writers_released.notify_all();
    }

    /// Blocks the calling writer thread while the writer of `node` is held.
    pub(crate) fn wait_while_writer_held(&self, node: NodeId) {
        let Ok(mut held) = self.held_writers.lock() else {
            return;
        };
        while held.contains(&node) {
            held = match self.writers_released.wait(held) {
                Ok(h) => h,
                Err(_) => return,
            };
        }
    }

    /// Every WAL sync of `node`'s log writer sleeps `delay` first (a slow fsync: the writer lags
    /// behind what its groups queue and apply). `Duration::ZERO` turns it off.
    pub fn slow_syncs_on(&self, node: NodeId, delay: std::time::Duration) {
        self.slow_syncs_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.slow_syncs_node.store(node, Ordering::SeqCst);
    }

    pub(crate) fn sync_delay(&self, node: NodeId) -> Option<std::time::Duration> {
        if self.slow_syncs_node.load(Ordering::Relaxed) != node {
            return None;
        }
        let ms = self.slow_syncs_ms.load(Ordering::SeqCst);
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    /// The next `n` log writer rounds (of any node) panic before they write.
    pub fn panic_in_writer_rounds(&self, n: u32) {
        self.panic_writer_rounds.store(n, Ordering::SeqCst);
    }

    pub(crate) fn take_writer_panic(&self) -> bool {
        take_one(&self.panic_writer_rounds)
    }

    pub(crate) fn take_fail(&self) -> bool {
        take_one(&self.fail_voter_changes)
    }

    pub(crate) fn take_interrupt(&self) -> bool {
        take_one(&self.interrupt_after_joint)
    }
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}
