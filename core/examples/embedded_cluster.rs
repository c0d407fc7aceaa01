//! The main job for now: start an embedded 3-node group, write and read, stop it, reopen it from
//! its data dir and check every key survived.
//!
//! Usage: `embedded_cluster [DATA_DIR]` (default: a temporary dir, removed at the end).

use std::time::{Duration, Instant};

use scalestore::{ClusterOptions, EmbeddedCluster, ReadConsistency};

const KEYS: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keep = std::env::args().nth(1).map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let root = keep.clone().unwrap_or_else(|| tmp.path().join("cluster"));
    let options = ClusterOptions {
        nodes: 3,
        root_dir: Some(root.clone()),
        ..Default::default()
    };

    let t = Instant::now();
    let cluster = EmbeddedCluster::start(options.clone()).await?;
    let leader = cluster.wait_for_leader(0, Duration::from_secs(10)).await?;
    println!(
        "started 3 nodes in {:?} under {}; leader of group 0: node {leader}",
        t.elapsed(),
        root.display()
    );

    let client = cluster.client();
    let t = Instant::now();
    for i in 0..KEYS {
        client
            .put(format!("key-{i:03}"), format!("value-{i}"))
            .await?;
    }
    println!(
        "wrote {KEYS} keys in {:?} (each committed on a majority, fsynced)",
        t.elapsed()
    );
    let n = client.append("log", "hello ").await?;
    let n2 = client.append("log", "world").await?;
    println!("append -> {n}, append -> {n2}");
    let cas = client.cas("lock", None, "owner-1").await?;
    println!("cas(lock, absent -> owner-1) success={}", cas.success);
    println!("get(key-042) = {:?}", utf8(client.get("key-042").await?));
    let follower = cluster
        .node_ids()
        .into_iter()
        .find(|n| *n != leader)
        .unwrap_or(leader);
    let stale = cluster
        .client_pinned(follower)?
        .get_with("key-042", ReadConsistency::Stale)
        .await?;
    println!(
        "stale get(key-042) from node {follower} = {:?}",
        utf8(stale)
    );
    cluster.shutdown().await?;
    println!("stopped");

    let cluster = EmbeddedCluster::start(options).await?;
    let leader = cluster.wait_for_leader(0, Duration::from_secs(10)).await?;
    let client = cluster.client();
    let mut intact = 0;
    for i in 0..KEYS {
        if client.get(format!("key-{i:03}")).await? == Some(format!("value-{i}").into_bytes()) {
            intact += 1;
        }
    }
    let log = utf8(client.get("log").await?);
    println!("reopened (leader node {leader}): {intact}/{KEYS} keys intact, log = {log:?}");
    cluster.shutdown().await?;
    if intact != KEYS || log.as_deref() != Some("hello world") {
        return Err("data lost across restart".into());
    }
    if let Some(dir) = keep {
        println!("data kept in {}", dir.display());
    }
    println!("ok");
    Ok(())
}

fn utf8(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|b| String::from_utf8_lossy(&b).into_owned())
}
