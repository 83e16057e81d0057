//! A guarded tool: the tool runs only when the server allows this exact call.
//!
//! ```sh
//! AGENTID_URL=http://127.0.0.1:8080 AGENTID_API_KEY=agentid_sk_... \
//!     cargo run -p agentid --example guarded_tool
//! ```
//!
//! The arguments are bound to the decision by their digest, so the decision (and
//! its receipt) is about what the tool actually does. A denial stops the tool and
//! says why; it never falls through to "allowed".

use serde_json::json;

/// What the guarded tool reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The tool ran.
    Sent {
        /// The decision's id (also its audit record).
        decision_id: String,
    },
    /// The server said no.
    Refused {
        /// The stable reason code.
        reason: String,
    },
}

/// The tool: "send" an email, only if `agent` may send to `to`.
pub async fn send_email(
    agent: &agentid::Agent,
    to: &str,
    subject: &str,
) -> Result<Outcome, agentid::Error> {
    let args = json!({"to": to, "subject": subject});
    let decision = agent.verify("email:send", Some(to), Some(&args)).await?;
    if !decision.allowed {
        return Ok(Outcome::Refused {
            reason: decision.reason.to_string(),
        });
    }
    println!("(sending `{subject}` to {to})");
    Ok(Outcome::Sent {
        decision_id: decision.decision_id,
    })
}

/// Secures the agent and calls the tool for an allowed-looking and a hostile
/// recipient (the second is what a prompt injection would try).
pub async fn run(builder: agentid::AgentBuilder) -> Result<Vec<Outcome>, agentid::Error> {
    let agent = builder.connect().await?;
    let mut outcomes = Vec::new();
    for to in ["bob@example.com", "attacker@evil.example"] {
        let outcome = send_email(&agent, to, "Quarterly report").await?;
        println!("{to}: {outcome:?}");
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), agentid::Error> {
    run(agentid::AgentBuilder::new("guarded-tool-agent"))
        .await
        .map(|_| ())
}
