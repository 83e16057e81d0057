//! Writes the protocol test vectors in `protocol/test-vectors/`:
//! `cargo run -p agentid-protocol --example generate_vectors`.
//!
//! Everything is deterministic (fixed seeds, nonces and issued-at; Ed25519 signing is
//! deterministic), so the files only change when the protocol does. The generator
//! checks every vector against the crate before writing it and refuses to write a
//! vector the implementation disagrees with. `tests/vectors.rs` regenerates them in
//! memory and fails if the committed files differ.

use std::error::Error;

use agentid_protocol::envelope::{
    pae, Envelope, EnvelopeSignature, ParsedEnvelope, PayloadType, MAX_ENVELOPE_BYTES,
    MAX_KEYID_LEN, MAX_PAYLOAD_BYTES,
};
use agentid_protocol::json::MAX_DEPTH;
use agentid_protocol::keys::jwk_thumbprint;
use agentid_protocol::payload::{
    ActionPayload, ChallengeResponsePayload, KeyRotationPayload, NONCE_BYTES,
};
use agentid_protocol::{
    b64, DecisionReason, ErrorCode, ProtocolError, ProtocolErrorKind, PublicKey,
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The audience every vector is bound to (a server whose public URL is this).
pub const AUDIENCE: &str = "https://agentid.example";
/// The issued-at of every vector: 2026-01-01T00:00:00Z.
pub const IAT: i64 = 1_767_225_600;
/// The agent id every vector speaks for.
pub const AGENT_ID: &str = "3f2b8c1e-5d4a-4e6f-9a7b-0c1d2e3f4a5b";

/// The files, in writing order, with their full text.
pub fn generate() -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("keys.json", to_text(&keys_file()?)?),
        ("pae.json", to_text(&pae_file())?),
        ("envelopes.json", to_text(&envelopes_file()?)?),
        ("decision-reasons.json", to_text(&codes_file())?),
    ])
}

/// Fails without writing anything when a vector disagrees with the implementation.
fn main() -> Result<()> {
    let files = generate()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in files {
        std::fs::write(dir.join(name), text)?;
        println!("wrote protocol/test-vectors/{name}");
    }
    Ok(())
}

/// Pretty JSON (two-space indent) and a trailing newline. Every value is a struct,
/// so member order is the declaration order whatever serde_json's features are.
fn to_text<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

fn code(kind: ProtocolErrorKind) -> &'static str {
    kind.code()
}

/// A fixed test key.
struct TestKey {
    name: &'static str,
    seed: [u8; 32],
    signing: SigningKey,
    public: PublicKey,
}

impl TestKey {
    fn new(name: &'static str, seed: [u8; 32]) -> Result<TestKey> {
        let signing = SigningKey::from_bytes(&seed);
        let public = PublicKey::from_bytes(signing.verifying_key().as_bytes())?;
        Ok(TestKey {
            name,
            seed,
            signing,
            public,
        })
    }

    fn keyid(&self) -> String {
        self.public.thumbprint()
    }

    fn signer(&self) -> SignerVector {
        SignerVector {
            name: self.name,
            seed_hex: hex(self.seed),
            public_key: self.public.to_b64url(),
            keyid: self.keyid(),
        }
    }
}

/// The seed `start, start+1, ..., start+31`.
fn counting_seed(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// RFC 8032 section 7.1 TEST 1, also the key of RFC 8037 appendix A.
const RFC8032_TEST1_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

struct Keys {
    rfc8032: TestKey,
    agent: TestKey,
    next: TestKey,
    stranger: TestKey,
}

fn test_keys() -> Result<Keys> {
    let rfc_seed: [u8; 32] = hex::decode(RFC8032_TEST1_SEED)?
        .try_into()
        .map_err(|_| "the RFC 8032 seed is 32 bytes")?;
    let keys = Keys {
        rfc8032: TestKey::new("rfc8032-test1", rfc_seed)?,
        agent: TestKey::new("agent", counting_seed(0x00))?,
        next: TestKey::new("agent-next", counting_seed(0x20))?,
        stranger: TestKey::new("stranger", counting_seed(0x40))?,
    };
    if keys.rfc8032.keyid() != RFC8037_THUMBPRINT {
        return Err("the RFC 8032 key's thumbprint differs from RFC 8037 A.3".into());
    }
    Ok(keys)
}

/// base64url of the first 16 bytes of SHA-256(`label`): a fixed 128-bit nonce.
fn nonce(label: &str) -> String {
    b64::encode(&Sha256::digest(label.as_bytes())[..16])
}

#[derive(Debug, Serialize)]
struct KeysFile {
    description: &'static str,
    valid: Vec<KeyVector>,
    invalid: Vec<InvalidKeyVector>,
}

#[derive(Debug, Serialize)]
struct KeyVector {
    name: &'static str,
    /// The 32-byte Ed25519 seed (RFC 8032 private key).
    seed_hex: String,
    public_key_hex: String,
    /// base64url without padding: the form every API takes.
    public_key: String,
    /// The exact text hashed for the RFC 7638 thumbprint.
    thumbprint_input: String,
    thumbprint: String,
    did_key: String,
}

#[derive(Debug, Serialize)]
struct InvalidKeyVector {
    name: String,
    /// The text submitted as the key (base64url, or not).
    public_key: String,
    /// The decoded bytes, when `public_key` decodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key_hex: Option<String>,
    /// What the bytes are, for people.
    note: String,
    error: &'static str,
}

/// The eight points of small order, canonically encoded (the torsion subgroup
/// E[8]; see "Taming the many EdDSAs", table 2, and ed25519-speccheck).
const SMALL_ORDER_POINTS: [(&str, &str); 8] = [
    (
        "order 1 (the identity, y = 1)",
        "0100000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "order 2 (y = -1)",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ),
    (
        "order 4 (y = 0, x positive)",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (
        "order 4 (y = 0, x negative)",
        "0000000000000000000000000000000000000000000000000000000000000080",
    ),
    (
        "order 8",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    ),
    (
        "order 8 (negation of the previous)",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ),
    (
        "order 8",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    ),
    (
        "order 8 (negation of the previous)",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    ),
];

fn key_vector(key: &TestKey) -> KeyVector {
    let x = key.public.to_b64url();
    KeyVector {
        name: key.name,
        seed_hex: hex(key.seed),
        public_key_hex: hex(key.public.to_bytes()),
        thumbprint_input: format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
        thumbprint: jwk_thumbprint(&x),
        did_key: key.public.did_key(),
        public_key: x,
    }
}

fn invalid_key(
    name: String,
    text: String,
    note: String,
    expected: ProtocolErrorKind,
) -> Result<InvalidKeyVector> {
    match PublicKey::from_b64url(&text) {
        Err(e) if e.kind == expected => {}
        other => {
            return Err(format!(
                "key vector {name}: expected {}, got {other:?}",
                code(expected)
            )
            .into())
        }
    }
    Ok(InvalidKeyVector {
        public_key_hex: b64::decode(&text).map(hex),
        name,
        public_key: text,
        note,
        error: code(expected),
    })
}

/// What a 32-byte encoding denotes, from the curve library (not from our parser).
fn describe_encoding(bytes: [u8; 32]) -> String {
    match VerifyingKey::from_bytes(&bytes) {
        Err(_) => "not the encoding of any curve point".to_owned(),
        Ok(point) => {
            let canonical = point.to_edwards().compress().to_bytes();
            let order = if point.is_weak() {
                "a small-order point"
            } else {
                "a point"
            };
            format!(
                "a non-canonical encoding of {order} whose canonical encoding is {}",
                hex(canonical)
            )
        }
    }
}

fn keys_file() -> Result<KeysFile> {
    let keys = test_keys()?;
    let valid = [&keys.rfc8032, &keys.agent, &keys.next, &keys.stranger]
        .into_iter()
        .map(key_vector)
        .collect();

    let mut invalid = Vec::new();
    for (note, hex_text) in SMALL_ORDER_POINTS {
        let bytes = hex::decode(hex_text)?;
        invalid.push(invalid_key(
            format!("small-order point {hex_text}"),
            b64::encode(&bytes),
            format!("{note}: verifies forged signatures"),
            ProtocolErrorKind::WeakPublicKey,
        )?);
    }
    // y >= p: p + k for k in 0..=18 (bytes ed+k ff..ff 7f), with the sign bit clear and set.
    for k in 0u8..=18 {
        for sign in [0x00u8, 0x80] {
            let mut bytes = [0xffu8; 32];
            bytes[0] = 0xed + k;
            bytes[31] = 0x7f | sign;
            invalid.push(invalid_key(
                format!(
                    "y = p + {k}{}",
                    if sign == 0 { "" } else { ", sign bit set" }
                ),
                b64::encode(bytes),
                describe_encoding(bytes),
                ProtocolErrorKind::InvalidPublicKey,
            )?);
        }
    }
    // x = 0 with the sign bit set: "negative zero" spellings of points of order 1 and 2.
    for (what, hex_text) in [
        (
            "the identity with the sign bit set",
            "0100000000000000000000000000000000000000000000000000000000000080",
        ),
        (
            "the order-2 point with the sign bit set",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ),
    ] {
        let bytes: [u8; 32] = hex::decode(hex_text)?.try_into().map_err(|_| "32 bytes")?;
        invalid.push(invalid_key(
            what.to_owned(),
            b64::encode(bytes),
            describe_encoding(bytes),
            ProtocolErrorKind::InvalidPublicKey,
        )?);
    }
    // The smallest y whose x would be a square root of a non-square: not on the curve.
    let off_curve = (2u8..=255)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| VerifyingKey::from_bytes(bytes).is_err())
        .ok_or("some small y is off the curve")?;
    invalid.push(invalid_key(
        format!("y = {} (not on the curve)", off_curve[0]),
        b64::encode(off_curve),
        describe_encoding(off_curve),
        ProtocolErrorKind::InvalidPublicKey,
    )?);

    let agent = keys.agent.public.to_bytes();
    let rfc_x = keys.rfc8032.public.to_b64url();
    let encoding_cases: Vec<(&str, String, &str)> = vec![
        ("31 bytes", b64::encode(&agent[..31]), "too short"),
        (
            "33 bytes",
            b64::encode([&agent[..], &[0u8]].concat()),
            "too long",
        ),
        ("empty", String::new(), "no bytes"),
        (
            "padded base64url",
            format!("{}=", keys.agent.public.to_b64url()),
            "padding is refused",
        ),
        (
            "standard base64 alphabet",
            rfc_x.replace('-', "+").replace('_', "/"),
            "the RFC 8037 key with / for _: only the URL-safe alphabet is accepted",
        ),
        (
            "hex instead of base64url",
            hex(agent),
            "64 hex digits decode as 48 bytes",
        ),
        (
            "surrounding whitespace",
            format!(" {} ", keys.agent.public.to_b64url()),
            "whitespace is refused",
        ),
    ];
    for (name, text, note) in encoding_cases {
        invalid.push(invalid_key(
            name.to_owned(),
            text,
            note.to_owned(),
            ProtocolErrorKind::InvalidPublicKey,
        )?);
    }
    // Non-zero trailing bits: the last of 43 characters carries 4 key bits and 2 zero bits.
    let mut trailing = keys.agent.public.to_b64url();
    let last = trailing.pop().ok_or("non-empty")?;
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).ok_or("base64url character")?;
    trailing.push(alphabet.as_bytes()[index | 1] as char);
    invalid.push(invalid_key(
        "non-zero trailing bits".to_owned(),
        trailing,
        "the unused low bits of the last character must be zero".to_owned(),
        ProtocolErrorKind::InvalidPublicKey,
    )?);

    Ok(KeysFile {
        description: "Ed25519 public keys. `valid`: the public key of each seed (RFC 8032 key generation), its RFC 7638 JWK thumbprint (the key id: base64url(SHA-256(thumbprint_input))) and its did:key. `invalid`: `public_key` as submitted (base64url text) must be refused with `error`: small-order points are weak_public_key; non-canonical encodings (y >= p, or x = 0 with the sign bit set), non-points, wrong lengths and anything but strict unpadded base64url are invalid_public_key.",
        valid,
        invalid,
    })
}

#[derive(Debug, Serialize)]
struct PaeFile {
    description: &'static str,
    cases: Vec<PaeVector>,
}

#[derive(Debug, Serialize)]
struct PaeVector {
    name: &'static str,
    payload_type: &'static str,
    /// The payload bytes, base64url.
    payload: String,
    /// The PAE bytes, lowercase hex.
    pae_hex: String,
}

fn pae_file() -> PaeFile {
    let cases: Vec<(&'static str, &'static str, Vec<u8>)> = vec![
        (
            "DSSE specification example",
            "http://example.com/HelloWorld",
            b"hello world".to_vec(),
        ),
        ("empty payload", PayloadType::Action.as_str(), Vec::new()),
        (
            "empty JSON object as an action",
            PayloadType::Action.as_str(),
            b"{}".to_vec(),
        ),
        (
            "challenge-response type",
            PayloadType::ChallengeResponse.as_str(),
            b"{}".to_vec(),
        ),
        (
            "key-rotation type",
            PayloadType::KeyRotation.as_str(),
            b"{}".to_vec(),
        ),
        (
            "lengths count UTF-8 bytes, not characters",
            PayloadType::Action.as_str(),
            "{\"resource\":\"r\u{e9}sum\u{e9}.pdf\"}"
                .as_bytes()
                .to_vec(),
        ),
        (
            "arbitrary bytes, including NUL, newline and space",
            PayloadType::Action.as_str(),
            vec![0x00, 0xff, 0x0a, 0x20, 0x44, 0x53, 0x53, 0x45],
        ),
        (
            "a three-digit length",
            PayloadType::Action.as_str(),
            vec![b' '; 100],
        ),
    ];
    PaeFile {
        description: "DSSE v1 pre-authentication encoding: PAE(type, body) = \"DSSEv1\" SP LEN(type) SP type SP LEN(body) SP body, LEN being the byte length in ASCII decimal without leading zeros, SP one space (0x20). Signatures cover these bytes.",
        cases: cases
            .into_iter()
            .map(|(name, payload_type, payload)| PaeVector {
                name,
                payload_type,
                pae_hex: hex(pae(payload_type, &payload)),
                payload: b64::encode(&payload),
            })
            .collect(),
    }
}

#[derive(Debug, Serialize)]
struct EnvelopesFile {
    description: &'static str,
    audience: &'static str,
    iat: i64,
    agent_id: &'static str,
    limits: Limits,
    valid: Vec<ValidEnvelope>,
    invalid: Vec<InvalidEnvelope>,
}

#[derive(Debug, Serialize)]
struct Limits {
    max_envelope_bytes: usize,
    max_payload_bytes: usize,
    max_depth: usize,
    max_keyid_len: usize,
    min_nonce_bytes: usize,
    max_nonce_bytes: usize,
}

#[derive(Debug, Serialize)]
struct SignerVector {
    name: &'static str,
    seed_hex: String,
    public_key: String,
    keyid: String,
}

#[derive(Debug, Serialize)]
struct SignatureVector {
    keyid: String,
    sig: String,
}

#[derive(Debug, Serialize)]
struct ValidEnvelope {
    name: &'static str,
    payload_type: &'static str,
    signers: Vec<SignerVector>,
    /// The exact payload bytes as text.
    payload_utf8: String,
    /// The same bytes, base64url (the envelope's `payload`).
    payload: String,
    /// PAE(payload_type, payload bytes), base64url: what every signature covers.
    signed_bytes: String,
    signatures: Vec<SignatureVector>,
    /// The complete envelope, as sent.
    envelope: String,
    /// Lowercase hex SHA-256 of the signed bytes.
    digest: String,
}

#[derive(Debug, Serialize)]
struct InvalidEnvelope {
    name: String,
    /// The payload type the receiving operation takes.
    operation: &'static str,
    envelope: String,
    /// The public keys to verify with at the `verify` stage (base64url), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    verify_with: Vec<String>,
    stage: &'static str,
    error: &'static str,
}

/// The three stages a receiver runs, and the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Parse,
    Payload,
    Verify,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Payload => "payload",
            Stage::Verify => "verify",
        }
    }
}

/// What a receiver that takes `operation` does with `text`: parse the envelope,
/// check its type and parse its payload, verify with each key in turn.
fn receive(
    operation: PayloadType,
    text: &str,
    keys: &[PublicKey],
) -> std::result::Result<(), (Stage, ProtocolError)> {
    let parsed = ParsedEnvelope::parse(text.as_bytes()).map_err(|e| (Stage::Parse, e))?;
    let payload = |parsed: &ParsedEnvelope| -> std::result::Result<(), ProtocolError> {
        parsed.expect_type(operation)?;
        match operation {
            PayloadType::Action => ActionPayload::parse(&parsed.payload).map(drop),
            PayloadType::ChallengeResponse => {
                ChallengeResponsePayload::parse(&parsed.payload).map(drop)
            }
            PayloadType::KeyRotation => KeyRotationPayload::parse(&parsed.payload).map(drop),
        }
    };
    payload(&parsed).map_err(|e| (Stage::Payload, e))?;
    for key in keys {
        parsed.verify(key).map_err(|e| (Stage::Verify, e))?;
    }
    Ok(())
}

fn action_payload(label: &str) -> ActionPayload {
    ActionPayload {
        agent_id: AGENT_ID.to_owned(),
        action: "email:send".to_owned(),
        resource: Some("bob@example.com".to_owned()),
        args_digest: None,
        iat: IAT,
        nonce: nonce(label),
        aud: AUDIENCE.to_owned(),
    }
}

/// `payload_json` with spaces before its closing brace, `len` bytes in all.
fn pad_json(payload_json: &[u8], len: usize) -> Result<Vec<u8>> {
    let (close, body) = payload_json.split_last().ok_or("non-empty payload")?;
    if *close != b'}' || payload_json.len() > len {
        return Err("cannot pad this payload".into());
    }
    let mut out = body.to_vec();
    out.resize(len - 1, b' ');
    out.push(b'}');
    Ok(out)
}

/// `text` with trailing spaces (insignificant JSON whitespace), `len` bytes in all.
fn pad_text(text: &str, len: usize) -> Result<String> {
    if text.len() > len {
        return Err("cannot pad this envelope".into());
    }
    Ok(format!("{text}{}", " ".repeat(len - text.len())))
}

fn valid_envelope(
    name: &'static str,
    payload_type: PayloadType,
    payload: &[u8],
    signers: &[&TestKey],
    envelope_text: impl FnOnce(String) -> Result<String>,
) -> Result<ValidEnvelope> {
    let signing: Vec<&SigningKey> = signers.iter().map(|k| &k.signing).collect();
    let envelope = Envelope::sign(payload_type, payload, &signing);
    let text = envelope_text(envelope.to_json())?;
    let publics: Vec<PublicKey> = signers.iter().map(|k| k.public.clone()).collect();
    receive(payload_type, &text, &publics)
        .map_err(|(stage, e)| format!("valid vector {name} fails at {}: {e}", stage.as_str()))?;
    let parsed = ParsedEnvelope::parse(text.as_bytes())?;
    Ok(ValidEnvelope {
        name,
        payload_type: payload_type.as_str(),
        signers: signers.iter().map(|k| k.signer()).collect(),
        payload_utf8: String::from_utf8(payload.to_vec())?,
        payload: b64::encode(payload),
        signed_bytes: b64::encode(parsed.signed_bytes()),
        signatures: envelope
            .signatures
            .iter()
            .map(|s| SignatureVector {
                keyid: s.keyid.clone(),
                sig: s.sig.clone(),
            })
            .collect(),
        envelope: text,
        digest: parsed.digest(),
    })
}

/// Collects invalid vectors, checking each against the implementation.
struct Invalid {
    cases: Vec<InvalidEnvelope>,
}

impl Invalid {
    fn add(
        &mut self,
        name: &str,
        operation: PayloadType,
        envelope: String,
        verify_with: &[&TestKey],
        stage: Stage,
        expected: ProtocolErrorKind,
    ) -> Result<()> {
        let keys: Vec<PublicKey> = verify_with.iter().map(|k| k.public.clone()).collect();
        match receive(operation, &envelope, &keys) {
            Err((s, e)) if s == stage && e.kind == expected => {}
            other => {
                return Err(format!(
                    "invalid vector {name}: expected {} at {}, got {other:?}",
                    code(expected),
                    stage.as_str()
                )
                .into())
            }
        }
        self.cases.push(InvalidEnvelope {
            name: name.to_owned(),
            operation: operation.as_str(),
            envelope,
            verify_with: keys.iter().map(PublicKey::to_b64url).collect(),
            stage: stage.as_str(),
            error: code(expected),
        });
        Ok(())
    }

    fn parse(&mut self, name: &str, envelope: String, expected: ProtocolErrorKind) -> Result<()> {
        self.add(
            name,
            PayloadType::Action,
            envelope,
            &[],
            Stage::Parse,
            expected,
        )
    }
}

/// The standard (padded, `+/`) base64 spelling of `bytes`.
fn standard_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The standard-alphabet (`+/`) base64 spelling of `bytes`, without padding.
fn standard_b64_unpadded(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// `s + L`: the same signature with a non-reduced scalar.
fn malleate(sig: &[u8; 64]) -> [u8; 64] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x10,
    ];
    let mut out = *sig;
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(out[32 + i]) + u16::from(L[i]) + carry;
        out[32 + i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    out
}

fn with_signatures(payload_type: &str, payload: &str, signatures: Vec<(String, String)>) -> String {
    Envelope {
        payload_type: payload_type.to_owned(),
        payload: payload.to_owned(),
        signatures: signatures
            .into_iter()
            .map(|(keyid, sig)| EnvelopeSignature { keyid, sig })
            .collect(),
    }
    .to_json()
}

fn envelopes_file() -> Result<EnvelopesFile> {
    let keys = test_keys()?;
    let (agent, next, stranger) = (&keys.agent, &keys.next, &keys.stranger);
    let action = PayloadType::Action;
    let compact = |text: String| -> Result<String> { Ok(text) };

    // ---- valid
    let challenge = ChallengeResponsePayload {
        agent_id: AGENT_ID.to_owned(),
        challenge: b64::encode(Sha256::digest(b"agentid test vector challenge")),
        aud: AUDIENCE.to_owned(),
        iat: IAT,
    }
    .to_bytes();
    let args = br#"{"to":"bob@example.com","subject":"Quarterly report"}"#;
    let full_action = ActionPayload {
        args_digest: Some(format!("sha256:{}", hex(Sha256::digest(args)))),
        ..action_payload("action with resource and args_digest")
    }
    .to_bytes();
    let bare_action = ActionPayload {
        action: "files:read".to_owned(),
        resource: None,
        args_digest: None,
        ..action_payload("action without optional members")
    }
    .to_bytes();
    let rotation = KeyRotationPayload {
        agent_id: AGENT_ID.to_owned(),
        old_key_id: agent.keyid(),
        new_public_key: next.public.to_b64url(),
        aud: AUDIENCE.to_owned(),
        iat: IAT,
        nonce: nonce("key rotation"),
    }
    .to_bytes();
    let spaced_action = pad_json(
        &action_payload("payload at the size limit").to_bytes(),
        MAX_PAYLOAD_BYTES,
    )?;
    let limit_action = action_payload("envelope at the size limit").to_bytes();

    let valid = vec![
        valid_envelope("challenge response", PayloadType::ChallengeResponse, &challenge, &[agent], compact)?,
        valid_envelope("action with resource and args_digest", action, &full_action, &[agent], compact)?,
        valid_envelope("action without optional members", action, &bare_action, &[agent], compact)?,
        valid_envelope(
            "key rotation signed by the current key and the new key",
            PayloadType::KeyRotation,
            &rotation,
            &[agent, next],
            compact,
        )?,
        valid_envelope(
            "payload of exactly max_payload_bytes (insignificant whitespace is signed like any byte)",
            action,
            &spaced_action,
            &[agent],
            compact,
        )?,
        valid_envelope(
            "envelope of exactly max_envelope_bytes (trailing whitespace)",
            action,
            &limit_action,
            &[agent],
            |text| pad_text(&text, MAX_ENVELOPE_BYTES),
        )?,
    ];

    // ---- invalid
    let mut inv = Invalid { cases: Vec::new() };
    let ty = action.as_str();
    let sign_action = |p: &[u8]| Envelope::sign(action, p, &[&agent.signing]);
    let good = sign_action(&action_payload("invalid: base").to_bytes());
    let good_json = good.to_json();
    let good_sig = &good.signatures[0];
    let sig_member = format!(
        r#"{{"keyid":"{}","sig":"{}"}}"#,
        good_sig.keyid, good_sig.sig
    );

    // parse stage: size and nesting
    inv.parse(
        "envelope of max_envelope_bytes + 1 (trailing whitespace)",
        pad_text(&good_json, MAX_ENVELOPE_BYTES + 1)?,
        ProtocolErrorKind::EnvelopeTooLarge,
    )?;
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    inv.parse(
        "envelope nested max_depth + 1 deep",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{}","signatures":{deep}}}"#,
            good.payload
        ),
        ProtocolErrorKind::NestingTooDeep,
    )?;
    // duplicates
    inv.parse(
        "duplicate member in the envelope",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{p}","payload":"{p}","signatures":[{sig_member}]}}"#,
            p = good.payload
        ),
        ProtocolErrorKind::DuplicateKey,
    )?;
    inv.parse(
        "duplicate member in the envelope, second spelled with a JSON escape",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{p}","\u0070ayload":"{p}","signatures":[{sig_member}]}}"#,
            p = good.payload
        ),
        ProtocolErrorKind::DuplicateKey,
    )?;
    inv.parse(
        "duplicate member in a signature object",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{p}","signatures":[{{"keyid":"{k}","sig":"{s}","sig":"{s}"}}]}}"#,
            p = good.payload,
            k = good_sig.keyid,
            s = good_sig.sig
        ),
        ProtocolErrorKind::DuplicateKey,
    )?;
    // malformed
    let body_without_close = good_json.strip_suffix('}').ok_or("an object")?;
    inv.parse(
        "unknown member in the envelope",
        format!(r#"{body_without_close},"extra":1}}"#),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "unknown member in a signature object",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{p}","signatures":[{{"keyid":"{k}","sig":"{s}","alg":"EdDSA"}}]}}"#,
            p = good.payload,
            k = good_sig.keyid,
            s = good_sig.sig
        ),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "payload is a JSON number",
        format!(r#"{{"payloadType":"{ty}","payload":5,"signatures":[{sig_member}]}}"#),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "signatures is an object",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{}","signatures":{sig_member}}}"#,
            good.payload
        ),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "missing member (no signatures)",
        format!(r#"{{"payloadType":"{ty}","payload":"{}"}}"#, good.payload),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "trailing data after the object",
        format!("{good_json}{{}}"),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "not JSON",
        "payloadType=action".to_owned(),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "a JSON array",
        format!("[{good_json}]"),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    // One spelling: serde's derive also reads a struct from the array of its members'
    // values; the protocol defines only the object.
    let sequence_form = format!(
        r#"["{ty}","{}",[["{}","{}"]]]"#,
        good.payload, good_sig.keyid, good_sig.sig
    );
    if serde_json::from_str::<Envelope>(&sequence_form).is_err() {
        return Err("serde_json should read the sequence form of an envelope".into());
    }
    inv.parse(
        "the envelope as the array of its members' values (serde's sequence form)",
        sequence_form,
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "a signature object as the array of its members' values",
        format!(
            r#"{{"payloadType":"{ty}","payload":"{}","signatures":[["{}","{}"]]}}"#,
            good.payload, good_sig.keyid, good_sig.sig
        ),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    inv.parse(
        "keyid containing U+0000 (as the JSON escape \\u0000)",
        with_signatures(
            ty,
            &good.payload,
            vec![(format!("{}\0", good_sig.keyid), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::MalformedEnvelope,
    )?;
    // base64
    let padded_payload = {
        // Pad the payload to a length that base64 pads (not a multiple of 3).
        let bytes = action_payload("invalid: padded payload").to_bytes();
        let bytes = if bytes.len().is_multiple_of(3) {
            pad_json(&bytes, bytes.len() + 1)?
        } else {
            bytes
        };
        let mut envelope = sign_action(&bytes);
        envelope.payload = standard_b64(&bytes).replace('+', "-").replace('/', "_");
        if !envelope.payload.ends_with('=') {
            return Err("the padded payload has no padding".into());
        }
        envelope.to_json()
    };
    inv.parse(
        "payload with base64 padding",
        padded_payload,
        ProtocolErrorKind::InvalidBase64,
    )?;
    let standard_payload = {
        // ASCII encodes to + or / only where '>', '?' or '~' ends a 3-byte group:
        // three '?' in a row guarantee one.
        let bytes = ActionPayload {
            resource: Some("https://files.example/q???".to_owned()),
            ..action_payload("invalid: standard alphabet")
        }
        .to_bytes();
        let standard = standard_b64_unpadded(&bytes);
        if !standard.contains(['+', '/']) {
            return Err("the standard-alphabet payload has no + or /".into());
        }
        let mut envelope = sign_action(&bytes);
        envelope.payload = standard;
        envelope.to_json()
    };
    inv.parse(
        "payload in the standard base64 alphabet (+ and /)",
        standard_payload,
        ProtocolErrorKind::InvalidBase64,
    )?;
    let trailing_bits_payload = {
        let bytes = action_payload("invalid: trailing bits").to_bytes();
        let bytes = if bytes.len().is_multiple_of(3) {
            pad_json(&bytes, bytes.len() + 1)?
        } else {
            bytes
        };
        let mut envelope = sign_action(&bytes);
        let last = envelope.payload.pop().ok_or("non-empty")?;
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.find(last).ok_or("base64url character")?;
        envelope
            .payload
            .push(alphabet.as_bytes()[index | 1] as char);
        envelope.to_json()
    };
    inv.parse(
        "payload with non-zero trailing bits",
        trailing_bits_payload,
        ProtocolErrorKind::InvalidBase64,
    )?;
    inv.parse(
        "sig with base64 padding",
        with_signatures(
            ty,
            &good.payload,
            vec![(good_sig.keyid.clone(), format!("{}==", good_sig.sig))],
        ),
        ProtocolErrorKind::InvalidBase64,
    )?;
    // payload type and size
    inv.parse(
        "unknown payloadType",
        with_signatures(
            "application/json",
            &good.payload,
            vec![(good_sig.keyid.clone(), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::UnknownPayloadType,
    )?;
    inv.parse(
        "payloadType with a parameter",
        with_signatures(
            &format!("{ty}; charset=utf-8"),
            &good.payload,
            vec![(good_sig.keyid.clone(), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::UnknownPayloadType,
    )?;
    inv.parse(
        "payloadType in another case",
        with_signatures(
            &ty.to_uppercase(),
            &good.payload,
            vec![(good_sig.keyid.clone(), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::UnknownPayloadType,
    )?;
    let oversize = pad_json(
        &action_payload("invalid: payload too large").to_bytes(),
        MAX_PAYLOAD_BYTES + 1,
    )?;
    inv.parse(
        "payload of max_payload_bytes + 1",
        sign_action(&oversize).to_json(),
        ProtocolErrorKind::PayloadTooLarge,
    )?;
    // signature count and encoding
    inv.parse(
        "action with no signature",
        with_signatures(ty, &good.payload, vec![]),
        ProtocolErrorKind::WrongSignatureCount,
    )?;
    let two = Envelope::sign(
        action,
        &action_payload("invalid: two signatures").to_bytes(),
        &[&agent.signing, &stranger.signing],
    );
    inv.parse(
        "action with two signatures",
        two.to_json(),
        ProtocolErrorKind::WrongSignatureCount,
    )?;
    let one_rotation = Envelope::sign(PayloadType::KeyRotation, &rotation, &[&agent.signing]);
    inv.add(
        "key rotation with one signature",
        PayloadType::KeyRotation,
        one_rotation.to_json(),
        &[],
        Stage::Parse,
        ProtocolErrorKind::WrongSignatureCount,
    )?;
    let twice = Envelope::sign(
        PayloadType::KeyRotation,
        &rotation,
        &[&agent.signing, &agent.signing],
    );
    inv.add(
        "key rotation signed twice by the same key",
        PayloadType::KeyRotation,
        twice.to_json(),
        &[],
        Stage::Parse,
        ProtocolErrorKind::WrongSignatureCount,
    )?;
    let sig_bytes = b64::decode(&good_sig.sig).ok_or("a signature")?;
    inv.parse(
        "63-byte sig",
        with_signatures(
            ty,
            &good.payload,
            vec![(good_sig.keyid.clone(), b64::encode(&sig_bytes[..63]))],
        ),
        ProtocolErrorKind::InvalidSignatureEncoding,
    )?;
    inv.parse(
        "65-byte sig",
        with_signatures(
            ty,
            &good.payload,
            vec![(
                good_sig.keyid.clone(),
                b64::encode([&sig_bytes[..], &[0]].concat()),
            )],
        ),
        ProtocolErrorKind::InvalidSignatureEncoding,
    )?;
    inv.parse(
        "empty sig",
        with_signatures(
            ty,
            &good.payload,
            vec![(good_sig.keyid.clone(), String::new())],
        ),
        ProtocolErrorKind::InvalidSignatureEncoding,
    )?;
    inv.parse(
        "empty keyid",
        with_signatures(
            ty,
            &good.payload,
            vec![(String::new(), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::InvalidSignatureEncoding,
    )?;
    inv.parse(
        "keyid longer than max_keyid_len",
        with_signatures(
            ty,
            &good.payload,
            vec![("k".repeat(MAX_KEYID_LEN + 1), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::InvalidSignatureEncoding,
    )?;

    // payload stage
    let challenge_envelope = Envelope::sign(
        PayloadType::ChallengeResponse,
        &challenge,
        &[&agent.signing],
    );
    inv.add(
        "challenge response sent to the action operation",
        action,
        challenge_envelope.to_json(),
        &[],
        Stage::Payload,
        ProtocolErrorKind::WrongPayloadType,
    )?;
    inv.add(
        "action sent to the key rotation operation",
        PayloadType::KeyRotation,
        good_json.clone(),
        &[],
        Stage::Payload,
        ProtocolErrorKind::WrongPayloadType,
    )?;
    let mut payload_case =
        |name: &str, payload: Vec<u8>, expected: ProtocolErrorKind| -> Result<()> {
            inv.add(
                name,
                action,
                sign_action(&payload).to_json(),
                &[],
                Stage::Payload,
                expected,
            )
        };
    let edit = |label: &str, f: &dyn Fn(&mut ActionPayload)| -> Vec<u8> {
        let mut p = action_payload(label);
        f(&mut p);
        p.to_bytes()
    };
    let base = action_payload("invalid: payload").to_bytes();
    let base_text = String::from_utf8(base.clone())?;
    let without_close = base_text.strip_suffix('}').ok_or("an object")?;
    payload_case(
        "duplicate member in the payload",
        format!(
            r#"{without_close},"nonce":"{}"}}"#,
            nonce("invalid: duplicate nonce")
        )
        .into_bytes(),
        ProtocolErrorKind::DuplicateKey,
    )?;
    payload_case(
        "payload nested max_depth + 1 deep",
        format!(r#"{without_close},"x":{deep}}}"#).into_bytes(),
        ProtocolErrorKind::NestingTooDeep,
    )?;
    payload_case(
        "nonce of 15 bytes (120 bits)",
        edit("invalid: short nonce", &|p| {
            p.nonce = b64::encode(&Sha256::digest(b"short")[..15])
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "nonce with base64 padding",
        edit("invalid: padded nonce", &|p| {
            p.nonce = standard_b64(&Sha256::digest(b"padded")[..16])
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "action that is not namespace:action",
        edit("invalid: action name", &|p| p.action = "send".to_owned()),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "action with upper-case letters",
        edit("invalid: action case", &|p| {
            p.action = "Email:Send".to_owned()
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "args_digest in upper-case hex",
        edit("invalid: digest case", &|p| {
            p.args_digest = Some(format!(
                "sha256:{}",
                hex(Sha256::digest(b"args")).to_uppercase()
            ))
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "args_digest without the sha256: prefix",
        edit("invalid: digest prefix", &|p| {
            p.args_digest = Some(hex(Sha256::digest(b"args")))
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "negative iat",
        edit("invalid: negative iat", &|p| p.iat = -1),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "iat as a string",
        base_text
            .replace(&format!(r#""iat":{IAT}"#), &format!(r#""iat":"{IAT}""#))
            .into_bytes(),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "iat with a fraction",
        base_text
            .replace(&format!(r#""iat":{IAT}"#), &format!(r#""iat":{IAT}.5"#))
            .into_bytes(),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "unknown member in the payload",
        format!(r#"{without_close},"purpose":"test"}}"#).into_bytes(),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "missing member (no nonce)",
        base_text
            .replace(&format!(r#","nonce":"{}""#, nonce("invalid: payload")), "")
            .into_bytes(),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "empty agent_id",
        edit("invalid: empty agent id", &|p| p.agent_id = String::new()),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "empty resource",
        edit("invalid: empty resource", &|p| {
            p.resource = Some(String::new())
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    let base_payload = action_payload("invalid: payload");
    let sequence_payload = serde_json::to_vec(&(
        &base_payload.agent_id,
        &base_payload.action,
        &base_payload.resource,
        &base_payload.args_digest,
        base_payload.iat,
        &base_payload.nonce,
        &base_payload.aud,
    ))?;
    if serde_json::from_slice::<ActionPayload>(&sequence_payload).is_err() {
        return Err("serde_json should read the sequence form of a payload".into());
    }
    payload_case(
        "payload as the array of its members' values (serde's sequence form), signed",
        sequence_payload,
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "agent_id containing U+0000 (as the JSON escape \\u0000)",
        edit("invalid: nul agent id", &|p| p.agent_id.push('\0')),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "resource containing U+0000 (as the JSON escape \\u0000)",
        edit("invalid: nul resource", &|p| {
            p.resource = Some("bob@example.com\0".to_owned())
        }),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "payload is not JSON",
        b"email:send to bob".to_vec(),
        ProtocolErrorKind::InvalidPayload,
    )?;
    payload_case(
        "trailing data after the payload object",
        [&base[..], b"{}"].concat(),
        ProtocolErrorKind::InvalidPayload,
    )?;
    let weak_rotation = KeyRotationPayload {
        agent_id: AGENT_ID.to_owned(),
        old_key_id: agent.keyid(),
        new_public_key: b64::encode(hex::decode(SMALL_ORDER_POINTS[0].1)?),
        aud: AUDIENCE.to_owned(),
        iat: IAT,
        nonce: nonce("invalid: weak rotation"),
    }
    .to_bytes();
    inv.add(
        "key rotation to a small-order key",
        PayloadType::KeyRotation,
        Envelope::sign(
            PayloadType::KeyRotation,
            &weak_rotation,
            &[&agent.signing, &next.signing],
        )
        .to_json(),
        &[],
        Stage::Payload,
        ProtocolErrorKind::WeakPublicKey,
    )?;

    // verify stage
    let verify = |inv: &mut Invalid,
                  name: &str,
                  envelope: String,
                  expected: ProtocolErrorKind|
     -> Result<()> {
        inv.add(name, action, envelope, &[agent], Stage::Verify, expected)
    };
    let sig: [u8; 64] = sig_bytes.as_slice().try_into()?;
    verify(
        &mut inv,
        "sig with S + L (the same signature, scalar not reduced)",
        with_signatures(
            ty,
            &good.payload,
            vec![(good_sig.keyid.clone(), b64::encode(malleate(&sig)))],
        ),
        ProtocolErrorKind::NonCanonicalSignature,
    )?;
    let tampered = {
        let text = String::from_utf8(action_payload("invalid: base").to_bytes())?;
        b64::encode(text.replace("bob@example.com", "eve@example.com"))
    };
    verify(
        &mut inv,
        "payload changed after signing",
        with_signatures(
            ty,
            &tampered,
            vec![(good_sig.keyid.clone(), good_sig.sig.clone())],
        ),
        ProtocolErrorKind::BadSignature,
    )?;
    let by_stranger = Envelope::sign(
        action,
        &action_payload("invalid: stranger").to_bytes(),
        &[&stranger.signing],
    );
    verify(
        &mut inv,
        "signed by another key, keyid naming the agent's key",
        with_signatures(
            ty,
            &by_stranger.payload,
            vec![(agent.keyid(), by_stranger.signatures[0].sig.clone())],
        ),
        ProtocolErrorKind::BadSignature,
    )?;
    verify(
        &mut inv,
        "signed by another key, keyid naming that key",
        by_stranger.to_json(),
        ProtocolErrorKind::BadSignature,
    )?;
    let raw_payload = action_payload("invalid: raw payload").to_bytes();
    verify(
        &mut inv,
        "signature over the payload bytes instead of the PAE",
        with_signatures(
            ty,
            &b64::encode(&raw_payload),
            vec![(
                agent.keyid(),
                b64::encode(agent.signing.sign(&raw_payload).to_bytes()),
            )],
        ),
        ProtocolErrorKind::BadSignature,
    )?;
    let other_type_payload = action_payload("invalid: other type").to_bytes();
    let for_challenge = Envelope::sign(
        PayloadType::ChallengeResponse,
        &other_type_payload,
        &[&agent.signing],
    );
    verify(
        &mut inv,
        "signature made for the challenge-response payload type",
        with_signatures(
            ty,
            &for_challenge.payload,
            vec![(agent.keyid(), for_challenge.signatures[0].sig.clone())],
        ),
        ProtocolErrorKind::BadSignature,
    )?;
    let half_rotation = {
        let mut envelope = Envelope::sign(
            PayloadType::KeyRotation,
            &rotation,
            &[&agent.signing, &agent.signing],
        );
        envelope.signatures[1].keyid = next.keyid();
        envelope.to_json()
    };
    inv.add(
        "key rotation whose second signature is by the current key, keyid naming the new key",
        PayloadType::KeyRotation,
        half_rotation,
        &[agent, next],
        Stage::Verify,
        ProtocolErrorKind::BadSignature,
    )?;

    Ok(EnvelopesFile {
        description: "DSSE-style envelopes. `valid`: signers' seeds and keys, the exact payload bytes (UTF-8 text and base64url), the PAE signed bytes (base64url), each signature, the envelope text and its digest (lowercase hex SHA-256 of the signed bytes); every valid envelope parses, has a valid payload of its type and verifies with every signer's key. `invalid`: a receiver whose operation takes payload type `operation` runs three stages and must fail at `stage` with `error`: `parse` (size, nesting, strict JSON, payloadType, base64url, payload size, signature count and encoding), `payload` (payloadType equals `operation`, then the payload's own rules), `verify` (strict Ed25519 over the PAE with each key of `verify_with`, found by keyid = its thumbprint). Earlier stages pass.",
        audience: AUDIENCE,
        iat: IAT,
        agent_id: AGENT_ID,
        limits: Limits {
            max_envelope_bytes: MAX_ENVELOPE_BYTES,
            max_payload_bytes: MAX_PAYLOAD_BYTES,
            max_depth: MAX_DEPTH,
            max_keyid_len: MAX_KEYID_LEN,
            min_nonce_bytes: *NONCE_BYTES.start(),
            max_nonce_bytes: *NONCE_BYTES.end(),
        },
        valid,
        invalid: inv.cases,
    })
}

#[derive(Debug, Serialize)]
struct CodesFile {
    description: &'static str,
    /// `DecisionReason::ALL`, in check order.
    decision_reasons: Vec<&'static str>,
    /// The reasons monitoring mode may let through.
    policy_reasons: Vec<&'static str>,
    /// `ProtocolErrorKind::ALL`.
    protocol_errors: Vec<&'static str>,
    /// `ErrorCode::ALL` with the HTTP status of each.
    http_errors: Vec<HttpError>,
}

#[derive(Debug, Serialize)]
struct HttpError {
    code: &'static str,
    status: u16,
}

fn codes_file() -> CodesFile {
    CodesFile {
        description: "Every stable code a server may send. `decision_reasons` is in check order (the first failing check names the reason; `allowed` when all pass); `policy_reasons` are the only ones an organization in monitor mode lets through; `protocol_errors` are the codes of signed-statement violations (the message of a 400 invalid_envelope starts with one); `http_errors` are the `error.code` values of error responses with their HTTP status.",
        decision_reasons: DecisionReason::ALL.iter().map(|r| r.as_str()).collect(),
        policy_reasons: DecisionReason::ALL
            .iter()
            .filter(|r| r.is_policy())
            .map(|r| r.as_str())
            .collect(),
        protocol_errors: ProtocolErrorKind::ALL.iter().map(|k| k.code()).collect(),
        http_errors: ErrorCode::ALL
            .iter()
            .map(|c| HttpError {
                code: c.as_str(),
                status: c.http_status(),
            })
            .collect(),
    }
}
