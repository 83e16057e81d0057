//! `agentid._native.Agent`: the Rust SDK's blocking agent, as a Python object.
//!
//! Every call that may touch the network runs with the interpreter lock released
//! (`Python::allow_threads`), on the SDK's own runtime, so other Python threads
//! keep running and one agent may be used from many threads at once. The private
//! key never crosses into Python.

use std::path::PathBuf;
use std::time::Duration;

use agentid::blocking;
use pyo3::prelude::*;

use crate::convert::{parse_json, to_py};
use crate::error::{invalid_input, NativeError};

/// An agent with its identity: registered, holding its key, keeping a token.
/// Made by `Agent.connect`; the Python class `agentid.Agent` wraps it.
#[pyclass(frozen, module = "agentid._native", name = "Agent")]
#[derive(Debug)]
pub struct Agent {
    inner: blocking::Agent,
}

/// A duration in seconds from Python, refused when negative, NaN or infinite.
fn seconds(what: &str, value: f64) -> Result<Duration, NativeError> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| invalid_input(format!("{what} must be a finite number of seconds >= 0")))
}

#[pymethods]
impl Agent {
    /// Loads or creates the key, registers the agent (idempotent per name and
    /// key), proves possession and returns the agent. Settings not given are read
    /// from AGENTID_URL, AGENTID_API_KEY, AGENTID_KEY_DIR and
    /// AGENTID_KEY_PASSPHRASE. Releases the GIL while it works.
    #[staticmethod]
    #[pyo3(signature = (name, *, url=None, api_key=None, capabilities=None, key_dir=None, passphrase=None, description=None, timeout=None, retries=None))]
    #[expect(
        clippy::too_many_arguments,
        reason = "keyword arguments of the Python function"
    )]
    fn connect(
        py: Python<'_>,
        name: String,
        url: Option<String>,
        api_key: Option<String>,
        capabilities: Option<Vec<String>>,
        key_dir: Option<PathBuf>,
        passphrase: Option<String>,
        description: Option<String>,
        timeout: Option<f64>,
        retries: Option<u32>,
    ) -> Result<Agent, NativeError> {
        let mut builder = agentid::AgentBuilder::new(name);
        if let Some(url) = url {
            builder = builder.url(url);
        }
        if let Some(api_key) = api_key {
            builder = builder.api_key(api_key);
        }
        if let Some(capabilities) = capabilities {
            builder = builder.requested_capabilities(capabilities);
        }
        if let Some(dir) = key_dir {
            builder = builder.key_dir(dir);
        }
        if let Some(passphrase) = passphrase {
            builder = builder.passphrase(passphrase);
        }
        if let Some(description) = description {
            builder = builder.description(description);
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(seconds("timeout", timeout)?);
        }
        if let Some(retries) = retries {
            builder = builder.retry(agentid::RetryPolicy {
                max_retries: retries,
                ..agentid::RetryPolicy::default()
            });
        }
        let inner = py.allow_threads(|| blocking::Agent::connect(builder))?;
        Ok(Agent { inner })
    }

    /// The agent's id (stable across key rotations).
    #[getter]
    fn id(&self) -> String {
        self.inner.id()
    }

    /// The agent's name.
    #[getter]
    fn name(&self) -> String {
        self.inner.name()
    }

    /// The current key id (RFC 7638 thumbprint of the public key).
    #[getter]
    fn key_id(&self) -> String {
        self.inner.key_id()
    }

    /// The current public key, base64url.
    #[getter]
    fn public_key(&self) -> String {
        self.inner.public_key()
    }

    /// The agent's did:key (changes with the key).
    #[getter]
    fn did(&self) -> String {
        self.inner.did()
    }

    /// The audience of the agent's statements: the server's public URL.
    #[getter]
    fn audience(&self) -> String {
        self.inner.audience()
    }

    /// The URL the agent reaches the server at.
    #[getter]
    fn url(&self) -> String {
        self.inner.as_async().server_url().to_owned()
    }

    /// Asks the server for a decision on `action` (a capability name), optionally
    /// on `resource`, with arguments given as JSON text; returns the decision as
    /// a dict. A denial is a decision, not an error. Releases the GIL.
    #[pyo3(signature = (action, resource=None, args_json=None))]
    fn verify(
        &self,
        py: Python<'_>,
        action: &str,
        resource: Option<&str>,
        args_json: Option<&str>,
    ) -> Result<PyObject, NativeError> {
        let args = parse_json("args", args_json)?;
        let decision = py.allow_threads(|| self.inner.verify(action, resource, args.as_ref()))?;
        to_py(py, &decision)
    }

    /// Signs an action envelope without sending it; returns (envelope JSON text,
    /// envelope digest). No network.
    #[pyo3(signature = (action, resource=None, args_json=None))]
    fn sign_action(
        &self,
        action: &str,
        resource: Option<&str>,
        args_json: Option<&str>,
    ) -> Result<(String, String), NativeError> {
        let args = parse_json("args", args_json)?;
        let signed = self.inner.sign_action(action, resource, args.as_ref())?;
        let digest = signed.digest().to_owned();
        Ok((signed.into_json(), digest))
    }

    /// A valid agent access token, renewed when close to expiry. Releases the GIL.
    fn token(&self, py: Python<'_>) -> Result<String, NativeError> {
        Ok(py.allow_threads(|| self.inner.token())?)
    }

    /// Rotates the agent's key on the server and in the key store; returns the new
    /// key id. Releases the GIL.
    fn rotate_key(&self, py: Python<'_>) -> Result<String, NativeError> {
        Ok(py.allow_threads(|| self.inner.rotate_key())?)
    }

    fn __repr__(&self) -> String {
        format!(
            "<agentid._native.Agent name={:?} id={:?} key_id={:?}>",
            self.inner.name(),
            self.inner.id(),
            self.inner.key_id()
        )
    }
}
