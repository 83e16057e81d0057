//! Organizations, users, sessions and API keys: the storage-side rules.
//!
//! Every function takes the caller's organization id and filters by it, so a row
//! of another organization is indistinguishable from a missing one (404, never
//! 403). Every security-relevant change writes its audit record in the same
//! transaction as the change: both commit, or neither. Functions take `now` (unix
//! milliseconds) as a parameter. No function returns or logs a password hash or a
//! token hash to callers outside this module's types.

use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::{self, ActorType, NewEvent, Outcome};
use crate::auth::permissions::{PermissionSet, Role};
use crate::db::DbConn;
use crate::error::{ApiError, ErrorCode};
use crate::schema::{api_keys, organizations, refresh_tokens, users};

/// Maps a database failure, turning unique-constraint violations into 409.
pub fn db_error(error: diesel::result::Error, what: &'static str) -> ApiError {
    match error {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => ApiError::new(ErrorCode::Conflict, format!("{what} already exists.")),
        diesel::result::Error::NotFound => ApiError::not_found(),
        other => ApiError::internal(other),
    }
}

fn internal(error: diesel::result::Error) -> ApiError {
    ApiError::internal(error)
}

/// Who did it, for audit records.
#[derive(Debug, Clone, Copy)]
pub struct AuditCtx<'a> {
    pub actor_type: ActorType,
    pub actor_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub now: i64,
}

impl<'a> AuditCtx<'a> {
    /// Appends one record to `org_id`'s chain.
    pub fn record(
        &self,
        conn: &mut DbConn,
        org_id: &str,
        action: &str,
        target: Option<(&str, &str)>,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        let event = self.event(action, target, outcome, details);
        audit::append(conn, org_id, &event, self.now)
            .map(|_| ())
            .map_err(internal)
    }

    /// The event `record` would append, for appending several at once
    /// ([`audit::append_batch`]: one round trip to the chain head instead of one each).
    pub fn event(
        &self,
        action: &'a str,
        target: Option<(&'a str, &'a str)>,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> NewEvent<'a> {
        NewEvent {
            actor_type: self.actor_type,
            actor_id: self.actor_id,
            action,
            target_type: target.map(|t| t.0),
            target_id: target.map(|t| t.1),
            outcome,
            details,
            request_id: self.request_id,
        }
    }
}

/// An organization as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Organization {
    pub id: String,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A user as the API shows it (never the password hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub org_id: String,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    /// RFC 3339.
    pub created_at: String,
}

type UserRow = (String, String, String, String, bool, i64);

fn user_from_row(
    (id, org_id, email, role, disabled, created_at): UserRow,
) -> Result<User, ApiError> {
    Ok(User {
        id,
        org_id,
        email,
        role: Role::parse(&role).ok_or_else(|| ApiError::internal("unknown role in database"))?,
        disabled,
        created_at: crate::clock::rfc3339(created_at),
    })
}

const USER_COLUMNS: (
    users::id,
    users::org_id,
    users::email,
    users::role,
    users::disabled,
    users::created_at,
) = (
    users::id,
    users::org_id,
    users::email,
    users::role,
    users::disabled,
    users::created_at,
);

/// Lowercases and trims an email and checks its shape.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ApiError::invalid("`email` must be an email address."));
    }
    crate::names::check_email("`email`", &email)?;
    Ok(email)
}

/// Creates an organization, its audit chain and its first owner.
pub fn create_org_with_owner(
    conn: &mut DbConn,
    org_name: &str,
    email: &str,
    password_hash: &str,
    now: i64,
) -> Result<(Organization, User), ApiError> {
    let org_name = org_name.trim();
    if org_name.is_empty() || org_name.chars().count() > 100 {
        return Err(ApiError::invalid(
            "the organization name must be 1 to 100 characters",
        ));
    }
    crate::names::check_name("the organization name", org_name)?;
    let org_id = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(organizations::table)
        .values((
            organizations::id.eq(&org_id),
            organizations::name.eq(org_name),
            organizations::created_at.eq(now),
        ))
        .execute(conn)
        .map_err(|e| db_error(e, "An organization with this name"))?;
    audit::init_chain(conn, &org_id).map_err(internal)?;
    let ctx = AuditCtx {
        actor_type: ActorType::System,
        actor_id: None,
        request_id: None,
        now,
    };
    ctx.record(
        conn,
        &org_id,
        "org.created",
        Some(("organization", &org_id)),
        Outcome::Success,
        serde_json::json!({ "name": org_name }),
    )?;
    let user = insert_user(conn, &org_id, email, password_hash, Role::Owner, &ctx)?;
    let org = Organization {
        id: org_id,
        name: org_name.to_owned(),
        created_at: crate::clock::rfc3339(now),
    };
    Ok((org, user))
}

/// Inserts a user and audits it.
pub fn insert_user(
    conn: &mut DbConn,
    org_id: &str,
    email: &str,
    password_hash: &str,
    role: Role,
    ctx: &AuditCtx<'_>,
) -> Result<User, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(users::table)
        .values((
            users::id.eq(&id),
            users::org_id.eq(org_id),
            users::email.eq(email),
            users::password_hash.eq(password_hash),
            users::role.eq(role.as_str()),
            users::disabled.eq(false),
            users::created_at.eq(ctx.now),
            users::updated_at.eq(ctx.now),
        ))
        .execute(conn)
        .map_err(|e| db_error(e, "A user with this email"))?;
    ctx.record(
        conn,
        org_id,
        "user.created",
        Some(("user", &id)),
        Outcome::Success,
        serde_json::json!({ "email": email, "role": role.as_str() }),
    )?;
    Ok(User {
        id,
        org_id: org_id.to_owned(),
        email: email.to_owned(),
        role,
        disabled: false,
        created_at: crate::clock::rfc3339(ctx.now),
    })
}

pub fn get_org(conn: &mut DbConn, org_id: &str) -> Result<Organization, ApiError> {
    let (id, name, created_at): (String, String, i64) = organizations::table
        .filter(organizations::id.eq(org_id))
        .select((
            organizations::id,
            organizations::name,
            organizations::created_at,
        ))
        .first(conn)
        .map_err(|e| db_error(e, "organization"))?;
    Ok(Organization {
        id,
        name,
        created_at: crate::clock::rfc3339(created_at),
    })
}

pub fn list_users(conn: &mut DbConn, org_id: &str) -> Result<Vec<User>, ApiError> {
    let rows: Vec<UserRow> = users::table
        .filter(users::org_id.eq(org_id))
        .order(users::created_at.asc())
        .select(USER_COLUMNS)
        .load(conn)
        .map_err(internal)?;
    rows.into_iter().map(user_from_row).collect()
}

pub fn get_user(conn: &mut DbConn, org_id: &str, user_id: &str) -> Result<User, ApiError> {
    let row: UserRow = users::table
        .filter(users::org_id.eq(org_id))
        .filter(users::id.eq(user_id))
        .select(USER_COLUMNS)
        .first(conn)
        .map_err(|e| db_error(e, "user"))?;
    user_from_row(row)
}

/// What login needs to know about an account.
#[derive(Debug)]
pub struct LoginAccount {
    pub user_id: String,
    pub org_id: String,
    pub password_hash: String,
    pub disabled: bool,
}

pub fn find_login_account(
    conn: &mut DbConn,
    email: &str,
) -> Result<Option<LoginAccount>, ApiError> {
    let row: Option<(String, String, String, bool)> = users::table
        .filter(users::email.eq(email))
        .select((
            users::id,
            users::org_id,
            users::password_hash,
            users::disabled,
        ))
        .first(conn)
        .optional()
        .map_err(internal)?;
    Ok(
        row.map(|(user_id, org_id, password_hash, disabled)| LoginAccount {
            user_id,
            org_id,
            password_hash,
            disabled,
        }),
    )
}

pub fn password_hash_of(
    conn: &mut DbConn,
    org_id: &str,
    user_id: &str,
) -> Result<String, ApiError> {
    users::table
        .filter(users::org_id.eq(org_id))
        .filter(users::id.eq(user_id))
        .select(users::password_hash)
        .first(conn)
        .map_err(|e| db_error(e, "user"))
}

/// Changes a user's role and/or disabled flag. Disabling revokes every session.
pub fn update_user(
    conn: &mut DbConn,
    org_id: &str,
    user_id: &str,
    role: Option<Role>,
    disabled: Option<bool>,
    ctx: &AuditCtx<'_>,
) -> Result<User, ApiError> {
    let before = get_user(conn, org_id, user_id)?;
    if let Some(role) = role {
        diesel::update(
            users::table
                .filter(users::org_id.eq(org_id))
                .filter(users::id.eq(user_id)),
        )
        .set((users::role.eq(role.as_str()), users::updated_at.eq(ctx.now)))
        .execute(conn)
        .map_err(internal)?;
    }
    if let Some(disabled) = disabled {
        diesel::update(
            users::table
                .filter(users::org_id.eq(org_id))
                .filter(users::id.eq(user_id)),
        )
        .set((users::disabled.eq(disabled), users::updated_at.eq(ctx.now)))
        .execute(conn)
        .map_err(internal)?;
        if disabled {
            revoke_user_sessions(conn, user_id, None, ctx.now)?;
        }
    }
    let after = get_user(conn, org_id, user_id)?;
    ctx.record(
        conn,
        org_id,
        "user.updated",
        Some(("user", user_id)),
        Outcome::Success,
        serde_json::json!({
            "role": { "from": before.role.as_str(), "to": after.role.as_str() },
            "disabled": { "from": before.disabled, "to": after.disabled },
        }),
    )?;
    Ok(after)
}

/// Stores a new password hash and revokes every session but `keep_session`.
pub fn set_password(
    conn: &mut DbConn,
    org_id: &str,
    user_id: &str,
    password_hash: &str,
    keep_session: Option<&str>,
    ctx: &AuditCtx<'_>,
) -> Result<usize, ApiError> {
    diesel::update(
        users::table
            .filter(users::org_id.eq(org_id))
            .filter(users::id.eq(user_id)),
    )
    .set((
        users::password_hash.eq(password_hash),
        users::updated_at.eq(ctx.now),
    ))
    .execute(conn)
    .map_err(internal)?;
    let revoked = revoke_user_sessions(conn, user_id, keep_session, ctx.now)?;
    ctx.record(
        conn,
        org_id,
        "user.password_changed",
        Some(("user", user_id)),
        Outcome::Success,
        serde_json::json!({ "sessions_revoked": revoked }),
    )?;
    Ok(revoked)
}

// ---- sessions -------------------------------------------------------------

/// A session (refresh-token family) as its owner sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    /// The session id (also the `sid` claim of its access tokens).
    pub id: String,
    /// When its current refresh token was issued (login or last refresh), RFC 3339.
    pub last_refreshed_at: String,
    /// When the session ends unless refreshed, RFC 3339.
    pub expires_at: String,
    pub user_agent: Option<String>,
    pub client_address: Option<String>,
    /// Whether this is the session of the calling access token.
    pub current: bool,
}

/// Where a session was started from (for the owner's session list).
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub client_address: Option<String>,
}

/// Inserts the current refresh token of `family_id`.
#[expect(clippy::too_many_arguments, reason = "a row insert with its context")]
pub fn insert_refresh_token(
    conn: &mut DbConn,
    org_id: &str,
    user_id: &str,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
    client: &ClientInfo,
    now: i64,
) -> Result<(), ApiError> {
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::id.eq(uuid::Uuid::new_v4().to_string()),
            refresh_tokens::org_id.eq(org_id),
            refresh_tokens::user_id.eq(user_id),
            refresh_tokens::family_id.eq(family_id),
            refresh_tokens::token_hash.eq(token_hash),
            refresh_tokens::created_at.eq(now),
            refresh_tokens::expires_at.eq(expires_at),
            refresh_tokens::user_agent.eq(client.user_agent.as_deref()),
            refresh_tokens::client_address.eq(client.client_address.as_deref()),
        ))
        .execute(conn)
        .map_err(internal)?;
    Ok(())
}

/// The outcome of presenting a refresh token.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was current: it is now spent; issue the next one in this family.
    Rotated {
        org_id: String,
        user_id: String,
        family_id: String,
        client: ClientInfo,
    },
    /// The token was already spent: the whole family has been revoked.
    Reused {
        org_id: String,
        user_id: String,
        family_id: String,
    },
    /// Unknown, revoked, expired, or its user is disabled.
    Invalid,
}

/// The organization of the refresh token with hash `token_hash`, whatever its state
/// (a spent token presented again is reuse, recorded in that organization's chain).
pub fn refresh_token_org(conn: &mut DbConn, token_hash: &str) -> Result<Option<String>, ApiError> {
    refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select(refresh_tokens::org_id)
        .first(conn)
        .optional()
        .map_err(internal)
}

/// Spends a refresh token. Exactly one of several concurrent presentations of the
/// same token can rotate it; the others count as reuse.
pub fn spend_refresh_token(
    conn: &mut DbConn,
    token_hash: &str,
    now: i64,
) -> Result<RefreshOutcome, ApiError> {
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = refresh_tokens::table
        .filter(refresh_tokens::token_hash.eq(token_hash))
        .select((
            refresh_tokens::id,
            refresh_tokens::org_id,
            refresh_tokens::user_id,
            refresh_tokens::family_id,
            refresh_tokens::expires_at,
            refresh_tokens::used_at,
            refresh_tokens::revoked_at,
            refresh_tokens::user_agent,
            refresh_tokens::client_address,
        ))
        .first(conn)
        .optional()
        .map_err(internal)?;
    let Some((
        id,
        org_id,
        user_id,
        family_id,
        expires_at,
        used_at,
        revoked_at,
        user_agent,
        client_address,
    )) = row
    else {
        return Ok(RefreshOutcome::Invalid);
    };
    if revoked_at.is_some() {
        return Ok(RefreshOutcome::Invalid);
    }
    if used_at.is_some() {
        revoke_family(conn, &family_id, now)?;
        return Ok(RefreshOutcome::Reused {
            org_id,
            user_id,
            family_id,
        });
    }
    if expires_at <= now {
        return Ok(RefreshOutcome::Invalid);
    }
    let spent = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::id.eq(&id))
            .filter(refresh_tokens::used_at.is_null()),
    )
    .set(refresh_tokens::used_at.eq(now))
    .execute(conn)
    .map_err(internal)?;
    if spent != 1 {
        revoke_family(conn, &family_id, now)?;
        return Ok(RefreshOutcome::Reused {
            org_id,
            user_id,
            family_id,
        });
    }
    let disabled: bool = users::table
        .filter(users::id.eq(&user_id))
        .select(users::disabled)
        .first(conn)
        .map_err(internal)?;
    if disabled {
        return Ok(RefreshOutcome::Invalid);
    }
    Ok(RefreshOutcome::Rotated {
        org_id,
        user_id,
        family_id,
        client: ClientInfo {
            user_agent,
            client_address,
        },
    })
}

/// Revokes every token of a session.
pub fn revoke_family(conn: &mut DbConn, family_id: &str, now: i64) -> Result<usize, ApiError> {
    diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
    .map_err(internal)
}

/// Revokes one of `user_id`'s sessions; false when it has no such live session.
pub fn revoke_own_session(
    conn: &mut DbConn,
    user_id: &str,
    family_id: &str,
    now: i64,
) -> Result<bool, ApiError> {
    let n = diesel::update(
        refresh_tokens::table
            .filter(refresh_tokens::user_id.eq(user_id))
            .filter(refresh_tokens::family_id.eq(family_id))
            .filter(refresh_tokens::revoked_at.is_null()),
    )
    .set(refresh_tokens::revoked_at.eq(now))
    .execute(conn)
    .map_err(internal)?;
    Ok(n > 0)
}

/// Revokes every session of `user_id` except `keep`; returns how many tokens.
pub fn revoke_user_sessions(
    conn: &mut DbConn,
    user_id: &str,
    keep: Option<&str>,
    now: i64,
) -> Result<usize, ApiError> {
    let target = refresh_tokens::table
        .filter(refresh_tokens::user_id.eq(user_id))
        .filter(refresh_tokens::revoked_at.is_null());
    let n = match keep {
        Some(keep) => diesel::update(target.filter(refresh_tokens::family_id.ne(keep)))
            .set(refresh_tokens::revoked_at.eq(now))
            .execute(conn),
        None => diesel::update(target)
            .set(refresh_tokens::revoked_at.eq(now))
            .execute(conn),
    };
    n.map_err(internal)
}

/// The live sessions of a user.
pub fn list_sessions(
    conn: &mut DbConn,
    user_id: &str,
    current: &str,
    now: i64,
) -> Result<Vec<Session>, ApiError> {
    type SessionRow = (String, i64, i64, Option<String>, Option<String>);
    let rows: Vec<SessionRow> = refresh_tokens::table
        .filter(refresh_tokens::user_id.eq(user_id))
        .filter(refresh_tokens::revoked_at.is_null())
        .filter(refresh_tokens::used_at.is_null())
        .filter(refresh_tokens::expires_at.gt(now))
        .order(refresh_tokens::created_at.desc())
        .select((
            refresh_tokens::family_id,
            refresh_tokens::created_at,
            refresh_tokens::expires_at,
            refresh_tokens::user_agent,
            refresh_tokens::client_address,
        ))
        .load(conn)
        .map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(
            |(id, created, expires, user_agent, client_address)| Session {
                current: id == current,
                id,
                last_refreshed_at: crate::clock::rfc3339(created),
                expires_at: crate::clock::rfc3339(expires),
                user_agent,
                client_address,
            },
        )
        .collect())
}

// ---- API keys -------------------------------------------------------------

/// An API key as listed (never the secret or its hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub permissions: Vec<crate::auth::permissions::Permission>,
    /// The user accountable for the key.
    pub created_by: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
}

type KeyRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn key_from_row(
    (id, name, prefix, permissions, created_by, created_at, expires_at, revoked_at, last_used_at): KeyRow,
) -> ApiKey {
    ApiKey {
        id,
        name,
        prefix,
        permissions: PermissionSet::from_storage(&permissions).to_vec(),
        created_by,
        created_at: crate::clock::rfc3339(created_at),
        expires_at: expires_at.map(crate::clock::rfc3339),
        revoked_at: revoked_at.map(crate::clock::rfc3339),
        last_used_at: last_used_at.map(crate::clock::rfc3339),
    }
}

/// Stores a new API key (by hash) and audits it.
#[expect(clippy::too_many_arguments, reason = "a row insert with its context")]
pub fn insert_api_key(
    conn: &mut DbConn,
    org_id: &str,
    created_by: &str,
    name: &str,
    prefix: &str,
    key_hash: &str,
    permissions: &PermissionSet,
    expires_at: Option<i64>,
    ctx: &AuditCtx<'_>,
) -> Result<ApiKey, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::id.eq(&id),
            api_keys::org_id.eq(org_id),
            api_keys::created_by.eq(created_by),
            api_keys::name.eq(name),
            api_keys::prefix.eq(prefix),
            api_keys::key_hash.eq(key_hash),
            api_keys::permissions.eq(permissions.to_storage()),
            api_keys::created_at.eq(ctx.now),
            api_keys::expires_at.eq(expires_at),
        ))
        .execute(conn)
        .map_err(internal)?;
    ctx.record(
        conn,
        org_id,
        "api_key.created",
        Some(("api_key", &id)),
        Outcome::Success,
        serde_json::json!({ "name": name, "prefix": prefix, "permissions": permissions.to_vec(), "expires_at": expires_at.map(crate::clock::rfc3339) }),
    )?;
    Ok(ApiKey {
        id,
        name: name.to_owned(),
        prefix: prefix.to_owned(),
        permissions: permissions.to_vec(),
        created_by: created_by.to_owned(),
        created_at: crate::clock::rfc3339(ctx.now),
        expires_at: expires_at.map(crate::clock::rfc3339),
        revoked_at: None,
        last_used_at: None,
    })
}

/// Keys of the organization; only `created_by`'s when given.
pub fn list_api_keys(
    conn: &mut DbConn,
    org_id: &str,
    created_by: Option<&str>,
) -> Result<Vec<ApiKey>, ApiError> {
    let mut query = api_keys::table
        .filter(api_keys::org_id.eq(org_id))
        .order(api_keys::created_at.asc())
        .select((
            api_keys::id,
            api_keys::name,
            api_keys::prefix,
            api_keys::permissions,
            api_keys::created_by,
            api_keys::created_at,
            api_keys::expires_at,
            api_keys::revoked_at,
            api_keys::last_used_at,
        ))
        .into_boxed();
    if let Some(user) = created_by {
        query = query.filter(api_keys::created_by.eq(user.to_owned()));
    }
    let rows: Vec<KeyRow> = query.load(conn).map_err(internal)?;
    Ok(rows.into_iter().map(key_from_row).collect())
}

/// Revokes a key of the organization (only `created_by`'s when given). 404 when
/// there is no such key visible to the caller; revoking twice is harmless.
pub fn revoke_api_key(
    conn: &mut DbConn,
    org_id: &str,
    key_id: &str,
    created_by: Option<&str>,
    ctx: &AuditCtx<'_>,
) -> Result<(), ApiError> {
    let visible = list_api_keys(conn, org_id, created_by)?
        .into_iter()
        .any(|k| k.id == key_id);
    if !visible {
        return Err(ApiError::not_found());
    }
    let n = diesel::update(
        api_keys::table
            .filter(api_keys::org_id.eq(org_id))
            .filter(api_keys::id.eq(key_id))
            .filter(api_keys::revoked_at.is_null()),
    )
    .set(api_keys::revoked_at.eq(ctx.now))
    .execute(conn)
    .map_err(internal)?;
    if n > 0 {
        ctx.record(
            conn,
            org_id,
            "api_key.revoked",
            Some(("api_key", key_id)),
            Outcome::Success,
            serde_json::json!({}),
        )?;
    }
    Ok(())
}
