//! HTTP plumbing shared by every route: the outer middleware, extractor error
//! handling, and the answers for unknown paths and wrong methods.

pub mod client;
pub mod healthcheck;
pub mod json;
pub mod middleware;
pub mod ratelimit;
pub mod tls;

use actix_web::dev::ResourceDef;
use actix_web::error::{PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use crate::error::{default_message, ApiError, ErrorCode};

/// Query-string extractor settings with errors in the common envelope.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _req| {
        ApiError::invalid(format!("The query string is not valid: {error}")).into()
    })
}

/// Path extractor settings with errors in the common envelope.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _req| {
        ApiError::invalid(format!("The address is not valid: {error}")).into()
    })
}

/// The path templates the application serves and the methods each accepts,
/// taken from the OpenAPI document (which is generated from route registration).
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<(ResourceDef, Vec<Method>)>,
}

impl RouteTable {
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> RouteTable {
        let mut routes = Vec::new();
        for (path, item) in &api.paths.paths {
            let mut methods = Vec::new();
            let ops = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in ops {
                if op.is_some() {
                    methods.push(method);
                }
            }
            routes.push((ResourceDef::new(path.as_str()), methods));
        }
        RouteTable { routes }
    }

    /// The methods accepted at `path`, if any route matches it.
    fn allowed(&self, path: &str) -> Option<Vec<Method>> {
        let mut found: Option<Vec<Method>> = None;
        for (def, methods) in &self.routes {
            if def.is_match(path) {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(methods.iter().cloned());
            }
        }
        found
    }
}

/// Answers requests no route took: 405 with `Allow` when the path exists under
/// another method, 404 otherwise.
pub async fn fallback(req: HttpRequest, table: web::Data<RouteTable>) -> HttpResponse {
    match table.allowed(req.path()) {
        Some(methods) => {
            let mut response = ApiError::new(
                ErrorCode::MethodNotAllowed,
                default_message(ErrorCode::MethodNotAllowed),
            )
            .error_response();
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            response
        }
        None => ApiError::not_found().error_response(),
    }
}
