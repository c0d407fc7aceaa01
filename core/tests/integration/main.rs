//! The core's integration tests, one module per concern, in one test binary: each `tests/*.rs`
//! file would be a binary of its own, compiled, optimized and linked separately. Two stay
//! apart: `fault_suite` (its runs take the machine one at a time) and `snapshot_memory` (it
//! measures this process's resident memory).
//!
//! Run one concern with a filter, e.g. `cargo test --test integration fault_tolerance::`.

mod client_routing;
mod exactly_once;
mod fault_tolerance;
mod membership_safety;
mod recording;
mod replicated_group;
mod shard_manager;
mod sharding;
mod splits;
mod storage_suite;
