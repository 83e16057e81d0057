//! agentid server: identity and trust verification for AI agents.
//!
//! The crate is a library so that `main` and the integration tests start the server
//! the same way ([`startup::Application`]).

pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod telemetry;
