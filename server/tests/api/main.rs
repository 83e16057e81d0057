//! Integration tests: real servers on loopback, real SQLite files and a real
//! PostgreSQL server. One binary, so the suite links once.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test should fail loudly at the first surprise"
)]

mod helpers;

mod actions;
mod agents;
mod alerts;
mod audit;
mod capabilities;
mod contention;
mod contract;
mod docs_ui;
mod durability;
mod errors;
mod foundation;
mod hostile;
mod jwks;
mod loadtests;
mod openapi;
mod operations;
mod people;
mod process;
mod ratelimit;
mod readme;
mod tls;
mod tracing;
mod trust;
