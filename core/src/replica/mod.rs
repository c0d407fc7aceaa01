//! One node's replicas: the node (its Raft groups, client and peer request handling), the
//! node-to-node network seam, and the storage every group on the node shares.

pub mod failpoints;
pub mod hibernation;
pub mod network;
pub mod node;
pub mod snapshot_transfer;
pub mod storage;

/// One group's running Raft on this node (openraft over the node's shared storage).
pub type Raft = openraft::Raft<crate::types::TypeConfig, storage::StateMachine>;
