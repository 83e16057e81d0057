//! The agent's private key and the statements it signs.
//!
//! Every envelope is built with the protocol crate (`Envelope::sign` over the
//! payload bytes serialized once), so the SDK signs exactly what
//! `docs/protocol.md` and its test vectors specify. This module never writes a key
//! anywhere (that is [`crate::KeyStore`]'s job), and its `Debug` output never shows
//! private material.

use agentid_protocol::envelope::{Envelope, PayloadType};
use agentid_protocol::payload::{ActionPayload, ChallengeResponsePayload, KeyRotationPayload};
use agentid_protocol::{b64, PublicKey};
use ed25519_dalek::SigningKey;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;

/// An agent's Ed25519 key pair. The private half stays inside this value (and,
/// through the key store, in the agent's key file); it is wiped from memory when
/// the value is dropped.
///
/// ```
/// let key = agentid::AgentKey::generate();
/// assert_eq!(key.key_id().len(), 43);
/// assert!(key.did().starts_with("did:key:z6Mk"));
/// // Debug never shows the private key.
/// assert!(format!("{key:?}").contains("redacted"));
/// ```
pub struct AgentKey {
    signing: SigningKey,
    public: PublicKey,
}

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKey")
            .field("key_id", &self.key_id())
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl AgentKey {
    /// A new key from the operating system's secure random source.
    pub fn generate() -> AgentKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        // A key from real key generation is never weak or non-canonical; should the
        // impossible happen, draw again.
        loop {
            if let Ok(key) = AgentKey::from_seed(&seed) {
                return key;
            }
            rand::rngs::OsRng.fill_bytes(seed.as_mut());
        }
    }

    /// The key whose RFC 8032 seed (private key) is `seed`. For tests and for
    /// loading from the key store; keep seeds secret.
    pub fn from_seed(seed: &[u8; 32]) -> Result<AgentKey, Error> {
        let signing = SigningKey::from_bytes(seed);
        let public = PublicKey::from_bytes(signing.verifying_key().as_bytes())
            .map_err(|e| Error::InvalidInput(format!("the key is not usable: {e}")))?;
        Ok(AgentKey { signing, public })
    }

    /// The public key, base64url of its 32 bytes.
    pub fn public_key(&self) -> String {
        self.public.to_b64url()
    }

    /// The key id: the RFC 7638 JWK thumbprint of the public key.
    pub fn key_id(&self) -> String {
        self.public.thumbprint()
    }

    /// The `did:key` of the public key.
    pub fn did(&self) -> String {
        self.public.did_key()
    }

    /// The public key as the protocol type.
    pub fn verifying_key(&self) -> &PublicKey {
        &self.public
    }

    /// The seed, for the key store only.
    pub(crate) fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

/// A signed statement ready to send: the envelope's JSON text and its digest.
///
/// The text is what was signed, base64url-wrapped; send it as is.
///
/// ```
/// let key = agentid::AgentKey::generate();
/// let signed = agentid::signing::action_envelope(
///     &key, "agent-1", "https://agentid.example", "email:send",
///     Some("bob@example.com"), None, 1767225600, &agentid::signing::new_nonce(),
/// )?;
/// assert!(signed.json().starts_with(r#"{"payloadType":"application/vnd.agentid.action+json""#));
/// assert_eq!(signed.digest().len(), 64);
/// # Ok::<(), agentid::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEnvelope {
    envelope: Envelope,
    json: String,
    digest: String,
}

impl SignedEnvelope {
    fn new(payload_type: PayloadType, payload: &[u8], keys: &[&SigningKey]) -> SignedEnvelope {
        let envelope = Envelope::sign(payload_type, payload, keys);
        let json = envelope.to_json();
        let digest = agentid_protocol::envelope::digest_of(&agentid_protocol::envelope::pae(
            payload_type.as_str(),
            payload,
        ));
        SignedEnvelope {
            envelope,
            json,
            digest,
        }
    }

    /// The envelope's JSON text, to send as a request body.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The envelope's JSON text, owned.
    pub fn into_json(self) -> String {
        self.json
    }

    /// The envelope digest: lowercase hex SHA-256 of the signed (PAE) bytes, as a
    /// decision receipt's `envelope_sha256` names it.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The envelope as the protocol type.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }
}

/// 16 fresh random bytes from the operating system, base64url: a nonce for one
/// action or rotation.
pub fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    b64::encode(bytes)
}

/// The current time in unix seconds (the `iat` of statements the SDK signs).
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The canonical bytes of action arguments: compact JSON (no whitespace) with
/// every object's members sorted by name (byte order of their UTF-8), strings
/// escaped as `serde_json` does, numbers as `serde_json` writes them. Arrays keep
/// their order.
///
/// Two parties that build the same JSON value get the same bytes, whatever
/// order they inserted members in. Prefer strings and integers in arguments: a
/// float's text form is exactly reproducible only by the same JSON library.
///
/// ```
/// let args = serde_json::json!({"to": "bob@example.com", "subject": "Hi", "n": [2, 1]});
/// assert_eq!(
///     agentid::signing::canonical_json(&args),
///     br#"{"n":[2,1],"subject":"Hi","to":"bob@example.com"}"#.to_vec()
/// );
/// ```
pub fn canonical_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(name.clone()), out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &serde_json::Value, out: &mut Vec<u8>) {
    // Writing a scalar to a vector cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// `sha256:` and the lowercase hex SHA-256 of `bytes`: an `args_digest` for
/// arguments the agent and the relying party agree on byte for byte.
///
/// ```
/// // The protocol's example: the digest of the literal text of the arguments.
/// assert_eq!(
///     agentid::signing::args_digest_of_bytes(br#"{"to":"bob@example.com","subject":"Quarterly report"}"#),
///     "sha256:dce3800a739b9ca8addc1c2dfd23fd66090230b070ad917cd502b1e869646b57"
/// );
/// ```
pub fn args_digest_of_bytes(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The `args_digest` of a JSON value: [`args_digest_of_bytes`] of its
/// [`canonical_json`]. This is what [`crate::Agent::sign_action`] puts in an action.
///
/// ```
/// let a = serde_json::json!({"to": "bob@example.com", "subject": "Hi"});
/// let b = serde_json::json!({"subject": "Hi", "to": "bob@example.com"});
/// assert_eq!(agentid::signing::args_digest(&a), agentid::signing::args_digest(&b));
/// ```
pub fn args_digest(args: &serde_json::Value) -> String {
    args_digest_of_bytes(&canonical_json(args))
}

/// An action envelope with every member given (no clock, no randomness): the
/// deterministic core of [`crate::Agent::sign_action`], checked against the
/// protocol's test vectors. The payload is validated as the server would read it
/// (capability name, lengths, digest and nonce format) before signing.
#[expect(
    clippy::too_many_arguments,
    reason = "each member of the payload is an input, for deterministic tests"
)]
pub fn action_envelope(
    key: &AgentKey,
    agent_id: &str,
    audience: &str,
    action: &str,
    resource: Option<&str>,
    args_digest: Option<&str>,
    iat: i64,
    nonce: &str,
) -> Result<SignedEnvelope, Error> {
    let payload = ActionPayload {
        agent_id: agent_id.to_owned(),
        action: action.to_owned(),
        resource: resource.map(str::to_owned),
        args_digest: args_digest.map(str::to_owned),
        iat,
        nonce: nonce.to_owned(),
        aud: audience.to_owned(),
    };
    let bytes = payload.to_bytes();
    ActionPayload::parse(&bytes).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(SignedEnvelope::new(
        PayloadType::Action,
        &bytes,
        &[key.signing_key()],
    ))
}

/// A challenge-response envelope proving possession of `key`.
pub fn challenge_response_envelope(
    key: &AgentKey,
    agent_id: &str,
    audience: &str,
    challenge: &str,
    iat: i64,
) -> Result<SignedEnvelope, Error> {
    let payload = ChallengeResponsePayload {
        agent_id: agent_id.to_owned(),
        challenge: challenge.to_owned(),
        aud: audience.to_owned(),
        iat,
    };
    let bytes = payload.to_bytes();
    ChallengeResponsePayload::parse(&bytes).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(SignedEnvelope::new(
        PayloadType::ChallengeResponse,
        &bytes,
        &[key.signing_key()],
    ))
}

/// A key-rotation envelope replacing `current` with `next`, signed by both (the
/// current key's signature first).
pub fn key_rotation_envelope(
    current: &AgentKey,
    next: &AgentKey,
    agent_id: &str,
    audience: &str,
    iat: i64,
    nonce: &str,
) -> Result<SignedEnvelope, Error> {
    let payload = KeyRotationPayload {
        agent_id: agent_id.to_owned(),
        old_key_id: current.key_id(),
        new_public_key: next.public_key(),
        aud: audience.to_owned(),
        iat,
        nonce: nonce.to_owned(),
    };
    let bytes = payload.to_bytes();
    KeyRotationPayload::parse(&bytes).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(SignedEnvelope::new(
        PayloadType::KeyRotation,
        &bytes,
        &[current.signing_key(), next.signing_key()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_actions_the_server_would_refuse() {
        let key = AgentKey::generate();
        let sign = |action: &str, digest: Option<&str>, nonce: &str| {
            action_envelope(&key, "a", "https://x", action, None, digest, 1, nonce)
        };
        assert!(matches!(
            sign("Send", None, &new_nonce()),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            sign("email:send", Some("md5:00"), &new_nonce()),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            sign("email:send", None, "short"),
            Err(Error::InvalidInput(_))
        ));
        assert!(sign("email:send", None, &new_nonce()).is_ok());
    }

    #[test]
    fn canonical_json_sorts_nested_members_and_escapes_strings() {
        let value = serde_json::json!({"b": {"z": 1, "a": "é\"\n"}, "a": [true, null, 1.5]});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":[true,null,1.5],"b":{"a":"é\"\n","z":1}}"#
        );
    }

    #[test]
    fn nonces_are_fresh_16_byte_values() {
        let a = new_nonce();
        assert_eq!(b64::decode(&a).unwrap().len(), 16);
        assert_ne!(a, new_nonce());
    }
}
