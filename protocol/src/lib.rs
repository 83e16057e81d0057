//! Wire types shared by the agentid server and its SDKs.
//!
//! This crate defines what travels over the network: the error envelope and its
//! stable codes, the signed-statement formats (DSSE envelopes, payloads, keys),
//! decisions and the server-signed tokens. It must never depend on an HTTP
//! framework, a database or an async runtime, so that every client (Rust, Python
//! through PyO3, relying parties) can use it unchanged. `docs/protocol.md` is the
//! specification.

pub mod b64;
pub mod capability;
pub mod decision;
pub mod envelope;
pub mod error;
pub mod json;
pub mod keys;
pub mod payload;
pub mod protocol_error;
pub mod tokens;

pub use decision::{Decision, DecisionReason, Enforcement};
pub use envelope::{Envelope, ParsedEnvelope, PayloadType};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use keys::PublicKey;
pub use payload::{ActionPayload, ChallengeResponsePayload, KeyRotationPayload};
pub use protocol_error::{ProtocolError, ProtocolErrorKind};
