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

/// Writes traces with every monotonic-clock reading (`Instant { tv_sec: .., tv_nsec: .. }`,
/// which starts anywhere in each process) as virtual time since the run began, and every
/// wall-clock rendering of an instant (`hh:mm:ss.micros`, the real clock minus virtual time)
/// masked.
struct VirtualTimeWriter<W>(W);

fn instant_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"Instant \{ tv_sec: (\d+), tv_nsec: (\d+) \}").expect("regex")
    })
}

fn clock_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\b\d\d:\d\d:\d\d\.\d{6}\b").expect("regex"))
}

/// Nanoseconds of a printed monotonic reading.
fn reading_ns(sec: &str, nsec: &str) -> Option<i128> {
    Some(sec.parse::<i128>().ok()? * 1_000_000_000 + nsec.parse::<i128>().ok()?)
}

fn virtual_times(text: &str) -> String {
    let origin = scalestore::sim::origin()
        .map(|o| format!("{o:?}"))
        .and_then(|o| {
            let c = instant_regex().captures(&o)?;
            reading_ns(&c[1], &c[2])
        });
    let text = instant_regex().replace_all(text, |c: &regex::Captures<'_>| {
        match (origin, reading_ns(&c[1], &c[2])) {
            (Some(origin), Some(at)) => format!("Instant(+{}ns)", at - origin),
            _ => "Instant(?)".to_string(),
        }
    });
    clock_regex()
        .replace_all(&text, "--:--:--.------")
        .into_owned()
}

impl<W: std::io::Write> std::io::Write for VirtualTimeWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(virtual_times(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    if std::env::var("RUST_LOG").is_ok() {
        let traces = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false);
        if args.deterministic {
            // Two replays of one seed give the same traces: no wall-clock times in them, and
            // the instants openraft prints are rewritten as the run's virtual time.
            traces
                .without_time()
                .with_writer(|| VirtualTimeWriter(std::io::stderr()))
                .init();
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
