//! What one verified action costs, part by part, with real parts: real Ed25519
//! signatures, real SQLite files in a temporary directory and, when it answers, a
//! fresh database on the PostgreSQL server at 127.0.0.1:5432.
//!
//! ```text
//! cargo bench -p agentid-server --bench hot_path -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Groups:
//! - `crypto`: `verify_strict` alone on one action envelope's signed bytes (the
//!   floor), the handler's CPU work per request with the stored key decoded (a key
//!   cache miss, less the read) and two of its parts (parsing; the key's decoding),
//!   the same with the key from the handler's `KeyCache`, `KeyRing::sign_receipt`, a
//!   raw Ed25519 signature of the same bytes for comparison, and cached handler +
//!   receipt together;
//! - `crypto` also times the handler's first steps one by one: `envelope_parse`,
//!   `signed_bytes_pae` (the DSSE pre-authentication encoding) and `payload_parse`;
//! - `parts/<backend>`: `decisions::consume_nonce` and `audit::append` alone, each
//!   in its own transaction (`.../autocommit`), and `HOT_PATH_PARTS_BATCH` (256) of
//!   them in one transaction (`nonce_consume/txn_256`, `audit_append_batch/256`);
//! - `decision/<backend>/in_flight/N`: the whole decision without HTTP (handler CPU
//!   on a real envelope with the key cached, the decision writer, the receipt),
//!   N in flight (`HOT_PATH_DECISION_IN_FLIGHT`, default `16,256`);
//! - `writer/<backend>`: the decision writer end to end (queue, batch transaction,
//!   commit, answer), as a closed loop of N submitters with unique nonces, one
//!   criterion iteration per decision; and the handler's agent-key lookup
//!   (`Database::run` with a point select).
//!
//! After criterion, in `--bench` mode, a summary runs each writer configuration for a
//! few seconds and prints decisions per second, batch sizes and submit latency
//! percentiles. Settings (environment):
//! - `HOT_PATH_BACKENDS`: comma-separated, from `sqlite-full,sqlite-normal,postgres`
//!   (the default is all three);
//! - `HOT_PATH_IN_FLIGHT`: submitters in flight, default `1,16,256,1024`;
//! - `HOT_PATH_AGENTS`: agents the decisions are spread over, default 16;
//! - `HOT_PATH_PG_URL`: an administrative PostgreSQL URL, default
//!   `postgres://postgres@127.0.0.1:5432/postgres` (skipped with a message when it
//!   does not answer; the benchmark database `agentid_b_<uuid>` is dropped after);
//! - `HOT_PATH_SUMMARY_SECS`: seconds per summary run, default 3, 0 to skip.
//!
//! `docs/performance.md` has the numbers and what they mean.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark whose set-up fails must stop there, saying why"
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentid_protocol::tokens::ReceiptClaims;
use agentid_protocol::{b64, ActionPayload, Envelope, ParsedEnvelope, PayloadType, PublicKey};
use agentid_server::accounts::{create_org_with_owner, AuditCtx};
use agentid_server::agents::{register, NewAgent};
use agentid_server::audit::{append, append_batch, ActorType, NewEvent, Outcome};
use agentid_server::capabilities::{
    create_capability, grant_capability, CapabilityName, Description, MinTrust, NewCapability,
    NewGrant, RiskLevel,
};
use agentid_server::clock::now_ms;
use agentid_server::config::{DatabaseConfig, DatabaseUrl, SqliteSync};
use agentid_server::db::{write_transaction, Database};
use agentid_server::decisions::{
    consume_nonce, CachedKey, Candidate, KeyCache, Writer, WriterSettings,
};
use agentid_server::error::ApiError;
use agentid_server::metrics::Metrics;
use agentid_server::schema::agents as agents_table;
use agentid_server::signing::KeyRing;
use criterion::{BenchmarkId, Criterion, Throughput};
use diesel::prelude::*;
use ed25519_dalek::{Signer, SigningKey};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

/// The server's public URL: issuer of receipts, audience of statements.
const AUDIENCE: &str = "https://agentid.bench.example";
const CAPABILITY: &str = "email:send";
const RESOURCE: &str = "mailto:bob@example.com";
const RESOURCE_PATTERN: &str = "mailto:*@example.com";
/// The server's defaults (`AGENTID_SIGNING_KEY_ROTATION`, `AGENTID_RECEIPT_TTL`).
const ROTATION_SECS: i64 = 604_800;
const RECEIPT_TTL_SECS: i64 = 2_592_000;

fn now_secs() -> i64 {
    now_ms() / 1000
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

// ---------------------------------------------------------------------------
// crypto: the per-request CPU work

/// One signed action as an agent sends it.
struct Sample {
    /// The request body: the envelope's JSON.
    body: Vec<u8>,
    /// The DSSE pre-authentication encoding the signature covers.
    pae: Vec<u8>,
    sig: [u8; 64],
    /// The agent's public key as the agents table stores it.
    public_b64: String,
    key: PublicKey,
}

fn sample() -> Sample {
    let signing = SigningKey::from_bytes(&[7u8; 32]);
    let arguments = br#"{"to":"bob@example.com","subject":"Quarterly report","body":"Attached."}"#;
    let payload = ActionPayload {
        agent_id: uuid::Uuid::new_v4().to_string(),
        action: CAPABILITY.to_owned(),
        resource: Some(RESOURCE.to_owned()),
        args_digest: Some(format!("sha256:{}", hex::encode(Sha256::digest(arguments)))),
        iat: now_secs(),
        nonce: b64::encode(uuid::Uuid::new_v4().as_bytes()),
        aud: AUDIENCE.to_owned(),
    };
    let envelope = Envelope::sign(PayloadType::Action, &payload.to_bytes(), &[&signing]);
    let body = envelope.to_json().into_bytes();
    let parsed = ParsedEnvelope::parse(&body).expect("the sample envelope parses");
    let key = PublicKey::from_bytes(signing.verifying_key().as_bytes()).expect("a valid key");
    Sample {
        pae: parsed.signed_bytes(),
        sig: parsed.signatures[0].sig,
        public_b64: key.to_b64url(),
        key,
        body,
    }
}

/// What `routes::actions::verify_action` computes before it touches the writer:
/// bounded parsing, payload type, payload, the stored key (decoded here every time,
/// as on a key-cache miss), strict verification, audience and freshness, and the
/// envelope digest.
fn handler_cpu(body: &[u8], public_b64: &str, now_secs: i64) -> (ActionPayload, String) {
    let envelope = ParsedEnvelope::parse(body).expect("a valid envelope");
    envelope
        .expect_type(PayloadType::Action)
        .expect("an action envelope");
    let payload = ActionPayload::parse(&envelope.payload).expect("a valid payload");
    let key = PublicKey::from_b64url(public_b64).expect("a valid stored key");
    envelope.verify(&key).expect("the signature verifies");
    assert!(
        payload.aud == AUDIENCE && payload.iat <= now_secs + 30 && payload.iat >= now_secs - 300
    );
    let digest = envelope.digest();
    (payload, digest)
}

/// [`handler_cpu`] with the key taken from the handler's cache, as
/// `routes::actions::verify_action` does when the statement names the cached key.
fn handler_cpu_cached(body: &[u8], cache: &KeyCache, now_secs: i64) -> (ActionPayload, String) {
    let envelope = ParsedEnvelope::parse(body).expect("a valid envelope");
    envelope
        .expect_type(PayloadType::Action)
        .expect("an action envelope");
    let payload = ActionPayload::parse(&envelope.payload).expect("a valid payload");
    let keyid = envelope
        .signatures
        .first()
        .map(|s| s.keyid.clone())
        .unwrap_or_default();
    let cached = cache
        .get(&payload.agent_id)
        .filter(|c| c.key_id == keyid)
        .expect("a cache hit");
    envelope
        .verify(&cached.key)
        .expect("the signature verifies");
    assert!(
        payload.aud == AUDIENCE && payload.iat <= now_secs + 30 && payload.iat >= now_secs - 300
    );
    let digest = envelope.digest();
    (payload, digest)
}

fn receipt_claims(payload: &ActionPayload, digest: String, now: i64) -> ReceiptClaims {
    ReceiptClaims {
        iss: AUDIENCE.to_owned(),
        sub: payload.agent_id.clone(),
        aud: AUDIENCE.to_owned(),
        iat: now,
        exp: now + RECEIPT_TTL_SECS,
        jti: uuid::Uuid::new_v4().to_string(),
        org_id: uuid::Uuid::new_v4().to_string(),
        allowed: true,
        reason: "allowed".to_owned(),
        capability: payload.action.clone(),
        resource: payload.resource.clone(),
        args_digest: payload.args_digest.clone(),
        envelope_sha256: digest,
        trust_score: Some(97.3),
        enforcement: "enforce".to_owned(),
        audit_seq: 123_456,
        audit_hash: hex::encode(Sha256::digest(b"previous record")),
    }
}

fn crypto(c: &mut Criterion) {
    let s = sample();
    let now = now_secs();
    let ring = KeyRing::new(
        &SecretString::from("hot-path-benchmark-secret-".repeat(2)),
        AUDIENCE,
        ROTATION_SECS,
        RECEIPT_TTL_SECS,
    );
    let (payload, digest) = handler_cpu(&s.body, &s.public_b64, now);
    let claims = receipt_claims(&payload, digest, now);
    let token = ring.sign_receipt(&claims, now).expect("a receipt");
    let server_key = SigningKey::from_bytes(&[9u8; 32]);
    let signing_input = token
        .rsplit_once('.')
        .expect("a compact JWS")
        .0
        .as_bytes()
        .to_vec();
    println!(
        "sample: envelope {} bytes, signed bytes {} bytes, receipt {} bytes",
        s.body.len(),
        s.pae.len(),
        token.len()
    );

    let mut group = c.benchmark_group("crypto");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_strict", |b| {
        b.iter(|| {
            s.key
                .verify(std::hint::black_box(&s.pae), std::hint::black_box(&s.sig))
                .expect("verifies")
        })
    });
    // The handler's first steps one by one: the bounded envelope parse, the DSSE
    // pre-authentication encoding of what was signed (the bytes verify_strict and
    // the digest read), and the action payload's parse.
    group.bench_function("envelope_parse", |b| {
        b.iter(|| ParsedEnvelope::parse(std::hint::black_box(&s.body)).expect("parses"))
    });
    let parsed = ParsedEnvelope::parse(&s.body).expect("parses");
    group.bench_function("signed_bytes_pae", |b| {
        b.iter(|| std::hint::black_box(&parsed).signed_bytes())
    });
    group.bench_function("payload_parse", |b| {
        b.iter(|| {
            ActionPayload::parse(std::hint::black_box(&parsed.payload)).expect("a valid payload")
        })
    });
    group.bench_function("handler_cpu", |b| {
        b.iter(|| handler_cpu(std::hint::black_box(&s.body), &s.public_b64, now))
    });
    // Two parts of handler_cpu, to show where its time beyond verify_strict goes.
    group.bench_function("handler_parse_only", |b| {
        b.iter(|| {
            let envelope = ParsedEnvelope::parse(std::hint::black_box(&s.body)).expect("parses");
            envelope
                .expect_type(PayloadType::Action)
                .expect("an action envelope");
            ActionPayload::parse(&envelope.payload).expect("a valid payload")
        })
    });
    group.bench_function("public_key_from_b64url", |b| {
        b.iter(|| PublicKey::from_b64url(std::hint::black_box(&s.public_b64)).expect("a key"))
    });
    group.bench_function("sign_receipt", |b| {
        b.iter(|| {
            ring.sign_receipt(std::hint::black_box(&claims), now)
                .expect("signs")
        })
    });
    group.bench_function("ed25519_sign_receipt_bytes", |b| {
        b.iter(|| server_key.sign(std::hint::black_box(&signing_input)))
    });
    // The handler as it runs once the agent's key is in its `KeyCache`.
    let cache = KeyCache::default();
    cache.put(
        &payload.agent_id,
        Arc::new(CachedKey {
            org_id: uuid::Uuid::new_v4().to_string(),
            key_id: s.key.thumbprint(),
            key: s.key.clone(),
        }),
    );
    group.bench_function("handler_cpu_cached_key", |b| {
        b.iter(|| handler_cpu_cached(std::hint::black_box(&s.body), &cache, now))
    });
    group.bench_function("handler_cpu_cached_key_plus_receipt", |b| {
        b.iter(|| {
            let (payload, digest) = handler_cpu_cached(std::hint::black_box(&s.body), &cache, now);
            let claims = receipt_claims(&payload, digest, now);
            ring.sign_receipt(&claims, now).expect("signs")
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// writer: the decision writer end to end

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    SqliteFull,
    SqliteNormal,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::SqliteFull => "sqlite-full",
            Backend::SqliteNormal => "sqlite-normal",
            Backend::Postgres => "postgres",
        }
    }
}

/// Removes what a benchmark database left behind.
enum Cleanup {
    Dir(PathBuf),
    Postgres { admin: String, name: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Postgres { admin, name } => {
                let dropped = diesel::PgConnection::establish(admin)
                    .map_err(|e| e.to_string())
                    .and_then(|mut conn| {
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut conn)
                            .map_err(|e| e.to_string())
                    });
                match dropped {
                    Ok(_) => println!("dropped benchmark database {name}"),
                    Err(e) => eprintln!("could not drop benchmark database {name}: {e}"),
                }
            }
        }
    }
}

/// What submitters share.
struct Shared {
    writer: Writer,
    org_id: String,
    /// `(agent id, key id)` of active agents holding a grant.
    agents: Vec<(String, String)>,
    run: [u8; 8],
    next: AtomicU64,
}

impl Shared {
    /// A candidate that passed the handler's checks, with a nonce never used before.
    fn candidate(&self) -> Candidate {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (agent_id, key_id) = &self.agents[(n % self.agents.len() as u64) as usize];
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.run);
        nonce[8..].copy_from_slice(&n.to_be_bytes());
        Candidate {
            org_id: self.org_id.clone(),
            agent_id: agent_id.clone(),
            key_id: key_id.clone(),
            pre: None,
            capability: CAPABILITY.to_owned(),
            resource: Some(RESOURCE.to_owned()),
            args_digest: Some(format!(
                "sha256:{}",
                hex::encode(Sha256::digest(n.to_be_bytes()))
            )),
            nonce: b64::encode(nonce),
            iat: now_secs(),
            envelope_sha256: hex::encode(Sha256::digest(nonce)),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
        }
    }
}

/// A database with an organization, agents, a capability and grants, and a
/// decision writer over it. Fields drop in order: the writer before the database
/// is removed.
struct WriterEnv {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    db: Database,
    metrics: Arc<Metrics>,
    _cleanup: Cleanup,
}

fn pg_admin_url() -> String {
    env_or(
        "HOT_PATH_PG_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

fn postgres_reachable() -> bool {
    match diesel::PgConnection::establish(&pg_admin_url()) {
        Ok(_) => true,
        Err(e) => {
            println!(
                "PostgreSQL at {} is not reachable ({e}); skipping the postgres writer benchmarks",
                pg_admin_url()
            );
            false
        }
    }
}

fn writer_env(backend: Backend, agents: usize) -> WriterEnv {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (url, sync, cleanup) = match backend {
        Backend::SqliteFull | Backend::SqliteNormal => {
            let dir = std::env::temp_dir().join(format!("agentid-bench-{id}"));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            let sync = if backend == Backend::SqliteFull {
                SqliteSync::Full
            } else {
                SqliteSync::Normal
            };
            (
                DatabaseUrl::Sqlite(dir.join("agentid.db")),
                sync,
                Cleanup::Dir(dir),
            )
        }
        Backend::Postgres => {
            let admin = pg_admin_url();
            let name = format!("agentid_b_{id}");
            let mut conn =
                diesel::PgConnection::establish(&admin).expect("PostgreSQL answered a moment ago");
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .expect("CREATE DATABASE");
            // Same server and options (`?sslmode=...`), another database.
            let (path, query) = admin.split_once('?').unwrap_or((&admin, ""));
            let (base, _) = path.rsplit_once('/').expect("a URL with a database");
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            (
                DatabaseUrl::Postgres(SecretString::from(format!("{base}/{name}{query}"))),
                SqliteSync::Full,
                Cleanup::Postgres { admin, name },
            )
        }
    };
    let db = Database::connect(&DatabaseConfig {
        url,
        pool_size: 16,
        pool_timeout: Duration::from_secs(5),
        sqlite_busy_timeout: Duration::from_secs(5),
        sqlite_synchronous: sync,
    })
    .expect("the pool");
    db.migrate().expect("migrations");
    let (org_id, agents) = populate(&db, agents);
    let metrics = Metrics::new();
    let writer = Writer::start(
        db.clone(),
        WriterSettings {
            max_age_secs: 300,
            max_skew_secs: 30,
        },
        metrics.clone(),
    )
    .expect("the writer thread");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    WriterEnv {
        rt,
        shared: Arc::new(Shared {
            writer,
            org_id,
            agents,
            run: *uuid::Uuid::new_v4()
                .as_bytes()
                .first_chunk::<8>()
                .expect("16 bytes"),
            next: AtomicU64::new(0),
        }),
        db,
        metrics,
        _cleanup: cleanup,
    }
}

/// One organization with its owner, the capability, and `count` active agents each
/// granted it on `mailto:*@example.com`.
fn populate(db: &Database, count: usize) -> (String, Vec<(String, String)>) {
    let now = now_ms();
    let mut conn = db.get().expect("a connection");
    write_transaction(&mut conn, |conn| -> Result<_, ApiError> {
        let (org, owner) = create_org_with_owner(
            conn,
            "Benchmark Inc",
            "owner@bench.example",
            "$2b$04$not.a.real.hash.only.a.placeholder.for.the.bench",
            now,
        )?;
        let ctx = AuditCtx {
            actor_type: ActorType::User,
            actor_id: Some(&owner.id),
            request_id: None,
            now,
        };
        create_capability(
            conn,
            &org.id,
            &NewCapability {
                name: CapabilityName::parse(CAPABILITY)?,
                description: Description::parse("Send email")?,
                risk_level: RiskLevel::Medium,
                min_trust: MinTrust::parse(40)?,
            },
            &owner.id,
            &ctx,
        )?;
        let grant = NewGrant::parse(CAPABILITY, Some(RESOURCE_PATTERN), None, now)?;
        let mut agents = Vec::with_capacity(count);
        for i in 0..count {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            let new = NewAgent::validate(
                &format!("bench-agent-{i}"),
                None,
                &b64::encode(key.verifying_key().as_bytes()),
                vec![CAPABILITY.to_owned()],
                None,
            )?;
            let agent = register(conn, &org.id, &owner.id, &new, &ctx)?;
            grant_capability(conn, &org.id, &agent.id, &grant, &owner.id, &ctx)?;
            diesel::update(agents_table::table.filter(agents_table::id.eq(&agent.id)))
                .set(agents_table::status.eq("active"))
                .execute(conn)?;
            agents.push((agent.id, agent.key_id));
        }
        Ok((org.id, agents))
    })
    .expect("the organization, capability, agents and grants")
}

/// How long a closed loop runs.
#[derive(Clone, Copy)]
enum Budget {
    Decisions(u64),
    Until(Instant),
}

/// `in_flight` submitters, each submitting its next decision as soon as the last one
/// is answered, until the budget is spent. Returns the elapsed time, how many
/// decisions were recorded and (if asked) each submission's latency.
fn closed_loop(
    env: &WriterEnv,
    in_flight: usize,
    budget: Budget,
    latencies: bool,
) -> (Duration, u64, Vec<Duration>) {
    env.rt.block_on(async {
        let tasks = match budget {
            Budget::Decisions(total) => (in_flight as u64).min(total).max(1),
            Budget::Until(_) => in_flight as u64,
        };
        let start = Instant::now();
        let mut handles = Vec::with_capacity(tasks as usize);
        for t in 0..tasks {
            let shared = env.shared.clone();
            let quota = match budget {
                Budget::Decisions(total) => total / tasks + u64::from(t < total % tasks),
                Budget::Until(_) => u64::MAX,
            };
            handles.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut done = 0u64;
                while done < quota {
                    if let Budget::Until(deadline) = budget {
                        if Instant::now() >= deadline {
                            break;
                        }
                    }
                    let candidate = shared.candidate();
                    let sent = Instant::now();
                    let recorded = shared
                        .writer
                        .submit(candidate)
                        .await
                        .expect("the decision is recorded");
                    if latencies {
                        seen.push(sent.elapsed());
                    }
                    assert!(
                        recorded.allowed,
                        "the benchmark measures allowed decisions, got {:?}",
                        recorded.reason
                    );
                    done += 1;
                }
                (done, seen)
            }));
        }
        let mut total = 0;
        let mut all = Vec::new();
        for handle in handles {
            let (done, seen) = handle.await.expect("a submitter");
            total += done;
            all.extend(seen);
        }
        (start.elapsed(), total, all)
    })
}

/// The decision writer's batch-size histogram: (sum, count, cumulative buckets).
#[derive(Debug, Clone, Default)]
struct Batches {
    sum: f64,
    count: u64,
    buckets: Vec<(String, u64)>,
}

impl Batches {
    fn read(env: &WriterEnv) -> Batches {
        let mut out = Batches::default();
        for line in env.metrics.render(&env.db).lines() {
            let Some(rest) = line.strip_prefix("agentid_decision_batch_size_") else {
                continue;
            };
            let Some((key, value)) = rest.rsplit_once(' ') else {
                continue;
            };
            if key == "sum" {
                out.sum = value.parse().unwrap_or(0.0);
            } else if key == "count" {
                out.count = value.parse().unwrap_or(0);
            } else if let Some(le) = key
                .strip_prefix("bucket{le=\"")
                .and_then(|k| k.strip_suffix("\"}"))
            {
                out.buckets
                    .push((le.to_owned(), value.parse().unwrap_or(0)));
            }
        }
        out
    }

    /// The batches since `before`, as a line.
    fn since(&self, before: &Batches) -> String {
        let count = self.count.saturating_sub(before.count);
        let decisions = self.sum - before.sum;
        if count == 0 {
            return "no batches".to_owned();
        }
        let mut previous = 0;
        let mut shape = Vec::new();
        for (i, (le, cumulative)) in self.buckets.iter().enumerate() {
            let then = before.buckets.get(i).map_or(0, |b| b.1);
            let now = cumulative.saturating_sub(then);
            if now > previous {
                shape.push(format!(
                    "<={}: {}",
                    le.trim_end_matches(".0"),
                    now - previous
                ));
            }
            previous = now;
        }
        format!(
            "{count} batches, {decisions:.0} decisions, mean {:.1} per batch [{}]",
            decisions / count as f64,
            shape.join(", ")
        )
    }
}

fn backends() -> Vec<Backend> {
    env_or("HOT_PATH_BACKENDS", "sqlite-full,sqlite-normal,postgres")
        .split(',')
        .map(str::trim)
        .filter_map(|name| {
            let backend = [
                Backend::SqliteFull,
                Backend::SqliteNormal,
                Backend::Postgres,
            ]
            .into_iter()
            .find(|b| b.name() == name);
            if backend.is_none() {
                eprintln!("HOT_PATH_BACKENDS: unknown backend `{name}` ignored");
            }
            backend
        })
        .collect()
}

fn in_flight_levels() -> Vec<usize> {
    env_or("HOT_PATH_IN_FLIGHT", "1,16,256,1024")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n >= 1)
        .collect()
}

fn writers(c: &mut Criterion) -> Vec<(Backend, WriterEnv)> {
    let agents: usize = env_or("HOT_PATH_AGENTS", "16").parse().unwrap_or(16).max(1);
    let levels = in_flight_levels();
    let mut used = Vec::new();
    for backend in backends() {
        if backend == Backend::Postgres && !postgres_reachable() {
            continue;
        }
        // Created on first use, so a filter that matches nothing here costs nothing.
        let mut env: Option<WriterEnv> = None;
        let mut group = c.benchmark_group(format!("writer/{}", backend.name()));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        for &in_flight in &levels {
            // Criterion calls the routine once per sample: count batches across all.
            let mut before: Option<Batches> = None;
            group.bench_function(BenchmarkId::new("in_flight", in_flight), |b| {
                let env = env.get_or_insert_with(|| writer_env(backend, agents));
                before.get_or_insert_with(|| Batches::read(env));
                b.iter_custom(|iters| {
                    let (elapsed, done, _) =
                        closed_loop(env, in_flight, Budget::Decisions(iters), false);
                    assert_eq!(done, iters);
                    elapsed
                });
            });
            if let (Some(env), Some(before)) = (&env, &before) {
                println!(
                    "writer/{}/in_flight/{in_flight} (warm-up and samples): {}",
                    backend.name(),
                    Batches::read(env).since(before)
                );
            }
        }
        group.bench_function("key_lookup", |b| {
            let env = env.get_or_insert_with(|| writer_env(backend, agents));
            let agent_id = env.shared.agents[0].0.clone();
            b.iter(|| {
                let id = agent_id.clone();
                env.rt
                    .block_on(env.db.run(move |conn| {
                        agents_table::table
                            .filter(agents_table::id.eq(&id))
                            .select((
                                agents_table::org_id,
                                agents_table::key_id,
                                agents_table::public_key,
                            ))
                            .first::<(String, String, String)>(conn)
                            .map_err(ApiError::from)
                    }))
                    .expect("the agent")
            })
        });
        group.finish();
        if let Some(env) = env {
            used.push((backend, env));
        }
    }
    used
}

// ---------------------------------------------------------------------------
// parts: the writer's statements one by one, and the whole decision without HTTP

fn parts_batch() -> usize {
    env_or("HOT_PATH_PARTS_BATCH", "256")
        .parse()
        .unwrap_or(256)
        .max(1)
}

/// A nonce no earlier call of this process produced.
fn fresh_nonce(counter: &AtomicU64, run: &[u8; 8]) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(run);
    nonce[8..].copy_from_slice(&n.to_be_bytes());
    b64::encode(nonce)
}

/// `decisions::consume_nonce` and `audit::append` / `append_batch` alone, on the
/// benchmark's database: each in its own write transaction ("autocommit": one
/// commit, one fsync on SQLite FULL, per item) and `HOT_PATH_PARTS_BATCH` (256) of
/// them in one transaction, as the writer's group commit does (criterion's
/// throughput is per item).
fn parts(c: &mut Criterion) {
    let batch = parts_batch();
    for backend in backends() {
        if backend == Backend::Postgres && !postgres_reachable() {
            continue;
        }
        let mut env: Option<WriterEnv> = None;
        let counter = AtomicU64::new(0);
        let run: [u8; 8] = *uuid::Uuid::new_v4()
            .as_bytes()
            .first_chunk::<8>()
            .expect("16 bytes");
        let mut group = c.benchmark_group(format!("parts/{}", backend.name()));
        group.sample_size(10);
        group.throughput(Throughput::Elements(1));
        group.bench_function("nonce_consume/autocommit", |b| {
            let env = env.get_or_insert_with(|| writer_env(backend, 4));
            let agent = env.shared.agents[0].0.clone();
            let mut conn = env.db.get().expect("a connection");
            b.iter(|| {
                let nonce = fresh_nonce(&counter, &run);
                let fresh = write_transaction(&mut conn, |conn| {
                    consume_nonce(conn, &agent, &nonce, now_secs())
                })
                .expect("the insert");
                assert!(fresh);
            })
        });
        group.bench_function("audit_append/autocommit", |b| {
            let env = env.get_or_insert_with(|| writer_env(backend, 4));
            let (org, agent) = (env.shared.org_id.clone(), env.shared.agents[0].0.clone());
            let mut conn = env.db.get().expect("a connection");
            b.iter(|| {
                write_transaction(&mut conn, |conn| {
                    append(conn, &org, &decision_event(&agent), now_ms())
                })
                .expect("the append")
            })
        });
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("nonce_consume/txn_{batch}"), |b| {
            let env = env.get_or_insert_with(|| writer_env(backend, 4));
            let agent = env.shared.agents[0].0.clone();
            let mut conn = env.db.get().expect("a connection");
            b.iter(|| {
                let nonces: Vec<String> = (0..batch).map(|_| fresh_nonce(&counter, &run)).collect();
                write_transaction(&mut conn, |conn| {
                    for nonce in &nonces {
                        assert!(consume_nonce(conn, &agent, nonce, now_secs())?);
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .expect("the inserts")
            })
        });
        group.bench_function(format!("audit_append_batch/{batch}"), |b| {
            let env = env.get_or_insert_with(|| writer_env(backend, 4));
            let (org, agent) = (env.shared.org_id.clone(), env.shared.agents[0].0.clone());
            let events: Vec<_> = (0..batch).map(|_| decision_event(&agent)).collect();
            let mut conn = env.db.get().expect("a connection");
            b.iter(|| {
                write_transaction(&mut conn, |conn| {
                    append_batch(conn, &org, &events, now_ms())
                })
                .expect("the append")
            })
        });
        group.finish();
    }
}

/// An audit event shaped like the writer's record of an allowed action.
fn decision_event(agent: &str) -> NewEvent<'_> {
    NewEvent {
        actor_type: ActorType::Agent,
        actor_id: Some(agent),
        action: "action.allowed",
        target_type: Some("capability"),
        target_id: Some(CAPABILITY),
        outcome: Outcome::Success,
        details: serde_json::json!({
            "capability": CAPABILITY,
            "resource": RESOURCE,
            "reason": "allowed",
            "nonce": "bUvRSoeBePh2ULd5zAqi_1g",
            "envelope_sha256": "9f3c1d2e4b5a6978e1f2a3b4c5d6e7f80912a3b4c5d6e7f8091a2b3c4d5e6f70",
        }),
        request_id: None,
    }
}

/// The whole decision without HTTP, as `routes::actions::verify_action` does it on a
/// key-cache hit: the handler's CPU work on a real envelope (parse, strict verify,
/// checks, digest), the decision writer (queue, batch transaction, commit) with a
/// candidate carrying a fresh nonce, and the receipt's signature; N requests in
/// flight on 2 tokio workers (`HOT_PATH_DECISION_IN_FLIGHT`, default `16,256`).
/// One criterion iteration = one decision.
fn whole_decision(c: &mut Criterion) {
    let levels: Vec<usize> = env_or("HOT_PATH_DECISION_IN_FLIGHT", "16,256")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n >= 1)
        .collect();
    let s = Arc::new(sample());
    let ring = Arc::new(KeyRing::new(
        &SecretString::from("hot-path-benchmark-secret-".repeat(2)),
        AUDIENCE,
        ROTATION_SECS,
        RECEIPT_TTL_SECS,
    ));
    for backend in backends() {
        if backend == Backend::Postgres && !postgres_reachable() {
            continue;
        }
        let mut env: Option<WriterEnv> = None;
        let mut group = c.benchmark_group(format!("decision/{}", backend.name()));
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        for &in_flight in &levels {
            group.bench_function(BenchmarkId::new("in_flight", in_flight), |b| {
                let env = env.get_or_insert_with(|| writer_env(backend, 16));
                let cache = Arc::new(KeyCache::default());
                let payload =
                    ActionPayload::parse(&ParsedEnvelope::parse(&s.body).expect("parses").payload)
                        .expect("a payload");
                cache.put(
                    &payload.agent_id,
                    Arc::new(CachedKey {
                        org_id: env.shared.org_id.clone(),
                        key_id: s.key.thumbprint(),
                        key: s.key.clone(),
                    }),
                );
                b.iter_custom(|iters| {
                    env.rt.block_on(async {
                        let tasks = (in_flight as u64).min(iters).max(1);
                        let start = Instant::now();
                        let mut handles = Vec::new();
                        for t in 0..tasks {
                            let quota = iters / tasks + u64::from(t < iters % tasks);
                            let (shared, s, cache, ring) =
                                (env.shared.clone(), s.clone(), cache.clone(), ring.clone());
                            handles.push(tokio::spawn(async move {
                                for _ in 0..quota {
                                    let now = now_secs();
                                    let (payload, digest) =
                                        handler_cpu_cached(&s.body, &cache, now);
                                    let mut candidate = shared.candidate();
                                    candidate.envelope_sha256 = digest.clone();
                                    let recorded = shared
                                        .writer
                                        .submit(candidate)
                                        .await
                                        .expect("the decision is recorded");
                                    assert!(recorded.allowed);
                                    let claims = receipt_claims(&payload, digest, now);
                                    std::hint::black_box(
                                        ring.sign_receipt(&claims, now).expect("signs"),
                                    );
                                }
                            }));
                        }
                        for h in handles {
                            h.await.expect("a submitter");
                        }
                        start.elapsed()
                    })
                });
            });
        }
        group.finish();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Fixed-duration runs with latency percentiles, printed as a table.
fn summary(envs: &[(Backend, WriterEnv)]) {
    let secs: u64 = env_or("HOT_PATH_SUMMARY_SECS", "3").parse().unwrap_or(3);
    if secs == 0 || envs.is_empty() {
        return;
    }
    println!();
    println!(
        "decision writer, closed loop, {secs} s per row (submit latency = queue + batch + commit):"
    );
    println!(
        "| backend | in flight | decisions/s | mean batch | p50 | p90 | p99 | max | batches |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for (backend, env) in envs {
        for in_flight in in_flight_levels() {
            let before = Batches::read(env);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let (elapsed, done, mut latencies) =
                closed_loop(env, in_flight, Budget::Until(deadline), true);
            let after = Batches::read(env);
            latencies.sort_unstable();
            let batches = after.count.saturating_sub(before.count).max(1);
            println!(
                "| {} | {in_flight} | {:.0} | {:.1} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {} |",
                backend.name(),
                done as f64 / elapsed.as_secs_f64(),
                done as f64 / batches as f64,
                percentile(&latencies, 50.0),
                percentile(&latencies, 90.0),
                percentile(&latencies, 99.0),
                latencies.last().copied().unwrap_or_default(),
                after.since(&before),
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    crypto(&mut c);
    let envs = writers(&mut c);
    parts(&mut c);
    whole_decision(&mut c);
    if std::env::args().any(|a| a == "--bench") {
        summary(&envs);
    }
    c.final_summary();
    drop(envs);
}
