//! The native core of the `agentid` Python package (`agentid._native`).
//!
//! It binds the Rust SDK's blocking facade (`agentid::blocking`) and the protocol
//! crate: agents (`Agent`), relying parties (`RelyingParty`, offline checks) and
//! the protocol's building blocks. The pure-Python package around it adds only
//! what is Pythonic (the `Decision` class, the `requires` decorator, exceptions,
//! the LangChain integration); every check and every signature is made here, by
//! the same code as the Rust SDK and the server. Network calls release the GIL.
//! Errors become the Python exceptions of `agentid.exceptions` through one
//! conversion (`error::to_py_err`).

use pyo3::prelude::*;

mod agent;
mod convert;
mod error;
mod protocol;
mod relying_party;

/// The native core of the agentid package: the Rust SDK's agent, relying party
/// and protocol checks. Use it through `agentid`; its API may change.
#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_class::<agent::Agent>()?;
    module.add_class::<relying_party::RelyingParty>()?;
    module.add_function(wrap_pyfunction!(
        relying_party::verify_action_envelope,
        module
    )?)?;
    module.add_function(wrap_pyfunction!(
        relying_party::verify_agent_token_with,
        module
    )?)?;
    module.add_function(wrap_pyfunction!(
        relying_party::verify_receipt_with,
        module
    )?)?;
    module.add_function(wrap_pyfunction!(protocol::pae, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::public_key_info, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::public_key_from_seed, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::sign_action_envelope, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::check_envelope, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::canonical_json, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::args_digest, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::decision_reasons, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::policy_reasons, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::protocol_errors, module)?)?;
    module.add_function(wrap_pyfunction!(protocol::error_codes, module)?)?;
    Ok(())
}
