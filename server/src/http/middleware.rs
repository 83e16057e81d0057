//! The outermost middleware: request ids, the error envelope, limits and headers.
//!
//! Every request passes through [`envelope`], which
//! - takes a well-formed `X-Request-ID` or makes one, echoes it, and opens the
//!   request's tracing span with it, so every log line of the request carries it;
//! - refuses a declared body over the limit before reading it, and a path or query
//!   string that percent-encodes a control character (PostgreSQL cannot store U+0000);
//! - stops a request that runs past the timeout and catches a handler panic, both
//!   answered in the error envelope without detail;
//! - turns every error response, the framework's own included, into
//!   `{"error":{"code","message","request_id"}}`;
//! - adds the security headers and records the request's metrics by route template.
//!
//! It must never hold a clone of the request while the inner service runs: routing
//! needs the request uniquely. Paths that have no request at hand answer with
//! [`FinalError`], which renders the complete envelope itself.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use agentid_protocol::{ErrorBody, ErrorCode, ErrorDetail};
use futures_util::FutureExt;
use tracing::Instrument;

use crate::error::{code_for_status, default_message, ApiError, ErrorInfo};
use crate::http::client::TrustedProxies;
use crate::metrics::{Metrics, RequestLabels};

/// The request id header, read and echoed.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the request being served, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// What the middleware needs from the configuration.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Proxies whose forwarding headers are believed (client address, scheme).
    pub trusted_proxies: Arc<TrustedProxies>,
    /// Whether this server terminates TLS itself.
    pub tls: bool,
}

/// Content-Security-Policy for API answers: nothing may be loaded or framed.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Wraps every request; see the module documentation.
pub async fn envelope(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(settings) = req.app_data::<web::Data<HttpSettings>>().cloned() else {
        // Only reachable if the app is assembled without `startup::build_app`.
        return Err(FinalError::new(ErrorCode::InternalError, new_request_id()).into());
    };
    let request_id = incoming_request_id(req.headers()).unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let client = settings
        .trusted_proxies
        .client(req.peer_addr(), req.headers(), settings.tls);
    req.extensions_mut().insert(client);
    let method = req.method().to_string();
    // At ERROR level so the span is enabled whenever anything is logged at all: with
    // `AGENTID_LOG=warn` a warning about the request still names its request id (an
    // INFO span would be filtered out with everything in it left unlabelled).
    let span = tracing::error_span!(
        "http_request",
        request_id = %request_id,
        http.method = %method,
        http.route = tracing::field::Empty,
        http.status = tracing::field::Empty,
    );

    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let outcome = if declared_length.is_some_and(|n| n > settings.body_limit as u64) {
        Err(FinalError::new(
            ErrorCode::PayloadTooLarge,
            request_id.clone(),
        ))
    } else if encodes_control(req.path()) || encodes_control(req.query_string()) {
        Err(FinalError {
            message: CONTROL_IN_ADDRESS.to_owned(),
            ..FinalError::new(ErrorCode::InvalidRequest, request_id.clone())
        })
    } else {
        let inner = AssertUnwindSafe(next.call(req)).catch_unwind();
        match tokio::time::timeout(settings.request_timeout, inner)
            .instrument(span.clone())
            .await
        {
            Ok(Ok(Ok(response))) => Ok(response.map_into_boxed_body()),
            Ok(Ok(Err(error))) => {
                // An error that escaped the handler's own conversion: render it the
                // usual way, then envelope it like any other error response.
                let response = span.in_scope(|| error.error_response());
                let info = response.extensions().get::<ErrorInfo>().cloned();
                let mut final_error = FinalError::new(
                    info.as_ref()
                        .map(|i| i.code)
                        .unwrap_or_else(|| code_for_status(response.status())),
                    request_id.clone(),
                );
                if let Some(info) = info {
                    final_error.message = info.message.into_owned();
                }
                Err(final_error)
            }
            Ok(Err(_panic)) => {
                span.in_scope(|| tracing::error!("the handler panicked; answered internal_error"));
                Err(FinalError::new(
                    ErrorCode::InternalError,
                    request_id.clone(),
                ))
            }
            Err(_elapsed) => {
                span.in_scope(|| {
                    tracing::warn!(
                        timeout_ms = settings.request_timeout.as_millis() as u64,
                        "the request ran past its timeout and was stopped"
                    )
                });
                Err(FinalError::new(
                    ErrorCode::RequestTimeout,
                    request_id.clone(),
                ))
            }
        }
    };

    let (route, status, result) = match outcome {
        Ok(response) => {
            let route = response
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let response = finish(response, &request_id, client.https);
            (route, response.status(), Ok(response))
        }
        Err(mut final_error) => {
            final_error.hsts = client.https;
            (
                "unmatched".to_owned(),
                final_error.status_code(),
                Err(final_error.into()),
            )
        }
    };

    let elapsed = started.elapsed();
    span.record("http.route", route.as_str());
    span.record("http.status", status.as_u16());
    span.in_scope(|| {
        tracing::info!(
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request answered"
        )
    });
    settings.metrics.observe_request(
        RequestLabels {
            method,
            route,
            status: status.as_u16(),
        },
        elapsed.as_secs_f64(),
    );
    result
}

const CONTROL_IN_ADDRESS: &str = "The address contains a percent-encoded control character \
     (such as %00), which no path or query value accepts.";

/// Whether `raw`, a path or query string as sent, percent-encodes a control character
/// (general category Cc: U+0000 to U+001F, U+007F, and U+0080 to U+009F as `%C2%80` to
/// `%C2%9F`). The HTTP parser already refuses them unencoded. No id, name or filter
/// contains one, and PostgreSQL cannot store U+0000: they are refused before routing,
/// on both backends alike. One pass over the bytes, nothing allocated.
fn encodes_control(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    bytes.iter().enumerate().any(|(i, &b)| {
        if b != b'%' {
            return false;
        }
        match (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (Some(0 | 1), Some(_)) | (Some(7), Some(0xf)) => true,
            (Some(0xc), Some(2)) => matches!(
                (
                    bytes.get(i + 3),
                    bytes.get(i + 4).copied().and_then(hex),
                    bytes.get(i + 5).copied().and_then(hex),
                ),
                (Some(b'%'), Some(8 | 9), Some(_))
            ),
            _ => false,
        }
    })
}

/// Adds the request id and security headers; replaces any error body with the envelope.
fn finish(
    response: ServiceResponse<BoxBody>,
    request_id: &Arc<str>,
    hsts: bool,
) -> ServiceResponse<BoxBody> {
    let status = response.status();
    let envelope = if status.is_client_error() || status.is_server_error() {
        let info = response.response().extensions().get::<ErrorInfo>().cloned();
        let (code, message) = match info {
            Some(info) => (info.code, info.message.into_owned()),
            None => {
                let code = code_for_status(status);
                (code, default_message(code).to_owned())
            }
        };
        Some(envelope_json(code, message, request_id))
    } else {
        None
    };
    let request_id = request_id.clone();
    response.map_body(move |head, body| {
        set_standard_headers(&mut head.headers, &request_id, hsts);
        match envelope {
            Some(json) => {
                head.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                head.headers.remove(header::CONTENT_LENGTH);
                BoxBody::new(json)
            }
            None => body,
        }
    })
}

fn envelope_json(code: ErrorCode, message: String, request_id: &str) -> String {
    let body = ErrorBody {
        error: ErrorDetail {
            code,
            message,
            request_id: request_id.to_owned(),
        },
    };
    serde_json::to_string(&body).unwrap_or_else(|_| {
        r#"{"error":{"code":"internal_error","message":"internal error","request_id":""}}"#
            .to_owned()
    })
}

/// HSTS for answers the client received over https (our TLS, or a trusted proxy's).
const HSTS: &str = "max-age=31536000; includeSubDomains";

fn set_standard_headers(headers: &mut HeaderMap, request_id: &str, hsts: bool) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(API_CSP),
        );
    }
    // Answers are not cacheable unless the handler says otherwise on purpose (the
    // docs assets and the JWKS do).
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Accepts a client's request id only if it is short and plain, so it can be
/// echoed in a header and written to logs without escaping surprises.
fn incoming_request_id(headers: &HeaderMap) -> Option<Arc<str>> {
    let value = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let plain = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        });
    plain.then(|| Arc::from(value))
}

fn new_request_id() -> Arc<str> {
    Arc::from(uuid::Uuid::new_v4().simple().to_string())
}

/// An error answered without the request at hand (timeout, panic, oversize body):
/// it renders the whole envelope and headers itself.
#[derive(Debug)]
pub struct FinalError {
    code: ErrorCode,
    message: String,
    request_id: Arc<str>,
    /// Whether the answer goes out over https (adds HSTS).
    hsts: bool,
}

impl FinalError {
    fn new(code: ErrorCode, request_id: Arc<str>) -> Self {
        FinalError {
            code,
            message: default_message(code).to_owned(),
            request_id,
            hsts: false,
        }
    }
}

impl std::fmt::Display for FinalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code.as_str())
    }
}

impl ResponseError for FinalError {
    fn status_code(&self) -> StatusCode {
        ApiError::new(self.code, "").status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code())
            .content_type("application/json")
            .body(envelope_json(
                self.code,
                self.message.clone(),
                &self.request_id,
            ));
        set_standard_headers(response.headers_mut(), &self.request_id, self.hsts);
        if self.code == ErrorCode::RequestTimeout {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_id(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static(REQUEST_ID_HEADER),
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn plain_request_ids_are_kept() {
        assert_eq!(
            incoming_request_id(&with_id("abc-123")).as_deref(),
            Some("abc-123")
        );
    }

    #[test]
    fn percent_encoded_control_characters_are_found() {
        for raw in [
            "/api/v1/agents/%00/challenge",
            "name=%00",
            "after=a%1fb",
            "x=%7F",
            "x=%7f",
            "/a%0A",
            "q=%C2%85",
            "q=%c2%9F",
        ] {
            assert!(encodes_control(raw), "{raw}");
        }
        for raw in [
            "",
            "/api/v1/actions/verify",
            "name=mail%20assistant",
            "x=%25",
            "x=%2000",
            "q=%C2%A0",
            "q=%C3%A9",
            "x=%",
            "x=%0",
            "x=%C2",
            "x=%C2%8",
        ] {
            assert!(!encodes_control(raw), "{raw}");
        }
    }

    #[test]
    fn unusual_request_ids_are_replaced() {
        assert!(incoming_request_id(&with_id("a b")).is_none());
        assert!(incoming_request_id(&with_id(&"x".repeat(129))).is_none());
        assert!(incoming_request_id(&with_id("<script>")).is_none());
        assert!(incoming_request_id(&HeaderMap::new()).is_none());
    }
}

/// The envelope's behaviour for failures no production route provokes on purpose
/// (panics, timeouts), on a real server bound to a loopback port.
#[cfg(test)]
mod server_tests {
    use actix_web::{web, App, HttpResponse, HttpServer};

    use super::*;

    #[derive(serde::Deserialize)]
    struct Echo {
        #[expect(dead_code)]
        name: String,
    }

    async fn start() -> (String, actix_web::dev::ServerHandle) {
        let settings = web::Data::new(HttpSettings {
            body_limit: 1024,
            request_timeout: Duration::from_millis(200),
            metrics: Metrics::new(),
            trusted_proxies: Arc::default(),
            tls: false,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(settings.clone())
                .app_data(web::PayloadConfig::new(1024))
                .route(
                    "/panic",
                    web::get().to(|| async { panic!("boom with a secret detail") as HttpResponse }),
                )
                .route(
                    "/slow",
                    web::get().to(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        HttpResponse::Ok().finish()
                    }),
                )
                .route(
                    "/echo",
                    web::post().to(|_: crate::http::json::JsonBody<Echo>| async {
                        HttpResponse::NoContent().finish()
                    }),
                )
                .wrap(actix_web::middleware::from_fn(envelope))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let address = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        (address, handle)
    }

    async fn error_of(response: reqwest::Response) -> (u16, serde_json::Value, String) {
        let status = response.status().as_u16();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["request_id"], id.as_str());
        (status, body, id)
    }

    #[tokio::test]
    async fn failures_answer_in_the_envelope_without_detail() {
        let (base, handle) = start().await;
        let http = reqwest::Client::new();

        let (status, body, _) =
            error_of(http.get(format!("{base}/panic")).send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (500, Some("internal_error"))
        );
        assert!(
            !body.to_string().contains("boom"),
            "panic detail leaked: {body}"
        );

        let (status, body, _) =
            error_of(http.get(format!("{base}/slow")).send().await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("request_timeout"))
        );

        let post = |body: &'static str, content_type: &'static str| {
            http.post(format!("{base}/echo"))
                .header("content-type", content_type)
                .header("x-request-id", "abc-123")
                .body(body)
                .send()
        };
        let (status, body, id) = error_of(post("{bad", "application/json").await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_json"))
        );
        assert_eq!(id, "abc-123");

        let (status, body, _) =
            error_of(post(r#"{"nom":"x"}"#, "application/json").await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request"))
        );
        assert!(body["error"]["message"].as_str().unwrap().contains("name"));

        let (status, body, _) =
            error_of(post(r#"{"name":"x"}"#, "text/plain").await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (415, Some("unsupported_media_type"))
        );

        // A body over the limit sent without a declared length is stopped while read.
        let chunks =
            futures_util::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(bytes_of(512))));
        let response = http
            .post(format!("{base}/echo"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
            .unwrap();
        let (status, body, _) = error_of(response).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("payload_too_large"))
        );

        // The worker survived the panic and the timeout.
        let ok = post(r#"{"name":"x"}"#, "application/json").await.unwrap();
        assert_eq!(ok.status(), 204);
        handle.stop(false).await;
    }

    fn bytes_of(n: usize) -> Vec<u8> {
        vec![b' '; n]
    }
}
