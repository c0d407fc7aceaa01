//! What an operator checks before production, on real kernels' terms: a node whose disk fills up
//! (a small tmpfs under its data dir), and hosts cut off and restored (one network namespace per
//! server). Both need root: elsewhere they are skipped, saying why; under CI (`CI=true`) they must
//! run.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Whether a test that needs root may skip: never under CI.
fn skip(why: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: this test must run here, but {why}"
    );
    eprintln!("skipped: {why} (run as root to include this test)");
    true
}

/// Runs a command that needs privileges; its error output when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A tmpfs of `mib` MiB mounted at a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let size = format!("size={mib}m");
        let path = at.display().to_string();
        run("mount", &["-t", "tmpfs", "-o", &size, "tmpfs", &path])?;
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.0.display().to_string()]);
    }
}

/// Writes zeros to `file` until the filesystem refuses more: returns the bytes written.
fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    written
}

/// Waits until node `id`'s `/ready` answers `code`.
async fn wait_ready_code(p: &Processes, id: u64, code: u16, bound: Duration) -> String {
    let deadline = Instant::now() + bound;
    loop {
        let (got, body) = p.http_get(id, "/ready");
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} /ready answered {got} ({}), not {code}; log: {}",
            body.trim(),
            p.log(id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the cluster's events include one of `kind`.
async fn wait_for_event(p: &Processes, kind: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = stdout(&cli(&["--endpoints", &p.endpoints(), "events"]));
        if events.contains(kind) {
            return;
        }
        assert!(Instant::now() < deadline, "no {kind} event in {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_a_node_acknowledging_and_it_serves_again_once_space_returns() {
    let p = Processes::prepare(3, 2, &[]);
    let _disk = match Tmpfs::mount(&p.data_dir(1), 64) {
        Ok(m) => m,
        Err(why) if skip(&format!("cannot mount a tmpfs: {why}")) => return,
        Err(_) => unreachable!(),
    };
    for i in 1..=3 {
        p.restart(i);
    }
    p.wait_all_led().await;
    let filler = p.data_dir(1).join("filler");
    writers_survive(&p, async {
        let filled = fill(&filler);
        eprintln!("filled node 1's disk with {} MiB", filled >> 20);
        // Node 1 finds out at its next write (the writers replicate to it) and says so.
        let why = wait_ready_code(&p, 1, 503, Duration::from_secs(20)).await;
        assert!(why.contains("storage"), "/ready names the cause: {why}");
        let (_, scrape) = p.http_get(1, "/metrics");
        assert_eq!(
            sample(&scrape, "scalestore_storage_failing"),
            Some(1.0),
            "{scrape}"
        );
        wait_for_event(&p, "storage_failed").await;
        // Its leaderships moved: every shard is led by a node that can persist, and takes writes
        // (the writers run 2 s more).
        let deadline = Instant::now() + WAIT;
        while p
            .wait_led(2)
            .await
            .shards
            .iter()
            .any(|s| s.leader == Some(1))
        {
            assert!(Instant::now() < deadline, "node 1 still leads a shard");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p.client()
            .await
            .put("during", "full disk")
            .await
            .expect("a write while node 1 cannot persist");
    })
    .await;
    // Space returns: the node reopens its store by itself, rejoins its groups and catches up.
    std::fs::remove_file(&filler).expect("free space");
    wait_ready_code(&p, 1, 200, Duration::from_secs(60)).await;
    let (_, scrape) = p.http_get(1, "/metrics");
    assert_eq!(sample(&scrape, "scalestore_storage_failing"), Some(0.0));
    wait_for_event(&p, "storage_recovered").await;
    p.client()
        .await
        .put("after", "space returned")
        .await
        .expect("write");
    wait_for_value_on(&p, 1, "after", "space returned").await;
    wait_for_value_on(&p, 1, "during", "full disk").await;
    // What it persists from now on survives a restart.
    p.kill9(1);
    p.restart(1);
    wait_for_value_on(&p, 1, "after", "space returned").await;
}

/// Hosts on one bridge: a network namespace per host, joined to a bridge in the test's own
/// namespace by a veth pair, addresses `10.S.N.host/24` (S for each set of the run, N from the
/// test's process id, so runs do not collide). Cutting a host takes its bridge end down: it loses every peer and
/// every client at once, as a pulled cable would. Removed when dropped.
struct Hosts {
    tag: String,
    subnet: String,
    count: u64,
}

impl Hosts {
    fn create(count: u64) -> Result<Hosts, String> {
        // Tests of one run share the process id: each set of hosts takes a number of its own.
        static SETS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let set = SETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        let hosts = Hosts {
            tag: format!("ss{}{set}", pid % 100_000),
            subnet: format!("10.{}.{}", 201 + set, pid % 250),
            count,
        };
        let bridge = hosts.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.254/24", hosts.subnet),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for h in 1..=count {
            let (ns, outer, inner) = (
                hosts.namespace(h),
                hosts.outer(h),
                format!("{}i{h}", hosts.tag),
            );
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ],
            )?;
            run("ip", &["link", "set", &outer, "master", &bridge, "up"])?;
            run("ip", &["link", "set", &inner, "netns", &ns])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            inside(&["addr", "add", &format!("{}/24", hosts.ip(h)), "dev", &inner])?;
            inside(&["link", "set", &inner, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn namespace(&self, host: u64) -> String {
        format!("{}-host{host}", self.tag)
    }

    fn outer(&self, host: u64) -> String {
        format!("{}o{host}", self.tag)
    }

    fn ip(&self, host: u64) -> String {
        format!("{}.{host}", self.subnet)
    }

    /// Host `h`'s address on `port`, for every host.
    fn addresses(&self, port: u16) -> BTreeMap<u64, String> {
        (1..=self.count)
            .map(|h| (h, format!("{}:{port}", self.ip(h))))
            .collect()
    }

    fn launchers(&self) -> BTreeMap<u64, Vec<String>> {
        (1..=self.count)
            .map(|h| {
                let launcher = ["ip", "netns", "exec", &self.namespace(h)];
                (h, launcher.iter().map(|s| s.to_string()).collect())
            })
            .collect()
    }

    fn cut(&self, host: u64) {
        run("ip", &["link", "set", &self.outer(host), "down"]).expect("cut");
    }

    fn restore(&self, host: u64) {
        run("ip", &["link", "set", &self.outer(host), "up"]).expect("restore");
    }

    /// Everything sent to `host` crosses a link of `rate` (tc's units, say `64mbit`), with a
    /// queue of about 50 ms at that rate, as a congested link has.
    fn throttle(&self, host: u64, rate: &str) {
        let outer = self.outer(host);
        let args = [
            "qdisc", "add", "dev", &outer, "root", "tbf", "rate", rate, "burst", "64kb", "latency",
            "50ms",
        ];
        run("tc", &args).expect("throttle");
    }
}

/// Three hosts (see [`Hosts`]) each running a server, four shards, every shard led; `None` where
/// namespaces cannot be made and the test may skip.
async fn three_hosts_serving_four_shards() -> Option<(Hosts, Processes)> {
    let hosts = match Hosts::create(3) {
        Ok(h) => h,
        Err(why) if skip(&format!("cannot create network namespaces: {why}")) => return None,
        Err(_) => unreachable!(),
    };
    let p = Processes::prepare_on(
        hosts.addresses(7000),
        hosts.addresses(7100),
        hosts.launchers(),
        4,
        &[],
    );
    for h in 1..=3 {
        p.restart(h);
    }
    p.wait_all_led().await;
    Some((hosts, p))
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for h in 1..=self.count {
            let _ = run("ip", &["link", "del", &self.outer(h)]);
            let _ = run("ip", &["netns", "del", &self.namespace(h)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_cut_off_and_restored_one_after_another_lose_no_acknowledged_write() {
    let Some((hosts, p)) = three_hosts_serving_four_shards().await else {
        return;
    };
    writers_survive(&p, async {
        // Each cut outlasts an election (the cut host's groups fail over to the other two),
        // and each restored host catches up before the next is cut.
        for h in [1, 2] {
            hosts.cut(h);
            tokio::time::sleep(Duration::from_secs(3)).await;
            hosts.restore(h);
            p.wait_led(h).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    p.client()
        .await
        .put("after", "the cuts")
        .await
        .expect("write");
    for h in 1..=3 {
        wait_for_value_on(&p, h, "after", "the cuts").await;
    }
    // Kill the servers before their namespaces go.
    drop(p);
}

/// Large appends catching one follower up over a throttled link do not hold up the heartbeats
/// of the other groups crossing the same link (each peer link has a lane of its own for votes
/// and heartbeats, and an append carries at most about 1 MiB): the follower never goes looking
/// for a leader (with pre-vote on, a late heartbeat shows as a pre-vote request) while it
/// catches up, and no shard changes leader but by a hand-off to the follower (the manager
/// evening out leaders, which needs no pre-vote).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_over_a_throttled_link_leaves_the_other_groups_leaders_alone() {
    let Some((hosts, p)) = three_hosts_serving_four_shards().await else {
        return;
    };
    // A node leading two shards (four shards on three nodes: one leads two); every shard has a
    // replica on each node.
    let status = p.wait_led(1).await;
    let mut led: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for shard in &status.shards {
        led.entry(shard.leader.expect("led"))
            .or_default()
            .push(shard.id);
    }
    let (leader, shards) = led
        .into_iter()
        .find(|(_, s)| s.len() >= 2)
        .expect("a node leading two shards");
    let (a, follower) = (shards[0], if leader == 1 { 2 } else { 1 });
    // Shard A grows by 96 MiB while the follower is down.
    p.kill9(follower);
    let client = p.client().await;
    let value = vec![b'v'; 1024 * 1024];
    let mut written = Vec::new();
    let mut i = 0;
    while written.len() < 96 {
        let key = format!("big-{i}");
        if client.shard_of(&key).await.expect("shard") == a {
            client.put(&key, &value).await.expect("put");
            written.push(key);
        }
        i += 1;
    }
    // Back, behind a 64 Mbit/s link: the catch-up takes about 12 s.
    hosts.throttle(follower, "64mbit");
    p.restart(follower);
    p.wait_led(follower).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pre_votes = |p: &Processes| {
        let (_, scrape) = p.http_get(follower, "/metrics");
        let name = "scalestore_pre_vote_requests_total";
        sample(&scrape, name).unwrap_or_else(|| panic!("{name} in {scrape}"))
    };
    let before = pre_votes(&p);
    let leaders =
        |s: &scalestore_server::proto::StatusResponse| -> BTreeMap<u64, (Option<u64>, u64)> {
            s.shards
                .iter()
                .map(|h| (h.id, (h.leader, h.term)))
                .collect()
        };
    let mut seen = leaders(&p.wait_led(leader).await);
    let pinned = client.pinned_to(follower).expect("pin");
    let last = written.last().expect("written").clone();
    let caught_up = |got: scalestore::Result<Option<Vec<u8>>>| got.ok().flatten().is_some();
    assert!(
        !caught_up(
            pinned
                .get_with(&last, scalestore::ReadConsistency::Stale)
                .await
        ),
        "the follower caught up before the check began: make shard A larger"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = pinned
            .get_with(&last, scalestore::ReadConsistency::Stale)
            .await;
        if caught_up(got) {
            break;
        }
        assert!(Instant::now() < deadline, "node {follower} never caught up");
        if let Some(now) = p.status(leader).await {
            for (shard, now) in leaders(&now) {
                let before = seen.insert(shard, now);
                assert!(
                    before == Some(now) || now.0 == Some(follower),
                    "shard {shard} went from {before:?} to {now:?} during the catch-up"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        pre_votes(&p),
        before,
        "node {follower} asked for pre-votes while it caught up: a group's heartbeats were late"
    );
    drop(p);
}
