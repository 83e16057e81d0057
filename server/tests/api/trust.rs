//! Trust: an agent's score, its breakdown and history move as documented through
//! good behaviour, violations, an attestation, a resolved alert and a rotation; the
//! alert threshold raises an alert and marks decisions; the suspension threshold
//! suspends the agent, effective on its next action; the policy is validated.

use reqwest::Method;
use serde_json::{json, Value};

use crate::agents::{
    active_agent, catalogue, decide, get_json, grant, new_key, post_envelope, rotation,
    set_trust_policy, TestAgent,
};
use crate::both_backends;
use crate::helpers::{assert_error, spawn_app, Backend, TestApp, USER_PW};

fn factor<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["factors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["factor"] == name)
        .unwrap_or_else(|| panic!("no factor {name} in {report}"))
}

fn score(report: &Value) -> f64 {
    report["score"].as_f64().unwrap()
}

async fn trust(app: &TestApp, owner: &str, agent: &TestAgent) -> Value {
    get_json(app, &format!("/api/v1/agents/{}/trust", agent.id), owner).await
}

async fn history(app: &TestApp, owner: &str, agent: &TestAgent) -> Vec<Value> {
    let page = get_json(
        app,
        &format!("/api/v1/agents/{}/trust/history", agent.id),
        owner,
    )
    .await;
    page["points"].as_array().unwrap().clone()
}

async fn open_alerts(app: &TestApp, owner: &str, kind: &str) -> Vec<Value> {
    let page = get_json(
        app,
        &format!("/api/v1/alerts?kind={kind}&status=open"),
        owner,
    )
    .await;
    page["alerts"].as_array().unwrap().clone()
}

async fn violate(app: &TestApp, agent: &TestAgent) -> Value {
    let decision = decide(app, agent.sign(&agent.action("payments:send", None))).await;
    assert_eq!(decision["reason"], "capability_not_granted", "{decision}");
    decision
}

async fn score_moves_through_behaviour_thresholds_and_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = crate::agents::owner_token(&app, "Acme").await;
    // Thresholds a few violations away from a good new agent's score.
    let policy = set_trust_policy(
        &app,
        &owner,
        json!({"weights": null, "key_max_age_days": 90, "alert_below": 75, "suspend_below": 60}),
    )
    .await;
    assert_eq!(policy["alert_below"], 75.0);
    assert_eq!(policy["weights"]["verification"], 0.2);
    catalogue(&app, &owner, "email:send", 0).await;
    catalogue(&app, &owner, "payments:send", 0).await;
    let agent = active_agent(&app, &owner, "worker").await;
    grant(&app, &owner, &agent.id, "email:send", None).await;

    // A new agent: measured, low confidence, the factors without data say so.
    let start = trust(&app, &owner, &agent).await;
    assert_eq!(start["measured"], true);
    assert!(start["confidence"].as_f64().unwrap() < 0.5, "{start}");
    assert!(factor(&start, "verification")["value"].is_null());
    assert_eq!(factor(&start, "verification")["contribution"], 0.0);
    let points = history(&app, &owner, &agent).await;
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["cause"], "registered");

    // Good behaviour: allowed, no alert flag; verification has data; the score and
    // the confidence rise.
    for _ in 0..10 {
        let d = decide(&app, agent.sign(&agent.action("email:send", None))).await;
        assert_eq!(d["allowed"], true, "{d}");
        assert_eq!(d["trust_alert"], false);
    }
    let good = trust(&app, &owner, &agent).await;
    assert_eq!(factor(&good, "verification")["value"], 1.0);
    assert!(score(&good) > score(&start), "{good}");
    assert!(good["confidence"].as_f64().unwrap() > start["confidence"].as_f64().unwrap());
    assert!(score(&good) > 75.0, "{good}");
    assert!(open_alerts(&app, &owner, "trust_below_threshold")
        .await
        .is_empty());

    // One violation of a high-risk capability: the violations factor falls, the score
    // falls below the alert threshold (75), a trust alert is raised, and the history
    // says what changed it.
    violate(&app, &agent).await;
    let after = trust(&app, &owner, &agent).await;
    assert!(score(&after) < 75.0 && score(&after) >= 60.0, "{after}");
    let violations = factor(&after, "capability_violations");
    assert!(violations["value"].as_f64().unwrap() < 1.0);
    assert!(
        violations["reason"]
            .as_str()
            .unwrap()
            .contains("capability violations"),
        "{violations}"
    );
    let alerts = open_alerts(&app, &owner, "trust_below_threshold").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["agent_id"], agent.id.as_str());
    let points = history(&app, &owner, &agent).await;
    let latest = &points[0];
    assert_eq!(latest["cause"], "decisions");
    assert_eq!(latest["details"]["events"]["capability_violation"], 1);
    assert_eq!(latest["details"]["alert_threshold"], 75.0);
    assert!(latest["change"].as_f64().unwrap() < 0.0, "{latest}");
    assert_eq!(
        latest["changed"][0]["factor"], "capability_violations",
        "{latest}"
    );
    assert!(latest["changed"][0]["change"].as_f64().unwrap() < 0.0);

    // Still allowed while above the suspension threshold, but flagged.
    let d = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(d["allowed"], true);
    assert_eq!(d["trust_alert"], true, "{d}");
    assert!(d["message"].as_str().unwrap().contains("alert threshold"));

    // More violations until the score falls below 60: the agent is suspended in the
    // same transaction, and its very next action is refused for that reason.
    let mut suspended = false;
    for _ in 0..10 {
        violate(&app, &agent).await;
        let agent_now = get_json(&app, &format!("/api/v1/agents/{}", agent.id), &owner).await;
        if agent_now["status"] == "suspended" {
            assert!(
                agent_now["status_reason"]
                    .as_str()
                    .unwrap()
                    .contains("suspension threshold 60"),
                "{agent_now}"
            );
            suspended = true;
            break;
        }
        assert!(score(&trust(&app, &owner, &agent).await) >= 60.0);
    }
    assert!(suspended, "the score never fell below 60");
    assert!(score(&trust(&app, &owner, &agent).await) < 60.0);
    let d = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(d["allowed"], false);
    assert_eq!(d["reason"], "agent_suspended_low_trust", "{d}");
    assert!(d["message"]
        .as_str()
        .unwrap()
        .contains("suspension threshold"));
    let audit = get_json(
        &app,
        &format!("/api/v1/audit?action=agent.suspended&agent_id={}", agent.id),
        &owner,
    )
    .await;
    let record = &audit["records"][0];
    assert_eq!(record["actor_type"], "system", "{audit}");
    assert_eq!(record["details"]["reason"], "trust_below_threshold");
    assert_eq!(open_alerts(&app, &owner, "agent_suspended").await.len(), 1);
    assert_eq!(
        history(&app, &owner, &agent).await[0]["details"]["suspended_below"],
        60.0
    );

    // An administrator attests: validated, permissioned, audited, in the history.
    let path = format!("/api/v1/agents/{}/trust/attestations", agent.id);
    app.add_user(&owner, "dev@acme.example", USER_PW, "developer")
        .await;
    let developer = app.login("dev@acme.example", USER_PW).await.access;
    let response = app
        .with(Method::POST, &path, &developer)
        .json(&json!({"value": 1, "comment": "reviewed"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403).await;
    for bad in [
        json!({"value": 2, "comment": "too much"}),
        json!({"value": 1, "comment": " "}),
        json!({"value": 1}),
    ] {
        let response = app
            .with(Method::POST, &path, &owner)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_error(response, 400).await;
    }
    let before = trust(&app, &owner, &agent).await;
    let response = app
        .with(Method::POST, &path, &owner)
        .json(&json!({"value": 1, "comment": "payments access was a misconfiguration"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let attested: Value = response.json().await.unwrap();
    assert_eq!(factor(&attested, "attestation")["value"], 1.0);
    assert!(score(&attested) > score(&before), "{attested}");
    let latest = &history(&app, &owner, &agent).await[0];
    assert_eq!(latest["cause"], "attestation");
    assert_eq!(latest["details"]["value"], 1.0);
    assert_eq!(latest["changed"][0]["factor"], "attestation");
    let audit = get_json(&app, "/api/v1/audit?action=trust.attested", &owner).await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 1);

    // Reactivated by an administrator, the agent acts again; a rising score does not
    // suspend it again.
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/reactivate", agent.id),
            &owner,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let d = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(d["allowed"], true, "{d}");
    let d = decide(&app, agent.sign(&agent.action("email:send", None))).await;
    assert_eq!(d["allowed"], true, "{d}");

    // Resolving the violation alert lifts the open-alerts factor at once.
    let before = trust(&app, &owner, &agent).await;
    let violation = &open_alerts(&app, &owner, "capability_violation").await[0];
    let response = app
        .with(
            Method::POST,
            &format!(
                "/api/v1/alerts/{}/resolve",
                violation["id"].as_str().unwrap()
            ),
            &owner,
        )
        .json(&json!({"note": "grant narrowed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after = trust(&app, &owner, &agent).await;
    assert!(
        factor(&after, "open_alerts")["value"].as_f64().unwrap()
            > factor(&before, "open_alerts")["value"].as_f64().unwrap()
    );
    assert!(score(&after) > score(&before));
    let latest = &history(&app, &owner, &agent).await[0];
    assert_eq!(latest["cause"], "alert_resolved");
    assert_eq!(latest["details"]["kind"], "capability_violation");

    // A key rotation is a point of its own.
    let new = new_key();
    let response = post_envelope(
        &app,
        &format!("/api/v1/agents/{}/keys/rotate", agent.id),
        rotation(&agent, &new, &[&agent.key, &new]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let points = history(&app, &owner, &agent).await;
    assert_eq!(points[0]["cause"], "key_rotated");

    // The history is newest first, each point chained to the one before, and pages.
    for pair in points.windows(2) {
        assert_eq!(pair[0]["previous_score"], pair[1]["score"], "{pair:?}");
        assert!(pair[0]["at"].as_str() >= pair[1]["at"].as_str());
    }
    assert_eq!(points.last().unwrap()["cause"], "registered");
    let first_page = get_json(
        &app,
        &format!("/api/v1/agents/{}/trust/history?limit=2", agent.id),
        &owner,
    )
    .await;
    let cursor = first_page["next_before"].as_str().unwrap();
    let second_page = get_json(
        &app,
        &format!(
            "/api/v1/agents/{}/trust/history?limit=2&before={cursor}",
            agent.id
        ),
        &owner,
    )
    .await;
    assert_eq!(second_page["points"][0]["cursor"], points[2]["cursor"]);
    let response = app
        .with(
            Method::GET,
            &format!("/api/v1/agents/{}/trust/history?before=nonsense", agent.id),
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_error(response, 400).await;
}
both_backends!(score_moves_through_behaviour_thresholds_and_history);

async fn the_policy_is_validated_and_scoped(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = crate::agents::owner_token(&app, "Acme").await;
    let stranger = crate::agents::owner_token(&app, "Other").await;

    // The defaults are stated, not implied.
    let policy = get_json(&app, "/api/v1/organization/trust-policy", &owner).await;
    assert_eq!(
        policy,
        json!({
            "weights": {
                "verification": 0.2, "capability_violations": 0.2, "replays": 0.1,
                "bad_signatures": 0.05, "open_alerts": 0.1, "key_hygiene": 0.1,
                "agent_age": 0.1, "activity_anomaly": 0.1, "attestation": 0.05
            },
            "key_max_age_days": 90,
            "alert_below": 60.0,
            "suspend_below": 40.0
        })
    );

    let weights = json!({
        "verification": 0.5, "capability_violations": 0.5, "replays": 0.0,
        "bad_signatures": 0.0, "open_alerts": 0.0, "key_hygiene": 0.0,
        "agent_age": 0.0, "activity_anomaly": 0.0, "attestation": 0.0
    });
    for bad in [
        // Weights that do not sum to 1, miss a factor, or are negative.
        json!({"weights": {"verification": 1.0}, "key_max_age_days": 90, "alert_below": 60, "suspend_below": 40}),
        json!({"weights": {"verification": 0.6, "capability_violations": 0.5, "replays": 0.0,
            "bad_signatures": 0.0, "open_alerts": 0.0, "key_hygiene": 0.0, "agent_age": 0.0,
            "activity_anomaly": 0.0, "attestation": -0.1}, "key_max_age_days": 90, "alert_below": 60, "suspend_below": 40}),
        // Thresholds out of range or in the wrong order; a missing field.
        json!({"weights": null, "key_max_age_days": 90, "alert_below": 101, "suspend_below": 40}),
        json!({"weights": null, "key_max_age_days": 90, "alert_below": 40, "suspend_below": 60}),
        json!({"weights": null, "key_max_age_days": 0, "alert_below": 60, "suspend_below": 40}),
        json!({"weights": null, "alert_below": 60, "suspend_below": 40}),
    ] {
        let response = app
            .with(Method::PUT, "/api/v1/organization/trust-policy", &owner)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_error(response, 400).await;
    }

    // An agent's score follows the organization's weights at once.
    catalogue(&app, &owner, "email:send", 0).await;
    let agent = active_agent(&app, &owner, "weighted").await;
    let set = set_trust_policy(
        &app,
        &owner,
        json!({"weights": weights, "key_max_age_days": null, "alert_below": null, "suspend_below": null}),
    )
    .await;
    assert_eq!(set["weights"]["verification"], 0.5);
    let report = get_json(&app, &format!("/api/v1/agents/{}/trust", agent.id), &owner).await;
    assert_eq!(factor(&report, "verification")["weight"], 0.5);
    assert!(
        factor(&report, "key_hygiene")["value"].is_null(),
        "{report}"
    );
    let points = get_json(
        &app,
        &format!("/api/v1/agents/{}/trust/history", agent.id),
        &owner,
    )
    .await;
    assert_eq!(points["points"][0]["cause"], "policy_changed");
    let audit = get_json(
        &app,
        "/api/v1/audit?action=org.trust_policy_changed",
        &owner,
    )
    .await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 1);

    // Only owners change it; another organization neither sees it nor the agent.
    app.add_user(&owner, "admin@acme.example", USER_PW, "admin")
        .await;
    let admin = app.login("admin@acme.example", USER_PW).await.access;
    let response = app
        .with(Method::PUT, "/api/v1/organization/trust-policy", &admin)
        .json(&json!({"weights": null, "key_max_age_days": null, "alert_below": null, "suspend_below": null}))
        .send()
        .await
        .unwrap();
    assert_error(response, 403).await;
    let theirs = get_json(&app, "/api/v1/organization/trust-policy", &stranger).await;
    assert_eq!(theirs["alert_below"], 60.0);
    for path in [
        format!("/api/v1/agents/{}/trust", agent.id),
        format!("/api/v1/agents/{}/trust/history", agent.id),
    ] {
        let response = app
            .with(Method::GET, &path, &stranger)
            .send()
            .await
            .unwrap();
        assert_error(response, 404).await;
    }
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/agents/{}/trust/attestations", agent.id),
            &stranger,
        )
        .json(&json!({"value": -1, "comment": "not mine"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 404).await;
}
both_backends!(the_policy_is_validated_and_scoped);
