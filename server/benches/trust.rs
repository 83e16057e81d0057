//! What the trust model costs the decision writer, per agent per batch: the work the
//! writer does for trust on top of deciding (read the stored state, score it as of
//! the batch, apply the batch's events, score again, store the state), and the
//! explained report the API builds.
//!
//! ```text
//! cargo bench -p agentid-server --bench trust -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! CPU only: no database (the writer's extra query per batch, the unresolved alerts
//! and key ages, is measured with the writer in `hot_path`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark whose set-up fails must stop there, saying why"
)]

use std::hint::black_box;
use std::num::NonZeroU64;

use agentid_server::alerts::Severity;
use agentid_server::capabilities::RiskLevel;
use agentid_server::trust::{self, OpenAlerts, TrustEvent, TrustInputs, TrustState, Weights};
use criterion::{criterion_group, criterion_main, Criterion};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A state with a realistic past: a month of mostly allowed actions, a few
/// violations, a replay and an attestation.
fn lived_state(t0: i64) -> (TrustState, i64) {
    let mut state = TrustState::new(t0);
    let mut now = t0;
    for i in 0..5_000 {
        now += 500_000;
        let event = match i % 1000 {
            7 => TrustEvent::Violation {
                risk: RiskLevel::High,
            },
            500 => TrustEvent::Replay,
            900 => TrustEvent::Attestation {
                value: trust::Attestation::new(0.5).unwrap(),
            },
            _ => TrustEvent::Allowed {
                risk: RiskLevel::Medium,
            },
        };
        state.apply(event, now);
    }
    (state, now)
}

fn inputs(t0: i64, now: i64) -> TrustInputs {
    let mut open_alerts = OpenAlerts::default();
    open_alerts.add(Severity::High);
    TrustInputs {
        now_ms: now,
        agent_created_at_ms: t0,
        key_created_at_ms: t0 + 10 * DAY_MS,
        open_alerts,
        key_max_age_ms: NonZeroU64::new(90 * DAY_MS as u64),
    }
}

fn trust_costs(c: &mut Criterion) {
    let t0 = 1_900_000_000_000;
    let (state, now) = lived_state(t0);
    let json = serde_json::to_string(&state).unwrap();
    let weights = Weights::default();
    let mut group = c.benchmark_group("trust");

    // What the writer does per agent per batch, with one event in the batch.
    group.bench_function("writer_per_agent_per_batch", |b| {
        b.iter(|| {
            let batch_time = now + 1_000;
            let input = inputs(t0, batch_time);
            let mut state: TrustState = serde_json::from_str(black_box(&json)).unwrap();
            let before = trust::score(&state, &input, &weights);
            state.apply(
                TrustEvent::Allowed {
                    risk: RiskLevel::Medium,
                },
                batch_time,
            );
            let after = trust::score(&state, &input, &weights);
            let stored = serde_json::to_string(&state).unwrap();
            black_box((before, after, stored))
        })
    });
    group.bench_function("state_parse", |b| {
        b.iter(|| serde_json::from_str::<TrustState>(black_box(&json)).unwrap())
    });
    group.bench_function("score", |b| {
        let input = inputs(t0, now + 1_000);
        b.iter(|| trust::score(black_box(&state), &input, &weights))
    });
    group.bench_function("apply", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                s.apply(
                    TrustEvent::Allowed {
                        risk: RiskLevel::Medium,
                    },
                    now + 1_000,
                );
                s
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("state_serialize", |b| {
        b.iter(|| serde_json::to_string(black_box(&state)).unwrap())
    });
    // The explained report (API reads and history points, not per decision).
    group.bench_function("evaluate_report", |b| {
        let input = inputs(t0, now + 1_000);
        b.iter(|| trust::evaluate(black_box(&state), &input, &weights))
    });
    group.finish();
}

criterion_group!(benches, trust_costs);
criterion_main!(benches);
