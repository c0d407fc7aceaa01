//! `run_suite` (proof/suite.rs): one seeded fault-suite run on a fresh embedded cluster, every
//! check of the Rust suite, reported as a dict (the Python layer wraps it in `SuiteReport`).

use std::str::FromStr;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use scalestore::suite::{self, Nemesis, RunOptions};

use crate::args::seconds;
use crate::checker::describe;
use crate::error::{to_py, Failure};
use crate::history::PyHistory;
use crate::runtime::Runtime;

/// The nemeses' kebab-case names.
#[pyfunction]
pub fn nemeses() -> Vec<&'static str> {
    Nemesis::ALL.iter().map(Nemesis::name).collect()
}

#[pyfunction]
#[pyo3(signature = (nemesis, seed=1, seconds=5.0))]
pub fn run_suite(py: Python<'_>, nemesis: &str, seed: u64, seconds: f64) -> PyResult<PyObject> {
    let nemesis = Nemesis::from_str(nemesis).map_err(to_py)?;
    let duration = self::seconds(seconds, "seconds")?;
    let rt = Runtime::new("suite", 2)?;
    let options = RunOptions {
        nemesis,
        seed,
        duration,
        ..RunOptions::default()
    };
    let report = rt.wait(py, async move {
        suite::run(options).await.map_err(Failure::from)
    });
    rt.shutdown(py);
    let report = report?;
    let (verdict, counterexample) = describe(&report.verdict);
    let d = PyDict::new(py);
    d.set_item("nemesis", report.nemesis.name())?;
    d.set_item("seed", report.seed)?;
    d.set_item("passed", report.passed())?;
    d.set_item("verdict", verdict)?;
    d.set_item("counterexample", counterexample)?;
    d.set_item("operations", report.operations)?;
    d.set_item("acknowledged", report.acknowledged_operations)?;
    d.set_item("unknown", report.unknown_operations)?;
    d.set_item("lost", report.lost_appends.len())?;
    d.set_item("duplicated", report.duplicated_appends.len())?;
    d.set_item("lost_appends", report.lost_appends.clone())?;
    d.set_item("duplicated_appends", report.duplicated_appends.clone())?;
    d.set_item("recovery_s", report.recovery.map(|r| r.as_secs_f64()))?;
    d.set_item("recovery_bound_s", report.recovery_bound.as_secs_f64())?;
    let stale = PyDict::new(py);
    stale.set_item("reads", report.stale.reads)?;
    stale.set_item("max_entries_behind", report.stale.max_entries_behind)?;
    stale.set_item("mean_entries_behind", report.stale.mean_entries_behind)?;
    stale.set_item("max_ms_behind", report.stale.max_ms_behind)?;
    stale.set_item("mean_ms_behind", report.stale.mean_ms_behind)?;
    d.set_item("stale", stale)?;
    d.set_item("snapshots_installed", report.snapshots_installed)?;
    d.set_item("placement_problems", report.placement_problems.clone())?;
    d.set_item("definite_failures", report.definite_failures.clone())?;
    d.set_item("min_key_ops_per_second", report.min_key_ops_per_second)?;
    d.set_item("summary", report.to_string())?;
    d.set_item("history", Py::new(py, PyHistory::from(report.history))?)?;
    Ok(d.into_any().unbind())
}
