//! Throughput and latency of a cluster of server processes through the Rust gRPC client.
//!
//! Usage: `bench_grpc [--endpoints H:P,...] [--workload write|read] [--concurrency 64]
//! [--seconds 5] [--value-bytes 100] [--keys 10000] [--cacert F --cert F --key F]`
//! (`scripts/bench-server.sh [--tls]` starts a cluster and runs both workloads).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scalestore::{ClientOptions, ReadConsistency};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut endpoints = "127.0.0.1:7001".to_string();
    let mut workload = "write".to_string();
    let mut tls = scalestore_server::TlsFiles::default();
    let (mut concurrency, mut seconds, mut value_bytes, mut keys) =
        (64usize, 5u64, 100usize, 10_000u64);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => endpoints = value,
            "--workload" => workload = value,
            "--concurrency" => concurrency = value.parse()?,
            "--seconds" => seconds = value.parse()?,
            "--value-bytes" => value_bytes = value.parse()?,
            "--keys" => keys = value.parse()?,
            "--cacert" => tls.ca = value.into(),
            "--cert" => tls.cert = Some(value.into()),
            "--key" => tls.key = Some(value.into()),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    let client = if tls.ca.as_os_str().is_empty() {
        scalestore_server::connect(&endpoints, ClientOptions::default()).await?
    } else {
        scalestore_server::connect_tls(&endpoints, ClientOptions::default(), &tls).await?
    };
    let value = vec![b'x'; value_bytes];
    if workload == "read" {
        // Every key the readers ask for exists.
        for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
            let pairs: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|k| (format!("bench-{k}"), value.clone()))
                .collect();
            client.batch_put(&pairs).await?;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (client, stop, latencies, errors, value, workload) = (
            client.clone(),
            stop.clone(),
            latencies.clone(),
            errors.clone(),
            value.clone(),
            workload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = w as u64;
            while !stop.load(Ordering::Relaxed) {
                i = i
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("bench-{}", i % keys);
                let t = Instant::now();
                let ok = if workload == "read" {
                    client
                        .get_with(&key, ReadConsistency::Linearizable)
                        .await
                        .is_ok()
                } else {
                    client.put(&key, &value).await.is_ok()
                };
                if ok {
                    mine.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Ok(mut l) = latencies.lock() {
                l.extend(mine);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{workload}: {:.0} ops/s over {elapsed:.1} s, {concurrency} in flight, {value_bytes} B values; p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; errors {}",
        l.len() as f64 / elapsed,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(0.999).as_secs_f64() * 1e3,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}
