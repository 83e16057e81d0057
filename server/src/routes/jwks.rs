//! The server's public signing keys, for relying parties that verify agent tokens and
//! decision receipts offline. Public: it serves only public keys, never anything
//! from which a private key could be recovered.

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};

use crate::error::ApiError;
use crate::startup::AppState;

/// How long relying parties and caches may keep the key set, in seconds. Far shorter
/// than a rotation period, and the next key is published a full period ahead, so a
/// cached copy always holds the key that signs next.
pub const JWKS_MAX_AGE_SECS: u32 = 300;

/// The server's public signing keys (JWK Set).
///
/// The key signing now, the next one (published a full rotation period before it
/// signs), and older keys until everything they signed has expired (RFC 7517). Each
/// `kid` is the key's RFC 7638 thumbprint. Verify agent tokens and decision receipts
/// with `alg` EdDSA only; see docs/tokens.md.
///
/// Permission: none (public).
#[utoipa::path(
    operation_id = "get_jwks",
    tag = "keys",
    responses(
        (
            status = 200,
            description = "The published signing keys",
            body = agentid_protocol::tokens::Jwks,
            headers(("Cache-Control" = String, description = "`public, max-age=300`"))
        ),
        (status = 500, description = "`internal_error`: the keys could not be derived", body = agentid_protocol::ErrorBody)
    )
)]
#[get("/.well-known/jwks.json")]
pub async fn get_jwks(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let now_secs = crate::clock::now_ms().div_euclid(1_000);
    let json = state
        .signing
        .jwks_json(now_secs)
        .map_err(ApiError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={JWKS_MAX_AGE_SECS}"),
        ))
        .body(json.to_string()))
}
