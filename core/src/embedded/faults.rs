//! Network fault injection for the embedded cluster, controllable at run time and seeded.
//!
//! A seed makes the fault *schedule* replayable: the same seed draws the same sequence of
//! drop/delay decisions. It does not make a run deterministic: which message meets which
//! decision depends on how the multi-threaded runtime interleaves tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::WallClock;
use crate::types::NodeId;

/// Message loss, delay and reordering on every link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NetworkFaults {
    /// Fraction of messages lost before delivery (0.0..=1.0).
    pub drop_requests: f64,
    /// Fraction of replies lost after the request was handled (the sender cannot tell a lost
    /// reply from a lost request: an ambiguous outcome).
    pub drop_responses: f64,
    /// Fixed one-way delay added to every message.
    pub delay: Duration,
    /// Extra uniformly random delay per message; messages overtake each other, so this also
    /// reorders them.
    pub jitter: Duration,
    /// Whether client-to-node links suffer the same loss and delay (partitions only ever cut
    /// node-to-node links).
    pub affect_clients: bool,
}

impl NetworkFaults {
    /// Loss (`drop_rate`, 0 to 1, of requests and of replies alike) and delay in milliseconds
    /// (0 to 600,000) on node-to-node and client links, checked: what the bindings'
    /// `set_network` takes.
    pub fn from_rates(drop_rate: f64, delay_ms: f64, jitter_ms: f64) -> crate::Result<Self> {
        if !(0.0..=1.0).contains(&drop_rate) {
            return Err(crate::Error::InvalidArgument(format!(
                "drop rate must be within 0 and 1, not {drop_rate}"
            )));
        }
        for (name, ms) in [("delay", delay_ms), ("jitter", jitter_ms)] {
            if !ms.is_finite() || !(0.0..=600_000.0).contains(&ms) {
                return Err(crate::Error::InvalidArgument(format!(
                    "{name} must be 0 to 600000 ms, not {ms}"
                )));
            }
        }
        Ok(NetworkFaults {
            drop_requests: drop_rate,
            drop_responses: drop_rate,
            delay: Duration::from_secs_f64(delay_ms / 1000.0),
            jitter: Duration::from_secs_f64(jitter_ms / 1000.0),
            affect_clients: true,
        })
    }
}

/// What happens to one message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fate {
    pub delay: Duration,
    pub drop_request: bool,
    pub drop_response: bool,
}

impl Fate {
    const CLEAN: Fate = Fate {
        delay: Duration::ZERO,
        drop_request: false,
        drop_response: false,
    };
}

#[derive(Debug, Default)]
struct State {
    network: NetworkFaults,
    /// Side of each node; nodes on different sides cannot talk. `None`: fully connected.
    sides: Option<BTreeMap<NodeId, u64>>,
    /// Whether nodes missing from `sides` share one side (after `isolate`) or are each alone
    /// (after `partition`).
    unlisted_together: bool,
}

/// Side ids at or above this are single-node sides.
const ALONE: u64 = 1 << 32;

/// The fault controller of one embedded cluster.
#[derive(Debug)]
pub struct Faults {
    seed: u64,
    rng: Mutex<StdRng>,
    state: RwLock<State>,
    /// Each node's wall clock (created on first use), which `jump_clock` moves.
    clocks: Mutex<BTreeMap<NodeId, Arc<WallClock>>>,
}

impl Faults {
    pub fn new(seed: u64) -> Self {
        Faults {
            seed,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            clocks: Mutex::new(BTreeMap::new()),
            state: RwLock::new(State::default()),
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Splits the nodes into sides that cannot reach each other. Nodes not listed each form a
    /// side of their own.
    pub fn partition(&self, sides: &[&[NodeId]]) {
        let map = sides
            .iter()
            .enumerate()
            .flat_map(|(i, side)| side.iter().map(move |n| (*n, i as u64)))
            .collect();
        if let Ok(mut s) = self.state.write() {
            s.sides = Some(map);
            s.unlisted_together = false;
        }
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&self, node: NodeId) {
        if let Ok(mut s) = self.state.write() {
            if s.sides.is_none() {
                s.unlisted_together = true;
            }
            s.sides
                .get_or_insert_with(BTreeMap::new)
                .insert(node, ALONE + node);
        }
    }

    /// Removes every partition (loss and delay settings stay).
    pub fn heal(&self) {
        if let Ok(mut s) = self.state.write() {
            s.sides = None;
        }
    }

    pub fn set_network(&self, network: NetworkFaults) {
        if let Ok(mut s) = self.state.write() {
            s.network = network;
        }
    }

    pub fn network(&self) -> NetworkFaults {
        self.state.read().map(|s| s.network).unwrap_or_default()
    }

    /// Removes every fault: partitions, loss and delay, clock jumps.
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.write() {
            *s = State::default();
        }
        if let Ok(clocks) = self.clocks.lock() {
            clocks.values().for_each(|c| c.reset());
        }
    }

    /// Node `node`'s wall clock (the one its Raft groups read).
    pub fn clock(&self, node: NodeId) -> Arc<WallClock> {
        let mut clocks = self.clocks.lock().unwrap_or_else(|p| p.into_inner());
        clocks.entry(node).or_default().clone()
    }

    /// Makes node `node`'s wall clock jump by `by_ms` (negative: back in time).
    pub fn jump_clock(&self, node: NodeId, by_ms: i64) {
        self.clock(node).jump(by_ms);
    }

    /// Whether `a` and `b` are on the same side of the current partition.
    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        if a == b {
            return true;
        }
        let Ok(s) = self.state.read() else {
            return true;
        };
        let Some(sides) = &s.sides else { return true };
        let side = |n: NodeId| match sides.get(&n) {
            Some(side) => *side,
            None if s.unlisted_together => ALONE - 1,
            None => ALONE + n,
        };
        side(a) == side(b)
    }

    /// Draws the fate of one message.
    pub fn fate(&self, client_link: bool) -> Fate {
        let net = self.network();
        if client_link && !net.affect_clients {
            return Fate::CLEAN;
        }
        let quiet = NetworkFaults {
            affect_clients: net.affect_clients,
            ..Default::default()
        };
        if net == quiet {
            return Fate::CLEAN;
        }
        let Ok(mut rng) = self.rng.lock() else {
            return Fate::CLEAN;
        };
        let jitter = if net.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_micros(rng.random_range(0..=net.jitter.as_micros() as u64))
        };
        Fate {
            delay: net.delay + jitter,
            drop_request: rng.random_bool(net.drop_requests.clamp(0.0, 1.0)),
            drop_response: rng.random_bool(net.drop_responses.clamp(0.0, 1.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_separates_sides_and_heal_reconnects() {
        let f = Faults::new(1);
        f.partition(&[&[1, 2], &[3]]);
        assert!(f.connected(1, 2));
        assert!(!f.connected(1, 3));
        assert!(!f.connected(3, 2));
        assert!(!f.connected(4, 1), "unlisted nodes are alone");
        f.heal();
        assert!(f.connected(1, 3));
    }

    #[test]
    fn isolate_cuts_one_node_from_all_others() {
        let f = Faults::new(1);
        f.isolate(2);
        assert!(f.connected(1, 3));
        assert!(!f.connected(1, 2));
        assert!(!f.connected(2, 3));
    }

    #[test]
    fn same_seed_draws_the_same_schedule() {
        let net = NetworkFaults {
            drop_requests: 0.3,
            drop_responses: 0.2,
            jitter: Duration::from_millis(5),
            affect_clients: true,
            ..Default::default()
        };
        let draw = |seed| {
            let f = Faults::new(seed);
            f.set_network(net);
            (0..200).map(|_| f.fate(false)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let drops = draw(7).iter().filter(|f| f.drop_request).count();
        assert!((30..=90).contains(&drops), "about 30% dropped: {drops}");
    }
}
