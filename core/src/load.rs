//! Generated load, measured: `writers` concurrent loops of puts and reads over a key space,
//! each operation timed and counted in 100 ms buckets, so a run shows throughput and latency
//! over time (an outage is a visible dip). The bindings' `start_load` and `scalestore bench`
//! use it; the bench drives other stores too, through [`LoadTarget`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::routing::client::Client;
use crate::types::ReadConsistency;

/// Width of one timeline row.
pub const BUCKET: Duration = Duration::from_millis(100);

/// What load to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Concurrent loops, each with one operation in flight.
    pub writers: usize,
    /// Share of operations that are reads (0.0: only puts, 1.0: only reads).
    pub read_ratio: f64,
    pub consistency: ReadConsistency,
    /// Keys drawn uniformly from `keys` distinct keys.
    pub keys: usize,
    /// Bytes per key: `load-` then the key's number, zero-padded to this length (longer only
    /// when the key count needs more digits).
    pub key_size: usize,
    pub value_size: usize,
    pub seed: u64,
}

/// What a load drives: a store that puts and reads. The core [`Client`] is one; the bench
/// drives etcd through another, so both are measured by the same loops.
pub trait LoadTarget: Clone + Send + Sync + 'static {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = Result<()>> + Send;
    /// Reads `key`; a missing key is not an error.
    fn get(
        &self,
        key: Vec<u8>,
        consistency: ReadConsistency,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl LoadTarget for Client {
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        Client::put(self, key, value).await
    }

    async fn get(&self, key: Vec<u8>, consistency: ReadConsistency) -> Result<()> {
        self.get_with(key, consistency).await.map(|_| ())
    }
}

/// What every key of a load starts with.
const KEY_PREFIX: &str = "load-";

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            writers: 16,
            read_ratio: 0.0,
            consistency: ReadConsistency::Linearizable,
            keys: 10_000,
            key_size: 13,
            value_size: 100,
            seed: 1,
        }
    }
}

impl LoadOptions {
    pub fn validate(&self) -> Result<()> {
        if self.writers == 0 || self.writers > 100_000 {
            return Err(Error::InvalidArgument(format!(
                "writers must be 1 to 100000, not {}",
                self.writers
            )));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) || self.read_ratio.is_nan() {
            return Err(Error::InvalidArgument(format!(
                "read_ratio must be within 0.0 and 1.0, not {}",
                self.read_ratio
            )));
        }
        if self.keys == 0 {
            return Err(Error::InvalidArgument("keys must be at least 1".into()));
        }
        Ok(())
    }

    /// Key number `i` of this load's key space, `key_size` bytes long.
    pub fn key(&self, i: usize) -> Vec<u8> {
        let width = self.key_size.saturating_sub(KEY_PREFIX.len());
        format!("{KEY_PREFIX}{i:0width$}").into_bytes()
    }

    /// The value every put writes (seeded, so runs are repeatable).
    pub fn value(&self) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut value = vec![0u8; self.value_size];
        rng.fill(&mut value[..]);
        value
    }
}

/// Writes every key of `options`' key space once, `concurrency` puts in flight, so a read
/// load finds what it asks for. Returns the first error.
pub async fn preload<T: LoadTarget>(
    targets: &[T],
    options: &LoadOptions,
    concurrency: usize,
) -> Result<()> {
    options.validate()?;
    if targets.is_empty() {
        return Err(Error::InvalidArgument("no target to preload".into()));
    }
    let next = Arc::new(AtomicU64::new(0));
    let value = options.value();
    let mut loops = tokio::task::JoinSet::<Result<()>>::new();
    for w in 0..concurrency.max(1) {
        let (target, next, value) = (
            targets[w % targets.len()].clone(),
            next.clone(),
            value.clone(),
        );
        let (options, keys) = (options.clone(), options.keys as u64);
        loops.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok(());
                }
                target.put(options.key(i as usize), value.clone()).await?;
            }
        });
    }
    while let Some(done) = loops.join_next().await {
        done.map_err(|e| Error::Closed(format!("a preload task ended early: {e}")))??;
    }
    Ok(())
}

/// One 100 ms slice of a run, by completion time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// Seconds from the start of the run to the start of this slice.
    pub t: f64,
    /// Operations that succeeded in this slice.
    pub ops: u64,
    /// Latency percentiles of those operations (0 when there were none).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Successful operations per second over the run.
    pub ops_per_s: f64,
    pub operations: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    pub seconds: f64,
    pub timeline: Vec<TimelineRow>,
}

/// What one loop measured: per bucket, successful latencies (µs) and error counts.
#[derive(Default)]
struct Samples {
    latencies: Vec<Vec<u32>>,
    errors: Vec<u64>,
}

impl Samples {
    fn bucket(&mut self, at: Duration) -> usize {
        let b = (at.as_millis() / BUCKET.as_millis()) as usize;
        if self.latencies.len() <= b {
            self.latencies.resize_with(b + 1, Vec::new);
            self.errors.resize(b + 1, 0);
        }
        b
    }
}

/// A running load. Stop it with [`stop`](Self::stop) for the report; dropping it stops the
/// loops without one.
pub struct LoadRun {
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<Samples>>,
    started: Instant,
    progress: Arc<Progress>,
}

/// Running totals, read while a load runs (a progress line).
#[derive(Debug, Default)]
pub struct Progress {
    /// Operations that succeeded.
    pub operations: AtomicU64,
    /// Of those, writes.
    pub writes: AtomicU64,
    pub errors: AtomicU64,
}

impl LoadRun {
    /// Starts `options.writers` loops on the current tokio runtime.
    pub fn start(client: Client, options: LoadOptions) -> Result<LoadRun> {
        Self::start_on(vec![client], options)
    }

    /// Starts `options.writers` loops spread over `targets` (loop `w` drives
    /// `targets[w % targets.len()]`: several connections share the load).
    pub fn start_on<T: LoadTarget>(targets: Vec<T>, options: LoadOptions) -> Result<LoadRun> {
        options.validate()?;
        if targets.is_empty() {
            return Err(Error::InvalidArgument("no target to load".into()));
        }
        let (stop, stopped) = watch::channel(false);
        let started = Instant::now();
        let progress = Arc::new(Progress::default());
        let value = options.value();
        let loops = (0..options.writers)
            .map(|w| {
                let target = targets[w % targets.len()].clone();
                let looped = Loop {
                    options: options.clone(),
                    value: value.clone(),
                    id: w as u64,
                    started,
                    progress: progress.clone(),
                };
                tokio::spawn(looped.run(target, stopped.clone()))
            })
            .collect();
        Ok(LoadRun {
            stop,
            loops,
            started,
            progress,
        })
    }

    /// Totals so far.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every loop (operations in flight are abandoned, not counted) and reports.
    pub async fn stop(self) -> LoadReport {
        self.stop_after_warmup(Duration::ZERO).await
    }

    /// As [`stop`](Self::stop), leaving out of the totals what completed in the first
    /// `warmup` (rounded down to whole timeline rows; the timeline keeps every row).
    pub async fn stop_after_warmup(mut self, warmup: Duration) -> LoadReport {
        let seconds = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for handle in self.loops.drain(..) {
            if let Ok(samples) = handle.await {
                all.push(samples);
            }
        }
        let skip = (warmup.as_millis() / BUCKET.as_millis()) as usize;
        report(all, seconds, skip)
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One loop: one operation in flight at a time.
struct Loop {
    options: LoadOptions,
    value: Vec<u8>,
    id: u64,
    started: Instant,
    progress: Arc<Progress>,
}

impl Loop {
    async fn run<T: LoadTarget>(self, target: T, mut stopped: watch::Receiver<bool>) -> Samples {
        let options = &self.options;
        let mut rng = StdRng::seed_from_u64(options.seed.wrapping_mul(1_000_003) ^ self.id);
        let mut samples = Samples::default();
        loop {
            if *stopped.borrow() {
                break;
            }
            let key = options.key(rng.random_range(0..options.keys));
            let read = rng.random_bool(options.read_ratio);
            let began = Instant::now();
            let op = async {
                if read {
                    target.get(key, options.consistency).await
                } else {
                    target.put(key, self.value.clone()).await
                }
            };
            let outcome = tokio::select! {
                biased;
                r = op => r,
                _ = stopped.changed() => break,
            };
            let latency = began.elapsed();
            let b = samples.bucket(self.started.elapsed());
            match outcome {
                Ok(()) => {
                    self.progress.operations.fetch_add(1, Ordering::Relaxed);
                    if !read {
                        self.progress.writes.fetch_add(1, Ordering::Relaxed);
                    }
                    samples.latencies[b].push(latency.as_micros().min(u32::MAX as u128) as u32)
                }
                Err(Error::Closed(_)) => break,
                Err(_) => {
                    self.progress.errors.fetch_add(1, Ordering::Relaxed);
                    samples.errors[b] += 1;
                    // A failing cluster answers fast: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        samples
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// The report of `all` loops' samples over `seconds`; the first `skip` rows (warm-up) stay in
/// the timeline but out of the totals.
fn report(all: Vec<Samples>, seconds: f64, skip: usize) -> LoadReport {
    let buckets = all.iter().map(|s| s.latencies.len()).max().unwrap_or(0);
    let mut timeline = Vec::with_capacity(buckets);
    let mut every: Vec<u32> = Vec::new();
    let mut errors = 0;
    for b in 0..buckets {
        let mut here: Vec<u32> = Vec::new();
        let mut errs = 0;
        for s in &all {
            if let Some(l) = s.latencies.get(b) {
                here.extend_from_slice(l);
            }
            errs += s.errors.get(b).copied().unwrap_or(0);
        }
        here.sort_unstable();
        timeline.push(TimelineRow {
            t: b as f64 * BUCKET.as_secs_f64(),
            ops: here.len() as u64,
            p50_ms: percentile(&here, 0.50),
            p99_ms: percentile(&here, 0.99),
            errors: errs,
        });
        if b >= skip {
            errors += errs;
            every.extend_from_slice(&here);
        }
    }
    every.sort_unstable();
    let operations = every.len() as u64;
    let measured = seconds - skip as f64 * BUCKET.as_secs_f64();
    LoadReport {
        ops_per_s: if measured > 0.0 {
            operations as f64 / measured
        } else {
            0.0
        },
        operations,
        p50_ms: percentile(&every, 0.50),
        p90_ms: percentile(&every, 0.90),
        p99_ms: percentile(&every, 0.99),
        p999_ms: percentile(&every, 0.999),
        errors,
        seconds: measured.max(0.0),
        timeline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_every_sample_in_its_bucket_and_orders_percentiles() {
        let mut a = Samples::default();
        let b0 = a.bucket(Duration::from_millis(50));
        a.latencies[b0].extend([1000, 2000, 3000]);
        let b2 = a.bucket(Duration::from_millis(250));
        a.errors[b2] += 2;
        let mut b = Samples::default();
        let b1 = b.bucket(Duration::from_millis(120));
        b.latencies[b1].push(10_000);
        let r = report(vec![a, b], 0.3, 0);
        assert_eq!(r.operations, 4);
        assert_eq!(r.errors, 2);
        assert_eq!(r.timeline.len(), 3);
        assert_eq!(
            r.timeline.iter().map(|t| t.ops).collect::<Vec<_>>(),
            [3, 1, 0]
        );
        assert_eq!(r.timeline[2].errors, 2);
        assert_eq!(r.timeline[0].p50_ms, 2.0);
        assert_eq!(r.p99_ms, 10.0);
        assert!((r.ops_per_s - 4.0 / 0.3).abs() < 1e-9);
    }

    #[test]
    fn warm_up_rows_stay_in_the_timeline_but_out_of_the_totals() {
        let mut a = Samples::default();
        let warm = a.bucket(Duration::from_millis(50));
        a.latencies[warm].extend([50_000, 60_000]);
        a.errors[warm] += 3;
        let measured = a.bucket(Duration::from_millis(150));
        a.latencies[measured].extend([1000, 2000]);
        let r = report(vec![a], 0.2, 1);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!((r.operations, r.errors), (2, 0));
        assert_eq!(r.p99_ms, 2.0);
        assert!((r.seconds - 0.1).abs() < 1e-9);
        assert!((r.ops_per_s - 20.0).abs() < 1e-6);
    }

    /// What a [`MapTarget`] holds, and how many puts it took.
    type Held = (std::collections::HashMap<Vec<u8>, Vec<u8>>, u64);

    /// A store in a map, counting puts.
    #[derive(Clone, Default)]
    struct MapTarget(Arc<std::sync::Mutex<Held>>);

    impl LoadTarget for MapTarget {
        async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
            {
                let mut m = self
                    .0
                    .lock()
                    .map_err(|_| Error::Closed("poisoned".into()))?;
                m.0.insert(key, value);
                m.1 += 1;
            }
            // An answer from elsewhere: the loop gives the runtime back.
            tokio::task::yield_now().await;
            Ok(())
        }

        async fn get(&self, _key: Vec<u8>, _consistency: ReadConsistency) -> Result<()> {
            tokio::task::yield_now().await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn preload_writes_every_key_once_at_its_size_with_the_loads_value() {
        let options = LoadOptions {
            keys: 1234,
            key_size: 20,
            value_size: 7,
            ..LoadOptions::default()
        };
        let targets = vec![MapTarget::default(), MapTarget::default()];
        preload(&targets, &options, 16).await.expect("preload");
        let (a, b) = (
            targets[0].0.lock().expect("a"),
            targets[1].0.lock().expect("b"),
        );
        assert_eq!(a.1 + b.1, 1234, "each key written once");
        for i in 0..1234 {
            let key = options.key(i);
            assert_eq!(key.len(), 20);
            let value = a.0.get(&key).or_else(|| b.0.get(&key));
            assert_eq!(value, Some(&options.value()), "key {i}");
        }
        assert_eq!(options.value().len(), 7);
        assert_eq!(options.key(7), b"load-000000000000007");
    }

    #[tokio::test]
    async fn a_load_spreads_its_loops_over_every_target_and_counts_writes() {
        let targets = vec![
            MapTarget::default(),
            MapTarget::default(),
            MapTarget::default(),
        ];
        let run = LoadRun::start_on(
            targets.clone(),
            LoadOptions {
                writers: 6,
                keys: 10,
                ..LoadOptions::default()
            },
        )
        .expect("start");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let writes = run.progress().writes.load(Ordering::Relaxed);
        let report = run.stop().await;
        assert!(report.operations > 0 && writes > 0);
        for t in &targets {
            assert!(t.0.lock().expect("t").1 > 0, "every target got puts");
        }
    }

    #[test]
    fn bad_options_are_refused() {
        for bad in [
            LoadOptions {
                writers: 0,
                ..LoadOptions::default()
            },
            LoadOptions {
                read_ratio: 1.5,
                ..LoadOptions::default()
            },
            LoadOptions {
                keys: 0,
                ..LoadOptions::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidArgument(_))));
        }
    }
}
