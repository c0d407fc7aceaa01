//! Exactly-once client sessions: retried writes apply once, sessions expire by log time, and a
//! retry from an expired session is refused rather than applied again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use scalestore::protocol::ClientRequest;
use scalestore::types::{Command, SessionRef};
use scalestore::{
    Client, ClientOptions, ClusterOptions, EmbeddedCluster, Error, NetworkFaults, RaftTiming,
};

const WAIT: Duration = Duration::from_secs(30);

fn patient_client(cluster: &EmbeddedCluster) -> Client {
    Client::new(
        cluster.transport(),
        ClientOptions {
            timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
}

fn duplicates_on(cluster: &EmbeddedCluster) -> u64 {
    cluster
        .node_ids()
        .into_iter()
        .map(|n| {
            cluster
                .storage_stats(n)
                .expect("stats")
                .duplicates_suppressed
                .load(Ordering::SeqCst)
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_retried_through_lost_responses_apply_exactly_once() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        nodes: 3,
        seed: Some(7),
        ..Default::default()
    })
    .await
    .expect("start");
    cluster.wait_for_leader(0, WAIT).await.expect("leader");
    cluster.faults().set_network(NetworkFaults {
        drop_responses: 0.3,
        jitter: Duration::from_millis(2),
        affect_clients: true,
        ..Default::default()
    });
    // Four concurrent clients, each appending its own byte 25 times to one shared key.
    let mut tasks = Vec::new();
    for w in 0..4u8 {
        let client = patient_client(&cluster);
        tasks.push(tokio::spawn(async move {
            let mut lens = Vec::new();
            for _ in 0..25 {
                lens.push(
                    client
                        .append("shared", [b'a' + w])
                        .await
                        .expect("append succeeds eventually"),
                );
            }
            lens
        }));
    }
    let mut all_lens = Vec::new();
    for t in tasks {
        all_lens.extend(t.await.expect("join"));
    }
    cluster.faults().clear();
    let value = cluster
        .client()
        .get("shared")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        value.len(),
        100,
        "100 acknowledged appends, each applied once (seed {})",
        cluster.seed()
    );
    for w in 0..4u8 {
        assert_eq!(
            value.iter().filter(|b| **b == b'a' + w).count(),
            25,
            "client {w}'s appends"
        );
    }
    all_lens.sort();
    assert_eq!(
        all_lens,
        (1..=100).collect::<Vec<u64>>(),
        "every append saw its own new length"
    );
    assert!(
        duplicates_on(&cluster) > 0,
        "retries of already applied appends really happened (seed {})",
        cluster.seed()
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_table_shrinks_after_expiry_and_an_expired_retry_is_refused() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        nodes: 3,
        timing: RaftTiming {
            session_ttl_ms: 400,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("start");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");

    let idle = cluster.client();
    assert_eq!(idle.append("k", "a").await.expect("append"), 1);
    let session = idle.session_id(0).await.expect("a session was opened");
    for i in 0..10 {
        cluster
            .client()
            .put(format!("other-{i}"), "v")
            .await
            .expect("put");
    }
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    let before = cluster
        .node(leader)
        .expect("node")
        .store()
        .expect("store")
        .session_count(0)
        .expect("count");
    assert_eq!(before, 11, "one session per client");

    // Log time only moves with the log: keep one client writing past the TTL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = cluster.client();
    for i in 0..20 {
        busy.put(format!("tick-{i}"), "t").await.expect("put");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");
    for n in cluster.node_ids() {
        let after = cluster
            .node(n)
            .expect("node")
            .store()
            .expect("store")
            .session_count(0)
            .expect("count");
        assert_eq!(after, 1, "node {n}: only the busy client's session is left");
    }

    // The idle client's first append, retried now, must not be applied again.
    let retry = ClientRequest::Write {
        group: 0,
        command: Command::Append {
            key: b"k".to_vec(),
            value: b"a".to_vec(),
        },
        session: Some(SessionRef {
            session,
            seq: 1,
            first_unacked: 1,
        }),
    };
    let err = cluster
        .node(leader)
        .expect("node")
        .handle_client(retry, true)
        .await
        .expect_err("expired session");
    assert!(matches!(err, Error::SessionExpired { .. }), "{err}");
    assert_eq!(
        cluster.client().get("k").await.expect("get"),
        Some(b"a".to_vec()),
        "not applied twice"
    );

    // A new write from the idle client is safe to send under a fresh session.
    assert_eq!(idle.append("k", "b").await.expect("append after expiry"), 2);
    assert_ne!(
        idle.session_id(0).await,
        Some(session),
        "a new session was opened"
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_leader_whose_clock_jumps_a_day_ahead() {
    let cluster = EmbeddedCluster::start(ClusterOptions {
        shards: 1,
        nodes: 3,
        ..Default::default()
    })
    .await
    .expect("start");
    let leader = cluster.wait_for_leader(0, WAIT).await.expect("leader");
    let idle = cluster.client();
    assert_eq!(idle.append("k", "a").await.expect("append"), 1);
    let session = idle.session_id(0).await.expect("a session was opened");

    // The leader's wall clock jumps a day ahead while another client writes, then comes back.
    const DAY_MS: i64 = 24 * 3600 * 1000;
    cluster.faults().jump_clock(leader, DAY_MS);
    let busy = cluster.client();
    for i in 0..10 {
        busy.put(format!("tick-{i}"), "t").await.expect("put");
    }
    cluster.faults().jump_clock(leader, -DAY_MS);
    for i in 10..20 {
        busy.put(format!("tick-{i}"), "t").await.expect("put");
    }
    cluster
        .wait_for_replication(0, WAIT)
        .await
        .expect("replicated");

    // Nobody was idle for the session TTL (10 minutes): no session may have expired.
    assert_eq!(idle.append("k", "b").await.expect("append"), 2);
    assert_eq!(
        idle.session_id(0).await,
        Some(session),
        "the idle client's session survived the clock jump"
    );
    for n in cluster.node_ids() {
        let expired = cluster
            .storage_stats(n)
            .expect("stats")
            .sessions_expired
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(expired, 0, "node {n} expired sessions");
    }
    cluster.shutdown().await.expect("shutdown");
}
