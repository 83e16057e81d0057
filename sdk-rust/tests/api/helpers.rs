//! Test harness: each test gets a real agentid server (the `agentid-server`
//! library, in process) on a free loopback port with its own SQLite file, an
//! organization with an owner, and an API key holding every permission. Its public
//! URL is its real address, so issuers and audiences are what a client sees.
//! Set `TEST_LOG=1` to see server logs.

use std::path::PathBuf;
use std::sync::Once;

use actix_web::dev::ServerHandle;
use agentid_server::config::Config;
use agentid_server::startup::Application;

pub const OWNER_EMAIL: &str = "owner@example.com";
pub const OWNER_PASSWORD: &str = "correct horse battery staple";
/// Every permission the server knows, from the committed OpenAPI document.
pub fn all_permissions() -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["components"]["schemas"]["Permission"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

/// A directory removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// A path inside that does not exist yet (for the SDK to create).
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server, its owner's admin client and an API key.
pub struct TestApp {
    /// The server's address, also its public URL.
    pub address: String,
    /// An admin client authenticated with `api_key`.
    pub admin: agentid::AdminClient,
    /// An API key with every permission.
    pub api_key: String,
    /// Where tests put key stores.
    pub dir: TempDir,
    handle: ServerHandle,
}

impl TestApp {
    /// A key store directory of its own (not created yet).
    pub fn key_dir(&self, name: &str) -> PathBuf {
        self.dir.join(&format!("keys-{name}"))
    }

    /// Settings for an agent of this server.
    pub fn agent(&self, name: &str, key_dir: &std::path::Path) -> agentid::AgentBuilder {
        agentid::AgentBuilder::new(name)
            .url(&self.address)
            .api_key(&self.api_key)
            .key_dir(key_dir)
    }

    /// A client that does not retry (tests of single answers).
    pub fn client(&self) -> agentid::Client {
        agentid::Client::builder(&self.address)
            .retry(agentid::RetryPolicy::none())
            .build()
            .unwrap()
    }

    /// Adds `capability` to the catalogue and grants it to `agent_id`.
    pub async fn grant(&self, agent_id: &str, capability: &str, pattern: Option<&str>) {
        match self
            .admin
            .create_capability(capability, "test capability", "low", 0)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(agentid::ErrorCode::Conflict) => {}
            Err(e) => panic!("create capability {capability}: {e}"),
        }
        self.admin
            .grant_capability(agent_id, capability, pattern, None)
            .await
            .unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a server with its own SQLite database, creates the owner and an API key.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Like [`spawn_app`], with extra configuration variables.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    init_logging();
    let dir = TempDir::new("agentid-sdk-test");
    let mut attempt = 0;
    let (config, app) = loop {
        attempt += 1;
        let port = free_port();
        let mut vars: Vec<(String, String)> = vec![
            (
                "DATABASE_URL".into(),
                dir.join("agentid.db").to_string_lossy().into_owned(),
            ),
            (
                "AGENTID_DATA_DIR".into(),
                dir.path().to_string_lossy().into_owned(),
            ),
            ("AGENTID_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "AGENTID_PUBLIC_URL".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("AGENTID_WORKERS".into(), "2".into()),
            ("AGENTID_DB_POOL_SIZE".into(), "4".into()),
            ("AGENTID_BCRYPT_COST".into(), "4".into()),
        ];
        for (k, v) in extra {
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        let config = Config::from_vars(vars).expect("test configuration is valid");
        match Application::build(config.clone()) {
            Ok(app) => break (config, app),
            Err(e) if attempt < 5 => eprintln!("retrying server start: {e}"),
            Err(e) => panic!("the server did not start: {e}"),
        }
    };
    let address = format!("http://{}", app.address());
    assert_eq!(address, config.public_url);
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());

    create_owner(&config);
    let client = agentid::Client::new(&address).unwrap();
    let (owner, _tokens) = agentid::AdminClient::login(client.clone(), OWNER_EMAIL, OWNER_PASSWORD)
        .await
        .unwrap();
    let permissions = all_permissions();
    let permissions: Vec<&str> = permissions.iter().map(String::as_str).collect();
    let created = owner
        .create_api_key("sdk tests", &permissions, None)
        .await
        .unwrap();
    let api_key = created.key.clone();
    TestApp {
        admin: agentid::AdminClient::with_client(client, api_key.clone()),
        api_key,
        address,
        dir,
        handle,
    }
}

/// Creates the organization and its owner the way `agentid-server admin
/// create-owner` does, in process.
fn create_owner(config: &Config) {
    let db = agentid_server::db::Database::connect(&config.database).unwrap();
    db.migrate().unwrap();
    let password = agentid_server::auth::password::validate(OWNER_PASSWORD, OWNER_EMAIL).unwrap();
    let hash = agentid_server::auth::password::hash(&password, config.bcrypt_cost).unwrap();
    let mut conn = db.get().unwrap();
    agentid_server::db::write_transaction(&mut conn, |conn| {
        agentid_server::accounts::create_org_with_owner(
            conn,
            "SDK test org",
            OWNER_EMAIL,
            &hash,
            agentid_server::clock::now_ms(),
        )
    })
    .unwrap();
}
