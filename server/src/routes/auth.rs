//! Sessions: login, refresh, logout, the caller's sessions and password.
//!
//! Login is limited per account and per client address before any password is
//! checked, and an unknown email costs the same bcrypt time as a wrong password.
//! Passwords and tokens are never logged; they appear only in request and
//! response bodies.

use std::time::Instant;

use actix_web::{delete, get, post, web, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{self, AuditCtx, ClientInfo, RefreshOutcome};
use crate::audit::{ActorType, Outcome};
use crate::auth::password;
use crate::auth::permissions::Permission;
use crate::auth::principal::{unauthorized, Actor, Principal};
use crate::auth::tokens::{hash_opaque, new_opaque, REFRESH_PREFIX};
use crate::error::{ApiError, ErrorCode};
use crate::http::client::ClientAddr;
use crate::http::json::{JsonBody, NoBody};
use crate::http::middleware::RequestId;
use crate::startup::AppState;

/// Credentials for `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "owner@example.com")]
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// A refresh token to rotate or revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

/// A new pair of tokens. The refresh token is shown once; only its hash is stored.
#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// The result of a password change.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// How many other sessions were revoked.
    pub sessions_revoked: usize,
}

/// The caller, its organization and what it may do.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: accounts::User,
    pub organization: accounts::Organization,
    /// `user` or `api_key`.
    pub credential: &'static str,
    pub permissions: Vec<Permission>,
}

fn client_info(req: &HttpRequest) -> ClientInfo {
    ClientInfo {
        user_agent: req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect()),
        client_address: Some(ClientAddr::of(req).ip.to_string()),
    }
}

fn request_id(req: &HttpRequest) -> Option<String> {
    use actix_web::HttpMessage;
    req.extensions().get::<RequestId>().map(|r| r.0.to_string())
}

/// Issues the next token pair of a session (family) and stores the refresh token.
fn issue_pair(
    state: &AppState,
    conn: &mut crate::db::DbConn,
    org_id: &str,
    user_id: &str,
    family_id: &str,
    client: &ClientInfo,
    now: i64,
) -> Result<TokenPair, ApiError> {
    let (refresh_token, refresh_hash) = new_opaque(REFRESH_PREFIX);
    let expires_at = now + state.config.refresh_token_ttl_secs * 1000;
    accounts::insert_refresh_token(
        conn,
        org_id,
        user_id,
        family_id,
        &refresh_hash,
        expires_at,
        client,
        now,
    )?;
    let access = state
        .access_tokens
        .issue(user_id, org_id, family_id, now / 1000)
        .map_err(ApiError::internal)?;
    Ok(TokenPair {
        access_token: access,
        refresh_token: refresh_token.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_in: state.access_tokens.ttl_secs,
    })
}

/// Log in with email and password.
///
/// Permission: none (public). Limited per account and per client address: after
/// 10 failures in a minute further attempts answer 429 with `Retry-After`, even
/// with the right password; lockouts grow with repetition.
#[utoipa::path(
    operation_id = "create_session",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = TokenPair),
        (status = 401, description = "`invalid_credentials`: the email and password do not match an active account", body = agentid_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: too many failed attempts for this account or address, or over the `auth` rate limit (docs/rate-limits.md); see `Retry-After`", body = agentid_protocol::ErrorBody)
    )
)]
#[post("/api/v1/auth/login")]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<LoginRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    let LoginRequest {
        email,
        password: candidate,
    } = body.into_inner();
    let email = email.trim().to_lowercase();
    let address = Some(ClientAddr::of(&req).ip);
    // The attempt holds its place in the limits until its password is judged, so
    // concurrent guesses cannot all pass before the first failures are counted.
    let attempt = state
        .login_limiter
        .begin(&email, address, Instant::now())
        .map_err(ApiError::rate_limited)?;

    let lookup_email = email.clone();
    let account = state
        .db
        .run(move |conn| accounts::find_login_account(conn, &lookup_email))
        .await?;
    let cost = state.config.bcrypt_cost;
    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let matches = web::block(move || match stored {
        Some(hash) => password::verify(candidate.expose_secret(), &hash),
        None => {
            password::verify_against_dummy(candidate.expose_secret(), cost);
            false
        }
    })
    .await
    .map_err(ApiError::internal)?;

    let now = crate::clock::now_ms();
    let request_id = request_id(&req);
    let client = client_info(&req);
    let account = match account {
        Some(a) if matches && !a.disabled => a,
        other => {
            if let Some(retry) = attempt.failed(Instant::now()) {
                tracing::warn!(
                    retry_after_s = retry.as_secs(),
                    "login locked out after repeated failures"
                );
            }
            if let Some(a) = other {
                let reason = if a.disabled {
                    "user disabled"
                } else {
                    "wrong password"
                };
                state
                    .writer
                    .write(a.org_id.clone(), move |conn| {
                        let ctx = AuditCtx { actor_type: ActorType::User, actor_id: Some(&a.user_id), request_id: request_id.as_deref(), now };
                        ctx.record(conn, &a.org_id, "auth.login.failed", Some(("user", &a.user_id)), Outcome::Failure, serde_json::json!({ "reason": reason, "client_address": client.client_address }))
                    })
                    .await?;
            }
            tracing::info!(auth.failure = "invalid credentials", "login refused");
            return Err(ApiError::new(
                ErrorCode::InvalidCredentials,
                "The email or password is not correct.",
            ));
        }
    };
    attempt.succeeded(Instant::now());
    let pair = state
        .writer
        .write(account.org_id.clone(), {
            let state = state.clone();
            move |conn| {
                let family = uuid::Uuid::new_v4().to_string();
                let pair = issue_pair(
                    &state,
                    conn,
                    &account.org_id,
                    &account.user_id,
                    &family,
                    &client,
                    now,
                )?;
                let ctx = AuditCtx {
                    actor_type: ActorType::User,
                    actor_id: Some(&account.user_id),
                    request_id: request_id.as_deref(),
                    now,
                };
                ctx.record(
                    conn,
                    &account.org_id,
                    "auth.login.succeeded",
                    Some(("session", &family)),
                    Outcome::Success,
                    serde_json::json!({ "client_address": client.client_address }),
                )?;
                Ok::<_, ApiError>(pair)
            }
        })
        .await?;
    tracing::info!("login succeeded");
    Ok(web::Json(pair))
}

/// Exchange a refresh token for a new pair (rotation).
///
/// Permission: none (the refresh token is the credential). Each refresh token
/// works once. Presenting a spent one revokes its whole session (reuse detection).
#[utoipa::path(
    operation_id = "create_session_refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "Rotated", body = TokenPair),
        (status = 401, description = "`unauthorized`: the refresh token is unknown, spent, revoked or expired", body = agentid_protocol::ErrorBody)
    )
)]
#[post("/api/v1/auth/refresh")]
pub async fn refresh(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<RefreshRequest>,
) -> Result<web::Json<TokenPair>, ApiError> {
    let hash = hash_opaque(body.refresh_token.expose_secret());
    let now = crate::clock::now_ms();
    let request_id = request_id(&req);
    let st = state.clone();
    // The token's organization, to lock its chain first (docs/hot-path.md, "Lock
    // order"); an unknown token is refused without a write.
    let lookup = hash.clone();
    let org_id = state
        .db
        .run(move |conn| accounts::refresh_token_org(conn, &lookup))
        .await?;
    let Some(org_id) = org_id else {
        tracing::info!(auth.failure = "refresh token unknown", "refresh refused");
        return Err(unauthorized());
    };
    let result = state
        .writer
        .write(org_id, move |conn| {
            match accounts::spend_refresh_token(conn, &hash, now)? {
                RefreshOutcome::Rotated {
                    org_id,
                    user_id,
                    family_id,
                    client,
                } => issue_pair(&st, conn, &org_id, &user_id, &family_id, &client, now).map(Some),
                RefreshOutcome::Reused {
                    org_id,
                    user_id,
                    family_id,
                } => {
                    let ctx = AuditCtx {
                        actor_type: ActorType::User,
                        actor_id: Some(&user_id),
                        request_id: request_id.as_deref(),
                        now,
                    };
                    ctx.record(
                        conn,
                        &org_id,
                        "auth.refresh.reused",
                        Some(("session", &family_id)),
                        Outcome::Denied,
                        serde_json::json!({ "action": "session revoked" }),
                    )?;
                    Ok(None)
                }
                RefreshOutcome::Invalid => Ok(None),
            }
        })
        .await?;
    match result {
        Some(pair) => Ok(web::Json(pair)),
        None => {
            tracing::info!(
                auth.failure = "refresh token unknown, spent, revoked or expired",
                "refresh refused"
            );
            Err(unauthorized())
        }
    }
}

fn session_of(principal: &Principal) -> Result<(&str, &str), ApiError> {
    match &principal.actor {
        Actor::User {
            user_id,
            session_id,
            ..
        } => Ok((user_id, session_id)),
        Actor::ApiKey { .. } => Err(ApiError::new(
            ErrorCode::Forbidden,
            "This operation needs a user session, not an API key.",
        )),
    }
}

/// End the caller's session: its refresh token and access tokens stop working.
///
/// Permission: any user session.
#[utoipa::path(
    operation_id = "delete_session_current",
    tag = "auth",
    responses((status = 204, description = "Logged out"), (status = 403, description = "`forbidden`: an API key has no session to end", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []))
)]
#[post("/api/v1/auth/logout")]
pub async fn logout(
    principal: Principal,
    state: web::Data<AppState>,
    _body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let (user_id, session_id) = session_of(&principal)?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    let now = crate::clock::now_ms();
    state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            accounts::revoke_family(conn, &session_id, now)?;
            let ctx = AuditCtx {
                actor_type: ActorType::User,
                actor_id: Some(&user_id),
                request_id: principal.request_id.as_deref(),
                now,
            };
            ctx.record(
                conn,
                &principal.org_id,
                "auth.logout",
                Some(("session", &session_id)),
                Outcome::Success,
                serde_json::json!({}),
            )
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's live sessions.
///
/// Permission: any user session.
#[utoipa::path(
    operation_id = "list_sessions",
    tag = "auth",
    responses((status = 200, body = [accounts::Session]), (status = 403, description = "`forbidden`: an API key has no sessions", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []))
)]
#[get("/api/v1/auth/sessions")]
pub async fn list_sessions(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<accounts::Session>>, ApiError> {
    let (user_id, session_id) = session_of(&principal)?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    let now = crate::clock::now_ms();
    let sessions = state
        .db
        .run(move |conn| accounts::list_sessions(conn, &user_id, &session_id, now))
        .await?;
    Ok(web::Json(sessions))
}

/// Revoke one of the caller's sessions.
///
/// Permission: any user session (only its own sessions).
#[utoipa::path(
    operation_id = "delete_session",
    tag = "auth",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204, description = "Revoked"), (status = 403, description = "`forbidden`: an API key has no sessions", body = agentid_protocol::ErrorBody), (status = 404, description = "`not_found`: the caller has no live session with this id", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []))
)]
#[delete("/api/v1/auth/sessions/{id}")]
pub async fn delete_session(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    _body: NoBody,
) -> Result<HttpResponse, ApiError> {
    let (user_id, _) = session_of(&principal)?;
    let user_id = user_id.to_owned();
    let family = id.into_inner();
    let now = crate::clock::now_ms();
    state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            if !accounts::revoke_own_session(conn, &user_id, &family, now)? {
                return Err(ApiError::not_found());
            }
            let ctx = AuditCtx {
                actor_type: ActorType::User,
                actor_id: Some(&user_id),
                request_id: principal.request_id.as_deref(),
                now,
            };
            ctx.record(
                conn,
                &principal.org_id,
                "auth.session.revoked",
                Some(("session", &family)),
                Outcome::Success,
                serde_json::json!({}),
            )
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Change the caller's password. Every other session of the user is revoked.
///
/// Permission: any user session.
#[utoipa::path(
    operation_id = "update_password",
    tag = "auth",
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, body = PasswordChanged),
        (status = 400, description = "`weak_password`: the new password breaks the policy; the message says which rule", body = agentid_protocol::ErrorBody),
        (status = 401, description = "`invalid_credentials`: the current password is wrong", body = agentid_protocol::ErrorBody),
        (status = 403, description = "`forbidden`: an API key has no password to change", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []))
)]
#[post("/api/v1/auth/password")]
pub async fn change_password(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<ChangePasswordRequest>,
) -> Result<web::Json<PasswordChanged>, ApiError> {
    let (user_id, session_id) = session_of(&principal)?;
    let (user_id, session_id) = (user_id.to_owned(), session_id.to_owned());
    let ChangePasswordRequest {
        current_password,
        new_password,
    } = body.into_inner();
    let org_id = principal.org_id.clone();
    let (uid, oid) = (user_id.clone(), org_id.clone());
    let (stored, email) = state
        .db
        .run(move |conn| {
            let stored = accounts::password_hash_of(conn, &oid, &uid)?;
            let email = accounts::get_user(conn, &oid, &uid)?.email;
            Ok::<_, ApiError>((stored, email))
        })
        .await?;
    let new_password = password::validate(new_password.expose_secret(), &email)
        .map_err(|e| ApiError::new(ErrorCode::WeakPassword, e.to_string()))?;
    let cost = state.config.bcrypt_cost;
    let new_hash = web::block(move || {
        if !password::verify(current_password.expose_secret(), &stored) {
            return Ok(None);
        }
        password::hash(&new_password, cost).map(Some)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let Some(new_hash) = new_hash else {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "The current password is not correct.",
        ));
    };
    let now = crate::clock::now_ms();
    let revoked = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = AuditCtx {
                actor_type: ActorType::User,
                actor_id: Some(&user_id),
                request_id: principal.request_id.as_deref(),
                now,
            };
            accounts::set_password(conn, &org_id, &user_id, &new_hash, Some(&session_id), &ctx)
        })
        .await?;
    Ok(web::Json(PasswordChanged {
        sessions_revoked: revoked,
    }))
}

/// Who the caller is.
///
/// Permission: any authenticated caller.
#[utoipa::path(
    operation_id = "get_me",
    tag = "auth",
    responses((status = 200, body = Me)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/me")]
pub async fn me(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<Me>, ApiError> {
    let credential = match principal.actor {
        Actor::User { .. } => "user",
        Actor::ApiKey { .. } => "api_key",
    };
    let permissions = principal.permissions.to_vec();
    let (org_id, user_id) = (principal.org_id.clone(), principal.user_id().to_owned());
    let (user, organization) = state
        .db
        .run(move |conn| {
            Ok::<_, ApiError>((
                accounts::get_user(conn, &org_id, &user_id)?,
                accounts::get_org(conn, &org_id)?,
            ))
        })
        .await?;
    Ok(web::Json(Me {
        user,
        organization,
        credential,
        permissions,
    }))
}
