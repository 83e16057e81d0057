//! The one conversion from a failure of the Rust SDK (or of a protocol check) to
//! a Python exception.
//!
//! The exception classes are defined in Python (`agentid/exceptions.py`); this
//! module only picks the class and fills in its attributes (`code`, `message`,
//! `request_id`, `status`, `kind`, and `retry_after` or `stage` where they apply).
//! It must never put a secret (key, token, API key, passphrase) in an exception:
//! the SDK's errors carry none, and nothing else is added here.

use agentid_protocol::ProtocolError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Everything the native module can fail with. Every `#[pyfunction]` and method
/// returns `Result<_, NativeError>`; PyO3 turns it into a Python exception with
/// [`to_py_err`].
#[derive(Debug)]
pub enum NativeError {
    /// A failure of the Rust SDK.
    Sdk(agentid::Error),
    /// A signed statement refused by the protocol's rules at `stage` (`parse`,
    /// `payload`, `key` or `verify`).
    Protocol {
        stage: &'static str,
        error: ProtocolError,
    },
    /// An exception raised by Python code the module called.
    Python(PyErr),
}

impl From<agentid::Error> for NativeError {
    fn from(error: agentid::Error) -> Self {
        NativeError::Sdk(error)
    }
}

impl From<PyErr> for NativeError {
    fn from(error: PyErr) -> Self {
        NativeError::Python(error)
    }
}

impl From<NativeError> for PyErr {
    fn from(error: NativeError) -> PyErr {
        Python::with_gil(|py| to_py_err(py, error))
    }
}

/// An `InvalidInputError` with `message`.
pub fn invalid_input(message: impl Into<String>) -> NativeError {
    NativeError::Sdk(agentid::Error::InvalidInput(message.into()))
}

/// The exception class (by name, in `agentid.exceptions`) for an HTTP status the
/// server answered with its error envelope.
fn class_for_status(status: u16) -> &'static str {
    match status {
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        409 => "ConflictError",
        429 => "RateLimited",
        500.. => "ServerError",
        _ => "InvalidRequestError",
    }
}

/// The one conversion: picks the Python class for `error` and builds the
/// exception with its attributes.
pub fn to_py_err(py: Python<'_>, error: NativeError) -> PyErr {
    let sdk = match error {
        NativeError::Python(e) => return e,
        NativeError::Protocol { stage, error } => {
            let code = error.code();
            return build(py, "ProtocolViolation", &error.to_string(), |kwargs| {
                kwargs.set_item("code", code)?;
                kwargs.set_item("stage", stage)?;
                kwargs.set_item("kind", "protocol")
            });
        }
        NativeError::Sdk(e) => e,
    };
    let kind = sdk.kind();
    let class = match &sdk {
        agentid::Error::Api { status, .. } => class_for_status(*status),
        agentid::Error::UnexpectedResponse { .. } => "ServerError",
        agentid::Error::Transport(_) => "NetworkError",
        agentid::Error::InvalidUrl(_) | agentid::Error::Config(_) => "ConfigurationError",
        agentid::Error::InvalidInput(_) => "InvalidInputError",
        agentid::Error::KeyConflict { .. } => "KeyConflictError",
        agentid::Error::KeyStore { .. } | agentid::Error::Io { .. } => "KeyStoreError",
        agentid::Error::Verification(_) => "VerificationError",
        _ => "AgentIdError",
    };
    let message = match &sdk {
        agentid::Error::Api { message, .. } => message.clone(),
        other => other.to_string(),
    };
    build(py, class, &message, |kwargs| {
        kwargs.set_item("kind", kind)?;
        kwargs.set_item("code", sdk.code().map(|c| c.as_str()))?;
        kwargs.set_item("request_id", sdk.request_id())?;
        kwargs.set_item("status", sdk.status())?;
        if let agentid::Error::Api {
            retry_after: Some(wait),
            ..
        } = &sdk
        {
            kwargs.set_item("retry_after", wait.as_secs_f64())?;
        }
        Ok(())
    })
}

/// `agentid.exceptions.<class>(message, **kwargs)` as a `PyErr`; if even that
/// fails (the package is broken), the failure itself.
fn build(
    py: Python<'_>,
    class: &str,
    message: &str,
    fill: impl FnOnce(&Bound<'_, PyDict>) -> PyResult<()>,
) -> PyErr {
    let attempt = || -> PyResult<PyErr> {
        let class = py.import("agentid.exceptions")?.getattr(class)?;
        let kwargs = PyDict::new(py);
        fill(&kwargs)?;
        let exception = class.call((message,), Some(&kwargs))?;
        Ok(PyErr::from_value(exception))
    };
    attempt().unwrap_or_else(|e| e)
}
