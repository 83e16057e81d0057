//! Signed actions: decisions, their reasons, receipts checked offline, replay under
//! concurrency, and two replicas on one PostgreSQL.

use agentid_protocol::{b64, Envelope};
use reqwest::Method;

use crate::agents::{
    active_agent, catalogue, decide, get_json, grant, new_key, now_secs, owner_token,
    post_envelope, set_trust_policy, TestAgent,
};
use crate::both_backends;
use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, TestApp};

/// Verifies a server-signed JWS the way a relying party would: only with the
/// published JWKS, EdDSA only, checking `typ`, issuer and audience. Returns the claims.
pub async fn verify_offline(
    app: &TestApp,
    token: &str,
    typ: &str,
    audience: &str,
) -> serde_json::Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some(typ));
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[app.public_url.as_str()]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("the token verifies offline")
        .claims
}

/// An org with `email:send` in its catalogue and an active agent granted it for
/// `*@example.com` only.
async fn setup(app: &TestApp) -> (String, TestAgent) {
    let owner = owner_token(app, "Acme").await;
    catalogue(app, &owner, "email:send", 0).await;
    let agent = active_agent(app, &owner, "mailer").await;
    grant(app, &owner, &agent.id, "email:send", Some("*@example.com")).await;
    (owner, agent)
}

async fn granted_action_is_allowed_with_an_offline_receipt(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    let mut payload = agent.action("email:send", Some("bob@example.com"));
    payload.args_digest = Some(format!("sha256:{}", "ab".repeat(32)));
    let decision = decide(&app, agent.sign(&payload)).await;
    assert_eq!(decision["allowed"], true, "{decision}");
    assert_eq!(decision["reason"], "allowed");
    assert_eq!(decision["agent_id"], agent.id.as_str());
    assert_eq!(decision["capability"], "email:send");
    assert_eq!(decision["resource"], "bob@example.com");
    assert_eq!(decision["enforcement"], "enforce");
    assert!(decision["trust_score"].as_f64().unwrap() >= 0.0);

    let claims = verify_offline(
        &app,
        decision["receipt"].as_str().unwrap(),
        "agentid-receipt+jwt",
        &app.public_url,
    )
    .await;
    assert_eq!(claims["jti"], decision["decision_id"]);
    assert_eq!(claims["allowed"], true);
    assert_eq!(claims["sub"], agent.id.as_str());
    let parsed = agentid_protocol::ParsedEnvelope::parse(agent.sign(&payload).as_bytes()).unwrap();
    assert_eq!(claims["envelope_sha256"], parsed.digest());
    // A relying party holding only the receipt can bind it to the arguments it runs.
    assert_eq!(claims["args_digest"], payload.args_digest.clone().unwrap());

    // The decision is in the audit chain, at the position and with the hash the
    // receipt names, and the chain verifies.
    let seq = decision["audit_seq"].as_i64().unwrap();
    let page: serde_json::Value = app
        .with(
            Method::GET,
            &format!("/api/v1/audit?after={}&limit=1", seq - 1),
            &owner,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = &page["records"][0];
    assert_eq!(record["id"], decision["decision_id"]);
    assert_eq!(record["action"], "action.allowed");
    assert_eq!(record["hash"], claims["audit_hash"]);
    assert_eq!(
        record["details"]["args_digest"],
        payload.args_digest.clone().unwrap()
    );
    let report: serde_json::Value = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], true);

    // A tampered receipt does not verify.
    let receipt = decision["receipt"].as_str().unwrap();
    let (head, rest) = receipt.split_once('.').unwrap();
    let (body, sig) = rest.split_once('.').unwrap();
    let mut claims_json: serde_json::Value =
        serde_json::from_slice(&b64::decode(body).unwrap()).unwrap();
    claims_json["allowed"] = false.into();
    let forged = format!("{head}.{}.{sig}", b64::encode(claims_json.to_string()));
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(&forged).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&[app.public_url.as_str()]);
    assert!(jsonwebtoken::decode::<serde_json::Value>(&forged, &key, &validation).is_err());
}
both_backends!(granted_action_is_allowed_with_an_offline_receipt);

/// Flips `S` to `S + L`: the same signature, non-canonically encoded.
fn malleate(envelope: &str) -> String {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut env: Envelope = serde_json::from_str(envelope).unwrap();
    let mut sig = b64::decode(&env.signatures[0].sig).unwrap();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
        sig[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    env.signatures[0].sig = b64::encode(sig);
    env.to_json()
}

async fn every_denial_has_its_own_reason(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    let reason = |d: serde_json::Value| {
        assert_eq!(d["allowed"], false, "{d}");
        d["reason"].as_str().unwrap().to_owned()
    };

    // This agent misbehaves in every way; the thresholds are `trust::*`'s subject, so
    // they are off here and every denial shows its own reason.
    set_trust_policy(
        &app,
        &owner,
        serde_json::json!({"weights": null, "key_max_age_days": 90, "alert_below": null, "suspend_below": null}),
    )
    .await;

    // Replay: the same envelope twice.
    let envelope = agent.sign(&agent.action("email:send", Some("a@example.com")));
    assert_eq!(decide(&app, envelope.clone()).await["allowed"], true);
    assert_eq!(reason(decide(&app, envelope).await), "replayed_nonce");

    // Freshness, both sides of the window (defaults: 300 s old, 30 s ahead).
    let mut old = agent.action("email:send", Some("a@example.com"));
    old.iat = now_secs() - 301;
    assert_eq!(
        reason(decide(&app, agent.sign(&old)).await),
        "issued_at_too_old"
    );
    let mut future = agent.action("email:send", Some("a@example.com"));
    future.iat = now_secs() + 120;
    assert_eq!(
        reason(decide(&app, agent.sign(&future)).await),
        "issued_at_in_future"
    );

    // Another deployment's audience.
    let mut elsewhere = agent.action("email:send", Some("a@example.com"));
    elsewhere.aud = "https://other.example".into();
    assert_eq!(
        reason(decide(&app, agent.sign(&elsewhere)).await),
        "wrong_audience"
    );

    // Tampered payload: the signature no longer covers it.
    let signed = agent.sign(&agent.action("email:send", Some("a@example.com")));
    let mut env: Envelope = serde_json::from_str(&signed).unwrap();
    let mut other = agent.action("email:send", Some("attacker@evil.example"));
    other.nonce = crate::agents::new_nonce();
    env.payload = b64::encode(other.to_bytes());
    let decision = decide(&app, env.to_json()).await;
    assert_eq!(reason(decision.clone()), "bad_signature");
    assert!(
        decision["trust_score"].is_null(),
        "unauthenticated: no score shown"
    );

    // Signed by a key the agent does not have.
    let stranger = TestAgent {
        id: agent.id.clone(),
        key: new_key(),
        audience: agent.audience.clone(),
    };
    assert_eq!(
        reason(decide(&app, stranger.sign(&stranger.action("email:send", None))).await),
        "unknown_key"
    );

    // A non-canonical encoding of a valid signature.
    let valid = agent.sign(&agent.action("email:send", Some("a@example.com")));
    assert_eq!(
        reason(decide(&app, malleate(&valid)).await),
        "non_canonical_signature"
    );
    // ... and the valid one is still accepted afterwards (its nonce was not burnt).
    assert_eq!(decide(&app, valid).await["allowed"], true);

    // Outside the grant's pattern, and a capability never granted.
    assert_eq!(
        reason(
            decide(
                &app,
                agent.sign(&agent.action("email:send", Some("x@evil.example")))
            )
            .await
        ),
        "resource_not_in_scope"
    );
    assert_eq!(
        reason(decide(&app, agent.sign(&agent.action("email:send", None))).await),
        "resource_not_in_scope"
    );
    catalogue(&app, &owner, "files:delete", 0).await;
    let decision = decide(
        &app,
        agent.sign(&agent.action("files:delete", Some("/etc"))),
    )
    .await;
    assert_eq!(reason(decision), "capability_not_granted");

    // Trust below the capability's minimum.
    catalogue(&app, &owner, "payments:send", 99).await;
    grant(&app, &owner, &agent.id, "payments:send", None).await;
    assert_eq!(
        reason(decide(&app, agent.sign(&agent.action("payments:send", None))).await),
        "trust_below_minimum"
    );

    // Violations and replays raised alerts and lowered trust.
    let alerts: serde_json::Value = app
        .with(
            Method::GET,
            &format!("/api/v1/alerts?agent_id={}", agent.id),
            &owner,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"capability_violation"), "{kinds:?}");
    assert!(kinds.contains(&"replay"), "{kinds:?}");
    let after: serde_json::Value =
        get_json(&app, &format!("/api/v1/agents/{}", agent.id), &owner).await;
    assert!(after["trust_score"].as_f64().unwrap() < 50.0, "{after}");
    // The score is explained factor by factor.
    let report: serde_json::Value = app
        .with(
            Method::GET,
            &format!("/api/v1/agents/{}/trust", agent.id),
            &owner,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let factor = |name: &str| {
        report["factors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["factor"] == name)
            .unwrap_or_else(|| panic!("factor {name} in {report}"))
            .clone()
    };
    assert!(
        factor("capability_violations")["value"].as_f64().unwrap() < 1.0,
        "{report}"
    );
    assert!(
        factor("replays")["value"].as_f64().unwrap() < 1.0,
        "{report}"
    );
    assert!(!factor("capability_violations")["reason"]
        .as_str()
        .unwrap()
        .is_empty());
    let score = report["score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&score) && score < 50.0, "{report}");

    // Every decision is in the audit log, and the chain verifies.
    let report: serde_json::Value = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], true);
}
both_backends!(every_denial_has_its_own_reason);

async fn bad_envelopes_are_client_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, agent) = setup(&app).await;
    let code = |body: serde_json::Value| body["error"]["message"].as_str().unwrap().to_owned();
    let path = "/api/v1/actions/verify";

    let response = post_envelope(&app, path, r#"{"payload":"","payload":""}"#.into()).await;
    assert!(code(assert_error(response, 400).await).starts_with("duplicate_key"));
    let deep = format!("{}{}", "[".repeat(20), "]".repeat(20));
    let response = post_envelope(&app, path, deep).await;
    assert!(code(assert_error(response, 400).await).starts_with("nesting_too_deep"));
    let big = format!(
        r#"{{"payloadType":"{}","payload":"","signatures":[]}}"#,
        "x".repeat(20_000)
    );
    let response = post_envelope(&app, path, big).await;
    assert!(code(assert_error(response, 400).await).starts_with("envelope_too_large"));
    // A challenge response is not an action, even when validly signed.
    let challenge = Envelope::sign(
        agentid_protocol::PayloadType::ChallengeResponse,
        b"{}",
        &[&agent.key],
    );
    let response = post_envelope(&app, path, challenge.to_json()).await;
    assert!(code(assert_error(response, 400).await).starts_with("wrong_payload_type"));
    let mut short = agent.action("email:send", None);
    short.nonce = b64::encode([1u8; 8]);
    let response = post_envelope(&app, path, agent.sign(&short)).await;
    assert!(code(assert_error(response, 400).await).starts_with("invalid_payload"));
    let response = app
        .post_raw(
            path,
            "text/plain",
            agent.sign(&agent.action("email:send", None)),
        )
        .await;
    assert_error(response, 415).await;
    let ghost = TestAgent {
        id: uuid::Uuid::new_v4().to_string(),
        key: new_key(),
        audience: agent.audience.clone(),
    };
    let response = post_envelope(&app, path, ghost.sign(&ghost.action("email:send", None))).await;
    assert_error(response, 404).await;
}
both_backends!(bad_envelopes_are_client_errors);

async fn concurrent_duplicates_are_accepted_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, agent) = setup(&app).await;
    let envelope = agent.sign(&agent.action("email:send", Some("race@example.com")));
    let url = app.url("/api/v1/actions/verify");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let client = app.http.clone();
        let url = url.clone();
        let body = envelope.clone();
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }));
    }
    let mut allowed = 0;
    let mut replayed = 0;
    for task in tasks {
        let decision = task.await.unwrap();
        match decision["reason"].as_str().unwrap() {
            "allowed" => allowed += 1,
            "replayed_nonce" => replayed += 1,
            other => panic!("unexpected reason {other}"),
        }
    }
    assert_eq!((allowed, replayed), (1, 199));
}
both_backends!(concurrent_duplicates_are_accepted_exactly_once);

async fn monitor_mode_is_explicit_and_shown(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    let decision = decide(
        &app,
        agent.sign(&agent.action("email:send", Some("x@evil.example"))),
    )
    .await;
    assert_eq!(
        (decision["allowed"].clone(), decision["enforcement"].clone()),
        (false.into(), "enforce".into())
    );

    let response = app
        .with(Method::PUT, "/api/v1/organization/enforcement", &owner)
        .json(&serde_json::json!({ "mode": "monitor" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decision = decide(
        &app,
        agent.sign(&agent.action("email:send", Some("x@evil.example"))),
    )
    .await;
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["reason"], "resource_not_in_scope");
    assert_eq!(decision["enforcement"], "monitor");
    // Identity and replay checks are never relaxed.
    let envelope = agent.sign(&agent.action("email:send", Some("a@example.com")));
    decide(&app, envelope.clone()).await;
    let decision = decide(&app, envelope).await;
    assert_eq!(
        (decision["allowed"].clone(), decision["reason"].clone()),
        (false.into(), "replayed_nonce".into())
    );
}
both_backends!(monitor_mode_is_explicit_and_shown);

async fn edited_audit_row_is_reported(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    let decision = decide(
        &app,
        agent.sign(&agent.action("email:send", Some("a@example.com"))),
    )
    .await;
    let seq = decision["audit_seq"].as_i64().unwrap();
    decide(
        &app,
        agent.sign(&agent.action("email:send", Some("b@example.com"))),
    )
    .await;

    // Someone with database access rewrites the decision.
    let edit = "UPDATE audit_records SET details = replace(details, '\"allowed\"', '\"denied\"') WHERE seq = ";
    let url = app.db.url.clone();
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection, RunQueryDsl};
        match backend {
            Backend::Sqlite => {
                let mut c = diesel::SqliteConnection::establish(&url).unwrap();
                diesel::sql_query("DROP TRIGGER audit_records_no_update")
                    .execute(&mut c)
                    .unwrap();
                diesel::sql_query(format!("{edit}{seq}"))
                    .execute(&mut c)
                    .unwrap();
            }
            Backend::Postgres => {
                let mut c = diesel::PgConnection::establish(&url).unwrap();
                diesel::sql_query("ALTER TABLE audit_records DISABLE TRIGGER USER")
                    .execute(&mut c)
                    .unwrap();
                diesel::sql_query(format!("{edit}{seq}"))
                    .execute(&mut c)
                    .unwrap();
            }
        }
    })
    .await
    .unwrap();

    let report: serde_json::Value = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["first_bad_seq"], seq);
}
both_backends!(edited_audit_row_is_reported);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_nonces_and_revocations() {
    let app = spawn_app_with(
        Backend::Postgres,
        &[("AGENTID_PUBLIC_URL", "https://agentid.test")],
    )
    .await;
    let replica = app.spawn_replica().await;
    let (owner, agent) = setup(&app).await;
    let on_replica = |envelope: String| {
        let http = replica.http.clone();
        let url = replica.url("/api/v1/actions/verify");
        async move {
            let response = http
                .post(url)
                .header("content-type", "application/json")
                .body(envelope)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };

    // A nonce consumed on one replica is refused on the other.
    let envelope = agent.sign(&agent.action("email:send", Some("a@example.com")));
    assert_eq!(decide(&app, envelope.clone()).await["allowed"], true);
    let decision = on_replica(envelope).await;
    assert_eq!(decision["reason"], "replayed_nonce");

    // Same receipts keys on both: the replica's receipt verifies with the first's JWKS.
    let decision = on_replica(agent.sign(&agent.action("email:send", Some("b@example.com")))).await;
    assert_eq!(decision["allowed"], true);
    verify_offline(
        &app,
        decision["receipt"].as_str().unwrap(),
        "agentid-receipt+jwt",
        &app.public_url,
    )
    .await;

    // A rotation on one applies on the other at once, although the other has the
    // old key cached from the decisions above: old key refused, new key accepted.
    let mut agent = agent;
    let new = new_key();
    let rotate = app
        .post_raw(
            &format!("/api/v1/agents/{}/keys/rotate", agent.id),
            "application/json",
            crate::agents::rotation(&agent, &new, &[&agent.key, &new]),
        )
        .await;
    assert_eq!(rotate.status(), 200);
    let decision = on_replica(agent.sign(&agent.action("email:send", Some("c@example.com")))).await;
    assert_eq!(decision["reason"], "key_retired");
    agent.key = new;
    let decision = on_replica(agent.sign(&agent.action("email:send", Some("c@example.com")))).await;
    assert_eq!(decision["allowed"], true, "{decision}");

    // A revocation on one is effective on the other for the very next request.
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/revoke", agent.id),
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let decision = on_replica(agent.sign(&agent.action("email:send", Some("c@example.com")))).await;
    assert_eq!(decision["reason"], "agent_revoked");

    // Both replicas appended to one chain, which verifies.
    let report: serde_json::Value = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], true, "{report}");
}

async fn a_burst_of_bad_signatures_raises_one_alert(backend: Backend) {
    let app = spawn_app(backend).await;
    let (owner, agent) = setup(&app).await;
    for i in 0..7 {
        let signed = agent.sign(&agent.action("email:send", Some("a@example.com")));
        let mut env: Envelope = serde_json::from_str(&signed).unwrap();
        let forged = agent.action("email:send", Some(&format!("victim{i}@example.com")));
        env.payload = b64::encode(forged.to_bytes());
        assert_eq!(decide(&app, env.to_json()).await["reason"], "bad_signature");
    }
    let alerts: serde_json::Value = app
        .with(
            Method::GET,
            "/api/v1/alerts?kind=bad_signature_burst",
            &owner,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = alerts["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "one open alert per agent and kind: {alerts}");
    assert_eq!(list[0]["agent_id"], agent.id.as_str());
    assert_eq!(
        list[0]["occurrences"], 3,
        "raised at the 5th, absorbed the 6th and 7th"
    );
}
both_backends!(a_burst_of_bad_signatures_raises_one_alert);
