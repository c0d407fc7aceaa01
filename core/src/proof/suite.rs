//! A seeded, Jepsen-style fault suite on the embedded cluster. A run starts a cluster, lets
//! recording clients hammer a few keys while a nemesis injects one kind of fault on a schedule
//! drawn from the seed, then heals everything and checks: the history is linearizable, no
//! acknowledged append is lost or doubled, and every shard has a leader and serves within a
//! bound stated in election timeouts. `Stale` reads are measured (how far behind, in log entries
//! and milliseconds). A failing run reports its seed; re-running with it replays the fault
//! schedule (not the runtime's interleaving). [`run_deterministic`] runs it on one thread in
//! virtual time with one seeded random source (see `crate::sim`): there the seed replays the
//! whole run, and a digest of it shows that it did.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::{RaftTiming, StorageOptions, TestSwitches};
use crate::embedded::cluster::{ClusterOptions, EmbeddedCluster};
use crate::embedded::faults::NetworkFaults;
use crate::error::{Error, Result};
use crate::placement::events::Event;
use crate::placement::manager::ManagerOptions;
use crate::proof::checker::{check, CheckOptions, Verdict};
use crate::proof::history::History;
use crate::routing::client::{Client, ClientOptions};
use crate::sharding::META_GROUP;
use crate::types::{NodeId, ReadConsistency};

/// The kind of fault a run injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nemesis {
    /// No faults (a baseline).
    None,
    /// Isolate a shard's leader, heal, repeat: leaders keep moving.
    MovingPartitions,
    /// Random two-sided partitions of the nodes, healed and redrawn.
    ManyPartitions,
    /// Crash a random node and restart it (lose-unsynced storage mode).
    CrashRestart,
    /// Crash every node at once and restart them all (lose-unsynced storage mode).
    CrashAll,
    /// Lose requests and responses, delay and reorder messages.
    LossyNetwork,
    /// Add and remove nodes and change the replication factor, under light partitions.
    Membership,
    /// Crash the shard manager's leader while nodes join and leave.
    ManagerCrash,
    /// Make a random node's wall clock jump (a day ahead, or back), then set it right.
    ClockJumps,
    /// Nodes join and leave while leaderships keep being transferred, so voter changes meet
    /// leader changes between their steps.
    LeaderChangesDuringMembership,
    /// A snapshot every 5 entries while nodes crash and restart: builds, transfers and
    /// installs overlap.
    SnapshotStorm,
    /// One node's fsyncs turn slow, so its log writer lags behind what its groups queue, apply
    /// (from the log's cache) and flush (snapshots); then it crashes in power-loss mode, or
    /// every node does, and restarts.
    SlowSyncCrashes,
}

impl Nemesis {
    pub const ALL: [Nemesis; 12] = [
        Nemesis::None,
        Nemesis::MovingPartitions,
        Nemesis::ManyPartitions,
        Nemesis::CrashRestart,
        Nemesis::CrashAll,
        Nemesis::LossyNetwork,
        Nemesis::Membership,
        Nemesis::ManagerCrash,
        Nemesis::ClockJumps,
        Nemesis::LeaderChangesDuringMembership,
        Nemesis::SnapshotStorm,
        Nemesis::SlowSyncCrashes,
    ];
}

impl Nemesis {
    /// The kebab-case name the bindings and the CLI use (`crash-all`, `snapshot-storm`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Nemesis::None => "none",
            Nemesis::MovingPartitions => "moving-partitions",
            Nemesis::ManyPartitions => "many-partitions",
            Nemesis::CrashRestart => "crash-restart",
            Nemesis::CrashAll => "crash-all",
            Nemesis::LossyNetwork => "lossy-network",
            Nemesis::Membership => "membership",
            Nemesis::ManagerCrash => "manager-crash",
            Nemesis::ClockJumps => "clock-jumps",
            Nemesis::LeaderChangesDuringMembership => "leader-changes-during-membership",
            Nemesis::SnapshotStorm => "snapshot-storm",
            Nemesis::SlowSyncCrashes => "slow-sync-crashes",
        }
    }
}

impl std::str::FromStr for Nemesis {
    type Err = Error;

    /// A kebab-case name (as [`Nemesis::name`]) or the variant's own name.
    fn from_str(name: &str) -> Result<Nemesis> {
        Nemesis::ALL
            .into_iter()
            .find(|n| n.name() == name || format!("{n:?}") == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Nemesis::ALL.iter().map(Nemesis::name).collect();
                Error::InvalidArgument(format!(
                    "unknown nemesis {name:?}; known: {}",
                    known.join(", ")
                ))
            })
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub nemesis: Nemesis,
    pub seed: u64,
    pub nodes: usize,
    pub shards: usize,
    pub clients: usize,
    /// Keys the clients share (few keys: much contention).
    pub keys: usize,
    pub duration: Duration,
    /// Snapshot every this many entries (small: snapshots get installed under the faults).
    pub snapshot_every: u64,
    /// Switches that break guarantees (to prove the checks bite).
    pub testing: TestSwitches,
    /// fsync before acknowledging (switch off to prove the durability check bites).
    pub sync: bool,
    pub check: CheckOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            nemesis: Nemesis::MovingPartitions,
            seed: 1,
            nodes: 5,
            shards: 4,
            clients: 6,
            keys: 6,
            duration: Duration::from_secs(3),
            snapshot_every: 50,
            testing: TestSwitches::default(),
            sync: true,
            check: CheckOptions::default(),
        }
    }
}

/// How far behind `Stale` reads were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StaleStats {
    pub reads: usize,
    /// Leader's commit index minus the replica's applied index, at the read.
    pub max_entries_behind: u64,
    pub mean_entries_behind: f64,
    /// Time the replica took to reach the leader's commit index of the read's moment.
    pub max_ms_behind: f64,
    pub mean_ms_behind: f64,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub nemesis: Nemesis,
    pub seed: u64,
    pub operations: usize,
    /// Operations that returned a result (the rest failed or are unknown).
    pub acknowledged_operations: usize,
    pub unknown_operations: usize,
    /// The fewest acknowledged operations any key got per second of the run (reported: one
    /// key can starve under partitions, see ARCHITECTURE.md).
    pub min_key_ops_per_second: f64,
    /// Acknowledged operations per key per second of the run, averaged over the keys.
    pub mean_key_ops_per_second: f64,
    /// Snapshots installed on any node during the run.
    pub snapshots_installed: u64,
    /// Sessions expired on the nodes running at the end (a run is far shorter than the TTL:
    /// any expiry means log time jumped).
    pub sessions_expired: u64,
    pub verdict: Verdict,
    /// Acknowledged appends missing from the final value, or present more than once.
    pub lost_appends: Vec<String>,
    pub duplicated_appends: Vec<String>,
    /// Time from healing until every shard had a leader and took a write.
    pub recovery: Option<Duration>,
    pub recovery_bound: Duration,
    pub stale: StaleStats,
    /// Operations that failed for certain, by error kind (`timeout`, `unknown_node`, ...).
    pub definite_failures: BTreeMap<String, usize>,
    /// Where the map and the groups' memberships disagreed after healing (see
    /// [`EmbeddedCluster::placement_problems`]); empty when they agree.
    pub placement_problems: Vec<String>,
    pub history: History,
    /// The cluster's event log at the end of the run (elections, moves, nodes up and down).
    pub events: Vec<Event>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.verdict.is_linearizable()
            && self.lost_appends.is_empty()
            && self.duplicated_appends.is_empty()
            && self.recovery.is_some_and(|r| r <= self.recovery_bound)
            && self.routing_failures() == 0
            && self.placement_problems.is_empty()
            && self.sessions_expired == 0
            && self.min_key_ops_per_second >= MIN_KEY_OPS_PER_SECOND
    }

    /// Definite failures that only say a request went to the wrong place: a client must route
    /// around those (retry elsewhere), never hand them to its caller.
    pub fn routing_failures(&self) -> usize {
        ROUTING_KINDS
            .iter()
            .filter_map(|k| self.definite_failures.get(*k))
            .sum()
    }
}

/// A run in which any key got fewer acknowledged operations per second than this proves too
/// little about that key to pass.
pub const MIN_KEY_OPS_PER_SECOND: f64 = 5.0;

/// Error kinds that are about routing, not about the cluster's ability to serve.
const ROUTING_KINDS: [&str; 4] = [
    "not_leader",
    "wrong_shard",
    "group_not_hosted",
    "unknown_node",
];

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match &self.verdict {
            Verdict::Linearizable { .. } => "linearizable".to_string(),
            Verdict::NotLinearizable {
                key, explanation, ..
            } => {
                format!(
                    "NOT linearizable on key {:?}: {explanation}",
                    String::from_utf8_lossy(key)
                )
            }
            Verdict::Unknown { key, reason } => format!(
                "UNKNOWN on key {:?}: {reason}",
                String::from_utf8_lossy(key)
            ),
        };
        write!(
            f,
            "{} seed={} ops={} (acknowledged {}, unknown {}, per key {:.1}/s, fewest {:.1}/s) {} lost={} duplicated={} recovery={:?} (bound {:?}) failed: {:?} placement: {} sessions expired: {} snapshots installed: {} stale: {} reads, max {} entries / {:.1} ms behind, mean {:.1} entries / {:.1} ms -> {}",
            self.nemesis,
            self.seed,
            self.operations,
            self.acknowledged_operations,
            self.unknown_operations,
            self.mean_key_ops_per_second,
            self.min_key_ops_per_second,
            verdict,
            self.lost_appends.len(),
            self.duplicated_appends.len(),
            self.recovery,
            self.recovery_bound,
            self.definite_failures,
            if self.placement_problems.is_empty() {
                "agrees".to_string()
            } else {
                format!("{:?}", self.placement_problems)
            },
            self.sessions_expired,
            self.snapshots_installed,
            self.stale.reads,
            self.stale.max_entries_behind,
            self.stale.max_ms_behind,
            self.stale.mean_entries_behind,
            self.stale.mean_ms_behind,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }
}

/// Runs one seeded scenario.
pub async fn run(options: RunOptions) -> Result<RunReport> {
    let snapshot_every = if options.nemesis == Nemesis::SnapshotStorm {
        5
    } else {
        options.snapshot_every
    };
    let storm = options.nemesis == Nemesis::SnapshotStorm;
    let timing = RaftTiming {
        snapshot_logs_since_last: snapshot_every,
        // A storm keeps no log behind its snapshots: a node that missed anything needs one.
        max_in_snapshot_log_to_keep: if storm { 0 } else { 5 },
        ..Default::default()
    };
    // Power-loss mode wherever nodes crash, membership and manager changes included.
    let crashes = matches!(
        options.nemesis,
        Nemesis::CrashRestart
            | Nemesis::CrashAll
            | Nemesis::ManagerCrash
            | Nemesis::Membership
            | Nemesis::LeaderChangesDuringMembership
            | Nemesis::SnapshotStorm
            | Nemesis::SlowSyncCrashes
    );
    let lose_unsynced = crashes || !options.sync;
    let cluster = Arc::new(
        EmbeddedCluster::start(ClusterOptions {
            nodes: options.nodes,
            shards: options.shards,
            replication: Some(3.min(options.nodes)),
            timing,
            storage: StorageOptions {
                sync: options.sync,
                lose_unsynced_on_crash: lose_unsynced,
                ..Default::default()
            },
            seed: Some(options.seed),
            manager: ManagerOptions {
                dead_node_timeout: Duration::from_secs(600),
                ..Default::default()
            },
            testing: options.testing,
            ..Default::default()
        })
        .await?,
    );
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await?;
    let history = History::new();
    let keys: Vec<String> = (0..options.keys).map(|i| format!("key-{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_appends = Arc::new(Mutex::new(Vec::<(String, String)>::new()));

    // Long enough to ride out elections: every timed-out write is an unknown outcome, and each
    // one multiplies the orders the checker must consider.
    let client_options = ClientOptions {
        timeout: Duration::from_secs(5),
        attempt_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let mut workers = Vec::new();
    // `clients` workers roam over every key; one more per key stays on it, so a key whose
    // shard has a majority keeps getting operations while roaming workers wait elsewhere.
    for c in 0..options.clients + options.keys {
        let client = Client::new(cluster.transport(), client_options).recording(&history);
        let (stop, keys, acked) = (stop.clone(), keys.clone(), acked_appends.clone());
        let mut rng = StdRng::seed_from_u64(options.seed ^ (0x9e37 + c as u64));
        let home = c.checked_sub(options.clients);
        workers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let append_only = append_only_count(keys.len());
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let k = home.unwrap_or_else(|| rng.random_range(0..keys.len()));
                let key = &keys[k];
                // Append-only keys get appends and reads only, so every acknowledged append must
                // be in their final value exactly once.
                let roll = if k < append_only {
                    rng.random_range(0..80)
                } else {
                    rng.random_range(0..100)
                };
                match roll {
                    0..45 => {
                        let token = format!("<{c}.{i}>");
                        if client.append(key, &token).await.is_ok() {
                            if let Ok(mut a) = acked.lock() {
                                a.push((key.clone(), token));
                            }
                        }
                    }
                    45..80 => {
                        let _ = client.get(key).await;
                    }
                    80..90 => {
                        let current = client.get(key).await.ok().flatten();
                        let _ = client
                            .cas(key, current.as_deref(), format!("<cas{c}.{i}>"))
                            .await;
                    }
                    90..96 => {
                        let _ = client.put(key, format!("<put{c}.{i}>")).await;
                    }
                    _ => {
                        let _ = client.delete(key).await;
                    }
                }
            }
        }));
    }
    let stale = Arc::new(Mutex::new(Vec::<(u64, f64)>::new()));
    workers.push(spawn_stale_reader(
        cluster.clone(),
        keys.clone(),
        stop.clone(),
        stale.clone(),
        options.seed,
    ));

    let nemesis = tokio::spawn(run_nemesis(
        cluster.clone(),
        options.clone(),
        timing,
        stop.clone(),
    ));
    tokio::time::sleep(options.duration).await;
    let run_end_ns = history.now_ns();
    stop.store(true, Ordering::SeqCst);
    let nemesis_result = nemesis
        .await
        .map_err(|e| Error::Unavailable(format!("nemesis: {e}")))?;
    for w in workers {
        let _ = w.await;
    }
    nemesis_result?;

    // Heal: no faults, every member node up, then measure how long until all shards serve.
    cluster.faults().clear();
    let healed_at = Instant::now();
    for n in cluster.node_ids() {
        if !cluster.running_nodes().contains(&n) {
            cluster.restart_node(n).await?;
        }
    }
    let bound = timing.election_timeout() * 30;
    let recovery = recover(&cluster, bound).await.then(|| healed_at.elapsed());

    // Final linearizable reads of every key, recorded, then the checks.
    let final_client = Client::new(
        cluster.transport(),
        ClientOptions {
            // A cluster that did not recover gets no long wait: the run has failed already.
            timeout: if recovery.is_some() {
                Duration::from_secs(20)
            } else {
                Duration::from_secs(1)
            },
            ..Default::default()
        },
    )
    .recording(&history);
    let mut finals = BTreeMap::new();
    for key in &keys {
        if let Ok(v) = final_client.get(key).await {
            finals.insert(key.clone(), v.unwrap_or_default());
        }
    }
    // The map and every group's membership agree, and every voter holds its data.
    let placement_problems = cluster
        .placement_problems(if recovery.is_some() {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        })
        .await;
    let sessions_expired = cluster
        .running_nodes()
        .into_iter()
        .filter_map(|n| cluster.storage_stats(n).ok())
        .map(|s| s.sessions_expired.load(Ordering::Relaxed))
        .sum();
    let snapshots_installed = cluster.snapshots_installed();
    let ops = history.operations();
    let mut definite_failures: BTreeMap<String, usize> = BTreeMap::new();
    for op in &ops {
        if let crate::proof::history::OpOutput::Failed { .. } = op.output {
            let kind = op.error_kind.clone().unwrap_or_else(|| "other".into());
            *definite_failures.entry(kind).or_default() += 1;
        }
    }
    // Acknowledged operations of each key that returned while the run lasted (final reads and
    // probes after healing do not count).
    let seconds = options.duration.as_secs_f64();
    let mut acked_in_run: BTreeMap<&[u8], usize> = keys.iter().map(|k| (k.as_bytes(), 0)).collect();
    for op in &ops {
        if op.output.is_acknowledged() && op.return_ns <= run_end_ns {
            if let Some(n) = acked_in_run.get_mut(op.key.as_slice()) {
                *n += 1;
            }
        }
    }
    let per_key = |n: usize| n as f64 / seconds;
    let min_key_ops_per_second = acked_in_run
        .values()
        .map(|n| per_key(*n))
        .fold(f64::INFINITY, f64::min);
    let mean_key_ops_per_second =
        per_key(acked_in_run.values().sum()) / acked_in_run.len().max(1) as f64;
    let verdict = crate::sim::blocking({
        let ops = ops.clone();
        move || check(&ops, options.check)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("checker: {e}")))?;
    let acked = acked_appends.lock().map(|a| a.clone()).unwrap_or_default();
    let (lost_appends, duplicated_appends) = audit_appends(&acked, &finals, &keys);
    let stale = summarize(&stale.lock().map(|s| s.clone()).unwrap_or_default());
    let report = RunReport {
        nemesis: options.nemesis,
        seed: options.seed,
        operations: ops.len(),
        acknowledged_operations: ops.iter().filter(|o| o.output.is_acknowledged()).count(),
        sessions_expired,
        snapshots_installed,
        min_key_ops_per_second,
        mean_key_ops_per_second,
        unknown_operations: ops
            .iter()
            .filter(|o| matches!(o.output, crate::proof::history::OpOutput::Unknown { .. }))
            .count(),
        verdict,
        lost_appends,
        duplicated_appends,
        recovery,
        recovery_bound: bound,
        stale,
        definite_failures,
        placement_problems,
        history,
        events: cluster.events(),
    };
    match Arc::try_unwrap(cluster) {
        Ok(c) => c.shutdown().await?,
        Err(c) => drop(c),
    }
    Ok(report)
}

/// A deterministic run (see [`run_deterministic`]): the report, the random draws it made, and a
/// digest of its history, event log and draw count; the same seed gives the same digest.
#[derive(Debug, Clone)]
pub struct DeterministicRun {
    pub report: RunReport,
    pub draws: u64,
    /// 128 bits in hex.
    pub digest: String,
}

/// Runs `nemesis` with `seed` deterministically: one thread, virtual time, every random draw
/// from the seed (see `crate::sim`). Needs a thread of its own (not inside a runtime).
pub fn run_deterministic(nemesis: Nemesis, seed: u64) -> Result<DeterministicRun> {
    run_deterministic_with(RunOptions {
        nemesis,
        seed,
        ..Default::default()
    })
}

/// [`run_deterministic`] with every option of [`run`].
pub fn run_deterministic_with(options: RunOptions) -> Result<DeterministicRun> {
    let seed = options.seed;
    let finished = crate::sim::run(seed, run(options))?;
    let report = finished.output?;
    let digest = digest_of(&report, finished.draws);
    Ok(DeterministicRun {
        report,
        draws: finished.draws,
        digest,
    })
}

/// A digest of what a run did: its history (invocations, results, virtual times), its event
/// log, and how many random draws it made.
fn digest_of(report: &RunReport, draws: u64) -> String {
    let mut text = report.history.to_jsonl();
    text.push_str(&serde_json::to_string(&report.events).unwrap_or_default());
    text.push_str(&format!("\ndraws {draws}\n"));
    let bytes = text.as_bytes();
    format!(
        "{:016x}{:016x}",
        xxhash_rust::xxh64::xxh64(bytes, 0),
        xxhash_rust::xxh64::xxh64(bytes, 0x5ca1_e570)
    )
}

/// How many of the keys (the first ones) only ever get appends and reads.
fn append_only_count(keys: usize) -> usize {
    keys.div_ceil(2)
}

/// On append-only keys: acknowledged append tokens missing from the final value (lost), and any
/// token present more than once (applied twice).
fn audit_appends(
    acked: &[(String, String)],
    finals: &BTreeMap<String, Vec<u8>>,
    keys: &[String],
) -> (Vec<String>, Vec<String>) {
    let append_only = &keys[..append_only_count(keys.len())];
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    for (key, token) in acked.iter().filter(|(k, _)| append_only.contains(k)) {
        let value = finals
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        match value.matches(token.as_str()).count() {
            0 => lost.push(format!("{key}: {token}")),
            1 => {}
            _ => duplicated.push(format!("{key}: {token}")),
        }
    }
    for key in append_only {
        let value = finals
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for token in value.split_inclusive('>') {
            if !seen.insert(token) {
                duplicated.push(format!("{key}: {token}"));
            }
        }
    }
    duplicated.sort();
    duplicated.dedup();
    (lost, duplicated)
}

/// Heals the cluster and waits until every shard has a leader and takes a write.
async fn recover(cluster: &EmbeddedCluster, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    if cluster.wait_for_all_leaders(bound).await.is_err() {
        return false;
    }
    let client = Client::new(
        cluster.transport(),
        ClientOptions {
            timeout: deadline.saturating_duration_since(Instant::now()),
            ..Default::default()
        },
    );
    let map = cluster.map();
    let probes = map.key_per_shard("probe-");
    for k in probes.values() {
        if client.put(k, "probe").await.is_err() {
            return false;
        }
    }
    Instant::now() <= deadline
}

fn summarize(samples: &[(u64, f64)]) -> StaleStats {
    if samples.is_empty() {
        return StaleStats::default();
    }
    let n = samples.len() as f64;
    StaleStats {
        reads: samples.len(),
        max_entries_behind: samples.iter().map(|s| s.0).max().unwrap_or(0),
        mean_entries_behind: samples.iter().map(|s| s.0 as f64).sum::<f64>() / n,
        max_ms_behind: samples.iter().map(|s| s.1).fold(0.0, f64::max),
        mean_ms_behind: samples.iter().map(|s| s.1).sum::<f64>() / n,
    }
}

/// Reads with `Stale` from random replicas and measures how far behind each was.
fn spawn_stale_reader(
    cluster: Arc<EmbeddedCluster>,
    keys: Vec<String>,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(u64, f64)>>>,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x57a1e);
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let key = &keys[rng.random_range(0..keys.len())];
            let running = cluster.running_nodes();
            if running.is_empty() {
                continue;
            }
            let node_id = running[rng.random_range(0..running.len())];
            let group = cluster.shard_of(key.as_bytes());
            let Ok(node) = cluster.node(node_id) else {
                continue;
            };
            let Ok(replica) = node.status(group) else {
                continue;
            };
            let Ok(client) = cluster.client_pinned(node_id) else {
                continue;
            };
            if client.get_with(key, ReadConsistency::Stale).await.is_err() {
                continue;
            }
            let leader_commit = cluster
                .group_status(group)
                .ok()
                .and_then(|s| s.into_iter().find(|x| x.is_leader))
                .and_then(|l| l.committed_index)
                .unwrap_or(0);
            let applied = replica.applied_index.unwrap_or(0);
            let behind = leader_commit.saturating_sub(applied);
            // Time until this replica applies what the leader had committed at the read.
            let started = Instant::now();
            let mut waited = 0.0;
            while behind > 0 && started.elapsed() < Duration::from_secs(2) {
                let now_applied = node
                    .status(group)
                    .ok()
                    .and_then(|s| s.applied_index)
                    .unwrap_or(0);
                if now_applied >= leader_commit {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if behind > 0 {
                waited = started.elapsed().as_secs_f64() * 1e3;
            }
            if let Ok(mut s) = samples.lock() {
                s.push((behind, waited));
            }
        }
    })
}

/// How long a majority cut off from its leader may wait before it has a new one. A follower
/// grants no vote while the old leader's lease (the longest election timeout) may still run,
/// and campaigns only once its own election timeout has passed on top of it. A cut shorter than
/// this replaces no leader at all: before holds were sized by it (700-1500 ms), back-to-back
/// cuts that kept isolating one shard's leader left that shard leaderless for 2.3 s of a 3 s
/// run (`ManyPartitions` seed 1).
fn failover_bound(timing: RaftTiming) -> Duration {
    Duration::from_millis(timing.election_timeout_max_ms * 2)
}

/// Injects the run's kind of fault on a schedule drawn from the seed until `stop`.
async fn run_nemesis(
    cluster: Arc<EmbeddedCluster>,
    options: RunOptions,
    timing: RaftTiming,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let pause = |rng: &mut StdRng| Duration::from_millis(rng.random_range(150..450));
    let hold = |rng: &mut StdRng| {
        failover_bound(timing) + Duration::from_millis(rng.random_range(300..1200))
    };
    let faults = cluster.faults().clone();
    let mut crashed: Vec<NodeId> = Vec::new();
    let mut added: Vec<NodeId> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match options.nemesis {
            Nemesis::None => {}
            Nemesis::MovingPartitions => {
                let shard = rng.random_range(0..options.shards as u64);
                let leader = cluster
                    .group_status(shard)
                    .ok()
                    .and_then(|s| s.into_iter().find(|x| x.is_leader))
                    .map(|s| s.node);
                if let Some(l) = leader {
                    faults.isolate(l);
                    tokio::time::sleep(hold(&mut rng)).await;
                    faults.heal();
                }
            }
            Nemesis::ManyPartitions => {
                let mut nodes = cluster.node_ids();
                // Seeded shuffle, then a random cut.
                for i in (1..nodes.len()).rev() {
                    let j = rng.random_range(0..=i);
                    nodes.swap(i, j);
                }
                let cut = rng.random_range(1..nodes.len());
                let (a, b) = nodes.split_at(cut);
                faults.partition(&[a, b]);
                tokio::time::sleep(hold(&mut rng)).await;
                faults.heal();
            }
            Nemesis::LeaderChangesDuringMembership => {
                let c = cluster.clone();
                let change = if added.is_empty() || rng.random_bool(0.5) {
                    tokio::spawn(async move { c.add_node().await.map(Some) })
                } else {
                    let n = added.pop().unwrap_or_default();
                    tokio::spawn(async move {
                        c.remove_node(n, Duration::from_secs(60))
                            .await
                            .map(|_| None)
                    })
                };
                // Transfer leaderships (the manager's group's too) while the change runs.
                while !change.is_finished() {
                    let mut groups = cluster.groups();
                    groups.push(META_GROUP);
                    let group = groups[rng.random_range(0..groups.len())];
                    let statuses = cluster.group_status(group).unwrap_or_default();
                    let leader = statuses.iter().find(|s| s.is_leader);
                    if let Some(l) = leader {
                        let others: Vec<NodeId> =
                            l.voters.iter().copied().filter(|v| *v != l.node).collect();
                        if !others.is_empty() {
                            let to = others[rng.random_range(0..others.len())];
                            if let Some(raft) =
                                cluster.node(l.node).ok().and_then(|n| n.raft(group))
                            {
                                let _ = raft.trigger().transfer_leader(to).await;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(rng.random_range(50..200))).await;
                }
                let joined = change
                    .await
                    .map_err(|e| Error::Unavailable(format!("membership change: {e}")))??;
                added.extend(joined);
            }
            Nemesis::SnapshotStorm => {
                let running = cluster.running_nodes();
                if running.len() == options.nodes && !running.is_empty() {
                    let victim = running[rng.random_range(0..running.len())];
                    let held = last_log_indexes(&cluster, victim);
                    cluster.crash_node(victim).await?;
                    tokio::time::sleep(pause(&mut rng)).await;
                    // The victim stays down until a leader has purged a log it lacks, so its
                    // restart must be served by snapshot (whether a purge comes in time
                    // otherwise depends on when replication to the dead node retries).
                    wait_for_purge_past(&cluster, &held, failover_bound(timing) * 2).await;
                    cluster.restart_node(victim).await?;
                }
            }
            Nemesis::CrashRestart => {
                let running = cluster.running_nodes();
                // Keep a majority of every shard's replicas up: with R = 3, one node down at once.
                let replicas = 3.min(options.nodes);
                if crashed.len() < (replicas - 1) / 2 && !running.is_empty() {
                    let victim = running[rng.random_range(0..running.len())];
                    cluster.crash_node(victim).await?;
                    crashed.push(victim);
                } else if let Some(n) = crashed.pop() {
                    cluster.restart_node(n).await?;
                }
            }
            Nemesis::SlowSyncCrashes => {
                let running = cluster.running_nodes();
                if !running.is_empty() {
                    let victim = running[rng.random_range(0..running.len())];
                    let slow = Duration::from_millis(rng.random_range(20..80));
                    cluster.failpoints().slow_syncs_on(victim, slow);
                    tokio::time::sleep(pause(&mut rng)).await;
                    if rng.random_bool(0.3) {
                        cluster.crash_all().await?;
                        tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
                        for n in cluster.node_ids() {
                            cluster.restart_node(n).await?;
                        }
                    } else {
                        cluster.crash_node(victim).await?;
                        tokio::time::sleep(pause(&mut rng)).await;
                        cluster.restart_node(victim).await?;
                    }
                    cluster.failpoints().slow_syncs_on(victim, Duration::ZERO);
                }
            }
            Nemesis::CrashAll => {
                tokio::time::sleep(pause(&mut rng)).await;
                cluster.crash_all().await?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
                for n in cluster.node_ids() {
                    cluster.restart_node(n).await?;
                }
            }
            Nemesis::LossyNetwork => {
                let on = rng.random_bool(0.7);
                faults.set_network(if on {
                    NetworkFaults {
                        drop_requests: rng.random_range(0.0..0.2),
                        drop_responses: rng.random_range(0.0..0.2),
                        delay: Duration::from_micros(rng.random_range(0..2000)),
                        jitter: Duration::from_millis(rng.random_range(0..8)),
                        affect_clients: true,
                    }
                } else {
                    NetworkFaults::default()
                });
            }
            Nemesis::Membership => match rng.random_range(0..4) {
                0 if added.len() < 2 => added.push(cluster.add_node().await?),
                1 => {
                    if let Some(n) = added.pop() {
                        cluster.remove_node(n, Duration::from_secs(60)).await?;
                    }
                }
                2 => {
                    let r = if rng.random_bool(0.5) {
                        3
                    } else {
                        5.min(cluster.map().active_nodes().len())
                    };
                    cluster.set_replication(r).await?;
                }
                _ => {
                    let nodes = cluster.node_ids();
                    faults.isolate(nodes[rng.random_range(0..nodes.len())]);
                    tokio::time::sleep(pause(&mut rng)).await;
                    faults.heal();
                }
            },
            Nemesis::ClockJumps => {
                let nodes = cluster.running_nodes();
                if !nodes.is_empty() {
                    let victim = nodes[rng.random_range(0..nodes.len())];
                    const DAY_MS: i64 = 24 * 3600 * 1000;
                    let by = if rng.random_bool(0.5) {
                        DAY_MS
                    } else {
                        -DAY_MS
                    };
                    faults.jump_clock(victim, by);
                    tokio::time::sleep(hold(&mut rng)).await;
                    faults.jump_clock(victim, -by);
                }
            }
            Nemesis::ManagerCrash => {
                if added.is_empty() {
                    added.push(cluster.add_node().await?);
                } else if rng.random_bool(0.5) {
                    if let Some(n) = added.pop() {
                        // Start the decommission, crash the manager's leader while it runs.
                        let c = cluster.clone();
                        let removal =
                            tokio::spawn(
                                async move { c.remove_node(n, Duration::from_secs(60)).await },
                            );
                        tokio::time::sleep(Duration::from_millis(rng.random_range(5..60))).await;
                        if let Ok(leader) = cluster
                            .wait_for_leader(META_GROUP, Duration::from_secs(5))
                            .await
                        {
                            if leader != n {
                                cluster.crash_node(leader).await?;
                                tokio::time::sleep(pause(&mut rng)).await;
                                cluster.restart_node(leader).await?;
                            }
                        }
                        removal
                            .await
                            .map_err(|e| Error::Unavailable(format!("removal: {e}")))??;
                    }
                } else {
                    added.push(cluster.add_node().await?);
                }
            }
        }
        tokio::time::sleep(pause(&mut rng)).await;
    }
    for n in crashed {
        cluster.restart_node(n).await?;
    }
    Ok(())
}

/// Each group's last log index on `node`, as its metrics say.
fn last_log_indexes(cluster: &EmbeddedCluster, node: NodeId) -> BTreeMap<u64, u64> {
    let mut held = BTreeMap::new();
    for group in cluster.groups() {
        let on_node = cluster
            .group_status(group)
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.node == node);
        if let Some(index) = on_node.and_then(|s| s.last_log_index) {
            held.insert(group, index);
        }
    }
    held
}

/// Waits (at most `bound`) until some group's leader has purged its log past what a crashed
/// node held of that group.
async fn wait_for_purge_past(
    cluster: &EmbeddedCluster,
    held: &BTreeMap<u64, u64>,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        let purged_past = held.iter().any(|(group, index)| {
            cluster
                .group_status(*group)
                .unwrap_or_default()
                .iter()
                .any(|s| s.is_leader && s.purged_index.is_some_and(|p| p > *index))
        });
        if purged_past {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failures: &[(&str, usize)]) -> RunReport {
        RunReport {
            nemesis: Nemesis::None,
            seed: 1,
            operations: 10,
            acknowledged_operations: 10,
            unknown_operations: 0,
            sessions_expired: 0,
            snapshots_installed: 0,
            min_key_ops_per_second: 100.0,
            mean_key_ops_per_second: 100.0,
            verdict: check(&[], CheckOptions::default()),
            lost_appends: vec![],
            duplicated_appends: vec![],
            recovery: Some(Duration::from_millis(1)),
            recovery_bound: Duration::from_secs(1),
            stale: StaleStats::default(),
            definite_failures: failures.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            placement_problems: vec![],
            history: History::new(),
            events: vec![],
        }
    }

    #[test]
    fn a_run_in_which_one_key_starved_fails_however_busy_the_others_were() {
        let mut starved = report(&[]);
        starved.mean_key_ops_per_second = 900.0;
        starved.min_key_ops_per_second = 0.3;
        assert!(!starved.passed());
        starved.min_key_ops_per_second = MIN_KEY_OPS_PER_SECOND;
        assert!(starved.passed());
    }

    #[test]
    fn a_run_with_any_routing_failure_fails_and_timeouts_alone_do_not() {
        assert!(report(&[("timeout", 3)]).passed());
        let routed_badly = report(&[("timeout", 3), ("unknown_node", 1)]);
        assert_eq!(routed_badly.routing_failures(), 1);
        assert!(!routed_badly.passed());
        let mut disagreeing = report(&[]);
        disagreeing.placement_problems = vec!["group 1: map [1, 2, 3], voters [1, 2]".into()];
        assert!(!disagreeing.passed());
    }
}
