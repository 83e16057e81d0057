//! Rate limits: per credential, per agent and per address; the 429 answer and its
//! headers; trusted proxies; one limit across replicas through Redis; a Redis
//! outage degrading to in-process counting without a single 5xx.

use std::path::Path;
use std::time::{Duration, Instant};

use agentid_protocol::{b64, Envelope};
use reqwest::Method;

use crate::agents::{active_agent, owner_token, post_envelope, TestAgent};
use crate::helpers::{assert_error, spawn_app, spawn_app_with, Backend, ServerProcess, TestDb};

/// The machine's Redis (`AGENTID_TEST_REDIS_URL`, set by `scripts/test`), shared by
/// tests that each use their own key prefix. The suite fails if it is unreachable.
fn machine_redis() -> String {
    std::env::var("AGENTID_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_prefix() -> String {
    format!("agentid-test-{}", uuid::Uuid::new_v4().simple())
}

/// Asserts a 429 in the envelope with `Retry-After` and the rate-limit headers of
/// `policy`; returns the body.
async fn assert_limited(response: reqwest::Response, policy: &str) -> serde_json::Value {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After on a 429")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let limit_policy = response.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let limit = response.headers()["ratelimit"].to_str().unwrap().to_owned();
    assert!(
        limit_policy.starts_with(&format!("\"{policy}\";q=")),
        "{limit_policy}"
    );
    assert!(
        limit.starts_with(&format!("\"{policy}\";r=0;t=")),
        "{limit}"
    );
    let body = assert_error(response, 429).await;
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    body
}

async fn get_agents(app: &crate::helpers::TestApp, credential: &str) -> reqwest::Response {
    app.with(Method::GET, "/api/v1/agents", credential)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_per_credential_and_per_address() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[(
            "AGENTID_RATE_LIMITS",
            "reads.credential=3/m,reads.address=5/m",
        )],
    )
    .await;
    let owner = owner_token(&app, "Acme").await;
    let (_, key_a) = app.add_key(&owner, &["agents:read"]).await;
    let (_, key_b) = app.add_key(&owner, &["agents:read"]).await;

    for i in 0..3 {
        let response = get_agents(&app, &key_a).await;
        assert_eq!(response.status(), 200, "request {i} with key A");
        assert!(response.headers().contains_key("ratelimit-policy"));
        assert!(response.headers().contains_key("ratelimit"));
    }
    // Key A is spent; the refusal did not count against the address.
    let body = assert_limited(get_agents(&app, &key_a).await, "reads.credential").await;
    assert!(body["error"]["request_id"].as_str().unwrap().len() > 8);

    // Key B from the same address: two more fit the address's 5, then the address
    // itself is spent, whatever credential is presented.
    for i in 0..2 {
        assert_eq!(get_agents(&app, &key_b).await.status(), 200, "key B {i}");
    }
    assert_limited(get_agents(&app, &key_b).await, "reads.address").await;
    assert_limited(get_agents(&app, &owner).await, "reads.address").await;

    // Unlimited paths stay open; the refusals are counted by class.
    assert_eq!(app.get("/health").await.status(), 200);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("agentid_rate_limited_total{class=\"reads\"} 3"),
        "{metrics}"
    );
}

/// A valid action envelope for `agent`, or one whose signature is broken.
fn action(agent: &TestAgent, forged: bool) -> String {
    let envelope = agent.sign(&agent.action("email:send", Some("bob@example.com")));
    if !forged {
        return envelope;
    }
    let mut env: Envelope = serde_json::from_str(&envelope).unwrap();
    let mut sig = b64::decode(&env.signatures[0].sig).unwrap();
    sig[0] ^= 0x01;
    env.signatures[0].sig = b64::encode(sig);
    env.to_json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_per_agent_and_forgeries_cannot_spend_an_agents_budget() {
    let app = spawn_app_with(
        Backend::Sqlite,
        &[(
            "AGENTID_RATE_LIMITS",
            "actions.agent=3/m,actions.address=20/m,agent_auth.agent=3/m",
        )],
    )
    .await;
    let owner = owner_token(&app, "Acme").await;
    // Each activation spends one challenge and one verify of that agent's 3.
    let a = active_agent(&app, &owner, "agent-a").await;
    let b = active_agent(&app, &owner, "agent-b").await;

    for i in 0..3 {
        let response = post_envelope(&app, "/api/v1/actions/verify", action(&a, false)).await;
        assert_eq!(response.status(), 200, "action {i} of agent a");
        assert!(response.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"actions.agent\";"));
    }
    let response = post_envelope(&app, "/api/v1/actions/verify", action(&a, false)).await;
    assert_limited(response, "actions.agent").await;

    // The unauthenticated agent endpoints: challenges cost the address only (anyone
    // may ask in an agent's name, and it disturbs nothing); answers spend the agent's
    // budget only when its key signed them.
    let challenge = |id: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url(&format!("/api/v1/agents/{id}/challenge")))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..5 {
        assert_eq!(challenge(a.id.clone()).await.status(), 201);
    }
    let verify = format!("/api/v1/agents/{}/verify", a.id);
    for _ in 0..4 {
        let issued: serde_json::Value = challenge(a.id.clone()).await.json().await.unwrap();
        let forged = crate::agents::answer(&a.id, &issued, &crate::agents::new_key());
        assert_eq!(post_envelope(&app, &verify, forged).await.status(), 401);
    }
    // a's activation spent 1 of its 3; two more proofs, then the limit.
    for _ in 0..2 {
        let issued: serde_json::Value = challenge(a.id.clone()).await.json().await.unwrap();
        let proof = crate::agents::answer(&a.id, &issued, &a.key);
        assert_eq!(post_envelope(&app, &verify, proof).await.status(), 200);
    }
    let issued: serde_json::Value = challenge(a.id.clone()).await.json().await.unwrap();
    let proof = crate::agents::answer(&a.id, &issued, &a.key);
    assert_limited(
        post_envelope(&app, &verify, proof).await,
        "agent_auth.agent",
    )
    .await;
    assert_eq!(challenge(b.id.clone()).await.status(), 201);

    // Forged statements in b's name count against the address only.
    for _ in 0..4 {
        let response = post_envelope(&app, "/api/v1/actions/verify", action(&b, true)).await;
        assert_eq!(response.status(), 200);
        let decision: serde_json::Value = response.json().await.unwrap();
        assert_eq!(decision["reason"], "bad_signature");
    }
    // Agent b, from the same address, is still served its full budget.
    for i in 0..3 {
        let response = post_envelope(&app, "/api/v1/actions/verify", action(&b, false)).await;
        assert_eq!(response.status(), 200, "action {i} of agent b");
    }
    assert_limited(
        post_envelope(&app, "/api/v1/actions/verify", action(&b, false)).await,
        "actions.agent",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limits_hold_for_auth_requests_from_one_address() {
    // Realistic defaults: auth.address is 60 per minute.
    let app = spawn_app(Backend::Sqlite).await;
    let started = Instant::now();
    let owner = owner_token(&app, "Acme").await; // the login is one
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let response = app
            .with(Method::GET, "/api/v1/auth/sessions", &owner)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert_limited(response, "auth.address").await;
            break;
        }
    }
    // 59 after the login, plus one per second the loop took (the rate refills).
    let ok = statuses.iter().filter(|&&s| s == 200).count() as u64;
    let refilled = started.elapsed().as_secs() + 1;
    assert!(ok >= 59 && ok <= 59 + refilled, "{ok} admitted");
    assert_eq!(statuses.last(), Some(&429));
    // Other classes have their own budgets.
    assert_eq!(get_agents(&app, &owner).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let limits = (
        "AGENTID_RATE_LIMITS",
        "reads.address=2/m,reads.credential=off",
    );
    let from = |app: &crate::helpers::TestApp, xff: &str| {
        app.http
            .get(app.url("/api/v1/agents"))
            .header("x-forwarded-for", xff)
            .send()
    };

    // The test client (127.0.0.1) is a trusted proxy: the header decides the bucket.
    let app = spawn_app_with(
        Backend::Sqlite,
        &[limits, ("AGENTID_TRUSTED_PROXIES", "127.0.0.1")],
    )
    .await;
    for _ in 0..2 {
        assert_eq!(from(&app, "203.0.113.1").await.unwrap().status(), 401);
    }
    assert_limited(from(&app, "203.0.113.1").await.unwrap(), "reads.address").await;
    assert_eq!(
        from(&app, "203.0.113.2, 127.0.0.1").await.unwrap().status(),
        401
    );
    // A trusted proxy passing garbage: the proxy's own address is the client.
    assert_eq!(from(&app, "garbage").await.unwrap().status(), 401);

    // Untrusted peer: a new X-Forwarded-For per request does not evade the limit.
    let app = spawn_app_with(Backend::Sqlite, &[limits]).await;
    assert_eq!(from(&app, "198.51.100.1").await.unwrap().status(), 401);
    assert_eq!(from(&app, "198.51.100.2").await.unwrap().status(), 401);
    assert_limited(from(&app, "198.51.100.3").await.unwrap(), "reads.address").await;
}

/// Sends `n` unauthenticated reads to `base`; returns how many were not limited.
async fn admitted(http: &reqwest::Client, base: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        let response = http
            .get(format!("{base}/api/v1/agents"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(status == 401 || status == 429, "unexpected {status}");
        admitted += usize::from(status == 401);
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_redis_enforce_one_limit() {
    let prefix = unique_prefix();
    let redis_url = machine_redis();
    let shared = [
        ("AGENTID_RATE_LIMITS", "reads.address=10/m"),
        ("REDIS_URL", redis_url.as_str()),
        ("AGENTID_REDIS_PREFIX", prefix.as_str()),
    ];
    let client = redis::Client::open(redis_url.as_str()).unwrap();
    let pong: String = redis::cmd("PING")
        .query(&mut client.get_connection().unwrap_or_else(|e| {
            panic!("Redis must be reachable at {redis_url} for the test suite: {e}")
        }))
        .unwrap();
    assert_eq!(pong, "PONG");
    let one = spawn_app_with(Backend::Sqlite, &shared).await;
    let two = spawn_app_with(Backend::Sqlite, &shared).await;
    let total =
        admitted(&one.http, &one.address, 6).await + admitted(&two.http, &two.address, 6).await;
    assert_eq!(total, 10, "one shared limit of 10");

    // Without Redis each process counts alone: 6 + 6.
    let alone = [("AGENTID_RATE_LIMITS", "reads.address=10/m")];
    let one = spawn_app_with(Backend::Sqlite, &alone).await;
    let two = spawn_app_with(Backend::Sqlite, &alone).await;
    let total =
        admitted(&one.http, &one.address, 6).await + admitted(&two.http, &two.address, 6).await;
    assert_eq!(total, 12);
}

/// A private `redis-server` on a free port, killed on drop.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let binary = if Path::new("/usr/bin/redis-server").exists() {
            "/usr/bin/redis-server"
        } else {
            "redis-server"
        };
        let child = std::process::Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the outage test");
        let redis = PrivateRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// How many keys the server holds under `prefix`.
    fn keys(&self, prefix: &str) -> usize {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap();
        keys.len()
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_in_process_limits_without_errors() {
    let port = free_port();
    let redis = PrivateRedis::start(port);
    let prefix = unique_prefix();
    let db = TestDb::new(Backend::Sqlite);
    let mut vars = db.vars();
    for (k, v) in [
        ("AGENTID_LISTEN", "127.0.0.1:0"),
        ("AGENTID_WORKERS", "2"),
        ("AGENTID_RATE_LIMITS", "reads.address=5/m"),
        ("REDIS_URL", redis.url().as_str()),
        ("AGENTID_REDIS_PREFIX", prefix.as_str()),
    ] {
        vars.push((k.to_owned(), v.to_owned()));
    }
    let server = ServerProcess::start(&db.dir, &vars);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .log()
        .iter()
        .any(|l| l.contains("Redis answers: rate limits are shared"))
    {
        assert!(Instant::now() < deadline, "the server never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Redis up: counted there.
    assert_eq!(admitted(&http, &server.address, 3).await, 3);
    assert_eq!(redis.keys(&prefix), 1);

    // Redis gone: every request is still answered (401 or 429, never 5xx), and the
    // limit holds in-process: 5 more fit, then refusals.
    redis.stop();
    assert_eq!(admitted(&http, &server.address, 8).await, 5);
    let metrics = http
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&metrics, "agentid_rate_limit_backend_errors_total") >= 1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "agentid_rate_limit_degraded"), 1.0);
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("Redis is unavailable")));

    // Redis back (empty: it kept nothing): used again once the back-off has passed.
    let redis = PrivateRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = http
            .get(format!("{}/api/v1/agents", server.address))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status == 401 || status == 429, "unexpected {status}");
        let recovered = server
            .log()
            .iter()
            .any(|l| l.contains("Redis answers again"));
        if recovered && redis.keys(&prefix) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "Redis was not used again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = http
        .get(format!("{}/metrics", server.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&metrics, "agentid_rate_limit_degraded"), 0.0);
    drop(redis);
}
