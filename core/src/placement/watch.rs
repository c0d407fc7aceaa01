//! Leader changes as they happen: each node watches the groups it hosts and records
//! `leader_changed` when it becomes a group's leader in a new term, naming the leader it had
//! followed before. No manager round trip is involved, so the event lands within a tick of the
//! election, whatever the manager is busy with.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;

use crate::placement::events::EventLog;
use crate::replica::node::Node;
use crate::routing::sharding::META_GROUP;
use crate::types::{GroupId, NodeId};

/// How often a node looks at its groups' leaders.
const TICK: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Seen {
    /// The last leader this node saw other than itself.
    previous: Option<NodeId>,
    /// The term this node last recorded itself as leader in.
    recorded_term: Option<u64>,
}

/// Starts the watcher of `node` (it ends when the node is dropped or shut down).
pub fn spawn(node: &Arc<Node>, events: Arc<EventLog>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(node);
    tokio::spawn(run(weak, events))
}

async fn run(weak: Weak<Node>, events: Arc<EventLog>) {
    let mut seen: HashMap<GroupId, Seen> = HashMap::new();
    loop {
        tokio::time::sleep(TICK).await;
        let Some(node) = weak.upgrade() else { return };
        if node.is_stopping() {
            return;
        }
        let me = node.id();
        let groups = node.groups();
        seen.retain(|g, _| groups.contains(g));
        for group in groups {
            let Some(raft) = node.raft(group) else {
                continue;
            };
            let (leader, term) = {
                let m = raft.metrics().borrow_watched().clone();
                (m.current_leader, m.current_term)
            };
            let s = seen.entry(group).or_default();
            match leader {
                Some(l) if l == me && s.recorded_term != Some(term) => {
                    s.recorded_term = Some(term);
                    events.record("leader_changed", describe(group, s.previous, me, term));
                }
                Some(l) if l != me => s.previous = Some(l),
                _ => {}
            }
        }
    }
}

fn describe(group: GroupId, from: Option<NodeId>, to: NodeId, term: u64) -> String {
    let what = if group == META_GROUP {
        "manager group".to_string()
    } else {
        format!("shard {group}")
    };
    match from {
        Some(f) => format!("{what}: node {f} -> node {to} (term {term})"),
        None => format!("{what}: none -> node {to} (term {term})"),
    }
}
