//! The SDK stays in step with `openapi/openapi.json`: every operation the SDK
//! performs exists there with that method, path and operation id; every
//! operation there is performed by the SDK or listed as deliberately left out;
//! and each response type has exactly the members of its schema.

use std::collections::BTreeSet;
use std::path::PathBuf;

use agentid::types::*;
use agentid::{Operation, NOT_COVERED, OPERATIONS, SDK_OPERATIONS};
use serde::Serialize;
use serde_json::Value;

fn document() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn operations(doc: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.insert((
                method.to_uppercase(),
                path.clone(),
                op["operationId"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

fn key(op: &Operation) -> (String, String, String) {
    (
        op.method.to_owned(),
        op.path.to_owned(),
        op.operation_id.to_owned(),
    )
}

#[test]
fn every_sdk_operation_is_in_the_document_and_every_operation_is_accounted_for() {
    let doc = operations(&document());
    let mut ours = BTreeSet::new();
    for op in OPERATIONS.iter().chain(SDK_OPERATIONS).chain(NOT_COVERED) {
        assert!(
            doc.contains(&key(op)),
            "{} {} ({}) is not in openapi/openapi.json",
            op.method,
            op.path,
            op.operation_id
        );
        assert!(ours.insert(key(op)), "{op:?} is listed twice");
    }
    let missing: Vec<_> = doc.difference(&ours).collect();
    assert!(
        missing.is_empty(),
        "operations neither covered by the SDK nor listed in NOT_COVERED: {missing:?}"
    );
}

/// The property names of a schema, following `allOf`.
fn properties(doc: &Value, schema: &str) -> BTreeSet<String> {
    let s = &doc["components"]["schemas"][schema];
    assert!(!s.is_null(), "no schema {schema}");
    let mut out = BTreeSet::new();
    let parts: Vec<&Value> = match s["allOf"].as_array() {
        Some(parts) => parts.iter().collect(),
        None => vec![s],
    };
    for part in parts {
        let part = match part["$ref"].as_str() {
            Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
            None => part,
        };
        if let Some(props) = part["properties"].as_object() {
            out.extend(props.keys().cloned());
        }
    }
    out
}

fn members<T: Serialize + Default>() -> BTreeSet<String> {
    serde_json::to_value(T::default())
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

#[test]
fn response_types_have_exactly_their_schema_members() {
    let doc = document();
    let checks: Vec<(&str, BTreeSet<String>)> = vec![
        ("Agent", members::<AgentRecord>()),
        ("AgentPage", members::<AgentPage>()),
        ("AgentKey", members::<AgentKeyRecord>()),
        ("Challenge", members::<Challenge>()),
        ("AgentVerified", members::<AgentVerified>()),
        ("Organization", members::<Organization>()),
        ("User", members::<User>()),
        ("Me", members::<Me>()),
        ("TokenPair", members::<TokenPair>()),
        ("ApiKey", members::<ApiKey>()),
        ("CreatedApiKey", members::<CreatedApiKey>()),
        ("Capability", members::<Capability>()),
        ("Grant", members::<Grant>()),
        ("Alert", members::<Alert>()),
        ("AlertPage", members::<AlertPage>()),
        ("AuditRecord", members::<AuditRecord>()),
        ("AuditPage", members::<AuditPage>()),
        ("ChainReport", members::<ChainReport>()),
        ("FactorReport", members::<FactorReport>()),
        ("TrustReport", members::<TrustReport>()),
        ("EnforcementSetting", members::<EnforcementSetting>()),
        ("TrustPolicy", members::<agentid::types::TrustPolicy>()),
        ("HistoryPage", members::<agentid::types::HistoryPage>()),
        ("HistoryPoint", members::<agentid::types::HistoryPoint>()),
        ("FactorChange", members::<agentid::types::FactorChange>()),
        ("Session", members::<agentid::Session>()),
    ];
    for (schema, ours) in checks {
        assert_eq!(ours, properties(&doc, schema), "schema {schema}");
    }
}
