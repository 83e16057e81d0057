//! Proof-of-possession challenges that are minted without storing anything.
//!
//! A challenge is 16 random bytes, its expiry and an HMAC-SHA256 over them, the agent
//! id and the audience, under a key derived from `AGENTID_SECRET_KEY` (so every
//! replica can check what any replica minted). Issuing one writes nothing: no number
//! of challenges requested in an agent's name can push the agent's own challenge out
//! or fill a table. A challenge is spent by the first answer that names it, right or
//! wrong ([`crate::agents::spend_challenge`]: an insert under a unique constraint), and
//! is worthless after its expiry.
//!
//! This module must never accept a challenge whose MAC does not verify (compared in
//! constant time), one minted for another agent or audience, or an expired one.

use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use agentid_protocol::b64;

/// The format byte that starts every challenge.
const VERSION: u8 = 1;
/// Random bytes per challenge.
const RANDOM_LEN: usize = 16;
/// version, random, expiry (unix ms, big-endian), MAC.
const RAW_LEN: usize = 1 + RANDOM_LEN + 8 + 32;
/// Domain tag of the MAC input.
const MAC_DOMAIN: &[u8] = b"agentid-challenge-v1\0";
/// Derivation label of the MAC key.
const KEY_LABEL: &[u8] = b"agentid-key-derivation-v1\0challenge-hmac-sha256\0";

/// Mints and checks challenges.
pub struct Challenges {
    key: [u8; 32],
    ttl_ms: i64,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("key", &"[redacted]")
            .field("ttl_ms", &self.ttl_ms)
            .finish()
    }
}

/// A challenge as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// base64url, 76 characters; opaque to the agent.
    pub text: String,
    pub expires_at_ms: i64,
}

/// A challenge whose MAC, binding and expiry checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genuine {
    pub expires_at_ms: i64,
}

/// Why a challenge is not genuine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not one this server minted for this agent and audience (or altered).
    Unknown,
    /// Minted here, but past its expiry.
    Expired,
}

impl Challenges {
    /// Challenges valid for `ttl_secs`, keyed from the server's master secret.
    pub fn new(secret: &SecretString, ttl_secs: i64) -> Challenges {
        let mut hasher = Sha256::new();
        hasher.update(KEY_LABEL);
        hasher.update(secret.expose_secret().as_bytes());
        Challenges {
            key: hasher.finalize().into(),
            ttl_ms: ttl_secs * 1000,
        }
    }

    /// A fresh challenge for `agent_id` to answer to `audience`, as of `now_ms`.
    pub fn mint(&self, agent_id: &str, audience: &str, now_ms: i64) -> Minted {
        let mut random = [0u8; RANDOM_LEN];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let expires_at_ms = now_ms + self.ttl_ms;
        let mut raw = Vec::with_capacity(RAW_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(&random);
        raw.extend_from_slice(&expires_at_ms.to_be_bytes());
        let tag = self.mac(agent_id, audience, &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag);
        Minted {
            text: b64::encode(raw),
            expires_at_ms,
        }
    }

    /// Checks that `text` is a challenge minted here for `agent_id` and `audience`
    /// and unexpired at `now_ms`. Says nothing of whether it was spent.
    pub fn check(
        &self,
        text: &str,
        agent_id: &str,
        audience: &str,
        now_ms: i64,
    ) -> Result<Genuine, Refused> {
        let raw = b64::decode(text).ok_or(Refused::Unknown)?;
        if raw.len() != RAW_LEN || raw[0] != VERSION {
            return Err(Refused::Unknown);
        }
        let (signed, tag) = raw.split_at(RAW_LEN - 32);
        self.mac(agent_id, audience, signed)
            .verify_slice(tag)
            .map_err(|_| Refused::Unknown)?;
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&signed[1 + RANDOM_LEN..]);
        let expires_at_ms = i64::from_be_bytes(expiry);
        if expires_at_ms <= now_ms {
            return Err(Refused::Expired);
        }
        Ok(Genuine { expires_at_ms })
    }

    fn mac(&self, agent_id: &str, audience: &str, signed: &[u8]) -> Hmac<Sha256> {
        // The key is 32 bytes: HMAC takes any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts a key of any length"));
        for part in [agent_id.as_bytes(), audience.as_bytes()] {
            mac.update(MAC_DOMAIN);
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(signed);
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenges(secret: &str) -> Challenges {
        Challenges::new(&SecretString::from(secret.repeat(40)), 120)
    }

    #[test]
    fn a_minted_challenge_checks_out_until_it_expires() {
        let c = challenges("k");
        let minted = c.mint("agent-1", "https://a.test", 1_000);
        assert_eq!(minted.text.len(), 76);
        assert_eq!(minted.expires_at_ms, 121_000);
        assert_eq!(
            c.check(&minted.text, "agent-1", "https://a.test", 120_999),
            Ok(Genuine {
                expires_at_ms: 121_000
            })
        );
        assert_eq!(
            c.check(&minted.text, "agent-1", "https://a.test", 121_000),
            Err(Refused::Expired)
        );
        // Another replica with the same secret agrees.
        assert!(challenges("k")
            .check(&minted.text, "agent-1", "https://a.test", 2_000)
            .is_ok());
    }

    #[test]
    fn a_challenge_is_bound_to_its_agent_audience_secret_and_bytes() {
        let c = challenges("k");
        let minted = c.mint("agent-1", "https://a.test", 1_000);
        let unknown = Err(Refused::Unknown);
        assert_eq!(
            c.check(&minted.text, "agent-2", "https://a.test", 2_000),
            unknown
        );
        assert_eq!(
            c.check(&minted.text, "agent-1", "https://b.test", 2_000),
            unknown
        );
        assert_eq!(
            challenges("x").check(&minted.text, "agent-1", "https://a.test", 2_000),
            unknown
        );
        // The boundary between agent id and audience is part of the MAC.
        let split = c.mint("ab", "c", 1_000);
        assert_eq!(c.check(&split.text, "a", "bc", 2_000), unknown);
        // Any altered byte, a longer expiry included, is refused.
        let mut raw = b64::decode(&minted.text).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            assert_eq!(
                c.check(&b64::encode(&raw), "agent-1", "https://a.test", 2_000),
                unknown,
                "byte {i}"
            );
            raw[i] ^= 1;
        }
        for junk in ["", "not base64!", "AAAA", &"A".repeat(76)] {
            assert_eq!(c.check(junk, "agent-1", "https://a.test", 2_000), unknown);
        }
        // Two challenges are never the same.
        assert_ne!(minted.text, c.mint("agent-1", "https://a.test", 1_000).text);
    }
}
