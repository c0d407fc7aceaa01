//! How Python waits for the core's async calls. Each `Cluster` and each remote `Client` owns
//! its own tokio runtime (no global one, so many clusters live in one process and a forked child
//! is not left holding threads it does not have). A blocking call spawns its future there and
//! waits with the GIL released, looking for Ctrl-C every 50 ms; it never blocks a runtime thread
//! on the GIL. An awaitable call hands the result to one Python thread of the runtime's own,
//! which calls the caller's callback (the asyncio side sets its future from there).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

use crate::error::{closed, to_py, Failure};

type Job = Box<dyn FnOnce(Python<'_>) + Send>;

/// Turns a call's value into a Python object (run with the GIL).
pub type Convert<T> = Box<dyn FnOnce(Python<'_>, T) -> PyResult<PyObject> + Send>;

pub struct Runtime {
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    /// Jobs for the thread that runs callbacks with the GIL.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// Callbacks of awaitable calls not yet answered: at shutdown each is answered with
    /// ClosedError, so no awaiting coroutine is left hanging.
    pending: Arc<Mutex<HashMap<u64, PyObject>>>,
    next_call: AtomicU64,
    /// The process that made this runtime: in a forked child its threads do not exist.
    pid: u32,
}

impl Runtime {
    pub fn new(name: &str, workers: usize) -> PyResult<Arc<Runtime>> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(format!("scalestore-{name}"))
            .enable_all()
            .build()
            .map_err(|e| {
                to_py(scalestore::Error::Unavailable(format!(
                    "cannot start a runtime: {e}"
                )))
            })?;
        let handle = tokio.handle().clone();
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("scalestore-{name}-py"))
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    Python::with_gil(job);
                }
            })
            .map_err(|e| {
                to_py(scalestore::Error::Unavailable(format!(
                    "cannot start a thread: {e}"
                )))
            })?;
        Ok(Arc::new(Runtime {
            tokio: Mutex::new(Some(tokio)),
            handle,
            jobs: Mutex::new(Some(tx)),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_call: AtomicU64::new(0),
            pid: std::process::id(),
        }))
    }

    /// Refuses use from a forked child (its runtime threads stayed in the parent) or after
    /// shutdown.
    pub fn check(&self) -> PyResult<()> {
        if std::process::id() != self.pid {
            return Err(to_py(scalestore::Error::Closed(
                "this object was created in the parent process before fork(); create a new one in the child".into(),
            )));
        }
        if self.is_shut_down() {
            return Err(closed("closed"));
        }
        Ok(())
    }

    pub fn is_shut_down(&self) -> bool {
        self.tokio.lock().map(|t| t.is_none()).unwrap_or(true)
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `future` to completion on the runtime. Without `callback`: waits (GIL released,
    /// Ctrl-C honoured: the call is abandoned and KeyboardInterrupt raised) and returns the
    /// converted value. With `callback`: returns None at once; `callback(True, value)` or
    /// `callback(False, exception)` is called later from the runtime's Python thread.
    pub fn run<T, F>(
        &self,
        py: Python<'_>,
        callback: Option<PyObject>,
        future: F,
        convert: Convert<T>,
    ) -> PyResult<PyObject>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        self.check()?;
        match callback {
            None => {
                let value = self.wait(py, future)?;
                convert(py, value)
            }
            Some(callback) => {
                let jobs = self
                    .jobs
                    .lock()
                    .ok()
                    .and_then(|j| j.clone())
                    .ok_or_else(|| closed("closed"))?;
                let id = self.next_call.fetch_add(1, Ordering::Relaxed);
                lock(&self.pending).insert(id, callback);
                let pending = Arc::clone(&self.pending);
                self.handle.spawn(async move {
                    let result = future.await;
                    let job: Job = Box::new(move |py| {
                        // Taken under the lock: shutdown may have answered it already.
                        let Some(callback) = lock(&pending).remove(&id) else {
                            return;
                        };
                        let outcome = result
                            .map_err(Failure::into_py)
                            .and_then(|v| convert(py, v));
                        let call = match outcome {
                            Ok(value) => callback.call1(py, (true, value)),
                            Err(e) => callback.call1(py, (false, e.value(py).clone())),
                        };
                        if let Err(e) = call {
                            e.write_unraisable(py, None);
                        }
                    });
                    let _ = jobs.send(job);
                });
                Ok(py.None())
            }
        }
    }

    /// Waits for `future` with the GIL released, checking for signals between slices. Each time
    /// it takes the GIL back, pyo3 first releases the Python objects dropped meanwhile without
    /// it: Python code run then (a finalizer) would take a pending Ctrl-C with it, so this module
    /// never drops a Python object without the GIL (see `Drop for Runtime`).
    pub fn wait<T, F>(&self, py: Python<'_>, future: F) -> PyResult<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        self.check()?;
        let (tx, rx) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        let mut rx = rx;
        loop {
            let (got, back) = py.allow_threads(move || {
                let got = rx.recv_timeout(Duration::from_millis(50));
                (got, rx)
            });
            rx = back;
            match got {
                Ok(result) => return result.map_err(Failure::into_py),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(interrupt) = py.check_signals() {
                        task.abort();
                        return Err(interrupt);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(closed("the call was abandoned: the runtime shut down"));
                }
            }
        }
    }

    /// Stops the runtime (tasks still running are dropped). Safe to call twice; in a forked
    /// child it only forgets the parent's runtime.
    pub fn shutdown(&self, py: Python<'_>) {
        let tokio = self.tokio.lock().ok().and_then(|mut t| t.take());
        let jobs = self.jobs.lock().ok().and_then(|mut j| j.take());
        if std::process::id() != self.pid {
            std::mem::forget(tokio);
            std::mem::forget(jobs);
            return;
        }
        drop(jobs);
        if let Some(tokio) = tokio {
            py.allow_threads(|| tokio.shutdown_timeout(Duration::from_secs(5)));
        }
        let unanswered: Vec<PyObject> = lock(&self.pending).drain().map(|(_, c)| c).collect();
        for callback in unanswered {
            let error =
                closed("closed while the call was in flight; it may or may not have been applied");
            if let Err(e) = callback.call1(py, (false, error.value(py).clone())) {
                e.write_unraisable(py, None);
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let tokio = self.tokio.get_mut().ok().and_then(Option::take);
        if std::process::id() != self.pid {
            std::mem::forget(tokio);
            if let Ok(jobs) = self.jobs.get_mut() {
                std::mem::forget(jobs.take());
            }
            return;
        }
        // Callbacks of calls still in flight are released here, by the Python object that owned
        // this runtime. Left to the tasks, a runtime thread would drop them without the GIL and
        // pyo3 would release them when some thread next takes it: maybe the main thread between
        // two slices of `wait`, where a finalizer running Python swallows a pending Ctrl-C.
        let abandoned: Vec<PyObject> = lock(&self.pending).drain().map(|(_, c)| c).collect();
        if !abandoned.is_empty() {
            Python::with_gil(|_| drop(abandoned));
        }
        if let Some(tokio) = tokio {
            tokio.shutdown_background();
        }
    }
}

/// The pending-callback map stays usable even if a thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
