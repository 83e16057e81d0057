//! The OpenAPI document, generated from route registration.
//!
//! [`document`] registers the same routes the server serves (through
//! `routes::configure`) on a throwaway app and keeps only the description, so
//! the document and the routes cannot drift apart. `openapi/openapi.json` is this
//! document, committed; a test fails when they differ.

use actix_web::App;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentid",
        description = "Identity and trust verification for AI agents.\n\n\
            **The first account.** There is no sign-up endpoint: the first organization and \
            its owner are created on the server's machine with \
            `agentid-server admin create-owner --org NAME --email EMAIL` (the password is \
            read from standard input). The owner logs in with `POST /api/v1/auth/login` \
            (a short-lived access token) and creates API keys for programs and agents with \
            `POST /api/v1/api-keys` (`agentid_sk_...`, shown once). The README's \
            \"First hour\" walks through it.\n\n\
            **Authorize.** Paste an access token or an API key into **bearer** (sent as \
            `Authorization: Bearer ...`); **api_key** takes an API key only (sent as \
            `X-API-Key`). One of them is enough. Signed actions, challenges and key \
            rotations need neither: the agent's signature is the credential.\n\n\
            Every error answers `{\"error\":{\"code\",\"message\",\"request_id\"}}` with a \
            stable code; see docs/errors.md.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "health", description = "Liveness, readiness and version"),
        (name = "meta", description = "The API description and metrics"),
        (name = "auth", description = "Login, sessions and the caller's identity"),
        (name = "users", description = "The organization and its users"),
        (name = "api-keys", description = "API keys for programs"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "agents", description = "Agents: registration, proof of possession, lifecycle and key rotation"),
        (name = "actions", description = "Signed actions: verify and decide (the hot path)"),
        (name = "capabilities", description = "The capability catalogue, agents' grants and the enforcement mode"),
        (name = "alerts", description = "Security alerts: list, acknowledge, resolve"),
        (name = "trust", description = "Trust scores explained, their history, attestations and the trust policy"),
        (name = "keys", description = "The server's public signing keys (JWKS)")
    ),
    modifiers(&SecuritySchemes),
    components(schemas(
        agentid_protocol::ErrorBody,
        agentid_protocol::ErrorDetail,
        agentid_protocol::ErrorCode,
        // Named only by query parameters, which utoipa does not collect.
        crate::audit::Outcome,
    ))
)]
struct ApiDoc;

/// Declares the two ways to authenticate.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A user access token from /api/v1/auth/login, or an API key",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The OpenAPI document of every registered route.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_app, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    let mut api = api;
    document_rate_limits(&mut api);
    api
}

/// Every `/api/v1` operation may answer `429 rate_limited` (docs/rate-limits.md);
/// operations that say more about it keep their own description.
fn document_rate_limits(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (path, item) in api.paths.paths.iter_mut() {
        if !path.starts_with("/api/v1/") {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation
                .responses
                .responses
                .entry("429".to_owned())
                .or_insert_with(|| {
                    ResponseBuilder::new()
                        .description(
                            "rate_limited: over a rate limit of this route class (docs/rate-limits.md); \
                             see Retry-After and the RateLimit headers",
                        )
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .build()
                        .into()
                });
        }
    }
}

/// The document as the pretty JSON committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    json.push('\n');
    json
}
