//! ScaleStore core: a sharded, Raft-replicated key-value store on openraft and RocksDB.
//!
//! Start here: [`EmbeddedCluster`] runs nodes in this process; [`Client`] talks to any cluster
//! through a [`Transport`]. See ARCHITECTURE.md for the map.
//!
//! The `embedded` feature (on by default) carries the storage engine (RocksDB), the nodes and
//! the embedded cluster; without it the crate is a client: the [`Client`], its [`Transport`]
//! trait, histories and the checker.

// Layers, one folder each (see ARCHITECTURE.md): replica (node, peer network, storage), routing
// (client, transport), placement (shard manager, events), embedded (in-process cluster and
// faults), proof (histories, checker, fault suite); host is one node's life in a process,
// shared by the embedded cluster and the server. Shared vocabulary stays here, at the base:
// types, config, error, sharding (the ring and the cluster map every layer reads) and
// protocol (what clients and nodes say to each other).
pub mod config;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
#[cfg(feature = "embedded")]
pub mod host;
pub mod load;
pub mod placement;
pub mod proof;
pub mod protocol;
#[cfg(feature = "embedded")]
pub mod replica;
pub mod routing;
pub mod sharding;
pub mod sim;
pub mod status;
pub mod types;

// The modules' earlier paths (`scalestore::suite`, `scalestore::storage`, ...) stay valid.
#[cfg(feature = "embedded")]
pub use embedded::{cluster, faults, inproc};
pub use placement::events;
#[cfg(feature = "embedded")]
pub use placement::manager;
#[cfg(feature = "embedded")]
pub use proof::suite;
pub use proof::{checker, history};
#[cfg(feature = "embedded")]
pub use replica::{network, node, storage};
pub use routing::{client, transport};

pub use checker::{check, check_from, CheckOptions, Verdict};
pub use client::{CasOutcome, Client, ClientOptions, ScanOptions, ScanPage};
#[cfg(feature = "embedded")]
pub use cluster::{ClusterOptions, EmbeddedCluster};
pub use config::{Limits, RaftTiming, StorageOptions, TestSwitches};
pub use error::{Error, Result};
pub use events::{Event, EventLog};
#[cfg(feature = "embedded")]
pub use faults::{Faults, NetworkFaults};
pub use history::{History, OpInput, OpOutput, Operation, RecordSwitch};
pub use load::{preload, LoadOptions, LoadReport, LoadRun, LoadTarget, Progress, TimelineRow};
#[cfg(feature = "embedded")]
pub use manager::ManagerOptions;
#[cfg(feature = "embedded")]
pub use node::{GroupStatus, Node};
pub use sharding::{
    ring_position, NodeState, RingRange, ShardDescriptor, ShardInfo, ShardMap, SplitDone,
    SplitPlan, META_GROUP,
};
pub use status::{ClusterStatus, NodeStatus, ShardStatus};
pub use transport::Transport;
pub use types::{Command, CommandResult, GroupId, NodeId, ReadConsistency};
