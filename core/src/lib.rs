//! ScaleStore core: a sharded, Raft-replicated key-value store on openraft and RocksDB.
//!
//! Start here: [`EmbeddedCluster`] runs nodes in this process; [`Client`] talks to any cluster
//! through a [`Transport`]. See ARCHITECTURE.md for the map.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod events;
pub mod faults;
pub mod history;
pub mod inproc;
pub mod manager;
pub mod network;
pub mod node;
pub mod sharding;
pub mod storage;
pub mod suite;
pub mod transport;
pub mod types;

pub use checker::{check, CheckOptions, Verdict};
pub use client::{CasOutcome, Client, ClientOptions, ScanOptions, ScanPage};
pub use cluster::{ClusterOptions, ClusterStatus, EmbeddedCluster, NodeStatus, ShardStatus};
pub use config::{Limits, RaftTiming, StorageOptions, TestSwitches};
pub use error::{Error, Result};
pub use events::{Event, EventLog};
pub use faults::{Faults, NetworkFaults};
pub use history::{History, OpInput, OpOutput, Operation};
pub use manager::ManagerOptions;
pub use node::{GroupStatus, Node};
pub use sharding::{ring_position, NodeState, RingRange, ShardInfo, ShardMap, META_GROUP};
pub use transport::Transport;
pub use types::{Command, CommandResult, GroupId, NodeId, ReadConsistency};
