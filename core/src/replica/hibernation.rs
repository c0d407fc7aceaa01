//! Idle groups hibernate: a group with nothing to do costs no timer, no heartbeat and no wake-up
//! on any of its replicas, so a node can host many idle shards (TiKV's hibernate regions,
//! CockroachDB's quiesced ranges).
//!
//! - **Falling asleep.** A leader whose group has had no write, linearizable read or membership
//!   change for [`idle_after`](Hibernation) and whose every replica holds and has committed its
//!   whole log claims the group asleep: it names it (group, term, last index) in the liveness
//!   exchange below, keeps heartbeating for two more exchanges so that every follower hears the
//!   claim before its election timer could fire, then stops its Raft ticker (openraft's runtime
//!   toggle: a stopped ticker parks and wakes nothing). A follower (or learner) stops its ticker
//!   once its leader's claim matches what it holds: the same leader and term, the same last
//!   index, all of it committed.
//! - **One liveness exchange per node pair.** Every node sends each peer, every two heartbeat
//!   intervals, the groups it leads that are asleep, and gets the peer's back: one message per
//!   node pair covers every sleeping group (coalesced heartbeats).
//! - **Waking.** A write, a linearizable read or an admin change at the leader starts its ticker
//!   again (a lease read after sleep confirms leadership by a heartbeat round instead of a lease
//!   that has run out). A follower starts its ticker again at once when its leader's claim goes
//!   (the leader woke), when it stops hearing from the leader's node for an election timeout
//!   (the node died or is cut off: the follower's lease has long run out, so it stands for
//!   election at its next tick, and failover stays within today's bound), or when a Raft message
//!   other than a heartbeat arrives for the group (entries, a vote, a snapshot).
//! - **What a sleeping group keeps.** A round in which a group falls asleep syncs the node's
//!   store: the group's last committed mark is durable, so a replica that crashes and restarts
//!   comes back with its whole log committed and matches its leader's claim again at once.
//! - **Leases run out, the leader stays.** Nobody's lease is renewed while a group sleeps, so
//!   Raft's lease check would grant any pre-vote. A replica refuses a pre-vote for a sleeping
//!   group while its leader is known to be present: it leads the group and claims it asleep
//!   (it then wakes the group, and its heartbeats reach the asker), or its leader's node
//!   claimed the group asleep at its term within `silent_after`. A replica back from a restart
//!   or a liveness gap deposes no healthy leader; a leader whose node went silent is replaced
//!   as before, once the claim is older than `silent_after`.
//!
//! Safety does not rest on any of this: Raft's votes and terms decide leadership whatever the
//! tickers do. Hibernation only decides when a replica's timers run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use crate::config::RaftTiming;
use crate::replica::network::{AdminReply, AdminRequest, PeerRequest, PeerResponse, RaftRpc};
use crate::replica::node::Node;
use crate::replica::Raft;
use crate::types::{GroupId, NodeId};

/// A group its leader has put to sleep, as the leader's node tells its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asleep {
    pub group: GroupId,
    pub term: u64,
    pub last_index: Option<u64>,
}

/// One group's hibernation state on this node.
#[derive(Debug, Clone, Copy)]
struct GroupState {
    last_active: Instant,
    /// Whether this node turned the group's ticker off.
    stopped: bool,
    /// As leader: the claim this node makes, and since when.
    claim: Option<(Instant, Asleep)>,
}

/// What a peer node said last, and when.
struct Heard {
    at: Instant,
    asleep: BTreeMap<GroupId, Asleep>,
}

/// The hibernation of every group on one node.
pub(crate) struct Hibernation {
    groups: Mutex<BTreeMap<GroupId, GroupState>>,
    heard: Mutex<BTreeMap<NodeId, Heard>>,
    /// Peers with a liveness exchange in flight (one at a time per peer).
    asking: Mutex<BTreeSet<NodeId>>,
    interval: Duration,
    idle_after: Duration,
    /// A peer not heard from for this long is taken for dead: its sleeping groups wake.
    silent_after: Duration,
    /// Times a group's ticker was stopped and started again on this node.
    pub(crate) sleeps: AtomicU64,
    pub(crate) wakes: AtomicU64,
}

impl Hibernation {
    pub(crate) fn new(timing: &RaftTiming) -> Hibernation {
        let heartbeat = Duration::from_millis(timing.heartbeat_ms.max(1));
        Hibernation {
            groups: Mutex::new(BTreeMap::new()),
            heard: Mutex::new(BTreeMap::new()),
            asking: Mutex::new(BTreeSet::new()),
            interval: heartbeat * 2,
            idle_after: heartbeat * 10,
            silent_after: Duration::from_millis(timing.election_timeout_max_ms).max(heartbeat * 6),
            sleeps: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
        }
    }

    /// The group is in use (a write, a read, an admin change, a Raft message with work in it):
    /// its ticker runs, and it claims no sleep. Returns whether it was asleep.
    pub(crate) fn active(&self, group: GroupId, raft: &Raft) -> bool {
        let Ok(mut groups) = self.groups.lock() else {
            return false;
        };
        let state = groups.entry(group).or_insert(GroupState {
            last_active: Instant::now(),
            stopped: false,
            claim: None,
        });
        state.last_active = Instant::now();
        let was_asleep = state.stopped;
        state.claim = None;
        if state.stopped {
            state.stopped = false;
            raft.runtime_config().tick(true);
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
        was_asleep
    }

    /// A Raft message for the group arrived: anything but a heartbeat wakes it.
    pub(crate) fn message(&self, group: GroupId, raft: &Raft, rpc: &RaftRpc) {
        if !matches!(rpc, RaftRpc::Append(a) if a.entries.is_empty()) {
            self.active(group, raft);
        }
    }

    /// The group was stopped or started again: a new Raft instance ticks from the start.
    pub(crate) fn forget(&self, group: GroupId) {
        if let Ok(mut groups) = self.groups.lock() {
            groups.remove(&group);
        }
    }

    /// What `from` says: the groups it leads that are asleep.
    pub(crate) fn heard(&self, from: NodeId, asleep: Vec<Asleep>) {
        if let Ok(mut heard) = self.heard.lock() {
            heard.insert(
                from,
                Heard {
                    at: Instant::now(),
                    asleep: asleep.into_iter().map(|a| (a.group, a)).collect(),
                },
            );
        }
    }

    /// The groups this node leads and claims asleep.
    pub(crate) fn claims(&self) -> Vec<Asleep> {
        self.groups
            .lock()
            .map(|g| g.values().filter_map(|s| s.claim.map(|(_, a)| a)).collect())
            .unwrap_or_default()
    }

    /// Whether a pre-vote for `group` is to be refused because its leader is known to be
    /// present, though the group sleeps and no heartbeat renews any lease: this node leads the
    /// group and claims it asleep, or it follows a leader whose node claimed the group asleep,
    /// at this node's term, within `silent_after`. A sleeping group's leases ran out long ago,
    /// so without this a replica that stopped hearing its leader for a while (a restart, a
    /// liveness gap) wins a vote at once and deposes a healthy leader. A leader that refuses
    /// wakes the group: its heartbeats reach the asker and bring it back in line.
    pub(crate) fn refuses_pre_vote(&self, group: GroupId, raft: &Raft) -> bool {
        let (role, term, leader) = {
            let watched = raft.metrics();
            let m = watched.borrow_watched();
            (m.state, m.current_term, m.current_leader)
        };
        match role {
            ServerState::Leader => {
                let claimed = self
                    .groups
                    .lock()
                    .map(|g| g.get(&group).is_some_and(|s| s.claim.is_some()))
                    .unwrap_or(false);
                if claimed {
                    self.active(group, raft);
                }
                claimed
            }
            ServerState::Follower | ServerState::Learner => {
                let Some(leader) = leader else { return false };
                let now = Instant::now();
                self.heard
                    .lock()
                    .map(|heard| {
                        heard.get(&leader).is_some_and(|h| {
                            now.duration_since(h.at) < self.silent_after
                                && h.asleep.get(&group).is_some_and(|c| c.term == term)
                        })
                    })
                    .unwrap_or(false)
            }
            _ => false,
        }
    }

    /// Groups whose ticker this node stopped.
    pub(crate) fn asleep(&self) -> Vec<GroupId> {
        let mut asleep: Vec<GroupId> = self
            .groups
            .lock()
            .map(|g| {
                g.iter()
                    .filter(|(_, s)| s.stopped)
                    .map(|(g, _)| *g)
                    .collect()
            })
            .unwrap_or_default();
        asleep.sort();
        asleep
    }

    /// Looks at every group once: puts idle ones to sleep, wakes those whose leader is gone.
    /// Returns whether a group fell asleep.
    fn round(&self, groups: Vec<(GroupId, Raft)>) -> bool {
        let now = Instant::now();
        let fresh: BTreeMap<NodeId, BTreeMap<GroupId, Asleep>> = self
            .heard
            .lock()
            .map(|heard| {
                heard
                    .iter()
                    .filter(|(_, h)| now.duration_since(h.at) < self.silent_after)
                    .map(|(n, h)| (*n, h.asleep.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let Ok(mut states) = self.groups.lock() else {
            return false;
        };
        let mut fell_asleep = false;
        for (group, raft) in groups {
            let state = states.entry(group).or_insert(GroupState {
                last_active: now,
                stopped: false,
                claim: None,
            });
            // Read under the metrics borrow, not cloned: this runs for every group every round.
            let (role, last, committed, term, leader, settled) = {
                let watched = raft.metrics();
                let m = watched.borrow_watched();
                let last = m.last_log_index;
                let committed = m.local_committed.as_ref().map(|l| l.index);
                let settled = committed == last
                    && m.membership_config.membership().get_joint_config().len() == 1
                    && m.replication
                        .as_ref()
                        .is_some_and(|r| r.values().all(|l| l.as_ref().map(|l| l.index) == last));
                (
                    m.state,
                    last,
                    committed,
                    m.current_term,
                    m.current_leader,
                    settled,
                )
            };
            match role {
                ServerState::Leader => {
                    let idle = now.duration_since(state.last_active) >= self.idle_after;
                    if idle && settled {
                        let claim = Asleep {
                            group,
                            term,
                            last_index: last,
                        };
                        let since = match state.claim {
                            Some((since, c)) if c == claim => since,
                            _ => now,
                        };
                        state.claim = Some((since, claim));
                        // Heartbeats go on until every follower has had the claim twice.
                        if !state.stopped && now.duration_since(since) >= self.interval * 2 {
                            state.stopped = true;
                            raft.runtime_config().tick(false);
                            self.sleeps.fetch_add(1, Ordering::Relaxed);
                            fell_asleep = true;
                        }
                    } else if state.claim.is_some() || state.stopped {
                        state.claim = None;
                        self.wake(state, &raft);
                    }
                }
                ServerState::Follower | ServerState::Learner => {
                    state.claim = None;
                    let claimed = leader.and_then(|leader| {
                        fresh.get(&leader).and_then(|asleep| asleep.get(&group))
                    });
                    let matches = claimed.is_some_and(|c| {
                        c.term == term && c.last_index == last && committed == last
                    });
                    if matches && !state.stopped {
                        state.stopped = true;
                        raft.runtime_config().tick(false);
                        self.sleeps.fetch_add(1, Ordering::Relaxed);
                        fell_asleep = true;
                    } else if !matches && state.stopped {
                        self.wake(state, &raft);
                    }
                }
                _ => {
                    state.claim = None;
                    if state.stopped {
                        self.wake(state, &raft);
                    }
                }
            }
        }
        fell_asleep
    }

    fn wake(&self, state: &mut GroupState, raft: &Raft) {
        if state.stopped {
            state.stopped = false;
            raft.runtime_config().tick(true);
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the hibernation of `node`'s groups and its liveness exchange with its peers (it ends
/// when the node is dropped or shut down).
pub fn spawn(node: &Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(Arc::downgrade(node)))
}

async fn run(weak: Weak<Node>) {
    let interval = match weak.upgrade() {
        Some(node) => node.hibernation().interval,
        None => return,
    };
    // The sync as groups fall asleep runs off this loop: an fsync slowed by a busy disk (another
    // replica's catch-up on the same disk) must not hold up the liveness exchange, whose
    // silence wakes the groups this node leads and elects new leaders.
    let sync_wanted = Arc::new(AtomicBool::new(false));
    let syncing = Arc::new(AtomicBool::new(false));
    loop {
        tokio::time::sleep(interval).await;
        let Some(node) = weak.upgrade() else { return };
        if node.is_stopping() {
            return;
        }
        let groups: Vec<(GroupId, Raft)> = node
            .groups()
            .into_iter()
            .filter_map(|g| node.raft(g).map(|r| (g, r)))
            .collect();
        if node.hibernation().round(groups) {
            // A group asleep has committed its whole log, but its last committed mark was
            // queued without a sync, and nothing syncs it once every group sleeps: a replica
            // that crashed would come back with committed < last, never match its leader's
            // claim, and stand for election. One sync makes what the sleeping groups hold
            // durable, committed marks included.
            sync_wanted.store(true, Ordering::SeqCst);
            if let Ok(store) = node.store() {
                if !syncing.swap(true, Ordering::SeqCst) {
                    let (wanted, syncing, me) = (sync_wanted.clone(), syncing.clone(), node.id());
                    tokio::spawn(async move {
                        while wanted.swap(false, Ordering::SeqCst) {
                            if let Err(e) = store.sync().await {
                                tracing::warn!(node = me, error = %e, "sync as groups fell asleep");
                            }
                        }
                        syncing.store(false, Ordering::SeqCst);
                    });
                }
            }
        }
        let me = node.id();
        let peers: Vec<NodeId> = node
            .shard_map()
            .nodes
            .keys()
            .copied()
            .filter(|n| *n != me)
            .collect();
        for peer in peers {
            let fresh = node
                .hibernation()
                .asking
                .lock()
                .map(|mut a| a.insert(peer))
                .unwrap_or(false);
            if fresh {
                tokio::spawn(exchange(Arc::downgrade(&node), peer, interval * 3));
            }
        }
    }
}

/// One liveness exchange with `peer`: this node's sleeping groups out, the peer's back.
async fn exchange(weak: Weak<Node>, peer: NodeId, timeout: Duration) {
    let Some(node) = weak.upgrade() else { return };
    let request = PeerRequest::Admin(AdminRequest::Liveness {
        from: node.id(),
        asleep: node.hibernation().claims(),
    });
    let peers = node.peers().clone();
    let me = node.id();
    drop(node);
    let reply = peers.send(me, peer, request, timeout).await;
    let Some(node) = weak.upgrade() else { return };
    if let Ok(PeerResponse::Admin(AdminReply::Liveness { node: from, asleep })) = reply {
        if from == peer {
            node.hibernation().heard(peer, asleep);
        }
    }
    let asked = node
        .hibernation()
        .asking
        .lock()
        .map(|mut a| a.remove(&peer));
    drop(asked);
}
