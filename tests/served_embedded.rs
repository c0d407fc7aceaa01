//! An embedded cluster served over gRPC (what the Python and Node `cluster.serve()` call): the
//! Rust gRPC client, the CLI and plain generated stubs all reach it, and see the data the
//! in-process client sees.

use std::process::Command;
use std::time::Duration;

use scalestore::{ClientOptions, ClusterOptions, EmbeddedCluster};
use scalestore_server::proto::kv_client::KvClient;
use scalestore_server::proto::{Consistency, GetRequest};

const CLI: &str = env!("CARGO_BIN_EXE_scalestore");

async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(CLI).args(args).output().expect("run cli"))
        .await
        .expect("cli task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_cluster_served_over_grpc_answers_the_rust_client_the_cli_and_plain_stubs() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 3,
        shards: 4,
        ..Default::default()
    })
    .await
    .expect("start");
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    let served = scalestore_server::serve_embedded(&cluster, "127.0.0.1")
        .await
        .expect("serve");
    let endpoints = served.endpoints();
    assert_eq!(endpoints.len(), 3, "one port per node");
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let remote = scalestore_server::connect(&endpoints[..1], options)
        .await
        .expect("connect");
    remote.put("served", "yes").await.expect("put over gRPC");
    assert_eq!(
        cluster
            .client()
            .get("served")
            .await
            .expect("get in process"),
        Some(b"yes".to_vec())
    );
    cluster
        .client()
        .put("local", "too")
        .await
        .expect("put in process");
    let got = cli(vec![
        "--endpoints".into(),
        endpoints[1].clone(),
        "get".into(),
        "local".into(),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&got.stdout), "too\n", "{got:?}");
    let status = cli(vec![
        "--endpoints".into(),
        endpoints[2].clone(),
        "status".into(),
    ])
    .await;
    let table = String::from_utf8_lossy(&status.stdout);
    for e in &endpoints {
        assert!(table.contains(e.as_str()), "{table}");
    }
    let mut kv = KvClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", endpoints[2]))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    let plain = kv
        .get(GetRequest {
            key: b"served".to_vec(),
            consistency: Consistency::Linearizable as i32,
        })
        .await
        .expect("plain get")
        .into_inner();
    assert!(plain.found && plain.value == b"yes");
    // A stopped node's port fails; the gRPC client routes around it.
    cluster.stop_node(1).await.expect("stop node 1");
    remote
        .put("after-stop", "ok")
        .await
        .expect("put with node 1 down");
    assert_eq!(
        remote.get("after-stop").await.expect("get"),
        Some(b"ok".to_vec())
    );
    served.stop().await;
    cluster.shutdown().await.expect("shutdown");
}
