//! Python arguments in, Python values out: bytes or str keys and values, consistency names,
//! timeouts in seconds, and the dict shapes of status and events (shared by the embedded
//! cluster and every client).

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString};
use scalestore::{ClusterStatus, Event, ReadConsistency};

use crate::error::{invalid, wrong_type};

/// A key or value: `bytes`, `bytearray` or `str` (encoded as UTF-8).
pub fn bytes_of(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.downcast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else if let Ok(s) = value.downcast::<PyString>() {
        Ok(s.to_cow()?.as_bytes().to_vec())
    } else if let Ok(b) = value.downcast::<PyByteArray>() {
        Ok(b.to_vec())
    } else {
        Err(wrong_type(format!(
            "{what} must be bytes or str, not {}",
            value.get_type().name()?
        )))
    }
}

pub fn optional_bytes(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Vec<u8>>> {
    match value {
        Some(v) if !v.is_none() => Ok(Some(bytes_of(v, what)?)),
        _ => Ok(None),
    }
}

pub fn consistency(name: &str) -> PyResult<ReadConsistency> {
    match name {
        "linearizable" => Ok(ReadConsistency::Linearizable),
        "lease" => Ok(ReadConsistency::Lease),
        "stale" => Ok(ReadConsistency::Stale),
        other => Err(invalid(format!(
            "consistency must be \"linearizable\", \"lease\" or \"stale\", not {other:?}"
        ))),
    }
}

/// Seconds as a positive, finite duration.
pub fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    if !value.is_finite() || value <= 0.0 || value > 1e9 {
        return Err(invalid(format!(
            "{what} must be a positive number of seconds, not {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

pub fn optional_seconds(value: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    value.map(|v| seconds(v, what)).transpose()
}

pub fn py_bytes(py: Python<'_>, value: &[u8]) -> PyObject {
    PyBytes::new(py, value).into_any().unbind()
}

pub fn py_optional_bytes(py: Python<'_>, value: Option<Vec<u8>>) -> PyObject {
    match value {
        Some(v) => py_bytes(py, &v),
        None => py.None(),
    }
}

/// `{"nodes": [{"id", "alive", "shards", "leaders"}], "shards": [{"id", "leader", "replicas",
/// "term", "commit_index", "applied_index", "size", "joint"}]}`.
pub fn status_dict(py: Python<'_>, status: &ClusterStatus) -> PyResult<PyObject> {
    let nodes = PyList::empty(py);
    for n in &status.nodes {
        let d = PyDict::new(py);
        d.set_item("id", n.node)?;
        d.set_item("alive", n.up)?;
        d.set_item("shards", n.shards.len())?;
        d.set_item("leaders", n.leaders)?;
        nodes.append(d)?;
    }
    let shards = PyList::empty(py);
    for s in &status.shards {
        let d = PyDict::new(py);
        d.set_item("id", s.shard)?;
        d.set_item("leader", s.leader)?;
        d.set_item("replicas", s.replicas.clone())?;
        d.set_item("term", s.term)?;
        d.set_item("commit_index", s.committed_index.unwrap_or(0))?;
        d.set_item("applied_index", s.applied_index.unwrap_or(0))?;
        d.set_item("size", s.approximate_bytes)?;
        d.set_item("joint", s.joint)?;
        shards.append(d)?;
    }
    let out = PyDict::new(py);
    out.set_item("nodes", nodes)?;
    out.set_item("shards", shards)?;
    Ok(out.into_any().unbind())
}

/// `[{"time": Unix seconds, "kind", "detail"}]`, oldest first.
pub fn events_list(py: Python<'_>, events: &[Event]) -> PyResult<PyObject> {
    let out = PyList::empty(py);
    for e in events {
        let d = PyDict::new(py);
        d.set_item("time", e.time_ms as f64 / 1000.0)?;
        d.set_item("kind", &e.kind)?;
        d.set_item("detail", &e.detail)?;
        out.append(d)?;
    }
    Ok(out.into_any().unbind())
}
