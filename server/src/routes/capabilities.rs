//! The capability catalogue, agents' grants and the organization's enforcement mode.
//!
//! Each handler checks its permission first, parses its input into the domain's
//! types, then runs one transaction that makes the change and writes its audit
//! record. Ids from another organization answer 404, like ids that do not exist.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::permissions::Permission;
use crate::auth::principal::Principal;
use crate::capabilities::{
    self as domain, Capability, CapabilityChanges, CapabilityName, Description, EnforcementMode,
    Grant, MinTrust, NewCapability, NewGrant, RiskLevel,
};
use crate::error::ApiError;
use crate::http::json::{JsonBody, NoBody};
use crate::startup::AppState;

/// A capability to add to the catalogue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCapabilityRequest {
    /// `namespace:action`: two parts of 1 to 64 characters from `a-z 0-9 _ . -`,
    /// each starting with a letter or digit.
    #[schema(
        example = "email:send",
        pattern = r"^[a-z0-9][a-z0-9_.-]{0,63}:[a-z0-9][a-z0-9_.-]{0,63}$"
    )]
    pub name: String,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(example = "Send an email on the user's behalf")]
    pub description: String,
    pub risk_level: RiskLevel,
    /// The lowest trust score (0 to 100) at which an agent may use the capability.
    #[schema(minimum = 0, maximum = 100, example = 60)]
    pub min_trust: i64,
}

/// Changes to a capability; absent fields stay as they are. The name cannot change.
/// At least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct UpdateCapabilityRequest {
    pub description: Option<String>,
    pub risk_level: Option<RiskLevel>,
    #[schema(minimum = 0, maximum = 100)]
    pub min_trust: Option<i64>,
}

/// A grant of one capability to one agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantCapabilityRequest {
    /// A capability of the organization's catalogue.
    #[schema(example = "email:send")]
    pub capability: String,
    /// Limits the grant to resources matching this glob (`*` matches any run of
    /// characters; nothing else is special); at most 512 characters. Absent: every
    /// resource, and actions that name none.
    #[schema(example = "*@example.com")]
    pub resource_pattern: Option<String>,
    /// RFC 3339, in the future; absent: no expiry.
    pub expires_at: Option<String>,
}

/// The organization's enforcement mode.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnforcementSetting {
    pub mode: EnforcementMode,
}

/// A path id that cannot be a UUID names nothing.
fn uuid_path(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::not_found())
}

/// The organization's capability catalogue, by name.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "list_capabilities",
    tag = "capabilities",
    responses((status = 200, body = [Capability])),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/capabilities")]
pub async fn list_capabilities(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<Capability>>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let list = state
        .db
        .run(move |conn| domain::list_capabilities(conn, &principal.org_id))
        .await?;
    Ok(web::Json(list))
}

/// Add a capability to the organization's catalogue. Capabilities cannot be
/// deleted (grants refer to them); change them with PATCH.
///
/// Permission: `capabilities:grant`.
#[utoipa::path(
    operation_id = "create_capability",
    tag = "capabilities",
    request_body = CreateCapabilityRequest,
    responses(
        (status = 201, body = Capability),
        (status = 409, description = "`conflict`: the name is taken", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/capabilities")]
pub async fn create_capability(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<CreateCapabilityRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::CapabilitiesGrant)?;
    let CreateCapabilityRequest {
        name,
        description,
        risk_level,
        min_trust,
    } = body.into_inner();
    let new = NewCapability {
        name: CapabilityName::parse(&name)?,
        description: Description::parse(&description)?,
        risk_level,
        min_trust: MinTrust::parse(min_trust)?,
    };
    let now = crate::clock::now_ms();
    let capability = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            domain::create_capability(conn, &principal.org_id, &new, principal.user_id(), &ctx)
        })
        .await?;
    tracing::info!(capability.name = %capability.name, "capability created");
    Ok(HttpResponse::Created().json(capability))
}

/// One capability of the catalogue.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "get_capability",
    tag = "capabilities",
    params(("name" = String, Path, example = "email:send")),
    responses((status = 200, body = Capability)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/capabilities/{name}")]
pub async fn get_capability(
    principal: Principal,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<Capability>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let name = name.into_inner();
    if !domain::is_valid_capability_name(&name) {
        return Err(ApiError::not_found());
    }
    let capability = state
        .db
        .run(move |conn| domain::get_capability(conn, &principal.org_id, &name))
        .await?;
    Ok(web::Json(capability))
}

/// Change a capability's description, risk level or minimum trust. A new minimum
/// trust applies to the next decision.
///
/// Permission: `capabilities:grant`.
#[utoipa::path(
    operation_id = "update_capability",
    tag = "capabilities",
    params(("name" = String, Path, example = "email:send")),
    request_body = UpdateCapabilityRequest,
    responses(
        (status = 200, body = Capability)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[patch("/api/v1/capabilities/{name}")]
pub async fn update_capability(
    principal: Principal,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: JsonBody<UpdateCapabilityRequest>,
) -> Result<web::Json<Capability>, ApiError> {
    principal.require(Permission::CapabilitiesGrant)?;
    let name = name.into_inner();
    if !domain::is_valid_capability_name(&name) {
        return Err(ApiError::not_found());
    }
    let UpdateCapabilityRequest {
        description,
        risk_level,
        min_trust,
    } = body.into_inner();
    let changes = CapabilityChanges {
        description: description.as_deref().map(Description::parse).transpose()?,
        risk_level,
        min_trust: min_trust.map(MinTrust::parse).transpose()?,
    };
    if changes.is_empty() {
        return Err(ApiError::invalid(
            "Send at least one of `description`, `risk_level`, `min_trust`.",
        ));
    }
    let now = crate::clock::now_ms();
    let capability = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            domain::update_capability(conn, &principal.org_id, &name, &changes, &ctx)
        })
        .await?;
    tracing::info!(capability.name = %capability.name, "capability updated");
    Ok(web::Json(capability))
}

/// Grant a capability of the catalogue to an agent, optionally only for matching
/// resources and only until an expiry. The agent must not be revoked.
///
/// Permission: `capabilities:grant`.
#[utoipa::path(
    operation_id = "grant_capability",
    tag = "capabilities",
    params(("agent_id" = String, Path)),
    request_body = GrantCapabilityRequest,
    responses(
        (status = 201, body = Grant),
        (status = 400, description = "`invalid_request`: bad pattern or expiry, or the capability is not in the catalogue", body = agentid_protocol::ErrorBody),
        (status = 409, description = "`invalid_state`: the agent is revoked", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/agents/{agent_id}/grants")]
pub async fn grant_capability(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: JsonBody<GrantCapabilityRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::CapabilitiesGrant)?;
    let agent_id = agent_id.into_inner();
    uuid_path(&agent_id)?;
    let now = crate::clock::now_ms();
    let GrantCapabilityRequest {
        capability,
        resource_pattern,
        expires_at,
    } = body.into_inner();
    let new = NewGrant::parse(
        &capability,
        resource_pattern.as_deref(),
        expires_at.as_deref(),
        now,
    )?;
    let grant = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            domain::grant_capability(
                conn,
                &principal.org_id,
                &agent_id,
                &new,
                principal.user_id(),
                &ctx,
            )
        })
        .await?;
    tracing::info!(
        agent.id = %grant.agent_id,
        grant.id = %grant.id,
        capability.name = %grant.capability,
        "capability granted"
    );
    Ok(HttpResponse::Created().json(grant))
}

/// An agent's grants, live and past, oldest first, each with its state.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "list_agent_grants",
    tag = "capabilities",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = [Grant])),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/agents/{agent_id}/grants")]
pub async fn list_agent_grants(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
) -> Result<web::Json<Vec<Grant>>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let agent_id = agent_id.into_inner();
    uuid_path(&agent_id)?;
    let now = crate::clock::now_ms();
    let grants = state
        .db
        .run(move |conn| domain::list_agent_grants(conn, &principal.org_id, &agent_id, now))
        .await?;
    Ok(web::Json(grants))
}

/// Revoke a grant. It stops covering anything at once; the row is kept and listed
/// as revoked.
///
/// Permission: `capabilities:grant`.
#[utoipa::path(
    operation_id = "revoke_agent_grant",
    tag = "capabilities",
    params(("agent_id" = String, Path), ("grant_id" = String, Path)),
    responses(
        (status = 200, body = Grant),
        (status = 409, description = "`invalid_state`: already revoked", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[delete("/api/v1/agents/{agent_id}/grants/{grant_id}")]
pub async fn revoke_agent_grant(
    principal: Principal,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    _body: NoBody,
) -> Result<web::Json<Grant>, ApiError> {
    principal.require(Permission::CapabilitiesGrant)?;
    let (agent_id, grant_id) = path.into_inner();
    uuid_path(&agent_id)?;
    uuid_path(&grant_id)?;
    let now = crate::clock::now_ms();
    let grant = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            domain::revoke_grant(
                conn,
                &principal.org_id,
                &agent_id,
                &grant_id,
                principal.user_id(),
                &ctx,
            )
        })
        .await?;
    tracing::info!(
        agent.id = %grant.agent_id,
        grant.id = %grant.id,
        capability.name = %grant.capability,
        "capability grant revoked"
    );
    Ok(web::Json(grant))
}

/// The organization's enforcement mode: `enforce` (the default: actions outside an
/// agent's grants are denied) or `monitor` (they are allowed, recorded and alerted).
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "get_enforcement_mode",
    tag = "capabilities",
    responses((status = 200, body = EnforcementSetting)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/organization/enforcement")]
pub async fn get_enforcement_mode(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<EnforcementSetting>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let mode = state
        .db
        .run(move |conn| domain::enforcement_mode(conn, &principal.org_id))
        .await?;
    Ok(web::Json(EnforcementSetting { mode }))
}

/// Set the organization's enforcement mode. A change is audited
/// (`org.enforcement_changed`) and applies to the next decision.
///
/// Permission: `org:manage`.
#[utoipa::path(
    operation_id = "replace_enforcement_mode",
    tag = "capabilities",
    request_body = EnforcementSetting,
    responses((status = 200, body = EnforcementSetting)),
    security(("bearer" = []), ("api_key" = []))
)]
#[put("/api/v1/organization/enforcement")]
pub async fn replace_enforcement_mode(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<EnforcementSetting>,
) -> Result<web::Json<EnforcementSetting>, ApiError> {
    principal.require(Permission::OrgManage)?;
    let mode = body.into_inner().mode;
    let now = crate::clock::now_ms();
    let changed = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            domain::set_enforcement_mode(conn, &principal.org_id, mode, &ctx)
        })
        .await?;
    if changed {
        tracing::warn!(
            enforcement.mode = mode.as_str(),
            "organization enforcement mode changed"
        );
    }
    Ok(web::Json(EnforcementSetting { mode }))
}
