//! ScaleStore for Node.js: thin napi-rs wrappers over the core, one file per core module they
//! wrap (cluster.rs wraps embedded/cluster.rs, client.rs wraps routing/client.rs, ...). The
//! public Promise API, argument checks and `ScaleStoreError` live in `node/lib/`; every error
//! crosses in error.rs. Async calls run on napi-rs's tokio runtime, off the event loop.

mod args;
mod checker;
mod client;
mod cluster;
mod error;
mod history;
mod load;
mod suite;
mod transport;
