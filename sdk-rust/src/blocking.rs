//! A blocking facade for callers without an async runtime (scripts, the Python
//! binding).
//!
//! Each facade runs the async SDK on a [`Runtime`] the SDK owns (one worker
//! thread), never on the caller's. Methods block the calling thread and may be
//! called from many threads at once. Do not call them from inside an async task
//! (blocking there stalls the caller's runtime, and tokio refuses it), and do not
//! drop the last handle of a [`Runtime`] inside an async context.

use std::future::Future;
use std::sync::Arc;

use agentid_protocol::tokens::{AgentTokenClaims, ReceiptClaims};
use agentid_protocol::Decision;

use crate::relying_party::VerifiedAction;
use crate::signing::SignedEnvelope;
use crate::{AgentBuilder, Error};

/// The SDK's own async runtime, shared by blocking facades. Cheap to clone.
///
/// ```no_run
/// let runtime = agentid::blocking::Runtime::new()?;
/// let admin = agentid::AdminClient::new("http://127.0.0.1:8080", "agentid_sk_...")?;
/// // Any SDK future can be run to completion on it.
/// let agents = runtime.block_on(admin.list_agents(&Default::default()))?;
/// # Ok::<(), agentid::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<tokio::runtime::Runtime>,
}

impl Runtime {
    /// A runtime with one worker thread and timers and I/O enabled.
    pub fn new() -> Result<Runtime, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agentid-sdk")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("could not start the SDK's runtime: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(runtime),
        })
    }

    /// Runs `future` to completion on this runtime, blocking the calling thread
    /// (which drives the future; the runtime's worker drives I/O and timers). May
    /// be called from several threads at once.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.inner.block_on(future)
    }
}

/// A blocking [`crate::Agent`]. `Send + Sync`, cheap to clone.
///
/// ```no_run
/// let agent = agentid::blocking::Agent::secure("my-agent")?;
/// let decision = agent.verify("files:read", Some("/srv/report.pdf"), None)?;
/// println!("{} ({})", decision.allowed, decision.reason);
/// # Ok::<(), agentid::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Agent {
    agent: crate::Agent,
    runtime: Runtime,
}

impl Agent {
    /// [`crate::secure`], blocking: settings from the environment.
    pub fn secure(name: &str) -> Result<Agent, Error> {
        Agent::connect(AgentBuilder::new(name))
    }

    /// [`AgentBuilder::connect`], blocking, on a new runtime.
    pub fn connect(builder: AgentBuilder) -> Result<Agent, Error> {
        Agent::connect_on(Runtime::new()?, builder)
    }

    /// [`AgentBuilder::connect`], blocking, on `runtime` (share one runtime
    /// between many facades).
    pub fn connect_on(runtime: Runtime, builder: AgentBuilder) -> Result<Agent, Error> {
        let agent = runtime.block_on(builder.connect())?;
        Ok(Agent { agent, runtime })
    }

    /// The async agent behind this facade.
    pub fn as_async(&self) -> &crate::Agent {
        &self.agent
    }

    /// The agent's id.
    pub fn id(&self) -> String {
        self.agent.id().to_owned()
    }

    /// The agent's name.
    pub fn name(&self) -> String {
        self.agent.name().to_owned()
    }

    /// The current key id.
    pub fn key_id(&self) -> String {
        self.agent.key_id()
    }

    /// The current public key, base64url.
    pub fn public_key(&self) -> String {
        self.agent.public_key()
    }

    /// The agent's `did:key`.
    pub fn did(&self) -> String {
        self.agent.did()
    }

    /// The audience of the agent's statements.
    pub fn audience(&self) -> String {
        self.agent.audience()
    }

    /// [`crate::Agent::sign_action`] (no network).
    pub fn sign_action(
        &self,
        action: &str,
        resource: Option<&str>,
        args: Option<&serde_json::Value>,
    ) -> Result<SignedEnvelope, Error> {
        self.agent.sign_action(action, resource, args)
    }

    /// [`crate::Agent::verify`], blocking.
    pub fn verify(
        &self,
        action: &str,
        resource: Option<&str>,
        args: Option<&serde_json::Value>,
    ) -> Result<Decision, Error> {
        let agent = self.agent.clone();
        let (action, resource, args) = (
            action.to_owned(),
            resource.map(str::to_owned),
            args.cloned(),
        );
        self.runtime.block_on(async move {
            agent
                .verify(&action, resource.as_deref(), args.as_ref())
                .await
        })
    }

    /// [`crate::Agent::token`], blocking.
    pub fn token(&self) -> Result<String, Error> {
        let agent = self.agent.clone();
        self.runtime.block_on(async move { agent.token().await })
    }

    /// [`crate::Agent::rotate_key`], blocking.
    pub fn rotate_key(&self) -> Result<String, Error> {
        let agent = self.agent.clone();
        self.runtime
            .block_on(async move { agent.rotate_key().await })
    }
}

/// A blocking [`crate::RelyingParty`].
#[derive(Debug, Clone)]
pub struct RelyingParty {
    rp: crate::RelyingParty,
    runtime: Runtime,
}

impl RelyingParty {
    /// Wraps `rp` with its own new runtime.
    pub fn new(rp: crate::RelyingParty) -> Result<RelyingParty, Error> {
        Ok(RelyingParty {
            rp,
            runtime: Runtime::new()?,
        })
    }

    /// Wraps `rp` on `runtime`.
    pub fn on(runtime: Runtime, rp: crate::RelyingParty) -> RelyingParty {
        RelyingParty { rp, runtime }
    }

    /// [`crate::RelyingParty::verify_agent_token`], blocking.
    pub fn verify_agent_token(&self, token: &str) -> Result<AgentTokenClaims, Error> {
        let (rp, token) = (self.rp.clone(), token.to_owned());
        self.runtime
            .block_on(async move { rp.verify_agent_token(&token).await })
    }

    /// [`crate::RelyingParty::verify_receipt`], blocking.
    pub fn verify_receipt(
        &self,
        receipt: &str,
        envelope_json: Option<&str>,
    ) -> Result<ReceiptClaims, Error> {
        let (rp, receipt, envelope) = (
            self.rp.clone(),
            receipt.to_owned(),
            envelope_json.map(str::to_owned),
        );
        self.runtime
            .block_on(async move { rp.verify_receipt(&receipt, envelope.as_deref()).await })
    }

    /// [`crate::RelyingParty::decide`], blocking.
    pub fn decide(&self, envelope_json: &str) -> Result<Decision, Error> {
        let (rp, envelope) = (self.rp.clone(), envelope_json.to_owned());
        self.runtime
            .block_on(async move { rp.decide(&envelope).await })
    }

    /// [`crate::RelyingParty::verify_action_with_token`], blocking.
    pub fn verify_action_with_token(
        &self,
        envelope_json: &str,
        token: &str,
        public_key: &str,
    ) -> Result<(VerifiedAction, AgentTokenClaims), Error> {
        let (rp, envelope, token, key) = (
            self.rp.clone(),
            envelope_json.to_owned(),
            token.to_owned(),
            public_key.to_owned(),
        );
        self.runtime
            .block_on(async move { rp.verify_action_with_token(&envelope, &token, &key).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn facades_are_send_and_sync() {
        assert_send_sync::<Agent>();
        assert_send_sync::<RelyingParty>();
        assert_send_sync::<Runtime>();
        assert_send_sync::<crate::Agent>();
        assert_send_sync::<crate::AdminClient>();
    }

    #[test]
    fn runs_futures_from_several_threads() {
        let runtime = Runtime::new().unwrap();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4u64)
                .map(|i| {
                    let rt = runtime.clone();
                    s.spawn(move || {
                        rt.block_on(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                            i * 2
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(sums, vec![0, 2, 4, 6]);
    }
}
