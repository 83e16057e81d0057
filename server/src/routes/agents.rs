//! Agents: registration, reading, lifecycle, proof of possession and key rotation.
//!
//! Registration and management take a person's credential (access token or API
//! key). Challenge, verify and rotate take none: the agent's signature is the proof,
//! and the agent id in the path names whose key must have made it.

use actix_web::{get, patch, post, web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use agentid_protocol::{
    ChallengeResponsePayload, Envelope, KeyRotationPayload, ParsedEnvelope, PayloadType,
    ProtocolError, ProtocolErrorKind, PublicKey,
};

use crate::accounts::AuditCtx;
use crate::agents::{
    self, Agent, AgentChanges, AgentFilter, AgentKey, AgentStatus, Challenge, NewAgent, Transition,
};
use crate::audit::{ActorType, Outcome};
use crate::auth::permissions::Permission;
use crate::auth::principal::Principal;
use crate::challenges::Refused;
use crate::error::{ApiError, ErrorCode};
use crate::http::json::{JsonBody, NoBody, OptionalJsonBody};
use crate::http::middleware::RequestId;
use crate::http::ratelimit::{limit_agent_budget, limit_agent_request};
use crate::ratelimit::Class;
use crate::startup::AppState;

/// A new agent. The private key stays with the agent: send only the public key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentRequest {
    /// Unique within the organization; 1 to 100 characters that cannot hide or
    /// impersonate: no control, invisible or bidirectional-control characters, NFKC
    /// form, one script (docs/names.md).
    #[schema(example = "mail-assistant")]
    pub name: String,
    pub description: Option<String>,
    /// The agent's Ed25519 public key: 32 bytes, base64url without padding.
    #[schema(pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")]
    pub public_key: String,
    /// Capability names the agent asks for; an administrator grants them.
    #[serde(default)]
    pub requested_capabilities: Vec<String>,
    /// A JSON object of at most 8 KiB.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

/// Changes to an agent; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentRequest {
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Transfer the agent to another user of the organization.
    pub owner_id: Option<String>,
}

/// Why a lifecycle change is made (kept in the audit log).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub reason: Option<String>,
}

/// Filters and keyset pagination for the agent list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AgentQuery {
    pub status: Option<AgentStatus>,
    pub owner_id: Option<String>,
    /// Exact agent name.
    pub name: Option<String>,
    /// The last `id` of the previous page.
    pub after: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// A page of agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentPage {
    pub agents: Vec<Agent>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// A verified proof of possession: the agent and its access token.
#[derive(Serialize, ToSchema)]
pub struct AgentVerified {
    pub agent: Agent,
    /// A short-lived EdDSA JWT (`typ` `agentid-agent+jwt`) bound to the agent's key;
    /// verify it offline with `/.well-known/jwks.json`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_at: String,
}

impl std::fmt::Debug for AgentVerified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentVerified")
            .field("agent", &self.agent.id)
            .finish_non_exhaustive()
    }
}

fn request_id(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<RequestId>().map(|r| r.0.to_string())
}

/// `400 invalid_envelope` for a protocol violation, naming its code first.
pub(crate) fn invalid_envelope(error: ProtocolError) -> ApiError {
    ApiError::new(ErrorCode::InvalidEnvelope, format!("{error}."))
}

fn invalid_proof(why: &'static str) -> ApiError {
    ApiError::new(ErrorCode::InvalidProof, why)
}

/// Reads a JSON envelope body of the `expected` payload type, exactly as received.
pub(crate) fn read_envelope(
    req: &HttpRequest,
    body: &[u8],
    expected: PayloadType,
) -> Result<ParsedEnvelope, ApiError> {
    if req.content_type() != "application/json" {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Send the envelope as application/json.",
        ));
    }
    let envelope = ParsedEnvelope::parse(body).map_err(invalid_envelope)?;
    envelope.expect_type(expected).map_err(invalid_envelope)?;
    Ok(envelope)
}

pub(crate) fn parse_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("`limit` must be from 1 to 500."));
    }
    Ok(limit)
}

/// Register an agent with its public key. The agent starts `pending` until it
/// proves possession of the key (challenge, then verify).
///
/// Idempotent per name and key: registering a name again with the agent's current
/// public key answers `200` with the existing agent (nothing is changed or recorded),
/// so a client may register on every start. The same name with another key, or a
/// key already used by another agent, is `409 conflict`.
///
/// Permission: `agents:write`. The caller (for an API key, the user who created it)
/// becomes the agent's owner.
#[utoipa::path(
    operation_id = "create_agent",
    tag = "agents",
    request_body = CreateAgentRequest,
    responses(
        (status = 201, description = "Registered, `pending` until it proves possession of its key", body = Agent),
        (status = 200, description = "Already registered under this name with this key", body = Agent),
        (status = 400, description = "`weak_public_key`: `public_key` breaks a key rule of docs/protocol.md; the message says which", body = agentid_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the name is registered with another key, or the key by another agent", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/agents")]
pub async fn create_agent(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<CreateAgentRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    let CreateAgentRequest {
        name,
        description,
        public_key,
        requested_capabilities,
        metadata,
    } = body.into_inner();
    let new = NewAgent::validate(
        &name,
        description.as_deref(),
        &public_key,
        requested_capabilities,
        metadata,
    )?;
    let now = crate::clock::now_ms();
    let org_id = principal.org_id.clone();
    let retry = new.clone();
    let registered = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            agents::register(conn, &principal.org_id, principal.user_id(), &new, &ctx)
        })
        .await;
    match registered {
        Ok(agent) => Ok(HttpResponse::Created().json(agent)),
        // The failed insert rolled its transaction back; look again outside it.
        Err(e) if e.code() == ErrorCode::Conflict => {
            let existing = state
                .db
                .run(move |conn| agents::registered_same(conn, &org_id, &retry))
                .await?;
            existing
                .map(|agent| HttpResponse::Ok().json(agent))
                .ok_or(e)
        }
        Err(e) => Err(e),
    }
}

/// Agents of the organization, ordered by id.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "list_agents",
    tag = "agents",
    params(AgentQuery),
    responses((status = 200, body = AgentPage)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/agents")]
pub async fn list_agents(
    principal: Principal,
    state: web::Data<AppState>,
    query: web::Query<AgentQuery>,
) -> Result<web::Json<AgentPage>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let AgentQuery {
        status,
        owner_id,
        name,
        after,
        limit,
    } = query.into_inner();
    let filter = AgentFilter {
        status,
        owner_id,
        name,
        after,
        limit: parse_limit(limit)?,
    };
    let limit = filter.limit;
    let agents = state
        .db
        .run(move |conn| agents::list(conn, &principal.org_id, &filter))
        .await?;
    let next_after = (agents.len() as i64 == limit)
        .then(|| agents.last().map(|a| a.id.clone()))
        .flatten();
    Ok(web::Json(AgentPage { agents, next_after }))
}

/// One agent.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "get_agent",
    tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = Agent)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/agents/{agent_id}")]
pub async fn get_agent(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
) -> Result<web::Json<Agent>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let agent_id = agent_id.into_inner();
    let agent = state
        .db
        .run(move |conn| agents::get(conn, &principal.org_id, &agent_id))
        .await?;
    Ok(web::Json(agent))
}

/// Change an agent's description or metadata, or transfer it to another owner.
///
/// Permission: `agents:write`.
#[utoipa::path(
    operation_id = "update_agent",
    tag = "agents",
    params(("agent_id" = String, Path)),
    request_body = UpdateAgentRequest,
    responses((status = 200, body = Agent)),
    security(("bearer" = []), ("api_key" = []))
)]
#[patch("/api/v1/agents/{agent_id}")]
pub async fn update_agent(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: JsonBody<UpdateAgentRequest>,
) -> Result<web::Json<Agent>, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    let agent_id = agent_id.into_inner();
    let UpdateAgentRequest {
        description,
        metadata,
        owner_id,
    } = body.into_inner();
    let now = crate::clock::now_ms();
    let agent = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            agents::update(
                conn,
                &principal.org_id,
                &agent_id,
                AgentChanges {
                    description: description.clone(),
                    metadata: metadata.clone(),
                    owner_id: owner_id.clone(),
                },
                &ctx,
            )
        })
        .await?;
    Ok(web::Json(agent))
}

async fn change_status(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: String,
    body: OptionalJsonBody<TransitionRequest>,
    transition: Transition,
) -> Result<web::Json<Agent>, ApiError> {
    let reason = body.or_default().reason;
    let now = crate::clock::now_ms();
    let agent = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            agents::transition(
                conn,
                &principal.org_id,
                &agent_id,
                transition,
                reason.as_deref(),
                &ctx,
            )
        })
        .await?;
    Ok(web::Json(agent))
}

/// Suspend an agent: every decision is denied (`agent_suspended`) from the next
/// request on, on every replica, until it is reactivated.
///
/// Permission: `agents:write`.
#[utoipa::path(
    operation_id = "suspend_agent",
    tag = "agents",
    params(("agent_id" = String, Path)),
    request_body(content = Option<TransitionRequest>),
    responses((status = 200, body = Agent), (status = 409, description = "`invalid_state`: not allowed from the agent's status (revocation is final).\n\n`conflict`: the agent changed concurrently; read it again and retry.", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/agents/{agent_id}/suspend")]
pub async fn suspend_agent(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: OptionalJsonBody<TransitionRequest>,
) -> Result<web::Json<Agent>, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    change_status(
        principal,
        state,
        agent_id.into_inner(),
        body,
        Transition::Suspend,
    )
    .await
}

/// Reactivate a suspended agent (back to `active`, or `pending` if it never proved
/// possession of its key).
///
/// Permission: `capabilities:grant` (lifting a suspension is an administrator's call).
#[utoipa::path(
    operation_id = "reactivate_agent",
    tag = "agents",
    params(("agent_id" = String, Path)),
    request_body(content = Option<TransitionRequest>),
    responses((status = 200, body = Agent), (status = 409, description = "`invalid_state`: not allowed from the agent's status (revocation is final).\n\n`conflict`: the agent changed concurrently; read it again and retry.", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/agents/{agent_id}/reactivate")]
pub async fn reactivate_agent(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: OptionalJsonBody<TransitionRequest>,
) -> Result<web::Json<Agent>, ApiError> {
    principal.require(Permission::CapabilitiesGrant)?;
    change_status(
        principal,
        state,
        agent_id.into_inner(),
        body,
        Transition::Reactivate,
    )
    .await
}

/// Revoke an agent, for good: its key is revoked, every decision is denied
/// (`agent_revoked`) from the next request on, on every replica, and an alert is
/// raised.
///
/// Permission: `agents:write`.
#[utoipa::path(
    operation_id = "revoke_agent",
    tag = "agents",
    params(("agent_id" = String, Path)),
    request_body(content = Option<TransitionRequest>),
    responses((status = 200, body = Agent), (status = 409, description = "`invalid_state`: not allowed from the agent's status (revocation is final).\n\n`conflict`: the agent changed concurrently; read it again and retry.", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/agents/{agent_id}/revoke")]
pub async fn revoke_agent(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: OptionalJsonBody<TransitionRequest>,
) -> Result<web::Json<Agent>, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    change_status(
        principal,
        state,
        agent_id.into_inner(),
        body,
        Transition::Revoke,
    )
    .await
}

/// The agent's keys, current and past, newest first.
///
/// Permission: `agents:read`.
#[utoipa::path(
    operation_id = "list_agent_keys",
    tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = [AgentKey])),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/agents/{agent_id}/keys")]
pub async fn list_agent_keys(
    principal: Principal,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
) -> Result<web::Json<Vec<AgentKey>>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    let agent_id = agent_id.into_inner();
    let keys = state
        .db
        .run(move |conn| agents::list_keys(conn, &principal.org_id, &agent_id))
        .await?;
    Ok(web::Json(keys))
}

/// Get a single-use challenge to sign, proving possession of the agent's key.
///
/// Permission: none; the signed answer is the proof. Issuing a challenge stores
/// nothing and is counted against the client address only: challenges requested in an
/// agent's name by others cannot disturb the agent's own (docs/protocol.md).
#[utoipa::path(
    operation_id = "create_agent_challenge",
    tag = "agents",
    params(("agent_id" = String, Path)),
    responses(
        (status = 201, body = Challenge),
        (status = 409, description = "`invalid_state`: the agent is suspended or revoked", body = agentid_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the client address or the agent is over its limit (docs/rate-limits.md)", body = agentid_protocol::ErrorBody)
    )
)]
#[post("/api/v1/agents/{agent_id}/challenge")]
pub async fn create_agent_challenge(
    req: HttpRequest,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    _body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let agent_id = agent_id.into_inner();
    limit_agent_request(&req, &state, Class::AgentAuth, None).await?;
    let now = crate::clock::now_ms();
    let agent = state
        .db
        .run(move |conn| agents::get_unscoped(conn, &agent_id))
        .await?;
    let challenge =
        agents::issue_challenge(&state.challenges, &agent, &state.config.public_url, now)?;
    Ok(HttpResponse::Created().json(challenge))
}

/// Answer a challenge with an envelope signed by the agent's current key. The
/// agent becomes `active` (if it was `pending`) and receives an access token. Any
/// answer spends the challenge, right or wrong.
///
/// Permission: none; the signature is the proof.
#[utoipa::path(
    operation_id = "verify_agent_challenge",
    tag = "agents",
    params(("agent_id" = String, Path)),
    request_body(content = Envelope, description = "A challenge-response envelope"),
    responses(
        (status = 200, body = AgentVerified),
        (status = 401, description = "`invalid_proof`: the challenge was not issued for this agent, has expired or was already used, the statement's `iat` is outside the freshness window, or its signature does not verify with the agent's key; request a new challenge", body = agentid_protocol::ErrorBody),
        (status = 409, description = "`invalid_state`: the agent is suspended or revoked.\n\n`conflict`: the agent changed concurrently; retry", body = agentid_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the client address or the agent is over its limit (docs/rate-limits.md)", body = agentid_protocol::ErrorBody)
    )
)]
#[post("/api/v1/agents/{agent_id}/verify")]
pub async fn verify_agent_challenge(
    req: HttpRequest,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: web::Bytes,
) -> Result<web::Json<AgentVerified>, ApiError> {
    let agent_id = agent_id.into_inner();
    limit_agent_request(&req, &state, Class::AgentAuth, None).await?;
    let envelope = read_envelope(&req, &body, PayloadType::ChallengeResponse)?;
    let payload = ChallengeResponsePayload::parse(&envelope.payload).map_err(invalid_envelope)?;
    let config = &state.config;
    let audience = config.public_url.clone();
    let request_id = request_id(&req);
    let now = crate::clock::now_ms();
    let now_secs = now / 1000;

    let lookup_id = agent_id.clone();
    let agent = state
        .db
        .run(move |conn| agents::get_unscoped(conn, &lookup_id))
        .await?;
    let key = PublicKey::from_b64url(&agent.public_key).map_err(ApiError::internal)?;
    let signed = envelope.verify(&key).is_ok();
    // Only an answer the agent's key signed spends the agent's budget; anything else
    // counted against its address alone (docs/rate-limits.md).
    if signed {
        limit_agent_budget(&req, &state, Class::AgentAuth, &agent.id).await?;
    }
    if matches!(agent.status, AgentStatus::Suspended | AgentStatus::Revoked) {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!("The agent is {}.", agent.status.as_str()),
        ));
    }
    // The challenge, if this server minted it for this agent: spent below whatever
    // else is wrong with the answer.
    let genuine = state
        .challenges
        .check(&payload.challenge, &agent.id, &audience, now);
    let failure = if payload.agent_id != agent.id {
        Some("The payload names another agent.")
    } else if payload.aud != audience {
        Some("The payload's aud is not this server.")
    } else if !signed {
        Some("The signature does not verify with the agent's current key.")
    } else if payload.iat < now_secs - config.action_max_age_secs
        || payload.iat > now_secs + config.action_max_skew_secs
    {
        Some("The statement's iat is outside the freshness window.")
    } else {
        match genuine {
            Ok(_) => None,
            Err(Refused::Expired) => Some("The challenge has expired."),
            Err(Refused::Unknown) => Some("The challenge was not issued for this agent."),
        }
    };

    let agent = state
        .writer
        .write(agent.org_id.clone(), move |conn| {
            let ctx = AuditCtx {
                actor_type: ActorType::Agent,
                actor_id: Some(&agent.id),
                request_id: request_id.as_deref(),
                now,
            };
            let first_answer = match &genuine {
                Ok(g) => agents::spend_challenge(
                    conn,
                    &agent.id,
                    &payload.challenge,
                    &audience,
                    g.expires_at_ms,
                    now,
                )?,
                Err(_) => true,
            };
            let failure = match failure {
                None if !first_answer => Some("The challenge was already used."),
                other => other,
            };
            match failure {
                None => agents::record_proof(conn, &agent, &ctx).map(Ok),
                Some(why) => {
                    ctx.record(
                        conn,
                        &agent.org_id,
                        "agent.proof_failed",
                        Some(("agent", &agent.id)),
                        Outcome::Failure,
                        serde_json::json!({ "reason": why }),
                    )?;
                    Ok(Err(invalid_proof(why)))
                }
            }
        })
        .await??;

    let (token, exp) = state
        .signing
        .issue_agent_token(
            &agent.id,
            &agent.org_id,
            &agent.did,
            &agent.key_id,
            state.config.agent_token_ttl_secs,
            now_secs,
        )
        .map_err(ApiError::internal)?;
    Ok(web::Json(AgentVerified {
        agent,
        access_token: token,
        token_type: "Bearer".to_owned(),
        expires_at: crate::clock::rfc3339(exp * 1000),
    }))
}

/// Replace the agent's key. The envelope carries two signatures over the same
/// bytes, by the current key and by the new one; the old key stops working at once.
///
/// Permission: none; both signatures are the proof.
#[utoipa::path(
    operation_id = "rotate_agent_key",
    tag = "agents",
    params(("agent_id" = String, Path)),
    request_body(content = Envelope, description = "A key-rotation envelope with two signatures"),
    responses(
        (status = 200, body = Agent),
        (status = 400, description = "`weak_public_key`: `new_public_key` breaks a key rule of docs/protocol.md; the message says which", body = agentid_protocol::ErrorBody),
        (status = 401, description = "`invalid_proof`: the statement names another agent or audience, is not fresh, its nonce was used, `old_key_id` is not the current key, or a signature does not verify", body = agentid_protocol::ErrorBody),
        (status = 409, description = "`invalid_state`: the agent is not active, or its key changed concurrently.\n\n`conflict`: the new key is already used", body = agentid_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the client address or the agent is over its limit (docs/rate-limits.md)", body = agentid_protocol::ErrorBody)
    )
)]
#[post("/api/v1/agents/{agent_id}/keys/rotate")]
pub async fn rotate_agent_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    agent_id: web::Path<String>,
    body: web::Bytes,
) -> Result<web::Json<Agent>, ApiError> {
    let agent_id = agent_id.into_inner();
    limit_agent_request(&req, &state, Class::AgentAuth, None).await?;
    let envelope = read_envelope(&req, &body, PayloadType::KeyRotation)?;
    let (payload, new_key) =
        KeyRotationPayload::parse(&envelope.payload).map_err(|e| match e.kind {
            ProtocolErrorKind::WeakPublicKey | ProtocolErrorKind::InvalidPublicKey => {
                ApiError::new(ErrorCode::WeakPublicKey, format!("`new_public_key`: {e}."))
            }
            _ => invalid_envelope(e),
        })?;
    let config = &state.config;
    let now = crate::clock::now_ms();
    let now_secs = now / 1000;
    if payload.agent_id != agent_id {
        return Err(invalid_proof("The payload names another agent."));
    }
    if payload.aud != config.public_url {
        return Err(invalid_proof("The payload's aud is not this server."));
    }
    if payload.iat < now_secs - config.action_max_age_secs
        || payload.iat > now_secs + config.action_max_skew_secs
    {
        return Err(invalid_proof(
            "The statement's iat is outside the freshness window.",
        ));
    }
    let lookup_id = agent_id.clone();
    let agent = state
        .db
        .run(move |conn| agents::get_unscoped(conn, &lookup_id))
        .await?;
    if agent.status != AgentStatus::Active {
        return Err(ApiError::new(
            ErrorCode::InvalidState,
            format!(
                "Only an active agent can rotate its key; it is {}.",
                agent.status.as_str()
            ),
        ));
    }
    if payload.old_key_id != agent.key_id {
        return Err(invalid_proof("old_key_id is not the agent's current key."));
    }
    if new_key.thumbprint() == agent.key_id {
        return Err(ApiError::invalid("The new key is the current key."));
    }
    let current = PublicKey::from_b64url(&agent.public_key).map_err(ApiError::internal)?;
    envelope
        .verify(&current)
        .map_err(|_| invalid_proof("The current key's signature does not verify."))?;
    envelope
        .verify(&new_key)
        .map_err(|_| invalid_proof("The new key's signature does not verify."))?;
    // Both keys signed: now the agent's own budget (docs/rate-limits.md).
    limit_agent_budget(&req, &state, Class::AgentAuth, &agent.id).await?;
    let request_id = request_id(&req);
    let agent = state
        .writer
        .write(agent.org_id.clone(), move |conn| {
            let fresh =
                crate::decisions::consume_nonce(conn, &agent.id, &payload.nonce, payload.iat)
                    .map_err(ApiError::internal)?;
            if !fresh {
                return Ok(Err(invalid_proof("The nonce was already used.")));
            }
            let ctx = AuditCtx {
                actor_type: ActorType::Agent,
                actor_id: Some(&agent.id),
                request_id: request_id.as_deref(),
                now,
            };
            agents::rotate_key(conn, &agent, &new_key, &ctx).map(Ok)
        })
        .await??;
    Ok(web::Json(agent))
}
