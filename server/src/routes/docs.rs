//! The API's own description (OpenAPI), its interactive docs, and metrics.
//!
//! The docs page and its assets are compiled into the binary and served by this
//! server: no CDN, so the docs work offline. The page loads no inline script, which
//! keeps its Content-Security-Policy strict.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpResponse};

use crate::error::ApiError;
use crate::startup::AppState;

/// CSP for the docs page: scripts and styles from this server only. Swagger UI sets
/// style attributes and uses `data:` images for its icons.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; \
form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/index.html"),
    },
    Asset {
        name: "init.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/init.js"),
    },
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/docs/swagger-ui.css"),
    },
    Asset {
        name: "favicon-32x32.png",
        content_type: "image/png",
        bytes: include_bytes!("../../assets/docs/favicon-32x32.png"),
    },
];

/// The OpenAPI 3.1 document of this server.
///
/// Permission: none (public).
#[utoipa::path(
    operation_id = "get_openapi",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
#[get("/openapi.json")]
pub async fn openapi_json(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// Prometheus metrics in the text exposition format.
///
/// Permission: none (public); expose it only to your monitoring network.
#[utoipa::path(
    operation_id = "get_metrics",
    tag = "meta",
    responses((status = 200, description = "Metrics", content_type = "text/plain"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&state.db))
}

/// `GET /` (and `HEAD /`): a temporary redirect to the interactive documentation,
/// so a person who opens the server's address lands somewhere useful.
pub async fn root() -> HttpResponse {
    HttpResponse::TemporaryRedirect()
        .insert_header((header::LOCATION, "/docs"))
        .finish()
}

/// `GET /docs`: the interactive API documentation.
pub async fn docs_index() -> HttpResponse {
    serve_asset("index.html").unwrap_or_else(|_| HttpResponse::NotFound().finish())
}

/// `GET /docs/{file}`: the docs page's assets.
pub async fn docs_asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    serve_asset(&file)
}

fn serve_asset(name: &str) -> Result<HttpResponse, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(ApiError::not_found)?;
    let cache = if asset.name == "index.html" {
        "no-cache"
    } else {
        "public, max-age=86400"
    };
    let mut response = HttpResponse::Ok()
        .content_type(asset.content_type)
        .body(asset.bytes);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}
