//! What a client and a node say to each other: the requests a node serves for clients (and for
//! the shard manager), its answers, and a group's status as a node reports it.

use serde::{Deserialize, Serialize};

use crate::sharding::ShardMap;
use crate::types::{Command, CommandResult, GroupId, LogId, NodeId, ReadConsistency, SessionRef};

/// A request entering a node from a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    Write {
        group: GroupId,
        command: Command,
        session: Option<SessionRef>,
    },
    OpenSession {
        group: GroupId,
    },
    ReadMany {
        group: GroupId,
        keys: Vec<Vec<u8>>,
        consistency: ReadConsistency,
    },
    /// Up to `limit` pairs of the group with `start <= key < end` (`end` None: no bound).
    /// `shard_version`: the version of the shard in the caller's map; a replica whose
    /// descriptor has another refuses with `WrongShard` (a split moved keys in or out).
    Scan {
        group: GroupId,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: usize,
        consistency: ReadConsistency,
        shard_version: Option<u64>,
    },
    /// The group's status as the node asked sees it.
    GroupStatus {
        group: GroupId,
    },
    /// The cluster map as the node asked knows it.
    GetShardMap,
    Read {
        group: GroupId,
        key: Vec<u8>,
        consistency: ReadConsistency,
    },
}

impl ClientRequest {
    pub fn group(&self) -> Option<GroupId> {
        match self {
            ClientRequest::Write { group, .. }
            | ClientRequest::Read { group, .. }
            | ClientRequest::OpenSession { group }
            | ClientRequest::ReadMany { group, .. }
            | ClientRequest::Scan { group, .. }
            | ClientRequest::GroupStatus { group } => Some(*group),
            ClientRequest::GetShardMap => None,
        }
    }

    /// The KV operation this request carries, named as the public KV service names it (the
    /// `op` label of the request metrics); `None` for requests that are not KV operations.
    pub fn kv_op(&self) -> Option<&'static str> {
        match self {
            ClientRequest::Write { command, .. } => Some(match command {
                Command::Put { .. } => "put",
                Command::Delete { .. } => "delete",
                Command::Append { .. } => "append",
                Command::Cas { .. } => "compare_and_swap",
                Command::PutMany { .. } => "batch_put",
                Command::DeletePrefix { .. } => "delete_prefix",
            }),
            ClientRequest::Read { .. } => Some("get"),
            ClientRequest::ReadMany { .. } => Some("batch_get"),
            ClientRequest::Scan { .. } => Some("scan"),
            ClientRequest::OpenSession { .. }
            | ClientRequest::GroupStatus { .. }
            | ClientRequest::GetShardMap => None,
        }
    }
}

/// A node's answer to a [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    Write(CommandResult),
    Read(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    /// Pairs in key order; `more` when the limit cut the range short.
    Scan {
        items: Vec<(Vec<u8>, Vec<u8>)>,
        more: bool,
    },
    GroupStatus(GroupStatus),
    ShardMap(ShardMap),
}

/// Role and progress of one group on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: GroupId,
    pub node: NodeId,
    pub is_leader: bool,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Every voter, of both halves while the config is joint.
    pub voters: Vec<NodeId>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// The voter sets of the effective membership: one when uniform, two while joint.
    #[serde(default)]
    pub voter_sets: Vec<Vec<NodeId>>,
    #[serde(default)]
    pub learners: Vec<NodeId>,
    /// Log id of the effective membership (what a fenced voter change names).
    #[serde(default)]
    pub membership_log_id: Option<LogId>,
    /// Voters and learners of the membership this node knows to be committed.
    #[serde(default)]
    pub committed_members: Vec<NodeId>,
    /// The version of the shard's range descriptor on this node (0: never split).
    #[serde(default)]
    pub shard_version: u64,
}

impl GroupStatus {
    /// Whether the membership is joint: a voter change stopped between its two steps.
    pub fn is_joint(&self) -> bool {
        self.voter_sets.len() > 1
    }

    /// The voters, if the membership is uniform.
    pub fn uniform_voters(&self) -> Option<Vec<NodeId>> {
        match &self.voter_sets[..] {
            [only] => Some(only.clone()),
            _ => None,
        }
    }
}
