//! Trace export over OTLP/HTTP: spans of a request reach a collector, with the
//! request id, when `AGENTID_OTLP_ENDPOINT` is set; nothing is sent otherwise, not
//! even when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` points at a collector.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::agents::{answer, new_key, public_b64, TestAgent};
use crate::helpers::{create_owner, Backend, ServerProcess, TestDb, OWNER_PW};

/// A collector that keeps every body posted to `/v1/traces`.
struct Collector {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Collector {
    fn start() -> Collector {
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = bodies.clone();
        let server = HttpServer::new(move || {
            let sink = sink.clone();
            App::new().route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let sink = sink.clone();
                    async move {
                        sink.lock().unwrap().push(body.to_vec());
                        // An empty ExportTraceServiceResponse.
                        HttpResponse::Ok()
                            .content_type("application/x-protobuf")
                            .finish()
                    }
                }),
            )
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Collector {
            url,
            bodies,
            handle,
        }
    }

    fn received(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Starts the server with `extra` variables, makes a login attempt (a request that
/// reads the database) with a known request id, then has an agent decide one
/// action (a decision batch), and stops the server with SIGTERM.
async fn serve_some_requests(extra: &[(&str, &str)], request_id: &str) {
    let db = TestDb::new(Backend::Sqlite);
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    vars.push(("AGENTID_BCRYPT_COST".to_owned(), "4".to_owned()));
    for (k, v) in extra {
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    create_owner(&vars, "Acme", "owner@acme.example", OWNER_PW);
    let mut server = ServerProcess::start(&db.dir, &vars);
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.address);
    let response = http
        .post(url("/api/v1/auth/login"))
        .header("x-request-id", request_id)
        .json(&serde_json::json!({"email": "nobody@example.com", "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let login: serde_json::Value = http
        .post(url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "owner@acme.example", "password": OWNER_PW}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let owner = login["access_token"].as_str().unwrap();
    let key = new_key();
    let agent: serde_json::Value = http
        .post(url("/api/v1/agents"))
        .bearer_auth(owner)
        .json(&serde_json::json!({"name": "traced", "public_key": public_b64(&key)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = agent["id"].as_str().unwrap().to_owned();
    let challenge: serde_json::Value = http
        .post(url(&format!("/api/v1/agents/{id}/challenge")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .post(url(&format!("/api/v1/agents/{id}/verify")))
        .header("content-type", "application/json")
        .body(answer(&id, &challenge, &key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let agent = TestAgent {
        id,
        key,
        audience: challenge["audience"].as_str().unwrap().to_owned(),
    };
    let response = http
        .post(url("/api/v1/actions/verify"))
        .header("content-type", "application/json")
        .body(agent.sign(&agent.action("email:send", None)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    server.signal("TERM");
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{:?}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_only_when_configured() {
    let collector = Collector::start();

    // Not configured: nothing is sent, whatever the OpenTelemetry variables say.
    serve_some_requests(
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str())],
        "otlp-off-request-1",
    )
    .await;
    assert!(
        collector.received().is_empty(),
        "exported without being asked"
    );

    // Configured: the request's span, its database span, the request id and the
    // decision writer's batch arrive (flushed at shutdown at the latest).
    serve_some_requests(
        &[("AGENTID_OTLP_ENDPOINT", collector.url.as_str())],
        "otlp-on-request-1",
    )
    .await;
    let received = collector.received();
    for needle in [
        "agentid-server",
        "http_request",
        "otlp-on-request-1",
        "db.run",
        "routes::auth::login",
        "decision.batch",
    ] {
        assert!(contains(&received, needle), "{needle} was not exported");
    }
    // Never a secret or a body.
    for secret in [
        "not the password",
        "nobody@example.com",
        OWNER_PW,
        "email:send",
    ] {
        assert!(!contains(&received, secret), "{secret} was exported");
    }
    collector.handle.stop(false).await;
}
