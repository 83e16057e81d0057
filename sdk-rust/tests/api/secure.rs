//! `secure()`: first run, second run with the same key, a different key under the
//! same name, key-file permissions and passphrase encryption, end to end.

use agentid::Error;

use crate::helpers::{spawn_app, TempDir};

fn read_key_file(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_creates_a_private_key_registers_and_activates() {
    let app = spawn_app().await;
    let dir = app.key_dir("first");
    let agent = app
        .agent("mail-assistant", &dir)
        .description("Drafts replies")
        .requested_capabilities(vec!["email:send".to_owned()])
        .connect()
        .await
        .unwrap();

    // The key file holds the key the server knows, readable by its owner only.
    let path = dir.join("mail-assistant.key");
    let file = read_key_file(&path);
    assert_eq!(file["public_key"], agent.public_key().as_str());
    assert_eq!(file["name"], "mail-assistant");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    let record = app.admin.get_agent(agent.id()).await.unwrap();
    assert_eq!(record.status, "active", "proof of possession activated it");
    assert_eq!(record.name, "mail-assistant");
    assert_eq!(record.description, "Drafts replies");
    assert_eq!(record.requested_capabilities, vec!["email:send"]);
    assert_eq!(record.key_id, agent.key_id());
    assert_eq!(record.did, agent.did());
    assert_eq!(agent.audience(), app.address);

    // The server never received the private key: nothing it stores or returns
    // contains the seed.
    let seed = file["private_key"]["seed"].as_str().unwrap().to_owned();
    let listed =
        serde_json::to_string(&app.admin.list_agents(&Default::default()).await.unwrap()).unwrap();
    assert!(!listed.contains(&seed));
    assert!(!format!("{agent:?}").contains(&seed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_with_the_same_key_is_the_same_agent() {
    let app = spawn_app().await;
    let dir = app.key_dir("second");
    let first = app.agent("worker", &dir).connect().await.unwrap();
    let key_file = std::fs::read(dir.join("worker.key")).unwrap();
    let second = app.agent("worker", &dir).connect().await.unwrap();

    assert_eq!(second.id(), first.id());
    assert_eq!(second.key_id(), first.key_id());
    assert_eq!(std::fs::read(dir.join("worker.key")).unwrap(), key_file);
    let page = app
        .admin
        .list_agents(&agentid::AgentQuery {
            name: Some("worker".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.agents.len(), 1, "no second identity");
    // Both handles work.
    assert!(first.token().await.is_ok());
    assert!(second.token().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_name_with_another_key_is_a_clear_error() {
    let app = spawn_app().await;
    let original = app
        .agent("billing", &app.key_dir("a"))
        .connect()
        .await
        .unwrap();
    let other_dir = app.key_dir("b");
    let err = app
        .agent("billing", &other_dir)
        .connect()
        .await
        .unwrap_err();
    match &err {
        Error::KeyConflict {
            name,
            local_key_id,
            path,
        } => {
            assert_eq!(name, "billing");
            assert_ne!(local_key_id, &original.key_id());
            assert_eq!(path, &other_dir.join("billing.key"));
        }
        other => panic!("expected a key conflict, got {other}"),
    }
    assert_eq!(err.kind(), "key_conflict");
    assert!(err.to_string().contains("different public key"), "{err}");
    let page = app.admin.list_agents(&Default::default()).await.unwrap();
    assert_eq!(page.agents.len(), 1);
    assert_eq!(page.agents[0].key_id, original.key_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passphrase_encrypts_the_key_file_and_is_needed_to_start() {
    let app = spawn_app().await;
    let dir = app.key_dir("enc");
    let agent = app
        .agent("vault", &dir)
        .passphrase("a long passphrase")
        .connect()
        .await
        .unwrap();
    let file = read_key_file(&dir.join("vault.key"));
    assert_eq!(
        file["private_key"]["encryption"],
        "argon2id-xchacha20poly1305"
    );
    assert!(file["private_key"].get("seed").is_none());

    let again = app
        .agent("vault", &dir)
        .passphrase("a long passphrase")
        .connect()
        .await
        .unwrap();
    assert_eq!(again.id(), agent.id());

    let err = app
        .agent("vault", &dir)
        .passphrase("not it")
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    let err = app.agent("vault", &dir).connect().await.unwrap_err();
    assert!(err.to_string().contains("passphrase is needed"), "{err}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    let dir = app.key_dir("perm");
    app.agent("open", &dir).connect().await.unwrap();
    let path = dir.join("open.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = app.agent("open", &dir).connect().await.unwrap_err();
    assert_eq!(err.kind(), "key_store");
    assert!(err.to_string().contains("mode 640"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configuration_names_the_variable() {
    let dir = TempDir::new("agentid-config");
    // Explicit settings win over the environment; with no URL and no variable
    // the error names AGENTID_URL (the test process does not set it).
    if std::env::var_os(agentid::ENV_URL).is_none() {
        let err = agentid::AgentBuilder::new("x")
            .api_key("k")
            .key_dir(dir.path())
            .connect()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "config");
        assert!(err.to_string().contains("AGENTID_URL"), "{err}");
    }
    let err = agentid::AgentBuilder::new("   ")
        .url("http://127.0.0.1:1")
        .api_key("k")
        .key_dir(dir.path())
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid_input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_renewed_before_it_expires() {
    let app = crate::helpers::spawn_app_with(&[("AGENTID_AGENT_TOKEN_TTL", "60")]).await;
    let dir = app.key_dir("tok");
    // With the default 60 s margin, a 60 s token is renewed at every call.
    let eager = app.agent("tok", &dir).connect().await.unwrap();
    let a = eager.token().await.unwrap();
    let b = eager.token().await.unwrap();
    assert_ne!(a, b, "a token within the refresh margin is renewed");
    // With a smaller margin, the token is reused while valid.
    let lazy = app
        .agent("tok", &dir)
        .token_refresh_margin(std::time::Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let c = lazy.token().await.unwrap();
    assert_eq!(c, lazy.token().await.unwrap());
    let rp = agentid::RelyingParty::new(&app.address).unwrap();
    for token in [a, b, c] {
        let claims = rp.verify_agent_token(&token).await.unwrap();
        assert_eq!(claims.exp - claims.iat, 60);
    }
}

/// A shell that runs an agent and the server holds the SDK's variables: the server
/// accepts each of them rather than refusing it as a misspelt setting.
#[test]
fn the_server_accepts_every_variable_the_sdk_reads() {
    for name in [
        agentid::ENV_URL,
        agentid::ENV_API_KEY,
        agentid::ENV_KEY_DIR,
        agentid::ENV_KEY_PASSPHRASE,
    ] {
        assert!(
            agentid_server::config::SDK_VARIABLES
                .iter()
                .any(|(n, _)| *n == name),
            "{name} is not in the server's SDK_VARIABLES"
        );
    }
}
