//! The one place errors cross into Python: every core and server error becomes an instance of
//! one of `scalestore.errors`' classes (defined in Python so that `Timeout` can also be a
//! `TimeoutError` and `InvalidArgument` a `ValueError`), with `.kind` set to the core's stable
//! label (`not_leader`, `unknown_node`, ...).

use pyo3::exceptions::{PyException, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use scalestore_server::ServerError;

/// An error of the store, in whichever crate it arose.
#[derive(Debug)]
pub enum Failure {
    Core(scalestore::Error),
    Server(ServerError),
    /// Already a Python exception (raised by a conversion).
    Python(PyErr),
}

impl From<scalestore::Error> for Failure {
    fn from(e: scalestore::Error) -> Self {
        Failure::Core(e)
    }
}

impl From<ServerError> for Failure {
    fn from(e: ServerError) -> Self {
        match e {
            ServerError::Core(e) => Failure::Core(e),
            other => Failure::Server(other),
        }
    }
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Python(e)
    }
}

impl Failure {
    pub fn into_py(self) -> PyErr {
        match self {
            Failure::Core(e) => to_py(e),
            Failure::Server(e) => {
                let class = match &e {
                    ServerError::Unreachable { .. } | ServerError::Transport(_) => "Unavailable",
                    ServerError::Config(_) => "InvalidArgument",
                    ServerError::DataDir { .. } => "DataDirError",
                    ServerError::Io(_) => "StorageError",
                    _ => "Error",
                };
                let kind = match &e {
                    ServerError::Unreachable { .. } | ServerError::Transport(_) => "unavailable",
                    ServerError::Config(_) => "invalid_argument",
                    ServerError::DataDir { .. } => "data_dir",
                    _ => "storage",
                };
                raise(class, kind, e.to_string())
            }
            Failure::Python(e) => e,
        }
    }
}

/// The Python class of each core error.
fn class_of(e: &scalestore::Error) -> &'static str {
    use scalestore::Error as E;
    match e {
        E::NotLeader { .. }
        | E::WrongShard { .. }
        | E::GroupNotHosted { .. }
        | E::WrongNode { .. }
        | E::Unavailable(_) => "Unavailable",
        E::Timeout { .. } => "Timeout",
        E::InvalidArgument(_) | E::UnknownNode(_) => "InvalidArgument",
        E::Closed(_) => "ClosedError",
        E::DataDir { .. } => "DataDirError",
        E::SessionExpired { .. } => "SessionExpired",
        E::Storage(_) | E::Fatal { .. } => "StorageError",
        _ => "Error",
    }
}

pub fn to_py(e: scalestore::Error) -> PyErr {
    raise(class_of(&e), e.kind(), e.to_string())
}

/// `ClosedError(message)`.
pub fn closed(what: &str) -> PyErr {
    to_py(scalestore::Error::Closed(what.to_string()))
}

/// `InvalidArgument(message)` (also a `ValueError`).
pub fn invalid(message: impl Into<String>) -> PyErr {
    to_py(scalestore::Error::InvalidArgument(message.into()))
}

/// `InvalidType(message)`: an argument of the wrong type (a `TypeError` and an
/// `InvalidArgument`).
pub fn wrong_type(message: impl Into<String>) -> PyErr {
    raise("InvalidType", "invalid_argument", message.into())
}

fn raise(class: &str, kind: &str, message: String) -> PyErr {
    Python::with_gil(|py| match make(py, class, kind, &message) {
        Ok(e) => e,
        // Making it runs Python, where a pending Ctrl-C is raised: a KeyboardInterrupt (or any
        // other exception that is not an `Exception`) goes on as it is.
        Err(stop) if !stop.is_instance_of::<PyException>(py) => stop,
        Err(lookup) => PyRuntimeError::new_err(format!("{message} (and {lookup})")),
    })
}

fn make(py: Python<'_>, class: &str, kind: &str, message: &str) -> PyResult<PyErr> {
    let errors = py.import("scalestore.errors")?;
    let class = errors.getattr(class)?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("kind", kind)?;
    let value = class.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(value))
}
