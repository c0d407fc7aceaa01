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

/// Three nodes with `shards` shards, every group led.
async fn three_nodes_led(shards: usize) -> EmbeddedCluster {
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
async fn an_embedded_cluster_served_over_grpc_answers_the_rust_client_the_cli_and_plain_stubs() {
    let cluster = three_nodes_led(4).await;
    let served = scalestore_server::serve_embedded(&cluster, "127.0.0.1")
        .await
        .expect("serve");
    let endpoints = served.endpoints();
    assert_eq!(endpoints.len(), 3, "one port per node");
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(20),
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

/// Node 2 listens at the address a peer still records for node 3 (a replaced host's address,
/// reused): a vote, an append and a ping meant for 3 are refused with `WrongNode`, never
/// answered by 2 as if it were 3. The same messages addressed to 2 are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_for_one_node_are_refused_by_another_at_its_old_address() {
    use scalestore::network::{
        AdminReply, AdminRequest, PeerRequest, PeerResponse, PeerTransport, RaftRpc, PEER_TIMEOUT,
    };
    use scalestore::types::Vote;
    use scalestore::Error;

    let cluster = three_nodes_led(1).await;
    let served = scalestore_server::serve_embedded(&cluster, "127.0.0.1")
        .await
        .expect("serve");
    let node2 = served.addresses()[&2].clone();
    // Node 1's view: node 3 is at node 2's address; node 2 at its own.
    let peers = scalestore_server::peer::GrpcPeers::new(
        1,
        cluster.cluster_id(),
        [(3, node2.clone()), (2, node2)].into_iter().collect(),
        0,
        None,
    );
    let vote = || PeerRequest::Raft {
        group: 0,
        rpc: RaftRpc::Vote(openraft::raft::VoteRequest::new(Vote::new(0, 1), None)),
    };
    let append = || PeerRequest::Raft {
        group: 0,
        rpc: RaftRpc::Append(openraft::raft::AppendEntriesRequest {
            vote: Vote::new(0, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
    };
    let ping = || PeerRequest::Admin(AdminRequest::Ping);
    for (what, request) in [("vote", vote()), ("append", append()), ("ping", ping())] {
        let answer = peers.send(1, 3, request, PEER_TIMEOUT).await;
        assert!(
            matches!(
                answer,
                Err(Error::WrongNode {
                    asked: 3,
                    answered: 2
                })
            ),
            "a {what} for node 3 was answered by node 2: {answer:?}"
        );
    }
    match peers.send(1, 2, ping(), PEER_TIMEOUT).await {
        Ok(PeerResponse::Admin(AdminReply::Groups { node, groups, .. })) => {
            assert_eq!(node, 2, "a ping answer names the node answering");
            assert_eq!(
                groups.len(),
                2,
                "node 2 runs the manager's group and shard 0"
            );
        }
        other => panic!("node 2 answers a ping for itself: {other:?}"),
    }
    assert!(
        peers.send(1, 2, vote(), PEER_TIMEOUT).await.is_ok(),
        "a vote for node 2 is answered (refused by Raft, not by the address check)"
    );
    served.stop().await;
    cluster.shutdown().await.expect("shutdown");
}

/// A client that holds cluster A's map reaches a node of cluster B at a reused address: it
/// gets an error naming the clusters, and nothing is written into B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_one_cluster_never_writes_into_another_at_a_reused_address() {
    let (a, b) = (three_nodes_led(2).await, three_nodes_led(2).await);
    // Three consecutive free ports, served by A, then taken over by B.
    let first = (20_000u16..60_000)
        .step_by(7)
        .find(|p| (0..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()))
        .expect("three free ports");
    let served_a = scalestore_server::serve::serve_embedded_on(&a, "127.0.0.1", first)
        .await
        .expect("serve a");
    let options = ClientOptions {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let client = scalestore_server::connect(&served_a.endpoints()[..1], options)
        .await
        .expect("connect");
    client.put("before", "a").await.expect("put into a");
    let addresses = served_a.addresses();
    served_a.stop().await;
    let mut served_b = None;
    for _ in 0..50 {
        match scalestore_server::serve::serve_embedded_on(&b, "127.0.0.1", first).await {
            Ok(s) => {
                served_b = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let served_b = served_b.expect("serve b at a's addresses");
    assert_eq!(served_b.addresses(), addresses, "b took over a's addresses");
    let refused = client.put("intruder", "from a").await;
    let e = refused.expect_err("a write through A's map into B's nodes is refused");
    assert!(
        e.to_string().contains(b.cluster_id()) && e.to_string().contains(a.cluster_id()),
        "the error names both clusters: {e}"
    );
    assert_eq!(
        b.client().get("intruder").await.expect("read b"),
        None,
        "nothing was written into cluster B"
    );
    served_b.stop().await;
    a.shutdown().await.expect("shutdown a");
    b.shutdown().await.expect("shutdown b");
}

/// A peer call's deadline is its caller's: an admin request that takes 7 s to handle (a voter
/// change held at the leader), sent with a 20 s deadline, gets its answer. A fixed 5 s reply
/// timeout used to cut every such call on both sides, whatever the caller allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_call_waits_as_long_as_its_caller_allows_not_a_fixed_five_seconds() {
    use scalestore::network::{AdminReply, AdminRequest, PeerRequest, PeerResponse, PeerTransport};

    let cluster = three_nodes_led(1).await;
    let leader = cluster
        .wait_for_leader(0, Duration::from_secs(30))
        .await
        .expect("leader");
    let served = scalestore_server::serve_embedded(&cluster, "127.0.0.1")
        .await
        .expect("serve");
    let caller = (1..=3).find(|n| *n != leader).expect("another node");
    let peers = scalestore_server::peer::GrpcPeers::new(
        caller,
        cluster.cluster_id(),
        served.addresses().into_iter().collect(),
        0,
        None,
    );
    let failpoints = cluster.failpoints().clone();
    failpoints.hold_next_voter_change();
    let releaser = tokio::spawn(async move {
        while !failpoints.is_holding() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(7)).await;
        failpoints.release();
    });
    let started = std::time::Instant::now();
    let answer = peers
        .send(
            caller,
            leader,
            PeerRequest::Admin(AdminRequest::ChangeVoters {
                group: 0,
                voters: vec![1, 2, 3],
                fence: None,
            }),
            Duration::from_secs(20),
        )
        .await;
    assert!(
        matches!(answer, Ok(PeerResponse::Admin(AdminReply::Done))),
        "answered after {:?}: {answer:?}",
        started.elapsed()
    );
    assert!(started.elapsed() >= Duration::from_secs(7));
    releaser.await.expect("releaser");
    served.stop().await;
    cluster.shutdown().await.expect("shutdown");
}
