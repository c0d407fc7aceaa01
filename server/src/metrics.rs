//! Prometheus metrics and health of one node, served over HTTP (`--metrics-listen`):
//! `/metrics` (the text format, from the `prometheus` crate), `/health` (the process is alive),
//! `/ready` (it has the cluster map and every group it hosts has a leader). One registry per
//! node: no global state, so many nodes can live in one process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use scalestore::storage::LATENCY_BUCKETS_MICROS;
use scalestore::{Error, Result};
use tokio::net::TcpListener;

use crate::peer::GrpcPeers;
use crate::serve::NodeHandle;

/// Request latency buckets, seconds.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One node's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    node: NodeHandle,
}

impl Metrics {
    pub fn new(node: NodeHandle, peers: Option<Arc<GrpcPeers>>) -> Result<Arc<Metrics>> {
        let failed = |e: prometheus::Error| Error::InvalidArgument(format!("metrics: {e}"));
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "scalestore_requests_total",
                "KV requests served, by operation and outcome",
            ),
            &["op", "outcome"],
        )
        .map_err(failed)?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "scalestore_request_duration_seconds",
                "KV request latency, by operation and outcome",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["op", "outcome"],
        )
        .map_err(failed)?;
        registry
            .register(Box::new(requests.clone()))
            .map_err(failed)?;
        registry
            .register(Box::new(latency.clone()))
            .map_err(failed)?;
        registry
            .register(Box::new(NodeCollector::new(node.clone(), peers)?))
            .map_err(failed)?;
        Ok(Arc::new(Metrics {
            registry,
            requests,
            latency,
            node,
        }))
    }

    /// Counts one KV request; `outcome` is "ok" or the error's kind.
    pub fn observe(&self, op: &str, outcome: &str, took: Duration) {
        self.requests.with_label_values(&[op, outcome]).inc();
        self.latency
            .with_label_values(&[op, outcome])
            .observe(took.as_secs_f64());
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Whether the node can serve: it runs, its store can persist, it holds a map naming it,
    /// and every group it hosts has a leader. `Err` says what is missing.
    pub fn ready(&self) -> std::result::Result<(), String> {
        let node = self.node.current().map_err(|e| e.to_string())?;
        if let Some(error) = node.storage_failure() {
            return Err(format!("storage cannot persist: {error}"));
        }
        let map = node.shard_map();
        if !map.nodes.contains_key(&node.id()) {
            return Err("no cluster map naming this node yet".into());
        }
        let mut groups = node.groups();
        groups.sort_unstable();
        for g in groups {
            let led = node.status(g).map(|s| s.leader.is_some()).unwrap_or(false);
            if !led {
                return Err(format!("group {g} has no leader"));
            }
        }
        Ok(())
    }
}

/// Values read from the node at each scrape: per-shard Raft progress, leaders held, storage
/// counters, the fsync latency histogram, peer stream reconnects.
struct NodeCollector {
    node: NodeHandle,
    peers: Option<Arc<GrpcPeers>>,
    descs: Vec<Desc>,
}

const FAMILIES: [(&str, &str); 23] = [
    ("scalestore_shard_term", "Raft term of each hosted group"),
    (
        "scalestore_shard_commit_index",
        "Committed log index of each hosted group",
    ),
    (
        "scalestore_shard_applied_index",
        "Applied log index of each hosted group",
    ),
    ("scalestore_leaders_held", "Groups this node leads"),
    (
        "scalestore_log_appends_total",
        "Raft log appends acknowledged after an fsync",
    ),
    (
        "scalestore_log_fsyncs_total",
        "WAL fsyncs (one covers appends of many groups)",
    ),
    (
        "scalestore_log_writes_total",
        "RocksDB writes of the node's log writer (one carries the log changes of many groups)",
    ),
    ("scalestore_fsync_duration_seconds", "WAL fsync latency"),
    (
        "scalestore_snapshots_sent_total",
        "Snapshots sent to other nodes",
    ),
    (
        "scalestore_snapshot_bytes_sent_total",
        "Snapshot bytes sent to other nodes",
    ),
    (
        "scalestore_snapshots_received_total",
        "Snapshots received and installed",
    ),
    (
        "scalestore_snapshot_bytes_received_total",
        "Snapshot bytes received from other nodes",
    ),
    (
        "scalestore_peer_stream_connects_total",
        "Peer streams opened (reconnects included)",
    ),
    (
        "scalestore_groups_asleep",
        "Groups on this node whose Raft timers are stopped because they are idle (hibernation)",
    ),
    (
        "scalestore_pre_vote_requests_total",
        "Pre-vote requests sent (per peer asked): this node heard from no leader in time",
    ),
    (
        "scalestore_vote_requests_total",
        "Vote requests sent (per peer asked): elections this node started",
    ),
    (
        "scalestore_storage_failing",
        "1 while the node's store cannot persist (a full disk, say) and its groups are stopped",
    ),
    (
        "scalestore_storage_write_failures_total",
        "Writes and WAL syncs the store refused",
    ),
    (
        "scalestore_groups_unstartable",
        "Groups on this node's disk that could not start (the node serves its other groups)",
    ),
    (
        "scalestore_storage_reopens_total",
        "Times a failed store was reopened once its disk had room",
    ),
    (
        "scalestore_splits_applied_total",
        "Shard splits applied by this node's replicas",
    ),
    (
        "scalestore_split_stall_seconds_total",
        "Time the applies carrying splits took (the parent's stall: keys moved, child built, synced)",
    ),
    (
        "process_cpu_seconds_total",
        "User and system CPU time of this process, in seconds",
    ),
];

/// User + system CPU seconds of process `pid` (this process when `None`), from
/// `/proc/PID/stat`; `None` where there is no procfs.
pub fn process_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces):
    // state is field 3, utime and stime are fields 14 and 15, in clock ticks (USER_HZ,
    // 100 on Linux's supported architectures).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

impl NodeCollector {
    fn new(node: NodeHandle, peers: Option<Arc<GrpcPeers>>) -> Result<Self> {
        let descs = FAMILIES
            .iter()
            .map(|(name, help)| {
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    Vec::new(),
                    Default::default(),
                )
                .map_err(|e| Error::InvalidArgument(format!("metrics: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NodeCollector { node, peers, descs })
    }
}

fn family(name: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let help = FAMILIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| h.to_string())
        .unwrap_or_default();
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help);
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn gauge(value: f64, labels: &[(&str, String)]) -> proto::Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = proto::Metric::default();
    m.set_gauge(g);
    m.set_label(
        labels
            .iter()
            .map(|(k, v)| {
                let mut l = proto::LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.clone());
                l
            })
            .collect(),
    );
    m
}

fn counter(value: u64) -> proto::Metric {
    counter_f64(value as f64)
}

fn counter_f64(value: f64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(node) = self.node.current() else {
            return Vec::new();
        };
        let mut terms = Vec::new();
        let mut commits = Vec::new();
        let mut applied = Vec::new();
        let mut leading = 0u64;
        let mut groups = node.groups();
        groups.sort_unstable();
        for g in groups {
            let Ok(s) = node.status(g) else { continue };
            let shard = if g == scalestore::META_GROUP {
                "manager".to_string()
            } else {
                g.to_string()
            };
            let labels = [("shard", shard)];
            terms.push(gauge(s.term as f64, &labels));
            commits.push(gauge(s.committed_index.unwrap_or(0) as f64, &labels));
            applied.push(gauge(s.applied_index.unwrap_or(0) as f64, &labels));
            leading += u64::from(s.is_leader);
        }
        let stats = node.storage_stats();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let (counts, sum_micros) = stats.fsync_latency.read();
        let mut buckets = Vec::new();
        let mut cumulative = 0u64;
        for (i, upper) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
            cumulative += counts[i];
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*upper as f64 / 1e6);
            buckets.push(b);
        }
        let total: u64 = counts.iter().sum();
        let mut h = proto::Histogram::default();
        h.set_sample_count(total);
        h.set_sample_sum(sum_micros as f64 / 1e6);
        h.set_bucket(buckets);
        let mut fsync = proto::Metric::default();
        fsync.set_histogram(h);
        let connects = self.peers.as_ref().map(|p| load(&p.connects)).unwrap_or(0);
        vec![
            family("scalestore_shard_term", MetricType::GAUGE, terms),
            family("scalestore_shard_commit_index", MetricType::GAUGE, commits),
            family("scalestore_shard_applied_index", MetricType::GAUGE, applied),
            family(
                "scalestore_leaders_held",
                MetricType::GAUGE,
                vec![gauge(leading as f64, &[])],
            ),
            family(
                "scalestore_log_appends_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.log_appends))],
            ),
            family(
                "scalestore_log_fsyncs_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.log_syncs))],
            ),
            family(
                "scalestore_log_writes_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.log_writes))],
            ),
            family(
                "scalestore_fsync_duration_seconds",
                MetricType::HISTOGRAM,
                vec![fsync],
            ),
            family(
                "scalestore_snapshots_sent_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.snapshots_sent))],
            ),
            family(
                "scalestore_snapshot_bytes_sent_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.snapshot_bytes_sent))],
            ),
            family(
                "scalestore_snapshots_received_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.snapshots_installed))],
            ),
            family(
                "scalestore_snapshot_bytes_received_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.snapshot_bytes_received))],
            ),
            family(
                "scalestore_peer_stream_connects_total",
                MetricType::COUNTER,
                vec![counter(connects)],
            ),
            family(
                "scalestore_groups_asleep",
                MetricType::GAUGE,
                vec![gauge(node.asleep_groups().len() as f64, &[])],
            ),
            family(
                "scalestore_pre_vote_requests_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.pre_vote_requests_sent))],
            ),
            family(
                "scalestore_vote_requests_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.vote_requests_sent))],
            ),
            family(
                "scalestore_storage_failing",
                MetricType::GAUGE,
                vec![gauge(
                    f64::from(u8::from(node.storage_failure().is_some())),
                    &[],
                )],
            ),
            family(
                "scalestore_storage_write_failures_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.write_failures))],
            ),
            family(
                "scalestore_groups_unstartable",
                MetricType::GAUGE,
                vec![gauge(node.unstartable_groups().len() as f64, &[])],
            ),
            family(
                "scalestore_storage_reopens_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.reopens))],
            ),
            family(
                "scalestore_splits_applied_total",
                MetricType::COUNTER,
                vec![counter(load(&stats.splits_applied))],
            ),
            family(
                "scalestore_split_stall_seconds_total",
                MetricType::COUNTER,
                vec![counter_f64(load(&stats.split_stall_us) as f64 / 1e6)],
            ),
            family(
                "process_cpu_seconds_total",
                MetricType::COUNTER,
                process_cpu_seconds(None)
                    .map(counter_f64)
                    .into_iter()
                    .collect(),
            ),
        ]
    }
}

async fn scrape(
    State(m): State<Arc<Metrics>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        m.render(),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(m): State<Arc<Metrics>>) -> (StatusCode, String) {
    match m.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Serves `/metrics`, `/health` and `/ready` on `listener` until the task is aborted.
pub fn serve_http(listener: TcpListener, metrics: Arc<Metrics>) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })
}
