//! Agent identity: registration, proof of possession, lifecycle and key rotation,
//! with real keys and real signatures. Also the kit the action tests use.

use agentid_protocol::payload::KeyRotationPayload;
use agentid_protocol::{b64, ActionPayload, ChallengeResponsePayload, Envelope, PayloadType};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use reqwest::Method;

use crate::both_backends;
use crate::helpers::OWNER_PW;
use crate::helpers::{assert_error, spawn_app, Backend, TestApp};

/// An agent as its own process sees it: the id and the private key, which only it has.
pub struct TestAgent {
    pub id: String,
    pub key: SigningKey,
    pub audience: String,
}

pub fn new_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

pub fn public_b64(key: &SigningKey) -> String {
    b64::encode(key.verifying_key().as_bytes())
}

pub fn new_nonce() -> String {
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    b64::encode(nonce)
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl TestAgent {
    /// A fresh action payload for `action` on `resource`.
    pub fn action(&self, action: &str, resource: Option<&str>) -> ActionPayload {
        ActionPayload {
            agent_id: self.id.clone(),
            action: action.to_owned(),
            resource: resource.map(str::to_owned),
            args_digest: None,
            iat: now_secs(),
            nonce: new_nonce(),
            aud: self.audience.clone(),
        }
    }

    /// The envelope text of `payload`, signed by this agent's key.
    pub fn sign(&self, payload: &ActionPayload) -> String {
        Envelope::sign(PayloadType::Action, &payload.to_bytes(), &[&self.key]).to_json()
    }
}

/// Creates an organization with an owner and returns the owner's access token.
pub async fn owner_token(app: &TestApp, org: &str) -> String {
    let email = format!("owner@{}.example", org.to_lowercase());
    app.create_owner(org, &email, OWNER_PW);
    app.login(&email, OWNER_PW).await.access
}

pub async fn register(
    app: &TestApp,
    credential: &str,
    name: &str,
    key: &SigningKey,
) -> reqwest::Response {
    app.with(Method::POST, "/api/v1/agents", credential)
        .json(&serde_json::json!({
            "name": name,
            "description": "test agent",
            "public_key": public_b64(key),
            "requested_capabilities": ["email:send"],
            "metadata": { "team": "qa" },
        }))
        .send()
        .await
        .unwrap()
}

pub async fn challenge(app: &TestApp, agent_id: &str) -> serde_json::Value {
    let response = app
        .http
        .post(app.url(&format!("/api/v1/agents/{agent_id}/challenge")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The challenge-response envelope for `challenge`, signed with `key`.
pub fn answer(agent_id: &str, challenge: &serde_json::Value, key: &SigningKey) -> String {
    answer_at(agent_id, challenge, key, now_secs())
}

/// Like [`answer`], with the statement's issued-at `iat`.
pub fn answer_at(
    agent_id: &str,
    challenge: &serde_json::Value,
    key: &SigningKey,
    iat: i64,
) -> String {
    let payload = ChallengeResponsePayload {
        agent_id: agent_id.to_owned(),
        challenge: challenge["challenge"].as_str().unwrap().to_owned(),
        aud: challenge["audience"].as_str().unwrap().to_owned(),
        iat,
    };
    Envelope::sign(PayloadType::ChallengeResponse, &payload.to_bytes(), &[key]).to_json()
}

pub async fn post_envelope(app: &TestApp, path: &str, envelope: String) -> reqwest::Response {
    app.post_raw(path, "application/json", envelope).await
}

/// Registers an agent and proves possession: an active agent.
pub async fn active_agent(app: &TestApp, credential: &str, name: &str) -> TestAgent {
    let key = new_key();
    let response = register(app, credential, name, &key).await;
    assert_eq!(response.status(), 201, "register {name}");
    let agent: serde_json::Value = response.json().await.unwrap();
    let id = agent["id"].as_str().unwrap().to_owned();
    let challenge = challenge(app, &id).await;
    let response = post_envelope(
        app,
        &format!("/api/v1/agents/{id}/verify"),
        answer(&id, &challenge, &key),
    )
    .await;
    assert_eq!(response.status(), 200, "verify {name}");
    TestAgent {
        id,
        key,
        audience: challenge["audience"].as_str().unwrap().to_owned(),
    }
}

/// Adds `name` to the catalogue with `min_trust`.
pub async fn catalogue(app: &TestApp, credential: &str, name: &str, min_trust: u8) {
    let response = app
        .with(Method::POST, "/api/v1/capabilities", credential)
        .json(&serde_json::json!({
            "name": name,
            "description": "test capability",
            "risk_level": "high",
            "min_trust": min_trust,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "create capability {name}");
}

/// Grants `capability` to the agent, optionally only for `pattern`.
pub async fn grant(
    app: &TestApp,
    credential: &str,
    agent_id: &str,
    capability: &str,
    pattern: Option<&str>,
) -> serde_json::Value {
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{agent_id}/grants"),
            credential,
        )
        .json(&serde_json::json!({ "capability": capability, "resource_pattern": pattern }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "grant {capability}");
    response.json().await.unwrap()
}

/// GETs `path` with `credential` and returns the JSON body.
pub async fn get_json(app: &TestApp, path: &str, credential: &str) -> serde_json::Value {
    app.with(Method::GET, path, credential)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Replaces the organization's trust policy (asserting a 200) and returns it.
pub async fn set_trust_policy(
    app: &TestApp,
    owner: &str,
    policy: serde_json::Value,
) -> serde_json::Value {
    let response = app
        .with(Method::PUT, "/api/v1/organization/trust-policy", owner)
        .json(&policy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Submits an action envelope and returns the decision (asserting a 200).
pub async fn decide(app: &TestApp, envelope: String) -> serde_json::Value {
    let response = post_envelope(app, "/api/v1/actions/verify", envelope).await;
    assert_eq!(response.status(), 200, "a decision is a 200");
    response.json().await.unwrap()
}

async fn registration_and_proof_of_possession(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    let key = new_key();

    let response = register(&app, &owner, "mail-assistant", &key).await;
    assert_eq!(response.status(), 201);
    let agent: serde_json::Value = response.json().await.unwrap();
    let id = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(agent["status"], "pending");
    assert_eq!(agent["public_key"], public_b64(&key));
    assert!(agent["did"].as_str().unwrap().starts_with("did:key:z6Mk"));
    let key_id = agentid_protocol::keys::jwk_thumbprint(&public_b64(&key));
    assert_eq!(agent["key_id"], key_id);
    assert_eq!(
        agent["requested_capabilities"],
        serde_json::json!(["email:send"])
    );
    let text = agent.to_string();
    assert!(
        !text.contains("private") && !text.contains("secret"),
        "{text}"
    );

    // A pending agent's actions are refused.
    let pending = TestAgent {
        id: id.clone(),
        key: key.clone(),
        audience: app.public_url.clone(),
    };
    let decision = decide(&app, pending.sign(&pending.action("email:send", None))).await;
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["reason"], "agent_pending");

    // Same name with another key, or the key under another name: conflicts. A weak
    // key: refused with its own code.
    let response = register(&app, &owner, "mail-assistant", &new_key()).await;
    assert_error(response, 409).await;
    let response = register(&app, &owner, "other-name", &key).await;
    assert_error(response, 409).await;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let response = app
        .with(Method::POST, "/api/v1/agents", &owner)
        .json(&serde_json::json!({ "name": "weak", "public_key": b64::encode(identity) }))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400).await;
    assert_eq!(body["error"]["code"], "weak_public_key");

    // A challenge signed by another key proves nothing, and it is spent: any answer
    // uses a challenge up.
    let spent = challenge(&app, &id).await;
    assert_eq!(spent["audience"], app.public_url.as_str());
    let path = format!("/api/v1/agents/{id}/verify");
    let response = post_envelope(&app, &path, answer(&id, &spent, &new_key())).await;
    let body = assert_error(response, 401).await;
    assert_eq!(body["error"]["code"], "invalid_proof");
    let response = post_envelope(&app, &path, answer(&id, &spent, &key)).await;
    let body = assert_error(response, 401).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    let challenge = challenge(&app, &id).await;

    // The right key activates the agent and gets a token bound to the key.
    let envelope = answer(&id, &challenge, &key);
    let response = post_envelope(&app, &path, envelope.clone()).await;
    assert_eq!(response.status(), 200);
    let verified: serde_json::Value = response.json().await.unwrap();
    assert_eq!(verified["agent"]["status"], "active");
    assert_eq!(verified["token_type"], "Bearer");
    let claims = crate::actions::verify_offline(
        &app,
        verified["access_token"].as_str().unwrap(),
        "agentid-agent+jwt",
        "agentid:agent",
    )
    .await;
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["cnf"]["jkt"], key_id.as_str());
    assert_eq!(claims["did"], agent["did"]);

    // Single use: the same answer again is refused.
    let response = post_envelope(&app, &path, envelope).await;
    let body = assert_error(response, 401).await;
    assert_eq!(body["error"]["code"], "invalid_proof");

    // An unknown agent is a 404; a malformed envelope a 400 with the protocol code.
    let response = app
        .http
        .post(app.url(&format!(
            "/api/v1/agents/{}/challenge",
            uuid::Uuid::new_v4()
        )))
        .send()
        .await
        .unwrap();
    assert_error(response, 404).await;
    let response = post_envelope(
        &app,
        &path,
        r#"{"payloadType":"x","payloadType":"y"}"#.into(),
    )
    .await;
    let body = assert_error(response, 400).await;
    assert_eq!(body["error"]["code"], "invalid_envelope");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("duplicate_key"));

    // An API key registers agents on behalf of the user who made it.
    let (_, api_key) = app.add_key(&owner, &["agents:write", "agents:read"]).await;
    let response = register(&app, &api_key, "via-key", &new_key()).await;
    assert_eq!(response.status(), 201);
    let by_key: serde_json::Value = response.json().await.unwrap();
    assert_eq!(by_key["owner_id"], agent["owner_id"]);

    // The registration and the activation are in the audit log.
    let audit: serde_json::Value =
        get_json(&app, &format!("/api/v1/audit?agent_id={id}"), &owner).await;
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "agent.registered",
        "agent.proof_failed",
        "agent.activated",
        "action.denied",
    ] {
        assert!(actions.contains(&expected), "{expected} in {actions:?}");
    }
}
both_backends!(registration_and_proof_of_possession);

/// A challenge response's `iat` is checked with the action window, and a challenge
/// answered with a bad one is spent like any other answered challenge.
async fn a_challenge_answer_must_be_fresh(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    let key = new_key();
    let response = register(&app, &owner, "fresh", &key).await;
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/agents/{id}/verify");
    for iat in [0, now_secs() - 3600, now_secs() + 3600] {
        let issued = challenge(&app, &id).await;
        let response = post_envelope(&app, &path, answer_at(&id, &issued, &key, iat)).await;
        let body = assert_error(response, 401).await;
        assert_eq!(body["error"]["code"], "invalid_proof");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("iat"),
            "iat {iat}: {body}"
        );
        // Spent by that answer: the right answer now comes too late.
        let response = post_envelope(&app, &path, answer(&id, &issued, &key)).await;
        let body = assert_error(response, 401).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already used"),
            "{body}"
        );
    }
    let issued = challenge(&app, &id).await;
    let response = post_envelope(&app, &path, answer(&id, &issued, &key)).await;
    assert_eq!(response.status(), 200);
}
both_backends!(a_challenge_answer_must_be_fresh);

/// Nobody but the agent can disturb its proof of possession: challenges requested
/// (and answered) by others in its name neither push its own challenge out nor spend
/// its budget.
async fn others_cannot_disturb_a_pending_agents_proof(backend: Backend) {
    let app =
        crate::helpers::spawn_app_with(backend, &[("AGENTID_RATE_LIMITS", "agent_auth.agent=3/m")])
            .await;
    let owner = owner_token(&app, "Acme").await;
    let key = new_key();
    let response = register(&app, &owner, "pending", &key).await;
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = challenge(&app, &id).await;

    // Someone who knows the id asks for many challenges and answers some wrongly.
    let attacker = new_key();
    for i in 0..12 {
        let theirs = challenge(&app, &id).await;
        if i % 2 == 0 {
            let response = post_envelope(
                &app,
                &format!("/api/v1/agents/{id}/verify"),
                answer(&id, &theirs, &attacker),
            )
            .await;
            assert_eq!(response.status(), 401, "a forged answer");
        }
    }

    // The agent's own challenge still proves possession.
    let response = post_envelope(
        &app,
        &format!("/api/v1/agents/{id}/verify"),
        answer(&id, &own, &key),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}
both_backends!(others_cannot_disturb_a_pending_agents_proof);

async fn lifecycle_is_enforced_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    catalogue(&app, &owner, "email:send", 0).await;
    let agent = active_agent(&app, &owner, "worker").await;
    grant(&app, &owner, &agent.id, "email:send", None).await;
    let path = |verb: &str| format!("/api/v1/agents/{}/{verb}", agent.id);

    assert_eq!(
        decide(&app, agent.sign(&agent.action("email:send", None))).await["allowed"],
        true
    );

    let response = app
        .with(Method::POST, &path("suspend"), &owner)
        .json(&serde_json::json!({ "reason": "investigating" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decision = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(decision["reason"], "agent_suspended");
    assert_eq!(decision["allowed"], false);
    let response = app
        .http
        .post(app.url(&path("challenge")))
        .send()
        .await
        .unwrap();
    assert_error(response, 409).await;

    let response = app
        .with(Method::POST, &path("reactivate"), &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "active");
    assert_eq!(
        decide(&app, agent.sign(&agent.action("email:send", None))).await["allowed"],
        true
    );

    let response = app
        .with(Method::POST, &path("revoke"), &owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decision = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(decision["reason"], "agent_revoked");
    let response = app
        .with(Method::POST, &path("reactivate"), &owner)
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 409).await;
    assert_eq!(body["error"]["code"], "invalid_state");
    let keys: serde_json::Value = get_json(&app, &path("keys"), &owner).await;
    assert_eq!(keys[0]["status"], "revoked");

    // The revocation raised an alert.
    let alerts: serde_json::Value =
        get_json(&app, "/api/v1/alerts?kind=agent_revoked", &owner).await;
    assert_eq!(alerts["alerts"][0]["agent_id"], agent.id.as_str());
}
both_backends!(lifecycle_is_enforced_at_once);

/// The envelope rotating `agent` from its current key to `new`.
pub fn rotation(agent: &TestAgent, new: &SigningKey, signers: &[&SigningKey]) -> String {
    let payload = KeyRotationPayload {
        agent_id: agent.id.clone(),
        old_key_id: agentid_protocol::keys::jwk_thumbprint(&public_b64(&agent.key)),
        new_public_key: public_b64(new),
        aud: agent.audience.clone(),
        iat: now_secs(),
        nonce: new_nonce(),
    };
    Envelope::sign(PayloadType::KeyRotation, &payload.to_bytes(), signers).to_json()
}

async fn rotation_retires_the_old_key_at_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    catalogue(&app, &owner, "files:read", 0).await;
    let mut agent = active_agent(&app, &owner, "rotator").await;
    grant(&app, &owner, &agent.id, "files:read", None).await;
    let path = format!("/api/v1/agents/{}/keys/rotate", agent.id);
    let new = new_key();

    // Both signatures are required: one alone is a malformed rotation.
    let response = post_envelope(&app, &path, rotation(&agent, &new, &[&agent.key])).await;
    let body = assert_error(response, 400).await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("wrong_signature_count"));
    // The new key twice is one signer; a stranger's key is not the current one.
    let response = post_envelope(&app, &path, rotation(&agent, &new, &[&new, &new])).await;
    assert_error(response, 400).await;
    let response = post_envelope(&app, &path, rotation(&agent, &new, &[&new_key(), &new])).await;
    let body = assert_error(response, 401).await;
    assert_eq!(body["error"]["code"], "invalid_proof");

    let envelope = rotation(&agent, &new, &[&agent.key, &new]);
    let response = post_envelope(&app, &path, envelope.clone()).await;
    assert_eq!(response.status(), 200);
    let rotated: serde_json::Value = response.json().await.unwrap();
    assert_eq!(rotated["public_key"], public_b64(&new));
    // Replaying the rotation fails: the old key is no longer current.
    let response = post_envelope(&app, &path, envelope).await;
    assert_error(response, 401).await;

    let old = agent.sign(&agent.action("files:read", None));
    let decision = decide(&app, old).await;
    assert_eq!(decision["allowed"], false);
    assert_eq!(decision["reason"], "key_retired");

    agent.key = new;
    let decision = decide(&app, agent.sign(&agent.action("files:read", None))).await;
    assert_eq!(decision["allowed"], true, "{decision}");

    let keys: serde_json::Value = app
        .with(
            Method::GET,
            &format!("/api/v1/agents/{}/keys", agent.id),
            &owner,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "retired"]);
    assert!(keys[1]["retired_at"].is_string());
}
both_backends!(rotation_retires_the_old_key_at_once);

async fn registration_is_idempotent_per_name_and_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = owner_token(&app, "Acme").await;
    let key = new_key();

    // Two clients registering the same name and key at once (an SDK starting in two
    // processes): one creates, the other is answered with the same agent.
    let (a, b) = tokio::join!(
        register(&app, &owner, "twin", &key),
        register(&app, &owner, "twin", &key)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201]);
    let a: serde_json::Value = a.json().await.unwrap();
    let b: serde_json::Value = b.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);

    // Again later, and after activation: the same agent, unchanged, not re-audited.
    let agent = TestAgent {
        id: a["id"].as_str().unwrap().to_owned(),
        key: key.clone(),
        audience: app.public_url.clone(),
    };
    let issued = challenge(&app, &agent.id).await;
    let proof = answer(&agent.id, &issued, &key);
    let response = post_envelope(&app, &format!("/api/v1/agents/{}/verify", agent.id), proof).await;
    assert_eq!(response.status(), 200);
    let again = register(&app, &owner, "twin", &key).await;
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], a["id"]);
    assert_eq!(again["status"], "active");
    let audit = get_json(&app, "/api/v1/audit?action=agent.registered", &owner).await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 1, "{audit}");

    // The same name with another key is a conflict that says so; so is a revoked agent.
    let body = assert_error(register(&app, &owner, "twin", &new_key()).await, 409).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different public key"),
        "{body}"
    );
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/revoke", agent.id),
            &owner,
        )
        .json(&serde_json::json!({ "reason": "test" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_error(register(&app, &owner, "twin", &key).await, 409).await;

    // Looking an agent up by name.
    let page = get_json(&app, "/api/v1/agents?name=twin", &owner).await;
    assert_eq!(page["agents"].as_array().unwrap().len(), 1);
    assert_eq!(page["agents"][0]["id"], a["id"]);
    let page = get_json(&app, "/api/v1/agents?name=nobody", &owner).await;
    assert!(page["agents"].as_array().unwrap().is_empty());
}
both_backends!(registration_is_idempotent_per_name_and_key);
