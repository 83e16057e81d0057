//! `POST /api/v1/actions/verify`: the hot path.
//!
//! The handler does everything that needs no shared state (bounded parsing, strict
//! signature verification, audience and freshness) and hands the rest to the
//! decision writer (`crate::decisions`), which decides, records and commits before
//! the handler answers. The check order is in `docs/protocol.md`.

use std::sync::Arc;

use actix_web::{post, web, HttpMessage, HttpRequest};
use diesel::prelude::*;

use agentid_protocol::tokens::ReceiptClaims;
use agentid_protocol::{
    ActionPayload, Decision, DecisionReason, Envelope, PayloadType, ProtocolErrorKind, PublicKey,
};

use crate::decisions::{CachedKey, Candidate};
use crate::error::ApiError;
use crate::http::middleware::RequestId;
use crate::http::ratelimit::limit_agent_request;
use crate::ratelimit::Class;
use crate::routes::agents::{invalid_envelope, read_envelope};
use crate::schema::agents;
use crate::startup::AppState;

/// What the handler needs to know about the agent before verifying.
#[derive(Debug)]
struct AgentKeyView {
    org_id: String,
    /// The current key, when the statement names it.
    key: Option<Arc<CachedKey>>,
    /// The state of the signature's key when it is not the current one.
    other_key_state: Option<String>,
}

/// Verify a signed action and decide whether it may proceed.
///
/// Permission: none; the agent's signature is the credential. The answer is a
/// decision (200) for every well-formed envelope of a known agent, allowed or not,
/// recorded in the audit log before it is sent, with a receipt signed by the server.
/// A malformed envelope is `400 invalid_envelope`; an unknown agent `404 not_found`;
/// a body not sent as `Content-Type: application/json` is `415`.
#[utoipa::path(
    operation_id = "verify_action",
    tag = "actions",
    request_body(content = Envelope, description = "An action envelope signed by the agent's current key"),
    responses(
        (status = 200, description = "The decision, allowed or denied, with its signed receipt", body = Decision),
        (status = 404, description = "`not_found`: no agent has the statement's `agent_id`", body = agentid_protocol::ErrorBody),
        (status = 429, description = "`rate_limited`: the agent or the client address is over its limit (docs/rate-limits.md)", body = agentid_protocol::ErrorBody),
        (status = 503, description = "`database_unavailable`: the decision log is saturated or unreachable", body = agentid_protocol::ErrorBody)
    )
)]
#[post("/api/v1/actions/verify")]
pub async fn verify_action(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<web::Json<Decision>, ApiError> {
    // (1)-(2) Envelope and payload, before touching the database.
    let envelope = read_envelope(&req, &body, PayloadType::Action)?;
    let payload = ActionPayload::parse(&envelope.payload).map_err(invalid_envelope)?;
    // An action envelope carries exactly one signature (checked by the parser).
    let signature = envelope
        .signatures
        .first()
        .ok_or_else(|| ApiError::internal("a parsed action envelope without a signature"))?;
    let keyid = signature.keyid.clone();
    // The signed bytes, built once: verified below, and digested for the record.
    let signed = envelope.signed_bytes();

    // (3) The agent and its current key: from the cache when the statement names
    // the cached key, else from the database.
    let view = match state.key_cache.get(&payload.agent_id) {
        Some(cached) if cached.key_id == keyid => AgentKeyView {
            org_id: cached.org_id.clone(),
            key: Some(cached),
            other_key_state: None,
        },
        _ => {
            let agent_id = payload.agent_id.clone();
            let claimed = keyid.clone();
            let view = match state
                .db
                .run(move |conn| load_key_view(conn, &agent_id, &claimed))
                .await
            {
                Ok(view) => view,
                Err(error) => {
                    // An unknown agent (or a failed read) still counts against the
                    // address, so a flood of made-up ids is limited too.
                    limit_agent_request(&req, &state, Class::Actions, None).await?;
                    return Err(error);
                }
            };
            if let Some(key) = &view.key {
                state.key_cache.put(&payload.agent_id, key.clone());
            }
            view
        }
    };

    // (5)-(8) Key, strict signature, audience, freshness. Status (4) is read fresh
    // by the writer, which also re-checks the key.
    let config = &state.config;
    let now_secs = crate::clock::now_ms() / 1000;
    let pre = match &view.key {
        None => Some(match view.other_key_state.as_deref() {
            Some("retired") => DecisionReason::KeyRetired,
            Some("revoked") => DecisionReason::KeyRevoked,
            _ => DecisionReason::UnknownKey,
        }),
        // The statement names this key (`key` is set only then): verify its signature.
        Some(current) => match current.key.verify(&signed, &signature.sig) {
            Err(e) if e.kind == ProtocolErrorKind::NonCanonicalSignature => {
                Some(DecisionReason::NonCanonicalSignature)
            }
            Err(_) => Some(DecisionReason::BadSignature),
            Ok(()) if payload.aud != config.public_url => Some(DecisionReason::WrongAudience),
            Ok(()) if payload.iat < now_secs - config.action_max_age_secs => {
                Some(DecisionReason::IssuedAtTooOld)
            }
            Ok(()) if payload.iat > now_secs + config.action_max_skew_secs => {
                Some(DecisionReason::IssuedAtInFuture)
            }
            Ok(()) => None,
        },
    };

    // Rate limits, before anything is written: the address always, the agent only
    // when its key's signature verified, so nobody can spend an agent's budget by
    // forging statements in its name (docs/rate-limits.md).
    let signature_verified = matches!(
        pre,
        None | Some(
            DecisionReason::WrongAudience
                | DecisionReason::IssuedAtTooOld
                | DecisionReason::IssuedAtInFuture
        )
    );
    limit_agent_request(
        &req,
        &state,
        Class::Actions,
        signature_verified.then_some(payload.agent_id.as_str()),
    )
    .await?;

    // (4), (9)-(11) and the audit record: decided and committed by the writer.
    let envelope_sha256 = agentid_protocol::envelope::digest_of(&signed);
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.to_string());
    let ActionPayload {
        agent_id,
        action,
        resource,
        args_digest,
        iat,
        nonce,
        ..
    } = payload;
    let recorded = state
        .writer
        .submit(Candidate {
            org_id: view.org_id.clone(),
            agent_id: agent_id.clone(),
            key_id: keyid,
            pre,
            capability: action.clone(),
            resource: resource.clone(),
            args_digest: args_digest.clone(),
            nonce,
            iat,
            envelope_sha256: envelope_sha256.clone(),
            request_id,
        })
        .await?;
    state
        .metrics
        .count_decision(recorded.reason.as_str(), recorded.allowed);

    let decided_secs = recorded.decided_at_ms / 1000;
    let receipt = state
        .signing
        .sign_receipt(
            &ReceiptClaims {
                iss: config.public_url.clone(),
                sub: agent_id.clone(),
                aud: config.public_url.clone(),
                iat: decided_secs,
                exp: decided_secs + config.receipt_ttl_secs,
                jti: recorded.decision_id.clone(),
                org_id: view.org_id,
                allowed: recorded.allowed,
                reason: recorded.reason.as_str().to_owned(),
                capability: action.clone(),
                resource: resource.clone(),
                args_digest,
                envelope_sha256,
                trust_score: recorded.trust_score,
                enforcement: recorded.enforcement.as_str().to_owned(),
                audit_seq: recorded.audit_seq,
                audit_hash: recorded.audit_hash,
            },
            decided_secs,
        )
        .map_err(ApiError::internal)?;
    Ok(web::Json(Decision {
        decision_id: recorded.decision_id,
        allowed: recorded.allowed,
        reason: recorded.reason,
        message: if recorded.trust_alert {
            format!(
                "{} The agent's trust score is below the organization's alert threshold.",
                message(recorded.reason, recorded.allowed)
            )
        } else {
            message(recorded.reason, recorded.allowed).to_owned()
        },
        agent_id,
        capability: action,
        resource,
        trust_score: recorded.trust_score,
        trust_alert: recorded.trust_alert,
        enforcement: recorded.enforcement,
        audit_seq: recorded.audit_seq,
        receipt,
        decided_at: crate::clock::rfc3339(recorded.decided_at_ms),
    }))
}

fn load_key_view(
    conn: &mut crate::db::DbConn,
    agent_id: &str,
    claimed_key: &str,
) -> Result<AgentKeyView, ApiError> {
    let (org_id, key_id, public_key): (String, String, String) = agents::table
        .filter(agents::id.eq(agent_id))
        .select((agents::org_id, agents::key_id, agents::public_key))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    if claimed_key == key_id {
        let key = PublicKey::from_b64url(&public_key).map_err(ApiError::internal)?;
        return Ok(AgentKeyView {
            key: Some(Arc::new(CachedKey {
                org_id: org_id.clone(),
                key_id: key_id.clone(),
                key,
            })),
            org_id,
            other_key_state: None,
        });
    }
    let other_key_state = crate::agents::key_state(conn, agent_id, claimed_key)?;
    Ok(AgentKeyView {
        org_id,
        key: None,
        other_key_state,
    })
}

/// A sentence for people about a decision.
fn message(reason: DecisionReason, allowed: bool) -> &'static str {
    match (reason, allowed) {
        (DecisionReason::Allowed, _) => "Every check passed.",
        (_, true) => {
            "Monitoring mode: the policy check failed, the action was allowed and recorded."
        }
        (DecisionReason::AgentPending, _) => "The agent has not proved possession of its key yet.",
        (DecisionReason::AgentSuspended, _) => "The agent is suspended.",
        (DecisionReason::AgentSuspendedLowTrust, _) => {
            "The agent was suspended automatically: its trust score fell below the organization's suspension threshold."
        }
        (DecisionReason::AgentRevoked, _) => "The agent is revoked.",
        (DecisionReason::UnknownKey, _) => "The signing key is not a key of this agent.",
        (DecisionReason::KeyRetired, _) => "The signing key was rotated away from.",
        (DecisionReason::KeyRevoked, _) => "The signing key is revoked.",
        (DecisionReason::NonCanonicalSignature, _) => "The signature is not canonically encoded.",
        (DecisionReason::BadSignature, _) => "The signature does not verify.",
        (DecisionReason::WrongAudience, _) => "The statement is addressed to another server.",
        (DecisionReason::IssuedAtTooOld, _) => "The statement is too old.",
        (DecisionReason::IssuedAtInFuture, _) => "The statement is dated in the future.",
        (DecisionReason::ReplayedNonce, _) => "The nonce was already used.",
        (DecisionReason::CapabilityNotGranted, _) => {
            "The agent has no live grant for this capability."
        }
        (DecisionReason::ResourceNotInScope, _) => {
            "No grant of this capability covers the resource."
        }
        (DecisionReason::TrustBelowMinimum, _) => {
            "The agent's trust score is below the capability's minimum."
        }
        (_, false) => "Denied.",
    }
}
