//! Users of the caller's organization.

use actix_web::{get, patch, post, web};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::accounts::{self, Organization, User};
use crate::auth::password;
use crate::auth::permissions::{Permission, Role};
use crate::auth::principal::{Actor, Principal};
use crate::error::{ApiError, ErrorCode};
use crate::http::json::JsonBody;
use crate::startup::AppState;

/// A new user.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Unique across the service; stored lowercased. No control, invisible or
    /// bidirectional-control characters, NFKC form, one script per part (docs/names.md).
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    pub role: Role,
}

/// Changes to a user; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

fn caller_role(principal: &Principal, conn: &mut crate::db::DbConn) -> Result<Role, ApiError> {
    match &principal.actor {
        Actor::User { role, .. } => Ok(*role),
        Actor::ApiKey { owner_id, .. } => {
            Ok(accounts::get_user(conn, &principal.org_id, owner_id)?.role)
        }
    }
}

/// The caller's organization.
///
/// Permission: any authenticated caller.
#[utoipa::path(
    operation_id = "get_organization",
    tag = "users",
    responses((status = 200, body = Organization)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/organization")]
pub async fn get_organization(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<Organization>, ApiError> {
    let org = state
        .db
        .run(move |conn| accounts::get_org(conn, &principal.org_id))
        .await?;
    Ok(web::Json(org))
}

/// Users of the organization.
///
/// Permission: `users:read`.
#[utoipa::path(
    operation_id = "list_users",
    tag = "users",
    responses((status = 200, body = [User])),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/users")]
pub async fn list_users(
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<web::Json<Vec<User>>, ApiError> {
    principal.require(Permission::UsersRead)?;
    let users = state
        .db
        .run(move |conn| accounts::list_users(conn, &principal.org_id))
        .await?;
    Ok(web::Json(users))
}

/// One user of the organization.
///
/// Permission: `users:read`.
#[utoipa::path(
    operation_id = "get_user",
    tag = "users",
    params(("id" = String, Path)),
    responses((status = 200, body = User)),
    security(("bearer" = []), ("api_key" = []))
)]
#[get("/api/v1/users/{id}")]
pub async fn get_user(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<web::Json<User>, ApiError> {
    principal.require(Permission::UsersRead)?;
    let id = id.into_inner();
    let user = state
        .db
        .run(move |conn| accounts::get_user(conn, &principal.org_id, &id))
        .await?;
    Ok(web::Json(user))
}

/// Add a user to the organization.
///
/// Permission: `users:manage`; only owners may create owners.
#[utoipa::path(
    operation_id = "create_user",
    tag = "users",
    request_body = CreateUserRequest,
    responses(
        (status = 201, body = User),
        (status = 400, description = "`weak_password`: the password breaks the policy; the message says which rule", body = agentid_protocol::ErrorBody),
        (status = 403, description = "`forbidden`: the caller lacks `users:manage`, or its role cannot give that role", body = agentid_protocol::ErrorBody),
        (status = 409, description = "`conflict`: the email is taken", body = agentid_protocol::ErrorBody)
    ),
    security(("bearer" = []), ("api_key" = []))
)]
#[post("/api/v1/users")]
pub async fn create_user(
    principal: Principal,
    state: web::Data<AppState>,
    body: JsonBody<CreateUserRequest>,
) -> Result<actix_web::HttpResponse, ApiError> {
    principal.require(Permission::UsersManage)?;
    let CreateUserRequest {
        email,
        password: candidate,
        role,
    } = body.into_inner();
    let email = accounts::normalize_email(&email)?;
    let password = password::validate(candidate.expose_secret(), &email)
        .map_err(|e| ApiError::new(ErrorCode::WeakPassword, e.to_string()))?;
    let cost = state.config.bcrypt_cost;
    let hash = web::block(move || password::hash(&password, cost))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let now = crate::clock::now_ms();
    let user = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            if !caller_role(&principal, conn)?.may_assign(role) {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "Your role cannot give that role.",
                ));
            }
            let ctx = principal.audit_ctx(now);
            accounts::insert_user(conn, &principal.org_id, &email, &hash, role, &ctx)
        })
        .await?;
    Ok(actix_web::HttpResponse::Created().json(user))
}

/// Change a user's role or disable them. Takes effect on the user's next request;
/// disabling also revokes every session of the user.
///
/// Permission: `users:manage`; only owners may change owners or make owners; no
/// one changes their own role or disables themselves.
#[utoipa::path(
    operation_id = "update_user",
    tag = "users",
    params(("id" = String, Path)),
    request_body = UpdateUserRequest,
    responses((status = 200, body = User), (status = 403, description = "`forbidden`: the caller lacks `users:manage`, the change is beyond its role, or it is the caller itself", body = agentid_protocol::ErrorBody)),
    security(("bearer" = []), ("api_key" = []))
)]
#[patch("/api/v1/users/{id}")]
pub async fn update_user(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: JsonBody<UpdateUserRequest>,
) -> Result<web::Json<User>, ApiError> {
    principal.require(Permission::UsersManage)?;
    let id = id.into_inner();
    let UpdateUserRequest { role, disabled } = body.into_inner();
    let now = crate::clock::now_ms();
    let user = state
        .writer
        .write(principal.org_id.clone(), move |conn| {
            let target = accounts::get_user(conn, &principal.org_id, &id)?;
            if target.id == principal.user_id() {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "You cannot change your own role or disable yourself.",
                ));
            }
            let mine = caller_role(&principal, conn)?;
            let allowed = mine.may_assign(target.role) && role.is_none_or(|r| mine.may_assign(r));
            if !allowed {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "Your role cannot change this user that way.",
                ));
            }
            let ctx = principal.audit_ctx(now);
            accounts::update_user(conn, &principal.org_id, &id, role, disabled, &ctx)
        })
        .await?;
    Ok(web::Json(user))
}
