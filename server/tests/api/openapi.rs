//! The committed OpenAPI document is exactly what the code generates and serves.
//! Run with `AGENTID_UPDATE_OPENAPI=1` to rewrite `openapi/openapi.json` after an
//! intended API change, and review the diff.

use crate::helpers::{spawn_app, Backend};

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_document_equals_the_committed_one() {
    let generated = agentid_server::openapi::document_json();
    if std::env::var_os("AGENTID_UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `AGENTID_UPDATE_OPENAPI=1 cargo nextest run -p agentid-server openapi` and commit the result"
    );

    let app = spawn_app(Backend::Sqlite).await;
    let served = app.get("/openapi.json").await.text().await.unwrap();
    assert_eq!(served, generated);

    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

#[test]
fn every_operation_has_a_verb_resource_id_a_permission_note_and_an_error_schema() {
    let doc: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            let verb = id.split('_').next().unwrap_or_default();
            assert!(
                [
                    "get",
                    "list",
                    "create",
                    "update",
                    "delete",
                    "replace",
                    "verify",
                    "revoke",
                    "rotate",
                    "suspend",
                    "reactivate",
                    "acknowledge",
                    "resolve",
                    "grant"
                ]
                .contains(&verb),
                "{method} {path}: operation id `{id}` is not <verb>_<resource>"
            );
            let description = op["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Permission:"),
                "{method} {path}: the doc comment must state the permission it needs"
            );
        }
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[test]
fn every_schema_reference_resolves() {
    let text = agentid_server::openapi::document_json();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let prefix = "\"#/components/schemas/";
    for (at, _) in text.match_indices(prefix) {
        let rest = &text[at + prefix.len()..];
        let name = &rest[..rest.find('"').unwrap()];
        assert!(
            schemas.contains_key(name),
            "unresolved schema reference {name}"
        );
    }
}

/// Someone who opens the docs first learns where the first account comes from and
/// which Authorize box takes which credential; every scheme it names exists.
#[test]
fn the_description_says_how_to_start_and_how_to_authorize() {
    let document: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    let description = document["info"]["description"].as_str().unwrap();
    for needed in [
        "agentid-server admin create-owner",
        "/api/v1/auth/login",
        "/api/v1/api-keys",
        "Authorize",
        "agentid_sk_",
    ] {
        assert!(description.contains(needed), "{needed}: {description}");
    }
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    assert!(!schemes.is_empty());
    for name in schemes.keys() {
        assert!(
            description.contains(&format!("**{name}**")),
            "the description does not say what goes into {name}: {description}"
        );
    }
}

/// The statuses (and error codes, docs/errors.md) every operation of a kind can
/// answer: found by the schemathesis run (`contract.rs`), which failed on 401, 415
/// and 400 answers the document did not list.
fn implied_errors(path: &str, method: &str, op: &serde_json::Value) -> Vec<(u16, &'static str)> {
    let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
    let api = path.starts_with("/api/v1/");
    let body = op.get("requestBody").is_some();
    let envelope = body
        && op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            == "#/components/schemas/Envelope";
    let params = |place: &str| {
        op["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
    };
    let any_caller = op["description"]
        .as_str()
        .unwrap_or_default()
        .contains("Permission: any authenticated caller");
    let mut errors = vec![
        (400, "invalid_request"),
        (413, "payload_too_large"),
        (500, "internal_error"),
        (503, "request_timeout"),
    ];
    if body {
        errors.push((
            400,
            if envelope {
                "invalid_envelope"
            } else {
                "invalid_json"
            },
        ));
        errors.push((415, "unsupported_media_type"));
    }
    if secured {
        errors.push((401, "unauthorized"));
        if !any_caller {
            errors.push((403, "forbidden"));
        }
    }
    if params("path") {
        errors.push((404, "not_found"));
    }
    if api {
        errors.push((429, "rate_limited"));
        errors.push((503, "database_unavailable"));
    }
    assert!(
        ["get", "put", "post", "delete", "patch"].contains(&method),
        "{method} {path}: an operation of a method this test does not know"
    );
    errors
}

#[test]
fn every_operation_lists_every_error_its_kind_can_answer_with_the_envelope() {
    let doc: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    let known: Vec<_> = agentid_protocol::ErrorCode::ALL.to_vec();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            for (status, code) in implied_errors(path, method, op) {
                let response = responses
                    .get(&status.to_string())
                    .unwrap_or_else(|| panic!("{method} {path}: {status} ({code}) is not listed"));
                let description = response["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains(&format!("`{code}`")),
                    "{method} {path}: the {status} answer does not name `{code}`: {description}"
                );
            }
            for (status, response) in responses {
                let number: u16 = status.parse().unwrap();
                if number < 400 {
                    continue;
                }
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path}: the {status} answer is not the error envelope"
                );
                // Each code a description names answers with that status, and every
                // error answer names at least one.
                let description = response["description"].as_str().unwrap_or_default();
                let named: Vec<_> = known
                    .iter()
                    .filter(|c| description.contains(&format!("`{}`", c.as_str())))
                    .collect();
                assert!(
                    !named.is_empty(),
                    "{method} {path}: the {status} answer names no error code: {description}"
                );
                for code in named {
                    assert_eq!(
                        code.http_status(),
                        number,
                        "{method} {path}: `{}` is listed under {status}",
                        code.as_str()
                    );
                }
            }
        }
    }
}

/// An optional body is "this object, or none", an optional query parameter "this
/// value, or absent": never JSON `null`, which the server refuses (and a query string
/// cannot say).
#[test]
fn optional_bodies_and_parameters_are_absent_never_null() {
    let doc: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    let mut optional = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                let schema = &parameter["schema"];
                assert!(
                    !schema.to_string().contains(r#""null""#),
                    "{method} {path}: parameter {} may be null: {schema}",
                    parameter["name"]
                );
            }
            let Some(body) = op.get("requestBody") else {
                continue;
            };
            let schema = &body["content"]["application/json"]["schema"];
            assert!(
                !schema.to_string().contains(r#""null""#),
                "{method} {path}: the body may be null: {schema}"
            );
            if body["required"] != true {
                optional += 1;
                assert!(schema["$ref"].is_string(), "{method} {path}: {schema}");
            }
        }
    }
    assert_eq!(
        optional, 5,
        "suspend, reactivate, revoke, acknowledge, resolve"
    );
}

/// Every string path or query parameter says it takes no control character, which
/// the server refuses in any path or query value (400 `invalid_request`).
#[test]
fn string_parameters_exclude_control_characters() {
    let doc: serde_json::Value =
        serde_json::from_str(&agentid_server::openapi::document_json()).unwrap();
    let mut strings = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for parameter in op["parameters"].as_array().into_iter().flatten() {
                if parameter["schema"]["type"] != "string" {
                    continue;
                }
                strings += 1;
                assert_eq!(
                    parameter["schema"]["pattern"],
                    agentid_server::openapi::NO_CONTROL_CHARACTERS,
                    "{method} {path}: parameter {}",
                    parameter["name"]
                );
            }
        }
    }
    assert!(strings > 30, "{strings}");
}
