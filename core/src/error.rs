//! The crate's one error type. Every variant is something a caller can act on.

use std::path::PathBuf;

use crate::types::{GroupId, NodeId};

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by ScaleStore's public API.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The node asked is not the group's leader; `leader` is its best guess, if any.
    #[error("node {node} is not the leader of group {group}; leader hint: {leader:?}")]
    NotLeader {
        group: GroupId,
        node: NodeId,
        leader: Option<NodeId>,
    },

    /// The key does not belong to the group asked: the caller's cluster map is stale.
    #[error("the key does not belong to group {group} (asked node {node})")]
    WrongShard { group: GroupId, node: NodeId },

    /// The node asked holds no replica of the group (it moved, or never was there). Retry at
    /// one of the group's replicas.
    #[error("node {node} holds no replica of group {group}")]
    GroupNotHosted { group: GroupId, node: NodeId },

    /// The node or group cannot serve right now (no quorum, node down, shutting down). Retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),

    /// The operation did not finish before its deadline. A write may or may not have been applied.
    #[error("timed out after {waited_ms} ms: {what}")]
    Timeout { what: String, waited_ms: u64 },

    /// The request is malformed or exceeds a limit; nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A node id that is not part of the cluster.
    #[error("unknown node {0}")]
    UnknownNode(NodeId),

    /// The client (or cluster) was closed; no request was sent.
    #[error("closed: {0}")]
    Closed(String),

    /// The data directory belongs to another cluster or node, or has an unknown format. Nothing in
    /// it was changed.
    #[error("data dir {path:?} refused: {reason}")]
    DataDir { path: PathBuf, reason: String },

    /// The client session expired before this request was applied; it was not applied. Only a
    /// retry of a request whose first attempt may have been applied returns this.
    #[error("session {session} of group {group} expired")]
    SessionExpired { group: GroupId, session: u64 },

    /// RocksDB or the file system failed.
    #[error("storage error: {0}")]
    Storage(String),

    /// A message meant for node `asked` reached node `answered` (an address now used by another
    /// node, as after a host is replaced): refused unread. Retryable once the sender's map of
    /// addresses is current; a peer treats it as "unreachable".
    #[error("a message for node {asked} reached node {answered}, which refused it (the address is now another node's)")]
    WrongNode { asked: NodeId, answered: NodeId },

    /// Raft reported a fatal error for a group (storage failure, panicked core).
    #[error("raft fatal error in group {group}: {message}")]
    Fatal { group: GroupId, message: String },
}

impl Error {
    /// Whether retrying the same request (possibly at another node) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::Unavailable(_)
                | Error::WrongShard { .. }
                | Error::GroupNotHosted { .. }
                | Error::WrongNode { .. }
        )
    }

    /// The variant's name in snake case (`not_leader`, `unknown_node`, ...): a stable label for
    /// histories, metrics and the bindings' exception classes.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotLeader { .. } => "not_leader",
            Error::WrongShard { .. } => "wrong_shard",
            Error::GroupNotHosted { .. } => "group_not_hosted",
            Error::Unavailable(_) => "unavailable",
            Error::Timeout { .. } => "timeout",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::UnknownNode(_) => "unknown_node",
            Error::Closed(_) => "closed",
            Error::DataDir { .. } => "data_dir",
            Error::SessionExpired { .. } => "session_expired",
            Error::Storage(_) => "storage",
            Error::WrongNode { .. } => "wrong_node",
            Error::Fatal { .. } => "fatal",
        }
    }

    /// Whether the error says only that the request went to the wrong place (a stale leader
    /// hint or map, a node that left): a client should have routed around it, never surfaced it.
    pub fn is_routing(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::WrongShard { .. }
                | Error::GroupNotHosted { .. }
                | Error::UnknownNode(_)
                | Error::WrongNode { .. }
        )
    }

    #[cfg_attr(not(feature = "embedded"), allow(dead_code))]
    pub(crate) fn storage(e: impl std::fmt::Display) -> Self {
        Error::Storage(e.to_string())
    }
}

#[cfg(feature = "embedded")]
impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Storage(e.into_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}
