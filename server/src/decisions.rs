//! The hot path's durable half: one writer thread that turns candidate decisions
//! into recorded ones, many at a time, in one transaction each.
//!
//! A request handler parses the envelope, verifies the signature and checks
//! audience and freshness (all CPU work, no locks), then hands a [`Candidate`] to
//! the [`DecisionWriter`] and waits. The writer takes everything that has queued up
//! (up to [`MAX_BATCH`]) and, in one write transaction:
//!
//! 1. re-reads every agent in the batch (status, current key, trust score, the
//!    organization's enforcement mode), so a suspension, revocation or rotation
//!    committed by any replica before this transaction is honoured; nothing caches
//!    these,
//! 2. consumes the nonces of the statements still standing, deduplicating inside the
//!    batch first (the first wins) and then with one `INSERT .. ON CONFLICT DO
//!    NOTHING RETURNING`, so exactly one submission of a nonce is ever accepted,
//!    across batches and replicas (the primary key decides),
//! 3. evaluates grants, resource patterns and minimum trust,
//! 4. appends one audit record per decision to each organization's hash chain
//!    (organizations in sorted order, so two replicas never deadlock on heads),
//! 5. records trust events and raises alerts, updates the agents' counters,
//!
//! commits, and only then answers every waiting handler. No answer precedes its
//! commit; a crash before the commit loses only unanswered requests. If a batch
//! fails as a whole, each of its candidates is retried alone, so one bad record
//! cannot fail its neighbours.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use agentid_protocol::{DecisionReason, Enforcement};
use diesel::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::alerts::{self, AlertKind, NewAlert, Severity};
use crate::audit::{self, ActorType, NewEvent, Outcome};
use crate::capabilities::{self, GrantCheck, RiskLevel};
use crate::db::{write_transaction, Database, DbConn};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::schema::{
    action_nonces, agent_keys, agent_stats, agents, capabilities as caps, organizations,
    trust_events,
};
use crate::trust::{
    self, OpenAlerts, TrustEvent, TrustInputs, TrustReport, TrustScore, TrustState, Weights,
};

/// Most candidates decided in one transaction.
pub const MAX_BATCH: usize = 256;
/// How many candidates may wait for the writer before new ones are refused (503).
pub const QUEUE_CAPACITY: usize = 8192;
/// Bad signatures within [`BURST_WINDOW_MS`] that raise a burst alert.
pub const BAD_SIGNATURE_BURST: i64 = 5;
pub const BURST_WINDOW_MS: i64 = 60_000;
/// How often consumed nonces older than the freshness window are pruned.
const PRUNE_EVERY_MS: i64 = 60_000;

/// Most agents whose current key is cached; past it the cache starts over.
pub const MAX_CACHED_KEYS: usize = 100_000;

/// An agent's organization and current public key, parsed.
#[derive(Debug)]
pub struct CachedKey {
    pub org_id: String,
    pub key_id: String,
    pub key: agentid_protocol::PublicKey,
}

/// Agents' current keys by agent id, so the hot path verifies without a database
/// round trip. Safe without invalidation: the writer re-reads status and current key
/// inside the decision's transaction, so a stale entry (a rotation on any replica)
/// can only make the handler verify against a retired key, which the writer turns
/// into `key_retired`; and a statement naming a key other than the cached one is
/// looked up afresh (so the new key of a rotated agent works at once).
#[derive(Debug, Default)]
pub struct KeyCache {
    map: std::sync::RwLock<HashMap<String, Arc<CachedKey>>>,
}

impl KeyCache {
    pub fn get(&self, agent_id: &str) -> Option<Arc<CachedKey>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(agent_id)
            .cloned()
    }

    pub fn put(&self, agent_id: &str, entry: Arc<CachedKey>) {
        let mut map = self
            .map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_CACHED_KEYS {
            map.clear();
        }
        map.insert(agent_id.to_owned(), entry);
    }
}

/// A statement whose stateless checks are done, waiting to be decided and recorded.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub org_id: String,
    pub agent_id: String,
    /// The key id the signature claims.
    pub key_id: String,
    /// The first failure of the checks done before the writer (key as the handler
    /// saw it, signature, audience, freshness), if any.
    pub pre: Option<DecisionReason>,
    pub capability: String,
    pub resource: Option<String>,
    pub args_digest: Option<String>,
    pub nonce: String,
    pub iat: i64,
    pub envelope_sha256: String,
    pub request_id: Option<String>,
}

/// A decision that is in the audit log.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub decision_id: String,
    pub allowed: bool,
    pub reason: DecisionReason,
    pub enforcement: Enforcement,
    /// Absent when the statement was not authenticated.
    pub trust_score: Option<f64>,
    pub audit_seq: i64,
    pub audit_hash: String,
    pub decided_at_ms: i64,
}

/// Freshness settings the writer needs for pruning.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub max_age_secs: i64,
    pub max_skew_secs: i64,
}

struct Job {
    candidate: Candidate,
    reply: oneshot::Sender<Result<Recorded, ApiError>>,
}

/// The handle handlers submit candidates through. Dropping the last handle stops the
/// writer after it has answered what it holds.
#[derive(Debug, Clone)]
pub struct DecisionWriter {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("candidate", &self.candidate)
            .finish()
    }
}

impl DecisionWriter {
    /// Starts the writer thread.
    pub fn start(
        db: Database,
        settings: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<DecisionWriter> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("decision-writer".into())
            .spawn(move || run(db, settings, metrics, rx))?;
        Ok(DecisionWriter { tx })
    }

    /// Decides and records `candidate`; returns once it is committed.
    pub async fn submit(&self, candidate: Candidate) -> Result<Recorded, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send(Job { candidate, reply }).map_err(|_| {
            ApiError::new(
                ErrorCode::DatabaseUnavailable,
                "The decision log is saturated; retry shortly.",
            )
        })?;
        answer
            .await
            .map_err(|_| ApiError::internal("the decision writer stopped"))?
    }
}

fn run(db: Database, settings: WriterSettings, metrics: Arc<Metrics>, mut rx: mpsc::Receiver<Job>) {
    let mut last_prune = 0i64;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics.observe_decision_batch(jobs.len());
        let now = crate::clock::now_ms();
        let candidates: Vec<&Candidate> = jobs.iter().map(|j| &j.candidate).collect();
        let results = match decide_batch(&db, &candidates, now) {
            Ok(results) => results,
            Err(error) if jobs.len() > 1 => {
                tracing::warn!(error = %error, batch = jobs.len(), "decision batch failed; deciding one by one");
                candidates
                    .iter()
                    .map(|c| match decide_batch(&db, &[*c], now) {
                        Ok(mut one) => one
                            .pop()
                            .unwrap_or_else(|| Err(ApiError::internal("empty batch result"))),
                        Err(e) => Err(e),
                    })
                    .collect()
            }
            Err(error) => vec![Err(error)],
        };
        for (job, result) in jobs.into_iter().zip(results) {
            // The handler may have gone (client disconnected): the decision stands.
            let _ = job.reply.send(result);
        }
        if now - last_prune >= PRUNE_EVERY_MS {
            last_prune = now;
            if let Err(error) = prune_nonces(&db, settings, now) {
                tracing::warn!(error = %error, "pruning consumed nonces failed");
            }
        }
    }
    tracing::debug!("decision writer stopped");
}

/// Deletes consumed nonces whose issued-at is outside the freshness window (plus a
/// minute), so they can never be accepted again anyway.
fn prune_nonces(db: &Database, settings: WriterSettings, now_ms: i64) -> Result<(), ApiError> {
    let horizon = now_ms / 1000 - settings.max_age_secs - settings.max_skew_secs - 60;
    let mut conn = db.get()?;
    diesel::delete(action_nonces::table.filter(action_nonces::issued_at.lt(horizon)))
        .execute(&mut *conn)
        .map_err(ApiError::internal)?;
    Ok(())
}

/// The fresh view of an agent inside the batch transaction.
#[derive(Debug, Clone)]
struct AgentNow {
    org_id: String,
    status: String,
    key_id: String,
    trust_score: f64,
    enforcement: Enforcement,
    created_at: i64,
    /// The stored trust model state (JSON), if built yet.
    trust_state: Option<String>,
}

/// (id, org, status, key id, trust score, enforcement, created at, trust state)
type AgentNowRow = (
    String,
    String,
    String,
    String,
    f64,
    String,
    i64,
    Option<String>,
);

/// Per-agent changes made by a batch.
#[derive(Debug, Default)]
struct AgentDelta {
    allowed: i64,
    denied: i64,
    bad_signatures: i64,
}

fn decide_batch(
    db: &Database,
    candidates: &[&Candidate],
    now: i64,
) -> Result<Vec<Result<Recorded, ApiError>>, ApiError> {
    // A bug must cost its batch (rolled back, answered 500), never the writer thread:
    // without the thread no decision could be made until a restart.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut conn = db.get()?;
        write_transaction(&mut conn, |conn| decide_in(conn, candidates, now))
    }))
    .unwrap_or_else(|_| Err(ApiError::internal("the decision batch panicked")))
}

fn decide_in(
    conn: &mut DbConn,
    candidates: &[&Candidate],
    now: i64,
) -> Result<Vec<Result<Recorded, ApiError>>, ApiError> {
    // 1. Fresh agent state.
    let ids: Vec<&str> = candidates
        .iter()
        .map(|c| c.agent_id.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<AgentNowRow> = agents::table
        .inner_join(organizations::table)
        .inner_join(agent_stats::table)
        .filter(agents::id.eq_any(&ids))
        .select((
            agents::id,
            agents::org_id,
            agents::status,
            agents::key_id,
            agent_stats::trust_score,
            organizations::enforcement,
            agents::created_at,
            agent_stats::trust_state,
        ))
        .load(conn)
        .map_err(ApiError::internal)?;
    let agents_now: HashMap<String, AgentNow> = rows
        .into_iter()
        .map(
            |(id, org_id, status, key_id, trust_score, enforcement, created_at, trust_state)| {
                let enforcement = Enforcement::parse(&enforcement).unwrap_or(Enforcement::Enforce);
                (
                    id,
                    AgentNow {
                        org_id,
                        status,
                        key_id,
                        trust_score,
                        enforcement,
                        created_at,
                        trust_state,
                    },
                )
            },
        )
        .collect();

    // 2. Identity, key, signature, audience, freshness.
    let mut reasons: Vec<Option<DecisionReason>> = candidates
        .iter()
        .map(|c| {
            let agent = agents_now.get(&c.agent_id)?;
            let status = match agent.status.as_str() {
                "active" => None,
                "pending" => Some(DecisionReason::AgentPending),
                "suspended" => Some(DecisionReason::AgentSuspended),
                _ => Some(DecisionReason::AgentRevoked),
            };
            Some(status.unwrap_or_else(|| {
                if c.key_id != agent.key_id {
                    // Rotated after the handler looked: the key it verified is retired.
                    match c.pre {
                        Some(r @ (DecisionReason::UnknownKey | DecisionReason::KeyRevoked)) => r,
                        _ => DecisionReason::KeyRetired,
                    }
                } else {
                    // `Allowed` stands for "passed so far" until the checks below.
                    c.pre.unwrap_or(DecisionReason::Allowed)
                }
            }))
        })
        .collect();

    // 3. Nonces: first in the batch wins, then the primary key decides.
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    let mut to_insert: Vec<usize> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        if reasons[i] != Some(DecisionReason::Allowed) {
            continue;
        }
        if seen.insert((c.agent_id.as_str(), c.nonce.as_str())) {
            to_insert.push(i);
        } else {
            reasons[i] = Some(DecisionReason::ReplayedNonce);
        }
    }
    if !to_insert.is_empty() {
        let accepted = insert_nonces(conn, candidates, &to_insert)?;
        for i in to_insert {
            if !accepted.contains(&i) {
                reasons[i] = Some(DecisionReason::ReplayedNonce);
            }
        }
    }

    // 4. Grants and minimum trust for what still stands.
    let standing: Vec<usize> = (0..candidates.len())
        .filter(|&i| reasons[i] == Some(DecisionReason::Allowed))
        .collect();
    if !standing.is_empty() {
        let agent_ids: Vec<&str> = standing
            .iter()
            .map(|&i| candidates[i].agent_id.as_str())
            .collect();
        let grants = capabilities::live_grants(conn, &agent_ids).map_err(ApiError::internal)?;
        let orgs: Vec<&str> = standing
            .iter()
            .map(|&i| candidates[i].org_id.as_str())
            .collect();
        let names: Vec<&str> = standing
            .iter()
            .map(|&i| candidates[i].capability.as_str())
            .collect();
        let minimums: HashMap<(String, String), i32> = caps::table
            .filter(caps::org_id.eq_any(&orgs))
            .filter(caps::name.eq_any(&names))
            .select((caps::org_id, caps::name, caps::min_trust))
            .load::<(String, String, i32)>(conn)
            .map_err(ApiError::internal)?
            .into_iter()
            .map(|(o, n, m)| ((o, n), m))
            .collect();
        for i in standing {
            let c = candidates[i];
            let agent_grants = grants.get(&c.agent_id).map(Vec::as_slice).unwrap_or(&[]);
            let check =
                capabilities::evaluate(agent_grants, &c.capability, c.resource.as_deref(), now);
            reasons[i] = Some(match check {
                GrantCheck::NotGranted => DecisionReason::CapabilityNotGranted,
                GrantCheck::ResourceNotInScope => DecisionReason::ResourceNotInScope,
                GrantCheck::Granted => {
                    let minimum = minimums
                        .get(&(c.org_id.clone(), c.capability.clone()))
                        .copied()
                        .unwrap_or(0);
                    let score = agents_now.get(&c.agent_id).map_or(0.0, |a| a.trust_score);
                    if score < f64::from(minimum) {
                        DecisionReason::TrustBelowMinimum
                    } else {
                        DecisionReason::Allowed
                    }
                }
            });
        }
    }

    // 5. Record, organization by organization in a fixed order (chain-head locks).
    let mut by_org: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if reasons[i].is_some() {
            by_org.entry(c.org_id.as_str()).or_default().push(i);
        }
    }
    let mut results: Vec<Option<Result<Recorded, ApiError>>> =
        (0..candidates.len()).map(|_| None).collect();
    let mut deltas: HashMap<&str, AgentDelta> = HashMap::new();
    // (candidate, reason) of every recorded decision, in order, for the trust model.
    let mut decided: Vec<(usize, DecisionReason)> = Vec::with_capacity(candidates.len());
    for (org_id, indexes) in by_org {
        // Decide every candidate of the organization, then append their records in
        // one pass, then the per-decision side effects.
        struct Pending {
            index: usize,
            reason: DecisionReason,
            allowed: bool,
            enforcement: Enforcement,
            trust: Option<f64>,
        }
        let mut pending = Vec::with_capacity(indexes.len());
        let mut events = Vec::with_capacity(indexes.len());
        for i in indexes {
            let c = candidates[i];
            let Some(reason) = reasons[i] else { continue };
            let Some(agent) = agents_now.get(&c.agent_id) else {
                continue;
            };
            if agent.org_id != c.org_id {
                // Agents never move between organizations; refuse rather than guess.
                results[i] = Some(Err(ApiError::not_found()));
                continue;
            }
            let enforcement = agent.enforcement;
            let allowed = reason == DecisionReason::Allowed
                || (reason.is_policy() && enforcement == Enforcement::Monitor);
            // The score is shown only to a statement the agent's current key signed.
            let authenticated = c.key_id == agent.key_id
                && !matches!(
                    c.pre,
                    Some(
                        DecisionReason::UnknownKey
                            | DecisionReason::KeyRetired
                            | DecisionReason::KeyRevoked
                            | DecisionReason::NonCanonicalSignature
                            | DecisionReason::BadSignature
                    )
                );
            let trust = authenticated.then_some(agent.trust_score);
            events.push(NewEvent {
                actor_type: ActorType::Agent,
                actor_id: Some(&c.agent_id),
                action: if allowed {
                    "action.allowed"
                } else {
                    "action.denied"
                },
                target_type: Some("capability"),
                target_id: Some(&c.capability),
                outcome: if allowed {
                    Outcome::Success
                } else {
                    Outcome::Denied
                },
                details: serde_json::json!({
                    "reason": reason.as_str(),
                    "resource": c.resource,
                    "args_digest": c.args_digest,
                    "envelope_sha256": c.envelope_sha256,
                    "key_id": c.key_id,
                    "nonce": c.nonce,
                    "iat": c.iat,
                    "enforcement": enforcement.as_str(),
                    "trust_score": trust,
                }),
                request_id: c.request_id.as_deref(),
            });
            pending.push(Pending {
                index: i,
                reason,
                allowed,
                enforcement,
                trust,
            });
        }
        let records =
            audit::append_batch(conn, org_id, &events, now).map_err(ApiError::internal)?;
        for (p, record) in pending.into_iter().zip(records) {
            let c = candidates[p.index];
            let delta = deltas.entry(c.agent_id.as_str()).or_default();
            if p.allowed {
                delta.allowed += 1;
            } else {
                delta.denied += 1;
            }
            side_effects(conn, c, p.reason, p.enforcement, now, delta)?;
            decided.push((p.index, p.reason));
            results[p.index] = Some(Ok(Recorded {
                decision_id: record.id,
                allowed: p.allowed,
                reason: p.reason,
                enforcement: p.enforcement,
                trust_score: p.trust,
                audit_seq: record.seq,
                audit_hash: record.hash,
                decided_at_ms: now,
            }));
        }
    }

    // 6. Trust (the model's state advanced by this batch's events), counters, bursts.
    let trust_states = advance_trust(conn, candidates, &decided, &agents_now, now)?;
    for (agent_id, delta) in &deltas {
        let Some(agent) = agents_now.get(*agent_id) else {
            continue;
        };
        let (state_json, score) = match trust_states.get(*agent_id) {
            Some(v) => v.clone(),
            None => continue,
        };
        diesel::update(agent_stats::table.find(*agent_id))
            .set((
                agent_stats::actions_allowed.eq(agent_stats::actions_allowed + delta.allowed),
                agent_stats::actions_denied.eq(agent_stats::actions_denied + delta.denied),
                agent_stats::trust_score.eq(score.score),
                agent_stats::trust_confidence.eq(score.confidence),
                agent_stats::trust_state.eq(state_json),
                agent_stats::last_seen_at.eq(now),
            ))
            .execute(conn)
            .map_err(ApiError::internal)?;
        if delta.bad_signatures > 0 {
            let recent: i64 = trust_events::table
                .filter(trust_events::agent_id.eq(*agent_id))
                .filter(trust_events::kind.eq("bad_signature"))
                .filter(trust_events::occurred_at.gt(now - BURST_WINDOW_MS))
                .count()
                .get_result(conn)
                .map_err(ApiError::internal)?;
            if recent >= BAD_SIGNATURE_BURST {
                alerts::raise(
                    conn,
                    &NewAlert {
                        org_id: &agent.org_id,
                        agent_id: Some(agent_id),
                        kind: AlertKind::BadSignatureBurst,
                        severity: Severity::High,
                        summary: &format!(
                            "{recent} statements with bad signatures in the last minute"
                        ),
                        details: serde_json::json!({ "count": recent, "window_ms": BURST_WINDOW_MS }),
                    },
                    now,
                    None,
                )
                .map_err(ApiError::internal)?;
            }
        }
    }

    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::not_found())))
        .collect())
}

/// The trust model's inputs for agents, read inside the caller's transaction: when
/// each current key was created and the agents' unresolved alerts by severity
/// (alerts about the agent's own status or trust are left out, so the score does not
/// feed on itself).
fn trust_inputs(
    conn: &mut DbConn,
    agents_now: &[(&str, &str, i64)],
    now: i64,
) -> Result<HashMap<String, TrustInputs>, ApiError> {
    use crate::alerts::schema::alerts as alerts_table;
    let key_ids: Vec<&str> = agents_now.iter().map(|(_, key, _)| *key).collect();
    let key_created: HashMap<String, i64> = agent_keys::table
        .filter(agent_keys::key_id.eq_any(&key_ids))
        .select((agent_keys::key_id, agent_keys::created_at))
        .load::<(String, i64)>(conn)
        .map_err(ApiError::internal)?
        .into_iter()
        .collect();
    let agent_ids: Vec<&str> = agents_now.iter().map(|(id, _, _)| *id).collect();
    let unresolved: Vec<(Option<String>, String)> = alerts_table::table
        .filter(alerts_table::agent_id.eq_any(&agent_ids))
        .filter(alerts_table::status.ne("resolved"))
        .filter(alerts_table::kind.ne_all([
            AlertKind::TrustBelowThreshold.as_str(),
            AlertKind::AgentSuspended.as_str(),
            AlertKind::AgentRevoked.as_str(),
        ]))
        .select((alerts_table::agent_id, alerts_table::severity))
        .load(conn)
        .map_err(ApiError::internal)?;
    let mut open: HashMap<String, OpenAlerts> = HashMap::new();
    for (agent_id, severity) in unresolved {
        if let (Some(agent_id), Some(severity)) = (agent_id, Severity::parse(&severity)) {
            open.entry(agent_id).or_default().add(severity);
        }
    }
    Ok(agents_now
        .iter()
        .map(|(id, key, created_at)| {
            (
                (*id).to_owned(),
                TrustInputs {
                    now_ms: now,
                    agent_created_at_ms: *created_at,
                    key_created_at_ms: key_created.get(*key).copied().unwrap_or(*created_at),
                    open_alerts: open.get(*id).copied().unwrap_or_default(),
                    // Per-organization rotation policy and weights: the trust issue.
                    key_max_age_ms: None,
                },
            )
        })
        .collect())
}

/// A stored trust state, or a fresh one starting at the agent's creation.
fn stored_state(json: Option<&str>, created_at: i64) -> Result<TrustState, ApiError> {
    match json {
        Some(text) => serde_json::from_str(text).map_err(ApiError::internal),
        None => Ok(TrustState::new(created_at)),
    }
}

/// Applies the batch's decisions to each decided agent's trust state, in order, and
/// scores it as of `now`. Returns, per agent, the state to store and its score.
fn advance_trust(
    conn: &mut DbConn,
    candidates: &[&Candidate],
    decided: &[(usize, DecisionReason)],
    agents_now: &HashMap<String, AgentNow>,
    now: i64,
) -> Result<HashMap<String, (String, TrustScore)>, ApiError> {
    if decided.is_empty() {
        return Ok(HashMap::new());
    }
    // Risk levels of the decided capabilities, for weighting violations.
    let orgs: Vec<&str> = decided
        .iter()
        .map(|&(i, _)| candidates[i].org_id.as_str())
        .collect();
    let names: Vec<&str> = decided
        .iter()
        .map(|&(i, _)| candidates[i].capability.as_str())
        .collect();
    let risks: HashMap<(String, String), RiskLevel> = caps::table
        .filter(caps::org_id.eq_any(&orgs))
        .filter(caps::name.eq_any(&names))
        .select((caps::org_id, caps::name, caps::risk_level))
        .load::<(String, String, String)>(conn)
        .map_err(ApiError::internal)?
        .into_iter()
        .filter_map(|(o, n, r)| RiskLevel::parse(&r).map(|r| ((o, n), r)))
        .collect();
    let mut states: HashMap<&str, TrustState> = HashMap::new();
    for &(i, reason) in decided {
        let c = candidates[i];
        let Some(agent) = agents_now.get(&c.agent_id) else {
            continue;
        };
        let state = match states.entry(c.agent_id.as_str()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(stored_state(
                agent.trust_state.as_deref(),
                agent.created_at,
            )?),
        };
        let risk = risks
            .get(&(c.org_id.clone(), c.capability.clone()))
            .copied();
        if let Some(event) = TrustEvent::from_decision(reason, risk) {
            state.apply(event, now);
        }
    }
    let keyed: Vec<(&str, &str, i64)> = states
        .keys()
        .filter_map(|id| {
            agents_now
                .get(*id)
                .map(|a| (*id, a.key_id.as_str(), a.created_at))
        })
        .collect();
    let inputs = trust_inputs(conn, &keyed, now)?;
    let weights = Weights::default();
    let mut out = HashMap::new();
    for (agent_id, state) in states {
        let Some(input) = inputs.get(agent_id) else {
            continue;
        };
        let score = trust::score(&state, input, &weights);
        let json = serde_json::to_string(&state).map_err(ApiError::internal)?;
        out.insert(agent_id.to_owned(), (json, score));
    }
    Ok(out)
}

/// The agent's trust report as of `now` (every factor with its value, weight,
/// contribution and reason), from its stored state; nothing is written.
pub fn trust_report(
    conn: &mut DbConn,
    org_id: &str,
    agent_id: &str,
    now: i64,
) -> Result<TrustReport, ApiError> {
    let (key_id, created_at, state): (String, i64, Option<String>) = agents::table
        .inner_join(agent_stats::table)
        .filter(agents::id.eq(agent_id))
        .filter(agents::org_id.eq(org_id))
        .select((agents::key_id, agents::created_at, agent_stats::trust_state))
        .first(conn)
        .optional()
        .map_err(ApiError::internal)?
        .ok_or_else(ApiError::not_found)?;
    let state = stored_state(state.as_deref(), created_at)?;
    let inputs = trust_inputs(conn, &[(agent_id, key_id.as_str(), created_at)], now)?;
    let input = inputs
        .get(agent_id)
        .ok_or_else(|| ApiError::internal("trust inputs missing"))?;
    Ok(trust::evaluate(&state, input, &Weights::default()))
}

/// The score a newly registered agent starts with: the model's, for an agent with
/// no history and no alerts, as of its creation.
pub fn initial_trust(created_at: i64) -> TrustScore {
    let inputs = TrustInputs {
        now_ms: created_at,
        agent_created_at_ms: created_at,
        key_created_at_ms: created_at,
        open_alerts: OpenAlerts::default(),
        key_max_age_ms: None,
    };
    trust::score(&TrustState::new(created_at), &inputs, &Weights::default())
}

/// Inserts the nonces of `indexes` (distinct within the batch), returning the
/// indexes whose nonce was not already consumed. On PostgreSQL one multi-row
/// `INSERT .. ON CONFLICT DO NOTHING RETURNING` per 256 nonces; on SQLite (in
/// process, microseconds a statement) one insert each.
fn insert_nonces(
    conn: &mut DbConn,
    candidates: &[&Candidate],
    indexes: &[usize],
) -> Result<HashSet<usize>, ApiError> {
    let mut accepted = HashSet::new();
    if let DbConn::Postgres(pg) = conn {
        for chunk in indexes.chunks(256) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let c = candidates[i];
                    (
                        action_nonces::agent_id.eq(c.agent_id.as_str()),
                        action_nonces::nonce.eq(c.nonce.as_str()),
                        action_nonces::issued_at.eq(c.iat),
                    )
                })
                .collect();
            let inserted: HashSet<(String, String)> = diesel::insert_into(action_nonces::table)
                .values(rows)
                .on_conflict_do_nothing()
                .returning((action_nonces::agent_id, action_nonces::nonce))
                .get_results::<(String, String)>(pg)
                .map_err(ApiError::internal)?
                .into_iter()
                .collect();
            accepted.extend(chunk.iter().copied().filter(|&i| {
                let c = candidates[i];
                inserted.contains(&(c.agent_id.clone(), c.nonce.clone()))
            }));
        }
        return Ok(accepted);
    }
    for &i in indexes {
        let c = candidates[i];
        if consume_nonce(conn, &c.agent_id, &c.nonce, c.iat).map_err(ApiError::internal)? {
            accepted.insert(i);
        }
    }
    Ok(accepted)
}

/// Records `nonce` as used by `agent_id`: true if it was unused. `ON CONFLICT DO
/// NOTHING` keeps a duplicate from aborting the caller's transaction, and the
/// primary key makes the answer the same on every replica.
pub fn consume_nonce(
    conn: &mut DbConn,
    agent_id: &str,
    nonce: &str,
    issued_at: i64,
) -> QueryResult<bool> {
    let query = diesel::insert_into(action_nonces::table)
        .values((
            action_nonces::agent_id.eq(agent_id),
            action_nonces::nonce.eq(nonce),
            action_nonces::issued_at.eq(issued_at),
        ))
        .on_conflict_do_nothing();
    // The upsert clause exists per backend, not on the multi-backend connection.
    let inserted = match conn {
        DbConn::Postgres(c) => query.execute(c)?,
        DbConn::Sqlite(c) => query.execute(c)?,
    };
    Ok(inserted == 1)
}

/// Trust events and alerts for a decision's reason.
fn side_effects(
    conn: &mut DbConn,
    c: &Candidate,
    reason: DecisionReason,
    enforcement: Enforcement,
    now: i64,
    delta: &mut AgentDelta,
) -> Result<(), ApiError> {
    let (kind, alert) = match reason {
        DecisionReason::CapabilityNotGranted | DecisionReason::ResourceNotInScope => (
            "capability_violation",
            Some((AlertKind::CapabilityViolation, Severity::High)),
        ),
        DecisionReason::ReplayedNonce => ("replay", Some((AlertKind::Replay, Severity::High))),
        DecisionReason::BadSignature | DecisionReason::NonCanonicalSignature => {
            delta.bad_signatures += 1;
            ("bad_signature", None)
        }
        _ => return Ok(()),
    };
    let details = serde_json::json!({
        "reason": reason.as_str(),
        "capability": c.capability,
        "resource": c.resource,
        "envelope_sha256": c.envelope_sha256,
        "enforcement": enforcement.as_str(),
    });
    diesel::insert_into(trust_events::table)
        .values((
            trust_events::id.eq(uuid::Uuid::new_v4().to_string()),
            trust_events::org_id.eq(&c.org_id),
            trust_events::agent_id.eq(&c.agent_id),
            trust_events::kind.eq(kind),
            trust_events::details.eq(details.to_string()),
            trust_events::occurred_at.eq(now),
        ))
        .execute(conn)
        .map_err(ApiError::internal)?;
    if let Some((alert_kind, severity)) = alert {
        alerts::raise(
            conn,
            &NewAlert {
                org_id: &c.org_id,
                agent_id: Some(&c.agent_id),
                kind: alert_kind,
                severity,
                summary: &format!("{}: {}", reason.as_str(), c.capability),
                details,
            },
            now,
            c.request_id.as_deref(),
        )
        .map_err(ApiError::internal)?;
    }
    Ok(())
}
