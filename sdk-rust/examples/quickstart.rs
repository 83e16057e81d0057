//! Quick start: give an agent its identity and ask whether it may act.
//!
//! ```sh
//! AGENTID_URL=http://127.0.0.1:8080 AGENTID_API_KEY=aid_... \
//!     cargo run -p agentid --example quickstart
//! ```
//!
//! The first run creates the agent's key in the per-user key store, registers the
//! agent and proves possession; later runs find the same agent. An administrator
//! grants capabilities (until then every action is denied, which is a decision,
//! not an error).

use serde_json::json;

/// Secures the agent described by `builder` and asks for one decision.
pub async fn run(builder: agentid::AgentBuilder) -> Result<agentid::Decision, agentid::Error> {
    let agent = builder.connect().await?;
    println!(
        "agent {} ({}) key {}",
        agent.name(),
        agent.id(),
        agent.key_id()
    );

    let args = json!({"to": "bob@example.com", "subject": "Quarterly report"});
    let decision = agent
        .verify("email:send", Some("bob@example.com"), Some(&args))
        .await?;
    if decision.allowed {
        println!(
            "allowed: sending the report (receipt {} bytes)",
            decision.receipt.len()
        );
    } else {
        println!("denied: {} ({})", decision.reason, decision.message);
    }
    Ok(decision)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), agentid::Error> {
    run(agentid::AgentBuilder::new("quickstart-agent"))
        .await
        .map(|_| ())
}
