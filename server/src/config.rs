//! Typed configuration, read once from the environment at start.
//!
//! Every setting is an `AGENTID_*` variable (plus `DATABASE_URL`), optionally from a
//! `.env` file. Loading either yields a complete, validated [`Config`] or an error
//! that names the offending variable; the server never starts half-configured.
//! Secrets live in [`SecretString`] and are masked wherever configuration is shown.
//! Unknown `AGENTID_*` variables are refused, so a typo cannot silently fall back to
//! a default; the SDKs' own variables ([`SDK_VARIABLES`]) are accepted and ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The minimum length of `AGENTID_SECRET_KEY`, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Name of the file that holds the generated development secret inside the data dir.
const DEV_SECRET_FILE: &str = "dev-secret.key";

/// Whether the server runs with production safeguards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Zero configuration: generates what it needs and says so in the log.
    Development,
    /// Refuses to start without explicit secrets and a safe CORS policy.
    Production,
}

/// Human-readable or JSON log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Readable lines for a terminal.
    Pretty,
}

/// SQLite's `synchronous` setting, which decides what a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSync {
    /// fsync at every commit: a commit survives a process crash and a power loss.
    Full,
    /// fsync at checkpoints only: a commit survives a process crash (kill -9) but a
    /// power loss may take the last commits with it.
    Normal,
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum DatabaseUrl {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server; the URL may hold a password, so it is a secret.
    Postgres(SecretString),
}

impl DatabaseUrl {
    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }
}

/// Database settings.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
    pub pool_size: u32,
    pub pool_timeout: Duration,
    pub sqlite_busy_timeout: Duration,
    pub sqlite_synchronous: SqliteSync,
}

/// The server's complete configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub environment: Environment,
    pub listen: SocketAddr,
    /// The externally visible base URL; also the issuer and audience of signed statements.
    pub public_url: String,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    /// Master secret from which token-signing keys are derived.
    pub secret_key: SecretString,
    /// Where the secret came from, for `config check` and the start-up log.
    pub secret_source: SecretSource,
    pub log_format: LogFormat,
    pub log_filter: String,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub ready_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub cors_origins: Vec<String>,
    pub workers: usize,
    pub bcrypt_cost: u32,
    pub access_token_ttl_secs: i64,
    pub refresh_token_ttl_secs: i64,
    /// Lifetime of agent access tokens, in seconds.
    pub agent_token_ttl_secs: i64,
    /// How long each derived server signing key signs before the next one takes over.
    pub signing_key_rotation_secs: i64,
    /// Lifetime of decision receipts, in seconds.
    pub receipt_ttl_secs: i64,
    /// How old a signed action's issued-at may be, in seconds.
    pub action_max_age_secs: i64,
    /// How far in the future a signed action's issued-at may be, in seconds.
    pub action_max_skew_secs: i64,
    /// Lifetime of a proof-of-possession challenge, in seconds.
    pub challenge_ttl_secs: i64,
    /// Request rate limits per class and dimension (`AGENTID_RATE_LIMITS`).
    pub rate_limits: crate::ratelimit::RateLimits,
    /// Shared rate-limit counters (`REDIS_URL`, `AGENTID_REDIS_PREFIX`).
    pub redis: Option<crate::ratelimit::RedisSettings>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: crate::http::client::TrustedProxies,
    /// Serve HTTPS directly with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Export traces over OTLP/HTTP to this collector (`None`: nothing is exported).
    pub otlp_endpoint: Option<String>,
}

/// The PEM files of the server's TLS certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the secret key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `AGENTID_SECRET_KEY`.
    Environment,
    /// Generated for development and kept in this file (mode 0600).
    GeneratedFile(PathBuf),
}

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("unknown configuration variable {0} (check the spelling; see .env.example)")]
    Unknown(String),
    #[error("{var}: could not prepare {path}: {source}")]
    Io {
        var: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Every variable the server reads, with its description, for `.env.example`,
/// the README table and the unknown-variable check.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("AGENTID_ENV", "development", "`development` or `production`. Production refuses to start without an explicit secret key and with a wildcard CORS origin."),
    ("AGENTID_LISTEN", "127.0.0.1:8080", "Address and port to listen on (`0.0.0.0:8080` to accept outside connections; port 0 picks a free port)."),
    ("AGENTID_PUBLIC_URL", "http://<AGENTID_LISTEN>", "Base URL clients use to reach this server; issuer and audience of everything it signs."),
    ("AGENTID_DATA_DIR", "./data", "Directory for the SQLite database and the generated development secret."),
    ("DATABASE_URL", "sqlite file in AGENTID_DATA_DIR", "`postgres://user:pass@host/db` for PostgreSQL, or `sqlite://path` / a file path for SQLite."),
    ("AGENTID_DB_POOL_SIZE", "16", "Maximum database connections in the pool (1 to 1024)."),
    ("AGENTID_DB_POOL_TIMEOUT_MS", "5000", "How long a request waits for a database connection before answering 503."),
    ("AGENTID_SQLITE_BUSY_TIMEOUT_MS", "5000", "How long an SQLite connection waits for a lock."),
    ("AGENTID_SQLITE_SYNCHRONOUS", "full", "`full` (commits survive power loss) or `normal` (commits survive a process crash)."),
    ("AGENTID_SECRET_KEY", "generated in development", "Master secret (at least 32 bytes) from which token-signing keys are derived. Required in production."),
    ("AGENTID_LOG_FORMAT", "pretty (json in production)", "`json` or `pretty`."),
    ("AGENTID_LOG", "info", "Log filter in `tracing` syntax, e.g. `info,agentid_server=debug`."),
    ("AGENTID_BODY_LIMIT_BYTES", "65536", "Largest accepted request body."),
    ("AGENTID_REQUEST_TIMEOUT_MS", "30000", "Longest time a request may take before it is answered 503 `request_timeout`."),
    ("AGENTID_READY_TIMEOUT_MS", "2000", "How long `/health/ready` waits for the database."),
    ("AGENTID_SHUTDOWN_TIMEOUT_S", "30", "How long a graceful shutdown waits for in-flight requests."),
    ("AGENTID_CORS_ORIGINS", "(none)", "Comma-separated origins allowed to call the API from a browser, e.g. `https://admin.example.com`. `*` is refused in production."),
    ("AGENTID_WORKERS", "number of CPUs", "HTTP worker threads."),
    ("AGENTID_BCRYPT_COST", "12", "bcrypt cost for passwords (4 to 31; at least 10 in production)."),
    ("AGENTID_ACCESS_TOKEN_TTL_S", "900", "Lifetime of user access tokens (JWT), in seconds (60 to 86400)."),
    ("AGENTID_REFRESH_TOKEN_TTL_S", "2592000", "Lifetime of a session's refresh token, in seconds (renewed at each rotation)."),
    ("AGENTID_AGENT_TOKEN_TTL", "900", "Lifetime of agent access tokens (EdDSA JWT), in seconds (60 to 86400)."),
    ("AGENTID_SIGNING_KEY_ROTATION", "604800", "How long each server signing key signs before the next takes over, in seconds (60 to 31536000). Keys are derived from AGENTID_SECRET_KEY; see docs/tokens.md."),
    ("AGENTID_RECEIPT_TTL", "2592000", "How long a decision receipt stays verifiable, in seconds (60 to 31536000). Old signing keys stay in the JWKS this long."),
    ("AGENTID_ACTION_MAX_AGE", "300", "How old a signed action's issued-at may be, in seconds (1 to 3600)."),
    ("AGENTID_ACTION_MAX_SKEW", "30", "How far in the future a signed action's issued-at may be (clock skew), in seconds (0 to 300)."),
    ("AGENTID_CHALLENGE_TTL", "120", "Lifetime of a proof-of-possession challenge, in seconds (10 to 900)."),
    ("AGENTID_RATE_LIMITS", "the defaults in docs/rate-limits.md", "Request rate limits by route class and dimension: `off` (no limits), or overrides of the defaults such as `actions.agent=500/s,auth.address=30/m:60,reads.credential=off` (`N/s`, `N/m` or `N/h`, optionally `:BURST`). See docs/rate-limits.md."),
    ("REDIS_URL", "(none: each process counts alone)", "`redis://[:password@]host:port[/db]`: keep rate-limit counters in Redis so every replica enforces one shared limit. When Redis fails or is slow, limits are counted in-process until it answers again."),
    ("AGENTID_REDIS_PREFIX", "agentid", "Prefix of every Redis key, so deployments sharing one Redis do not collide."),
    ("AGENTID_TRUSTED_PROXIES", "(none)", "Comma-separated addresses or CIDR networks of reverse proxies whose `X-Forwarded-For` / `Forwarded` and `X-Forwarded-Proto` headers are believed, e.g. `10.0.0.0/8`. Headers from any other peer are ignored."),
    ("AGENTID_TLS_CERT", "(none: plain HTTP)", "PEM certificate chain (leaf first) to serve HTTPS directly (TLS 1.2 and 1.3, rustls); requires AGENTID_TLS_KEY. Answers then carry HSTS."),
    ("AGENTID_TLS_KEY", "(none)", "PEM private key (PKCS#8, PKCS#1 or SEC1) of AGENTID_TLS_CERT."),
    ("AGENTID_OTLP_ENDPOINT", "(none: nothing is exported)", "OpenTelemetry collector base URL for trace export over OTLP/HTTP (protobuf), e.g. `http://collector:4318` (spans are posted to `/v1/traces`). See docs/tls-and-tracing.md."),
];

/// Variables the agentid SDKs read (Rust and Python), with what they hold. A shell
/// that runs an agent and the server holds them both, so the server accepts them
/// and ignores them; any other unknown `AGENTID_*` name is still refused as a typo.
/// A test checks this list against every `AGENTID_*` name in the SDKs' sources.
pub const SDK_VARIABLES: &[(&str, &str)] = &[
    ("AGENTID_URL", "the server's URL, for the SDKs"),
    (
        "AGENTID_API_KEY",
        "an API key the SDKs register agents with",
    ),
    ("AGENTID_KEY_DIR", "the SDKs' agent key directory"),
    (
        "AGENTID_KEY_PASSPHRASE",
        "the passphrase of the SDKs' agent key files",
    ),
];

impl Config {
    /// Reads the configuration from the process environment, after loading `.env`
    /// from the working directory if there is one.
    pub fn from_process_env() -> Result<Config, ConfigError> {
        // A missing .env is normal; a malformed one is an error worth stopping for.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(ConfigError::Invalid {
                    var: ".env",
                    reason: e.to_string(),
                })
            }
        }
        Config::from_vars(std::env::vars())
    }

    /// Builds and validates the configuration from `(name, value)` pairs.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("AGENTID_") || k == "DATABASE_URL" || k == "REDIS_URL")
            .filter(|(k, _)| !SDK_VARIABLES.iter().any(|(name, _)| name == k))
            .collect();
        for key in vars.keys() {
            if !VARIABLES.iter().any(|(name, _, _)| name == key) {
                return Err(ConfigError::Unknown(key.clone()));
            }
        }
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let environment = match get("AGENTID_ENV") {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(invalid(
                    "AGENTID_ENV",
                    format!("must be `development` or `production`, not `{other}`"),
                ))
            }
        };
        let production = environment == Environment::Production;

        let listen: SocketAddr = match get("AGENTID_LISTEN") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(v) => v.parse().map_err(|_| {
                invalid(
                    "AGENTID_LISTEN",
                    format!("`{v}` is not an address and port such as 127.0.0.1:8080"),
                )
            })?,
        };

        let tls = match (get("AGENTID_TLS_CERT"), get("AGENTID_TLS_KEY")) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                };
                // Read and check both now, so `config check` and start-up say which is wrong.
                crate::http::tls::server_config(&files.cert, &files.key)
                    .map_err(|e| invalid(e.var, e.reason))?;
                Some(files)
            }
            (Some(_), None) => {
                return Err(invalid(
                    "AGENTID_TLS_KEY",
                    "is required when AGENTID_TLS_CERT is set (both or neither)".to_owned(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "AGENTID_TLS_CERT",
                    "is required when AGENTID_TLS_KEY is set (both or neither)".to_owned(),
                ))
            }
        };

        let public_url = match get("AGENTID_PUBLIC_URL") {
            None if tls.is_some() => format!("https://{listen}"),
            None => format!("http://{listen}"),
            Some(v) => parse_public_url(v)?,
        };

        let rate_limits = crate::ratelimit::RateLimits::parse(get("AGENTID_RATE_LIMITS"))
            .map_err(|reason| invalid("AGENTID_RATE_LIMITS", reason))?;
        let redis_prefix = get("AGENTID_REDIS_PREFIX").unwrap_or("agentid");
        if !redis_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(invalid(
                "AGENTID_REDIS_PREFIX",
                format!("`{redis_prefix}` may only hold letters, digits and - _ . :"),
            ));
        }
        let redis = match get("REDIS_URL") {
            None => None,
            Some(v) if v.starts_with("rediss://") => {
                return Err(invalid(
                    "REDIS_URL",
                    "rediss:// (TLS to Redis) is not supported by this build; use redis:// on a private network or a local TLS tunnel".to_owned(),
                ))
            }
            Some(v) if v.starts_with("redis://") || v.starts_with("redis+unix://") || v.starts_with("unix://") => {
                if let Err(e) = redis::Client::open(v) {
                    return Err(invalid("REDIS_URL", format!("not a valid Redis URL: {e}")));
                }
                Some(crate::ratelimit::RedisSettings {
                    url: SecretString::from(v.to_owned()),
                    prefix: redis_prefix.to_owned(),
                })
            }
            Some(_) => {
                return Err(invalid(
                    "REDIS_URL",
                    "must start with redis:// (e.g. redis://127.0.0.1:6379)".to_owned(),
                ))
            }
        };
        let trusted_proxies =
            crate::http::client::TrustedProxies::parse(get("AGENTID_TRUSTED_PROXIES"))
                .map_err(|reason| invalid("AGENTID_TRUSTED_PROXIES", reason))?;
        let otlp_endpoint = match get("AGENTID_OTLP_ENDPOINT") {
            None => None,
            Some(v) if v.starts_with("http://") && v.len() > "http://".len() && !v.contains(['?', '#', ' ']) => {
                Some(v.trim_end_matches('/').to_owned())
            }
            Some(v) if v.starts_with("https://") => {
                return Err(invalid(
                    "AGENTID_OTLP_ENDPOINT",
                    format!("`{v}`: this build exports over plain http:// only; point it at a collector or agent on a private network"),
                ))
            }
            Some(v) => {
                return Err(invalid(
                    "AGENTID_OTLP_ENDPOINT",
                    format!("`{v}` is not a base URL such as http://collector:4318"),
                ))
            }
        };

        let data_dir = PathBuf::from(get("AGENTID_DATA_DIR").unwrap_or("./data"));

        let url = match get("DATABASE_URL") {
            None => DatabaseUrl::Sqlite(data_dir.join("agentid.db")),
            Some(v) if v.starts_with("postgres://") || v.starts_with("postgresql://") => {
                DatabaseUrl::Postgres(SecretString::from(v.to_owned()))
            }
            Some(v) => {
                let path = v.strip_prefix("sqlite://").unwrap_or(v);
                if path.is_empty() || path.contains("://") {
                    return Err(invalid(
                        "DATABASE_URL",
                        "must be a postgres:// URL or an SQLite file path".to_owned(),
                    ));
                }
                if path == ":memory:" {
                    return Err(invalid("DATABASE_URL", "an in-memory SQLite database would lose every acknowledged write; give a file path".to_owned()));
                }
                DatabaseUrl::Sqlite(PathBuf::from(path))
            }
        };

        let database = DatabaseConfig {
            url,
            pool_size: parse_num(get("AGENTID_DB_POOL_SIZE"), "AGENTID_DB_POOL_SIZE", 16, 1, 1024)?,
            pool_timeout: millis(get("AGENTID_DB_POOL_TIMEOUT_MS"), "AGENTID_DB_POOL_TIMEOUT_MS", 5_000, 10, 600_000)?,
            sqlite_busy_timeout: millis(get("AGENTID_SQLITE_BUSY_TIMEOUT_MS"), "AGENTID_SQLITE_BUSY_TIMEOUT_MS", 5_000, 0, 600_000)?,
            sqlite_synchronous: match get("AGENTID_SQLITE_SYNCHRONOUS") {
                None | Some("full") => SqliteSync::Full,
                Some("normal") => SqliteSync::Normal,
                Some(other) => return Err(invalid("AGENTID_SQLITE_SYNCHRONOUS", format!("must be `full` or `normal`, not `{other}` (`off` would lose acknowledged writes)"))),
            },
        };

        let (secret_key, secret_source) = match get("AGENTID_SECRET_KEY") {
            Some(v) if v.len() >= MIN_SECRET_LEN => (SecretString::from(v.to_owned()), SecretSource::Environment),
            Some(_) => return Err(invalid("AGENTID_SECRET_KEY", format!("must be at least {MIN_SECRET_LEN} bytes (generate one with `openssl rand -base64 48`)"))),
            None if production => return Err(invalid("AGENTID_SECRET_KEY", format!("is required in production: set a random value of at least {MIN_SECRET_LEN} bytes"))),
            None => {
                let path = data_dir.join(DEV_SECRET_FILE);
                (load_or_create_dev_secret(&path)?, SecretSource::GeneratedFile(path))
            }
        };

        let log_format = match get("AGENTID_LOG_FORMAT") {
            None if production => LogFormat::Json,
            None => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(invalid(
                    "AGENTID_LOG_FORMAT",
                    format!("must be `json` or `pretty`, not `{other}`"),
                ))
            }
        };
        let log_filter = get("AGENTID_LOG").unwrap_or("info").to_owned();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            return Err(invalid("AGENTID_LOG", e.to_string()));
        }

        let cors_origins: Vec<String> = get("AGENTID_CORS_ORIGINS")
            .map(|v| {
                v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for origin in &cors_origins {
            if origin == "*" {
                if production {
                    return Err(invalid(
                        "AGENTID_CORS_ORIGINS",
                        "`*` is refused in production: list the origins that may call the API"
                            .to_owned(),
                    ));
                }
            } else if !(origin.starts_with("https://") || origin.starts_with("http://"))
                || origin.contains('*')
            {
                return Err(invalid(
                    "AGENTID_CORS_ORIGINS",
                    format!("`{origin}` is not an origin such as https://admin.example.com"),
                ));
            }
        }

        let default_workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let bcrypt_cost = parse_num(get("AGENTID_BCRYPT_COST"), "AGENTID_BCRYPT_COST", 12, 4, 31)?;
        if production && bcrypt_cost < 10 {
            return Err(invalid(
                "AGENTID_BCRYPT_COST",
                "must be at least 10 in production".to_owned(),
            ));
        }

        let agent_token_ttl_secs = parse_num(
            get("AGENTID_AGENT_TOKEN_TTL"),
            "AGENTID_AGENT_TOKEN_TTL",
            900,
            60,
            86_400,
        )?;
        let receipt_ttl_secs = parse_num(
            get("AGENTID_RECEIPT_TTL"),
            "AGENTID_RECEIPT_TTL",
            2_592_000,
            60,
            31_536_000,
        )?;
        let signing_key_rotation_secs = parse_num(
            get("AGENTID_SIGNING_KEY_ROTATION"),
            "AGENTID_SIGNING_KEY_ROTATION",
            604_800,
            60,
            31_536_000,
        )?;
        let retention_secs = agent_token_ttl_secs.max(receipt_ttl_secs);
        let published =
            crate::signing::published_key_count(signing_key_rotation_secs, retention_secs);
        if published > crate::signing::MAX_PUBLISHED_KEYS {
            return Err(invalid(
                "AGENTID_SIGNING_KEY_ROTATION",
                format!(
                    "{signing_key_rotation_secs} s is too short for tokens and receipts that live {retention_secs} s: the JWKS would hold {published} keys (at most {}); rotate less often or shorten AGENTID_RECEIPT_TTL",
                    crate::signing::MAX_PUBLISHED_KEYS
                ),
            ));
        }

        Ok(Config {
            environment,
            listen,
            public_url,
            data_dir,
            database,
            secret_key,
            secret_source,
            log_format,
            log_filter,
            body_limit: parse_num(
                get("AGENTID_BODY_LIMIT_BYTES"),
                "AGENTID_BODY_LIMIT_BYTES",
                64 * 1024,
                1024,
                16 * 1024 * 1024,
            )?,
            request_timeout: millis(
                get("AGENTID_REQUEST_TIMEOUT_MS"),
                "AGENTID_REQUEST_TIMEOUT_MS",
                30_000,
                10,
                3_600_000,
            )?,
            ready_timeout: millis(
                get("AGENTID_READY_TIMEOUT_MS"),
                "AGENTID_READY_TIMEOUT_MS",
                2_000,
                10,
                60_000,
            )?,
            shutdown_timeout: Duration::from_secs(parse_num(
                get("AGENTID_SHUTDOWN_TIMEOUT_S"),
                "AGENTID_SHUTDOWN_TIMEOUT_S",
                30,
                0,
                3_600,
            )?),
            cors_origins,
            workers: parse_num(
                get("AGENTID_WORKERS"),
                "AGENTID_WORKERS",
                default_workers,
                1,
                1024,
            )?,
            bcrypt_cost,
            access_token_ttl_secs: parse_num(
                get("AGENTID_ACCESS_TOKEN_TTL_S"),
                "AGENTID_ACCESS_TOKEN_TTL_S",
                900,
                60,
                86_400,
            )?,
            refresh_token_ttl_secs: parse_num(
                get("AGENTID_REFRESH_TOKEN_TTL_S"),
                "AGENTID_REFRESH_TOKEN_TTL_S",
                2_592_000,
                3_600,
                31_536_000,
            )?,
            agent_token_ttl_secs,
            signing_key_rotation_secs,
            receipt_ttl_secs,
            action_max_age_secs: parse_num(
                get("AGENTID_ACTION_MAX_AGE"),
                "AGENTID_ACTION_MAX_AGE",
                300,
                1,
                3_600,
            )?,
            action_max_skew_secs: parse_num(
                get("AGENTID_ACTION_MAX_SKEW"),
                "AGENTID_ACTION_MAX_SKEW",
                30,
                0,
                300,
            )?,
            challenge_ttl_secs: parse_num(
                get("AGENTID_CHALLENGE_TTL"),
                "AGENTID_CHALLENGE_TTL",
                120,
                10,
                900,
            )?,
            rate_limits,
            redis,
            trusted_proxies,
            tls,
            otlp_endpoint,
        })
    }

    /// The effective configuration as `NAME=value` lines, secrets masked.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &dyn fmt::Display| out.push_str(&format!("{k}={v}\n"));
        line(
            "AGENTID_ENV",
            &match self.environment {
                Environment::Development => "development",
                Environment::Production => "production",
            },
        );
        line("AGENTID_LISTEN", &self.listen);
        line("AGENTID_PUBLIC_URL", &self.public_url);
        line("AGENTID_DATA_DIR", &self.data_dir.display());
        match &self.database.url {
            DatabaseUrl::Sqlite(path) => {
                line("DATABASE_URL", &format!("sqlite://{}", path.display()))
            }
            DatabaseUrl::Postgres(url) => {
                line("DATABASE_URL", &mask_url_password(url.expose_secret()))
            }
        }
        line("AGENTID_DB_POOL_SIZE", &self.database.pool_size);
        line(
            "AGENTID_DB_POOL_TIMEOUT_MS",
            &self.database.pool_timeout.as_millis(),
        );
        line(
            "AGENTID_SQLITE_BUSY_TIMEOUT_MS",
            &self.database.sqlite_busy_timeout.as_millis(),
        );
        line(
            "AGENTID_SQLITE_SYNCHRONOUS",
            &match self.database.sqlite_synchronous {
                SqliteSync::Full => "full",
                SqliteSync::Normal => "normal",
            },
        );
        line(
            "AGENTID_SECRET_KEY",
            &match &self.secret_source {
                SecretSource::Environment => "******** (from the environment)".to_owned(),
                SecretSource::GeneratedFile(p) => {
                    format!("******** (generated, kept in {})", p.display())
                }
            },
        );
        line(
            "AGENTID_LOG_FORMAT",
            &match self.log_format {
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            },
        );
        line("AGENTID_LOG", &self.log_filter);
        line("AGENTID_BODY_LIMIT_BYTES", &self.body_limit);
        line(
            "AGENTID_REQUEST_TIMEOUT_MS",
            &self.request_timeout.as_millis(),
        );
        line("AGENTID_READY_TIMEOUT_MS", &self.ready_timeout.as_millis());
        line(
            "AGENTID_SHUTDOWN_TIMEOUT_S",
            &self.shutdown_timeout.as_secs(),
        );
        line("AGENTID_CORS_ORIGINS", &self.cors_origins.join(","));
        line("AGENTID_WORKERS", &self.workers);
        line("AGENTID_BCRYPT_COST", &self.bcrypt_cost);
        line("AGENTID_ACCESS_TOKEN_TTL_S", &self.access_token_ttl_secs);
        line("AGENTID_REFRESH_TOKEN_TTL_S", &self.refresh_token_ttl_secs);
        line("AGENTID_AGENT_TOKEN_TTL", &self.agent_token_ttl_secs);
        line(
            "AGENTID_SIGNING_KEY_ROTATION",
            &self.signing_key_rotation_secs,
        );
        line("AGENTID_RECEIPT_TTL", &self.receipt_ttl_secs);
        line("AGENTID_ACTION_MAX_AGE", &self.action_max_age_secs);
        line("AGENTID_ACTION_MAX_SKEW", &self.action_max_skew_secs);
        line("AGENTID_CHALLENGE_TTL", &self.challenge_ttl_secs);
        line("AGENTID_RATE_LIMITS", &self.rate_limits.describe());
        match &self.redis {
            Some(redis) => {
                line("REDIS_URL", &mask_redis_url(redis.url.expose_secret()));
                line("AGENTID_REDIS_PREFIX", &redis.prefix);
            }
            None => line(
                "REDIS_URL",
                &"(none: rate limits are counted in this process)",
            ),
        }
        line("AGENTID_TRUSTED_PROXIES", &self.trusted_proxies.describe());
        match &self.tls {
            Some(tls) => {
                line("AGENTID_TLS_CERT", &tls.cert.display());
                line("AGENTID_TLS_KEY", &tls.key.display());
            }
            None => line("AGENTID_TLS_CERT", &"(none: plain HTTP)"),
        }
        line(
            "AGENTID_OTLP_ENDPOINT",
            &self
                .otlp_endpoint
                .as_deref()
                .unwrap_or("(none: nothing is exported)"),
        );
        out
    }
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { var, reason }
}

fn parse_num<T>(
    value: Option<&str>,
    var: &'static str,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(v) = value else { return Ok(default) };
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(invalid(
            var,
            format!("must be a whole number from {min} to {max}, not `{v}`"),
        )),
    }
}

fn millis(
    value: Option<&str>,
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    parse_num(value, var, default, min, max).map(Duration::from_millis)
}

fn parse_public_url(v: &str) -> Result<String, ConfigError> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| {
            invalid(
                "AGENTID_PUBLIC_URL",
                format!("`{v}` must start with https:// or http://"),
            )
        })?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(invalid(
            "AGENTID_PUBLIC_URL",
            format!("`{v}` must be a base URL without query or fragment"),
        ));
    }
    Ok(v.trim_end_matches('/').to_owned())
}

/// Replaces the password in `scheme://user:password@host/...` with asterisks.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "********".to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_owned(),
    }
}

/// Masks a Redis URL's password, including the `redis://password@host` form.
fn mask_redis_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) if !userinfo.contains(':') => {
                format!("{scheme}://********@{host}")
            }
            _ => mask_url_password(url),
        },
        None => mask_url_password(url),
    }
}

/// Loads the development secret from `path`, or generates one and stores it with
/// mode 0600 so tokens survive restarts of a development server.
fn load_or_create_dev_secret(path: &Path) -> Result<SecretString, ConfigError> {
    use rand::RngCore;
    use std::io::Write;

    let io = |source| ConfigError::Io {
        var: "AGENTID_DATA_DIR",
        path: path.to_owned(),
        source,
    };
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if existing.len() >= MIN_SECRET_LEN {
            return Ok(SecretString::from(existing.to_owned()));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(SecretString::from(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        Config::from_vars(vars(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn production_requires_a_long_secret() {
        let msg = err(&[("AGENTID_ENV", "production")]);
        assert!(msg.starts_with("AGENTID_SECRET_KEY"), "{msg}");
        let msg = err(&[
            ("AGENTID_ENV", "production"),
            ("AGENTID_SECRET_KEY", "short"),
        ]);
        assert!(msg.starts_with("AGENTID_SECRET_KEY"), "{msg}");
    }

    #[test]
    fn production_refuses_wildcard_cors() {
        let msg = err(&[
            ("AGENTID_ENV", "production"),
            ("AGENTID_SECRET_KEY", &"k".repeat(40)),
            ("AGENTID_CORS_ORIGINS", "https://a.example, *"),
        ]);
        assert!(msg.starts_with("AGENTID_CORS_ORIGINS"), "{msg}");
    }

    #[test]
    fn production_with_secret_uses_json_logs_and_masks_the_secret() {
        let secret = "s3cr3t-value-that-is-long-enough-123456";
        let config = Config::from_vars(vars(&[
            ("AGENTID_ENV", "production"),
            ("AGENTID_SECRET_KEY", secret),
            (
                "DATABASE_URL",
                "postgres://app:hunter2hunter2@db.internal/agentid",
            ),
        ]))
        .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        let described = config.describe();
        assert!(!described.contains(secret), "{described}");
        assert!(!described.contains("hunter2"), "{described}");
        assert!(described.contains("DATABASE_URL=postgres://app:********@db.internal/agentid"));
        assert!(!format!("{config:?}").contains(secret));
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("AGENTID_LISTEN", "localhost"),
            ("AGENTID_DB_POOL_SIZE", "0"),
            ("AGENTID_BODY_LIMIT_BYTES", "lots"),
            ("AGENTID_REQUEST_TIMEOUT_MS", "-1"),
            ("AGENTID_LOG_FORMAT", "xml"),
            ("AGENTID_PUBLIC_URL", "ftp://x"),
            ("AGENTID_SQLITE_SYNCHRONOUS", "off"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_URL", ":memory:"),
            ("AGENTID_CORS_ORIGINS", "example.com"),
            ("AGENTID_AGENT_TOKEN_TTL", "59"),
            ("AGENTID_AGENT_TOKEN_TTL", "86401"),
            ("AGENTID_SIGNING_KEY_ROTATION", "59"),
            ("AGENTID_SIGNING_KEY_ROTATION", "31536001"),
            ("AGENTID_RECEIPT_TTL", "59"),
            ("AGENTID_RECEIPT_TTL", "1y"),
            ("AGENTID_ACTION_MAX_AGE", "0"),
            ("AGENTID_ACTION_MAX_AGE", "3601"),
            ("AGENTID_ACTION_MAX_SKEW", "-1"),
            ("AGENTID_ACTION_MAX_SKEW", "301"),
            ("AGENTID_CHALLENGE_TTL", "9"),
            ("AGENTID_CHALLENGE_TTL", "901"),
            ("AGENTID_RATE_LIMITS", "actions.agent=fast"),
            ("AGENTID_RATE_LIMITS", "actions.credential=5/s"),
            ("AGENTID_RATE_LIMITS", "everything=5/s"),
            ("REDIS_URL", "http://127.0.0.1:6379"),
            ("REDIS_URL", "rediss://127.0.0.1:6379"),
            ("AGENTID_REDIS_PREFIX", "a b"),
            ("AGENTID_TRUSTED_PROXIES", "10.0.0.0/40"),
            ("AGENTID_TRUSTED_PROXIES", "proxy.internal"),
            ("AGENTID_OTLP_ENDPOINT", "collector:4318"),
            ("AGENTID_OTLP_ENDPOINT", "https://collector:4318"),
        ] {
            let msg = err(&[(var, value), ("AGENTID_SECRET_KEY", &"k".repeat(40))]);
            assert!(msg.starts_with(var), "{var}={value}: {msg}");
        }
    }

    #[test]
    fn token_and_freshness_settings_have_defaults_and_are_described() {
        let config = Config::from_vars(vars(&[("AGENTID_SECRET_KEY", &"k".repeat(40))])).unwrap();
        assert_eq!(config.agent_token_ttl_secs, 900);
        assert_eq!(config.signing_key_rotation_secs, 604_800);
        assert_eq!(config.receipt_ttl_secs, 2_592_000);
        assert_eq!(config.action_max_age_secs, 300);
        assert_eq!(config.action_max_skew_secs, 30);
        assert_eq!(config.challenge_ttl_secs, 120);
        let described = config.describe();
        for line in [
            "AGENTID_AGENT_TOKEN_TTL=900\n",
            "AGENTID_SIGNING_KEY_ROTATION=604800\n",
            "AGENTID_RECEIPT_TTL=2592000\n",
            "AGENTID_ACTION_MAX_AGE=300\n",
            "AGENTID_ACTION_MAX_SKEW=30\n",
            "AGENTID_CHALLENGE_TTL=120\n",
        ] {
            assert!(described.contains(line), "{line} in {described}");
        }
        let config = Config::from_vars(vars(&[
            ("AGENTID_SECRET_KEY", &"k".repeat(40)),
            ("AGENTID_AGENT_TOKEN_TTL", "60"),
            ("AGENTID_SIGNING_KEY_ROTATION", "60"),
            ("AGENTID_RECEIPT_TTL", "600"),
            ("AGENTID_ACTION_MAX_AGE", "1"),
            ("AGENTID_ACTION_MAX_SKEW", "0"),
            ("AGENTID_CHALLENGE_TTL", "900"),
        ]))
        .unwrap();
        assert_eq!(
            (
                config.agent_token_ttl_secs,
                config.signing_key_rotation_secs,
                config.receipt_ttl_secs,
                config.action_max_age_secs,
                config.action_max_skew_secs,
                config.challenge_ttl_secs
            ),
            (60, 60, 600, 1, 0, 900)
        );
    }

    #[test]
    fn a_rotation_too_short_for_the_receipt_lifetime_is_refused() {
        // One-minute keys kept for a year would publish half a million keys.
        let msg = err(&[
            ("AGENTID_SECRET_KEY", &"k".repeat(40)),
            ("AGENTID_SIGNING_KEY_ROTATION", "60"),
            ("AGENTID_RECEIPT_TTL", "31536000"),
        ]);
        assert!(msg.starts_with("AGENTID_SIGNING_KEY_ROTATION"), "{msg}");
        assert!(msg.contains("AGENTID_RECEIPT_TTL"), "{msg}");
    }

    #[test]
    fn operations_settings_have_defaults_and_are_described() {
        let config = Config::from_vars(vars(&[("AGENTID_SECRET_KEY", &"k".repeat(40))])).unwrap();
        assert_eq!(config.rate_limits, crate::ratelimit::RateLimits::default());
        assert!(config.redis.is_none());
        assert!(config.trusted_proxies.is_empty());
        assert!(config.tls.is_none());
        assert!(config.otlp_endpoint.is_none());
        assert!(config.public_url.starts_with("http://"));
        let described = config.describe();
        assert!(
            described.contains("AGENTID_RATE_LIMITS=actions.address=5000/s,actions.agent=500/s,"),
            "{described}"
        );
        assert!(described.contains("AGENTID_OTLP_ENDPOINT=(none: nothing is exported)"));

        let config = Config::from_vars(vars(&[
            ("AGENTID_SECRET_KEY", &"k".repeat(40)),
            ("AGENTID_RATE_LIMITS", "off"),
            ("REDIS_URL", "redis://:hunter2hunter2@redis.internal:6379/0"),
            ("AGENTID_REDIS_PREFIX", "staging"),
            ("AGENTID_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1"),
            ("AGENTID_OTLP_ENDPOINT", "http://collector:4318/"),
        ]))
        .unwrap();
        assert!(!config.rate_limits.any());
        assert_eq!(config.redis.as_ref().unwrap().prefix, "staging");
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        let described = config.describe();
        assert!(!described.contains("hunter2"), "{described}");
        assert!(described.contains("REDIS_URL=redis://:********@redis.internal:6379/0"));
        assert!(described.contains("AGENTID_RATE_LIMITS=off\n"));
        assert!(described.contains("AGENTID_TRUSTED_PROXIES=10.0.0.0/8,192.0.2.1/32\n"));
        assert_eq!(
            mask_redis_url("redis://hunter2@redis.internal"),
            "redis://********@redis.internal"
        );
    }

    #[test]
    fn tls_needs_both_files_and_switches_the_public_url_to_https() {
        let msg = err(&[
            ("AGENTID_SECRET_KEY", &"k".repeat(40)),
            ("AGENTID_TLS_CERT", "/x/cert.pem"),
        ]);
        assert!(msg.starts_with("AGENTID_TLS_KEY"), "{msg}");
        let msg = err(&[
            ("AGENTID_SECRET_KEY", &"k".repeat(40)),
            ("AGENTID_TLS_KEY", "/x/key.pem"),
        ]);
        assert!(msg.starts_with("AGENTID_TLS_CERT"), "{msg}");

        let dir = std::env::temp_dir().join(format!("agentid-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let with_tls = |cert: &Path, key: &Path| {
            Config::from_vars(vars(&[
                ("AGENTID_SECRET_KEY", &"k".repeat(40)),
                ("AGENTID_LISTEN", "127.0.0.1:8443"),
                ("AGENTID_TLS_CERT", cert.to_str().unwrap()),
                ("AGENTID_TLS_KEY", key.to_str().unwrap()),
            ]))
        };
        let config = with_tls(&cert, &key).unwrap();
        assert_eq!(config.public_url, "https://127.0.0.1:8443");
        // The files swapped: each is refused naming its variable.
        let msg = with_tls(&key, &key).unwrap_err().to_string();
        assert!(msg.starts_with("AGENTID_TLS_CERT"), "{msg}");
        let msg = with_tls(&cert, &cert).unwrap_err().to_string();
        assert!(msg.starts_with("AGENTID_TLS_KEY"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_variables_are_refused() {
        let msg = err(&[("AGENTID_LISTN", "127.0.0.1:1")]);
        assert!(msg.contains("AGENTID_LISTN"), "{msg}");
        // A near miss of an SDK variable is a typo too.
        let msg = err(&[("AGENTID_API_KEYS", "agentid_sk_x")]);
        assert!(msg.contains("AGENTID_API_KEYS"), "{msg}");
    }

    #[test]
    fn the_sdks_variables_are_accepted_and_ignored() {
        // One shell runs the server and an agent: the SDKs' settings are not typos.
        let secret = "k".repeat(40);
        let plain = [
            ("AGENTID_LISTEN", "127.0.0.1:9"),
            ("AGENTID_SECRET_KEY", secret.as_str()),
        ];
        let mut pairs = plain.to_vec();
        pairs.extend(SDK_VARIABLES.iter().map(|(name, _)| (*name, "x")));
        let with = Config::from_vars(vars(&pairs)).unwrap();
        let without = Config::from_vars(vars(&plain)).unwrap();
        assert_eq!(with.describe(), without.describe());
        for name in [
            "AGENTID_URL",
            "AGENTID_API_KEY",
            "AGENTID_KEY_DIR",
            "AGENTID_KEY_PASSPHRASE",
        ] {
            assert!(
                SDK_VARIABLES.iter().any(|(n, _)| *n == name),
                "{name} is not an SDK variable"
            );
        }
    }

    /// Every `AGENTID_*` name in the SDKs' sources (Rust SDK, Python binding and
    /// package) is a server variable or an SDK variable, and every SDK variable is
    /// still read by an SDK: the list cannot drift from what the SDKs read.
    #[test]
    fn sdk_variables_match_what_the_sdks_read() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = std::collections::BTreeSet::new();
        let mut stack: Vec<PathBuf> = ["sdk-rust/src", "sdk-python/src", "sdk-python/python"]
            .iter()
            .map(|dir| root.join(dir))
            .collect();
        let mut files = 0;
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    stack.push(entry.unwrap().path());
                }
                continue;
            }
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !["rs", "py", "pyi"].contains(&ext) {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("AGENTID_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let name = name.trim_end_matches('_');
                if name.len() > "AGENTID_".len() - 1 && name != "AGENTID" {
                    found.insert((name.to_owned(), path.display().to_string()));
                }
            }
        }
        assert!(
            files > 10,
            "the SDK sources were not found under {}",
            root.display()
        );
        for (name, file) in &found {
            let known = VARIABLES.iter().any(|(n, _, _)| n == name)
                || SDK_VARIABLES.iter().any(|(n, _)| n == name);
            assert!(
                known,
                "{file} reads {name}, which the server would refuse: add it to SDK_VARIABLES"
            );
        }
        for (name, _) in SDK_VARIABLES {
            assert!(
                found.iter().any(|(n, _)| n == name),
                "{name} is in SDK_VARIABLES but no SDK source names it"
            );
        }
    }

    #[test]
    fn development_generates_and_keeps_a_secret() {
        let dir = std::env::temp_dir().join(format!("agentid-config-{}", uuid::Uuid::new_v4()));
        let pairs = vars(&[("AGENTID_DATA_DIR", dir.to_str().unwrap())]);
        let first = Config::from_vars(pairs.clone()).unwrap();
        let second = Config::from_vars(pairs).unwrap();
        assert_eq!(
            first.secret_key.expose_secret(),
            second.secret_key.expose_secret()
        );
        assert!(first.secret_key.expose_secret().len() >= MIN_SECRET_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(DEV_SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_variable_is_in_env_example() {
        let example = include_str!("../../.env.example");
        for (name, _, _) in VARIABLES {
            assert!(example.contains(name), "{name} missing from .env.example");
        }
    }

    #[test]
    fn every_variable_is_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        for (name, _, _) in VARIABLES {
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{name} missing from README"
            );
        }
    }
}
