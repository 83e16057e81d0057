//! Capabilities: the organization's catalogue, agents' grants, and the
//! organization's enforcement mode.
//!
//! A capability is a `namespace:action` name with a risk level and the minimum
//! trust score an agent needs to use it. A grant gives one agent one capability,
//! optionally only for resources matching a glob pattern and only until an expiry.
//! [`evaluate`] is the pure rule the decision path applies to an agent's grants.
//!
//! Storage functions take the caller's organization id and filter every query by
//! it, so another organization's rows look exactly like missing ones. Every change
//! writes its audit record in the caller's transaction. Time is always a parameter.
//! Nothing here may widen a grant: an unknown state, an absent pattern on an action
//! that needs one, or an expired or revoked grant never allows anything more.

use std::collections::HashMap;

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{db_error, AuditCtx};
use crate::audit::Outcome;
use crate::db::DbConn;
use crate::error::{ApiError, ErrorCode};
use crate::schema::{agent_grants, agents, capabilities, organizations};

/// Longest namespace or action part of a capability name, in characters.
pub const MAX_NAME_PART_LEN: usize = agentid_protocol::capability::MAX_PART_LEN;
/// Longest resource pattern, in characters.
pub const MAX_PATTERN_LEN: usize = 512;
/// Longest capability description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 500;

fn internal(error: diesel::result::Error) -> ApiError {
    ApiError::internal(error)
}

/// Whether `name` is a well-formed capability name: `namespace:action`, each part
/// 1 to 64 characters of `a-z 0-9 _ . -` starting with a letter or digit, and
/// exactly one `:`.
pub fn is_valid_capability_name(name: &str) -> bool {
    // One rule for the catalogue and for signed actions: the protocol's.
    agentid_protocol::capability::is_valid_name(name)
}

/// Whether `resource` matches the glob `pattern`: `*` matches any run of
/// characters (including none), every other character matches only itself,
/// case-sensitively. There are no other metacharacters and no escapes.
///
/// Runs in time linear in the lengths of both strings (the first and last literal
/// segments are anchored, the ones between are found leftmost-first, which is
/// always enough for a pattern whose only wildcard is `*`).
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    let Some((first, tail)) = pattern.split_once('*') else {
        return pattern == resource;
    };
    let (middle, last) = tail.rsplit_once('*').unwrap_or(("", tail));
    let Some(rest) = resource.strip_prefix(first) else {
        return false;
    };
    let Some(mut rest) = rest.strip_suffix(last) else {
        return false;
    };
    for segment in middle.split('*').filter(|s| !s.is_empty()) {
        match rest.find(segment) {
            Some(at) => rest = &rest[at + segment.len()..],
            None => return false,
        }
    }
    true
}

/// A grant as the decision path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantView {
    pub capability: String,
    /// `None`: every resource, and actions without a resource.
    pub resource_pattern: Option<String>,
    /// Unix milliseconds; the grant covers nothing from this instant on.
    pub expires_at: Option<i64>,
    /// Unix milliseconds; any value means revoked.
    pub revoked_at: Option<i64>,
}

impl GrantView {
    /// Whether the grant is neither revoked nor expired at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now_ms)
    }

    /// Whether the grant's scope includes `resource` (ignoring liveness). A grant
    /// with a pattern never covers an action that names no resource.
    pub fn covers(&self, resource: Option<&str>) -> bool {
        match (&self.resource_pattern, resource) {
            (None, _) => true,
            (Some(pattern), Some(resource)) => resource_matches(pattern, resource),
            (Some(_), None) => false,
        }
    }
}

/// The outcome of checking an action against an agent's grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantCheck {
    /// A live grant names the capability and covers the resource.
    Granted,
    /// No live grant names the capability.
    NotGranted,
    /// Some live grant names the capability, but none covers the resource.
    ResourceNotInScope,
}

/// Checks `capability` on `resource` against `grants` at `now_ms`. Expired and
/// revoked grants count as absent.
pub fn evaluate(
    grants: &[GrantView],
    capability: &str,
    resource: Option<&str>,
    now_ms: i64,
) -> GrantCheck {
    let mut named = false;
    for grant in grants
        .iter()
        .filter(|g| g.capability == capability && g.is_live(now_ms))
    {
        if grant.covers(resource) {
            return GrantCheck::Granted;
        }
        named = true;
    }
    if named {
        GrantCheck::ResourceNotInScope
    } else {
        GrantCheck::NotGranted
    }
}

/// How dangerous a capability is, for people reading the catalogue and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskLevel {
    pub const ALL: &'static [RiskLevel] = &[
        RiskLevel::Low,
        RiskLevel::Medium,
        RiskLevel::High,
        RiskLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
            RiskLevel::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<RiskLevel> {
        RiskLevel::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// Whether an organization's denials are enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementMode {
    /// Actions outside an agent's grants are denied (the default).
    Enforce,
    /// Such actions are allowed but recorded and alerted as they would have been
    /// denied. Only ever an explicit choice.
    Monitor,
}

impl EnforcementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementMode::Enforce => "enforce",
            EnforcementMode::Monitor => "monitor",
        }
    }

    pub fn parse(s: &str) -> Option<EnforcementMode> {
        [EnforcementMode::Enforce, EnforcementMode::Monitor]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// A grant's state at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Active,
    Expired,
    Revoked,
}

impl GrantState {
    /// Revoked wins over expired.
    pub fn at(revoked_at: Option<i64>, expires_at: Option<i64>, now_ms: i64) -> GrantState {
        if revoked_at.is_some() {
            GrantState::Revoked
        } else if expires_at.is_some_and(|at| at <= now_ms) {
            GrantState::Expired
        } else {
            GrantState::Active
        }
    }
}

/// A well-formed capability name (see [`is_valid_capability_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityName(String);

impl CapabilityName {
    /// 400 `invalid_request` naming the rule when `name` is not well formed.
    pub fn parse(name: &str) -> Result<CapabilityName, ApiError> {
        if is_valid_capability_name(name) {
            Ok(CapabilityName(name.to_owned()))
        } else {
            Err(ApiError::invalid(
                "A capability name is `namespace:action`: two parts of 1 to 64 characters from \
                 `a-z`, `0-9`, `_`, `.`, `-`, each starting with a letter or digit.",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A capability's description: trimmed, at most [`MAX_DESCRIPTION_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description, ApiError> {
        let text = text.trim();
        if text.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(ApiError::invalid(format!(
                "`description` must be at most {MAX_DESCRIPTION_LEN} characters."
            )));
        }
        Ok(Description(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A minimum trust score, 0 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinTrust(i32);

impl MinTrust {
    pub fn parse(value: i64) -> Result<MinTrust, ApiError> {
        match i32::try_from(value) {
            Ok(v) if (0..=100).contains(&v) => Ok(MinTrust(v)),
            _ => Err(ApiError::invalid(
                "`min_trust` must be an integer from 0 to 100.",
            )),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// A resource pattern: 1 to [`MAX_PATTERN_LEN`] characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePattern(String);

impl ResourcePattern {
    pub fn parse(pattern: &str) -> Result<ResourcePattern, ApiError> {
        let length = pattern.chars().count();
        if length == 0 || length > MAX_PATTERN_LEN {
            return Err(ApiError::invalid(format!(
                "`resource_pattern` must be 1 to {MAX_PATTERN_LEN} characters; omit it to cover every resource."
            )));
        }
        if pattern.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "`resource_pattern` must not contain control characters.",
            ));
        }
        Ok(ResourcePattern(pattern.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A capability to add to the catalogue.
#[derive(Debug, Clone)]
pub struct NewCapability {
    pub name: CapabilityName,
    pub description: Description,
    pub risk_level: RiskLevel,
    pub min_trust: MinTrust,
}

/// Changes to a capability; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct CapabilityChanges {
    pub description: Option<Description>,
    pub risk_level: Option<RiskLevel>,
    pub min_trust: Option<MinTrust>,
}

impl CapabilityChanges {
    pub fn is_empty(&self) -> bool {
        self.description.is_none() && self.risk_level.is_none() && self.min_trust.is_none()
    }
}

/// A grant to make.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub capability: CapabilityName,
    pub resource_pattern: Option<ResourcePattern>,
    /// Unix milliseconds, after the time of granting.
    pub expires_at: Option<i64>,
}

impl NewGrant {
    /// Parses a grant request made at `now_ms`; `expires_at` is RFC 3339 and must be
    /// in the future.
    pub fn parse(
        capability: &str,
        resource_pattern: Option<&str>,
        expires_at: Option<&str>,
        now_ms: i64,
    ) -> Result<NewGrant, ApiError> {
        let capability = CapabilityName::parse(capability)?;
        let resource_pattern = resource_pattern.map(ResourcePattern::parse).transpose()?;
        let expires_at = match expires_at {
            None => None,
            Some(text) => match crate::clock::parse_rfc3339(text) {
                Some(at) if at > now_ms => Some(at),
                Some(_) => return Err(ApiError::invalid("`expires_at` must be in the future.")),
                None => return Err(ApiError::invalid("`expires_at` must be an RFC 3339 time.")),
            },
        };
        Ok(NewGrant {
            capability,
            resource_pattern,
            expires_at,
        })
    }
}

/// A capability of the organization's catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Capability {
    #[schema(example = "email:send")]
    pub name: String,
    pub description: String,
    pub risk_level: RiskLevel,
    /// The lowest trust score (0 to 100) at which an agent may use the capability.
    pub min_trust: i32,
    /// The user accountable for its creation.
    pub created_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

type CapabilityRow = (String, String, String, i32, String, i64, i64);

const CAPABILITY_COLUMNS: (
    capabilities::name,
    capabilities::description,
    capabilities::risk_level,
    capabilities::min_trust,
    capabilities::created_by,
    capabilities::created_at,
    capabilities::updated_at,
) = (
    capabilities::name,
    capabilities::description,
    capabilities::risk_level,
    capabilities::min_trust,
    capabilities::created_by,
    capabilities::created_at,
    capabilities::updated_at,
);

fn capability_from_row(
    (name, description, risk_level, min_trust, created_by, created_at, updated_at): CapabilityRow,
) -> Result<Capability, ApiError> {
    Ok(Capability {
        name,
        description,
        risk_level: RiskLevel::parse(&risk_level)
            .ok_or_else(|| ApiError::internal("unknown risk level in database"))?,
        min_trust,
        created_by,
        created_at: crate::clock::rfc3339(created_at),
        updated_at: crate::clock::rfc3339(updated_at),
    })
}

/// One agent's grant, live or past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Grant {
    pub id: String,
    pub agent_id: String,
    #[schema(example = "email:send")]
    pub capability: String,
    /// `*` matches any run of characters; absent: every resource.
    #[schema(example = "*@example.com")]
    pub resource_pattern: Option<String>,
    /// RFC 3339; absent: no expiry.
    pub expires_at: Option<String>,
    /// The user accountable for the grant.
    pub granted_by: String,
    /// RFC 3339.
    pub granted_at: String,
    /// RFC 3339.
    pub revoked_at: Option<String>,
    /// The user accountable for the revocation.
    pub revoked_by: Option<String>,
    /// The state when the answer was made.
    pub state: GrantState,
}

type GrantRow = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    String,
    i64,
    Option<i64>,
    Option<String>,
);

const GRANT_COLUMNS: (
    agent_grants::id,
    agent_grants::agent_id,
    agent_grants::capability,
    agent_grants::resource_pattern,
    agent_grants::expires_at,
    agent_grants::granted_by,
    agent_grants::granted_at,
    agent_grants::revoked_at,
    agent_grants::revoked_by,
) = (
    agent_grants::id,
    agent_grants::agent_id,
    agent_grants::capability,
    agent_grants::resource_pattern,
    agent_grants::expires_at,
    agent_grants::granted_by,
    agent_grants::granted_at,
    agent_grants::revoked_at,
    agent_grants::revoked_by,
);

fn grant_from_row(
    (
        id,
        agent_id,
        capability,
        resource_pattern,
        expires_at,
        granted_by,
        granted_at,
        revoked_at,
        revoked_by,
    ): GrantRow,
    now_ms: i64,
) -> Grant {
    Grant {
        id,
        agent_id,
        capability,
        resource_pattern,
        expires_at: expires_at.map(crate::clock::rfc3339),
        granted_by,
        granted_at: crate::clock::rfc3339(granted_at),
        revoked_at: revoked_at.map(crate::clock::rfc3339),
        revoked_by,
        state: GrantState::at(revoked_at, expires_at, now_ms),
    }
}

/// The organization's catalogue, by name.
pub fn list_capabilities(conn: &mut DbConn, org_id: &str) -> Result<Vec<Capability>, ApiError> {
    let rows: Vec<CapabilityRow> = capabilities::table
        .filter(capabilities::org_id.eq(org_id))
        .order(capabilities::name.asc())
        .select(CAPABILITY_COLUMNS)
        .load(conn)
        .map_err(internal)?;
    rows.into_iter().map(capability_from_row).collect()
}

/// One capability of the catalogue; 404 when the organization has none by that name.
pub fn get_capability(conn: &mut DbConn, org_id: &str, name: &str) -> Result<Capability, ApiError> {
    find_capability(conn, org_id, name)?.ok_or_else(ApiError::not_found)
}

fn find_capability(
    conn: &mut DbConn,
    org_id: &str,
    name: &str,
) -> Result<Option<Capability>, ApiError> {
    let row: Option<CapabilityRow> = capabilities::table
        .filter(capabilities::org_id.eq(org_id))
        .filter(capabilities::name.eq(name))
        .select(CAPABILITY_COLUMNS)
        .first(conn)
        .optional()
        .map_err(internal)?;
    row.map(capability_from_row).transpose()
}

/// Adds a capability to the catalogue and audits it; 409 `conflict` when the name
/// is taken.
pub fn create_capability(
    conn: &mut DbConn,
    org_id: &str,
    new: &NewCapability,
    created_by: &str,
    ctx: &AuditCtx<'_>,
) -> Result<Capability, ApiError> {
    let name = new.name.as_str();
    if find_capability(conn, org_id, name)?.is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("The capability `{name}` already exists."),
        ));
    }
    diesel::insert_into(capabilities::table)
        .values((
            capabilities::org_id.eq(org_id),
            capabilities::name.eq(name),
            capabilities::description.eq(new.description.as_str()),
            capabilities::risk_level.eq(new.risk_level.as_str()),
            capabilities::min_trust.eq(new.min_trust.get()),
            capabilities::created_by.eq(created_by),
            capabilities::created_at.eq(ctx.now),
            capabilities::updated_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(|e| db_error(e, "A capability with this name"))?;
    ctx.record(
        conn,
        org_id,
        "capability.created",
        Some(("capability", name)),
        Outcome::Success,
        serde_json::json!({
            "name": name,
            "risk_level": new.risk_level.as_str(),
            "min_trust": new.min_trust.get(),
        }),
    )?;
    Ok(Capability {
        name: name.to_owned(),
        description: new.description.as_str().to_owned(),
        risk_level: new.risk_level,
        min_trust: new.min_trust.get(),
        created_by: created_by.to_owned(),
        created_at: crate::clock::rfc3339(ctx.now),
        updated_at: crate::clock::rfc3339(ctx.now),
    })
}

#[derive(AsChangeset)]
#[diesel(table_name = capabilities)]
struct CapabilityChangeset<'a> {
    description: Option<&'a str>,
    risk_level: Option<&'a str>,
    min_trust: Option<i32>,
    updated_at: i64,
}

/// Changes a capability and audits what changed (from and to); 404 when the
/// organization has none by that name.
pub fn update_capability(
    conn: &mut DbConn,
    org_id: &str,
    name: &str,
    changes: &CapabilityChanges,
    ctx: &AuditCtx<'_>,
) -> Result<Capability, ApiError> {
    let before = get_capability(conn, org_id, name)?;
    diesel::update(
        capabilities::table
            .filter(capabilities::org_id.eq(org_id))
            .filter(capabilities::name.eq(name)),
    )
    .set(CapabilityChangeset {
        description: changes.description.as_ref().map(Description::as_str),
        risk_level: changes.risk_level.map(RiskLevel::as_str),
        min_trust: changes.min_trust.map(MinTrust::get),
        updated_at: ctx.now,
    })
    .execute(conn)
    .map_err(internal)?;
    let after = get_capability(conn, org_id, name)?;
    let mut details = serde_json::Map::new();
    if before.description != after.description {
        details.insert(
            "description".to_owned(),
            serde_json::json!({ "from": before.description, "to": after.description }),
        );
    }
    if before.risk_level != after.risk_level {
        details.insert(
            "risk_level".to_owned(),
            serde_json::json!({ "from": before.risk_level.as_str(), "to": after.risk_level.as_str() }),
        );
    }
    if before.min_trust != after.min_trust {
        details.insert(
            "min_trust".to_owned(),
            serde_json::json!({ "from": before.min_trust, "to": after.min_trust }),
        );
    }
    ctx.record(
        conn,
        org_id,
        "capability.updated",
        Some(("capability", name)),
        Outcome::Success,
        serde_json::Value::Object(details),
    )?;
    Ok(after)
}

/// The agent's status, or 404 when the organization has no such agent.
fn agent_status(conn: &mut DbConn, org_id: &str, agent_id: &str) -> Result<String, ApiError> {
    agents::table
        .filter(agents::id.eq(agent_id))
        .filter(agents::org_id.eq(org_id))
        .select(agents::status)
        .first(conn)
        .optional()
        .map_err(internal)?
        .ok_or_else(ApiError::not_found)
}

/// Grants a capability of the catalogue to an agent of the organization and
/// audits it. 404 when the organization has no such agent, 409 `invalid_state`
/// when the agent is revoked, 400 when the capability is not in the catalogue.
pub fn grant_capability(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    new: &NewGrant,
    granted_by: &str,
    ctx: &AuditCtx<'_>,
) -> Result<Grant, ApiError> {
    if agent_status(conn, org_id, agent_id)? == "revoked" {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "The agent is revoked; a revoked agent cannot be granted anything.",
        ));
    }
    let capability = new.capability.as_str();
    if find_capability(conn, org_id, capability)?.is_none() {
        return Err(ApiError::invalid(format!(
            "The capability `{capability}` is not in the organization's catalogue; create it first."
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let pattern = new.resource_pattern.as_ref().map(ResourcePattern::as_str);
    diesel::insert_into(agent_grants::table)
        .values((
            agent_grants::id.eq(&id),
            agent_grants::org_id.eq(org_id),
            agent_grants::agent_id.eq(agent_id),
            agent_grants::capability.eq(capability),
            agent_grants::resource_pattern.eq(pattern),
            agent_grants::expires_at.eq(new.expires_at),
            agent_grants::granted_by.eq(granted_by),
            agent_grants::granted_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(internal)?;
    ctx.record(
        conn,
        org_id,
        "capability.granted",
        Some(("agent_grant", &id)),
        Outcome::Success,
        serde_json::json!({
            "agent_id": agent_id,
            "capability": capability,
            "resource_pattern": pattern,
            "expires_at": new.expires_at.map(crate::clock::rfc3339),
        }),
    )?;
    Ok(Grant {
        id,
        agent_id: agent_id.to_owned(),
        capability: capability.to_owned(),
        resource_pattern: pattern.map(str::to_owned),
        expires_at: new.expires_at.map(crate::clock::rfc3339),
        granted_by: granted_by.to_owned(),
        granted_at: crate::clock::rfc3339(ctx.now),
        revoked_at: None,
        revoked_by: None,
        state: GrantState::at(None, new.expires_at, ctx.now),
    })
}

/// Every grant of an agent of the organization, oldest first, with its state at
/// `now_ms`; 404 when the organization has no such agent.
pub fn list_agent_grants(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    now_ms: i64,
) -> Result<Vec<Grant>, ApiError> {
    agent_status(conn, org_id, agent_id)?;
    let rows: Vec<GrantRow> = agent_grants::table
        .filter(agent_grants::org_id.eq(org_id))
        .filter(agent_grants::agent_id.eq(agent_id))
        .order((agent_grants::granted_at.asc(), agent_grants::id.asc()))
        .select(GRANT_COLUMNS)
        .load(conn)
        .map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(|row| grant_from_row(row, now_ms))
        .collect())
}

/// Revokes one grant of an agent of the organization (the row is kept) and audits
/// it. 404 when there is no such grant for that agent in the organization; 409
/// `invalid_state` when it is already revoked.
pub fn revoke_grant(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    grant_id: &str,
    revoked_by: &str,
    ctx: &AuditCtx<'_>,
) -> Result<Grant, ApiError> {
    let scoped = || {
        agent_grants::table
            .filter(agent_grants::org_id.eq(org_id))
            .filter(agent_grants::agent_id.eq(agent_id))
            .filter(agent_grants::id.eq(grant_id))
    };
    let row: GrantRow = scoped()
        .select(GRANT_COLUMNS)
        .first(conn)
        .optional()
        .map_err(internal)?
        .ok_or_else(ApiError::not_found)?;
    let mut grant = grant_from_row(row, ctx.now);
    let already = || ApiError::new(ErrorCode::InvalidState, "The grant is already revoked.");
    if grant.revoked_at.is_some() {
        return Err(already());
    }
    let changed = diesel::update(scoped().filter(agent_grants::revoked_at.is_null()))
        .set((
            agent_grants::revoked_at.eq(ctx.now),
            agent_grants::revoked_by.eq(revoked_by),
        ))
        .execute(conn)
        .map_err(internal)?;
    if changed == 0 {
        return Err(already());
    }
    ctx.record(
        conn,
        org_id,
        "capability.grant_revoked",
        Some(("agent_grant", grant_id)),
        Outcome::Success,
        serde_json::json!({
            "agent_id": agent_id,
            "capability": grant.capability,
            "resource_pattern": grant.resource_pattern,
            "expires_at": grant.expires_at,
        }),
    )?;
    grant.revoked_at = Some(crate::clock::rfc3339(ctx.now));
    grant.revoked_by = Some(revoked_by.to_owned());
    grant.state = GrantState::Revoked;
    Ok(grant)
}

/// The unrevoked grants of each of `agent_ids` (expired ones included: [`evaluate`]
/// weighs expiry against its own `now`), for the decision writer, which reads them
/// inside the decision's transaction. Agent ids are unique across organizations and
/// come from rows already scoped to the statement's organization.
pub fn live_grants(
    conn: &mut DbConn,
    agent_ids: &[&str],
) -> QueryResult<HashMap<String, Vec<GrantView>>> {
    type ViewRow = (String, String, Option<String>, Option<i64>, Option<i64>);
    let rows: Vec<ViewRow> = agent_grants::table
        .filter(agent_grants::agent_id.eq_any(agent_ids))
        .filter(agent_grants::revoked_at.is_null())
        .select((
            agent_grants::agent_id,
            agent_grants::capability,
            agent_grants::resource_pattern,
            agent_grants::expires_at,
            agent_grants::revoked_at,
        ))
        .load(conn)?;
    let mut grants: HashMap<String, Vec<GrantView>> = HashMap::new();
    for (agent_id, capability, resource_pattern, expires_at, revoked_at) in rows {
        grants.entry(agent_id).or_default().push(GrantView {
            capability,
            resource_pattern,
            expires_at,
            revoked_at,
        });
    }
    Ok(grants)
}

/// The organization's enforcement mode.
pub fn enforcement_mode(conn: &mut DbConn, org_id: &str) -> Result<EnforcementMode, ApiError> {
    let stored: String = organizations::table
        .filter(organizations::id.eq(org_id))
        .select(organizations::enforcement)
        .first(conn)
        .map_err(|e| db_error(e, "organization"))?;
    EnforcementMode::parse(&stored)
        .ok_or_else(|| ApiError::internal("unknown enforcement mode in database"))
}

/// Sets the organization's enforcement mode; a change is audited with its old and
/// new value. Returns whether the mode changed.
pub fn set_enforcement_mode(
    conn: &mut DbConn,
    org_id: &str,
    mode: EnforcementMode,
    ctx: &AuditCtx<'_>,
) -> Result<bool, ApiError> {
    let before = enforcement_mode(conn, org_id)?;
    if before == mode {
        return Ok(false);
    }
    diesel::update(organizations::table.filter(organizations::id.eq(org_id)))
        .set(organizations::enforcement.eq(mode.as_str()))
        .execute(conn)
        .map_err(internal)?;
    ctx.record(
        conn,
        org_id,
        "org.enforcement_changed",
        Some(("organization", org_id)),
        Outcome::Success,
        serde_json::json!({ "from": before.as_str(), "to": mode.as_str() }),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(capability: &str, pattern: Option<&str>) -> GrantView {
        GrantView {
            capability: capability.to_owned(),
            resource_pattern: pattern.map(str::to_owned),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn capability_names_are_namespace_colon_action() {
        for good in [
            "email:send",
            "a:b",
            "0:9",
            "files.v2:read-all",
            "db_x:write_rows",
            "ns-1:act.2",
        ] {
            assert!(is_valid_capability_name(good), "{good}");
        }
        let long = "a".repeat(MAX_NAME_PART_LEN);
        assert!(is_valid_capability_name(&format!("{long}:{long}")));
        let too_long = "a".repeat(MAX_NAME_PART_LEN + 1);
        for bad in [
            "",
            ":",
            "email",
            "email:",
            ":send",
            "email:send:now",
            "Email:send",
            "email:Send",
            "_email:send",
            "email:-send",
            ".a:b",
            "a:.b",
            "email send:x",
            "email:se nd",
            "e*:send",
            "émail:send",
            "email:send\n",
            " email:send",
            "email/x:send",
        ] {
            assert!(!is_valid_capability_name(bad), "{bad:?}");
        }
        assert!(!is_valid_capability_name(&format!("{too_long}:a")));
        assert!(!is_valid_capability_name(&format!("a:{too_long}")));
    }

    #[test]
    fn a_pattern_without_star_matches_only_itself() {
        assert!(resource_matches("", ""));
        assert!(!resource_matches("", "a"));
        assert!(!resource_matches("a", ""));
        assert!(resource_matches("bob@example.com", "bob@example.com"));
        assert!(!resource_matches("bob@example.com", "Bob@example.com"));
        assert!(!resource_matches("bob@example.com", "bob@example.co"));
        assert!(!resource_matches("bob@example.com", "bob@example.comm"));
        // Nothing but `*` is special.
        assert!(resource_matches("a?b[c]", "a?b[c]"));
        assert!(!resource_matches("a?c", "abc"));
        assert!(!resource_matches("[ab]", "a"));
        assert!(resource_matches("\\*", "\\anything"));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(resource_matches("*", ""));
        assert!(resource_matches("*", "anything at all"));
        assert!(resource_matches("**", ""));
        assert!(resource_matches("***", "x"));
        // Leading star.
        assert!(resource_matches("*@example.com", "bob@example.com"));
        assert!(resource_matches("*@example.com", "@example.com"));
        assert!(!resource_matches(
            "*@example.com",
            "bob@example.com.evil.test"
        ));
        assert!(!resource_matches("*@example.com", "bob@EXAMPLE.com"));
        assert!(!resource_matches("*@example.com", "bob@sub.example.co"));
        assert!(resource_matches("*@example.com", "a@b@example.com"));
        // Trailing star.
        assert!(resource_matches("/data/*", "/data/"));
        assert!(resource_matches("/data/*", "/data/a/b/c"));
        assert!(!resource_matches("/data/*", "/data"));
        assert!(!resource_matches("/data/*", "/etc/data/x"));
        // Both ends and middle.
        assert!(resource_matches("*report*", "report"));
        assert!(resource_matches("*report*", "q3-report-final"));
        assert!(!resource_matches("*report*", "repor"));
        assert!(resource_matches("a*b*c", "abc"));
        assert!(resource_matches("a*b*c", "a-b-c"));
        assert!(resource_matches("a*b*c", "axxbyybzzc"));
        assert!(!resource_matches("a*b*c", "acb"));
        assert!(!resource_matches("a*b*c", "ab"));
        assert!(resource_matches("a*a", "aa"));
        assert!(
            !resource_matches("a*a", "a"),
            "prefix and suffix must not overlap"
        );
        assert!(resource_matches("ab*ba", "abba"));
        assert!(!resource_matches("ab*ba", "aba"));
        assert!(resource_matches("*a*a*", "aa"));
        assert!(!resource_matches("*a*a*", "a"));
        assert!(resource_matches(
            "https://*.example.com/*",
            "https://api.example.com/v1"
        ));
        assert!(!resource_matches(
            "https://*.example.com/*",
            "https://example.com/v1"
        ));
    }

    #[test]
    fn unicode_is_matched_by_character() {
        assert!(resource_matches("*@exämple.com", "jürgen@exämple.com"));
        assert!(!resource_matches("*@exämple.com", "jurgen@example.com"));
        assert!(resource_matches("日本*", "日本語"));
        assert!(resource_matches("*語", "日本語"));
        assert!(resource_matches("日*語", "日本語"));
        assert!(resource_matches("日*語", "日語"));
        assert!(!resource_matches("日*語", "日本"));
        assert!(resource_matches("🙂*🙃", "🙂 hello 🙃"));
        assert!(!resource_matches("é", "e\u{301}"), "no normalization");
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = "*a".repeat(200) + "*b";
        let resource = "a".repeat(100_000);
        let started = std::time::Instant::now();
        assert!(!resource_matches(&pattern, &resource));
        assert!(resource_matches(&pattern, &(resource.clone() + "b")));
        assert!(!resource_matches("*a*a*a*a*a*a*a*a*a*a*b", &resource));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }

    /// A slow, obviously correct matcher to compare against.
    fn reference(pattern: &[char], resource: &[char]) -> bool {
        match pattern.split_first() {
            None => resource.is_empty(),
            Some(('*', rest)) => (0..=resource.len()).any(|i| reference(rest, &resource[i..])),
            Some((c, rest)) => resource
                .split_first()
                .is_some_and(|(r, tail)| r == c && reference(rest, tail)),
        }
    }

    #[test]
    fn agrees_with_a_reference_matcher_on_every_small_case() {
        let alphabet = ['a', 'b', '*'];
        let mut patterns = vec![String::new()];
        for _ in 0..5 {
            let next: Vec<String> = patterns
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            patterns.extend(next);
        }
        patterns.sort();
        patterns.dedup();
        let mut resources = vec![String::new()];
        for _ in 0..5 {
            let next: Vec<String> = resources
                .iter()
                .flat_map(|r| ['a', 'b'].iter().map(move |c| format!("{r}{c}")))
                .collect();
            resources.extend(next);
        }
        resources.sort();
        resources.dedup();
        for p in &patterns {
            let pc: Vec<char> = p.chars().collect();
            for r in &resources {
                let rc: Vec<char> = r.chars().collect();
                assert_eq!(
                    resource_matches(p, r),
                    reference(&pc, &rc),
                    "pattern {p:?} resource {r:?}"
                );
            }
        }
    }

    #[test]
    fn evaluate_needs_a_live_grant_naming_the_capability() {
        let now = 1_000_000;
        assert_eq!(
            evaluate(&[], "email:send", None, now),
            GrantCheck::NotGranted
        );
        let grants = [grant("email:read", None)];
        assert_eq!(
            evaluate(&grants, "email:send", None, now),
            GrantCheck::NotGranted
        );
        assert_eq!(
            evaluate(&grants, "email:read", Some("inbox"), now),
            GrantCheck::Granted
        );
        assert_eq!(
            evaluate(&grants, "email:read", None, now),
            GrantCheck::Granted
        );

        let expired = GrantView {
            expires_at: Some(now),
            ..grant("email:send", None)
        };
        assert_eq!(
            evaluate(std::slice::from_ref(&expired), "email:send", None, now),
            GrantCheck::NotGranted,
            "a grant expires at its expiry instant"
        );
        assert_eq!(
            evaluate(std::slice::from_ref(&expired), "email:send", None, now - 1),
            GrantCheck::Granted
        );
        let revoked = GrantView {
            revoked_at: Some(now - 10),
            expires_at: Some(now + 10),
            ..grant("email:send", None)
        };
        assert_eq!(
            evaluate(&[revoked], "email:send", Some("x"), now),
            GrantCheck::NotGranted
        );
    }

    #[test]
    fn evaluate_scopes_by_resource() {
        let now = 5;
        let scoped = [grant("email:send", Some("*@example.com"))];
        assert_eq!(
            evaluate(&scoped, "email:send", Some("bob@example.com"), now),
            GrantCheck::Granted
        );
        assert_eq!(
            evaluate(&scoped, "email:send", Some("eve@evil.test"), now),
            GrantCheck::ResourceNotInScope
        );
        assert_eq!(
            evaluate(&scoped, "email:send", None, now),
            GrantCheck::ResourceNotInScope,
            "a patterned grant does not cover an action without a resource"
        );
        assert_eq!(
            evaluate(&scoped, "email:read", Some("bob@example.com"), now),
            GrantCheck::NotGranted
        );
        // Any one covering grant is enough.
        let two = [
            grant("email:send", Some("*@example.com")),
            grant("email:send", Some("*@example.org")),
        ];
        assert_eq!(
            evaluate(&two, "email:send", Some("x@example.org"), now),
            GrantCheck::Granted
        );
        let with_unscoped = [
            grant("email:send", Some("*@example.com")),
            grant("email:send", None),
        ];
        assert_eq!(
            evaluate(&with_unscoped, "email:send", Some("eve@evil.test"), now),
            GrantCheck::Granted
        );
        assert_eq!(
            evaluate(&with_unscoped, "email:send", None, now),
            GrantCheck::Granted
        );
        // A dead grant that would cover does not help; a live one that does not
        // cover makes it out of scope.
        let dead_covering = [
            GrantView {
                revoked_at: Some(1),
                ..grant("email:send", None)
            },
            grant("email:send", Some("*@example.com")),
        ];
        assert_eq!(
            evaluate(&dead_covering, "email:send", Some("eve@evil.test"), now),
            GrantCheck::ResourceNotInScope
        );
        let star = [grant("files:read", Some("*"))];
        assert_eq!(
            evaluate(&star, "files:read", Some(""), now),
            GrantCheck::Granted
        );
        assert_eq!(
            evaluate(&star, "files:read", None, now),
            GrantCheck::ResourceNotInScope
        );
    }

    #[test]
    fn grant_states() {
        assert_eq!(GrantState::at(None, None, 10), GrantState::Active);
        assert_eq!(GrantState::at(None, Some(11), 10), GrantState::Active);
        assert_eq!(GrantState::at(None, Some(10), 10), GrantState::Expired);
        assert_eq!(GrantState::at(Some(1), Some(5), 10), GrantState::Revoked);
        assert_eq!(GrantState::at(Some(1), None, 10), GrantState::Revoked);
    }

    #[test]
    fn inputs_are_parsed_at_the_boundary() {
        assert!(MinTrust::parse(0).is_ok());
        assert!(MinTrust::parse(100).is_ok());
        assert!(MinTrust::parse(101).is_err());
        assert!(MinTrust::parse(-1).is_err());
        assert!(MinTrust::parse(i64::from(i32::MAX) + 1).is_err());
        assert!(ResourcePattern::parse("").is_err());
        assert!(ResourcePattern::parse(&"x".repeat(MAX_PATTERN_LEN)).is_ok());
        assert!(ResourcePattern::parse(&"é".repeat(MAX_PATTERN_LEN)).is_ok());
        assert!(ResourcePattern::parse(&"x".repeat(MAX_PATTERN_LEN + 1)).is_err());
        assert!(ResourcePattern::parse("a\nb").is_err());
        assert!(Description::parse(&"d".repeat(MAX_DESCRIPTION_LEN)).is_ok());
        assert!(Description::parse(&"d".repeat(MAX_DESCRIPTION_LEN + 1)).is_err());
        assert_eq!(Description::parse("  x  ").unwrap().as_str(), "x");
        let now = crate::clock::parse_rfc3339("2030-01-01T00:00:00Z").unwrap();
        let g = NewGrant::parse(
            "email:send",
            Some("*@example.com"),
            Some("2030-01-02T00:00:00Z"),
            now,
        )
        .unwrap();
        assert_eq!(g.expires_at, Some(now + 86_400_000));
        for (capability, expiry) in [
            ("email:send", Some("2029-12-31T00:00:00Z")),
            ("email:send", Some("2030-01-01T00:00:00Z")),
            ("email:send", Some("tomorrow")),
            ("Email:send", None),
        ] {
            let error = NewGrant::parse(capability, None, expiry, now).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest);
        }
        assert_eq!(RiskLevel::parse("critical"), Some(RiskLevel::Critical));
        assert_eq!(RiskLevel::parse("extreme"), None);
        assert_eq!(
            EnforcementMode::parse("monitor"),
            Some(EnforcementMode::Monitor)
        );
        assert_eq!(EnforcementMode::parse("off"), None);
    }

    #[test]
    fn the_rules_are_documented() {
        let doc = include_str!("../../docs/capabilities.md");
        for needle in [
            "namespace:action",
            "*@example.com",
            "min_trust",
            "monitor",
            "enforce",
            "capabilities:grant",
            "org:manage",
            "org.enforcement_changed",
            "capability.grant_revoked",
        ] {
            assert!(doc.contains(needle), "docs/capabilities.md lacks {needle}");
        }
        for risk in RiskLevel::ALL {
            assert!(doc.contains(&format!("`{}`", risk.as_str())));
        }
    }

    mod storage {

        use super::super::*;
        use crate::audit::ActorType;
        use crate::db::testing::TestDb;
        use crate::db::{write_transaction, Backend};

        const NOW: i64 = 1_800_000_000_000;

        fn ctx(user: &str, now: i64) -> AuditCtx<'_> {
            AuditCtx {
                actor_type: ActorType::User,
                actor_id: Some(user),
                request_id: None,
                now,
            }
        }

        /// An organization with its owner; returns (org id, owner id).
        fn org(conn: &mut DbConn, name: &str) -> (String, String) {
            let (org, owner) = write_transaction(conn, |conn| {
                crate::accounts::create_org_with_owner(
                    conn,
                    name,
                    &format!("owner@{name}.example"),
                    "not-a-real-hash",
                    NOW,
                )
            })
            .unwrap();
            (org.id, owner.id)
        }

        /// Inserts an agent row directly, as registration would.
        fn agent(conn: &mut DbConn, org_id: &str, owner: &str, name: &str, status: &str) -> String {
            let id = uuid::Uuid::new_v4().to_string();
            diesel::insert_into(agents::table)
                .values((
                    agents::id.eq(&id),
                    agents::org_id.eq(org_id),
                    agents::name.eq(name),
                    agents::description.eq(""),
                    agents::owner_id.eq(owner),
                    agents::status.eq(status),
                    agents::did.eq(format!("did:agentid:{id}")),
                    agents::key_id.eq(format!("key-{id}")),
                    agents::public_key.eq("AAAA"),
                    agents::requested_capabilities.eq("[]"),
                    agents::metadata.eq("{}"),
                    agents::created_by.eq(owner),
                    agents::created_at.eq(NOW),
                    agents::updated_at.eq(NOW),
                ))
                .execute(conn)
                .unwrap();
            id
        }

        fn new_capability(name: &str, risk: RiskLevel, min_trust: i64) -> NewCapability {
            NewCapability {
                name: CapabilityName::parse(name).unwrap(),
                description: Description::parse("test capability").unwrap(),
                risk_level: risk,
                min_trust: MinTrust::parse(min_trust).unwrap(),
            }
        }

        fn audit_actions(conn: &mut DbConn, org_id: &str) -> Vec<(String, serde_json::Value)> {
            crate::audit::list(conn, org_id, None, 500)
                .unwrap()
                .into_iter()
                .map(|r| (r.action, r.details.value()))
                .collect()
        }

        fn catalogue_grants_and_enforcement(backend: Backend) {
            let test = TestDb::new(backend);
            let mut pooled = test.db.get().unwrap();
            let conn: &mut DbConn = &mut pooled;
            let (org_a, owner_a) = org(conn, "alpha");
            let (org_b, owner_b) = org(conn, "beta");
            let c = ctx(&owner_a, NOW);

            // Catalogue: create, duplicate, list, get, update.
            let created = write_transaction(conn, |conn| {
                create_capability(
                    conn,
                    &org_a,
                    &new_capability("email:send", RiskLevel::High, 60),
                    &owner_a,
                    &c,
                )
            })
            .unwrap();
            assert_eq!(created.min_trust, 60);
            let duplicate = write_transaction(conn, |conn| {
                create_capability(
                    conn,
                    &org_a,
                    &new_capability("email:send", RiskLevel::Low, 0),
                    &owner_a,
                    &c,
                )
            })
            .unwrap_err();
            assert_eq!(duplicate.code(), ErrorCode::Conflict);
            // The same name in another organization is another capability.
            write_transaction(conn, |conn| {
                create_capability(
                    conn,
                    &org_b,
                    &new_capability("email:send", RiskLevel::Low, 0),
                    &owner_b,
                    &ctx(&owner_b, NOW),
                )
            })
            .unwrap();
            write_transaction(conn, |conn| {
                create_capability(
                    conn,
                    &org_a,
                    &new_capability("files:read", RiskLevel::Low, 10),
                    &owner_a,
                    &c,
                )
            })
            .unwrap();
            let names: Vec<String> = list_capabilities(conn, &org_a)
                .unwrap()
                .into_iter()
                .map(|c| c.name)
                .collect();
            assert_eq!(names, ["email:send", "files:read"]);
            assert_eq!(list_capabilities(conn, &org_b).unwrap().len(), 1);
            assert_eq!(
                get_capability(conn, &org_b, "files:read")
                    .unwrap_err()
                    .code(),
                ErrorCode::NotFound
            );
            let later = ctx(&owner_a, NOW + 1_000);
            let updated = write_transaction(conn, |conn| {
                update_capability(
                    conn,
                    &org_a,
                    "email:send",
                    &CapabilityChanges {
                        min_trust: Some(MinTrust::parse(70).unwrap()),
                        risk_level: Some(RiskLevel::Critical),
                        ..CapabilityChanges::default()
                    },
                    &later,
                )
            })
            .unwrap();
            assert_eq!(updated.min_trust, 70);
            assert_eq!(updated.risk_level, RiskLevel::Critical);
            assert_eq!(updated.description, "test capability");
            assert_eq!(updated.updated_at, crate::clock::rfc3339(NOW + 1_000));
            assert_eq!(
                get_capability(conn, &org_b, "email:send")
                    .unwrap()
                    .min_trust,
                0,
                "another organization's capability is untouched"
            );
            let foreign = write_transaction(conn, |conn| {
                update_capability(
                    conn,
                    &org_b,
                    "files:read",
                    &CapabilityChanges {
                        min_trust: Some(MinTrust::parse(1).unwrap()),
                        ..CapabilityChanges::default()
                    },
                    &ctx(&owner_b, NOW),
                )
            })
            .unwrap_err();
            assert_eq!(foreign.code(), ErrorCode::NotFound);

            // Grants.
            let agent_a = agent(conn, &org_a, &owner_a, "mailer", "active");
            let revoked_agent = agent(conn, &org_a, &owner_a, "gone", "revoked");
            let agent_b = agent(conn, &org_b, &owner_b, "mailer", "active");
            let parse = |cap: &str, pattern: Option<&str>, expires: Option<&str>| {
                NewGrant::parse(cap, pattern, expires, NOW).unwrap()
            };
            let scoped = write_transaction(conn, |conn| {
                grant_capability(
                    conn,
                    &org_a,
                    &agent_a,
                    &parse("email:send", Some("*@example.com"), None),
                    &owner_a,
                    &c,
                )
            })
            .unwrap();
            assert_eq!(scoped.state, GrantState::Active);
            let expiring = write_transaction(conn, |conn| {
                grant_capability(
                    conn,
                    &org_a,
                    &agent_a,
                    &parse(
                        "files:read",
                        None,
                        Some(&crate::clock::rfc3339(NOW + 60_000)),
                    ),
                    &owner_a,
                    &c,
                )
            })
            .unwrap();
            let unknown = write_transaction(conn, |conn| {
                grant_capability(
                    conn,
                    &org_a,
                    &agent_a,
                    &parse("shell:exec", None, None),
                    &owner_a,
                    &c,
                )
            })
            .unwrap_err();
            assert_eq!(unknown.code(), ErrorCode::InvalidRequest);
            let to_revoked = write_transaction(conn, |conn| {
                grant_capability(
                    conn,
                    &org_a,
                    &revoked_agent,
                    &parse("email:send", None, None),
                    &owner_a,
                    &c,
                )
            })
            .unwrap_err();
            assert_eq!(to_revoked.code(), ErrorCode::InvalidState);
            for (org, agent) in [(&org_b, &agent_a), (&org_a, &agent_b)] {
                let cross = write_transaction(conn, |conn| {
                    grant_capability(
                        conn,
                        org,
                        agent,
                        &parse("email:send", None, None),
                        &owner_a,
                        &c,
                    )
                })
                .unwrap_err();
                assert_eq!(cross.code(), ErrorCode::NotFound);
                assert_eq!(
                    list_agent_grants(conn, org, agent, NOW).unwrap_err().code(),
                    ErrorCode::NotFound
                );
            }

            // Listing reports states at the time asked.
            let listed = list_agent_grants(conn, &org_a, &agent_a, NOW).unwrap();
            assert_eq!(listed.len(), 2);
            assert!(listed.iter().all(|g| g.state == GrantState::Active));
            let listed = list_agent_grants(conn, &org_a, &agent_a, NOW + 60_000).unwrap();
            let files = listed.iter().find(|g| g.id == expiring.id).unwrap();
            assert_eq!(files.state, GrantState::Expired);

            // The decision path's view.
            let live = live_grants(conn, &[agent_a.as_str()]).unwrap();
            let views = &live[&agent_a];
            assert_eq!(
                evaluate(views, "email:send", Some("bob@example.com"), NOW),
                GrantCheck::Granted
            );
            assert_eq!(
                evaluate(views, "email:send", Some("eve@evil.test"), NOW),
                GrantCheck::ResourceNotInScope
            );
            assert_eq!(
                evaluate(views, "files:read", None, NOW + 59_999),
                GrantCheck::Granted
            );
            assert_eq!(
                evaluate(views, "files:read", None, NOW + 60_000),
                GrantCheck::NotGranted
            );

            // Revocation: from another organization or agent it is not found; then
            // it works once.
            for (org, agent) in [(&org_b, &agent_a), (&org_a, &revoked_agent)] {
                let error = write_transaction(conn, |conn| {
                    revoke_grant(conn, org, agent, &scoped.id, &owner_a, &c)
                })
                .unwrap_err();
                assert_eq!(error.code(), ErrorCode::NotFound);
            }
            let revoked = write_transaction(conn, |conn| {
                revoke_grant(conn, &org_a, &agent_a, &scoped.id, &owner_a, &later)
            })
            .unwrap();
            assert_eq!(revoked.state, GrantState::Revoked);
            assert_eq!(revoked.revoked_by.as_deref(), Some(owner_a.as_str()));
            let again = write_transaction(conn, |conn| {
                revoke_grant(conn, &org_a, &agent_a, &scoped.id, &owner_a, &later)
            })
            .unwrap_err();
            assert_eq!(again.code(), ErrorCode::InvalidState);
            let live = live_grants(conn, &[agent_a.as_str()]).unwrap();
            let views = &live[&agent_a];
            assert_eq!(
                evaluate(views, "email:send", Some("bob@example.com"), NOW + 2_000),
                GrantCheck::NotGranted
            );
            let listed = list_agent_grants(conn, &org_a, &agent_a, NOW + 2_000).unwrap();
            let row = listed.iter().find(|g| g.id == scoped.id).unwrap();
            assert_eq!(row.state, GrantState::Revoked);
            assert_eq!(row.revoked_at, Some(crate::clock::rfc3339(NOW + 1_000)));

            // Enforcement: enforce by default; a change is audited, a no-op is not.
            assert_eq!(
                enforcement_mode(conn, &org_a).unwrap(),
                EnforcementMode::Enforce
            );
            let changed = write_transaction(conn, |conn| {
                set_enforcement_mode(conn, &org_a, EnforcementMode::Monitor, &c)
            })
            .unwrap();
            assert!(changed);
            let unchanged = write_transaction(conn, |conn| {
                set_enforcement_mode(conn, &org_a, EnforcementMode::Monitor, &c)
            })
            .unwrap();
            assert!(!unchanged);
            assert_eq!(
                enforcement_mode(conn, &org_a).unwrap(),
                EnforcementMode::Monitor
            );
            assert_eq!(
                enforcement_mode(conn, &org_b).unwrap(),
                EnforcementMode::Enforce
            );

            // Every change is in the organization's own chain, with its details.
            let audit = audit_actions(conn, &org_a);
            let count = |action: &str| audit.iter().filter(|(a, _)| a == action).count();
            assert_eq!(count("capability.created"), 2);
            assert_eq!(count("capability.updated"), 1);
            assert_eq!(count("capability.granted"), 2);
            assert_eq!(count("capability.grant_revoked"), 1);
            assert_eq!(count("org.enforcement_changed"), 1);
            let granted = &audit
                .iter()
                .find(|(a, d)| a == "capability.granted" && d["capability"] == "email:send")
                .unwrap()
                .1;
            assert_eq!(granted["agent_id"], agent_a.as_str());
            assert_eq!(granted["resource_pattern"], "*@example.com");
            assert!(granted["expires_at"].is_null());
            let updated = &audit
                .iter()
                .find(|(a, _)| a == "capability.updated")
                .unwrap()
                .1;
            assert_eq!(
                updated["min_trust"],
                serde_json::json!({ "from": 60, "to": 70 })
            );
            assert!(updated.get("description").is_none());
            let changed = &audit
                .iter()
                .find(|(a, _)| a == "org.enforcement_changed")
                .unwrap()
                .1;
            assert_eq!(
                *changed,
                serde_json::json!({ "from": "enforce", "to": "monitor" })
            );
            assert_eq!(
                audit_actions(conn, &org_b)
                    .iter()
                    .filter(|(a, _)| a.starts_with("capability."))
                    .count(),
                1
            );
            assert!(crate::audit::verify(conn, &org_a).unwrap().valid);
        }

        #[test]
        fn catalogue_grants_and_enforcement_on_sqlite() {
            catalogue_grants_and_enforcement(Backend::Sqlite);
        }

        #[test]
        fn catalogue_grants_and_enforcement_on_postgres() {
            catalogue_grants_and_enforcement(Backend::Postgres);
        }
    }
}
