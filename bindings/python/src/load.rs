//! `LoadRun` (load.rs): load generated and measured in Rust while Python looks on.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use scalestore::{LoadReport, LoadRun};

use crate::error::closed;
use crate::runtime::Runtime;

#[pyclass(frozen, module = "scalestore._scalestore", name = "LoadRun")]
pub struct PyLoadRun {
    rt: Arc<Runtime>,
    run: Mutex<Option<LoadRun>>,
}

impl PyLoadRun {
    pub fn new(rt: Arc<Runtime>, run: LoadRun) -> Self {
        PyLoadRun {
            rt,
            run: Mutex::new(Some(run)),
        }
    }
}

fn report_dict(py: Python<'_>, r: &LoadReport) -> PyResult<PyObject> {
    let d = PyDict::new(py);
    d.set_item("ops_per_s", r.ops_per_s)?;
    d.set_item("operations", r.operations)?;
    d.set_item("p50_ms", r.p50_ms)?;
    d.set_item("p90_ms", r.p90_ms)?;
    d.set_item("p99_ms", r.p99_ms)?;
    d.set_item("p999_ms", r.p999_ms)?;
    d.set_item("errors", r.errors)?;
    d.set_item("seconds", r.seconds)?;
    let timeline = PyList::empty(py);
    for row in &r.timeline {
        let t = PyDict::new(py);
        t.set_item("t", row.t)?;
        t.set_item("ops", row.ops)?;
        t.set_item("p50_ms", row.p50_ms)?;
        t.set_item("p99_ms", row.p99_ms)?;
        t.set_item("errors", row.errors)?;
        timeline.append(t)?;
    }
    d.set_item("timeline", timeline)?;
    Ok(d.into_any().unbind())
}

#[pymethods]
impl PyLoadRun {
    /// Stops the load and returns its report as a dict. A second call raises ClosedError.
    fn stop(&self, py: Python<'_>) -> PyResult<PyObject> {
        let run = self
            .run
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .ok_or_else(|| closed("this load run was already stopped"))?;
        let report = self.rt.wait(py, async move { Ok(run.stop().await) })?;
        report_dict(py, &report)
    }

    /// Seconds since the load started.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.run
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|r| r.elapsed().as_secs_f64()))
            .unwrap_or(0.0)
    }

    #[getter]
    fn running(&self) -> bool {
        self.run.lock().map(|r| r.is_some()).unwrap_or(false)
    }
}
