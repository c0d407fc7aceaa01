//! `scalestore dev`: a local cluster of `scalestore-server` processes on 127.0.0.1, printing its
//! endpoints until Ctrl-C, then stopping them all at once (the whole cluster goes, so no node
//! hands its leaderships off; every acknowledged write is on disk).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{ServerError, ServerResult};
use crate::proto::admin_client::AdminClient;
use crate::proto::StatusRequest;

/// Starts `nodes` servers (node N on `first_port + N - 1`), waits until every shard has a
/// leader, prints how to talk to them, and runs until Ctrl-C (or SIGTERM).
pub async fn run(
    nodes: usize,
    shards: usize,
    data_dir: Option<PathBuf>,
    first_port: u16,
) -> ServerResult<()> {
    if nodes == 0 || nodes > 99 {
        return Err(ServerError::Config(format!(
            "--nodes {nodes}: between 1 and 99"
        )));
    }
    if usize::from(first_port) + nodes > usize::from(u16::MAX) || first_port == 0 {
        return Err(ServerError::Config(format!(
            "--first-port {first_port} leaves no room for {nodes} nodes"
        )));
    }
    let exe = std::env::current_exe()?.with_file_name("scalestore-server");
    if !exe.exists() {
        return Err(ServerError::Config(format!(
            "{exe:?} not found: build it with `cargo build -p scalestore-server`"
        )));
    }
    let temp;
    let root = match data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new()
                .prefix("scalestore-dev-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&root)?;
    let address = |i: usize| format!("127.0.0.1:{}", usize::from(first_port) + i - 1);
    let members: Vec<String> = (1..=nodes).map(|i| format!("{i}={}", address(i))).collect();
    let mut children: Vec<Child> = Vec::new();
    for i in 1..=nodes {
        let log = std::fs::File::create(root.join(format!("node-{i}.log")))?;
        let child = Command::new(&exe)
            .args(["--id", &i.to_string(), "--listen", &address(i)])
            .arg("--data-dir")
            .arg(root.join(format!("node-{i}")))
            .args(["--initial-cluster", &members.join(",")])
            .args(["--shards", &shards.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            // Their own process group: the terminal's Ctrl-C reaches this supervisor only,
            // which stops them all together.
            .process_group(0)
            .spawn()?;
        children.push(child);
    }
    let endpoints: Vec<String> = (1..=nodes).map(address).collect();
    let ready = wait_ready(&endpoints[0], &mut children, Duration::from_secs(60)).await;
    if let Err(e) = ready {
        stop(&mut children);
        return Err(e);
    }
    println!(
        "ScaleStore dev cluster: {nodes} nodes, {shards} shards, data in {}",
        root.display()
    );
    println!("endpoints: {}", endpoints.join(","));
    println!("try:  scalestore put greeting hello && scalestore get greeting && scalestore status");
    println!(
        "(Ctrl-C stops the cluster; logs: {}/node-N.log)",
        root.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some((i, status)) = children.iter_mut().enumerate().find_map(|(i, c)| c.try_wait().ok().flatten().map(|s| (i, s))) {
                    eprintln!("node {} exited ({status}); stopping the cluster", i + 1);
                    break;
                }
            }
        }
    }
    stop(&mut children);
    Ok(())
}

async fn wait_ready(endpoint: &str, children: &mut [Child], timeout: Duration) -> ServerResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(i) = children
            .iter_mut()
            .position(|c| c.try_wait().ok().flatten().is_some())
        {
            return Err(ServerError::Config(format!(
                "node {} exited at start; see its log (a port in use, or a data dir of another cluster?)",
                i + 1
            )));
        }
        if let Ok(channel) = crate::peer::channel(endpoint) {
            let mut admin = AdminClient::new(channel);
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(2), admin.status(StatusRequest {})).await
            {
                let s = r.into_inner();
                if !s.shards.is_empty() && s.shards.iter().all(|h| h.leader.is_some()) {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ServerError::Unreachable {
                endpoints: endpoint.into(),
                reason: format!("the cluster did not form within {} s", timeout.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops every server at once (SIGUSR1: no leadership hand-off, since no node stays to take
/// them), saying so, then waits for them all.
fn stop(children: &mut [Child]) {
    let started = Instant::now();
    eprintln!(
        "stopping {} nodes together (the whole cluster stops: no leadership hand-off; every \
         acknowledged write is on disk)...",
        children.len()
    );
    for c in children.iter_mut() {
        let _ = Command::new("kill")
            .args(["-USR1", &c.id().to_string()])
            .status();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
    eprintln!("stopped in {:.1} s", started.elapsed().as_secs_f64());
}
