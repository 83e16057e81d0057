//! Integration tests: the SDK against a real agentid server started in process
//! (one SQLite database per test), real key files and real signatures. One test
//! binary (the concurrency test re-runs it as separate child processes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod blocking;
mod concurrency;
mod errors;
mod examples;
mod helpers;
mod openapi;
mod relying_party;
mod rotation;
mod secure;
mod vectors;
mod verify;

#[path = "../../examples/guarded_tool.rs"]
#[expect(dead_code, reason = "the example's `main` is not called by the tests")]
mod guarded_tool_example;

#[path = "../../examples/relying_party.rs"]
#[expect(dead_code, reason = "the example's `main` is not called by the tests")]
mod relying_party_example;
