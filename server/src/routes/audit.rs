//! The organization's audit log: read it, and verify its hash chain.

use actix_web::{get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, AuditRecord, ChainReport};
use crate::auth::permissions::Permission;
use crate::auth::principal::Principal;
use crate::error::ApiError;
use crate::startup::AppState;

/// Keyset pagination over the chain.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Return records after this sequence number (the last `seq` of the previous page).
    pub after: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<i64>,
}

/// A page of audit records.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// Audit records of the organization, oldest first.
///
/// Permission: `audit:read`.
#[utoipa::path(
    operation_id = "list_audit_records",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/audit")]
pub async fn list_audit_records(
    principal: Principal,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<AuditPage>, ApiError> {
    principal.require(Permission::AuditRead)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be from 1 to 500."));
    }
    let after = query.after;
    let records = state
        .db
        .run(move |conn| {
            audit::list(conn, &principal.org_id, after, limit).map_err(ApiError::internal)
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
    responses((status = 200, body = ChainReport), (status = 403, body = agentid_protocol::ErrorBody)),
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
