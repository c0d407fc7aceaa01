//! `connect` (the server crate's transport.rs): a `Client` of a remote cluster over gRPC, with
//! a runtime of its own. TLS settings come as PEM contents (the Python layer reads files).

use pyo3::prelude::*;
use scalestore::ClientOptions;
use scalestore_server::TlsPem;

use crate::args::{optional_seconds, seconds};
use crate::client::PyClient;
use crate::error::{invalid, Failure};
use crate::runtime::Runtime;

#[pyfunction]
#[pyo3(signature = (endpoints, timeout=10.0, ca=None, cert=None, key=None, connect_timeout=None, attempt_timeout=None))]
#[allow(clippy::too_many_arguments)]
pub fn connect(
    py: Python<'_>,
    endpoints: Vec<String>,
    timeout: f64,
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    connect_timeout: Option<f64>,
    attempt_timeout: Option<f64>,
) -> PyResult<PyClient> {
    let endpoints = scalestore_server::transport::split_endpoints(&endpoints);
    if endpoints.is_empty() {
        return Err(invalid("no endpoint given"));
    }
    if cert.is_some() != key.is_some() {
        return Err(invalid(
            "a client certificate needs its key (cert and key go together)",
        ));
    }
    if ca.is_none() && cert.is_some() {
        return Err(invalid(
            "a client certificate needs the cluster's CA (ca=...)",
        ));
    }
    let options = ClientOptions::for_connect(
        seconds(timeout, "timeout")?,
        optional_seconds(connect_timeout, "connect_timeout")?,
        optional_seconds(attempt_timeout, "attempt_timeout")?,
    );
    let rt = Runtime::new("client", 2)?;
    let tls = ca.map(|ca| TlsPem { ca, cert, key });
    let connected = rt.wait(py, async move {
        match tls {
            Some(tls) => scalestore_server::connect_tls_pem(&endpoints, options, &tls).await,
            None => scalestore_server::connect(&endpoints, options).await,
        }
        .map_err(Failure::from)
    });
    match connected {
        Ok(client) => Ok(PyClient::new(rt, client, true)),
        Err(e) => {
            rt.shutdown(py);
            Err(e)
        }
    }
}
