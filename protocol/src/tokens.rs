//! Server-signed statements: agent access tokens, decision receipts and the key set
//! that verifies them.
//!
//! Both are compact JWS (EdDSA over Ed25519) signed by the server with keys it
//! publishes as a JWKS at `/.well-known/jwks.json`, so a relying party can check them
//! offline. This module only describes the wire shapes and the RFC 7638 key
//! thumbprint; it never holds a private key, reads a clock or talks to the network.
//! `docs/tokens.md` says what a relying party must check.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The JWT `typ` header of an agent access token.
pub const AGENT_TOKEN_TYPE: &str = "agentid-agent+jwt";
/// The `aud` claim of every agent access token.
pub const AGENT_TOKEN_AUDIENCE: &str = "agentid:agent";
/// The JWT `typ` header of a decision receipt (its `aud` is the issuer itself).
pub const RECEIPT_TYPE: &str = "agentid-receipt+jwt";
/// The only signature algorithm the server uses and a verifier may accept.
pub const JWS_ALGORITHM: &str = "EdDSA";

/// One public signing key of the server, as a JSON Web Key (RFC 8037 OKP key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    /// Key type: always `OKP`.
    #[cfg_attr(feature = "openapi", schema(example = "OKP"))]
    pub kty: String,
    /// Curve: always `Ed25519`.
    #[cfg_attr(feature = "openapi", schema(example = "Ed25519"))]
    pub crv: String,
    /// The 32-byte public key, base64url without padding.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
    )]
    pub x: String,
    /// Key id: the key's RFC 7638 SHA-256 thumbprint (see [`jwk_thumbprint`]).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k")
    )]
    pub kid: String,
    /// Algorithm: always `EdDSA`.
    #[cfg_attr(feature = "openapi", schema(example = "EdDSA"))]
    pub alg: String,
    /// Intended use: always `sig`.
    #[serde(rename = "use")]
    #[cfg_attr(feature = "openapi", schema(example = "sig"))]
    pub use_: String,
}

impl Jwk {
    /// The JWK of an Ed25519 public key, its `kid` being its thumbprint.
    pub fn ed25519(public_key: &[u8; 32]) -> Jwk {
        let x = URL_SAFE_NO_PAD.encode(public_key);
        Jwk {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            kid: jwk_thumbprint(&x),
            x,
            alg: JWS_ALGORITHM.to_owned(),
            use_: "sig".to_owned(),
        }
    }
}

/// The server's published signing keys (RFC 7517 JWK Set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwks {
    /// Every key a current token or receipt may be signed with, and the next one.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// The key with this `kid`, if published.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

/// Proof-of-possession confirmation (RFC 7800 `cnf`, with the RFC 9449 `jkt` member):
/// the token is only good together with a signature by the key it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Confirmation {
    /// RFC 7638 thumbprint of the agent's Ed25519 public key (see [`jwk_thumbprint`]).
    pub jkt: String,
}

/// Claims of an agent access token (`typ` [`AGENT_TOKEN_TYPE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentTokenClaims {
    /// The server's public URL.
    pub iss: String,
    /// The agent id.
    pub sub: String,
    /// Always [`AGENT_TOKEN_AUDIENCE`].
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Not before, unix seconds.
    pub nbf: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The agent's organization.
    pub org_id: String,
    /// The agent's `did:key`.
    pub did: String,
    /// The agent key the token is bound to.
    pub cnf: Confirmation,
}

/// Claims of a decision receipt (`typ` [`RECEIPT_TYPE`]): the server's signed
/// statement that it decided on one signed action, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReceiptClaims {
    /// The server's public URL.
    pub iss: String,
    /// The agent id.
    pub sub: String,
    /// The server's public URL again: receipts are statements by and about this server.
    pub aud: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// The decision id.
    pub jti: String,
    /// The agent's organization.
    pub org_id: String,
    /// Whether the action was allowed.
    pub allowed: bool,
    /// Stable decision reason code.
    pub reason: String,
    /// The capability the action used, such as `email:send`.
    pub capability: String,
    /// The resource the action targeted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The action's `args_digest` (`sha256:` and 64 hex digits), when it had one: a
    /// relying party holding only the receipt compares it with its own digest of the
    /// arguments it is about to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_digest: Option<String>,
    /// Lowercase hex SHA-256 of the envelope's signed bytes (its DSSE PAE).
    pub envelope_sha256: String,
    /// The agent's trust score when deciding, if one was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_score: Option<f64>,
    /// `enforce` or `monitor`.
    pub enforcement: String,
    /// Sequence number of the decision's record in the organization's audit chain.
    pub audit_seq: i64,
    /// Hash of that audit record.
    pub audit_hash: String,
}

/// The RFC 7638 thumbprint of an Ed25519 (OKP) JWK whose `x` member is `x_b64url`:
/// base64url without padding of SHA-256 over `{"crv":"Ed25519","kty":"OKP","x":"<x>"}`.
///
/// `x_b64url` must be the base64url encoding of the key (the alphabet needs no JSON
/// escaping, so the string is used as is).
pub fn jwk_thumbprint(x_b64url: &str) -> String {
    crate::keys::jwk_thumbprint(x_b64url)
}

/// The RFC 7638 thumbprint of a raw 32-byte Ed25519 public key.
pub fn ed25519_thumbprint(public_key: &[u8; 32]) -> String {
    jwk_thumbprint(&URL_SAFE_NO_PAD.encode(public_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 appendix A.2 (the key) and A.3 (its thumbprint).
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    #[test]
    fn thumbprint_matches_rfc_8037() {
        assert_eq!(jwk_thumbprint(RFC8037_X), RFC8037_THUMBPRINT);
        let raw: [u8; 32] = URL_SAFE_NO_PAD
            .decode(RFC8037_X)
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(ed25519_thumbprint(&raw), RFC8037_THUMBPRINT);
        let jwk = Jwk::ed25519(&raw);
        assert_eq!(jwk.x, RFC8037_X);
        assert_eq!(jwk.kid, RFC8037_THUMBPRINT);
    }

    #[test]
    fn jwk_serializes_with_the_registered_member_names() {
        let raw: [u8; 32] = URL_SAFE_NO_PAD
            .decode(RFC8037_X)
            .unwrap()
            .try_into()
            .unwrap();
        let json = serde_json::to_value(Jwks {
            keys: vec![Jwk::ed25519(&raw)],
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": RFC8037_X,
                "kid": RFC8037_THUMBPRINT,
                "alg": "EdDSA",
                "use": "sig",
            }]})
        );
        let back: Jwks = serde_json::from_value(json).unwrap();
        assert!(back.find(RFC8037_THUMBPRINT).is_some());
        assert!(back.find("other").is_none());
    }

    #[test]
    fn receipt_omits_absent_options_and_reads_them_back() {
        let receipt = ReceiptClaims {
            iss: "https://id.example".to_owned(),
            sub: "agent-1".to_owned(),
            aud: "https://id.example".to_owned(),
            iat: 1,
            exp: 2,
            jti: "d-1".to_owned(),
            org_id: "o-1".to_owned(),
            allowed: true,
            reason: "allowed".to_owned(),
            capability: "email:send".to_owned(),
            resource: None,
            args_digest: None,
            envelope_sha256: "00".repeat(32),
            trust_score: None,
            enforcement: "enforce".to_owned(),
            audit_seq: 7,
            audit_hash: "ab".to_owned(),
        };
        let json = serde_json::to_value(&receipt).unwrap();
        assert!(json.get("resource").is_none());
        assert!(json.get("trust_score").is_none());
        assert!(json.get("args_digest").is_none());
        let back: ReceiptClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, receipt);
    }
}
