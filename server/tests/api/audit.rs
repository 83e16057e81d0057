//! The audit log as an outsider checks it: every record hash recomputed from the
//! API's output alone, by a verifier written in Python from docs/audit.md
//! (`server/tests/audit_recompute.py`, standard library only).

use reqwest::Method;
use serde_json::json;

use crate::agents::{active_agent, catalogue, decide, grant, owner_token, TestAgent};
use crate::both_backends;
use crate::helpers::{spawn_app, Backend, TestApp};

/// Signed actions to record: trust scores in their details are the floats that came
/// back changed in the last digit.
const ACTIONS: usize = 2400;

/// Records whose details hold awkward numbers and strings: attestation values at the
/// edges of the number format, comments and reasons with quotes, backslashes,
/// control characters, accents and characters outside the BMP.
async fn awkward_records(app: &TestApp, owner: &str, agent: &TestAgent) {
    let values = [
        1e-7,
        0.000001,
        0.1,
        0.30000000000000004,
        -0.5,
        1.0,
        0.0,
        -0.0,
        0.123_456_789_012_345_68,
        -1.0,
    ];
    for (i, value) in values.into_iter().enumerate() {
        let response = app
            .with(
                Method::POST,
                &format!("/api/v1/agents/{}/trust/attestations", agent.id),
                owner,
            )
            .json(&json!({
                "value": value,
                "comment": format!("check {i}: \"quoted\", back\\slash, tab\there, new\nline, café, 😀")
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "attestation {value}");
    }
    let response = app
        .with(Method::PUT, "/api/v1/organization/trust-policy", owner)
        .json(&json!({
            "weights": {
                "verification": 0.3, "capability_violations": 0.2, "replays": 0.1,
                "bad_signatures": 0.1, "open_alerts": 0.1, "key_hygiene": 0.05,
                "agent_age": 0.05, "activity_anomaly": 0.05, "attestation": 0.05
            },
            "key_max_age_days": 90, "alert_below": 30, "suspend_below": 10
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    for (path, body) in [
        (
            "suspend",
            json!({"reason": "«suspicious» \\ \"review\" ⚠️"}),
        ),
        ("reactivate", json!({})),
    ] {
        let response = app
            .with(
                Method::POST,
                &format!("/api/v1/agents/{}/{path}", agent.id),
                owner,
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

async fn an_outsider_recomputes_every_record_hash_from_api_output(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    catalogue(&app, &owner, "email:send", 0).await;
    catalogue(&app, &owner, "files:read", 0).await;
    let mut agents = Vec::new();
    for i in 0..4 {
        let agent = active_agent(&app, &owner, &format!("agent-{i}")).await;
        grant(&app, &owner, &agent.id, "email:send", Some("*@example.com")).await;
        agents.push(agent);
    }
    awkward_records(&app, &owner, &agents[0]).await;

    // Allowed, out of scope and not granted decisions, 16 at a time.
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in 0..ACTIONS {
        let agent = &agents[i % agents.len()];
        let payload = match i % 10 {
            0 => agent.action("email:send", Some("someone@elsewhere.test")),
            1 => agent.action("files:read", Some("/etc/hosts")),
            _ => agent.action("email:send", Some("someone@example.com")),
        };
        pending.push(decide(&app, agent.sign(&payload)));
        if pending.len() == 16 {
            futures_util::StreamExt::next(&mut pending).await;
        }
    }
    while futures_util::StreamExt::next(&mut pending).await.is_some() {}

    // On a blocking thread: the server under test runs on this runtime.
    let (base, token) = (app.url(""), owner.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/audit_recompute.py"
            ))
            .arg(base)
            .arg(token)
            .output()
            .expect("python3 runs the outside verifier")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the outside verifier failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked: usize = stdout.trim().parse().unwrap();
    assert!(checked > ACTIONS, "every record was checked: {checked}");
}
both_backends!(an_outsider_recomputes_every_record_hash_from_api_output);
