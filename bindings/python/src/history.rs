//! `scalestore._scalestore.History`: a recorded history (proof/history.rs), live while its
//! recording is open, as JSON lines or dicts with the fields of those lines.

use pyo3::prelude::*;
use pyo3::types::PyList;
use scalestore::History;

use crate::error::to_py;

#[pyclass(frozen, module = "scalestore._scalestore", name = "History")]
pub struct PyHistory {
    pub history: History,
    /// Operations read from JSON lines (a history recorded elsewhere).
    pub loaded: Option<Vec<scalestore::Operation>>,
}

impl From<History> for PyHistory {
    fn from(history: History) -> Self {
        PyHistory {
            history,
            loaded: None,
        }
    }
}

impl PyHistory {
    pub fn operations(&self) -> Vec<scalestore::Operation> {
        match &self.loaded {
            Some(ops) => ops.clone(),
            None => self.history.operations(),
        }
    }
}

#[pymethods]
impl PyHistory {
    /// A history read from JSON lines (as `to_jsonl` writes them).
    #[staticmethod]
    fn from_jsonl(text: &str) -> PyResult<PyHistory> {
        let ops = History::from_jsonl(text).map_err(to_py)?;
        Ok(PyHistory {
            history: History::new(),
            loaded: Some(ops),
        })
    }

    /// One JSON object per line, one line per operation, in completion order.
    fn to_jsonl(&self) -> String {
        match &self.loaded {
            Some(ops) => History::jsonl_of(ops),
            None => self.history.to_jsonl(),
        }
    }

    /// The operations as dicts (the JSON lines' fields).
    fn operations_list(&self, py: Python<'_>) -> PyResult<PyObject> {
        let loads = py.import("json")?.getattr("loads")?;
        let list = PyList::empty(py);
        for op in self.operations() {
            let line = serde_json::to_string(&op)
                .map_err(|e| crate::error::invalid(format!("cannot encode an operation: {e}")))?;
            list.append(loads.call1((line,))?)?;
        }
        Ok(list.into_any().unbind())
    }

    fn __len__(&self) -> usize {
        match &self.loaded {
            Some(ops) => ops.len(),
            None => self.history.len(),
        }
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<PyObject> {
        let list = self.operations_list(py)?;
        Ok(list.bind(py).try_iter()?.into_any().unbind())
    }

    fn __repr__(&self) -> String {
        format!("<scalestore.History of {} operations>", self.__len__())
    }
}
