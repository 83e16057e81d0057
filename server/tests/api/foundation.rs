//! Health, the error envelope, request ids, security headers and metrics.

use crate::both_backends;
use crate::helpers::{assert_error, spawn_app, Backend};

async fn readiness_reports_the_backend(backend: Backend) {
    let app = spawn_app(backend).await;
    let ready: serde_json::Value = app.get("/health/ready").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(
        ready["database"],
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    let health: serde_json::Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let live = app.get("/health/live").await;
    assert_eq!(live.status(), 200);
}
both_backends!(readiness_reports_the_backend);

/// PostgreSQL is the backend that can disappear under a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_postgres_is_gone() {
    let app = spawn_app(Backend::Postgres).await;
    assert_eq!(app.get("/health/ready").await.status(), 200);
    let name = app.db.url.rsplit('/').next().unwrap().to_owned();
    let mut conn = <diesel::PgConnection as diesel::Connection>::establish(
        &crate::helpers::postgres_admin_url(),
    )
    .unwrap();
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)")),
        &mut conn,
    )
    .unwrap();
    let body = assert_error(app.get("/health/ready").await, 503).await;
    assert_eq!(body["error"]["code"], "not_ready");
    // Liveness does not depend on the database.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_answer_404_in_the_envelope() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = assert_error(app.get("/no/such/path").await, 404).await;
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_answer_405_with_allow() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.post_raw("/health", "application/json", "{}").await;
    assert_eq!(response.headers().get("allow").unwrap(), "GET");
    let body = assert_error(response, 405).await;
    assert_eq!(body["error"]["code"], "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversize_body_answers_413_without_being_read() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = vec![b'x'; 1024 * 1024];
    let response = app.post_raw("/health", "application/json", body).await;
    let body = assert_error(response, 413).await;
    assert_eq!(body["error"]["code"], "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .http
        .get(app.url("/health"))
        .header("X-Request-ID", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("x-request-id").unwrap(), "abc-123");

    // An id that could smuggle content into logs or headers is replaced.
    let response = app
        .http
        .get(app.url("/health"))
        .header("X-Request-ID", "evil\"id with spaces")
        .send()
        .await
        .unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(id.len(), 32);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));

    let first = app.get("/health").await;
    let second = app.get("/health").await;
    assert_ne!(
        first.headers().get("x-request-id"),
        second.headers().get("x-request-id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app(Backend::Sqlite).await;
    for path in ["/health", "/no/such/path", "/docs", "/openapi.json"] {
        let response = app.get(path).await;
        let headers = response.headers();
        assert_eq!(
            headers.get("x-content-type-options").unwrap(),
            "nosniff",
            "{path}"
        );
        assert_eq!(headers.get("x-frame-options").unwrap(), "DENY", "{path}");
        assert_eq!(
            headers.get("referrer-policy").unwrap(),
            "no-referrer",
            "{path}"
        );
        let csp = headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
    }
    let api = app.get("/health").await;
    assert_eq!(api.headers().get("cache-control").unwrap(), "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_listed_origins() {
    let app = spawn_app_with_cors().await;
    let allowed = app
        .http
        .get(app.url("/health"))
        .header("Origin", "https://admin.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .unwrap(),
        "https://admin.example.com"
    );
    let other = app
        .http
        .get(app.url("/health"))
        .header("Origin", "https://evil.example.net")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

async fn spawn_app_with_cors() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(
        Backend::Sqlite,
        &[("AGENTID_CORS_ORIGINS", "https://admin.example.com")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_labelled_by_route_template() {
    let app = spawn_app(Backend::Sqlite).await;
    app.get("/health/ready").await;
    app.get("/health/ready").await;
    app.get("/no/such/path/12345").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            r#"agentid_http_requests_total{method="GET",route="/health/ready",status="200"} 2"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"agentid_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/health/ready",status="200"}"#));
    assert!(text.contains(r#"route="unmatched",status="404""#));
    assert!(
        !text.contains("12345"),
        "raw paths must never become labels"
    );
    assert!(text.contains("agentid_db_pool_max_connections 4"), "{text}");
    assert!(text.contains("agentid_db_pool_connections "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_leads_to_the_docs() {
    let app = spawn_app(Backend::Sqlite).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let response = client
            .request(method.clone(), app.url("/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 307, "{method}");
        assert_eq!(response.headers()["location"], "/docs", "{method}");
        assert_eq!(
            response.headers()["x-content-type-options"],
            "nosniff",
            "{method}"
        );
    }
    // Followed, it is the interactive documentation.
    let page = app.get("/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    // Only reading the root is a route; anything else is the usual envelope.
    let post = client.post(app.url("/")).send().await.unwrap();
    assert_eq!(post.status(), 404);
    let body: serde_json::Value = post.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}
