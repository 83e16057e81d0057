//! The `agentid-server` binary as an operator runs it.

use std::process::Command;
use std::time::Duration;

use crate::helpers::{Backend, ServerProcess, TestDb};

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("agentid-proc-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentid-server"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_zero_configuration_on_embedded_sqlite() {
    let dir = temp_dir();
    let server = ServerProcess::start(&dir, &[("AGENTID_LISTEN".into(), "127.0.0.1:0".into())]);
    let ready: serde_json::Value = reqwest::get(format!("{}/health/ready", server.address))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["database"], "sqlite");
    // Port 0: the default public URL (issuer and audience) names the port bound.
    let listening = server
        .log()
        .into_iter()
        .find(|l| l.contains("agentid is listening"))
        .unwrap();
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(
        listening["server.public_url"],
        server.address.as_str(),
        "{listening}"
    );
    assert!(dir.join("data/agentid.db").exists());
    let secret = std::fs::metadata(dir.join("data/dev-secret.key")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(secret.permissions().mode() & 0o777, 0o600);
    }
    // The development log says what it generated, without printing the secret.
    let secret_value = std::fs::read_to_string(dir.join("data/dev-secret.key")).unwrap();
    let log = server.log().join("\n");
    assert!(log.contains("generated secret key"), "{log}");
    assert!(!log.contains(secret_value.trim()));
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sigterm_stops_the_server_gracefully_with_status_zero() {
    let db = TestDb::new(Backend::Sqlite);
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".into(), "127.0.0.1:0".into()));
    let mut server = ServerProcess::start(&db.dir, &vars);
    let host = server.address.trim_start_matches("http://").to_owned();
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    let log = server.log().join("\n");
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(
        std::net::TcpStream::connect(&host).is_err(),
        "no longer accepting"
    );
}

#[test]
fn a_bad_value_stops_the_server_naming_the_variable() {
    let output = binary()
        .env("AGENTID_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("AGENTID_LISTEN"), "{stderr}");
}

#[test]
fn production_refuses_to_start_without_a_secret_or_with_wildcard_cors() {
    let output = binary().env("AGENTID_ENV", "production").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("AGENTID_SECRET_KEY"));

    let output = binary()
        .env("AGENTID_ENV", "production")
        .env("AGENTID_SECRET_KEY", "x".repeat(48))
        .env("AGENTID_CORS_ORIGINS", "*")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("AGENTID_CORS_ORIGINS"));
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_masked() {
    let dir = temp_dir();
    let secret = "a-very-secret-value-that-is-long-enough-0123456789";
    let output = binary()
        .current_dir(&dir)
        .args(["config", "check"])
        .env("AGENTID_SECRET_KEY", secret)
        .env("DATABASE_URL", "postgres://app:pw-should-hide@127.0.0.1/x")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("AGENTID_LISTEN=127.0.0.1:8080"), "{stdout}");
    assert!(stdout.contains("AGENTID_SECRET_KEY=********"), "{stdout}");
    assert!(!stdout.contains(secret));
    assert!(!stdout.contains("pw-should-hide"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn migrate_applies_migrations_and_is_idempotent() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend);
        for _ in 0..2 {
            let output = binary()
                .current_dir(&db.dir)
                .arg("migrate")
                .envs(db.vars())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{backend:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let db = TestDb::new(Backend::Sqlite);
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".into(), "127.0.0.1:0".into()));
    vars.push(("AGENTID_BCRYPT_COST".into(), "4".into()));
    let mut server = ServerProcess::start(&db.dir, &vars);
    let host = server.address.trim_start_matches("http://").to_owned();

    // A login whose body is still arriving when the signal comes.
    let body = br#"{"email":"nobody@example.com","password":"not the password at all"}"#;
    let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[10..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "the in-flight request was answered: {answer}"
    );
    assert!(answer.contains("invalid_credentials"), "{answer}");

    let status = server.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

/// With `AGENTID_LOG=warn` a warning or error about a request still names the request
/// id the answer carries (the request's span is enabled at every level that logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_carry_the_request_id_at_every_log_level() {
    use crate::helpers::{create_owner, OWNER_PW};
    let db = TestDb::new(Backend::Sqlite);
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".into(), "127.0.0.1:0".into()));
    vars.push(("AGENTID_BCRYPT_COST".into(), "4".into()));
    // Warnings only, but the start-up line the harness waits for.
    vars.push((
        "AGENTID_LOG".into(),
        "warn,agentid_server::startup=info".into(),
    ));
    create_owner(&vars, "Acme", "owner@example.com", OWNER_PW);
    let server = ServerProcess::start(&db.dir, &vars);
    let http = reqwest::Client::new();
    // The 11th wrong password in a minute locks the account out, with a warning.
    for i in 0..12 {
        let response = http
            .post(format!("{}/api/v1/auth/login", server.address))
            .header("x-request-id", format!("guess-{i}"))
            .json(&serde_json::json!({"email": "owner@example.com", "password": "not the password at all"}))
            .send()
            .await
            .unwrap();
        assert!(matches!(response.status().as_u16(), 401 | 429));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = server.log();
    let warnings: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| matches!(l["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    let lockout = warnings
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("locked out"))
        })
        .unwrap_or_else(|| panic!("a lockout warning: {lines:#?}"));
    let id = lockout["span"]["request_id"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("guess-"),
        "the warning names its request: {lockout}"
    );
    // Start-up warnings (development mode) are about no request.
    for line in warnings
        .iter()
        .filter(|l| l["target"] != "agentid_server::startup")
    {
        assert!(
            line["span"]["request_id"].is_string(),
            "every warning about a request names it: {line}"
        );
    }
}

#[test]
fn a_busy_port_stops_the_server_naming_agentid_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = temp_dir();
    let output = binary()
        .current_dir(&dir)
        .env("AGENTID_LISTEN", &address)
        .env("AGENTID_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains(&address), "{said}");
    assert!(said.contains("already in use"), "{said}");
    assert!(said.contains("AGENTID_LISTEN"), "{said}");
    drop(taken);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn create_owner_reads_a_piped_password_without_a_prompt() {
    use std::io::Write;

    let dir = temp_dir();
    let mut child = binary()
        .current_dir(&dir)
        .args([
            "admin",
            "create-owner",
            "--org",
            "Piped",
            "--email",
            "piped@example.com",
        ])
        .env("AGENTID_BCRYPT_COST", "4")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery staple\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // A pipe is not a person: no prompt clutters a script's output.
    assert!(!stderr.contains("Password"), "{stderr}");
    let created: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["owner"]["email"], "piped@example.com");
    std::fs::remove_dir_all(dir).unwrap();
}
