//! `scalestore-server`'s settings: flags, the same keys in a TOML file (`--config`; flags win),
//! and their checks. Nothing starts until every setting makes sense.

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;

use clap::Parser;
use scalestore::{NodeId, RaftTiming};
use serde::{Deserialize, Serialize};

use crate::error::{ServerError, ServerResult};

/// Shards of a new cluster unless `--shards` says otherwise.
pub const DEFAULT_SHARDS: usize = 8;

/// One ScaleStore node. Bootstrap a new cluster with `--initial-cluster` on each of its first
/// nodes, or add a node to a running one with `--join`; restart with the same data dir to
/// resume (bootstrap flags that agree are ignored, contradicting ones refused).
#[derive(Debug, Clone, Default, Parser, Serialize, Deserialize)]
#[command(name = "scalestore-server", version)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerArgs {
    /// A TOML file with any of these settings (keys as the flags without `--`).
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id (1, 2, ...), unique in the cluster.
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Address to listen on for clients and peers, HOST:PORT.
    #[arg(long)]
    pub listen: Option<String>,
    /// Address other nodes and clients use to reach this one (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Where this node keeps its data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Bootstrap: every first member as ID=HOST:PORT, comma-separated (this node included).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Bootstrap: number of shards (default 8).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Bootstrap: replicas per shard (default min(3, members)).
    #[arg(long)]
    pub replication: Option<usize>,
    /// Join the running cluster that this node (HOST:PORT) belongs to.
    #[arg(long)]
    pub join: Option<String>,
    /// Cap on snapshot bytes this node sends per second, in MiB (0: no cap; default 64).
    #[arg(long)]
    pub snapshot_rate_mib: Option<u64>,
    /// Build a snapshot after this many applied entries (default 10000).
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Log entries kept behind a snapshot for slow followers (default 1000).
    #[arg(long)]
    pub log_kept_behind_snapshot: Option<u64>,
    /// KV requests this node serves at once; more are refused with Busy (default 4096).
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Serve Prometheus `/metrics`, `/health` and `/ready` over HTTP on HOST:PORT.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Log format on stderr: `text` (default) or `json`. The level comes from RUST_LOG.
    #[arg(long)]
    pub log_format: Option<String>,
    /// TLS: this node's certificate (PEM). With it, plaintext is refused.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// TLS: the CA whose certificates this node accepts from clients and peers (PEM).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// TLS: the certificate this node presents to its peers (default: --tls-cert).
    #[arg(long)]
    pub peer_tls_cert: Option<PathBuf>,
    /// TLS: the key of --peer-tls-cert (default: --tls-key).
    #[arg(long)]
    pub peer_tls_key: Option<PathBuf>,
    /// TLS: the CA that signed the peers' certificates (default: --tls-ca).
    #[arg(long)]
    pub peer_tls_ca: Option<PathBuf>,
    /// TLS: refuse clients without a certificate signed by --tls-ca.
    #[arg(long)]
    #[serde(default)]
    pub client_cert_required: bool,
    /// TLS: let in only peers whose certificate is valid for this host name (a SAN), as etcd's
    /// flag of the same name.
    #[arg(long)]
    pub peer_cert_allowed_hostname: Option<String>,
}

impl ServerArgs {
    /// The flags over the `--config` file's settings.
    pub fn merged(self) -> ServerResult<ServerArgs> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ServerError::Config(format!("cannot read {path:?}: {e}")))?;
        let file: ServerArgs =
            toml::from_str(&text).map_err(|e| ServerError::Config(format!("{path:?}: {e}")))?;
        Ok(ServerArgs {
            config: self.config.clone(),
            id: self.id.or(file.id),
            listen: self.listen.or(file.listen),
            advertise: self.advertise.or(file.advertise),
            data_dir: self.data_dir.or(file.data_dir),
            initial_cluster: self.initial_cluster.or(file.initial_cluster),
            shards: self.shards.or(file.shards),
            replication: self.replication.or(file.replication),
            join: self.join.or(file.join),
            snapshot_rate_mib: self.snapshot_rate_mib.or(file.snapshot_rate_mib),
            snapshot_every: self.snapshot_every.or(file.snapshot_every),
            log_kept_behind_snapshot: self
                .log_kept_behind_snapshot
                .or(file.log_kept_behind_snapshot),
            max_in_flight: self.max_in_flight.or(file.max_in_flight),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            log_format: self.log_format.or(file.log_format),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_ca: self.tls_ca.or(file.tls_ca),
            peer_tls_cert: self.peer_tls_cert.or(file.peer_tls_cert),
            peer_tls_key: self.peer_tls_key.or(file.peer_tls_key),
            peer_tls_ca: self.peer_tls_ca.or(file.peer_tls_ca),
            client_cert_required: self.client_cert_required || file.client_cert_required,
            peer_cert_allowed_hostname: self
                .peer_cert_allowed_hostname
                .or(file.peer_cert_allowed_hostname),
        })
    }
}

/// How this start came about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// One of a new cluster's first members (or a restart of one, with the same flags).
    Bootstrap(Bootstrap),
    /// A node joining a running cluster through `seed`.
    Join { seed: String },
    /// A restart with neither: the data dir says what this node is.
    Resume,
}

/// What bootstrapping a cluster fixes for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub members: BTreeMap<NodeId, String>,
    pub shards: usize,
    pub replication: usize,
}

impl Bootstrap {
    /// Every first member derives the same cluster id from the same flags (as etcd's
    /// initial-cluster does), so they agree on it without talking.
    pub fn cluster_id(&self) -> String {
        let spec = format!("{:?}|{}|{}", self.members, self.shards, self.replication);
        format!(
            "{:016x}",
            xxhash_rust::xxh64::xxh64(spec.as_bytes(), 0x5ca1e)
        )
    }
}

/// Settings checked and complete.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub id: NodeId,
    pub listen: String,
    pub advertise: String,
    pub data_dir: PathBuf,
    pub start: Start,
    /// Bootstrap values given explicitly (checked against a stored cluster on restart).
    pub explicit_shards: Option<usize>,
    pub explicit_replication: Option<usize>,
    pub snapshot_bytes_per_second: u64,
    /// Raft timing and log compaction of every group on this node.
    pub timing: RaftTiming,
    pub max_in_flight: usize,
    pub metrics_listen: Option<String>,
    pub json_logs: bool,
    pub tls: Option<NodeTls>,
}

/// TLS files of a node: what it serves with, and how it dials its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub client_cert_required: bool,
    /// Dialing peers: their CA, and this node's peer certificate and key.
    pub peer: crate::tls::TlsFiles,
    /// A peer's certificate must be valid for this host name (etcd's flag of the same name).
    pub peer_cert_allowed_hostname: Option<String>,
}

/// `HOST:PORT` with a host that resolves and a port.
pub fn check_address(address: &str) -> ServerResult<()> {
    let bad = |why: &str| {
        ServerError::Config(format!(
            "bad address {address:?}: {why} (expected HOST:PORT)"
        ))
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    address
        .to_socket_addrs()
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("the host does not resolve"))?;
    Ok(())
}

/// `1=HOST:PORT,2=HOST:PORT,...`: ids unique and positive, addresses unique and valid.
pub fn parse_members(spec: &str) -> ServerResult<BTreeMap<NodeId, String>> {
    let mut members = BTreeMap::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, address) = part.split_once('=').ok_or_else(|| {
            ServerError::Config(format!(
                "--initial-cluster entry {part:?} is not ID=HOST:PORT"
            ))
        })?;
        let id: NodeId = id.trim().parse().ok().filter(|i| *i > 0).ok_or_else(|| {
            ServerError::Config(format!(
                "--initial-cluster: {id:?} is not a node id (1, 2, ...)"
            ))
        })?;
        check_address(address.trim())?;
        if members.values().any(|a: &String| a == address.trim()) {
            return Err(ServerError::Config(format!(
                "--initial-cluster names {address} twice"
            )));
        }
        if members.insert(id, address.trim().to_string()).is_some() {
            return Err(ServerError::Config(format!(
                "--initial-cluster names node {id} twice"
            )));
        }
    }
    if members.is_empty() {
        return Err(ServerError::Config(
            "--initial-cluster names no node".into(),
        ));
    }
    Ok(members)
}

impl ServerConfig {
    pub fn from_args(args: ServerArgs) -> ServerResult<ServerConfig> {
        let args = args.merged()?;
        let id = args
            .id
            .ok_or_else(|| ServerError::Config("--id is required".into()))?;
        if id == 0 {
            return Err(ServerError::Config("--id must be 1 or more".into()));
        }
        let listen = args
            .listen
            .ok_or_else(|| ServerError::Config("--listen HOST:PORT is required".into()))?;
        check_address(&listen)?;
        let advertise = args.advertise.unwrap_or_else(|| listen.clone());
        check_address(&advertise)?;
        let data_dir = args
            .data_dir
            .ok_or_else(|| ServerError::Config("--data-dir is required".into()))?;
        if let Some(s) = args.shards {
            if s == 0 || s > 4096 {
                return Err(ServerError::Config(format!(
                    "--shards {s}: between 1 and 4096"
                )));
            }
        }
        let defaults = RaftTiming::default();
        let timing = RaftTiming {
            snapshot_logs_since_last: args
                .snapshot_every
                .unwrap_or(defaults.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: args
                .log_kept_behind_snapshot
                .unwrap_or(defaults.max_in_snapshot_log_to_keep),
            ..defaults
        };
        if timing.snapshot_logs_since_last == 0 {
            return Err(ServerError::Config(
                "--snapshot-every must be 1 or more".into(),
            ));
        }
        if let Some(m) = &args.metrics_listen {
            check_address(m)?;
        }
        let json_logs = match args.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ServerError::Config(format!(
                    "--log-format {other}: text or json"
                )))
            }
        };
        let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
            (None, None, None) => {
                let peer_flags = args.peer_tls_cert.is_some()
                    || args.peer_tls_key.is_some()
                    || args.peer_tls_ca.is_some()
                    || args.peer_cert_allowed_hostname.is_some()
                    || args.client_cert_required;
                if peer_flags {
                    return Err(ServerError::Config(
                        "--peer-tls-* and --client-cert-required need --tls-cert, --tls-key and --tls-ca".into(),
                    ));
                }
                None
            }
            (Some(cert), Some(key), Some(ca)) => Some(NodeTls {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: ca.clone(),
                client_cert_required: args.client_cert_required,
                peer: crate::tls::TlsFiles {
                    ca: args.peer_tls_ca.clone().unwrap_or_else(|| ca.clone()),
                    cert: Some(args.peer_tls_cert.clone().unwrap_or_else(|| cert.clone())),
                    key: Some(args.peer_tls_key.clone().unwrap_or_else(|| key.clone())),
                },
                peer_cert_allowed_hostname: args.peer_cert_allowed_hostname.clone(),
            }),
            _ => {
                return Err(ServerError::Config(
                    "TLS needs all of --tls-cert, --tls-key and --tls-ca (peers authenticate each other with certificates from that CA)".into(),
                ))
            }
        };
        let max_in_flight = args.max_in_flight.unwrap_or(4096);
        if max_in_flight == 0 {
            return Err(ServerError::Config(
                "--max-in-flight must be 1 or more".into(),
            ));
        }
        let start = match (&args.initial_cluster, &args.join) {
            (Some(_), Some(_)) => {
                return Err(ServerError::Config(
                    "--initial-cluster and --join exclude each other".into(),
                ))
            }
            (Some(spec), None) => {
                let members = parse_members(spec)?;
                match members.get(&id) {
                    None => {
                        return Err(ServerError::Config(format!(
                            "--initial-cluster does not name this node ({id})"
                        )))
                    }
                    Some(a) if *a != advertise => {
                        return Err(ServerError::Config(format!(
                            "--initial-cluster gives node {id} the address {a}, but it listens at {advertise} (set --advertise)"
                        )))
                    }
                    Some(_) => {}
                }
                let replication = args.replication.unwrap_or(members.len().min(3));
                if replication == 0 || replication > members.len() {
                    return Err(ServerError::Config(format!(
                        "--replication {replication}: between 1 and the {} initial members",
                        members.len()
                    )));
                }
                Start::Bootstrap(Bootstrap {
                    members,
                    shards: args.shards.unwrap_or(DEFAULT_SHARDS),
                    replication,
                })
            }
            (None, Some(seed)) => {
                check_address(seed)?;
                Start::Join { seed: seed.clone() }
            }
            (None, None) => Start::Resume,
        };
        Ok(ServerConfig {
            id,
            listen,
            advertise,
            data_dir,
            start,
            explicit_shards: args.shards,
            explicit_replication: args.replication,
            snapshot_bytes_per_second: args.snapshot_rate_mib.unwrap_or(64) * 1024 * 1024,
            timing,
            max_in_flight,
            metrics_listen: args.metrics_listen,
            json_logs,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServerArgs {
        let mut all = vec!["scalestore-server"];
        all.extend_from_slice(extra);
        ServerArgs::parse_from(all)
    }

    #[test]
    fn bootstrap_flags_are_checked_before_anything_starts() {
        let ok = ServerConfig::from_args(args(&[
            "--id",
            "2",
            "--listen",
            "127.0.0.1:7002",
            "--data-dir",
            "/tmp/x",
            "--initial-cluster",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
        ]))
        .expect("valid");
        match ok.start {
            Start::Bootstrap(b) => {
                assert_eq!(b.replication, 3);
                assert_eq!(b.shards, DEFAULT_SHARDS);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            vec![
                "--id",
                "4",
                "--listen",
                "127.0.0.1:7004",
                "--data-dir",
                "/tmp/x",
                "--initial-cluster",
                "1=127.0.0.1:7001",
            ],
            vec![
                "--id",
                "1",
                "--listen",
                "127.0.0.1",
                "--data-dir",
                "/tmp/x",
                "--initial-cluster",
                "1=127.0.0.1:7001",
            ],
            vec![
                "--id",
                "1",
                "--listen",
                "127.0.0.1:7001",
                "--data-dir",
                "/tmp/x",
                "--initial-cluster",
                "1=127.0.0.1:7001,1=127.0.0.1:7002",
            ],
            vec![
                "--id",
                "1",
                "--listen",
                "127.0.0.1:7001",
                "--data-dir",
                "/tmp/x",
                "--initial-cluster",
                "1=127.0.0.1:7001",
                "--replication",
                "2",
            ],
            vec![
                "--id",
                "1",
                "--listen",
                "127.0.0.1:7001",
                "--data-dir",
                "/tmp/x",
                "--initial-cluster",
                "1=127.0.0.1:7001",
                "--join",
                "127.0.0.1:7009",
            ],
            vec![
                "--id",
                "0",
                "--listen",
                "127.0.0.1:7001",
                "--data-dir",
                "/tmp/x",
            ],
            vec![
                "--id",
                "1",
                "--listen",
                "127.0.0.1:99999",
                "--data-dir",
                "/tmp/x",
            ],
        ] {
            let e = ServerConfig::from_args(args(&bad)).expect_err("refused");
            assert!(matches!(e, ServerError::Config(_)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn every_first_member_derives_the_same_cluster_id() {
        let b = |order: &str| Bootstrap {
            members: parse_members(order).expect("members"),
            shards: 8,
            replication: 3,
        };
        let a = b("1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003");
        let c = b("3=127.0.0.1:7003,1=127.0.0.1:7001,2=127.0.0.1:7002");
        assert_eq!(a.cluster_id(), c.cluster_id());
        let other = Bootstrap {
            shards: 4,
            ..a.clone()
        };
        assert_ne!(a.cluster_id(), other.cluster_id());
    }

    #[test]
    fn a_toml_file_sets_what_the_flags_leave_out() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "id = 3\nlisten = \"127.0.0.1:7003\"\ndata-dir = \"/var/lib/scalestore\"\njoin = \"127.0.0.1:7001\"\n",
        )
        .expect("write");
        let config = ServerConfig::from_args(args(&[
            "--config",
            path.to_str().expect("path"),
            "--listen",
            "127.0.0.1:7013",
        ]))
        .expect("valid");
        assert_eq!(config.id, 3);
        assert_eq!(config.listen, "127.0.0.1:7013", "flags win over the file");
        assert_eq!(
            config.start,
            Start::Join {
                seed: "127.0.0.1:7001".into()
            }
        );
        std::fs::write(&path, "identifier = 3\n").expect("write");
        let e = ServerConfig::from_args(args(&["--config", path.to_str().expect("path")]))
            .expect_err("unknown key");
        assert!(e.to_string().contains("identifier"), "{e}");
    }

    #[test]
    fn the_sample_deploy_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/scalestore.toml");
        let config = ServerConfig::from_args(args(&["--config", path])).expect("valid sample");
        assert_eq!(config.id, 1);
        assert!(config.json_logs);
        assert_eq!(config.metrics_listen.as_deref(), Some("10.0.0.1:9101"));
        assert!(matches!(config.start, Start::Bootstrap(ref b) if b.members.len() == 3));
    }
}
