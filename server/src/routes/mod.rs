//! Route registration. The OpenAPI document is generated from exactly this
//! registration, so a route cannot exist without being documented.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod docs;
pub mod health;
pub mod users;

use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every documented route.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(health::health)
        .service(health::live)
        .service(health::ready)
        .service(docs::metrics)
        .service(docs::openapi_json)
        .service(auth::login)
        .service(auth::refresh)
        .service(auth::logout)
        .service(auth::list_sessions)
        .service(auth::delete_session)
        .service(auth::change_password)
        .service(auth::me)
        .service(users::get_organization)
        .service(users::list_users)
        .service(users::get_user)
        .service(users::create_user)
        .service(users::update_user)
        .service(api_keys::create_api_key)
        .service(api_keys::list_api_keys)
        .service(api_keys::delete_api_key)
        .service(audit::list_audit_records)
        .service(audit::verify_audit_chain);
}
