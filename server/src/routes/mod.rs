//! Route registration. The OpenAPI document is generated from exactly this
//! registration, so a route cannot exist without being documented.

pub mod docs;
pub mod health;

use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every documented route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::health)
        .service(health::live)
        .service(health::ready)
        .service(docs::metrics)
        .service(docs::openapi_json);
}
