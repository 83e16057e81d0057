//! Wire types shared by the agentid server and its SDKs.
//!
//! This crate defines what travels over the network: the error envelope and its
//! stable codes today, and the signed-statement formats as they are added. It must
//! never depend on an HTTP framework, a database or an async runtime, so that every
//! client (Rust, Python through PyO3, relying parties) can use it unchanged.

pub mod error;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
