//! Health probes for load balancers and orchestrators. Public: they reveal only
//! liveness, readiness and the version.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::startup::AppState;

/// Status and version.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// Always `ok` when the process answers.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// The server's version.
    #[schema(example = "0.1.0")]
    pub version: &'static str,
}

/// Readiness of the server and its database.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub database: &'static str,
}

/// Status and version of the server.
///
/// Permission: none (public).
#[utoipa::path(
    operation_id = "get_health",
    tag = "health",
    responses((status = 200, description = "The server is up", body = HealthBody))
)]
#[get("/health")]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Liveness: the process is up and serving HTTP. Does not touch the database.
///
/// Permission: none (public).
#[utoipa::path(
    operation_id = "get_health_live",
    tag = "health",
    responses((status = 200, description = "The process is alive", body = HealthBody))
)]
#[get("/health/live")]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthBody {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// Readiness: the database answers within the configured timeout.
///
/// Permission: none (public).
#[utoipa::path(
    operation_id = "get_health_ready",
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = ReadyBody),
        (status = 503, description = "`not_ready`: the database did not answer within `AGENTID_READY_TIMEOUT_MS`", body = agentid_protocol::ErrorBody)
    )
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let timeout = state.config.ready_timeout;
    let answer = tokio::time::timeout(timeout, state.db.ping(timeout)).await;
    match answer {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(ReadyBody {
            status: "ready",
            database: state.db.backend().as_str(),
        })),
        Ok(Err(e)) => {
            Err(ApiError::new(ErrorCode::NotReady, "The database does not answer.").with_cause(e))
        }
        Err(_) => Err(ApiError::new(
            ErrorCode::NotReady,
            "The database did not answer in time.",
        )),
    }
}
