//! Logging set-up: `tracing` with JSON or readable lines, and optionally trace
//! export over OTLP/HTTP.
//!
//! Log lines are sentences plus dotted fields. Every line written while serving a
//! request carries that request's `request_id` through its span. Nothing here may
//! ever log a secret: callers pass only identifiers and outcomes.
//!
//! When `AGENTID_OTLP_ENDPOINT` is set, spans (the request span `http_request`, the
//! database span `db.run`, the decision writer's `decision.batch`) and warnings
//! inside them are exported in batches by a background thread; nothing is exported
//! otherwise, and then the debug-level spans cost one disabled-callsite check.
//! Bodies, credentials and keys are never span fields, so they are never exported.
//!
//! actix-http logs every request its HTTP/1 parser refuses (an oversize head, a bad
//! header, TLS bytes on the plain port) and every connection that breaks mid-request
//! at ERROR, outside any request. Those are the client's faults, not the server's:
//! `HttpLayerEvents` takes them out of the output and logs them again, from a thread
//! of its own, at INFO (refused requests) or DEBUG (broken connections), keeping
//! ERROR for the server's own failures.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;

use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::LogFormat;

/// The service name traces are exported under.
pub const SERVICE_NAME: &str = "agentid-server";

/// Owns the trace exporter; [`Telemetry::shutdown`] flushes what is still queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter (at most a few seconds).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown_with_timeout(std::time::Duration::from_secs(5)) {
                tracing::warn!(error.cause = %e, "could not flush the last traces");
            }
        }
    }
}

/// The OTLP/HTTP (protobuf) exporter to `endpoint/v1/traces`, batched.
fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The target of actix-http's HTTP/1 connection handling.
const HTTP1_TARGET: &str = "actix_http::h1::dispatcher";

/// The target the HTTP layer's events are logged again under.
pub const HTTP_LAYER_TARGET: &str = "agentid_server::http::connection";

/// An ERROR event of actix-http's HTTP/1 connection handling: logged again by
/// [`HttpLayerEvents`], never written as it is.
fn is_http_layer_error(metadata: &tracing::Metadata<'_>) -> bool {
    *metadata.level() == tracing::Level::ERROR && metadata.target() == HTTP1_TARGET
}

/// Takes actix-http's connection errors (module documentation) and logs them again
/// at their level. The new event cannot be sent from inside `on_event` (that would
/// re-enter the subscriber in the middle of an event), so a thread started on the
/// first such event does it; at most [`HttpLayerEvents::QUEUE`] wait, more are dropped.
#[derive(Debug, Default)]
struct HttpLayerEvents {
    queue: OnceLock<Option<SyncSender<String>>>,
}

impl HttpLayerEvents {
    const QUEUE: usize = 1024;

    fn sender(&self) -> Option<&SyncSender<String>> {
        self.queue
            .get_or_init(|| {
                let (sender, receiver) = sync_channel::<String>(Self::QUEUE);
                std::thread::Builder::new()
                    .name("agentid-http-log".to_owned())
                    .spawn(move || {
                        for message in receiver {
                            log_http_layer_event(&message);
                        }
                    })
                    .ok()
                    .map(|_| sender)
            })
            .as_ref()
    }
}

impl<S: tracing::Subscriber> Layer<S> for HttpLayerEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if !is_http_layer_error(event.metadata()) {
            return;
        }
        let mut message = MessageOf(String::new());
        event.record(&mut message);
        if let Some(sender) = self.sender() {
            let _ = sender.try_send(message.0);
        }
    }
}

/// The `message` field of an event.
struct MessageOf(String);

impl tracing::field::Visit for MessageOf {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// Logs one of actix-http's connection errors at its level: a request its parser
/// refused (it answered 400 or 431 itself) at INFO, a connection that broke while a
/// request was read at DEBUG, anything else at ERROR.
fn log_http_layer_event(message: &str) {
    if let Some(cause) = message.strip_prefix("stream error: request parse error: ") {
        tracing::info!(
            target: HTTP_LAYER_TARGET,
            { error.cause = %cause },
            "the HTTP layer refused a malformed request; it answered 400 or 431 without a body"
        );
    } else if let Some(cause) = message.strip_prefix("stream error: I/O error: ") {
        tracing::debug!(
            target: HTTP_LAYER_TARGET,
            { error.cause = %cause },
            "a connection broke while its request was read"
        );
    } else {
        tracing::error!(target: HTTP_LAYER_TARGET, { error.cause = %message }, "the HTTP layer failed");
    }
}

/// What is exported: spans at info and above, this crate's debug spans (`db.run`,
/// `decision.batch`), and warnings and errors as span events.
fn export_filter(metadata: &tracing::Metadata<'_>) -> bool {
    if is_http_layer_error(metadata) {
        false
    } else if metadata.is_span() {
        *metadata.level() <= tracing::Level::INFO
            || (*metadata.level() <= tracing::Level::DEBUG
                && metadata.target().starts_with("agentid_server"))
    } else {
        *metadata.level() <= tracing::Level::WARN
    }
}

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
    init_with_export(format, filter, target, None);
}

/// Like [`init`], and exports traces to the OTLP/HTTP collector at `otlp_endpoint`
/// when given. Keep the returned [`Telemetry`] and shut it down on exit so the last
/// spans are flushed. A collector that cannot be set up is logged, never fatal.
pub fn init_with_export(
    format: LogFormat,
    filter: &str,
    target: LogTarget,
    otlp_endpoint: Option<&str>,
) -> Telemetry {
    let filter = EnvFilter::try_new(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .and(filter_fn(|metadata| !is_http_layer_error(metadata)));
    let (provider, export_error) = match otlp_endpoint.map(otlp_provider) {
        None => (None, None),
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let export = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_filter(filter_fn(export_filter))
    });
    let registry = tracing_subscriber::registry()
        .with(export)
        .with(HttpLayerEvents::default());
    let result = match (format, target) {
        (LogFormat::Json, LogTarget::Stdout) => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
        (LogFormat::Json, LogTarget::Stderr) => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        (LogFormat::Pretty, LogTarget::Stdout) => {
            registry.with(fmt::layer().with_filter(filter)).try_init()
        }
        (LogFormat::Pretty, LogTarget::Stderr) => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if result.is_ok() {
        install_panic_hook();
    }
    if let Some(error) = export_error {
        tracing::error!(error.cause = %error, "trace export could not be set up; continuing without it");
    }
    match (&provider, otlp_endpoint) {
        (Some(_), Some(endpoint)) if result.is_ok() => {
            tracing::info!(otlp.endpoint = %endpoint, "exporting traces over OTLP/HTTP");
        }
        _ => {}
    }
    Telemetry {
        provider: if result.is_ok() { provider } else { None },
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
