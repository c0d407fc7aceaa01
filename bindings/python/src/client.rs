//! `scalestore._scalestore.Client`: the core `Client` (routing/client.rs), the same type for an
//! embedded cluster and a remote one. Every method waits (GIL released) unless given
//! `callback`, in which case it returns at once and calls `callback(ok, value)` later (the
//! asyncio client is built on that).

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyList, PyTuple};
use scalestore::client::KeyValue;
use scalestore::{History, ScanOptions};

use crate::args::{
    bytes_of, consistency, events_list, optional_bytes, optional_seconds, py_bytes,
    py_optional_bytes, status_dict,
};
use crate::error::{closed, to_py, Failure};
use crate::history::PyHistory;
use crate::runtime::Runtime;

#[pyclass(frozen, module = "scalestore._scalestore", name = "Client")]
pub struct PyClient {
    rt: Arc<Runtime>,
    client: scalestore::Client,
    /// This client's own recording (`record()`), as a recording handle of `client`.
    recording: Mutex<Option<(History, scalestore::Client)>>,
    /// A remote client owns its runtime and shuts it down at close.
    owns_runtime: bool,
}

impl PyClient {
    pub fn new(rt: Arc<Runtime>, client: scalestore::Client, owns_runtime: bool) -> Self {
        PyClient {
            rt,
            client,
            recording: Mutex::new(None),
            owns_runtime,
        }
    }

    /// The handle for one call: recording if `record()` is open, with the call's timeout.
    fn handle(&self, timeout: Option<f64>) -> PyResult<scalestore::Client> {
        if self.client.is_closed() {
            return Err(closed("client is closed"));
        }
        let base = match self.recording.lock() {
            Ok(r) => r.as_ref().map(|(_, c)| c.clone()),
            Err(_) => None,
        }
        .unwrap_or_else(|| self.client.clone());
        Ok(match optional_seconds(timeout, "timeout")? {
            Some(t) => base.with_timeout(t),
            None => base,
        })
    }
}

/// `(key, value)` pairs from an iterable of 2-item tuples or lists.
fn pairs_of(pairs: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let wrong =
        || crate::error::wrong_type("items must be a mapping or an iterable of (key, value) pairs");
    let mut out = Vec::new();
    for pair in pairs.try_iter().map_err(|_| wrong())? {
        let pair = pair?;
        let (key, value) = if let Ok(t) = pair.downcast::<PyTuple>() {
            if t.len() != 2 {
                return Err(crate::error::wrong_type(
                    "each item must be a (key, value) pair",
                ));
            }
            (t.get_item(0)?, t.get_item(1)?)
        } else if let Ok(l) = pair.downcast::<PyList>() {
            if l.len() != 2 {
                return Err(crate::error::wrong_type(
                    "each item must be a (key, value) pair",
                ));
            }
            (l.get_item(0)?, l.get_item(1)?)
        } else {
            return Err(crate::error::wrong_type(
                "each item must be a (key, value) pair",
            ));
        };
        out.push((bytes_of(&key, "key")?, bytes_of(&value, "value")?));
    }
    Ok(out)
}

fn pairs_list(py: Python<'_>, items: Vec<KeyValue>) -> PyResult<PyObject> {
    let list = PyList::empty(py);
    for (k, v) in items {
        list.append(PyTuple::new(py, [py_bytes(py, &k), py_bytes(py, &v)])?)?;
    }
    Ok(list.into_any().unbind())
}

#[allow(clippy::too_many_arguments)]
fn scan_options(
    start: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
    prefix: Option<&Bound<'_, PyAny>>,
    read: &str,
    cursor: Option<&Bound<'_, PyAny>>,
    page: usize,
) -> PyResult<ScanOptions> {
    Ok(ScanOptions {
        start: optional_bytes(start, "start")?,
        end: optional_bytes(end, "end")?,
        prefix: optional_bytes(prefix, "prefix")?,
        limit: page,
        consistency: consistency(read)?,
        cursor: optional_bytes(cursor, "cursor")?,
    })
}

#[pymethods]
impl PyClient {
    #[pyo3(signature = (key, value, timeout=None, callback=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let (key, value) = (bytes_of(key, "key")?, bytes_of(value, "value")?);
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.put(key, value).await.map_err(Failure::from) },
            Box::new(|py, ()| Ok(py.None())),
        )
    }

    #[pyo3(signature = (key, consistency="linearizable", timeout=None, callback=None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        consistency: &str,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let key = bytes_of(key, "key")?;
        let read = crate::args::consistency(consistency)?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.get_with(key, read).await.map_err(Failure::from) },
            Box::new(|py, v| Ok(py_optional_bytes(py, v))),
        )
    }

    #[pyo3(signature = (key, timeout=None, callback=None))]
    fn delete(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let key = bytes_of(key, "key")?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.delete(key).await.map_err(Failure::from) },
            Box::new(|py, existed| Ok(PyBool::new(py, existed).to_owned().into_any().unbind())),
        )
    }

    /// Deletes every key starting with `prefix`; the count (per shard atomic).
    #[pyo3(signature = (prefix, timeout=None, callback=None))]
    fn delete_prefix(
        &self,
        py: Python<'_>,
        prefix: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let prefix = bytes_of(prefix, "prefix")?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.delete_prefix(prefix).await.map_err(Failure::from) },
            Box::new(|py, count| Ok(count.into_pyobject(py)?.into_any().unbind())),
        )
    }

    #[pyo3(signature = (key, value, timeout=None, callback=None))]
    fn append(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let (key, value) = (bytes_of(key, "key")?, bytes_of(value, "value")?);
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.append(key, value).await.map_err(Failure::from) },
            Box::new(|py, len| Ok(len.into_pyobject(py)?.into_any().unbind())),
        )
    }

    #[pyo3(signature = (key, expected, new, timeout=None, callback=None))]
    fn cas(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        expected: Option<&Bound<'_, PyAny>>,
        new: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let key = bytes_of(key, "key")?;
        let expected = optional_bytes(expected, "expected")?;
        let new = bytes_of(new, "new")?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move {
                c.cas(key, expected.as_deref(), new)
                    .await
                    .map_err(Failure::from)
            },
            // (success, the value after the operation): the Python layer returns what the
            // caller asked for (`return_current`).
            Box::new(|py, outcome| {
                let success = PyBool::new(py, outcome.success).to_owned().into_any();
                let current = py_optional_bytes(py, outcome.current).into_bound(py);
                Ok(PyTuple::new(py, [success, current])?.into_any().unbind())
            }),
        )
    }

    /// Every matching pair (up to `limit`), in key order.
    #[pyo3(signature = (start=None, end=None, prefix=None, limit=None, consistency="linearizable", timeout=None, callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        py: Python<'_>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        prefix: Option<&Bound<'_, PyAny>>,
        limit: Option<i64>,
        consistency: &str,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let limit = match limit {
            Some(l) if l < 0 => {
                return Err(crate::error::invalid(format!(
                    "limit must be at least 0, not {l}"
                )))
            }
            Some(l) => Some(l as usize),
            None => None,
        };
        let options = scan_options(start, end, prefix, consistency, None, 1000)?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.scan_up_to(&options, limit).await.map_err(Failure::from) },
            Box::new(pairs_list),
        )
    }

    /// One page: `(pairs, cursor)`; pass `cursor` back for the next page (None: no more).
    #[pyo3(signature = (start=None, end=None, prefix=None, consistency="linearizable", cursor=None, page=1000, timeout=None, callback=None))]
    #[allow(clippy::too_many_arguments)]
    fn scan_page(
        &self,
        py: Python<'_>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        prefix: Option<&Bound<'_, PyAny>>,
        consistency: &str,
        cursor: Option<&Bound<'_, PyAny>>,
        page: usize,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let options = scan_options(start, end, prefix, consistency, cursor, page)?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.scan(&options).await.map_err(Failure::from) },
            Box::new(|py, page| {
                let items = pairs_list(py, page.items)?;
                let cursor = py_optional_bytes(py, page.cursor);
                Ok(PyTuple::new(py, [items, cursor])?.into_any().unbind())
            }),
        )
    }

    #[pyo3(signature = (keys, consistency="linearizable", timeout=None, callback=None))]
    fn get_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        consistency: &str,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        if keys.is_instance_of::<pyo3::types::PyString>()
            || keys.is_instance_of::<pyo3::types::PyBytes>()
        {
            return Err(crate::error::wrong_type(
                "keys must be an iterable of keys, not a single str or bytes",
            ));
        }
        let keys: Vec<Vec<u8>> = keys
            .try_iter()
            .map_err(|_| crate::error::wrong_type("keys must be an iterable of bytes or str"))?
            .map(|k| bytes_of(&k?, "key"))
            .collect::<PyResult<_>>()?;
        let read = crate::args::consistency(consistency)?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.batch_get(&keys, read).await.map_err(Failure::from) },
            Box::new(|py, values| {
                let list = PyList::empty(py);
                for v in values {
                    list.append(py_optional_bytes(py, v))?;
                }
                Ok(list.into_any().unbind())
            }),
        )
    }

    /// Converts every `(key, value)` pair and checks it against the store's caps, writing
    /// nothing: the Python layer calls it on the whole input before sending the first chunk, so
    /// bad input anywhere in a large `put_many` writes nothing.
    fn check_pairs(&self, py: Python<'_>, pairs: &Bound<'_, PyAny>) -> PyResult<PyObject> {
        let converted = pairs_of(pairs)?;
        let limits = self.client.limits();
        let list = PyList::empty(py);
        for (key, value) in &converted {
            limits.check_key(key).map_err(to_py)?;
            limits.check_value(value).map_err(to_py)?;
            list.append(PyTuple::new(py, [py_bytes(py, key), py_bytes(py, value)])?)?;
        }
        Ok(list.into_any().unbind())
    }

    /// Writes a list of `(key, value)` pairs (the Python layer turns mappings into pairs).
    #[pyo3(signature = (pairs, timeout=None, callback=None))]
    fn put_many(
        &self,
        py: Python<'_>,
        pairs: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let out = pairs_of(pairs)?;
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.put_many(&out).await.map_err(Failure::from) },
            Box::new(|py, ()| Ok(py.None())),
        )
    }

    #[pyo3(signature = (timeout=None, callback=None))]
    fn status(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.cluster_status().await.map_err(Failure::from) },
            Box::new(|py, s| status_dict(py, &s)),
        )
    }

    /// Splits `shard` online at ring position `at` (default: the middle of its largest range);
    /// the new shard's id.
    #[pyo3(signature = (shard, at=None, timeout=None, callback=None))]
    fn split(
        &self,
        py: Python<'_>,
        shard: u64,
        at: Option<u64>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.split(shard, at).await.map_err(Failure::from) },
            Box::new(|py, done| Ok(done.child.into_pyobject(py)?.into_any().unbind())),
        )
    }

    #[pyo3(signature = (timeout=None, callback=None))]
    fn events(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        callback: Option<PyObject>,
    ) -> PyResult<PyObject> {
        let c = self.handle(timeout)?;
        self.rt.run(
            py,
            callback,
            async move { c.events().await.map_err(Failure::from) },
            Box::new(|py, e| events_list(py, &e)),
        )
    }

    /// Starts recording this client's operations into a new history.
    fn start_recording(&self) -> PyResult<PyHistory> {
        let history = History::new();
        let handle = self.client.recording(&history);
        if let Ok(mut r) = self.recording.lock() {
            *r = Some((history.clone(), handle));
        }
        Ok(PyHistory::from(history))
    }

    fn stop_recording(&self) {
        if let Ok(mut r) = self.recording.lock() {
            *r = None;
        }
    }

    /// The node this client is pinned to, if any.
    #[getter]
    fn node(&self) -> Option<u64> {
        self.client.pinned_node()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.client.is_closed() || self.rt.is_shut_down()
    }

    /// Later calls raise ClosedError. Safe to call twice.
    fn close(&self, py: Python<'_>) {
        self.client.close();
        if self.owns_runtime {
            self.rt.shutdown(py);
        }
    }
}
