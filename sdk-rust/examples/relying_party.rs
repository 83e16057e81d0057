//! A relying party (a tool server) that holds no agent key: it checks an agent's
//! token and signed request offline, asks the server for the decision, and checks
//! the server's signed receipt.
//!
//! ```sh
//! AGENTID_URL=http://127.0.0.1:8080 AGENTID_API_KEY=agentid_sk_... \
//!     cargo run -p agentid --example relying_party
//! ```
//!
//! The example plays both sides: an agent prepares a request, the relying party
//! checks it.

/// What an agent sends a tool server.
pub struct Request {
    /// The signed action envelope (JSON text).
    pub envelope: String,
    /// The agent's access token.
    pub token: String,
    /// The agent's public key (base64url), the key the token is bound to.
    pub public_key: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("envelope", &self.envelope)
            .field("token", &"[redacted]")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// What the relying party concluded.
#[derive(Debug)]
pub struct Verdict {
    /// The agent, per its verified token.
    pub agent_id: String,
    /// Whether the server allowed the action.
    pub allowed: bool,
    /// The receipt's reason code.
    pub reason: String,
}

/// The tool server's side: offline checks, then the server's decision, then the
/// receipt.
pub async fn handle(
    rp: &agentid::RelyingParty,
    request: &Request,
) -> Result<Verdict, agentid::Error> {
    let (action, claims) = rp
        .verify_action_with_token(&request.envelope, &request.token, &request.public_key)
        .await?;
    println!(
        "verified offline: agent {} asks for {} on {:?}",
        claims.sub, action.payload.action, action.payload.resource
    );
    let decision = rp.decide(&request.envelope).await?;
    let receipt = rp
        .verify_receipt(&decision.receipt, Some(&request.envelope))
        .await?;
    println!(
        "server decided {} ({}), audit record {}",
        receipt.allowed, receipt.reason, receipt.audit_seq
    );
    Ok(Verdict {
        agent_id: claims.sub,
        allowed: receipt.allowed,
        reason: receipt.reason,
    })
}

/// Secures an agent, has it prepare a request, and checks it as the relying party
/// of the server at `server_url`.
pub async fn run(
    builder: agentid::AgentBuilder,
    server_url: &str,
) -> Result<Verdict, agentid::Error> {
    let agent = builder.connect().await?;
    let signed = agent.sign_action("docs:read", Some("handbook.pdf"), None)?;
    let request = Request {
        envelope: signed.into_json(),
        token: agent.token().await?,
        public_key: agent.public_key(),
    };
    let rp = agentid::RelyingParty::new(server_url)?;
    handle(&rp, &request).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), agentid::Error> {
    let url = std::env::var(agentid::ENV_URL)
        .map_err(|_| agentid::Error::Config(format!("set {}", agentid::ENV_URL)))?;
    run(agentid::AgentBuilder::new("relying-party-demo-agent"), &url)
        .await
        .map(|_| ())
}
