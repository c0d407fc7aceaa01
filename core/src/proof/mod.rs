//! Evidence that the store keeps its promises: recorded histories, the linearizability checker,
//! and the seeded fault suite that produces and checks them.

pub mod checker;
pub mod history;
#[cfg(feature = "embedded")]
pub mod suite;
