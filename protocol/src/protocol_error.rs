//! Why a signed statement was refused before any policy was consulted.

use std::fmt;

/// The kind of protocol violation. Each has a stable code (see `docs/protocol.md`
/// and the `invalid` cases of `protocol/test-vectors/*.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolErrorKind {
    /// The envelope is larger than [`crate::envelope::MAX_ENVELOPE_BYTES`].
    EnvelopeTooLarge,
    /// The decoded payload is larger than [`crate::envelope::MAX_PAYLOAD_BYTES`].
    PayloadTooLarge,
    /// JSON nested deeper than [`crate::json::MAX_DEPTH`].
    NestingTooDeep,
    /// A JSON object names the same member twice.
    DuplicateKey,
    /// The envelope is not the JSON object the protocol defines.
    MalformedEnvelope,
    /// A base64url field is not strict unpadded base64url.
    InvalidBase64,
    /// `payloadType` is not one of the protocol's payload types.
    UnknownPayloadType,
    /// `payloadType` is valid but not the one this operation takes.
    WrongPayloadType,
    /// The payload is not the JSON object its type defines, or a field is out of range.
    InvalidPayload,
    /// Too few or too many signatures for the payload type, or two signatures naming
    /// the same key id.
    WrongSignatureCount,
    /// A signature is not 64 bytes, or its key id is empty or too long.
    InvalidSignatureEncoding,
    /// A public key is not 32 bytes, not a curve point, or not canonically encoded.
    InvalidPublicKey,
    /// A public key is a small-order (weak) point.
    WeakPublicKey,
    /// A signature's scalar `S` is not reduced modulo the group order.
    NonCanonicalSignature,
    /// The signature does not verify (strictly) over the signed bytes with the key.
    BadSignature,
}

impl ProtocolErrorKind {
    /// Every kind, in documentation order.
    pub const ALL: &'static [ProtocolErrorKind] = &[
        ProtocolErrorKind::EnvelopeTooLarge,
        ProtocolErrorKind::PayloadTooLarge,
        ProtocolErrorKind::NestingTooDeep,
        ProtocolErrorKind::DuplicateKey,
        ProtocolErrorKind::MalformedEnvelope,
        ProtocolErrorKind::InvalidBase64,
        ProtocolErrorKind::UnknownPayloadType,
        ProtocolErrorKind::WrongPayloadType,
        ProtocolErrorKind::InvalidPayload,
        ProtocolErrorKind::WrongSignatureCount,
        ProtocolErrorKind::InvalidSignatureEncoding,
        ProtocolErrorKind::InvalidPublicKey,
        ProtocolErrorKind::WeakPublicKey,
        ProtocolErrorKind::NonCanonicalSignature,
        ProtocolErrorKind::BadSignature,
    ];

    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            ProtocolErrorKind::EnvelopeTooLarge => "envelope_too_large",
            ProtocolErrorKind::PayloadTooLarge => "payload_too_large",
            ProtocolErrorKind::NestingTooDeep => "nesting_too_deep",
            ProtocolErrorKind::DuplicateKey => "duplicate_key",
            ProtocolErrorKind::MalformedEnvelope => "malformed_envelope",
            ProtocolErrorKind::InvalidBase64 => "invalid_base64",
            ProtocolErrorKind::UnknownPayloadType => "unknown_payload_type",
            ProtocolErrorKind::WrongPayloadType => "wrong_payload_type",
            ProtocolErrorKind::InvalidPayload => "invalid_payload",
            ProtocolErrorKind::WrongSignatureCount => "wrong_signature_count",
            ProtocolErrorKind::InvalidSignatureEncoding => "invalid_signature_encoding",
            ProtocolErrorKind::InvalidPublicKey => "invalid_public_key",
            ProtocolErrorKind::WeakPublicKey => "weak_public_key",
            ProtocolErrorKind::NonCanonicalSignature => "non_canonical_signature",
            ProtocolErrorKind::BadSignature => "bad_signature",
        }
    }

    /// The kind with this code.
    pub fn from_code(code: &str) -> Option<ProtocolErrorKind> {
        Self::ALL.iter().copied().find(|k| k.code() == code)
    }
}

/// A protocol violation: its kind and a sentence saying what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub kind: ProtocolErrorKind,
    pub detail: String,
}

impl ProtocolError {
    pub fn new(kind: ProtocolErrorKind, detail: impl Into<String>) -> ProtocolError {
        ProtocolError {
            kind,
            detail: detail.into(),
        }
    }

    /// The stable code of the kind.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

impl std::error::Error for ProtocolError {}
