//! The `scalestore` command line: KV and admin commands against a running cluster, and `dev`,
//! a local cluster of server processes in one command.
//!
//! Exit codes: 0 success; 1 a missing key (`get`, nothing printed) or a failed operation; 2 the
//! cluster could not be reached; 64 bad usage (unknown flags, malformed arguments).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use scalestore::{Client, ClientOptions, ReadConsistency, ScanOptions};
use serde_json::json;

use crate::error::{ServerError, ServerResult};
use crate::proto::admin_client::AdminClient;
use crate::proto::{
    EventsRequest, RemoveNodeRequest, SetReplicationRequest, SplitRequest, StatusRequest,
};

/// Exit code for bad usage (sysexits' EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Exit code when no endpoint answers.
pub const EXIT_UNREACHABLE: i32 = 2;
/// Exit code of `get` for a missing key, and of a failed operation.
pub const EXIT_FAILED: i32 = 1;

#[derive(Debug, Parser)]
#[command(name = "scalestore", version, about = "Talk to a ScaleStore cluster", long_about = None)]
pub struct Cli {
    /// Any nodes of the cluster, HOST:PORT, comma-separated.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7001",
        env = "SCALESTORE_ENDPOINTS"
    )]
    pub endpoints: String,
    /// Print results as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for each operation (retries included).
    #[arg(long, global = true, default_value_t = 5.0)]
    pub timeout: f64,
    /// TLS: the CA that signed the nodes' certificates (turns TLS on).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// TLS: this client's certificate, when the cluster asks for one.
    #[arg(long = "cert", id = "tls_cert", global = true, requires = "tls_key")]
    pub cert: Option<PathBuf>,
    /// TLS: the key of --cert.
    #[arg(long = "key", id = "tls_key", global = true, requires = "tls_cert")]
    pub key: Option<PathBuf>,
    /// TLS: the name the nodes' certificates are checked against, instead of the host dialed.
    #[arg(long, global = true, requires = "cacert")]
    pub tls_server_name: Option<String>,
    /// Where to reach a node that advertises another address (NAT, Docker, port mapping):
    /// ADVERTISED=REACHABLE, HOST:PORT each; repeat it or separate entries with commas.
    #[arg(long, global = true, env = "SCALESTORE_ADDRESS_MAP")]
    pub address_map: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Where a value comes from.
#[derive(Debug, Args)]
pub struct ValueInput {
    /// Keys and values are hex (binary data); `get` and `scan` print hex too.
    #[arg(long)]
    pub hex: bool,
    /// Read the value from a file (`-`: standard input) instead of the command line.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write KEY = VALUE.
    Put {
        key: String,
        value: Option<String>,
        #[command(flatten)]
        input: ValueInput,
    },
    /// Print KEY's value (exit 1, printing nothing, if it is absent).
    Get {
        key: String,
        /// Read from any replica (may be behind).
        #[arg(long, conflicts_with = "lease")]
        stale: bool,
        /// Read on the leader's lease, without a quorum round.
        #[arg(long)]
        lease: bool,
        /// Print hex.
        #[arg(long)]
        hex: bool,
    },
    /// Delete KEY (prints whether it existed).
    Delete {
        key: String,
        #[arg(long)]
        hex: bool,
    },
    /// Append VALUE to KEY's value (prints the new length).
    Append {
        key: String,
        value: Option<String>,
        #[command(flatten)]
        input: ValueInput,
    },
    /// Set KEY to NEW if it holds EXPECTED (`--absent`: if it is absent); prints whether it did.
    Cas {
        key: String,
        /// The value expected (omit with --absent).
        expected: Option<String>,
        new: Option<String>,
        /// Expect the key to be absent.
        #[arg(long)]
        absent: bool,
        #[arg(long)]
        hex: bool,
    },
    /// Print pairs in key order, one `key<TAB>value` per line.
    Scan {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        start: Option<String>,
        /// Exclusive.
        #[arg(long)]
        end: Option<String>,
        /// At most this many pairs (default: all).
        #[arg(long)]
        limit: Option<usize>,
        #[arg(long)]
        stale: bool,
        #[arg(long)]
        hex: bool,
    },
    /// Nodes, shards, leaders, terms and sizes.
    Status,
    /// Decommission node ID: its replicas move away, then it leaves.
    RemoveNode {
        id: u64,
        /// Seconds to wait for it to have left (0: return once started).
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Set the number of replicas per shard.
    SetReplication { replication: u32 },
    /// Split shard SHARD online: the part of its range from ring position --at (decimal or
    /// 0x-hex; default: the middle of its largest range) becomes a new shard on its replicas.
    Split {
        shard: u64,
        #[arg(long, value_parser = parse_position)]
        at: Option<u64>,
    },
    /// Recent cluster events from every node, oldest first.
    Events,
    /// Measure throughput, latency, CPU and fsyncs of a workload against ScaleStore servers
    /// (`--endpoints`), etcd (`--target etcd --endpoints` of its members) or an embedded
    /// cluster (`--target embedded`).
    Bench(crate::bench::BenchArgs),
    /// Run a local cluster of server processes on 127.0.0.1 until Ctrl-C.
    Dev {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 8)]
        shards: usize,
        /// Keep the data here (reused on the next run); default: a temporary dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Port of node 1; node N listens on this + N - 1.
        #[arg(long, default_value_t = 7001)]
        first_port: u16,
    },
}

/// Parses the arguments and runs the command; returns the process exit code.
pub async fn main_with(args: Vec<String>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return code;
        }
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn endpoints(cli: &Cli) -> Vec<String> {
    crate::transport::split_endpoints(&[&cli.endpoints])
}

fn bytes(text: &str, hex: bool) -> ServerResult<Vec<u8>> {
    if !hex {
        return Ok(text.as_bytes().to_vec());
    }
    if !text.len().is_multiple_of(2) {
        return Err(ServerError::Config(format!(
            "{text:?} is not hex (odd length)"
        )));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .map_err(|_| ServerError::Config(format!("{text:?} is not hex")))
        })
        .collect()
}

fn show(value: &[u8], hex: bool) -> String {
    if hex {
        value.iter().map(|b| format!("{b:02x}")).collect()
    } else {
        String::from_utf8_lossy(value).into_owned()
    }
}

fn value_of(value: &Option<String>, input: &ValueInput) -> ServerResult<Vec<u8>> {
    match (&input.file, value) {
        (Some(_), Some(_)) => Err(ServerError::Config(
            "give the value on the command line or with --file, not both".into(),
        )),
        (Some(path), None) => {
            let mut data = Vec::new();
            if path.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut data)?;
            } else {
                data = std::fs::read(path)
                    .map_err(|e| ServerError::Config(format!("cannot read {path:?}: {e}")))?;
            }
            if input.hex {
                bytes(String::from_utf8_lossy(&data).trim(), true)
            } else {
                Ok(data)
            }
        }
        (None, Some(v)) => bytes(v, input.hex),
        (None, None) => Err(ServerError::Config("a VALUE (or --file) is needed".into())),
    }
}

async fn client(cli: &Cli) -> ServerResult<Client> {
    let options = client_options(cli)?;
    let dialing = crate::transport::Dialing {
        address_map: crate::transport::Dialing::parse_address_map(&cli.address_map)?,
        tls_server_name: cli.tls_server_name.clone(),
    };
    let tls = tls_files(cli)?.map(|files| files.load()).transpose()?;
    crate::transport::connect_with(&endpoints(cli), options, tls.as_ref(), &dialing).await
}

fn client_options(cli: &Cli) -> ServerResult<ClientOptions> {
    if !(cli.timeout > 0.0 && cli.timeout.is_finite()) {
        return Err(ServerError::Config(format!(
            "--timeout {}: must be positive",
            cli.timeout
        )));
    }
    Ok(ClientOptions::for_connect(
        Duration::from_secs_f64(cli.timeout),
        None,
        None,
    ))
}

fn tls_files(cli: &Cli) -> ServerResult<Option<crate::tls::TlsFiles>> {
    match &cli.cacert {
        Some(ca) => Ok(Some(crate::tls::TlsFiles {
            ca: ca.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
        })),
        None if cli.cert.is_some() => Err(ServerError::Config(
            "--cert needs --cacert (the CA that signed the nodes' certificates)".into(),
        )),
        None => Ok(None),
    }
}

/// A channel to `address`, over TLS when the CLI was given `--cacert`.
fn channel_to(cli: &Cli, address: &str) -> ServerResult<tonic::transport::Channel> {
    let tls = tls_files(cli)?
        .map(|f| crate::tls::client_config(&f))
        .transpose()?
        .map(|tls| crate::tls::with_server_name(tls, cli.tls_server_name.as_deref()));
    Ok(crate::peer::channel_with(address, tls.as_ref())?)
}

async fn admin(cli: &Cli) -> ServerResult<AdminClient<tonic::transport::Channel>> {
    let mut reasons = Vec::new();
    for e in endpoints(cli) {
        crate::config::check_address(&e)?;
        let mut a = AdminClient::new(channel_to(cli, &e)?);
        match tokio::time::timeout(Duration::from_secs(2), a.status(StatusRequest {})).await {
            Ok(Ok(_)) => return Ok(a),
            Ok(Err(s)) => reasons.push(format!("{e}: {}", s.message())),
            Err(_) => reasons.push(format!("{e}: no answer")),
        }
    }
    Err(ServerError::Unreachable {
        endpoints: cli.endpoints.clone(),
        reason: reasons.join("; "),
    })
}

fn print(out: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{out}");
}

async fn run(cli: Cli) -> ServerResult<i32> {
    let json = cli.json;
    match &cli.command {
        Command::Put { key, value, input } => {
            let value = value_of(value, input)?;
            let key = bytes(key, input.hex)?;
            client(&cli).await?.put(&key, &value).await?;
            if json {
                print(&json!({"ok": true}).to_string());
            }
        }
        Command::Get {
            key,
            stale,
            lease,
            hex,
        } => {
            let consistency = if *stale {
                ReadConsistency::Stale
            } else if *lease {
                ReadConsistency::Lease
            } else {
                ReadConsistency::Linearizable
            };
            let key = bytes(key, *hex)?;
            match client(&cli).await?.get_with(&key, consistency).await? {
                Some(v) if json => {
                    print(&json!({"found": true, "value": show(&v, *hex)}).to_string())
                }
                Some(v) => print(&show(&v, *hex)),
                None => {
                    if json {
                        print(&json!({"found": false}).to_string());
                    }
                    return Ok(EXIT_FAILED);
                }
            }
        }
        Command::Delete { key, hex } => {
            let existed = client(&cli).await?.delete(bytes(key, *hex)?).await?;
            print(&if json {
                json!({"existed": existed}).to_string()
            } else {
                existed.to_string()
            });
        }
        Command::Append { key, value, input } => {
            let value = value_of(value, input)?;
            let length = client(&cli)
                .await?
                .append(bytes(key, input.hex)?, &value)
                .await?;
            print(&if json {
                json!({"length": length}).to_string()
            } else {
                length.to_string()
            });
        }
        Command::Cas {
            key,
            expected,
            new,
            absent,
            hex,
        } => {
            let (expected, new) = match (absent, expected, new) {
                (true, Some(n), None) => (None, n),
                (false, Some(e), Some(n)) => (Some(bytes(e, *hex)?), n),
                (true, _, _) => {
                    return Err(ServerError::Config(
                        "with --absent give KEY NEW only".into(),
                    ))
                }
                _ => {
                    return Err(ServerError::Config(
                        "give KEY EXPECTED NEW (or KEY NEW with --absent)".into(),
                    ))
                }
            };
            let outcome = client(&cli)
                .await?
                .cas(bytes(key, *hex)?, expected.as_deref(), bytes(new, *hex)?)
                .await?;
            print(&if json {
                json!({"swapped": outcome.success}).to_string()
            } else {
                outcome.success.to_string()
            });
            if !outcome.success {
                return Ok(EXIT_FAILED);
            }
        }
        Command::Scan {
            prefix,
            start,
            end,
            limit,
            stale,
            hex,
        } => {
            let to_bytes = |v: &Option<String>| v.as_deref().map(|s| bytes(s, *hex)).transpose();
            let mut options = ScanOptions {
                prefix: to_bytes(prefix)?,
                start: to_bytes(start)?,
                end: to_bytes(end)?,
                consistency: if *stale {
                    ReadConsistency::Stale
                } else {
                    ReadConsistency::Linearizable
                },
                ..Default::default()
            };
            let client = client(&cli).await?;
            let mut left = limit.unwrap_or(usize::MAX);
            let mut rows = Vec::new();
            while left > 0 {
                options.limit = left.min(1000);
                let page = client.scan(&options).await?;
                left -= page.items.len().min(left);
                for (k, v) in page.items {
                    if json {
                        rows.push(json!({"key": show(&k, *hex), "value": show(&v, *hex)}));
                    } else {
                        print(&format!("{}\t{}", show(&k, *hex), show(&v, *hex)));
                    }
                }
                match page.cursor {
                    Some(c) => options.cursor = Some(c),
                    None => break,
                }
            }
            if json {
                print(&serde_json::Value::Array(rows).to_string());
            }
        }
        Command::Status => {
            let status = admin(&cli)
                .await?
                .status(StatusRequest {})
                .await
                .map_err(core)?
                .into_inner();
            if json {
                print(&status_json(&status).to_string());
            } else {
                print(&status_table(&status));
            }
        }
        Command::RemoveNode { id, wait } => {
            admin(&cli)
                .await?
                .remove_node(RemoveNodeRequest {
                    node_id: *id,
                    wait_ms: wait * 1000,
                })
                .await
                .map_err(core)?;
            print(&if json {
                json!({"removed": id}).to_string()
            } else if *wait > 0 {
                format!("node {id} removed; its process can be stopped")
            } else {
                format!("node {id} is being decommissioned")
            });
        }
        Command::SetReplication { replication } => {
            admin(&cli)
                .await?
                .set_replication(SetReplicationRequest {
                    replication: *replication,
                })
                .await
                .map_err(core)?;
            if json {
                print(&json!({"replication": replication}).to_string());
            }
        }
        Command::Split { shard, at } => {
            let done = admin(&cli)
                .await?
                .split(SplitRequest {
                    shard: *shard,
                    at: *at,
                })
                .await
                .map_err(core)?
                .into_inner();
            print(&if json {
                json!({"parent": done.parent, "child": done.child, "at": done.at}).to_string()
            } else {
                format!(
                    "shard {} split at {:#018x}: shard {} serves the rest of its range",
                    done.parent, done.at, done.child
                )
            });
        }
        Command::Events => {
            let mut first = admin(&cli).await?;
            let status = first
                .status(StatusRequest {})
                .await
                .map_err(core)?
                .into_inner();
            let mut events = Vec::new();
            for n in &status.nodes {
                let Ok(channel) = channel_to(&cli, &n.address) else {
                    continue;
                };
                let mut a = AdminClient::new(channel);
                if let Ok(Ok(r)) =
                    tokio::time::timeout(Duration::from_secs(2), a.events(EventsRequest {})).await
                {
                    events.extend(r.into_inner().events);
                }
            }
            events.sort_by_key(|e| (e.time_ms, e.node));
            for e in &events {
                if json {
                    print(&json!({"time_ms": e.time_ms, "node": e.node, "kind": e.kind, "detail": e.detail}).to_string());
                } else {
                    print(&format!(
                        "{}\tnode {}\t{}\t{}",
                        e.time_ms, e.node, e.kind, e.detail
                    ));
                }
            }
        }
        Command::Bench(args) => {
            let report = crate::bench::run(
                args,
                &endpoints(&cli),
                tls_files(&cli)?.as_ref(),
                client_options(&cli)?,
            )
            .await?;
            if json {
                print(&serde_json::to_string(&report).map_err(|e| {
                    ServerError::Config(format!("cannot print the report as JSON: {e}"))
                })?);
            } else {
                print(&report.to_string());
            }
        }
        Command::Dev {
            nodes,
            shards,
            data_dir,
            first_port,
        } => {
            crate::dev::run(*nodes, *shards, data_dir.clone(), *first_port).await?;
        }
    }
    Ok(0)
}

fn core(status: tonic::Status) -> ServerError {
    ServerError::Core(crate::convert::from_status(&status))
}

fn status_json(s: &crate::proto::StatusResponse) -> serde_json::Value {
    json!({
        "cluster_id": s.cluster_id,
        "map_epoch": s.map_epoch,
        "replication": s.replication,
        "nodes": s.nodes.iter().map(|n| json!({
            "id": n.id, "address": n.address, "state": n.state, "up": n.up,
            "shards": n.shards, "leaders": n.leaders, "unstartable": n.unstartable,
        })).collect::<Vec<_>>(),
        "shards": s.shards.iter().map(|h| json!({
            "id": h.id, "replicas": h.replicas, "leader": h.leader, "term": h.term,
            "commit_index": h.committed_index, "applied_index": h.applied_index,
            "approximate_bytes": h.approximate_bytes,
        })).collect::<Vec<_>>(),
    })
}

fn status_table(s: &crate::proto::StatusResponse) -> String {
    let mut out = format!(
        "cluster {}  map epoch {}  replication {}\n\nNODE  ADDRESS                STATE    UP   SHARDS  LEADERS\n",
        s.cluster_id, s.map_epoch, s.replication
    );
    for n in &s.nodes {
        out.push_str(&format!(
            "{:<5} {:<22} {:<8} {:<4} {:<7} {}\n",
            n.id,
            n.address,
            n.state,
            if n.up { "yes" } else { "no" },
            n.shards.len(),
            n.leaders
        ));
    }
    for n in s.nodes.iter().filter(|n| !n.unstartable.is_empty()) {
        let groups: Vec<String> = n.unstartable.iter().map(u64::to_string).collect();
        out.push_str(&format!(
            "node {}: groups that could not start (see its log): {}\n",
            n.id,
            groups.join(",")
        ));
    }
    out.push_str("\nSHARD  LEADER  TERM  COMMIT  APPLIED  REPLICAS      SIZE\n");
    for h in &s.shards {
        let replicas: Vec<String> = h.replicas.iter().map(u64::to_string).collect();
        out.push_str(&format!(
            "{:<6} {:<7} {:<5} {:<7} {:<8} {:<13} {}\n",
            h.id,
            h.leader
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            h.term,
            h.committed_index,
            h.applied_index,
            replicas.join(","),
            human_bytes(h.approximate_bytes)
        ));
    }
    out.trim_end().to_string()
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A ring position: decimal, or hex with `0x`.
fn parse_position(s: &str) -> std::result::Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?} is not a ring position (0..2^64, decimal or 0x-hex): {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ring_position_is_decimal_or_0x_hex_and_anything_else_is_refused_by_name() {
        assert_eq!(super::parse_position("42"), Ok(42));
        assert_eq!(super::parse_position("0x8000000000000000"), Ok(1 << 63));
        assert_eq!(super::parse_position("0XFF"), Ok(255));
        for bad in ["", "-1", "0x", "18446744073709551616", "half"] {
            let err = super::parse_position(bad).expect_err(bad);
            assert!(err.contains("ring position"), "{err}");
        }
    }

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        crate::config::ServerArgs::command().debug_assert();
    }

    #[test]
    fn hex_values_round_trip_and_bad_hex_is_refused() {
        assert_eq!(bytes("00ff10", true).expect("hex"), vec![0, 255, 16]);
        assert_eq!(show(&[0, 255, 16], true), "00ff10");
        assert!(bytes("0g", true).is_err());
        assert!(bytes("abc", true).is_err());
        assert_eq!(bytes("abc", false).expect("text"), b"abc");
    }
}
