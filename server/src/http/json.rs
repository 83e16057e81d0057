//! The request bodies of every route, read one way: [`JsonBody`] for a JSON body the
//! operation requires, [`OptionalJsonBody`] for one it may go without, [`NoBody`] for
//! an operation that takes none.
//!
//! Both read the body within `AGENTID_BODY_LIMIT_BYTES` (413 `payload_too_large`
//! beyond it), take only `application/json` (415 `unsupported_media_type`), and parse
//! with the protocol crate's strict reader (`agentid_protocol::json::from_slice_strict`):
//! an array is never read as an object and no string may contain U+0000. Malformed
//! JSON is 400 `invalid_json`, well-formed JSON of the wrong shape 400
//! `invalid_request`, both with the parser's position. A body that is present is
//! always read and judged: an optional body never turns a bad body into "no body".
//! actix's `web::Json` must not be used as an extractor (a test below keeps it out).

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{code_for_status, default_message, ApiError, ErrorCode};

/// A JSON request body the operation requires.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for JsonBody<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// A JSON request body the operation may go without: no body (or only whitespace)
/// is `None`; anything else must be a valid body, as for [`JsonBody`].
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<T: Default> OptionalJsonBody<T> {
    /// The body, or `T::default()` when none was sent.
    pub fn or_default(self) -> T {
        self.0.unwrap_or_default()
    }
}

/// For an operation that takes no body: none (or only whitespace) passes, anything
/// else is 400 `invalid_request`, so a body sent by mistake is never silently ignored.
#[derive(Debug)]
pub struct NoBody;

impl FromRequest for NoBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(unreadable)?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                Ok(NoBody)
            } else {
                Err(ApiError::invalid("This operation takes no request body."))
            }
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            // Refused before the body is read.
            if !json {
                return Err(unsupported_media_type());
            }
            let bytes = body.await.map_err(unreadable)?;
            parse(&bytes).map(JsonBody)
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = is_json(req);
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = body.await.map_err(unreadable)?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJsonBody(None));
            }
            if !json {
                return Err(unsupported_media_type());
            }
            parse(&bytes).map(|value| OptionalJsonBody(Some(value)))
        })
    }
}

/// Whether the request declares `application/json` (parameters such as `charset`
/// aside; media types compare case-insensitively).
fn is_json(req: &HttpRequest) -> bool {
    matches!(req.mime_type(), Ok(Some(mime)) if mime.essence_str() == "application/json")
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedMediaType,
        default_message(ErrorCode::UnsupportedMediaType),
    )
}

/// The body could not be read: over the limit, or a broken transfer.
fn unreadable(error: actix_web::Error) -> ApiError {
    let code = code_for_status(error.as_response_error().status_code());
    let message = match code {
        ErrorCode::PayloadTooLarge => default_message(code),
        _ => "The request body could not be read.",
    };
    ApiError::new(code, message).with_cause(error.to_string())
}

/// Reads `bytes` as `T` by the strict rules (module documentation).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    agentid_protocol::json::from_slice_strict(bytes).map_err(|e| {
        if !e.is_data() {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("The request body is not valid JSON: {e}."),
            )
        } else if e
            .to_string()
            .starts_with(agentid_protocol::json::NUL_MESSAGE)
        {
            ApiError::invalid(format!("The request body is not acceptable: {e}."))
        } else {
            ApiError::invalid(format!(
                "The request body does not have the expected shape: {e}."
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Login {
        email: String,
        #[expect(dead_code, reason = "read to be refused or accepted")]
        password: String,
    }

    fn code_of(text: &str) -> Option<ErrorCode> {
        parse::<Login>(text.as_bytes()).err().map(|e| e.code())
    }

    #[test]
    fn bodies_are_read_strictly_with_the_existing_codes() {
        let ok = parse::<Login>(br#"{"email":"a@example.com","password":"p"}"#).unwrap();
        assert_eq!(ok.email, "a@example.com");
        assert_eq!(
            code_of(r#"["a@example.com","p"]"#),
            Some(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            code_of(r#"{"email":"a\u0000@example.com","password":"p"}"#),
            Some(ErrorCode::InvalidRequest)
        );
        assert_eq!(code_of(r#"{"email":"#), Some(ErrorCode::InvalidJson));
        assert_eq!(code_of("1e400"), Some(ErrorCode::InvalidJson));
        assert_eq!(
            parse::<Login>(b"{\"email\":\"\xff\",\"password\":\"p\"}")
                .unwrap_err()
                .code(),
            ErrorCode::InvalidJson
        );
    }

    /// Every `.rs` file under `dir`, recursively.
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// actix's `web::Json` extractor reads arrays as objects and, inside an `Option`,
    /// turns a bad body into no body; only this module's extractors may read JSON.
    #[test]
    fn no_route_extracts_json_with_actix_web_json() {
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 20, "the sources were found");
        let mut offenders = Vec::new();
        for file in files.iter().filter(|f| !f.ends_with("http/json.rs")) {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let squeezed: String = line.split_whitespace().collect();
                // A parameter, an optional one, the config, or an import by name.
                if squeezed.contains(":web::Json<")
                    || squeezed.contains("Option<web::Json<")
                    || squeezed.contains("web::JsonConfig")
                    || (squeezed.starts_with("useactix_web") && squeezed.contains("Json"))
                {
                    offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "use http::json::JsonBody / OptionalJsonBody:\n{}",
            offenders.join("\n")
        );
    }
}
