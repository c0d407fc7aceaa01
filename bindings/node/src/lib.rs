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
mod cluster;
mod error;
mod history;
mod load;
mod suite;
mod transport;
