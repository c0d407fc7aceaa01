//! The server's tests with real processes and gRPC, one module per concern, in one test binary
//! (each file listed in server/Cargo.toml would be a binary of its own, compiled and linked
//! separately). `production` stays apart: its tests need root (network namespaces, tc) and
//! take the machine for their timing checks.
//!
//! Run one concern with a filter, e.g. `cargo test -p scalestore-server --test servers processes::`.

mod support;

mod bench;
mod processes;
mod served_embedded;
