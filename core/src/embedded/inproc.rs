//! The in-process network of an embedded cluster: it carries node-to-node messages and client
//! requests between nodes living in one process. Each cluster owns its own (no global state).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::embedded::faults::Faults;
use crate::error::{Error, Result};
use crate::host::{self, ClusterStatus};
use crate::placement::events::{Event, EventLog};
use crate::protocol::{ClientRequest, ClientResponse};
use crate::replica::network::{PeerRequest, PeerResponse, PeerTransport};
use crate::replica::node::Node;
use crate::routing::transport::Transport;
use crate::sharding::SplitDone;
use crate::sim::Cost;
use crate::types::{GroupId, NodeId};

pub struct InProcNetwork {
    /// Nodes that are up. A stopped node is absent: messages to it fail as unreachable.
    up: RwLock<BTreeMap<NodeId, Arc<Node>>>,
    /// Every node of the cluster, up or not (what clients may try).
    members: RwLock<Vec<NodeId>>,
    faults: Arc<Faults>,
    /// The cluster's event log, reported to clients that ask for events.
    events: RwLock<Option<Arc<EventLog>>>,
    /// Each message waits an extra time drawn from the OS's randomness, not the run's (see
    /// [`TestSwitches::stray_random`](crate::config::TestSwitches::stray_random)).
    stray_random: AtomicBool,
}

impl InProcNetwork {
    pub fn new(members: Vec<NodeId>, faults: Arc<Faults>) -> Arc<Self> {
        Arc::new(InProcNetwork {
            up: RwLock::new(BTreeMap::new()),
            members: RwLock::new(members),
            faults,
            events: RwLock::new(None),
            stray_random: AtomicBool::new(false),
        })
    }

    /// Switches the stray random draw of every message on or off (a test of the replay check).
    pub fn set_stray_random(&self, on: bool) {
        self.stray_random.store(on, Ordering::Relaxed);
    }

    /// The event log clients are shown (the embedded cluster's own).
    pub fn set_event_log(&self, events: Arc<EventLog>) {
        if let Ok(mut e) = self.events.write() {
            *e = Some(events);
        }
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

    /// The running node `id` (its current incarnation).
    pub fn running_node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.lookup(id)
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

impl InProcNetwork {
    /// Any node that runs (for the cluster-wide asks: status, splits).
    fn any_running_node(&self) -> Result<Arc<Node>> {
        let running: Vec<Arc<Node>> = self
            .up
            .read()
            .map(|up| up.values().cloned().collect())
            .unwrap_or_default();
        running
            .into_iter()
            .find(|n| !n.is_stopping())
            .ok_or_else(|| Error::Unavailable("no node is running".into()))
    }

    /// Carries one message to node `to` through the fault layer: delay, loss of the request,
    /// loss of the reply after `handle` ran, and (for node-to-node links, `from` set) partitions
    /// checked when sent, when delivered and when answered.
    async fn deliver<T, Fut>(
        &self,
        from: Option<NodeId>,
        to: NodeId,
        handle: impl FnOnce(Arc<Node>) -> Fut,
    ) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let link = match from {
            Some(f) => format!("{f}->{to}"),
            None => format!("client->{to}"),
        };
        let cut = || from.is_some_and(|f| !self.faults.connected(f, to));
        if cut() {
            return Err(Error::Unavailable(format!("{link} cut by a partition")));
        }
        let fate = self.faults.fate(from.is_none());
        if !fate.delay.is_zero() {
            tokio::time::sleep(fate.delay).await;
        }
        // In a deterministic run a message takes a seeded virtual time each way.
        crate::sim::pause(Cost::Message).await;
        if self.stray_random.load(Ordering::Relaxed) {
            let us = rand::random::<u64>() % 100;
            tokio::time::sleep(std::time::Duration::from_micros(us)).await;
        }
        if fate.drop_request || cut() {
            return Err(Error::Unavailable(format!("message {link} lost")));
        }
        let response = handle(self.lookup(to)?).await;
        crate::sim::pause(Cost::Message).await;
        if fate.drop_response || cut() {
            return Err(Error::Unavailable(format!("reply to {link} lost")));
        }
        response
    }
}

#[async_trait]
impl PeerTransport for InProcNetwork {
    /// In process the receiver's work runs inside the caller's future: the deadline cuts both,
    /// as it does over gRPC (work the receiver spawns, such as a snapshot's install, goes on).
    async fn send(
        &self,
        from: NodeId,
        to: NodeId,
        request: PeerRequest,
        timeout: std::time::Duration,
    ) -> Result<PeerResponse> {
        let delivered = self.deliver(Some(from), to, |node| async move {
            node.handle_peer(request).await
        });
        tokio::time::timeout(timeout, delivered)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(format!(
                    "node {to} did not answer within {} ms",
                    timeout.as_millis()
                )))
            })
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
        self.deliver(None, node, |n| async move {
            n.serve_client(request, forward).await
        })
        .await
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.members.read().map(|m| m.clone()).unwrap_or_default()
    }

    async fn cluster_status(&self) -> Result<ClusterStatus> {
        let node = self.any_running_node()?;
        host::cluster_status(&node).await
    }

    async fn split(&self, shard: GroupId, at: Option<u64>) -> Result<SplitDone> {
        let log = self.events.read().ok().and_then(|e| e.clone());
        let events = log.unwrap_or_default();
        let node = self.any_running_node()?;
        crate::placement::split::split(&node, shard, at, &events)
            .await
            .map(|p| p.done())
    }

    async fn events(&self) -> Result<Vec<Event>> {
        let log = self.events.read().ok().and_then(|e| e.clone());
        Ok(log.map(|l| l.snapshot()).unwrap_or_default())
    }
}
