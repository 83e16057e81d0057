//! The management API's data types, as `openapi/openapi.json` describes them.
//!
//! Plain owned values (strings, numbers, `serde_json::Value`) so bindings can
//! convert them directly. Enumerations the server may extend (statuses, kinds,
//! roles) are strings. Unknown members from a newer server are ignored. A test
//! (`tests/openapi.rs`) checks that each type's members are exactly the
//! properties of its schema. Types holding a secret redact it in `Debug`.

use serde::{Deserialize, Serialize};

/// An agent as the server describes it (schema `Agent`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's id (UUID); stable across key rotations.
    pub id: String,
    /// The agent's organization.
    pub org_id: String,
    /// The agent's name, unique within its organization.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `pending`, `active`, `suspended` or `revoked`.
    pub status: String,
    /// Why the agent was suspended or revoked, if it was.
    pub status_reason: Option<String>,
    /// The current public key, base64url.
    pub public_key: String,
    /// RFC 7638 thumbprint of the current public key.
    pub key_id: String,
    /// `did:key` of the current public key.
    pub did: String,
    /// The user accountable for the agent.
    pub owner_id: String,
    /// Who registered it.
    pub created_by: String,
    /// Capabilities asked for at registration (not granted by asking).
    pub requested_capabilities: Vec<String>,
    /// A JSON object.
    pub metadata: serde_json::Value,
    /// The current trust score, 0 to 100.
    pub trust_score: f64,
    /// How many actions were allowed.
    pub actions_allowed: i64,
    /// How many actions were denied.
    pub actions_denied: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// When it first proved possession of its key, RFC 3339.
    pub activated_at: Option<String>,
    /// When it last acted, RFC 3339.
    pub last_seen_at: Option<String>,
}

/// One page of agents (schema `AgentPage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentPage {
    /// The agents, ordered by id.
    pub agents: Vec<AgentRecord>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// One of an agent's keys, current or past (schema `AgentKey`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentKeyRecord {
    /// RFC 7638 thumbprint.
    pub key_id: String,
    /// base64url.
    pub public_key: String,
    /// `active`, `retired` or `revoked`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// When it was rotated away from.
    pub retired_at: Option<String>,
    /// When it was revoked with its agent.
    pub revoked_at: Option<String>,
}

/// A proof-of-possession challenge (schema `Challenge`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Opaque base64url text; sign it back exactly.
    pub challenge: String,
    /// The server's public URL: the `aud` of every statement for this server.
    pub audience: String,
    /// RFC 3339.
    pub expires_at: String,
    /// The payload type of the answer.
    pub payload_type: String,
}

/// The answer to a proof of possession (schema `AgentVerified`).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentVerified {
    /// The agent, now active.
    pub agent: AgentRecord,
    /// The agent access token (EdDSA JWT).
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl std::fmt::Debug for AgentVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentVerified")
            .field("agent", &self.agent)
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An organization (schema `Organization`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Its id.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A person of an organization (schema `User`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: String,
    /// Its organization.
    pub org_id: String,
    /// Its email address.
    pub email: String,
    /// `owner`, `admin`, `developer` or `viewer`.
    pub role: String,
    /// Whether it may no longer sign in.
    pub disabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// Who the calling credential is (schema `Me`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    /// `user` or `api_key`.
    pub credential: String,
    /// The user (for an API key: the user who created it).
    pub user: User,
    /// The organization.
    pub organization: Organization,
    /// What the credential may do, for example `agents:write`.
    pub permissions: Vec<String>,
}

/// A user's access and refresh tokens (schema `TokenPair`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    /// Short-lived bearer token.
    pub access_token: String,
    /// Single-use token to get the next pair.
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// An API key's description; never its secret (schema `ApiKey`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Its id.
    pub id: String,
    /// A label.
    pub name: String,
    /// The secret's recognisable prefix.
    pub prefix: String,
    /// What it may do.
    pub permissions: Vec<String>,
    /// The user who created it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, if it expires.
    pub expires_at: Option<String>,
    /// RFC 3339.
    pub last_used_at: Option<String>,
    /// RFC 3339, if revoked.
    pub revoked_at: Option<String>,
}

/// A newly created API key with its secret, shown this once (schema
/// `CreatedApiKey`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    /// The key's description.
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret. Store it now; the server keeps only its hash.
    pub key: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("api_key", &self.api_key)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// A capability of the organization's catalogue (schema `Capability`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// `namespace:action`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// `low`, `medium`, `high` or `critical`.
    pub risk_level: String,
    /// The lowest trust score at which an agent may use it.
    pub min_trust: i64,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A capability granted to an agent (schema `Grant`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Its id.
    pub id: String,
    /// The agent.
    pub agent_id: String,
    /// The capability name.
    pub capability: String,
    /// The resources it covers (absent: all).
    pub resource_pattern: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    /// Who granted it.
    pub granted_by: String,
    /// RFC 3339.
    pub granted_at: String,
    /// RFC 3339, if it expires.
    pub expires_at: Option<String>,
    /// RFC 3339, if revoked.
    pub revoked_at: Option<String>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
}

/// An alert (schema `Alert`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Its id.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// The agent concerned, if any.
    pub agent_id: Option<String>,
    /// What happened, for example `capability_violation`.
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// One line.
    pub summary: String,
    /// The latest occurrence's details.
    pub details: serde_json::Value,
    /// How many times it was raised while open.
    pub occurrences: i64,
    /// RFC 3339.
    pub first_seen_at: String,
    /// RFC 3339.
    pub last_seen_at: String,
    /// RFC 3339.
    pub acknowledged_at: Option<String>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// RFC 3339.
    pub resolved_at: Option<String>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// The note given when resolving.
    pub resolution_note: Option<String>,
}

/// One page of alerts (schema `AlertPage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertPage {
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// Pass as `after` for the next page.
    pub next_after: Option<String>,
}

/// One audit record (schema `AuditRecord`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Its id.
    pub id: String,
    /// The organization.
    pub org_id: String,
    /// Position in the organization's chain.
    pub seq: i64,
    /// A dotted event name such as `agent.registered`.
    pub action: String,
    /// `user`, `api_key`, `agent` or `system`.
    pub actor_type: String,
    /// Who acted.
    pub actor_id: Option<String>,
    /// What it concerned.
    pub target_type: Option<String>,
    /// Its id.
    pub target_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Event-specific fields.
    pub details: serde_json::Value,
    /// The HTTP request that caused it.
    pub request_id: Option<String>,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// One page of audit records (schema `AuditPage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// In chain order.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page.
    pub next_after: Option<i64>,
}

/// The result of checking the organization's audit chain (schema `ChainReport`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    /// Whether every record links and hashes correctly.
    pub valid: bool,
    /// How many records were checked.
    pub records: i64,
    /// The last record's position.
    pub head_seq: i64,
    /// The last record's hash.
    pub head_hash: String,
    /// The first record that does not verify.
    pub first_bad_seq: Option<i64>,
    /// Why it does not.
    pub reason: Option<String>,
}

/// One factor of a trust score (schema `FactorReport`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FactorReport {
    /// Which factor, for example `verification`.
    pub factor: String,
    /// From 0 (worst) to 1 (best); absent without data.
    pub value: Option<f64>,
    /// The organization's weight for it.
    pub weight: f64,
    /// From 0 to 1.
    pub confidence: f64,
    /// Points of the score it provides.
    pub contribution: f64,
    /// One line.
    pub reason: String,
}

/// An agent's trust score, explained (schema `TrustReport`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustReport {
    /// From 0 to 100.
    pub score: f64,
    /// From 0 to 1.
    pub confidence: f64,
    /// False when no factor had data.
    pub measured: bool,
    /// One line.
    pub summary: String,
    /// Every factor.
    pub factors: Vec<FactorReport>,
}

/// An organization's trust policy (schema `TrustPolicy`; docs/trust.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustPolicy {
    /// Every factor's weight, each from 0 to 1, summing to 1.
    pub weights: std::collections::BTreeMap<String, f64>,
    /// The key rotation policy in days; `None`: no policy (key hygiene has no data).
    pub key_max_age_days: Option<u32>,
    /// A score falling below this raises an alert; `None`: never.
    pub alert_below: Option<f64>,
    /// A score falling below this suspends the agent; `None`: never.
    pub suspend_below: Option<f64>,
}

/// How much one factor's contribution moved (schema `FactorChange`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FactorChange {
    /// The factor, e.g. `capability_violations`.
    pub factor: String,
    /// In points of the score.
    pub change: f64,
}

/// One point of an agent's trust history (schema `HistoryPoint`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// RFC 3339.
    pub at: String,
    /// From 0 to 100.
    pub score: f64,
    /// From 0 to 1.
    pub confidence: f64,
    /// The score of the point before (absent for the first).
    pub previous_score: Option<f64>,
    /// `score - previous_score`.
    pub change: Option<f64>,
    /// `registered`, `decisions`, `attestation`, `alert_resolved`, `key_rotated` or
    /// `policy_changed` (newer servers may add causes).
    pub cause: String,
    /// What happened (depends on the cause).
    pub details: serde_json::Value,
    /// Every factor's contribution at this point, in points.
    pub contributions: std::collections::BTreeMap<String, f64>,
    /// The factors that moved since the point before, largest move first.
    pub changed: Vec<FactorChange>,
    /// Pass as `before` to read older points.
    pub cursor: String,
}

/// A page of trust history, newest first (schema `HistoryPage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The points of this page.
    pub points: Vec<HistoryPoint>,
    /// The cursor of the next (older) page; absent on the last.
    pub next_before: Option<String>,
}

/// The organization's enforcement mode (schema `EnforcementSetting`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcementSetting {
    /// `enforce` or `monitor`.
    pub mode: String,
}
