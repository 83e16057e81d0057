//! Security alerts over HTTP, the audit log's query filters, and `audit verify`.

use diesel::connection::SimpleConnection;
use reqwest::Method;
use serde_json::{json, Value};

use agentid_server::alerts::{self, AlertKind, NewAlert, Severity};
use agentid_server::audit::{self, ActorType, NewEvent, Outcome};
use agentid_server::config::Config;
use agentid_server::db::{write_transaction, Database};

use crate::both_backends;
use crate::helpers::{assert_error, spawn_app, Backend, TestApp};
use crate::helpers::{OWNER_PW, USER_PW};

const AGENT: &str = "5d1c7c0e-0000-4000-8000-000000000001";
const OTHER_AGENT: &str = "5d1c7c0e-0000-4000-8000-000000000002";

/// A connection pool on the test's database, as an operator's tool would open it.
fn database(app: &TestApp) -> Database {
    let config = Config::from_vars(app.db.vars()).unwrap();
    Database::connect(&config.database).unwrap()
}

/// Creates an organization with its owner; returns (org id, owner's access token).
async fn org_with_owner(app: &TestApp, name: &str, email: &str) -> (String, String) {
    let created = app.create_owner(name, email, OWNER_PW);
    let org = created["organization"]["id"].as_str().unwrap().to_owned();
    let session = app.login(email, OWNER_PW).await;
    (org, session.access)
}

async fn get_json(app: &TestApp, path: &str, credential: &str) -> Value {
    let response = app
        .with(Method::GET, path, credential)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// Runs `agentid-server audit verify <args>` with only `vars` in its environment;
/// returns its exit status, its stdout as JSON lines, and its stderr.
fn audit_verify(vars: &[(String, String)], args: &[&str]) -> (i32, Vec<Value>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentid-server"))
        .args(["audit", "verify"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (
        output.status.code().unwrap(),
        lines,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs SQL as someone with direct database access would, around the append-only
/// triggers.
fn tamper(db: &Database, sql: &str) {
    let mut conn = db.get().unwrap();
    let drop_triggers = match db.backend() {
        agentid_server::db::Backend::Sqlite => "DROP TRIGGER IF EXISTS audit_records_no_update;",
        agentid_server::db::Backend::Postgres => {
            "DROP TRIGGER IF EXISTS audit_records_no_update_delete ON audit_records;"
        }
    };
    conn.batch_execute(drop_triggers).unwrap();
    conn.batch_execute(sql).unwrap();
}

async fn audit_verify_detects_an_edited_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let (acme, owner) = org_with_owner(&app, "Acme", "owner@acme.example").await;
    app.add_user(&owner, "dev@acme.example", USER_PW, "developer")
        .await;
    app.add_user(&owner, "viewer@acme.example", USER_PW, "viewer")
        .await;
    let (other, _) = org_with_owner(&app, "Other", "owner@other.example").await;
    let vars = app.db.vars();

    let (status, lines, stderr) = audit_verify(&vars, &[]);
    assert_eq!(status, 0, "{stderr}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["org_id"], acme.as_str());
    assert_eq!(lines[1]["org_id"], other.as_str());
    for line in &lines {
        assert_eq!(line["valid"], true, "{line}");
        assert!(line["records"].as_i64().unwrap() >= 3, "{line}");
        assert_eq!(line["records"], line["head_seq"]);
        assert_eq!(line["first_bad_seq"], Value::Null);
        assert_eq!(line["reason"], Value::Null);
        assert_eq!(line["head_hash"].as_str().unwrap().len(), 64);
    }
    let acme_records = lines[0]["records"].as_i64().unwrap();

    let (status, only, _) = audit_verify(&vars, &["--org", &acme]);
    assert_eq!(status, 0);
    assert_eq!(only, lines[..1]);

    // Someone with database access edits record 3 of Acme's chain.
    let db = database(&app);
    tamper(
        &db,
        &format!(
            "UPDATE audit_records SET details = '{{\"email\":\"mallory@acme.example\",\"role\":\"owner\"}}'
             WHERE org_id = '{acme}' AND seq = 3"
        ),
    );

    let (status, lines, stderr) = audit_verify(&vars, &[]);
    assert_eq!(status, 1, "{stderr}");
    assert_eq!(lines.len(), 2);
    let broken = &lines[0];
    assert_eq!(broken["org_id"], acme.as_str());
    assert_eq!(broken["valid"], false);
    assert_eq!(broken["first_bad_seq"], 3, "{broken}");
    assert_eq!(broken["records"], 3);
    assert!(broken["reason"].as_str().unwrap().contains("content"));
    assert_eq!(broken["head_seq"], acme_records);
    // The other organization's chain is untouched.
    assert_eq!(lines[1]["org_id"], other.as_str());
    assert_eq!(lines[1]["valid"], true);
    let (status, only, _) = audit_verify(&vars, &["--org", &other]);
    assert_eq!((status, only[0]["valid"].clone()), (0, json!(true)));

    // The API reports the same break.
    let report = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], false);
    assert_eq!(report["first_bad_seq"], 3, "{report}");
    assert_eq!(report["records"], 3);
}
both_backends!(audit_verify_detects_an_edited_record);

#[test]
fn audit_verify_usage_and_configuration_errors() {
    let db = crate::helpers::TestDb::new(Backend::Sqlite);
    let vars = db.vars();
    crate::helpers::create_owner(&vars, "Acme", "owner@acme.example", OWNER_PW);

    let unknown = uuid::Uuid::new_v4().to_string();
    let (status, lines, stderr) = audit_verify(&vars, &["--org", &unknown]);
    assert_eq!(status, 2, "{stderr}");
    assert!(lines.is_empty());
    assert!(stderr.contains(&unknown), "{stderr}");

    let mut bad = vars.clone();
    bad.push(("AGENTID_DB_POOL_SIZE".to_owned(), "lots".to_owned()));
    let (status, lines, stderr) = audit_verify(&bad, &[]);
    assert_eq!(status, 2, "{stderr}");
    assert!(lines.is_empty());
    assert!(stderr.contains("AGENTID_DB_POOL_SIZE"), "{stderr}");

    // A database that cannot be read is neither "valid" nor "broken".
    let mut unreachable = vars.clone();
    unreachable.extend([
        (
            "DATABASE_URL".to_owned(),
            "postgres://nobody@127.0.0.1:1/none".to_owned(),
        ),
        ("AGENTID_DB_POOL_TIMEOUT_MS".to_owned(), "500".to_owned()),
    ]);
    let (status, lines, stderr) = audit_verify(&unreachable, &[]);
    assert_eq!(status, 3, "{stderr}");
    assert!(lines.is_empty());
}

/// Appends an event to `org`'s chain directly, as the agent features will.
fn append(db: &Database, org: &str, event: &NewEvent<'_>, at_ms: i64) -> i64 {
    let mut conn = db.get().unwrap();
    write_transaction(&mut conn, |conn| audit::append(conn, org, event, at_ms))
        .unwrap()
        .seq
}

fn agent_event<'a>(
    actor: (ActorType, &'a str),
    action: &'a str,
    target: Option<(&'a str, &'a str)>,
    outcome: Outcome,
) -> NewEvent<'a> {
    NewEvent {
        actor_type: actor.0,
        actor_id: Some(actor.1),
        action,
        target_type: target.map(|t| t.0),
        target_id: target.map(|t| t.1),
        outcome,
        details: json!({}),
        request_id: None,
    }
}

fn seqs(page: &Value) -> Vec<i64> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect()
}

async fn audit_log_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, owner) = org_with_owner(&app, "Acme", "owner@acme.example").await;
    let (other_org, _) = org_with_owner(&app, "Other", "owner@other.example").await;
    let db = database(&app);
    let t0 = 1_900_000_000_000_i64; // 2030-03-17T17:46:40Z
    let user = "7b6f0d2e-2f5a-4c11-8d7e-0a9b1c2d3e4f";
    let s1 = append(
        &db,
        &org,
        &agent_event(
            (ActorType::Agent, AGENT),
            "action.verified",
            None,
            Outcome::Success,
        ),
        t0,
    );
    let s2 = append(
        &db,
        &org,
        &agent_event(
            (ActorType::User, user),
            "agent.suspended",
            Some(("agent", AGENT)),
            Outcome::Success,
        ),
        t0 + 1_000,
    );
    let s3 = append(
        &db,
        &org,
        &agent_event(
            (ActorType::Agent, AGENT),
            "action.verified",
            None,
            Outcome::Denied,
        ),
        t0 + 2_000,
    );
    let s4 = append(
        &db,
        &org,
        &agent_event(
            (ActorType::Agent, OTHER_AGENT),
            "action.verified",
            None,
            Outcome::Denied,
        ),
        t0 + 3_000,
    );
    // The same agent id in another organization stays there.
    append(
        &db,
        &other_org,
        &agent_event(
            (ActorType::Agent, AGENT),
            "action.verified",
            None,
            Outcome::Denied,
        ),
        t0 + 2_500,
    );

    let page = |query: &str| {
        let path = format!("/api/v1/audit?{query}");
        let owner = owner.clone();
        let app = &app;
        async move { get_json(app, &path, &owner).await }
    };
    assert_eq!(
        seqs(&page(&format!("agent_id={AGENT}")).await),
        [s1, s2, s3]
    );
    assert_eq!(seqs(&page("action=action.verified").await), [s1, s3, s4]);
    assert_eq!(seqs(&page("action=agent.*").await), [s2]);
    // Everything the system wrote about people: org.created, user.created, logins.
    let auth = page("action=auth.*").await;
    assert!(!seqs(&auth).is_empty());
    assert!(auth["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["action"].as_str().unwrap().starts_with("auth.")));
    assert_eq!(seqs(&page("outcome=denied").await), [s3, s4]);
    assert_eq!(
        seqs(&page(&format!("agent_id={AGENT}&outcome=denied")).await),
        [s3]
    );
    // since is inclusive, until exclusive.
    assert_eq!(
        seqs(&page("since=2030-03-17T17:46:41Z&until=2030-03-17T17:46:43Z").await),
        [s2, s3]
    );
    assert_eq!(
        seqs(&page("since=2030-03-17T19:46:41%2B02:00&limit=500").await),
        [s2, s3, s4]
    );

    // Pagination composes with the filters.
    let first = page(&format!("agent_id={AGENT}&limit=2")).await;
    assert_eq!(seqs(&first), [s1, s2]);
    assert_eq!(first["next_after"], s2);
    let second = page(&format!("agent_id={AGENT}&limit=2&after={s2}")).await;
    assert_eq!(seqs(&second), [s3]);
    assert_eq!(second["next_after"], Value::Null);

    for bad in [
        "agent_id=not-a-uuid",
        "action=Agent.*",
        "action=*",
        "action=auth.%25",
        "outcome=maybe",
        "since=yesterday",
        "until=2030-13-01T00:00:00Z",
        "since=2030-03-17T17:46:41Z&until=2030-03-17T17:46:41Z",
        "limit=0",
        "limit=501",
        "actor=me",
    ] {
        let response = app
            .with(Method::GET, &format!("/api/v1/audit?{bad}"), &owner)
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 400).await;
        assert_eq!(body["error"]["code"], "invalid_request", "{bad}: {body}");
    }
}
both_backends!(audit_log_filters);

/// Raises an alert directly, as the server's own detectors do.
fn raise(db: &Database, alert: &NewAlert<'_>, at_ms: i64) -> String {
    let mut conn = db.get().unwrap();
    write_transaction(&mut conn, |conn| alerts::raise(conn, alert, at_ms, None))
        .unwrap()
        .alert
        .id
}

fn new_alert<'a>(org: &'a str, agent: Option<&'a str>, kind: AlertKind) -> NewAlert<'a> {
    NewAlert {
        org_id: org,
        agent_id: agent,
        kind,
        severity: Severity::High,
        summary: "An agent attempted an action outside its capabilities.",
        details: json!({ "action": "payments.send" }),
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn alerts_api(backend: Backend) {
    let app = spawn_app(backend).await;
    let (org, owner) = org_with_owner(&app, "Acme", "owner@acme.example").await;
    let (other_org, stranger) = org_with_owner(&app, "Other", "owner@other.example").await;
    app.add_user(&owner, "viewer@acme.example", USER_PW, "viewer")
        .await;
    let viewer = app.login("viewer@acme.example", USER_PW).await.access;
    let db = database(&app);
    let t0 = 1_900_000_000_000_i64;

    let violation = raise(
        &db,
        &new_alert(&org, Some(AGENT), AlertKind::CapabilityViolation),
        t0,
    );
    let replay = raise(
        &db,
        &new_alert(&org, Some(OTHER_AGENT), AlertKind::Replay),
        t0 + 1_000,
    );
    let burst = raise(
        &db,
        &new_alert(&org, None, AlertKind::BadSignatureBurst),
        t0 + 2_000,
    );
    // A second occurrence: same alert, moved to the top.
    assert_eq!(
        raise(
            &db,
            &new_alert(&org, Some(AGENT), AlertKind::CapabilityViolation),
            t0 + 3_000
        ),
        violation
    );
    let foreign = raise(
        &db,
        &new_alert(&other_org, Some(AGENT), AlertKind::Replay),
        t0,
    );

    // Reading needs alerts:read, which viewers have.
    let page = get_json(&app, "/api/v1/alerts", &viewer).await;
    assert_eq!(
        ids(&page),
        [violation.clone(), burst.clone(), replay.clone()]
    );
    assert_eq!(page["next_after"], Value::Null);
    let first = &page["alerts"][0];
    assert_eq!(first["org_id"], org.as_str());
    assert_eq!(first["agent_id"], AGENT);
    assert_eq!(first["kind"], "capability_violation");
    assert_eq!(first["severity"], "high");
    assert_eq!(first["status"], "open");
    assert_eq!(first["occurrences"], 2);
    assert_eq!(first["details"], json!({ "action": "payments.send" }));
    assert_eq!(first["first_seen_at"], "2030-03-17T17:46:40.000Z");
    assert_eq!(first["last_seen_at"], "2030-03-17T17:46:43.000Z");
    assert_eq!(first["acknowledged_at"], Value::Null);
    assert_eq!(page["alerts"][1]["agent_id"], Value::Null);

    // Filters.
    let list = |query: String| {
        let owner = owner.clone();
        let app = &app;
        async move { ids(&get_json(app, &format!("/api/v1/alerts?{query}"), &owner).await) }
    };
    assert_eq!(
        list(format!("agent_id={AGENT}")).await,
        [violation.as_str()]
    );
    assert_eq!(list("kind=replay".into()).await, [replay.as_str()]);
    assert_eq!(list("severity=high&status=open".into()).await.len(), 3);
    assert!(list("severity=low".into()).await.is_empty());
    assert_eq!(
        list("since=2030-03-17T17:46:41Z&until=2030-03-17T17:46:43Z".into()).await,
        [burst.clone(), replay.clone()]
    );

    // Pages of one.
    let mut seen = Vec::new();
    let mut path = "/api/v1/alerts?limit=1".to_owned();
    loop {
        let page = get_json(&app, &path, &owner).await;
        seen.extend(ids(&page));
        match page["next_after"].as_str() {
            Some(next) => path = format!("/api/v1/alerts?limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, [violation.clone(), burst.clone(), replay.clone()]);

    // One alert; another organization's or a malformed id is simply not found.
    let one = get_json(&app, &format!("/api/v1/alerts/{replay}"), &viewer).await;
    assert_eq!(one["kind"], "replay");
    for (path, credential) in [
        (format!("/api/v1/alerts/{foreign}"), &owner),
        (format!("/api/v1/alerts/{replay}"), &stranger),
        ("/api/v1/alerts/not-a-uuid".to_owned(), &owner),
        (format!("/api/v1/alerts/{}", uuid::Uuid::new_v4()), &owner),
    ] {
        let response = app
            .with(Method::GET, &path, credential)
            .send()
            .await
            .unwrap();
        assert_eq!(
            assert_error(response, 404).await["error"]["code"],
            "not_found"
        );
    }
    let listed = get_json(&app, "/api/v1/alerts", &stranger).await;
    assert_eq!(ids(&listed), [foreign.as_str()]);

    // Viewers may not manage alerts.
    let denied = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{violation}/acknowledge"),
            &viewer,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(denied, 403).await["error"]["code"],
        "forbidden"
    );

    // Acknowledge with no body; again with `{}` changes nothing.
    let acked = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{violation}/acknowledge"),
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status(), 200);
    let acked: Value = acked.json().await.unwrap();
    assert_eq!(acked["status"], "acknowledged");
    assert!(acked["acknowledged_at"].is_string());
    assert!(acked["acknowledged_by"].is_string());
    let again: Value = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{violation}/acknowledge"),
            &owner,
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, acked);

    // Resolve with a note, then nothing more is allowed.
    let resolved = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{violation}/resolve"),
            &owner,
        )
        .json(&json!({ "note": "capability narrowed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 200);
    let resolved: Value = resolved.json().await.unwrap();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution_note"], "capability narrowed");
    assert_eq!(resolved["acknowledged_at"], acked["acknowledged_at"]);
    for action in ["acknowledge", "resolve"] {
        let response = app
            .with(
                Method::POST,
                &format!("/api/v1/alerts/{violation}/{action}"),
                &owner,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            assert_error(response, 409).await["error"]["code"],
            "invalid_state",
            "{action}"
        );
    }

    // open → resolved directly, with an empty body.
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{burst}/resolve"),
            &owner,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Bad bodies and ids change nothing.
    let too_long = json!({ "note": "x".repeat(1001) });
    for (path, body, status, code) in [
        (
            format!("/api/v1/alerts/{replay}/resolve"),
            Some(too_long),
            400,
            "invalid_request",
        ),
        (
            format!("/api/v1/alerts/{replay}/resolve"),
            Some(json!({ "notes": "x" })),
            400,
            "invalid_request",
        ),
        (
            format!("/api/v1/alerts/{replay}/acknowledge"),
            Some(json!({ "now": true })),
            400,
            "invalid_request",
        ),
        (
            format!("/api/v1/alerts/{foreign}/resolve"),
            None,
            404,
            "not_found",
        ),
        (
            format!("/api/v1/alerts/{foreign}/acknowledge"),
            None,
            404,
            "not_found",
        ),
        (
            "/api/v1/alerts/nope/resolve".to_owned(),
            None,
            404,
            "not_found",
        ),
    ] {
        let mut request = app.with(Method::POST, &path, &owner);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            assert_error(response, status).await["error"]["code"],
            code,
            "{path}"
        );
    }
    let not_json = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{replay}/resolve"),
            &owner,
        )
        .header("content-type", "text/plain")
        .body("resolved!")
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(not_json, 415).await["error"]["code"],
        "unsupported_media_type"
    );
    let malformed = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{replay}/resolve"),
            &owner,
        )
        .header("content-type", "application/json")
        .body("{\"note\":")
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(malformed, 400).await["error"]["code"],
        "invalid_json"
    );
    let untouched = get_json(&app, &format!("/api/v1/alerts/{replay}"), &owner).await;
    assert_eq!(untouched["status"], "open");
    let foreign_alert = get_json(&app, &format!("/api/v1/alerts/{foreign}"), &stranger).await;
    assert_eq!(foreign_alert["status"], "open");

    // Query strings are checked too.
    for bad in [
        "status=closed",
        "kind=unknown",
        "severity=urgent",
        "agent_id=abc",
        "after=garbage",
        "limit=0",
        "limit=501",
        "since=now",
        "since=2030-03-17T17:46:43Z&until=2030-03-17T17:46:41Z",
        "sort=asc",
    ] {
        let response = app
            .with(Method::GET, &format!("/api/v1/alerts?{bad}"), &owner)
            .send()
            .await
            .unwrap();
        assert_eq!(
            assert_error(response, 400).await["error"]["code"],
            "invalid_request",
            "{bad}"
        );
    }

    // Every change is in the audit log, attributed to the owner; the chain holds.
    let page = get_json(&app, "/api/v1/audit?action=alert.*&limit=500", &owner).await;
    let actions: Vec<(&str, &str)> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["actor_type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("alert.raised", "system"),
            ("alert.raised", "system"),
            ("alert.raised", "system"),
            ("alert.acknowledged", "user"),
            ("alert.resolved", "user"),
            ("alert.resolved", "user"),
        ]
    );
    let report = get_json(&app, "/api/v1/audit/verify", &owner).await;
    assert_eq!(report["valid"], true, "{report}");
}
both_backends!(alerts_api);

async fn alerts_need_credentials(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, owner) = org_with_owner(&app, "Acme", "owner@acme.example").await;
    // An API key without alert permissions is refused; one with them is not.
    let (_, key) = app.add_key(&owner, &["agents:read"]).await;
    let response = app
        .with(Method::GET, "/api/v1/alerts", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(response, 403).await["error"]["code"],
        "forbidden"
    );
    let (_, reader) = app.add_key(&owner, &["alerts:read"]).await;
    let page = get_json(&app, "/api/v1/alerts", &reader).await;
    assert_eq!(page, json!({ "alerts": [], "next_after": null }));
    let response = app
        .with(
            Method::POST,
            &format!("/api/v1/alerts/{}/resolve", uuid::Uuid::new_v4()),
            &reader,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_error(response, 403).await["error"]["code"],
        "forbidden"
    );
    let anonymous = app.get("/api/v1/alerts").await;
    assert_eq!(
        assert_error(anonymous, 401).await["error"]["code"],
        "unauthorized"
    );
}
both_backends!(alerts_need_credentials);
