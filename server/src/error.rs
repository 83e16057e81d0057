//! The one error type every handler returns.
//!
//! An [`ApiError`] carries a stable [`ErrorCode`] and a message meant for people.
//! It never carries internal detail to the client: an internal cause is logged once,
//! inside the request's span, and the client sees only `internal_error`. The JSON
//! envelope (with the request id) is written by [`crate::http::middleware`], which
//! also wraps the framework's own errors, so every failure has the same shape.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
pub use agentid_protocol::ErrorCode;

/// An error answer: code, message and (never shown) internal cause.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
    retry_after_secs: Option<u64>,
}

/// What the envelope writer needs from an error response; stored in the
/// response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl ApiError {
    /// An error the client can act on.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            code,
            message: message.into(),
            cause: None,
            retry_after_secs: None,
        }
    }

    /// An unexpected failure: the cause goes to the log, the client sees a generic message.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError {
            code: ErrorCode::InternalError,
            message: Cow::Borrowed(default_message(ErrorCode::InternalError)),
            cause: Some(cause.into()),
            retry_after_secs: None,
        }
    }

    /// The same answer for another caller (a batch failure answered to each of its
    /// members): same code, message and retry hint, the cause kept as text.
    pub fn replicate(&self) -> ApiError {
        ApiError {
            code: self.code,
            message: self.message.clone(),
            cause: self.cause.as_ref().map(|c| c.to_string().into()),
            retry_after_secs: self.retry_after_secs,
        }
    }

    /// Attaches a cause for the log without changing what the client sees.
    pub fn with_cause(
        mut self,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// 429 `rate_limited` with a `Retry-After` of at least one second.
    pub fn rate_limited(retry_after: std::time::Duration) -> Self {
        let mut error = ApiError::new(
            ErrorCode::RateLimited,
            default_message(ErrorCode::RateLimited),
        );
        error.retry_after_secs = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        error
    }

    /// 400 `invalid_request` with a message naming what is wrong.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(ErrorCode::InvalidRequest, message)
    }

    /// 404 `not_found`.
    pub fn not_found() -> Self {
        ApiError::new(ErrorCode::NotFound, default_message(ErrorCode::NotFound))
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(cause) = &self.cause {
            let chain = error_chain(cause.as_ref());
            if self.status_code().is_server_error() {
                tracing::error!(error.code = %self.code, error.cause = %chain, "request failed");
            } else {
                tracing::info!(error.code = %self.code, error.cause = %chain, "request refused");
            }
        }
        let mut response = HttpResponse::new(self.status_code());
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
        }
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(
                actix_web::http::header::WWW_AUTHENTICATE,
                actix_web::http::header::HeaderValue::from_static("Bearer"),
            );
        }
        response.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message.clone(),
        });
        response
    }
}

/// The client-facing message used when a code has no more specific one.
pub fn default_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidJson => "The request body is not valid JSON.",
        ErrorCode::InvalidRequest => "The request is not valid.",
        ErrorCode::UnsupportedMediaType => "The request body must be sent as application/json.",
        ErrorCode::PayloadTooLarge => "The request body is larger than this server accepts.",
        ErrorCode::NotFound => "Nothing was found at this address.",
        ErrorCode::MethodNotAllowed => "This address does not accept that HTTP method.",
        ErrorCode::RequestTimeout => {
            "The request took too long and was stopped; it may be retried."
        }
        ErrorCode::NotReady => "The server is not ready to serve requests.",
        ErrorCode::DatabaseUnavailable => "The database is busy or unreachable; retry later.",
        ErrorCode::RateLimited => {
            "Too many attempts; retry after the time in the Retry-After header."
        }
        ErrorCode::Unauthorized => "Authentication is required.",
        ErrorCode::Forbidden => "The credential does not allow this operation.",
        _ => "An internal error occurred. Quote the request id when reporting it.",
    }
}

/// The code to use for a framework-generated error response that carries no [`ErrorInfo`].
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::InvalidRequest,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        408 | 504 => ErrorCode::RequestTimeout,
        411 | 413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        409 => ErrorCode::Conflict,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::NotReady,
        s if s < 500 => ErrorCode::InvalidRequest,
        _ => ErrorCode::InternalError,
    }
}

/// `outer: inner: innermost`, for one log field.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// Failures of the storage layer, as handlers see them.
impl From<crate::db::DbError> for ApiError {
    fn from(error: crate::db::DbError) -> Self {
        match error {
            crate::db::DbError::Unavailable(_) => ApiError::new(
                ErrorCode::DatabaseUnavailable,
                default_message(ErrorCode::DatabaseUnavailable),
            )
            .with_cause(error),
            other => ApiError::internal(other),
        }
    }
}

/// A failure to begin or commit a transaction (query failures are mapped where
/// they happen, with their meaning).
impl From<diesel::result::Error> for ApiError {
    fn from(error: diesel::result::Error) -> Self {
        ApiError::internal(error)
    }
}
