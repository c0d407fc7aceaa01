//! `scalestore bench`: one load generator (the core's [`LoadRun`]) pointed at an embedded
//! cluster in this process, at ScaleStore servers, or at etcd, so every system is measured by
//! the same client loops, key space, value size and concurrency.
//!
//! A run: connect, write every key once when the workload reads, run the loops for the warm-up
//! and then the measured window, and read what the window cost the system (CPU seconds and
//! fsyncs, see [`costs`]). [`etcd`] is the etcd target.

pub mod costs;
pub mod etcd;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use scalestore::{
    preload, ClientOptions, ClusterOptions, EmbeddedCluster, LoadOptions, LoadReport, LoadRun,
    LoadTarget, ReadConsistency, StorageOptions,
};
use serde::Serialize;

use crate::error::{ServerError, ServerResult};
use costs::Costs;

/// Which system a run drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// ScaleStore server processes at `--endpoints`.
    Scalestore,
    /// etcd v3 members at `--endpoints` (their gRPC client port).
    Etcd,
    /// A ScaleStore cluster started in this process (`--nodes`, `--shards`, ...).
    Embedded,
}

/// What the loops do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Puts only.
    Write,
    /// Reads only (at `--consistency`).
    Read,
    /// YCSB A: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
}

impl Workload {
    pub fn read_ratio(self) -> f64 {
        match self {
            Workload::Write => 0.0,
            Workload::Read => 1.0,
            Workload::YcsbA => 0.5,
            Workload::YcsbB => 0.95,
        }
    }
}

/// Read guarantee of the reads (`linearizable`, `lease`, `stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    Linearizable,
    Lease,
    Stale,
}

impl From<Consistency> for ReadConsistency {
    fn from(c: Consistency) -> Self {
        match c {
            Consistency::Linearizable => ReadConsistency::Linearizable,
            Consistency::Lease => ReadConsistency::Lease,
            Consistency::Stale => ReadConsistency::Stale,
        }
    }
}

/// `scalestore bench` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The system to drive.
    #[arg(long, value_enum, default_value = "scalestore")]
    pub target: System,
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// Share of reads, 0 to 1 (overrides the workload's).
    #[arg(long)]
    pub read_ratio: Option<f64>,
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: Consistency,
    /// Distinct keys, drawn uniformly.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Bytes per key.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Client connections the requests are spread over.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Requests in flight in total.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds run before the measured window (left out of every figure).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Do not write the key space before a workload that reads.
    #[arg(long)]
    pub no_preload: bool,
    /// HOST:PORT of every node's Prometheus endpoint: CPU and fsyncs of the servers.
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Embedded: nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Embedded: shards.
    #[arg(long, default_value_t = 8)]
    pub shards: usize,
    /// Embedded: replicas per shard.
    #[arg(long, default_value_t = 3)]
    pub replication: usize,
    /// Embedded: acknowledge writes before they are on disk (default: fsync on).
    #[arg(long)]
    pub no_fsync: bool,
    /// Embedded: keep the data here (default: a temporary dir, removed after).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub target: System,
    /// The cluster's shape, as far as the bench knows it.
    pub setup: String,
    pub workload: Workload,
    pub read_ratio: f64,
    pub consistency: String,
    pub keys: usize,
    pub key_size: usize,
    pub value_size: usize,
    pub clients: usize,
    pub concurrency: usize,
    pub warmup_seconds: f64,
    pub ops_per_s: f64,
    pub operations: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU seconds the system spent per 1,000 operations (`None`: not measured).
    pub cpu_seconds_per_1000_ops: Option<f64>,
    /// Whose CPU that is.
    pub cpu_of: String,
    pub fsyncs_per_write: Option<f64>,
    /// Operations per 100 ms over the whole run, warm-up included.
    pub timeline: Vec<scalestore::TimelineRow>,
}

impl BenchArgs {
    fn check(&self) -> ServerResult<()> {
        let bad = |what: String| Err(ServerError::Config(what));
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return bad(format!("--duration {}: must be positive", self.duration));
        }
        if !(self.warmup >= 0.0 && self.warmup.is_finite()) {
            return bad(format!("--warmup {}: must be 0 or more", self.warmup));
        }
        if self.clients == 0 || self.concurrency == 0 {
            return bad("--clients and --concurrency must be at least 1".into());
        }
        if self.target == System::Etcd && self.consistency == Consistency::Lease {
            return bad("etcd has no lease reads: use --consistency linearizable or stale".into());
        }
        if self.target != System::Embedded && (self.data_dir.is_some() || self.no_fsync) {
            return bad("--data-dir and --no-fsync are for --target embedded".into());
        }
        Ok(())
    }

    fn load(&self) -> LoadOptions {
        LoadOptions {
            writers: self.concurrency,
            read_ratio: self.read_ratio.unwrap_or(self.workload.read_ratio()),
            consistency: self.consistency.into(),
            keys: self.keys,
            key_size: self.key_size,
            value_size: self.value_size,
            ..LoadOptions::default()
        }
    }
}

/// Runs the benchmark `args` describes; `endpoints` are the servers' (not used when embedded);
/// `client` options apply to ScaleStore clients, `timeout` to each etcd request.
pub async fn run(
    args: &BenchArgs,
    endpoints: &[String],
    tls: Option<&crate::tls::TlsFiles>,
    client: ClientOptions,
) -> ServerResult<BenchReport> {
    args.check()?;
    let load = args.load();
    load.validate()?;
    match args.target {
        System::Embedded => {
            let cluster = EmbeddedCluster::start(ClusterOptions {
                nodes: args.nodes,
                shards: args.shards,
                replication: Some(args.replication),
                root_dir: args.data_dir.clone(),
                storage: StorageOptions {
                    sync: !args.no_fsync,
                    ..Default::default()
                },
                client,
                ..Default::default()
            })
            .await?;
            let measured = async {
                cluster
                    .wait_for_all_leaders(Duration::from_secs(60))
                    .await?;
                let targets: Vec<_> = (0..args.clients).map(|_| cluster.client()).collect();
                let costs = || embedded_costs(&cluster);
                let setup = format!(
                    "embedded: {} nodes, {} shards, R={}, fsync {}",
                    args.nodes,
                    args.shards,
                    args.replication,
                    if args.no_fsync { "off" } else { "on" }
                );
                let cpu_of = "this process (cluster and client)";
                measure(args, load, targets, costs, setup, cpu_of).await
            }
            .await;
            cluster.shutdown().await?;
            measured
        }
        System::Scalestore => {
            let mut targets = Vec::with_capacity(args.clients);
            for _ in 0..args.clients {
                targets.push(match tls {
                    Some(files) => crate::transport::connect_tls(endpoints, client, files).await?,
                    None => crate::transport::connect(endpoints, client).await?,
                });
            }
            let costs = || costs::scrape(&args.metrics, costs::SCALESTORE_FSYNCS);
            let setup = format!("ScaleStore servers at {}", endpoints.join(","));
            measure(args, load, targets, costs, setup, &servers_cpu(args)).await
        }
        System::Etcd => {
            if tls.is_some() {
                return Err(ServerError::Config(
                    "--target etcd is measured over plaintext only".into(),
                ));
            }
            let targets =
                etcd::EtcdTarget::connect(endpoints, args.clients, client.timeout).await?;
            let costs = || costs::scrape(&args.metrics, costs::ETCD_FSYNCS);
            let setup = format!("etcd members at {}", endpoints.join(","));
            measure(args, load, targets, costs, setup, &servers_cpu(args)).await
        }
    }
}

fn servers_cpu(args: &BenchArgs) -> String {
    if args.metrics.is_empty() {
        "not measured (give --metrics)".into()
    } else {
        format!("{} server processes", args.metrics.len())
    }
}

async fn embedded_costs(cluster: &EmbeddedCluster) -> ServerResult<Costs> {
    let mut fsyncs = 0.0;
    for n in cluster.node_ids() {
        if let Ok(stats) = cluster.storage_stats(n) {
            fsyncs += stats.log_syncs.load(std::sync::atomic::Ordering::Relaxed) as f64;
        }
    }
    Ok(Costs {
        cpu_seconds: crate::metrics::process_cpu_seconds(None).unwrap_or(0.0),
        fsyncs,
    })
}

/// Preload, warm-up, measured window; costs read at both ends of the window.
async fn measure<T, F, Fut>(
    args: &BenchArgs,
    load: LoadOptions,
    targets: Vec<T>,
    costs: F,
    setup: String,
    cpu_of: &str,
) -> ServerResult<BenchReport>
where
    T: LoadTarget,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ServerResult<Costs>>,
{
    let measuring_costs = args.target == System::Embedded || !args.metrics.is_empty();
    if load.read_ratio > 0.0 && !args.no_preload {
        progress(args, &format!("writing {} keys first", load.keys));
        preload(&targets, &load, args.concurrency).await?;
    }
    // Whole timeline rows, so the warm-up the report leaves out is exactly this.
    let warmup = Duration::from_millis((args.warmup * 10.0).round() as u64 * 100);
    let window = Duration::from_secs_f64(args.duration);
    let run = LoadRun::start_on(targets, load.clone())?;
    let mut before = None;
    let mut writes_before = 0;
    let mut last = (std::time::Instant::now(), 0u64);
    let end = warmup + window;
    loop {
        let elapsed = run.elapsed();
        if before.is_none() && elapsed >= warmup {
            before = if measuring_costs {
                Some(costs().await?)
            } else {
                Some(Costs::default())
            };
            writes_before = run
                .progress()
                .writes
                .load(std::sync::atomic::Ordering::Relaxed);
        }
        if elapsed >= end {
            break;
        }
        let next_tick = Duration::from_secs(elapsed.as_secs() + 1);
        let wake = [next_tick, end, warmup]
            .into_iter()
            .filter(|t| *t > elapsed)
            .min()
            .unwrap_or(end);
        tokio::time::sleep(wake - elapsed).await;
        let now = std::time::Instant::now();
        if now.duration_since(last.0) >= Duration::from_millis(990) {
            let ops = run
                .progress()
                .operations
                .load(std::sync::atomic::Ordering::Relaxed);
            let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            let errors = run
                .progress()
                .errors
                .load(std::sync::atomic::Ordering::Relaxed);
            let phase = if run.elapsed() <= warmup {
                " (warm-up)"
            } else {
                ""
            };
            progress(
                args,
                &format!(
                    "{:>5.1} s  {rate:>9.0} ops/s  errors {errors}{phase}",
                    run.elapsed().as_secs_f64()
                ),
            );
            last = (now, ops);
        }
    }
    let after = if measuring_costs {
        Some(costs().await?)
    } else {
        None
    };
    let writes = run
        .progress()
        .writes
        .load(std::sync::atomic::Ordering::Relaxed)
        - writes_before;
    let report: LoadReport = run.stop_after_warmup(warmup).await;
    let spent = after.zip(before).map(|(a, b)| a - b);
    Ok(BenchReport {
        target: args.target,
        setup,
        workload: args.workload,
        read_ratio: load.read_ratio,
        consistency: format!("{:?}", load.consistency).to_lowercase(),
        keys: load.keys,
        key_size: load.key(0).len(),
        value_size: load.value_size,
        clients: args.clients,
        concurrency: args.concurrency,
        warmup_seconds: warmup.as_secs_f64(),
        ops_per_s: report.ops_per_s,
        operations: report.operations,
        errors: report.errors,
        seconds: report.seconds,
        p50_ms: report.p50_ms,
        p90_ms: report.p90_ms,
        p99_ms: report.p99_ms,
        p999_ms: report.p999_ms,
        cpu_seconds_per_1000_ops: spent
            .filter(|_| report.operations > 0)
            .map(|s| s.cpu_seconds / report.operations as f64 * 1000.0),
        cpu_of: cpu_of.to_string(),
        fsyncs_per_write: spent
            .filter(|_| writes > 0)
            .map(|s| s.fsyncs / writes as f64),
        timeline: report.timeline,
    })
}

fn progress(args: &BenchArgs, line: &str) {
    if !args.quiet {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "[bench] {line}");
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reads = if self.read_ratio > 0.0 {
            format!(", {} reads", self.consistency)
        } else {
            String::new()
        };
        writeln!(
            f,
            "{:?} ({:.0}% reads{reads}) on {}",
            self.workload,
            self.read_ratio * 100.0,
            self.setup
        )?;
        writeln!(
            f,
            "  {} in flight over {} clients; {} keys of {} B, {} B values; {:.1} s after {:.1} s warm-up",
            self.concurrency,
            self.clients,
            self.keys,
            self.key_size,
            self.value_size,
            self.seconds,
            self.warmup_seconds
        )?;
        writeln!(
            f,
            "  throughput  {:.0} ops/s ({} operations, {} errors)",
            self.ops_per_s, self.operations, self.errors
        )?;
        writeln!(
            f,
            "  latency     p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms
        )?;
        match self.cpu_seconds_per_1000_ops {
            Some(cpu) => writeln!(
                f,
                "  cpu         {cpu:.3} s per 1,000 operations ({})",
                self.cpu_of
            )?,
            None => writeln!(f, "  cpu         {}", self.cpu_of)?,
        }
        match self.fsyncs_per_write {
            Some(n) => write!(f, "  fsyncs      {n:.3} per write"),
            None => write!(f, "  fsyncs      not measured"),
        }
    }
}
