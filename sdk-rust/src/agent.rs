//! An agent's identity in one call: [`secure`] and the [`Agent`] it returns.
//!
//! `secure("my-agent")` loads the agent's key from the key store (or creates it),
//! registers the agent (idempotent per name and key), proves possession of the key
//! and keeps an agent token. It never creates a second identity for a name: a name
//! registered with another key is [`Error::KeyConflict`]. The private key is used
//! only to sign, here, in this process.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use agentid_protocol::tokens::AgentTokenClaims;
use agentid_protocol::{b64, Decision, ErrorCode};
use serde_json::json;
use zeroize::Zeroizing;

use crate::client::Body;
use crate::keystore::{check_name, KeyStore};
use crate::retry::{self, Idempotency, RetryPolicy};
use crate::signing::{self, AgentKey, SignedEnvelope};
use crate::types::{AgentRecord, AgentVerified, Challenge};
use crate::{Client, Error};

/// The server URL variable read by [`secure`].
pub const ENV_URL: &str = "AGENTID_URL";
/// The API key (or user access token) variable read by [`secure`].
pub const ENV_API_KEY: &str = "AGENTID_API_KEY";
/// The key directory variable (default: [`crate::keystore::default_key_dir`]).
pub const ENV_KEY_DIR: &str = "AGENTID_KEY_DIR";
/// The key-file passphrase variable (default: unencrypted key files).
pub const ENV_KEY_PASSPHRASE: &str = "AGENTID_KEY_PASSPHRASE";

/// Default: a token is renewed when it has less than this left.
pub const DEFAULT_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Returns a ready [`Agent`] named `name`, configured from the environment:
/// `AGENTID_URL`, `AGENTID_API_KEY` (a credential with `agents:write`), and
/// optionally `AGENTID_KEY_DIR` and `AGENTID_KEY_PASSPHRASE`.
///
/// Safe to call on every start, and from several processes at once: the same name
/// and key is the same agent.
///
/// ```no_run
/// # async fn demo() -> Result<(), agentid::Error> {
/// let agent = agentid::secure("my-agent").await?;
/// let decision = agent.verify("email:send", Some("bob@example.com"), None).await?;
/// if decision.allowed {
///     // send the mail
/// }
/// # Ok(()) }
/// ```
pub async fn secure(name: &str) -> Result<Agent, Error> {
    AgentBuilder::new(name).connect().await
}

/// Settings for [`secure`]; anything not set is read from the environment.
///
/// ```no_run
/// # async fn demo() -> Result<(), agentid::Error> {
/// use std::time::Duration;
/// let agent = agentid::AgentBuilder::new("mail-assistant")
///     .url("http://127.0.0.1:8080")
///     .api_key(std::env::var("MY_KEY").unwrap_or_default())
///     .key_dir("/var/lib/mail-assistant/keys")
///     .description("Drafts and sends replies")
///     .requested_capabilities(vec!["email:send".to_owned()])
///     .timeout(Duration::from_secs(5))
///     .connect()
///     .await?;
/// println!("agent {} with key {}", agent.id(), agent.key_id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AgentBuilder {
    name: String,
    url: Option<String>,
    api_key: Option<Zeroizing<String>>,
    key_dir: Option<PathBuf>,
    passphrase: Option<Zeroizing<String>>,
    description: Option<String>,
    requested_capabilities: Vec<String>,
    metadata: Option<serde_json::Value>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    token_refresh_margin: Duration,
}

impl std::fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("key_dir", &self.key_dir)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl AgentBuilder {
    /// Settings for the agent `name` (1 to 100 characters).
    pub fn new(name: impl Into<String>) -> AgentBuilder {
        AgentBuilder {
            name: name.into(),
            url: None,
            api_key: None,
            key_dir: None,
            passphrase: None,
            description: None,
            requested_capabilities: Vec::new(),
            metadata: None,
            timeout: None,
            connect_timeout: None,
            retry: None,
            token_refresh_margin: DEFAULT_TOKEN_REFRESH_MARGIN,
        }
    }

    /// The server's URL (default: `AGENTID_URL`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The credential that registers the agent: an API key or a user access token
    /// with `agents:write` (default: `AGENTID_API_KEY`).
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(Zeroizing::new(api_key.into()));
        self
    }

    /// The key store directory (default: `AGENTID_KEY_DIR`, else the platform's
    /// per-user data directory).
    pub fn key_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.key_dir = Some(dir.into());
        self
    }

    /// Encrypt the key file with this passphrase (default:
    /// `AGENTID_KEY_PASSPHRASE`, else unencrypted).
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    /// The description sent at first registration.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The capabilities requested at first registration (an administrator grants them).
    pub fn requested_capabilities(mut self, capabilities: Vec<String>) -> Self {
        self.requested_capabilities = capabilities;
        self
    }

    /// Metadata (a JSON object) sent at first registration.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Time limit of each HTTP request (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Time limit for connecting (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How transient failures are retried (default [`RetryPolicy::default`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Renew the agent token when less than this is left (default 60 s).
    pub fn token_refresh_margin(mut self, margin: Duration) -> Self {
        self.token_refresh_margin = margin;
        self
    }

    /// Loads or creates the key, registers, proves possession and returns the agent.
    pub async fn connect(self) -> Result<Agent, Error> {
        let name = check_name(&self.name)?.to_owned();
        let url = match self.url {
            Some(url) => url,
            None => env(ENV_URL)?.ok_or_else(|| {
                Error::Config(format!("the server URL is not set: set {ENV_URL}"))
            })?,
        };
        let api_key = match self.api_key {
            Some(key) => key,
            None => Zeroizing::new(env(ENV_API_KEY)?.ok_or_else(|| {
                Error::Config(format!(
                    "no credential to register the agent: set {ENV_API_KEY}"
                ))
            })?),
        };
        let key_dir = match self.key_dir {
            Some(dir) => dir,
            None => match env(ENV_KEY_DIR)? {
                Some(dir) => PathBuf::from(dir),
                None => crate::keystore::default_key_dir()?,
            },
        };
        let passphrase = match self.passphrase {
            Some(p) => Some(p),
            None => env(ENV_KEY_PASSPHRASE)?.map(Zeroizing::new),
        };
        let mut builder = Client::builder(&url);
        if let Some(t) = self.timeout {
            builder = builder.timeout(t);
        }
        if let Some(t) = self.connect_timeout {
            builder = builder.connect_timeout(t);
        }
        if let Some(r) = self.retry {
            builder = builder.retry(r);
        }
        let client = builder.build()?;
        let mut store = KeyStore::open(key_dir)?;
        if let Some(p) = passphrase {
            store = store.with_passphrase(p.as_str());
        }
        let registration = Registration {
            description: self.description,
            requested_capabilities: self.requested_capabilities,
            metadata: self.metadata,
        };
        let (key, record) = register(&client, &store, &name, &api_key, &registration).await?;
        let inner = Inner {
            client,
            store,
            name,
            id: record.id.clone(),
            key: RwLock::new(Arc::new(key)),
            audience: RwLock::new(String::new()),
            token: tokio::sync::Mutex::new(None),
            rotation: tokio::sync::Mutex::new(()),
            refresh_margin: self.token_refresh_margin,
        };
        let agent = Agent {
            inner: Arc::new(inner),
        };
        agent.token().await?;
        Ok(agent)
    }
}

/// An environment variable; unset or empty is `None`.
fn env(name: &str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Error::Config(format!("{name} is not valid UTF-8")))
        }
    }
}

struct Registration {
    description: Option<String>,
    requested_capabilities: Vec<String>,
    metadata: Option<serde_json::Value>,
}

/// Registers (or finds) the agent with the stored key. Finishes a rotation that
/// the server applied but this process did not record (the staged next key is
/// then the agent's key).
async fn register(
    client: &Client,
    store: &KeyStore,
    name: &str,
    api_key: &str,
    registration: &Registration,
) -> Result<(AgentKey, AgentRecord), Error> {
    let (key, _created) = store.load_or_create(name)?;
    match register_key(client, name, api_key, &key, registration).await {
        Ok(record) => {
            // A staged key the server never accepted is useless.
            store.discard_next(name);
            Ok((key, record))
        }
        Err(Error::Api {
            status: 409,
            code: ErrorCode::Conflict,
            message,
            ..
        }) if message.contains("different public key") => {
            if let Some(next) = store.load_next(name)? {
                if let Ok(record) = register_key(client, name, api_key, &next, registration).await {
                    store.promote_next(name)?;
                    return Ok((next, record));
                }
            }
            Err(Error::KeyConflict {
                name: name.to_owned(),
                local_key_id: key.key_id(),
                path: store.path_for(name)?,
            })
        }
        Err(e) => Err(e),
    }
}

async fn register_key(
    client: &Client,
    name: &str,
    api_key: &str,
    key: &AgentKey,
    registration: &Registration,
) -> Result<AgentRecord, Error> {
    let body = json!({
        "name": name,
        "public_key": key.public_key(),
        "description": registration.description,
        "requested_capabilities": registration.requested_capabilities,
        "metadata": registration.metadata,
    });
    let record: AgentRecord = client
        .call(
            reqwest::Method::POST,
            "/api/v1/agents",
            Some(api_key),
            Body::Json(&body),
            Idempotency::Safe,
        )
        .await?;
    if record.public_key != key.public_key()
        || record.key_id != key.key_id()
        || record.did != key.did()
    {
        return Err(Error::Verification(
            "the server answered with identifiers that do not match the agent's key".to_owned(),
        ));
    }
    Ok(record)
}

/// A registered agent holding its key: signs actions, asks the server for
/// decisions, rotates its key and keeps an agent token.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: share one across tasks or
/// threads.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    store: KeyStore,
    name: String,
    id: String,
    key: RwLock<Arc<AgentKey>>,
    audience: RwLock<String>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    rotation: tokio::sync::Mutex<()>,
    refresh_margin: Duration,
}

struct CachedToken {
    value: Zeroizing<String>,
    expires_at: i64,
    key_id: String,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.inner.name)
            .field("id", &self.inner.id)
            .field("key_id", &self.key_id())
            .field("server", &self.inner.client.base_url())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Settings for [`secure`].
    pub fn builder(name: impl Into<String>) -> AgentBuilder {
        AgentBuilder::new(name)
    }

    /// The agent's id (stable across key rotations).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The server's URL.
    pub fn server_url(&self) -> &str {
        self.inner.client.base_url()
    }

    /// The audience of the agent's statements: the server's public URL, as the
    /// server stated it when the agent last proved possession.
    pub fn audience(&self) -> String {
        self.inner
            .audience
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn key(&self) -> Arc<AgentKey> {
        match self.inner.key.read() {
            Ok(key) => key.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current key's id (RFC 7638 thumbprint).
    pub fn key_id(&self) -> String {
        self.key().key_id()
    }

    /// The current public key, base64url.
    pub fn public_key(&self) -> String {
        self.key().public_key()
    }

    /// The agent's `did:key` (changes with the key).
    pub fn did(&self) -> String {
        self.key().did()
    }

    /// Signs a request to perform `action` (a capability name such as
    /// `email:send`) on `resource`, binding `args` by their digest
    /// ([`signing::args_digest`]). Fresh `iat` and nonce; no network.
    ///
    /// Give the envelope to a relying party, or see [`Agent::verify`] to ask the
    /// server directly.
    pub fn sign_action(
        &self,
        action: &str,
        resource: Option<&str>,
        args: Option<&serde_json::Value>,
    ) -> Result<SignedEnvelope, Error> {
        let digest = args.map(signing::args_digest);
        signing::action_envelope(
            &self.key(),
            &self.inner.id,
            &self.audience(),
            action,
            resource,
            digest.as_deref(),
            signing::now_unix(),
            &signing::new_nonce(),
        )
    }

    /// Asks the server whether the agent may perform `action` on `resource` with
    /// `args`, and returns its decision. A denial is a decision with
    /// `allowed: false` (branch on `reason`), not an error. A retried attempt is
    /// signed anew (a new nonce), so a retry is never a replay.
    pub async fn verify(
        &self,
        action: &str,
        resource: Option<&str>,
        args: Option<&serde_json::Value>,
    ) -> Result<Decision, Error> {
        let client = &self.inner.client;
        retry::run(&client.retry_policy(), Idempotency::Safe, || async {
            let signed = self.sign_action(action, resource, args)?;
            client
                .once(
                    reqwest::Method::POST,
                    "/api/v1/actions/verify",
                    None,
                    &Body::Text(signed.into_json()),
                )
                .await
        })
        .await
    }

    /// A valid agent access token (EdDSA JWT bound to the current key), renewed by
    /// a new proof of possession when less than the refresh margin is left or the
    /// key changed.
    pub async fn token(&self) -> Result<String, Error> {
        let mut cached = self.inner.token.lock().await;
        let key_id = self.key_id();
        if let Some(token) = cached.as_ref() {
            let left = token.expires_at - signing::now_unix();
            let margin = i64::try_from(self.inner.refresh_margin.as_secs()).unwrap_or(i64::MAX);
            if token.key_id == key_id && left > margin {
                return Ok(token.value.to_string());
            }
        }
        let fresh = self.prove_possession().await?;
        let value = fresh.value.to_string();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Challenge, signed answer, token.
    async fn prove_possession(&self) -> Result<CachedToken, Error> {
        let client = &self.inner.client;
        let id = &self.inner.id;
        let key = self.key();
        let challenge: Challenge = client
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/agents/{id}/challenge"),
                None,
                Body::None,
                Idempotency::Safe,
            )
            .await?;
        let answer = signing::challenge_response_envelope(
            &key,
            id,
            &challenge.audience,
            &challenge.challenge,
            signing::now_unix(),
        )?;
        // A challenge is single use: an ambiguous failure cannot be retried with it.
        let verified: AgentVerified = client
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/agents/{id}/verify"),
                None,
                Body::Text(answer.into_json()),
                Idempotency::Unsafe,
            )
            .await?;
        let claims = token_claims(&verified.access_token)?;
        if claims.sub != *id || claims.cnf.jkt != key.key_id() {
            return Err(Error::Verification(
                "the agent token names another agent or key".to_owned(),
            ));
        }
        if let Ok(mut audience) = self.inner.audience.write() {
            audience.clone_from(&challenge.audience);
        }
        Ok(CachedToken {
            value: Zeroizing::new(verified.access_token.clone()),
            expires_at: claims.exp,
            key_id: key.key_id(),
        })
    }

    /// Replaces the agent's key with a new one, signed by both keys, and returns
    /// the new key id. The new key is written to the key store (as a staged file)
    /// before the server is asked, and becomes the agent's key file once the server
    /// accepted it; an interrupted rotation is completed by the next [`secure`].
    pub async fn rotate_key(&self) -> Result<String, Error> {
        let _one_at_a_time = self.inner.rotation.lock().await;
        let current = self.key();
        let next = AgentKey::generate();
        let store = &self.inner.store;
        let name = &self.inner.name;
        store.stage_next(name, &next)?;
        let client = &self.inner.client;
        let id = &self.inner.id;
        let audience = self.audience();
        let rotated: Result<AgentRecord, Error> =
            retry::run(&client.retry_policy(), Idempotency::Unsafe, || async {
                let signed = signing::key_rotation_envelope(
                    &current,
                    &next,
                    id,
                    &audience,
                    signing::now_unix(),
                    &signing::new_nonce(),
                )?;
                client
                    .once(
                        reqwest::Method::POST,
                        &format!("/api/v1/agents/{id}/keys/rotate"),
                        None,
                        &Body::Text(signed.into_json()),
                    )
                    .await
            })
            .await;
        let record = match rotated {
            Ok(record) => record,
            Err(e) => {
                // The server refused (4xx): the staged key will never be the agent's.
                // Without a clear answer (no response, 5xx), keep it for the next
                // start to resolve.
                if matches!(e, Error::Api { status, .. } if status < 500) {
                    store.discard_next(name);
                }
                return Err(e);
            }
        };
        if record.key_id != next.key_id() {
            return Err(Error::Verification(
                "the server answered the rotation with another key".to_owned(),
            ));
        }
        store.promote_next(name)?;
        let new_id = next.key_id();
        match self.inner.key.write() {
            Ok(mut key) => *key = Arc::new(next),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
        }
        // The cached token names the old key (cnf.jkt); the next token() renews it.
        *self.inner.token.lock().await = None;
        Ok(new_id)
    }
}

/// The claims of an agent token, read without verifying the signature (the
/// token comes straight from the server; relying parties verify with
/// [`crate::RelyingParty`]).
fn token_claims(token: &str) -> Result<AgentTokenClaims, Error> {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(b64::decode)
        .ok_or_else(|| Error::Verification("the agent token is not a JWT".to_owned()))?;
    serde_json::from_slice(&payload)
        .map_err(|_| Error::Verification("the agent token's claims are unreadable".to_owned()))
}
