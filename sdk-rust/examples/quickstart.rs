//! Quick start: give an agent its identity and ask whether it may act. This is the
//! quick start of `sdk-rust/README.md`, verbatim (a test keeps them equal).
//!
//! ```sh
//! export AGENTID_URL=http://127.0.0.1:8080 AGENTID_API_KEY=agentid_sk_...
//! cargo run -q -p agentid --example quickstart
//! ```
//!
//! The first run creates the agent's key in the per-user key store, registers the
//! agent and proves possession; later runs find the same agent. Until an
//! administrator grants `email:send` it prints `denied: capability_not_granted` (a
//! decision, not an error); then `allowed` and the server's signed receipt.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), agentid::Error> {
    // Loads or creates the key (~/.local/share/agentid/keys/my-agent.key, mode 0600),
    // registers the agent if needed, proves possession, keeps a token.
    let agent = agentid::secure("my-agent").await?;
    println!("agent {} is {}", agent.name(), agent.id());

    let args = serde_json::json!({"to": "bob@example.com", "subject": "Report"});
    let decision = agent
        .verify("email:send", Some("bob@example.com"), Some(&args))
        .await?;
    if decision.allowed {
        // Do it. The receipt is the server's signed proof of this decision.
        println!("allowed: audit record {}", decision.audit_seq);
        println!("receipt: {}", decision.receipt);
    } else {
        println!("denied: {}", decision.reason); // a denial is a value, not an error
    }
    Ok(())
}
