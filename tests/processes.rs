//! Clusters of real `scalestore-server` processes on loopback, driven by the `scalestore` CLI, the
//! Rust client over gRPC, and plain generated gRPC stubs. Faults are real: kill -9, SIGSTOP and
//! SIGCONT, SIGTERM; every test checks the data, and the fault tests check the recorded history
//! with the linearizability checker.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use scalestore::ClientOptions;
use scalestore_server::proto;
use scalestore_server::proto::internal_client::InternalClient;
use scalestore_server::proto::kv_client::KvClient;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_round_trips_against_three_server_processes() {
    let p = Processes::start(3, 4).await;
    let e = p.addresses[&2].clone();
    let run = |args: &[&str]| {
        let mut all = vec!["--endpoints", e.as_str()];
        all.extend_from_slice(args);
        cli(&all)
    };
    let put = run(&["put", "greeting", "hello"]);
    assert!(put.status.success(), "{put:?}");
    let get = run(&["get", "greeting"]);
    assert_eq!(stdout(&get), "hello\n", "get prints the value alone");
    assert_eq!(stdout(&run(&["append", "greeting", " world"])), "11\n");
    // A stale read may be behind, but only ever shows a value the key had.
    let stale = stdout(&run(&["get", "greeting", "--stale"]));
    assert!(
        matches!(stale.as_str(), "hello\n" | "hello world\n"),
        "{stale:?}"
    );
    assert_eq!(
        stdout(&run(&["get", "greeting", "--lease"])),
        "hello world\n"
    );
    assert_eq!(
        stdout(&run(&["cas", "greeting", "hello world", "bye"])),
        "true\n"
    );
    let lost = run(&["cas", "greeting", "hello world", "again"]);
    assert_eq!(
        (stdout(&lost).as_str(), lost.status.code()),
        ("false\n", Some(1))
    );
    assert_eq!(stdout(&run(&["cas", "fresh", "--absent", "new"])), "true\n");
    // --hex: keys and values both in hex ("6b6579" is "key").
    assert_eq!(stdout(&run(&["put", "6b6579", "00ff", "--hex"])), "");
    assert_eq!(stdout(&run(&["get", "6b6579", "--hex"])), "00ff\n");
    assert_eq!(
        stdout(&run(&["get", "key", "--hex"])),
        "",
        "not hex: refused"
    );
    let file = p.dir.path().join("value.txt");
    std::fs::write(&file, "from a file").expect("write");
    assert!(
        run(&["put", "filed", "--file", file.to_str().expect("path")])
            .status
            .success()
    );
    assert_eq!(stdout(&run(&["get", "filed"])), "from a file\n");
    for i in 0..5 {
        assert!(run(&["put", &format!("scan-{i}"), &i.to_string()])
            .status
            .success());
    }
    assert_eq!(
        stdout(&run(&["scan", "--prefix", "scan-", "--limit", "3"])),
        "scan-0\t0\nscan-1\t1\nscan-2\t2\n"
    );
    assert_eq!(
        stdout(&run(&["scan", "--start", "scan-3", "--end", "scan-5"])),
        "scan-3\t3\nscan-4\t4\n"
    );
    assert_eq!(stdout(&run(&["delete", "scan-0"])), "true\n");
    assert_eq!(stdout(&run(&["delete", "scan-0"])), "false\n");
    let missing = run(&["get", "scan-0"]);
    assert_eq!(
        (stdout(&missing).as_str(), missing.status.code()),
        ("", Some(1))
    );
    let json = stdout(&run(&["--json", "get", "greeting"]));
    assert_eq!(json.trim(), r#"{"found":true,"value":"bye"}"#);
    let status = stdout(&run(&["status"]));
    for id in 1..=3 {
        assert!(status.contains(&p.addresses[&id]), "{status}");
    }
    assert!(status.contains("SHARD"), "{status}");
    let events = stdout(&run(&["events"]));
    assert!(events.contains("leader_changed"), "{events}");
    // Exit codes a script relies on.
    let unreachable = cli(&["--endpoints", "127.0.0.1:1", "--timeout", "1", "get", "x"]);
    assert_eq!(unreachable.status.code(), Some(2), "{unreachable:?}");
    assert_eq!(
        cli(&["--endpoints", "nonsense", "get", "x"]).status.code(),
        Some(64)
    );
    assert_eq!(cli(&["frobnicate"]).status.code(), Some(64));
    assert_eq!(cli(&["get"]).status.code(), Some(64));
    assert!(cli(&["put", "--help"]).status.success());
}

/// Writers on 16 keys (appends and reads) through the Rust gRPC client while `fault` runs;
/// then every acknowledged append must be in its key's final value exactly once, and the whole
/// history must be linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_shard_leader_loses_no_acknowledged_write_and_the_node_catches_up_after_restart(
) {
    let p = Processes::start(3, 2).await;
    let leader = leader_of_first_key(&p).await;
    writers_survive(&p, async {
        p.kill9(leader);
        // Writes go on without it, then it comes back with its original command line.
        tokio::time::sleep(Duration::from_secs(2)).await;
        p.restart(leader);
    })
    .await;
    p.client()
        .await
        .put("after", "restart")
        .await
        .expect("write");
    wait_for_value_on(&p, leader, "after", "restart").await;
}

/// A node whose every WAL sync sleeps 30 ms first (armed through `SCALESTORE_FAILPOINTS`, so
/// its groups queue and apply ahead of what is on disk) is killed -9 under load: it boots again
/// with every group, no acknowledged write is lost, the history is linearizable, and it
/// catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_slow_fsyncs_killed_under_load_boots_and_loses_no_acknowledged_write() {
    use scalestore_server::process::FAILPOINTS_ENV;
    const SLOW: u64 = 1;
    let slow_syncs = [(FAILPOINTS_ENV, "slow_syncs=30")];
    let p = Processes::prepare(3, 2, &[]);
    p.restart_with_env(SLOW, &slow_syncs);
    p.restart(2);
    p.restart(3);
    p.wait_all_led().await;
    let armed = |log: &str| log.matches("failpoint armed").count();
    assert_eq!(armed(&p.log(SLOW)), 1, "{}", p.log(SLOW));
    assert_eq!(armed(&p.log(2)), 0, "only the slow node is slowed");
    writers_survive(&p, async {
        p.kill9(SLOW);
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Restarted on the same slow disk: a reboot does not make a disk faster, and recovery
        // and catch-up are then slowed as well.
        p.restart_with_env(SLOW, &slow_syncs);
    })
    .await;
    p.client()
        .await
        .put("after", "restart")
        .await
        .expect("write");
    wait_for_value_on(&p, SLOW, "after", "restart").await;
    let log = p.log(SLOW);
    assert_eq!(armed(&log), 2, "both boots ran with slow syncs: {log}");
    assert!(!log.contains("could not start"), "{log}");
    let status = p.wait_led(SLOW).await;
    let reported = status
        .nodes
        .iter()
        .find(|n| n.id == SLOW)
        .expect("the slow node in the status");
    assert!(reported.up, "{status:?}");
    assert!(reported.unstartable.is_empty(), "{status:?}");
    let (_, scrape) = p.http_get(SLOW, "/metrics");
    assert_eq!(
        sample(&scrape, "scalestore_groups_unstartable"),
        Some(0.0),
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_a_shard_leader_loses_no_acknowledged_write() {
    let p = Processes::start(3, 2).await;
    let leader = leader_of_first_key(&p).await;
    writers_survive(&p, async {
        p.signal(leader, "-STOP");
        tokio::time::sleep(Duration::from_secs(3)).await;
        p.signal(leader, "-CONT");
    })
    .await;
    p.client().await.put("after", "cont").await.expect("write");
    wait_for_value_on(&p, leader, "after", "cont").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leaderships_off_and_loses_nothing() {
    let p = Processes::start(3, 4).await;
    let leader = leader_of_first_key(&p).await;
    writers_survive(&p, async {
        let exit = p.terminate(leader);
        assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
    })
    .await;
    let log = p.log(leader);
    assert!(log.contains("handing leaderships off"), "{log}");
    assert!(!log.contains("stopping while still leading"), "{log}");
    let other = p
        .addresses
        .keys()
        .copied()
        .find(|n| *n != leader)
        .expect("other");
    let status = p.wait_led(other).await;
    assert!(
        status.shards.iter().all(|s| s.leader != Some(leader)),
        "no shard is led by the stopped node: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_process_joins_and_receives_replicas_then_leaves_and_its_replicas_move() {
    // Snapshots every 20 entries and no log kept behind them: the new replicas can only come by
    // snapshot, streamed in chunks over the peer streams.
    let mut p = Processes::start_with(
        3,
        4,
        &["--snapshot-every", "20", "--log-kept-behind-snapshot", "0"],
    )
    .await;
    let client = p.client().await;
    for i in 0..200 {
        client
            .put(format!("k{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    p.join(4).await;
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = p.status(1).await {
            let four = s.nodes.iter().find(|n| n.id == 4);
            let settled = s
                .shards
                .iter()
                .all(|h| h.leader.is_some() && h.replicas.len() == 3);
            if four.is_some_and(|n| n.shards.len() == 3) && settled {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 4 got its replicas; log: {}",
            p.log(4)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Node 4 holds the data of the shards it now replicates.
    let map = client.refresh_map().await.expect("map");
    let on_four: Vec<u64> = map.shards_on(4);
    for i in 0..200 {
        let key = format!("k{i}");
        if on_four.contains(&map.shard_of(key.as_bytes())) {
            wait_for_value_on(&p, 4, &key, &format!("v{i}")).await;
        }
    }
    // Restarted without --join, a joined node resumes from its data dir.
    assert!(p.terminate(4).success());
    let args: Vec<String> = p.args.lock().expect("lock")[&4].clone();
    let at = args.iter().position(|a| a == "--join").expect("--join");
    let resumed: Vec<String> = args[..at].iter().chain(&args[at + 2..]).cloned().collect();
    p.spawn(4, resumed);
    let (key, value) = (0..200)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .find(|(k, _)| on_four.contains(&map.shard_of(k.as_bytes())))
        .expect("a key on node 4");
    wait_for_value_on(&p, 4, &key, &value).await;
    let removed = cli(&[
        "--endpoints",
        &p.endpoints(),
        "remove-node",
        "4",
        "--wait",
        "60",
    ]);
    assert!(removed.status.success(), "{removed:?}");
    let s = p.wait_led(1).await;
    assert!(s.nodes.iter().all(|n| n.id != 4), "{s:?}");
    assert!(s.shards.iter().all(|h| !h.replicas.contains(&4)), "{s:?}");
    let fresh = p.client().await;
    for i in 0..200 {
        assert_eq!(
            fresh.get(format!("k{i}")).await.expect("get"),
            Some(format!("v{i}").into_bytes())
        );
    }
}

/// Moving replicas of shards whose snapshots take longer than 5 s to send (8 MB each at
/// 1 MiB/s): the manager's catch-up wait (60 s) and the snapshot's install follow their
/// callers' deadlines, so no attempt is cut short and none is rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_of_a_large_shard_over_a_slow_link_finish_without_rollback() {
    let mut p = Processes::start_with(
        3,
        4,
        &[
            "--snapshot-rate-mib",
            "1",
            "--snapshot-every",
            "20",
            "--log-kept-behind-snapshot",
            "0",
        ],
    )
    .await;
    let client = p.client().await;
    let value = vec![b'x'; 512 * 1024];
    // Every shard large (node 4 takes a replica of three of them, at least one led by a node
    // other than the manager's leader, so the catch-up wait crosses the network).
    const LARGE: usize = 8 * 1024 * 1024;
    let mut bytes = [0usize; 4];
    let mut i = 0;
    while bytes.iter().any(|b| *b < LARGE) {
        let key = format!("big-{i}");
        let shard = client.shard_of(&key).await.expect("shard") as usize;
        if bytes[shard] < LARGE {
            client.put(&key, &value).await.expect("put");
            bytes[shard] += value.len();
        }
        i += 1;
    }
    // Small writes after the big ones, so each shard's next snapshot covers all of them and its
    // log is purged behind it: a new replica can only catch up by snapshot.
    for j in 0..400 {
        client.put(format!("small-{j}"), "s").await.expect("put");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    p.join(4).await;
    // Settled: node 4 holds a replica, and every move that started has finished.
    let deadline = Instant::now() + Duration::from_secs(300);
    let events = loop {
        let listed = stdout(&cli(&["--endpoints", &p.endpoints(), "events"]));
        let count = |kind: &str| listed.lines().filter(|l| l.contains(kind)).count();
        let (started, finished) = (count("\tmove_started\t"), count("\tmove_finished\t"));
        if let Some(s) = p.status(1).await {
            let four = s.nodes.iter().find(|n| n.id == 4);
            let settled = s
                .shards
                .iter()
                .all(|h| h.leader.is_some() && h.replicas.len() == 3);
            if four.is_some_and(|n| !n.shards.is_empty())
                && settled
                && started > 0
                && finished >= started
            {
                break listed;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node 4 got a replica and the moves finished; events: {listed}; log: {}",
            p.log(4)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!events.contains("move_rolled_back"), "{events}");
    // No attempt was cut by a deadline shorter than its caller's (the catch-up wait, the
    // snapshot's install).
    let cut: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("move_attempt_failed"))
        .filter(|l| l.contains("within") || l.contains("timed out"))
        .collect();
    assert!(cut.is_empty(), "move attempts cut short: {cut:#?}");
    // The new replica holds the data: a stale read pinned to node 4 finds a big key.
    let map = client.refresh_map().await.expect("map");
    let on_four = map.shards_on(4);
    let key = (0..i)
        .map(|i| format!("big-{i}"))
        .find(|k| on_four.contains(&map.shard_of(k.as_bytes())))
        .expect("a key on node 4");
    let pinned = client.pinned_to(4).expect("pin");
    let deadline = Instant::now() + WAIT;
    loop {
        let got = pinned
            .get_with(&key, scalestore::ReadConsistency::Stale)
            .await;
        if matches!(&got, Ok(Some(v)) if v.len() == value.len()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 never served {key}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new cluster whose first member never starts still forms: any initial voter of a group
/// initializes it once the first replica has had its chance, so every shard (and the manager's
/// group) gets a leader from the two members that did start, and writes commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_forms_without_its_first_member() {
    let p = Processes::prepare(3, 2, &[]);
    p.restart(2);
    p.restart(3);
    p.wait_led(2).await;
    let endpoints = format!("{},{}", p.addresses[&2], p.addresses[&3]);
    for i in 0..10 {
        let put = cli(&[
            "--endpoints",
            &endpoints,
            "put",
            &format!("k{i}"),
            &format!("v{i}"),
        ]);
        assert!(put.status.success(), "{put:?}");
    }
    // The first member starts late and catches up.
    p.restart(1);
    for i in 0..10 {
        wait_for_value_on(&p, 1, &format!("k{i}"), &format!("v{i}")).await;
    }
}

/// The README's replace flow with the dead host's address reused: node 3 is killed and removed,
/// and node 7 joins at node 3's old address while writers run. Whatever is still addressed to
/// node 3 reaches node 7 and is refused, so the history stays linearizable, every acknowledged
/// write reads back, every shard ends with 3 replicas and a leader, and node 7 keeps the
/// replicas it was given. A join refused while node 3 still held the address exits cleanly
/// (code 64) without announcing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_at_a_removed_nodes_address_is_never_taken_for_it() {
    let p = Processes::start(4, 4).await;
    let reused = p.addresses[&3].clone();
    let join_args = |id: u64| -> Vec<String> {
        vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            reused.clone(),
            "--data-dir".into(),
            p.data_dir(id).display().to_string(),
            "--join".into(),
            p.addresses[&1].clone(),
        ]
    };
    writers_survive(&p, async {
        p.kill9(3);
        // Node 3 is still a member: a join at its address is refused, cleanly.
        let early = Command::new(SERVER)
            .args(join_args(6))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&early.stderr);
        assert_eq!(early.status.code(), Some(64), "{stderr}");
        assert!(
            !stderr.contains("serving"),
            "a refused node announced itself: {stderr}"
        );
        let others = [1u64, 2, 4]
            .iter()
            .map(|i| p.addresses[i].clone())
            .collect::<Vec<_>>()
            .join(",");
        let removed = cli(&["--endpoints", &others, "remove-node", "3", "--wait", "120"]);
        assert!(removed.status.success(), "{removed:?}");
        p.spawn(7, join_args(7));
        let what = "node 7 with replicas, every shard led with 3 replicas none on node 3";
        p.wait_for_status(1, Duration::from_secs(120), what, |s| {
            let seven = s.nodes.iter().find(|n| n.id == 7);
            let settled = s
                .shards
                .iter()
                .all(|h| h.leader.is_some() && h.replicas.len() == 3 && !h.replicas.contains(&3));
            seven.is_some_and(|n| !n.shards.is_empty()) && settled
        })
        .await;
    })
    .await;
    // Settled some more: node 7 keeps its replicas, and each holds the data.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = p.wait_led(1).await;
    let on_seven: Vec<u64> = s
        .shards
        .iter()
        .filter(|h| h.replicas.contains(&7))
        .map(|h| h.id)
        .collect();
    assert!(!on_seven.is_empty(), "node 7 lost its replicas: {s:?}");
    assert!(
        s.shards
            .iter()
            .all(|h| h.leader.is_some() && h.replicas.len() == 3),
        "{s:?}"
    );
    let client = p.client().await;
    let map = client.refresh_map().await.expect("map");
    for shard in on_seven {
        let key = (0..10_000)
            .map(|i| format!("seven-{i}"))
            .find(|k| map.shard_of(k.as_bytes()) == shard)
            .expect("a key of the shard");
        client.put(&key, "here").await.expect("put");
        wait_for_value_on(&p, 7, &key, "here").await;
    }
    let log = p.log(7);
    assert!(log.contains("serving"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_grpc_client_on_a_follower_gets_correct_answers_for_every_kv_call() {
    let p = Processes::start(3, 4).await;
    let client = p.client().await;
    let shard = client.shard_of("plain").await.expect("shard");
    let leader = p.wait_led(1).await.shards[shard as usize]
        .leader
        .expect("leader");
    let follower = p
        .addresses
        .keys()
        .copied()
        .find(|n| *n != leader)
        .expect("follower");
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", p.addresses[&follower]))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    let mut kv = KvClient::new(channel);
    use proto::*;
    kv.put(PutRequest {
        key: b"plain".to_vec(),
        value: b"one".to_vec(),
    })
    .await
    .expect("put");
    for consistency in [Consistency::Linearizable, Consistency::Lease] {
        let got = kv
            .get(GetRequest {
                key: b"plain".to_vec(),
                consistency: consistency as i32,
            })
            .await
            .expect("get")
            .into_inner();
        assert!(got.found && got.value == b"one", "{consistency:?}: {got:?}");
    }
    let length = kv
        .append(AppendRequest {
            key: b"plain".to_vec(),
            value: b"+two".to_vec(),
        })
        .await
        .expect("append")
        .into_inner()
        .length;
    assert_eq!(length, 7);
    let swapped = kv
        .compare_and_swap(CompareAndSwapRequest {
            key: b"plain".to_vec(),
            expected: Some(b"one+two".to_vec()),
            new_value: b"three".to_vec(),
        })
        .await
        .expect("cas")
        .into_inner();
    assert!(swapped.swapped);
    let refused = kv
        .compare_and_swap(CompareAndSwapRequest {
            key: b"plain".to_vec(),
            expected: None,
            new_value: b"x".to_vec(),
        })
        .await
        .expect("cas")
        .into_inner();
    assert!(!refused.swapped);
    assert_eq!(refused.current.as_deref(), Some(b"three".as_slice()));
    let items: Vec<KeyValue> = (0..25)
        .map(|i| KeyValue {
            key: format!("page-{i:02}").into_bytes(),
            value: vec![b'v'; i],
        })
        .collect();
    kv.batch_put(BatchPutRequest {
        items: items.clone(),
    })
    .await
    .expect("batch put");
    let mut scanned = Vec::new();
    let mut start = b"page-".to_vec();
    loop {
        let page = kv
            .scan(ScanRequest {
                start: start.clone(),
                end: Some(b"page.".to_vec()),
                prefix: Vec::new(),
                limit: 10,
                consistency: Consistency::Linearizable as i32,
            })
            .await
            .expect("scan")
            .into_inner();
        assert!(page.items.len() <= 10);
        scanned.extend(page.items);
        if !page.more {
            break;
        }
        start = page.next_start;
    }
    assert_eq!(
        scanned, items,
        "every pair once, in key order, across pages"
    );
    let got = kv
        .batch_get(BatchGetRequest {
            keys: vec![b"page-03".to_vec(), b"absent".to_vec(), b"plain".to_vec()],
            consistency: Consistency::Linearizable as i32,
        })
        .await
        .expect("batch get")
        .into_inner()
        .values;
    assert_eq!(got.len(), 3);
    assert!(got[0].found && got[0].value == b"vvv");
    assert!(!got[1].found);
    assert!(got[2].found && got[2].value == b"three");
    let deleted = kv
        .delete(DeleteRequest {
            key: b"plain".to_vec(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.existed);
    let gone = kv
        .get(GetRequest {
            key: b"plain".to_vec(),
            consistency: Consistency::Linearizable as i32,
        })
        .await
        .expect("get")
        .into_inner();
    assert!(!gone.found);
    // The Rust client sees the same data.
    assert_eq!(
        client.get("page-24").await.expect("get"),
        Some(vec![b'v'; 24])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    use prost::Message as _;
    use scalestore::protocol::{ClientRequest, ClientResponse};
    let p = Processes::start(3, 2).await;
    let client = p.client().await;
    client.put("keep", "me").await.expect("put");
    let channel = scalestore_server::peer::channel(&p.addresses[&1]).expect("channel");
    // An oversized value: INVALID_ARGUMENT with the structured error, nothing written.
    let mut kv = KvClient::new(channel.clone());
    let big = kv
        .put(proto::PutRequest {
            key: b"big".to_vec(),
            value: vec![0; 1024 * 1024 + 1],
        })
        .await
        .expect_err("refused");
    assert_eq!(big.code(), tonic::Code::InvalidArgument, "{big:?}");
    let detail = proto::Error::decode(big.details()).expect("structured error");
    assert!(
        matches!(detail.kind, Some(proto::error::Kind::InvalidArgument(_))),
        "{detail:?}"
    );
    assert_eq!(client.get("big").await.expect("get"), None);
    // A raw write aimed at the manager's group (which holds the cluster map).
    let mut internal = InternalClient::new(channel);
    let raw = ClientRequest::Write {
        group: scalestore::META_GROUP,
        command: scalestore::Command::Put {
            key: b"cluster-map".to_vec(),
            value: b"{}".to_vec(),
        },
        session: None,
    };
    let reply = internal
        .client(proto::ClientCall {
            request: scalestore_server::peer::encode(&raw),
            forward: true,
            node: None,
        })
        .await
        .expect("call")
        .into_inner();
    let result: scalestore::Result<ClientResponse> =
        scalestore_server::peer::decode(&reply.result).expect("decode");
    assert!(
        matches!(result, Err(scalestore::Error::InvalidArgument(_))),
        "{result:?}"
    );
    // Unknown node ids, malformed endpoints and flags.
    let unknown = cli(&["--endpoints", &p.endpoints(), "remove-node", "99"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("unknown node 99"),
        "{unknown:?}"
    );
    let usage = Command::new(SERVER)
        .args(["--id", "x"])
        .output()
        .expect("run");
    assert_eq!(usage.status.code(), Some(64));
    let no_port = Command::new(SERVER)
        .args([
            "--id",
            "5",
            "--listen",
            "127.0.0.1",
            "--data-dir",
            "/tmp/never",
        ])
        .output()
        .expect("run");
    assert_eq!(no_port.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&no_port.stderr).contains("no port"),
        "{no_port:?}"
    );
    // Another node's data dir: refused before anything is opened.
    let foreign = Command::new(SERVER)
        .args([
            "--id",
            "1",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--data-dir")
        .arg(p.data_dir(2))
        .output()
        .expect("run");
    assert_eq!(foreign.status.code(), Some(64), "{foreign:?}");
    assert!(
        String::from_utf8_lossy(&foreign.stderr).contains("node 2's data"),
        "{foreign:?}"
    );
    // A dir that is not a ScaleStore data dir.
    let stranger = p.dir.path().join("stranger");
    std::fs::create_dir_all(&stranger).expect("dir");
    std::fs::write(stranger.join("notes.txt"), "mine").expect("write");
    let refused = Command::new(SERVER)
        .args([
            "--id",
            "7",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--join",
            &p.addresses[&1],
        ])
        .arg("--data-dir")
        .arg(&stranger)
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(64), "{refused:?}");
    assert_eq!(
        std::fs::read_to_string(stranger.join("notes.txt")).expect("kept"),
        "mine"
    );
    assert_eq!(client.get("keep").await.expect("get"), Some(b"me".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_in_flight_cap_answers_busy_with_a_backoff_and_applies_nothing_it_refused()
{
    let p = Processes::start_with(3, 2, &["--max-in-flight", "2"]).await;
    let channel = scalestore_server::peer::channel(&p.addresses[&1]).expect("channel");
    let puts = (0..64).map(|i| {
        let mut kv = KvClient::new(channel.clone());
        async move {
            let r = kv
                .put(proto::PutRequest {
                    key: format!("busy-{i}").into_bytes(),
                    value: b"v".to_vec(),
                })
                .await;
            (i, r)
        }
    });
    let results = futures::future::join_all(puts).await;
    let client = p.client().await;
    let mut busy = 0;
    for (i, r) in results {
        let stored = client.get(format!("busy-{i}")).await.expect("get");
        match r {
            Ok(_) => assert_eq!(stored, Some(b"v".to_vec()), "acknowledged busy-{i}"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                use prost::Message as _;
                let detail = proto::Error::decode(status.details()).expect("details");
                assert!(
                    matches!(detail.kind, Some(proto::error::Kind::Busy(b)) if b.backoff_ms > 0),
                    "{detail:?}"
                );
                assert_eq!(stored, None, "a refused write was not applied: busy-{i}");
                busy += 1;
            }
        }
    }
    assert!(busy > 0, "64 concurrent writes over a cap of 2 met Busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_with_contradicting_bootstrap_flags_is_refused_and_agreeing_ones_resume() {
    let p = Processes::start(3, 2).await;
    p.client().await.put("stays", "put").await.expect("put");
    p.terminate(3);
    let args = p.args.lock().expect("lock")[&3].clone();
    let contradicting: Vec<String> = args
        .iter()
        .map(|a| if a == "2" { "4".to_string() } else { a.clone() })
        .collect();
    let refused = Command::new(SERVER)
        .args(&contradicting)
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(64), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("differ"),
        "{refused:?}"
    );
    p.restart(3);
    wait_for_value_on(&p, 3, "stays", "put").await;
}

/// One group on a node's disk that cannot start (group 1's state machine made to hold an entry
/// its log never had, so openraft refuses it) keeps only that group down: the process starts
/// and serves its other group, `status` (text and JSON) and `/metrics` report the group, and
/// both shards keep their data and take writes (the other replicas serve shard 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_cannot_start_is_reported_by_status_and_metrics_across_processes() {
    use futures::stream;
    use openraft::storage::RaftStateMachine;
    use scalestore::storage::identity::{Identity, IDENTITY_FILE};
    use scalestore::storage::NodeStore;
    use scalestore::types::TypeConfig;
    use std::sync::atomic::Ordering;

    let p = Processes::start(3, 2).await;
    let client = p.client().await;
    let mut keys = [None, None];
    for i in 0.. {
        let key = format!("key-{i}");
        let shard = client.shard_of(&key).await.expect("shard") as usize;
        keys[shard].get_or_insert(key);
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(key0), Some(key1)] = keys else {
        unreachable!("a key in each shard")
    };
    client.put(&key0, "zero").await.expect("put");
    client.put(&key1, "one").await.expect("put");

    const VICTIM: u64 = 2;
    assert!(p.terminate(VICTIM).success());
    {
        // The server keeps its node's store in `<data dir>/node`, claimed for the cluster id
        // written in its identity file.
        let dir = p.data_dir(VICTIM).join("node");
        let identity: Identity =
            serde_json::from_slice(&std::fs::read(dir.join(IDENTITY_FILE)).expect("identity file"))
                .expect("identity");
        assert_eq!(identity.node_id, VICTIM);
        let store = NodeStore::open(
            &dir,
            &Identity::new(&identity.cluster_id, VICTIM),
            scalestore::StorageOptions::default(),
        )
        .expect("open");
        let mut sm = store.state_machine(1, 60_000).expect("sm");
        let alien = openraft::testing::blank_ent::<TypeConfig>(999, VICTIM, 1);
        sm.apply(stream::iter([Ok((alien, None))]))
            .await
            .expect("apply");
        let closed = store.closed();
        drop((sm, store));
        while !closed.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    p.restart(VICTIM);

    let reported_by_victim = |s: &proto::StatusResponse| {
        s.nodes
            .iter()
            .any(|n| n.id == VICTIM && n.up && n.unstartable == [1])
    };
    p.wait_for_status(1, WAIT, "node 2's group 1 unstartable", reported_by_victim)
        .await;
    let endpoints = p.endpoints();
    let text = stdout(&cli(&["--endpoints", &endpoints, "status"]));
    assert!(
        text.contains("node 2: groups that could not start (see its log): 1\n"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&cli(&[
        "--endpoints",
        &endpoints,
        "--json",
        "status",
    ])))
    .expect("status as JSON");
    let nodes = json["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{json}");
    for node in nodes {
        let expected = if node["id"] == VICTIM {
            serde_json::json!([1])
        } else {
            serde_json::json!([])
        };
        assert_eq!(node["unstartable"], expected, "{json}");
    }
    for id in 1..=3 {
        let (code, scrape) = p.http_get(id, "/metrics");
        assert_eq!(code, 200, "{scrape}");
        let expected = if id == VICTIM { 1.0 } else { 0.0 };
        assert_eq!(
            sample(&scrape, "scalestore_groups_unstartable"),
            Some(expected),
            "node {id}: {scrape}"
        );
    }
    let log = p.log(VICTIM);
    assert!(log.contains("group could not start"), "{log}");
    let events = stdout(&cli(&["--endpoints", &endpoints, "events"]));
    assert!(
        events
            .lines()
            .any(|l| l.contains("group_unstartable") && l.contains("group 1 on node 2")),
        "{events}"
    );

    // Both shards keep their data and take writes; the victim's healthy group follows them.
    let client = p.client().await;
    assert_eq!(
        client.get(&key0).await.expect("get"),
        Some(b"zero".to_vec())
    );
    assert_eq!(client.get(&key1).await.expect("get"), Some(b"one".to_vec()));
    client.put(&key0, "zero again").await.expect("put");
    client.put(&key1, "one again").await.expect("put");
    assert_eq!(
        client.get(&key0).await.expect("get"),
        Some(b"zero again".to_vec())
    );
    assert_eq!(
        client.get(&key1).await.expect("get"),
        Some(b"one again".to_vec())
    );
    wait_for_value_on(&p, VICTIM, &key0, "zero again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_n_puts_counts_them_and_fills_the_latency_histograms() {
    let p = Processes::start_with(3, 2, &["--log-format", "json"]).await;
    let log = p.log(1);
    let first = log.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "--log-format json writes JSON lines: {first}"
    );
    let channel = scalestore_server::peer::channel(&p.addresses[&1]).expect("channel");
    let mut kv = KvClient::new(channel);
    const N: u64 = 50;
    for i in 0..N {
        kv.put(proto::PutRequest {
            key: format!("m-{i}").into_bytes(),
            value: b"v".to_vec(),
        })
        .await
        .expect("put");
    }
    let (code, scrape) = p.http_get(1, "/metrics");
    assert_eq!(code, 200, "{scrape}");
    let puts = sample(
        &scrape,
        r#"scalestore_requests_total{op="put",outcome="ok"}"#,
    )
    .expect("put count");
    assert!(puts >= N as f64, "{puts} puts counted");
    let timed = sample(
        &scrape,
        r#"scalestore_request_duration_seconds_count{op="put",outcome="ok"}"#,
    )
    .expect("latency histogram");
    assert!(timed >= N as f64);
    let within_a_second = sample(
        &scrape,
        r#"scalestore_request_duration_seconds_bucket{op="put",outcome="ok",le="1"}"#,
    )
    .expect("bucket");
    assert!(
        within_a_second > 0.0,
        "the histogram has samples in its buckets"
    );
    assert!(sample(&scrape, "scalestore_fsync_duration_seconds_count").expect("fsyncs") > 0.0);
    assert!(sample(&scrape, "scalestore_log_appends_total").expect("appends") > 0.0);
    assert!(
        scrape.contains(r#"scalestore_shard_term{shard="0"}"#),
        "{scrape}"
    );
    assert!(scrape.contains("scalestore_leaders_held"), "{scrape}");
    assert!(
        scrape.contains("scalestore_peer_stream_connects_total"),
        "{scrape}"
    );
    let refused = kv
        .put(proto::PutRequest {
            key: Vec::new(),
            value: b"v".to_vec(),
        })
        .await;
    assert!(refused.is_err());
    let (_, scrape) = p.http_get(1, "/metrics");
    assert!(
        sample(
            &scrape,
            r#"scalestore_requests_total{op="put",outcome="invalid_argument"}"#
        ) >= Some(1.0),
        "failed requests are counted by cause"
    );
}

/// The CLI, the Rust client and both SDKs reach leaders through the internal client door, not
/// the public KV service: their requests are counted all the same, on the nodes that serve them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_the_cli_and_the_rust_client_are_counted_by_the_nodes_serving_them() {
    let p = Processes::start(3, 2).await;
    let total = |op: &str| -> f64 {
        (1..=3)
            .map(|id| {
                let (_, scrape) = p.http_get(id, "/metrics");
                sample(
                    &scrape,
                    &format!(r#"scalestore_requests_total{{op="{op}",outcome="ok"}}"#),
                )
                .unwrap_or(0.0)
            })
            .sum()
    };
    let endpoints = p.endpoints();
    for i in 0..5 {
        let put = cli(&["--endpoints", &endpoints, "put", &format!("cli-{i}"), "v"]);
        assert!(put.status.success(), "{put:?}");
    }
    let got = cli(&["--endpoints", &endpoints, "get", "cli-0"]);
    assert_eq!(stdout(&got).trim(), "v", "{got:?}");
    assert!(total("put") >= 5.0, "5 CLI puts counted: {}", total("put"));
    assert!(total("get") >= 1.0, "a CLI get counted");

    let client = p.client().await;
    let before = total("put");
    for i in 0..20 {
        client.put(format!("rust-{i}"), "v").await.expect("put");
    }
    client
        .batch_get(
            &["rust-0", "rust-1"],
            scalestore::ReadConsistency::Linearizable,
        )
        .await
        .expect("batch get");
    assert!(
        total("put") >= before + 20.0,
        "20 Rust client puts counted: {} -> {}",
        before,
        total("put")
    );
    assert!(total("batch_get") >= 1.0, "a batch read counted");
    let (_, scrape) = p.http_get(1, "/metrics");
    assert!(
        scrape.contains("scalestore_request_duration_seconds_bucket{op=\"put\""),
        "latencies are observed for this door too: {scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_turns_true_only_once_every_hosted_group_has_a_leader() {
    let p = Processes::prepare(3, 2, &[]);
    p.restart(1);
    // Alive at once; not ready while it is alone (no quorum, so no leader anywhere).
    let deadline = Instant::now() + WAIT;
    while p.http_get(1, "/health").0 != 200 {
        assert!(Instant::now() < deadline, "health; log: {}", p.log(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, body) = p.http_get(1, "/ready");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not ready"), "{body}");
    p.restart(2);
    p.restart(3);
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = p.http_get(1, "/ready");
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{code} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = p.wait_led(1).await;
    assert!(status.shards.iter().all(|s| s.leader.is_some()));
}

/// Test certificates: a cluster CA that signed the nodes' certificate (for 127.0.0.1, used to
/// serve and to dial peers) and a client's; another CA that signed a stranger's.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().expect("dir");
        let write =
            |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).expect("write");
        for (ca_name, leaves) in [
            ("ca", vec![("node", true), ("client", false)]),
            ("other-ca", vec![("stranger", true)]),
            ("peer-ca", vec![("peer-node", true)]),
        ] {
            let ca_key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, ca_name);
            let ca = params.self_signed(&ca_key).expect("ca");
            write(&format!("{ca_name}.pem"), ca.pem());
            for (leaf, serves) in leaves {
                let key = KeyPair::generate().expect("key");
                let mut params =
                    CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                        .expect("params");
                params.distinguished_name.push(DnType::CommonName, leaf);
                params.extended_key_usages = if serves {
                    vec![
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ]
                } else {
                    vec![ExtendedKeyUsagePurpose::ClientAuth]
                };
                let cert = params.signed_by(&key, &ca, &ca_key).expect("sign");
                write(&format!("{leaf}.pem"), cert.pem());
                write(&format!("{leaf}.key"), key.serialize_pem());
            }
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Server flags: this cluster's node certificate and CA.
    fn node_flags(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("node.pem"),
            "--tls-key".into(),
            self.path("node.key"),
            "--tls-ca".into(),
            self.path("ca.pem"),
        ]
    }

    fn client(&self, cert: Option<&str>) -> scalestore_server::TlsFiles {
        scalestore_server::TlsFiles {
            ca: self.path("ca.pem").into(),
            cert: cert.map(|c| self.path(&format!("{c}.pem")).into()),
            key: cert.map(|c| self.path(&format!("{c}.key")).into()),
        }
    }
}

async fn start_tls(pki: &Pki, extra: &[&str]) -> Processes {
    let mut flags = pki.node_flags();
    flags.extend(extra.iter().map(|e| e.to_string()));
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut p = Processes::prepare(3, 2, &refs);
    p.tls = Some(pki.client(Some("client")));
    for i in 1..=3 {
        p.restart(i);
    }
    p.wait_all_led().await;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refuses_plaintext_and_other_cas_and_serves_a_configured_cli() {
    let pki = Pki::new();
    let p = start_tls(&pki, &[]).await;
    let endpoints = p.endpoints();
    let with = |extra: &[&str], command: &[&str]| {
        let mut args = vec!["--endpoints", endpoints.as_str(), "--timeout", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(command);
        cli(&args)
    };
    let ca = pki.path("ca.pem");
    // The CA alone (client certificates optional here), and with a client certificate.
    let put = with(&["--cacert", &ca], &["put", "secret", "kept"]);
    assert!(put.status.success(), "{put:?}");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let get = with(
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
        &["get", "secret"],
    );
    assert_eq!(stdout(&get), "kept\n", "{get:?}");
    // Plaintext is refused.
    let plain = with(&[], &["get", "secret"]);
    assert_eq!(plain.status.code(), Some(2), "{plain:?}");
    assert!(scalestore_server::connect(
        &[p.addresses[&1].clone()],
        ClientOptions {
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        }
    )
    .await
    .is_err());
    // A certificate from another CA is refused.
    let (stranger, stranger_key) = (pki.path("stranger.pem"), pki.path("stranger.key"));
    let foreign = with(
        &["--cacert", &ca, "--cert", &stranger, "--key", &stranger_key],
        &["get", "secret"],
    );
    assert!(!foreign.status.success(), "{foreign:?}");
    assert_eq!(stdout(&foreign), "");
    // A peer stream without a certificate is refused, even over TLS.
    let refused = open_peer_stream(&p, pki.client(None))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

/// Opens a peer stream to node 1 as a peer would (naming the cluster), dialing with `files`.
async fn open_peer_stream(
    p: &Processes,
    files: scalestore_server::TlsFiles,
) -> Result<(), tonic::Status> {
    let tls = scalestore_server::tls::client_config(&files).expect("tls");
    let channel =
        scalestore_server::peer::channel_with(&p.addresses[&1], Some(&tls)).expect("channel");
    let mut internal = InternalClient::new(channel);
    let mut request =
        tonic::Request::new(tokio_stream::iter(vec![proto::Frames { frames: vec![] }]));
    request.metadata_mut().insert(
        scalestore_server::peer::CLUSTER_HEADER,
        p.status(1)
            .await
            .expect("status")
            .cluster_id
            .parse()
            .expect("header"),
    );
    internal.peer(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_peer_ca_admits_node_certificates_and_keeps_client_certificates_out_of_peer_streams(
) {
    let pki = Pki::new();
    let peer_flags = [
        "--peer-tls-ca".to_string(),
        pki.path("peer-ca.pem"),
        "--peer-tls-cert".into(),
        pki.path("peer-node.pem"),
        "--peer-tls-key".into(),
        pki.path("peer-node.key"),
    ];
    let refs: Vec<&str> = peer_flags.iter().map(String::as_str).collect();
    // The nodes reach each other with the peer CA's certificates: the cluster forms and serves.
    let p = start_tls(&pki, &refs).await;
    p.client().await.put("k", "v").await.expect("write");
    // The clients' CA certificates are not nodes' certificates: a client-only one, and even one
    // valid for serving, cannot open a peer stream.
    for cert in ["client", "node"] {
        let mut files = pki.client(Some(cert));
        files.ca = pki.path("ca.pem").into();
        let refused = open_peer_stream(&p, files).await.expect_err(cert);
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }
    let mut peer = pki.client(Some("peer-node"));
    peer.ca = pki.path("ca.pem").into();
    open_peer_stream(&p, peer)
        .await
        .expect("a node's certificate opens a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_ca_a_client_only_certificate_cannot_open_a_peer_stream() {
    let pki = Pki::new();
    let p = start_tls(&pki, &[]).await;
    let refused = open_peer_stream(&p, pki.client(Some("client")))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    open_peer_stream(&p, pki.client(Some("node")))
        .await
        .expect("a node's certificate opens a stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_only_certified_clients_and_peers_get_in() {
    let pki = Pki::new();
    let p = start_tls(&pki, &["--client-cert-required"]).await;
    let endpoints = p.endpoints();
    let ca = pki.path("ca.pem");
    let no_cert = cli(&[
        "--endpoints",
        &endpoints,
        "--timeout",
        "2",
        "--cacert",
        &ca,
        "get",
        "x",
    ]);
    assert_eq!(no_cert.status.code(), Some(2), "{no_cert:?}");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let certified = cli(&[
        "--endpoints",
        &endpoints,
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "put",
        "in",
        "ok",
    ]);
    assert!(certified.status.success(), "{certified:?}");
    // A node whose certificate another CA signed cannot join.
    let stranger = Command::new(SERVER)
        .args([
            "--id",
            "9",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--data-dir")
        .arg(p.dir.path().join("stranger"))
        .args(["--join", &p.addresses[&1]])
        .args([
            "--tls-cert",
            &pki.path("stranger.pem"),
            "--tls-key",
            &pki.path("stranger.key"),
        ])
        .args(["--tls-ca", &pki.path("other-ca.pem")])
        .output()
        .expect("run");
    assert!(!stranger.status.success(), "{stranger:?}");
    let status = p.wait_led(1).await;
    assert!(status.nodes.iter().all(|n| n.id != 9), "{status:?}");
    assert_eq!(
        p.client().await.get("in").await.expect("get"),
        Some(b"ok".to_vec())
    );
}

/// Three consecutive free ports (`scalestore dev` puts node N on first + N - 1).
fn three_ports() -> u16 {
    loop {
        let first = free_port();
        if free_port() == first + 1 && free_port() == first + 2 {
            return first;
        }
    }
}

/// Runs `scalestore dev` on `data_dir` until it prints its endpoints; returns it and them.
fn start_dev(data_dir: &std::path::Path, first_port: u16) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut dev = Command::new(CLI)
        .args(["dev", "--nodes", "3", "--shards", "2"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--first-port", &first_port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dev");
    let mut lines = std::io::BufReader::new(dev.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(endpoints) = line.strip_prefix("endpoints: ") {
            // The rest is read too, so the supervisor never writes into a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (dev, endpoints.to_string());
        }
    }
    let failed = dev.wait_with_output().expect("dev exits");
    panic!(
        "scalestore dev exited before printing its endpoints: {}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

#[test]
fn ctrl_c_stops_a_whole_dev_cluster_at_once_without_hand_off_and_keeps_every_write() {
    let dir = tempfile::tempdir().expect("dir");
    let first = three_ports();
    let (dev, endpoints) = start_dev(dir.path(), first);
    let run = |args: &[&str]| {
        let mut all = vec!["--endpoints", endpoints.as_str()];
        all.extend_from_slice(args);
        cli(&all)
    };
    for i in 0..20 {
        let put = run(&["put", &format!("dev-{i}"), &format!("v{i}")]);
        assert!(put.status.success(), "{put:?}");
    }
    // Ctrl-C in a terminal: SIGINT to the supervisor (its nodes are in their own group).
    let interrupt = Command::new("kill")
        .args(["-INT", &dev.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupt.success());
    let out = dev.wait_with_output().expect("dev exits");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("stopping 3 nodes together") && said.contains("stopped in"),
        "says what it does: {said}"
    );
    let logs: String = (1..=3)
        .map(|n| {
            std::fs::read_to_string(dir.path().join(format!("node-{n}.log"))).unwrap_or_default()
        })
        .collect();
    assert!(logs.contains("stopping now"), "no node handed off: {logs}");
    assert!(!logs.contains("handing leaderships off"));
    // Every acknowledged write is there when the cluster comes back.
    let (mut again, endpoints) = start_dev(dir.path(), first);
    for i in 0..20 {
        let get = cli(&["--endpoints", &endpoints, "get", &format!("dev-{i}")]);
        assert_eq!(stdout(&get), format!("v{i}\n"), "{get:?}");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status();
    let _ = again.wait();
}

/// One node that listens at one port and advertises another nobody listens on, as a node
/// behind NAT or Docker's port mapping does: (the cluster, the address it is reached at, the
/// address it advertises).
async fn start_behind_nat(extra: &[&str]) -> (Processes, String, String) {
    let advertised = format!("127.0.0.1:{}", free_port());
    let reachable = format!("127.0.0.1:{}", free_port());
    let mut p = Processes::prepare_on(
        [(1, advertised.clone())].into(),
        [(1, format!("127.0.0.1:{}", free_port()))].into(),
        Default::default(),
        2,
        extra,
    );
    let mut args = p.args.lock().expect("lock")[&1].clone();
    let listen = args.iter().position(|a| a == "--listen").expect("--listen") + 1;
    args[listen] = reachable.clone();
    args.extend(["--advertise".to_string(), advertised.clone()]);
    p.addresses.insert(1, reachable.clone());
    p.spawn(1, args);
    p.wait_all_led().await;
    (p, reachable, advertised)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_map_reaches_nodes_behind_nat_and_without_it_the_error_names_the_option() {
    let (p, reachable, advertised) = start_behind_nat(&[]).await;
    let options = ClientOptions::for_connect(Duration::from_secs(3), None, None);
    let endpoints = [reachable.clone()];

    // Without a map: the seed endpoint answers, every advertised address fails, and the error
    // says so and names the option.
    let lost = scalestore_server::connect(&endpoints, options)
        .await
        .expect("the seed endpoint answers");
    let error = lost
        .put("k", "v")
        .await
        .expect_err("advertised address unreachable");
    let text = error.to_string();
    for needed in [
        reachable.as_str(),
        advertised.as_str(),
        "address_map",
        "--address-map",
    ] {
        assert!(text.contains(needed), "{needed:?} missing from: {text}");
    }

    // With the map: every call reaches the node, and the data is there.
    let dialing = scalestore_server::Dialing {
        address_map: [(advertised.clone(), reachable.clone())].into(),
        tls_server_name: None,
    };
    let client = scalestore_server::connect_with(&endpoints, options, None, &dialing)
        .await
        .expect("connect");
    for i in 0..20 {
        client
            .put(format!("nat-{i}"), format!("v{i}"))
            .await
            .expect("put");
    }
    let scanned = client
        .scan_all(&scalestore::ScanOptions {
            prefix: Some(b"nat-".to_vec()),
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(scanned.len(), 20, "{scanned:?}");
    assert_eq!(
        client.get("nat-7").await.expect("get"),
        Some(b"v7".to_vec())
    );

    // The CLI: --address-map, and SCALESTORE_ADDRESS_MAP in its place.
    let map = format!("{advertised}={reachable}");
    let base = ["--endpoints", reachable.as_str(), "--timeout", "3"];
    let put = cli(&[&base[..], &["--address-map", &map, "put", "cli", "mapped"]].concat());
    assert!(put.status.success(), "{put:?}");
    let get = Command::new(CLI)
        .args(base)
        .args(["get", "cli"])
        .env("SCALESTORE_ADDRESS_MAP", &map)
        .output()
        .expect("cli");
    assert_eq!(stdout(&get), "mapped\n", "{get:?}");
    let unmapped = cli(&[&base[..], &["get", "cli"]].concat());
    assert!(!unmapped.status.success(), "{unmapped:?}");
    let said = String::from_utf8_lossy(&unmapped.stderr);
    assert!(said.contains("--address-map"), "{said}");
    let bad = cli(&[
        &base[..],
        &["--address-map", "no-equals-sign", "get", "cli"],
    ]
    .concat());
    assert!(!bad.status.success(), "{bad:?}");
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("ADVERTISED=REACHABLE"), "{said}");
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_name_is_what_the_certificates_are_checked_against() {
    let pki = Pki::new();
    let p = start_tls(&pki, &[]).await;
    let options = ClientOptions::for_connect(Duration::from_secs(3), None, None);
    let endpoints = [p.addresses[&1].clone()];
    let tls = pki.client(None).load().expect("pem");
    let with_name = |name: &str| scalestore_server::Dialing {
        address_map: Default::default(),
        tls_server_name: Some(name.to_string()),
    };
    // The certificates name 127.0.0.1 and localhost: checked against "localhost" while
    // dialing 127.0.0.1, they pass; against another name, they are refused.
    let client =
        scalestore_server::connect_with(&endpoints, options, Some(&tls), &with_name("localhost"))
            .await
            .expect("connect with the certificates' name");
    client.put("named", "yes").await.expect("put");
    assert_eq!(
        client.get("named").await.expect("get"),
        Some(b"yes".to_vec())
    );
    let refused = scalestore_server::connect_with(
        &endpoints,
        options,
        Some(&tls),
        &with_name("db.example.com"),
    )
    .await;
    assert!(
        refused.is_err(),
        "a name the certificates lack was accepted"
    );
    // The CLI's --tls-server-name.
    let ca = pki.path("ca.pem");
    let base = [
        "--endpoints",
        endpoints[0].as_str(),
        "--timeout",
        "3",
        "--cacert",
        ca.as_str(),
    ];
    let get = cli(&[
        &base[..],
        &["--tls-server-name", "localhost", "get", "named"],
    ]
    .concat());
    assert_eq!(stdout(&get), "yes\n", "{get:?}");
    let wrong = cli(&[
        &base[..],
        &["--tls-server-name", "db.example.com", "get", "named"],
    ]
    .concat());
    assert!(!wrong.status.success(), "{wrong:?}");
}
