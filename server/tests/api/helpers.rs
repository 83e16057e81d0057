//! Test harness: each test gets its own server on a free loopback port and its own
//! database (a fresh SQLite file, or a fresh PostgreSQL database created on the
//! machine's server and dropped afterwards). Set `TEST_LOG=1` to see server logs.

use std::path::PathBuf;
use std::sync::Once;

use actix_web::dev::ServerHandle;
use agentid_server::config::Config;
use agentid_server::startup::Application;
use diesel::{Connection, RunQueryDsl};

/// Passwords the tests give owners and other users (long enough for the policy).
pub const OWNER_PW: &str = "correct horse battery staple";
pub const USER_PW: &str = "another long passphrase here";

/// Where the tests find PostgreSQL. The suite fails (never skips) if it is unreachable.
pub fn postgres_admin_url() -> String {
    std::env::var("AGENTID_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a test body once per backend, as two tests named `sqlite` and `postgres`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    };
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub dir: PathBuf,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> TestDb {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("agentid-test-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        match backend {
            Backend::Sqlite => TestDb {
                url: dir.join("agentid.db").to_string_lossy().into_owned(),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let name = format!("agentid_t_{id}");
                let admin = postgres_admin_url();
                let mut conn = diesel::PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!("PostgreSQL must be reachable at {admin} for the test suite: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .unwrap();
                let (base, _) = admin.rsplit_once('/').unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// The variables that point a server at this database.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".to_owned(), self.url.clone()),
            (
                "AGENTID_DATA_DIR".to_owned(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            if let Ok(mut conn) = diesel::PgConnection::establish(&postgres_admin_url()) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running server and clients pointed at it.
pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    handle: ServerHandle,
    pub db: TestDb,
    /// The audience of signed statements (`AGENTID_PUBLIC_URL`).
    pub public_url: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// POSTs raw bytes with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting; the runtime ending finishes the rest.
        let handle = self.handle.clone();
        drop(handle.stop(false));
    }
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            agentid_server::telemetry::init(
                agentid_server::config::LogFormat::Pretty,
                "debug",
                agentid_server::telemetry::LogTarget::Stdout,
            );
        }
    });
}

/// Starts a server on a free port with its own database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, &[]).await
}

/// Like [`spawn_app`], with extra configuration variables.
pub async fn spawn_app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    init_logging();
    let db = TestDb::new(backend);
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    vars.push(("AGENTID_WORKERS".to_owned(), "2".to_owned()));
    vars.push(("AGENTID_DB_POOL_SIZE".to_owned(), "4".to_owned()));
    vars.push(("AGENTID_BCRYPT_COST".to_owned(), "4".to_owned()));
    for (k, v) in extra {
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    let config = Config::from_vars(vars).expect("test configuration is valid");
    let app = Application::build(config).expect("server starts");
    let public_url = app.public_url().to_owned();
    let address = format!("http://{}", app.address());
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        http: reqwest::Client::new(),
        handle,
        db,
        public_url,
    }
}

/// Asserts the common error envelope and returns its code.
pub async fn assert_error(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let header_id = response
        .headers()
        .get("x-request-id")
        .expect("every response carries X-Request-ID")
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = response.json().await.expect("error body is JSON");
    let error = &body["error"];
    assert!(error["code"].is_string(), "{body}");
    assert!(error["message"].is_string(), "{body}");
    assert_eq!(error["request_id"], header_id.as_str(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    body
}

/// The real `agentid-server` binary running as a child process.
pub struct ServerProcess {
    child: std::process::Child,
    pub address: String,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary in `cwd` with only `vars` (plus PATH and HOME) in its
    /// environment, JSON logs, and waits until it reports its address.
    pub fn start(cwd: &std::path::Path, vars: &[(String, String)]) -> ServerProcess {
        use std::io::BufRead;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentid-server"));
        command
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", std::env::var("HOME").unwrap_or_default())
            .env("AGENTID_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in vars {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the server binary starts");
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("agentid is listening") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "the server did not start: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        };
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        let address = format!("http://{}", json["server.address"].as_str().unwrap());
        ServerProcess {
            child,
            address,
            lines,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `KILL`, `INT`) with the system's `kill`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit in time"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Every log line written so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates an organization and its owner with the real `admin create-owner`
/// command, the password on standard input.
pub fn create_owner(
    vars: &[(String, String)],
    org: &str,
    email: &str,
    password: &str,
) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agentid-server"))
        .args(["admin", "create-owner", "--org", org, "--email", email])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AGENTID_BCRYPT_COST", "4")
        .envs(vars.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "create-owner failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A logged-in user's tokens.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    pub fn create_owner(&self, org: &str, email: &str, password: &str) -> serde_json::Value {
        create_owner(&self.db.vars(), org, email, password)
    }

    pub async fn login_response(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> Session {
        let response = self.login_response(email, password).await;
        assert_eq!(response.status(), 200, "login of {email}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        Session {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }

    /// A request with a bearer credential (access token or API key).
    pub fn with(
        &self,
        method: reqwest::Method,
        path: &str,
        credential: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(credential)
    }

    /// Creates a user through the API as `admin` and returns its id.
    pub async fn add_user(&self, admin: &str, email: &str, password: &str, role: &str) -> String {
        let response = self
            .with(reqwest::Method::POST, "/api/v1/users", admin)
            .json(&serde_json::json!({ "email": email, "password": password, "role": role }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create {email}");
        let body: serde_json::Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// Creates an API key as `credential` with `permissions`; returns (id, secret).
    pub async fn add_key(&self, credential: &str, permissions: &[&str]) -> (String, String) {
        let response = self
            .with(reqwest::Method::POST, "/api/v1/api-keys", credential)
            .json(&serde_json::json!({ "name": "test key", "permissions": permissions }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }
}

/// A second server process-equivalent on the same database (a replica): its own
/// listener, pool, caches and decision writer.
pub struct Replica {
    pub address: String,
    pub http: reqwest::Client,
    handle: ServerHandle,
}

impl Replica {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl TestApp {
    /// Starts another server on this app's database and data directory (so it
    /// shares the development secret too).
    pub async fn spawn_replica(&self) -> Replica {
        let mut vars = self.db.vars();
        vars.push(("AGENTID_LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
        vars.push(("AGENTID_WORKERS".to_owned(), "2".to_owned()));
        vars.push(("AGENTID_DB_POOL_SIZE".to_owned(), "4".to_owned()));
        vars.push(("AGENTID_BCRYPT_COST".to_owned(), "4".to_owned()));
        vars.push(("AGENTID_PUBLIC_URL".to_owned(), self.public_url.clone()));
        let config = Config::from_vars(vars).expect("replica configuration is valid");
        let app = Application::build(config).expect("replica starts");
        let address = format!("http://{}", app.address());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        Replica {
            address,
            http: reqwest::Client::new(),
            handle,
        }
    }
}
