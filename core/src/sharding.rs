//! Keys to shards. A key's ring position is `xxh64(key, seed 0)` (XXH64 as specified by the
//! xxHash project, read as an unsigned 64-bit integer): stable across processes, versions,
//! platforms and client languages; test vectors below. Each shard owns contiguous ranges of the
//! ring; the cluster map lists them with each shard's replicas.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{GroupId, LogId, NodeId};

/// Position of `key` on the hash ring.
pub fn ring_position(key: &[u8]) -> u64 {
    xxhash_rust::xxh64::xxh64(key, 0)
}

/// An inclusive range of ring positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RingRange {
    pub start: u64,
    pub end_inclusive: u64,
}

impl RingRange {
    pub fn contains(&self, position: u64) -> bool {
        self.start <= position && position <= self.end_inclusive
    }
}

/// One shard: the ring ranges it owns and the nodes holding its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    pub id: GroupId,
    pub ranges: Vec<RingRange>,
    pub replicas: Vec<NodeId>,
}

/// The group id of the shard manager's own Raft group (never a shard id).
pub const META_GROUP: GroupId = u64::MAX >> 1;

/// A node's place in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeState {
    /// Holds replicas and receives new ones.
    Active,
    /// Being decommissioned: its replicas are moved away, then it leaves the map.
    Leaving,
}

/// One replica move in progress: add `to` (if any), then remove `from` (if any). Recorded in the
/// map before it starts, so a new manager leader finishes or rolls it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMove {
    pub group: GroupId,
    pub from: Option<NodeId>,
    pub to: Option<NodeId>,
    /// The log id of the group's membership that the next voter change is planned against,
    /// recorded here before the change is proposed: the group's Raft refuses a change whose
    /// fence is not its current membership, so a manager that could no longer write the map (a
    /// deposed one) cannot change the group's voters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<LogId>,
}

impl PendingMove {
    pub fn new(group: GroupId, from: Option<NodeId>, to: Option<NodeId>) -> Self {
        PendingMove {
            group,
            from,
            to,
            fence: None,
        }
    }

    /// Whether `other` is the same move (whatever fence either carries).
    pub fn same_move(&self, other: &PendingMove) -> bool {
        (self.group, self.from, self.to) == (other.group, other.from, other.to)
    }
}

/// The cluster map: which shard owns which part of the ring, and where its replicas live.
/// `epoch` grows with every ownership or membership change (leader changes are not map changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ShardMapData", into = "ShardMapData")]
pub struct ShardMap {
    pub epoch: u64,
    pub shards: Vec<ShardInfo>,
    /// Every node of the cluster and its state.
    pub nodes: BTreeMap<NodeId, NodeState>,
    /// Replicas of the manager's group.
    pub meta_replicas: Vec<NodeId>,
    /// Target replicas per shard.
    pub replication: usize,
    pub pending_move: Option<PendingMove>,
    /// Where each node listens (`host:port`), for clusters of processes; empty in process.
    pub addresses: BTreeMap<NodeId, String>,
    /// Range start -> (range end, shard), for lookups.
    index: BTreeMap<u64, (u64, GroupId)>,
}

/// The serialized form of a [`ShardMap`] (the index is rebuilt and checked on load).
#[derive(Serialize, Deserialize)]
struct ShardMapData {
    epoch: u64,
    shards: Vec<ShardInfo>,
    #[serde(default)]
    nodes: BTreeMap<NodeId, NodeState>,
    #[serde(default)]
    meta_replicas: Vec<NodeId>,
    #[serde(default)]
    replication: usize,
    #[serde(default)]
    pending_move: Option<PendingMove>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    addresses: BTreeMap<NodeId, String>,
}

impl TryFrom<ShardMapData> for ShardMap {
    type Error = Error;
    fn try_from(d: ShardMapData) -> Result<Self> {
        let mut map = ShardMap::new(d.epoch, d.shards)?;
        map.nodes = d.nodes;
        map.meta_replicas = d.meta_replicas;
        map.replication = d.replication;
        map.pending_move = d.pending_move;
        map.addresses = d.addresses;
        Ok(map)
    }
}

impl From<ShardMap> for ShardMapData {
    fn from(m: ShardMap) -> Self {
        ShardMapData {
            epoch: m.epoch,
            shards: m.shards,
            nodes: m.nodes,
            meta_replicas: m.meta_replicas,
            replication: m.replication,
            pending_move: m.pending_move,
            addresses: m.addresses,
        }
    }
}

impl ShardMap {
    pub fn new(epoch: u64, shards: Vec<ShardInfo>) -> Result<Self> {
        let replication = shards.first().map(|s| s.replicas.len()).unwrap_or(1);
        let mut nodes = BTreeMap::new();
        for s in &shards {
            for n in &s.replicas {
                nodes.insert(*n, NodeState::Active);
            }
        }
        let mut map = ShardMap {
            epoch,
            shards,
            nodes,
            meta_replicas: Vec::new(),
            replication,
            pending_move: None,
            addresses: BTreeMap::new(),
            index: BTreeMap::new(),
        };
        map.rebuild_index()?;
        Ok(map)
    }

    /// `shards` equal ranges of the ring; replicas placed round-robin so replicas per node (and
    /// first replicas, the initial leaders) differ by at most one.
    pub fn uniform(shards: usize, nodes: &[NodeId], replication: usize) -> Result<Self> {
        if shards == 0 {
            return Err(Error::InvalidArgument(
                "at least one shard is needed".into(),
            ));
        }
        if replication == 0 || replication > nodes.len() {
            return Err(Error::InvalidArgument(format!(
                "replication factor {replication} must be between 1 and the node count {}",
                nodes.len()
            )));
        }
        let s = shards as u128;
        let span = 1u128 << 64;
        let infos = (0..shards)
            .map(|i| {
                let start = (i as u128 * span / s) as u64;
                let end_inclusive = ((i as u128 + 1) * span / s - 1) as u64;
                let replicas = (0..replication)
                    .map(|j| nodes[(i + j) % nodes.len()])
                    .collect();
                ShardInfo {
                    id: i as GroupId,
                    ranges: vec![RingRange {
                        start,
                        end_inclusive,
                    }],
                    replicas,
                }
            })
            .collect();
        let mut map = ShardMap::new(1, infos)?;
        map.nodes = nodes.iter().map(|n| (*n, NodeState::Active)).collect();
        map.meta_replicas = nodes.iter().take(3.min(nodes.len())).copied().collect();
        map.replication = replication;
        Ok(map)
    }

    /// Replicas of `group` (a shard or the manager's group).
    pub fn replicas_of(&self, group: GroupId) -> Option<&[NodeId]> {
        if group == META_GROUP {
            return Some(&self.meta_replicas);
        }
        self.shard(group).map(|s| s.replicas.as_slice())
    }

    pub fn replicas_of_mut(&mut self, group: GroupId) -> Option<&mut Vec<NodeId>> {
        if group == META_GROUP {
            return Some(&mut self.meta_replicas);
        }
        self.shards
            .iter_mut()
            .find(|s| s.id == group)
            .map(|s| &mut s.replicas)
    }

    /// Every group with a replica on `node`, the manager's group included.
    pub fn groups_on(&self, node: NodeId) -> Vec<GroupId> {
        let mut g = self.shards_on(node);
        if self.meta_replicas.contains(&node) {
            g.push(META_GROUP);
        }
        g
    }

    /// Nodes that may receive replicas.
    pub fn active_nodes(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, s)| **s == NodeState::Active)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Shard replicas per node (every node of the map, zero included).
    pub fn load(&self) -> BTreeMap<NodeId, usize> {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|n| (*n, 0)).collect();
        for s in &self.shards {
            for n in &s.replicas {
                *load.entry(*n).or_insert(0) += 1;
            }
        }
        load
    }

    /// One key for every shard: the first `{prefix}{i}` (i = 0, 1, ...) that lands in it, to
    /// touch each shard once (probes, tests). Gives up after a million candidates.
    pub fn key_per_shard(&self, prefix: &str) -> BTreeMap<GroupId, String> {
        let mut keys = BTreeMap::new();
        for i in 0..1_000_000u64 {
            let k = format!("{prefix}{i}");
            keys.entry(self.shard_of(k.as_bytes())).or_insert(k);
            if keys.len() == self.shards.len() {
                break;
            }
        }
        keys
    }

    /// Checks that the ranges cover the ring exactly once and builds the lookup index.
    pub fn rebuild_index(&mut self) -> Result<()> {
        let mut index = BTreeMap::new();
        for s in &self.shards {
            for r in &s.ranges {
                if r.start > r.end_inclusive {
                    return Err(Error::InvalidArgument(format!(
                        "empty range in shard {}",
                        s.id
                    )));
                }
                index.insert(r.start, (r.end_inclusive, s.id));
            }
        }
        let mut next: Option<u64> = Some(0);
        for (start, (end, shard)) in &index {
            if Some(*start) != next {
                return Err(Error::InvalidArgument(format!(
                    "shard map does not tile the ring at {start:#x} (shard {shard})"
                )));
            }
            next = end.checked_add(1);
        }
        if next.is_some() {
            return Err(Error::InvalidArgument(
                "shard map does not cover the whole ring".into(),
            ));
        }
        self.index = index;
        Ok(())
    }

    /// The shard owning `key`.
    pub fn shard_of(&self, key: &[u8]) -> GroupId {
        self.shard_at(ring_position(key))
    }

    /// The shard owning ring position `position`.
    pub fn shard_at(&self, position: u64) -> GroupId {
        self.index
            .range(..=position)
            .next_back()
            .map(|(_, (_, shard))| *shard)
            .unwrap_or(0)
    }

    pub fn shard(&self, id: GroupId) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.id == id)
    }

    pub fn shard_ids(&self) -> Vec<GroupId> {
        self.shards.iter().map(|s| s.id).collect()
    }

    /// Shards with a replica on `node`.
    pub fn shards_on(&self, node: NodeId) -> Vec<GroupId> {
        self.shards
            .iter()
            .filter(|s| s.replicas.contains(&node))
            .map(|s| s.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XXH64 (seed 0) test vectors; any client in any language must reproduce these.
    pub const TEST_VECTORS: &[(&[u8], u64)] = &[
        (b"", 0xef46db3751d8e999),
        (b"a", 0xd24ec4f1a98c6e5b),
        (b"abc", 0x44bc2cf5ad770999),
        (b"hello", 0x26c7827d889f6da3),
        (b"scalestore", 0x84f1be9c8ef24b47),
        (b"user:42", 0xdc1fea7da8d2d1c2),
    ];

    #[test]
    fn ring_position_matches_documented_test_vectors() {
        for (key, want) in TEST_VECTORS {
            assert_eq!(
                ring_position(key),
                *want,
                "{:?}",
                String::from_utf8_lossy(key)
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(ring_position(&all), 0x1facbe8406cd904b);
    }

    #[test]
    fn uniform_map_tiles_the_ring_and_balances_replicas() {
        let nodes = [1, 2, 3, 4, 5];
        let map = ShardMap::uniform(16, &nodes, 3).expect("map");
        assert_eq!(map.shard_at(0), 0);
        assert_eq!(map.shard_at(u64::MAX), 15);
        let mut per_node = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for s in &map.shards {
            assert_eq!(s.replicas.len(), 3);
            let mut r = s.replicas.clone();
            r.dedup();
            assert_eq!(r.len(), 3, "distinct replicas");
            for n in &s.replicas {
                *per_node.entry(*n).or_insert(0) += 1;
            }
            *leaders.entry(s.replicas[0]).or_insert(0) += 1;
        }
        let spread = |m: &BTreeMap<u64, i32>| {
            m.values().max().unwrap_or(&0) - m.values().min().unwrap_or(&0)
        };
        assert!(spread(&per_node) <= 1, "{per_node:?}");
        assert!(spread(&leaders) <= 1, "{leaders:?}");
        assert!(
            ShardMap::uniform(4, &nodes, 6).is_err(),
            "R above node count"
        );
        assert!(ShardMap::uniform(0, &nodes, 1).is_err());
    }

    #[test]
    fn a_map_with_a_gap_or_overlap_is_refused() {
        let mut map = ShardMap::uniform(2, &[1], 1).expect("map");
        map.shards[1].ranges[0].start += 1;
        assert!(map.rebuild_index().is_err(), "gap");
        let mut map = ShardMap::uniform(2, &[1], 1).expect("map");
        map.shards[0].ranges[0].end_inclusive = u64::MAX;
        assert!(map.rebuild_index().is_err(), "overlap");
    }
}
