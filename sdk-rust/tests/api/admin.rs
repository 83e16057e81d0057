//! The admin client against the real management API: every area once, with
//! effects checked through another call.

use agentid::{AgentQuery, AlertQuery, AuditQuery, DecisionReason};

use crate::helpers::{spawn_app, OWNER_EMAIL, OWNER_PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_keys_and_the_organization() {
    let app = spawn_app().await;
    let (owner, tokens) = agentid::AdminClient::login(app.client(), OWNER_EMAIL, OWNER_PASSWORD)
        .await
        .unwrap();
    assert_eq!(tokens.token_type, "Bearer");
    assert!(!format!("{tokens:?}").contains(&tokens.access_token));

    let me = owner.me().await.unwrap();
    assert_eq!(me.credential, "user");
    assert_eq!(me.user.email, OWNER_EMAIL);
    assert_eq!(me.user.role, "owner");
    assert!(me.permissions.iter().any(|p| p == "agents:write"));
    let org = owner.organization().await.unwrap();
    assert_eq!(org, me.organization);
    assert_eq!(app.admin.me().await.unwrap().credential, "api_key");

    // Users.
    let dev = owner
        .create_user("dev@example.com", "another long password", "developer")
        .await
        .unwrap();
    assert_eq!(dev.role, "developer");
    assert_eq!(owner.get_user(&dev.id).await.unwrap(), dev);
    let viewer = owner
        .update_user(&dev.id, Some("viewer"), None)
        .await
        .unwrap();
    assert_eq!(viewer.role, "viewer");
    assert!(!viewer.disabled);
    let users = owner.list_users().await.unwrap();
    assert_eq!(users.len(), 2);

    // API keys: created, listed without secret, revoked.
    let created = owner
        .create_api_key("ci", &["agents:read"], None)
        .await
        .unwrap();
    assert!(created.key.starts_with(&created.api_key.prefix));
    let keys = owner.list_api_keys().await.unwrap();
    let listed = keys.iter().find(|k| k.id == created.api_key.id).unwrap();
    assert!(listed.revoked_at.is_none());
    let as_ci = agentid::AdminClient::new(&app.address, created.key.clone()).unwrap();
    assert!(as_ci.list_agents(&AgentQuery::default()).await.is_ok());
    owner.delete_api_key(&created.api_key.id).await.unwrap();
    assert!(as_ci.list_agents(&AgentQuery::default()).await.is_err());

    // Sessions; refresh; logout ends the session.
    let sessions = owner.list_sessions().await.unwrap();
    assert!(sessions.iter().any(|s| s.current));
    let pair = agentid::AdminClient::refresh(app.client(), &tokens.refresh_token)
        .await
        .unwrap();
    let refreshed = agentid::AdminClient::with_client(app.client(), pair.access_token.clone());
    assert_eq!(refreshed.me().await.unwrap().user.email, OWNER_EMAIL);
    refreshed.logout().await.unwrap();
    assert!(refreshed.me().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_grants_alerts_audit_and_trust() {
    let app = spawn_app().await;
    let admin = &app.admin;
    let agent = app
        .agent("managed", &app.key_dir("managed"))
        .connect()
        .await
        .unwrap();

    // Lookup and update.
    let found = admin.find_agent("managed").await.unwrap().unwrap();
    assert_eq!(found.id, agent.id());
    assert!(admin.find_agent("absent").await.unwrap().is_none());
    let updated = admin
        .update_agent(
            agent.id(),
            Some("now described"),
            Some(&serde_json::json!({"team": "ops"})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(updated.description, "now described");
    assert_eq!(updated.metadata["team"], "ops");

    // Capabilities and grants.
    let cap = admin
        .create_capability("reports:export", "Export reports", "medium", 0)
        .await
        .unwrap();
    assert_eq!(cap.risk_level, "medium");
    assert_eq!(admin.get_capability("reports:export").await.unwrap(), cap);
    let cap = admin
        .update_capability("reports:export", None, Some("high"), None)
        .await
        .unwrap();
    assert_eq!(cap.risk_level, "high");
    assert!(admin
        .list_capabilities()
        .await
        .unwrap()
        .iter()
        .any(|c| c.name == "reports:export"));
    let grant = admin
        .grant_capability(agent.id(), "reports:export", Some("q*"), None)
        .await
        .unwrap();
    assert_eq!(grant.state, "active");
    assert!(
        agent
            .verify("reports:export", Some("q3"), None)
            .await
            .unwrap()
            .allowed
    );
    let revoked = admin.revoke_grant(agent.id(), &grant.id).await.unwrap();
    assert_eq!(revoked.state, "revoked");
    let grants = admin.list_grants(agent.id()).await.unwrap();
    assert_eq!(grants.len(), 1);
    let denied = agent
        .verify("reports:export", Some("q3"), None)
        .await
        .unwrap();
    assert_eq!(denied.reason, DecisionReason::CapabilityNotGranted);

    // The denial raised an alert: read, acknowledge, resolve.
    let alerts = admin
        .list_alerts(&AlertQuery {
            agent_id: Some(agent.id().to_owned()),
            status: Some("open".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let alert = alerts
        .alerts
        .first()
        .expect("an alert for the denial")
        .clone();
    assert_eq!(admin.get_alert(&alert.id).await.unwrap().id, alert.id);
    assert_eq!(
        admin.acknowledge_alert(&alert.id).await.unwrap().status,
        "acknowledged"
    );
    let resolved = admin
        .resolve_alert(&alert.id, Some("expected in test"))
        .await
        .unwrap();
    assert_eq!(resolved.status, "resolved");
    assert_eq!(
        resolved.resolution_note.as_deref(),
        Some("expected in test")
    );

    // Lifecycle: suspend denies, reactivate restores.
    let suspended = admin
        .suspend_agent(agent.id(), Some("investigating"))
        .await
        .unwrap();
    assert_eq!(suspended.status, "suspended");
    let d = agent.verify("reports:export", None, None).await.unwrap();
    assert_eq!(d.reason, DecisionReason::AgentSuspended);
    assert_eq!(
        admin
            .reactivate_agent(agent.id(), None)
            .await
            .unwrap()
            .status,
        "active"
    );

    // Trust and audit.
    let trust = admin.agent_trust(agent.id()).await.unwrap();
    assert!((0.0..=100.0).contains(&trust.score));
    assert!(!trust.factors.is_empty());
    let audit = admin
        .list_audit(&AuditQuery {
            agent_id: Some(agent.id().to_owned()),
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<&str> = audit.records.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"agent.registered"), "{actions:?}");
    assert!(actions.contains(&"agent.suspended"), "{actions:?}");
    let chain = admin.verify_audit().await.unwrap();
    assert!(chain.valid, "{chain:?}");
    assert!(chain.records > 0);

    // Trust policy, history and attestations.
    let mut policy = admin.trust_policy().await.unwrap();
    assert_eq!(policy.weights.len(), 9, "{policy:?}");
    assert_eq!(policy.alert_below, Some(60.0));
    policy.alert_below = Some(70.0);
    let set = admin.set_trust_policy(&policy).await.unwrap();
    assert_eq!(set, policy);
    policy.suspend_below = Some(90.0);
    let refused = admin.set_trust_policy(&policy).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(agentid::ErrorCode::InvalidRequest),
        "{refused}"
    );
    let attested = admin
        .attest_agent(agent.id(), 1.0, "reviewed by the security team")
        .await
        .unwrap();
    let history = admin
        .trust_history(agent.id(), None, Some(10))
        .await
        .unwrap();
    assert_eq!(history.points[0].cause, "attestation", "{history:?}");
    assert_eq!(history.points[1].cause, "policy_changed", "{history:?}");
    assert_eq!(
        history.points.last().map(|p| p.cause.as_str()),
        Some("registered")
    );
    assert!((0.0..=100.0).contains(&attested.score));

    // Revocation is final.
    assert_eq!(
        admin
            .revoke_agent(agent.id(), Some("done"))
            .await
            .unwrap()
            .status,
        "revoked"
    );
    let d = agent.verify("reports:export", None, None).await.unwrap();
    assert!(!d.allowed);
}
