//! ScaleStore over gRPC: the same core as a networked service.
//!
//! - [`peer`]: node-to-node traffic (one long-lived stream per node pair, batched) and the
//!   internal service; [`transport`]: the Rust client's gRPC `Transport`.
//! - [`kv`] and [`admin`]: the public `scalestore.v1` services; [`convert`]: core <-> proto.
//! - [`serve`]: serving one node ([`serve::serve_node`]) or every node of an embedded cluster
//!   ([`serve::serve_embedded`]); [`process`]: the `scalestore-server` process (bootstrap, join,
//!   restart, graceful stop); [`config`]: its flags and TOML file; [`cli`]: the `scalestore` CLI;
//!   [`bench`]: `scalestore bench` (embedded, ScaleStore servers or etcd, one load generator).

// tonic's handlers return `Result<_, tonic::Status>` by contract; helpers that feed them do too.
#![allow(clippy::result_large_err)]

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod convert;
pub mod dev;
pub mod error;
pub mod kv;
pub mod metrics;
pub mod peer;
pub mod process;
pub mod serve;
pub mod tls;
pub mod transport;

/// The generated `scalestore.v1` protobuf types and gRPC stubs (also for plain clients).
pub mod proto {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("scalestore.v1");
}

pub use error::{ServerError, ServerResult};
pub use serve::{serve_embedded, ServedCluster};
pub use tls::{TlsFiles, TlsPem};
pub use transport::{connect, connect_tls, connect_tls_pem, connect_with, Dialing, GrpcTransport};
