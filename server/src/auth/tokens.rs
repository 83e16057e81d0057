//! Access tokens (JWT), refresh tokens and API keys.
//!
//! Access tokens are HS256 JWTs with a key derived from the server's secret; issuer,
//! audience, expiry, not-before and algorithm are all checked on every use. Refresh
//! tokens and API keys are random opaque strings with a recognisable prefix; only
//! their SHA-256 hashes are stored, so a database leak yields nothing usable, and
//! they are found by hash lookup (no timing side channel on comparison). Nothing
//! here may log a token.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "agentid_rt_";
/// Prefix of API keys: recognisable by secret scanners and people alike.
pub const API_KEY_PREFIX: &str = "agentid_sk_";
/// The audience of access tokens.
pub const ACCESS_AUDIENCE: &str = "agentid-management-api";

/// Claims of an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The user's organization.
    pub org: String,
    /// The session (refresh-token family) it belongs to.
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// Signs and checks access tokens.
pub struct AccessTokens {
    issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_secs: i64,
}

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub fn new(secret: &SecretString, issuer: &str, ttl_secs: i64) -> AccessTokens {
        let key = derive_key(secret, "access-token-hs256");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[ACCESS_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        AccessTokens {
            issuer: issuer.to_owned(),
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            ttl_secs,
        }
    }

    /// A signed token for `user_id` in `org_id`, session `sid`, issued at `now` (unix seconds).
    pub fn issue(
        &self,
        user_id: &str,
        org_id: &str,
        sid: &str,
        now: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: ACCESS_AUDIENCE.to_owned(),
            sub: user_id.to_owned(),
            org: org_id.to_owned(),
            sid: sid.to_owned(),
            iat: now,
            nbf: now,
            exp: now + self.ttl_secs,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid token; `None` for anything else (bad signature, wrong
    /// algorithm, issuer or audience, expired, not yet valid, malformed).
    pub fn verify(&self, token: &str) -> Option<AccessClaims> {
        jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// A fresh opaque secret with `prefix`, and its storage hash.
pub fn new_opaque(prefix: &str) -> (SecretString, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_opaque(&token);
    (SecretString::from(token), hash)
}

/// The storage hash of an opaque token: lowercase hex SHA-256.
pub fn hash_opaque(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A key for one purpose, derived from the master secret (domain-separated).
fn derive_key(secret: &SecretString, purpose: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"agentid-key-derivation-v1\0");
    hasher.update(purpose.as_bytes());
    hasher.update(b"\0");
    hasher.update(secret.expose_secret().as_bytes());
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> AccessTokens {
        AccessTokens::new(
            &SecretString::from("k".repeat(40)),
            "http://issuer.test",
            900,
        )
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_fresh_token_verifies() {
        let t = tokens();
        let token = t.issue("u1", "o1", "s1", now()).unwrap();
        let claims = t.verify(&token).unwrap();
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.org.as_str(),
                claims.sid.as_str()
            ),
            ("u1", "o1", "s1")
        );
    }

    #[test]
    fn expired_future_foreign_and_tampered_tokens_are_refused() {
        let t = tokens();
        assert!(
            t.verify(&t.issue("u", "o", "s", now() - 3600).unwrap())
                .is_none(),
            "expired"
        );
        assert!(
            t.verify(&t.issue("u", "o", "s", now() + 3600).unwrap())
                .is_none(),
            "not yet valid"
        );
        let other_issuer = AccessTokens::new(
            &SecretString::from("k".repeat(40)),
            "http://other.test",
            900,
        );
        assert!(
            t.verify(&other_issuer.issue("u", "o", "s", now()).unwrap())
                .is_none(),
            "issuer"
        );
        let other_key = AccessTokens::new(
            &SecretString::from("j".repeat(40)),
            "http://issuer.test",
            900,
        );
        assert!(
            t.verify(&other_key.issue("u", "o", "s", now()).unwrap())
                .is_none(),
            "key"
        );
        // alg=none with the same claims.
        let token = t.issue("u", "o", "s", now()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{payload}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"alg":"none","typ":"JWT"}"#)
        );
        assert!(t.verify(&none).is_none(), "alg none");
        assert!(t.verify("garbage").is_none());
    }

    #[test]
    fn opaque_tokens_have_their_prefix_and_hash_stably() {
        let (token, hash) = new_opaque(API_KEY_PREFIX);
        assert!(token.expose_secret().starts_with(API_KEY_PREFIX));
        assert_eq!(hash, hash_opaque(token.expose_secret()));
        assert_eq!(hash.len(), 64);
        assert!(!format!("{token:?}").contains(token.expose_secret()));
    }
}
