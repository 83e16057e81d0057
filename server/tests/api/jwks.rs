//! The server's published signing keys: `GET /.well-known/jwks.json`.

use crate::helpers::{spawn_app_with, Backend};

async fn jwks_of(app: &crate::helpers::TestApp) -> (reqwest::header::HeaderMap, serde_json::Value) {
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (headers, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_public_cacheable_and_holds_the_current_and_next_keys() {
    let secret = "jwks-test-secret-".repeat(3);
    let app = spawn_app_with(Backend::Sqlite, &[("AGENTID_SECRET_KEY", &secret)]).await;
    let (headers, body) = jwks_of(&app).await;
    assert_eq!(headers.get("cache-control").unwrap(), "public, max-age=300");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let keys = body["keys"].as_array().unwrap();
    assert!(keys.len() >= 2, "{body}");
    let mut kids = std::collections::HashSet::new();
    for key in keys {
        assert_eq!(key["kty"], "OKP", "{key}");
        assert_eq!(key["crv"], "Ed25519", "{key}");
        assert_eq!(key["alg"], "EdDSA", "{key}");
        assert_eq!(key["use"], "sig", "{key}");
        let x = key["x"].as_str().unwrap();
        assert_eq!(x.len(), 43, "32 bytes, base64url without padding: {key}");
        let kid = key["kid"].as_str().unwrap();
        assert_eq!(kid, agentid_protocol::tokens::jwk_thumbprint(x), "{key}");
        assert!(kids.insert(kid.to_owned()), "duplicate kid {kid}");
        assert_eq!(key.as_object().unwrap().len(), 6, "no other member: {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_one_secret_publish_the_same_keys() {
    let secret = "shared-replica-secret-".repeat(2);
    let first = spawn_app_with(Backend::Sqlite, &[("AGENTID_SECRET_KEY", &secret)]).await;
    let second = spawn_app_with(Backend::Sqlite, &[("AGENTID_SECRET_KEY", &secret)]).await;
    let other = spawn_app_with(
        Backend::Sqlite,
        &[("AGENTID_SECRET_KEY", &"another-secret-".repeat(3))],
    )
    .await;
    let (_, a) = jwks_of(&first).await;
    let (_, b) = jwks_of(&second).await;
    let (_, c) = jwks_of(&other).await;
    // A generation boundary may pass between the two requests; then ask again.
    let (a, b) = if a == b {
        (a, b)
    } else {
        (jwks_of(&first).await.1, jwks_of(&second).await.1)
    };
    assert_eq!(a, b);
    let kids = |v: &serde_json::Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let theirs = kids(&c);
    assert!(kids(&a).iter().all(|k| !theirs.contains(k)));
}
