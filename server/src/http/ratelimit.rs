//! Rate limits at the HTTP edge: the middleware for management and auth routes,
//! the helper the agent handlers call once they know the agent, and the
//! `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers-10).
//!
//! The middleware runs inside the envelope middleware, so a 429 gets the JSON
//! envelope and the request id. It limits `auth`, `writes` and `reads` by client
//! address and credential digest in one check. `actions` and `agent_auth` are
//! limited by their handlers ([`limit_agent_request`]), which know the agent; the
//! middleware only adds the headers of the verdict the handler left in the request's
//! extensions.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};

use crate::error::ApiError;
use crate::http::client::ClientAddr;
use crate::ratelimit::{Class, Key, Verdict};
use crate::startup::AppState;

/// Limits management and auth requests; adds the rate-limit headers to every
/// limited class's answers.
pub async fn rate_limit(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(class) = Class::of(req.method(), req.path()) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    if matches!(class, Class::Actions | Class::AgentAuth) {
        // The handler checks, with the agent; pass its verdict on as headers.
        let response = next.call(req).await?.map_into_boxed_body();
        let verdict = response.request().extensions().get::<Verdict>().cloned();
        return Ok(match verdict {
            Some(verdict) => with_headers(response, &verdict),
            None => response,
        });
    }
    if !state.rate_limiter.limits_class(class) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let client = {
        let http_req = req.request();
        ClientAddr::of(http_req)
    };
    let mut keys = [Key::address(class, client.ip); 2];
    let mut n = 1;
    if let Some(secret) = presented_credential(req.headers()) {
        keys[1] = Key::credential(class, secret);
        n = 2;
    }
    let Some(verdict) = state.rate_limiter.check(&keys[..n]).await else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    if !verdict.allowed {
        tracing::info!(
            rate_limit.policy = verdict.policy,
            retry_after_s = verdict.retry_after.as_secs_f64().ceil() as u64,
            "request refused by the rate limit"
        );
        let response = ApiError::rate_limited(verdict.retry_after).error_response();
        let response = req.into_response(response).map_into_boxed_body();
        return Ok(with_headers(response, &verdict));
    }
    let response = next.call(req).await?.map_into_boxed_body();
    Ok(with_headers(response, &verdict))
}

/// The credential a request presents (bearer token or `X-API-Key`), as bytes to
/// digest; never logged or kept.
fn presented_credential(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get("x-api-key") {
        let bytes = value.as_bytes().trim_ascii();
        if !bytes.is_empty() {
            return Some(bytes);
        }
    }
    let value = headers.get("authorization")?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The check the agent handlers make once they know the agent (`None` to count
/// the address alone). Leaves the verdict in the request for the headers; a
/// refusal is 429 `rate_limited` with `Retry-After`.
pub async fn limit_agent_request(
    req: &HttpRequest,
    state: &AppState,
    class: Class,
    agent_id: Option<&str>,
) -> Result<(), ApiError> {
    let address = Key::address(class, ClientAddr::of(req).ip);
    match agent_id {
        Some(agent_id) => limit(req, state, &[address, Key::agent(class, agent_id)]).await,
        None => limit(req, state, &[address]).await,
    }
}

/// The agent's own budget alone, for a handler that counted the address before any
/// work and now knows the agent's key signed the request (docs/rate-limits.md).
pub async fn limit_agent_budget(
    req: &HttpRequest,
    state: &AppState,
    class: Class,
    agent_id: &str,
) -> Result<(), ApiError> {
    limit(req, state, &[Key::agent(class, agent_id)]).await
}

async fn limit(req: &HttpRequest, state: &AppState, keys: &[Key]) -> Result<(), ApiError> {
    let Some(verdict) = state.rate_limiter.check(keys).await else {
        return Ok(());
    };
    let allowed = verdict.allowed;
    let retry_after = verdict.retry_after;
    if !allowed {
        tracing::info!(
            rate_limit.policy = verdict.policy,
            retry_after_s = retry_after.as_secs_f64().ceil() as u64,
            "request refused by the rate limit"
        );
    }
    req.extensions_mut().insert(verdict);
    if allowed {
        Ok(())
    } else {
        Err(ApiError::rate_limited(retry_after))
    }
}

fn with_headers(response: ServiceResponse<BoxBody>, verdict: &Verdict) -> ServiceResponse<BoxBody> {
    let mut response = response;
    set_headers(response.headers_mut(), verdict);
    response
}

/// `RateLimit-Policy: "reads.credential";q=1200;w=60` and
/// `RateLimit: "reads.credential";r=1187;t=1` for the most constrained key.
fn set_headers(headers: &mut HeaderMap, verdict: &Verdict) {
    let policy = format!(
        "\"{}\";q={};w={}",
        verdict.policy, verdict.quota, verdict.window_secs
    );
    let state = format!(
        "\"{}\";r={};t={}",
        verdict.policy,
        verdict.remaining,
        whole_seconds(verdict.reset)
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert(HeaderName::from_static("ratelimit-policy"), value);
    }
    if let Ok(value) = HeaderValue::from_str(&state) {
        headers.insert(HeaderName::from_static("ratelimit"), value);
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs_f64().ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn credentials_come_from_bearer_or_api_key_headers() {
        assert_eq!(
            presented_credential(&headers(&[("authorization", "Bearer abc")])),
            Some(&b"abc"[..])
        );
        assert_eq!(
            presented_credential(&headers(&[("authorization", "bearer  abc ")])),
            Some(&b"abc"[..])
        );
        assert_eq!(
            presented_credential(&headers(&[("x-api-key", "k1")])),
            Some(&b"k1"[..])
        );
        assert_eq!(
            presented_credential(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            presented_credential(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(presented_credential(&HeaderMap::new()), None);
    }

    #[test]
    fn headers_follow_the_draft() {
        let mut map = HeaderMap::new();
        set_headers(
            &mut map,
            &Verdict {
                allowed: false,
                policy: "auth.address",
                class: Class::Auth,
                quota: 60,
                window_secs: 60,
                remaining: 0,
                reset: Duration::from_millis(59_500),
                retry_after: Duration::from_millis(500),
            },
        );
        assert_eq!(
            map.get("ratelimit-policy").unwrap(),
            "\"auth.address\";q=60;w=60"
        );
        assert_eq!(map.get("ratelimit").unwrap(), "\"auth.address\";r=0;t=60");
    }
}
