//! A typed HTTP client for an agentid server.

use agentid_protocol::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::Error;

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

impl Client {
    /// A client for the server at `base_url` (for example `http://127.0.0.1:8080`).
    pub fn new(base_url: &str) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidUrl(
                "the server URL must start with http:// or https://".to_owned(),
            ));
        }
        Ok(Client {
            base,
            http: reqwest::Client::new(),
        })
    }

    /// The server's status and version (`GET /health`).
    pub async fn health(&self) -> Result<Health, Error> {
        self.get("/health").await
    }

    /// Whether the server can serve requests, its database included
    /// (`GET /health/ready`). A server that is not ready answers
    /// [`Error::Api`] with code [`crate::ErrorCode::NotReady`].
    pub async fn ready(&self) -> Result<Readiness, Error> {
        self.get("/health/ready").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let response = self
            .http
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .map_err(Error::Transport)?;
        decode(response).await
    }
}

/// Turns a response into the expected value or the server's error.
async fn decode<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, Error> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(Error::Transport)?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|_| Error::UnexpectedResponse {
            status: status.as_u16(),
        });
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => Err(Error::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            request_id: body.error.request_id,
        }),
        Err(_) => Err(Error::UnexpectedResponse {
            status: status.as_u16(),
        }),
    }
}
