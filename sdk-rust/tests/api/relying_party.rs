//! Relying-party checks without an agent key: agent tokens and receipts against
//! the server's JWKS, and envelopes verified offline.

use agentid::relying_party::{
    verify_action_envelope, verify_agent_token_with, verify_receipt_with, DEFAULT_ACTION_MAX_AGE,
};
use agentid::signing::now_unix;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_tokens_verify_against_the_jwks_and_bind_the_key() {
    let app = spawn_app().await;
    let agent = app
        .agent("token-holder", &app.key_dir("t"))
        .connect()
        .await
        .unwrap();
    let rp = agentid::RelyingParty::new(&app.address).unwrap();
    let token = agent.token().await.unwrap();

    let claims = rp.verify_agent_token(&token).await.unwrap();
    assert_eq!(claims.sub, agent.id());
    assert_eq!(claims.iss, app.address);
    assert_eq!(claims.cnf.jkt, agent.key_id());
    assert_eq!(claims.did, agent.did());

    // Offline, with a saved key set: same answer; another issuer or a later time
    // is refused.
    let jwks = rp.jwks().await.unwrap();
    let offline = verify_agent_token_with(&jwks, &app.address, &token, now_unix()).unwrap();
    assert_eq!(offline, claims);
    assert!(
        verify_agent_token_with(&jwks, "https://elsewhere.example", &token, now_unix()).is_err()
    );
    assert!(verify_agent_token_with(&jwks, &app.address, &token, claims.exp + 60).is_err());
    // An empty key set knows no key.
    let empty = agentid::Jwks { keys: vec![] };
    assert!(verify_agent_token_with(&empty, &app.address, &token, now_unix()).is_err());
    // A flipped signature byte is refused.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(rp.verify_agent_token(&forged).await.is_err());
    // A token is not a receipt.
    assert!(rp.verify_receipt(&token, None).await.is_err());

    // Envelope + token + public key, offline.
    let signed = agent
        .sign_action("docs:read", Some("handbook"), None)
        .unwrap();
    let (action, by) = rp
        .verify_action_with_token(signed.json(), &token, &agent.public_key())
        .await
        .unwrap();
    assert_eq!(action.payload.action, "docs:read");
    assert_eq!(action.digest, signed.digest());
    assert_eq!(by.sub, agent.id());
    let stranger = agentid::AgentKey::generate();
    let err = rp
        .verify_action_with_token(signed.json(), &token, &stranger.public_key())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cnf.jkt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_verify_offline_and_name_their_envelope() {
    let app = spawn_app().await;
    let agent = app
        .agent("receipts", &app.key_dir("r"))
        .connect()
        .await
        .unwrap();
    app.grant(agent.id(), "tickets:create", None).await;
    let rp = agentid::RelyingParty::new(&app.address).unwrap();

    let signed = agent.sign_action("tickets:create", None, None).unwrap();
    let decision = rp.decide(signed.json()).await.unwrap();
    assert!(decision.allowed);
    let claims = rp
        .verify_receipt(&decision.receipt, Some(signed.json()))
        .await
        .unwrap();
    assert!(claims.allowed);
    assert_eq!(claims.jti, decision.decision_id);
    assert_eq!(claims.envelope_sha256, signed.digest());
    assert_eq!(claims.capability, "tickets:create");
    assert_eq!(claims.audit_seq, decision.audit_seq);

    // The receipt is about that envelope and no other.
    let other = agent.sign_action("tickets:create", None, None).unwrap();
    let err = rp
        .verify_receipt(&decision.receipt, Some(other.json()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another envelope"), "{err}");

    // Offline with the saved key set; a denial's receipt says denied.
    let jwks = rp.jwks().await.unwrap();
    let denied = agent.verify("tickets:delete", None, None).await.unwrap();
    let claims =
        verify_receipt_with(&jwks, &app.address, &denied.receipt, None, now_unix()).unwrap();
    assert!(!claims.allowed);
    assert_eq!(claims.reason, "capability_not_granted");
    assert!(verify_receipt_with(
        &jwks,
        "https://other.example",
        &denied.receipt,
        None,
        now_unix()
    )
    .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_verify_offline_with_the_agent_key() {
    let app = spawn_app().await;
    let agent = app
        .agent("offline", &app.key_dir("o"))
        .connect()
        .await
        .unwrap();
    let signed = agent
        .sign_action("email:send", Some("bob@example.com"), None)
        .unwrap();
    let now = now_unix();
    let ok = verify_action_envelope(
        signed.json(),
        &agent.public_key(),
        &app.address,
        now,
        DEFAULT_ACTION_MAX_AGE,
    )
    .unwrap();
    assert_eq!(ok.payload.agent_id, agent.id());
    assert_eq!(ok.key_id, agent.key_id());
    // Wrong key, wrong audience, stale.
    let stranger = agentid::AgentKey::generate();
    assert!(verify_action_envelope(
        signed.json(),
        &stranger.public_key(),
        &app.address,
        now,
        DEFAULT_ACTION_MAX_AGE
    )
    .is_err());
    assert!(verify_action_envelope(
        signed.json(),
        &agent.public_key(),
        "https://other",
        now,
        DEFAULT_ACTION_MAX_AGE
    )
    .is_err());
    assert!(verify_action_envelope(
        signed.json(),
        &agent.public_key(),
        &app.address,
        now + 301,
        DEFAULT_ACTION_MAX_AGE
    )
    .is_err());
    // One changed payload byte breaks the signature.
    let mut envelope: serde_json::Value = serde_json::from_str(signed.json()).unwrap();
    let payload = agentid_protocol::b64::decode(envelope["payload"].as_str().unwrap()).unwrap();
    let changed = String::from_utf8(payload).unwrap().replace("bob@", "eve@");
    envelope["payload"] = agentid_protocol::b64::encode(changed).into();
    let err = verify_action_envelope(
        &envelope.to_string(),
        &agent.public_key(),
        &app.address,
        now,
        DEFAULT_ACTION_MAX_AGE,
    )
    .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}
