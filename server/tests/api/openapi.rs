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
