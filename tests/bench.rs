//! `scalestore bench` against each system it drives: etcd (a real member started here), three
//! `scalestore-server` processes, and an embedded cluster. Each test checks the data the bench
//! wrote (every key of the key space, read back through another client), the figures it
//! reports, and that bad flags are refused with a usage error before anything runs.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use scalestore::{LoadOptions, ReadConsistency};
use scalestore_server::bench::etcd::EtcdTarget;
use serde_json::Value;
use support::*;

/// The key space and value `scalestore bench --keys N` uses with its default sizes.
fn bench_keys(keys: usize) -> LoadOptions {
    LoadOptions {
        keys,
        key_size: 16,
        value_size: 100,
        ..LoadOptions::default()
    }
}

fn bench(args: &[&str]) -> (Option<i32>, Value, String) {
    let out = Command::new(CLI)
        .arg("bench")
        .args(args)
        .args(["--json", "--quiet"])
        .output()
        .expect("run scalestore bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code(), report, stderr)
}

fn number(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing from {report}"))
}

/// A one-member etcd on loopback ports, removed with its data when dropped.
struct Etcd {
    child: Child,
    client: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("dir");
        let (client, peer, metrics) = (free_port(), free_port(), free_port());
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                &format!("--listen-client-urls=http://127.0.0.1:{client}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                &format!("--initial-cluster=bench=http://127.0.0.1:{peer}"),
                &format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
                "--logger=zap",
                "--log-level=error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (scripts/setup.sh installs Debian's etcd-server)");
        let etcd = Etcd {
            child,
            client: format!("127.0.0.1:{client}"),
            metrics: format!("127.0.0.1:{metrics}"),
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let endpoints = [etcd.client.clone()];
            let probe = EtcdTarget::connect(&endpoints, 1, Duration::from_secs(1));
            if probe.await.is_ok() {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_etcd_through_its_grpc_api_and_writes_every_key() {
    let etcd = Etcd::start().await;
    let (code, report, stderr) = bench(&[
        "--target",
        "etcd",
        "--endpoints",
        &etcd.client,
        "--metrics",
        &etcd.metrics,
        "--workload",
        "ycsb-b",
        "--keys",
        "300",
        "--concurrency",
        "8",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["target"], "etcd");
    assert_eq!(report["read_ratio"], 0.95);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(number(&report, "operations") > 0.0, "{report}");
    assert!(number(&report, "p99_ms") >= number(&report, "p50_ms"));
    assert!(
        number(&report, "cpu_seconds_per_1000_ops") > 0.0,
        "{report}"
    );
    assert!(number(&report, "fsyncs_per_write") > 0.0, "{report}");
    // The preload wrote the whole key space with the bench's value: read it back from etcd.
    let keys = bench_keys(300);
    let etcd_client = &EtcdTarget::connect(
        std::slice::from_ref(&etcd.client),
        1,
        Duration::from_secs(5),
    )
    .await
    .expect("connect")[0];
    for i in 0..300 {
        let value = etcd_client.range(keys.key(i), false).await.expect("range");
        assert_eq!(value, Some(keys.value()), "key {i}");
    }
    // etcd has no lease reads: refused before anything runs.
    let (code, _, stderr) = bench(&[
        "--target",
        "etcd",
        "--endpoints",
        &etcd.client,
        "--workload",
        "read",
        "--consistency",
        "lease",
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("lease"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_server_processes_and_reports_their_cpu_and_fsyncs() {
    let p = Processes::start(3, 4).await;
    let metrics: Vec<String> = p.metrics.values().cloned().collect();
    let (code, report, stderr) = bench(&[
        "--endpoints",
        &p.endpoints(),
        "--metrics",
        &metrics.join(","),
        "--workload",
        "ycsb-a",
        "--keys",
        "200",
        "--concurrency",
        "16",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["target"], "scalestore");
    assert_eq!(report["workload"], "ycsb-a");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(number(&report, "operations") > 0.0, "{report}");
    assert!(
        number(&report, "cpu_seconds_per_1000_ops") > 0.0,
        "{report}"
    );
    assert!(number(&report, "fsyncs_per_write") > 0.0, "{report}");
    assert_eq!(
        report["timeline"].as_array().map(|t| t.len() >= 10),
        Some(true),
        "one row per 100 ms"
    );
    let keys = bench_keys(200);
    let client = p.client().await;
    for i in 0..200 {
        let value = client
            .get_with(keys.key(i), ReadConsistency::Linearizable)
            .await
            .expect("get");
        assert_eq!(value, Some(keys.value()), "key {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_an_embedded_cluster_and_refuses_bad_flags() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, report, stderr) = bench(&[
        "--target",
        "embedded",
        "--shards",
        "2",
        "--workload",
        "write",
        "--keys",
        "50",
        "--key-size",
        "24",
        "--value-size",
        "10",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--data-dir",
        &dir.path().display().to_string(),
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["target"], "embedded");
    assert_eq!(report["key_size"], 24);
    assert!(number(&report, "operations") > 0.0, "{report}");
    assert!(number(&report, "fsyncs_per_write") > 0.0, "{report}");
    assert!(
        number(&report, "cpu_seconds_per_1000_ops") > 0.0,
        "{report}"
    );
    assert!(
        dir.path().read_dir().expect("dir").next().is_some(),
        "the data went to --data-dir"
    );
    let unreachable = format!("127.0.0.1:{}", free_port());
    for (args, code, says) in [
        (
            vec!["--target", "embedded", "--duration", "0"],
            64,
            "--duration",
        ),
        (
            vec!["--target", "embedded", "--concurrency", "0"],
            64,
            "--concurrency",
        ),
        (vec!["--no-fsync"], 64, "--no-fsync"),
        (vec!["--workload", "scan"], 64, "scan"),
        (
            vec!["--target", "etcd", "--endpoints", unreachable.as_str()],
            2,
            unreachable.as_str(),
        ),
        (
            vec![
                "--target",
                "scalestore",
                "--endpoints",
                unreachable.as_str(),
            ],
            2,
            unreachable.as_str(),
        ),
    ] {
        let out = Command::new(CLI)
            .arg("bench")
            .args(&args)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no report");
    }
}
