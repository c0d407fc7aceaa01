//! Serving nodes over gRPC: one port per node, with the KV, Admin and Internal services.
//! [`serve_node`] serves a node of this process (the server binary); [`serve_embedded`] serves
//! every node of an embedded cluster (what the Python and Node `cluster.serve()` call).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::ServingTls;
use scalestore::inproc::InProcNetwork;
use scalestore::network::{PeerRequest, PeerResponse};
use scalestore::protocol::{ClientRequest, ClientResponse};
use scalestore::{
    Client, ClientOptions, EmbeddedCluster, Error, EventLog, Node, NodeId, Result, ShardMap,
    Transport,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;

use crate::admin::AdminService;
use crate::kv::KvService;
use crate::peer::InternalService;
use crate::proto::admin_server::AdminServer;
use crate::proto::internal_server::InternalServer;
use crate::proto::kv_server::KvServer;

/// The node a service answers for: one of this process, or an embedded cluster's node
/// (looked up at each call, so it follows restarts).
#[derive(Clone)]
pub enum NodeHandle {
    Process(Arc<Node>),
    Embedded {
        network: Arc<InProcNetwork>,
        id: NodeId,
    },
}

impl NodeHandle {
    pub fn current(&self) -> Result<Arc<Node>> {
        match self {
            NodeHandle::Process(n) if n.is_stopping() => {
                Err(Error::Unavailable(format!("node {} is stopping", n.id())))
            }
            NodeHandle::Process(n) => Ok(n.clone()),
            NodeHandle::Embedded { network, id } => network.running_node(*id),
        }
    }

    pub fn id(&self) -> NodeId {
        match self {
            NodeHandle::Process(n) => n.id(),
            NodeHandle::Embedded { id, .. } => *id,
        }
    }

    /// The map this node routes by (none while it is down).
    pub fn map(&self) -> Option<Arc<ShardMap>> {
        self.current().ok().map(|n| n.shard_map())
    }
}

/// A client's way to every node from inside a server process: this node directly, the others
/// over its peer streams (the node forwards nothing itself: the client follows leader hints).
pub struct PeerClientTransport {
    node: Arc<Node>,
}

impl PeerClientTransport {
    pub fn new(node: Arc<Node>) -> Self {
        PeerClientTransport { node }
    }
}

#[async_trait::async_trait]
impl Transport for PeerClientTransport {
    async fn call(
        &self,
        target: NodeId,
        request: ClientRequest,
        forward: bool,
    ) -> Result<ClientResponse> {
        if target == self.node.id() {
            return self.node.serve_client(request, forward).await;
        }
        match self
            .node
            .peers()
            .send(
                self.node.id(),
                target,
                PeerRequest::Client(request),
                scalestore::network::PEER_TIMEOUT,
            )
            .await?
        {
            PeerResponse::Client(r) => Ok(r),
            _ => Err(Error::Unavailable("unexpected reply kind".into())),
        }
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.node.shard_map().nodes.keys().copied().collect()
    }
}

/// KV requests a served embedded node serves at once.
pub const DEFAULT_IN_FLIGHT: usize = 4096;

/// What the services of one node share.
#[derive(Clone)]
pub struct ServiceContext {
    pub node: NodeHandle,
    /// Routes KV calls to shard leaders (through the node's peers, or in process).
    pub client: Client,
    pub events: Arc<EventLog>,
    pub cluster_id: String,
    /// Nodes of an embedded cluster join through the cluster's API, not over gRPC.
    pub embedded: bool,
    /// KV requests served at once; beyond it a request is refused with `Busy`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Where requests are counted (none: not measured).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// TLS is on: peer streams and joins need a node's certificate (see [`crate::tls`]).
    pub peer_verifier: Option<Arc<crate::tls::PeerVerifier>>,
}

/// A running gRPC server of one node.
pub struct NodeServer {
    pub node: NodeId,
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeServer {
    /// Stops accepting calls and waits (briefly) for the server to finish.
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(5)).await
    }

    /// Stops accepting calls and gives calls under way (and peers' open streams) `grace` to
    /// end before the server is dropped.
    pub async fn stop_within(mut self, grace: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(grace, &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Serves `context`'s node on `listener` until stopped; over TLS only when `tls` is given.
pub fn serve_node(
    listener: TcpListener,
    context: ServiceContext,
    tls: Option<ServingTls>,
) -> Result<NodeServer> {
    let address = listener.local_addr()?;
    let incoming = TcpIncoming::from_listener(listener, true, Some(Duration::from_secs(10)))
        .map_err(|e| Error::Unavailable(format!("cannot serve on {address}: {e}")))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let kv = KvServer::new(KvService::new(context.clone()))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let admin = AdminServer::new(AdminService::new(context.clone()));
    let internal = InternalServer::new(InternalService {
        node: context.node.clone(),
        cluster_id: context.cluster_id.clone(),
        peer_verifier: context.peer_verifier.clone(),
        metrics: context.metrics.clone(),
    })
    .max_decoding_message_size(usize::MAX)
    .max_encoding_message_size(usize::MAX);
    let node = context.node.id();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls.config)
            .map_err(|e| Error::InvalidArgument(format!("TLS settings: {e}")))?;
    }
    let task = tokio::spawn(async move {
        let served = builder
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(1)))
            .http2_keepalive_timeout(Some(Duration::from_secs(3)))
            .add_service(kv)
            .add_service(admin)
            .add_service(internal)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(node, error = %e, "gRPC server stopped");
        }
    });
    Ok(NodeServer {
        node,
        address,
        stop: Some(stop),
        task,
    })
}

/// Every node of an embedded cluster served over gRPC. Dropping it stops the servers.
pub struct ServedCluster {
    servers: BTreeMap<NodeId, NodeServer>,
}

impl ServedCluster {
    /// `host:port` of each node.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.servers
            .iter()
            .map(|(id, s)| (*id, s.address.to_string()))
            .collect()
    }

    /// The addresses as a client's endpoint list.
    pub fn endpoints(&self) -> Vec<String> {
        self.addresses().into_values().collect()
    }

    /// Node 1's address, for a caller asking to serve on `port` again: the same address when
    /// `port` is 0 or the one already served, else `InvalidArgument` (served elsewhere).
    pub fn first_endpoint_for(&self, port: u16) -> Result<String> {
        let first = self
            .endpoints()
            .into_iter()
            .next()
            .ok_or_else(|| scalestore::Error::Closed("no node is served".into()))?;
        if port != 0 && !first.ends_with(&format!(":{port}")) {
            return Err(scalestore::Error::InvalidArgument(format!(
                "already served at {first}; close the cluster to serve elsewhere"
            )));
        }
        Ok(first)
    }

    pub async fn stop(self) {
        for (_, s) in self.servers {
            s.stop().await;
        }
    }
}

/// `HOST:PORT` (IPv6 hosts in brackets) as the host and port [`serve_embedded_on`] takes.
pub fn split_host_port(address: &str) -> Result<(String, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| {
            scalestore::Error::InvalidArgument(format!(
                "address must be HOST:PORT, not {address:?}"
            ))
        })
}

/// Serves every node of `cluster` on `host` (e.g. `127.0.0.1`), one free port each, and
/// records the addresses in the cluster map so gRPC clients can reach each node directly.
pub async fn serve_embedded(cluster: &EmbeddedCluster, host: &str) -> Result<ServedCluster> {
    serve_embedded_on(cluster, host, 0).await
}

/// [`serve_embedded`] on consecutive ports from `first_port` (0: any free ports).
pub async fn serve_embedded_on(
    cluster: &EmbeddedCluster,
    host: &str,
    first_port: u16,
) -> Result<ServedCluster> {
    let mut servers = BTreeMap::new();
    let network = cluster.network();
    for (i, id) in cluster.node_ids().into_iter().enumerate() {
        let port = if first_port == 0 {
            0
        } else {
            first_port + i as u16
        };
        let listener = TcpListener::bind((host, port))
            .await
            .map_err(|e| Error::InvalidArgument(format!("cannot listen on {host}:{port}: {e}")))?;
        let context = ServiceContext {
            node: NodeHandle::Embedded {
                network: network.clone(),
                id,
            },
            client: Client::new(cluster.transport(), ClientOptions::default()),
            events: cluster.event_log(),
            cluster_id: cluster.cluster_id().to_string(),
            embedded: true,
            in_flight: Arc::new(tokio::sync::Semaphore::new(DEFAULT_IN_FLIGHT)),
            metrics: None,
            peer_verifier: None,
        };
        servers.insert(id, serve_node(listener, context, None)?);
    }
    let served = ServedCluster { servers };
    let addresses = served.addresses();
    let any = cluster
        .node_ids()
        .into_iter()
        .find_map(|id| cluster.node(id).ok())
        .ok_or_else(|| Error::Unavailable("no node is running".into()))?;
    scalestore::manager::update_map(&any, move |m| {
        let mut changed = false;
        for (id, address) in &addresses {
            changed |= m.addresses.insert(*id, address.clone()).as_ref() != Some(address);
        }
        Ok(changed)
    })
    .await?;
    Ok(served)
}
