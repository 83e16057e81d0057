//! The native core of the `agentid` Python package.
//!
//! The Python package keeps no logic of its own: everything it does is a call into
//! this module, which wraps the Rust SDK. Today it exposes the package version and
//! the server's stable error codes; the agent API is added on top of the Rust SDK.

use pyo3::prelude::*;

/// The server's stable error codes, in documentation order.
#[pyfunction]
fn error_codes() -> Vec<&'static str> {
    agentid_protocol::ErrorCode::ALL
        .iter()
        .map(|code| code.as_str())
        .collect()
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(error_codes, module)?)?;
    Ok(())
}
