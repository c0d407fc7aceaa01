//! `scalestore._scalestore`: the core's types for Python, wrapped thinly. The public API (the
//! `scalestore` package in python/) is built on these; behaviour lives in the core. One file per
//! core module wrapped (cluster, client, history, checker, suite, load, transport), errors
//! converted in error.rs, waiting on the runtime in runtime.rs.

mod args;
mod checker;
mod client;
#[cfg(feature = "embedded")]
mod cluster;
mod error;
mod history;
mod load;
mod logging;
mod runtime;
#[cfg(feature = "embedded")]
mod suite;
mod transport;

use pyo3::prelude::*;

#[pymodule]
fn _scalestore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    #[cfg(feature = "embedded")]
    m.add_class::<cluster::PyCluster>()?;
    m.add_class::<client::PyClient>()?;
    m.add_class::<history::PyHistory>()?;
    m.add_class::<load::PyLoadRun>()?;
    m.add_function(wrap_pyfunction!(transport::connect, m)?)?;
    m.add_function(wrap_pyfunction!(checker::check_history, m)?)?;
    #[cfg(feature = "embedded")]
    {
        m.add_function(wrap_pyfunction!(suite::run_suite, m)?)?;
        m.add_function(wrap_pyfunction!(suite::nemeses, m)?)?;
    }
    // Whether this build carries the embedded cluster (the `embedded` cargo feature).
    m.add("EMBEDDED", cfg!(feature = "embedded"))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
