//! ScaleStore core: a sharded, Raft-replicated key-value store on openraft and RocksDB.
//!
//! Start here: [`EmbeddedCluster`] runs nodes in this process; [`Client`] talks to any cluster
//! through a [`Transport`]. See ARCHITECTURE.md for the map.

// Layers, one folder each (see ARCHITECTURE.md): replica (node, peer network, storage), routing
// (client, transport), placement (shard manager, events), embedded (in-process cluster and
// faults), proof (histories, checker, fault suite); host is one node's life in a process,
// shared by the embedded cluster and the server. Shared vocabulary stays here, at the base:
// types, config, error, sharding (the ring and the cluster map every layer reads) and
// protocol (what clients and nodes say to each other).
pub mod config;
pub mod embedded;
pub mod error;
pub mod host;
pub mod load;
pub mod placement;
pub mod proof;
pub mod protocol;
pub mod replica;
pub mod routing;
pub mod sharding;
pub mod sim;
pub mod types;

// The modules' earlier paths (`scalestore::suite`, `scalestore::storage`, ...) stay valid.
pub use embedded::{cluster, faults, inproc};
pub use placement::{events, manager};
pub use proof::{checker, history, suite};
pub use replica::{network, node, storage};
pub use routing::{client, transport};

pub use checker::{check, check_from, CheckOptions, Verdict};
pub use client::{CasOutcome, Client, ClientOptions, ScanOptions, ScanPage};
pub use cluster::{ClusterOptions, ClusterStatus, EmbeddedCluster, NodeStatus, ShardStatus};
pub use config::{Limits, RaftTiming, StorageOptions, TestSwitches};
pub use error::{Error, Result};
pub use events::{Event, EventLog};
pub use faults::{Faults, NetworkFaults};
pub use history::{History, OpInput, OpOutput, Operation, RecordSwitch};
pub use load::{preload, LoadOptions, LoadReport, LoadRun, LoadTarget, Progress, TimelineRow};
pub use manager::ManagerOptions;
pub use node::{GroupStatus, Node};
pub use sharding::{ring_position, NodeState, RingRange, ShardInfo, ShardMap, META_GROUP};
pub use transport::Transport;
pub use types::{Command, CommandResult, GroupId, NodeId, ReadConsistency};
