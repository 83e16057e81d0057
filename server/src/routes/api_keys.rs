//! API keys for programs. A key is shown once, at creation; only its hash is kept.

use actix_web::{delete, get, post, web, HttpResponse};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{self, ApiKey};
use crate::auth::permissions::{Permission, PermissionSet};
use crate::auth::principal::Principal;
use crate::auth::tokens::{new_opaque, API_KEY_PREFIX};
use crate::error::{ApiError, ErrorCode};
use crate::http::json::{JsonBody, NoBody};
use crate::startup::AppState;

/// Characters of the key kept (and shown) to recognise it.
const SHOWN_PREFIX_LEN: usize = 16;

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    /// 1 to 100 characters that cannot hide or impersonate (docs/names.md).
    #[schema(example = "ci deploy")]
    pub name: String,
    /// A non-empty subset of the creator's permissions.
    #[schema(min_items = 1)]
    pub permissions: Vec<Permission>,
    /// Optional expiry, RFC 3339, in the future.
    pub expires_at: Option<String>,
}

/// The created key: `key` is shown this once and never again.
#[derive(Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret. Store it now; the server keeps only its hash.
    pub key: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

/// Create an API key acting for the caller, with some of the caller's permissions.
///
/// Permission: `keys:manage`; the key's permissions must be a subset of the caller's.
#[utoipa::path(
    operation_id = "create_api_key",
    tag = "api-keys",
    request_body = CreateApiKeyRequest,
    responses((status = 201, description = "Created; `key` is shown this once", body = CreatedApiKey), (status = 403, description = "`forbidden`: the caller lacks `keys:manage`, or a permission the key would have", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/api-keys")]
pub async fn create_api_key(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<CreateApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::KeysManage)?;
    let CreateApiKeyRequest {
        name,
        permissions,
        expires_at,
    } = body.into_inner();
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::invalid("`name` must be 1 to 100 characters."));
    }
    crate::names::check_name("`name`", &name)?;
    let permissions: PermissionSet = permissions.into_iter().collect();
    if permissions.to_vec().is_empty() {
        return Err(ApiError::invalid(
            "`permissions` must name at least one permission.",
        ));
    }
    if !permissions.is_subset(&principal.permissions) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "A key cannot have permissions its creator does not have.",
        ));
    }
    let now = crate::clock::now_ms();
    let expires_at = match expires_at {
        None => None,
        Some(s) => match crate::clock::parse_rfc3339(&s) {
            Some(t) if t > now => Some(t),
            Some(_) => return Err(ApiError::invalid("`expires_at` must be in the future.")),
            None => return Err(ApiError::invalid("`expires_at` must be an RFC 3339 time.")),
        },
    };
    let (secret, hash) = new_opaque(API_KEY_PREFIX);
    let prefix: String = secret
        .expose_secret()
        .chars()
        .take(SHOWN_PREFIX_LEN)
        .collect();
    let api_key = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let ctx = principal.audit_ctx(now);
            accounts::insert_api_key(
                conn,
                &principal.org_id,
                principal.user_id(),
                &name,
                &prefix,
                &hash,
                &permissions,
                expires_at,
                &ctx,
            )
        })
        .await?;
    Ok(HttpResponse::Created().json(CreatedApiKey {
        api_key,
        key: secret.expose_secret().to_owned(),
    }))
}

/// API keys: all of the organization's with `users:manage`, otherwise the caller's own.
///
/// Permission: `keys:manage`.
#[utoipa::path(
    operation_id = "list_api_keys",
    tag = "api-keys",
    responses((status = 200, body = [ApiKey])),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/api-keys")]
pub async fn list_api_keys(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<ApiKey>>, ApiError> {
    principal.require(Permission::KeysManage)?;
    let keys = state
        .db
        .run(move |conn| {
            let mine = (!principal.permissions.contains(Permission::UsersManage))
                .then(|| principal.user_id().to_owned());
            accounts::list_api_keys(conn, &principal.org_id, mine.as_deref())
        })
        .await?;
    Ok(web::Json(keys))
}

/// Revoke an API key; it answers 401 from the next request on.
///
/// Permission: `keys:manage` for the caller's own keys; `users:manage` for any key
/// of the organization.
#[utoipa::path(
    operation_id = "delete_api_key",
    tag = "api-keys",
    params(("id" = String, Path)),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = []), ("api_key" = []))
)]
#[delete("/api/v1/api-keys/{id}")]
pub async fn delete_api_key(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    _body: NoBody,
) -> Result<HttpResponse, ApiError> {
    principal.require(Permission::KeysManage)?;
    let id = id.into_inner();
    let now = crate::clock::now_ms();
    state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let mine = (!principal.permissions.contains(Permission::UsersManage))
                .then(|| principal.user_id().to_owned());
            let ctx = principal.audit_ctx(now);
            accounts::revoke_api_key(conn, &principal.org_id, &id, mine.as_deref(), &ctx)
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
