//! Two separate OS processes calling `secure("same-name")` at the same time, with
//! the same key directory, end with one agent and no error. The processes are
//! this test binary run again, each executing only [`child_secure`].

use std::process::Command;

use crate::helpers::spawn_app;

const CHILD_VAR: &str = "AGENTID_SDK_TEST_CHILD";

/// Runs in the child processes only (ignored, and a no-op without the variable):
/// `secure()` from the environment, then prints the agent's id and key id.
#[tokio::test]
#[ignore = "run by two_processes_securing_the_same_name_end_with_one_agent"]
async fn child_secure() {
    let Ok(name) = std::env::var(CHILD_VAR) else {
        return;
    };
    let agent = agentid::secure(&name).await.unwrap();
    let token = agent.token().await.unwrap();
    assert!(!token.is_empty());
    println!("\nCHILD-RESULT {} {}", agent.id(), agent.key_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_securing_the_same_name_end_with_one_agent() {
    let app = spawn_app().await;
    let key_dir = app.key_dir("shared");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "concurrency::child_secure",
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_VAR, "twin")
                .env(agentid::ENV_URL, &app.address)
                .env(agentid::ENV_API_KEY, &app.api_key)
                .env(agentid::ENV_KEY_DIR, &key_dir)
                .env_remove(agentid::ENV_KEY_PASSPHRASE)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    let mut results = Vec::new();
    for output in &outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "a child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("CHILD-RESULT ").map(|(_, rest)| rest.trim()))
            .unwrap_or_else(|| panic!("the child test did not run:\n{stdout}"))
            .to_owned();
        results.push(line);
    }
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0], results[1],
        "both processes use one agent and one key"
    );

    let page = app
        .admin
        .list_agents(&agentid::AgentQuery {
            name: Some("twin".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.agents.len(), 1);
    assert_eq!(page.agents[0].status, "active");
    let (id, key_id) = results[0].split_once(' ').unwrap();
    assert_eq!(page.agents[0].id, id);
    assert_eq!(page.agents[0].key_id, key_id);
    // One key file, nothing temporary left behind.
    let files: Vec<_> = std::fs::read_dir(&key_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["twin.key".to_owned()]);
}
