//! `agentid._native.RelyingParty` and the offline verification functions: what a
//! tool server or gateway that holds no agent key uses to check agent tokens,
//! decision receipts and action envelopes.
//!
//! Checks are the Rust SDK's (`agentid::relying_party`); this module only moves
//! values across. Calls that may fetch the JWKS release the GIL.

use std::time::Duration;

use agentid::blocking;
use agentid::relying_party::{self, VerifiedAction};
use agentid::Jwks;
use pyo3::prelude::*;
use serde_json::json;

use crate::convert::to_py;
use crate::error::{invalid_input, NativeError};

/// Verifies what one agentid server signs, with its published keys (JWKS, cached).
#[pyclass(frozen, module = "agentid._native", name = "RelyingParty")]
#[derive(Debug)]
pub struct RelyingParty {
    rp: agentid::RelyingParty,
    runtime: blocking::Runtime,
    blocking: blocking::RelyingParty,
}

fn action_dict(action: &VerifiedAction) -> serde_json::Value {
    json!({
        "payload": action.payload,
        "digest": action.digest,
        "key_id": action.key_id,
    })
}

fn now_or(now: Option<i64>) -> i64 {
    now.unwrap_or_else(agentid::signing::now_unix)
}

fn parse_jwks(jwks_json: &str) -> Result<Jwks, NativeError> {
    serde_json::from_str(jwks_json)
        .map_err(|e| invalid_input(format!("jwks is not a JWK set: {e}")))
}

#[pymethods]
impl RelyingParty {
    /// A relying party for the server at `url`; `issuer` is the server's public
    /// URL when it differs from `url`; `timeout` limits each request (seconds),
    /// `retries` is how often transient failures are retried (default 3).
    #[new]
    #[pyo3(signature = (url, *, issuer=None, timeout=None, retries=None))]
    fn new(
        url: &str,
        issuer: Option<String>,
        timeout: Option<f64>,
        retries: Option<u32>,
    ) -> Result<Self, NativeError> {
        let mut builder = agentid::RelyingParty::builder(url);
        if let Some(issuer) = issuer {
            builder = builder.issuer(issuer);
        }
        if let Some(timeout) = timeout {
            builder =
                builder.timeout(Duration::try_from_secs_f64(timeout).map_err(|_| {
                    invalid_input("timeout must be a finite number of seconds >= 0")
                })?);
        }
        if let Some(retries) = retries {
            builder = builder.retry(agentid::RetryPolicy {
                max_retries: retries,
                ..agentid::RetryPolicy::default()
            });
        }
        let rp = builder.build()?;
        let runtime = blocking::Runtime::new()?;
        let blocking = blocking::RelyingParty::on(runtime.clone(), rp.clone());
        Ok(RelyingParty {
            rp,
            runtime,
            blocking,
        })
    }

    /// The issuer tokens and receipts must name.
    #[getter]
    fn issuer(&self) -> String {
        self.rp.issuer().to_owned()
    }

    /// The server's key set as JSON text (fetched, or from the cache). Save it to
    /// verify offline later.
    fn jwks(&self, py: Python<'_>) -> Result<String, NativeError> {
        let jwks = py.allow_threads(|| self.runtime.block_on(self.rp.jwks()))?;
        serde_json::to_string(&*jwks).map_err(|e| invalid_input(e.to_string()))
    }

    /// Verifies an agent access token; returns its claims as a dict.
    fn verify_agent_token(&self, py: Python<'_>, token: &str) -> Result<PyObject, NativeError> {
        let claims = py.allow_threads(|| self.blocking.verify_agent_token(token))?;
        to_py(py, &claims)
    }

    /// Verifies a decision receipt (and, given the envelope's JSON text, that it is
    /// about that envelope); returns its claims as a dict.
    #[pyo3(signature = (receipt, envelope=None))]
    fn verify_receipt(
        &self,
        py: Python<'_>,
        receipt: &str,
        envelope: Option<&str>,
    ) -> Result<PyObject, NativeError> {
        let claims = py.allow_threads(|| self.blocking.verify_receipt(receipt, envelope))?;
        to_py(py, &claims)
    }

    /// Verifies offline an action envelope signed by the holder of `token` with
    /// `public_key`; returns (action dict, token claims dict). Replays are not
    /// detected offline.
    fn verify_action_with_token(
        &self,
        py: Python<'_>,
        envelope: &str,
        token: &str,
        public_key: &str,
    ) -> Result<(PyObject, PyObject), NativeError> {
        let (action, claims) = py.allow_threads(|| {
            self.blocking
                .verify_action_with_token(envelope, token, public_key)
        })?;
        Ok((to_py(py, &action_dict(&action))?, to_py(py, &claims)?))
    }

    /// Forwards an agent's envelope to the server for a decision (single-use
    /// nonce, audit record); returns the decision as a dict.
    fn decide(&self, py: Python<'_>, envelope: &str) -> Result<PyObject, NativeError> {
        let decision = py.allow_threads(|| self.blocking.decide(envelope))?;
        to_py(py, &decision)
    }

    fn __repr__(&self) -> String {
        format!(
            "<agentid._native.RelyingParty issuer={:?}>",
            self.rp.issuer()
        )
    }
}

/// Verifies an action envelope offline with the agent's `public_key`: strict
/// parsing, payload rules, signature, `aud` == `audience`, `iat` within
/// [now - max_age, now + 30 s]. Returns the action as a dict.
#[pyfunction]
#[pyo3(signature = (envelope, public_key, audience, *, now=None, max_age=300.0))]
pub fn verify_action_envelope(
    py: Python<'_>,
    envelope: &str,
    public_key: &str,
    audience: &str,
    now: Option<i64>,
    max_age: f64,
) -> Result<PyObject, NativeError> {
    let max_age = Duration::try_from_secs_f64(max_age)
        .map_err(|_| invalid_input("max_age must be a finite number of seconds >= 0"))?;
    let action = relying_party::verify_action_envelope(
        envelope,
        public_key,
        audience,
        now_or(now),
        max_age,
    )?;
    to_py(py, &action_dict(&action))
}

/// Verifies an agent token with a saved JWKS (JSON text); returns its claims.
#[pyfunction]
#[pyo3(signature = (jwks, issuer, token, *, now=None))]
pub fn verify_agent_token_with(
    py: Python<'_>,
    jwks: &str,
    issuer: &str,
    token: &str,
    now: Option<i64>,
) -> Result<PyObject, NativeError> {
    let claims =
        relying_party::verify_agent_token_with(&parse_jwks(jwks)?, issuer, token, now_or(now))?;
    to_py(py, &claims)
}

/// Verifies a decision receipt with a saved JWKS (JSON text), and given the
/// envelope, that it is about that envelope; returns its claims.
#[pyfunction]
#[pyo3(signature = (jwks, issuer, receipt, envelope=None, *, now=None))]
pub fn verify_receipt_with(
    py: Python<'_>,
    jwks: &str,
    issuer: &str,
    receipt: &str,
    envelope: Option<&str>,
    now: Option<i64>,
) -> Result<PyObject, NativeError> {
    let claims = relying_party::verify_receipt_with(
        &parse_jwks(jwks)?,
        issuer,
        receipt,
        envelope,
        now_or(now),
    )?;
    to_py(py, &claims)
}
