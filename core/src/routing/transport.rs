//! How a [`Client`](crate::Client) reaches nodes. The embedded cluster implements it in-process;
//! the gRPC client will implement it over the network. The client never knows which.

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::placement::events::Event;
use crate::protocol::{ClientRequest, ClientResponse};
use crate::sharding::SplitDone;
use crate::status::ClusterStatus;
use crate::types::{GroupId, NodeId};

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to `node`. With `forward`, the node passes a request that needs the leader
    /// on to it; without, it answers `NotLeader` with a leader hint.
    async fn call(
        &self,
        node: NodeId,
        request: ClientRequest,
        forward: bool,
    ) -> Result<ClientResponse>;

    /// Nodes the client may try, in a stable order.
    fn nodes(&self) -> Vec<NodeId>;

    /// The whole cluster's status (nodes, shards, leaders), as some reachable node sees it.
    async fn cluster_status(&self) -> Result<ClusterStatus> {
        Err(Error::Unavailable(
            "this transport cannot report the cluster's status".into(),
        ))
    }

    /// Splits `shard` at ring position `at` (default: the middle of its largest range) and
    /// returns it once the cluster map records it.
    async fn split(&self, shard: GroupId, at: Option<u64>) -> Result<SplitDone> {
        let _ = (shard, at);
        Err(Error::Unavailable(
            "this transport cannot split shards".into(),
        ))
    }

    /// Recent cluster events (every node's, oldest first).
    async fn events(&self) -> Result<Vec<Event>> {
        Err(Error::Unavailable(
            "this transport cannot report the cluster's events".into(),
        ))
    }
}
