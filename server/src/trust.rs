//! The trust model: a 0–100 score per agent from documented factors, each explained,
//! computed only from recorded events.
//!
//! [`TrustState`] holds exponentially decayed counters and is updated in O(1) per
//! event by [`TrustState::apply`]; it serializes to JSON so it can live in one
//! column. [`evaluate`] combines a state, the facts the state does not hold
//! ([`TrustInputs`]: the time, the agent's and its key's age, unresolved alerts, the
//! organization's rotation policy) and an organization's [`Weights`] into a
//! [`TrustReport`]; [`score`] gives the same numbers without the explanations.
//! `docs/trust.md` states every formula and constant.
//!
//! This module must never read a clock, touch the database or do I/O: time is always
//! a parameter. It uses only IEEE-754 basic arithmetic (no libm), so identical
//! histories give bit-identical scores on every platform. It must never present a
//! default as a measurement: a factor without data says so and takes no part in the
//! score.

use std::fmt;
use std::num::NonZeroU64;

use agentid_protocol::DecisionReason;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use crate::alerts::Severity;
use crate::capabilities::RiskLevel;

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Half-life of the verification outcomes (allowed and denied-for-the-agent's-fault
/// statements) behind [`Factor::Verification`].
pub const OUTCOME_HALF_LIFE_MS: i64 = 14 * DAY_MS;
/// Half-life of the risk-weighted capability violations.
pub const VIOLATION_HALF_LIFE_MS: i64 = 30 * DAY_MS;
/// Half-life of replayed statements.
pub const REPLAY_HALF_LIFE_MS: i64 = 30 * DAY_MS;
/// Half-life of statements with bad signatures (anyone can send those, so they are
/// forgotten sooner).
pub const BAD_SIGNATURE_HALF_LIFE_MS: i64 = 7 * DAY_MS;
/// Half-life of administrators' attestations.
pub const ATTESTATION_HALF_LIFE_MS: i64 = 90 * DAY_MS;
/// Half-life of the short-horizon action rate (what the agent is doing now).
pub const ACTIVITY_SHORT_HALF_LIFE_MS: i64 = HOUR_MS;
/// Half-life of the long-horizon action rate (the agent's own baseline).
pub const ACTIVITY_LONG_HALF_LIFE_MS: i64 = 7 * DAY_MS;

/// Risk-weighted violations that halve [`Factor::CapabilityViolations`]: one high-risk
/// violation.
pub const VIOLATION_HALF_MASS: f64 = 4.0;
/// Replays that halve [`Factor::Replays`]: one.
pub const REPLAY_HALF_MASS: f64 = 1.0;
/// Bad signatures that halve [`Factor::BadSignatures`]: a burst of five.
pub const BAD_SIGNATURE_HALF_MASS: f64 = 5.0;
/// Severity-weighted unresolved alerts that halve [`Factor::OpenAlerts`]: one high.
pub const ALERT_HALF_MASS: f64 = 4.0;
/// Agent age at which [`Factor::AgentAge`] reaches one half.
pub const AGENT_AGE_HALF_MS: i64 = 30 * DAY_MS;
/// Recent statements at which the incident and verification factors' confidence
/// reaches one half.
pub const EVIDENCE_HALF_CONFIDENCE: f64 = 10.0;
/// Observation needed before the activity baseline exists.
pub const BASELINE_MIN_SPAN_MS: i64 = DAY_MS;
/// Allowed actions needed (since tracking began) before the activity baseline exists.
pub const BASELINE_MIN_ACTIONS: u64 = 20;
/// Long-horizon actions at which the anomaly factor's volume confidence is one half.
pub const BASELINE_HALF_CONFIDENCE: f64 = 20.0;
/// Pseudo-actions added to both sides of the anomaly ratios, so a handful of actions
/// is never an anomaly.
pub const ANOMALY_SMOOTHING: f64 = 10.0;
/// How many times its own baseline rate an agent may act before it is anomalous.
pub const RATE_TOLERANCE: f64 = 4.0;
/// How many times its own baseline mean risk an agent's recent actions may carry
/// before they are anomalous.
pub const MIX_TOLERANCE: f64 = 2.0;
/// Attestations at which the attestation factor's confidence is one half.
pub const ATTESTATION_HALF_CONFIDENCE: f64 = 1.0;
/// How far from 1 the sum of valid [`Weights`] may be.
pub const WEIGHT_SUM_TOLERANCE: f64 = 1e-9;
/// The score when no weighted factor has data: a neutral midpoint, not a measurement.
pub const NEUTRAL_SCORE: f64 = 50.0;
/// The risk assumed for a capability missing from the organization's catalogue: an
/// agent reaching for something nobody defined is treated as a serious attempt.
pub const UNCATALOGUED_RISK: RiskLevel = RiskLevel::High;

/// How much a capability's risk weighs in violations and in the activity mix: low 1,
/// medium 2, high 4, critical 8 (each level doubles the stakes).
pub fn risk_weight(risk: RiskLevel) -> f64 {
    match risk {
        RiskLevel::Low => 1.0,
        RiskLevel::Medium => 2.0,
        RiskLevel::High => 4.0,
        RiskLevel::Critical => 8.0,
    }
}

/// How much an unresolved alert weighs in [`Factor::OpenAlerts`]: low 1, medium 2,
/// high 4, critical 8.
pub fn severity_weight(severity: Severity) -> f64 {
    match severity {
        Severity::Low => 1.0,
        Severity::Medium => 2.0,
        Severity::High => 4.0,
        Severity::Critical => 8.0,
    }
}

/// One of the documented inputs to the score.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// Share of recent authenticated statements that were not denied for the agent's
    /// own fault.
    Verification,
    /// Recent capability violations, weighted by the capability's risk.
    CapabilityViolations,
    /// Recent replayed statements.
    Replays,
    /// Recent statements naming the agent whose signature did not verify.
    BadSignatures,
    /// Unresolved security alerts about the agent, weighted by severity.
    OpenAlerts,
    /// Age of the current key against the organization's rotation policy.
    KeyHygiene,
    /// Time since the agent was created.
    AgentAge,
    /// Recent action rate and risk mix against the agent's own baseline.
    ActivityAnomaly,
    /// Administrators' attestations.
    Attestation,
}

impl Factor {
    /// How many factors there are.
    pub const COUNT: usize = 9;

    /// Every factor, in report order.
    pub const ALL: [Factor; Factor::COUNT] = [
        Factor::Verification,
        Factor::CapabilityViolations,
        Factor::Replays,
        Factor::BadSignatures,
        Factor::OpenAlerts,
        Factor::KeyHygiene,
        Factor::AgentAge,
        Factor::ActivityAnomaly,
        Factor::Attestation,
    ];

    /// The stored and API spelling, e.g. `capability_violations`.
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Verification => "verification",
            Factor::CapabilityViolations => "capability_violations",
            Factor::Replays => "replays",
            Factor::BadSignatures => "bad_signatures",
            Factor::OpenAlerts => "open_alerts",
            Factor::KeyHygiene => "key_hygiene",
            Factor::AgentAge => "agent_age",
            Factor::ActivityAnomaly => "activity_anomaly",
            Factor::Attestation => "attestation",
        }
    }

    /// The factor spelled `s`, if any.
    pub fn parse(s: &str) -> Option<Factor> {
        Factor::ALL.into_iter().find(|f| f.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An administrator's judgement of an agent, from -1 (distrust) to 1 (vouch).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Attestation(f64);

/// An attestation value outside -1..=1 (or not a number).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("an attestation must be a number from -1 to 1, not {0}")]
pub struct AttestationError(pub f64);

impl Attestation {
    /// `value` as an attestation, if it is a number from -1 to 1.
    pub fn new(value: f64) -> Result<Attestation, AttestationError> {
        if (-1.0..=1.0).contains(&value) {
            Ok(Attestation(value))
        } else {
            Err(AttestationError(value))
        }
    }

    /// The value, from -1 to 1.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Attestation {
    type Error = AttestationError;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Attestation::new(value)
    }
}

impl From<Attestation> for f64 {
    fn from(a: Attestation) -> f64 {
        a.0
    }
}

/// Something that happened to an agent that the trust model counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrustEvent {
    /// A statement signed with the agent's current key passed every check.
    Allowed {
        /// The requested capability's risk.
        risk: RiskLevel,
    },
    /// A statement signed with the agent's current key was refused for a fault of the
    /// statement itself: issued-at too old or in the future, or the wrong audience.
    Rejected,
    /// The agent asked for a capability it was not granted, or for a resource outside
    /// its grant.
    Violation {
        /// The requested capability's risk.
        risk: RiskLevel,
    },
    /// A statement of the agent was presented again (its nonce was already used).
    Replay,
    /// A statement naming the agent carried a signature that does not verify (or is
    /// not canonical).
    BadSignature,
    /// An administrator attested to the agent.
    Attestation {
        /// From -1 (distrust) to 1 (vouch).
        value: Attestation,
    },
}

impl TrustEvent {
    /// The event a decision with `reason` counts as, or `None` when the decision says
    /// nothing about the agent. `risk` is the requested capability's risk level, `None`
    /// when it is not in the organization's catalogue ([`UNCATALOGUED_RISK`] then).
    ///
    /// The reason decides, not whether the action went through: a violation that
    /// monitoring mode let through is still a violation. Not counted: pending,
    /// suspended or revoked agents and unknown, retired or revoked keys (the statement
    /// is not the agent's current identity speaking), and `trust_below_minimum` (it
    /// would feed the score back on itself).
    pub fn from_decision(reason: DecisionReason, risk: Option<RiskLevel>) -> Option<TrustEvent> {
        let risk = risk.unwrap_or(UNCATALOGUED_RISK);
        match reason {
            DecisionReason::Allowed => Some(TrustEvent::Allowed { risk }),
            DecisionReason::WrongAudience
            | DecisionReason::IssuedAtTooOld
            | DecisionReason::IssuedAtInFuture => Some(TrustEvent::Rejected),
            DecisionReason::CapabilityNotGranted | DecisionReason::ResourceNotInScope => {
                Some(TrustEvent::Violation { risk })
            }
            DecisionReason::ReplayedNonce => Some(TrustEvent::Replay),
            DecisionReason::BadSignature | DecisionReason::NonCanonicalSignature => {
                Some(TrustEvent::BadSignature)
            }
            DecisionReason::AgentPending
            | DecisionReason::AgentSuspended
            | DecisionReason::AgentRevoked
            | DecisionReason::UnknownKey
            | DecisionReason::KeyRetired
            | DecisionReason::KeyRevoked
            | DecisionReason::TrustBelowMinimum
            | DecisionReason::Unknown => None,
            // A reason added later counts for nothing until it is mapped here.
            _ => None,
        }
    }

    /// A stable snake_case name, e.g. `capability_violation` (the spelling the
    /// `trust_events` table already uses for the incidents).
    pub fn as_str(&self) -> &'static str {
        match self {
            TrustEvent::Allowed { .. } => "allowed",
            TrustEvent::Rejected => "rejected",
            TrustEvent::Violation { .. } => "capability_violation",
            TrustEvent::Replay => "replay",
            TrustEvent::BadSignature => "bad_signature",
            TrustEvent::Attestation { .. } => "attestation",
        }
    }
}

/// An agent's trust counters, each decayed exponentially with its own half-life.
///
/// Counters are stored as of [`TrustState::updated_ms`] and decayed lazily to `now`
/// when an event is applied or the state is evaluated, so an update costs the same
/// whatever the history. The order events arrive in does not matter (up to
/// rounding): a late event counts with the weight of its own time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredState")]
pub struct TrustState {
    since_ms: i64,
    updated_ms: i64,
    allowed_total: u64,
    #[serde(serialize_with = "exact_f64::serialize")]
    allowed: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    denied: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    violations: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    replays: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    bad_signatures: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    attestation_sum: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    attestation_count: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    activity_short: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    activity_long: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    risk_short: f64,
    #[serde(serialize_with = "exact_f64::serialize")]
    risk_long: f64,
}

/// [`TrustState`] as stored, before its invariants are checked.
#[derive(Deserialize)]
struct StoredState {
    since_ms: i64,
    updated_ms: i64,
    allowed_total: u64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    allowed: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    denied: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    violations: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    replays: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    bad_signatures: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    attestation_sum: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    attestation_count: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    activity_short: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    activity_long: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    risk_short: f64,
    #[serde(deserialize_with = "exact_f64::deserialize")]
    risk_long: f64,
}

/// Counters are stored as decimal strings that read back to the same bits: JSON
/// numbers are not guaranteed to (serde_json, for one, parses them to within an ulp
/// unless its `float_roundtrip` feature is on), and a reloaded state must continue
/// exactly as if it had never been stored.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        // Rust prints the shortest digits that parse back to the same bits; the
        // exponent form keeps decayed values like 1e-200 short.
        let magnitude = value.abs();
        if *value == 0.0 || (1e-5..1e16).contains(&magnitude) {
            serializer.collect_str(value)
        } else {
            serializer.collect_str(&format_args!("{value:e}"))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse::<f64>()
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a number")))
    }
}

/// A stored [`TrustState`] that cannot be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid trust state: {0}")]
pub struct StateError(&'static str);

impl TryFrom<StoredState> for TrustState {
    type Error = StateError;

    fn try_from(s: StoredState) -> Result<Self, Self::Error> {
        if s.updated_ms < s.since_ms {
            return Err(StateError("updated_ms is before since_ms"));
        }
        let counters = [
            s.allowed,
            s.denied,
            s.violations,
            s.replays,
            s.bad_signatures,
            s.attestation_count,
            s.activity_short,
            s.activity_long,
            s.risk_short,
            s.risk_long,
        ];
        if !counters.iter().all(|c| c.is_finite() && *c >= 0.0) {
            return Err(StateError("a counter is negative or not finite"));
        }
        if !s.attestation_sum.is_finite() {
            return Err(StateError("attestation_sum is not finite"));
        }
        Ok(TrustState {
            since_ms: s.since_ms,
            updated_ms: s.updated_ms,
            allowed_total: s.allowed_total,
            allowed: s.allowed,
            denied: s.denied,
            violations: s.violations,
            replays: s.replays,
            bad_signatures: s.bad_signatures,
            attestation_sum: s.attestation_sum,
            attestation_count: s.attestation_count,
            activity_short: s.activity_short,
            activity_long: s.activity_long,
            risk_short: s.risk_short,
            risk_long: s.risk_long,
        })
    }
}

impl TrustState {
    /// A state with nothing recorded, tracking from `started_at_ms` (the agent's
    /// creation, or when tracking began for an agent created before it).
    pub fn new(started_at_ms: i64) -> TrustState {
        TrustState {
            since_ms: started_at_ms,
            updated_ms: started_at_ms,
            allowed_total: 0,
            allowed: 0.0,
            denied: 0.0,
            violations: 0.0,
            replays: 0.0,
            bad_signatures: 0.0,
            attestation_sum: 0.0,
            attestation_count: 0.0,
            activity_short: 0.0,
            activity_long: 0.0,
            risk_short: 0.0,
            risk_long: 0.0,
        }
    }

    /// When tracking began.
    pub fn since_ms(&self) -> i64 {
        self.since_ms
    }

    /// The time the stored counters are decayed to: the latest event's time.
    pub fn updated_ms(&self) -> i64 {
        self.updated_ms
    }

    /// Allowed actions since tracking began (not decayed).
    pub fn allowed_total(&self) -> u64 {
        self.allowed_total
    }

    /// Records `event` as happening at `now_ms`, in constant time.
    ///
    /// An event stamped before [`TrustState::updated_ms`] (another replica's clock)
    /// counts with the weight it would have had if it had arrived in order: its age
    /// at the last update decays it. The stored time never moves backwards.
    pub fn apply(&mut self, event: TrustEvent, now_ms: i64) {
        self.decay_to(now_ms);
        let late_ms = self.updated_ms.saturating_sub(now_ms).max(0) as f64;
        let weight = |half_life_ms: i64| {
            if late_ms > 0.0 {
                exp2_nonpositive(-late_ms / half_life_ms as f64)
            } else {
                1.0
            }
        };
        match event {
            TrustEvent::Allowed { risk } => {
                let risk = risk_weight(risk);
                let short = weight(ACTIVITY_SHORT_HALF_LIFE_MS);
                let long = weight(ACTIVITY_LONG_HALF_LIFE_MS);
                self.allowed_total = self.allowed_total.saturating_add(1);
                self.allowed += weight(OUTCOME_HALF_LIFE_MS);
                self.activity_short += short;
                self.activity_long += long;
                self.risk_short += risk * short;
                self.risk_long += risk * long;
            }
            TrustEvent::Rejected => self.denied += weight(OUTCOME_HALF_LIFE_MS),
            TrustEvent::Violation { risk } => {
                self.denied += weight(OUTCOME_HALF_LIFE_MS);
                self.violations += risk_weight(risk) * weight(VIOLATION_HALF_LIFE_MS);
            }
            TrustEvent::Replay => self.replays += weight(REPLAY_HALF_LIFE_MS),
            TrustEvent::BadSignature => self.bad_signatures += weight(BAD_SIGNATURE_HALF_LIFE_MS),
            TrustEvent::Attestation { value } => {
                let w = weight(ATTESTATION_HALF_LIFE_MS);
                self.attestation_sum += value.get() * w;
                self.attestation_count += w;
            }
        }
    }

    /// Decays every counter to `now_ms` (no-op if `now_ms` is not later). The one
    /// place decay happens, so applying and evaluating at the same instant agree to
    /// the bit.
    fn decay_to(&mut self, now_ms: i64) {
        if now_ms <= self.updated_ms {
            return;
        }
        let elapsed = now_ms.saturating_sub(self.updated_ms) as f64;
        let factor = |half_life_ms: i64| exp2_nonpositive(-elapsed / half_life_ms as f64);
        let outcomes = factor(OUTCOME_HALF_LIFE_MS);
        self.allowed *= outcomes;
        self.denied *= outcomes;
        self.violations *= factor(VIOLATION_HALF_LIFE_MS);
        self.replays *= factor(REPLAY_HALF_LIFE_MS);
        self.bad_signatures *= factor(BAD_SIGNATURE_HALF_LIFE_MS);
        let attestations = factor(ATTESTATION_HALF_LIFE_MS);
        self.attestation_sum *= attestations;
        self.attestation_count *= attestations;
        let short = factor(ACTIVITY_SHORT_HALF_LIFE_MS);
        self.activity_short *= short;
        self.risk_short *= short;
        let long = factor(ACTIVITY_LONG_HALF_LIFE_MS);
        self.activity_long *= long;
        self.risk_long *= long;
        self.updated_ms = now_ms;
    }
}

/// Unresolved (open or acknowledged) security alerts about an agent, by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAlerts {
    /// Unresolved low-severity alerts.
    pub low: u32,
    /// Unresolved medium-severity alerts.
    pub medium: u32,
    /// Unresolved high-severity alerts.
    pub high: u32,
    /// Unresolved critical alerts.
    pub critical: u32,
}

impl OpenAlerts {
    /// Counts one more unresolved alert of `severity`.
    pub fn add(&mut self, severity: Severity) {
        let count = match severity {
            Severity::Low => &mut self.low,
            Severity::Medium => &mut self.medium,
            Severity::High => &mut self.high,
            Severity::Critical => &mut self.critical,
        };
        *count = count.saturating_add(1);
    }

    /// How many alerts in all.
    pub fn total(&self) -> u64 {
        u64::from(self.low)
            + u64::from(self.medium)
            + u64::from(self.high)
            + u64::from(self.critical)
    }

    /// The severity-weighted sum (see [`severity_weight`]).
    pub fn mass(&self) -> f64 {
        f64::from(self.low) * severity_weight(Severity::Low)
            + f64::from(self.medium) * severity_weight(Severity::Medium)
            + f64::from(self.high) * severity_weight(Severity::High)
            + f64::from(self.critical) * severity_weight(Severity::Critical)
    }
}

/// The facts an evaluation needs that are not events: the time and what the database
/// knows about the agent now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustInputs {
    /// The evaluation's time.
    pub now_ms: i64,
    /// When the agent was created.
    pub agent_created_at_ms: i64,
    /// When the agent's current key was created (registered or rotated in).
    pub key_created_at_ms: i64,
    /// Unresolved security alerts about the agent.
    pub open_alerts: OpenAlerts,
    /// The organization's key rotation policy: the oldest a key should get. `None`
    /// when the organization has none (key hygiene then has no data).
    pub key_max_age_ms: Option<NonZeroU64>,
}

/// Per-factor weights: each from 0 to 1, summing to 1. Serialized as a JSON object
/// `{"factor_name": weight, ...}` naming every factor exactly once.
///
/// The defaults (see `docs/trust.md` for why): verification 0.20, capability
/// violations 0.20, replays 0.10, bad signatures 0.05, open alerts 0.10, key hygiene
/// 0.10, agent age 0.10, activity anomaly 0.10, attestation 0.05.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights([f64; Factor::COUNT]);

/// Why a set of weights was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsError {
    /// A name that is not a factor.
    UnknownFactor(String),
    /// A factor named twice.
    DuplicateFactor(Factor),
    /// Factors without a weight.
    MissingFactors(Vec<Factor>),
    /// A weight that is NaN or infinite.
    NotFinite(Factor),
    /// A weight below 0 or above 1.
    OutOfRange {
        /// The factor.
        factor: Factor,
        /// Its weight.
        weight: f64,
    },
    /// Weights whose sum is not 1.
    Sum(f64),
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::UnknownFactor(name) => {
                write!(f, "`{name}` is not a trust factor; the factors are ")?;
                write_factor_list(f, &Factor::ALL)
            }
            WeightsError::DuplicateFactor(factor) => {
                write!(f, "the weight of `{factor}` is given more than once")
            }
            WeightsError::MissingFactors(factors) => {
                f.write_str("every trust factor needs a weight (0 to ignore it); missing: ")?;
                write_factor_list(f, factors)
            }
            WeightsError::NotFinite(factor) => {
                write!(f, "the weight of `{factor}` is not a finite number")
            }
            WeightsError::OutOfRange { factor, weight } => write!(
                f,
                "the weight of `{factor}` is {weight}; a weight must be from 0 to 1"
            ),
            WeightsError::Sum(sum) => write!(
                f,
                "the weights must sum to 1 (within {WEIGHT_SUM_TOLERANCE:e}); they sum to {sum}"
            ),
        }
    }
}

impl std::error::Error for WeightsError {}

fn write_factor_list(f: &mut fmt::Formatter<'_>, factors: &[Factor]) -> fmt::Result {
    for (i, factor) in factors.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "`{factor}`")?;
    }
    Ok(())
}

impl Default for Weights {
    fn default() -> Weights {
        let mut w = [0.0; Factor::COUNT];
        for factor in Factor::ALL {
            w[factor.index()] = match factor {
                Factor::Verification => 0.20,
                Factor::CapabilityViolations => 0.20,
                Factor::Replays => 0.10,
                Factor::BadSignatures => 0.05,
                Factor::OpenAlerts => 0.10,
                Factor::KeyHygiene => 0.10,
                Factor::AgentAge => 0.10,
                Factor::ActivityAnomaly => 0.10,
                Factor::Attestation => 0.05,
            };
        }
        Weights(w)
    }
}

impl Weights {
    /// Checks `entries` (factor name, weight): every factor named exactly once, each
    /// weight a number from 0 to 1, and the sum 1 within [`WEIGHT_SUM_TOLERANCE`].
    pub fn validate<I, K>(entries: I) -> Result<Weights, WeightsError>
    where
        I: IntoIterator<Item = (K, f64)>,
        K: AsRef<str>,
    {
        let mut weights: [Option<f64>; Factor::COUNT] = [None; Factor::COUNT];
        for (name, weight) in entries {
            let name = name.as_ref();
            let factor =
                Factor::parse(name).ok_or_else(|| WeightsError::UnknownFactor(name.to_owned()))?;
            let slot = &mut weights[factor.index()];
            if slot.is_some() {
                return Err(WeightsError::DuplicateFactor(factor));
            }
            if !weight.is_finite() {
                return Err(WeightsError::NotFinite(factor));
            }
            if !(0.0..=1.0).contains(&weight) {
                return Err(WeightsError::OutOfRange { factor, weight });
            }
            *slot = Some(weight);
        }
        let missing: Vec<Factor> = Factor::ALL
            .into_iter()
            .filter(|f| weights[f.index()].is_none())
            .collect();
        if !missing.is_empty() {
            return Err(WeightsError::MissingFactors(missing));
        }
        let values = weights.map(|w| w.unwrap_or(0.0));
        let sum: f64 = values.iter().sum();
        if (sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
            return Err(WeightsError::Sum(sum));
        }
        Ok(Weights(values))
    }

    /// The weight of `factor`.
    pub fn get(&self, factor: Factor) -> f64 {
        self.0[factor.index()]
    }

    /// Every factor with its weight, in [`Factor::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Factor, f64)> + '_ {
        Factor::ALL.into_iter().map(|f| (f, self.get(f)))
    }
}

impl Serialize for Weights {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Factor::COUNT))?;
        for (factor, weight) in self.iter() {
            map.serialize_entry(factor.as_str(), &weight)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Weights {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Weights, D::Error> {
        struct WeightsVisitor;

        impl<'de> Visitor<'de> for WeightsVisitor {
            type Value = Weights;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping every trust factor to a weight from 0 to 1")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Weights, A::Error> {
                // Collected as pairs, not into a map, so a repeated key is refused
                // rather than silently overwritten.
                let mut entries: Vec<(String, f64)> = Vec::with_capacity(Factor::COUNT);
                while let Some(entry) = map.next_entry::<String, f64>()? {
                    entries.push(entry);
                }
                Weights::validate(entries).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_map(WeightsVisitor)
    }
}

/// One factor's part in a [`TrustReport`].
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FactorReport {
    /// Which factor.
    pub factor: Factor,
    /// From 0 (worst) to 1 (best); `None` when the factor has no data yet.
    pub value: Option<f64>,
    /// The organization's weight for the factor.
    pub weight: f64,
    /// Points of the score this factor provides (0 without data); the contributions
    /// add up to the score.
    pub contribution: f64,
    /// From 0 to 1: how much evidence the value rests on.
    pub confidence: f64,
    /// One line a person can read.
    pub reason: String,
}

/// A score with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TrustReport {
    /// From 0 to 100.
    pub score: f64,
    /// From 0 to 1: the weight-averaged confidence of all factors (a factor without
    /// data counts as 0).
    pub confidence: f64,
    /// False when no weighted factor had data, so the score is the neutral
    /// [`NEUTRAL_SCORE`] rather than a measurement.
    pub measured: bool,
    /// One line summing the report up.
    pub summary: String,
    /// Every factor, in [`Factor::ALL`] order.
    pub factors: Vec<FactorReport>,
}

/// A score and its confidence, without explanations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrustScore {
    /// From 0 to 100.
    pub score: f64,
    /// From 0 to 1.
    pub confidence: f64,
    /// False when the score is the neutral [`NEUTRAL_SCORE`].
    pub measured: bool,
}

/// The score and confidence of `state` as of `inputs.now_ms`: exactly the numbers
/// [`evaluate`] reports, without building the explanations.
pub fn score(state: &TrustState, inputs: &TrustInputs, weights: &Weights) -> TrustScore {
    let m = measure(state, inputs);
    combine(&m, weights).score
}

/// The score of `state` as of `inputs.now_ms` under `weights`, factor by factor.
///
/// The score is the weighted mean of the factors that have data (weights
/// renormalized over them), times 100; when no factor with a non-zero weight has
/// data it is [`NEUTRAL_SCORE`] with confidence 0 and `measured` false. Confidence is
/// the sum over all factors of weight × the factor's confidence.
pub fn evaluate(state: &TrustState, inputs: &TrustInputs, weights: &Weights) -> TrustReport {
    let m = measure(state, inputs);
    let combined = combine(&m, weights);
    let factors = Factor::ALL
        .into_iter()
        .map(|factor| {
            let i = factor.index();
            FactorReport {
                factor,
                value: m.values[i],
                weight: weights.get(factor),
                contribution: combined.contributions[i],
                confidence: m.confidences[i],
                reason: reason(factor, &m),
            }
        })
        .collect::<Vec<_>>();
    let with_data = m.values.iter().filter(|v| v.is_some()).count();
    let summary = if combined.score.measured {
        format!(
            "score {:.1} from {with_data} of {} factors with data; confidence {:.2}",
            combined.score.score,
            Factor::COUNT,
            combined.score.confidence
        )
    } else {
        format!(
            "no weighted factor has data yet: {NEUTRAL_SCORE:.0} is the neutral starting point, \
             not a measurement"
        )
    };
    TrustReport {
        score: combined.score.score,
        confidence: combined.score.confidence,
        measured: combined.score.measured,
        summary,
        factors,
    }
}

/// Every factor's value and confidence, plus the figures the reasons quote.
#[derive(Debug)]
struct Measurements {
    values: [Option<f64>; Factor::COUNT],
    confidences: [f64; Factor::COUNT],
    /// The state decayed to the evaluation time.
    state: TrustState,
    span_ms: f64,
    agent_age_ms: f64,
    key_age_ms: f64,
    key_max_age_ms: Option<f64>,
    alerts: OpenAlerts,
    anomaly: Option<Anomaly>,
}

#[derive(Debug, Clone, Copy)]
struct Anomaly {
    recent_per_hour: f64,
    baseline_per_hour: f64,
    rate_ratio: f64,
    mix_ratio: f64,
}

fn measure(state: &TrustState, inputs: &TrustInputs) -> Measurements {
    let mut s = state.clone();
    s.decay_to(inputs.now_ms);
    let now = inputs.now_ms;
    let span_ms = now.saturating_sub(s.since_ms).max(0) as f64;
    let agent_age_ms = now.saturating_sub(inputs.agent_created_at_ms).max(0) as f64;
    let key_age_ms = now.saturating_sub(inputs.key_created_at_ms).max(0) as f64;
    let key_max_age_ms = inputs.key_max_age_ms.map(|p| p.get() as f64);

    let mut values = [None; Factor::COUNT];
    let mut confidences = [0.0; Factor::COUNT];
    let mut set = |factor: Factor, value: Option<f64>, confidence: f64| {
        values[factor.index()] = value;
        confidences[factor.index()] = if value.is_some() { confidence } else { 0.0 };
    };

    // Statements seen for this agent recently: what the incident counts are measured
    // against.
    let outcomes = s.allowed + s.denied;
    let exposure = outcomes + s.replays + s.bad_signatures;
    let evidence = |n: f64| n / (n + EVIDENCE_HALF_CONFIDENCE);

    set(
        Factor::Verification,
        (outcomes > 0.0).then(|| s.allowed / outcomes),
        evidence(outcomes),
    );
    set(
        Factor::CapabilityViolations,
        Some(half_at(s.violations, VIOLATION_HALF_MASS)),
        evidence(exposure),
    );
    set(
        Factor::Replays,
        Some(half_at(s.replays, REPLAY_HALF_MASS)),
        evidence(exposure),
    );
    set(
        Factor::BadSignatures,
        Some(half_at(s.bad_signatures, BAD_SIGNATURE_HALF_MASS)),
        evidence(exposure),
    );
    set(
        Factor::OpenAlerts,
        Some(half_at(inputs.open_alerts.mass(), ALERT_HALF_MASS)),
        1.0,
    );
    set(
        Factor::KeyHygiene,
        key_max_age_ms.map(|max| (2.0 - key_age_ms / max).clamp(0.0, 1.0)),
        1.0,
    );
    set(
        Factor::AgentAge,
        Some(agent_age_ms / (agent_age_ms + AGENT_AGE_HALF_MS as f64)),
        1.0,
    );

    let anomaly = (span_ms >= BASELINE_MIN_SPAN_MS as f64
        && s.allowed_total >= BASELINE_MIN_ACTIONS)
        .then(|| anomaly(&s, span_ms));
    let long_coverage = 1.0 - exp2_nonpositive(-span_ms / ACTIVITY_LONG_HALF_LIFE_MS as f64);
    set(
        Factor::ActivityAnomaly,
        anomaly.map(|a| {
            let excess = (a.rate_ratio / RATE_TOLERANCE)
                .max(a.mix_ratio / MIX_TOLERANCE)
                .max(1.0);
            1.0 / excess
        }),
        long_coverage * s.activity_long / (s.activity_long + BASELINE_HALF_CONFIDENCE),
    );

    set(
        Factor::Attestation,
        (s.attestation_count > 0.0).then(|| {
            let mean = (s.attestation_sum / s.attestation_count).clamp(-1.0, 1.0);
            (1.0 + mean) / 2.0
        }),
        s.attestation_count / (s.attestation_count + ATTESTATION_HALF_CONFIDENCE),
    );

    Measurements {
        values,
        confidences,
        state: s,
        span_ms,
        agent_age_ms,
        key_age_ms,
        key_max_age_ms,
        alerts: inputs.open_alerts,
        anomaly,
    }
}

/// 1 with no mass, 1/2 at `half`, falling towards 0 as the mass grows.
fn half_at(mass: f64, half: f64) -> f64 {
    half / (half + mass)
}

/// The decay-weighted time observed over `span_ms` with half-life `half_life_ms`:
/// what a decayed event count is divided by to give a rate.
fn exposure_ms(span_ms: f64, half_life_ms: i64) -> f64 {
    let h = half_life_ms as f64;
    h / std::f64::consts::LN_2 * (1.0 - exp2_nonpositive(-span_ms / h))
}

fn anomaly(s: &TrustState, span_ms: f64) -> Anomaly {
    let short_exposure = exposure_ms(span_ms, ACTIVITY_SHORT_HALF_LIFE_MS);
    let long_exposure = exposure_ms(span_ms, ACTIVITY_LONG_HALF_LIFE_MS);
    let (expected_short, baseline_per_ms) = if long_exposure > 0.0 {
        let rate = s.activity_long / long_exposure;
        (rate * short_exposure, rate)
    } else {
        (0.0, 0.0)
    };
    let recent_per_ms = if short_exposure > 0.0 {
        s.activity_short / short_exposure
    } else {
        0.0
    };
    let rate_ratio = (s.activity_short + ANOMALY_SMOOTHING) / (expected_short + ANOMALY_SMOOTHING);
    let mix_ratio = if s.activity_long > 0.0 && s.activity_short > 0.0 {
        let baseline_mean_risk = s.risk_long / s.activity_long;
        (s.risk_short + ANOMALY_SMOOTHING)
            / (baseline_mean_risk * s.activity_short + ANOMALY_SMOOTHING)
    } else {
        1.0
    };
    Anomaly {
        recent_per_hour: recent_per_ms * HOUR_MS as f64,
        baseline_per_hour: baseline_per_ms * HOUR_MS as f64,
        rate_ratio,
        mix_ratio,
    }
}

struct Combined {
    score: TrustScore,
    contributions: [f64; Factor::COUNT],
}

fn combine(m: &Measurements, weights: &Weights) -> Combined {
    let mut weighted = 0.0;
    let mut total = 0.0;
    let mut confidence = 0.0;
    for factor in Factor::ALL {
        let i = factor.index();
        let w = weights.get(factor);
        confidence += w * m.confidences[i];
        if let Some(v) = m.values[i] {
            if w > 0.0 {
                weighted += w * v;
                total += w;
            }
        }
    }
    let mut contributions = [0.0; Factor::COUNT];
    if total > 0.0 {
        for factor in Factor::ALL {
            let i = factor.index();
            if let Some(v) = m.values[i] {
                contributions[i] = 100.0 * weights.get(factor) * v / total;
            }
        }
        Combined {
            score: TrustScore {
                score: (100.0 * (weighted / total)).clamp(0.0, 100.0),
                confidence: confidence.clamp(0.0, 1.0),
                measured: true,
            },
            contributions,
        }
    } else {
        Combined {
            score: TrustScore {
                score: NEUTRAL_SCORE,
                confidence: 0.0,
                measured: false,
            },
            contributions,
        }
    }
}

fn reason(factor: Factor, m: &Measurements) -> String {
    let s = &m.state;
    let tracked = duration(m.span_ms);
    match factor {
        Factor::Verification => match m.values[factor.index()] {
            None => {
                "no data: no statement signed with the agent's current key recorded yet".to_owned()
            }
            Some(v) => format!(
                "{} of recent authenticated statements passed ({:.1} allowed, {:.1} denied for \
                 the agent's own fault; recent-weighted, half-life {})",
                percent(v),
                s.allowed,
                s.denied,
                duration(OUTCOME_HALF_LIFE_MS as f64)
            ),
        },
        Factor::CapabilityViolations => {
            if s.violations > 0.0 {
                format!(
                    "capability violations weighing {} (low 1, medium 2, high 4, critical 8; \
                     fading by half every {}); {VIOLATION_HALF_MASS} halves this factor",
                    amount(s.violations),
                    duration(VIOLATION_HALF_LIFE_MS as f64)
                )
            } else {
                format!("no capability violations in the {tracked} since tracking began")
            }
        }
        Factor::Replays => {
            if s.replays > 0.0 {
                format!(
                    "{} replayed statements (recent-weighted, fading by half every {}); \
                     {REPLAY_HALF_MASS} halves this factor",
                    amount(s.replays),
                    duration(REPLAY_HALF_LIFE_MS as f64)
                )
            } else {
                format!("no replayed statements in the {tracked} since tracking began")
            }
        }
        Factor::BadSignatures => {
            if s.bad_signatures > 0.0 {
                format!(
                    "{} statements naming the agent had bad signatures (recent-weighted, fading \
                     by half every {}); {BAD_SIGNATURE_HALF_MASS} halve this factor",
                    amount(s.bad_signatures),
                    duration(BAD_SIGNATURE_HALF_LIFE_MS as f64)
                )
            } else {
                format!("no bad signatures in the {tracked} since tracking began")
            }
        }
        Factor::OpenAlerts => {
            let a = &m.alerts;
            if a.total() == 0 {
                "no unresolved security alerts about the agent".to_owned()
            } else {
                let parts: Vec<String> = [
                    (a.critical, "critical"),
                    (a.high, "high"),
                    (a.medium, "medium"),
                    (a.low, "low"),
                ]
                .into_iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, label)| format!("{n} {label}"))
                .collect();
                format!(
                    "{} unresolved security alert{} ({})",
                    a.total(),
                    if a.total() == 1 { "" } else { "s" },
                    parts.join(", ")
                )
            }
        }
        Factor::KeyHygiene => match m.key_max_age_ms {
            None => "no data: the organization sets no key rotation policy".to_owned(),
            Some(max) if m.key_age_ms <= max => format!(
                "current key is {} old, within the {} rotation policy",
                duration(m.key_age_ms),
                duration(max)
            ),
            Some(max) => format!(
                "current key is {} old, {} past the {} rotation policy",
                duration(m.key_age_ms),
                duration(m.key_age_ms - max),
                duration(max)
            ),
        },
        Factor::AgentAge => format!(
            "agent created {} ago ({} gives one half)",
            duration(m.agent_age_ms),
            duration(AGENT_AGE_HALF_MS as f64)
        ),
        Factor::ActivityAnomaly => match m.anomaly {
            None => format!(
                "no data: a baseline needs {} of history and {BASELINE_MIN_ACTIONS} allowed \
                 actions (has {} and {})",
                duration(BASELINE_MIN_SPAN_MS as f64),
                tracked,
                s.allowed_total
            ),
            Some(a) => {
                let verdict = if a.rate_ratio > RATE_TOLERANCE || a.mix_ratio > MIX_TOLERANCE {
                    "unusual activity"
                } else {
                    "activity as usual"
                };
                format!(
                    "{verdict}: {:.1} actions/h recently against a baseline of {:.1}/h \
                     (ratio {:.2}, tolerance {RATE_TOLERANCE}); risk mix {:.2}× the baseline's \
                     (tolerance {MIX_TOLERANCE})",
                    a.recent_per_hour, a.baseline_per_hour, a.rate_ratio, a.mix_ratio
                )
            }
        },
        Factor::Attestation => {
            if s.attestation_count > 0.0 {
                format!(
                    "administrators' attestations average {:+.2} on a -1 to 1 scale ({:.2} \
                     recent-weighted, fading by half every {})",
                    (s.attestation_sum / s.attestation_count).clamp(-1.0, 1.0),
                    s.attestation_count,
                    duration(ATTESTATION_HALF_LIFE_MS as f64)
                )
            } else {
                "no data: no administrator has attested to the agent".to_owned()
            }
        }
    }
}

/// A decayed amount to two decimals, without claiming "0.00" for what is not zero.
fn amount(x: f64) -> String {
    if x > 0.0 && x < 0.005 {
        "under 0.01".to_owned()
    } else {
        format!("{x:.2}")
    }
}

fn percent(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// A human duration: "45 s", "12 min", "3.5 h", "12.3 days".
fn duration(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms < MINUTE_MS as f64 {
        format!("{:.0} s", ms / SECOND_MS as f64)
    } else if ms < HOUR_MS as f64 {
        format!("{:.0} min", ms / MINUTE_MS as f64)
    } else if ms < 2.0 * DAY_MS as f64 {
        format!("{:.1} h", ms / HOUR_MS as f64)
    } else {
        format!("{:.1} days", ms / DAY_MS as f64)
    }
}

/// 2^x for x ≤ 0 (1 for anything else), from IEEE-754 basic operations only, so the
/// result is the same on every platform (libm's `exp2` may differ in the last bit
/// between C libraries). Relative error below 1e-15 in the normal range; exact at
/// integers.
fn exp2_nonpositive(x: f64) -> f64 {
    if x.is_nan() || x >= 0.0 {
        return 1.0;
    }
    if x < -1080.0 {
        return 0.0;
    }
    let whole = x.round();
    // |fraction| ≤ 1/2, computed exactly.
    let fraction = x - whole;
    let t = fraction * std::f64::consts::LN_2;
    // e^t by its Taylor series to t^15 (|t| ≤ 0.35: the remainder is below 1e-21).
    let mut p = 1.0;
    for k in (1..=15).rev() {
        p = 1.0 + p * t / f64::from(k);
    }
    let whole = whole as i32;
    if whole >= -1022 {
        p * power_of_two(whole)
    } else {
        // Scale in two exact steps so the result may be subnormal.
        p * power_of_two(whole + 64) * power_of_two(-64)
    }
}

/// 2^e for -1022 ≤ e ≤ 1023, exactly.
fn power_of_two(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-01-01T00:00:00Z.
    const T0: i64 = 1_767_225_600_000;
    const POLICY_90_DAYS: Option<NonZeroU64> = NonZeroU64::new(90 * DAY_MS as u64);

    fn fresh_inputs(now_ms: i64) -> TrustInputs {
        TrustInputs {
            now_ms,
            agent_created_at_ms: T0,
            key_created_at_ms: T0,
            open_alerts: OpenAlerts::default(),
            key_max_age_ms: POLICY_90_DAYS,
        }
    }

    fn factor(report: &TrustReport, factor: Factor) -> &FactorReport {
        &report.factors[factor.index()]
    }

    fn value(report: &TrustReport, f: Factor) -> Option<f64> {
        factor(report, f).value
    }

    fn with_data(report: &TrustReport) -> Vec<Factor> {
        report
            .factors
            .iter()
            .filter(|f| f.value.is_some())
            .map(|f| f.factor)
            .collect()
    }

    fn allowed(risk: RiskLevel) -> TrustEvent {
        TrustEvent::Allowed { risk }
    }

    /// Applies `count` events `every_ms` apart starting at `start`; returns the time
    /// of the last one.
    fn steady(
        state: &mut TrustState,
        event: TrustEvent,
        start: i64,
        every_ms: i64,
        count: i64,
    ) -> i64 {
        let mut t = start;
        for i in 0..count {
            t = start + i * every_ms;
            state.apply(event, t);
        }
        t
    }

    // ---- examples ----

    #[test]
    fn a_brand_new_agent_is_measured_only_by_what_is_known() {
        let state = TrustState::new(T0);
        let report = evaluate(&state, &fresh_inputs(T0), &Weights::default());
        assert_eq!(
            with_data(&report),
            [
                Factor::CapabilityViolations,
                Factor::Replays,
                Factor::BadSignatures,
                Factor::OpenAlerts,
                Factor::KeyHygiene,
                Factor::AgentAge,
            ]
        );
        for f in [
            Factor::Verification,
            Factor::ActivityAnomaly,
            Factor::Attestation,
        ] {
            let r = factor(&report, f);
            assert!(r.reason.starts_with("no data:"), "{f}: {}", r.reason);
            assert_eq!((r.contribution, r.confidence), (0.0, 0.0));
        }
        // No incidents, fresh key, no alerts (all 1) and age 0, weights
        // 0.20 + 0.10 + 0.05 + 0.10 + 0.10 + 0.10: 0.55 / 0.65.
        assert!(
            (report.score - 100.0 * 0.55 / 0.65).abs() < 1e-9,
            "{}",
            report.score
        );
        assert_eq!(value(&report, Factor::AgentAge), Some(0.0));
        // The incident counters rest on no statement yet: only the alerts, the key
        // and the age (0.10 each, confidence 1) are sure.
        assert!(
            (report.confidence - 0.30).abs() < 1e-12,
            "{}",
            report.confidence
        );
        assert_eq!(
            factor(&report, Factor::CapabilityViolations).reason,
            "no capability violations in the 0 s since tracking began"
        );
        assert!(report.measured);
        assert!(
            report.summary.contains("6 of 9 factors"),
            "{}",
            report.summary
        );
    }

    #[test]
    fn without_any_weighted_data_the_score_is_the_neutral_fifty_and_says_so() {
        let weights = Weights::validate([
            ("verification", 0.5),
            ("capability_violations", 0.0),
            ("replays", 0.0),
            ("bad_signatures", 0.0),
            ("open_alerts", 0.0),
            ("key_hygiene", 0.0),
            ("agent_age", 0.0),
            ("activity_anomaly", 0.0),
            ("attestation", 0.5),
        ])
        .unwrap();
        let report = evaluate(&TrustState::new(T0), &fresh_inputs(T0), &weights);
        assert_eq!((report.score, report.confidence), (NEUTRAL_SCORE, 0.0));
        assert!(!report.measured);
        assert!(
            report.summary.contains("not a measurement"),
            "{}",
            report.summary
        );
        assert!(report.factors.iter().all(|f| f.contribution == 0.0));
    }

    #[test]
    fn good_behaviour_scores_high_then_violations_drop_it_then_the_effect_fades() {
        let weights = Weights::default();
        let mut state = TrustState::new(T0);
        let mut twin = TrustState::new(T0);
        // 100 low-risk actions, one an hour.
        let t = steady(&mut state, allowed(RiskLevel::Low), T0, HOUR_MS, 100);
        steady(&mut twin, allowed(RiskLevel::Low), T0, HOUR_MS, 100);
        let good = evaluate(&state, &fresh_inputs(t), &weights);
        assert!(good.score > 90.0, "{good:#?}");
        assert_eq!(value(&good, Factor::Verification), Some(1.0));
        assert_eq!(value(&good, Factor::ActivityAnomaly), Some(1.0));
        assert_eq!(value(&good, Factor::CapabilityViolations), Some(1.0));

        // Three attempts at a high-risk capability it was not granted; they raised one
        // (deduplicated) high alert.
        for _ in 0..3 {
            state.apply(
                TrustEvent::Violation {
                    risk: RiskLevel::High,
                },
                t,
            );
        }
        let mut alerted = fresh_inputs(t);
        alerted.open_alerts.add(Severity::High);
        let bad = evaluate(&state, &alerted, &weights);
        assert!(
            bad.score < 70.0 && good.score - bad.score > 20.0,
            "{bad:#?}"
        );
        let violations = factor(&bad, Factor::CapabilityViolations);
        assert_eq!(violations.value, Some(0.25)); // 4 / (4 + 3 × 4)
        assert!(
            violations
                .reason
                .starts_with("capability violations weighing 12.00"),
            "{}",
            violations.reason
        );
        assert_eq!(value(&bad, Factor::OpenAlerts), Some(0.5));
        assert!(value(&bad, Factor::Verification).is_some_and(|v| v < 0.97));

        // The alert is resolved and the agent keeps working, one action an hour, for
        // eight violation half-lives: the violations are nearly forgotten.
        let start = t + HOUR_MS;
        let hours = 8 * VIOLATION_HALF_LIFE_MS / HOUR_MS;
        let end = steady(&mut state, allowed(RiskLevel::Low), start, HOUR_MS, hours);
        steady(&mut twin, allowed(RiskLevel::Low), start, HOUR_MS, hours);
        let later = evaluate(&state, &fresh_inputs(end), &weights);
        let twin_later = evaluate(&twin, &fresh_inputs(end), &weights);
        assert!(value(&later, Factor::CapabilityViolations).is_some_and(|v| v > 0.98));
        assert!(later.score <= twin_later.score);
        assert!(twin_later.score - later.score < 0.5, "{later:#?}");
    }

    #[test]
    fn a_burst_far_above_the_agents_own_rate_is_an_anomaly() {
        let weights = Weights::default();
        let mut state = TrustState::new(T0);
        // Ten low-risk actions an hour for three days.
        let t = steady(&mut state, allowed(RiskLevel::Low), T0, 6 * MINUTE_MS, 720);
        let before = evaluate(&state, &fresh_inputs(t), &weights);
        assert_eq!(value(&before, Factor::ActivityAnomaly), Some(1.0));
        assert!(factor(&before, Factor::ActivityAnomaly)
            .reason
            .starts_with("activity as usual"));
        // Then 300 in ten minutes.
        let t = steady(&mut state, allowed(RiskLevel::Low), t + 2_000, 2_000, 300);
        let after = evaluate(&state, &fresh_inputs(t), &weights);
        let anomaly = factor(&after, Factor::ActivityAnomaly);
        assert!(anomaly.value.is_some_and(|v| v < 0.5), "{anomaly:?}");
        assert!(
            anomaly.reason.starts_with("unusual activity"),
            "{}",
            anomaly.reason
        );
        assert!(after.score < before.score);
        // A day of quiet later, it is usual again.
        let quiet = evaluate(&state, &fresh_inputs(t + DAY_MS), &weights);
        assert_eq!(value(&quiet, Factor::ActivityAnomaly), Some(1.0));
    }

    #[test]
    fn a_shift_to_riskier_capabilities_at_the_usual_rate_is_an_anomaly() {
        let mut state = TrustState::new(T0);
        let t = steady(&mut state, allowed(RiskLevel::Low), T0, 6 * MINUTE_MS, 720);
        let t = steady(
            &mut state,
            allowed(RiskLevel::Critical),
            t + 6 * MINUTE_MS,
            6 * MINUTE_MS,
            10,
        );
        let report = evaluate(&state, &fresh_inputs(t), &Weights::default());
        let anomaly = factor(&report, Factor::ActivityAnomaly);
        assert!(anomaly.value.is_some_and(|v| v < 0.75), "{anomaly:?}");
        assert!(anomaly.reason.contains("risk mix"), "{}", anomaly.reason);
    }

    #[test]
    fn the_baseline_needs_a_day_and_twenty_actions() {
        let mut state = TrustState::new(T0);
        let t = steady(&mut state, allowed(RiskLevel::Low), T0, MINUTE_MS, 19);
        let report = evaluate(&state, &fresh_inputs(T0 + 2 * DAY_MS), &Weights::default());
        assert_eq!(
            factor(&report, Factor::ActivityAnomaly).reason,
            "no data: a baseline needs 24.0 h of history and 20 allowed actions (has 2.0 days and 19)"
        );
        state.apply(allowed(RiskLevel::Low), t + MINUTE_MS);
        let report = evaluate(&state, &fresh_inputs(T0 + HOUR_MS), &Weights::default());
        assert_eq!(value(&report, Factor::ActivityAnomaly), None);
        let report = evaluate(&state, &fresh_inputs(T0 + DAY_MS), &Weights::default());
        assert!(value(&report, Factor::ActivityAnomaly).is_some());
    }

    #[test]
    fn key_hygiene_follows_the_organizations_policy() {
        let state = TrustState::new(T0);
        let mut inputs = fresh_inputs(T0 + 135 * DAY_MS);
        let report = evaluate(&state, &inputs, &Weights::default());
        let hygiene = factor(&report, Factor::KeyHygiene);
        assert_eq!(hygiene.value, Some(0.5));
        assert_eq!(
            hygiene.reason,
            "current key is 135.0 days old, 45.0 days past the 90.0 days rotation policy"
        );
        inputs.key_created_at_ms = T0 + 100 * DAY_MS;
        let report = evaluate(&state, &inputs, &Weights::default());
        assert_eq!(value(&report, Factor::KeyHygiene), Some(1.0));
        inputs.key_max_age_ms = None;
        let report = evaluate(&state, &inputs, &Weights::default());
        assert_eq!(
            factor(&report, Factor::KeyHygiene).reason,
            "no data: the organization sets no key rotation policy"
        );
    }

    #[test]
    fn attestations_average_and_alerts_weigh_by_severity() {
        let mut state = TrustState::new(T0);
        state.apply(
            TrustEvent::Attestation {
                value: Attestation::new(1.0).unwrap(),
            },
            T0,
        );
        state.apply(
            TrustEvent::Attestation {
                value: Attestation::new(0.5).unwrap(),
            },
            T0,
        );
        let mut inputs = fresh_inputs(T0);
        inputs.open_alerts.add(Severity::Critical);
        inputs.open_alerts.add(Severity::Low);
        inputs.open_alerts.add(Severity::Low);
        let report = evaluate(&state, &inputs, &Weights::default());
        let attestation = factor(&report, Factor::Attestation);
        assert_eq!(attestation.value, Some(0.875));
        assert!(
            attestation.reason.contains("average +0.75"),
            "{}",
            attestation.reason
        );
        let alerts = factor(&report, Factor::OpenAlerts);
        assert_eq!(alerts.value, Some(4.0 / (4.0 + 10.0)));
        assert_eq!(
            alerts.reason,
            "3 unresolved security alerts (1 critical, 2 low)"
        );
        assert!(Attestation::new(1.5).is_err());
        assert!(Attestation::new(f64::NAN).is_err());
        assert!(
            serde_json::from_str::<TrustEvent>(r#"{"kind":"attestation","value":-2}"#).is_err()
        );
    }

    #[test]
    fn decisions_map_to_events_by_reason() {
        use DecisionReason as R;
        let high = Some(RiskLevel::High);
        for reason in DecisionReason::ALL.iter().copied().chain([R::Unknown]) {
            let expected = match reason {
                R::Allowed => Some(TrustEvent::Allowed {
                    risk: RiskLevel::High,
                }),
                R::WrongAudience | R::IssuedAtTooOld | R::IssuedAtInFuture => {
                    Some(TrustEvent::Rejected)
                }
                R::CapabilityNotGranted | R::ResourceNotInScope => Some(TrustEvent::Violation {
                    risk: RiskLevel::High,
                }),
                R::ReplayedNonce => Some(TrustEvent::Replay),
                R::BadSignature | R::NonCanonicalSignature => Some(TrustEvent::BadSignature),
                _ => None,
            };
            assert_eq!(
                TrustEvent::from_decision(reason, high),
                expected,
                "{reason:?}"
            );
        }
        assert_eq!(
            TrustEvent::from_decision(R::CapabilityNotGranted, None),
            Some(TrustEvent::Violation {
                risk: UNCATALOGUED_RISK
            })
        );
        assert_eq!(
            TrustEvent::from_decision(R::Allowed, Some(RiskLevel::Low)),
            Some(TrustEvent::Allowed {
                risk: RiskLevel::Low
            })
        );
    }

    #[test]
    fn a_late_event_counts_with_the_weight_of_its_own_time() {
        let mut in_order = TrustState::new(T0);
        in_order.apply(TrustEvent::Replay, T0);
        in_order.apply(allowed(RiskLevel::Low), T0 + VIOLATION_HALF_LIFE_MS);
        let mut late = TrustState::new(T0);
        late.apply(allowed(RiskLevel::Low), T0 + VIOLATION_HALF_LIFE_MS);
        late.apply(TrustEvent::Replay, T0);
        assert_eq!(late.updated_ms(), T0 + VIOLATION_HALF_LIFE_MS);
        assert_eq!(late.allowed_total(), 1);
        assert_eq!(late.since_ms(), T0);
        let inputs = fresh_inputs(T0 + VIOLATION_HALF_LIFE_MS);
        let (a, b) = (
            evaluate(&in_order, &inputs, &Weights::default()),
            evaluate(&late, &inputs, &Weights::default()),
        );
        // One replay, one half-life old: 1 / (1 + 1/2).
        for report in [&a, &b] {
            let replays = value(report, Factor::Replays).unwrap();
            assert!((replays - 2.0 / 3.0).abs() < 1e-12, "{replays}");
        }
        assert!((a.score - b.score).abs() < 1e-9);
    }

    #[test]
    fn state_round_trips_through_json_and_refuses_corruption() {
        let mut state = TrustState::new(T0);
        state.apply(allowed(RiskLevel::Medium), T0 + 12_345);
        state.apply(
            TrustEvent::Violation {
                risk: RiskLevel::Critical,
            },
            T0 + 99_999,
        );
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<TrustState>(&json).unwrap(), state);

        let mut value = serde_json::to_value(&state).unwrap();
        assert_eq!(value["violations"], serde_json::json!("8"));
        value["violations"] = serde_json::json!("-1");
        assert!(serde_json::from_value::<TrustState>(value.clone()).is_err());
        value["violations"] = serde_json::json!(8.0);
        assert!(serde_json::from_value::<TrustState>(value.clone()).is_err());
        value["violations"] = serde_json::json!("NaN");
        assert!(serde_json::from_value::<TrustState>(value.clone()).is_err());
        value["violations"] = serde_json::json!("1e-300");
        assert!(serde_json::from_value::<TrustState>(value.clone()).is_ok());
        value["updated_ms"] = serde_json::json!(T0 - 1);
        let error = serde_json::from_value::<TrustState>(value.clone()).unwrap_err();
        assert!(
            error.to_string().contains("updated_ms is before since_ms"),
            "{error}"
        );
        value.as_object_mut().unwrap().remove("updated_ms");
        assert!(serde_json::from_value::<TrustState>(value).is_err());
    }

    #[test]
    fn weights_are_a_json_object_of_every_factor() {
        let json = serde_json::to_value(Weights::default()).unwrap();
        let object = json.as_object().unwrap();
        assert_eq!(object.len(), Factor::COUNT);
        for (factor, weight) in Weights::default().iter() {
            assert_eq!(object[factor.as_str()], serde_json::json!(weight));
        }
        assert_eq!(
            serde_json::from_value::<Weights>(json).unwrap(),
            Weights::default()
        );
        let duplicate = r#"{"verification":0.2,"verification":0.2,"capability_violations":0.2,
            "replays":0.1,"bad_signatures":0.05,"open_alerts":0.1,"key_hygiene":0.1,
            "agent_age":0.1,"activity_anomaly":0.1,"attestation":0.05}"#;
        let error = serde_json::from_str::<Weights>(duplicate).unwrap_err();
        assert!(error.to_string().contains("more than once"), "{error}");
        assert!(serde_json::from_str::<Weights>(r#"{"verification":"0.2"}"#).is_err());
        assert!(serde_json::from_str::<Weights>("[0.5,0.5]").is_err());
    }

    #[test]
    fn weight_errors_say_what_is_wrong() {
        let mut entries: Vec<(String, f64)> = Weights::default()
            .iter()
            .map(|(f, w)| (f.as_str().to_owned(), w))
            .collect();
        let message = |entries: &[(String, f64)]| {
            Weights::validate(entries.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap_err()
                .to_string()
        };
        let mut sum = entries.clone();
        sum[0].1 = 0.25;
        assert_eq!(
            message(&sum),
            "the weights must sum to 1 (within 1e-9); they sum to 1.05"
        );
        let mut negative = entries.clone();
        negative[2].1 = -0.1;
        assert_eq!(
            message(&negative),
            "the weight of `replays` is -0.1; a weight must be from 0 to 1"
        );
        let mut nan = entries.clone();
        nan[8].1 = f64::NAN;
        assert_eq!(
            message(&nan),
            "the weight of `attestation` is not a finite number"
        );
        let mut unknown = entries.clone();
        unknown.push(("uptime".to_owned(), 0.0));
        assert!(message(&unknown).starts_with(
            "`uptime` is not a trust factor; the factors are `verification`, `capability_violations`"
        ));
        entries.truncate(7);
        assert_eq!(
            message(&entries),
            "every trust factor needs a weight (0 to ignore it); missing: `activity_anomaly`, \
             `attestation`"
        );
    }

    #[test]
    fn exp2_is_accurate_and_exact_at_integers() {
        for k in 0..=1074 {
            let exact = if k <= 1022 {
                power_of_two(-k)
            } else {
                f64::from_bits(1 << (1074 - k))
            };
            assert_eq!(exp2_nonpositive(-f64::from(k)), exact, "{k}");
        }
        assert_eq!(exp2_nonpositive(-1075.0), 0.0);
        assert_eq!(exp2_nonpositive(-5000.0), 0.0);
        assert_eq!(exp2_nonpositive(0.0), 1.0);
        assert_eq!(exp2_nonpositive(f64::NAN), 1.0);
        let mut x = -1020.0;
        while x < 0.0 {
            let (ours, std) = (exp2_nonpositive(x), x.exp2());
            assert!(((ours - std) / std).abs() < 1e-15, "{x}: {ours} vs {std}");
            x += 0.013_7;
        }
    }

    #[test]
    fn every_factor_and_default_weight_is_documented() {
        let doc = include_str!("../../docs/trust.md");
        for (factor, weight) in Weights::default().iter() {
            let row = format!("| `{factor}` | {weight:.2} |");
            assert!(doc.contains(&row), "{row}");
        }
    }

    #[test]
    fn factor_names_round_trip() {
        for f in Factor::ALL {
            assert_eq!(Factor::parse(f.as_str()), Some(f));
            assert_eq!(
                serde_json::to_value(f).unwrap(),
                serde_json::json!(f.as_str())
            );
            assert_eq!(Factor::ALL[f.index()], f);
        }
        assert_eq!(Factor::parse("Verification"), None);
    }

    // ---- properties ----

    /// What the database would know about the agent, relative to the evaluation time.
    #[derive(Debug, Clone, Copy)]
    struct Facts {
        agent_age_ms: i64,
        key_age_ms: i64,
        open_alerts: OpenAlerts,
        key_max_age_ms: Option<NonZeroU64>,
    }

    impl Facts {
        fn at(&self, now_ms: i64) -> TrustInputs {
            TrustInputs {
                now_ms,
                agent_created_at_ms: now_ms - self.agent_age_ms,
                key_created_at_ms: now_ms - self.key_age_ms,
                open_alerts: self.open_alerts,
                key_max_age_ms: self.key_max_age_ms,
            }
        }
    }

    fn any_risk() -> impl Strategy<Value = RiskLevel> {
        prop::sample::select(RiskLevel::ALL)
    }

    fn any_event() -> impl Strategy<Value = TrustEvent> {
        prop_oneof![
            5 => any_risk().prop_map(|risk| TrustEvent::Allowed { risk }),
            1 => Just(TrustEvent::Rejected),
            1 => any_risk().prop_map(|risk| TrustEvent::Violation { risk }),
            1 => Just(TrustEvent::Replay),
            1 => Just(TrustEvent::BadSignature),
            1 => (-1.0f64..=1.0).prop_map(|v| TrustEvent::Attestation { value: Attestation(v) }),
        ]
    }

    fn bad_event() -> impl Strategy<Value = TrustEvent> {
        prop_oneof![
            any_risk().prop_map(|risk| TrustEvent::Violation { risk }),
            Just(TrustEvent::Replay),
            Just(TrustEvent::BadSignature),
            Just(TrustEvent::Rejected),
        ]
    }

    /// A gap between events: mostly short (bursts), sometimes days, sometimes
    /// backwards (another replica's clock).
    fn any_step() -> impl Strategy<Value = i64> {
        prop_oneof![
            3 => 0..2_000i64,
            3 => 0..HOUR_MS,
            2 => 0..10 * DAY_MS,
            1 => -MINUTE_MS..0,
        ]
    }

    fn any_history() -> impl Strategy<Value = Vec<(TrustEvent, i64)>> {
        prop::collection::vec((any_event(), any_step()), 0..200)
    }

    fn any_facts() -> impl Strategy<Value = Facts> {
        (
            0..400 * DAY_MS,
            -DAY_MS..400 * DAY_MS,
            prop::array::uniform4(0u32..4),
            prop::option::of(1..=365 * DAY_MS as u64),
        )
            .prop_map(
                |(agent_age_ms, key_age_ms, [low, medium, high, critical], max)| Facts {
                    agent_age_ms,
                    key_age_ms,
                    open_alerts: OpenAlerts {
                        low,
                        medium,
                        high,
                        critical,
                    },
                    key_max_age_ms: max.and_then(NonZeroU64::new),
                },
            )
    }

    fn raw_weights() -> impl Strategy<Value = [f64; Factor::COUNT]> {
        prop::array::uniform9(prop_oneof![1 => Just(0.0), 3 => 0.0f64..=1.0])
    }

    fn entries(w: &[f64; Factor::COUNT]) -> Vec<(&'static str, f64)> {
        Factor::ALL
            .iter()
            .map(|f| f.as_str())
            .zip(w.iter().copied())
            .collect()
    }

    fn any_weights() -> impl Strategy<Value = Weights> {
        raw_weights().prop_map(|w| {
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                Weights::validate(entries(&w.map(|x| x / sum))).unwrap_or_default()
            } else {
                Weights::default()
            }
        })
    }

    /// The state after `history`, and its latest time (the clock may have run
    /// backwards in between).
    fn run(history: &[(TrustEvent, i64)]) -> (TrustState, i64) {
        let mut state = TrustState::new(T0);
        let mut now = T0;
        for (event, step) in history {
            now += step;
            state.apply(*event, now);
        }
        let latest = state.updated_ms();
        (state, latest)
    }

    fn factor_value(state: &TrustState, inputs: &TrustInputs, f: Factor) -> Option<f64> {
        measure(state, inputs).values[f.index()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_report_stays_within_its_bounds(
            history in any_history(),
            facts in any_facts(),
            weights in any_weights(),
            later in 0..30 * DAY_MS,
        ) {
            let (state, last) = run(&history);
            let inputs = facts.at(last + later);
            let report = evaluate(&state, &inputs, &weights);
            prop_assert!((0.0..=100.0).contains(&report.score), "{}", report.score);
            prop_assert!((0.0..=1.0).contains(&report.confidence), "{}", report.confidence);
            prop_assert_eq!(report.factors.len(), Factor::COUNT);
            let mut total = 0.0;
            for f in &report.factors {
                prop_assert!(f.value.is_none_or(|v| (0.0..=1.0).contains(&v)), "{:?}", f);
                prop_assert!((0.0..=1.0).contains(&f.confidence), "{:?}", f);
                prop_assert!(f.contribution >= 0.0 && f.contribution.is_finite(), "{:?}", f);
                prop_assert!(!f.reason.is_empty() && !f.reason.contains('\n'));
                if f.value.is_none() {
                    prop_assert!(f.reason.starts_with("no data:"), "{}", f.reason);
                    prop_assert_eq!((f.contribution, f.confidence), (0.0, 0.0));
                }
                total += f.contribution;
            }
            if report.measured {
                prop_assert!((total - report.score).abs() < 1e-9, "{} vs {}", total, report.score);
            } else {
                prop_assert_eq!((report.score, report.confidence), (NEUTRAL_SCORE, 0.0));
            }
            let quick = score(&state, &inputs, &weights);
            prop_assert_eq!(quick.score.to_bits(), report.score.to_bits());
            prop_assert_eq!(quick.confidence.to_bits(), report.confidence.to_bits());
        }

        #[test]
        fn an_incident_never_raises_the_score(
            history in any_history(),
            facts in any_facts(),
            weights in any_weights(),
            incident in bad_event(),
            step in any_step(),
        ) {
            let (state, last) = run(&history);
            let at = last + step;
            let inputs = facts.at(at);
            let without = score(&state, &inputs, &weights).score;
            let mut with = state.clone();
            with.apply(incident, at);
            let with = score(&with, &inputs, &weights).score;
            prop_assert!(with <= without, "{:?}: {} > {}", incident, with, without);
        }

        #[test]
        fn identical_histories_give_identical_reports(
            history in any_history(),
            facts in any_facts(),
            weights in any_weights(),
            split in any::<prop::sample::Index>(),
        ) {
            let (a, last) = run(&history);
            let (b, _) = run(&history);
            let inputs = facts.at(last);
            let (ra, rb) = (evaluate(&a, &inputs, &weights), evaluate(&b, &inputs, &weights));
            prop_assert_eq!(ra.score.to_bits(), rb.score.to_bits());
            prop_assert_eq!(&ra, &rb);

            // Stored as JSON part-way and reloaded: still the same bits.
            let cut = if history.is_empty() { 0 } else { split.index(history.len() + 1) };
            let (head, _) = run(&history[..cut]);
            let mut now = T0 + history[..cut].iter().map(|(_, step)| step).sum::<i64>();
            let json = serde_json::to_string(&head).unwrap();
            let mut reloaded: TrustState = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&reloaded, &head);
            for (event, step) in &history[cut..] {
                now += step;
                reloaded.apply(*event, now);
            }
            prop_assert_eq!(&reloaded, &a);
            prop_assert_eq!(evaluate(&reloaded, &inputs, &weights), ra);
        }

        /// Replicas' clocks disagree, so events may arrive out of order: the report is
        /// the same (up to rounding) whatever the order.
        #[test]
        fn the_order_events_arrive_in_does_not_matter(
            events in prop::collection::vec((any_event(), 0..60 * DAY_MS), 0..150),
            facts in any_facts(),
            weights in any_weights(),
            later in 0..10 * DAY_MS,
        ) {
            let mut arrived = TrustState::new(T0);
            for (event, at) in &events {
                arrived.apply(*event, T0 + at);
            }
            let mut sorted = events.clone();
            sorted.sort_by_key(|(_, at)| *at);
            let mut in_order = TrustState::new(T0);
            for (event, at) in &sorted {
                in_order.apply(*event, T0 + at);
            }
            prop_assert_eq!(arrived.updated_ms(), in_order.updated_ms());
            let inputs = facts.at(in_order.updated_ms() + later);
            let (a, b) = (evaluate(&arrived, &inputs, &weights), evaluate(&in_order, &inputs, &weights));
            prop_assert!((a.score - b.score).abs() < 1e-9, "{} vs {}", a.score, b.score);
            for (fa, fb) in a.factors.iter().zip(&b.factors) {
                prop_assert_eq!(fa.value.is_some(), fb.value.is_some());
                let (va, vb) = (fa.value.unwrap_or(0.0), fb.value.unwrap_or(0.0));
                prop_assert!((va - vb).abs() < 1e-9, "{}: {} vs {}", fa.factor, va, vb);
            }
        }

        #[test]
        fn with_no_new_events_incidents_fade_and_never_come_back(
            history in any_history(),
            facts in any_facts(),
            first in 0..60 * DAY_MS,
            more in 0..400 * DAY_MS,
        ) {
            let (state, last) = run(&history);
            let (t1, t2) = (last + first, last + first + more);
            for f in [Factor::CapabilityViolations, Factor::Replays, Factor::BadSignatures] {
                let v1 = factor_value(&state, &facts.at(t1), f).unwrap_or(0.0);
                let v2 = factor_value(&state, &facts.at(t2), f).unwrap_or(0.0);
                prop_assert!(v2 >= v1 - 1e-12, "{}: {} then {}", f, v1, v2);
            }
        }

        /// With no new events, a fixed creation time and no rotation policy (so the
        /// key's age does not matter), the score never falls as time passes once the
        /// activity baseline could exist: incidents fade, the agent ages, and
        /// everything else holds still or calms down.
        #[test]
        fn with_no_new_events_the_score_never_falls(
            history in any_history(),
            facts in any_facts(),
            weights in any_weights(),
            first in 0..60 * DAY_MS,
            more in 0..400 * DAY_MS,
        ) {
            let (state, last) = run(&history);
            let t1 = last.max(state.since_ms() + BASELINE_MIN_SPAN_MS) + first;
            let t2 = t1 + more;
            let facts = Facts { key_max_age_ms: None, ..facts };
            let created = t1 - facts.agent_age_ms;
            let at = |now| TrustInputs { agent_created_at_ms: created, ..facts.at(now) };
            let s1 = score(&state, &at(t1), &weights).score;
            let s2 = score(&state, &at(t2), &weights).score;
            prop_assert!(s2 >= s1 - 1e-9, "{} then {}", s1, s2);
        }

        /// A violation lowers the score at once and at every later time whatever
        /// follows, and its own factor's part of the drop fades with its half-life:
        /// it is at most risk × 2^-(elapsed / 30 days) / 4.
        #[test]
        fn a_violations_effect_never_turns_positive_and_fades(
            history in any_history(),
            after in prop::collection::vec((any_event(), any_step()), 0..30),
            facts in any_facts(),
            weights in any_weights(),
            risk in any_risk(),
            step in 0..DAY_MS,
            later in 0..20 * VIOLATION_HALF_LIFE_MS,
        ) {
            let (without, last) = run(&history);
            let at = last + step;
            let mut with = without.clone();
            with.apply(TrustEvent::Violation { risk }, at);
            // Counted at the state's latest time if the clock ran backwards.
            let counted_at = with.updated_ms();
            let (mut without, mut with, mut now) = (without, with, at);
            for (event, step) in &after {
                now += step;
                without.apply(*event, now);
                with.apply(*event, now);
            }
            let end = now.max(at) + later;
            let inputs = facts.at(end);
            let gap = score(&without, &inputs, &weights).score - score(&with, &inputs, &weights).score;
            prop_assert!(gap >= -1e-9, "the violation raised the score by {}", -gap);
            let part = factor_value(&without, &inputs, Factor::CapabilityViolations).unwrap_or(0.0)
                - factor_value(&with, &inputs, Factor::CapabilityViolations).unwrap_or(0.0);
            let elapsed = (end - counted_at) as f64 / VIOLATION_HALF_LIFE_MS as f64;
            let bound = risk_weight(risk) * (-elapsed).exp2() / VIOLATION_HALF_MASS;
            prop_assert!(part >= -1e-12 && part <= bound + 1e-12, "{} not within 0..={}", part, bound);
        }

        #[test]
        fn normalized_weights_are_accepted_and_round_trip(raw in raw_weights()) {
            let sum: f64 = raw.iter().sum();
            prop_assume!(sum > 0.0);
            let normalized = raw.map(|x| x / sum);
            let weights = Weights::validate(entries(&normalized));
            prop_assert!(weights.is_ok(), "{:?}", weights);
            let weights = weights.unwrap();
            // Weights are plain JSON numbers (hand-written configuration), which parse
            // back to within an ulp.
            let json = serde_json::to_string(&weights).unwrap();
            let back = serde_json::from_str::<Weights>(&json).unwrap();
            for (factor, w) in weights.iter() {
                prop_assert!((back.get(factor) - w).abs() <= 4.0 * f64::EPSILON * w, "{}", factor);
            }
        }

        #[test]
        fn weights_not_summing_to_one_are_refused(raw in raw_weights()) {
            let sum: f64 = raw.iter().sum();
            prop_assume!((sum - 1.0).abs() > 1e-6);
            prop_assert!(Weights::validate(entries(&raw)).is_err());
        }

        #[test]
        fn negative_or_non_finite_weights_are_refused(
            raw in raw_weights(),
            at in 0..Factor::COUNT,
            bad in prop_oneof![
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                -1e9f64..-1e-300,
            ],
        ) {
            // A valid vector with one entry spoiled (and the rest rescaled so the sum
            // alone would pass where it can).
            let sum: f64 = raw.iter().sum();
            prop_assume!(sum > 0.0);
            let mut w = raw.map(|x| x / sum);
            w[at] = bad;
            let error = Weights::validate(entries(&w)).unwrap_err();
            let factor = Factor::ALL[at];
            let named = matches!(
                error,
                WeightsError::NotFinite(f) | WeightsError::OutOfRange { factor: f, .. } if f == factor
            );
            prop_assert!(named, "{:?}", error);
        }

        #[test]
        fn missing_or_unknown_factors_are_refused(
            raw in raw_weights(),
            drop in 0..Factor::COUNT,
            name in "[a-z_]{1,20}",
        ) {
            let sum: f64 = raw.iter().sum();
            prop_assume!(sum > 0.0);
            let w = raw.map(|x| x / sum);
            let mut missing = entries(&w);
            missing.remove(drop);
            prop_assert!(Weights::validate(missing).is_err());
            prop_assume!(Factor::parse(&name).is_none());
            let mut extra: Vec<(String, f64)> =
                entries(&w).into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            extra.push((name.clone(), 0.0));
            prop_assert_eq!(Weights::validate(extra), Err(WeightsError::UnknownFactor(name)));
        }
    }
}
