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
    /// The version of the shard's range descriptor this entry mirrors (0: never split). It
    /// grows with every split of the shard; a scan names it, and a replica whose descriptor
    /// has another version refuses the scan (`WrongShard`): the caller's map is stale.
    #[serde(default)]
    pub version: u64,
    /// For a shard born of a split: its parent, and the parent's descriptor version once the
    /// split applied. A replica whose parent is still behind it builds the child itself when it
    /// applies the split; any other starts it empty, to be filled by a snapshot.
    #[serde(default)]
    pub split_from: Option<(GroupId, u64)>,
}

/// What a shard owns, as its own state machine records it (replicated, carried in snapshots):
/// the truth of which keys it serves. The cluster map is a cache of these. A shard that has
/// never been split has none stored and owns what the map gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardDescriptor {
    pub ranges: Vec<RingRange>,
    pub version: u64,
}

impl ShardDescriptor {
    pub fn covers(&self, position: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(position))
    }

    pub fn covers_key(&self, key: &[u8]) -> bool {
        self.covers(ring_position(key))
    }
}

/// A split of one shard, planned by the shard manager: the part of `parent`'s range from ring
/// position `at` to the end of the range holding it becomes shard `child`. `version` and
/// `membership` are the parent's when planned: its state machine refuses the split if either
/// changed since (the fence against a deposed manager or a concurrent change). `ranges`: the
/// parent's ranges in the map, which a parent without a descriptor takes as its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub parent: GroupId,
    pub child: GroupId,
    pub at: u64,
    pub version: u64,
    pub ranges: Vec<RingRange>,
    #[serde(default)]
    pub membership: Option<LogId>,
}

/// A split the cluster map records: the part of `parent`'s range from ring position `at` on is
/// now shard `child`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitDone {
    pub parent: GroupId,
    pub child: GroupId,
    pub at: u64,
}

impl SplitPlan {
    pub fn done(&self) -> SplitDone {
        SplitDone {
            parent: self.parent,
            child: self.child,
            at: self.at,
        }
    }

    /// The descriptors of parent and child after the split of `before` (the parent's current
    /// descriptor), or why the split cannot be applied to it.
    pub fn divide(
        &self,
        before: &ShardDescriptor,
    ) -> std::result::Result<(ShardDescriptor, ShardDescriptor), String> {
        if before.version != self.version {
            return Err(format!(
                "shard {} is at version {}, the split was planned at {}",
                self.parent, before.version, self.version
            ));
        }
        let Some(i) = before.ranges.iter().position(|r| r.contains(self.at)) else {
            return Err(format!(
                "position {:#018x} is outside shard {}",
                self.at, self.parent
            ));
        };
        let range = before.ranges[i];
        if range.start == self.at {
            return Err(format!(
                "position {:#018x} is the start of a range of shard {}: nothing would be left on one side",
                self.at, self.parent
            ));
        }
        let mut parent = before.ranges.clone();
        parent[i].end_inclusive = self.at - 1;
        let child = vec![RingRange {
            start: self.at,
            end_inclusive: range.end_inclusive,
        }];
        let version = self.version + 1;
        Ok((
            ShardDescriptor {
                ranges: parent,
                version,
            },
            ShardDescriptor {
                ranges: child,
                version,
            },
        ))
    }
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
    #[serde(default)]
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
    /// A split recorded before it is proposed to its shard, so that a new manager leader
    /// finishes it (records it in the map, or drops it if the shard refused it).
    pub pending_split: Option<SplitPlan>,
    /// The id the next new shard gets (ids are never reused: a merged-away shard's data may
    /// still sit on a node that was down).
    pub next_shard_id: GroupId,
    /// Where each node listens (`host:port`), for clusters of processes; empty in process.
    pub addresses: BTreeMap<NodeId, String>,
    /// Range start -> (range end, shard), for lookups.
    index: BTreeMap<u64, (u64, GroupId)>,
}

/// The serialized form of a [`ShardMap`] (the index is rebuilt and checked on load). Every
/// field is always written: the map also travels as postcard, which has no field names, so a
/// field skipped when empty would shift the ones after it. `default` lets an older map stored
/// as JSON load.
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
    #[serde(default)]
    pending_split: Option<SplitPlan>,
    #[serde(default)]
    next_shard_id: GroupId,
    #[serde(default)]
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
        map.pending_split = d.pending_split;
        map.next_shard_id = map.next_shard_id.max(d.next_shard_id);
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
            pending_split: m.pending_split,
            next_shard_id: m.next_shard_id,
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
            pending_split: None,
            next_shard_id: 0,
            addresses: BTreeMap::new(),
            index: BTreeMap::new(),
        };
        map.next_shard_id = map.shards.iter().map(|s| s.id + 1).max().unwrap_or(0);
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
                    version: 0,
                    split_from: None,
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

    /// The descriptor the map records for shard `id`.
    pub fn descriptor(&self, id: GroupId) -> Option<ShardDescriptor> {
        self.shard(id).map(|s| ShardDescriptor {
            ranges: s.ranges.clone(),
            version: s.version,
        })
    }

    /// Plans a split of `shard` at ring position `at` (default: the middle of its largest
    /// range) into a new shard with the next free id, on the same replicas. Refused with
    /// `InvalidArgument` for a shard that does not exist or a position outside it or at the
    /// start of one of its ranges, and with a retryable `Unavailable` (busy) while a move or
    /// another split is under way.
    pub fn plan_split(&self, shard: GroupId, at: Option<u64>) -> Result<SplitPlan> {
        let info = self.shard(shard).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "shard {shard} does not exist (shards: {})",
                describe_ids(&self.shard_ids())
            ))
        })?;
        if let Some(p) = &self.pending_split {
            return Err(Error::Unavailable(format!(
                "busy: shard {} is being split; retry once it is done",
                p.parent
            )));
        }
        if let Some(m) = &self.pending_move {
            return Err(Error::Unavailable(format!(
                "busy: a replica of shard {} is being moved; retry once it is done",
                m.group
            )));
        }
        let at = match at {
            Some(at) => at,
            None => {
                let widest = info
                    .ranges
                    .iter()
                    .max_by_key(|r| r.end_inclusive - r.start)
                    .copied()
                    .ok_or_else(|| Error::InvalidArgument(format!("shard {shard} owns nothing")))?;
                if widest.start == widest.end_inclusive {
                    return Err(Error::InvalidArgument(format!(
                        "shard {shard} owns single ring positions only: it cannot be split"
                    )));
                }
                widest.start + (widest.end_inclusive - widest.start) / 2 + 1
            }
        };
        let plan = SplitPlan {
            parent: shard,
            child: self.next_shard_id,
            at,
            version: info.version,
            ranges: info.ranges.clone(),
            membership: None,
        };
        let current = ShardDescriptor {
            ranges: info.ranges.clone(),
            version: info.version,
        };
        plan.divide(&current).map_err(Error::InvalidArgument)?;
        Ok(plan)
    }

    /// Records a split that its shard has applied: the parent keeps the lower part, the child
    /// (on the parent's replicas) takes the rest; the pending split is cleared. A split already
    /// recorded (the child is in the map) changes nothing: returns false.
    pub fn record_split(&mut self, plan: &SplitPlan) -> Result<bool> {
        if self.pending_split.as_ref() == Some(plan) {
            self.pending_split = None;
        }
        if self.shard(plan.child).is_some() {
            return Ok(false);
        }
        let before = self.descriptor(plan.parent).ok_or_else(|| {
            Error::InvalidArgument(format!("shard {} is not in the map", plan.parent))
        })?;
        let (parent, child) = plan.divide(&before).map_err(Error::InvalidArgument)?;
        let replicas = self.replicas_of(plan.parent).unwrap_or_default().to_vec();
        if let Some(p) = self.shards.iter_mut().find(|s| s.id == plan.parent) {
            p.ranges = parent.ranges;
            p.version = parent.version;
        }
        self.shards.push(ShardInfo {
            id: plan.child,
            ranges: child.ranges,
            replicas,
            version: child.version,
            split_from: Some((plan.parent, child.version)),
        });
        self.next_shard_id = self.next_shard_id.max(plan.child + 1);
        self.rebuild_index()?;
        Ok(true)
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

/// `0, 1, 2` for a few ids, `0, 1, ... (N in all)` for many.
fn describe_ids(ids: &[GroupId]) -> String {
    let shown: Vec<String> = ids.iter().take(8).map(u64::to_string).collect();
    if ids.len() > shown.len() {
        format!("{}, ... ({} in all)", shown.join(", "), ids.len())
    } else {
        shown.join(", ")
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

    #[test]
    fn a_split_divides_one_range_and_the_map_still_tiles_the_ring() {
        let mut map = ShardMap::uniform(1, &[1, 2, 3], 3).expect("map");
        let plan = map.plan_split(0, None).expect("plan");
        assert_eq!((plan.child, plan.at, plan.version), (1, 1 << 63, 0));
        assert!(map.record_split(&plan).expect("record"));
        assert!(!map.record_split(&plan).expect("again"), "recorded once");
        assert_eq!(map.shard_at(0), 0);
        assert_eq!(map.shard_at((1 << 63) - 1), 0);
        assert_eq!(map.shard_at(1 << 63), 1);
        assert_eq!(map.shard_at(u64::MAX), 1);
        assert_eq!(map.shard(1).expect("child").replicas, vec![1, 2, 3]);
        assert_eq!(
            (
                map.shard(0).expect("0").version,
                map.shard(1).expect("1").version
            ),
            (1, 1)
        );
        assert_eq!(map.next_shard_id, 2);
        // Split again, each half: ids keep growing, the ring stays tiled.
        for shard in [0, 1, 0] {
            let plan = map.plan_split(shard, None).expect("plan");
            map.record_split(&plan).expect("record");
        }
        assert_eq!(map.shard_ids(), vec![0, 1, 2, 3, 4]);
        assert!(map.rebuild_index().is_ok());
        let json = serde_json::to_vec(&map).expect("json");
        let back: ShardMap = serde_json::from_slice(&json).expect("back");
        assert_eq!(back, map);
        // Nodes and clients send the map as postcard (no field names): with a pending split
        // and without, it must come back whole.
        for pending in [None, Some(map.plan_split(2, None).expect("plan"))] {
            let mut sent = map.clone();
            sent.pending_split = pending;
            sent.pending_move = Some(PendingMove::new(1, Some(1), None));
            let bytes = postcard::to_allocvec(&sent).expect("postcard");
            let back: ShardMap = postcard::from_bytes(&bytes).expect("decoded");
            assert_eq!(back, sent);
        }
    }

    #[test]
    fn a_split_of_a_missing_shard_at_an_edge_or_outside_is_refused_and_changes_nothing() {
        let map = ShardMap::uniform(2, &[1, 2, 3], 3).expect("map");
        let before = map.clone();
        let invalid = |e: Error| matches!(e, Error::InvalidArgument(_));
        assert!(
            invalid(map.plan_split(7, None).expect_err("no shard 7")),
            "no shard 7"
        );
        assert!(
            invalid(map.plan_split(0, Some(0)).expect_err("at its start")),
            "at its start"
        );
        assert!(
            invalid(map.plan_split(0, Some(1 << 63)).expect_err("in shard 1")),
            "in shard 1"
        );
        assert!(map.plan_split(0, Some(1)).is_ok(), "one position in");
        let mut busy = map.clone();
        busy.pending_move = Some(PendingMove::new(1, Some(1), None));
        assert!(
            matches!(busy.plan_split(0, None), Err(Error::Unavailable(m)) if m.contains("busy"))
        );
        // A stale plan (planned before another split) is refused at divide time.
        let plan = map.plan_split(0, None).expect("plan");
        let mut later = map.clone();
        later.record_split(&plan).expect("record");
        let stale = SplitPlan {
            child: 9,
            ..plan.clone()
        };
        assert!(later.record_split(&stale).is_err());
        assert_eq!(map, before);
    }
}
