//! Management writes racing the decision writer. Every write path takes its locks in
//! one documented order (docs/hot-path.md, "Lock order"), so an administrator can
//! suspend, reactivate, rotate, re-grant, re-score and revoke an agent while that
//! agent's actions saturate the server (on PostgreSQL: a second server on the same
//! database), every call succeeding on its first attempt, no request answered 5xx,
//! and the audit chain reading in the order things took effect.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use agentid_protocol::{ActionPayload, Envelope, PayloadType};
use ed25519_dalek::SigningKey;
use reqwest::Method;
use serde_json::{json, Value};

use crate::agents::{
    active_agent, catalogue, get_json, grant, new_key, new_nonce, now_secs, owner_token, rotation,
    set_trust_policy, TestAgent,
};
use crate::both_backends;
use crate::helpers::{spawn_app, Backend, TestApp};

/// Concurrent clients submitting the agent's actions.
const CLIENTS: usize = 24;
/// The longest a management call may take while the actions run.
const MANAGEMENT_BUDGET: Duration = Duration::from_secs(1);

/// What the action clients saw.
#[derive(Default)]
struct Load {
    decisions: AtomicU64,
    allowed: AtomicU64,
    /// Answers that were neither a decision (200) nor a refusal before deciding (4xx).
    server_errors: AtomicU64,
}

/// Submits the agent's actions from `CLIENTS` tasks to `target` until `stop`, always
/// signing with the agent's current key.
fn saturate(
    target: String,
    agent_id: String,
    audience: String,
    key: Arc<RwLock<SigningKey>>,
    stop: Arc<AtomicBool>,
    load: Arc<Load>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|_| {
            let (target, agent_id, audience) = (target.clone(), agent_id.clone(), audience.clone());
            let (key, stop, load) = (key.clone(), stop.clone(), load.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let payload = ActionPayload {
                        agent_id: agent_id.clone(),
                        action: "email:send".to_owned(),
                        resource: Some("someone@example.com".to_owned()),
                        args_digest: None,
                        iat: now_secs(),
                        nonce: new_nonce(),
                        aud: audience.clone(),
                    };
                    let signer = key.read().unwrap().clone();
                    let envelope =
                        Envelope::sign(PayloadType::Action, &payload.to_bytes(), &[&signer])
                            .to_json();
                    let response = http
                        .post(&target)
                        .header("content-type", "application/json")
                        .body(envelope)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    if status == 200 {
                        let decision: Value = response.json().await.unwrap();
                        load.decisions.fetch_add(1, Ordering::Relaxed);
                        if decision["allowed"] == true {
                            load.allowed.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if status >= 500 {
                        load.server_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

/// Sends one management call (with `body` unless it is null) and requires it to
/// succeed on its first attempt within the budget; returns the answer's body.
async fn manage(app: &TestApp, credential: &str, method: Method, path: &str, body: Value) -> Value {
    let started = Instant::now();
    let mut request = app.with(method.clone(), path, credential);
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let elapsed = started.elapsed();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(
        status.is_success(),
        "{method} {path} answered {status} on its first attempt: {text}"
    );
    assert!(
        elapsed < MANAGEMENT_BUDGET,
        "{method} {path} took {elapsed:?} under action load"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Every record of the organization's chain, in chain order.
async fn whole_chain(app: &TestApp, owner: &str) -> Vec<Value> {
    let mut records = Vec::new();
    let mut after = 0;
    loop {
        let page = get_json(
            app,
            &format!("/api/v1/audit?after={after}&limit=500"),
            owner,
        )
        .await;
        let batch = page["records"].as_array().unwrap().clone();
        if batch.is_empty() {
            return records;
        }
        after = batch.last().unwrap()["seq"].as_i64().unwrap();
        records.extend(batch);
    }
}

/// Walks the chain: after an agent's suspension or revocation record, no allowed
/// decision of that agent may follow until a reactivation record.
fn assert_no_allowed_decision_while_blocked(records: &[Value], agent_id: &str) -> usize {
    let mut blocked_by: Option<i64> = None;
    let mut checked = 0;
    for record in records {
        let seq = record["seq"].as_i64().unwrap();
        let action = record["action"].as_str().unwrap();
        let about_agent = record["target_id"] == agent_id;
        match action {
            "agent.suspended" | "agent.revoked" if about_agent => blocked_by = Some(seq),
            "agent.reactivated" if about_agent => blocked_by = None,
            "action.allowed" if record["actor_id"] == agent_id => {
                checked += 1;
                if let Some(since) = blocked_by {
                    panic!(
                        "record {seq} allows an action of {agent_id} after record {since} \
                         suspended or revoked it"
                    );
                }
            }
            _ => {}
        }
    }
    checked
}

async fn management_succeeds_at_once_while_the_agent_is_deciding(backend: Backend) {
    let app = spawn_app(backend).await;
    // PostgreSQL: the actions go to a second server on the same database.
    let replica = match backend {
        Backend::Postgres => Some(app.spawn_replica().await),
        Backend::Sqlite => None,
    };
    let target = match &replica {
        Some(r) => r.url("/api/v1/actions/verify"),
        None => app.url("/api/v1/actions/verify"),
    };
    let owner = owner_token(&app, "Acme").await;
    catalogue(&app, &owner, "email:send", 0).await;
    catalogue(&app, &owner, "files:read", 0).await;
    let agent = active_agent(&app, &owner, "busy").await;
    grant(&app, &owner, &agent.id, "email:send", Some("*@example.com")).await;

    let key = Arc::new(RwLock::new(agent.key.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients = saturate(
        target,
        agent.id.clone(),
        agent.audience.clone(),
        key.clone(),
        stop.clone(),
        load.clone(),
    );
    // Let the load build up before the first management call.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let path = |tail: &str| format!("/api/v1/agents/{}/{tail}", agent.id);
    let mut current = TestAgent {
        id: agent.id.clone(),
        key: agent.key.clone(),
        audience: agent.audience.clone(),
    };
    for round in 0..3 {
        manage(
            &app,
            &owner,
            Method::POST,
            &path("suspend"),
            json!({"reason": format!("round {round}")}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        manage(&app, &owner, Method::POST, &path("reactivate"), json!({})).await;
        tokio::time::sleep(Duration::from_millis(150)).await;

        // Rotation is signed by the agent's old and new keys; the clients switch at once.
        let new = new_key();
        let started = Instant::now();
        let response = app
            .post_raw(
                &path("keys/rotate"),
                "application/json",
                rotation(&current, &new, &[&current.key, &new]),
            )
            .await;
        assert_eq!(
            response.status(),
            200,
            "rotation: {}",
            response.text().await.unwrap()
        );
        assert!(
            started.elapsed() < MANAGEMENT_BUDGET,
            "rotation took {:?}",
            started.elapsed()
        );
        *key.write().unwrap() = new.clone();
        current.key = new;
        tokio::time::sleep(Duration::from_millis(150)).await;

        let granted = manage(
            &app,
            &owner,
            Method::POST,
            &path("grants"),
            json!({"capability": "files:read", "resource_pattern": null}),
        )
        .await;
        let grant_id = granted["id"].as_str().unwrap();
        manage(
            &app,
            &owner,
            Method::DELETE,
            &path(&format!("grants/{grant_id}")),
            Value::Null,
        )
        .await;
        manage(
            &app,
            &owner,
            Method::POST,
            &path("trust/attestations"),
            json!({"value": 0.5, "comment": format!("reviewed in round {round}")}),
        )
        .await;
        set_trust_policy(
            &app,
            &owner,
            json!({"weights": null, "key_max_age_days": 90 + round, "alert_below": 60, "suspend_below": 40}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    manage(
        &app,
        &owner,
        Method::POST,
        &path("revoke"),
        json!({"reason": "done"}),
    )
    .await;
    // Actions keep coming after the revocation for a moment: all must be denied.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }

    let decisions = load.decisions.load(Ordering::Relaxed);
    assert_eq!(
        load.server_errors.load(Ordering::Relaxed),
        0,
        "no action answered 5xx"
    );
    assert!(
        decisions >= 200,
        "the agent was deciding throughout: {decisions} decisions"
    );
    assert!(
        load.allowed.load(Ordering::Relaxed) > 0,
        "some actions were allowed"
    );

    let report = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], true, "{report}");
    let records = whole_chain(&app, &owner).await;
    let allowed = assert_no_allowed_decision_while_blocked(&records, &agent.id);
    assert!(allowed > 0, "the chain holds allowed decisions to check");
}
both_backends!(management_succeeds_at_once_while_the_agent_is_deciding);
