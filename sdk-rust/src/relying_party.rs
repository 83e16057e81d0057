//! Checks for relying parties (a tool server, an MCP server, a gateway) that hold
//! no agent key: agent tokens and decision receipts verified against the server's
//! JWKS, and signed action envelopes verified offline.
//!
//! Follows the checklist of `docs/tokens.md`: `alg` is exactly `EdDSA`, `typ` the
//! expected one, `kid` a key of the JWKS fetched from the configured server (never
//! a key named inside the token), no `crit`, `iss`/`aud`/`exp`/`nbf` checked with
//! 30 s of leeway, Ed25519 verified strictly. An unknown `kid` refetches the JWKS
//! at most once per [`RelyingPartyBuilder::min_refetch_interval`].
//! Offline envelope checks cannot detect replays (nonces are single use only at the
//! server); ask the server ([`RelyingParty::decide`]) when that matters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentid_protocol::envelope::{ParsedEnvelope, PayloadType};
use agentid_protocol::payload::ActionPayload;
use agentid_protocol::tokens::{
    AgentTokenClaims, Jwks, ReceiptClaims, AGENT_TOKEN_AUDIENCE, AGENT_TOKEN_TYPE, JWS_ALGORITHM,
    RECEIPT_TYPE,
};
use agentid_protocol::{b64, Decision, PublicKey};
use serde::de::DeserializeOwned;

use crate::client::Body;
use crate::retry::{Idempotency, RetryPolicy};
use crate::signing::now_unix;
use crate::{Client, Error};

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// Default freshness window for offline action checks (the server's default
/// `AGENTID_ACTION_MAX_AGE`).
pub const DEFAULT_ACTION_MAX_AGE: Duration = Duration::from_secs(300);

/// Verifies what an agentid server signs, with the server's published keys.
///
/// ```no_run
/// # async fn demo(token: &str) -> Result<(), agentid::Error> {
/// let rp = agentid::RelyingParty::new("https://agentid.example")?;
/// let claims = rp.verify_agent_token(token).await?;
/// println!("agent {} of organization {}", claims.sub, claims.org_id);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RelyingParty {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    issuer: String,
    max_age: Duration,
    min_refetch_interval: Duration,
    cache: tokio::sync::Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    jwks: Option<Arc<Jwks>>,
    fetched_at: Option<Instant>,
}

/// Settings of a [`RelyingParty`].
#[derive(Debug, Clone)]
pub struct RelyingPartyBuilder {
    url: String,
    issuer: Option<String>,
    max_age: Duration,
    min_refetch_interval: Duration,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
}

impl RelyingPartyBuilder {
    /// The issuer (the server's public URL, `AGENTID_PUBLIC_URL`) when it differs
    /// from the URL used to reach the server.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// How long a fetched JWKS is used before fetching it again (default 300 s,
    /// the server's `Cache-Control: max-age`).
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The shortest time between two fetches caused by an unknown `kid`
    /// (default 60 s), so forged key ids cannot make the relying party hammer
    /// the server.
    pub fn min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// Time limit of each HTTP request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How transient failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The relying party.
    pub fn build(self) -> Result<RelyingParty, Error> {
        let mut builder = Client::builder(&self.url);
        if let Some(t) = self.timeout {
            builder = builder.timeout(t);
        }
        if let Some(r) = self.retry {
            builder = builder.retry(r);
        }
        let client = builder.build()?;
        let issuer = self
            .issuer
            .unwrap_or_else(|| client.base_url().to_owned())
            .trim_end_matches('/')
            .to_owned();
        Ok(RelyingParty {
            inner: Arc::new(Inner {
                client,
                issuer,
                max_age: self.max_age,
                min_refetch_interval: self.min_refetch_interval,
                cache: tokio::sync::Mutex::new(Cache::default()),
            }),
        })
    }
}

/// An action envelope whose signature, audience and freshness were checked
/// offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAction {
    /// The signed payload.
    pub payload: ActionPayload,
    /// The envelope digest (hex SHA-256 of the signed bytes).
    pub digest: String,
    /// The id of the key that signed it.
    pub key_id: String,
}

impl RelyingParty {
    /// A relying party for the server at `url`, which is also the expected issuer.
    pub fn new(url: &str) -> Result<RelyingParty, Error> {
        RelyingParty::builder(url).build()
    }

    /// Settings for a relying party of the server at `url`.
    pub fn builder(url: &str) -> RelyingPartyBuilder {
        RelyingPartyBuilder {
            url: url.to_owned(),
            issuer: None,
            max_age: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(60),
            timeout: None,
            retry: None,
        }
    }

    /// The issuer tokens and receipts must name.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The server's key set, from the cache while it is fresh.
    pub async fn jwks(&self) -> Result<Arc<Jwks>, Error> {
        let mut cache = self.inner.cache.lock().await;
        if let (Some(jwks), Some(at)) = (&cache.jwks, cache.fetched_at) {
            if at.elapsed() < self.inner.max_age {
                return Ok(jwks.clone());
            }
        }
        self.fetch(&mut cache).await
    }

    async fn fetch(&self, cache: &mut Cache) -> Result<Arc<Jwks>, Error> {
        let jwks: Jwks = self
            .inner
            .client
            .call(
                reqwest::Method::GET,
                "/.well-known/jwks.json",
                None,
                Body::None,
                Idempotency::Safe,
            )
            .await?;
        let jwks = Arc::new(jwks);
        cache.jwks = Some(jwks.clone());
        cache.fetched_at = Some(Instant::now());
        Ok(jwks)
    }

    /// Verifies with the JWKS, refetching it once (rate-limited) when the token
    /// names a key id the cached set lacks.
    async fn verify_with_refresh<T: DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
    ) -> Result<T, Error> {
        let jwks = self.jwks().await?;
        match verify_jws::<T>(token, typ, &jwks) {
            Err(JwsError::UnknownKid) => {
                let mut cache = self.inner.cache.lock().await;
                let recent = cache
                    .fetched_at
                    .is_some_and(|at| at.elapsed() < self.inner.min_refetch_interval);
                let jwks = match (&cache.jwks, recent) {
                    (Some(jwks), true) => jwks.clone(),
                    _ => self.fetch(&mut cache).await?,
                };
                drop(cache);
                verify_jws::<T>(token, typ, &jwks).map_err(JwsError::into_error)
            }
            other => other.map_err(JwsError::into_error),
        }
    }

    /// Verifies an agent access token and returns its claims. Remember that the
    /// token is bound to the agent's key (`cnf.jkt`): accept it as proof only
    /// together with a signature by that key ([`RelyingParty::verify_action_with_token`]).
    pub async fn verify_agent_token(&self, token: &str) -> Result<AgentTokenClaims, Error> {
        let claims: AgentTokenClaims = self.verify_with_refresh(token, AGENT_TOKEN_TYPE).await?;
        check_agent_claims(&claims, &self.inner.issuer, now_unix())?;
        Ok(claims)
    }

    /// Verifies a decision receipt and returns its claims; with `envelope_json`,
    /// also that the receipt is about that envelope (`envelope_sha256`). Check
    /// `allowed`, `capability` and `resource` before acting on it.
    pub async fn verify_receipt(
        &self,
        receipt: &str,
        envelope_json: Option<&str>,
    ) -> Result<ReceiptClaims, Error> {
        let claims: ReceiptClaims = self.verify_with_refresh(receipt, RECEIPT_TYPE).await?;
        check_receipt_claims(&claims, &self.inner.issuer, envelope_json, now_unix())?;
        Ok(claims)
    }

    /// Forwards an agent's signed action envelope to the server and returns its
    /// decision (a denial is a decision, not an error). The same envelope is not
    /// resent after an ambiguous failure (its nonce may have been consumed).
    pub async fn decide(&self, envelope_json: &str) -> Result<Decision, Error> {
        self.inner
            .client
            .call(
                reqwest::Method::POST,
                "/api/v1/actions/verify",
                None,
                Body::Text(envelope_json.to_owned()),
                Idempotency::Unsafe,
            )
            .await
    }

    /// Verifies, offline, an action envelope signed by the holder of an agent
    /// token: the token (with the JWKS), that `public_key` is the key the token is
    /// bound to (`cnf.jkt`), the envelope's signature by that key, that it names
    /// the token's agent, this server as audience, and a fresh `iat`
    /// ([`DEFAULT_ACTION_MAX_AGE`]). Replays are not detected offline.
    pub async fn verify_action_with_token(
        &self,
        envelope_json: &str,
        token: &str,
        public_key: &str,
    ) -> Result<(VerifiedAction, AgentTokenClaims), Error> {
        let claims = self.verify_agent_token(token).await?;
        let key = PublicKey::from_b64url(public_key)
            .map_err(|e| Error::Verification(format!("public key: {e}")))?;
        if key.thumbprint() != claims.cnf.jkt {
            return Err(Error::Verification(
                "the public key is not the key the token is bound to (cnf.jkt)".to_owned(),
            ));
        }
        let action = verify_action_envelope(
            envelope_json,
            public_key,
            &self.inner.issuer,
            now_unix(),
            DEFAULT_ACTION_MAX_AGE,
        )?;
        if action.payload.agent_id != claims.sub {
            return Err(Error::Verification(
                "the envelope names another agent than the token".to_owned(),
            ));
        }
        Ok((action, claims))
    }
}

/// Verifies an action envelope offline with the agent's `public_key`
/// (base64url): strict parsing, payload type and payload rules, the strict
/// Ed25519 signature, `aud` equal to `audience`, and `iat` within
/// `[now − max_age, now + 30 s]`. Replays are not detected.
pub fn verify_action_envelope(
    envelope_json: &str,
    public_key: &str,
    audience: &str,
    now: i64,
    max_age: Duration,
) -> Result<VerifiedAction, Error> {
    let parsed = ParsedEnvelope::parse(envelope_json.as_bytes())
        .map_err(|e| Error::Verification(format!("envelope: {e}")))?;
    parsed
        .expect_type(PayloadType::Action)
        .map_err(|e| Error::Verification(format!("envelope: {e}")))?;
    let payload = ActionPayload::parse(&parsed.payload)
        .map_err(|e| Error::Verification(format!("payload: {e}")))?;
    let key = PublicKey::from_b64url(public_key)
        .map_err(|e| Error::Verification(format!("public key: {e}")))?;
    parsed
        .verify(&key)
        .map_err(|e| Error::Verification(format!("signature: {e}")))?;
    if payload.aud != audience {
        return Err(Error::Verification(
            "the action is for another audience".to_owned(),
        ));
    }
    let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    if payload.iat < now.saturating_sub(max_age) {
        return Err(Error::Verification("the action is too old".to_owned()));
    }
    if payload.iat > now.saturating_add(LEEWAY_SECS) {
        return Err(Error::Verification(
            "the action is issued in the future".to_owned(),
        ));
    }
    Ok(VerifiedAction {
        payload,
        digest: parsed.digest(),
        key_id: key.thumbprint(),
    })
}

/// Verifies an agent token offline with a key set you already hold (for example
/// a saved copy of `/.well-known/jwks.json`), for issuer `issuer` at time `now`.
pub fn verify_agent_token_with(
    jwks: &Jwks,
    issuer: &str,
    token: &str,
    now: i64,
) -> Result<AgentTokenClaims, Error> {
    let claims: AgentTokenClaims =
        verify_jws(token, AGENT_TOKEN_TYPE, jwks).map_err(JwsError::into_error)?;
    check_agent_claims(&claims, issuer, now)?;
    Ok(claims)
}

/// Verifies a decision receipt offline with a key set you already hold; with
/// `envelope_json`, also that it is about that envelope.
pub fn verify_receipt_with(
    jwks: &Jwks,
    issuer: &str,
    receipt: &str,
    envelope_json: Option<&str>,
    now: i64,
) -> Result<ReceiptClaims, Error> {
    let claims: ReceiptClaims =
        verify_jws(receipt, RECEIPT_TYPE, jwks).map_err(JwsError::into_error)?;
    check_receipt_claims(&claims, issuer, envelope_json, now)?;
    Ok(claims)
}

fn check_agent_claims(claims: &AgentTokenClaims, issuer: &str, now: i64) -> Result<(), Error> {
    check_common(&claims.iss, issuer, claims.exp, claims.nbf, now)?;
    if claims.aud != AGENT_TOKEN_AUDIENCE {
        return Err(Error::Verification(
            "the token is not an agent token (aud)".to_owned(),
        ));
    }
    Ok(())
}

fn check_receipt_claims(
    claims: &ReceiptClaims,
    issuer: &str,
    envelope_json: Option<&str>,
    now: i64,
) -> Result<(), Error> {
    check_common(&claims.iss, issuer, claims.exp, claims.iat, now)?;
    if claims.aud != claims.iss {
        return Err(Error::Verification(
            "the receipt's audience is not its issuer".to_owned(),
        ));
    }
    if let Some(envelope_json) = envelope_json {
        let parsed = ParsedEnvelope::parse(envelope_json.as_bytes())
            .map_err(|e| Error::Verification(format!("envelope: {e}")))?;
        if parsed.digest() != claims.envelope_sha256 {
            return Err(Error::Verification(
                "the receipt is about another envelope".to_owned(),
            ));
        }
    }
    Ok(())
}

fn check_common(iss: &str, issuer: &str, exp: i64, not_before: i64, now: i64) -> Result<(), Error> {
    if iss != issuer {
        return Err(Error::Verification(format!(
            "the issuer is `{iss}`, not `{issuer}`"
        )));
    }
    if exp <= now.saturating_sub(LEEWAY_SECS) {
        return Err(Error::Verification("expired".to_owned()));
    }
    if not_before > now.saturating_add(LEEWAY_SECS) {
        return Err(Error::Verification("not yet valid".to_owned()));
    }
    Ok(())
}

#[derive(Debug)]
enum JwsError {
    UnknownKid,
    Invalid(String),
}

impl JwsError {
    fn into_error(self) -> Error {
        match self {
            JwsError::UnknownKid => {
                Error::Verification("signed with a key the server does not publish".to_owned())
            }
            JwsError::Invalid(why) => Error::Verification(why),
        }
    }
}

/// Checks a compact JWS's header and Ed25519 signature with `jwks`, and returns
/// its claims (not yet checked).
fn verify_jws<T: DeserializeOwned>(token: &str, typ: &str, jwks: &Jwks) -> Result<T, JwsError> {
    let invalid = |why: &str| JwsError::Invalid(why.to_owned());
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS (three parts)"));
    };
    let header_bytes = b64::decode(header_b64).ok_or_else(|| invalid("malformed header"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| invalid("malformed header"))?;
    if header.get("alg").and_then(|v| v.as_str()) != Some(JWS_ALGORITHM) {
        return Err(invalid("the algorithm is not EdDSA"));
    }
    if header.get("typ").and_then(|v| v.as_str()) != Some(typ) {
        return Err(JwsError::Invalid(format!("the type is not {typ}")));
    }
    if header.contains_key("crit") {
        return Err(invalid("critical header extensions are not supported"));
    }
    let kid = header
        .get("kid")
        .and_then(|v| v.as_str())
        .ok_or_else(|| invalid("no key id"))?;
    let jwk = jwks.find(kid).ok_or(JwsError::UnknownKid)?;
    if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
        return Err(invalid("the published key is not an Ed25519 key"));
    }
    let key =
        PublicKey::from_b64url(&jwk.x).map_err(|_| invalid("the published key is invalid"))?;
    let sig: [u8; 64] = b64::decode(sig_b64)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid("malformed signature"))?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    key.verify(signing_input.as_bytes(), &sig)
        .map_err(|_| invalid("the signature does not verify"))?;
    let claims = b64::decode(claims_b64).ok_or_else(|| invalid("malformed claims"))?;
    serde_json::from_slice(&claims).map_err(|e| JwsError::Invalid(format!("claims: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentid_protocol::tokens::Jwk;
    use ed25519_dalek::{Signer, SigningKey};

    fn sign(key: &SigningKey, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(claims.to_string())
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(sig.to_bytes()))
    }

    fn setup() -> (SigningKey, Jwks, serde_json::Value) {
        let key = SigningKey::from_bytes(&[5u8; 32]);
        let jwk = Jwk::ed25519(key.verifying_key().as_bytes());
        let header = serde_json::json!({"alg": "EdDSA", "typ": AGENT_TOKEN_TYPE, "kid": jwk.kid});
        (key, Jwks { keys: vec![jwk] }, header)
    }

    fn claims(now: i64) -> serde_json::Value {
        serde_json::json!({
            "iss": "https://id.example", "sub": "a", "aud": AGENT_TOKEN_AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 900, "jti": "j", "org_id": "o",
            "did": "did:key:z", "cnf": {"jkt": "t"}
        })
    }

    #[test]
    fn accepts_a_well_formed_token_and_refuses_each_deviation() {
        let (key, jwks, header) = setup();
        let now = 1_767_225_600;
        let good = sign(&key, &header, &claims(now));
        let ok = verify_agent_token_with(&jwks, "https://id.example", &good, now).unwrap();
        assert_eq!(ok.sub, "a");

        let refuse = |token: &str, at: i64| {
            verify_agent_token_with(&jwks, "https://id.example", token, at).unwrap_err()
        };
        // alg none / HS256, wrong typ, crit, unknown kid.
        for (member, value) in [
            ("alg", serde_json::json!("none")),
            ("alg", serde_json::json!("HS256")),
            ("typ", serde_json::json!(RECEIPT_TYPE)),
            ("crit", serde_json::json!(["exp"])),
            ("kid", serde_json::json!("other")),
        ] {
            let mut h = header.clone();
            h[member] = value;
            refuse(&sign(&key, &h, &claims(now)), now);
        }
        // Tampered claims keep the old signature.
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims(now);
        c["sub"] = "b".into();
        let tampered = format!("{}.{}.{}", parts[0], b64::encode(c.to_string()), parts[2]);
        assert!(refuse(&tampered, now).to_string().contains("signature"));
        // Another signer with the same kid.
        let forger = SigningKey::from_bytes(&[6u8; 32]);
        refuse(&sign(&forger, &header, &claims(now)), now);
        // Expired, not yet valid, wrong issuer or audience.
        refuse(&good, now + 900 + LEEWAY_SECS + 1);
        refuse(&good, now - LEEWAY_SECS - 1);
        assert!(verify_agent_token_with(&jwks, "https://other", &good, now).is_err());
        let mut c = claims(now);
        c["aud"] = "https://id.example".into();
        refuse(&sign(&key, &header, &c), now);
        // A receipt is not an agent token.
        assert!(verify_receipt_with(&jwks, "https://id.example", &good, None, now).is_err());
    }
}
