//! What hibernation costs a write: the first write to each shard after it fell asleep, against
//! a write to the same shard while it is awake, through the Rust gRPC client.
//!
//! Usage: `wake_latency [--endpoints H:P,...] [--settle-seconds 5]`
//!
//! One key per shard. A first pass writes each key once (it opens the client's session with
//! every shard, which costs a round of its own); then nothing for `--settle-seconds`, so every
//! shard falls asleep again; then each key is written once more, one write at a time (every
//! write wakes its shard), and at once a third time (every shard awake). Prints p50, p99 and
//! the maximum of the last two passes. `scripts/bench-scaling.sh` runs it on its idle clusters.

use std::time::{Duration, Instant};

use scalestore::ClientOptions;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut endpoints = "127.0.0.1:7001".to_string();
    let mut settle = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => endpoints = value,
            "--settle-seconds" => settle = Duration::from_secs_f64(value.parse()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let endpoints: Vec<String> = endpoints.split(',').map(String::from).collect();
    let client = scalestore_server::connect(&endpoints, ClientOptions::default()).await?;
    let keys: Vec<String> = client
        .shard_map()
        .await?
        .key_per_shard("wake-")
        .into_values()
        .collect();
    if keys.is_empty() {
        return Err("the cluster map has no shards".into());
    }
    let pass = |label: &'static str| {
        let (client, keys) = (client.clone(), keys.clone());
        async move {
            let mut took = Vec::with_capacity(keys.len());
            for key in &keys {
                let started = Instant::now();
                client.put(key, label).await?;
                took.push(started.elapsed());
            }
            Ok::<_, scalestore::Error>(took)
        }
    };
    pass("sessions").await?;
    tokio::time::sleep(settle).await;
    let asleep = pass("asleep").await?;
    let awake = pass("awake").await?;
    println!(
        "{} shards, one write each, one at a time (after {:.1} s without writes):",
        keys.len(),
        settle.as_secs_f64()
    );
    for (label, took) in [("asleep", asleep), ("awake", awake)] {
        println!("  {label:<7}{}", summary(took));
    }
    Ok(())
}

fn summary(mut took: Vec<Duration>) -> String {
    took.sort();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1;
        took[i].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}
