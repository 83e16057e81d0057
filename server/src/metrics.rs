//! Prometheus metrics.
//!
//! Requests are counted and timed by route template (`/api/v1/agents/{id}`), never
//! by raw path, so an attacker cannot grow the label set. Pool gauges are read at
//! scrape time. The registry lives in the application state, not in a global.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::db::Database;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    pool_connections: Gauge,
    pool_idle: Gauge,
    pool_max: Gauge,
    decision_batch: Histogram,
    decisions: Family<DecisionLabels, Counter>,
    rate_limited: Family<ClassLabels, Counter>,
    rate_limit_backend_errors: Counter,
    rate_limit_degraded: Gauge,
    checkpoints: Family<ModeLabels, Histogram>,
    wal_pages: Gauge,
    wal_pages_behind: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub reason: &'static str,
    pub allowed: &'static str,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("agentid");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        let pool_connections = Gauge::default();
        let pool_idle = Gauge::default();
        let pool_max = Gauge::default();
        let decision_batch = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decision_batch_size",
            "Decisions and management changes committed per transaction by the writer",
            decision_batch.clone(),
        );
        registry.register(
            "decisions",
            "Signed-action decisions recorded, by reason",
            decisions.clone(),
        );
        let rate_limited = Family::<ClassLabels, Counter>::default();
        let rate_limit_backend_errors = Counter::default();
        let rate_limit_degraded = Gauge::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by the rate limiter, by route class",
            rate_limited.clone(),
        );
        registry.register(
            "rate_limit_backend_errors",
            "Rate-limit checks Redis failed or did not answer in time (decided in-process instead)",
            rate_limit_backend_errors.clone(),
        );
        registry.register(
            "rate_limit_degraded",
            "1 while the shared (Redis) rate-limit counters are unavailable and this process counts alone",
            rate_limit_degraded.clone(),
        );
        let checkpoints = Family::<ModeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
        });
        let wal_pages = Gauge::default();
        let wal_pages_behind = Gauge::default();
        registry.register(
            "sqlite_checkpoint_seconds",
            "Time SQLite WAL checkpoints took on the checkpointer thread, by mode (passive; restart, which holds the decision writer off)",
            checkpoints.clone(),
        );
        registry.register(
            "sqlite_wal_pages",
            "Pages in the SQLite WAL at the last checkpoint",
            wal_pages.clone(),
        );
        registry.register(
            "sqlite_wal_pages_behind",
            "SQLite WAL pages not yet copied into the database file at the last checkpoint",
            wal_pages_behind.clone(),
        );
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to answering it",
            latency.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Open database connections",
            pool_connections.clone(),
        );
        registry.register(
            "db_pool_idle_connections",
            "Idle database connections",
            pool_idle.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Configured maximum database connections",
            pool_max.clone(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            latency,
            pool_connections,
            pool_idle,
            pool_max,
            decision_batch,
            decisions,
            rate_limited,
            rate_limit_backend_errors,
            rate_limit_degraded,
            checkpoints,
            wal_pages,
            wal_pages_behind,
        })
    }

    /// Records one checkpoint of the SQLite WAL (`db::Checkpointer`).
    pub fn observe_checkpoint(
        &self,
        mode: &'static str,
        seconds: f64,
        wal_pages: i64,
        checkpointed: i64,
    ) {
        self.checkpoints
            .get_or_create(&ModeLabels { mode })
            .observe(seconds);
        self.wal_pages.set(wal_pages.max(0));
        self.wal_pages_behind.set((wal_pages - checkpointed).max(0));
    }

    /// Records one answered request.
    pub fn observe_request(&self, labels: RequestLabels, seconds: f64) {
        self.latency.get_or_create(&labels).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// Records the size of one decision batch.
    pub fn observe_decision_batch(&self, size: usize) {
        self.decision_batch.observe(size as f64);
    }

    /// Counts one recorded decision.
    pub fn count_decision(&self, reason: &'static str, allowed: bool) {
        self.decisions
            .get_or_create(&DecisionLabels {
                reason,
                allowed: if allowed { "true" } else { "false" },
            })
            .inc();
    }

    /// Counts one request refused by the rate limiter.
    pub fn count_rate_limited(&self, class: &'static str) {
        self.rate_limited
            .get_or_create(&ClassLabels { class })
            .inc();
    }

    /// Counts one rate-limit check the shared backend could not answer.
    pub fn count_rate_limit_backend_error(&self) {
        self.rate_limit_backend_errors.inc();
    }

    /// Whether the rate limiter is counting alone because Redis is unavailable.
    pub fn set_rate_limit_degraded(&self, degraded: bool) {
        self.rate_limit_degraded.set(i64::from(degraded));
    }

    /// The exposition text, with the pool gauges read now.
    pub fn render(&self, db: &Database) -> String {
        let (connections, idle, max) = db.pool_state();
        self.pool_connections.set(i64::from(connections));
        self.pool_idle.set(i64::from(idle));
        self.pool_max.set(i64::from(max));
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
