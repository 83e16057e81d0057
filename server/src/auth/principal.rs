//! Who is calling: the authenticated principal of a request.
//!
//! A request authenticates with `Authorization: Bearer <access token or API key>`
//! or `X-API-Key: <key>`. The principal is resolved against the database on every
//! request, so a revoked session or key, a disabled user or a changed role takes
//! effect at once. Its permissions are the user's role's, or, for an API key, the
//! key's own intersected with its creator's current role. Every failure is the same
//! 401; the reason goes to the log only.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use diesel::prelude::*;

use crate::audit::ActorType;
use crate::auth::permissions::{Permission, PermissionSet, Role};
use crate::auth::tokens::{hash_opaque, API_KEY_PREFIX};
use crate::db::DbConn;
use crate::error::{ApiError, ErrorCode};
use crate::http::middleware::RequestId;
use crate::schema::{api_keys, refresh_tokens, users};
use crate::startup::AppState;

/// How often at most `last_used_at` of an API key is written.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub org_id: String,
    pub actor: Actor,
    pub permissions: PermissionSet,
    pub request_id: Option<String>,
}

/// The kind of credential that authenticated the request.
#[derive(Debug, Clone)]
pub enum Actor {
    User {
        user_id: String,
        session_id: String,
        role: Role,
    },
    ApiKey {
        key_id: String,
        owner_id: String,
    },
}

impl Principal {
    /// Ok if the caller holds `permission`; otherwise 403 `forbidden`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(permission) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "This operation needs the `{}` permission.",
                    permission.as_str()
                ),
            ))
        }
    }

    /// The user accountable for the caller: the user, or the API key's creator.
    pub fn user_id(&self) -> &str {
        match &self.actor {
            Actor::User { user_id, .. } => user_id,
            Actor::ApiKey { owner_id, .. } => owner_id,
        }
    }

    /// The audit context for a change made by this caller at `now`.
    pub fn audit_ctx(&self, now: i64) -> crate::accounts::AuditCtx<'_> {
        let (actor_type, actor_id) = self.audit_actor();
        crate::accounts::AuditCtx {
            actor_type,
            actor_id: Some(actor_id),
            request_id: self.request_id.as_deref(),
            now,
        }
    }

    /// How the caller appears in the audit log.
    pub fn audit_actor(&self) -> (ActorType, &str) {
        match &self.actor {
            Actor::User { user_id, .. } => (ActorType::User, user_id),
            Actor::ApiKey { key_id, .. } => (ActorType::ApiKey, key_id),
        }
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Principal, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let credential = credential(req);
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let request_id = req.extensions().get::<RequestId>().map(|r| r.0.to_string());
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("application state missing"))?;
            let credential = credential.ok_or_else(unauthorized)?;
            let now = crate::clock::now_ms();
            let mut principal = match credential {
                Credential::ApiKey(key) => {
                    let hash = hash_opaque(&key);
                    let (principal, last_used_at) = state
                        .db
                        .run(move |conn| api_key_principal(conn, &hash, now))
                        .await?;
                    if let Actor::ApiKey { key_id, .. } = &principal.actor {
                        if state.key_touches.due(key_id, last_used_at, now) {
                            touch_api_key(&state, key_id.clone(), now);
                        }
                    }
                    principal
                }
                Credential::Bearer(token) => {
                    let claims = state.access_tokens.verify(&token).ok_or_else(|| {
                        tracing::info!(
                            auth.failure = "invalid access token",
                            "authentication refused"
                        );
                        unauthorized()
                    })?;
                    state
                        .db
                        .run(move |conn| session_principal(conn, claims, now))
                        .await?
                }
            };
            principal.request_id = request_id;
            Ok(principal)
        })
    }
}

enum Credential {
    Bearer(String),
    ApiKey(String),
}

fn credential(req: &HttpRequest) -> Option<Credential> {
    if let Some(key) = req.headers().get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Credential::ApiKey(key.trim().to_owned()));
    }
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    if token.starts_with(API_KEY_PREFIX) {
        Some(Credential::ApiKey(token.to_owned()))
    } else {
        Some(Credential::Bearer(token.to_owned()))
    }
}

/// 401 `unauthorized`, the same for every authentication failure.
pub fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "Authentication is required: send a valid access token or API key.",
    )
}

fn session_principal(
    conn: &mut DbConn,
    claims: crate::auth::tokens::AccessClaims,
    now: i64,
) -> Result<Principal, ApiError> {
    let user: Option<(String, String, bool)> = users::table
        .filter(users::id.eq(&claims.sub))
        .filter(users::org_id.eq(&claims.org))
        .select((users::org_id, users::role, users::disabled))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?;
    let Some((org_id, role, disabled)) = user else {
        return Err(unauthorized());
    };
    // The session is alive while its family has a current (unused, unrevoked,
    // unexpired) refresh token.
    let live: i64 = refresh_tokens::table
        .filter(refresh_tokens::family_id.eq(&claims.sid))
        .filter(refresh_tokens::user_id.eq(&claims.sub))
        .filter(refresh_tokens::revoked_at.is_null())
        .filter(refresh_tokens::expires_at.gt(now))
        .count()
        .get_result(conn)
        .map_err(ApiError::internal)?;
    let role = Role::parse(&role).ok_or_else(|| ApiError::internal("unknown role in database"))?;
    if disabled || live == 0 {
        tracing::info!(
            auth.failure = "session revoked or user disabled",
            "authentication refused"
        );
        return Err(unauthorized());
    }
    Ok(Principal {
        org_id,
        permissions: role.permissions(),
        actor: Actor::User {
            user_id: claims.sub,
            session_id: claims.sid,
            role,
        },
        request_id: None,
    })
}

/// Records that an API key was used, off the request's path: `last_used_at` is
/// informational, and on SQLite a write waits for its turn behind the decision writer.
/// A single-row update, batched by the writer like every write.
fn touch_api_key(state: &AppState, key_id: String, now: i64) {
    use tracing::Instrument;
    let writer = state.writer.clone();
    let span = tracing::Span::current();
    actix_web::rt::spawn(
        async move {
            let touched = writer
                .write_unscoped(move |conn| {
                    diesel::update(api_keys::table.filter(api_keys::id.eq(&key_id)))
                        .filter(
                            api_keys::last_used_at
                                .is_null()
                                .or(api_keys::last_used_at.lt(now)),
                        )
                        .set(api_keys::last_used_at.eq(now))
                        .execute(conn)
                        .map_err(ApiError::internal)
                })
                .await;
            if let Err(error) = touched {
                tracing::warn!(error = %error, "recording an API key's last use failed");
            }
        }
        .instrument(span),
    );
}

/// When each API key's `last_used_at` was last written by this process, so a burst of
/// requests with one key writes it once, not once per request in flight.
#[derive(Debug, Default)]
pub struct KeyTouches {
    written: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

/// Most keys [`KeyTouches`] remembers; past it, it starts over.
const MAX_REMEMBERED_TOUCHES: usize = 10_000;

impl KeyTouches {
    /// True (and remembered) when `key_id`'s last use, as stored (`stored`) and as
    /// written by this process, is at least `LAST_USED_RESOLUTION_MS` before `now`.
    pub fn due(&self, key_id: &str, stored: Option<i64>, now: i64) -> bool {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = written.get(key_id).copied().max(stored);
        if last.is_some_and(|t| now - t < LAST_USED_RESOLUTION_MS) {
            return false;
        }
        if written.len() >= MAX_REMEMBERED_TOUCHES {
            written.clear();
        }
        written.insert(key_id.to_owned(), now);
        true
    }
}

/// The principal of an API key and the key's stored `last_used_at`.
fn api_key_principal(
    conn: &mut DbConn,
    hash: &str,
    now: i64,
) -> Result<(Principal, Option<i64>), ApiError> {
    type KeyRow = (
        String,
        String,
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let key: Option<KeyRow> = api_keys::table
        .filter(api_keys::key_hash.eq(hash))
        .select((
            api_keys::id,
            api_keys::org_id,
            api_keys::created_by,
            api_keys::permissions,
            api_keys::expires_at,
            api_keys::revoked_at,
            api_keys::last_used_at,
        ))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?;
    let Some((key_id, org_id, owner_id, permissions, expires_at, revoked_at, last_used_at)) = key
    else {
        tracing::info!(auth.failure = "unknown API key", "authentication refused");
        return Err(unauthorized());
    };
    if revoked_at.is_some() || expires_at.is_some_and(|e| e <= now) {
        tracing::info!(api_key.id = %key_id, auth.failure = "revoked or expired API key", "authentication refused");
        return Err(unauthorized());
    }
    let owner: Option<(String, bool)> = users::table
        .filter(users::id.eq(&owner_id))
        .filter(users::org_id.eq(&org_id))
        .select((users::role, users::disabled))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?;
    let Some((role, false)) = owner else {
        tracing::info!(api_key.id = %key_id, auth.failure = "API key owner disabled", "authentication refused");
        return Err(unauthorized());
    };
    let role = Role::parse(&role).ok_or_else(|| ApiError::internal("unknown role in database"))?;
    let principal = Principal {
        org_id,
        permissions: PermissionSet::from_storage(&permissions).intersection(&role.permissions()),
        actor: Actor::ApiKey { key_id, owner_id },
        request_id: None,
    };
    Ok((principal, last_used_at))
}
