//! One error type for every SDK call.
//!
//! A denied action is not an error: [`crate::Agent::verify`] returns the
//! [`crate::Decision`] either way. Errors are failures to get an answer, answers
//! the server refused with its error envelope, and local problems (configuration,
//! key store, a token that does not verify). No variant ever carries a secret.

use std::path::PathBuf;
use std::time::Duration;

use agentid_protocol::ErrorCode;

/// Everything that can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with its JSON error envelope.
    #[error("{status} {code}: {message} (request id {request_id})")]
    Api {
        /// HTTP status of the answer.
        status: u16,
        /// The stable error code (see the server's `docs/errors.md`).
        code: ErrorCode,
        /// The server's human-readable message.
        message: String,
        /// The request id, to quote when asking an operator to look at the logs.
        request_id: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The server answered with something that is not agentid's error format
    /// (for example a proxy's error page), or a success body the SDK cannot read.
    #[error("unexpected answer from server: HTTP {status}")]
    UnexpectedResponse {
        /// HTTP status of the answer.
        status: u16,
    },
    /// The server could not be reached, the connection failed mid-request, or the
    /// request timed out.
    #[error("could not reach the agentid server: {0}")]
    Transport(#[source] reqwest::Error),
    /// The URL given for the server is not valid.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
    /// The SDK is missing configuration (for example `AGENTID_URL` or
    /// `AGENTID_API_KEY`), or a setting is not acceptable.
    #[error("configuration error: {0}")]
    Config(String),
    /// An argument is not acceptable before anything is sent (for example an
    /// action that is not a `namespace:action` capability name).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The agent name is registered on the server with a different public key
    /// than the one in the local key store. `secure()` never silently creates a
    /// new identity: restore the right key file, or pick another name.
    #[error(
        "the agent `{name}` is registered with a different public key than the local key \
         {local_key_id} in {path}; restore the agent's key file or use another name"
    )]
    KeyConflict {
        /// The agent name.
        name: String,
        /// The key id (RFC 7638 thumbprint) of the local key.
        local_key_id: String,
        /// The key file.
        path: PathBuf,
    },
    /// The key store refused a file or directory (permissions, format, a missing
    /// or wrong passphrase).
    #[error("key store: {message} ({path})")]
    KeyStore {
        /// What is wrong.
        message: String,
        /// The file or directory concerned.
        path: PathBuf,
    },
    /// A file-system operation of the key store failed.
    #[error("key store I/O on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A token, receipt or envelope did not pass verification, or the server
    /// answered with identifiers that do not match the local key.
    #[error("verification failed: {0}")]
    Verification(String),
}

impl Error {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The request id the server assigned, when it answered.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// The HTTP status of the server's answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::UnexpectedResponse { status } => Some(*status),
            _ => None,
        }
    }

    /// A stable, snake_case name of the variant, for bindings that map errors to
    /// their own exception types (for example `api`, `key_conflict`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api { .. } => "api",
            Error::UnexpectedResponse { .. } => "unexpected_response",
            Error::Transport(_) => "transport",
            Error::InvalidUrl(_) => "invalid_url",
            Error::Config(_) => "config",
            Error::InvalidInput(_) => "invalid_input",
            Error::KeyConflict { .. } => "key_conflict",
            Error::KeyStore { .. } => "key_store",
            Error::Io { .. } => "io",
            Error::Verification(_) => "verification",
        }
    }

    /// Whether the same request may succeed if tried again later: connection
    /// failures, timeouts, `429` and `502`/`503`/`504`. Never a denial or another `4xx`.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            Error::Api { status, .. } | Error::UnexpectedResponse { status } => {
                matches!(status, 429 | 502 | 503 | 504)
            }
            _ => false,
        }
    }

    pub(crate) fn key_store(message: impl Into<String>, path: impl Into<PathBuf>) -> Error {
        Error::KeyStore {
            message: message.into(),
            path: path.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: ErrorCode) -> Error {
        Error::Api {
            status,
            code,
            message: "m".to_owned(),
            request_id: "r".to_owned(),
            retry_after: None,
        }
    }

    #[test]
    fn only_rate_limits_and_gateway_failures_are_transient() {
        assert!(api(429, ErrorCode::RateLimited).is_transient());
        assert!(api(503, ErrorCode::NotReady).is_transient());
        assert!(Error::UnexpectedResponse { status: 502 }.is_transient());
        assert!(Error::UnexpectedResponse { status: 504 }.is_transient());
        assert!(!api(500, ErrorCode::InternalError).is_transient());
        assert!(!api(409, ErrorCode::Conflict).is_transient());
        assert!(!api(401, ErrorCode::InvalidProof).is_transient());
        assert!(!api(403, ErrorCode::Forbidden).is_transient());
        assert!(!Error::Config("x".into()).is_transient());
    }

    #[test]
    fn accessors_expose_the_server_fields() {
        let e = api(404, ErrorCode::NotFound);
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        assert_eq!(e.request_id(), Some("r"));
        assert_eq!(e.status(), Some(404));
        assert_eq!(e.kind(), "api");
        assert_eq!(e.to_string(), "404 not_found: m (request id r)");
    }
}
