//! `scalestore._scalestore.Cluster`: an `EmbeddedCluster` (embedded/cluster.rs) on a runtime
//! of its own, with its fault controls, its clients, load, recording and gRPC serving.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use scalestore::{ClusterOptions, EmbeddedCluster, LoadOptions, LoadRun, NetworkFaults};
use scalestore_server::ServedCluster;

use crate::args::{bytes_of, consistency, events_list, seconds, status_dict};
use crate::client::PyClient;
use crate::error::{closed, invalid, to_py, Failure};
use crate::history::PyHistory;
use crate::load::PyLoadRun;
use crate::runtime::Runtime;

#[pyclass(frozen, module = "scalestore._scalestore", name = "Cluster")]
pub struct PyCluster {
    rt: Arc<Runtime>,
    cluster: Mutex<Option<Arc<EmbeddedCluster>>>,
    served: Mutex<Option<ServedCluster>>,
    /// Every client handed out, closed with the cluster.
    clients: Mutex<Vec<scalestore::Client>>,
}

impl PyCluster {
    fn cluster(&self) -> PyResult<Arc<EmbeddedCluster>> {
        self.rt.check()?;
        self.cluster
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| closed("cluster is closed"))
    }

    /// Runs `op` on the cluster on its runtime, waiting.
    fn wait<T, F, Fut>(&self, py: Python<'_>, op: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<EmbeddedCluster>) -> Fut,
        Fut: std::future::Future<Output = scalestore::Result<T>> + Send + 'static,
    {
        let future = op(self.cluster()?);
        self.rt
            .wait(py, async move { future.await.map_err(Failure::from) })
    }

    fn known_node(cluster: &Arc<EmbeddedCluster>, id: u64) -> PyResult<()> {
        if cluster.node_ids().contains(&id) {
            Ok(())
        } else {
            Err(to_py(scalestore::Error::UnknownNode(id)))
        }
    }
}

#[pymethods]
impl PyCluster {
    #[new]
    #[pyo3(signature = (nodes=None, shards=None, replication=None, data_dir=None, seed=None))]
    fn new(
        py: Python<'_>,
        nodes: Option<usize>,
        shards: Option<usize>,
        replication: Option<usize>,
        data_dir: Option<PathBuf>,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let mut options = ClusterOptions::for_dir(data_dir.as_deref(), nodes, shards, replication)
            .map_err(to_py)?;
        options.seed = seed;
        let rt = Runtime::new("cluster", 2)?;
        let started = rt.wait(py, async move {
            EmbeddedCluster::start(options).await.map_err(Failure::from)
        });
        match started {
            Ok(cluster) => Ok(PyCluster {
                rt,
                cluster: Mutex::new(Some(Arc::new(cluster))),
                served: Mutex::new(None),
                clients: Mutex::new(Vec::new()),
            }),
            Err(e) => {
                rt.shutdown(py);
                Err(e)
            }
        }
    }

    #[pyo3(signature = (node=None))]
    fn client(&self, node: Option<u64>) -> PyResult<PyClient> {
        let cluster = self.cluster()?;
        let client = match node {
            Some(id) => {
                Self::known_node(&cluster, id)?;
                cluster.client_pinned(id).map_err(to_py)?
            }
            None => cluster.client(),
        };
        if let Ok(mut c) = self.clients.lock() {
            c.retain(|c| !c.is_closed());
            c.push(client.clone());
        }
        Ok(PyClient::new(self.rt.clone(), client, false))
    }

    #[getter]
    fn node_ids(&self) -> PyResult<Vec<u64>> {
        Ok(self.cluster()?.node_ids())
    }

    #[getter]
    fn data_dir(&self) -> PyResult<Option<PathBuf>> {
        Ok(self.cluster()?.root_dir().map(|p| p.to_path_buf()))
    }

    #[getter]
    fn seed(&self) -> PyResult<u64> {
        Ok(self.cluster()?.seed())
    }

    #[getter]
    fn shards(&self) -> PyResult<Vec<u64>> {
        Ok(self.cluster()?.groups())
    }

    #[getter]
    fn closed(&self) -> bool {
        self.cluster.lock().map(|c| c.is_none()).unwrap_or(true)
    }

    fn shard_of(&self, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        let key = bytes_of(key, "key")?;
        Ok(self.cluster()?.shard_of(&key))
    }

    fn leader_of(&self, shard: u64) -> PyResult<Option<u64>> {
        self.cluster()?.leader_of(shard).map_err(to_py)
    }

    fn stop_node(&self, py: Python<'_>, node_id: u64) -> PyResult<()> {
        Self::known_node(&self.cluster()?, node_id)?;
        self.wait(py, move |c| async move { c.crash_node(node_id).await })
    }

    fn start_node(&self, py: Python<'_>, node_id: u64) -> PyResult<()> {
        Self::known_node(&self.cluster()?, node_id)?;
        self.wait(py, move |c| async move { c.restart_node(node_id).await })
    }

    /// Nodes talk only within their group; nodes named in no group are cut off from all.
    fn partition(&self, groups: Vec<Vec<u64>>) -> PyResult<()> {
        let cluster = self.cluster()?;
        let mut seen = BTreeSet::new();
        for id in groups.iter().flatten() {
            Self::known_node(&cluster, *id)?;
            if !seen.insert(*id) {
                return Err(invalid(format!("node {id} is in more than one group")));
            }
        }
        let sides: Vec<&[u64]> = groups.iter().map(Vec::as_slice).collect();
        cluster.faults().partition(&sides);
        Ok(())
    }

    fn heal(&self) -> PyResult<()> {
        self.cluster()?.faults().heal();
        Ok(())
    }

    #[pyo3(signature = (drop_rate=0.0, delay_ms=0.0, jitter_ms=0.0))]
    fn set_network(&self, drop_rate: f64, delay_ms: f64, jitter_ms: f64) -> PyResult<()> {
        let faults = NetworkFaults::from_rates(drop_rate, delay_ms, jitter_ms).map_err(to_py)?;
        self.cluster()?.faults().set_network(faults);
        Ok(())
    }

    fn add_node(&self, py: Python<'_>) -> PyResult<u64> {
        self.wait(py, |c| async move { c.add_node().await })
    }

    #[pyo3(signature = (node_id, timeout=120.0))]
    fn remove_node(&self, py: Python<'_>, node_id: u64, timeout: f64) -> PyResult<()> {
        Self::known_node(&self.cluster()?, node_id)?;
        let timeout = seconds(timeout, "timeout")?;
        self.wait(
            py,
            move |c| async move { c.remove_node(node_id, timeout).await },
        )
    }

    /// Splits `shard` online at ring position `at` (default: the middle of its largest range);
    /// the new shard's id.
    #[pyo3(signature = (shard, at=None))]
    fn split(&self, py: Python<'_>, shard: u64, at: Option<u64>) -> PyResult<u64> {
        self.wait(py, move |c| async move {
            c.split(shard, at).await.map(|plan| plan.child)
        })
    }

    fn set_replication(&self, py: Python<'_>, replication: usize) -> PyResult<()> {
        self.wait(
            py,
            move |c| async move { c.set_replication(replication).await },
        )
    }

    fn status(&self, py: Python<'_>) -> PyResult<PyObject> {
        let status = self.cluster()?.status().map_err(to_py)?;
        status_dict(py, &status)
    }

    fn events(&self, py: Python<'_>) -> PyResult<PyObject> {
        events_list(py, &self.cluster()?.events())
    }

    #[pyo3(signature = (timeout=10.0))]
    fn wait_for_leaders(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds(timeout, "timeout")?;
        self.wait(
            py,
            move |c| async move { c.wait_for_all_leaders(timeout).await },
        )
    }

    #[pyo3(signature = (timeout=60.0))]
    fn wait_until_settled(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds(timeout, "timeout")?;
        self.wait(py, move |c| async move {
            c.wait_until_settled(timeout).await.map(|_| ())
        })
    }

    /// Serves every node over gRPC on `address`'s host (port 0: free ports; else consecutive
    /// ports from it) and returns node 1's address. Serving again returns the same address;
    /// another port while served is refused.
    #[pyo3(signature = (address="127.0.0.1:0"))]
    fn serve(&self, py: Python<'_>, address: &str) -> PyResult<String> {
        let (host, port) = scalestore_server::serve::split_host_port(address).map_err(to_py)?;
        let mut served = self
            .served
            .lock()
            .map_err(|_| closed("cluster is closed"))?;
        if served.is_none() {
            let cluster = self.cluster()?;
            let s = self.rt.wait(py, async move {
                scalestore_server::serve::serve_embedded_on(&cluster, &host, port)
                    .await
                    .map_err(Failure::from)
            })?;
            *served = Some(s);
        }
        match served.as_ref() {
            Some(s) => s.first_endpoint_for(port).map_err(to_py),
            None => Err(closed("no node is served")),
        }
    }

    /// Every gRPC address (node id -> host:port) while served.
    fn served_addresses(&self) -> Vec<(u64, String)> {
        self.served
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.addresses().into_iter().collect()))
            .unwrap_or_default()
    }

    fn start_recording(&self) -> PyResult<PyHistory> {
        Ok(PyHistory::from(self.cluster()?.recording().start()))
    }

    fn stop_recording(&self) -> PyResult<()> {
        self.cluster()?.recording().stop();
        Ok(())
    }

    #[pyo3(signature = (writers=16, read_ratio=0.0, consistency="linearizable", keys=10_000, value_size=100, seed=1))]
    fn start_load(
        &self,
        writers: usize,
        read_ratio: f64,
        consistency: &str,
        keys: usize,
        value_size: usize,
        seed: u64,
    ) -> PyResult<PyLoadRun> {
        let cluster = self.cluster()?;
        let options = LoadOptions {
            writers,
            read_ratio,
            consistency: self::consistency(consistency)?,
            keys,
            value_size,
            seed,
            ..LoadOptions::default()
        };
        let _entered = self.rt.handle().enter();
        let run = LoadRun::start(cluster.client(), options).map_err(to_py)?;
        Ok(PyLoadRun::new(self.rt.clone(), run))
    }

    /// Stops serving, stops every node, closes every client and, for a temporary data dir,
    /// removes it. Safe to call twice.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let Some(cluster) = self.cluster.lock().ok().and_then(|mut c| c.take()) else {
            return Ok(());
        };
        if let Ok(mut c) = self.clients.lock() {
            for client in c.drain(..) {
                client.close();
            }
        }
        if self.rt.check().is_err() {
            // A forked child: the parent's threads are not here; forget it all.
            std::mem::forget(cluster);
            if let Ok(mut s) = self.served.lock() {
                std::mem::forget(s.take());
            }
            self.rt.shutdown(py);
            return Ok(());
        }
        let served = self.served.lock().ok().and_then(|mut s| s.take());
        let result = self.rt.wait(py, async move {
            if let Some(served) = served {
                served.stop().await;
            }
            // Calls still in flight hold the cluster for a moment.
            let mut cluster = cluster;
            for _ in 0..500 {
                match Arc::try_unwrap(cluster) {
                    Ok(c) => return c.shutdown().await.map_err(Failure::from),
                    Err(c) => cluster = c,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(Failure::Core(scalestore::Error::Unavailable(
                "the cluster is still in use; its nodes stop when the last call ends".into(),
            )))
        });
        self.rt.shutdown(py);
        result
    }
}
