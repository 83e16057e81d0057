//! Agents: registration, proof of possession, lifecycle and key rotation, the
//! storage-side rules.
//!
//! The server only ever holds an agent's public key. Every function filters by the
//! caller's organization, so another organization's agent is indistinguishable
//! from a missing one. Every change writes its audit record in the same transaction.
//!
//! Lifecycle: `pending` (registered) → `active` (after a verified challenge) →
//! `suspended` ⇄ `active`; any state → `revoked` (final). Revocation takes effect
//! on every replica at once because nothing caches an agent's status: each decision
//! re-reads it inside the transaction that records the decision.

use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use agentid_protocol::PublicKey;

use crate::accounts::{db_error, AuditCtx};
use crate::alerts::{self, AlertKind, NewAlert, Severity};
use crate::audit::Outcome;
use crate::db::DbConn;
use crate::error::{ApiError, ErrorCode};
use crate::schema::{agent_challenges, agent_keys, agent_stats, agents, users};

/// Most capabilities an agent may request.
pub const MAX_REQUESTED_CAPABILITIES: usize = 64;
/// Largest metadata object, as compact JSON.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// Where an agent is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Registered; has not yet proved possession of its key.
    Pending,
    Active,
    Suspended,
    /// Final: no decision is ever allowed again.
    Revoked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Active => "active",
            AgentStatus::Suspended => "suspended",
            AgentStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<AgentStatus> {
        [
            AgentStatus::Pending,
            AgentStatus::Active,
            AgentStatus::Suspended,
            AgentStatus::Revoked,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// An agent as the API shows it. There is no private key anywhere in it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub description: String,
    /// The user accountable for the agent.
    pub owner_id: String,
    pub status: AgentStatus,
    /// Why the agent was suspended or revoked, if it was.
    pub status_reason: Option<String>,
    /// `did:key` of the current public key (changes when the key is rotated).
    pub did: String,
    /// RFC 7638 thumbprint of the current public key; the `keyid` its signatures carry.
    pub key_id: String,
    /// The current public key, base64url.
    pub public_key: String,
    pub requested_capabilities: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub trust_score: f64,
    pub actions_allowed: i64,
    pub actions_denied: i64,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub activated_at: Option<String>,
    pub last_seen_at: Option<String>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = agents)]
struct AgentRow {
    id: String,
    org_id: String,
    name: String,
    description: String,
    owner_id: String,
    status: String,
    status_reason: Option<String>,
    did: String,
    key_id: String,
    public_key: String,
    requested_capabilities: String,
    metadata: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    activated_at: Option<i64>,
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = agent_stats)]
struct StatsRow {
    trust_score: f64,
    actions_allowed: i64,
    actions_denied: i64,
    last_seen_at: Option<i64>,
}

type FullRow = (AgentRow, StatsRow);

fn into_agent((row, stats): FullRow) -> Result<Agent, ApiError> {
    row.into_agent(stats)
}

impl AgentRow {
    fn into_agent(self, stats: StatsRow) -> Result<Agent, ApiError> {
        let status = AgentStatus::parse(&self.status)
            .ok_or_else(|| ApiError::internal(format!("stored agent status {}", self.status)))?;
        Ok(Agent {
            id: self.id,
            org_id: self.org_id,
            name: self.name,
            description: self.description,
            owner_id: self.owner_id,
            status,
            status_reason: self.status_reason,
            did: self.did,
            key_id: self.key_id,
            public_key: self.public_key,
            requested_capabilities: serde_json::from_str(&self.requested_capabilities)
                .map_err(ApiError::internal)?,
            metadata: serde_json::from_str(&self.metadata).map_err(ApiError::internal)?,
            trust_score: stats.trust_score,
            actions_allowed: stats.actions_allowed,
            actions_denied: stats.actions_denied,
            created_by: self.created_by,
            created_at: crate::clock::rfc3339(self.created_at),
            updated_at: crate::clock::rfc3339(self.updated_at),
            activated_at: self.activated_at.map(crate::clock::rfc3339),
            last_seen_at: stats.last_seen_at.map(crate::clock::rfc3339),
        })
    }
}

/// A key an agent holds or held.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AgentKey {
    pub key_id: String,
    pub public_key: String,
    /// `active`, `retired` (rotated away from) or `revoked` (with its agent).
    pub status: String,
    pub created_at: String,
    pub retired_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// What registration needs, already validated by [`NewAgent::validate`].
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: String,
    pub description: String,
    pub public_key: PublicKey,
    pub requested_capabilities: Vec<String>,
    pub metadata: serde_json::Value,
}

impl NewAgent {
    /// Checks and normalizes registration input.
    pub fn validate(
        name: &str,
        description: Option<&str>,
        public_key: &str,
        requested_capabilities: Vec<String>,
        metadata: Option<serde_json::Value>,
    ) -> Result<NewAgent, ApiError> {
        let name = validate_name(name)?;
        let description = validate_description(description.unwrap_or_default())?;
        let public_key = PublicKey::from_b64url(public_key)
            .map_err(|e| ApiError::new(ErrorCode::WeakPublicKey, format!("`public_key`: {e}.")))?;
        let mut caps = requested_capabilities;
        if caps.len() > MAX_REQUESTED_CAPABILITIES {
            return Err(ApiError::invalid(format!(
                "at most {MAX_REQUESTED_CAPABILITIES} capabilities may be requested"
            )));
        }
        if let Some(bad) = caps
            .iter()
            .find(|c| !agentid_protocol::capability::is_valid_name(c))
        {
            return Err(ApiError::invalid(format!(
                "`{bad}` is not a capability name (namespace:action, lowercase)"
            )));
        }
        caps.sort();
        caps.dedup();
        let metadata = validate_metadata(metadata.unwrap_or_else(|| serde_json::json!({})))?;
        Ok(NewAgent {
            name,
            description,
            public_key,
            requested_capabilities: caps,
            metadata,
        })
    }
}

fn validate_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "`name` must be 1 to 100 characters without control characters.",
        ));
    }
    crate::names::check_name("`name`", name)?;
    Ok(name.to_owned())
}

fn validate_description(description: &str) -> Result<String, ApiError> {
    if description.chars().count() > 1000 {
        return Err(ApiError::invalid(
            "`description` must be at most 1000 characters.",
        ));
    }
    Ok(description.to_owned())
}

/// Metadata must be a JSON object of at most [`MAX_METADATA_BYTES`].
pub fn validate_metadata(metadata: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    if !metadata.is_object() {
        return Err(ApiError::invalid("`metadata` must be a JSON object."));
    }
    let size = serde_json::to_string(&metadata)
        .map_err(ApiError::internal)?
        .len();
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "`metadata` must be at most {MAX_METADATA_BYTES} bytes as JSON."
        )));
    }
    Ok(metadata)
}

fn to_json(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(ApiError::internal)
}

/// Registers an agent as `pending`, owned by `owner_id`, and records its first key.
pub fn register(
    conn: &mut DbConn,
    org_id: &str,
    owner_id: &str,
    agent: &NewAgent,
    ctx: &AuditCtx<'_>,
) -> Result<Agent, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let key_id = agent.public_key.thumbprint();
    let public_key = agent.public_key.to_b64url();
    let did = agent.public_key.did_key();
    diesel::insert_into(agents::table)
        .values((
            agents::id.eq(&id),
            agents::org_id.eq(org_id),
            agents::name.eq(&agent.name),
            agents::description.eq(&agent.description),
            agents::owner_id.eq(owner_id),
            agents::status.eq(AgentStatus::Pending.as_str()),
            agents::did.eq(&did),
            agents::key_id.eq(&key_id),
            agents::public_key.eq(&public_key),
            agents::requested_capabilities.eq(to_json(&agent.requested_capabilities)?),
            agents::metadata.eq(to_json(&agent.metadata)?),
            agents::created_by.eq(ctx.actor_id.unwrap_or(owner_id)),
            agents::created_at.eq(ctx.now),
            agents::updated_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(|e| db_error(e, "An agent with this name"))?;
    insert_key(conn, org_id, &id, &key_id, &public_key, ctx.now)?;
    let trust = crate::trust_store::start(conn, org_id, &id, &key_id, ctx.now)?;
    ctx.record(
        conn,
        org_id,
        "agent.registered",
        Some(("agent", &id)),
        Outcome::Success,
        serde_json::json!({
            "name": agent.name,
            "key_id": key_id,
            "did": did,
            "owner_id": owner_id,
            "requested_capabilities": agent.requested_capabilities,
        }),
    )?;
    // What was just written; not read back (a round trip inside the writer's batch).
    Ok(Agent {
        id,
        org_id: org_id.to_owned(),
        name: agent.name.clone(),
        description: agent.description.clone(),
        owner_id: owner_id.to_owned(),
        status: AgentStatus::Pending,
        status_reason: None,
        did,
        key_id,
        public_key,
        requested_capabilities: agent.requested_capabilities.clone(),
        metadata: agent.metadata.clone(),
        trust_score: trust.score,
        actions_allowed: 0,
        actions_denied: 0,
        created_by: ctx.actor_id.unwrap_or(owner_id).to_owned(),
        created_at: crate::clock::rfc3339(ctx.now),
        updated_at: crate::clock::rfc3339(ctx.now),
        activated_at: None,
        last_seen_at: None,
    })
}

fn insert_key(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    key_id: &str,
    public_key: &str,
    now: i64,
) -> Result<(), ApiError> {
    diesel::insert_into(agent_keys::table)
        .values((
            agent_keys::key_id.eq(key_id),
            agent_keys::agent_id.eq(agent_id),
            agent_keys::org_id.eq(org_id),
            agent_keys::public_key.eq(public_key),
            agent_keys::status.eq("active"),
            agent_keys::created_at.eq(now),
        ))
        .execute(conn)
        .map_err(|e| db_error(e, "An agent with this public key"))?;
    Ok(())
}

/// After a registration failed with a conflict: the agent already registered under
/// `name` with the same current public key, if there is one and it is not revoked.
/// Registering again is then a no-op answered with that agent, so an SDK may
/// register on every start and two processes may race. A different key, or a
/// revoked agent, stays a conflict with a message saying which.
pub fn registered_same(
    conn: &mut DbConn,
    org_id: &str,
    agent: &NewAgent,
) -> Result<Option<Agent>, ApiError> {
    let existing: Option<(String, String, String)> = agents::table
        .filter(agents::org_id.eq(org_id))
        .filter(agents::name.eq(&agent.name))
        .select((agents::id, agents::public_key, agents::status))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?;
    let Some((id, public_key, status)) = existing else {
        return Ok(None);
    };
    if public_key != agent.public_key.to_b64url() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "An agent with this name is registered with a different public key.",
        ));
    }
    if status == AgentStatus::Revoked.as_str() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "An agent with this name and key was revoked; revocation is final.",
        ));
    }
    get(conn, org_id, &id).map(Some)
}

/// The agent, if it belongs to `org_id`.
pub fn get(conn: &mut DbConn, org_id: &str, agent_id: &str) -> Result<Agent, ApiError> {
    agents::table
        .inner_join(agent_stats::table)
        .filter(agents::id.eq(agent_id))
        .filter(agents::org_id.eq(org_id))
        .select((AgentRow::as_select(), StatsRow::as_select()))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)
        .and_then(into_agent)
}

/// The agent by id alone, for endpoints where the agent's own signature is the
/// credential (challenge, verify, rotate): the organization comes from the agent.
pub fn get_unscoped(conn: &mut DbConn, agent_id: &str) -> Result<Agent, ApiError> {
    agents::table
        .inner_join(agent_stats::table)
        .filter(agents::id.eq(agent_id))
        .select((AgentRow::as_select(), StatsRow::as_select()))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)
        .and_then(into_agent)
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    pub status: Option<AgentStatus>,
    pub owner_id: Option<String>,
    /// Exact name (names are unique within an organization).
    pub name: Option<String>,
    /// Cursor: the last agent id of the previous page (agents are ordered by id).
    pub after: Option<String>,
    pub limit: i64,
}

/// The organization's agents, ordered by id, one page.
pub fn list(conn: &mut DbConn, org_id: &str, filter: &AgentFilter) -> Result<Vec<Agent>, ApiError> {
    let mut query = agents::table
        .inner_join(agent_stats::table)
        .filter(agents::org_id.eq(org_id))
        .select((AgentRow::as_select(), StatsRow::as_select()))
        .order(agents::id.asc())
        .limit(filter.limit)
        .into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(agents::status.eq(status.as_str()));
    }
    if let Some(owner) = &filter.owner_id {
        query = query.filter(agents::owner_id.eq(owner.clone()));
    }
    if let Some(name) = &filter.name {
        query = query.filter(agents::name.eq(name.clone()));
    }
    if let Some(after) = &filter.after {
        query = query.filter(agents::id.gt(after.clone()));
    }
    query
        .load(conn)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(into_agent)
        .collect()
}

/// Changes to an agent; absent fields stay.
#[derive(Debug, Clone, Default)]
pub struct AgentChanges {
    pub description: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub owner_id: Option<String>,
}

/// Applies `changes`. A new owner must be an enabled user of the same organization.
pub fn update(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    changes: AgentChanges,
    ctx: &AuditCtx<'_>,
) -> Result<Agent, ApiError> {
    let before = get(conn, org_id, agent_id)?;
    let description = changes
        .description
        .as_deref()
        .map(validate_description)
        .transpose()?;
    let metadata = changes.metadata.map(validate_metadata).transpose()?;
    if let Some(owner) = &changes.owner_id {
        let enabled: Option<bool> = users::table
            .filter(users::id.eq(owner))
            .filter(users::org_id.eq(org_id))
            .select(users::disabled)
            .first(conn)
            .optional()
            .map_err(ApiError::internal)?
            .map(|disabled: bool| !disabled);
        if enabled != Some(true) {
            return Err(ApiError::invalid(
                "`owner_id` must be an enabled user of the organization.",
            ));
        }
    }
    let mut changed = serde_json::Map::new();
    if let Some(d) = &description {
        diesel::update(agents::table.find(agent_id))
            .set(agents::description.eq(d))
            .execute(conn)
            .map_err(ApiError::internal)?;
        changed.insert("description".into(), true.into());
    }
    if let Some(m) = &metadata {
        diesel::update(agents::table.find(agent_id))
            .set(agents::metadata.eq(to_json(m)?))
            .execute(conn)
            .map_err(ApiError::internal)?;
        changed.insert("metadata".into(), true.into());
    }
    if let Some(owner) = &changes.owner_id {
        diesel::update(agents::table.find(agent_id))
            .set(agents::owner_id.eq(owner))
            .execute(conn)
            .map_err(ApiError::internal)?;
        changed.insert("owner_from".into(), before.owner_id.clone().into());
        changed.insert("owner_to".into(), owner.clone().into());
    }
    if changed.is_empty() {
        return Ok(before);
    }
    diesel::update(agents::table.find(agent_id))
        .set(agents::updated_at.eq(ctx.now))
        .execute(conn)
        .map_err(ApiError::internal)?;
    let action = if changes.owner_id.is_some() {
        "agent.owner_transferred"
    } else {
        "agent.updated"
    };
    ctx.record(
        conn,
        org_id,
        action,
        Some(("agent", agent_id)),
        Outcome::Success,
        serde_json::Value::Object(changed),
    )?;
    get(conn, org_id, agent_id)
}

/// A lifecycle change requested by a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Suspend,
    Reactivate,
    Revoke,
}

/// Suspends, reactivates or revokes. Revocation is final, revokes the current key
/// and raises an alert. Reactivation returns an agent to `active` if it had proved
/// possession before, else to `pending`.
pub fn transition(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    transition: Transition,
    reason: Option<&str>,
    ctx: &AuditCtx<'_>,
) -> Result<Agent, ApiError> {
    if reason.is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid(
            "`reason` must be at most 500 characters.",
        ));
    }
    let agent = get(conn, org_id, agent_id)?;
    let activated = agent.activated_at.is_some();
    let (to, action) = match (transition, agent.status) {
        (_, AgentStatus::Revoked) => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "The agent is revoked; revocation is final.",
            ))
        }
        (Transition::Suspend, AgentStatus::Pending | AgentStatus::Active) => {
            (AgentStatus::Suspended, "agent.suspended")
        }
        (Transition::Reactivate, AgentStatus::Suspended) if activated => {
            (AgentStatus::Active, "agent.reactivated")
        }
        (Transition::Reactivate, AgentStatus::Suspended) => {
            (AgentStatus::Pending, "agent.reactivated")
        }
        (Transition::Revoke, _) => (AgentStatus::Revoked, "agent.revoked"),
        (Transition::Suspend, AgentStatus::Suspended) => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "The agent is already suspended.",
            ))
        }
        (Transition::Reactivate, _) => {
            return Err(ApiError::new(
                ErrorCode::InvalidState,
                "Only a suspended agent can be reactivated.",
            ))
        }
    };
    // Guarded by the status read above so two concurrent transitions cannot both win.
    let changed = diesel::update(
        agents::table
            .filter(agents::id.eq(agent_id))
            .filter(agents::status.eq(agent.status.as_str())),
    )
    .set((
        agents::status.eq(to.as_str()),
        agents::status_reason.eq(match to {
            AgentStatus::Active | AgentStatus::Pending => None,
            _ => reason.map(str::to_owned),
        }),
        agents::updated_at.eq(ctx.now),
    ))
    .execute(conn)
    .map_err(ApiError::internal)?;
    if changed != 1 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "The agent changed concurrently; read it again and retry.",
        ));
    }
    // Whatever the transition, the agent is no longer suspended *by its trust score*:
    // a reactivated agent stays active until its score falls below the threshold again.
    diesel::update(agent_stats::table.find(agent_id))
        .set(agent_stats::trust_suspended_at.eq(None::<i64>))
        .execute(conn)
        .map_err(ApiError::internal)?;
    if to == AgentStatus::Revoked {
        diesel::update(
            agent_keys::table
                .filter(agent_keys::agent_id.eq(agent_id))
                .filter(agent_keys::status.eq("active")),
        )
        .set((
            agent_keys::status.eq("revoked"),
            agent_keys::revoked_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(ApiError::internal)?;
        alerts::raise(
            conn,
            &NewAlert {
                org_id,
                agent_id: Some(agent_id),
                kind: AlertKind::AgentRevoked,
                severity: Severity::Medium,
                summary: &format!("Agent {} was revoked", agent.name),
                details: serde_json::json!({ "reason": reason, "by": ctx.actor_id }),
            },
            ctx.now,
            ctx.request_id,
        )
        .map_err(ApiError::internal)?;
    }
    ctx.record(
        conn,
        org_id,
        action,
        Some(("agent", agent_id)),
        Outcome::Success,
        serde_json::json!({ "from": agent.status.as_str(), "to": to.as_str(), "reason": reason }),
    )?;
    get(conn, org_id, agent_id)
}

/// The agent's keys, newest first.
pub fn list_keys(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
) -> Result<Vec<AgentKey>, ApiError> {
    get(conn, org_id, agent_id)?;
    let rows: Vec<KeyRow> = agent_keys::table
        .filter(agent_keys::agent_id.eq(agent_id))
        .filter(agent_keys::org_id.eq(org_id))
        .order(agent_keys::created_at.desc())
        .select(KeyRow::as_select())
        .load(conn)
        .map_err(ApiError::internal)?;
    Ok(rows
        .into_iter()
        .map(|row| AgentKey {
            key_id: row.key_id,
            public_key: row.public_key,
            status: row.status,
            created_at: crate::clock::rfc3339(row.created_at),
            retired_at: row.retired_at.map(crate::clock::rfc3339),
            revoked_at: row.revoked_at.map(crate::clock::rfc3339),
        })
        .collect())
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = agent_keys)]
struct KeyRow {
    key_id: String,
    public_key: String,
    status: String,
    created_at: i64,
    retired_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// The state of a key that is not the agent's current one, for a precise denial:
/// `retired`, `revoked`, or `None` when the agent never had it.
pub fn key_state(
    conn: &mut DbConn,
    agent_id: &str,
    key_id: &str,
) -> Result<Option<String>, ApiError> {
    agent_keys::table
        .filter(agent_keys::key_id.eq(key_id))
        .filter(agent_keys::agent_id.eq(agent_id))
        .select(agent_keys::status)
        .first(conn)
        .optional()
        .map_err(ApiError::internal)
}

/// A challenge as handed to the agent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Challenge {
    /// Opaque base64url text (at most 128 characters). Sign it back, exactly as
    /// received, inside a challenge-response envelope.
    pub challenge: String,
    /// The `aud` the response must carry: this server's public URL.
    pub audience: String,
    /// The `payloadType` of the response.
    pub payload_type: String,
    pub expires_at: String,
}

/// A challenge for `agent` if it is pending or active: minted, nothing stored
/// (`crate::challenges`).
pub fn issue_challenge(
    challenges: &crate::challenges::Challenges,
    agent: &Agent,
    audience: &str,
    now: i64,
) -> Result<Challenge, ApiError> {
    if matches!(agent.status, AgentStatus::Suspended | AgentStatus::Revoked) {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("The agent is {}.", agent.status.as_str()),
        ));
    }
    let minted = challenges.mint(&agent.id, audience, now);
    Ok(Challenge {
        challenge: minted.text,
        audience: audience.to_owned(),
        payload_type: agentid_protocol::PayloadType::ChallengeResponse
            .as_str()
            .to_owned(),
        expires_at: crate::clock::rfc3339(minted.expires_at_ms),
    })
}

/// Spends a genuine challenge (checked by [`crate::challenges::Challenges::check`]):
/// true for the first answer that names it, on any replica (a unique constraint
/// decides), false for every later one. Spent challenges are kept until they expire
/// ([`prune_spent_challenges`]).
pub fn spend_challenge(
    conn: &mut DbConn,
    agent_id: &str,
    challenge: &str,
    audience: &str,
    expires_at: i64,
    now: i64,
) -> Result<bool, ApiError> {
    let query = diesel::insert_into(agent_challenges::table)
        .values((
            agent_challenges::id.eq(uuid::Uuid::new_v4().to_string()),
            agent_challenges::agent_id.eq(agent_id),
            agent_challenges::challenge.eq(challenge),
            agent_challenges::audience.eq(audience),
            agent_challenges::created_at.eq(now),
            agent_challenges::expires_at.eq(expires_at),
            agent_challenges::used_at.eq(now),
        ))
        .on_conflict_do_nothing();
    // The upsert clause exists per backend, not on the multi-backend connection.
    let inserted = match conn {
        DbConn::Postgres(c) => query.execute(c),
        DbConn::Sqlite(c) => query.execute(c),
    }
    .map_err(ApiError::internal)?;
    Ok(inserted == 1)
}

/// Deletes at most `limit` spent challenges that have expired (they could not be
/// answered anyway); returns how many.
pub fn prune_spent_challenges(conn: &mut DbConn, now: i64, limit: i64) -> QueryResult<usize> {
    let expired: Vec<String> = agent_challenges::table
        .filter(agent_challenges::expires_at.le(now))
        .select(agent_challenges::id)
        .limit(limit)
        .load(conn)?;
    if expired.is_empty() {
        return Ok(0);
    }
    diesel::delete(agent_challenges::table.filter(agent_challenges::id.eq_any(&expired)))
        .execute(conn)
}

/// Marks a pending agent active after a verified proof of possession (an active
/// agent stays active) and audits the proof.
pub fn record_proof(
    conn: &mut DbConn,
    agent: &Agent,
    ctx: &AuditCtx<'_>,
) -> Result<Agent, ApiError> {
    let mut activated = false;
    if agent.status == AgentStatus::Pending {
        let changed = diesel::update(
            agents::table
                .filter(agents::id.eq(&agent.id))
                .filter(agents::status.eq(AgentStatus::Pending.as_str())),
        )
        .set((
            agents::status.eq(AgentStatus::Active.as_str()),
            agents::activated_at.eq(ctx.now),
            agents::updated_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(ApiError::internal)?;
        activated = changed == 1;
        if !activated {
            // Another proof activated it since we read it (two processes of one agent
            // starting together, each with its own challenge): this proof is as good,
            // as long as the agent is now active with the key it was made with.
            let (status, key_id): (String, String) = agents::table
                .filter(agents::id.eq(&agent.id))
                .select((agents::status, agents::key_id))
                .first(conn)
                .map_err(ApiError::internal)?;
            if status != AgentStatus::Active.as_str() || key_id != agent.key_id {
                return Err(ApiError::new(
                    ErrorCode::Conflict,
                    "The agent changed concurrently; retry.",
                ));
            }
        }
    }
    let target = Some(("agent", agent.id.as_str()));
    let details = serde_json::json!({ "key_id": agent.key_id });
    let mut events = Vec::with_capacity(2);
    if activated {
        events.push(ctx.event("agent.activated", target, Outcome::Success, details.clone()));
    }
    events.push(ctx.event("agent.proof_verified", target, Outcome::Success, details));
    crate::audit::append_batch(conn, &agent.org_id, &events, ctx.now)
        .map_err(ApiError::internal)?;
    // The agent as read before, active now; not read back (a round trip inside the
    // writer's batch).
    let mut agent = agent.clone();
    if activated {
        agent.status = AgentStatus::Active;
        agent.activated_at = Some(crate::clock::rfc3339(ctx.now));
        agent.updated_at = crate::clock::rfc3339(ctx.now);
    }
    Ok(agent)
}

/// Replaces the agent's current key with `new_key`: the old key is retired at once
/// (its signatures are refused from the next decision on), the new one recorded.
pub fn rotate_key(
    conn: &mut DbConn,
    agent: &Agent,
    new_key: &PublicKey,
    ctx: &AuditCtx<'_>,
) -> Result<Agent, ApiError> {
    let new_key_id = new_key.thumbprint();
    let new_public = new_key.to_b64url();
    let new_did = new_key.did_key();
    // Guarded by the key we verified against, so two rotations cannot both win.
    let changed = diesel::update(
        agents::table
            .filter(agents::id.eq(&agent.id))
            .filter(agents::key_id.eq(&agent.key_id))
            .filter(agents::status.eq(AgentStatus::Active.as_str())),
    )
    .set((
        agents::key_id.eq(&new_key_id),
        agents::public_key.eq(&new_public),
        agents::did.eq(&new_did),
        agents::updated_at.eq(ctx.now),
    ))
    .execute(conn)
    .map_err(ApiError::internal)?;
    if changed != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "The agent's key or status changed concurrently.",
        ));
    }
    diesel::update(agent_keys::table.find(&agent.key_id))
        .set((
            agent_keys::status.eq("retired"),
            agent_keys::retired_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(ApiError::internal)?;
    insert_key(
        conn,
        &agent.org_id,
        &agent.id,
        &new_key_id,
        &new_public,
        ctx.now,
    )?;
    ctx.record(
        conn,
        &agent.org_id,
        "agent.key_rotated",
        Some(("agent", &agent.id)),
        Outcome::Success,
        serde_json::json!({ "old_key_id": agent.key_id, "new_key_id": new_key_id, "did": new_did }),
    )?;
    // A fresh key restores key hygiene at once.
    crate::trust_store::refresh(
        conn,
        &agent.org_id,
        &agent.id,
        crate::trust_store::Cause::KeyRotated,
        serde_json::json!({ "old_key_id": agent.key_id, "new_key_id": new_key_id }),
        None,
        ctx,
    )?;
    get(conn, &agent.org_id, &agent.id)
}
