//! A typed HTTP client for an agentid server: the transport every other part of
//! the SDK uses.
//!
//! It owns the connection pool, the timeouts and the retry policy, and turns every
//! answer into a value or an [`Error`] carrying the server's code, message and
//! request id. It never logs, and never puts a credential anywhere but the
//! `Authorization` header.

use std::time::Duration;

use agentid_protocol::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::retry::{self, Idempotency, RetryPolicy};
use crate::Error;

/// Default time limit of one HTTP request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time limit for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one agentid server.
///
/// Cheap to clone; clones share one connection pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), agentid::Error> {
/// let client = agentid::Client::new("http://127.0.0.1:8080")?;
/// let health = client.health().await?;
/// println!("server version {}", health.version);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    retry: RetryPolicy,
}

/// Settings of a [`Client`]: timeouts and retries.
///
/// ```
/// use std::time::Duration;
/// let client = agentid::Client::builder("http://127.0.0.1:8080")
///     .timeout(Duration::from_secs(5))
///     .retry(agentid::RetryPolicy::none())
///     .build()?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:8080");
/// # Ok::<(), agentid::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
}

impl ClientBuilder {
    /// The time limit of one HTTP request attempt (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The time limit for establishing a connection (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How transient failures are retried (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The client, or [`Error::InvalidUrl`] when the URL is not `http(s)://…`.
    pub fn build(self) -> Result<Client, Error> {
        let base = self.base.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.contains(['?', '#', ' ']) => {}
            _ => return Err(Error::InvalidUrl(
                "the server URL must be http:// or https:// and a host, without query or fragment"
                    .to_owned(),
            )),
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("agentid-rust/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("the HTTP client could not be built: {e}")))?;
        Ok(Client {
            base,
            http,
            retry: self.retry,
        })
    }
}

/// The answer of `GET /health`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// `ok` while the process serves requests.
    pub status: String,
    /// The server's version.
    pub version: String,
}

/// The answer of `GET /health/ready` when the server is ready.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// The storage backend in use: `sqlite` or `postgres`.
    pub database: String,
}

/// A request body.
pub(crate) enum Body<'a> {
    None,
    Json(&'a serde_json::Value),
    /// JSON text sent as is (signed envelopes: their bytes must not be rebuilt).
    Text(String),
}

impl Client {
    /// A client for the server at `base_url` (for example `http://127.0.0.1:8080`)
    /// with the default timeouts and retry policy.
    pub fn new(base_url: &str) -> Result<Self, Error> {
        Client::builder(base_url).build()
    }

    /// A builder to set timeouts and retries.
    pub fn builder(base_url: &str) -> ClientBuilder {
        ClientBuilder {
            base: base_url.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The server's status and version (`GET /health`).
    pub async fn health(&self) -> Result<Health, Error> {
        self.call(
            reqwest::Method::GET,
            "/health",
            None,
            Body::None,
            Idempotency::Safe,
        )
        .await
    }

    /// Whether the server can serve requests, its database included
    /// (`GET /health/ready`). A server that is not ready answers
    /// [`Error::Api`] with code [`crate::ErrorCode::NotReady`] (after the retries
    /// the policy allows, since `503` is transient).
    pub async fn ready(&self) -> Result<Readiness, Error> {
        self.call(
            reqwest::Method::GET,
            "/health/ready",
            None,
            Body::None,
            Idempotency::Safe,
        )
        .await
    }

    /// Sends one request with retries and decodes the answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: Option<&str>,
        body: Body<'_>,
        idempotency: Idempotency,
    ) -> Result<T, Error> {
        retry::run(&self.retry, idempotency, || {
            self.once(method.clone(), path, credential, &body)
        })
        .await
    }

    /// Sends one request, once.
    pub(crate) async fn once<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: Option<&str>,
        body: &Body<'_>,
    ) -> Result<T, Error> {
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(value),
            Body::Text(text) => request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(text.clone()),
        };
        let response = request.send().await.map_err(Error::Transport)?;
        decode(response).await
    }
}

/// Turns a response into the expected value or the server's error.
pub(crate) async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = response.bytes().await.map_err(Error::Transport)?;
    if status.is_success() {
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        return serde_json::from_slice(bytes).map_err(|_| Error::UnexpectedResponse {
            status: status.as_u16(),
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(Error::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            request_id: body.error.request_id,
            retry_after,
        }),
        Err(_) => Err(Error::UnexpectedResponse {
            status: status.as_u16(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_urls_that_are_not_http() {
        for bad in ["ftp://x", "127.0.0.1:8080", "http://", "http://x?y=1", ""] {
            assert!(
                matches!(Client::new(bad), Err(Error::InvalidUrl(_))),
                "{bad}"
            );
        }
        let client = Client::new("https://agentid.example/").unwrap();
        assert_eq!(client.base_url(), "https://agentid.example");
    }
}
