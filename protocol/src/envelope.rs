//! DSSE-style signed envelopes.
//!
//! An agent signs the exact payload bytes, never JSON that the server rebuilds:
//! the signed message is the DSSE pre-authentication encoding ([`pae`]) of the
//! payload type and the payload bytes, so a signature for one payload type can never
//! be replayed as another (domain separation). The wire form is
//!
//! ```json
//! {"payloadType":"application/vnd.agentid.action+json",
//!  "payload":"<base64url bytes>",
//!  "signatures":[{"keyid":"<JWK thumbprint>","sig":"<base64url 64 bytes>"}]}
//! ```

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::b64;
use crate::json::parse_strict;
use crate::keys::PublicKey;
use crate::protocol_error::{ProtocolError, ProtocolErrorKind};

/// Largest accepted envelope, in bytes of JSON.
pub const MAX_ENVELOPE_BYTES: usize = 16 * 1024;
/// Largest accepted payload, in decoded bytes.
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024;
/// Longest accepted key id.
pub const MAX_KEYID_LEN: usize = 128;

/// The payload types, one per kind of statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadType {
    /// An agent's answer to a proof-of-possession challenge.
    ChallengeResponse,
    /// A request to perform an action.
    Action,
    /// A key rotation, signed by the current and the new key.
    KeyRotation,
}

impl PayloadType {
    pub const ALL: [PayloadType; 3] = [
        PayloadType::ChallengeResponse,
        PayloadType::Action,
        PayloadType::KeyRotation,
    ];

    /// The `payloadType` string.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadType::ChallengeResponse => "application/vnd.agentid.challenge-response+json",
            PayloadType::Action => "application/vnd.agentid.action+json",
            PayloadType::KeyRotation => "application/vnd.agentid.key-rotation+json",
        }
    }

    /// How many signatures an envelope of this type carries.
    pub fn signature_count(self) -> usize {
        match self {
            PayloadType::KeyRotation => 2,
            PayloadType::ChallengeResponse | PayloadType::Action => 1,
        }
    }

    /// The type named `s`, exactly.
    pub fn parse(s: &str) -> Option<PayloadType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// The DSSE v1 pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// The envelope as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// One of the protocol's payload types.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload bytes, base64url without padding.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    /// The signing key's id: the RFC 7638 JWK thumbprint of the public key.
    pub keyid: String,
    /// The 64-byte Ed25519 signature over the PAE bytes, base64url without padding.
    pub sig: String,
}

/// A signature whose encoding has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSignature {
    pub keyid: String,
    pub sig: [u8; 64],
}

/// An envelope whose shape, limits and encodings have been checked (not its
/// signatures: that needs the signer's key, see [`ParsedEnvelope::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEnvelope {
    pub payload_type: PayloadType,
    pub payload: Vec<u8>,
    pub signatures: Vec<ParsedSignature>,
}

impl ParsedEnvelope {
    /// Checks size, nesting, duplicate and unknown members, payload type, base64url,
    /// payload size, signature count and encoding, and that no two signatures name the
    /// same key id, in that order, and decodes the payload.
    pub fn parse(bytes: &[u8]) -> Result<ParsedEnvelope, ProtocolError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(ProtocolError::new(
                ProtocolErrorKind::EnvelopeTooLarge,
                format!("the envelope exceeds {MAX_ENVELOPE_BYTES} bytes"),
            ));
        }
        let envelope: Envelope = parse_strict(bytes, ProtocolErrorKind::MalformedEnvelope)?;
        let payload_type = PayloadType::parse(&envelope.payload_type).ok_or_else(|| {
            ProtocolError::new(
                ProtocolErrorKind::UnknownPayloadType,
                "payloadType is not an agentid payload type",
            )
        })?;
        let payload = b64::decode(&envelope.payload).ok_or_else(|| {
            ProtocolError::new(
                ProtocolErrorKind::InvalidBase64,
                "payload is not unpadded base64url",
            )
        })?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ProtocolError::new(
                ProtocolErrorKind::PayloadTooLarge,
                format!("the payload exceeds {MAX_PAYLOAD_BYTES} bytes"),
            ));
        }
        let expected = payload_type.signature_count();
        if envelope.signatures.len() != expected {
            return Err(ProtocolError::new(
                ProtocolErrorKind::WrongSignatureCount,
                format!("this payload type carries exactly {expected} signature(s)"),
            ));
        }
        let signatures = envelope
            .signatures
            .into_iter()
            .map(|s| {
                if s.keyid.is_empty() || s.keyid.len() > MAX_KEYID_LEN {
                    return Err(ProtocolError::new(
                        ProtocolErrorKind::InvalidSignatureEncoding,
                        format!("keyid must be 1 to {MAX_KEYID_LEN} characters"),
                    ));
                }
                let raw = b64::decode(&s.sig).ok_or_else(|| {
                    ProtocolError::new(
                        ProtocolErrorKind::InvalidBase64,
                        "sig is not unpadded base64url",
                    )
                })?;
                let sig: [u8; 64] = raw.try_into().map_err(|_| {
                    ProtocolError::new(
                        ProtocolErrorKind::InvalidSignatureEncoding,
                        "an Ed25519 signature is exactly 64 bytes",
                    )
                })?;
                Ok(ParsedSignature {
                    keyid: s.keyid,
                    sig,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let repeated = signatures
            .iter()
            .enumerate()
            .any(|(i, s)| signatures[..i].iter().any(|t| t.keyid == s.keyid));
        if repeated {
            return Err(ProtocolError::new(
                ProtocolErrorKind::WrongSignatureCount,
                "the signatures must be by distinct keys (distinct keyids)",
            ));
        }
        Ok(ParsedEnvelope {
            payload_type,
            payload,
            signatures,
        })
    }

    /// Refuses the envelope unless it has the payload type `expected`.
    pub fn expect_type(&self, expected: PayloadType) -> Result<(), ProtocolError> {
        if self.payload_type == expected {
            Ok(())
        } else {
            Err(ProtocolError::new(
                ProtocolErrorKind::WrongPayloadType,
                format!("this operation takes payloadType {}", expected.as_str()),
            ))
        }
    }

    /// The bytes every signature covers: `pae(payloadType, payload)`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        pae(self.payload_type.as_str(), &self.payload)
    }

    /// Lowercase hex SHA-256 of [`Self::signed_bytes`]: names the statement in
    /// receipts and audit records independently of its JSON spelling.
    pub fn digest(&self) -> String {
        digest_of(&self.signed_bytes())
    }

    /// The signature made with the key whose id is `keyid`, if any.
    pub fn signature_by(&self, keyid: &str) -> Option<&ParsedSignature> {
        self.signatures.iter().find(|s| s.keyid == keyid)
    }

    /// Verifies the signature with key id `key.thumbprint()` over the signed bytes.
    /// An envelope without a signature by that key is [`ProtocolErrorKind::BadSignature`].
    pub fn verify(&self, key: &PublicKey) -> Result<(), ProtocolError> {
        let keyid = key.thumbprint();
        let signature = self.signature_by(&keyid).ok_or_else(|| {
            ProtocolError::new(
                ProtocolErrorKind::BadSignature,
                "no signature by the expected key",
            )
        })?;
        key.verify(&self.signed_bytes(), &signature.sig)
    }
}

impl Envelope {
    /// Signs `payload` as `payload_type` with each key, in order (clients and tests).
    pub fn sign(payload_type: PayloadType, payload: &[u8], keys: &[&SigningKey]) -> Envelope {
        let message = pae(payload_type.as_str(), payload);
        let signatures = keys
            .iter()
            .map(|key| {
                let public = b64::encode(key.verifying_key().as_bytes());
                EnvelopeSignature {
                    keyid: crate::keys::jwk_thumbprint(&public),
                    sig: b64::encode(key.sign(&message).to_bytes()),
                }
            })
            .collect();
        Envelope {
            payload_type: payload_type.as_str().to_owned(),
            payload: b64::encode(payload),
            signatures,
        }
    }

    /// The compact JSON text of the envelope.
    pub fn to_json(&self) -> String {
        // Serializing strings and a vector of plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Lowercase hex SHA-256 of signed bytes (as [`ParsedEnvelope::signed_bytes`]
/// returns them): an envelope's digest, for callers that already hold the bytes.
pub fn digest_of(signed: &[u8]) -> String {
    hex::encode(Sha256::digest(signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol specification.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn signed_envelopes_round_trip_and_verify() {
        let signing = SigningKey::from_bytes(&[3u8; 32]);
        let key = PublicKey::from_bytes(signing.verifying_key().as_bytes()).unwrap();
        let envelope = Envelope::sign(PayloadType::Action, b"{}", &[&signing]);
        let parsed = ParsedEnvelope::parse(envelope.to_json().as_bytes()).unwrap();
        assert_eq!(parsed.payload, b"{}");
        parsed.verify(&key).unwrap();
        assert_eq!(
            parsed
                .expect_type(PayloadType::KeyRotation)
                .unwrap_err()
                .kind,
            ProtocolErrorKind::WrongPayloadType
        );
    }

    #[test]
    fn refuses_two_signatures_by_the_same_key_id() {
        // A key rotation needs the current and the new key: one key signing twice
        // (or a second signature copying the first one's keyid) is one signer.
        let signing = SigningKey::from_bytes(&[3u8; 32]);
        let other = SigningKey::from_bytes(&[4u8; 32]);
        let twice = Envelope::sign(PayloadType::KeyRotation, b"{}", &[&signing, &signing]);
        assert_eq!(
            ParsedEnvelope::parse(twice.to_json().as_bytes())
                .unwrap_err()
                .kind,
            ProtocolErrorKind::WrongSignatureCount
        );
        let mut copied = Envelope::sign(PayloadType::KeyRotation, b"{}", &[&signing, &other]);
        copied.signatures[1].keyid = copied.signatures[0].keyid.clone();
        assert_eq!(
            ParsedEnvelope::parse(copied.to_json().as_bytes())
                .unwrap_err()
                .kind,
            ProtocolErrorKind::WrongSignatureCount
        );
        let both = Envelope::sign(PayloadType::KeyRotation, b"{}", &[&signing, &other]);
        assert!(ParsedEnvelope::parse(both.to_json().as_bytes()).is_ok());
    }

    #[test]
    fn a_signature_does_not_carry_over_to_another_payload_type() {
        let signing = SigningKey::from_bytes(&[3u8; 32]);
        let key = PublicKey::from_bytes(signing.verifying_key().as_bytes()).unwrap();
        let mut envelope = Envelope::sign(PayloadType::ChallengeResponse, b"{}", &[&signing]);
        envelope.payload_type = PayloadType::Action.as_str().to_owned();
        let parsed = ParsedEnvelope::parse(envelope.to_json().as_bytes()).unwrap();
        assert_eq!(
            parsed.verify(&key).unwrap_err().kind,
            ProtocolErrorKind::BadSignature
        );
    }
}
