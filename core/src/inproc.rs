//! The in-process network of an embedded cluster: it carries node-to-node messages and client
//! requests between nodes living in one process. Each cluster owns its own (no global state).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::network::{PeerRequest, PeerResponse, PeerTransport};
use crate::node::Node;
use crate::transport::Transport;
use crate::types::{ClientRequest, ClientResponse, NodeId};

pub struct InProcNetwork {
    /// Nodes that are up. A stopped node is absent: messages to it fail as unreachable.
    up: RwLock<BTreeMap<NodeId, Arc<Node>>>,
    /// Every node of the cluster, up or not (what clients may try).
    members: RwLock<Vec<NodeId>>,
    faults: Arc<Faults>,
}

impl InProcNetwork {
    pub fn new(members: Vec<NodeId>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(InProcNetwork {
            up: RwLock::new(BTreeMap::new()),
            members: RwLock::new(members),
            faults,
        })
    }

    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Makes `id` a member (clients may try it).
    pub fn add_member(&self, id: NodeId) {
        if let Ok(mut m) = self.members.write() {
            if !m.contains(&id) {
                m.push(id);
            }
        }
    }

    pub fn remove_member(&self, id: NodeId) {
        if let Ok(mut m) = self.members.write() {
            m.retain(|n| *n != id);
        }
    }

    pub fn register(&self, node: Arc<Node>) {
        if let Ok(mut up) = self.up.write() {
            up.insert(node.id(), node);
        }
    }

    pub fn unregister(&self, id: NodeId) -> Option<Arc<Node>> {
        self.up.write().ok()?.remove(&id)
    }

    fn lookup(&self, id: NodeId) -> Result<Arc<Node>> {
        let known = self
            .members
            .read()
            .map(|m| m.contains(&id))
            .unwrap_or(false);
        if !known {
            return Err(Error::UnknownNode(id));
        }
        self.up
            .read()
            .ok()
            .and_then(|up| up.get(&id).cloned())
            .ok_or_else(|| Error::Unavailable(format!("node {id} is down")))
    }
}

#[async_trait]
impl PeerTransport for InProcNetwork {
    async fn send(&self, from: NodeId, to: NodeId, request: PeerRequest) -> Result<PeerResponse> {
        let cut = || Error::Unavailable(format!("node {from} cannot reach node {to} (partition)"));
        if !self.faults.connected(from, to) {
            return Err(cut());
        }
        let fate = self.faults.fate(false);
        if !fate.delay.is_zero() {
            tokio::time::sleep(fate.delay).await;
        }
        if fate.drop_request {
            return Err(Error::Unavailable(format!("message {from}->{to} lost")));
        }
        if !self.faults.connected(from, to) {
            return Err(cut());
        }
        let response = self.lookup(to)?.handle_peer(request).await;
        if fate.drop_response || !self.faults.connected(from, to) {
            return Err(Error::Unavailable(format!("reply {to}->{from} lost")));
        }
        response
    }
}

#[async_trait]
impl Transport for InProcNetwork {
    async fn call(
        &self,
        node: NodeId,
        request: ClientRequest,
        forward: bool,
    ) -> Result<ClientResponse> {
        let fate = self.faults.fate(true);
        if !fate.delay.is_zero() {
            tokio::time::sleep(fate.delay).await;
        }
        if fate.drop_request {
            return Err(Error::Unavailable(format!("request to node {node} lost")));
        }
        let response = self.lookup(node)?.handle_client(request, forward).await;
        if fate.drop_response {
            return Err(Error::Unavailable(format!("reply from node {node} lost")));
        }
        response
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }
}
