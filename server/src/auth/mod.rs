//! Authentication: passwords, sessions, API keys and the login limiter.

pub mod limiter;
pub mod password;
pub mod permissions;
pub mod principal;
pub mod tokens;
