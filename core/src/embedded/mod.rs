//! Many nodes in one process: the embedded cluster, its in-process network, and the fault
//! controller that network applies to every message.

pub mod cluster;
pub mod faults;
pub mod inproc;
