//! What an operator checks before production, on real kernels' terms: a node whose disk fills up
//! (a small tmpfs under its data dir), and hosts cut off and restored (one network namespace per
//! server). Both need root: elsewhere they are skipped, saying why; under CI (`CI=true`) they must
//! run.

mod support;

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
