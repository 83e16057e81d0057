//! What the server answers to a signed action.

use serde::{Deserialize, Serialize};

/// Why a decision came out as it did. Stable codes; see `docs/protocol.md`.
/// The checks run in the documented order and the first failing one names the
/// reason; `allowed` when every check passed.
///
/// The server sends only the reasons in [`DecisionReason::ALL`]; `unknown` is never
/// sent: it is what a client reads a reason it does not know as (a newer server's), so
/// the OpenAPI schema lists [`DecisionReason::ALL`] alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecisionReason {
    /// Every check passed.
    Allowed,
    /// The agent has not yet proved possession of its key.
    AgentPending,
    /// An administrator suspended the agent.
    AgentSuspended,
    /// The agent was suspended automatically: its trust score fell below the
    /// organization's suspension threshold. An administrator must reactivate it.
    AgentSuspendedLowTrust,
    AgentRevoked,
    /// The signature's key id is not a key of this agent.
    UnknownKey,
    /// The signature's key id is a key this agent rotated away from.
    KeyRetired,
    /// The key was revoked (with its agent).
    KeyRevoked,
    /// The signature's S is not reduced modulo the group order.
    NonCanonicalSignature,
    /// The signature does not verify with the agent's current key.
    BadSignature,
    /// `aud` is not this server's issuer URL.
    WrongAudience,
    /// `iat` is older than the freshness window.
    IssuedAtTooOld,
    /// `iat` is further in the future than the allowed clock skew.
    IssuedAtInFuture,
    /// The nonce was already used by this agent.
    ReplayedNonce,
    /// No live grant names the capability.
    CapabilityNotGranted,
    /// A live grant names the capability, but none covers the resource.
    ResourceNotInScope,
    /// The agent's trust score is below the capability's minimum.
    TrustBelowMinimum,
    /// A reason this client does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl DecisionReason {
    /// Every reason a server may send, in check order.
    pub const ALL: &'static [DecisionReason] = &[
        DecisionReason::Allowed,
        DecisionReason::AgentPending,
        DecisionReason::AgentSuspended,
        DecisionReason::AgentSuspendedLowTrust,
        DecisionReason::AgentRevoked,
        DecisionReason::UnknownKey,
        DecisionReason::KeyRetired,
        DecisionReason::KeyRevoked,
        DecisionReason::NonCanonicalSignature,
        DecisionReason::BadSignature,
        DecisionReason::WrongAudience,
        DecisionReason::IssuedAtTooOld,
        DecisionReason::IssuedAtInFuture,
        DecisionReason::ReplayedNonce,
        DecisionReason::CapabilityNotGranted,
        DecisionReason::ResourceNotInScope,
        DecisionReason::TrustBelowMinimum,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionReason::Allowed => "allowed",
            DecisionReason::AgentPending => "agent_pending",
            DecisionReason::AgentSuspended => "agent_suspended",
            DecisionReason::AgentSuspendedLowTrust => "agent_suspended_low_trust",
            DecisionReason::AgentRevoked => "agent_revoked",
            DecisionReason::UnknownKey => "unknown_key",
            DecisionReason::KeyRetired => "key_retired",
            DecisionReason::KeyRevoked => "key_revoked",
            DecisionReason::NonCanonicalSignature => "non_canonical_signature",
            DecisionReason::BadSignature => "bad_signature",
            DecisionReason::WrongAudience => "wrong_audience",
            DecisionReason::IssuedAtTooOld => "issued_at_too_old",
            DecisionReason::IssuedAtInFuture => "issued_at_in_future",
            DecisionReason::ReplayedNonce => "replayed_nonce",
            DecisionReason::CapabilityNotGranted => "capability_not_granted",
            DecisionReason::ResourceNotInScope => "resource_not_in_scope",
            DecisionReason::TrustBelowMinimum => "trust_below_minimum",
            DecisionReason::Unknown => "unknown",
        }
    }

    /// Whether monitoring mode may let the action through anyway: only the policy
    /// checks (grants, resource scope, trust). Identity, signature, freshness and
    /// replay failures deny in every mode.
    pub fn is_policy(self) -> bool {
        matches!(
            self,
            DecisionReason::CapabilityNotGranted
                | DecisionReason::ResourceNotInScope
                | DecisionReason::TrustBelowMinimum
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for DecisionReason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some(
                "Why a decision came out as it did. Stable codes; see `docs/protocol.md`. \
                 The checks run in the documented order and the first failing one names the \
                 reason; `allowed` when every check passed. Clients must accept a value not \
                 listed here (a newer server's reason) as a denial.",
            ))
            .enum_values(Some(DecisionReason::ALL.iter().map(|r| r.as_str())))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for DecisionReason {}

impl std::fmt::Display for DecisionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the organization enforces its policy or only records what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Policy failures deny (the default).
    Enforce,
    /// Policy failures are recorded and alerted but allowed (an explicit choice).
    Monitor,
}

impl Enforcement {
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::Enforce => "enforce",
            Enforcement::Monitor => "monitor",
        }
    }

    pub fn parse(s: &str) -> Option<Enforcement> {
        match s {
            "enforce" => Some(Enforcement::Enforce),
            "monitor" => Some(Enforcement::Monitor),
            _ => None,
        }
    }
}

/// The answer to `POST /api/v1/actions/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    /// Identifies the decision; also the audit record's id and the receipt's `jti`.
    pub decision_id: String,
    /// Whether the action may proceed.
    pub allowed: bool,
    /// The first check that failed, or `allowed`.
    pub reason: DecisionReason,
    /// A sentence for people.
    pub message: String,
    pub agent_id: String,
    /// The capability the action needs (the payload's `action`).
    pub capability: String,
    /// The payload's `resource`; `null` when it had none (always present).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub resource: Option<String>,
    /// The agent's trust score when the decision was made; `null` (always present)
    /// when the statement was not signed by the agent's current key.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub trust_score: Option<f64>,
    /// True when that score is below the organization's trust alert threshold (an
    /// alert has been raised about the agent); the action may still be allowed.
    #[serde(default)]
    pub trust_alert: bool,
    pub enforcement: Enforcement,
    /// The position of the decision's record in the organization's audit chain.
    pub audit_seq: i64,
    /// A compact JWS (EdDSA) by the server over the decision; verify it offline with
    /// the keys at `/.well-known/jwks.json`.
    pub receipt: String,
    /// When the decision was made, RFC 3339.
    pub decided_at: String,
}
