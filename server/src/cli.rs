//! The command line: `serve` (default), `migrate`, `config check`, `openapi`,
//! `admin create-owner`, `audit verify`, `backup`, `healthcheck`.
//!
//! Configuration errors end the process with status 2 and a message naming the
//! variable; nothing starts half-configured.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::db::Database;
use crate::startup::Application;
use crate::telemetry::{self, LogTarget};

#[derive(Debug, Parser)]
#[command(
    name = "agentid-server",
    version,
    about = "Identity and trust verification for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Administration tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Take a consistent copy of the SQLite database while the server runs
    /// (`VACUUM INTO`), written to a temporary file and renamed into place once
    /// complete and flushed. Refuses to overwrite FILE. For PostgreSQL use `pg_dump`
    /// (docs/operations.md). Exits 0 on success, 1 on failure, 2 on a usage error.
    Backup {
        /// Where to write the copy (must not exist).
        #[arg(long, value_name = "FILE")]
        to: std::path::PathBuf,
    },
    /// Ask the server on the configured listen address whether it is ready
    /// (`GET /health/ready`); exits 0 when it answers 200, 1 otherwise. For container
    /// health checks in images without curl.
    Healthcheck,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of every organization (or of one), printing one JSON line
    /// per organization. Exits 0 when every chain is intact, 1 when any is broken, 2 on
    /// a configuration or usage error, 3 when the database could not be read.
    Verify {
        /// Only this organization (its id).
        #[arg(long, value_name = "ORG_ID")]
        org: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an organization and its first owner. The password is read from
    /// standard input (one line), never from the command line or the environment.
    CreateOwner {
        /// The organization's name (unique).
        #[arg(long)]
        org: String,
        /// The owner's email address (unique).
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it, secrets masked.
    Check,
}

/// Runs the command line and returns the process status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", crate::openapi::document_json());
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check,
        } => match Config::from_process_env() {
            Ok(config) => {
                print!("{}", config.describe());
                eprintln!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(e),
        },
        Command::Migrate => {
            let config = match Config::from_process_env() {
                Ok(c) => c,
                Err(e) => return config_failure(e),
            };
            telemetry::init(config.log_format, &config.log_filter, LogTarget::Stderr);
            match Database::connect(&config.database).and_then(|db| db.migrate()) {
                Ok(applied) => {
                    tracing::info!(migrations.applied = applied, "migrations are up to date");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error.cause = %e, "migration failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => serve(),
        Command::Admin {
            command: AdminCommand::CreateOwner { org, email },
        } => create_owner(&org, &email),
        Command::Audit {
            command: AuditCommand::Verify { org },
        } => audit_verify(org.as_deref()),
        Command::Backup { to } => backup(&to),
        Command::Healthcheck => healthcheck(),
    }
}

fn backup(to: &std::path::Path) -> ExitCode {
    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    telemetry::init(config.log_format, &config.log_filter, LogTarget::Stderr);
    let crate::config::DatabaseUrl::Sqlite(source) = &config.database.url else {
        eprintln!(
            "agentid-server: backup copies SQLite databases; for PostgreSQL use pg_dump (docs/operations.md)"
        );
        return ExitCode::from(2);
    };
    if to.exists() {
        eprintln!(
            "agentid-server: {} already exists; refusing to overwrite it",
            to.display()
        );
        return ExitCode::from(2);
    }
    if !source.exists() {
        eprintln!(
            "agentid-server: there is no database at {}",
            source.display()
        );
        return ExitCode::from(2);
    }
    match crate::db::backup_sqlite(source, to) {
        Ok(bytes) => {
            tracing::info!(backup.path = %to.display(), backup.bytes = bytes, "backup written");
            println!(
                "{}",
                serde_json::json!({ "backup": to.display().to_string(), "bytes": bytes })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentid-server: backup failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck() -> ExitCode {
    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    let tls_cert = config.tls.as_ref().map(|t| t.cert.as_path());
    match crate::http::healthcheck::ready(
        config.listen,
        std::time::Duration::from_secs(3),
        tls_cert,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentid-server: not ready: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    let telemetry = telemetry::init_with_export(
        config.log_format,
        &config.log_filter,
        LogTarget::Stdout,
        config.otlp_endpoint.as_deref(),
    );
    let status = actix_web::rt::System::new().block_on(async move {
        let shutdown = match shutdown_signal() {
            Ok(signal) => signal,
            Err(e) => {
                tracing::error!(error.cause = %e, "could not install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let app = match Application::build(config) {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error.cause = %e, "the server could not start");
                return ExitCode::FAILURE;
            }
        };
        let handle = app.handle();
        actix_web::rt::spawn(async move {
            let name = shutdown.await;
            tracing::info!(
                signal = name,
                "shutting down gracefully: no new connections, finishing in-flight requests"
            );
            handle.stop(true).await;
        });
        match app.run_until_stopped().await {
            Ok(()) => {
                tracing::info!("shutdown complete");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error.cause = %e, "the server stopped with an error");
                ExitCode::FAILURE
            }
        }
    });
    // Flush the spans still queued for the collector (a no-op without one).
    telemetry.shutdown();
    status
}

/// Resolves with the signal's name on the first SIGTERM or SIGINT. The handlers
/// are registered when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

fn config_failure(error: crate::config::ConfigError) -> ExitCode {
    eprintln!("agentid-server: configuration error: {error}");
    ExitCode::from(2)
}

fn create_owner(org: &str, email: &str) -> ExitCode {
    use std::io::BufRead;

    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    telemetry::init(config.log_format, &config.log_filter, LogTarget::Stderr);
    let email = match crate::accounts::normalize_email(email) {
        Ok(e) => e,
        Err(_) => {
            eprintln!("agentid-server: --email is not an email address");
            return ExitCode::from(2);
        }
    };
    // A person at a terminal is asked; a pipe or a file is simply read.
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("Password for {email} (one line on standard input):");
    }
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("agentid-server: could not read the password from standard input");
        return ExitCode::from(2);
    }
    let candidate = secrecy::SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned());
    line.clear();
    let password = match crate::auth::password::validate(
        secrecy::ExposeSecret::expose_secret(&candidate),
        &email,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("agentid-server: the password is not acceptable: {e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> Result<_, String> {
        let hash = crate::auth::password::hash(&password, config.bcrypt_cost)
            .map_err(|e| e.to_string())?;
        let db = Database::connect(&config.database).map_err(|e| e.to_string())?;
        db.migrate().map_err(|e| e.to_string())?;
        // A new organization: no chain to lock yet.
        db.write_now(&[], |conn| {
            crate::accounts::create_org_with_owner(conn, org, &email, &hash, crate::clock::now_ms())
        })
        .map_err(|e: crate::error::ApiError| e.to_string())
    })();
    match result {
        Ok((org, user)) => {
            println!(
                "{}",
                serde_json::json!({ "organization": org, "owner": user })
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentid-server: could not create the owner: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `audit verify` when the database could not be read.
const EXIT_UNREADABLE: u8 = 3;

fn audit_verify(org: Option<&str>) -> ExitCode {
    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    telemetry::init(config.log_format, &config.log_filter, LogTarget::Stderr);
    let unreadable = |e: &dyn std::fmt::Display| {
        eprintln!("agentid-server: could not read the audit log: {e}");
        ExitCode::from(EXIT_UNREADABLE)
    };
    let mut conn = match Database::connect(&config.database).and_then(|db| db.get()) {
        Ok(conn) => conn,
        Err(e) => return unreadable(&e),
    };
    let all = match crate::audit::organization_ids(&mut conn) {
        Ok(ids) => ids,
        Err(e) => return unreadable(&e),
    };
    let org_ids = match org {
        None => all,
        Some(org) if all.iter().any(|id| id == org) => vec![org.to_owned()],
        Some(org) => {
            eprintln!("agentid-server: no organization has the id {org:?}");
            return ExitCode::from(2);
        }
    };
    let mut broken = 0_usize;
    for org_id in org_ids {
        let line = match crate::audit::verify(&mut conn, &org_id) {
            Ok(report) => {
                broken += usize::from(!report.valid);
                serde_json::json!({
                    "org_id": org_id,
                    "valid": report.valid,
                    "records": report.records,
                    "head_seq": report.head_seq,
                    "head_hash": report.head_hash,
                    "first_bad_seq": report.first_bad_seq,
                    "reason": report.reason,
                })
            }
            // An organization without a head or records: its chain's head was removed.
            Err(diesel::result::Error::NotFound) => {
                broken += 1;
                serde_json::json!({
                    "org_id": org_id,
                    "valid": false,
                    "records": 0,
                    "head_seq": null,
                    "head_hash": null,
                    "first_bad_seq": 0,
                    "reason": "the organization has no audit chain head",
                })
            }
            Err(e) => return unreadable(&e),
        };
        println!("{line}");
    }
    if broken == 0 {
        ExitCode::SUCCESS
    } else {
        tracing::error!(audit.broken_chains = broken, "audit chains are broken");
        ExitCode::FAILURE
    }
}
