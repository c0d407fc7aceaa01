//! ScaleStore for Node.js: thin napi-rs wrappers over the core, one file per core module they
//! wrap (cluster.rs wraps embedded/cluster.rs, client.rs wraps routing/client.rs, ...). The
//! public Promise API, argument checks and `ScaleStoreError` live in `node/lib/`; every error
//! crosses in error.rs. Async calls run on napi-rs's tokio runtime, off the event loop.

// `#[napi]` registers exports only outside `cfg(test)`; `cargo test --all-targets` still builds
// this lib's test harness, where every export would look unused.
#![cfg_attr(test, allow(dead_code))]

mod args;
mod checker;
mod client;
#[cfg(feature = "embedded")]
mod cluster;
mod error;
mod history;
mod load;
#[cfg(feature = "embedded")]
mod suite;
mod transport;

/// Whether this build carries the embedded cluster (the `embedded` cargo feature).
#[napi_derive::napi]
pub fn embedded() -> bool {
    cfg!(feature = "embedded")
}
