//! The interactive docs render in a real headless Chromium with every
//! non-loopback host unresolvable, so no asset can come from a CDN.

use std::process::Command;

use crate::helpers::{spawn_app, Backend};

fn chromium() -> String {
    std::env::var("AGENTID_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_render_offline_in_headless_chromium() {
    let app = spawn_app(Backend::Sqlite).await;
    let profile = app.db.dir.join("chromium-profile");
    let url = app.url("/docs/");
    let output = tokio::task::spawn_blocking(move || {
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--virtual-time-budget=10000",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("headless Chromium must be installed ({}): {e}", chromium()));
    let dom = String::from_utf8_lossy(&output.stdout);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "chromium failed: {log}");
    // Swagger UI fetched /openapi.json from this server and rendered its operations.
    assert!(
        dom.contains("opblock-summary-path"),
        "docs did not render: {dom}"
    );
    assert!(dom.contains(r#"data-path="/health/ready""#), "{dom}");
    assert!(
        !log.contains("Content Security Policy"),
        "CSP blocked part of the docs page: {log}"
    );
}
