//! The blocking facade, used from a plain thread with no runtime of its own.

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_blocking_agent_works_without_an_async_runtime() {
    let app = spawn_app().await;
    let agent = app
        .agent("sync-agent", &app.key_dir("sync"))
        .connect()
        .await
        .unwrap();
    app.grant(agent.id(), "files:read", None).await;
    let builder = app.agent("sync-agent", &app.key_dir("sync"));
    let address = app.address.clone();

    // A plain OS thread: no tokio context, as a Python caller would be.
    let outcome = std::thread::spawn(move || {
        let agent = agentid::blocking::Agent::connect(builder).unwrap();
        let allowed = agent.verify("files:read", Some("/a"), None).unwrap();
        let denied = agent.verify("files:write", Some("/a"), None).unwrap();
        let token = agent.token().unwrap();
        let rp =
            agentid::blocking::RelyingParty::new(agentid::RelyingParty::new(&address).unwrap())
                .unwrap();
        let claims = rp.verify_agent_token(&token).unwrap();
        let signed = agent.sign_action("files:read", Some("/b"), None).unwrap();
        let decision = rp.decide(signed.json()).unwrap();
        let receipt = rp
            .verify_receipt(&decision.receipt, Some(signed.json()))
            .unwrap();
        let old = agent.key_id();
        let new = agent.rotate_key().unwrap();
        (
            agent.id(),
            allowed.allowed,
            denied.allowed,
            claims.sub,
            receipt.allowed,
            old != new,
        )
    })
    .join()
    .unwrap();
    assert_eq!(outcome.0, agent.id());
    assert!(outcome.1);
    assert!(!outcome.2);
    assert_eq!(outcome.3, agent.id());
    assert!(outcome.4);
    assert!(outcome.5);
}
