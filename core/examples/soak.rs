//! Runs the fault suite for as long as asked, every nemesis in turn with fresh seeds, printing
//! one line per run; stops at the first failing run and prints how to replay it.
//!
//! Usage: `soak [--seconds N] [--seed S] [--nemesis NAME] [--run-seconds N]`
//! (not part of CI; `scripts/soak.sh` runs it)

use std::time::{Duration, Instant};

use scalestore::suite::{run, Nemesis, RunOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut total = Duration::from_secs(60);
    let mut seed: Option<u64> = None;
    let mut only: Option<String> = None;
    let mut run_secs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => total = Duration::from_secs(value.parse()?),
            "--seed" => seed = Some(value.parse()?),
            "--nemesis" => only = Some(value),
            "--run-seconds" => run_secs = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let nemeses: Vec<Nemesis> = Nemesis::ALL
        .into_iter()
        .filter(|n| {
            only.as_ref()
                .is_none_or(|o| n.to_string().eq_ignore_ascii_case(o))
        })
        .collect();
    if nemeses.is_empty() {
        return Err(format!("no nemesis named {only:?}; one of {:?}", Nemesis::ALL).into());
    }
    let started = Instant::now();
    let mut runs = 0u64;
    let mut next_seed = seed.unwrap_or_else(rand::random);
    while started.elapsed() < total || runs == 0 {
        let nemesis = nemeses[(runs as usize) % nemeses.len()];
        let report = run(RunOptions {
            nemesis,
            seed: next_seed,
            duration: Duration::from_secs(run_secs),
            ..Default::default()
        })
        .await?;
        println!("{report}");
        if let Ok(path) = std::env::var("SOAK_DUMP") {
            std::fs::write(path, report.history.to_jsonl())?;
        }
        if !report.passed() {
            println!("replay: scripts/soak.sh --nemesis {nemesis} --seed {next_seed} --seconds 0");
            std::fs::write("soak-failure.jsonl", report.history.to_jsonl())?;
            println!("history written to soak-failure.jsonl");
            std::process::exit(1);
        }
        runs += 1;
        if seed.is_some() && total.is_zero() {
            break;
        }
        next_seed = next_seed.wrapping_add(1);
    }
    println!("{runs} runs passed in {:?}", started.elapsed());
    Ok(())
}
