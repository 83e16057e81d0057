//! The command line: `serve` (default), `migrate`, `config check`, `openapi`.
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
    }
}

fn serve() -> ExitCode {
    let config = match Config::from_process_env() {
        Ok(c) => c,
        Err(e) => return config_failure(e),
    };
    telemetry::init(config.log_format, &config.log_filter, LogTarget::Stdout);
    actix_web::rt::System::new().block_on(async move {
        let app = match Application::build(config) {
            Ok(app) => app,
            Err(e) => {
                tracing::error!(error.cause = %e, "the server could not start");
                return ExitCode::FAILURE;
            }
        };
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
    })
}

fn config_failure(error: crate::config::ConfigError) -> ExitCode {
    eprintln!("agentid-server: configuration error: {error}");
    ExitCode::from(2)
}
