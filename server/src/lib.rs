//! ScaleStore over gRPC: the same core as a networked service.
//!
//! - [`wire`]: what every link shares (dialing, frames, metadata); [`peer`]: node-to-node traffic (one long-lived stream per node pair, batched) and the
//!   internal service; [`transport`]: the Rust client's gRPC `Transport`.
//! - [`kv`] and [`admin`]: the public `scalestore.v1` services; [`convert`]: core <-> proto.
//! - [`serve`]: serving one node ([`serve::serve_node`]) or every node of an embedded cluster
//!   ([`serve::serve_embedded`]); [`process`]: the `scalestore-server` process (bootstrap, join,
//!   restart, graceful stop); [`config`]: its flags and TOML file; [`cli`]: the `scalestore` CLI;
//!   [`bench`]: `scalestore bench` (embedded, ScaleStore servers or etcd, one load generator).

// tonic's handlers return `Result<_, tonic::Status>` by contract; helpers that feed them do too.
#![allow(clippy::result_large_err)]

// Without the `embedded` feature (on by default) the crate is the gRPC client alone: the
// transport, TLS, the wire format and the protobuf types, with no node, server or CLI (and no
// RocksDB), for the client-only Python and Node packages.
#[cfg(feature = "embedded")]
pub mod admin;
#[cfg(feature = "embedded")]
pub mod bench;
#[cfg(feature = "embedded")]
pub mod cli;
pub mod config;
pub mod convert;
#[cfg(feature = "embedded")]
pub mod dev;
pub mod error;
#[cfg(feature = "embedded")]
pub mod kv;
#[cfg(feature = "embedded")]
pub mod metrics;
#[cfg(feature = "embedded")]
pub mod peer;
#[cfg(feature = "embedded")]
pub mod process;
#[cfg(feature = "embedded")]
pub mod serve;
pub mod tls;
pub mod transport;
pub mod wire;

/// The generated `scalestore.v1` protobuf types and gRPC stubs (also for plain clients).
pub mod proto {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("scalestore.v1");
}

pub use error::{ServerError, ServerResult};
#[cfg(feature = "embedded")]
pub use serve::{serve_embedded, ServedCluster};
pub use tls::{TlsFiles, TlsPem};
pub use transport::{connect, connect_tls, connect_tls_pem, connect_with, Dialing, GrpcTransport};
