//! The capability catalogue, agents' grants and the enforcement mode, over HTTP.

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_error, spawn_app, Backend, TestApp};
use crate::helpers::{OWNER_PW, USER_PW};

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    credential: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.with(method, path, credential);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn ok_json(response: reqwest::Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let body = response.text().await.unwrap();
    assert_eq!(actual, status, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_error(response, status).await["error"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn create_capability(app: &TestApp, credential: &str, body: Value) -> reqwest::Response {
    send(
        app,
        Method::POST,
        "/api/v1/capabilities",
        credential,
        Some(body),
    )
    .await
}

fn email_send() -> Value {
    json!({
        "name": "email:send",
        "description": "Send an email",
        "risk_level": "high",
        "min_trust": 60,
    })
}

/// Registers an agent with a fresh client-side key; returns its id.
async fn register_agent(app: &TestApp, credential: &str, name: &str) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let public_key =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    let response = send(
        app,
        Method::POST,
        "/api/v1/agents",
        credential,
        Some(json!({
            "name": name,
            "description": "test agent",
            "public_key": public_key,
            "requested_capabilities": ["email:send"],
            "metadata": {},
        })),
    )
    .await;
    ok_json(response, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The organization's audit records, oldest first.
async fn audit(app: &TestApp, credential: &str) -> Vec<Value> {
    let page = ok_json(
        send(
            app,
            Method::GET,
            "/api/v1/audit?limit=500",
            credential,
            None,
        )
        .await,
        200,
    )
    .await;
    page["records"].as_array().unwrap().clone()
}

fn actions(records: &[Value], action: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["action"] == action)
        .cloned()
        .collect()
}

async fn catalogue_crud_and_validation(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_owner("Acme", "owner@example.com", OWNER_PW);
    let owner = app.login("owner@example.com", OWNER_PW).await.access;

    let created = ok_json(create_capability(&app, &owner, email_send()).await, 201).await;
    assert_eq!(created["name"], "email:send");
    assert_eq!(created["description"], "Send an email");
    assert_eq!(created["risk_level"], "high");
    assert_eq!(created["min_trust"], 60);
    assert!(created["created_at"].is_string() && created["created_by"].is_string());

    let duplicate = create_capability(&app, &owner, email_send()).await;
    assert_eq!(error_code(duplicate, 409).await, "conflict");

    for bad in [
        json!({ "name": "Email:Send", "risk_level": "low", "min_trust": 0 }),
        json!({ "name": "email", "risk_level": "low", "min_trust": 0 }),
        json!({ "name": "a:b:c", "risk_level": "low", "min_trust": 0 }),
        json!({ "name": "_x:y", "risk_level": "low", "min_trust": 0 }),
        json!({ "name": format!("{}:y", "x".repeat(65)), "risk_level": "low", "min_trust": 0 }),
        json!({ "name": "files:read", "risk_level": "extreme", "min_trust": 0 }),
        json!({ "name": "files:read", "risk_level": "low", "min_trust": 101 }),
        json!({ "name": "files:read", "risk_level": "low", "min_trust": -1 }),
        json!({ "name": "files:read", "risk_level": "low" }),
        json!({ "name": "files:read", "risk_level": "low", "min_trust": 0, "extra": 1 }),
        json!({ "name": "files:read", "risk_level": "low", "min_trust": 0, "description": "d".repeat(501) }),
    ] {
        let response = create_capability(&app, &owner, bad.clone()).await;
        assert_eq!(error_code(response, 400).await, "invalid_request", "{bad}");
    }

    let files = ok_json(
        create_capability(
            &app,
            &owner,
            json!({ "name": "files:read", "risk_level": "low", "min_trust": 0 }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(files["description"], "", "the description is optional");

    let list = ok_json(
        send(&app, Method::GET, "/api/v1/capabilities", &owner, None).await,
        200,
    )
    .await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["email:send", "files:read"]);

    let one = ok_json(
        send(
            &app,
            Method::GET,
            "/api/v1/capabilities/email:send",
            &owner,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(one, created);
    let encoded = send(
        &app,
        Method::GET,
        "/api/v1/capabilities/email%3Asend",
        &owner,
        None,
    )
    .await;
    assert_eq!(encoded.status(), 200, "a percent-encoded colon works too");
    for missing in ["shell:exec", "NotAName", "a:b:c"] {
        let response = send(
            &app,
            Method::GET,
            &format!("/api/v1/capabilities/{missing}"),
            &owner,
            None,
        )
        .await;
        assert_eq!(error_code(response, 404).await, "not_found", "{missing}");
    }

    let patched = ok_json(
        send(
            &app,
            Method::PATCH,
            "/api/v1/capabilities/email:send",
            &owner,
            Some(json!({ "min_trust": 75, "description": "Send mail" })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(patched["min_trust"], 75);
    assert_eq!(patched["description"], "Send mail");
    assert_eq!(patched["risk_level"], "high");
    for (name, body, status, code) in [
        ("email:send", json!({}), 400, "invalid_request"),
        (
            "email:send",
            json!({ "min_trust": 500 }),
            400,
            "invalid_request",
        ),
        (
            "email:send",
            json!({ "name": "email:other" }),
            400,
            "invalid_request",
        ),
        (
            "email:send",
            json!({ "risk_level": "none" }),
            400,
            "invalid_request",
        ),
        ("shell:exec", json!({ "min_trust": 5 }), 404, "not_found"),
    ] {
        let response = send(
            &app,
            Method::PATCH,
            &format!("/api/v1/capabilities/{name}"),
            &owner,
            Some(body.clone()),
        )
        .await;
        assert_eq!(error_code(response, status).await, code, "{body}");
    }
    // No deletion: the catalogue only grows.
    let delete = send(
        &app,
        Method::DELETE,
        "/api/v1/capabilities/email:send",
        &owner,
        None,
    )
    .await;
    assert_eq!(error_code(delete, 405).await, "method_not_allowed");

    let records = audit(&app, &owner).await;
    let created_records = actions(&records, "capability.created");
    assert_eq!(created_records.len(), 2);
    assert_eq!(created_records[0]["target_id"], "email:send");
    assert_eq!(created_records[0]["details"]["min_trust"], 60);
    let updated = actions(&records, "capability.updated");
    assert_eq!(updated.len(), 1);
    assert_eq!(
        updated[0]["details"]["min_trust"],
        json!({ "from": 60, "to": 75 })
    );
}
both_backends!(catalogue_crud_and_validation);

async fn only_granters_change_the_catalogue(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_owner("Acme", "owner@example.com", OWNER_PW);
    let owner = app.login("owner@example.com", OWNER_PW).await.access;
    app.add_user(&owner, "viewer@example.com", USER_PW, "viewer")
        .await;
    app.add_user(&owner, "dev@example.com", USER_PW, "developer")
        .await;
    app.add_user(&owner, "admin@example.com", USER_PW, "admin")
        .await;
    let viewer = app.login("viewer@example.com", USER_PW).await.access;
    let dev = app.login("dev@example.com", USER_PW).await.access;
    let admin = app.login("admin@example.com", USER_PW).await.access;
    let (_, read_key) = app.add_key(&owner, &["agents:read"]).await;
    let (_, grant_key) = app
        .add_key(&owner, &["agents:read", "capabilities:grant"])
        .await;
    ok_json(create_capability(&app, &owner, email_send()).await, 201).await;

    let some_agent = uuid::Uuid::new_v4();
    for credential in [&viewer, &dev, &read_key] {
        let response = create_capability(
            &app,
            credential,
            json!({ "name": "files:read", "risk_level": "low", "min_trust": 0 }),
        )
        .await;
        assert_eq!(error_code(response, 403).await, "forbidden");
        let response = send(
            &app,
            Method::PATCH,
            "/api/v1/capabilities/email:send",
            credential,
            Some(json!({ "min_trust": 0 })),
        )
        .await;
        assert_eq!(error_code(response, 403).await, "forbidden");
        // The permission is checked before anything else, so even an unknown agent
        // answers 403.
        let response = send(
            &app,
            Method::POST,
            &format!("/api/v1/agents/{some_agent}/grants"),
            credential,
            Some(json!({ "capability": "email:send" })),
        )
        .await;
        assert_eq!(error_code(response, 403).await, "forbidden");
        let response = send(
            &app,
            Method::DELETE,
            &format!(
                "/api/v1/agents/{some_agent}/grants/{}",
                uuid::Uuid::new_v4()
            ),
            credential,
            None,
        )
        .await;
        assert_eq!(error_code(response, 403).await, "forbidden");
        // Everyone with agents:read may read.
        let response = send(&app, Method::GET, "/api/v1/capabilities", credential, None).await;
        assert_eq!(response.status(), 200);
        let response = send(
            &app,
            Method::GET,
            "/api/v1/capabilities/email:send",
            credential,
            None,
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    let unauthenticated = app.get("/api/v1/capabilities").await;
    assert_eq!(error_code(unauthenticated, 401).await, "unauthorized");

    for credential in [&admin, &grant_key] {
        let name = if credential == &admin {
            "files:read"
        } else {
            "files:write"
        };
        let response = create_capability(
            &app,
            credential,
            json!({ "name": name, "risk_level": "medium", "min_trust": 20 }),
        )
        .await;
        ok_json(response, 201).await;
    }
    let records = audit(&app, &owner).await;
    let created = actions(&records, "capability.created");
    assert_eq!(created.len(), 3);
    assert_eq!(created[2]["actor_type"], "api_key");
}
both_backends!(only_granters_change_the_catalogue);

async fn enforcement_is_on_until_an_owner_chooses_monitor(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_owner("Acme", "owner@example.com", OWNER_PW);
    app.create_owner("Other", "owner@other.example", OWNER_PW);
    let owner = app.login("owner@example.com", OWNER_PW).await.access;
    let other = app.login("owner@other.example", OWNER_PW).await.access;
    app.add_user(&owner, "admin@example.com", USER_PW, "admin")
        .await;
    app.add_user(&owner, "viewer@example.com", USER_PW, "viewer")
        .await;
    let admin = app.login("admin@example.com", USER_PW).await.access;
    let viewer = app.login("viewer@example.com", USER_PW).await.access;
    let path = "/api/v1/organization/enforcement";

    for credential in [&owner, &admin, &viewer] {
        let mode = ok_json(send(&app, Method::GET, path, credential, None).await, 200).await;
        assert_eq!(mode, json!({ "mode": "enforce" }));
    }
    let denied = send(
        &app,
        Method::PUT,
        path,
        &admin,
        Some(json!({ "mode": "monitor" })),
    )
    .await;
    assert_eq!(error_code(denied, 403).await, "forbidden");
    for bad in [
        json!({ "mode": "off" }),
        json!({}),
        json!({ "mode": "monitor", "x": 1 }),
    ] {
        let response = send(&app, Method::PUT, path, &owner, Some(bad.clone())).await;
        assert_eq!(error_code(response, 400).await, "invalid_request", "{bad}");
    }
    assert!(actions(&audit(&app, &owner).await, "org.enforcement_changed").is_empty());

    let set = ok_json(
        send(
            &app,
            Method::PUT,
            path,
            &owner,
            Some(json!({ "mode": "monitor" })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(set, json!({ "mode": "monitor" }));
    let now = ok_json(send(&app, Method::GET, path, &viewer, None).await, 200).await;
    assert_eq!(now["mode"], "monitor");
    // Setting the same mode again changes nothing and records nothing.
    ok_json(
        send(
            &app,
            Method::PUT,
            path,
            &owner,
            Some(json!({ "mode": "monitor" })),
        )
        .await,
        200,
    )
    .await;
    // The other organization is untouched.
    let theirs = ok_json(send(&app, Method::GET, path, &other, None).await, 200).await;
    assert_eq!(theirs["mode"], "enforce");

    ok_json(
        send(
            &app,
            Method::PUT,
            path,
            &owner,
            Some(json!({ "mode": "enforce" })),
        )
        .await,
        200,
    )
    .await;
    let records = audit(&app, &owner).await;
    let changes = actions(&records, "org.enforcement_changed");
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(
        changes[0]["details"],
        json!({ "from": "enforce", "to": "monitor" })
    );
    assert_eq!(
        changes[1]["details"],
        json!({ "from": "monitor", "to": "enforce" })
    );
    assert_eq!(changes[0]["actor_type"], "user");
    assert!(actions(&audit(&app, &other).await, "org.enforcement_changed").is_empty());
    let report = ok_json(
        send(&app, Method::GET, "/api/v1/audit/verify", &owner, None).await,
        200,
    )
    .await;
    assert_eq!(report["valid"], true);
}
both_backends!(enforcement_is_on_until_an_owner_chooses_monitor);

async fn catalogues_do_not_cross_organizations(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_owner("Alpha", "a@alpha.example", OWNER_PW);
    app.create_owner("Beta", "b@beta.example", OWNER_PW);
    let alpha = app.login("a@alpha.example", OWNER_PW).await.access;
    let beta = app.login("b@beta.example", OWNER_PW).await.access;
    ok_json(create_capability(&app, &alpha, email_send()).await, 201).await;

    let list = ok_json(
        send(&app, Method::GET, "/api/v1/capabilities", &beta, None).await,
        200,
    )
    .await;
    assert_eq!(list, json!([]));
    let get = send(
        &app,
        Method::GET,
        "/api/v1/capabilities/email:send",
        &beta,
        None,
    )
    .await;
    assert_eq!(error_code(get, 404).await, "not_found");
    let patch = send(
        &app,
        Method::PATCH,
        "/api/v1/capabilities/email:send",
        &beta,
        Some(json!({ "min_trust": 0 })),
    )
    .await;
    assert_eq!(error_code(patch, 404).await, "not_found");
    let alphas = ok_json(
        send(
            &app,
            Method::GET,
            "/api/v1/capabilities/email:send",
            &alpha,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        alphas["min_trust"], 60,
        "unchanged by the other organization"
    );

    // The same name is free in the other organization.
    let theirs = ok_json(
        create_capability(
            &app,
            &beta,
            json!({ "name": "email:send", "risk_level": "low", "min_trust": 5 }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(theirs["min_trust"], 5);
    // Unknown agents, and ids that are not UUIDs, are not found.
    for agent in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let response = send(
            &app,
            Method::POST,
            &format!("/api/v1/agents/{agent}/grants"),
            &beta,
            Some(json!({ "capability": "email:send" })),
        )
        .await;
        assert_eq!(error_code(response, 404).await, "not_found");
        let response = send(
            &app,
            Method::GET,
            &format!("/api/v1/agents/{agent}/grants"),
            &beta,
            None,
        )
        .await;
        assert_eq!(error_code(response, 404).await, "not_found");
    }
    assert!(actions(&audit(&app, &beta).await, "capability.created").len() == 1);
}
both_backends!(catalogues_do_not_cross_organizations);

// Needs agent registration (`POST /api/v1/agents`).
async fn grant_lifecycle(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_owner("Acme", "owner@example.com", OWNER_PW);
    let owner = app.login("owner@example.com", OWNER_PW).await.access;
    ok_json(create_capability(&app, &owner, email_send()).await, 201).await;
    let agent = register_agent(&app, &owner, "mailer").await;
    let grants = format!("/api/v1/agents/{agent}/grants");

    let empty = ok_json(send(&app, Method::GET, &grants, &owner, None).await, 200).await;
    assert_eq!(empty, json!([]));

    for (body, fragment) in [
        (json!({ "capability": "shell:exec" }), "shell:exec"),
        (json!({ "capability": "Email:Send" }), "namespace:action"),
        (
            json!({ "capability": "email:send", "expires_at": "2001-01-01T00:00:00Z" }),
            "future",
        ),
        (
            json!({ "capability": "email:send", "expires_at": "next week" }),
            "RFC 3339",
        ),
        (
            json!({ "capability": "email:send", "resource_pattern": "x".repeat(513) }),
            "resource_pattern",
        ),
        (
            json!({ "capability": "email:send", "resource_pattern": "" }),
            "resource_pattern",
        ),
    ] {
        let response = send(&app, Method::POST, &grants, &owner, Some(body.clone())).await;
        let error = assert_error(response, 400).await;
        assert_eq!(error["error"]["code"], "invalid_request", "{body}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains(fragment),
            "{body}: {error}"
        );
    }

    let expires = "2100-01-01T00:00:00Z";
    // Answers and records write times with exactly three fractional digits.
    let expires_out = "2100-01-01T00:00:00.000Z";
    let grant = ok_json(
        send(
            &app,
            Method::POST,
            &grants,
            &owner,
            Some(json!({
                "capability": "email:send",
                "resource_pattern": "*@example.com",
                "expires_at": expires,
            })),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(grant["agent_id"], agent.as_str());
    assert_eq!(grant["capability"], "email:send");
    assert_eq!(grant["resource_pattern"], "*@example.com");
    assert_eq!(grant["expires_at"], expires_out);
    assert_eq!(grant["state"], "active");
    assert!(grant["revoked_at"].is_null());
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    let unscoped = ok_json(
        send(
            &app,
            Method::POST,
            &grants,
            &owner,
            Some(json!({ "capability": "email:send" })),
        )
        .await,
        201,
    )
    .await;
    assert!(unscoped["resource_pattern"].is_null() && unscoped["expires_at"].is_null());

    let listed = ok_json(send(&app, Method::GET, &grants, &owner, None).await, 200).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&grant), "{listed:?}");
    assert!(listed.iter().all(|g| g["state"] == "active"));

    let revoke_path = format!("{grants}/{grant_id}");
    let revoked = ok_json(
        send(&app, Method::DELETE, &revoke_path, &owner, None).await,
        200,
    )
    .await;
    assert_eq!(revoked["state"], "revoked");
    assert!(revoked["revoked_at"].is_string() && revoked["revoked_by"].is_string());
    let again = send(&app, Method::DELETE, &revoke_path, &owner, None).await;
    assert_eq!(error_code(again, 409).await, "invalid_state");
    let listed = ok_json(send(&app, Method::GET, &grants, &owner, None).await, 200).await;
    let state_of = |id: &Value| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|g| &g["id"] == id)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state_of(&grant["id"]), "revoked");
    assert_eq!(state_of(&unscoped["id"]), "active");

    for path in [
        format!("{grants}/{}", uuid::Uuid::new_v4()),
        format!("{grants}/not-a-uuid"),
        format!("/api/v1/agents/{}/grants/{grant_id}", uuid::Uuid::new_v4()),
    ] {
        let response = send(&app, Method::DELETE, &path, &owner, None).await;
        assert_eq!(error_code(response, 404).await, "not_found", "{path}");
    }

    // A revoked agent cannot be granted anything (needs `POST /api/v1/agents/{id}/revoke`).
    let gone = register_agent(&app, &owner, "gone").await;
    let revoke = send(
        &app,
        Method::POST,
        &format!("/api/v1/agents/{gone}/revoke"),
        &owner,
        None,
    )
    .await;
    assert_eq!(revoke.status(), 200, "{}", revoke.text().await.unwrap());
    let response = send(
        &app,
        Method::POST,
        &format!("/api/v1/agents/{gone}/grants"),
        &owner,
        Some(json!({ "capability": "email:send" })),
    )
    .await;
    assert_eq!(error_code(response, 409).await, "invalid_state");

    let records = audit(&app, &owner).await;
    let granted = actions(&records, "capability.granted");
    assert_eq!(granted.len(), 2);
    assert_eq!(granted[0]["target_id"], grant_id.as_str());
    assert_eq!(
        granted[0]["details"],
        json!({
            "agent_id": agent,
            "capability": "email:send",
            "resource_pattern": "*@example.com",
            "expires_at": expires_out,
        })
    );
    let revocations = actions(&records, "capability.grant_revoked");
    assert_eq!(revocations.len(), 1);
    assert_eq!(revocations[0]["target_id"], grant_id.as_str());
    assert_eq!(revocations[0]["details"]["agent_id"], agent.as_str());
}
both_backends!(grant_lifecycle);

// Needs agent registration (`POST /api/v1/agents`).
async fn grants_do_not_cross_organizations(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_owner("Alpha", "a@alpha.example", OWNER_PW);
    app.create_owner("Beta", "b@beta.example", OWNER_PW);
    let alpha = app.login("a@alpha.example", OWNER_PW).await.access;
    let beta = app.login("b@beta.example", OWNER_PW).await.access;
    let (_, beta_key) = app
        .add_key(&beta, &["agents:read", "capabilities:grant"])
        .await;
    ok_json(create_capability(&app, &alpha, email_send()).await, 201).await;
    ok_json(create_capability(&app, &beta, email_send()).await, 201).await;
    let agent = register_agent(&app, &alpha, "mailer").await;
    let grants = format!("/api/v1/agents/{agent}/grants");
    let grant = ok_json(
        send(
            &app,
            Method::POST,
            &grants,
            &alpha,
            Some(json!({ "capability": "email:send" })),
        )
        .await,
        201,
    )
    .await;
    let grant_id = grant["id"].as_str().unwrap();

    for credential in [&beta, &beta_key] {
        let response = send(
            &app,
            Method::POST,
            &grants,
            credential,
            Some(json!({ "capability": "email:send" })),
        )
        .await;
        assert_eq!(error_code(response, 404).await, "not_found");
        let response = send(&app, Method::GET, &grants, credential, None).await;
        assert_eq!(error_code(response, 404).await, "not_found");
        let response = send(
            &app,
            Method::DELETE,
            &format!("{grants}/{grant_id}"),
            credential,
            None,
        )
        .await;
        assert_eq!(error_code(response, 404).await, "not_found");
    }
    let listed = ok_json(send(&app, Method::GET, &grants, &alpha, None).await, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["state"], "active");
    assert!(actions(&audit(&app, &beta).await, "capability.granted").is_empty());
}
both_backends!(grants_do_not_cross_organizations);
