//! The hot path's durable half: one writer thread that turns candidate decisions
//! into recorded ones, many at a time, in one transaction each. Every other write of
//! the server (management changes: [`Writer::write`]) goes through the same thread
//! and the same transactions, each change in a savepoint of its own, so changes and
//! decisions share commits and one lock order (docs/hot-path.md).
//!
//! A request handler parses the envelope, verifies the signature and checks
//! audience and freshness (all CPU work, no locks), then hands a [`Candidate`] to
//! the [`Writer`] and waits. The writer takes everything that has queued up
//! (up to [`MAX_BATCH`]) and, in one write transaction:
//!
//! 0. locks the audit chain heads of the batch's organizations, in sorted order,
//!    before reading anything: the first step of the lock order every write path
//!    follows (docs/hot-path.md, "Lock order"), so two replicas' batches never wait
//!    on each other in opposite orders, and the chain records a decision after a
//!    revocation only if the decision saw it; then runs the batch's changes,
//! 1. re-reads every agent in the batch (status, current key, trust score, the
//!    organization's enforcement mode), so a suspension, revocation or rotation
//!    committed by any replica before this transaction is honoured; nothing caches
//!    these,
//! 2. consumes the nonces of the statements still standing, deduplicating inside the
//!    batch first (the first wins) and then with one `INSERT .. ON CONFLICT DO
//!    NOTHING RETURNING`, so exactly one submission of a nonce is ever accepted,
//!    across batches and replicas (the primary key decides),
//! 3. evaluates grants, resource patterns and minimum trust,
//! 4. appends one audit record per decision to each organization's hash chain,
//! 5. records trust events and raises alerts, updates the agents' counters,
//!
//! commits, and only then answers every waiting handler. No answer precedes its
//! commit; a crash before the commit loses only unanswered requests. If a batch
//! fails as a whole, each of its changes and candidates is retried alone, so one bad
//! record cannot fail its neighbours.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use agentid_protocol::{DecisionReason, Enforcement};
use diesel::prelude::*;
use tokio::sync::{mpsc, oneshot};

use crate::alerts::{self, AlertKind, NewAlert, Severity};
use crate::audit::{self, ActorType, NewEvent, Outcome};
use crate::capabilities::{self, GrantCheck, RiskLevel};
use crate::db::{Database, DbConn};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::Metrics;
use crate::schema::{
    action_nonces, agent_stats, agents, capabilities as caps, organizations, trust_events,
};
use crate::trust::{self, TrustEvent, TrustState};
use crate::trust_store::{self, AgentRef, TrustPolicy};

/// Most candidates decided in one transaction.
pub const MAX_BATCH: usize = 256;
/// Most changes in one transaction (each holds a savepoint until the commit).
pub const MAX_CHANGES: usize = 32;
/// How many candidates may wait for the writer before new ones are refused (503).
pub const QUEUE_CAPACITY: usize = 8192;
/// Bad signatures within [`BURST_WINDOW_MS`] that raise a burst alert.
pub const BAD_SIGNATURE_BURST: i64 = 5;
pub const BURST_WINDOW_MS: i64 = 60_000;
/// How often a pruning of consumed nonces older than the freshness window starts.
const PRUNE_EVERY_MS: i64 = 10_000;
/// Most nonces one pruning step deletes. A pruning is done a step per batch, each in
/// its own short transaction: one `DELETE` of a minute's nonces (300,000 at
/// 5,000 actions/s, scattered over the primary key's pages) held the writer, and so
/// every signed action, for over a second.
const PRUNE_STEP: i64 = 1_000;

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
    /// The score is below the organization's trust alert threshold.
    pub trust_alert: bool,
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

/// What the writer is given: a decision to make, or a change to record.
#[expect(
    clippy::large_enum_variant,
    reason = "decisions are the hot path: boxing them would allocate once more per action"
)]
enum Work {
    Decide(Job),
    Change(Box<dyn Change>),
}

/// A management change (suspension, registration, a grant, ...): a write whose
/// closure runs in the writer's batch transaction, inside a savepoint of its own,
/// and is answered after the commit. The writer takes the chain heads it names.
trait Change: Send {
    /// The organization whose chain head the change needs (none for a new one).
    fn org(&self) -> Option<&str>;
    /// Runs the change; false when it failed (its savepoint is then rolled back).
    fn apply(&mut self, conn: &mut DbConn) -> bool;
    /// Answers the caller: with what `apply` produced once the transaction that ran
    /// it committed, or with `failure` when it did not.
    fn answer(self: Box<Self>, failure: Option<ApiError>);
}

/// A change as submitted by [`Writer::write`].
struct ChangeJob<T, F> {
    org: Option<String>,
    f: F,
    result: Option<Result<T, ApiError>>,
    span: tracing::Span,
    reply: oneshot::Sender<Result<T, ApiError>>,
}

impl<T, F> Change for ChangeJob<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut DbConn) -> Result<T, ApiError> + Send + 'static,
{
    fn org(&self) -> Option<&str> {
        self.org.as_deref()
    }

    fn apply(&mut self, conn: &mut DbConn) -> bool {
        // Log lines of the change carry its request's id.
        let _entered = self.span.enter();
        let f = &mut self.f;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
            .unwrap_or_else(|_| Err(ApiError::internal("a change panicked in the writer")));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<ApiError>) {
        let this = *self;
        let answer = match failure {
            Some(error) => Err(error),
            None => this
                .result
                .unwrap_or_else(|| Err(ApiError::internal("a change was never applied"))),
        };
        // The caller may have gone (client disconnected): the change stands.
        let _ = this.reply.send(answer);
    }
}

/// The handle handlers submit candidates and changes through. Dropping the last
/// handle stops the writer after it has answered what it holds.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Work>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("candidate", &self.candidate)
            .finish()
    }
}

impl Writer {
    /// Starts the writer thread.
    pub fn start(
        db: Database,
        settings: WriterSettings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name("decision-writer".into())
            .spawn(move || run(db, settings, metrics, rx))?;
        Ok(Writer { tx })
    }

    /// Decides and records `candidate`; returns once it is committed.
    pub async fn submit(&self, candidate: Candidate) -> Result<Recorded, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .try_send(Work::Decide(Job { candidate, reply }))
            .map_err(|_| saturated())?;
        answer
            .await
            .map_err(|_| ApiError::internal("the decision writer stopped"))?
    }

    /// Runs `f` as a change to the organization `org_id` in the writer's next batch
    /// transaction (group commit: one commit, and on PostgreSQL one chain-head lock,
    /// for everything the batch holds), inside a savepoint of its own, after the
    /// batch has locked `org_id`'s chain head (docs/hot-path.md, "Lock order"). An
    /// error from `f` rolls back its savepoint only. Returns once the transaction
    /// committed. `f` may run twice: if its batch fails as a whole, every change of
    /// the batch is run again alone (nothing of the first run was committed).
    pub async fn write<T, F>(&self, org_id: impl Into<String>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConn) -> Result<T, ApiError> + Send + 'static,
    {
        self.change(Some(org_id.into()), f).await
    }

    /// Like [`Writer::write`] for a change that creates an organization or writes no
    /// organization's rows (no chain head to lock).
    pub async fn write_unscoped<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConn) -> Result<T, ApiError> + Send + 'static,
    {
        self.change(None, f).await
    }

    async fn change<T, F>(&self, org: Option<String>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnMut(&mut DbConn) -> Result<T, ApiError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = ChangeJob {
            org,
            f,
            result: None,
            span: tracing::Span::current(),
            reply,
        };
        self.tx
            .try_send(Work::Change(Box::new(job)))
            .map_err(|_| saturated())?;
        answer
            .await
            .map_err(|_| ApiError::internal("the writer stopped"))?
    }
}

fn saturated() -> ApiError {
    ApiError::new(
        ErrorCode::DatabaseUnavailable,
        "The writer is saturated; retry shortly.",
    )
}

fn run(
    db: Database,
    settings: WriterSettings,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Work>,
) {
    let mut last_prune = 0i64;
    let mut pruning = false;
    while let Some(first) = rx.blocking_recv() {
        let mut changes_taken = usize::from(matches!(first, Work::Change(_)));
        let mut work = vec![first];
        while work.len() < MAX_BATCH && changes_taken < MAX_CHANGES {
            match rx.try_recv() {
                Ok(more) => {
                    changes_taken += usize::from(matches!(more, Work::Change(_)));
                    work.push(more);
                }
                Err(_) => break,
            }
        }
        metrics.observe_decision_batch(work.len());
        let mut jobs = Vec::with_capacity(work.len());
        let mut changes: Vec<Box<dyn Change>> = Vec::new();
        for item in work {
            match item {
                Work::Decide(job) => jobs.push(job),
                Work::Change(change) => changes.push(change),
            }
        }
        let now = crate::clock::now_ms();
        let candidates: Vec<&Candidate> = jobs.iter().map(|j| &j.candidate).collect();
        let results = match record_batch(&db, &candidates, &mut changes, now) {
            Ok(results) => {
                for change in changes {
                    change.answer(None);
                }
                results
            }
            Err(error) if jobs.len() + changes.len() > 1 => {
                tracing::warn!(error = %error, batch = jobs.len() + changes.len(), "write batch failed; writing one by one");
                for mut change in changes {
                    let alone = record_batch(&db, &[], std::slice::from_mut(&mut change), now);
                    change.answer(alone.err());
                }
                candidates
                    .iter()
                    .map(|c| match record_batch(&db, &[*c], &mut [], now) {
                        Ok(mut one) => one
                            .pop()
                            .unwrap_or_else(|| Err(ApiError::internal("empty batch result"))),
                        Err(e) => Err(e),
                    })
                    .collect()
            }
            Err(error) => {
                for change in changes {
                    change.answer(Some(error.replicate()));
                }
                jobs.iter().map(|_| Err(error.replicate())).collect()
            }
        };
        for (job, result) in jobs.into_iter().zip(results) {
            // The handler may have gone (client disconnected): the decision stands.
            let _ = job.reply.send(result);
        }
        if now - last_prune >= PRUNE_EVERY_MS {
            last_prune = now;
            pruning = true;
        }
        if pruning {
            match prune_nonces(&db, settings, now, PRUNE_STEP) {
                // A short step means nothing expired is left.
                Ok(deleted) => pruning = deleted == PRUNE_STEP as usize,
                Err(error) => {
                    pruning = false;
                    tracing::warn!(error = %error, "pruning consumed nonces failed");
                }
            }
        }
    }
    tracing::debug!("decision writer stopped");
}

/// One pruning step: at most `limit` consumed nonces whose issued-at is outside the
/// freshness window (plus a minute), so they can never be accepted again anyway, and
/// at most `limit` spent challenges past their expiry; returns how many of each kind
/// the fuller one deleted (a step below `limit` means nothing expired is left).
fn prune_nonces(
    db: &Database,
    settings: WriterSettings,
    now_ms: i64,
    limit: i64,
) -> Result<usize, ApiError> {
    let nonces = prune_nonce_step(db, settings, now_ms, limit)?;
    let challenges = db.write_now(&[], |conn| {
        crate::agents::prune_spent_challenges(conn, now_ms, limit).map_err(ApiError::internal)
    })?;
    Ok(nonces.max(challenges))
}

/// Deletes at most `limit` consumed nonces whose issued-at is outside the freshness
/// window (plus a minute). Holds the writer's turn like a batch (its transaction is
/// short).
fn prune_nonce_step(
    db: &Database,
    settings: WriterSettings,
    now_ms: i64,
    limit: i64,
) -> Result<usize, ApiError> {
    use diesel::sql_types::BigInt;
    let horizon = now_ms / 1000 - settings.max_age_secs - settings.max_skew_secs - 60;
    // The lock order's first two steps (docs/hot-path.md, "Lock order").
    let _turn = db.write_gate();
    let mut conn = db.get()?;
    // A row-value IN over a limited subquery: both backends, and the subquery walks
    // the issued-at index from its oldest end. Only the placeholders differ.
    let sql = |horizon: &str, limit: &str| {
        format!(
            "DELETE FROM action_nonces WHERE (agent_id, nonce) IN (SELECT agent_id, nonce \
             FROM action_nonces WHERE issued_at < {horizon} ORDER BY issued_at LIMIT {limit})"
        )
    };
    let deleted = match &mut *conn {
        DbConn::Sqlite(c) => diesel::sql_query(sql("?", "?"))
            .bind::<BigInt, _>(horizon)
            .bind::<BigInt, _>(limit)
            .execute(c),
        DbConn::Postgres(c) => diesel::sql_query(sql("$1", "$2"))
            .bind::<BigInt, _>(horizon)
            .bind::<BigInt, _>(limit)
            .execute(c),
    };
    deleted.map_err(ApiError::internal)
}

/// The fresh view of an agent inside the batch transaction.
#[derive(Debug)]
struct AgentNow {
    org_id: String,
    status: String,
    key_id: String,
    /// The stored score (as of the agent's last trust change).
    stored_score: f64,
    enforcement: Enforcement,
    created_at: i64,
    /// The score of the agent's latest trust history point.
    recorded_score: Option<f64>,
    /// Suspended automatically for a low trust score.
    suspended_for_trust: bool,
}

/// (id, org, status, key id, trust score, enforcement, created at, trust state,
/// recorded score, suspended for trust at, organization's trust policy)
type AgentNowRow = (
    String,
    String,
    String,
    String,
    f64,
    String,
    i64,
    Option<String>,
    Option<f64>,
    Option<i64>,
    Option<String>,
);

/// Per-agent changes made by a batch.
#[derive(Debug, Default)]
struct AgentDelta {
    allowed: i64,
    denied: i64,
    bad_signatures: i64,
}

/// One transaction for a batch: the changes, each in a savepoint of its own, then the
/// decisions. Nothing is answered here; an error means nothing was committed.
fn record_batch(
    db: &Database,
    candidates: &[&Candidate],
    changes: &mut [Box<dyn Change>],
    now: i64,
) -> Result<Vec<Result<Recorded, ApiError>>, ApiError> {
    // Exported when traces are (telemetry.rs); otherwise a disabled debug span.
    let span = tracing::debug_span!(
        "decision.batch",
        batch.size = candidates.len(),
        batch.changes = changes.len()
    );
    let _entered = span.enter();
    // A bug must cost its batch (rolled back, answered 500), never the writer thread:
    // without the thread no decision could be made until a restart.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Every organization of the batch: their chain heads are locked first, in
        // sorted order, before anything is read (docs/hot-path.md, "Lock order").
        // The changes' are copied: the changes are borrowed mutably below.
        let change_orgs: Vec<String> = changes
            .iter()
            .filter_map(|c| c.org().map(str::to_owned))
            .collect();
        let orgs: Vec<&str> = candidates
            .iter()
            .map(|c| c.org_id.as_str())
            .chain(change_orgs.iter().map(String::as_str))
            .collect();
        db.write_now(&orgs, |conn| {
            for change in changes.iter_mut() {
                apply_in_savepoint(conn, change.as_mut())?;
            }
            if candidates.is_empty() {
                return Ok(Vec::new());
            }
            decide_in(conn, candidates, now)
        })
    }))
    .unwrap_or_else(|_| Err(ApiError::internal("the write batch panicked")))
}

/// Applies `change` inside a savepoint: its failure rolls back its own writes only.
/// Fails (and so fails the batch) only if the savepoint itself cannot be managed.
/// The savepoint is not released (one round trip less; the commit releases them
/// all): each change's `SAVEPOINT` of the same name hides the one before, so a
/// `ROLLBACK TO` undoes exactly the change in progress. [`MAX_CHANGES`] bounds how
/// many a transaction holds (PostgreSQL keeps up to 64 subtransactions per
/// transaction in its fast cache).
fn apply_in_savepoint(conn: &mut DbConn, change: &mut dyn Change) -> Result<(), ApiError> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute("SAVEPOINT agentid_change")
        .map_err(ApiError::internal)?;
    if !change.apply(conn) {
        conn.batch_execute("ROLLBACK TO SAVEPOINT agentid_change")
            .map_err(ApiError::internal)?;
    }
    Ok(())
}

fn decide_in(
    conn: &mut DbConn,
    candidates: &[&Candidate],
    now: i64,
) -> Result<Vec<Result<Recorded, ApiError>>, ApiError> {
    // 1. Fresh agent state, its trust state and its organization's trust policy.
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
            agent_stats::trust_recorded_score,
            agent_stats::trust_suspended_at,
            organizations::trust_policy,
        ))
        .load(conn)
        .map_err(ApiError::internal)?;
    let mut agents_now: HashMap<String, AgentNow> = HashMap::with_capacity(rows.len());
    let mut states: HashMap<String, TrustState> = HashMap::with_capacity(rows.len());
    let mut policies: HashMap<String, TrustPolicy> = HashMap::new();
    for (
        id,
        org_id,
        status,
        key_id,
        stored_score,
        enforcement,
        created_at,
        trust_state,
        recorded_score,
        suspended_at,
        policy,
    ) in rows
    {
        if !policies.contains_key(&org_id) {
            policies.insert(
                org_id.clone(),
                trust_store::parse_policy(policy.as_deref())?,
            );
        }
        states.insert(
            id.clone(),
            trust_store::stored_state(trust_state.as_deref(), created_at)?,
        );
        agents_now.insert(
            id,
            AgentNow {
                org_id,
                status,
                key_id,
                stored_score,
                enforcement: Enforcement::parse(&enforcement).unwrap_or(Enforcement::Enforce),
                created_at,
                recorded_score,
                suspended_for_trust: suspended_at.is_some(),
            },
        );
    }
    // Each agent's score as of now: its stored state, decayed to the batch's time
    // (constant work per agent; no history is read).
    let refs = agent_refs(&agents_now, agents_now.keys().map(String::as_str));
    let mut inputs = trust_store::inputs(conn, &refs, &policies, now)?;
    let scores_now: HashMap<&str, f64> = refs
        .iter()
        .filter_map(|a| {
            let state = states.get(a.id)?;
            let input = inputs.get(a.id)?;
            let weights = policies
                .get(a.org_id)
                .map(|p| p.weights)
                .unwrap_or_default();
            Some((a.id, trust::score(state, input, &weights).score))
        })
        .collect();

    // 2. Identity, key, signature, audience, freshness.
    let mut reasons: Vec<Option<DecisionReason>> = candidates
        .iter()
        .map(|c| {
            let agent = agents_now.get(&c.agent_id)?;
            let status = match agent.status.as_str() {
                "active" => None,
                "pending" => Some(DecisionReason::AgentPending),
                "suspended" if agent.suspended_for_trust => {
                    Some(DecisionReason::AgentSuspendedLowTrust)
                }
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

    // 4. Grants and minimum trust for what still stands. The batch's capabilities are
    // read from the catalogue once: minimum trust here, risk for the trust model below.
    let catalogue = catalogue_entries(conn, candidates)?;
    let standing: Vec<usize> = (0..candidates.len())
        .filter(|&i| reasons[i] == Some(DecisionReason::Allowed))
        .collect();
    if !standing.is_empty() {
        let agent_ids: Vec<&str> = standing
            .iter()
            .map(|&i| candidates[i].agent_id.as_str())
            .collect();
        let grants = capabilities::live_grants(conn, &agent_ids).map_err(ApiError::internal)?;
        for i in standing {
            let c = candidates[i];
            let agent_grants = grants.get(&c.agent_id).map(Vec::as_slice).unwrap_or(&[]);
            let check =
                capabilities::evaluate(agent_grants, &c.capability, c.resource.as_deref(), now);
            reasons[i] = Some(match check {
                GrantCheck::NotGranted => DecisionReason::CapabilityNotGranted,
                GrantCheck::ResourceNotInScope => DecisionReason::ResourceNotInScope,
                GrantCheck::Granted => {
                    let minimum = catalogue
                        .get(&(c.org_id.clone(), c.capability.clone()))
                        .map_or(0, |e| e.min_trust);
                    let score = scores_now.get(c.agent_id.as_str()).copied().unwrap_or(0.0);
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
    let mut alerts_raised = false;
    for (org_id, indexes) in by_org {
        // Decide every candidate of the organization, then append their records in
        // one pass, then the per-decision side effects.
        struct Pending {
            index: usize,
            reason: DecisionReason,
            allowed: bool,
            enforcement: Enforcement,
            trust: Option<f64>,
            trust_alert: bool,
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
            let trust = authenticated
                .then(|| scores_now.get(c.agent_id.as_str()).copied())
                .flatten();
            let trust_alert = trust.is_some_and(|score| {
                policies
                    .get(&agent.org_id)
                    .is_some_and(|p| p.alerting(score))
            });
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
                    "trust_alert": trust_alert,
                }),
                request_id: c.request_id.as_deref(),
            });
            pending.push(Pending {
                index: i,
                reason,
                allowed,
                enforcement,
                trust,
                trust_alert,
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
            alerts_raised |= side_effects(conn, c, p.reason, p.enforcement, now, delta)?;
            decided.push((p.index, p.reason));
            results[p.index] = Some(Ok(Recorded {
                decision_id: record.id,
                allowed: p.allowed,
                reason: p.reason,
                enforcement: p.enforcement,
                trust_score: p.trust,
                trust_alert: p.trust_alert,
                audit_seq: record.seq,
                audit_hash: record.hash,
                decided_at_ms: now,
            }));
        }
    }

    // 6. Bad-signature bursts (alerts count against the score, so before scoring).
    for (agent_id, delta) in &deltas {
        if delta.bad_signatures == 0 {
            continue;
        }
        let Some(agent) = agents_now.get(*agent_id) else {
            continue;
        };
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
                    summary: &format!("{recent} statements with bad signatures in the last minute"),
                    details: serde_json::json!({ "count": recent, "window_ms": BURST_WINDOW_MS }),
                },
                now,
                None,
            )
            .map_err(ApiError::internal)?;
            alerts_raised = true;
        }
    }

    // 7. Trust: each decided agent's state advanced by the batch's events in order,
    // scored as of now, stored with the counters; history and thresholds.
    let mut events: HashMap<&str, BTreeMap<&'static str, u32>> = HashMap::new();
    for &(i, reason) in &decided {
        let c = candidates[i];
        let risk = catalogue
            .get(&(c.org_id.clone(), c.capability.clone()))
            .and_then(|e| e.risk);
        let counts = events.entry(c.agent_id.as_str()).or_default();
        if let Some(event) = TrustEvent::from_decision(reason, risk) {
            if let Some(state) = states.get_mut(&c.agent_id) {
                state.apply(event, now);
            }
            *counts.entry(event.as_str()).or_default() += 1;
        }
    }
    let decided_refs = agent_refs(&agents_now, deltas.keys().copied());
    if alerts_raised {
        inputs = trust_store::inputs(conn, &decided_refs, &policies, now)?;
    }
    let mut changes = Vec::with_capacity(decided_refs.len());
    for agent_ref in decided_refs {
        let (Some(agent), Some(delta), Some(state)) = (
            agents_now.get(agent_ref.id),
            deltas.get(agent_ref.id),
            states.remove(agent_ref.id),
        ) else {
            continue;
        };
        let counts = events.remove(agent_ref.id).unwrap_or_default();
        let notable = counts.keys().any(|kind| *kind != "allowed");
        changes.push(trust_store::Change {
            agent: agent_ref,
            status: &agent.status,
            state,
            previous: agent.stored_score,
            recorded: agent.recorded_score,
            cause: trust_store::Cause::Decisions,
            details: serde_json::json!({
                "decisions": delta.allowed + delta.denied,
                "events": counts,
            }),
            notable,
            allowed: delta.allowed,
            denied: delta.denied,
            seen: true,
            new_row: false,
        });
    }
    trust_store::commit(conn, changes, &inputs, &policies, now, None)?;

    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::not_found())))
        .collect())
}

/// The trust model's view of the agents named by `ids`.
fn agent_refs<'a>(
    agents_now: &'a HashMap<String, AgentNow>,
    ids: impl Iterator<Item = &'a str>,
) -> Vec<AgentRef<'a>> {
    ids.filter_map(|id| {
        agents_now.get_key_value(id).map(|(id, a)| AgentRef {
            id,
            org_id: &a.org_id,
            key_id: &a.key_id,
            created_at: a.created_at,
        })
    })
    .collect()
}

/// A capability of the batch as the catalogue has it.
#[derive(Debug, Clone, Copy)]
struct CatalogueEntry {
    min_trust: i32,
    /// `None` for a risk level this version does not know.
    risk: Option<RiskLevel>,
}

/// The catalogue entries of the batch's capabilities, by (organization, name): one
/// query for the minimum trust (step 4) and the risk the trust model weighs (step 7).
fn catalogue_entries(
    conn: &mut DbConn,
    candidates: &[&Candidate],
) -> Result<HashMap<(String, String), CatalogueEntry>, ApiError> {
    let orgs: HashSet<&str> = candidates.iter().map(|c| c.org_id.as_str()).collect();
    let names: HashSet<&str> = candidates.iter().map(|c| c.capability.as_str()).collect();
    Ok(caps::table
        .filter(caps::org_id.eq_any(orgs))
        .filter(caps::name.eq_any(names))
        .select((caps::org_id, caps::name, caps::min_trust, caps::risk_level))
        .load::<(String, String, i32, String)>(conn)
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(o, n, min_trust, risk)| {
            let risk = RiskLevel::parse(&risk);
            ((o, n), CatalogueEntry { min_trust, risk })
        })
        .collect())
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

/// Trust events and alerts for a decision's reason; true if an alert was raised.
fn side_effects(
    conn: &mut DbConn,
    c: &Candidate,
    reason: DecisionReason,
    enforcement: Enforcement,
    now: i64,
    delta: &mut AgentDelta,
) -> Result<bool, ApiError> {
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
        _ => return Ok(false),
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
    Ok(alert.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::TestDb;
    use crate::db::Backend;

    const SETTINGS: WriterSettings = WriterSettings {
        max_age_secs: 300,
        max_skew_secs: 30,
    };

    fn nonces_left(t: &TestDb) -> i64 {
        action_nonces::table
            .count()
            .get_result(&mut *t.conn())
            .unwrap()
    }

    /// Pruning goes in steps of at most the limit, removes only nonces outside the
    /// freshness window (plus a minute), and a short step means it is done.
    fn prunes_expired_nonces_in_bounded_steps(backend: Backend) {
        let t = TestDb::new(backend);
        let now_ms = 10_000_000_000;
        let horizon = now_ms / 1000 - 300 - 30 - 60;
        {
            let mut conn = t.conn();
            for i in 0..25 {
                assert!(
                    consume_nonce(&mut conn, "agent", &format!("old-{i}"), horizon - 1 - i)
                        .unwrap()
                );
            }
            for i in 0..5 {
                assert!(
                    consume_nonce(&mut conn, "agent", &format!("fresh-{i}"), horizon + i).unwrap()
                );
            }
        }
        let steps: Vec<usize> = (0..4)
            .map(|_| prune_nonces(&t.db, SETTINGS, now_ms, 10).unwrap())
            .collect();
        assert_eq!(steps, [10, 10, 5, 0]);
        assert_eq!(nonces_left(&t), 5, "the fresh nonces stay");
        // The nonces still inside the window still count as used.
        assert!(!consume_nonce(&mut t.conn(), "agent", "fresh-0", horizon).unwrap());
    }

    /// Spent challenges are kept while they could still be answered (so a second
    /// answer is refused) and pruned, a bounded step at a time, once expired.
    fn prunes_spent_challenges_once_expired(backend: Backend) {
        use diesel::connection::SimpleConnection;
        let t = TestDb::new(backend);
        let org = t.org();
        let now_ms = 10_000_000_000;
        t.conn()
            .batch_execute(&format!(
                "INSERT INTO users (id, org_id, email, password_hash, role, created_at, updated_at) \
                 VALUES ('u', '{org}', 'u@example.com', 'x', 'owner', 0, 0); \
                 INSERT INTO agents (id, org_id, name, description, owner_id, status, did, key_id, \
                 public_key, requested_capabilities, metadata, created_by, created_at, updated_at) \
                 VALUES ('a', '{org}', 'a', '', 'u', 'active', 'd', 'k', 'p', '[]', '{{}}', 'u', 0, 0);"
            ))
            .unwrap();
        for i in 0..15 {
            let expires = if i < 12 { now_ms - 1 } else { now_ms + 60_000 };
            let spent = crate::agents::spend_challenge(
                &mut t.conn(),
                "a",
                &format!("c{i}"),
                "aud",
                expires,
                0,
            )
            .unwrap();
            assert!(spent);
        }
        let left = || -> i64 {
            crate::schema::agent_challenges::table
                .count()
                .get_result(&mut *t.conn())
                .unwrap()
        };
        let steps: Vec<usize> = (0..3)
            .map(|_| prune_nonces(&t.db, SETTINGS, now_ms, 10).unwrap())
            .collect();
        assert_eq!(steps, [10, 2, 0]);
        assert_eq!(left(), 3, "the unexpired stay");
        assert!(!crate::agents::spend_challenge(
            &mut t.conn(),
            "a",
            "c13",
            "aud",
            now_ms + 60_000,
            0
        )
        .unwrap());
    }

    /// Changes that share a batch transaction are isolated by their savepoints: a
    /// change that fails (or panics) after writing is rolled back and answered its
    /// error, the others commit and are answered theirs, and the chain verifies.
    fn a_failing_change_costs_only_itself(backend: Backend) {
        let t = TestDb::new(backend);
        let org = t.org();
        let writer = Writer::start(t.db.clone(), SETTINGS, Metrics::new()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Hold the chain head (on SQLite: the database's write lock) so the first
        // change blocks the writer while the others queue up into one batch.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let blocker = {
            let db = t.db.clone();
            let org = org.clone();
            std::thread::spawn(move || {
                let mut conn = db.get().unwrap();
                crate::db::write_transaction(&mut conn, |conn| {
                    audit::lock_chains(conn, &[org.as_str()])?;
                    held_tx.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(400));
                    Ok::<_, diesel::result::Error>(())
                })
                .unwrap();
            })
        };
        held_rx.recv().unwrap();
        let append = |conn: &mut DbConn, org: &str, n: usize| {
            let event = NewEvent {
                actor_type: ActorType::System,
                actor_id: None,
                action: "test.change",
                target_type: None,
                target_id: None,
                outcome: Outcome::Success,
                details: serde_json::json!({ "n": n }),
                request_id: None,
            };
            audit::append(conn, org, &event, 1).map_err(ApiError::internal)
        };
        let results = runtime.block_on(async {
            let changes = (0..6).map(|n| {
                let org = org.clone();
                writer.write(org.clone(), move |conn| {
                    append(conn, &org, n)?;
                    match n {
                        3 => Err(ApiError::invalid("refused after writing")),
                        4 => panic!("a bug after writing"),
                        _ => Ok(n),
                    }
                })
            });
            futures_util::future::join_all(changes).await
        });
        blocker.join().unwrap();
        let codes: Vec<Result<usize, ErrorCode>> = results
            .into_iter()
            .map(|r| r.map_err(|e| e.code()))
            .collect();
        assert_eq!(
            codes,
            [
                Ok(0),
                Ok(1),
                Ok(2),
                Err(ErrorCode::InvalidRequest),
                Err(ErrorCode::InternalError),
                Ok(5)
            ]
        );
        let mut conn = t.conn();
        let written: Vec<i64> = audit::list(&mut conn, &org, None, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.details.value()["n"].as_i64().unwrap())
            .collect();
        assert_eq!(written, [0, 1, 2, 5], "the failed changes left nothing");
        assert!(audit::verify(&mut conn, &org).unwrap().valid);
    }

    #[test]
    fn a_failing_change_costs_only_itself_sqlite() {
        a_failing_change_costs_only_itself(Backend::Sqlite);
    }

    #[test]
    fn a_failing_change_costs_only_itself_postgres() {
        a_failing_change_costs_only_itself(Backend::Postgres);
    }

    #[test]
    fn prunes_spent_challenges_once_expired_sqlite() {
        prunes_spent_challenges_once_expired(Backend::Sqlite);
    }

    #[test]
    fn prunes_spent_challenges_once_expired_postgres() {
        prunes_spent_challenges_once_expired(Backend::Postgres);
    }

    #[test]
    fn prunes_expired_nonces_in_bounded_steps_sqlite() {
        prunes_expired_nonces_in_bounded_steps(Backend::Sqlite);
    }

    #[test]
    fn prunes_expired_nonces_in_bounded_steps_postgres() {
        prunes_expired_nonces_in_bounded_steps(Backend::Postgres);
    }
}
