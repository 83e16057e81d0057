//! The server's own Ed25519 signing keys: agent access tokens and decision receipts
//! (compact JWS, `alg` EdDSA) and the JWKS that lets relying parties verify them offline.
//!
//! No private key is ever generated at random or stored. Key generation `g` is derived
//! from `AGENTID_SECRET_KEY` with HKDF-SHA256, so every replica holding the same secret
//! holds the same keys without coordination. Key `g` signs during `[g·P, (g+1)·P)`
//! (`P` = rotation period) and is published from `(g−1)·P`, one full period before it
//! signs anything, until `(g+1)·P + R` (`R` = retention, the longest lifetime of what it
//! signs). Every function takes `now` (unix seconds) as a parameter.
//!
//! This module must never log, display or `Debug`-print key material or tokens.
//! `docs/tokens.md` describes the timeline and what relying parties must check.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use agentid_protocol::tokens::{
    AgentTokenClaims, Confirmation, Jwk, Jwks, ReceiptClaims, AGENT_TOKEN_AUDIENCE,
    AGENT_TOKEN_TYPE, JWS_ALGORITHM, RECEIPT_TYPE,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// HKDF salt of the signing-key derivation. Changing it replaces every key.
pub const KEY_DERIVATION_SALT: &[u8] = b"agentid-signing-keys-v1";
/// Clock tolerance when checking `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// The most keys the JWKS may hold; configuration refusing more keeps it small.
pub const MAX_PUBLISHED_KEYS: i64 = 512;

/// Why a token could not be signed or was refused.
///
/// Messages never contain the token or any key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("the claims could not be serialized: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("the signing key could not be derived")]
    KeyDerivation,
    #[error("the requested lifetime exceeds how long the signing key stays published")]
    LifetimeTooLong,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not EdDSA")]
    Algorithm,
    #[error("the token's type is not the expected one")]
    Type,
    #[error("the token's key id is not a published key")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token's issuer is not this server")]
    Issuer,
    #[error("the token's audience is not the expected one")]
    Audience,
    #[error("the token's claims are missing or malformed")]
    Claims,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

/// The key generation that signs at `now_secs`.
pub fn signing_generation(now_secs: i64, rotation_secs: i64) -> i64 {
    now_secs.div_euclid(rotation_secs.max(1))
}

/// The generations published at `now_secs`, oldest and newest (inclusive): those whose
/// window `[(g−1)·P, (g+1)·P + R)` contains `now_secs`.
pub fn published_generations(now_secs: i64, rotation_secs: i64, retention_secs: i64) -> (i64, i64) {
    let period = rotation_secs.max(1);
    let oldest = now_secs
        .saturating_sub(retention_secs.max(0))
        .div_euclid(period);
    (oldest, now_secs.div_euclid(period).saturating_add(1))
}

/// The largest number of keys the JWKS holds at any moment for this rotation period and
/// retention: `ceil(R / P) + 2`.
pub fn published_key_count(rotation_secs: i64, retention_secs: i64) -> i64 {
    let period = rotation_secs.max(1);
    let retention = retention_secs.max(0);
    retention / period + i64::from(retention % period != 0) + 2
}

/// One derived key generation, with everything signing and verifying need ready.
struct DerivedKey {
    kid: String,
    signing: SigningKey,
    jwk: Jwk,
    decoding: DecodingKey,
}

/// The keys published for one range of generations, and the JWKS rendered once.
struct Published {
    range: (i64, i64),
    keys: Vec<Arc<DerivedKey>>,
    jwks: Jwks,
    json: Arc<str>,
}

#[derive(Default)]
struct Cache {
    keys: BTreeMap<i64, Arc<DerivedKey>>,
    published: Option<Arc<Published>>,
}

/// The server's signing keys, derived from the master secret, cached per generation.
pub struct KeyRing {
    issuer: String,
    rotation_secs: i64,
    retention_secs: i64,
    hkdf: Hkdf<Sha256>,
    cache: RwLock<Cache>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("issuer", &self.issuer)
            .field("rotation_secs", &self.rotation_secs)
            .field("retention_secs", &self.retention_secs)
            .finish_non_exhaustive()
    }
}

/// The protected header of every JWS the ring signs.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

/// The time claims checked against `now` (a receipt has no `nbf`: its `iat` stands in).
#[derive(Deserialize)]
struct TimeClaims {
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
}

impl KeyRing {
    /// A ring for `issuer` (the server's public URL) whose keys rotate every
    /// `rotation_secs` and stay published `retention_secs` after they last sign.
    ///
    /// A retention longer than [`MAX_PUBLISHED_KEYS`] periods is shortened to that many
    /// (configuration refuses such settings before they get here).
    pub fn new(
        secret: &SecretString,
        issuer: &str,
        rotation_secs: i64,
        retention_secs: i64,
    ) -> KeyRing {
        let rotation_secs = rotation_secs.max(1);
        let retention_secs = retention_secs
            .max(0)
            .min(rotation_secs.saturating_mul(MAX_PUBLISHED_KEYS - 2));
        KeyRing {
            issuer: issuer.to_owned(),
            rotation_secs,
            retention_secs,
            hkdf: Hkdf::<Sha256>::new(Some(KEY_DERIVATION_SALT), secret.expose_secret().as_bytes()),
            cache: RwLock::new(Cache::default()),
        }
    }

    /// The issuer (`iss`) of everything this ring signs.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The keys published at `now_secs`: the current one, the next one and those
    /// still needed to verify what older keys signed; newest first.
    pub fn jwks(&self, now_secs: i64) -> Result<Jwks, SigningError> {
        Ok(self.published(now_secs)?.jwks.clone())
    }

    /// [`KeyRing::jwks`] as JSON, rendered once per change of the published set.
    pub fn jwks_json(&self, now_secs: i64) -> Result<Arc<str>, SigningError> {
        Ok(self.published(now_secs)?.json.clone())
    }

    /// A compact JWS over `claims` with header `{alg: EdDSA, typ, kid}`, signed with
    /// the key of the generation current at `now_secs`.
    pub fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
        now_secs: i64,
    ) -> Result<String, SigningError> {
        let key = self.key(signing_generation(now_secs, self.rotation_secs))?;
        let header = serde_json::to_vec(&JwsHeader {
            alg: JWS_ALGORITHM,
            typ,
            kid: &key.kid,
        })
        .map_err(SigningError::Serialize)?;
        let payload = serde_json::to_vec(claims).map_err(SigningError::Serialize)?;
        let mut token = String::with_capacity((header.len() + payload.len() + 64) * 4 / 3 + 4);
        URL_SAFE_NO_PAD.encode_string(&header, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = key.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Ok(token)
    }

    /// The claims of `token` if it is a JWS of type `typ` signed (EdDSA) by a key
    /// published at `now_secs`, issued by this server for `audience`, and within its
    /// `nbf`..`exp` window give or take [`LEEWAY_SECS`].
    pub fn verify<T: DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
        audience: &str,
        now_secs: i64,
    ) -> Result<T, SigningError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| SigningError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(SigningError::Algorithm);
        }
        if header.typ.as_deref() != Some(typ) {
            return Err(SigningError::Type);
        }
        // No extension is understood, so a critical one must be refused (RFC 7515 §4.1.11).
        if header.crit.is_some() {
            return Err(SigningError::Malformed);
        }
        let kid = header.kid.ok_or(SigningError::UnknownKey)?;
        let published = self.published(now_secs)?;
        let key = published
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(SigningError::UnknownKey)?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        // Times are checked below against `now_secs`, not the library's wall clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => SigningError::Signature,
                ErrorKind::InvalidAlgorithm => SigningError::Algorithm,
                ErrorKind::InvalidIssuer => SigningError::Issuer,
                ErrorKind::InvalidAudience => SigningError::Audience,
                ErrorKind::MissingRequiredClaim(_) => SigningError::Claims,
                _ => SigningError::Malformed,
            })?;

        let times = TimeClaims::deserialize(&data.claims).map_err(|_| SigningError::Claims)?;
        if now_secs >= times.exp.saturating_add(LEEWAY_SECS) {
            return Err(SigningError::Expired);
        }
        if let Some(not_before) = times.nbf.or(times.iat) {
            if not_before > now_secs.saturating_add(LEEWAY_SECS) {
                return Err(SigningError::NotYetValid);
            }
        }
        serde_json::from_value(data.claims).map_err(|_| SigningError::Claims)
    }

    /// An agent access token bound to the agent key whose RFC 7638 thumbprint is
    /// `key_thumbprint`, valid from `now_secs` for `ttl_secs` (capped at the ring's
    /// retention, so the signing key outlives the token). Returns the token and its `exp`.
    pub fn issue_agent_token(
        &self,
        agent_id: &str,
        org_id: &str,
        did: &str,
        key_thumbprint: &str,
        ttl_secs: i64,
        now_secs: i64,
    ) -> Result<(String, i64), SigningError> {
        let exp = now_secs.saturating_add(ttl_secs.clamp(1, self.retention_secs.max(1)));
        let claims = AgentTokenClaims {
            iss: self.issuer.clone(),
            sub: agent_id.to_owned(),
            aud: AGENT_TOKEN_AUDIENCE.to_owned(),
            iat: now_secs,
            nbf: now_secs,
            exp,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            org_id: org_id.to_owned(),
            did: did.to_owned(),
            cnf: Confirmation {
                jkt: key_thumbprint.to_owned(),
            },
        };
        Ok((self.sign(AGENT_TOKEN_TYPE, &claims, now_secs)?, exp))
    }

    /// A signed decision receipt. Refuses an `exp` beyond the ring's retention, which
    /// no relying party could verify until then.
    pub fn sign_receipt(
        &self,
        claims: &ReceiptClaims,
        now_secs: i64,
    ) -> Result<String, SigningError> {
        if claims.exp.saturating_sub(now_secs) > self.retention_secs {
            return Err(SigningError::LifetimeTooLong);
        }
        self.sign(RECEIPT_TYPE, claims, now_secs)
    }

    /// The key of generation `g`, derived once and then cached.
    fn key(&self, generation: i64) -> Result<Arc<DerivedKey>, SigningError> {
        if let Some(key) = self.read().keys.get(&generation) {
            return Ok(key.clone());
        }
        let derived = Arc::new(self.derive(generation)?);
        let mut cache = self.write();
        // Keep what the published range around `g` needs; drop what time has left behind.
        let span = published_key_count(self.rotation_secs, self.retention_secs) + 2;
        cache.keys.retain(|g, _| {
            (generation.saturating_sub(span)..=generation.saturating_add(span)).contains(g)
        });
        Ok(cache.keys.entry(generation).or_insert(derived).clone())
    }

    fn derive(&self, generation: i64) -> Result<DerivedKey, SigningError> {
        let mut seed = [0u8; 32];
        self.hkdf
            .expand(
                format!("ed25519 generation {generation}").as_bytes(),
                &mut seed,
            )
            .map_err(|_| SigningError::KeyDerivation)?;
        let signing = SigningKey::from_bytes(&seed);
        seed.zeroize();
        let public = signing.verifying_key().to_bytes();
        let jwk = Jwk::ed25519(&public);
        Ok(DerivedKey {
            kid: jwk.kid.clone(),
            decoding: DecodingKey::from_ed_der(&public),
            signing,
            jwk,
        })
    }

    fn published(&self, now_secs: i64) -> Result<Arc<Published>, SigningError> {
        let range = published_generations(now_secs, self.rotation_secs, self.retention_secs);
        if let Some(published) = &self.read().published {
            if published.range == range {
                return Ok(published.clone());
            }
        }
        let keys = (range.0..=range.1)
            .rev()
            .map(|g| self.key(g))
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = Jwks {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        };
        let json: Arc<str> = serde_json::to_string(&jwks)
            .map_err(SigningError::Serialize)?
            .into();
        let published = Arc::new(Published {
            range,
            keys,
            jwks,
            json,
        });
        self.write().published = Some(published.clone());
        Ok(published)
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        // The cache holds only derived values; a panic elsewhere cannot leave it torn.
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://id.example";
    const PERIOD: i64 = 3_600;
    const RETENTION: i64 = 7_200;
    /// A moment inside generation `G0`.
    const T0: i64 = 1_700_000_123;
    const G0: i64 = T0.div_euclid(PERIOD);

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.repeat(40))
    }

    fn ring(s: &str) -> KeyRing {
        KeyRing::new(&secret(s), ISSUER, PERIOD, RETENTION)
    }

    fn kid(ring: &KeyRing, generation: i64) -> String {
        ring.key(generation).unwrap().kid.clone()
    }

    fn kids(ring: &KeyRing, now: i64) -> Vec<String> {
        ring.jwks(now)
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.kid)
            .collect()
    }

    fn header(token: &str) -> serde_json::Value {
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
    }

    fn wall_clock() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn receipt(now: i64) -> ReceiptClaims {
        ReceiptClaims {
            iss: ISSUER.to_owned(),
            sub: "agent-1".to_owned(),
            aud: ISSUER.to_owned(),
            iat: now,
            exp: now + 600,
            jti: "decision-1".to_owned(),
            org_id: "org-1".to_owned(),
            allowed: true,
            reason: "allowed".to_owned(),
            capability: "email:send".to_owned(),
            resource: Some("bob@example.com".to_owned()),
            args_digest: Some(format!("sha256:{}", "ef".repeat(32))),
            envelope_sha256: "ab".repeat(32),
            trust_score: Some(87.5),
            enforcement: "enforce".to_owned(),
            audit_seq: 42,
            audit_hash: "cd".repeat(32),
        }
    }

    /// Claims with an arbitrary expiry, for timeline tests beyond the agent-token cap.
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Plain {
        iss: String,
        aud: String,
        iat: i64,
        exp: i64,
    }

    fn plain(iat: i64, exp: i64) -> Plain {
        Plain {
            iss: ISSUER.to_owned(),
            aud: AGENT_TOKEN_AUDIENCE.to_owned(),
            iat,
            exp,
        }
    }

    #[test]
    fn the_jwks_holds_the_current_and_the_next_key() {
        let r = ring("k");
        let published = kids(&r, T0);
        assert!(published.contains(&kid(&r, G0)), "current");
        assert!(published.contains(&kid(&r, G0 + 1)), "next");
        assert!(!published.contains(&kid(&r, G0 + 2)), "not two ahead");
        assert_eq!(published.first(), Some(&kid(&r, G0 + 1)), "newest first");
        let token = r.sign(AGENT_TOKEN_TYPE, &plain(T0, T0 + 60), T0).unwrap();
        assert_eq!(header(&token)["kid"], kid(&r, G0).as_str());
        assert_eq!(header(&token)["alg"], "EdDSA");
        assert_eq!(header(&token)["typ"], AGENT_TOKEN_TYPE);
    }

    #[test]
    fn a_key_is_published_one_full_period_before_it_first_signs() {
        let r = ring("k");
        let g = G0 + 1;
        let first_use = g * PERIOD;
        let signed_at = |t: i64| {
            let token = r.sign(AGENT_TOKEN_TYPE, &plain(t, t + 60), t).unwrap();
            header(&token)["kid"].as_str().unwrap().to_owned()
        };
        assert_eq!(signed_at(first_use), kid(&r, g));
        assert_eq!(signed_at(first_use - 1), kid(&r, g - 1));
        assert!(kids(&r, first_use - PERIOD).contains(&kid(&r, g)));
        assert!(!kids(&r, first_use - PERIOD - 1).contains(&kid(&r, g)));
    }

    #[test]
    fn a_key_stays_published_for_the_retention_after_it_last_signs() {
        let r = ring("k");
        let last_use = (G0 + 1) * PERIOD - 1;
        let token = r
            .sign(
                AGENT_TOKEN_TYPE,
                &plain(last_use, last_use + RETENTION),
                last_use,
            )
            .unwrap();
        assert_eq!(header(&token)["kid"], kid(&r, G0).as_str());
        let until = (G0 + 1) * PERIOD + RETENTION;
        assert!(kids(&r, until - 1).contains(&kid(&r, G0)));
        let claims: Plain = r
            .verify(&token, AGENT_TOKEN_TYPE, AGENT_TOKEN_AUDIENCE, until - 1)
            .unwrap();
        assert_eq!(claims, plain(last_use, last_use + RETENTION));
        assert!(!kids(&r, until).contains(&kid(&r, G0)));
        assert!(matches!(
            r.verify::<Plain>(&token, AGENT_TOKEN_TYPE, AGENT_TOKEN_AUDIENCE, until),
            Err(SigningError::UnknownKey)
        ));
    }

    #[test]
    fn the_jwks_never_exceeds_the_computed_key_count() {
        assert_eq!(published_key_count(PERIOD, 0), 2);
        assert_eq!(published_key_count(PERIOD, PERIOD), 3);
        assert_eq!(published_key_count(PERIOD, PERIOD + 1), 4);
        // The defaults: weekly keys, 30-day receipts.
        assert_eq!(published_key_count(604_800, 2_592_000), 7);
        let r = ring("k");
        let mut largest = 0;
        for t in (T0..T0 + 2 * PERIOD).step_by(97) {
            let n = r.jwks(t).unwrap().keys.len() as i64;
            assert!(n <= published_key_count(PERIOD, RETENTION), "{n} at {t}");
            largest = largest.max(n);
        }
        assert_eq!(largest, published_key_count(PERIOD, RETENTION));
    }

    #[test]
    fn rings_from_one_secret_agree_and_from_two_secrets_differ() {
        let (a, b, other) = (ring("k"), ring("k"), ring("j"));
        assert_eq!(a.jwks(T0).unwrap(), b.jwks(T0).unwrap());
        assert_eq!(a.jwks_json(T0).unwrap(), b.jwks_json(T0).unwrap());
        let (token, _) = a
            .issue_agent_token("agent-1", "org-1", "did:key:z6Mk", "jkt", 900, T0)
            .unwrap();
        let claims: AgentTokenClaims = b
            .verify(&token, AGENT_TOKEN_TYPE, AGENT_TOKEN_AUDIENCE, T0 + 1)
            .unwrap();
        assert_eq!(claims.sub, "agent-1");
        let theirs = kids(&other, T0);
        assert!(kids(&a, T0).iter().all(|k| !theirs.contains(k)));
        assert!(matches!(
            other.verify::<AgentTokenClaims>(&token, AGENT_TOKEN_TYPE, AGENT_TOKEN_AUDIENCE, T0),
            Err(SigningError::UnknownKey)
        ));
    }

    #[test]
    fn the_derivation_is_pinned() {
        // Changing the derivation would replace every key of every deployment and make
        // outstanding tokens and receipts unverifiable: it must be a deliberate act.
        let r = KeyRing::new(&secret("k"), ISSUER, PERIOD, RETENTION);
        let key = r.key(0).unwrap();
        let expected_seed = {
            let mut seed = [0u8; 32];
            Hkdf::<Sha256>::new(Some(b"agentid-signing-keys-v1"), "k".repeat(40).as_bytes())
                .expand(b"ed25519 generation 0", &mut seed)
                .unwrap();
            seed
        };
        assert_eq!(key.signing.to_bytes(), expected_seed);
        // Computed independently (Python: hmac + pyca/cryptography); see docs/tokens.md.
        assert_eq!(key.jwk.x, "-GwCgKawuRc_CYt3lnqpyyYXtq9rQfHp8YoHK-x42gY");
        assert_eq!(key.kid, "knj0m_-ZOBycuCfs1tTd1OWeXlhpAHpKYROWW85LnVM");
    }

    #[test]
    fn a_relying_party_verifies_with_only_the_jwks_json() {
        use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
        let now = wall_clock();
        let r = ring("k");
        let agent_key = SigningKey::from_bytes(&[7u8; 32]);
        let jkt =
            agentid_protocol::tokens::ed25519_thumbprint(&agent_key.verifying_key().to_bytes());
        let (token, exp) = r
            .issue_agent_token("agent-1", "org-1", "did:key:z6Mk", &jkt, 900, now)
            .unwrap();
        assert_eq!(exp, now + 900);
        let receipt_token = r.sign_receipt(&receipt(now), now).unwrap();

        // What a relying party has: the JWKS document, and the token.
        let set: JwkSet = serde_json::from_str(&r.jwks_json(now).unwrap()).unwrap();
        let relying_party = |token: &str, audience: &str| {
            let header = jsonwebtoken::decode_header(token).unwrap();
            let jwk = set.find(header.kid.as_deref().unwrap()).unwrap();
            assert_eq!(
                jwk.thumbprint(ThumbprintHash::SHA256),
                header.kid.clone().unwrap(),
                "kid is the RFC 7638 thumbprint"
            );
            let mut validation = Validation::new(Algorithm::EdDSA);
            validation.set_issuer(&[ISSUER]);
            validation.set_audience(&[audience]);
            (
                header,
                jsonwebtoken::decode::<serde_json::Value>(
                    token,
                    &DecodingKey::from_jwk(jwk).unwrap(),
                    &validation,
                )
                .unwrap()
                .claims,
            )
        };
        let (header, claims) = relying_party(&token, AGENT_TOKEN_AUDIENCE);
        assert_eq!(header.typ.as_deref(), Some(AGENT_TOKEN_TYPE));
        let claims: AgentTokenClaims = serde_json::from_value(claims).unwrap();
        assert_eq!(claims.cnf.jkt, jkt);
        assert_eq!((claims.iat, claims.nbf, claims.exp), (now, now, exp));
        let (header, claims) = relying_party(&receipt_token, ISSUER);
        assert_eq!(header.typ.as_deref(), Some(RECEIPT_TYPE));
        let claims: ReceiptClaims = serde_json::from_value(claims).unwrap();
        assert_eq!(claims, receipt(now));
    }

    #[test]
    fn forged_tampered_mistyped_and_expired_tokens_are_refused() {
        let r = ring("k");
        let (token, exp) = r
            .issue_agent_token("agent-1", "org-1", "did:key:z6Mk", "jkt", 900, T0)
            .unwrap();
        let verify = |token: &str, now: i64| {
            r.verify::<AgentTokenClaims>(token, AGENT_TOKEN_TYPE, AGENT_TOKEN_AUDIENCE, now)
        };
        assert!(verify(&token, T0).is_ok());
        let parts: Vec<&str> = token.split('.').collect();
        let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let current_kid = kid(&r, G0);

        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg": "none", "typ": AGENT_TOKEN_TYPE, "kid": current_kid})),
            parts[1]
        );
        assert!(verify(&none, T0).is_err(), "alg none");

        // Algorithm confusion: HMAC keyed with the published public key.
        let public = r.key(G0).unwrap().signing.verifying_key().to_bytes();
        let mut hs_header = jsonwebtoken::Header::new(Algorithm::HS256);
        hs_header.typ = Some(AGENT_TOKEN_TYPE.to_owned());
        hs_header.kid = Some(current_kid.clone());
        let claims: AgentTokenClaims = verify(&token, T0).unwrap();
        let hs256 = jsonwebtoken::encode(
            &hs_header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert!(
            matches!(verify(&hs256, T0), Err(SigningError::Algorithm)),
            "HS256"
        );

        let (foreign, _) = ring("j")
            .issue_agent_token("agent-1", "org-1", "did:key:z6Mk", "jkt", 900, T0)
            .unwrap();
        assert!(matches!(
            verify(&foreign, T0),
            Err(SigningError::UnknownKey)
        ));
        let unknown_kid = format!(
            "{}.{}.{}",
            b64(serde_json::json!({"alg": "EdDSA", "typ": AGENT_TOKEN_TYPE, "kid": "nope"})),
            parts[1],
            parts[2]
        );
        assert!(matches!(
            verify(&unknown_kid, T0),
            Err(SigningError::UnknownKey)
        ));

        let mut forged = serde_json::to_value(&claims).unwrap();
        forged["sub"] = "agent-2".into();
        let tampered = format!("{}.{}.{}", parts[0], b64(forged), parts[2]);
        assert!(matches!(
            verify(&tampered, T0),
            Err(SigningError::Signature)
        ));

        let receipt_token = r.sign_receipt(&receipt(T0), T0).unwrap();
        assert!(matches!(
            verify(&receipt_token, T0),
            Err(SigningError::Type)
        ));
        assert!(matches!(
            r.verify::<AgentTokenClaims>(&token, AGENT_TOKEN_TYPE, ISSUER, T0),
            Err(SigningError::Audience)
        ));
        let other_issuer = KeyRing::new(&secret("k"), "https://other.example", PERIOD, RETENTION);
        let (theirs, _) = other_issuer
            .issue_agent_token("agent-1", "org-1", "did:key:z6Mk", "jkt", 900, T0)
            .unwrap();
        assert!(matches!(verify(&theirs, T0), Err(SigningError::Issuer)));

        let critical = format!(
            "{}.{}.{}",
            b64(
                serde_json::json!({"alg": "EdDSA", "typ": AGENT_TOKEN_TYPE, "kid": current_kid, "crit": ["b64"], "b64": "false"})
            ),
            parts[1],
            parts[2]
        );
        assert!(matches!(
            verify(&critical, T0),
            Err(SigningError::Malformed)
        ));

        assert!(
            verify(&token, exp + LEEWAY_SECS - 1).is_ok(),
            "within leeway"
        );
        assert!(matches!(
            verify(&token, exp + LEEWAY_SECS),
            Err(SigningError::Expired)
        ));
        assert!(matches!(
            verify(&token, T0 - LEEWAY_SECS - 1),
            Err(SigningError::NotYetValid)
        ));
        for garbage in ["", "a.b", "a.b.c", "...", &parts[..2].join(".")] {
            assert!(verify(garbage, T0).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn lifetimes_never_outlast_the_key_publication() {
        let r = ring("k");
        let (_, exp) = r
            .issue_agent_token("a", "o", "did:key:z", "jkt", RETENTION * 10, T0)
            .unwrap();
        assert_eq!(exp, T0 + RETENTION);
        let mut long = receipt(T0);
        long.exp = T0 + RETENTION + 1;
        assert!(matches!(
            r.sign_receipt(&long, T0),
            Err(SigningError::LifetimeTooLong)
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let r = ring("k");
        let _ = r.jwks(T0).unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains(&"k".repeat(40)), "{shown}");
        assert!(!shown.contains(&kid(&r, G0)), "{shown}");
        assert!(shown.contains(ISSUER), "{shown}");
    }

    /// Prints what signing a receipt costs (run with `--nocapture`); the comparison
    /// is `jsonwebtoken::encode`, which re-parses a PKCS#8 key on every call.
    #[test]
    fn sign_receipt_cost() {
        // Unoptimized builds are two orders of magnitude slower: keep them short.
        const N: u32 = if cfg!(debug_assertions) { 20 } else { 2_000 };
        let now = T0;
        let r = ring("k");
        let claims = receipt(now);
        r.sign_receipt(&claims, now).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(r.sign_receipt(std::hint::black_box(&claims), now).unwrap());
        }
        let ours = start.elapsed() / N;

        let key = r.key(G0).unwrap();
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&key.signing.to_bytes());
        let encoding = jsonwebtoken::EncodingKey::from_ed_der(&der);
        let mut jwt_header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        jwt_header.typ = Some(RECEIPT_TYPE.to_owned());
        jwt_header.kid = Some(key.kid.clone());
        let theirs_token = jsonwebtoken::encode(&jwt_header, &claims, &encoding).unwrap();
        let _: ReceiptClaims = r.verify(&theirs_token, RECEIPT_TYPE, ISSUER, now).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(
                jsonwebtoken::encode(&jwt_header, std::hint::black_box(&claims), &encoding)
                    .unwrap(),
            );
        }
        let theirs = start.elapsed() / N;

        let token = r.sign_receipt(&claims, now).unwrap();
        let signing_input = token.rsplit_once('.').unwrap().0.as_bytes();
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(key.signing.sign(std::hint::black_box(signing_input)));
        }
        let raw = start.elapsed() / N;
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(
                r.verify::<ReceiptClaims>(std::hint::black_box(&token), RECEIPT_TYPE, ISSUER, now)
                    .unwrap(),
            );
        }
        let verify = start.elapsed() / N;
        println!(
            "sign_receipt: {ours:?} per receipt ({} bytes); raw Ed25519 sign of the same bytes: {raw:?}; jsonwebtoken::encode: {theirs:?}; verify: {verify:?} (build: {})",
            token.len(),
            if cfg!(debug_assertions) { "debug" } else { "release" }
        );
    }
}
