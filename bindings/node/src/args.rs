//! JavaScript values in and out: consistency names, milliseconds, and the object shapes of
//! status and events (shared by the embedded cluster and every client). Types were checked by
//! the JavaScript layer; values are checked here.

use std::time::Duration;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use scalestore::{ClusterStatus, Event, ReadConsistency};

use crate::error::invalid;

pub fn consistency(name: Option<String>) -> napi::Result<ReadConsistency> {
    match name.as_deref() {
        None | Some("linearizable") => Ok(ReadConsistency::Linearizable),
        Some("lease") => Ok(ReadConsistency::Lease),
        Some("stale") => Ok(ReadConsistency::Stale),
        Some(other) => Err(invalid(format!(
            "consistency must be 'linearizable', 'lease' or 'stale', not {other:?}"
        ))),
    }
}

/// Milliseconds as a positive, finite duration.
pub fn millis(value: f64, what: &str) -> napi::Result<Duration> {
    if !value.is_finite() || value <= 0.0 || value > 1e12 {
        return Err(invalid(format!(
            "{what} must be a positive number of milliseconds, not {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value / 1000.0))
}

/// A ring position the JS side passed as a decimal string (see `position` in lib/args.js).
pub fn position(value: Option<String>) -> napi::Result<Option<u64>> {
    value
        .map(|v| {
            v.parse::<u64>().map_err(|e| {
                invalid(format!(
                    "at must be a ring position in 0..2**64, not {v}: {e}"
                ))
            })
        })
        .transpose()
}

/// A shard id as JS numbers carry it.
pub fn shard_id(id: u64) -> napi::Result<u32> {
    u32::try_from(id).map_err(|_| invalid(format!("shard id {id} does not fit a JS number here")))
}

pub fn optional_millis(value: Option<f64>, what: &str) -> napi::Result<Option<Duration>> {
    value.map(|v| millis(v, what)).transpose()
}

/// A whole number that fits in u64 (JavaScript numbers are doubles).
pub fn whole(value: f64, what: &str) -> napi::Result<u64> {
    if !value.is_finite() || value < 0.0 || value.fract() != 0.0 || value > 9_007_199_254_740_991.0
    {
        return Err(invalid(format!(
            "{what} must be a whole number from 0, not {value}"
        )));
    }
    Ok(value as u64)
}

pub fn buffer(bytes: Vec<u8>) -> Buffer {
    Buffer::from(bytes)
}

#[napi(object)]
pub struct NodeStatusJs {
    pub id: u32,
    pub alive: bool,
    pub shards: u32,
    pub leaders: u32,
}

#[napi(object)]
pub struct ShardStatusJs {
    pub id: u32,
    pub leader: Option<u32>,
    pub replicas: Vec<u32>,
    pub term: f64,
    pub commit_index: f64,
    pub applied_index: f64,
    pub size: f64,
    pub joint: bool,
}

#[napi(object)]
pub struct StatusJs {
    pub nodes: Vec<NodeStatusJs>,
    pub shards: Vec<ShardStatusJs>,
}

#[napi(object)]
pub struct EventJs {
    /// Milliseconds since the Unix epoch.
    pub time: f64,
    pub kind: String,
    pub detail: String,
}

pub fn status_js(status: &ClusterStatus) -> StatusJs {
    StatusJs {
        nodes: status
            .nodes
            .iter()
            .map(|n| NodeStatusJs {
                id: n.node as u32,
                alive: n.up,
                shards: n.shards.len() as u32,
                leaders: n.leaders as u32,
            })
            .collect(),
        shards: status
            .shards
            .iter()
            .map(|s| ShardStatusJs {
                id: s.shard as u32,
                leader: s.leader.map(|l| l as u32),
                replicas: s.replicas.iter().map(|r| *r as u32).collect(),
                term: s.term as f64,
                commit_index: s.committed_index.unwrap_or(0) as f64,
                applied_index: s.applied_index.unwrap_or(0) as f64,
                size: s.approximate_bytes as f64,
                joint: s.joint,
            })
            .collect(),
    }
}

pub fn events_js(events: &[Event]) -> Vec<EventJs> {
    events
        .iter()
        .map(|e| EventJs {
            time: e.time_ms as f64,
            kind: e.kind.clone(),
            detail: e.detail.clone(),
        })
        .collect()
}
