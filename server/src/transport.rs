//! The Rust client's gRPC [`Transport`]: from any endpoint it fetches the cluster map (which
//! holds every node's address), then calls nodes directly, so the core [`Client`] routes to
//! leaders, retries under its deadline and fails over across nodes as it does in process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use scalestore::protocol::{ClientRequest, ClientResponse};
use scalestore::{Client, ClientOptions, Error, NodeId, Result, ShardMap, Transport};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::error::{ServerError, ServerResult};
use crate::proto::admin_client::AdminClient;
use crate::proto::internal_client::InternalClient;
use crate::proto::{ClientCall, EventsRequest, SplitRequest, StatusRequest, StatusResponse};
use crate::wire::{channel_with, decode, encode};
use scalestore::{ClusterStatus, Event, NodeStatus, ShardStatus, SplitDone};

/// Calls nodes of one cluster over gRPC.
pub struct GrpcTransport {
    /// The cluster the first endpoint belongs to: every later call names it (and the node it
    /// is for), so a node of another cluster, or another node at a reused address, refuses
    /// the call instead of serving it.
    cluster: String,
    /// Every node's address, as the node advertises it (the cluster map's) and as this
    /// client dials it (through `address_map`), worked out once when the map is learned.
    addresses: RwLock<BTreeMap<NodeId, NodeAddress>>,
    channels: Mutex<HashMap<String, Channel>>,
    tls: Option<ClientTlsConfig>,
    address_map: BTreeMap<String, String>,
    /// Set when, at connect, the seed endpoint answered but an advertised address did not:
    /// added to the error of every failed dial (it names the option that fixes it).
    unreachable_advertised: Option<String>,
}

/// Where one node is: as it advertises itself, and as this client reaches it.
#[derive(Debug, Clone)]
struct NodeAddress {
    advertised: String,
    dialed: String,
}

/// How a client dials the nodes it learns of from the cluster map. The defaults suit a
/// cluster whose advertised addresses the client can reach; behind NAT, Docker or
/// Kubernetes port mapping they are not, and `address_map` says where each one is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dialing {
    /// An advertised address (`HOST:PORT`, as the nodes' `--advertise`) -> the address this
    /// client reaches that node at. Addresses not in it are dialed as advertised.
    pub address_map: BTreeMap<String, String>,
    /// The name the nodes' TLS certificates are checked against, instead of the host dialed
    /// (needed when a certificate names the advertised host and the client dials another).
    pub tls_server_name: Option<String>,
}

impl Dialing {
    /// An address map from `ADVERTISED=REACHABLE` entries (each entry may hold several,
    /// comma-separated): the CLI's `--address-map` and `SCALESTORE_ADDRESS_MAP`.
    pub fn parse_address_map<S: AsRef<str>>(
        entries: &[S],
    ) -> ServerResult<BTreeMap<String, String>> {
        let pairs = split_endpoints(entries)
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((advertised, reachable)) => {
                    Ok((advertised.trim().to_string(), reachable.trim().to_string()))
                }
                None => Err(ServerError::Config(format!(
                    "address map entry {entry:?}: expected ADVERTISED=REACHABLE (HOST:PORT=HOST:PORT)"
                ))),
            })
            .collect::<ServerResult<Vec<_>>>()?;
        Self::address_map_of(pairs)
    }

    /// Checks an address map given as pairs (the SDKs' dict / object): both sides must be
    /// `HOST:PORT`, and an advertised address may appear once.
    pub fn address_map_of(
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> ServerResult<BTreeMap<String, String>> {
        let mut map = BTreeMap::new();
        for (advertised, reachable) in pairs {
            // An advertised address need not resolve here (it may be a name only the nodes'
            // network knows); the reachable one must.
            let well_formed = advertised
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !well_formed {
                return Err(ServerError::Config(format!(
                    "address map: advertised address {advertised:?} is not HOST:PORT"
                )));
            }
            crate::config::check_address(&reachable)
                .map_err(|e| ServerError::Config(format!("address map: {e}")))?;
            if let Some(earlier) = map.insert(advertised.clone(), reachable.clone()) {
                if earlier != reachable {
                    return Err(ServerError::Config(format!(
                        "address map: {advertised} is mapped to both {earlier} and {reachable}"
                    )));
                }
            }
        }
        Ok(map)
    }
}

impl GrpcTransport {
    /// Asks each endpoint in turn for the cluster map until one answers within `timeout`.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> ServerResult<Arc<Self>> {
        Self::connect_with(endpoints, timeout, None, &Dialing::default()).await
    }

    /// [`connect`](Self::connect) over TLS when `tls` is given, dialing as `dialing` says.
    pub async fn connect_with(
        endpoints: &[String],
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
        dialing: &Dialing,
    ) -> ServerResult<Arc<Self>> {
        if endpoints.is_empty() {
            return Err(ServerError::Config("no endpoint given".into()));
        }
        for endpoint in endpoints {
            crate::config::check_address(endpoint)?;
        }
        let tls =
            tls.map(|tls| crate::tls::with_server_name(tls, dialing.tls_server_name.as_deref()));
        let deadline = std::time::Instant::now() + timeout;
        let mut transport = Self::fetch_first_map(endpoints, deadline, &tls).await?;
        transport.address_map = dialing.address_map.clone();
        if let Ok(addresses) = transport.addresses.get_mut() {
            for a in addresses.values_mut() {
                a.dialed = reachable(&transport.address_map, &a.advertised);
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        transport.unreachable_advertised = transport
            .probe_advertised(
                endpoints,
                left.clamp(Duration::from_millis(200), PROBE_WAIT),
            )
            .await;
        Ok(Arc::new(transport))
    }

    /// The transport of the first endpoint to answer with the cluster map before `deadline`.
    async fn fetch_first_map(
        endpoints: &[String],
        deadline: std::time::Instant,
        tls: &Option<ClientTlsConfig>,
    ) -> ServerResult<Self> {
        // A cluster still forming (or a node restarting) answers a moment later: keep asking
        // every endpoint until the deadline.
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let once = Self::connect_once(endpoints, left.max(Duration::from_millis(200)), tls);
            match once.await {
                Ok(t) => return Ok(t),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn connect_once(
        endpoints: &[String],
        timeout: Duration,
        tls: &Option<ClientTlsConfig>,
    ) -> ServerResult<Self> {
        let mut reasons = Vec::new();
        for endpoint in endpoints {
            let fetched = fetch_map_of(endpoint, timeout.min(Duration::from_secs(2)), tls.as_ref());
            match fetched.await {
                Ok((map, cluster)) => {
                    if map.addresses.is_empty() {
                        reasons.push(format!("{endpoint}: its map names no node addresses"));
                        continue;
                    }
                    return Ok(GrpcTransport {
                        cluster,
                        addresses: RwLock::new(node_addresses(&map, &BTreeMap::new())),
                        channels: Mutex::new(HashMap::new()),
                        tls: tls.clone(),
                        address_map: BTreeMap::new(),
                        unreachable_advertised: None,
                    });
                }
                Err(e) => reasons.push(format!("{endpoint}: {e}")),
            }
        }
        Err(ServerError::Unreachable {
            endpoints: endpoints.join(","),
            reason: reasons.join("; "),
        })
    }

    /// When no seed endpoint is among the addresses this client would dial, asks one of those
    /// for the map: if it does not answer while a seed endpoint did, the nodes advertise
    /// addresses this client cannot reach (NAT, Docker, port mapping). Says so, naming the
    /// option, for every later failed dial. `None` when that is not the case.
    async fn probe_advertised(&self, endpoints: &[String], wait: Duration) -> Option<String> {
        let (
            node,
            NodeAddress {
                advertised,
                dialed: address,
            },
        ) = {
            let addresses = self.addresses.read().ok()?;
            if addresses.values().any(|a| endpoints.contains(&a.dialed)) {
                return None;
            }
            let (node, address) = addresses.iter().next()?;
            (*node, address.clone())
        };
        let error = match fetch_map_of(&address, wait, self.tls.as_ref()).await {
            Ok(_) => return None,
            Err(e) => e,
        };
        let mapped = if advertised == address {
            format!("the address it advertises, {advertised}")
        } else {
            format!("{address} (mapped from its advertised {advertised})")
        };
        Some(format!(
            "the seed endpoint {} answered, but node {node} at {mapped} did not ({error}): if \
             the nodes are behind NAT, Docker or port mapping, give the client an address map \
             from advertised to reachable addresses (address_map in Python, addressMap in \
             Node, --address-map or SCALESTORE_ADDRESS_MAP for the CLI, Dialing::address_map \
             in Rust)",
            endpoints.join(",")
        ))
    }

    /// A failed dial's error, with what the connect-time probe found.
    fn explained(&self, error: Error) -> Error {
        match (&self.unreachable_advertised, error) {
            (Some(note), Error::Unavailable(reason)) => {
                Error::Unavailable(format!("{reason}; {note}"))
            }
            (_, error) => error,
        }
    }

    /// The channel to `node`, as this client dials it.
    fn channel_to(&self, node: NodeId) -> Result<Channel> {
        let addresses = self
            .addresses
            .read()
            .map_err(|_| Error::Unavailable("transport poisoned".into()))?;
        let address = addresses.get(&node).ok_or(Error::UnknownNode(node))?;
        self.channel(&address.dialed)
    }

    fn channel(&self, address: &str) -> Result<Channel> {
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Error::Unavailable("transport poisoned".into()))?;
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let c = channel_with(address, self.tls.as_ref())?;
        channels.insert(address.to_string(), c.clone());
        Ok(c)
    }

    fn learn(&self, map: &ShardMap) {
        if map.addresses.is_empty() {
            return;
        }
        if let Ok(mut a) = self.addresses.write() {
            *a = node_addresses(map, &self.address_map);
        }
    }
}

/// Where this client reaches a node that advertises `advertised`.
fn reachable(address_map: &BTreeMap<String, String>, advertised: &str) -> String {
    address_map
        .get(advertised)
        .cloned()
        .unwrap_or_else(|| advertised.to_string())
}

/// The addresses of the map's member nodes, each as advertised and as dialed.
fn node_addresses(
    map: &ShardMap,
    address_map: &BTreeMap<String, String>,
) -> BTreeMap<NodeId, NodeAddress> {
    map.addresses
        .iter()
        .filter(|(id, _)| map.nodes.contains_key(id))
        .map(|(id, advertised)| {
            let address = NodeAddress {
                advertised: advertised.clone(),
                dialed: reachable(address_map, advertised),
            };
            (*id, address)
        })
        .collect()
}

/// Who a call is for: the node (as the map names it) and its cluster.
struct Addressee<'a> {
    node: NodeId,
    cluster: &'a str,
}

/// Calls one node; the answer and the cluster of the node that gave it.
async fn call_at(
    channel: Channel,
    request: &ClientRequest,
    forward: bool,
    to: Option<Addressee<'_>>,
) -> Result<(ClientResponse, String)> {
    let mut client = InternalClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let mut call = tonic::Request::new(ClientCall {
        request: encode(request),
        forward,
        node: to.as_ref().map(|a| a.node),
    });
    crate::wire::set_header(
        &mut call,
        crate::wire::PROTOCOL_HEADER,
        crate::wire::PROTOCOL,
    );
    if let Some(cluster) = to.as_ref().map(|a| a.cluster).filter(|c| !c.is_empty()) {
        crate::wire::set_header(&mut call, crate::wire::CLUSTER_HEADER, cluster);
    }
    let reply = client
        .client(call)
        .await
        .map_err(transport_error)?
        .into_inner();
    let response = decode::<Result<ClientResponse>>(&reply.result)??;
    Ok((response, reply.cluster))
}

/// A failed Internal call: the node's answers travel in the reply, so a status here is the
/// transport's (a dropped connection comes back as UNKNOWN or INTERNAL): retryable elsewhere,
/// since a retried write keeps its session sequence number. A refusal is not.
fn transport_error(status: tonic::Status) -> Error {
    match status.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied
        | tonic::Code::FailedPrecondition => Error::InvalidArgument(status.message().to_string()),
        _ => Error::Unavailable(format!("{}: {}", status.code(), status.message())),
    }
}

/// The cluster map as `endpoint` knows it, within `timeout`.
#[cfg_attr(not(feature = "embedded"), allow(dead_code))]
pub(crate) async fn fetch_map(
    endpoint: &str,
    timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<ShardMap> {
    fetch_map_of(endpoint, timeout, tls)
        .await
        .map(|(map, _)| map)
}

/// [`fetch_map`], with the cluster id of the node that answered.
async fn fetch_map_of(
    endpoint: &str,
    timeout: Duration,
    tls: Option<&ClientTlsConfig>,
) -> Result<(ShardMap, String)> {
    let call = call_at(
        channel_with(endpoint, tls)?,
        &ClientRequest::GetShardMap,
        false,
        None,
    );
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok((ClientResponse::ShardMap(map), cluster))) => Ok((map, cluster)),
        Ok(Ok((other, _))) => Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Timeout {
            what: format!("asking {endpoint} for the cluster map"),
            waited_ms: timeout.as_millis() as u64,
        }),
    }
}

#[async_trait]
impl Transport for GrpcTransport {
    async fn call(
        &self,
        node: NodeId,
        request: ClientRequest,
        forward: bool,
    ) -> Result<ClientResponse> {
        let to = Addressee {
            node,
            cluster: &self.cluster,
        };
        let (response, _) = call_at(self.channel_to(node)?, &request, forward, Some(to))
            .await
            .map_err(|e| self.explained(e))?;
        if let ClientResponse::ShardMap(map) = &response {
            self.learn(map);
        }
        Ok(response)
    }

    fn nodes(&self) -> Vec<NodeId> {
        self.addresses
            .read()
            .map(|a| a.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Asks the nodes in turn (the Admin service) until one reports.
    async fn cluster_status(&self) -> Result<ClusterStatus> {
        let mut last = Error::Unavailable("no node address known".into());
        for address in self.known_addresses() {
            let mut admin = AdminClient::new(self.channel(&address)?);
            let asked = tokio::time::timeout(ADMIN_ASK, admin.status(StatusRequest {})).await;
            match asked {
                Ok(Ok(reply)) => return Ok(status_from_proto(reply.into_inner())),
                Ok(Err(status)) => last = crate::convert::from_status(&status),
                Err(_) => last = Error::Unavailable(format!("{address} did not answer")),
            }
        }
        Err(last)
    }

    /// Asks one node after another until one answers (a node that answers with an error ends
    /// it: the split may have been planned there).
    async fn split(&self, shard: u64, at: Option<u64>) -> Result<SplitDone> {
        let mut last = Error::Unavailable("no node address known".into());
        for address in self.known_addresses() {
            let mut admin = AdminClient::new(self.channel(&address)?);
            match admin.split(SplitRequest { shard, at }).await {
                Ok(reply) => {
                    let r = reply.into_inner();
                    return Ok(SplitDone {
                        parent: r.parent,
                        child: r.child,
                        at: r.at,
                    });
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    last = crate::convert::from_status(&status);
                }
                Err(status) => return Err(crate::convert::from_status(&status)),
            }
        }
        Err(last)
    }

    /// Every reachable node's events, merged oldest first.
    async fn events(&self) -> Result<Vec<Event>> {
        let asks = self
            .known_addresses()
            .into_iter()
            .map(|address| async move {
                let mut admin = AdminClient::new(self.channel(&address).ok()?);
                let reply = tokio::time::timeout(ADMIN_ASK, admin.events(EventsRequest {}))
                    .await
                    .ok()?
                    .ok()?;
                Some(reply.into_inner().events)
            });
        let replies = futures::future::join_all(asks).await;
        if replies.iter().all(Option::is_none) {
            return Err(Error::Unavailable("no node reported its events".into()));
        }
        let mut events: Vec<crate::proto::Event> =
            replies.into_iter().flatten().flatten().collect();
        events.sort_by_key(|e| (e.time_ms, e.node));
        Ok(events
            .into_iter()
            .map(|e| Event {
                time_ms: e.time_ms,
                kind: e.kind,
                detail: format!("{} (node {})", e.detail, e.node),
            })
            .collect())
    }
}

/// How long one node may take to answer an Admin status or events call.
const ADMIN_ASK: Duration = Duration::from_secs(5);

/// How long connect waits for an advertised address it checks (see `probe_advertised`).
const PROBE_WAIT: Duration = Duration::from_secs(2);

impl GrpcTransport {
    /// Every node's address as this client reaches it.
    fn known_addresses(&self) -> Vec<String> {
        self.addresses
            .read()
            .map(|a| a.values().map(|a| a.dialed.clone()).collect())
            .unwrap_or_default()
    }
}

fn status_from_proto(s: StatusResponse) -> ClusterStatus {
    ClusterStatus {
        shards: s
            .shards
            .into_iter()
            .map(|sh| ShardStatus {
                shard: sh.id,
                ranges: sh
                    .ranges
                    .iter()
                    .map(|r| scalestore::RingRange {
                        start: r.start,
                        end_inclusive: r.end_inclusive,
                    })
                    .collect(),
                replicas: sh.replicas,
                leader: sh.leader,
                term: sh.term,
                committed_index: Some(sh.committed_index),
                applied_index: Some(sh.applied_index),
                approximate_bytes: sh.approximate_bytes,
                voter_sets: Vec::new(),
                joint: false,
            })
            .collect(),
        nodes: s
            .nodes
            .into_iter()
            .map(|n| NodeStatus {
                node: n.id,
                up: n.up,
                shards: n.shards,
                leaders: n.leaders as usize,
                unstartable: n.unstartable,
            })
            .collect(),
    }
}

/// A [`Client`] of the cluster at `endpoints` (any of its nodes): fails with
/// [`ServerError::Unreachable`] if none answers within `options.timeout`.
/// Endpoints as given by a user: each entry may hold several, comma-separated; blanks dropped.
pub fn split_endpoints<S: AsRef<str>>(given: &[S]) -> Vec<String> {
    given
        .iter()
        .flat_map(|e| e.as_ref().split(','))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect()
}

/// A client of the cluster at `endpoints`: the map is fetched within `options.connect_timeout`,
/// and each call then has `options.timeout`.
pub async fn connect(endpoints: &[String], options: ClientOptions) -> ServerResult<Client> {
    connect_with(endpoints, options, None, &Dialing::default()).await
}

/// [`connect`] over TLS: `tls` names the CA that signed the nodes' certificates and, when the
/// cluster asks for one, this client's certificate and key.
pub async fn connect_tls(
    endpoints: &[String],
    options: ClientOptions,
    tls: &crate::tls::TlsFiles,
) -> ServerResult<Client> {
    connect_with(endpoints, options, Some(&tls.load()?), &Dialing::default()).await
}

/// [`connect_tls`] with the CA, certificate and key given as PEM contents.
pub async fn connect_tls_pem(
    endpoints: &[String],
    options: ClientOptions,
    tls: &crate::tls::TlsPem,
) -> ServerResult<Client> {
    connect_with(endpoints, options, Some(tls), &Dialing::default()).await
}

/// [`connect`] with every setting: TLS when `tls` is given (PEM contents), and how to dial the
/// nodes the map names (`dialing`: an address map, a TLS server name).
pub async fn connect_with(
    endpoints: &[String],
    options: ClientOptions,
    tls: Option<&crate::tls::TlsPem>,
    dialing: &Dialing,
) -> ServerResult<Client> {
    let tls = tls.map(crate::tls::client_config_pem).transpose()?;
    if tls.is_none() && dialing.tls_server_name.is_some() {
        return Err(ServerError::Config(
            "a TLS server name needs TLS (the cluster's CA)".into(),
        ));
    }
    let transport =
        GrpcTransport::connect_with(endpoints, options.connect_timeout, tls, dialing).await?;
    Ok(Client::new(transport, options))
}
