//! What the bindings build on: a cluster-wide recording switch, histories that keep every
//! invoked operation (an abandoned one too), and generated load measured per 100 ms.

use std::time::Duration;

use scalestore::{
    check, CheckOptions, ClusterOptions, EmbeddedCluster, LoadOptions, LoadRun, OpOutput,
};

async fn cluster(shards: usize) -> EmbeddedCluster {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        nodes: 3,
        shards,
        ..Default::default()
    })
    .await
    .expect("start");
    cluster
        .wait_for_all_leaders(Duration::from_secs(30))
        .await
        .expect("leaders");
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_switch_records_every_client_whenever_made_and_only_while_on() {
    let cluster = cluster(2).await;
    let early = cluster.client();
    early.put("k", "before").await.expect("put");
    let history = cluster.recording().start();
    early.put("k", "1").await.expect("put");
    let late = cluster.client();
    late.append("k", "2").await.expect("append");
    early.get("k").await.expect("get");
    assert!(cluster.recording().stop().is_some());
    late.put("k", "after").await.expect("put");
    let ops = history.operations();
    assert_eq!(ops.len(), 3);
    let clients: std::collections::BTreeSet<u64> = ops.iter().map(|o| o.client).collect();
    assert_eq!(clients.len(), 2, "one id per client");
    assert!(check(&ops, CheckOptions::default()).is_linearizable());
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_write_abandoned_in_flight_stays_in_the_history_as_unknown() {
    let cluster = cluster(1).await;
    let history = scalestore::History::new();
    let client = cluster.client().recording(&history);
    // Slow every message down, then give up on the write long before it can finish: it may
    // still be applied, so the history must say it was invoked with an unknown outcome.
    cluster.faults().set_network(scalestore::NetworkFaults {
        delay: Duration::from_millis(100),
        affect_clients: true,
        ..Default::default()
    });
    let abandoned = tokio::time::timeout(Duration::from_millis(20), client.put("k", "v")).await;
    assert!(abandoned.is_err(), "the write was abandoned");
    cluster.faults().set_network(Default::default());
    let ops = history.operations();
    assert_eq!(ops.len(), 1, "the abandoned write is in the history");
    assert!(matches!(ops[0].output, OpOutput::Unknown { .. }));
    // A later read may see it; the history stays linearizable either way.
    let reader = cluster.client().recording(&history);
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.get("k").await.expect("get");
    assert!(check(&history.operations(), CheckOptions::default()).is_linearizable());
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_run_counts_its_operations_per_100_ms_and_writes_the_keys() {
    let cluster = cluster(2).await;
    let run = LoadRun::start(
        cluster.client(),
        LoadOptions {
            writers: 4,
            keys: 20,
            ..Default::default()
        },
    )
    .expect("start load");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let report = run.stop().await;
    assert!(report.operations > 10, "{report:?}");
    assert_eq!(
        report.timeline.iter().map(|r| r.ops).sum::<u64>(),
        report.operations
    );
    assert!(report.timeline.len() >= 7 && report.timeline.len() <= 10);
    assert!(report.p99_ms >= report.p50_ms && report.p50_ms > 0.0);
    let written = cluster
        .client()
        .scan_up_to(&Default::default(), None)
        .await
        .expect("scan");
    assert!(!written.is_empty() && written.len() <= 20);
    assert!(written
        .iter()
        .all(|(k, v)| k.starts_with(b"load-") && v.len() == 100));
    cluster.shutdown().await.expect("shutdown");
}
