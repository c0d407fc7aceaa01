//! Runs the fault suite for as long as asked, every nemesis in turn with fresh seeds, printing
//! one line per run; stops at the first failing run and prints how to replay it.
//!
//! Usage: `soak [--seconds N] [--seed S] [--nemesis NAME] [--run-seconds N] [--deterministic]`
//! (not part of CI; `scripts/soak.sh` runs it)
//!
//! `--deterministic` runs each scenario on one thread in virtual time with every random draw
//! from the seed, so a seed replays the whole run: each run prints `digest: <hex>` after its
//! report (the last line of the output), and `RUST_LOG` traces carry no wall-clock times.
//! Without `--seconds` it runs one scenario.

use std::time::{Duration, Instant};

use scalestore::suite::{run, run_deterministic_with, Nemesis, RunOptions, RunReport};

struct Args {
    total: Duration,
    seed: Option<u64>,
    only: Option<String>,
    run_secs: u64,
    deterministic: bool,
}

fn parse() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = Args {
        total: Duration::from_secs(60),
        seed: None,
        only: None,
        run_secs: 3,
        deterministic: false,
    };
    let mut total_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--deterministic" {
            args.deterministic = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => {
                args.total = Duration::from_secs(value.parse()?);
                total_given = true;
            }
            "--seed" => args.seed = Some(value.parse()?),
            "--nemesis" => args.only = Some(value),
            "--run-seconds" => args.run_secs = value.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if args.deterministic && !total_given {
        args.total = Duration::ZERO;
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    if std::env::var("RUST_LOG").is_ok() {
        let traces = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false);
        if args.deterministic {
            // Two replays of one seed give the same traces: no wall-clock times in them.
            traces.without_time().init();
        } else {
            traces.init();
        }
    }
    let nemeses: Vec<Nemesis> = Nemesis::ALL
        .into_iter()
        .filter(|n| {
            args.only
                .as_ref()
                .is_none_or(|o| n.to_string().eq_ignore_ascii_case(o))
        })
        .collect();
    if nemeses.is_empty() {
        return Err(format!(
            "no nemesis named {:?}; one of {:?}",
            args.only,
            Nemesis::ALL
        )
        .into());
    }
    let runtime = (!args.deterministic)
        .then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
        })
        .transpose()?;
    let started = Instant::now();
    let mut runs = 0u64;
    let mut next_seed = args.seed.unwrap_or_else(rand::random);
    while started.elapsed() < args.total || runs == 0 {
        let nemesis = nemeses[(runs as usize) % nemeses.len()];
        let options = RunOptions {
            nemesis,
            seed: next_seed,
            duration: Duration::from_secs(args.run_secs),
            ..Default::default()
        };
        let began = Instant::now();
        let (report, digest): (RunReport, Option<String>) = match &runtime {
            Some(rt) => (rt.block_on(run(options))?, None),
            None => {
                let run = run_deterministic_with(options)?;
                (run.report, Some(run.digest))
            }
        };
        println!("{report}");
        if let (Some(digest), true) = (&digest, report.passed()) {
            eprintln!("wall time {:.1} s", began.elapsed().as_secs_f64());
            println!("digest: {digest}");
        }
        if let Ok(path) = std::env::var("SOAK_DUMP") {
            std::fs::write(path, report.history.to_jsonl())?;
        }
        if !report.passed() {
            let mode = if args.deterministic {
                " --deterministic"
            } else {
                " --seconds 0"
            };
            std::fs::write("soak-failure.jsonl", report.history.to_jsonl())?;
            let replay = format!(
                "replay: scripts/soak.sh --nemesis {nemesis} --seed {next_seed}{mode}\n\
                 history written to soak-failure.jsonl"
            );
            match &digest {
                // The digest stays the last line of the output.
                Some(digest) => {
                    eprintln!("{replay}");
                    println!("digest: {digest}");
                }
                None => println!("{replay}"),
            }
            std::process::exit(1);
        }
        runs += 1;
        if args.seed.is_some() && args.total.is_zero() {
            break;
        }
        next_seed = next_seed.wrapping_add(1);
    }
    let summary = format!("{runs} runs passed in {:?}", started.elapsed());
    if args.deterministic {
        // The digest stays the last line of the output.
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}
