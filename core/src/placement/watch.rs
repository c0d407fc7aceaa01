//! Each node watches the groups it hosts. It records `leader_changed` when it becomes a group's
//! leader in a new term, naming the leader it had followed before (no manager round trip, so
//! the event lands within a tick of the election, whatever the manager is busy with). And it
//! restarts a group that openraft stopped as Fatal (a storage error, say a failed snapshot
//! install), with back-off, recording `group_restarted`: the group resumes from what its
//! storage holds, instead of staying dead until the process restarts.
//!
//! A failed store (a write or WAL sync refused, say on a full disk) is the node's problem, not
//! one group's: RocksDB refuses every write after one fails. The node stops all its groups at
//! once (`storage_failed`: their leaderships move to replicas that can persist, and nothing is
//! acknowledged that was not persisted), then probes for room with back-off and, once a probe
//! write passes, reopens its store and restarts the groups (`storage_recovered`), which catch up
//! from their leaders.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;

use crate::placement::events::EventLog;
use crate::replica::node::Node;
use crate::sharding::META_GROUP;
use crate::types::{GroupId, NodeId};

/// How often a node looks at its groups' leaders.
const TICK: Duration = Duration::from_millis(50);

/// First wait before restarting a Fatal group; doubled per restart, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// First wait before probing a failed store for room again; doubled per failed probe, up to
/// `MAX_STORE_BACKOFF` (short: an operator who frees space expects the node back promptly).
const FIRST_STORE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_STORE_BACKOFF: Duration = Duration::from_secs(5);

/// A failed store's state in the watcher: stopped groups, next probe.
struct FailedStore {
    next_probe: Instant,
    backoff: Duration,
}

#[derive(Default)]
struct Seen {
    /// The last leader this node saw other than itself.
    previous: Option<NodeId>,
    /// The term this node last recorded itself as leader in.
    recorded_term: Option<u64>,
    /// Back-off of Fatal-group restarts: the next wait, and when it was found Fatal.
    backoff: Option<Duration>,
    fatal_since: Option<Instant>,
}

/// Starts the watcher of `node` (it ends when the node is dropped or shut down).
pub fn spawn(node: &Arc<Node>, events: Arc<EventLog>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(node);
    tokio::spawn(run(weak, events))
}

async fn run(weak: Weak<Node>, events: Arc<EventLog>) {
    let mut seen: BTreeMap<GroupId, Seen> = BTreeMap::new();
    let mut failed: Option<FailedStore> = None;
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(node) = weak.upgrade() else { return };
        if node.is_stopping() {
            return;
        }
        let me = node.id();
        match node.storage_failure() {
            Some(error) => {
                watch_failed_store(&node, &events, &error, &mut failed).await;
                continue;
            }
            None => failed = None,
        }
        ticks += 1;
        if ticks.is_multiple_of(CHILD_CHECK_TICKS) {
            start_unbuilt_children(&node, &events).await;
        }
        // Children of splits this node applied (a restart would start them from disk too).
        for (child, outcome) in node.start_born_children().await {
            if let Err(e) = outcome {
                events.record(
                    "group_unstartable",
                    format!(
                        "shard {child} (split off its parent) could not start on node {me}: {e}"
                    ),
                );
            }
        }
        // One pass over the group table, metrics read in place (a clone of each group's
        // metrics and handle per tick was the larger part of an idle node's own work); Fatal
        // groups are restarted after it.
        let mut present = Vec::new();
        let mut fatal = Vec::new();
        node.each_group(|group, raft| {
            present.push(group);
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            if let Err(e) = &m.running_state {
                fatal.push((group, e.to_string()));
                return;
            }
            let s = seen.entry(group).or_default();
            match m.current_leader {
                Some(l) if l == me && s.recorded_term != Some(m.current_term) => {
                    s.recorded_term = Some(m.current_term);
                    events.record(
                        "leader_changed",
                        describe(group, s.previous, me, m.current_term),
                    );
                }
                Some(l) if l != me => s.previous = Some(l),
                _ => {}
            }
        });
        present.sort_unstable();
        seen.retain(|g, _| present.binary_search(g).is_ok());
        fatal.sort_unstable();
        for (group, error) in fatal {
            let s = seen.entry(group).or_default();
            let wait = s.backoff.unwrap_or(FIRST_BACKOFF);
            let since = *s.fatal_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= wait {
                s.fatal_since = None;
                s.backoff = Some((wait * 2).min(MAX_BACKOFF));
                node.stop_group(group).await;
                let outcome = match node.start_group(group).await {
                    Ok(_) => "restarted".to_string(),
                    Err(e) => format!("restart failed: {e}"),
                };
                events.record(
                    "group_restarted",
                    format!(
                        "{} on node {me} was Fatal ({error}): {outcome}",
                        name(group)
                    ),
                );
            }
        }
    }
}

/// How often (in ticks) a node looks for split children the map gives it that it runs no
/// replica of.
const CHILD_CHECK_TICKS: u64 = 20;

/// Starts, empty, the replicas of split children that the map gives this node and that it will
/// not build itself: its replica of the parent got the split inside a snapshot (or it has none).
/// The child's leader fills them with a snapshot (its log starts after the split entry). A
/// replica whose parent has not applied the split yet is left to build the child when it does.
async fn start_unbuilt_children(node: &Node, events: &EventLog) {
    let me = node.id();
    let (map, unstartable) = (node.shard_map(), node.unstartable_groups());
    let Ok(store) = node.store() else { return };
    for shard in map.shards.iter().filter(|s| s.replicas.contains(&me)) {
        let Some((parent, version)) = shard.split_from else {
            continue;
        };
        if node.raft(shard.id).is_some() || unstartable.contains_key(&shard.id) {
            continue;
        }
        let parent_behind =
            node.raft(parent).is_some() && store.shard_version(parent).is_ok_and(|v| v < version);
        if parent_behind {
            continue;
        }
        match node.start_group(shard.id).await {
            Ok(_) => events.record(
                "split_child_started",
                format!("shard {} on node {me}: its parent's replica had no split to build it from; filled by its leader", shard.id),
            ),
            Err(e) => tracing::debug!(shard = shard.id, error = %e, "starting a split child"),
        }
    }
}

/// Fences a node whose store failed (once), then probes and reopens it with back-off.
async fn watch_failed_store(
    node: &Node,
    events: &EventLog,
    error: &str,
    failed: &mut Option<FailedStore>,
) {
    let me = node.id();
    let Some(state) = failed else {
        let stopped = node.fence_failed_store().await;
        events.record(
            "storage_failed",
            format!(
                "node {me} cannot persist ({error}): it stopped its {} groups and rejoins them once its disk has room",
                stopped.len()
            ),
        );
        *failed = Some(FailedStore {
            next_probe: Instant::now() + FIRST_STORE_BACKOFF,
            backoff: FIRST_STORE_BACKOFF,
        });
        return;
    };
    if Instant::now() < state.next_probe {
        return;
    }
    match node.reopen_failed_store().await {
        Ok(groups) => {
            events.record(
                "storage_recovered",
                format!(
                    "node {me} reopened its store and restarted {} groups",
                    groups.len()
                ),
            );
            *failed = None;
        }
        Err(e) => {
            tracing::warn!(node = me, error = %e, "store still cannot be reopened");
            state.backoff = (state.backoff * 2).min(MAX_STORE_BACKOFF);
            state.next_probe = Instant::now() + state.backoff;
        }
    }
}

fn name(group: GroupId) -> String {
    if group == META_GROUP {
        "manager group".to_string()
    } else {
        format!("shard {group}")
    }
}

fn describe(group: GroupId, from: Option<NodeId>, to: NodeId, term: u64) -> String {
    let what = name(group);
    match from {
        Some(f) => format!("{what}: node {f} -> node {to} (term {term})"),
        None => format!("{what}: none -> node {to} (term {term})"),
    }
}
