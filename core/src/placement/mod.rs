//! Where replicas live: the shard manager that owns the cluster map and moves replicas, and the
//! event log it (and the embedded cluster) write to.

pub mod events;
#[cfg(feature = "embedded")]
pub mod manager;
#[cfg(feature = "embedded")]
pub mod split;
#[cfg(feature = "embedded")]
pub mod watch;
