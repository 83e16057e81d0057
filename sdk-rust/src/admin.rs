//! A client for the management API: organizations, users, API keys, agents,
//! capabilities and grants, alerts, audit and trust.
//!
//! Every method is one documented operation of `openapi/openapi.json`;
//! [`OPERATIONS`] lists them (method, path template, operation id), and a test
//! fails when one is missing from the document or when the document gains an
//! operation that no part of the SDK covers or explicitly leaves out. The
//! credential (an API key or a user access token) is sent only in the
//! `Authorization` header and never shown by `Debug`.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::client::Body;
use crate::retry::Idempotency;
use crate::types::{
    AgentKeyRecord, AgentPage, AgentRecord, Alert, AlertPage, ApiKey, AuditPage, Capability,
    ChainReport, CreatedApiKey, EnforcementSetting, Grant, HistoryPage, Me, Organization,
    TokenPair, TrustPolicy, TrustReport, User,
};
use crate::{Client, Error};

/// One operation of the management API that [`AdminClient`] performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template as in the OpenAPI document.
    pub path: &'static str,
    /// The OpenAPI `operationId`.
    pub operation_id: &'static str,
}

const fn op(method: &'static str, path: &'static str, operation_id: &'static str) -> Operation {
    Operation {
        method,
        path,
        operation_id,
    }
}

/// Every operation [`AdminClient`] performs, in the order of its methods.
pub const OPERATIONS: &[Operation] = &[
    op("POST", "/api/v1/auth/login", "create_session"),
    op("POST", "/api/v1/auth/refresh", "create_session_refresh"),
    op("POST", "/api/v1/auth/logout", "delete_session_current"),
    op("POST", "/api/v1/auth/password", "update_password"),
    op("GET", "/api/v1/auth/sessions", "list_sessions"),
    op("DELETE", "/api/v1/auth/sessions/{id}", "delete_session"),
    op("GET", "/api/v1/me", "get_me"),
    op("GET", "/api/v1/organization", "get_organization"),
    op(
        "GET",
        "/api/v1/organization/enforcement",
        "get_enforcement_mode",
    ),
    op(
        "PUT",
        "/api/v1/organization/enforcement",
        "replace_enforcement_mode",
    ),
    op("GET", "/api/v1/users", "list_users"),
    op("POST", "/api/v1/users", "create_user"),
    op("GET", "/api/v1/users/{id}", "get_user"),
    op("PATCH", "/api/v1/users/{id}", "update_user"),
    op("GET", "/api/v1/api-keys", "list_api_keys"),
    op("POST", "/api/v1/api-keys", "create_api_key"),
    op("DELETE", "/api/v1/api-keys/{id}", "delete_api_key"),
    op("GET", "/api/v1/agents", "list_agents"),
    op("GET", "/api/v1/agents/{agent_id}", "get_agent"),
    op("PATCH", "/api/v1/agents/{agent_id}", "update_agent"),
    op("POST", "/api/v1/agents/{agent_id}/suspend", "suspend_agent"),
    op(
        "POST",
        "/api/v1/agents/{agent_id}/reactivate",
        "reactivate_agent",
    ),
    op("POST", "/api/v1/agents/{agent_id}/revoke", "revoke_agent"),
    op("GET", "/api/v1/agents/{agent_id}/keys", "list_agent_keys"),
    op("GET", "/api/v1/agents/{agent_id}/trust", "get_agent_trust"),
    op(
        "GET",
        "/api/v1/agents/{agent_id}/trust/history",
        "list_agent_trust_history",
    ),
    op(
        "POST",
        "/api/v1/agents/{agent_id}/trust/attestations",
        "create_agent_attestation",
    ),
    op(
        "GET",
        "/api/v1/organization/trust-policy",
        "get_trust_policy",
    ),
    op(
        "PUT",
        "/api/v1/organization/trust-policy",
        "replace_trust_policy",
    ),
    op("GET", "/api/v1/capabilities", "list_capabilities"),
    op("POST", "/api/v1/capabilities", "create_capability"),
    op("GET", "/api/v1/capabilities/{name}", "get_capability"),
    op("PATCH", "/api/v1/capabilities/{name}", "update_capability"),
    op(
        "GET",
        "/api/v1/agents/{agent_id}/grants",
        "list_agent_grants",
    ),
    op(
        "POST",
        "/api/v1/agents/{agent_id}/grants",
        "grant_capability",
    ),
    op(
        "DELETE",
        "/api/v1/agents/{agent_id}/grants/{grant_id}",
        "revoke_agent_grant",
    ),
    op("GET", "/api/v1/alerts", "list_alerts"),
    op("GET", "/api/v1/alerts/{alert_id}", "get_alert"),
    op(
        "POST",
        "/api/v1/alerts/{alert_id}/acknowledge",
        "acknowledge_alert",
    ),
    op("POST", "/api/v1/alerts/{alert_id}/resolve", "resolve_alert"),
    op("GET", "/api/v1/audit", "list_audit_records"),
    op("GET", "/api/v1/audit/verify", "verify_audit_chain"),
];

/// Operations performed by the rest of the SDK ([`crate::Agent`],
/// [`crate::RelyingParty`], [`Client`]).
pub const SDK_OPERATIONS: &[Operation] = &[
    op("POST", "/api/v1/agents", "create_agent"),
    op(
        "POST",
        "/api/v1/agents/{agent_id}/challenge",
        "create_agent_challenge",
    ),
    op(
        "POST",
        "/api/v1/agents/{agent_id}/verify",
        "verify_agent_challenge",
    ),
    op(
        "POST",
        "/api/v1/agents/{agent_id}/keys/rotate",
        "rotate_agent_key",
    ),
    op("POST", "/api/v1/actions/verify", "verify_action"),
    op("GET", "/.well-known/jwks.json", "get_jwks"),
    op("GET", "/health", "get_health"),
    op("GET", "/health/ready", "get_health_ready"),
];

/// Operations no part of the SDK performs, on purpose: they serve operators'
/// tooling (probes, Prometheus, the API document).
pub const NOT_COVERED: &[Operation] = &[
    op("GET", "/health/live", "get_health_live"),
    op("GET", "/metrics", "get_metrics"),
    op("GET", "/openapi.json", "get_openapi"),
];

/// Filters for [`AdminClient::list_agents`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentQuery {
    /// `pending`, `active`, `suspended` or `revoked`.
    pub status: Option<String>,
    /// Agents of this owner.
    pub owner_id: Option<String>,
    /// The agent with exactly this name.
    pub name: Option<String>,
    /// The previous page's `next_after`.
    pub after: Option<String>,
    /// Page size, 1 to 500 (server default 100).
    pub limit: Option<i64>,
}

/// Filters for [`AdminClient::list_alerts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertQuery {
    /// `open`, `acknowledged` or `resolved`.
    pub status: Option<String>,
    /// For example `capability_violation`.
    pub kind: Option<String>,
    /// Alerts about this agent.
    pub agent_id: Option<String>,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: Option<String>,
    /// Last seen at or after (RFC 3339).
    pub since: Option<String>,
    /// Last seen before (RFC 3339).
    pub until: Option<String>,
    /// The previous page's `next_after`.
    pub after: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
}

/// Filters for [`AdminClient::list_audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The previous page's `next_after`.
    pub after: Option<i64>,
    /// Page size.
    pub limit: Option<i64>,
    /// Records about this agent.
    pub agent_id: Option<String>,
    /// An event name such as `agent.registered`.
    pub action: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// At or after (RFC 3339).
    pub since: Option<String>,
    /// Before (RFC 3339).
    pub until: Option<String>,
}

/// A session of the calling user (schema `Session`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// Whether it is the session of the calling token.
    pub current: bool,
    /// RFC 3339.
    pub expires_at: String,
    /// RFC 3339.
    pub last_refreshed_at: String,
    /// The client's address at login.
    pub client_address: Option<String>,
    /// The client's `User-Agent` at login.
    pub user_agent: Option<String>,
}

/// A client of the management API, authenticated with an API key or a user
/// access token. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), agentid::Error> {
/// let admin = agentid::AdminClient::new("http://127.0.0.1:8080", "agentid_sk_...")?;
/// let agent = admin.find_agent("my-agent").await?.expect("registered");
/// admin.grant_capability(&agent.id, "email:send", Some("*@example.com"), None).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AdminClient {
    client: Client,
    credential: Arc<Zeroizing<String>>,
}

impl std::fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminClient")
            .field("server", &self.client.base_url())
            .field("credential", &"[redacted]")
            .finish()
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986
/// unreserved characters).
fn enc(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

/// A JSON object of the members that are set.
fn members(pairs: &[(&str, Option<Value>)]) -> Value {
    let map: serde_json::Map<String, Value> = pairs
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| ((*k).to_owned(), v)))
        .collect();
    Value::Object(map)
}

impl AdminClient {
    /// A client for the server at `url` authenticated with `credential` (an API
    /// key or a user access token).
    pub fn new(url: &str, credential: impl Into<String>) -> Result<AdminClient, Error> {
        Ok(AdminClient::with_client(Client::new(url)?, credential))
    }

    /// A client over an existing [`Client`] (its timeouts and retry policy).
    pub fn with_client(client: Client, credential: impl Into<String>) -> AdminClient {
        AdminClient {
            client,
            credential: Arc::new(Zeroizing::new(credential.into())),
        }
    }

    /// Signs in as a user and returns a client using the session's access
    /// token, with the token pair (keep the refresh token to renew it).
    pub async fn login(
        client: Client,
        email: &str,
        password: &str,
    ) -> Result<(AdminClient, TokenPair), Error> {
        let body = json!({ "email": email, "password": password });
        let pair: TokenPair = client
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Body::Json(&body),
                Idempotency::Unsafe,
            )
            .await?;
        Ok((
            AdminClient::with_client(client, pair.access_token.clone()),
            pair,
        ))
    }

    /// Exchanges a refresh token for a new pair (the old refresh token is spent).
    pub async fn refresh(client: Client, refresh_token: &str) -> Result<TokenPair, Error> {
        let body = json!({ "refresh_token": refresh_token });
        client
            .call(
                reqwest::Method::POST,
                "/api/v1/auth/refresh",
                None,
                Body::Json(&body),
                Idempotency::Unsafe,
            )
            .await
    }

    /// The underlying HTTP client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.send(reqwest::Method::GET, path, None, Idempotency::Safe)
            .await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotency: Idempotency,
    ) -> Result<T, Error> {
        let body = match body {
            Some(v) => Body::Json(v),
            None => Body::None,
        };
        self.client
            .call(
                method,
                path,
                Some(self.credential.as_str()),
                body,
                idempotency,
            )
            .await
    }

    /// Ends the session of the access token this client uses.
    pub async fn logout(&self) -> Result<(), Error> {
        self.send(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            None,
            Idempotency::Safe,
        )
        .await
    }

    /// Changes the calling user's password; returns how many other sessions were
    /// ended.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<i64, Error> {
        let body = json!({ "current_password": current, "new_password": new });
        let answer: Value = self
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/password",
                Some(&body),
                Idempotency::Unsafe,
            )
            .await?;
        Ok(answer["sessions_revoked"].as_i64().unwrap_or(0))
    }

    /// The calling user's sessions.
    pub async fn list_sessions(&self) -> Result<Vec<Session>, Error> {
        self.get("/api/v1/auth/sessions").await
    }

    /// Ends one of the calling user's sessions.
    pub async fn delete_session(&self, id: &str) -> Result<(), Error> {
        self.send(
            reqwest::Method::DELETE,
            &format!("/api/v1/auth/sessions/{}", enc(id)),
            None,
            Idempotency::Safe,
        )
        .await
    }

    /// The calling credential, its user, organization and permissions.
    pub async fn me(&self) -> Result<Me, Error> {
        self.get("/api/v1/me").await
    }

    /// The caller's organization. (Organizations are created with the server's
    /// `admin create-owner` command, not over the API.)
    pub async fn organization(&self) -> Result<Organization, Error> {
        self.get("/api/v1/organization").await
    }

    /// The organization's enforcement mode: `enforce` or `monitor`.
    pub async fn enforcement(&self) -> Result<EnforcementSetting, Error> {
        self.get("/api/v1/organization/enforcement").await
    }

    /// Sets the organization's enforcement mode (`enforce` or `monitor`).
    pub async fn set_enforcement(&self, mode: &str) -> Result<EnforcementSetting, Error> {
        let body = json!({ "mode": mode });
        self.send(
            reqwest::Method::PUT,
            "/api/v1/organization/enforcement",
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// The organization's users.
    pub async fn list_users(&self) -> Result<Vec<User>, Error> {
        self.get("/api/v1/users").await
    }

    /// Creates a user with a role (`admin`, `developer`, `viewer`).
    pub async fn create_user(
        &self,
        email: &str,
        password: &str,
        role: &str,
    ) -> Result<User, Error> {
        let body = json!({ "email": email, "password": password, "role": role });
        self.send(
            reqwest::Method::POST,
            "/api/v1/users",
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// One user.
    pub async fn get_user(&self, id: &str) -> Result<User, Error> {
        self.get(&format!("/api/v1/users/{}", enc(id))).await
    }

    /// Changes a user's role or disables it; `None` leaves a field as it is.
    pub async fn update_user(
        &self,
        id: &str,
        role: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<User, Error> {
        let body = members(&[
            ("role", role.map(Value::from)),
            ("disabled", disabled.map(Value::from)),
        ]);
        self.send(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{}", enc(id)),
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// The organization's API keys (never their secrets).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, Error> {
        self.get("/api/v1/api-keys").await
    }

    /// Creates an API key with `permissions` (for example `agents:write`); the
    /// answer holds the secret, shown this once.
    pub async fn create_api_key(
        &self,
        name: &str,
        permissions: &[&str],
        expires_at: Option<&str>,
    ) -> Result<CreatedApiKey, Error> {
        let body = json!({ "name": name, "permissions": permissions, "expires_at": expires_at });
        self.send(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// Revokes an API key.
    pub async fn delete_api_key(&self, id: &str) -> Result<(), Error> {
        self.send(
            reqwest::Method::DELETE,
            &format!("/api/v1/api-keys/{}", enc(id)),
            None,
            Idempotency::Safe,
        )
        .await
    }

    /// One page of the organization's agents.
    pub async fn list_agents(&self, filter: &AgentQuery) -> Result<AgentPage, Error> {
        let path = query(
            "/api/v1/agents",
            &[
                ("status", filter.status.clone()),
                ("owner_id", filter.owner_id.clone()),
                ("name", filter.name.clone()),
                ("after", filter.after.clone()),
                ("limit", filter.limit.map(|l| l.to_string())),
            ],
        );
        self.get(&path).await
    }

    /// The agent named exactly `name`, if there is one.
    pub async fn find_agent(&self, name: &str) -> Result<Option<AgentRecord>, Error> {
        let page = self
            .list_agents(&AgentQuery {
                name: Some(name.to_owned()),
                ..AgentQuery::default()
            })
            .await?;
        Ok(page.agents.into_iter().find(|a| a.name == name))
    }

    /// One agent.
    pub async fn get_agent(&self, id: &str) -> Result<AgentRecord, Error> {
        self.get(&format!("/api/v1/agents/{}", enc(id))).await
    }

    /// Changes an agent's description, metadata or owner; `None` leaves a field
    /// as it is.
    pub async fn update_agent(
        &self,
        id: &str,
        description: Option<&str>,
        metadata: Option<&Value>,
        owner_id: Option<&str>,
    ) -> Result<AgentRecord, Error> {
        let body = members(&[
            ("description", description.map(Value::from)),
            ("metadata", metadata.cloned()),
            ("owner_id", owner_id.map(Value::from)),
        ]);
        self.send(
            reqwest::Method::PATCH,
            &format!("/api/v1/agents/{}", enc(id)),
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    async fn transition(
        &self,
        id: &str,
        verb: &str,
        reason: Option<&str>,
    ) -> Result<AgentRecord, Error> {
        let body = members(&[("reason", reason.map(Value::from))]);
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/agents/{}/{verb}", enc(id)),
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// Suspends an agent: its next action is denied `agent_suspended`.
    pub async fn suspend_agent(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<AgentRecord, Error> {
        self.transition(id, "suspend", reason).await
    }

    /// Lifts a suspension (needs `capabilities:grant`).
    pub async fn reactivate_agent(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> Result<AgentRecord, Error> {
        self.transition(id, "reactivate", reason).await
    }

    /// Revokes an agent and its key, for good.
    pub async fn revoke_agent(&self, id: &str, reason: Option<&str>) -> Result<AgentRecord, Error> {
        self.transition(id, "revoke", reason).await
    }

    /// Every key the agent has held, with its state.
    pub async fn list_agent_keys(&self, id: &str) -> Result<Vec<AgentKeyRecord>, Error> {
        self.get(&format!("/api/v1/agents/{}/keys", enc(id))).await
    }

    /// The agent's trust score, factor by factor.
    pub async fn agent_trust(&self, id: &str) -> Result<TrustReport, Error> {
        self.get(&format!("/api/v1/agents/{}/trust", enc(id))).await
    }

    /// One page of the agent's trust history, newest first: pass the previous page's
    /// `next_before` as `before`.
    pub async fn trust_history(
        &self,
        id: &str,
        before: Option<&str>,
        limit: Option<i64>,
    ) -> Result<HistoryPage, Error> {
        let path = query(
            &format!("/api/v1/agents/{}/trust/history", enc(id)),
            &[
                ("before", before.map(str::to_owned)),
                ("limit", limit.map(|l| l.to_string())),
            ],
        );
        self.get(&path).await
    }

    /// Records an administrator's attestation about an agent (`value` from -1,
    /// distrust, to 1, vouch; a `comment` saying why) and returns the new score.
    pub async fn attest_agent(
        &self,
        id: &str,
        value: f64,
        comment: &str,
    ) -> Result<TrustReport, Error> {
        let body = json!({ "value": value, "comment": comment });
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/agents/{}/trust/attestations", enc(id)),
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// The organization's trust policy (weights, key rotation policy, thresholds).
    pub async fn trust_policy(&self) -> Result<TrustPolicy, Error> {
        self.get("/api/v1/organization/trust-policy").await
    }

    /// Replaces the organization's trust policy and returns it; the server validates
    /// it (weights naming every factor and summing to 1, thresholds from 0 to 100,
    /// suspension at most the alert threshold) and rescores every agent.
    pub async fn set_trust_policy(&self, policy: &TrustPolicy) -> Result<TrustPolicy, Error> {
        let body = serde_json::to_value(policy)
            .map_err(|e| Error::InvalidInput(format!("the trust policy: {e}")))?;
        self.send(
            reqwest::Method::PUT,
            "/api/v1/organization/trust-policy",
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// The organization's capability catalogue.
    pub async fn list_capabilities(&self) -> Result<Vec<Capability>, Error> {
        self.get("/api/v1/capabilities").await
    }

    /// Adds a capability to the catalogue (`risk_level`: `low`, `medium`, `high`,
    /// `critical`; `min_trust` 0 to 100).
    pub async fn create_capability(
        &self,
        name: &str,
        description: &str,
        risk_level: &str,
        min_trust: i64,
    ) -> Result<Capability, Error> {
        let body = json!({
            "name": name, "description": description,
            "risk_level": risk_level, "min_trust": min_trust,
        });
        self.send(
            reqwest::Method::POST,
            "/api/v1/capabilities",
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// One capability.
    pub async fn get_capability(&self, name: &str) -> Result<Capability, Error> {
        self.get(&format!("/api/v1/capabilities/{}", enc(name)))
            .await
    }

    /// Changes a capability; `None` leaves a field as it is.
    pub async fn update_capability(
        &self,
        name: &str,
        description: Option<&str>,
        risk_level: Option<&str>,
        min_trust: Option<i64>,
    ) -> Result<Capability, Error> {
        let body = members(&[
            ("description", description.map(Value::from)),
            ("risk_level", risk_level.map(Value::from)),
            ("min_trust", min_trust.map(Value::from)),
        ]);
        self.send(
            reqwest::Method::PATCH,
            &format!("/api/v1/capabilities/{}", enc(name)),
            Some(&body),
            Idempotency::Safe,
        )
        .await
    }

    /// The agent's grants, live and past.
    pub async fn list_grants(&self, agent_id: &str) -> Result<Vec<Grant>, Error> {
        self.get(&format!("/api/v1/agents/{}/grants", enc(agent_id)))
            .await
    }

    /// Grants a catalogue capability to an agent, optionally only for resources
    /// matching `resource_pattern` (a glob, `*` any run) and until `expires_at`.
    pub async fn grant_capability(
        &self,
        agent_id: &str,
        capability: &str,
        resource_pattern: Option<&str>,
        expires_at: Option<&str>,
    ) -> Result<Grant, Error> {
        let body = members(&[
            ("capability", Some(Value::from(capability))),
            ("resource_pattern", resource_pattern.map(Value::from)),
            ("expires_at", expires_at.map(Value::from)),
        ]);
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/agents/{}/grants", enc(agent_id)),
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// Revokes a grant.
    pub async fn revoke_grant(&self, agent_id: &str, grant_id: &str) -> Result<Grant, Error> {
        self.send(
            reqwest::Method::DELETE,
            &format!("/api/v1/agents/{}/grants/{}", enc(agent_id), enc(grant_id)),
            None,
            Idempotency::Safe,
        )
        .await
    }

    /// One page of alerts, newest first.
    pub async fn list_alerts(&self, filter: &AlertQuery) -> Result<AlertPage, Error> {
        let path = query(
            "/api/v1/alerts",
            &[
                ("status", filter.status.clone()),
                ("kind", filter.kind.clone()),
                ("agent_id", filter.agent_id.clone()),
                ("severity", filter.severity.clone()),
                ("since", filter.since.clone()),
                ("until", filter.until.clone()),
                ("after", filter.after.clone()),
                ("limit", filter.limit.map(|l| l.to_string())),
            ],
        );
        self.get(&path).await
    }

    /// One alert.
    pub async fn get_alert(&self, id: &str) -> Result<Alert, Error> {
        self.get(&format!("/api/v1/alerts/{}", enc(id))).await
    }

    /// Acknowledges an alert.
    pub async fn acknowledge_alert(&self, id: &str) -> Result<Alert, Error> {
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{}/acknowledge", enc(id)),
            Some(&json!({})),
            Idempotency::Unsafe,
        )
        .await
    }

    /// Resolves an alert, with an optional note for the record.
    pub async fn resolve_alert(&self, id: &str, note: Option<&str>) -> Result<Alert, Error> {
        let body = members(&[("note", note.map(Value::from))]);
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{}/resolve", enc(id)),
            Some(&body),
            Idempotency::Unsafe,
        )
        .await
    }

    /// One page of the organization's audit log, in chain order.
    pub async fn list_audit(&self, filter: &AuditQuery) -> Result<AuditPage, Error> {
        let path = query(
            "/api/v1/audit",
            &[
                ("after", filter.after.map(|a| a.to_string())),
                ("limit", filter.limit.map(|l| l.to_string())),
                ("agent_id", filter.agent_id.clone()),
                ("action", filter.action.clone()),
                ("outcome", filter.outcome.clone()),
                ("since", filter.since.clone()),
                ("until", filter.until.clone()),
            ],
        );
        self.get(&path).await
    }

    /// Checks the organization's audit hash chain.
    pub async fn verify_audit(&self) -> Result<ChainReport, Error> {
        self.get("/api/v1/audit/verify").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_path_segments_and_queries() {
        assert_eq!(enc("email:send"), "email%3Asend");
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(
            query(
                "/x",
                &[
                    ("a", Some("1".into())),
                    ("b", None),
                    ("c", Some("é".into()))
                ]
            ),
            "/x?a=1&c=%C3%A9"
        );
        assert_eq!(query("/x", &[("a", None)]), "/x");
    }

    #[test]
    fn debug_hides_the_credential() {
        let admin = AdminClient::new("http://127.0.0.1:1", "aid_secret").unwrap();
        assert!(!format!("{admin:?}").contains("aid_secret"));
    }
}
