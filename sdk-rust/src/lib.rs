//! The agentid Rust SDK.
//!
//! - [`secure`] gives an agent its identity in one call: key from the local
//!   [`KeyStore`] (or a new one), registration, proof of possession, and an agent
//!   token kept fresh. The returned [`Agent`] signs actions
//!   ([`Agent::sign_action`]), asks the server for decisions ([`Agent::verify`]),
//!   rotates its key ([`Agent::rotate_key`]) and hands out its token
//!   ([`Agent::token`]).
//! - [`RelyingParty`] verifies what the server signs (agent tokens, decision
//!   receipts) with the server's JWKS, and agents' envelopes offline; it holds no
//!   agent key.
//! - [`AdminClient`] drives the management API.
//! - [`blocking`] wraps all of it for callers without an async runtime.
//!
//! Every failure is an [`Error`] carrying the server's code, message and request
//! id when the server answered; a denied action is a [`Decision`], not an error.
//! Transient failures are retried per [`RetryPolicy`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentid::Error> {
//! // AGENTID_URL and AGENTID_API_KEY come from the environment.
//! let agent = agentid::secure("mail-assistant").await?;
//! let args = serde_json::json!({"to": "bob@example.com", "subject": "Report"});
//! let decision = agent.verify("email:send", Some("bob@example.com"), Some(&args)).await?;
//! if !decision.allowed {
//!     eprintln!("not allowed: {}", decision.reason);
//! }
//! # Ok(()) }
//! ```
//!
//! The SDK never logs, and never puts a private key, API key or token in an
//! error or a `Debug` output. `docs/sdk-rust.md` describes the design.

#![warn(missing_docs)]

mod admin;
mod agent;
pub mod blocking;
mod client;
mod error;
pub mod keystore;
pub mod relying_party;
mod retry;
pub mod signing;
pub mod types;

pub use admin::{
    AdminClient, AgentQuery, AlertQuery, AuditQuery, Operation, Session, NOT_COVERED, OPERATIONS,
    SDK_OPERATIONS,
};
pub use agent::{
    secure, Agent, AgentBuilder, DEFAULT_TOKEN_REFRESH_MARGIN, ENV_API_KEY, ENV_KEY_DIR,
    ENV_KEY_PASSPHRASE, ENV_URL,
};
pub use agentid_protocol::tokens::{AgentTokenClaims, Jwks, ReceiptClaims};
pub use agentid_protocol::{Decision, DecisionReason, Enforcement, ErrorCode};
pub use client::{Client, ClientBuilder, Health, Readiness};
pub use error::Error;
pub use keystore::KeyStore;
pub use relying_party::{RelyingParty, RelyingPartyBuilder, VerifiedAction};
pub use retry::RetryPolicy;
pub use signing::{AgentKey, SignedEnvelope};
