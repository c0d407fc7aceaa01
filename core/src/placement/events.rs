//! A bounded log of cluster events (elections, moves, nodes up and down) for people to read.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `leader_changed` (recorded by the new leader within a tick), `node_started`,
    /// `node_stopped` (embedded cluster, at once), `move_started`, `move_finished`,
    /// `move_rolled_back`, `orphan_replica_removed`, `membership_repaired`, `node_up`,
    /// `node_down` (the manager's view), `node_added`, `node_removed`, `replication_changed`,
    /// `group_restarted` (a Fatal group restarted), `storage_failed` (a node's store refused a
    /// write: it stops its groups), `storage_recovered` (it reopened its store and rejoined),
    /// `group_unstartable` (a group's stored state could not start; the node runs the others).
    pub kind: String,
    pub detail: String,
}

/// Keeps the last `capacity` events.
#[derive(Debug)]
pub struct EventLog {
    capacity: usize,
    events: Mutex<VecDeque<Event>>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::new(1000)
    }
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        EventLog {
            capacity: capacity.max(1),
            events: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, kind: &str, detail: impl Into<String>) {
        let time_ms = crate::sim::unix_ms();
        let event = Event {
            time_ms,
            kind: kind.to_string(),
            detail: detail.into(),
        };
        tracing::info!(kind, detail = %event.detail, "cluster event");
        if let Ok(mut e) = self.events.lock() {
            if e.len() == self.capacity {
                e.pop_front();
            }
            e.push_back(event);
        }
    }

    /// Events, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_only_the_newest_events() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.record("node_up", format!("{i}"));
        }
        let details: Vec<String> = log.snapshot().into_iter().map(|e| e.detail).collect();
        assert_eq!(details, vec!["2", "3", "4"]);
    }
}
