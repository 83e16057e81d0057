//! TLS served with a generated certificate; HSTS only over https (our TLS or a
//! trusted proxy's word); the health check over TLS.

use std::path::Path;

use crate::helpers::{spawn_app, spawn_app_with, Backend};

/// A self-signed certificate for localhost and 127.0.0.1, written to `dir`;
/// returns (cert path, key path, cert PEM).
fn generated_certificate(dir: &Path) -> (String, String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = generated.cert.pem();
    let cert = dir.join("tls-cert.pem");
    let key = dir.join("tls-key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
        cert_pem,
    )
}

const HSTS: &str = "max-age=31536000; includeSubDomains";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_hsts_and_the_healthcheck_speaks_tls() {
    let dir = std::env::temp_dir().join(format!("agentid-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key, cert_pem) = generated_certificate(&dir);
    let app = spawn_app_with(
        Backend::Sqlite,
        &[
            ("AGENTID_TLS_CERT", cert.as_str()),
            ("AGENTID_TLS_KEY", key.as_str()),
        ],
    )
    .await;
    let host_port = app.address.trim_start_matches("http://").to_owned();
    let base = format!("https://{host_port}");
    assert!(app.public_url.starts_with("https://"), "{}", app.public_url);

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = client
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["strict-transport-security"], HSTS);
    // Errors carry it too.
    let response = client
        .get(format!("{base}/no/such/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["strict-transport-security"], HSTS);

    // Plain HTTP on the TLS port gets no answer, and a client that does not trust
    // the certificate refuses it.
    assert!(app.http.get(app.url("/health")).send().await.is_err());
    let untrusting = reqwest::Client::builder().use_rustls_tls().build().unwrap();
    assert!(untrusting
        .get(format!("{base}/health"))
        .send()
        .await
        .is_err());

    // `agentid-server healthcheck` with the same configuration reaches it over TLS.
    let mut vars = app.db.vars();
    vars.push(("AGENTID_LISTEN".to_owned(), host_port));
    vars.push(("AGENTID_TLS_CERT".to_owned(), cert.clone()));
    vars.push(("AGENTID_TLS_KEY".to_owned(), key.clone()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentid-server"))
        .arg("healthcheck")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Pinned to exactly that certificate: another one is refused.
    let (other, other_key, _) = {
        let other_dir = dir.join("other");
        std::fs::create_dir_all(&other_dir).unwrap();
        generated_certificate(&other_dir)
    };
    let vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AGENTID_TLS_"))
        .chain([
            ("AGENTID_TLS_CERT".to_owned(), other),
            ("AGENTID_TLS_KEY".to_owned(), other_key),
        ])
        .collect();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentid-server"))
        .arg("healthcheck")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    drop(app);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_only_when_the_client_used_https() {
    // Plain HTTP: no HSTS, even if an untrusted client claims https.
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .http
        .get(app.url("/health"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(!response.headers().contains_key("strict-transport-security"));

    // Behind a trusted proxy that terminated TLS: HSTS.
    let app = spawn_app_with(Backend::Sqlite, &[("AGENTID_TRUSTED_PROXIES", "127.0.0.1")]).await;
    let response = app
        .http
        .get(app.url("/health"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["strict-transport-security"], HSTS);
    let response = app
        .http
        .get(app.url("/health"))
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("strict-transport-security"));
}
