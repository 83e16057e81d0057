//! The OpenAPI document, generated from route registration.
//!
//! [`document`] registers the same routes the server serves (through
//! `routes::configure`) on a throwaway app and keeps only the description, so
//! the document and the routes cannot drift apart. `openapi/openapi.json` is this
//! document, committed; a test fails when they differ.

use std::collections::BTreeMap;

use actix_web::App;
use agentid_protocol::ErrorCode;
use utoipa::openapi::path::Operation;
use utoipa::openapi::RefOr;
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
    for (path, item) in api.paths.paths.iter_mut() {
        for (takes_body, operation) in [
            (false, &mut item.get),
            (true, &mut item.put),
            (true, &mut item.post),
            (true, &mut item.delete),
            (true, &mut item.patch),
        ] {
            let Some(operation) = operation else {
                continue;
            };
            optional_means_absent_not_null(operation);
            no_control_characters_in_the_address(operation);
            document_errors(path, takes_body, operation);
        }
    }
    api
}

/// An optional body or query parameter (`Option<T>` in the handler) is documented as
/// "T, or absent": utoipa says "T or `null`", and there is no `null` query value, nor
/// a `null` body the server takes.
fn optional_means_absent_not_null(operation: &mut Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::Required;
    if let Some(body) = operation.request_body.as_mut() {
        if body.required != Some(Required::True) {
            body.required = Some(Required::False);
            for content in body.content.values_mut() {
                if let Some(schema) = content.schema.as_mut() {
                    drop_null(schema);
                }
            }
        }
    }
    for parameter in operation.parameters.iter_mut().flatten() {
        if parameter.parameter_in == ParameterIn::Query && parameter.required == Required::False {
            if let Some(schema) = parameter.schema.as_mut() {
                drop_null(schema);
            }
        }
    }
}

/// No path or query value may contain a control character (the envelope middleware
/// refuses one percent-encoded with 400 `invalid_request`): string parameters say so.
fn no_control_characters_in_the_address(operation: &mut Operation) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    for parameter in operation.parameters.iter_mut().flatten() {
        if let Some(RefOr::T(Schema::Object(object))) = parameter.schema.as_mut() {
            if object.schema_type == SchemaType::Type(Type::String) && object.pattern.is_none() {
                object.pattern = Some(NO_CONTROL_CHARACTERS.to_owned());
            }
        }
    }
}

/// A string of no C0 or C1 control character, nor DEL.
pub const NO_CONTROL_CHARACTERS: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// `T | null` becomes `T`.
fn drop_null(schema: &mut RefOr<utoipa::openapi::schema::Schema>) {
    use utoipa::openapi::schema::{Schema, SchemaType, Type};
    let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
    match schema {
        RefOr::T(Schema::OneOf(one_of)) => {
            let mut others = one_of.items.iter().filter(|s| !is_null(s));
            if let (Some(only), None) = (others.next(), others.next()) {
                *schema = only.clone();
            }
        }
        RefOr::T(Schema::Object(object)) => {
            if let SchemaType::Array(types) = &object.schema_type {
                let kept: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                object.schema_type = match kept.as_slice() {
                    [only] => SchemaType::Type(only.clone()),
                    _ => SchemaType::Array(kept),
                };
            }
        }
        _ => {}
    }
}

/// What an operation is, as far as the errors it can answer go.
struct Kind {
    /// Under `/api/v1`: rate limited, and served from the database.
    api: bool,
    /// Needs an access token or API key.
    secured: bool,
    /// Needs a permission (or a user session) beyond being authenticated.
    permission: bool,
    /// Takes a JSON body (a signed envelope counts separately).
    json_body: bool,
    /// Takes a signed envelope (`docs/protocol.md`), read by the protocol's parser.
    envelope_body: bool,
    /// Has path parameters naming a resource.
    path_params: bool,
    /// Has query parameters.
    query_params: bool,
    /// A method that may carry a body, but the operation takes none: a body sent is
    /// refused (`http::json::NoBody`).
    refuses_body: bool,
}

impl Kind {
    fn of(path: &str, method_takes_body: bool, operation: &Operation) -> Kind {
        use utoipa::openapi::path::ParameterIn;
        let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
        let body_schemas = operation
            .request_body
            .iter()
            .flat_map(|b| b.content.values())
            .filter_map(|c| c.schema.as_ref())
            .collect::<Vec<_>>();
        let envelope_body = body_schemas
            .iter()
            .any(|s| matches!(s, RefOr::Ref(r) if r.ref_location == ENVELOPE_REF));
        Kind {
            api: path.starts_with("/api/v1/"),
            secured,
            permission: secured
                && !operation
                    .description
                    .as_deref()
                    .unwrap_or_default()
                    .contains(ANY_CALLER),
            json_body: !body_schemas.is_empty() && !envelope_body,
            envelope_body,
            path_params: operation
                .parameters
                .iter()
                .flatten()
                .any(|p| p.parameter_in == ParameterIn::Path),
            query_params: operation
                .parameters
                .iter()
                .flatten()
                .any(|p| p.parameter_in == ParameterIn::Query),
            refuses_body: method_takes_body && operation.request_body.is_none(),
        }
    }

    /// The error codes an operation of this kind can answer, and when.
    fn errors(&self) -> Vec<(ErrorCode, &'static str)> {
        let mut errors = Vec::new();
        if self.json_body {
            errors.push((ErrorCode::InvalidJson, "the body is not well-formed JSON"));
        }
        if self.envelope_body {
            errors.push((
                ErrorCode::InvalidEnvelope,
                "the envelope or its payload breaks docs/protocol.md; the message starts with the protocol error code",
            ));
        }
        errors.push((
            ErrorCode::InvalidRequest,
            if self.json_body || self.envelope_body {
                "a value of the body, path or query string is not acceptable (wrong type, out of range, a percent-encoded control character); the message says which"
            } else if self.refuses_body {
                "a body was sent (this operation takes none), or a path value is not acceptable (a percent-encoded control character); the message says which"
            } else if self.query_params || self.path_params {
                "a path or query parameter is not acceptable (wrong type, out of range, a percent-encoded control character); the message says which"
            } else {
                "the address percent-encodes a control character"
            },
        ));
        if self.secured {
            errors.push((
                ErrorCode::Unauthorized,
                "no valid access token or API key: missing, malformed, expired or revoked (`WWW-Authenticate: Bearer`)",
            ));
        }
        if self.permission {
            errors.push((
                ErrorCode::Forbidden,
                "the credential lacks what this operation needs (its Permission note); the message names it",
            ));
        }
        if self.path_params {
            errors.push((
                ErrorCode::NotFound,
                "nothing has this id, or it belongs to another organization",
            ));
        }
        errors.push((
            ErrorCode::PayloadTooLarge,
            "the body is larger than `AGENTID_BODY_LIMIT_BYTES`",
        ));
        if self.json_body || self.envelope_body {
            errors.push((
                ErrorCode::UnsupportedMediaType,
                "a body not sent as `application/json`",
            ));
        }
        if self.api {
            errors.push((
                ErrorCode::RateLimited,
                "over a rate limit (docs/rate-limits.md); see `Retry-After` and the `RateLimit` headers",
            ));
        }
        errors.push((
            ErrorCode::InternalError,
            "an unexpected failure; the cause is in the server log under the request id",
        ));
        errors.push((
            ErrorCode::RequestTimeout,
            "the request ran longer than `AGENTID_REQUEST_TIMEOUT_MS` and was stopped; `Retry-After` is set",
        ));
        if self.api {
            errors.push((
                ErrorCode::DatabaseUnavailable,
                "no database connection within `AGENTID_DB_POOL_TIMEOUT_MS`; retry later",
            ));
        }
        errors
    }
}

/// The schema every request body that is a signed envelope refers to.
const ENVELOPE_REF: &str = "#/components/schemas/Envelope";

/// The permission note of operations any authenticated caller may use.
const ANY_CALLER: &str = "Permission: any authenticated caller";

/// Lists every error status the operation can answer, each with the codes (docs/errors.md)
/// and the error envelope: the ones its kind implies (see [`Kind::errors`]), added to
/// those its handler declares. A handler's own description comes first.
fn document_errors(path: &str, method_takes_body: bool, operation: &mut Operation) {
    use utoipa::openapi::{ContentBuilder, Ref, Response};
    let kind = Kind::of(path, method_takes_body, operation);
    let mut by_status: BTreeMap<u16, Vec<(ErrorCode, &'static str)>> = BTreeMap::new();
    for (code, when) in kind.errors() {
        by_status
            .entry(code.http_status())
            .or_default()
            .push((code, when));
    }
    for (status, errors) in by_status {
        let entry = operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Response::new("")));
        let RefOr::T(response) = entry else {
            continue;
        };
        let mut lines = Vec::new();
        let own = response.description.trim().trim_end_matches('.');
        if !own.is_empty() {
            lines.push(format!("{own}."));
        }
        for (code, when) in errors {
            if !own.contains(code.as_str()) {
                lines.push(format!("`{}`: {when}.", code.as_str()));
            }
        }
        response.description = lines.join("\n\n");
    }
    // Every error answer, declared by the handler or added above, is the envelope.
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if status.starts_with('4') || status.starts_with('5') {
            response.content.insert(
                "application/json".to_owned(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            );
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
