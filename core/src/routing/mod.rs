//! Getting a request to the right replica: the cluster map (keys to shards, shards to nodes),
//! the client that routes by it, and the transport seam the client talks through.

pub mod client;
pub mod sharding;
pub mod transport;
