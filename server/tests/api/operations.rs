//! Operations: the container health check command and online backups.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::agents::{new_key, public_b64};
use crate::helpers::{create_owner, Backend, ServerProcess, TestDb, OWNER_PW};

fn server_vars(db: &TestDb) -> Vec<(String, String)> {
    let mut vars = db.vars();
    vars.push(("AGENTID_LISTEN".into(), "127.0.0.1:0".into()));
    vars.push(("AGENTID_BCRYPT_COST".into(), "4".into()));
    vars
}

/// Runs the binary with exactly `vars` and returns (status, stdout, stderr).
fn run(args: &[&str], vars: &[(String, String)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_agentid-server"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().cloned())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn with(vars: &[(String, String)], key: &str, value: &str) -> Vec<(String, String)> {
    let mut vars: Vec<_> = vars.iter().filter(|(k, _)| k != key).cloned().collect();
    vars.push((key.to_owned(), value.to_owned()));
    vars
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_follows_readiness() {
    let db = TestDb::new(Backend::Sqlite);
    let vars = server_vars(&db);
    let server = ServerProcess::start(&db.dir, &vars);
    let listen = server.address.trim_start_matches("http://").to_owned();
    let check = with(&vars, "AGENTID_LISTEN", &listen);
    let (status, _, stderr) = run(&["healthcheck"], &check);
    assert_eq!(status, 0, "{stderr}");
    // An unspecified address is checked on loopback.
    let port = listen.rsplit(':').next().unwrap();
    let (status, _, stderr) = run(
        &["healthcheck"],
        &with(&vars, "AGENTID_LISTEN", &format!("0.0.0.0:{port}")),
    );
    assert_eq!(status, 0, "{stderr}");
    drop(server);
    let (status, _, stderr) = run(&["healthcheck"], &check);
    assert_eq!(status, 1);
    assert!(stderr.contains("not ready"), "{stderr}");
}

/// Registrations keep being acknowledged while `agentid-server backup` runs; the copy
/// holds every registration acknowledged before the backup started, its audit chain
/// verifies, and a server started on it serves them (the restore drill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_keeps_every_acknowledged_record() {
    let db = TestDb::new(Backend::Sqlite);
    let vars = server_vars(&db);
    create_owner(&vars, "Acme", "owner@example.com", OWNER_PW);
    let server = ServerProcess::start(&db.dir, &vars);
    let http = reqwest::Client::new();
    let tokens: serde_json::Value = http
        .post(format!("{}/api/v1/auth/login", server.address))
        .json(&serde_json::json!({ "email": "owner@example.com", "password": OWNER_PW }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // Four writers registering agents as fast as they are acknowledged.
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, access) = (http.clone(), server.address.clone(), access.clone());
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let response = http
                    .post(format!("{base}/api/v1/agents"))
                    .bearer_auth(&access)
                    .json(&serde_json::json!({
                        "name": format!("agent-{w}-{i}"),
                        "public_key": public_b64(&new_key()),
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let agent: serde_json::Value = response.json().await.unwrap();
                acknowledged
                    .lock()
                    .unwrap()
                    .push(agent["id"].as_str().unwrap().to_owned());
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let copy = db.dir.join("backup.db");
    let before: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(before.len() > 10, "the writers are writing");
    let backup = {
        let (copy, vars) = (copy.clone(), vars.clone());
        tokio::task::spawn_blocking(move || run(&["backup", "--to", copy.to_str().unwrap()], &vars))
    };
    let (status, stdout, stderr) = backup.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(status, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["bytes"].as_u64().unwrap() > 0);
    let after = acknowledged.lock().unwrap().len();
    assert!(after > before.len(), "writes went on during the backup");

    // Every registration acknowledged before the backup started is in the copy.
    let restored = with(&vars, "DATABASE_URL", copy.to_str().unwrap());
    {
        use diesel::prelude::*;
        let mut conn = diesel::SqliteConnection::establish(copy.to_str().unwrap()).unwrap();
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        let ids: std::collections::HashSet<String> = diesel::sql_query("SELECT id FROM agents")
            .load::<Id>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        for id in &before {
            assert!(
                ids.contains(id),
                "agent {id}, acknowledged before the backup, is missing"
            );
        }
    }
    let (status, stdout, stderr) = run(&["audit", "verify"], &restored);
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert!(stdout.contains("\"valid\":true"), "{stdout}");

    // The restore drill: a server on the copy serves what was acknowledged.
    drop(server);
    let server = ServerProcess::start(&db.dir, &restored);
    let tokens: serde_json::Value = http
        .post(format!("{}/api/v1/auth/login", server.address))
        .json(&serde_json::json!({ "email": "owner@example.com", "password": OWNER_PW }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let response = http
        .get(format!("{}/api/v1/agents/{}", server.address, before[0]))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A backup never overwrites a file, and PostgreSQL is pg_dump's job.
    let (status, _, stderr) = run(&["backup", "--to", copy.to_str().unwrap()], &vars);
    assert_eq!(status, 2);
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    let pg = with(
        &vars,
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    let (status, _, stderr) = run(&["backup", "--to", "/tmp/never.db"], &pg);
    assert_eq!(status, 2);
    assert!(stderr.contains("pg_dump"), "{stderr}");
}

/// Replicas starting together on a fresh PostgreSQL database: every one starts, and
/// the migrations are applied exactly once between them.
#[test]
fn replicas_starting_together_migrate_once() {
    use agentid_server::config::Config;
    use agentid_server::db::Database;
    let db = TestDb::new(Backend::Postgres);
    let config = Config::from_vars(db.vars()).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (config, barrier) = (config.clone(), barrier.clone());
            std::thread::spawn(move || {
                let database = Database::connect(&config.database).unwrap();
                barrier.wait();
                database.migrate()
            })
        })
        .collect();
    let applied: Vec<usize> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .expect("every replica's migration succeeds")
        })
        .collect();
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(applied.iter().sum::<usize>(), migrations, "{applied:?}");
}
