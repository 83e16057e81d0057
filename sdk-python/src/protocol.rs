//! The protocol's building blocks for Python: key identifiers, PAE, envelope
//! checks in the receiver's order, the args digest and the stable code lists.
//!
//! All of it is the `agentid-protocol` crate's and the Rust SDK's code, so the
//! Python package checks exactly what the server checks; nothing is
//! reimplemented here. Seeds given to these functions are used and dropped.

use agentid::AgentKey;
use agentid_protocol::envelope::{pae as protocol_pae, ParsedEnvelope, PayloadType};
use agentid_protocol::payload::{ActionPayload, ChallengeResponsePayload, KeyRotationPayload};
use agentid_protocol::{DecisionReason, ErrorCode, ProtocolError, ProtocolErrorKind, PublicKey};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::convert::parse_json;
use crate::error::{invalid_input, NativeError};

/// Tags a protocol violation with the stage that refused it.
fn at(stage: &'static str) -> impl Fn(ProtocolError) -> NativeError {
    move |error| NativeError::Protocol { stage, error }
}

fn seed_key(seed: &[u8]) -> Result<AgentKey, NativeError> {
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| invalid_input("an Ed25519 seed is exactly 32 bytes"))?;
    Ok(AgentKey::from_seed(&seed)?)
}

/// DSSE v1 pre-authentication encoding: the bytes every signature covers.
#[pyfunction]
pub fn pae<'py>(py: Python<'py>, payload_type: &str, payload: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &protocol_pae(payload_type, payload))
}

/// Parses a public key (base64url) by every key rule of the protocol and returns
/// (key id, did:key). Raises ProtocolViolation (stage "key") for a refused key.
#[pyfunction]
pub fn public_key_info(public_key: &str) -> Result<(String, String), NativeError> {
    let key = PublicKey::from_b64url(public_key).map_err(at("key"))?;
    Ok((key.thumbprint(), key.did_key()))
}

/// The public key (base64url) of a 32-byte Ed25519 seed (RFC 8032).
#[pyfunction]
pub fn public_key_from_seed(seed: &[u8]) -> Result<String, NativeError> {
    Ok(seed_key(seed)?.public_key())
}

/// Signs an action envelope with every member given (no clock, no randomness);
/// returns (envelope JSON text, digest). For test vectors and interoperability
/// tests; agents sign with `Agent.sign_action`.
#[pyfunction]
#[pyo3(signature = (seed, *, agent_id, audience, action, iat, nonce, resource=None, args_digest=None))]
#[expect(
    clippy::too_many_arguments,
    reason = "each member of the payload is an input"
)]
pub fn sign_action_envelope(
    seed: &[u8],
    agent_id: &str,
    audience: &str,
    action: &str,
    iat: i64,
    nonce: &str,
    resource: Option<&str>,
    args_digest: Option<&str>,
) -> Result<(String, String), NativeError> {
    let signed = agentid::signing::action_envelope(
        &seed_key(seed)?,
        agent_id,
        audience,
        action,
        resource,
        args_digest,
        iat,
        nonce,
    )?;
    let digest = signed.digest().to_owned();
    Ok((signed.into_json(), digest))
}

/// Receives an envelope as an operation taking payload type `operation` does:
/// parse, then the payload's rules, then the signature by each key of
/// `verify_with`. Returns the envelope digest; raises ProtocolViolation with the
/// stage (`parse`, `payload`, `key`, `verify`) and code of the first failure.
#[pyfunction]
#[pyo3(signature = (envelope, operation, verify_with=Vec::new()))]
pub fn check_envelope(
    envelope: &str,
    operation: &str,
    verify_with: Vec<String>,
) -> Result<String, NativeError> {
    let operation = PayloadType::parse(operation)
        .ok_or_else(|| invalid_input(format!("`{operation}` is not a payload type")))?;
    let parsed = ParsedEnvelope::parse(envelope.as_bytes()).map_err(at("parse"))?;
    parsed
        .expect_type(operation)
        .and_then(|()| match operation {
            PayloadType::Action => ActionPayload::parse(&parsed.payload).map(drop),
            PayloadType::ChallengeResponse => {
                ChallengeResponsePayload::parse(&parsed.payload).map(drop)
            }
            PayloadType::KeyRotation => KeyRotationPayload::parse(&parsed.payload).map(drop),
        })
        .map_err(at("payload"))?;
    for key in &verify_with {
        let key = PublicKey::from_b64url(key).map_err(at("key"))?;
        parsed.verify(&key).map_err(at("verify"))?;
    }
    Ok(parsed.digest())
}

/// The canonical JSON text of arguments given as JSON text (members sorted,
/// compact): what `args_digest` hashes.
#[pyfunction]
pub fn canonical_json(args_json: &str) -> Result<String, NativeError> {
    let args = parse_json("args", Some(args_json))?.unwrap_or_default();
    String::from_utf8(agentid::signing::canonical_json(&args))
        .map_err(|e| invalid_input(e.to_string()))
}

/// The `args_digest` of arguments given as JSON text: `sha256:` + hex SHA-256 of
/// their canonical JSON.
#[pyfunction]
pub fn args_digest(args_json: &str) -> Result<String, NativeError> {
    let args = parse_json("args", Some(args_json))?.unwrap_or_default();
    Ok(agentid::signing::args_digest(&args))
}

/// Every decision reason a server may send, in check order.
#[pyfunction]
pub fn decision_reasons() -> Vec<&'static str> {
    DecisionReason::ALL.iter().map(|r| r.as_str()).collect()
}

/// The reasons monitor mode lets through (policy checks).
#[pyfunction]
pub fn policy_reasons() -> Vec<&'static str> {
    DecisionReason::ALL
        .iter()
        .filter(|r| r.is_policy())
        .map(|r| r.as_str())
        .collect()
}

/// Every protocol error code (signed-statement violations), in documentation order.
#[pyfunction]
pub fn protocol_errors() -> Vec<&'static str> {
    ProtocolErrorKind::ALL.iter().map(|k| k.code()).collect()
}

/// The server's stable error codes with their HTTP status, in documentation order.
#[pyfunction]
pub fn error_codes() -> Vec<(&'static str, u16)> {
    ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str(), code.http_status()))
        .collect()
}
