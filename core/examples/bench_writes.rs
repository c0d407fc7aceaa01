//! Write throughput of an embedded 3-node group with sync on: W concurrent writers put for a
//! fixed time; prints ops/s, latency percentiles and WAL fsyncs per write.
//!
//! Usage: `bench_writes [--shards N] [--writers N] [--seconds S] [--value-bytes B] [--no-sync]`

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalestore::{ClusterOptions, EmbeddedCluster, StorageOptions};

struct Args {
    writers: usize,
    seconds: u64,
    value_bytes: usize,
    sync: bool,
    shards: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        writers: 16,
        seconds: 5,
        value_bytes: 100,
        sync: true,
        shards: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match flag.as_str() {
            "--writers" => a.writers = num("--writers")? as usize,
            "--seconds" => a.seconds = num("--seconds")?,
            "--value-bytes" => a.value_bytes = num("--value-bytes")? as usize,
            "--no-sync" => a.sync = false,
            "--shards" => a.shards = num("--shards")? as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let cluster = Arc::new(
        EmbeddedCluster::start(ClusterOptions {
            nodes: 3,
            shards: args.shards,
            replication: Some(3),
            storage: StorageOptions {
                sync: args.sync,
                ..Default::default()
            },
            ..Default::default()
        })
        .await?,
    );
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await?;
    let before: Vec<(u64, u64)> = cluster
        .node_ids()
        .iter()
        .map(|n| {
            cluster.storage_stats(*n).map(|s| {
                (
                    s.log_syncs.load(Ordering::Relaxed),
                    s.log_appends.load(Ordering::Relaxed),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let value = vec![b'v'; args.value_bytes];
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let client = cluster.client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                client.put(format!("w{w}-{i}"), &value).await?;
                lat.push(t.elapsed());
                i += 1;
            }
            Ok::<_, scalestore::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = started.elapsed();
    lat.sort();
    let writes = lat.len() as f64;
    let mut syncs = 0u64;
    let mut appends = 0u64;
    for (n, (s0, a0)) in cluster.node_ids().iter().zip(before) {
        let s = cluster.storage_stats(*n)?;
        syncs += s.log_syncs.load(Ordering::Relaxed) - s0;
        appends += s.log_appends.load(Ordering::Relaxed) - a0;
    }
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "shards={} writers={} value={}B sync={} duration={:.1}s",
        args.shards,
        args.writers,
        args.value_bytes,
        args.sync,
        elapsed.as_secs_f64()
    );
    println!(
        "writes={} throughput={:.0} ops/s",
        lat.len(),
        writes / elapsed.as_secs_f64()
    );
    println!(
        "latency p50={:.2}ms p99={:.2}ms max={:.2}ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    println!(
        "fsyncs: {} on 3 nodes = {:.3} per write ({:.3} per write per node); log appends per fsync {:.1}",
        syncs,
        syncs as f64 / writes,
        syncs as f64 / writes / 3.0,
        appends as f64 / syncs.max(1) as f64
    );
    match Arc::try_unwrap(cluster) {
        Ok(c) => c.shutdown().await?,
        Err(_) => return Err("cluster still shared".into()),
    }
    Ok(())
}
