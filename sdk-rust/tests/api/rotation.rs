//! Key rotation: the server switches keys, the old key stops working, the key
//! file follows, and an interrupted rotation is completed on the next start.

use agentid::DecisionReason;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_replaces_the_key_everywhere() {
    let app = spawn_app().await;
    let dir = app.key_dir("rot");
    let agent = app.agent("rotor", &dir).connect().await.unwrap();
    app.grant(agent.id(), "files:read", None).await;
    let old_key_id = agent.key_id();
    let old_token = agent.token().await.unwrap();
    let signed_with_old = agent.sign_action("files:read", None, None).unwrap();

    let new_key_id = agent.rotate_key().await.unwrap();
    assert_ne!(new_key_id, old_key_id);
    assert_eq!(agent.key_id(), new_key_id);

    // The server's record and key history.
    let record = app.admin.get_agent(agent.id()).await.unwrap();
    assert_eq!(record.key_id, new_key_id);
    assert_eq!(record.status, "active");
    let keys = app.admin.list_agent_keys(agent.id()).await.unwrap();
    let status_of = |id: &str| keys.iter().find(|k| k.key_id == id).unwrap().status.clone();
    assert_eq!(status_of(&old_key_id), "retired");
    assert_eq!(status_of(&new_key_id), "active");

    // The old key's statements are refused; the new key's are decided.
    let rp = agentid::RelyingParty::new(&app.address).unwrap();
    let stale = rp.decide(signed_with_old.json()).await.unwrap();
    assert_eq!(stale.reason, DecisionReason::KeyRetired);
    let fresh = agent.verify("files:read", None, None).await.unwrap();
    assert!(fresh.allowed, "{fresh:?}");

    // A new token bound to the new key.
    let token = agent.token().await.unwrap();
    assert_ne!(token, old_token);
    assert_eq!(
        rp.verify_agent_token(&token).await.unwrap().cnf.jkt,
        new_key_id
    );

    // The key file holds the new key, nothing is left staged, and the next start
    // is the same agent with the new key.
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rotor.key")).unwrap()).unwrap();
    assert_eq!(file["public_key"], agent.public_key().as_str());
    assert!(!dir.join("rotor.next.key").exists());
    let restarted = app.agent("rotor", &dir).connect().await.unwrap();
    assert_eq!(restarted.id(), agent.id());
    assert_eq!(restarted.key_id(), new_key_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rotation_is_completed_at_the_next_start() {
    let app = spawn_app().await;
    let dir = app.key_dir("crash");
    let agent = app.agent("phoenix", &dir).connect().await.unwrap();
    let current = dir.join("phoenix.key");
    let staged = dir.join("phoenix.next.key");
    let old_file = std::fs::read(&current).unwrap();

    let new_key_id = agent.rotate_key().await.unwrap();
    // Put the files back as a crash between the server's answer and the rename
    // would leave them: the old key current, the new one staged.
    std::fs::rename(&current, &staged).unwrap();
    write_private(&current, &old_file);

    let restarted = app.agent("phoenix", &dir).connect().await.unwrap();
    assert_eq!(restarted.id(), agent.id());
    assert_eq!(restarted.key_id(), new_key_id);
    assert!(!staged.exists());
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&current).unwrap()).unwrap();
    assert_eq!(file["public_key"], restarted.public_key().as_str());

    // A staged key the server never accepted is discarded.
    let other = agentid::KeyStore::open(app.key_dir("spare")).unwrap();
    other.load_or_create("phoenix").unwrap();
    std::fs::copy(app.key_dir("spare").join("phoenix.key"), &staged).unwrap();
    let again = app.agent("phoenix", &dir).connect().await.unwrap();
    assert_eq!(again.key_id(), new_key_id);
    assert!(!staged.exists());
}

fn write_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).unwrap().write_all(bytes).unwrap();
}
