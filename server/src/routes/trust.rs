//! Trust: an agent's explained score and its history, administrators'
//! attestations, and the organization's trust policy.

use actix_web::{get, post, put, web};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::permissions::Permission;
use crate::auth::principal::Principal;
use crate::error::ApiError;
use crate::http::json::JsonBody;
use crate::routes::agents::parse_limit;
use crate::startup::AppState;
use crate::trust::TrustReport;
use crate::trust_store::{self, HistoryPage, HistoryQuery, TrustPolicy, TrustPolicyRequest};

/// The agent's trust score now, explained: its confidence and, for every factor,
/// its value (or that it has no data yet), weight, contribution and a one-line reason.
/// Evaluated as of the request, so it reflects time passing since the last event.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "get_agent_trust",
    tag = "trust",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = TrustReport)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/agents/{agent_id}/trust")]
pub async fn get_agent_trust(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
) -> Result<web::Json<TrustReport>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let agent_id = agent_id.into_inner();
    let now = crate::clock::now_ms();
    let report = state
        .db
        .run(move |conn| trust_store::report(conn, &principal.org_id, &agent_id, now))
        .await?;
    Ok(web::Json(report))
}

/// The agent's trust score over time, newest first: each point with its cause
/// (decisions, an attestation, a resolved alert, a key rotation, a policy change),
/// what happened, every factor's contribution and the factors that moved. A point is
/// recorded for every incident and every administrative change, and otherwise when
/// the score has moved by at least one point.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "list_agent_trust_history",
    tag = "trust",
    params(("agent_id" = String, Path), HistoryQuery),
    responses((status = 200, body = HistoryPage)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/agents/{agent_id}/trust/history")]
pub async fn list_agent_trust_history(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<web::Json<HistoryPage>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let agent_id = agent_id.into_inner();
    let HistoryQuery { before, limit } = query.into_inner();
    let limit = parse_limit(limit)?;
    let page = state
        .db
        .run(move |conn| {
            trust_store::history(conn, &principal.org_id, &agent_id, before.as_deref(), limit)
        })
        .await?;
    Ok(web::Json(page))
}

/// An administrator's statement about an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationRequest {
    /// From -1 (distrust) to 1 (vouch for the agent).
    pub value: f64,
    /// Why, 1 to 500 characters; kept in the audit log and the trust history.
    pub comment: String,
}

/// Attest to an agent: an administrator's judgement from -1 (distrust) to 1 (vouch),
/// with a reason. It feeds the attestation factor (decaying with a 90-day half-life),
/// is audited (`trust.attested`) and recorded in the trust history; the thresholds
/// apply to the new score. Answers the new report.
///
/// Permission: `trust:attest`.
#[utoipa::path(
    operation_id = "create_agent_attestation",
    tag = "trust",
    params(("agent_id" = String, Path)),
    request_body = AttestationRequest,
    responses((status = 200, body = TrustReport), (status = 409, description = "`invalid_state`: the agent is revoked", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/agents/{agent_id}/trust/attestations")]
pub async fn create_agent_attestation(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: JsonBody<AttestationRequest>,
) -> Result<web::Json<TrustReport>, ApiError> {
    principal.require(Permission::TrustAttest)?;
    let agent_id = agent_id.into_inner();
    let AttestationRequest { value, comment } = body.into_inner();
    let now = crate::clock::now_ms();
    let report = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            trust_store::attest(conn, &principal.org_id, &agent_id, value, &comment, &ctx)
        })
        .await?;
    Ok(web::Json(report))
}

/// The organization's trust policy: the factor weights, the key rotation policy,
/// and the thresholds below which a falling score raises an alert or suspends the
/// agent. An organization that never set one has the documented defaults.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "get_trust_policy",
    tag = "trust",
    responses((status = 200, body = TrustPolicy)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/organization/trust-policy")]
pub async fn get_trust_policy(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<TrustPolicy>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let policy = state
        .db
        .run(move |conn| trust_store::policy(conn, &principal.org_id))
        .await?;
    Ok(web::Json(policy))
}

/// Replace the organization's trust policy. Every field must be present (`null`:
/// default weights, no rotation policy, or never). Weights must name every factor
/// once, each from 0 to 1, summing to 1. A change is audited
/// (`org.trust_policy_changed`) and every agent's score is recomputed under it at
/// once, thresholds included.
///
/// Permission: `org:manage`.
#[utoipa::path(
    operation_id = "replace_trust_policy",
    tag = "trust",
    request_body = TrustPolicyRequest,
    responses((status = 200, body = TrustPolicy)),
    security(("bearer" = []), ("api_key" = []))
)]
#[put("/api/v1/organization/trust-policy")]
pub async fn replace_trust_policy(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<TrustPolicyRequest>,
) -> Result<web::Json<TrustPolicy>, ApiError> {
    principal.require(Permission::OrgManage)?;
    let policy = body.into_inner().into_policy()?;
    let now = crate::clock::now_ms();
    let policy = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            trust_store::set_policy(conn, &principal.org_id, policy, &ctx)
        })
        .await?;
    tracing::warn!("organization trust policy changed");
    Ok(web::Json(policy))
}
