//! `NativeCluster`: an `EmbeddedCluster` (embedded/cluster.rs) with its fault controls, its
//! clients, load, recording and gRPC serving. Slow operations are async fns (off the event
//! loop); reads of local state (node ids, a key's shard) are plain calls.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use scalestore::{ClusterOptions, EmbeddedCluster, LoadOptions, LoadRun, NetworkFaults};
use scalestore_server::ServedCluster;

use crate::args::{
    consistency, events_js, millis, position, shard_id, status_js, whole, EventJs, StatusJs,
};
use crate::client::NativeClient;
use crate::error::{closed, invalid, stopped, to_js};
use crate::history::NativeHistory;
use crate::load::NativeLoadRun;

#[napi(object)]
pub struct ClusterStartOptions {
    pub nodes: Option<u32>,
    pub shards: Option<u32>,
    pub replication: Option<u32>,
    pub data_dir: Option<String>,
    pub seed: Option<f64>,
}

#[napi(object)]
pub struct LoadStartOptions {
    pub writers: Option<u32>,
    pub read_ratio: Option<f64>,
    pub consistency: Option<String>,
    pub keys: Option<u32>,
    pub value_size: Option<u32>,
    pub seed: Option<f64>,
}

#[napi]
pub struct NativeCluster {
    cluster: Mutex<Option<Arc<EmbeddedCluster>>>,
    served: Arc<tokio::sync::Mutex<Option<ServedCluster>>>,
    /// Every client handed out, closed with the cluster.
    clients: Mutex<Vec<scalestore::Client>>,
    /// The runtime the cluster's nodes run on (load runs start there).
    runtime: tokio::runtime::Handle,
}

/// Starts an embedded cluster; `undefined` options mean "as stored in `dataDir`", else 3 nodes,
/// 8 shards, min(3, nodes) replicas.
#[napi]
pub async fn start_cluster(options: ClusterStartOptions) -> napi::Result<NativeCluster> {
    let count = |v: Option<u32>| v.map(|v| v as usize);
    let root = options.data_dir.as_ref().map(std::path::PathBuf::from);
    let mut cluster_options = ClusterOptions::for_dir(
        root.as_deref(),
        count(options.nodes),
        count(options.shards),
        count(options.replication),
    )
    .map_err(to_js)?;
    cluster_options.seed = options.seed.map(|s| whole(s, "seed")).transpose()?;
    let cluster = EmbeddedCluster::start(cluster_options)
        .await
        .map_err(to_js)?;
    Ok(NativeCluster {
        cluster: Mutex::new(Some(Arc::new(cluster))),
        served: Arc::new(tokio::sync::Mutex::new(None)),
        clients: Mutex::new(Vec::new()),
        runtime: tokio::runtime::Handle::current(),
    })
}

impl NativeCluster {
    fn cluster(&self) -> napi::Result<Arc<EmbeddedCluster>> {
        self.cluster
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| closed("cluster is closed"))
    }

    fn known(&self, id: u32) -> napi::Result<Arc<EmbeddedCluster>> {
        let cluster = self.cluster()?;
        if cluster.node_ids().contains(&u64::from(id)) {
            Ok(cluster)
        } else {
            Err(to_js(scalestore::Error::UnknownNode(u64::from(id))))
        }
    }
}

#[napi]
impl NativeCluster {
    /// A client of the cluster; `node` pins it to that node.
    #[napi]
    pub fn client(&self, node: Option<u32>) -> napi::Result<NativeClient> {
        let client = match node {
            Some(id) => self
                .known(id)?
                .client_pinned(u64::from(id))
                .map_err(to_js)?,
            None => self.cluster()?.client(),
        };
        if let Ok(mut c) = self.clients.lock() {
            c.retain(|c| !c.is_closed());
            c.push(client.clone());
        }
        Ok(NativeClient::new(client))
    }

    /// Every member, stopped ones included (removed ones not).
    #[napi(getter)]
    pub fn node_ids(&self) -> napi::Result<Vec<u32>> {
        Ok(self
            .cluster()?
            .node_ids()
            .into_iter()
            .map(|n| n as u32)
            .collect())
    }

    #[napi(getter)]
    pub fn data_dir(&self) -> napi::Result<Option<String>> {
        Ok(self
            .cluster()?
            .root_dir()
            .map(|p| p.to_string_lossy().into_owned()))
    }

    #[napi(getter)]
    pub fn seed(&self) -> napi::Result<f64> {
        Ok(self.cluster()?.seed() as f64)
    }

    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.cluster.lock().map(|c| c.is_none()).unwrap_or(true)
    }

    #[napi]
    pub fn shard_of(&self, key: Buffer) -> napi::Result<u32> {
        Ok(self.cluster()?.shard_of(&key) as u32)
    }

    #[napi]
    pub fn leader_of(&self, shard: u32) -> napi::Result<Option<u32>> {
        let leader = self.cluster()?.leader_of(u64::from(shard)).map_err(to_js)?;
        Ok(leader.map(|l| l as u32))
    }

    /// Crash-stops a node (nothing is handed off).
    #[napi]
    pub async fn stop_node(&self, id: u32) -> napi::Result<()> {
        self.known(id)?
            .crash_node(u64::from(id))
            .await
            .map_err(to_js)
    }

    /// Restarts a stopped node from its data dir.
    #[napi]
    pub async fn start_node(&self, id: u32) -> napi::Result<()> {
        self.known(id)?
            .restart_node(u64::from(id))
            .await
            .map_err(to_js)
    }

    /// Nodes talk only within their group; nodes named in no group are cut off from all.
    #[napi]
    pub fn partition(&self, groups: Vec<Vec<u32>>) -> napi::Result<()> {
        let cluster = self.cluster()?;
        let mut seen = BTreeSet::new();
        let groups: Vec<Vec<u64>> = groups
            .into_iter()
            .map(|g| g.into_iter().map(u64::from).collect())
            .collect();
        for id in groups.iter().flatten() {
            self.known(*id as u32)?;
            if !seen.insert(*id) {
                return Err(invalid(format!("node {id} is in more than one group")));
            }
        }
        let sides: Vec<&[u64]> = groups.iter().map(Vec::as_slice).collect();
        cluster.faults().partition(&sides);
        Ok(())
    }

    #[napi]
    pub fn heal(&self) -> napi::Result<()> {
        self.cluster()?.faults().heal();
        Ok(())
    }

    /// Loss and delay on node-to-node and client links, requests and replies alike.
    #[napi]
    pub fn set_network(&self, drop_rate: f64, delay_ms: f64, jitter_ms: f64) -> napi::Result<()> {
        let faults = NetworkFaults::from_rates(drop_rate, delay_ms, jitter_ms).map_err(to_js)?;
        self.cluster()?.faults().set_network(faults);
        Ok(())
    }

    #[napi]
    pub async fn add_node(&self) -> napi::Result<u32> {
        let id = self.cluster()?.add_node().await.map_err(to_js)?;
        Ok(id as u32)
    }

    #[napi]
    pub async fn remove_node(&self, id: u32, timeout_ms: f64) -> napi::Result<()> {
        let timeout = millis(timeout_ms, "timeoutMs")?;
        self.known(id)?
            .remove_node(u64::from(id), timeout)
            .await
            .map_err(to_js)
    }

    /// Splits `shard` at ring position `at` (a decimal string; none: the middle of its largest
    /// range); the new shard's id.
    #[napi]
    pub async fn split(&self, shard: u32, at: Option<String>) -> napi::Result<u32> {
        let at = position(at)?;
        let plan = self
            .cluster()?
            .split(u64::from(shard), at)
            .await
            .map_err(to_js)?;
        shard_id(plan.child)
    }

    #[napi]
    pub async fn set_replication(&self, replication: u32) -> napi::Result<()> {
        self.cluster()?
            .set_replication(replication as usize)
            .await
            .map_err(to_js)
    }

    #[napi]
    pub async fn status(&self) -> napi::Result<StatusJs> {
        let cluster = self.cluster()?;
        let status = tokio::task::spawn_blocking(move || cluster.status())
            .await
            .map_err(stopped)?
            .map_err(to_js)?;
        Ok(status_js(&status))
    }

    #[napi]
    pub fn events(&self) -> napi::Result<Vec<EventJs>> {
        Ok(events_js(&self.cluster()?.events()))
    }

    #[napi]
    pub async fn wait_for_leaders(&self, timeout_ms: f64) -> napi::Result<()> {
        let timeout = millis(timeout_ms, "timeoutMs")?;
        self.cluster()?
            .wait_for_all_leaders(timeout)
            .await
            .map_err(to_js)
    }

    #[napi]
    pub async fn wait_until_settled(&self, timeout_ms: f64) -> napi::Result<()> {
        let timeout = millis(timeout_ms, "timeoutMs")?;
        self.cluster()?
            .wait_until_settled(timeout)
            .await
            .map(|_| ())
            .map_err(to_js)
    }

    /// Serves every node over gRPC on `address`'s host (port 0: free ports; else consecutive
    /// ports from it) and resolves node 1's address. Serving again resolves the same address;
    /// another address while served is refused.
    #[napi]
    pub async fn serve(&self, address: String) -> napi::Result<String> {
        let (host, port) = scalestore_server::serve::split_host_port(&address).map_err(to_js)?;
        let cluster = self.cluster()?;
        let mut served = self.served.lock().await;
        if let Some(s) = served.as_ref() {
            return s.first_endpoint_for(port).map_err(to_js);
        }
        let s = scalestore_server::serve::serve_embedded_on(&cluster, &host, port)
            .await
            .map_err(to_js)?;
        let first = s.first_endpoint_for(port).map_err(to_js)?;
        *served = Some(s);
        Ok(first)
    }

    /// Every client of this cluster, whenever created, records into the returned history
    /// until `stopRecording`.
    #[napi]
    pub fn start_recording(&self) -> napi::Result<NativeHistory> {
        Ok(NativeHistory::from(self.cluster()?.recording().start()))
    }

    #[napi]
    pub fn stop_recording(&self) -> napi::Result<()> {
        self.cluster()?.recording().stop();
        Ok(())
    }

    /// Starts load generated and measured in Rust (the core's load.rs).
    #[napi]
    pub fn start_load(&self, options: LoadStartOptions) -> napi::Result<NativeLoadRun> {
        let cluster = self.cluster()?;
        let defaults = LoadOptions::default();
        let read_ratio = options.read_ratio.unwrap_or(defaults.read_ratio);
        if !(0.0..=1.0).contains(&read_ratio) {
            return Err(invalid(format!(
                "readRatio must be within 0 and 1, not {read_ratio}"
            )));
        }
        let load = LoadOptions {
            writers: options.writers.map_or(defaults.writers, |w| w as usize),
            read_ratio,
            consistency: consistency(options.consistency)?,
            keys: options.keys.map_or(defaults.keys, |k| k as usize),
            value_size: options
                .value_size
                .map_or(defaults.value_size, |v| v as usize),
            seed: options
                .seed
                .map(|s| whole(s, "seed"))
                .transpose()?
                .unwrap_or(defaults.seed),
            ..defaults
        };
        let _entered = self.runtime.enter();
        let run = LoadRun::start(cluster.client(), load).map_err(to_js)?;
        Ok(NativeLoadRun::new(run))
    }

    /// Stops serving, stops every node, closes every client and, for a temporary data dir,
    /// removes it. Safe to call twice.
    #[napi]
    pub async fn close(&self) -> napi::Result<()> {
        let Some(cluster) = self.cluster.lock().ok().and_then(|mut c| c.take()) else {
            return Ok(());
        };
        if let Ok(mut c) = self.clients.lock() {
            for client in c.drain(..) {
                client.close();
            }
        }
        if let Some(served) = self.served.lock().await.take() {
            served.stop().await;
        }
        // Calls still in flight hold the cluster for a moment.
        let mut cluster = cluster;
        for _ in 0..500 {
            match Arc::try_unwrap(cluster) {
                Ok(c) => return c.shutdown().await.map_err(to_js),
                Err(c) => cluster = c,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(to_js(scalestore::Error::Unavailable(
            "the cluster is still in use; its nodes stop when the last call ends".into(),
        )))
    }
}
