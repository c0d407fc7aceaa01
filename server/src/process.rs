//! One `scalestore-server` process: checks its data dir against its flags, starts its node
//! (bootstrapping a new cluster, or joining a running one), serves it over gRPC, keeps its
//! peer address book and map current, and on SIGTERM hands its leaderships off before stopping.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalestore::config::WallClock;
use scalestore::host::{self, HostServices};
use scalestore::network::{PeerRequest, PeerResponse};
use scalestore::node::NodeConfig;
use scalestore::protocol::{ClientRequest, ClientResponse};
use scalestore::replica::failpoints::Failpoints;
use scalestore::{
    Client, ClientOptions, EventLog, Limits, ManagerOptions, Node, NodeId, ShardMap,
    StorageOptions, TestSwitches,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tonic::transport::ClientTlsConfig;

use crate::config::{Bootstrap, ServerConfig, Start};
use crate::error::{ServerError, ServerResult};
use crate::peer::GrpcPeers;
use crate::proto::admin_client::AdminClient;
use crate::proto::{JoinRequest, StatusRequest};
use crate::serve::{serve_node, NodeHandle, ServiceContext};

const SERVER_FILE: &str = "scalestore-server.json";

/// Test hook, as TiKV's `FAILPOINTS`: faults armed inside this process, read once at start. A
/// comma-separated list; for now only `slow_syncs=<ms>` (every WAL sync of this node sleeps that
/// long first: a slow disk). An unknown or malformed entry refuses the start.
pub const FAILPOINTS_ENV: &str = "SCALESTORE_FAILPOINTS";

/// One fault of [`FAILPOINTS_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failpoint {
    SlowSyncs(Duration),
}

/// The faults `spec` (the value of [`FAILPOINTS_ENV`]) names.
fn parse_failpoints(spec: &str) -> ServerResult<Vec<Failpoint>> {
    let refuse =
        |entry: &str, why: &str| ServerError::Config(format!("{FAILPOINTS_ENV}: {entry:?} {why}"));
    spec.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((name, ms)) if name.trim() == "slow_syncs" => ms
                .trim()
                .parse::<u64>()
                .map(|ms| Failpoint::SlowSyncs(Duration::from_millis(ms)))
                .map_err(|_| refuse(entry, "is malformed: expected slow_syncs=<ms>")),
            _ => Err(refuse(entry, "is unknown (known: slow_syncs=<ms>)")),
        })
        .collect()
}

/// The faults [`FAILPOINTS_ENV`] arms on node `id` (none when it is unset).
fn failpoints_from_env(id: NodeId) -> ServerResult<Failpoints> {
    let failpoints = Failpoints::default();
    let spec = match std::env::var(FAILPOINTS_ENV) {
        Ok(spec) => spec,
        Err(std::env::VarError::NotPresent) => return Ok(failpoints),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(ServerError::Config(format!(
                "{FAILPOINTS_ENV} is not UTF-8"
            )))
        }
    };
    for failpoint in parse_failpoints(&spec)? {
        match failpoint {
            Failpoint::SlowSyncs(delay) => failpoints.slow_syncs_on(id, delay),
        }
        tracing::warn!(node = id, ?failpoint, "failpoint armed ({FAILPOINTS_ENV})");
    }
    Ok(failpoints)
}

/// What a data dir remembers about its node beyond the store itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredServer {
    format_version: u32,
    cluster_id: String,
    id: NodeId,
    /// Set for the cluster's first members.
    bootstrap: Option<Bootstrap>,
    /// Whether the join was accepted (a node that crashed before asks again).
    joined: bool,
    /// Whether the cluster's first map was published: groups are initialized only before
    /// (a replica re-added empty later must wait for its leader, never start a group itself).
    #[serde(default)]
    formed: bool,
    /// The newest map this node knew, kept so a restart finds the cluster (and starts routing)
    /// even when the nodes it first met are gone.
    #[serde(default)]
    last_map: Option<ShardMap>,
}

/// The stored record, shared by the tasks that update it.
type Record = Arc<std::sync::Mutex<StoredServer>>;

fn update(dir: &Path, record: &Record, change: impl FnOnce(&mut StoredServer)) -> ServerResult<()> {
    let snapshot = {
        let mut r = record
            .lock()
            .map_err(|_| ServerError::Config("server record poisoned".into()))?;
        change(&mut r);
        r.clone()
    };
    save(dir, &snapshot)
}

/// How a node stops once told to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Hands its leaderships to other voters first (stopping one node of a running cluster).
    HandOff,
    /// Stops at once: the whole cluster is going (a dev cluster torn down), so there is no one
    /// to hand leaderships to; every acknowledged write is on disk either way.
    Now,
}

/// Runs the node until `shutdown` completes, then stops it gracefully.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> ServerResult<()> {
    run_until(config, async {
        shutdown.await;
        Stop::HandOff
    })
    .await
}

/// [`run`], stopping as `shutdown` says.
pub async fn run_until(
    config: ServerConfig,
    shutdown: impl Future<Output = Stop>,
) -> ServerResult<()> {
    let failpoints = failpoints_from_env(config.id)?;
    std::fs::create_dir_all(&config.data_dir)?;
    let stored = prepare(&config).await?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| ServerError::Config(format!("cannot listen on {}: {e}", config.listen)))?;

    let initial = match &stored.bootstrap {
        Some(b) => Some(initial_map(b)?),
        None => None,
    };
    // The map to start routing by: a running cluster's current one if any member answers,
    // else the last one this node knew, else (a cluster's first start) the initial map.
    let mut seeds: Vec<String> = match &config.start {
        Start::Join { seed } => vec![seed.clone()],
        _ => Vec::new(),
    };
    for m in initial.iter().chain(stored.last_map.iter()) {
        seeds.extend(m.addresses.values().cloned());
    }
    seeds.sort();
    seeds.dedup();
    let known = current_map(&seeds, &config.advertise, dialing(&config)?).await;
    let fallback = stored.last_map.clone().or_else(|| initial.clone());
    let map = match (known, fallback) {
        (Some(m), _) => m,
        (None, Some(m)) => m,
        (None, None) => {
            return Err(ServerError::Unreachable {
                endpoints: seeds.join(","),
                reason: "no member answered with the cluster map".into(),
            })
        }
    };
    let mut addresses: HashMap<NodeId, String> = map.addresses.clone().into_iter().collect();
    addresses.insert(config.id, config.advertise.clone());
    let peer_tls = dialing(&config)?;
    let serving_tls = match &config.tls {
        Some(t) => Some(crate::tls::ServingTls::new(t)?),
        None => None,
    };
    let peers = GrpcPeers::new(
        config.id,
        &stored.cluster_id,
        addresses,
        config.snapshot_bytes_per_second,
        peer_tls.clone(),
    );
    let events = Arc::new(EventLog::default());
    let node_config = NodeConfig {
        id: config.id,
        cluster_id: stored.cluster_id.clone(),
        timing: config.timing,
        limits: Limits::default(),
        storage: StorageOptions::default(),
        testing: TestSwitches::default(),
        failpoints: Arc::new(failpoints),
        clock: Arc::new(WallClock::default()),
    };
    let services = HostServices {
        manager: ManagerOptions::default(),
        events: events.clone(),
    };
    let node = host::start_node(
        node_config,
        &config.data_dir.join("node"),
        peers.clone(),
        Arc::new(map),
        &services,
    )
    .await?;
    let metrics =
        crate::metrics::Metrics::new(NodeHandle::Process(node.clone()), Some(peers.clone()))?;
    let metrics_server = match &config.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await.map_err(|e| {
                ServerError::Config(format!("cannot listen on {address} for metrics: {e}"))
            })?;
            Some(crate::metrics::serve_http(listener, metrics.clone()))
        }
        None => None,
    };
    let context = ServiceContext {
        node: NodeHandle::Process(node.clone()),
        client: Client::new(
            Arc::new(crate::serve::PeerClientTransport::new(node.clone())),
            ClientOptions::default(),
        ),
        events: events.clone(),
        cluster_id: stored.cluster_id.clone(),
        embedded: false,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        metrics: Some(metrics.clone()),
        peer_verifier: serving_tls.as_ref().map(|t| t.peers.clone()),
    };
    let server = serve_node(listener, context, serving_tls)?;
    let cluster_id = stored.cluster_id.clone();

    let mut background = Vec::new();
    let formed = stored.formed;
    let joined = stored.joined;
    let record: Record = Arc::new(std::sync::Mutex::new(stored));
    if let (Some(initial), false) = (initial, formed) {
        let (node, record, dir) = (node.clone(), record.clone(), config.data_dir.clone());
        background.push(tokio::spawn(async move {
            publish(&node, &initial).await;
            if let Err(e) = update(&dir, &record, |r| r.formed = true) {
                tracing::error!(error = %e, "cannot record that the cluster formed");
            }
        }));
    }
    if let (Start::Join { seed }, false) = (&config.start, joined) {
        // A refused join stops what was started, in order, before the process exits with the
        // error's code: nothing was announced, and no thread is left using the store.
        let joined = match join(seed, config.id, &config.advertise, peer_tls.as_ref()).await {
            Ok(()) => update(&config.data_dir, &record, |r| r.joined = true),
            Err(e) => Err(e),
        };
        if let Err(e) = joined {
            for task in background.into_iter().chain(metrics_server) {
                task.abort();
            }
            node.shutdown().await;
            server.stop().await;
            return Err(e);
        }
    }
    tracing::info!(node = config.id, address = %server.address, cluster = %cluster_id, "serving");
    events.record(
        "node_started",
        format!("node {} is up at {}", config.id, config.advertise),
    );
    background.push(tokio::spawn(follow_map(
        node.clone(),
        peers.clone(),
        record,
        config.data_dir.clone(),
        config.advertise.clone(),
    )));

    let stop = shutdown.await;
    match stop {
        Stop::HandOff => {
            tracing::info!(node = config.id, "stopping: handing leaderships off");
            host::hand_off_leaderships(&node, Duration::from_secs(5)).await;
        }
        Stop::Now => {
            tracing::info!(
                node = config.id,
                "stopping now (the whole cluster is stopping)"
            );
        }
    }
    for task in background.into_iter().chain(metrics_server) {
        task.abort();
    }
    node.shutdown().await;
    // Stopping with the whole cluster, no peer stream is worth waiting for.
    server
        .stop_within(match stop {
            Stop::HandOff => Duration::from_secs(5),
            Stop::Now => Duration::from_millis(200),
        })
        .await;
    events.record("node_stopped", format!("node {} stopped", config.id));
    Ok(())
}

/// Checks the data dir against the flags (a new dir is claimed for this cluster and node).
async fn prepare(config: &ServerConfig) -> ServerResult<StoredServer> {
    let path = config.data_dir.join(SERVER_FILE);
    let refuse = |reason: String| ServerError::DataDir {
        path: config.data_dir.clone(),
        reason,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredServer = serde_json::from_slice(&bytes)
                .map_err(|e| refuse(format!("corrupt {SERVER_FILE}: {e}")))?;
            if stored.format_version != 1 {
                return Err(refuse(format!(
                    "unsupported format {}",
                    stored.format_version
                )));
            }
            if stored.id != config.id {
                return Err(refuse(format!(
                    "it holds node {}'s data, not node {}'s",
                    stored.id, config.id
                )));
            }
            if let Start::Bootstrap(b) = &config.start {
                if stored.bootstrap.as_ref() != Some(b) {
                    return Err(refuse(format!(
                        "it was {} ; the --initial-cluster/--shards/--replication given differ (drop them to resume)",
                        describe(&stored)
                    )));
                }
            }
            if let Some(b) = &stored.bootstrap {
                if config.explicit_shards.is_some_and(|s| s != b.shards)
                    || config
                        .explicit_replication
                        .is_some_and(|r| r != b.replication)
                {
                    return Err(refuse(format!(
                        "it was {}; --shards/--replication contradict it",
                        describe(&stored)
                    )));
                }
            }
            Ok(stored)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let not_empty = std::fs::read_dir(&config.data_dir)?.next().is_some();
            if not_empty {
                return Err(refuse(format!(
                    "not empty and has no {SERVER_FILE}: not a ScaleStore data dir"
                )));
            }
            let stored = match &config.start {
                Start::Bootstrap(b) => StoredServer {
                    format_version: 1,
                    cluster_id: b.cluster_id(),
                    id: config.id,
                    bootstrap: Some(b.clone()),
                    joined: true,
                    formed: false,
                    last_map: None,
                },
                Start::Join { seed } => StoredServer {
                    format_version: 1,
                    cluster_id: cluster_id_of(seed, dialing(config)?.as_ref()).await?,
                    id: config.id,
                    bootstrap: None,
                    joined: false,
                    formed: true,
                    last_map: None,
                },
                Start::Resume => {
                    return Err(ServerError::Config(format!(
                        "{:?} holds no node yet: give --initial-cluster (a new cluster) or --join HOST:PORT (a running one)",
                        config.data_dir
                    )))
                }
            };
            save(&config.data_dir, &stored)?;
            Ok(stored)
        }
        Err(e) => Err(e.into()),
    }
}

fn describe(stored: &StoredServer) -> String {
    match &stored.bootstrap {
        Some(b) => format!(
            "bootstrapped with {} members, {} shards, {} replicas",
            b.members.len(),
            b.shards,
            b.replication
        ),
        None => "joined to a running cluster".into(),
    }
}

fn save(dir: &Path, stored: &StoredServer) -> ServerResult<()> {
    let bytes = serde_json::to_vec_pretty(stored)
        .map_err(|e| ServerError::Config(format!("cannot encode {SERVER_FILE}: {e}")))?;
    scalestore::storage::identity::write_synced(&dir.join(SERVER_FILE), &bytes)?;
    Ok(())
}

fn initial_map(b: &Bootstrap) -> ServerResult<ShardMap> {
    let ids: Vec<NodeId> = b.members.keys().copied().collect();
    let mut map = ShardMap::uniform(b.shards, &ids, b.replication)?;
    map.addresses = b.members.clone();
    Ok(map)
}

/// How this node dials other nodes: TLS with its peer certificate, or plaintext.
fn dialing(config: &ServerConfig) -> ServerResult<Option<ClientTlsConfig>> {
    config
        .tls
        .as_ref()
        .map(crate::tls::peer_dialing_config)
        .transpose()
}

async fn admin_client(
    address: &str,
    tls: Option<&ClientTlsConfig>,
) -> ServerResult<AdminClient<tonic::transport::Channel>> {
    Ok(AdminClient::new(crate::peer::channel_with(address, tls)?))
}

/// The cluster id of the cluster `seed` belongs to.
async fn cluster_id_of(seed: &str, tls: Option<&ClientTlsConfig>) -> ServerResult<String> {
    let mut admin = admin_client(seed, tls).await?;
    let asked = tokio::time::timeout(Duration::from_secs(10), admin.status(StatusRequest {})).await;
    match asked {
        Ok(Ok(r)) => Ok(r.into_inner().cluster_id),
        Ok(Err(s)) => Err(ServerError::Unreachable {
            endpoints: seed.into(),
            reason: s.message().to_string(),
        }),
        Err(_) => Err(ServerError::Unreachable {
            endpoints: seed.into(),
            reason: "no answer in 10 s".into(),
        }),
    }
}

/// Registers this node (already serving) with the cluster; retried while the cluster is busy.
async fn join(
    seed: &str,
    id: NodeId,
    address: &str,
    tls: Option<&ClientTlsConfig>,
) -> ServerResult<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut admin = admin_client(seed, tls).await?;
        let request = JoinRequest {
            node_id: id,
            address: address.to_string(),
        };
        match admin.join(request).await {
            Ok(_) => return Ok(()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
                ) =>
            {
                return Err(ServerError::Core(crate::convert::from_status(&s)))
            }
            Err(s) if Instant::now() >= deadline => {
                return Err(ServerError::Unreachable {
                    endpoints: seed.into(),
                    reason: s.message().to_string(),
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The newest map any of `seeds` (other than this node) gives within a short wait.
async fn current_map(seeds: &[String], me: &str, tls: Option<ClientTlsConfig>) -> Option<ShardMap> {
    let asks = seeds.iter().filter(|s| s.as_str() != me).map(|s| {
        let tls = tls.clone();
        async move {
            crate::transport::fetch_map(s, Duration::from_secs(2), tls.as_ref())
                .await
                .ok()
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .max_by_key(|m| m.epoch)
}

/// How long a first member leaves the initialization of a group to that group's first replica.
const INITIALIZE_GRACE: Duration = Duration::from_secs(3);

/// Initializes this node's first groups and writes the initial map once a quorum of the
/// manager's group is up (the other first members may start later): retried until done. Past
/// a grace period, the groups of first members that have not started are initialized here too,
/// so a cluster forms from any quorum of its first members.
async fn publish(node: &Arc<Node>, initial: &ShardMap) {
    let started = std::time::Instant::now();
    loop {
        let any_voter = started.elapsed() >= INITIALIZE_GRACE;
        let done = async {
            host::initialize_groups(node, initial, any_voter).await?;
            host::publish_initial_map(node, initial, Duration::from_secs(5)).await
        };
        match done.await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "cluster not formed yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Keeps the node's map and its peers' addresses current: nodes learn map changes from the
/// manager's broadcast, and one that was down when a change went out asks its peers. The newest
/// map is kept in the data dir; a node whose map lists an old address for it (restarted with a
/// new `--advertise`) registers the new one.
async fn follow_map(
    node: Arc<Node>,
    peers: Arc<GrpcPeers>,
    record: Record,
    dir: std::path::PathBuf,
    advertise: String,
) {
    let mut tick = 0u64;
    let mut saved_epoch = record
        .lock()
        .ok()
        .and_then(|r| r.last_map.as_ref().map(|m| m.epoch))
        .unwrap_or(0);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tick += 1;
        let map = node.shard_map();
        peers.learn(&map.addresses);
        if map.epoch > saved_epoch && map.nodes.contains_key(&node.id()) {
            let newest = (*map).clone();
            if update(&dir, &record, |r| r.last_map = Some(newest)).is_ok() {
                saved_epoch = map.epoch;
            }
        }
        let registered = map.addresses.get(&node.id());
        if registered.is_some_and(|a| *a != advertise) && tick.is_multiple_of(4) {
            let change = host::join(node.id(), Some(advertise.clone()));
            if let Err(e) = scalestore::manager::update_map(&node, change).await {
                tracing::warn!(error = %e, "cannot register this node's new address yet");
            }
        }
        if !tick.is_multiple_of(4) {
            continue;
        }
        let others: Vec<NodeId> = map
            .nodes
            .keys()
            .copied()
            .filter(|n| *n != node.id())
            .collect();
        if others.is_empty() {
            continue;
        }
        let asked = others[(tick / 4) as usize % others.len()];
        let reply = scalestore::network::PeerTransport::send(
            peers.as_ref(),
            node.id(),
            asked,
            PeerRequest::Client(ClientRequest::GetShardMap),
            scalestore::network::PEER_TIMEOUT,
        )
        .await;
        if let Ok(PeerResponse::Client(ClientResponse::ShardMap(theirs))) = reply {
            if theirs.epoch > node.shard_map().epoch {
                peers.learn(&theirs.addresses);
                node.set_shard_map(Arc::new(theirs));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoints_parse_known_entries_and_refuse_the_rest_by_name() {
        let slow = |ms| Failpoint::SlowSyncs(Duration::from_millis(ms));
        assert_eq!(parse_failpoints("").expect("empty"), vec![]);
        assert_eq!(
            parse_failpoints("slow_syncs=30").expect("one"),
            vec![slow(30)]
        );
        assert_eq!(
            parse_failpoints(" slow_syncs = 5 , slow_syncs=0,").expect("spaces, a trailing comma"),
            vec![slow(5), slow(0)]
        );
        for (spec, named) in [
            ("slow_syncs", "slow_syncs"),
            ("slow_syncs=", "slow_syncs="),
            ("slow_syncs=-1", "slow_syncs=-1"),
            ("slow_syncs=30ms", "slow_syncs=30ms"),
            ("slow_syncs=30,fast_disk=1", "fast_disk=1"),
            ("panic", "panic"),
        ] {
            let error = parse_failpoints(spec).expect_err(spec).to_string();
            assert!(
                error.contains(FAILPOINTS_ENV) && error.contains(&format!("{named:?}")),
                "{spec}: {error}"
            );
        }
    }
}
