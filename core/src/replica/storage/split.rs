//! Splitting a shard inside its replicas. A split is an entry of the parent's log
//! ([`ProposalBody::Split`](crate::types::ProposalBody)), applied at the same index on every
//! replica. Applying it:
//! - checks the plan against the parent's descriptor (version) and membership: a split planned
//!   before either changed is refused, and changes nothing;
//! - narrows the parent's descriptor, and moves the child's keys out of the parent's data into
//!   the child's, in the same batch (so the parent never serves them again, and a scan of both
//!   returns each key once);
//! - builds the child from that index, unless this node already has a replica of it: its data,
//!   log clock and descriptor, the parent's membership, and Raft state that says "applied and
//!   purged up to the split entry, voted in its term". Its log starts after the split entry, so
//!   a replica that has no child (it got the split inside a later snapshot of the parent) is
//!   filled by a snapshot of the child, never by appends onto nothing.
//!
//! Such a batch is written through the WAL and synced, after the applies before it are flushed
//! (see `StateMachine::apply`): the child's Raft state must never be durable without its data,
//! nor the parent's applied index behind a child that exists.
//!
//! Ownership: once a shard has a descriptor, a write naming a key outside it is answered
//! [`CommandResult::WrongShard`] and applies nothing, checked after the exactly-once lookup (a
//! retry of a write applied before the split still gets its first result). Reads check the
//! descriptor in the snapshot they read from.

use std::io;

use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::keys::{self, CF_RAFT, CF_SM};
use super::state_machine::BatchView;
use super::{encode, io_err, NodeStore};
use crate::sharding::{ShardDescriptor, SplitPlan};
use crate::types::{Command, CommandResult, GroupId, LogId, StoredMembership, Vote};

/// The descriptor `group` has stored, if it was ever split.
pub(crate) fn read_descriptor(
    store: &NodeStore,
    group: GroupId,
) -> io::Result<Option<ShardDescriptor>> {
    store.get_value(CF_SM, &descriptor_key(group))
}

pub(crate) fn descriptor_key(group: GroupId) -> [u8; 10] {
    keys::replicated_meta_key(group, keys::SM_DESCRIPTOR)
}

/// Whether this node holds any state of `group` (Raft state or an applied state machine).
fn has_state(store: &NodeStore, group: GroupId) -> io::Result<bool> {
    let (start, end) = (keys::group_prefix(group).to_vec(), keys::group_end(group));
    for cf in [CF_RAFT, CF_SM] {
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(end.clone());
        let mut iter = store.db.iterator_cf_opt(
            store.cf(cf),
            ro,
            IteratorMode::From(&start, Direction::Forward),
        );
        if iter.next().transpose().map_err(io_err)?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

impl BatchView<'_> {
    /// Whether every key `command` names belongs to this shard (a shard never split owns what
    /// the map gives it: the node checked that before proposing).
    pub(super) fn owns(&self, command: &Command) -> bool {
        match &self.descriptor {
            None => true,
            Some(d) => command.keys().iter().all(|k| d.covers_key(k)),
        }
    }

    /// Applies a split of this shard at `log_id` (see the module docs). `membership`: the
    /// group's membership as of this entry.
    pub(super) fn apply_split(
        &mut self,
        log_id: LogId,
        plan: SplitPlan,
        membership: StoredMembership,
    ) -> io::Result<CommandResult> {
        let before = self.descriptor.clone().unwrap_or_else(|| ShardDescriptor {
            ranges: plan.ranges.clone(),
            version: 0,
        });
        if plan.parent != self.group {
            return Ok(rejected(format!(
                "a split of shard {} reached shard {}",
                plan.parent, self.group
            )));
        }
        if plan.membership.is_some() && plan.membership != *membership.log_id() {
            return Ok(rejected(format!(
                "shard {}'s membership changed since the split was planned",
                self.group
            )));
        }
        let (parent, child) = match plan.divide(&before) {
            Ok(d) => d,
            Err(reason) => return Ok(rejected(reason)),
        };
        let cf = self.store.cf(CF_SM);
        let build_child = !has_state(self.store, plan.child)?;
        // Every key of the parent that now belongs to the child leaves the parent; the child
        // gets it when this node builds the child.
        for key in self.keys_with_prefix(b"")? {
            if !child.covers_key(&key) {
                continue;
            }
            if let Some(value) = self.get(&key)? {
                if build_child {
                    self.batch
                        .put_cf(cf, keys::data_key(plan.child, &key), &value);
                }
                self.delete(&key);
            }
        }
        self.batch
            .put_cf(cf, descriptor_key(self.group), encode(&parent)?);
        if build_child {
            let c = plan.child;
            self.batch.put_cf(cf, descriptor_key(c), encode(&child)?);
            self.batch.put_cf(
                cf,
                keys::replicated_meta_key(c, keys::SM_CLOCK),
                encode(&self.clock_ms)?,
            );
            self.batch.put_cf(
                cf,
                keys::sm_meta_key(c, keys::SM_APPLIED),
                encode(&Some(log_id))?,
            );
            self.batch.put_cf(
                cf,
                keys::sm_meta_key(c, keys::SM_MEMBERSHIP),
                encode(&Some(membership))?,
            );
            let raft = self.store.cf(CF_RAFT);
            let leader = log_id.committed_leader_id();
            let vote = Vote::new(leader.term, leader.node_id);
            self.batch
                .put_cf(raft, keys::raft_key(c, keys::RAFT_VOTE), encode(&vote)?);
            self.batch.put_cf(
                raft,
                keys::raft_key(c, keys::RAFT_COMMITTED),
                encode(&Some(log_id))?,
            );
            self.batch
                .put_cf(raft, keys::raft_key(c, keys::RAFT_PURGED), encode(&log_id)?);
            self.born.push(c);
        }
        self.split = true;
        let version = parent.version;
        self.descriptor = Some(parent);
        Ok(CommandResult::Split { version })
    }
}

fn rejected(reason: String) -> CommandResult {
    CommandResult::Rejected { reason }
}
