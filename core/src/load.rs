//! Generated load, measured: `writers` concurrent loops of puts and reads over a key space,
//! each operation timed and counted in 100 ms buckets, so a run shows throughput and latency
//! over time (an outage is a visible dip). The bindings' `start_load` and the benchmarks use it.

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
    pub value_size: usize,
    pub seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            writers: 16,
            read_ratio: 0.0,
            consistency: ReadConsistency::Linearizable,
            keys: 10_000,
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
}

impl LoadRun {
    /// Starts `options.writers` loops on the current tokio runtime.
    pub fn start(client: Client, options: LoadOptions) -> Result<LoadRun> {
        options.validate()?;
        let (stop, stopped) = watch::channel(false);
        let started = Instant::now();
        let loops = (0..options.writers)
            .map(|w| {
                let client = client.clone();
                let options = options.clone();
                let stopped = stopped.clone();
                tokio::spawn(one_loop(client, options, w as u64, started, stopped))
            })
            .collect();
        Ok(LoadRun {
            stop,
            loops,
            started,
        })
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops every loop (operations in flight are abandoned, not counted) and reports.
    pub async fn stop(mut self) -> LoadReport {
        let seconds = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(true);
        let mut all = Vec::new();
        for handle in self.loops.drain(..) {
            if let Ok(samples) = handle.await {
                all.push(samples);
            }
        }
        report(all, seconds)
    }
}

impl Drop for LoadRun {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn one_loop(
    client: Client,
    options: LoadOptions,
    loop_id: u64,
    started: Instant,
    mut stopped: watch::Receiver<bool>,
) -> Samples {
    let mut rng = StdRng::seed_from_u64(options.seed.wrapping_mul(1_000_003) ^ loop_id);
    let mut value = vec![0u8; options.value_size];
    rng.fill(&mut value[..]);
    let mut samples = Samples::default();
    loop {
        if *stopped.borrow() {
            break;
        }
        let key = format!("load-{:08}", rng.random_range(0..options.keys));
        let read = rng.random_bool(options.read_ratio);
        let began = Instant::now();
        let op = async {
            if read {
                client.get_with(&key, options.consistency).await.map(|_| ())
            } else {
                client.put(&key, &value).await
            }
        };
        let outcome = tokio::select! {
            r = op => r,
            _ = stopped.changed() => break,
        };
        let latency = began.elapsed();
        let b = samples.bucket(started.elapsed());
        match outcome {
            Ok(()) => samples.latencies[b].push(latency.as_micros().min(u32::MAX as u128) as u32),
            Err(Error::Closed(_)) => break,
            Err(_) => {
                samples.errors[b] += 1;
                // A failing cluster answers fast: do not spin on it.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    samples
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn report(all: Vec<Samples>, seconds: f64) -> LoadReport {
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
        errors += errs;
        every.extend_from_slice(&here);
    }
    every.sort_unstable();
    let operations = every.len() as u64;
    LoadReport {
        ops_per_s: if seconds > 0.0 {
            operations as f64 / seconds
        } else {
            0.0
        },
        operations,
        p50_ms: percentile(&every, 0.50),
        p90_ms: percentile(&every, 0.90),
        p99_ms: percentile(&every, 0.99),
        p999_ms: percentile(&every, 0.999),
        errors,
        seconds,
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
        let r = report(vec![a, b], 0.3);
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
