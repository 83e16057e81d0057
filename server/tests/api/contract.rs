//! The server answers as its OpenAPI document says. schemathesis, a schema-driven
//! fuzzer, reads `/openapi.json` from a real server (one per backend, its own
//! database) and sends every operation generated requests, valid and invalid, with
//! an owner's API key; a response fails the run when its status is not listed for
//! the operation, its content type or body does not match the document, or it is a
//! 5xx. The run is bounded (examples per operation and phase) and seeded, so
//! CI repeats the same requests; `AGENTID_FUZZ_SEED` picks another seed and
//! `AGENTID_FUZZ_EXAMPLES` more examples, to explore further by hand.
//!
//! The data the fuzzer cannot invent (ids of agents, a grant, an alert, users and
//! spare API keys; the owner's login) is created first and offered to it as dictionaries,
//! half of the time, so the operations are exercised past `404` and `400` too.
//! schemathesis is installed into `target/test-venv` by `scripts/test`, at the version
//! pinned in `scripts/test-tools.txt`; the test fails, never skips, without it
//! (`AGENTID_TEST_VENV` names another virtualenv).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;

use crate::agents::{active_agent, catalogue, decide, grant, new_key, owner_token, register};
use crate::both_backends;
use crate::helpers::{assert_error, spawn_app_with, Backend, TestApp, OWNER_PW, USER_PW};

/// The checks that make a run fail (schemathesis's names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Examples per operation and phase, and the seed.
const MAX_EXAMPLES: u32 = 50;
const SEED: u64 = 19;

/// How long a run may take before the test gives up on it.
const TIMEOUT: Duration = Duration::from_secs(600);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The schemathesis version `scripts/test` installs.
fn pinned_version() -> String {
    let tools = std::fs::read_to_string(workspace().join("scripts/test-tools.txt")).unwrap();
    tools
        .lines()
        .find_map(|l| l.trim().strip_prefix("schemathesis=="))
        .expect("scripts/test-tools.txt pins schemathesis==VERSION")
        .to_owned()
}

/// The Python of the virtualenv holding the pinned schemathesis (run as
/// `python -m schemathesis.cli`: a virtualenv copied from another checkout keeps
/// that checkout's path in its `bin/st`). Panics with what to do when it is missing.
fn schemathesis_python() -> PathBuf {
    let venv = std::env::var_os("AGENTID_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/test-venv"));
    let python = venv.join("bin/python");
    let pinned = pinned_version();
    let output = std::process::Command::new(&python)
        .args(["-m", "schemathesis.cli", "--version"])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} cannot be run ({e}): run ./scripts/test",
                python.display()
            )
        });
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && version.trim().ends_with(&format!("version {pinned}")),
        "schemathesis {pinned} must be installed in {} (found `{}`{}): run ./scripts/test, \
         which installs scripts/test-tools.txt there, or set AGENTID_TEST_VENV",
        venv.display(),
        version.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    python
}

/// What the fuzzer is given: real ids and the owner's login.
struct Seeds {
    agent_ids: Vec<String>,
    grant_ids: Vec<String>,
    alert_ids: Vec<String>,
    user_ids: Vec<String>,
    api_key_ids: Vec<String>,
    email: String,
}

/// An organization with an active agent holding a grant, a pending agent, an alert
/// (a denied action), a second user and spare API keys; returns the fuzzer's key.
async fn seed(app: &TestApp) -> (String, Seeds) {
    let owner = owner_token(app, "Fuzz").await;
    let email = "owner@fuzz.example".to_owned();
    catalogue(app, &owner, "email:send", 0).await;
    let agent = active_agent(app, &owner, "mailer").await;
    let granted = grant(app, &owner, &agent.id, "email:send", None).await;
    let pending = register(app, &owner, "pending-agent", &new_key()).await;
    assert_eq!(pending.status(), 201);
    let pending: serde_json::Value = pending.json().await.unwrap();
    // An action outside the agent's grants is denied and raises an alert.
    let denied = decide(app, agent.sign(&agent.action("files:delete", Some("/etc")))).await;
    assert_eq!(denied["allowed"], false, "{denied}");
    let alerts: serde_json::Value = app
        .with(Method::GET, "/api/v1/alerts", &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alert_ids: Vec<String> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!alert_ids.is_empty(), "{alerts}");
    let me: serde_json::Value = app
        .with(Method::GET, "/api/v1/me", &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer = app
        .add_user(&owner, "viewer@fuzz.example", USER_PW, "viewer")
        .await;
    let mut spare_keys = Vec::new();
    for _ in 0..3 {
        spare_keys.push(app.add_key(&owner, &["agents:read"]).await.0);
    }
    // The fuzzer's own key holds every permission; its id is not offered, so the
    // fuzzer cannot revoke the credential it runs with.
    let all: Vec<&str> = agentid_server::auth::permissions::Permission::ALL
        .iter()
        .map(|p| p.as_str())
        .collect();
    let (_, key) = app.add_key(&owner, &all).await;
    let seeds = Seeds {
        agent_ids: vec![agent.id.clone(), pending["id"].as_str().unwrap().to_owned()],
        grant_ids: vec![granted["id"].as_str().unwrap().to_owned()],
        alert_ids,
        user_ids: vec![me["user"]["id"].as_str().unwrap().to_owned(), viewer],
        api_key_ids: spare_keys,
        email,
    };
    (key, seeds)
}

fn toml_list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The schemathesis configuration: the seeds as dictionaries, each offered half of
/// the time for the parameter (or body field) it fits.
fn config(seeds: &Seeds) -> String {
    let id_of = |operation_ids: &[&str], dictionary: &str, probability: f64| {
        operation_ids
            .iter()
            .map(|op| {
                format!(
                    "[[operations]]\ninclude-operation-id = \"{op}\"\nparameters = {{ \"path.id\" = {{ dictionary = \"{dictionary}\", probability = {probability:.1} }} }}\n"
                )
            })
            .collect::<String>()
    };
    format!(
        r#"# Written by server/tests/api/contract.rs for one run.
[generation]
database = "none"
# Every request carries the fuzzer's key: made-up credentials would only ever get
# 401, and spend the examples the operations need.
with-security-parameters = false

[dictionaries.agent_id]
values = {agents}
[dictionaries.grant_id]
values = {grants}
[dictionaries.alert_id]
values = {alerts}
[dictionaries.user_id]
values = {users}
[dictionaries.api_key_id]
values = {keys}
[dictionaries.capability]
values = ["email:send"]
[dictionaries.email]
values = [{email:?}]
[dictionaries.password]
values = [{password:?}]

[parameters]
"path.agent_id" = {{ dictionary = "agent_id", probability = 0.5 }}
"path.grant_id" = {{ dictionary = "grant_id", probability = 0.5 }}
"path.alert_id" = {{ dictionary = "alert_id", probability = 0.5 }}
"path.name" = {{ dictionary = "capability", probability = 0.5 }}
"body.capability" = {{ dictionary = "capability", probability = 0.5 }}
"body.email" = {{ dictionary = "email", probability = 0.5 }}
"body.password" = {{ dictionary = "password", probability = 0.5 }}

{users_ops}{keys_ops}"#,
        agents = toml_list(&seeds.agent_ids),
        grants = toml_list(&seeds.grant_ids),
        alerts = toml_list(&seeds.alert_ids),
        users = toml_list(&seeds.user_ids),
        keys = toml_list(&seeds.api_key_ids),
        email = seeds.email,
        password = OWNER_PW,
        users_ops = id_of(&["get_user", "update_user"], "user_id", 0.5),
        // Always a spare key: the fuzzer reads the ids of every key (its own too)
        // from `GET /api/v1/api-keys`, and must not revoke the one it runs with.
        keys_ops = id_of(&["delete_api_key"], "api_key_id", 1.0),
    )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

async fn the_api_answers_as_its_openapi_document_says(backend: Backend) {
    let python = schemathesis_python();
    // Rate limits would answer (documented) 429s instead of exercising the operations.
    let app = spawn_app_with(backend, &[("AGENTID_RATE_LIMITS", "off")]).await;
    let (key, seeds) = seed(&app).await;
    let config_file = app.db.dir.join("schemathesis.toml");
    std::fs::write(&config_file, config(&seeds)).unwrap();
    let seed: u64 = env_or("AGENTID_FUZZ_SEED", SEED);
    let examples: u32 = env_or("AGENTID_FUZZ_EXAMPLES", MAX_EXAMPLES);

    let mut command = tokio::process::Command::new(&python);
    command
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config_file)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "1", "--no-color"])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        // Nothing of the run lands in the repository.
        .current_dir(&app.db.dir)
        .kill_on_drop(true);
    if let Some(dir) = std::env::var_os("AGENTID_FUZZ_REPORT") {
        // Every request and answer, to see what the fuzzer reached.
        command.args(["--report", "har", "--report-dir"]).arg(dir);
    }
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("schemathesis finishes within TIMEOUT")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis ({backend:?}, seed {seed}) found answers the OpenAPI document does not \
         allow:\n{stdout}\n{stderr}"
    );
    // A run that tested nothing would pass too. (schemathesis leaves out the
    // document's own operation, `GET /openapi.json`.)
    assert!(
        stdout.contains(&format!("Tested: {}\n", operations() - 1)),
        "{stdout}"
    );
    println!(
        "schemathesis ({backend:?}, seed {seed}, {examples} examples): {:.0} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
}

both_backends!(the_api_answers_as_its_openapi_document_says);

/// The number of operations in the document.
fn operations() -> usize {
    let doc: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum()
}

/// The answers schemathesis first found undocumented, pinned down: a page size out
/// of range or not a number, on every operation that takes one, is 400
/// `invalid_request` in the envelope, and 400 is in the operation's entry.
async fn out_of_range_and_wrongly_typed_parameters_answer_a_documented_400(backend: Backend) {
    let app = spawn_app_with(backend, &[("AGENTID_RATE_LIMITS", "off")]).await;
    let (key, seeds) = seed(&app).await;
    let doc: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    let agent = &seeds.agent_ids[0];
    let pages = [
        ("/api/v1/agents", "/api/v1/agents".to_owned()),
        ("/api/v1/alerts", "/api/v1/alerts".to_owned()),
        ("/api/v1/audit", "/api/v1/audit".to_owned()),
        (
            "/api/v1/agents/{agent_id}/trust/history",
            format!("/api/v1/agents/{agent}/trust/history"),
        ),
    ];
    for (template, path) in &pages {
        let responses = &doc["paths"][*template]["get"]["responses"];
        assert!(
            responses["400"].is_object(),
            "{template}: 400 is not listed"
        );
        let ok = app
            .with(Method::GET, &format!("{path}?limit=500"), &key)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}?limit=500");
        for limit in [
            "-9223372036854775808",
            "0",
            "501",
            "9223372036854775808",
            "1e3",
            "ten",
            "",
        ] {
            let response = app
                .with(Method::GET, &format!("{path}?limit={limit}"), &key)
                .send()
                .await
                .unwrap();
            let body = assert_error(response, 400).await;
            assert_eq!(
                body["error"]["code"], "invalid_request",
                "{path}?limit={limit}"
            );
        }
    }
}

both_backends!(out_of_range_and_wrongly_typed_parameters_answer_a_documented_400);
