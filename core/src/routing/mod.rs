//! Getting a request to the right replica: the client that routes by the cluster map
//! (`crate::sharding`), and the transport seam the client talks through.

pub mod client;
pub mod transport;

// The map's earlier path (`scalestore::routing::sharding`) stays valid.
pub use crate::sharding;
