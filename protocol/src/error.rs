//! The one error format every agentid endpoint answers with.
//!
//! `{"error":{"code":"...","message":"...","request_id":"..."}}`. Codes are stable,
//! snake_case and documented in `docs/errors.md`; clients branch on the code, never
//! on the message. Renaming or removing a code is a breaking change.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code.
///
/// Unknown codes (from a newer server) deserialize as [`ErrorCode::Unknown`] so
/// older clients keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request body is not well-formed JSON, or does not match the expected shape.
    InvalidJson,
    /// The request is well-formed but a value is not acceptable (the message says which).
    InvalidRequest,
    /// The new password does not meet the password policy (the message says why).
    WeakPassword,
    /// A signed envelope (or its payload) breaks the protocol in `docs/protocol.md`:
    /// too large, too deeply nested, duplicate keys, bad base64, unknown payload type,
    /// missing or malformed fields. The message starts with the protocol error code.
    InvalidEnvelope,
    /// The Ed25519 public key is malformed, not canonically encoded, or weak (small order).
    WeakPublicKey,
    /// A proof of possession did not verify: the challenge is unknown, expired or
    /// already used, or the signature over it is not valid for the agent's key.
    InvalidProof,
    /// The resource is not in a state that allows the operation (for example
    /// reactivating a revoked agent).
    InvalidState,
    /// The request carries no valid credential (or one that was revoked or expired).
    Unauthorized,
    /// The email and password do not match an active account.
    InvalidCredentials,
    /// The caller is authenticated but lacks the permission the operation needs.
    Forbidden,
    /// The request conflicts with existing data (for example a name already taken).
    Conflict,
    /// Too many attempts; wait for the `Retry-After` header's seconds.
    RateLimited,
    /// The request body has a content type other than `application/json`.
    UnsupportedMediaType,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// No resource at this path (or not visible to the caller).
    NotFound,
    /// The path exists but does not accept this HTTP method.
    MethodNotAllowed,
    /// The request did not complete within the configured time.
    RequestTimeout,
    /// The server is not ready to serve (for example the database does not answer).
    NotReady,
    /// The database could not be reached in time; retrying later may succeed.
    DatabaseUnavailable,
    /// An unexpected failure inside the server. Details are in the server log only.
    InternalError,
    /// A code this client does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a server may send, in documentation order.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidRequest,
        ErrorCode::WeakPassword,
        ErrorCode::InvalidEnvelope,
        ErrorCode::WeakPublicKey,
        ErrorCode::InvalidProof,
        ErrorCode::InvalidState,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidCredentials,
        ErrorCode::Forbidden,
        ErrorCode::Conflict,
        ErrorCode::RateLimited,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::NotReady,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::InternalError,
    ];

    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::WeakPassword => "weak_password",
            ErrorCode::InvalidEnvelope => "invalid_envelope",
            ErrorCode::WeakPublicKey => "weak_public_key",
            ErrorCode::InvalidProof => "invalid_proof",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status a server answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::WeakPassword
            | ErrorCode::InvalidEnvelope
            | ErrorCode::WeakPublicKey => 400,
            ErrorCode::Unauthorized | ErrorCode::InvalidCredentials | ErrorCode::InvalidProof => {
                401
            }
            ErrorCode::Forbidden => 403,
            ErrorCode::Conflict | ErrorCode::InvalidState => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InternalError | ErrorCode::Unknown => 500,
            ErrorCode::NotReady | ErrorCode::DatabaseUnavailable | ErrorCode::RequestTimeout => 503,
        }
    }

    /// Whether a client may retry the same request later and expect a different outcome.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::NotReady
                | ErrorCode::DatabaseUnavailable
                | ErrorCode::RequestTimeout
                | ErrorCode::RateLimited
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code; see `docs/errors.md`.
    pub code: ErrorCode,
    /// A sentence for people. Never contains internal details.
    pub message: String,
    /// The request id, also sent as the `X-Request-ID` response header.
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn unknown_codes_from_newer_servers_still_parse() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"brand_new_code","message":"m","request_id":"r"}}"#,
        )
        .unwrap();
        assert_eq!(body.error.code, ErrorCode::Unknown);
    }

    #[test]
    fn every_code_maps_to_an_error_status() {
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
    }
}
