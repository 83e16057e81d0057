//! One error type for every SDK call.

use agentid_protocol::ErrorCode;

/// Everything that can go wrong when talking to an agentid server.
#[derive(Debug, thiserror::Error)]
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
    },
    /// The server answered with something that is not agentid's error format
    /// (for example a proxy's error page).
    #[error("unexpected answer from server: HTTP {status}")]
    UnexpectedResponse {
        /// HTTP status of the answer.
        status: u16,
    },
    /// The server could not be reached, or the connection failed mid-request.
    #[error("could not reach the agentid server: {0}")]
    Transport(#[source] reqwest::Error),
    /// The URL given for the server is not valid.
    #[error("invalid server URL: {0}")]
    InvalidUrl(String),
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
}
