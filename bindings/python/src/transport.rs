//! `connect` (the server crate's transport.rs): a `Client` of a remote cluster over gRPC, with
//! a runtime of its own. TLS settings come as PEM contents (the Python layer reads files).

use pyo3::prelude::*;
use scalestore::ClientOptions;
use scalestore_server::{Dialing, TlsPem};

use crate::args::{optional_seconds, seconds};
use crate::client::PyClient;
use crate::error::{invalid, to_py, Failure};
use crate::runtime::Runtime;

#[pyfunction]
#[pyo3(signature = (endpoints, timeout=10.0, ca=None, cert=None, key=None, connect_timeout=None, attempt_timeout=None, address_map=None, tls_server_name=None, backoff_initial=None, backoff_max=None))]
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
    address_map: Option<Vec<String>>,
    tls_server_name: Option<String>,
    backoff_initial: Option<f64>,
    backoff_max: Option<f64>,
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
    )
    .with_backoff(
        optional_seconds(backoff_initial, "backoff_initial")?,
        optional_seconds(backoff_max, "backoff_max")?,
    )
    .map_err(to_py)?;
    let dialing = Dialing {
        address_map: Dialing::parse_address_map(&address_map.unwrap_or_default())
            .map_err(|e| Failure::from(e).into_py())?,
        tls_server_name,
    };
    let rt = Runtime::new("client", 2)?;
    let tls = ca.map(|ca| TlsPem { ca, cert, key });
    let connected = rt.wait(py, async move {
        scalestore_server::connect_with(&endpoints, options, tls.as_ref(), &dialing)
            .await
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
