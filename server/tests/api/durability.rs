//! Acknowledged writes survive kill -9; secrets never reach the log.

use std::time::Duration;

use reqwest::Method;

use crate::helpers::{create_owner, Backend, ServerProcess, TestDb, OWNER_PW, USER_PW};

fn server_vars(db: &TestDb) -> Vec<(String, String)> {
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".into(), "127.0.0.1:0".into()));
    // A restart binds another free port; the public URL (the audience agents sign
    // for) stays the same, as it does in a real deployment.
    vars.push(("AGENTID_PUBLIC_URL".into(), "http://agentid.test".into()));
    vars.push(("AGENTID_BCRYPT_COST".into(), "4".into()));
    vars.push(("AGENTID_LOG".into(), "debug".into()));
    vars
}

async fn login(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> serde_json::Value {
    let response = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn acknowledged_writes_survive_kill_9(backend: Backend) {
    let db = TestDb::new(backend);
    let vars = server_vars(&db);
    create_owner(&vars, "Acme", "owner@example.com", OWNER_PW);
    let http = reqwest::Client::new();
    let server = ServerProcess::start(&db.dir, &vars);
    let tokens = login(&http, &server.address, "owner@example.com", OWNER_PW).await;
    let access = tokens["access_token"].as_str().unwrap();
    let mut created = Vec::new();
    for i in 0..5 {
        let email = format!("user{i}@example.com");
        let response = http
            .post(format!("{}/api/v1/users", server.address))
            .bearer_auth(access)
            .json(&serde_json::json!({ "email": email, "password": USER_PW, "role": "viewer" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        created.push(email);
    }
    server.signal("KILL");
    drop(server);

    let server = ServerProcess::start(&db.dir, &vars);
    for email in &created {
        login(&http, &server.address, email, USER_PW).await;
    }
    // The refresh token issued before the crash still rotates once.
    let refreshed = http
        .post(format!("{}/api/v1/auth/refresh", server.address))
        .json(&serde_json::json!({ "refresh_token": tokens["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let access = refreshed.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let report: serde_json::Value = http
        .request(
            Method::GET,
            format!("{}/api/v1/audit/verify", server.address),
        )
        .bearer_auth(&access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["valid"], true, "{report}");
    assert!(report["records"].as_i64().unwrap() >= 8, "{report}");
}
crate::both_backends!(acknowledged_writes_survive_kill_9);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line() {
    let db = TestDb::new(Backend::Sqlite);
    let vars = server_vars(&db);
    create_owner(&vars, "Acme", "owner@example.com", OWNER_PW);
    let http = reqwest::Client::new();
    let mut server = ServerProcess::start(&db.dir, &vars);
    let base = server.address.clone();
    let mut secrets = vec![
        OWNER_PW.to_owned(),
        USER_PW.to_owned(),
        "wrong password guess".to_owned(),
    ];

    let bad = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({ "email": "owner@example.com", "password": "wrong password guess" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let tokens = login(&http, &base, "owner@example.com", OWNER_PW).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    secrets.push(tokens["refresh_token"].as_str().unwrap().to_owned());
    let refreshed: serde_json::Value = http
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&serde_json::json!({ "refresh_token": tokens["refresh_token"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.push(refreshed["access_token"].as_str().unwrap().to_owned());
    secrets.push(refreshed["refresh_token"].as_str().unwrap().to_owned());
    let user = http
        .post(format!("{base}/api/v1/users"))
        .bearer_auth(&access)
        .json(&serde_json::json!({ "email": "dev@example.com", "password": USER_PW, "role": "developer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 201);
    let key: serde_json::Value = http
        .post(format!("{base}/api/v1/api-keys"))
        .bearer_auth(&access)
        .json(&serde_json::json!({ "name": "ci", "permissions": ["agents:read"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    secrets.push(key.clone());
    assert_eq!(
        http.get(format!("{base}/api/v1/me"))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/api/v1/me"))
            .bearer_auth("agentid_sk_notarealkey")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Also the password change path.
    let changed = http
        .post(format!("{base}/api/v1/auth/password"))
        .bearer_auth(&access)
        .json(&serde_json::json!({ "current_password": OWNER_PW, "new_password": "the newest passphrase 42" }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    secrets.push("the newest passphrase 42".to_owned());

    // An agent's access token and a decision receipt are bearer material too.
    let agent_key = crate::agents::new_key();
    let (status, agent) = post(
        &http,
        format!("{base}/api/v1/agents"),
        Some(&access_after_password_change(&http, &base).await),
        serde_json::json!({"name": "log-check", "public_key": crate::agents::public_b64(&agent_key)})
            .to_string(),
    )
    .await;
    assert_eq!(status, 201);
    let id = agent["id"].as_str().unwrap().to_owned();
    let (_, challenge) = post(
        &http,
        format!("{base}/api/v1/agents/{id}/challenge"),
        None,
        String::new(),
    )
    .await;
    let (status, verified) = post(
        &http,
        format!("{base}/api/v1/agents/{id}/verify"),
        None,
        crate::agents::answer(&id, &challenge, &agent_key),
    )
    .await;
    assert_eq!(status, 200);
    secrets.push(verified["access_token"].as_str().unwrap().to_owned());

    server.signal("TERM");
    server.wait(Duration::from_secs(30));
    let log = server.log();
    assert!(log.len() > 10, "the server logged its requests");
    for line in &log {
        for secret in &secrets {
            assert!(
                !line.contains(secret.as_str()),
                "a secret reached the log: {line}"
            );
        }
    }
}

/// POSTs JSON (or a raw envelope) and returns status and body.
async fn post(
    http: &reqwest::Client,
    url: String,
    bearer: Option<&str>,
    body: String,
) -> (u16, serde_json::Value) {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn acknowledged_decisions_survive_kill_9(backend: Backend) {
    use crate::agents::{answer, new_key, public_b64, TestAgent};

    let db = TestDb::new(backend);
    let vars = server_vars(&db);
    create_owner(&vars, "Acme", "owner@example.com", OWNER_PW);
    let http = reqwest::Client::new();
    let server = ServerProcess::start(&db.dir, &vars);
    let base = server.address.clone();
    let tokens = login(&http, &base, "owner@example.com", OWNER_PW).await;
    let owner = tokens["access_token"].as_str().unwrap().to_owned();

    let (status, _) = post(
        &http,
        format!("{base}/api/v1/capabilities"),
        Some(&owner),
        serde_json::json!({"name": "files:read", "description": "read", "risk_level": "low", "min_trust": 0}).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    let key = new_key();
    let (status, agent) = post(
        &http,
        format!("{base}/api/v1/agents"),
        Some(&owner),
        serde_json::json!({"name": "crash-test", "public_key": public_b64(&key)}).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    let id = agent["id"].as_str().unwrap().to_owned();
    let (status, challenge) = post(
        &http,
        format!("{base}/api/v1/agents/{id}/challenge"),
        None,
        String::new(),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &http,
        format!("{base}/api/v1/agents/{id}/verify"),
        None,
        answer(&id, &challenge, &key),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &http,
        format!("{base}/api/v1/agents/{id}/grants"),
        Some(&owner),
        serde_json::json!({"capability": "files:read"}).to_string(),
    )
    .await;
    assert_eq!(status, 201);

    // Many decisions in flight at once (so batches form), then kill -9 right after
    // the last answer.
    let agent = TestAgent {
        id: id.clone(),
        key,
        audience: challenge["audience"].as_str().unwrap().to_owned(),
    };
    let envelopes: Vec<String> = (0..40)
        .map(|i| agent.sign(&agent.action("files:read", Some(&format!("/data/{i}")))))
        .collect();
    let mut tasks = Vec::new();
    for envelope in envelopes.clone() {
        let http = http.clone();
        let url = format!("{base}/api/v1/actions/verify");
        tasks.push(tokio::spawn(async move {
            post(&http, url, None, envelope).await
        }));
    }
    let mut decisions = Vec::new();
    for task in tasks {
        let (status, decision) = task.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(decision["allowed"], true, "{decision}");
        decisions.push(decision);
    }
    server.signal("KILL");
    drop(server);

    let server = ServerProcess::start(&db.dir, &vars);
    let base = server.address.clone();
    let tokens = login(&http, &base, "owner@example.com", OWNER_PW).await;
    let owner = tokens["access_token"].as_str().unwrap().to_owned();
    // Every acknowledged decision is in the chain, with its id and position.
    let page: serde_json::Value = http
        .get(format!(
            "{base}/api/v1/audit?agent_id={id}&action=action.allowed&limit=500"
        ))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: std::collections::HashMap<String, i64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["seq"].as_i64().unwrap(),
            )
        })
        .collect();
    for decision in &decisions {
        let id = decision["decision_id"].as_str().unwrap();
        assert_eq!(
            stored.get(id),
            decision["audit_seq"].as_i64().as_ref(),
            "{id}"
        );
    }
    // Their nonces stay consumed: replaying any of them is refused.
    for envelope in envelopes.iter().take(5) {
        let (status, decision) = post(
            &http,
            format!("{base}/api/v1/actions/verify"),
            None,
            envelope.clone(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(decision["reason"], "replayed_nonce");
    }
    let report: serde_json::Value = http
        .get(format!("{base}/api/v1/audit/verify"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["valid"], true, "{report}");
}
crate::both_backends!(acknowledged_decisions_survive_kill_9);

/// Logs in as the owner with the password the no-secret test changes to.
async fn access_after_password_change(http: &reqwest::Client, base: &str) -> String {
    login(http, base, "owner@example.com", "the newest passphrase 42").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}
