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
        description = "Identity and trust verification for AI agents. Every error answers \
            `{\"error\":{\"code\",\"message\",\"request_id\"}}` with a stable code; see docs/errors.md.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "health", description = "Liveness, readiness and version"),
        (name = "meta", description = "The API description and metrics")
    ),
    components(schemas(agentid_protocol::ErrorBody, agentid_protocol::ErrorDetail, agentid_protocol::ErrorCode))
)]
struct ApiDoc;

/// The OpenAPI document of every registered route.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_app, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    api
}

/// The document as the pretty JSON committed in `openapi/openapi.json`.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    json.push('\n');
    json
}
