//! What a cluster reports about itself: its shards and nodes (the embedded cluster, the
//! server's Admin service and every client's `cluster_status`).

use serde::{Deserialize, Serialize};

use crate::sharding::RingRange;
use crate::types::{GroupId, NodeId};

/// One shard as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: GroupId,
    pub ranges: Vec<RingRange>,
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Approximate bytes of user data (on the reporting replica).
    pub approximate_bytes: u64,
    /// The Raft voter sets (one when uniform; two while a voter change is unfinished).
    #[serde(default)]
    pub voter_sets: Vec<Vec<NodeId>>,
    /// Whether the membership is joint: a voter change the manager has yet to finish.
    #[serde(default)]
    pub joint: bool,
}

/// One node as the cluster sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub up: bool,
    /// Shards with a replica on this node.
    pub shards: Vec<GroupId>,
    /// How many of them this node currently leads.
    pub leaders: usize,
    /// Groups on this node's disk that could not start (a corrupt store of one group): the
    /// node serves its others.
    #[serde(default)]
    pub unstartable: Vec<GroupId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub shards: Vec<ShardStatus>,
    pub nodes: Vec<NodeStatus>,
}
