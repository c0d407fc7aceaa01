//! Shared vocabulary: ids, the replicated command set, its results, and openraft's type config.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node of the cluster. Node ids start at 1.
pub type NodeId = u64;

/// A Raft group (a shard, or later the shard manager). Every key, message and metric carries it.
pub type GroupId = u64;

openraft::declare_raft_types!(
    /// openraft type configuration for every ScaleStore Raft group.
    pub TypeConfig:
        D = Proposal,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        AsyncRuntime = crate::sim::SimRuntime,
);

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// A write replicated through a group's log and applied by its state machine.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key`; the result says whether it existed.
    Delete { key: Vec<u8> },
    /// Append `value` to the key's current value (absent = empty); the result is the new length.
    Append { key: Vec<u8>, value: Vec<u8> },
    /// Set `key` to `new` if its current value equals `expected` (`None` = absent).
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
    /// Set every pair, atomically within one shard (all keys must belong to it).
    PutMany { pairs: Vec<(Vec<u8>, Vec<u8>)> },
    /// Delete every key of the shard it is sent to that starts with `prefix` (empty: every
    /// key), atomically within that shard; the result counts them. A client sends it to every
    /// shard: not atomic across shards.
    DeletePrefix { prefix: Vec<u8> },
}

impl Command {
    /// Every key the command touches.
    pub fn keys(&self) -> Vec<&[u8]> {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key }
            | Command::Append { key, .. }
            | Command::Cas { key, .. } => vec![key],
            Command::PutMany { pairs } => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            // Keys of whichever shard it is sent to, none named.
            Command::DeletePrefix { .. } => vec![],
        }
    }

    /// Byte strings carried besides the keys (checked against the value size limit).
    pub fn values(&self) -> Vec<&[u8]> {
        match self {
            Command::Put { value, .. } | Command::Append { value, .. } => vec![value],
            Command::Delete { .. } | Command::DeletePrefix { .. } => vec![],
            Command::Cas { expected, new, .. } => expected
                .as_deref()
                .into_iter()
                .chain([new.as_slice()])
                .collect(),
            Command::PutMany { pairs } => pairs.iter().map(|(_, v)| v.as_slice()).collect(),
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match self {
            Command::Put { key, value } => write!(f, "put({}, {}B)", k(key), value.len()),
            Command::Delete { key } => write!(f, "delete({})", k(key)),
            Command::Append { key, value } => write!(f, "append({}, {}B)", k(key), value.len()),
            Command::Cas { key, expected, new } => write!(
                f,
                "cas({}, {:?}B -> {}B)",
                k(key),
                expected.as_ref().map(Vec::len),
                new.len()
            ),
            Command::PutMany { pairs } => write!(f, "put_many({} pairs)", pairs.len()),
            Command::DeletePrefix { prefix } => write!(f, "delete_prefix({})", k(prefix)),
        }
    }
}

/// Where a write sits in its client's session: the state machine applies each (session, seq)
/// once and answers retries with the first result. `first_unacked` is the client's lowest
/// sequence number still waiting for an answer; results below it are forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    pub session: u64,
    pub seq: u64,
    pub first_unacked: u64,
}

/// What a group's log carries (openraft's `D`): a body and the proposing leader's wall-clock
/// time, the only clock replicas use (so they agree on when sessions expire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub time_ms: u64,
    pub body: ProposalBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposalBody {
    Write {
        session: Option<SessionRef>,
        command: Command,
    },
    /// Opens a client session; its id is the log index of this entry (never reused).
    OpenSession,
    /// Splits the shard: applied at the same index on every replica, each of which builds the
    /// child from its own copy (see `replica::storage::split`).
    Split(crate::sharding::SplitPlan),
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.body {
            ProposalBody::Write {
                session: Some(s),
                command,
            } => {
                write!(
                    f,
                    "{command} [s{}#{} <{}]",
                    s.session, s.seq, s.first_unacked
                )
            }
            ProposalBody::Write {
                session: None,
                command,
            } => write!(f, "{command}"),
            ProposalBody::OpenSession => write!(f, "open-session"),
            ProposalBody::Split(p) => {
                write!(
                    f,
                    "split(shard {} at {:#018x} -> {})",
                    p.parent, p.at, p.child
                )
            }
        }
    }
}

/// What applying a [`Command`] produced. Blank and membership entries produce `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CommandResult {
    #[default]
    None,
    Put,
    Delete {
        existed: bool,
    },
    Append {
        new_len: u64,
    },
    /// `current` is the value after the operation: `new` on success, the unchanged value otherwise.
    Cas {
        success: bool,
        current: Option<Vec<u8>>,
    },
    PutMany {
        count: u64,
    },
    SessionOpened {
        session: u64,
    },
    /// The write's session expired (or never existed); the write was not applied.
    SessionExpired {
        session: u64,
    },
    /// The write was refused by the state machine and not applied.
    Rejected {
        reason: String,
    },
    /// How many keys a `DeletePrefix` deleted on its shard.
    DeletePrefix {
        count: u64,
    },
    /// A key of the write is not the shard's (any more): nothing was applied. Checked after the
    /// exactly-once lookup, so a retry of a write applied before a split still gets its result.
    WrongShard,
    /// The shard split: its descriptor after the split (the child's is the rest of the range).
    Split {
        version: u64,
    },
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// The leader confirms with a quorum (ReadIndex) and waits for apply. The default.
    #[default]
    Linearizable,
    /// The leader answers while its lease is valid: no round trip, assumes bounded clock drift.
    Lease,
    /// The replica asked answers from its own state whatever its role; may be behind.
    Stale,
}
