//! Signed actions decided by the server: allowed, denied (a value, not an error),
//! bound to their arguments, never replayable.

use agentid::{DecisionReason, Enforcement};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_denied_actions_are_decisions() {
    let app = spawn_app().await;
    let agent = app
        .agent("mailer", &app.key_dir("mailer"))
        .connect()
        .await
        .unwrap();
    app.grant(agent.id(), "email:send", Some("*@example.com"))
        .await;

    let args = json!({"to": "bob@example.com", "subject": "Quarterly report"});
    let allowed = agent
        .verify("email:send", Some("bob@example.com"), Some(&args))
        .await
        .unwrap();
    assert!(allowed.allowed);
    assert_eq!(allowed.reason, DecisionReason::Allowed);
    assert_eq!(allowed.agent_id, agent.id());
    assert_eq!(allowed.capability, "email:send");
    assert_eq!(allowed.resource.as_deref(), Some("bob@example.com"));
    assert_eq!(allowed.enforcement, Enforcement::Enforce);
    assert!(!allowed.receipt.is_empty());

    let out_of_scope = agent
        .verify("email:send", Some("eve@evil.example"), None)
        .await
        .unwrap();
    assert!(!out_of_scope.allowed);
    assert_eq!(out_of_scope.reason, DecisionReason::ResourceNotInScope);

    let not_granted = agent
        .verify("files:delete", Some("/etc/passwd"), None)
        .await
        .unwrap();
    assert!(!not_granted.allowed);
    assert_eq!(not_granted.reason, DecisionReason::CapabilityNotGranted);

    // The denials were recorded: an alert was raised.
    let alerts = app
        .admin
        .list_alerts(&agentid::AlertQuery {
            agent_id: Some(agent.id().to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(alerts
        .alerts
        .iter()
        .any(|a| a.kind == "capability_violation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_action_binds_its_arguments_and_cannot_be_replayed() {
    let app = spawn_app().await;
    let agent = app
        .agent("files", &app.key_dir("files"))
        .connect()
        .await
        .unwrap();
    app.grant(agent.id(), "files:read", None).await;
    let rp = agentid::RelyingParty::new(&app.address).unwrap();

    let args = json!({"path": "/srv/a.txt", "mode": "r"});
    let signed = agent
        .sign_action("files:read", Some("/srv/a.txt"), Some(&args))
        .unwrap();
    let payload = agentid_protocol::envelope::ParsedEnvelope::parse(signed.json().as_bytes())
        .unwrap()
        .payload;
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        payload["args_digest"],
        agentid::signing::args_digest(&json!({"mode": "r", "path": "/srv/a.txt"})).as_str()
    );
    assert_eq!(payload["aud"], app.address.as_str());

    let first = rp.decide(signed.json()).await.unwrap();
    assert!(first.allowed, "{first:?}");
    let again = rp.decide(signed.json()).await.unwrap();
    assert!(!again.allowed);
    assert_eq!(again.reason, DecisionReason::ReplayedNonce);

    // A tampered envelope does not verify: another signature over the same payload
    // by a key that is not the agent's.
    let stranger = agentid::AgentKey::generate();
    let forged = agentid::signing::action_envelope(
        &stranger,
        agent.id(),
        &agent.audience(),
        "files:read",
        Some("/srv/a.txt"),
        None,
        agentid::signing::now_unix(),
        &agentid::signing::new_nonce(),
    )
    .unwrap();
    let denied = rp.decide(forged.json()).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.reason, DecisionReason::UnknownKey);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_mode_allows_policy_failures_and_says_so() {
    let app = spawn_app().await;
    let agent = app
        .agent("watched", &app.key_dir("watched"))
        .connect()
        .await
        .unwrap();
    assert_eq!(app.admin.enforcement().await.unwrap().mode, "enforce");
    assert_eq!(
        app.admin.set_enforcement("monitor").await.unwrap().mode,
        "monitor"
    );
    let decision = agent.verify("db:drop", None, None).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.reason, DecisionReason::CapabilityNotGranted);
    assert_eq!(decision.enforcement, Enforcement::Monitor);
}
