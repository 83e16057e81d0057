//! Security alerts: things the service noticed about an organization's agents that a
//! person should look at (a capability violation, a replayed envelope, a burst of bad
//! signatures, ...), deduplicated while they are open.
//!
//! Every function takes the caller's organization id and filters by it, so another
//! organization's alert is indistinguishable from a missing one. Writes run inside the
//! caller's [`crate::db::write_transaction`] and audit themselves in it, so an alert
//! and its audit record commit together. Time is a parameter.
//!
//! This module must never delete an alert, never move one backwards through its states
//! (open → acknowledged → resolved), and never put secrets in `details`: alerts are
//! shown to everyone in the organization with `alerts:read`.

use base64::Engine;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::AuditCtx;
use crate::audit::{self, ActorType, NewEvent, Outcome};
use crate::db::DbConn;
use crate::error::{ApiError, ErrorCode};

/// The alerts table (kept here, not in `crate::schema`, like the audit tables).
/// Must match `migrations/*/2026-11-22-000004_alerts`.
pub(crate) mod schema {
    diesel::table! {
        alerts (id) {
            id -> Text,
            org_id -> Text,
            agent_id -> Nullable<Text>,
            kind -> Text,
            severity -> Text,
            status -> Text,
            summary -> Text,
            details -> Text,
            occurrences -> BigInt,
            first_seen_at -> BigInt,
            last_seen_at -> BigInt,
            acknowledged_at -> Nullable<BigInt>,
            acknowledged_by -> Nullable<Text>,
            resolved_at -> Nullable<BigInt>,
            resolved_by -> Nullable<Text>,
            resolution_note -> Nullable<Text>,
        }
    }
}

use schema::alerts;

/// The longest resolution note accepted, in characters.
pub const MAX_NOTE_CHARS: usize = 1000;

/// How often [`raise`] retries after losing a race for the same open alert.
const RAISE_ATTEMPTS: usize = 3;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An agent attempted an action its capabilities do not allow.
    CapabilityViolation,
    /// A signed envelope was presented again (nonce already used).
    Replay,
    /// Many envelopes with invalid signatures in a short time.
    BadSignatureBurst,
    /// An agent was revoked.
    AgentRevoked,
    /// An agent's key was rotated.
    KeyRotated,
    /// An agent's trust score fell below the organization's threshold.
    TrustBelowThreshold,
    /// An agent was suspended.
    AgentSuspended,
}

impl AlertKind {
    pub const ALL: &'static [AlertKind] = &[
        AlertKind::CapabilityViolation,
        AlertKind::Replay,
        AlertKind::BadSignatureBurst,
        AlertKind::AgentRevoked,
        AlertKind::KeyRotated,
        AlertKind::TrustBelowThreshold,
        AlertKind::AgentSuspended,
    ];

    /// The stored and API spelling, e.g. `capability_violation`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::CapabilityViolation => "capability_violation",
            AlertKind::Replay => "replay",
            AlertKind::BadSignatureBurst => "bad_signature_burst",
            AlertKind::AgentRevoked => "agent_revoked",
            AlertKind::KeyRotated => "key_rotated",
            AlertKind::TrustBelowThreshold => "trust_below_threshold",
            AlertKind::AgentSuspended => "agent_suspended",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

/// How urgent an alert is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: &'static [Severity] = &[
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The stored and API spelling: `low`, `medium`, `high`, `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// Where an alert is in its life: open → acknowledged → resolved, or open → resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub const ALL: &'static [AlertStatus] = &[
        AlertStatus::Open,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
    ];

    /// The stored and API spelling: `open`, `acknowledged`, `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertStatus> {
        AlertStatus::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// Something to alert about. `details` must not contain secrets.
#[derive(Debug, Clone)]
pub struct NewAlert<'a> {
    pub org_id: &'a str,
    /// The agent concerned, if any; part of the dedupe key.
    pub agent_id: Option<&'a str>,
    pub kind: AlertKind,
    pub severity: Severity,
    /// One sentence for people.
    pub summary: &'a str,
    /// Event-specific fields, shown as a JSON object.
    pub details: serde_json::Value,
}

/// An alert as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Alert {
    pub id: String,
    pub org_id: String,
    /// The agent concerned, if any.
    pub agent_id: Option<String>,
    pub kind: AlertKind,
    /// The severity of the first occurrence.
    pub severity: Severity,
    pub status: AlertStatus,
    /// The summary of the first occurrence.
    pub summary: String,
    /// The details of the latest occurrence.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// How many times this was raised while open.
    pub occurrences: i64,
    /// RFC 3339.
    pub first_seen_at: String,
    /// RFC 3339; the list is ordered by this, newest first.
    pub last_seen_at: String,
    /// RFC 3339.
    pub acknowledged_at: Option<String>,
    /// The user or API key id that acknowledged it (the audit record says which).
    pub acknowledged_by: Option<String>,
    /// RFC 3339.
    pub resolved_at: Option<String>,
    /// The user or API key id that resolved it (the audit record says which).
    pub resolved_by: Option<String>,
    pub resolution_note: Option<String>,
    /// Where this alert sits in the list order, for the next page's cursor.
    #[serde(skip)]
    position: AlertCursor,
}

impl Alert {
    /// The cursor that continues a listing after this alert.
    pub fn cursor(&self) -> AlertCursor {
        self.position.clone()
    }
}

/// The result of [`raise`].
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlert {
    pub alert: Alert,
    /// True when a new alert was opened; false when an open one absorbed this occurrence.
    pub created: bool,
}

/// A position in the alert list (newest `last_seen_at` first, then `id` descending).
///
/// Its text form is opaque to clients: base64url of `<last_seen_at ms>:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertCursor {
    last_seen_at: i64,
    id: String,
}

impl AlertCursor {
    /// Reads a cursor produced by [`AlertCursor::encode`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<AlertCursor> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (ms, id) = text.split_once(':')?;
        let last_seen_at = ms.parse::<i64>().ok()?;
        uuid::Uuid::parse_str(id).ok()?;
        Some(AlertCursor {
            last_seen_at,
            id: id.to_owned(),
        })
    }

    /// The opaque text form.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}:{}", self.last_seen_at, self.id))
    }
}

/// Which alerts [`list`] returns. Absent fields do not filter.
#[derive(Debug, Clone)]
pub struct AlertFilter {
    pub status: Option<AlertStatus>,
    pub kind: Option<AlertKind>,
    pub agent_id: Option<String>,
    pub severity: Option<Severity>,
    /// Only alerts last seen at or after this time (unix ms).
    pub since_ms: Option<i64>,
    /// Only alerts last seen before this time (unix ms).
    pub until_ms: Option<i64>,
    /// Continue after this position (the previous page's last alert's cursor).
    pub after: Option<AlertCursor>,
    /// Page size; below 1 yields an empty page.
    pub limit: i64,
}

impl Default for AlertFilter {
    fn default() -> Self {
        AlertFilter {
            status: None,
            kind: None,
            agent_id: None,
            severity: None,
            since_ms: None,
            until_ms: None,
            after: None,
            limit: 100,
        }
    }
}

/// A row as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = alerts)]
struct Row {
    id: String,
    org_id: String,
    agent_id: Option<String>,
    kind: String,
    severity: String,
    status: String,
    summary: String,
    details: String,
    occurrences: i64,
    first_seen_at: i64,
    last_seen_at: i64,
    acknowledged_at: Option<i64>,
    acknowledged_by: Option<String>,
    resolved_at: Option<i64>,
    resolved_by: Option<String>,
    resolution_note: Option<String>,
}

fn corrupt(what: &str) -> DieselError {
    DieselError::DeserializationError(format!("unknown {what} in the alerts table").into())
}

impl Row {
    fn into_alert(self) -> QueryResult<Alert> {
        let details = serde_json::from_str(&self.details)
            .map_err(|e| DieselError::DeserializationError(Box::new(e)))?;
        Ok(Alert {
            kind: AlertKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            severity: Severity::parse(&self.severity).ok_or_else(|| corrupt("severity"))?,
            status: AlertStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            position: AlertCursor {
                last_seen_at: self.last_seen_at,
                id: self.id.clone(),
            },
            id: self.id,
            org_id: self.org_id,
            agent_id: self.agent_id,
            summary: self.summary,
            details,
            occurrences: self.occurrences,
            first_seen_at: crate::clock::rfc3339(self.first_seen_at),
            last_seen_at: crate::clock::rfc3339(self.last_seen_at),
            acknowledged_at: self.acknowledged_at.map(crate::clock::rfc3339),
            acknowledged_by: self.acknowledged_by,
            resolved_at: self.resolved_at.map(crate::clock::rfc3339),
            resolved_by: self.resolved_by,
            resolution_note: self.resolution_note,
        })
    }
}

/// Records an occurrence as of `now_ms`.
///
/// If the organization has an *open* alert of the same kind for the same agent (no
/// agent counts as one value), that alert absorbs the occurrence: `occurrences` goes up
/// by one, `last_seen_at` becomes `now_ms` and `details` the new details (severity and
/// summary stay those of the first occurrence). Acknowledged and resolved alerts never
/// absorb occurrences; a new alert is opened instead, with `occurrences` 1 and an
/// `alert.raised` audit record (actor `system`) in the same transaction.
///
/// Must run inside the caller's [`crate::db::write_transaction`]. The common case (an
/// open alert exists) is a single `UPDATE`. Concurrent raisers of the same alert on
/// PostgreSQL are ordered by the unique index on open alerts: the loser retries
/// against the winner's alert.
pub fn raise(
    conn: &mut DbConn,
    alert: &NewAlert<'_>,
    now_ms: i64,
    request_id: Option<&str>,
) -> QueryResult<RaisedAlert> {
    let details = serde_json::to_string(&alert.details)
        .map_err(|e| DieselError::SerializationError(Box::new(e)))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        if let Some(row) = absorb(conn, alert, &details, now_ms)? {
            return Ok(RaisedAlert {
                alert: row.into_alert()?,
                created: false,
            });
        }
        let row = Row {
            id: uuid::Uuid::new_v4().to_string(),
            org_id: alert.org_id.to_owned(),
            agent_id: alert.agent_id.map(str::to_owned),
            kind: alert.kind.as_str().to_owned(),
            severity: alert.severity.as_str().to_owned(),
            status: AlertStatus::Open.as_str().to_owned(),
            summary: alert.summary.to_owned(),
            details: details.clone(),
            occurrences: 1,
            first_seen_at: now_ms,
            last_seen_at: now_ms,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution_note: None,
        };
        match insert_open(conn, &row) {
            Ok(()) => {}
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
                if attempt < RAISE_ATTEMPTS =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
        let event = NewEvent {
            actor_type: ActorType::System,
            actor_id: None,
            action: "alert.raised",
            target_type: Some("alert"),
            target_id: Some(&row.id),
            outcome: Outcome::Success,
            details: serde_json::json!({
                "kind": alert.kind.as_str(),
                "severity": alert.severity.as_str(),
                "agent_id": alert.agent_id,
                "summary": alert.summary,
            }),
            request_id,
        };
        audit::append(conn, alert.org_id, &event, now_ms)?;
        return Ok(RaisedAlert {
            alert: row.into_alert()?,
            created: true,
        });
    }
}

/// Adds an occurrence to the matching open alert; `None` when there is none.
fn absorb(
    conn: &mut DbConn,
    alert: &NewAlert<'_>,
    details: &str,
    now_ms: i64,
) -> QueryResult<Option<Row>> {
    let open = alerts::table
        .filter(alerts::org_id.eq(alert.org_id))
        .filter(alerts::kind.eq(alert.kind.as_str()))
        .filter(alerts::status.eq(AlertStatus::Open.as_str()));
    let changes = (
        alerts::occurrences.eq(alerts::occurrences + 1_i64),
        alerts::last_seen_at.eq(now_ms),
        alerts::details.eq(details),
    );
    let rows: Vec<Row> = match alert.agent_id {
        Some(agent) => diesel::update(open.filter(alerts::agent_id.eq(agent)))
            .set(changes)
            .returning(alerts::all_columns)
            .get_results(conn)?,
        None => diesel::update(open.filter(alerts::agent_id.is_null()))
            .set(changes)
            .returning(alerts::all_columns)
            .get_results(conn)?,
    };
    // The unique index allows at most one open alert per key.
    Ok(rows.into_iter().next())
}

/// Inserts a new open alert. A unique violation means another transaction opened the
/// same alert first; the caller's transaction stays usable.
fn insert_open(conn: &mut DbConn, row: &Row) -> QueryResult<()> {
    let insert = |conn: &mut DbConn| {
        diesel::insert_into(alerts::table)
            .values(row)
            .execute(conn)
            .map(|_| ())
    };
    match conn {
        // `BEGIN IMMEDIATE` serializes writers: nobody can open the same alert meanwhile.
        DbConn::Sqlite(_) => insert(conn),
        // A failed statement aborts a PostgreSQL transaction; a savepoint contains it.
        DbConn::Postgres(_) => conn.transaction(insert),
    }
}

/// At most `filter.limit` of the organization's alerts matching `filter`, most recently
/// seen first (`last_seen_at` descending, then `id` descending). Pass the last alert's
/// [`Alert::cursor`] as `filter.after` for the next page.
pub fn list(conn: &mut DbConn, org_id: &str, filter: &AlertFilter) -> QueryResult<Vec<Alert>> {
    if filter.limit < 1 {
        return Ok(Vec::new());
    }
    let mut query = alerts::table.filter(alerts::org_id.eq(org_id)).into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(alerts::status.eq(status.as_str()));
    }
    if let Some(kind) = filter.kind {
        query = query.filter(alerts::kind.eq(kind.as_str()));
    }
    if let Some(agent) = &filter.agent_id {
        query = query.filter(alerts::agent_id.eq(agent));
    }
    if let Some(severity) = filter.severity {
        query = query.filter(alerts::severity.eq(severity.as_str()));
    }
    if let Some(since) = filter.since_ms {
        query = query.filter(alerts::last_seen_at.ge(since));
    }
    if let Some(until) = filter.until_ms {
        query = query.filter(alerts::last_seen_at.lt(until));
    }
    if let Some(after) = &filter.after {
        query = query.filter(
            alerts::last_seen_at
                .lt(after.last_seen_at)
                .or(alerts::last_seen_at
                    .eq(after.last_seen_at)
                    .and(alerts::id.lt(&after.id))),
        );
    }
    query
        .order((alerts::last_seen_at.desc(), alerts::id.desc()))
        .limit(filter.limit)
        .select(Row::as_select())
        .load(conn)?
        .into_iter()
        .map(Row::into_alert)
        .collect()
}

/// The organization's alert `id`; `None` when it has no such alert.
pub fn get(conn: &mut DbConn, org_id: &str, id: &str) -> QueryResult<Option<Alert>> {
    alerts::table
        .filter(alerts::org_id.eq(org_id))
        .filter(alerts::id.eq(id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .map(Row::into_alert)
        .transpose()
}

fn resolved_error(action: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidState,
        format!("This alert is resolved; it cannot be {action}."),
    )
}

/// Marks an open alert acknowledged by the caller and audits it (`alert.acknowledged`).
/// Acknowledging an acknowledged alert changes nothing and returns it; a resolved one
/// is `invalid_state`; another organization's or an unknown id is `not_found`.
pub fn acknowledge(
    conn: &mut DbConn,
    org_id: &str,
    id: &str,
    ctx: &AuditCtx<'_>,
) -> Result<Alert, ApiError> {
    let updated: Option<Row> = diesel::update(
        alerts::table
            .filter(alerts::org_id.eq(org_id))
            .filter(alerts::id.eq(id))
            .filter(alerts::status.eq(AlertStatus::Open.as_str())),
    )
    .set((
        alerts::status.eq(AlertStatus::Acknowledged.as_str()),
        alerts::acknowledged_at.eq(ctx.now),
        alerts::acknowledged_by.eq(ctx.actor_id),
    ))
    .returning(alerts::all_columns)
    .get_result(conn)
    .optional()
    .map_err(ApiError::internal)?;
    let Some(row) = updated else {
        return match get(conn, org_id, id).map_err(ApiError::internal)? {
            None => Err(ApiError::not_found()),
            Some(alert) if alert.status == AlertStatus::Acknowledged => Ok(alert),
            Some(_) => Err(resolved_error("acknowledged")),
        };
    };
    let alert = row.into_alert().map_err(ApiError::internal)?;
    ctx.record(
        conn,
        org_id,
        "alert.acknowledged",
        Some(("alert", &alert.id)),
        Outcome::Success,
        serde_json::json!({ "kind": alert.kind.as_str(), "agent_id": alert.agent_id }),
    )?;
    Ok(alert)
}

/// Resolves an open or acknowledged alert with an optional note (at most
/// [`MAX_NOTE_CHARS`] characters; blank counts as none) and audits it
/// (`alert.resolved`). Resolving a resolved alert is `invalid_state`; another
/// organization's or an unknown id is `not_found`.
pub fn resolve(
    conn: &mut DbConn,
    org_id: &str,
    id: &str,
    note: Option<&str>,
    ctx: &AuditCtx<'_>,
) -> Result<Alert, ApiError> {
    let note = note.map(str::trim).filter(|n| !n.is_empty());
    if note.is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS) {
        return Err(ApiError::invalid(format!(
            "`note` must be at most {MAX_NOTE_CHARS} characters."
        )));
    }
    let updated: Option<Row> = diesel::update(
        alerts::table
            .filter(alerts::org_id.eq(org_id))
            .filter(alerts::id.eq(id))
            .filter(alerts::status.ne(AlertStatus::Resolved.as_str())),
    )
    .set((
        alerts::status.eq(AlertStatus::Resolved.as_str()),
        alerts::resolved_at.eq(ctx.now),
        alerts::resolved_by.eq(ctx.actor_id),
        alerts::resolution_note.eq(note),
    ))
    .returning(alerts::all_columns)
    .get_result(conn)
    .optional()
    .map_err(ApiError::internal)?;
    let Some(row) = updated else {
        return match get(conn, org_id, id).map_err(ApiError::internal)? {
            None => Err(ApiError::not_found()),
            Some(_) => Err(resolved_error("resolved again")),
        };
    };
    let alert = row.into_alert().map_err(ApiError::internal)?;
    ctx.record(
        conn,
        org_id,
        "alert.resolved",
        Some(("alert", &alert.id)),
        Outcome::Success,
        serde_json::json!({
            "kind": alert.kind.as_str(),
            "agent_id": alert.agent_id,
            "was_acknowledged": alert.acknowledged_at.is_some(),
            "note": note,
        }),
    )?;
    Ok(alert)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::db::testing::TestDb;

    impl TestDb {
        fn raise(&self, alert: &NewAlert<'_>, now: i64) -> RaisedAlert {
            crate::db::write_transaction(&mut self.conn(), |conn| {
                raise(conn, alert, now, Some("req-1"))
            })
            .unwrap()
        }

        fn list(&self, org: &str, filter: &AlertFilter) -> Vec<Alert> {
            list(&mut self.conn(), org, filter).unwrap()
        }

        fn acknowledge(&self, org: &str, id: &str, now: i64) -> Result<Alert, ApiError> {
            crate::db::write_transaction(&mut self.conn(), |conn| {
                acknowledge(conn, org, id, &ctx(now))
            })
        }

        fn resolve(
            &self,
            org: &str,
            id: &str,
            note: Option<&str>,
            now: i64,
        ) -> Result<Alert, ApiError> {
            crate::db::write_transaction(&mut self.conn(), |conn| {
                resolve(conn, org, id, note, &ctx(now))
            })
        }

        /// The organization's audit actions, oldest first.
        fn audit_actions(&self, org: &str) -> Vec<audit::AuditRecord> {
            audit::list(&mut self.conn(), org, None, 500).unwrap()
        }
    }

    const AGENT_A: &str = "0b0e7c5e-8b65-4e38-9f53-5a3a8f0c0001";
    const AGENT_B: &str = "0b0e7c5e-8b65-4e38-9f53-5a3a8f0c0002";

    fn ctx(now: i64) -> AuditCtx<'static> {
        AuditCtx {
            actor_type: ActorType::User,
            actor_id: Some("user-1"),
            request_id: Some("req-2"),
            now,
        }
    }

    fn new_alert<'a>(org: &'a str, agent: Option<&'a str>, kind: AlertKind) -> NewAlert<'a> {
        NewAlert {
            org_id: org,
            agent_id: agent,
            kind,
            severity: Severity::High,
            summary: "An agent did something it may not do.",
            details: json!({ "action": "payments.send", "n": 1 }),
        }
    }

    macro_rules! both_backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $( #[test] fn $name() { super::$name(super::TestDb::new(crate::db::Backend::Sqlite)) } )*
            }
            mod postgres {
                $( #[test] fn $name() { super::$name(super::TestDb::new(crate::db::Backend::Postgres)) } )*
            }
        };
    }

    both_backends!(
        raise_opens_then_dedupes_open_alerts,
        acknowledged_and_resolved_alerts_do_not_absorb,
        list_filters_and_pages,
        state_machine,
        alerts_are_scoped_to_their_organization,
        concurrent_raises_open_one_alert,
        a_raise_waiting_on_an_uncommitted_one_absorbs_into_it,
    );

    /// The second raiser runs while the first one's new alert is uncommitted (on
    /// PostgreSQL its insert waits on the unique index, fails once the first commits,
    /// and retries; on SQLite it waits for the write lock) and must not fail.
    fn a_raise_waiting_on_an_uncommitted_one_absorbs_into_it(t: TestDb) {
        let org = t.org();
        let t = std::sync::Arc::new(t);
        let (raised_tx, raised_rx) = std::sync::mpsc::channel();
        let (commit_tx, commit_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let (t, org) = (t.clone(), org.clone());
            std::thread::spawn(move || {
                crate::db::write_transaction(&mut t.conn(), |conn| {
                    let raised =
                        raise(conn, &new_alert(&org, None, AlertKind::Replay), 1_000, None)?;
                    raised_tx.send(()).unwrap();
                    commit_rx.recv().unwrap();
                    Ok::<_, DieselError>(raised)
                })
                .unwrap()
            })
        };
        raised_rx.recv().unwrap();
        let second = {
            let (t, org) = (t.clone(), org.clone());
            std::thread::spawn(move || {
                crate::db::write_transaction(&mut t.conn(), |conn| {
                    let raised =
                        raise(conn, &new_alert(&org, None, AlertKind::Replay), 2_000, None)?;
                    // The transaction is still usable after the lost race.
                    audit::append(
                        conn,
                        &org,
                        &NewEvent {
                            actor_type: ActorType::System,
                            actor_id: None,
                            action: "test.after_race",
                            target_type: None,
                            target_id: None,
                            outcome: Outcome::Success,
                            details: json!({}),
                            request_id: None,
                        },
                        2_000,
                    )?;
                    Ok::<_, DieselError>(raised)
                })
                .unwrap()
            })
        };
        // Give the second raiser time to block behind the first.
        std::thread::sleep(std::time::Duration::from_millis(300));
        commit_tx.send(()).unwrap();
        let first = first.join().unwrap();
        let second = second.join().unwrap();
        assert!(first.created);
        assert!(!second.created);
        assert_eq!(second.alert.id, first.alert.id);
        assert_eq!(second.alert.occurrences, 2);
        let actions: Vec<String> = t
            .audit_actions(&org)
            .into_iter()
            .map(|r| r.action)
            .collect();
        assert_eq!(actions, ["alert.raised", "test.after_race"]);
    }

    fn raise_opens_then_dedupes_open_alerts(t: TestDb) {
        let org = t.org();
        let first = t.raise(
            &new_alert(&org, Some(AGENT_A), AlertKind::CapabilityViolation),
            1_000,
        );
        assert!(first.created);
        let a = &first.alert;
        assert_eq!(a.org_id, org);
        assert_eq!(a.agent_id.as_deref(), Some(AGENT_A));
        assert_eq!(
            (a.kind, a.severity, a.status),
            (
                AlertKind::CapabilityViolation,
                Severity::High,
                AlertStatus::Open
            )
        );
        assert_eq!(a.occurrences, 1);
        assert_eq!(a.first_seen_at, crate::clock::rfc3339(1_000));
        assert_eq!(a.last_seen_at, a.first_seen_at);
        assert_eq!(a.acknowledged_at, None);
        assert_eq!(a.details, json!({ "action": "payments.send", "n": 1 }));

        // The new alert is audited, by the system, in the same transaction.
        let records = t.audit_actions(&org);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.action, "alert.raised");
        assert_eq!(r.actor_type, "system");
        assert_eq!(r.target_type.as_deref(), Some("alert"));
        assert_eq!(r.target_id.as_deref(), Some(a.id.as_str()));
        assert_eq!(r.request_id.as_deref(), Some("req-1"));
        assert_eq!(
            r.details.value(),
            json!({
                "kind": "capability_violation",
                "severity": "high",
                "agent_id": AGENT_A,
                "summary": "An agent did something it may not do.",
            })
        );

        // The same key while open: absorbed; details replaced; severity and summary kept.
        let mut again = new_alert(&org, Some(AGENT_A), AlertKind::CapabilityViolation);
        again.details = json!({ "action": "files.delete" });
        again.severity = Severity::Low;
        again.summary = "something else";
        let second = t.raise(&again, 2_500);
        assert!(!second.created);
        let b = &second.alert;
        assert_eq!(b.id, a.id);
        assert_eq!(b.occurrences, 2);
        assert_eq!(b.first_seen_at, crate::clock::rfc3339(1_000));
        assert_eq!(b.last_seen_at, crate::clock::rfc3339(2_500));
        assert_eq!(b.details, json!({ "action": "files.delete" }));
        assert_eq!(b.severity, Severity::High);
        assert_eq!(b.summary, a.summary);
        assert_eq!(t.raise(&again, 3_000).alert.occurrences, 3);
        // Absorbed occurrences are not audited one by one.
        assert_eq!(t.audit_actions(&org).len(), 1);

        // Another agent, another kind, or no agent at all: separate alerts.
        let other_agent = t.raise(
            &new_alert(&org, Some(AGENT_B), AlertKind::CapabilityViolation),
            4_000,
        );
        let other_kind = t.raise(&new_alert(&org, Some(AGENT_A), AlertKind::Replay), 4_000);
        let no_agent = t.raise(
            &new_alert(&org, None, AlertKind::CapabilityViolation),
            4_000,
        );
        for raised in [&other_agent, &other_kind, &no_agent] {
            assert!(raised.created);
            assert_ne!(raised.alert.id, a.id);
        }
        // Alerts without an agent dedupe among themselves.
        let no_agent_again = t.raise(
            &new_alert(&org, None, AlertKind::CapabilityViolation),
            5_000,
        );
        assert!(!no_agent_again.created);
        assert_eq!(no_agent_again.alert.id, no_agent.alert.id);
        assert_eq!(no_agent_again.alert.occurrences, 2);

        assert_eq!(t.list(&org, &AlertFilter::default()).len(), 4);
        assert_eq!(t.audit_actions(&org).len(), 4);
        assert!(audit::verify(&mut t.conn(), &org).unwrap().valid);
    }

    fn acknowledged_and_resolved_alerts_do_not_absorb(t: TestDb) {
        let org = t.org();
        let key = new_alert(&org, Some(AGENT_A), AlertKind::Replay);
        let first = t.raise(&key, 1_000).alert;
        let resolved = t.resolve(&org, &first.id, None, 1_500).unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved);

        let second = t.raise(&key, 2_000);
        assert!(second.created);
        assert_ne!(second.alert.id, first.id);
        assert_eq!(second.alert.occurrences, 1);
        let old = get(&mut t.conn(), &org, &first.id).unwrap().unwrap();
        assert_eq!((old.status, old.occurrences), (AlertStatus::Resolved, 1));

        // Acknowledged: a person has seen it; new occurrences open a new alert.
        t.acknowledge(&org, &second.alert.id, 2_500).unwrap();
        let third = t.raise(&key, 3_000);
        assert!(third.created);
        assert_ne!(third.alert.id, second.alert.id);
        let acked = get(&mut t.conn(), &org, &second.alert.id).unwrap().unwrap();
        assert_eq!(
            (acked.status, acked.occurrences),
            (AlertStatus::Acknowledged, 1)
        );
        // The newest open alert is the one that absorbs.
        let fourth = t.raise(&key, 4_000);
        assert!(!fourth.created);
        assert_eq!(fourth.alert.id, third.alert.id);
    }

    fn list_filters_and_pages(t: TestDb) {
        let org = t.org();
        let raise_at = |agent, kind, severity, now| {
            let mut a = new_alert(&org, agent, kind);
            a.severity = severity;
            t.raise(&a, now).alert
        };
        raise_at(
            Some(AGENT_A),
            AlertKind::CapabilityViolation,
            Severity::High,
            1_000,
        );
        let a2 = raise_at(Some(AGENT_B), AlertKind::Replay, Severity::Critical, 2_000);
        let a3 = raise_at(None, AlertKind::BadSignatureBurst, Severity::Medium, 3_000);
        let a4 = raise_at(Some(AGENT_A), AlertKind::KeyRotated, Severity::Low, 3_000);
        let a5 = raise_at(
            Some(AGENT_B),
            AlertKind::AgentSuspended,
            Severity::High,
            3_000,
        );
        let a6 = raise_at(
            Some(AGENT_A),
            AlertKind::AgentRevoked,
            Severity::High,
            5_000,
        );
        t.acknowledge(&org, &a2.id, 6_000).unwrap();
        t.resolve(&org, &a6.id, Some("rotated"), 6_000).unwrap();
        // A new occurrence moves a1 to the top.
        let a1 = t
            .raise(
                &new_alert(&org, Some(AGENT_A), AlertKind::CapabilityViolation),
                7_000,
            )
            .alert;

        let ids = |alerts: &[Alert]| alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
        let all = t.list(&org, &AlertFilter::default());
        // Newest first; the three at 3_000 by id descending.
        let mut tied = vec![a3.id.clone(), a4.id.clone(), a5.id.clone()];
        tied.sort();
        tied.reverse();
        let mut expected = vec![a1.id.clone(), a6.id.clone()];
        expected.extend(tied);
        expected.push(a2.id.clone());
        assert_eq!(ids(&all), expected);

        let filtered = |f: AlertFilter| ids(&t.list(&org, &f));
        assert_eq!(
            filtered(AlertFilter {
                status: Some(AlertStatus::Acknowledged),
                ..AlertFilter::default()
            }),
            [a2.id.as_str()]
        );
        assert_eq!(
            filtered(AlertFilter {
                status: Some(AlertStatus::Open),
                ..AlertFilter::default()
            })
            .len(),
            4
        );
        assert_eq!(
            filtered(AlertFilter {
                kind: Some(AlertKind::KeyRotated),
                ..AlertFilter::default()
            }),
            [a4.id.as_str()]
        );
        assert_eq!(
            filtered(AlertFilter {
                agent_id: Some(AGENT_A.to_owned()),
                ..AlertFilter::default()
            }),
            [a1.id.clone(), a6.id.clone(), a4.id.clone()]
        );
        assert_eq!(
            filtered(AlertFilter {
                severity: Some(Severity::High),
                status: Some(AlertStatus::Open),
                ..AlertFilter::default()
            }),
            [a1.id.clone(), a5.id.clone()]
        );
        // since is inclusive, until exclusive, both on last_seen_at.
        let window = filtered(AlertFilter {
            since_ms: Some(2_000),
            until_ms: Some(5_000),
            ..AlertFilter::default()
        });
        assert_eq!(window.len(), 4);
        assert!(window.contains(&a2.id) && !window.contains(&a6.id));
        assert!(filtered(AlertFilter {
            agent_id: Some(AGENT_B.to_owned()),
            kind: Some(AlertKind::KeyRotated),
            ..AlertFilter::default()
        })
        .is_empty());

        // Pages of two follow the same order, without gaps or repeats.
        for size in 1..=4 {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let page = t.list(
                    &org,
                    &AlertFilter {
                        after: after.clone(),
                        limit: size,
                        ..AlertFilter::default()
                    },
                );
                assert!(page.len() as i64 <= size);
                let Some(last) = page.last() else { break };
                after = Some(AlertCursor::parse(&last.cursor().encode()).unwrap());
                seen.extend(ids(&page));
            }
            assert_eq!(seen, expected, "page size {size}");
        }
        // Paging composes with filters.
        let page = t.list(
            &org,
            &AlertFilter {
                agent_id: Some(AGENT_A.to_owned()),
                after: Some(a6.cursor()),
                ..AlertFilter::default()
            },
        );
        assert_eq!(ids(&page), [a4.id.as_str()]);
        assert!(t
            .list(
                &org,
                &AlertFilter {
                    limit: 0,
                    ..AlertFilter::default()
                }
            )
            .is_empty());
    }

    fn state_machine(t: TestDb) {
        let org = t.org();
        let raise_one = |kind| t.raise(&new_alert(&org, Some(AGENT_A), kind), 1_000).alert;

        // open → acknowledged → resolved
        let a = raise_one(AlertKind::CapabilityViolation);
        let acked = t.acknowledge(&org, &a.id, 2_000).unwrap();
        assert_eq!(acked.status, AlertStatus::Acknowledged);
        assert_eq!(acked.acknowledged_at, Some(crate::clock::rfc3339(2_000)));
        assert_eq!(acked.acknowledged_by.as_deref(), Some("user-1"));
        // Acknowledging again is harmless and changes nothing.
        assert_eq!(t.acknowledge(&org, &a.id, 2_500).unwrap(), acked);
        let resolved = t
            .resolve(&org, &a.id, Some("  key rotated, agent fixed  "), 3_000)
            .unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.resolved_at, Some(crate::clock::rfc3339(3_000)));
        assert_eq!(resolved.resolved_by.as_deref(), Some("user-1"));
        assert_eq!(
            resolved.resolution_note.as_deref(),
            Some("key rotated, agent fixed")
        );
        assert_eq!(resolved.acknowledged_at, acked.acknowledged_at);

        // resolved is final
        for err in [
            t.resolve(&org, &a.id, None, 4_000).unwrap_err(),
            t.acknowledge(&org, &a.id, 4_000).unwrap_err(),
        ] {
            assert_eq!(err.code(), ErrorCode::InvalidState);
        }
        assert_eq!(get(&mut t.conn(), &org, &a.id).unwrap().unwrap(), resolved);

        // open → resolved, blank note is no note
        let b = raise_one(AlertKind::Replay);
        let resolved_b = t.resolve(&org, &b.id, Some("   "), 5_000).unwrap();
        assert_eq!(resolved_b.status, AlertStatus::Resolved);
        assert_eq!(resolved_b.resolution_note, None);
        assert_eq!(resolved_b.acknowledged_at, None);

        // a note that is too long changes nothing
        let c = raise_one(AlertKind::KeyRotated);
        let long = "x".repeat(MAX_NOTE_CHARS + 1);
        let err = t.resolve(&org, &c.id, Some(&long), 6_000).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert_eq!(
            get(&mut t.conn(), &org, &c.id).unwrap().unwrap().status,
            AlertStatus::Open
        );
        let exact = "é".repeat(MAX_NOTE_CHARS);
        assert_eq!(
            t.resolve(&org, &c.id, Some(&exact), 6_000)
                .unwrap()
                .resolution_note
                .as_deref(),
            Some(exact.as_str())
        );

        // Each change is audited once, by the caller.
        let records = t.audit_actions(&org);
        let changes: Vec<(&str, &str)> = records
            .iter()
            .filter(|r| r.action != "alert.raised")
            .map(|r| (r.action.as_str(), r.target_id.as_deref().unwrap()))
            .collect();
        assert_eq!(
            changes,
            [
                ("alert.acknowledged", a.id.as_str()),
                ("alert.resolved", a.id.as_str()),
                ("alert.resolved", b.id.as_str()),
                ("alert.resolved", c.id.as_str()),
            ]
        );
        let resolved_record = records
            .iter()
            .find(|r| r.action == "alert.resolved")
            .unwrap();
        assert_eq!(resolved_record.actor_type, "user");
        assert_eq!(resolved_record.actor_id.as_deref(), Some("user-1"));
        assert_eq!(resolved_record.request_id.as_deref(), Some("req-2"));
        assert_eq!(
            resolved_record.details.value(),
            json!({
                "kind": "capability_violation",
                "agent_id": AGENT_A,
                "was_acknowledged": true,
                "note": "key rotated, agent fixed",
            })
        );
        assert!(audit::verify(&mut t.conn(), &org).unwrap().valid);
    }

    fn alerts_are_scoped_to_their_organization(t: TestDb) {
        let mine = t.org();
        let theirs = t.org();
        let a = t
            .raise(&new_alert(&mine, Some(AGENT_A), AlertKind::Replay), 1_000)
            .alert;
        // The same key in another organization is another alert.
        let b = t.raise(&new_alert(&theirs, Some(AGENT_A), AlertKind::Replay), 1_000);
        assert!(b.created);
        assert_ne!(b.alert.id, a.id);

        assert!(get(&mut t.conn(), &theirs, &a.id).unwrap().is_none());
        assert!(get(&mut t.conn(), &mine, "not-an-id").unwrap().is_none());
        for err in [
            t.acknowledge(&theirs, &a.id, 2_000).unwrap_err(),
            t.resolve(&theirs, &a.id, None, 2_000).unwrap_err(),
            t.acknowledge(&mine, &uuid::Uuid::new_v4().to_string(), 2_000)
                .unwrap_err(),
        ] {
            assert_eq!(err.code(), ErrorCode::NotFound);
        }
        assert_eq!(
            get(&mut t.conn(), &mine, &a.id).unwrap().unwrap().status,
            AlertStatus::Open
        );
        let listed = t.list(&theirs, &AlertFilter::default());
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, b.alert.id);
        // Nothing of the refused attempts reached either audit log.
        assert_eq!(t.audit_actions(&mine).len(), 1);
        assert_eq!(t.audit_actions(&theirs).len(), 1);
    }

    fn concurrent_raises_open_one_alert(t: TestDb) {
        const THREADS: usize = 6;
        const EACH: i64 = 10;
        let org = t.org();
        let t = std::sync::Arc::new(t);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|w| {
                let (t, org, barrier) = (t.clone(), org.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut conn = t.conn();
                    barrier.wait();
                    let mut created = 0;
                    for i in 0..EACH {
                        let raised = crate::db::write_transaction(&mut conn, |conn| {
                            raise(
                                conn,
                                &new_alert(&org, Some(AGENT_A), AlertKind::BadSignatureBurst),
                                (w as i64) * 100 + i,
                                None,
                            )
                        })
                        .unwrap();
                        created += usize::from(raised.created);
                    }
                    created
                })
            })
            .collect();
        let created: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(created, 1);
        let all = t.list(&org, &AlertFilter::default());
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].occurrences, THREADS as i64 * EACH);
        assert_eq!(t.audit_actions(&org).len(), 1);
        assert!(audit::verify(&mut t.conn(), &org).unwrap().valid);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let cursor = AlertCursor {
            last_seen_at: 1_764_000_000_123,
            id: "0b0e7c5e-8b65-4e38-9f53-5a3a8f0c0001".to_owned(),
        };
        assert_eq!(AlertCursor::parse(&cursor.encode()), Some(cursor));
        for bad in [
            "",
            "x",
            "!!!",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("12:not-a-uuid"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode("abc:0b0e7c5e-8b65-4e38-9f53-5a3a8f0c0001"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1764000000123"),
        ] {
            assert_eq!(AlertCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::parse(k.as_str()), Some(*k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                json!(k.as_str()),
                "serde and as_str agree"
            );
        }
        for s in Severity::ALL {
            assert_eq!(Severity::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        for s in AlertStatus::ALL {
            assert_eq!(AlertStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
        }
        assert_eq!(AlertKind::parse("Replay"), None);
        assert!(Severity::Low < Severity::Critical);
    }

    #[test]
    fn kinds_are_documented() {
        let doc = include_str!("../../docs/alerts.md");
        for k in AlertKind::ALL {
            assert!(doc.contains(&format!("`{}`", k.as_str())), "{k:?}");
        }
    }
}
