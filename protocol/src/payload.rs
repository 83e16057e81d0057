//! The JSON payloads agents sign, one struct per payload type.
//!
//! Payloads are flat JSON objects. Parsing is strict: unknown members, duplicate
//! members, trailing data and out-of-range values are refused with
//! [`ProtocolErrorKind::InvalidPayload`] (or [`ProtocolErrorKind::DuplicateKey`]).
//! Clients serialize them with [`ActionPayload::to_bytes`] and friends; the server
//! never re-serializes: it verifies the bytes it received.

use serde::{Deserialize, Serialize};

use crate::b64;
use crate::capability;
use crate::json::parse_strict;
use crate::keys::PublicKey;
use crate::protocol_error::{ProtocolError, ProtocolErrorKind};

/// Longest agent id.
pub const MAX_AGENT_ID_LEN: usize = 64;
/// Longest audience.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Longest resource.
pub const MAX_RESOURCE_LEN: usize = 1024;
/// Fewest and most nonce bytes (at least 128 bits of randomness).
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;
/// Longest challenge.
pub const MAX_CHALLENGE_LEN: usize = 128;

/// A request to perform `action` (a capability name), optionally on `resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionPayload {
    /// The agent's id, as returned at registration.
    pub agent_id: String,
    /// The capability the action needs, `namespace:action`.
    pub action: String,
    /// What the action acts on (an address, a path, a URL), matched against the
    /// grant's resource pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// `sha256:` and the lowercase hex SHA-256 of the action's arguments, so the
    /// decision is bound to what will actually be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_digest: Option<String>,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// At least 128 random bits, base64url; single use.
    pub nonce: String,
    /// The server's issuer URL: a statement for one deployment is worthless at another.
    pub aud: String,
}

/// An agent's answer to a proof-of-possession challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponsePayload {
    pub agent_id: String,
    /// The challenge exactly as the server issued it.
    pub challenge: String,
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: i64,
}

/// Replace the agent's key `old_key_id` with `new_public_key`. The envelope carries
/// two signatures over the same bytes: one by the current key, one by the new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotationPayload {
    pub agent_id: String,
    /// The thumbprint of the key being replaced (the agent's current key).
    pub old_key_id: String,
    /// The new public key, base64url of the 32 bytes.
    pub new_public_key: String,
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// At least 128 random bits, base64url; single use.
    pub nonce: String,
}

fn invalid(detail: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ProtocolErrorKind::InvalidPayload, detail)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ProtocolError> {
    if value.is_empty() || value.len() > max {
        return Err(invalid(format!("{field} must be 1 to {max} bytes")));
    }
    Ok(())
}

fn check_common(agent_id: &str, aud: &str, iat: i64) -> Result<(), ProtocolError> {
    check_len("agent_id", agent_id, MAX_AGENT_ID_LEN)?;
    check_len("aud", aud, MAX_AUDIENCE_LEN)?;
    if iat < 0 {
        return Err(invalid("iat must be a non-negative number of unix seconds"));
    }
    Ok(())
}

fn check_nonce(nonce: &str) -> Result<(), ProtocolError> {
    match b64::decode(nonce) {
        Some(bytes) if NONCE_BYTES.contains(&bytes.len()) => Ok(()),
        Some(_) => Err(invalid(format!(
            "nonce must encode {} to {} bytes",
            NONCE_BYTES.start(),
            NONCE_BYTES.end()
        ))),
        None => Err(invalid("nonce is not unpadded base64url")),
    }
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and integers always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

impl ActionPayload {
    /// Parses and validates payload bytes.
    pub fn parse(bytes: &[u8]) -> Result<ActionPayload, ProtocolError> {
        let p: ActionPayload = parse_strict(bytes, ProtocolErrorKind::InvalidPayload)?;
        check_common(&p.agent_id, &p.aud, p.iat)?;
        if !capability::is_valid_name(&p.action) {
            return Err(invalid(
                "action must be a capability name, namespace:action",
            ));
        }
        if let Some(resource) = &p.resource {
            check_len("resource", resource, MAX_RESOURCE_LEN)?;
        }
        if let Some(digest) = &p.args_digest {
            let hex = digest.strip_prefix("sha256:").unwrap_or_default();
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(invalid(
                    "args_digest must be sha256: and 64 lowercase hex digits",
                ));
            }
        }
        check_nonce(&p.nonce)?;
        Ok(p)
    }

    /// The JSON bytes to sign.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }
}

impl ChallengeResponsePayload {
    /// Parses and validates payload bytes.
    pub fn parse(bytes: &[u8]) -> Result<ChallengeResponsePayload, ProtocolError> {
        let p: ChallengeResponsePayload = parse_strict(bytes, ProtocolErrorKind::InvalidPayload)?;
        check_common(&p.agent_id, &p.aud, p.iat)?;
        check_len("challenge", &p.challenge, MAX_CHALLENGE_LEN)?;
        Ok(p)
    }

    /// The JSON bytes to sign.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }
}

impl KeyRotationPayload {
    /// Parses and validates payload bytes, including the new key (which must be a
    /// valid, non-weak key different from nothing in particular: the server checks
    /// that it differs from the current one).
    pub fn parse(bytes: &[u8]) -> Result<(KeyRotationPayload, PublicKey), ProtocolError> {
        let p: KeyRotationPayload = parse_strict(bytes, ProtocolErrorKind::InvalidPayload)?;
        check_common(&p.agent_id, &p.aud, p.iat)?;
        check_len("old_key_id", &p.old_key_id, crate::envelope::MAX_KEYID_LEN)?;
        check_nonce(&p.nonce)?;
        let key = PublicKey::from_b64url(&p.new_public_key)?;
        Ok((p, key))
    }

    /// The JSON bytes to sign.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action() -> ActionPayload {
        ActionPayload {
            agent_id: "a".into(),
            action: "email:send".into(),
            resource: Some("bob@example.com".into()),
            args_digest: None,
            iat: 1,
            nonce: b64::encode([9u8; 16]),
            aud: "https://agentid.example".into(),
        }
    }

    #[test]
    fn round_trips() {
        let p = action();
        assert_eq!(ActionPayload::parse(&p.to_bytes()).unwrap(), p);
    }

    #[test]
    fn refuses_short_nonces_bad_actions_and_bad_digests() {
        let kind = |p: ActionPayload| ActionPayload::parse(&p.to_bytes()).unwrap_err().kind;
        let mut p = action();
        p.nonce = b64::encode([9u8; 15]);
        assert_eq!(kind(p), ProtocolErrorKind::InvalidPayload);
        let mut p = action();
        p.action = "send".into();
        assert_eq!(kind(p), ProtocolErrorKind::InvalidPayload);
        let mut p = action();
        p.args_digest = Some("sha256:ABC".into());
        assert_eq!(kind(p), ProtocolErrorKind::InvalidPayload);
    }
}
