//! What the multi-process tests share: a cluster of `scalestore-server` processes started from
//! command lines (so a node can be killed and restarted as it was), HTTP and gRPC probes, and
//! writers whose recorded history is checked after a fault.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scalestore::{check, CheckOptions, Client, ClientOptions, History};
use scalestore_server::proto::admin_client::AdminClient;
use scalestore_server::proto::{self, StatusRequest};

pub const SERVER: &str = env!("CARGO_BIN_EXE_scalestore-server");
pub const CLI: &str = env!("CARGO_BIN_EXE_scalestore");
pub const WAIT: Duration = Duration::from_secs(60);

/// A port no other test of this run uses and nothing listens on now. Taken below the kernel's
/// ephemeral range (32768 and up): a port the kernel handed out for the asking (bind to port 0)
/// could go to an outgoing connection, or to another test, before the server binds it (seen
/// once: "Address already in use"). Each test process starts at its own offset.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let offset = (std::process::id() % 400) * 30;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < SPAN, "no free port left for this test process");
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A cluster of server processes, each started with a command line it can be restarted with.
pub struct Processes {
    pub dir: tempfile::TempDir,
    /// Flags every node gets (joining ones too).
    pub extra: Vec<String>,
    pub addresses: BTreeMap<u64, String>,
    /// Each node's `--metrics-listen` address.
    pub metrics: BTreeMap<u64, String>,
    /// How the test's own clients reach a TLS cluster.
    pub tls: Option<scalestore_server::TlsFiles>,
    pub args: Mutex<BTreeMap<u64, Vec<String>>>,
    /// What a node's command line is run under (say `ip netns exec NS`); none: run directly.
    pub launchers: BTreeMap<u64, Vec<String>>,
    pub children: Mutex<BTreeMap<u64, Child>>,
}

impl Processes {
    /// `n` nodes bootstrapped together with `shards` shards.
    pub async fn start(n: u64, shards: usize) -> Processes {
        Processes::start_with(n, shards, &[]).await
    }

    /// [`start`](Self::start) with `extra` flags on every node (and on nodes that join).
    pub async fn start_with(n: u64, shards: usize, extra: &[&str]) -> Processes {
        let p = Processes::prepare(n, shards, extra);
        for i in 1..=n {
            p.restart(i);
        }
        p.wait_all_led().await;
        p
    }

    /// The command lines of `n` first members (each also serving metrics), none started.
    pub fn prepare(n: u64, shards: usize, extra: &[&str]) -> Processes {
        let on_loopback = |_| format!("127.0.0.1:{}", free_port());
        Processes::prepare_on(
            (1..=n).map(|i| (i, on_loopback(i))).collect(),
            (1..=n).map(|i| (i, on_loopback(i))).collect(),
            BTreeMap::new(),
            shards,
            extra,
        )
    }

    /// [`prepare`](Self::prepare) with each node's client and metrics address given, and its
    /// command line run under `launchers[node]` (when there is one).
    pub fn prepare_on(
        addresses: BTreeMap<u64, String>,
        metrics: BTreeMap<u64, String>,
        launchers: BTreeMap<u64, Vec<String>>,
        shards: usize,
        extra: &[&str],
    ) -> Processes {
        let dir = tempfile::tempdir().expect("dir");
        let members: Vec<String> = addresses.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let p = Processes {
            dir,
            extra: extra.iter().map(|e| e.to_string()).collect(),
            addresses: addresses.clone(),
            metrics,
            tls: None,
            args: Mutex::new(BTreeMap::new()),
            launchers,
            children: Mutex::new(BTreeMap::new()),
        };
        for (i, a) in &addresses {
            let args = vec![
                "--id".into(),
                i.to_string(),
                "--listen".into(),
                a.clone(),
                "--data-dir".into(),
                p.data_dir(*i).display().to_string(),
                "--initial-cluster".into(),
                members.join(","),
                "--shards".into(),
                shards.to_string(),
                "--metrics-listen".into(),
                p.metrics[i].clone(),
            ];
            let args = args
                .into_iter()
                .chain(extra.iter().map(|e| e.to_string()))
                .collect();
            p.args.lock().expect("lock").insert(*i, args);
        }
        p
    }

    /// GET `path` from node `id`'s metrics port: (status code, body).
    pub fn http_get(&self, id: u64, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(&self.metrics[&id]) else {
            return (0, String::new());
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: scalestore\r\nConnection: close\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    pub fn spawn(&self, id: u64, args: Vec<String>) {
        self.spawn_with_env(id, args, &[]);
    }

    /// [`spawn`](Self::spawn) with `env` added to the process's environment (say
    /// `SCALESTORE_FAILPOINTS`); a later [`restart`](Self::restart) starts it without them.
    pub fn spawn_with_env(&self, id: u64, args: Vec<String>, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .expect("log");
        let launcher = self.launchers.get(&id).cloned().unwrap_or_default();
        let mut command = match launcher.split_first() {
            Some((program, launcher_args)) => {
                let mut c = Command::new(program);
                c.args(launcher_args).arg(SERVER);
                c
            }
            None => Command::new(SERVER),
        };
        let child = command
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn server");
        self.args.lock().expect("lock").insert(id, args);
        self.children.lock().expect("lock").insert(id, child);
    }

    /// Adds node `id` with `--join` through node 1.
    pub async fn join(&mut self, id: u64) {
        let address = format!("127.0.0.1:{}", free_port());
        let args = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            address.clone(),
            "--data-dir".into(),
            self.data_dir(id).display().to_string(),
            "--join".into(),
            self.addresses[&1].clone(),
        ];
        let args = args.into_iter().chain(self.extra.iter().cloned()).collect();
        self.addresses.insert(id, address);
        self.spawn(id, args);
    }

    pub fn endpoints(&self) -> String {
        self.addresses
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn signal(&self, id: u64, signal: &str) {
        let pid = self.children.lock().expect("lock")[&id].id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {signal} {pid}");
    }

    pub fn kill9(&self, id: u64) {
        self.signal(id, "-KILL");
        let _ = self
            .children
            .lock()
            .expect("lock")
            .get_mut(&id)
            .map(Child::wait);
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&self, id: u64) -> std::process::ExitStatus {
        self.signal(id, "-TERM");
        self.children
            .lock()
            .expect("lock")
            .get_mut(&id)
            .expect("child")
            .wait()
            .expect("wait")
    }

    /// Restarts `id` with its original command line.
    pub fn restart(&self, id: u64) {
        let args = self.args.lock().expect("lock")[&id].clone();
        self.spawn(id, args);
    }

    /// Restarts `id` with its original command line and `env` added to its environment.
    pub fn restart_with_env(&self, id: u64, env: &[(&str, &str)]) {
        let args = self.args.lock().expect("lock")[&id].clone();
        self.spawn_with_env(id, args, env);
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    pub fn channel(&self, id: u64) -> tonic::transport::Channel {
        let tls = self
            .tls
            .as_ref()
            .map(|f| scalestore_server::tls::client_config(f).expect("tls"));
        scalestore_server::peer::channel_with(&self.addresses[&id], tls.as_ref()).expect("channel")
    }

    pub async fn status(&self, via: u64) -> Option<proto::StatusResponse> {
        let channel = self.channel(via);
        let mut admin = AdminClient::new(channel);
        tokio::time::timeout(Duration::from_secs(3), admin.status(StatusRequest {}))
            .await
            .ok()?
            .ok()
            .map(|r| r.into_inner())
    }

    /// Waits until node `via` reports a leader for every shard.
    pub async fn wait_led(&self, via: u64) -> proto::StatusResponse {
        self.wait_for_status(via, WAIT, "a leader for every shard", |s| {
            !s.shards.is_empty() && s.shards.iter().all(|h| h.leader.is_some())
        })
        .await
    }

    /// Waits up to `timeout` until node `via` reports a status for which `done` holds (`what`
    /// says what was awaited, with the node's log, if it never does).
    pub async fn wait_for_status(
        &self,
        via: u64,
        timeout: Duration,
        what: &str,
        done: impl Fn(&proto::StatusResponse) -> bool,
    ) -> proto::StatusResponse {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.status(via).await {
                if done(&s) {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {via} never reported {what}; log: {}",
                self.log(via)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_all_led(&self) {
        for id in self.addresses.keys() {
            self.wait_led(*id).await;
        }
    }

    pub async fn client(&self) -> Client {
        let endpoints: Vec<String> = self.addresses.values().cloned().collect();
        let options = ClientOptions {
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        match &self.tls {
            Some(files) => scalestore_server::connect_tls(&endpoints, options, files).await,
            None => scalestore_server::connect(&endpoints, options).await,
        }
        .expect("connect")
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.children.lock().expect("lock").values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn cli(args: &[&str]) -> Output {
    Command::new(CLI).args(args).output().expect("run cli")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub async fn writers_survive(p: &Processes, fault: impl std::future::Future<Output = ()>) {
    // Enough keys that few operations overlap on one: the checker's search stays small even
    // when a fault stretches some operations over a second.
    const KEYS: u64 = 16;
    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let base = p.client().await;
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let client = base.recording(&history);
        let (stop, acked) = (stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let key = format!("key-{}", (w + i) % KEYS);
                if i.is_multiple_of(3) {
                    let _ = client.get(&key).await;
                } else {
                    let token = format!("<{w}.{i}>");
                    if client.append(&key, &token).await.is_ok() {
                        acked.lock().expect("lock").push((key, token));
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    fault.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    let finals = base.recording(&history);
    let mut values = BTreeMap::new();
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let v = finals
            .get(&key)
            .await
            .expect("final read")
            .unwrap_or_default();
        values.insert(key, String::from_utf8(v).expect("utf8"));
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "writes went on: {} acknowledged",
        acked.len()
    );
    for (key, token) in &acked {
        assert_eq!(
            values[key].matches(token.as_str()).count(),
            1,
            "acknowledged append {token} on {key} present exactly once"
        );
    }
    let verdict = check(&history.operations(), CheckOptions::default());
    assert!(verdict.is_linearizable(), "{verdict:?}");
}

/// The node leading the shard of `key-0`.
pub async fn leader_of_first_key(p: &Processes) -> u64 {
    let client = p.client().await;
    let shard = client.shard_of("key-0").await.expect("shard");
    p.wait_led(1).await.shards[shard as usize]
        .leader
        .expect("leader")
}

/// Waits until a stale read of `key` on node `node` returns `value`.
pub async fn wait_for_value_on(p: &Processes, node: u64, key: &str, value: &str) {
    let pinned = p.client().await.pinned_to(node).expect("pin");
    let deadline = Instant::now() + WAIT;
    loop {
        let v = pinned
            .get_with(key, scalestore::ReadConsistency::Stale)
            .await
            .ok()
            .flatten();
        if v.as_deref() == Some(value.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} has {key} = {value}: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample `name` (with its labels, as printed) in a Prometheus scrape.
pub fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.trim().parse().ok())
    })
}
