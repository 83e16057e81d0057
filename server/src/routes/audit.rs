//! The organization's audit log: read it (filtered by agent, action, outcome and
//! time), and verify its hash chain.

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, ActionFilter, AuditFilter, AuditRecord, ChainReport, Outcome};
use crate::auth::permissions::Permission;
use crate::auth::principal::Principal;
use crate::error::ApiError;
use crate::startup::AppState;

/// Filters and keyset pagination over the chain. Filters combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Return records after this sequence number (the last `seq` of the previous page).
    pub after: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Only records an agent did (`actor_type` `agent`, `actor_id` this id) or that
    /// were done to it (`target_type` `agent`, `target_id` this id). A UUID.
    #[param(format = "uuid")]
    pub agent_id: Option<String>,
    /// An exact action (`auth.login.failed`), or every action under a prefix when it
    /// ends with `.*` (`agent.*`).
    pub action: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<Outcome>,
    /// Only records that occurred at or after this time (RFC 3339, inclusive).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only records that occurred before this time (RFC 3339, exclusive).
    #[param(format = DateTime)]
    pub until: Option<String>,
}

/// A page of audit records.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Reads an optional `since`/`until` pair, refusing an empty window.
pub(crate) fn time_window(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let parse = |name: &str, value: Option<&str>| match value {
        None => Ok(None),
        Some(v) => crate::clock::parse_rfc3339(v)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(format!("`{name}` must be an RFC 3339 time."))),
    };
    let since_ms = parse("since", since)?;
    let until_ms = parse("until", until)?;
    if let (Some(s), Some(u)) = (since_ms, until_ms) {
        if u <= s {
            return Err(ApiError::invalid("`until` must be later than `since`."));
        }
    }
    Ok((since_ms, until_ms))
}

/// Reads an optional `agent_id` query parameter, which must be a UUID.
pub(crate) fn agent_id_param(agent_id: Option<String>) -> Result<Option<String>, ApiError> {
    match agent_id {
        None => Ok(None),
        Some(id) if uuid::Uuid::parse_str(&id).is_ok() => Ok(Some(id)),
        Some(_) => Err(ApiError::invalid("`agent_id` must be a UUID.")),
    }
}

/// Audit records of the organization, oldest first, optionally filtered.
///
/// Permission: `audit:read`.
#[utoipa::path(
    operation_id = "list_audit_records",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/audit")]
pub async fn list_audit_records(
    principal: Principal,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<AuditPage>, ApiError> {
    principal.require(Permission::AuditRead)?;
    let AuditQuery {
        after,
        limit,
        agent_id,
        action,
        outcome,
        since,
        until,
    } = query.into_inner();
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be from 1 to 500."));
    }
    let action = match action {
        None => None,
        Some(a) => Some(ActionFilter::parse(&a).ok_or_else(|| {
            ApiError::invalid(
                "`action` must be a dotted action name such as `auth.login.failed`, or a prefix ending in `.*` such as `agent.*`.",
            )
        })?),
    };
    let (since_ms, until_ms) = time_window(since.as_deref(), until.as_deref())?;
    let filter = AuditFilter {
        after_seq: after,
        agent_id: agent_id_param(agent_id)?,
        action,
        outcome,
        since_ms,
        until_ms,
    };
    let records = state
        .db
        .run(move |conn| {
            audit::list_filtered(conn, &principal.org_id, &filter, limit)
                .map_err(ApiError::internal)
        })
        .await?;
    let next_after = (records.len() as i64 == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(web::Json(AuditPage {
        records,
        next_after,
    }))
}

/// Recompute the organization's hash chain and report whether it is intact.
///
/// Permission: `audit:read`.
#[utoipa::path(
    operation_id = "verify_audit_chain",
    tag = "audit",
    responses((status = 200, body = ChainReport)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/audit/verify")]
pub async fn verify_audit_chain(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<ChainReport>, ApiError> {
    principal.require(Permission::AuditRead)?;
    let report = state
        .db
        .run(move |conn| audit::verify(conn, &principal.org_id).map_err(ApiError::internal))
        .await?;
    Ok(web::Json(report))
}
