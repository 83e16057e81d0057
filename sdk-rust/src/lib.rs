//! The agentid Rust SDK.
//!
//! Today it offers [`Client`], a typed HTTP client for the server's operational
//! endpoints, and [`Error`], which carries the server's stable error code, message
//! and request id. Agent identity (`secure("my-agent")`), signed actions and the
//! management client build on these pieces.
//!
//! The SDK never logs or returns a secret it was given.

mod client;
mod error;

pub use agentid_protocol::ErrorCode;
pub use client::{Client, Health, Readiness};
pub use error::Error;
