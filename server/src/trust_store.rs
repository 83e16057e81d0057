//! Trust scores in the database: each organization's trust policy, the facts the
//! model needs that are not events, committing new scores (the stored score, its
//! history, the alert and suspension thresholds), and recomputing a score when
//! something other than a decision changes it.
//!
//! The model itself is [`crate::trust`] (pure, no I/O). Everything here runs inside
//! the caller's transaction, so a score, its history point, the alert it raises and
//! the suspension it causes commit or roll back together with the change behind them.

use std::collections::HashMap;
use std::num::NonZeroU64;

use diesel::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::accounts::AuditCtx;
use crate::alerts::{self, AlertKind, NewAlert, Severity};
use crate::audit::{self, ActorType, NewEvent, Outcome};
use crate::db::DbConn;
use crate::error::{ApiError, ErrorCode};
use crate::schema::{agent_keys, agent_stats, agents, organizations, trust_history};
use crate::trust::{
    self, Attestation, Factor, OpenAlerts, TrustEvent, TrustInputs, TrustReport, TrustScore,
    TrustState, Weights,
};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A score change at least this large (in points, since the agent's latest history
/// point) is recorded in the history even when nothing else notable happened.
pub const HISTORY_MIN_CHANGE: f64 = 1.0;

/// The longest key rotation policy an organization may set, in days (ten years).
pub const MAX_KEY_AGE_DAYS: u32 = 3650;

/// An organization's trust policy.
///
/// Stored as this JSON in `organizations.trust_policy`; `NULL` means
/// [`TrustPolicy::default`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// Every factor's weight, each from 0 to 1, summing to 1.
    #[schema(value_type = HashMap<String, f64>)]
    pub weights: Weights,
    /// The oldest an agent's key should get, in days (1 to 3650); `null` for no
    /// rotation policy (the key hygiene factor then has no data).
    pub key_max_age_days: Option<u32>,
    /// A score falling below this (0 to 100) raises a `trust_below_threshold` alert;
    /// `null` for never.
    pub alert_below: Option<f64>,
    /// A score falling below this (0 to 100) suspends an active agent until an
    /// administrator reactivates it; `null` for never. At most `alert_below`.
    pub suspend_below: Option<f64>,
}

impl Default for TrustPolicy {
    /// The documented defaults (`docs/trust.md`): the default weights, keys rotated
    /// at least every 90 days, an alert below 60 and suspension below 40.
    fn default() -> TrustPolicy {
        TrustPolicy {
            weights: Weights::default(),
            key_max_age_days: Some(90),
            alert_below: Some(60.0),
            suspend_below: Some(40.0),
        }
    }
}

impl TrustPolicy {
    /// Refuses out-of-range values with a message naming the field.
    pub fn validate(self) -> Result<TrustPolicy, ApiError> {
        if let Some(days) = self.key_max_age_days {
            if days == 0 || days > MAX_KEY_AGE_DAYS {
                return Err(ApiError::invalid(format!(
                    "`key_max_age_days` must be from 1 to {MAX_KEY_AGE_DAYS}, or null for no rotation policy."
                )));
            }
        }
        for (name, value) in [
            ("alert_below", self.alert_below),
            ("suspend_below", self.suspend_below),
        ] {
            if value.is_some_and(|v| !(0.0..=100.0).contains(&v)) {
                return Err(ApiError::invalid(format!(
                    "`{name}` must be a number from 0 to 100, or null for never."
                )));
            }
        }
        if let (Some(alert), Some(suspend)) = (self.alert_below, self.suspend_below) {
            if suspend > alert {
                return Err(ApiError::invalid(
                    "`suspend_below` must not exceed `alert_below`: an agent is alerted on before it is suspended.",
                ));
            }
        }
        Ok(self)
    }

    /// The rotation policy in milliseconds.
    pub fn key_max_age_ms(&self) -> Option<NonZeroU64> {
        self.key_max_age_days
            .and_then(|d| NonZeroU64::new(u64::from(d) * DAY_MS as u64))
    }

    fn alert_crossed(&self, score: f64, previous: f64) -> Option<f64> {
        self.alert_below.filter(|&t| score < t && score < previous)
    }

    fn suspension_crossed(&self, score: f64, previous: f64) -> Option<f64> {
        self.suspend_below
            .filter(|&t| score < t && score < previous)
    }

    /// Whether `score` is below the alert threshold (shown on decisions).
    pub fn alerting(&self, score: f64) -> bool {
        self.alert_below.is_some_and(|t| score < t)
    }
}

/// `PUT /api/v1/organization/trust-policy`: the whole policy. Every field must be
/// present; `null` means the default weights, no rotation policy, or never.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicyRequest {
    /// Every factor exactly once, each weight from 0 to 1, summing to 1; `null` for
    /// the default weights.
    #[serde(deserialize_with = "required")]
    #[schema(value_type = Option<HashMap<String, f64>>)]
    pub weights: Option<Weights>,
    #[serde(deserialize_with = "required")]
    pub key_max_age_days: Option<u32>,
    #[serde(deserialize_with = "required")]
    pub alert_below: Option<f64>,
    #[serde(deserialize_with = "required")]
    pub suspend_below: Option<f64>,
}

/// A field that must be present but may be `null` (serde treats a field with its
/// own deserializer as required).
fn required<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}

impl TrustPolicyRequest {
    /// The validated policy.
    pub fn into_policy(self) -> Result<TrustPolicy, ApiError> {
        TrustPolicy {
            weights: self.weights.unwrap_or_default(),
            key_max_age_days: self.key_max_age_days,
            alert_below: self.alert_below,
            suspend_below: self.suspend_below,
        }
        .validate()
    }
}

/// A stored policy: `NULL` is the default; anything unreadable is a server fault
/// (only validated policies are ever written).
pub fn parse_policy(stored: Option<&str>) -> Result<TrustPolicy, ApiError> {
    match stored {
        None => Ok(TrustPolicy::default()),
        Some(json) => serde_json::from_str(json).map_err(ApiError::internal),
    }
}

/// The organization's trust policy.
pub fn policy(conn: &mut DbConn, org_id: &str) -> Result<TrustPolicy, ApiError> {
    let stored: Option<String> = organizations::table
        .filter(organizations::id.eq(org_id))
        .select(organizations::trust_policy)
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    parse_policy(stored.as_deref())
}

/// Replaces the organization's policy (audited with the old and new policy) and
/// recomputes every agent's score under it, thresholds included. Returns the policy.
pub fn set_policy(
    conn: &mut DbConn,
    org_id: &str,
    new: TrustPolicy,
    ctx: &AuditCtx<'_>,
) -> Result<TrustPolicy, ApiError> {
    let before = policy(conn, org_id)?;
    if before == new {
        return Ok(new);
    }
    let json = serde_json::to_string(&new).map_err(ApiError::internal)?;
    diesel::update(organizations::table.filter(organizations::id.eq(org_id)))
        .set(organizations::trust_policy.eq(json))
        .execute(conn)
        .map_err(ApiError::internal)?;
    ctx.record(
        conn,
        org_id,
        "org.trust_policy_changed",
        Some(("organization", org_id)),
        Outcome::Success,
        serde_json::json!({ "from": before, "to": new }),
    )?;
    let ids: Vec<String> = agents::table
        .filter(agents::org_id.eq(org_id))
        .filter(agents::status.ne("revoked"))
        .select(agents::id)
        .load(conn)
        .map_err(ApiError::internal)?;
    for id in ids {
        refresh(
            conn,
            org_id,
            &id,
            Cause::PolicyChanged,
            serde_json::json!({}),
            None,
            ctx,
        )?;
    }
    Ok(new)
}

/// What the model needs to know about an agent besides its events.
#[derive(Debug, Clone, Copy)]
pub struct AgentRef<'a> {
    pub id: &'a str,
    pub org_id: &'a str,
    pub key_id: &'a str,
    pub created_at: i64,
}

/// Alerts about the agent's own status or trust do not count against its score, so
/// the score does not feed on itself.
pub fn alert_counts(kind: AlertKind) -> bool {
    !matches!(
        kind,
        AlertKind::TrustBelowThreshold | AlertKind::AgentSuspended | AlertKind::AgentRevoked
    )
}

/// The model's inputs for `agents` as of `now`: each current key's creation time,
/// each agent's unresolved counted alerts by severity, and its organization's key
/// rotation policy. Two queries whatever the number of agents.
pub fn inputs(
    conn: &mut DbConn,
    agents_now: &[AgentRef<'_>],
    policies: &HashMap<String, TrustPolicy>,
    now: i64,
) -> Result<HashMap<String, TrustInputs>, ApiError> {
    use crate::alerts::schema::alerts as alerts_table;
    if agents_now.is_empty() {
        return Ok(HashMap::new());
    }
    let key_ids: Vec<&str> = agents_now.iter().map(|a| a.key_id).collect();
    let key_created: HashMap<String, i64> = agent_keys::table
        .filter(agent_keys::key_id.eq_any(&key_ids))
        .select((agent_keys::key_id, agent_keys::created_at))
        .load::<(String, i64)>(conn)
        .map_err(ApiError::internal)?
        .into_iter()
        .collect();
    let agent_ids: Vec<&str> = agents_now.iter().map(|a| a.id).collect();
    let excluded: Vec<&str> = AlertKind::ALL
        .iter()
        .filter(|k| !alert_counts(**k))
        .map(|k| k.as_str())
        .collect();
    let unresolved: Vec<(Option<String>, String)> = alerts_table::table
        .filter(alerts_table::agent_id.eq_any(&agent_ids))
        .filter(alerts_table::status.ne("resolved"))
        .filter(alerts_table::kind.ne_all(excluded))
        .select((alerts_table::agent_id, alerts_table::severity))
        .load(conn)
        .map_err(ApiError::internal)?;
    let mut open: HashMap<String, OpenAlerts> = HashMap::new();
    for (agent_id, severity) in unresolved {
        if let (Some(agent_id), Some(severity)) = (agent_id, Severity::parse(&severity)) {
            open.entry(agent_id).or_default().add(severity);
        }
    }
    Ok(agents_now
        .iter()
        .map(|a| {
            (
                a.id.to_owned(),
                TrustInputs {
                    now_ms: now,
                    agent_created_at_ms: a.created_at,
                    key_created_at_ms: key_created.get(a.key_id).copied().unwrap_or(a.created_at),
                    open_alerts: open.get(a.id).copied().unwrap_or_default(),
                    key_max_age_ms: policies.get(a.org_id).and_then(TrustPolicy::key_max_age_ms),
                },
            )
        })
        .collect())
}

/// A stored trust state, or a fresh one starting at the agent's creation.
pub fn stored_state(json: Option<&str>, created_at: i64) -> Result<TrustState, ApiError> {
    match json {
        Some(text) => serde_json::from_str(text).map_err(ApiError::internal),
        None => Ok(TrustState::new(created_at)),
    }
}

/// Why a score was recomputed; the history's `cause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The agent was registered: its starting score.
    Registered,
    /// Decisions about the agent's signed actions.
    Decisions,
    /// An administrator's attestation.
    Attestation,
    /// An alert about the agent was resolved.
    AlertResolved,
    /// The agent rotated its key.
    KeyRotated,
    /// The organization's trust policy changed.
    PolicyChanged,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Registered => "registered",
            Cause::Decisions => "decisions",
            Cause::Attestation => "attestation",
            Cause::AlertResolved => "alert_resolved",
            Cause::KeyRotated => "key_rotated",
            Cause::PolicyChanged => "policy_changed",
        }
    }

    fn parse(s: &str) -> Option<Cause> {
        [
            Cause::Registered,
            Cause::Decisions,
            Cause::Attestation,
            Cause::AlertResolved,
            Cause::KeyRotated,
            Cause::PolicyChanged,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// An agent whose trust state changed, to be scored and stored.
#[derive(Debug)]
pub struct Change<'a> {
    pub agent: AgentRef<'a>,
    /// The agent's status now (`active` agents may be suspended by the threshold).
    pub status: &'a str,
    /// The state with the change applied.
    pub state: TrustState,
    /// The stored score before the change.
    pub previous: f64,
    /// The score of the agent's latest history point, if any.
    pub recorded: Option<f64>,
    pub cause: Cause,
    /// What changed, as the history shows it.
    pub details: serde_json::Value,
    /// Always record a history point (an incident, an attestation, ...), not only
    /// when the score moved by [`HISTORY_MIN_CHANGE`].
    pub notable: bool,
    /// Decision counters to add (the decision writer's), and whether to mark the
    /// agent as seen now.
    pub allowed: i64,
    pub denied: i64,
    pub seen: bool,
    /// The agent has no `agent_stats` row yet (registration): insert it.
    pub new_row: bool,
}

/// What a committed change did.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub score: TrustScore,
    pub alerted: bool,
    pub suspended: bool,
}

/// Scores each change as of `now` under its organization's policy and stores it:
/// the score, confidence and state in `agent_stats` (with the decision counters),
/// a history point when warranted, and the thresholds' consequences when the score
/// fell below them: a `trust_below_threshold` alert, and for an active agent below
/// the suspension threshold, suspension (audited, alerted, visible as
/// `agent_suspended_low_trust` on its next decision).
pub fn commit(
    conn: &mut DbConn,
    changes: Vec<Change<'_>>,
    inputs: &HashMap<String, TrustInputs>,
    policies: &HashMap<String, TrustPolicy>,
    now: i64,
    request_id: Option<&str>,
) -> Result<HashMap<String, Committed>, ApiError> {
    let mut out = HashMap::with_capacity(changes.len());
    let mut rows = Vec::with_capacity(changes.len());
    for change in changes {
        let agent = change.agent;
        let Some(input) = inputs.get(agent.id) else {
            continue;
        };
        let policy = policies.get(agent.org_id).copied().unwrap_or_default();
        let score = trust::score(&change.state, input, &policy.weights);
        let alert = policy.alert_crossed(score.score, change.previous);
        let suspend = policy
            .suspension_crossed(score.score, change.previous)
            .filter(|_| change.status == "active");
        let record = change.notable
            || alert.is_some()
            || suspend.is_some()
            || change
                .recorded
                .is_none_or(|r| (score.score - r).abs() >= HISTORY_MIN_CHANGE);
        let state_json = serde_json::to_string(&change.state).map_err(ApiError::internal)?;
        let recorded_score = if record {
            Some(score.score)
        } else {
            change.recorded
        };
        rows.push(StatsUpdate {
            new_row: change.new_row,
            agent_id: agent.id.to_owned(),
            allowed: change.allowed,
            denied: change.denied,
            score: score.score,
            confidence: score.confidence,
            state: state_json,
            recorded: recorded_score,
            seen_at: change.seen.then_some(now),
        });

        let mut details = change.details;
        if let Some(threshold) = alert {
            alerts::raise(
                conn,
                &NewAlert {
                    org_id: agent.org_id,
                    agent_id: Some(agent.id),
                    kind: AlertKind::TrustBelowThreshold,
                    severity: Severity::Medium,
                    summary: &format!(
                        "trust score {:.1} fell below the alert threshold {threshold}",
                        score.score
                    ),
                    details: serde_json::json!({ "score": score.score, "threshold": threshold }),
                },
                now,
                request_id,
            )
            .map_err(ApiError::internal)?;
            details["alert_threshold"] = threshold.into();
        }
        let suspended = match suspend {
            Some(threshold) => {
                let done = suspend_for_trust(conn, agent, score.score, threshold, now, request_id)?;
                if done {
                    details["suspended_below"] = threshold.into();
                }
                done
            }
            None => false,
        };
        if record {
            let report = trust::evaluate(&change.state, input, &policy.weights);
            let contributions: serde_json::Map<String, serde_json::Value> = report
                .factors
                .iter()
                .map(|f| (f.factor.as_str().to_owned(), f.contribution.into()))
                .collect();
            diesel::insert_into(trust_history::table)
                .values((
                    trust_history::id.eq(uuid::Uuid::new_v4().to_string()),
                    trust_history::org_id.eq(agent.org_id),
                    trust_history::agent_id.eq(agent.id),
                    trust_history::recorded_at.eq(now),
                    trust_history::score.eq(score.score),
                    trust_history::confidence.eq(score.confidence),
                    trust_history::previous_score.eq(change.recorded),
                    trust_history::cause.eq(change.cause.as_str()),
                    trust_history::details.eq(details.to_string()),
                    trust_history::contributions
                        .eq(serde_json::Value::Object(contributions).to_string()),
                ))
                .execute(conn)
                .map_err(ApiError::internal)?;
        }
        out.insert(
            agent.id.to_owned(),
            Committed {
                score,
                alerted: alert.is_some(),
                suspended,
            },
        );
    }
    update_stats(conn, rows)?;
    Ok(out)
}

/// One agent's new trust columns and counter increments.
#[derive(Debug)]
struct StatsUpdate {
    /// No row yet: insert one (counters from zero).
    new_row: bool,
    agent_id: String,
    allowed: i64,
    denied: i64,
    score: f64,
    confidence: f64,
    state: String,
    recorded: Option<f64>,
    /// `last_seen_at` to set, if the agent was seen.
    seen_at: Option<i64>,
}

/// Stores `rows` (one per agent) in `agent_stats`. On PostgreSQL one statement for
/// all of them (the decision writer updates every agent of its batch, and each
/// statement is a round trip inside its transaction); on SQLite, in process, one
/// statement each.
fn update_stats(conn: &mut DbConn, rows: Vec<StatsUpdate>) -> Result<(), ApiError> {
    use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};
    let (new, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.new_row);
    for r in new {
        diesel::insert_into(agent_stats::table)
            .values((
                agent_stats::agent_id.eq(&r.agent_id),
                agent_stats::actions_allowed.eq(r.allowed),
                agent_stats::actions_denied.eq(r.denied),
                agent_stats::trust_score.eq(r.score),
                agent_stats::trust_confidence.eq(r.confidence),
                agent_stats::trust_state.eq(&r.state),
                agent_stats::trust_recorded_score.eq(r.recorded),
                agent_stats::last_seen_at.eq(r.seen_at),
            ))
            .execute(conn)
            .map_err(ApiError::internal)?;
    }
    if rows.is_empty() {
        return Ok(());
    }
    if let DbConn::Postgres(pg) = conn {
        debug_assert!(
            rows.iter()
                .map(|r| &r.agent_id)
                .collect::<std::collections::HashSet<_>>()
                .len()
                == rows.len(),
            "one row per agent"
        );
        let mut ids = Vec::with_capacity(rows.len());
        let (mut allowed, mut denied) = (Vec::new(), Vec::new());
        let (mut scores, mut confidences, mut states) = (Vec::new(), Vec::new(), Vec::new());
        let (mut recorded, mut seen) = (Vec::new(), Vec::new());
        for r in rows {
            ids.push(r.agent_id);
            allowed.push(r.allowed);
            denied.push(r.denied);
            scores.push(r.score);
            confidences.push(r.confidence);
            states.push(r.state);
            recorded.push(r.recorded);
            seen.push(r.seen_at);
        }
        diesel::sql_query(
            "UPDATE agent_stats AS s SET \
               actions_allowed = s.actions_allowed + v.allowed, \
               actions_denied = s.actions_denied + v.denied, \
               trust_score = v.score, trust_confidence = v.confidence, \
               trust_state = v.state, trust_recorded_score = v.recorded, \
               last_seen_at = COALESCE(v.seen_at, s.last_seen_at) \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::float8[], $5::float8[], \
                         $6::text[], $7::float8[], $8::bigint[]) \
               AS v(agent_id, allowed, denied, score, confidence, state, recorded, seen_at) \
             WHERE s.agent_id = v.agent_id",
        )
        .bind::<Array<Text>, _>(ids)
        .bind::<Array<BigInt>, _>(allowed)
        .bind::<Array<BigInt>, _>(denied)
        .bind::<Array<Double>, _>(scores)
        .bind::<Array<Double>, _>(confidences)
        .bind::<Array<Text>, _>(states)
        .bind::<Array<Nullable<Double>>, _>(recorded)
        .bind::<Array<Nullable<BigInt>>, _>(seen)
        .execute(pg)
        .map_err(ApiError::internal)?;
        return Ok(());
    }
    for r in rows {
        let stats = agent_stats::table.find(&r.agent_id);
        let trust_columns = (
            agent_stats::actions_allowed.eq(agent_stats::actions_allowed + r.allowed),
            agent_stats::actions_denied.eq(agent_stats::actions_denied + r.denied),
            agent_stats::trust_score.eq(r.score),
            agent_stats::trust_confidence.eq(r.confidence),
            agent_stats::trust_state.eq(r.state),
            agent_stats::trust_recorded_score.eq(r.recorded),
        );
        match r.seen_at {
            Some(now) => diesel::update(stats)
                .set((trust_columns, agent_stats::last_seen_at.eq(now)))
                .execute(conn),
            None => diesel::update(stats).set(trust_columns).execute(conn),
        }
        .map_err(ApiError::internal)?;
    }
    Ok(())
}

/// Suspends an active agent whose score fell below the suspension threshold:
/// audited (`agent.suspended` by the system, with the score and threshold) and
/// alerted. False if the agent was no longer active.
fn suspend_for_trust(
    conn: &mut DbConn,
    agent: AgentRef<'_>,
    score: f64,
    threshold: f64,
    now: i64,
    request_id: Option<&str>,
) -> Result<bool, ApiError> {
    let reason = format!("trust score {score:.1} fell below the suspension threshold {threshold}");
    let changed = diesel::update(
        agents::table
            .filter(agents::id.eq(agent.id))
            .filter(agents::status.eq("active")),
    )
    .set((
        agents::status.eq("suspended"),
        agents::status_reason.eq(&reason),
        agents::updated_at.eq(now),
    ))
    .execute(conn)
    .map_err(ApiError::internal)?;
    if changed != 1 {
        return Ok(false);
    }
    diesel::update(agent_stats::table.find(agent.id))
        .set(agent_stats::trust_suspended_at.eq(now))
        .execute(conn)
        .map_err(ApiError::internal)?;
    let details = serde_json::json!({
        "reason": "trust_below_threshold",
        "score": score,
        "threshold": threshold,
    });
    audit::append(
        conn,
        agent.org_id,
        &NewEvent {
            actor_type: ActorType::System,
            actor_id: None,
            action: "agent.suspended",
            target_type: Some("agent"),
            target_id: Some(agent.id),
            outcome: Outcome::Success,
            details: details.clone(),
            request_id,
        },
        now,
    )
    .map_err(ApiError::internal)?;
    alerts::raise(
        conn,
        &NewAlert {
            org_id: agent.org_id,
            agent_id: Some(agent.id),
            kind: AlertKind::AgentSuspended,
            severity: Severity::High,
            summary: &format!("agent suspended automatically: {reason}"),
            details,
        },
        now,
        request_id,
    )
    .map_err(ApiError::internal)?;
    Ok(true)
}

/// The stored trust facts of one agent.
struct Stored {
    key_id: String,
    created_at: i64,
    status: String,
    state: Option<String>,
    score: f64,
    recorded: Option<f64>,
    policy: Option<String>,
}

fn load(conn: &mut DbConn, org_id: &str, agent_id: &str) -> Result<Stored, ApiError> {
    #[allow(clippy::type_complexity)]
    let row: (
        String,
        i64,
        String,
        Option<String>,
        f64,
        Option<f64>,
        Option<String>,
    ) = agents::table
        .inner_join(agent_stats::table)
        .inner_join(organizations::table)
        .filter(agents::id.eq(agent_id))
        .filter(agents::org_id.eq(org_id))
        .select((
            agents::key_id,
            agents::created_at,
            agents::status,
            agent_stats::trust_state,
            agent_stats::trust_score,
            agent_stats::trust_recorded_score,
            organizations::trust_policy,
        ))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    let (key_id, created_at, status, state, score, recorded, policy) = row;
    Ok(Stored {
        key_id,
        created_at,
        status,
        state,
        score,
        recorded,
        policy,
    })
}

/// Recomputes one agent's score as of `ctx.now` after a change that is not a
/// decision (with `event` applied first, if any), and commits it like a decision
/// batch would: stored score, history point, thresholds.
pub fn refresh(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    cause: Cause,
    details: serde_json::Value,
    event: Option<TrustEvent>,
    ctx: &AuditCtx<'_>,
) -> Result<Committed, ApiError> {
    let now = ctx.now;
    let stored = load(conn, org_id, agent_id)?;
    let mut state = stored_state(stored.state.as_deref(), stored.created_at)?;
    if let Some(event) = event {
        state.apply(event, now);
    }
    let policies = HashMap::from([(org_id.to_owned(), parse_policy(stored.policy.as_deref())?)]);
    let agent = AgentRef {
        id: agent_id,
        org_id,
        key_id: &stored.key_id,
        created_at: stored.created_at,
    };
    let inputs = inputs(conn, &[agent], &policies, now)?;
    let committed = commit(
        conn,
        vec![Change {
            agent,
            status: &stored.status,
            state,
            previous: stored.score,
            recorded: stored.recorded,
            cause,
            details,
            notable: true,
            allowed: 0,
            denied: 0,
            seen: false,
            new_row: false,
        }],
        &inputs,
        &policies,
        now,
        ctx.request_id,
    )?;
    committed
        .get(agent_id)
        .copied()
        .ok_or_else(|| ApiError::internal("trust inputs missing"))
}

/// Starts a newly registered agent's trust: its `agent_stats` row with the model's
/// score for no history under the organization's policy, and the first history point.
pub fn start(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    key_id: &str,
    now: i64,
) -> Result<TrustScore, ApiError> {
    let policy = policy(conn, org_id)?;
    let state = TrustState::new(now);
    let input = TrustInputs {
        now_ms: now,
        agent_created_at_ms: now,
        key_created_at_ms: now,
        open_alerts: OpenAlerts::default(),
        key_max_age_ms: policy.key_max_age_ms(),
    };
    let score = trust::score(&state, &input, &policy.weights);
    let agent = AgentRef {
        id: agent_id,
        org_id,
        key_id,
        created_at: now,
    };
    commit(
        conn,
        vec![Change {
            agent,
            status: "pending",
            state,
            previous: score.score,
            recorded: None,
            cause: Cause::Registered,
            details: serde_json::json!({}),
            notable: true,
            allowed: 0,
            denied: 0,
            seen: false,
            new_row: true,
        }],
        &HashMap::from([(agent_id.to_owned(), input)]),
        &HashMap::from([(org_id.to_owned(), policy)]),
        now,
        None,
    )?;
    Ok(score)
}

/// The agent's trust report as of `now` (every factor with its value, weight,
/// contribution and reason), from its stored state; nothing is written.
pub fn report(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    now: i64,
) -> Result<TrustReport, ApiError> {
    let stored = load(conn, org_id, agent_id)?;
    let state = stored_state(stored.state.as_deref(), stored.created_at)?;
    let policy = parse_policy(stored.policy.as_deref())?;
    let policies = HashMap::from([(org_id.to_owned(), policy)]);
    let agent = AgentRef {
        id: agent_id,
        org_id,
        key_id: &stored.key_id,
        created_at: stored.created_at,
    };
    let inputs = inputs(conn, &[agent], &policies, now)?;
    let input = inputs
        .get(agent_id)
        .ok_or_else(|| ApiError::internal("trust inputs missing"))?;
    Ok(trust::evaluate(&state, input, &policy.weights))
}

/// An administrator's attestation: `value` from -1 (distrust) to 1 (vouch), with a
/// comment. Audited (`trust.attested`), applied as a trust event, recorded in the
/// history. A revoked agent cannot be attested.
pub fn attest(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    value: f64,
    comment: &str,
    ctx: &AuditCtx<'_>,
) -> Result<TrustReport, ApiError> {
    let value = Attestation::new(value).map_err(|_| {
        ApiError::invalid("`value` must be a number from -1 (distrust) to 1 (vouch).")
    })?;
    let comment = comment.trim();
    if comment.is_empty() || comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::invalid(format!(
            "`comment` must say why, in 1 to {MAX_COMMENT_CHARS} characters."
        )));
    }
    let status: String = agents::table
        .filter(agents::id.eq(agent_id))
        .filter(agents::org_id.eq(org_id))
        .select(agents::status)
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    if status == "revoked" {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            "The agent is revoked; revocation is final.",
        ));
    }
    let details = serde_json::json!({
        "value": value.get(),
        "comment": comment,
        "by": ctx.actor_id,
    });
    ctx.record(
        conn,
        org_id,
        "trust.attested",
        Some(("agent", agent_id)),
        Outcome::Success,
        details.clone(),
    )?;
    refresh(
        conn,
        org_id,
        agent_id,
        Cause::Attestation,
        details,
        Some(TrustEvent::Attestation { value }),
        ctx,
    )?;
    report(conn, org_id, agent_id, ctx.now)
}

/// Longest attestation comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;

/// One point of an agent's trust history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// When, RFC 3339.
    pub at: String,
    /// The score from then on, 0 to 100.
    pub score: f64,
    /// Its confidence, 0 to 1.
    pub confidence: f64,
    /// The score of the point before (absent for the first).
    pub previous_score: Option<f64>,
    /// `score - previous_score` (absent for the first).
    pub change: Option<f64>,
    /// What recomputed the score.
    pub cause: Cause,
    /// What happened: for decisions, the trust events by kind and how many decisions;
    /// for an attestation its value, comment and author; thresholds that fired.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Every factor's contribution to the score at this point, in points.
    #[schema(value_type = HashMap<String, f64>)]
    pub contributions: serde_json::Map<String, serde_json::Value>,
    /// The factors whose contribution moved by at least 0.01 points since the point
    /// before, largest move first, with the move.
    pub changed: Vec<FactorChange>,
    /// Pass as `before` to read the next (older) page.
    pub cursor: String,
}

/// How much one factor's contribution moved.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FactorChange {
    pub factor: Factor,
    /// In points of the score.
    pub change: f64,
}

/// Query of `GET /api/v1/agents/{id}/trust/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// The `cursor` of the last point of the previous page.
    pub before: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    pub points: Vec<HistoryPoint>,
    /// The cursor for the next (older) page, absent on the last page.
    pub next_before: Option<String>,
}

type HistoryRow = (String, i64, f64, f64, Option<f64>, String, String, String);

/// The agent's score over time, newest first, each point with what changed it.
pub fn history(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<HistoryPage, ApiError> {
    // The agent must be the organization's (404 otherwise, like every other read).
    agents::table
        .filter(agents::id.eq(agent_id))
        .filter(agents::org_id.eq(org_id))
        .select(agents::id)
        .first::<String>(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    let mut query = trust_history::table
        .filter(trust_history::agent_id.eq(agent_id))
        .filter(trust_history::org_id.eq(org_id))
        .order((trust_history::recorded_at.desc(), trust_history::id.desc()))
        .select((
            trust_history::id,
            trust_history::recorded_at,
            trust_history::score,
            trust_history::confidence,
            trust_history::previous_score,
            trust_history::cause,
            trust_history::details,
            trust_history::contributions,
        ))
        // One more than the page, to tell what changed at its oldest point.
        .limit(limit + 1)
        .into_boxed();
    if let Some(cursor) = before {
        let (at, id) = parse_cursor(cursor)?;
        query = query.filter(
            trust_history::recorded_at
                .lt(at)
                .or(trust_history::recorded_at
                    .eq(at)
                    .and(trust_history::id.lt(id))),
        );
    }
    let rows: Vec<HistoryRow> = query.load(conn).map_err(ApiError::internal)?;
    let parsed: Vec<(HistoryRow, serde_json::Map<String, serde_json::Value>)> = rows
        .into_iter()
        .map(|row| {
            let contributions = serde_json::from_str(&row.7).map_err(ApiError::internal)?;
            Ok((row, contributions))
        })
        .collect::<Result<_, ApiError>>()?;
    let mut points = Vec::with_capacity(parsed.len());
    for (i, (row, contributions)) in parsed.iter().enumerate().take(limit as usize) {
        let (id, at, score, confidence, previous_score, cause, details, _) = row;
        let older = parsed.get(i + 1).map(|(_, c)| c);
        let mut changed: Vec<FactorChange> = Factor::ALL
            .into_iter()
            .filter_map(|factor| {
                let now = contributions.get(factor.as_str())?.as_f64()?;
                let then = match older {
                    Some(o) => o.get(factor.as_str())?.as_f64()?,
                    None => return None,
                };
                let change = now - then;
                (change.abs() >= 0.01).then_some(FactorChange { factor, change })
            })
            .collect();
        changed.sort_by(|a, b| b.change.abs().total_cmp(&a.change.abs()));
        points.push(HistoryPoint {
            at: crate::clock::rfc3339(*at),
            score: *score,
            confidence: *confidence,
            previous_score: *previous_score,
            change: previous_score.map(|p| score - p),
            cause: Cause::parse(cause)
                .ok_or_else(|| ApiError::internal("unknown trust history cause"))?,
            details: serde_json::from_str(details).map_err(ApiError::internal)?,
            contributions: contributions.clone(),
            changed,
            cursor: format!("{at}.{id}"),
        });
    }
    let next_before = (parsed.len() as i64 > limit)
        .then(|| points.last().map(|p| p.cursor.clone()))
        .flatten();
    Ok(HistoryPage {
        points,
        next_before,
    })
}

fn parse_cursor(cursor: &str) -> Result<(i64, &str), ApiError> {
    cursor
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
        .filter(|(_, id)| !id.is_empty() && id.len() <= 64)
        .ok_or_else(|| ApiError::invalid("`before` is not a cursor from a previous page."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_validated() {
        assert!(TrustPolicy::default().validate().is_ok());
        let bad = [
            TrustPolicy {
                key_max_age_days: Some(0),
                ..TrustPolicy::default()
            },
            TrustPolicy {
                key_max_age_days: Some(MAX_KEY_AGE_DAYS + 1),
                ..TrustPolicy::default()
            },
            TrustPolicy {
                alert_below: Some(100.5),
                ..TrustPolicy::default()
            },
            TrustPolicy {
                suspend_below: Some(-1.0),
                ..TrustPolicy::default()
            },
            TrustPolicy {
                alert_below: Some(f64::NAN),
                ..TrustPolicy::default()
            },
            TrustPolicy {
                alert_below: Some(30.0),
                suspend_below: Some(31.0),
                ..TrustPolicy::default()
            },
        ];
        for policy in bad {
            assert!(policy.validate().is_err(), "{policy:?}");
        }
        let off = TrustPolicy {
            key_max_age_days: None,
            alert_below: None,
            suspend_below: None,
            ..TrustPolicy::default()
        };
        assert!(off.validate().is_ok());
    }

    #[test]
    fn every_request_field_is_required_and_weights_are_checked() {
        let full =
            r#"{"weights":null,"key_max_age_days":30,"alert_below":70,"suspend_below":null}"#;
        let request: TrustPolicyRequest = serde_json::from_str(full).unwrap();
        let policy = request.into_policy().unwrap();
        assert_eq!(policy.weights, Weights::default());
        assert_eq!(policy.key_max_age_days, Some(30));
        assert_eq!(policy.suspend_below, None);

        let missing = r#"{"weights":null,"key_max_age_days":30,"alert_below":70}"#;
        let err = serde_json::from_str::<TrustPolicyRequest>(missing).unwrap_err();
        assert!(err.to_string().contains("suspend_below"), "{err}");

        let unknown =
            r#"{"weights":null,"key_max_age_days":30,"alert_below":70,"suspend_below":null,"x":1}"#;
        assert!(serde_json::from_str::<TrustPolicyRequest>(unknown).is_err());

        let lopsided = r#"{"weights":{"verification":1.0},"key_max_age_days":null,"alert_below":null,"suspend_below":null}"#;
        assert!(serde_json::from_str::<TrustPolicyRequest>(lopsided).is_err());
    }

    #[test]
    fn stored_policies_round_trip() {
        let policy = TrustPolicy {
            key_max_age_days: None,
            alert_below: Some(55.5),
            ..TrustPolicy::default()
        };
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(parse_policy(Some(&json)).unwrap(), policy);
        assert_eq!(parse_policy(None).unwrap(), TrustPolicy::default());
        assert!(parse_policy(Some("{}")).is_err());
    }

    #[test]
    fn thresholds_fire_only_on_a_fall_below_them() {
        let policy = TrustPolicy::default();
        assert_eq!(policy.alert_crossed(59.0, 61.0), Some(60.0));
        assert_eq!(
            policy.alert_crossed(59.0, 59.5),
            Some(60.0),
            "still falling"
        );
        assert_eq!(policy.alert_crossed(59.0, 58.0), None, "rising");
        assert_eq!(policy.alert_crossed(59.0, 59.0), None, "unchanged");
        assert_eq!(policy.alert_crossed(61.0, 70.0), None, "above");
        assert_eq!(policy.suspension_crossed(39.0, 41.0), Some(40.0));
        assert_eq!(policy.suspension_crossed(39.0, 38.0), None);
        let off = TrustPolicy {
            alert_below: None,
            suspend_below: None,
            ..policy
        };
        assert_eq!(off.alert_crossed(0.0, 100.0), None);
        assert_eq!(off.suspension_crossed(0.0, 100.0), None);
    }

    /// docs/trust.md's claim behind the default thresholds: what anyone can do to an
    /// agent without its key (forged statements naming it; replays of an envelope it
    /// signed) cannot take a well-behaved agent below the default alert threshold, at
    /// its youngest, however much of it they do.
    #[test]
    fn third_parties_alone_cannot_reach_the_default_thresholds() {
        let policy = TrustPolicy::default();
        let t0 = 1_900_000_000_000;
        // With no action yet there is no envelope to replay: forgeries only.
        for good in [0, 1, 10, 100] {
            let mut state = TrustState::new(t0);
            let mut now = t0;
            for _ in 0..good {
                now += 1;
                state.apply(
                    TrustEvent::Allowed {
                        risk: crate::capabilities::RiskLevel::Low,
                    },
                    now,
                );
            }
            let mut open_alerts = OpenAlerts::default();
            for _ in 0..1000 {
                now += 1;
                if good > 0 {
                    state.apply(TrustEvent::Replay, now);
                }
                state.apply(TrustEvent::BadSignature, now);
            }
            if good > 0 {
                open_alerts.add(Severity::High); // replay
            }
            open_alerts.add(Severity::High); // bad-signature burst
            let input = TrustInputs {
                now_ms: now,
                agent_created_at_ms: t0,
                key_created_at_ms: t0,
                open_alerts,
                key_max_age_ms: policy.key_max_age_ms(),
            };
            let score = trust::score(&state, &input, &policy.weights).score;
            let alert = policy.alert_below.unwrap();
            assert!(score >= alert, "{good} good actions: {score}");
        }
    }

    #[test]
    fn cursors_are_checked() {
        assert_eq!(parse_cursor("12.abc").unwrap(), (12, "abc"));
        for bad in ["", "12", "x.abc", "12.", &format!("1.{}", "a".repeat(65))] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
    }
}
