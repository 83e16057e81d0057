//! Logging set-up: `tracing` with JSON or readable lines.
//!
//! Log lines are sentences plus dotted fields. Every line written while serving a
//! request carries that request's `request_id` through its span. Nothing here may
//! ever log a secret: callers pass only identifiers and outcomes.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
pub enum LogTarget {
    /// Standard output: the server's normal stream.
    Stdout,
    /// Standard error: for commands whose standard output is their result.
    Stderr,
}

/// Installs the global subscriber. Calling it twice is harmless (the second call
/// keeps the first subscriber), which lets tests start many servers in one process.
pub fn init(format: LogFormat, filter: &str, target: LogTarget) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        (LogFormat::Json, LogTarget::Stderr) => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        (LogFormat::Pretty, LogTarget::Stdout) => registry.with(fmt::layer()).try_init(),
        (LogFormat::Pretty, LogTarget::Stderr) => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    if result.is_ok() {
        install_panic_hook();
    }
}

/// Sends panics through `tracing`, inside the span of the request that panicked,
/// instead of printing them on their own.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_owned());
        tracing::error!(panic.message = %message, panic.location = %location, "a thread panicked");
    }));
}
