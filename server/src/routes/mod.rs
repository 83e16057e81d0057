//! Route registration. The OpenAPI document is generated from exactly this
//! registration, so a route cannot exist without being documented.

pub mod actions;
pub mod agents;
pub mod alerts;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod capabilities;
pub mod docs;
pub mod health;
pub mod jwks;
pub mod trust;
pub mod users;

use utoipa_actix_web::service_config::ServiceConfig;

/// Registers every documented route.
pub fn configure(cfg: &mut ServiceConfig) {
    // The router tries routes in this order and matches every templated one
    // (`/agents/{id}`) with a regular expression: the hot path comes first, so a
    // signed action is routed by one string comparison instead of ~30 regex runs
    // (5 % of the server's CPU under load, BENCHMARKS.md).
    cfg.service(actions::verify_action)
        .service(health::health)
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
        .service(audit::verify_audit_chain)
        .service(agents::create_agent)
        .service(agents::list_agents)
        .service(agents::get_agent)
        .service(agents::update_agent)
        .service(agents::suspend_agent)
        .service(agents::reactivate_agent)
        .service(agents::revoke_agent)
        .service(agents::list_agent_keys)
        .service(trust::get_agent_trust)
        .service(trust::list_agent_trust_history)
        .service(trust::create_agent_attestation)
        .service(trust::get_trust_policy)
        .service(trust::replace_trust_policy)
        .service(agents::rotate_agent_key)
        .service(agents::create_agent_challenge)
        .service(agents::verify_agent_challenge)
        .service(jwks::get_jwks)
        .service(capabilities::list_capabilities)
        .service(capabilities::create_capability)
        .service(capabilities::get_capability)
        .service(capabilities::update_capability)
        .service(capabilities::grant_capability)
        .service(capabilities::list_agent_grants)
        .service(capabilities::revoke_agent_grant)
        .service(capabilities::get_enforcement_mode)
        .service(capabilities::replace_enforcement_mode)
        .service(alerts::list_alerts)
        .service(alerts::get_alert)
        .service(alerts::acknowledge_alert)
        .service(alerts::resolve_alert);
}
