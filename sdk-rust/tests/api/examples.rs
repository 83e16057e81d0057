//! The examples in `examples/`, run against a real server.

use crate::guarded_tool_example::{self as guarded, Outcome};
use crate::helpers::spawn_app;
use crate::{quickstart_example as quickstart, relying_party_example as rp_example};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs() {
    let app = spawn_app().await;
    let dir = app.key_dir("qs");
    // Before any grant the action is denied (a decision, not an error)...
    let first = quickstart::run(app.agent("quickstart-agent", &dir))
        .await
        .unwrap();
    assert!(!first.allowed);
    // ...and allowed once an administrator granted it; same agent on the re-run.
    app.grant(&first.agent_id, "email:send", None).await;
    let second = quickstart::run(app.agent("quickstart-agent", &dir))
        .await
        .unwrap();
    assert!(second.allowed);
    assert_eq!(second.agent_id, first.agent_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_tool_runs() {
    let app = spawn_app().await;
    let dir = app.key_dir("gt");
    let agent = app
        .agent("guarded-tool-agent", &dir)
        .connect()
        .await
        .unwrap();
    app.grant(agent.id(), "email:send", Some("*@example.com"))
        .await;
    let outcomes = guarded::run(app.agent("guarded-tool-agent", &dir))
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Sent { .. }), "{outcomes:?}");
    assert_eq!(
        outcomes[1],
        Outcome::Refused {
            reason: "resource_not_in_scope".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relying_party_runs() {
    let app = spawn_app().await;
    let dir = app.key_dir("rp");
    let agent = app.agent("rp-agent", &dir).connect().await.unwrap();
    app.grant(agent.id(), "docs:read", None).await;
    let verdict = rp_example::run(app.agent("rp-agent", &dir), &app.address)
        .await
        .unwrap();
    assert_eq!(verdict.agent_id, agent.id());
    assert!(verdict.allowed);
    assert_eq!(verdict.reason, "allowed");
}
