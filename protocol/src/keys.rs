//! Agents' Ed25519 public keys: strict parsing, identifiers and verification.

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::b64;
use crate::protocol_error::{ProtocolError, ProtocolErrorKind};

/// The Ed25519 group order L, little-endian: a signature's `S` must be below it.
const GROUP_ORDER_LE: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// The multicodec prefix of an Ed25519 public key (varint 0xed).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];

/// An agent's public key, known to be a canonically encoded point that is not of
/// small order.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_b64url())
    }
}

impl PublicKey {
    /// Parses 32 raw bytes, refusing non-points, non-canonical encodings
    /// ([`ProtocolErrorKind::InvalidPublicKey`]) and small-order points
    /// ([`ProtocolErrorKind::WeakPublicKey`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, ProtocolError> {
        let invalid = |why: &str| ProtocolError::new(ProtocolErrorKind::InvalidPublicKey, why);
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid("an Ed25519 public key is exactly 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| invalid("the bytes are not an Ed25519 curve point"))?;
        if key.to_edwards().compress().to_bytes() != bytes {
            return Err(invalid("the point is not canonically encoded"));
        }
        if key.is_weak() {
            return Err(ProtocolError::new(
                ProtocolErrorKind::WeakPublicKey,
                "the key is a small-order point: it would verify forged signatures",
            ));
        }
        Ok(PublicKey { key })
    }

    /// Parses the base64url (unpadded) encoding of the 32 key bytes.
    pub fn from_b64url(text: &str) -> Result<PublicKey, ProtocolError> {
        let bytes = b64::decode(text).ok_or_else(|| {
            ProtocolError::new(
                ProtocolErrorKind::InvalidPublicKey,
                "the public key is not unpadded base64url",
            )
        })?;
        PublicKey::from_bytes(&bytes)
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The key as unpadded base64url (the JWK `x` member).
    pub fn to_b64url(&self) -> String {
        b64::encode(self.key.to_bytes())
    }

    /// The key id: the RFC 7638 JWK thumbprint of the key.
    pub fn thumbprint(&self) -> String {
        jwk_thumbprint(&self.to_b64url())
    }

    /// The `did:key` identifier: `did:key:z` + base58btc(0xed 0x01 ‖ key bytes).
    pub fn did_key(&self) -> String {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_MULTICODEC);
        bytes.extend_from_slice(&self.key.to_bytes());
        format!("did:key:z{}", bs58::encode(bytes).into_string())
    }

    /// Verifies `signature` over `message` strictly: a non-reduced `S` is
    /// [`ProtocolErrorKind::NonCanonicalSignature`]; anything else that
    /// `verify_strict` refuses (wrong key, changed bytes, small-order `R`) is
    /// [`ProtocolErrorKind::BadSignature`].
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), ProtocolError> {
        if !scalar_is_canonical(&signature[32..]) {
            return Err(ProtocolError::new(
                ProtocolErrorKind::NonCanonicalSignature,
                "the signature's S is not reduced modulo the group order",
            ));
        }
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .map_err(|_| {
                ProtocolError::new(
                    ProtocolErrorKind::BadSignature,
                    "the signature does not verify with the key over the signed bytes",
                )
            })
    }
}

/// Whether the little-endian 32-byte scalar is below the group order.
fn scalar_is_canonical(s: &[u8]) -> bool {
    for i in (0..32).rev() {
        match s[i].cmp(&GROUP_ORDER_LE[i]) {
            std::cmp::Ordering::Less => return true,
            std::cmp::Ordering::Greater => return false,
            std::cmp::Ordering::Equal => {}
        }
    }
    false // equal to L
}

/// The RFC 7638 thumbprint of an Ed25519 JWK with `x` = `x_b64url`:
/// base64url(SHA-256(`{"crv":"Ed25519","kty":"OKP","x":"<x>"}`)).
pub fn jwk_thumbprint(x_b64url: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x_b64url}"}}"#);
    b64::encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        assert_eq!(
            jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn did_key_is_multicodec_ed25519_in_base58btc() {
        let signing = SigningKey::from_bytes(&[1u8; 32]);
        let key = PublicKey::from_bytes(signing.verifying_key().as_bytes()).unwrap();
        let did = key.did_key();
        // Every Ed25519 did:key starts with z6Mk (the multicodec prefix in base58).
        assert!(did.starts_with("did:key:z6Mk"), "{did}");
        let decoded = bs58::decode(&did["did:key:z".len()..]).into_vec().unwrap();
        assert_eq!(&decoded[..2], &[0xed, 0x01]);
        assert_eq!(&decoded[2..], &key.to_bytes());
    }

    #[test]
    fn refuses_weak_and_malformed_keys() {
        let identity = {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        };
        assert_eq!(
            PublicKey::from_bytes(&identity).unwrap_err().kind,
            ProtocolErrorKind::WeakPublicKey
        );
        assert_eq!(
            PublicKey::from_bytes(&[0u8; 31]).unwrap_err().kind,
            ProtocolErrorKind::InvalidPublicKey
        );
        assert_eq!(
            PublicKey::from_b64url("not base64!").unwrap_err().kind,
            ProtocolErrorKind::InvalidPublicKey
        );
    }

    #[test]
    fn strict_verification_refuses_malleated_signatures() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let key = PublicKey::from_bytes(signing.verifying_key().as_bytes()).unwrap();
        let sig = signing.sign(b"hello").to_bytes();
        key.verify(b"hello", &sig).unwrap();
        assert_eq!(
            key.verify(b"hellO", &sig).unwrap_err().kind,
            ProtocolErrorKind::BadSignature
        );
        // S + L verifies under lax rules but is a second encoding of the same signature.
        let mut malleated = sig;
        let mut carry = 0u16;
        for i in 0..32 {
            let sum = u16::from(malleated[32 + i]) + u16::from(GROUP_ORDER_LE[i]) + carry;
            malleated[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(
            key.verify(b"hello", &malleated).unwrap_err().kind,
            ProtocolErrorKind::NonCanonicalSignature
        );
    }
}
