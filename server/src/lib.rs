//! agentid server: identity and trust verification for AI agents.
//!
//! The crate is a library so that `main` and the integration tests start the server
//! the same way ([`startup::Application`]).

pub mod accounts;
pub mod agents;
pub mod alerts;
pub mod audit;
pub mod auth;
pub mod capabilities;
pub mod challenges;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod decisions;
pub mod error;
pub mod http;
pub mod metrics;
pub mod names;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod schema;
pub mod signing;
pub mod startup;
pub mod telemetry;
pub mod trust;
pub mod trust_store;
