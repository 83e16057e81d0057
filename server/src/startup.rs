//! Assembling and running the server.
//!
//! [`Application::build`] turns a [`Config`] into a bound, ready-to-run server: it
//! opens the database, applies migrations, binds the listener (port 0 picks a free
//! port, reported by [`Application::address`]) and wires every route and middleware.
//! `main` and the tests both start the server through it.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::{header, Method};
use actix_web::{middleware, web, App, HttpServer};
use utoipa_actix_web::AppExt;

use crate::auth::limiter::{LimiterConfig, LoginLimiter};
use crate::auth::tokens::AccessTokens;
use crate::config::{Config, SecretSource};
use crate::db::{Checkpointer, Database, DbError};
use crate::decisions::{KeyCache, Writer, WriterSettings};
use crate::http::middleware::{envelope, HttpSettings};
use crate::http::{self, RouteTable};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::signing::KeyRing;
use crate::{openapi, routes};

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub db: Database,
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once at start.
    pub openapi_json: String,
    pub access_tokens: AccessTokens,
    pub login_limiter: LoginLimiter,
    /// The server's own signing keys (agent tokens, receipts, JWKS).
    pub signing: KeyRing,
    /// The single writer that records signed-action decisions and every change,
    /// batched (docs/hot-path.md).
    pub writer: Writer,
    /// Agents' current keys, for verifying without a database round trip.
    pub key_cache: KeyCache,
    /// Request rate limits (in-process, or shared through Redis).
    pub rate_limiter: RateLimiter,
    /// Proof-of-possession challenges (minted, not stored).
    pub challenges: crate::challenges::Challenges,
    /// When this process last recorded each API key's use.
    pub key_touches: crate::auth::principal::KeyTouches,
    /// SQLite: the WAL checkpointer thread, stopped when the state is dropped.
    _checkpointer: Option<Checkpointer>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[from] DbError),
    #[error("cannot start the decision writer: {0}")]
    Writer(std::io::Error),
    #[error("rate limits: {0}")]
    RateLimits(#[from] crate::ratelimit::RedisSetupError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
    #[error("cannot listen on {addr}: {source}; {}", bind_hint(source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What to do about a failed bind, naming the variable that sets the address.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "another process holds this port: stop it, or set AGENTID_LISTEN to another address and port (port 0 picks a free one)"
        }
        _ => "the address comes from AGENTID_LISTEN",
    }
}

/// A server bound to its address, not yet running.
pub struct Application {
    server: Server,
    address: SocketAddr,
    state: web::Data<AppState>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .finish()
    }
}

impl Application {
    /// Opens storage, applies migrations and binds the listener.
    pub fn build(config: Config) -> Result<Application, StartError> {
        let metrics = Metrics::new();
        let (db, checkpointer) = Database::connect_serving(&config.database, metrics.clone())?;
        let applied = db.migrate()?;
        tracing::info!(
            db.backend = db.backend().as_str(),
            migrations.applied = applied,
            "database ready"
        );
        if let SecretSource::GeneratedFile(path) = &config.secret_source {
            tracing::warn!(
                secret.path = %path.display(),
                "development mode: using a generated secret key kept in the data directory; set AGENTID_SECRET_KEY and AGENTID_ENV=production for real deployments"
            );
        }

        let listener = TcpListener::bind(config.listen).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let address = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        // Port 0 picks a free port; a public URL defaulted from the listen address
        // must name the port actually bound, or every audience check would fail.
        let mut config = config;
        if config.listen.port() == 0 {
            for scheme in ["http", "https"] {
                if config.public_url == format!("{scheme}://{}", config.listen) {
                    config.public_url = format!("{scheme}://{address}");
                }
            }
        }

        let api = openapi::document();
        let route_table = web::Data::new(RouteTable::from_openapi(&api));
        let settings = web::Data::new(HttpSettings {
            body_limit: config.body_limit,
            request_timeout: config.request_timeout,
            metrics: metrics.clone(),
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            tls: config.tls.is_some(),
        });
        let tls = match &config.tls {
            Some(files) => Some(crate::http::tls::server_config(&files.cert, &files.key)?),
            None => None,
        };
        let rate_limiter = RateLimiter::new(
            config.rate_limits.clone(),
            config.redis.as_ref(),
            metrics.clone(),
        )?;
        // Warm the dummy hash so the first unknown-email login costs no extra time.
        crate::auth::password::prepare_dummy(config.bcrypt_cost);
        let signing = KeyRing::new(
            &config.secret_key,
            &config.public_url,
            config.signing_key_rotation_secs,
            config.agent_token_ttl_secs.max(config.receipt_ttl_secs),
        );
        let writer = Writer::start(
            db.clone(),
            WriterSettings {
                max_age_secs: config.action_max_age_secs,
                max_skew_secs: config.action_max_skew_secs,
            },
            metrics.clone(),
        )
        .map_err(StartError::Writer)?;
        let state = web::Data::new(AppState {
            signing,
            writer,
            key_cache: KeyCache::default(),
            key_touches: Default::default(),
            challenges: crate::challenges::Challenges::new(
                &config.secret_key,
                config.challenge_ttl_secs,
            ),
            _checkpointer: checkpointer,
            rate_limiter,
            db,
            metrics,
            openapi_json: openapi::document_json(),
            access_tokens: AccessTokens::new(
                &config.secret_key,
                &config.public_url,
                config.access_token_ttl_secs,
            ),
            login_limiter: LoginLimiter::new(LimiterConfig::default()),
            config,
        });

        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let config = &app_state.config;
            let (app, _api) = App::new()
                .into_utoipa_app()
                .app_data(app_state.clone())
                .app_data(settings.clone())
                .app_data(route_table.clone())
                .app_data(http::query_config())
                .app_data(http::path_config())
                .app_data(web::PayloadConfig::new(config.body_limit))
                .configure(routes::configure)
                .split_for_parts();
            app.route("/", web::get().to(routes::docs::root))
                .route("/", web::head().to(routes::docs::root))
                .route("/docs", web::get().to(routes::docs::docs_index))
                .route("/docs/", web::get().to(routes::docs::docs_index))
                .route("/docs/{file}", web::get().to(routes::docs::docs_asset))
                .default_service(web::to(http::fallback))
                // Innermost first: rate limits see the client address the envelope
                // computed, and their 429s get CORS headers and the envelope.
                .wrap(middleware::from_fn(http::ratelimit::rate_limit))
                .wrap(cors(&config.cors_origins))
                .wrap(middleware::from_fn(envelope))
        })
        .workers(state.config.workers)
        .shutdown_timeout(state.config.shutdown_timeout.as_secs())
        // Signals are handled by `cli::serve`, installed before the server says it is
        // listening, so a SIGTERM that arrives early is never lost.
        .disable_signals();
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls),
            None => server.listen(listener),
        }
        .map_err(|source| StartError::Bind {
            addr: address,
            source,
        })?
        .run();

        tracing::info!(
            server.address = %address,
            server.public_url = %state.config.public_url,
            server.tls = state.config.tls.is_some(),
            rate_limits.shared = state.config.redis.is_some(),
            db.backend = state.db.backend().as_str(),
            "agentid is listening"
        );
        Ok(Application {
            server,
            address,
            state,
        })
    }

    /// The public URL (issuer and audience) the server uses: the configured one, or
    /// the one derived from the address actually bound.
    pub fn public_url(&self) -> &str {
        &self.state.config.public_url
    }

    /// The address the server is bound to (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A handle to stop the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT (or a stop through the handle): stops accepting,
    /// lets in-flight requests finish within the shutdown timeout, then returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        tracing::info!("server stopped accepting requests; in-flight requests finished");
        drop(self.state);
        result
    }
}

/// CORS from the allow-list. A request from an origin not on the list gets no CORS
/// headers (so a browser will not let the page read the answer); same-origin use,
/// such as the docs page, is unaffected.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .block_on_origin_mismatch(false)
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("x-api-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::HeaderName::from_static("ratelimit"),
            header::HeaderName::from_static("ratelimit-policy"),
        ])
        .max_age(3600);
    for origin in origins {
        cors = if origin == "*" {
            cors.allow_any_origin()
        } else {
            cors.allowed_origin(origin)
        };
    }
    cors
}
