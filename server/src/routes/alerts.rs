//! The organization's security alerts: list and read them, acknowledge and resolve them.

use actix_web::{get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::alerts::{self, Alert, AlertCursor, AlertFilter, AlertKind, AlertStatus, Severity};
use crate::auth::permissions::Permission;
use crate::auth::principal::Principal;
use crate::error::ApiError;
use crate::http::json::OptionalJsonBody;
use crate::routes::audit::{agent_id_param, time_window};
use crate::startup::AppState;

/// Filters and keyset pagination over the alert list. Filters combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    pub status: Option<AlertStatus>,
    pub kind: Option<AlertKind>,
    /// Only alerts about this agent (a UUID).
    #[param(format = "uuid")]
    pub agent_id: Option<String>,
    pub severity: Option<Severity>,
    /// Only alerts last seen at or after this time (RFC 3339, inclusive).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only alerts last seen before this time (RFC 3339, exclusive).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// The `next_after` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of alerts, most recently seen first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    pub alerts: Vec<Alert>,
    /// Pass as `after` to get the next page; null on the last page.
    pub next_after: Option<String>,
}

/// Acknowledging takes no fields; the body may be empty or `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeAlertRequest {}

/// How an alert was resolved; the body may be empty or `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveAlertRequest {
    /// What was done, for the record; at most 1000 characters.
    pub note: Option<String>,
}

/// The alert id from the path; anything but a UUID names no alert.
fn alert_id(path: web::Path<String>) -> Result<String, ApiError> {
    let id = path.into_inner();
    match uuid::Uuid::parse_str(&id) {
        Ok(_) => Ok(id),
        Err(_) => Err(ApiError::not_found()),
    }
}

/// Alerts of the organization, most recently seen first, optionally filtered.
///
/// Permission: `alerts:read`.
#[utoipa::path(
    operation_id = "list_alerts",
    tag = "alerts",
    params(AlertsQuery),
    responses(
        (status = 200, body = AlertPage)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/alerts")]
pub async fn list_alerts(
    principal: Principal,
    state: web::Data<AppState>,
    query: web::Query<AlertsQuery>,
) -> Result<web::Json<AlertPage>, ApiError> {
    principal.require(Permission::AlertsRead)?;
    let AlertsQuery {
        status,
        kind,
        agent_id,
        severity,
        since,
        until,
        after,
        limit,
    } = query.into_inner();
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be from 1 to 500."));
    }
    let after = match after {
        None => None,
        Some(a) => Some(AlertCursor::parse(&a).ok_or_else(|| {
            ApiError::invalid("`after` must be the `next_after` of a previous page.")
        })?),
    };
    let (since_ms, until_ms) = time_window(since.as_deref(), until.as_deref())?;
    let filter = AlertFilter {
        status,
        kind,
        agent_id: agent_id_param(agent_id)?,
        severity,
        since_ms,
        until_ms,
        after,
        limit,
    };
    let alerts = state
        .db
        .run(move |conn| alerts::list(conn, &principal.org_id, &filter).map_err(ApiError::internal))
        .await?;
    let next_after = (alerts.len() as i64 == limit)
        .then(|| alerts.last().map(|a| a.cursor().encode()))
        .flatten();
    Ok(web::Json(AlertPage { alerts, next_after }))
}

/// One alert of the organization.
///
/// Permission: `alerts:read`.
#[utoipa::path(
    operation_id = "get_alert",
    tag = "alerts",
    params(("alert_id" = String, Path, description = "The alert's id (UUID).")),
    responses(
        (status = 200, body = Alert)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/alerts/{alert_id}")]
pub async fn get_alert(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<web::Json<Alert>, ApiError> {
    principal.require(Permission::AlertsRead)?;
    let id = alert_id(path)?;
    let alert = state
        .db
        .run(move |conn| {
            alerts::get(conn, &principal.org_id, &id)
                .map_err(ApiError::internal)?
                .ok_or_else(ApiError::not_found)
        })
        .await?;
    Ok(web::Json(alert))
}

/// Acknowledge an open alert: someone is looking at it. Acknowledging it again changes
/// nothing; a resolved alert answers `invalid_state`. New occurrences of an
/// acknowledged alert open a new alert.
///
/// Permission: `alerts:manage`.
#[utoipa::path(
    operation_id = "acknowledge_alert",
    tag = "alerts",
    params(("alert_id" = String, Path, description = "The alert's id (UUID).")),
    request_body(content = Option<AcknowledgeAlertRequest>, description = "Optional; empty or `{}`."),
    responses(
        (status = 200, body = Alert),
        (status = 409, description = "`invalid_state`: the alert is resolved", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/alerts/{alert_id}/acknowledge")]
pub async fn acknowledge_alert(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: OptionalJsonBody<AcknowledgeAlertRequest>,
) -> Result<web::Json<Alert>, ApiError> {
    principal.require(Permission::AlertsManage)?;
    let id = alert_id(path)?;
    let AcknowledgeAlertRequest {} = body.or_default();
    let now = crate::clock::now_ms();
    let alert = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            alerts::acknowledge(conn, &principal.org_id, &id, &ctx)
        })
        .await?;
    Ok(web::Json(alert))
}

/// Resolve an open or acknowledged alert, with an optional note. Resolving a resolved
/// alert answers `invalid_state`. New occurrences open a new alert. An unresolved
/// alert about an agent weighs on its trust score; resolving it recomputes the score
/// (recorded in the agent's trust history).
///
/// Permission: `alerts:manage`.
#[utoipa::path(
    operation_id = "resolve_alert",
    tag = "alerts",
    params(("alert_id" = String, Path, description = "The alert's id (UUID).")),
    request_body(content = Option<ResolveAlertRequest>, description = "Optional; empty, `{}` or `{\"note\": \"...\"}`."),
    responses(
        (status = 200, body = Alert),
        (status = 409, description = "`invalid_state`: the alert is already resolved", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/alerts/{alert_id}/resolve")]
pub async fn resolve_alert(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: OptionalJsonBody<ResolveAlertRequest>,
) -> Result<web::Json<Alert>, ApiError> {
    principal.require(Permission::AlertsManage)?;
    let id = alert_id(path)?;
    // The note's length is checked by `alerts::resolve`, before anything changes.
    let ResolveAlertRequest { note } = body.or_default();
    let now = crate::clock::now_ms();
    let alert = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            let alert = alerts::resolve(conn, &principal.org_id, &id, note.as_deref(), &ctx)?;
            // An unresolved alert weighs on its agent's score; resolving it lifts that.
            if let Some(agent_id) = alert.agent_id.as_deref() {
                if crate::trust_store::alert_counts(alert.kind) {
                    let refreshed = crate::trust_store::refresh(
                        conn,
                        &principal.org_id,
                        agent_id,
                        crate::trust_store::Cause::AlertResolved,
                        serde_json::json!({ "alert_id": alert.id, "kind": alert.kind.as_str() }),
                        None,
                        &ctx,
                    );
                    // An alert may name an agent id that is not (or no longer) an
                    // agent of the organization; there is then no score to move.
                    match refreshed {
                        Err(e) if e.code() != crate::error::ErrorCode::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
            Ok::<_, ApiError>(alert)
        })
        .await?;
    Ok(web::Json(alert))
}
