//! The committed test vectors in `protocol/test-vectors/` are exactly what the
//! generator writes, and every vector holds when checked through the crate's public
//! API the way a client would use it. The checks are written against the JSON files,
//! not against the generator's data, and are themselves shown to fail on a changed
//! vector.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use agentid_protocol::envelope::{pae, ParsedEnvelope, PayloadType};
use agentid_protocol::keys::jwk_thumbprint;
use agentid_protocol::payload::{ActionPayload, ChallengeResponsePayload, KeyRotationPayload};
use agentid_protocol::{b64, DecisionReason, ErrorCode, ProtocolErrorKind, PublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

#[path = "../examples/generate_vectors.rs"]
#[expect(dead_code, reason = "the example's `main` is not called by the tests")]
mod generator;

const REGENERATE: &str = "run `cargo run -p agentid-protocol --example generate_vectors` and commit protocol/test-vectors/";

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors")
}

fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(vectors_dir().join(name))
        .unwrap_or_else(|e| panic!("read test-vectors/{name}: {e}; {REGENERATE}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("test-vectors/{name}: {e}"))
}

type Check = Result<(), String>;

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Check {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

fn str_of<'a>(v: &'a Value, member: &str) -> Result<&'a str, String> {
    v[member]
        .as_str()
        .ok_or_else(|| format!("`{member}` is not a string in {v}"))
}

fn array_of<'a>(v: &'a Value, member: &str) -> Result<&'a Vec<Value>, String> {
    v[member]
        .as_array()
        .ok_or_else(|| format!("`{member}` is not an array"))
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text).map_err(|e| format!("{text}: {e}"))
}

fn unb64(text: &str) -> Result<Vec<u8>, String> {
    b64::decode(text).ok_or_else(|| format!("{text}: not base64url"))
}

fn signing_key(seed_hex: &str) -> Result<SigningKey, String> {
    let seed: [u8; 32] = unhex(seed_hex)?
        .try_into()
        .map_err(|_| format!("{seed_hex}: a seed is 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The PAE built by hand, as another language would.
fn pae_by_hand(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

fn check_keys(file: &Value) -> Check {
    for v in array_of(file, "valid")? {
        let name = str_of(v, "name")?;
        let signing = signing_key(str_of(v, "seed_hex")?)?;
        let raw = signing.verifying_key().to_bytes();
        ensure(hex::encode(raw) == str_of(v, "public_key_hex")?, || {
            format!("{name}: public_key_hex")
        })?;
        let x = str_of(v, "public_key")?;
        ensure(b64::encode(raw) == x, || format!("{name}: public_key"))?;
        let key = PublicKey::from_b64url(x).map_err(|e| format!("{name}: {e}"))?;
        let input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        ensure(input == str_of(v, "thumbprint_input")?, || {
            format!("{name}: thumbprint_input")
        })?;
        let thumbprint = str_of(v, "thumbprint")?;
        ensure(
            b64::encode(Sha256::digest(input.as_bytes())) == thumbprint,
            || format!("{name}: thumbprint is not SHA-256 of thumbprint_input"),
        )?;
        ensure(
            key.thumbprint() == thumbprint && jwk_thumbprint(x) == thumbprint,
            || format!("{name}: the crate computes another thumbprint"),
        )?;
        let did = str_of(v, "did_key")?;
        ensure(key.did_key() == did, || format!("{name}: did_key"))?;
        let multibase = did
            .strip_prefix("did:key:z")
            .ok_or_else(|| format!("{name}: did_key prefix"))?;
        let decoded = bs58::decode(multibase)
            .into_vec()
            .map_err(|e| format!("{name}: {e}"))?;
        ensure(decoded == [&[0xed, 0x01][..], &raw[..]].concat(), || {
            format!("{name}: did_key is not base58btc(0xed 0x01 || key)")
        })?;
    }
    for v in array_of(file, "invalid")? {
        let name = str_of(v, "name")?;
        let expected = str_of(v, "error")?;
        let text = str_of(v, "public_key")?;
        let got = PublicKey::from_b64url(text)
            .map(|_| ())
            .map_err(|e| e.code());
        ensure(got == Err(expected), || {
            format!("{name}: expected {expected}, got {got:?}")
        })?;
        match (v.get("public_key_hex"), b64::decode(text)) {
            (Some(hex_text), Some(bytes)) => {
                let hex_text = hex_text.as_str().unwrap_or_default();
                ensure(hex::encode(&bytes) == hex_text, || {
                    format!("{name}: public_key_hex")
                })?;
                let got = PublicKey::from_bytes(&bytes)
                    .map(|_| ())
                    .map_err(|e| e.code());
                ensure(got == Err(expected), || {
                    format!("{name}: from_bytes gives {got:?}")
                })?;
            }
            (None, None) => {}
            _ => {
                return Err(format!(
                    "{name}: public_key_hex present iff the text decodes"
                ))
            }
        }
    }
    Ok(())
}

fn check_pae(file: &Value) -> Check {
    for v in array_of(file, "cases")? {
        let name = str_of(v, "name")?;
        let payload_type = str_of(v, "payload_type")?;
        let payload = unb64(str_of(v, "payload")?)?;
        let expected = unhex(str_of(v, "pae_hex")?)?;
        ensure(pae(payload_type, &payload) == expected, || {
            format!("{name}: the crate's PAE differs")
        })?;
        ensure(pae_by_hand(payload_type, &payload) == expected, || {
            format!("{name}: pae_hex is not DSSEv1 SP len SP type SP len SP body")
        })?;
    }
    Ok(())
}

/// Where a receiver taking `operation` first refuses the envelope: `parse`,
/// `payload` or `verify`, with the protocol error code.
fn receive(operation: &str, text: &str, keys: &[&str]) -> Result<(), (&'static str, String)> {
    let operation = PayloadType::parse(operation).ok_or(("operation", operation.to_owned()))?;
    let parsed =
        ParsedEnvelope::parse(text.as_bytes()).map_err(|e| ("parse", e.code().to_owned()))?;
    let payload = parsed
        .expect_type(operation)
        .and_then(|()| match operation {
            PayloadType::Action => ActionPayload::parse(&parsed.payload).map(drop),
            PayloadType::ChallengeResponse => {
                ChallengeResponsePayload::parse(&parsed.payload).map(drop)
            }
            PayloadType::KeyRotation => KeyRotationPayload::parse(&parsed.payload).map(drop),
        });
    payload.map_err(|e| ("payload", e.code().to_owned()))?;
    for key in keys {
        let key = PublicKey::from_b64url(key).map_err(|e| ("key", e.code().to_owned()))?;
        parsed
            .verify(&key)
            .map_err(|e| ("verify", e.code().to_owned()))?;
    }
    Ok(())
}

fn check_valid_envelope(v: &Value) -> Check {
    let name = str_of(v, "name")?;
    let payload_type = str_of(v, "payload_type")?;
    let payload = str_of(v, "payload_utf8")?.as_bytes().to_vec();
    ensure(b64::encode(&payload) == str_of(v, "payload")?, || {
        format!("{name}: payload is not base64url(payload_utf8)")
    })?;
    let signed = unb64(str_of(v, "signed_bytes")?)?;
    ensure(
        signed == pae(payload_type, &payload) && signed == pae_by_hand(payload_type, &payload),
        || format!("{name}: signed_bytes is not the PAE"),
    )?;
    let signers = array_of(v, "signers")?;
    let signatures = array_of(v, "signatures")?;
    ensure(signers.len() == signatures.len(), || {
        format!("{name}: one signature per signer")
    })?;
    let mut publics = Vec::new();
    for (signer, signature) in signers.iter().zip(signatures) {
        let signing = signing_key(str_of(signer, "seed_hex")?)?;
        let public = b64::encode(signing.verifying_key().as_bytes());
        ensure(public == str_of(signer, "public_key")?, || {
            format!("{name}: signer public_key")
        })?;
        let keyid = str_of(signature, "keyid")?;
        ensure(
            jwk_thumbprint(&public) == keyid && str_of(signer, "keyid")? == keyid,
            || format!("{name}: keyid is not the signer's thumbprint"),
        )?;
        let sig = str_of(signature, "sig")?;
        // Ed25519 is deterministic: signing again gives the same bytes.
        ensure(b64::encode(signing.sign(&signed).to_bytes()) == sig, || {
            format!("{name}: sig is not the signer's signature over signed_bytes")
        })?;
        let raw: [u8; 64] = unb64(sig)?
            .try_into()
            .map_err(|_| format!("{name}: sig is 64 bytes"))?;
        VerifyingKey::from_bytes(signing.verifying_key().as_bytes())
            .and_then(|k| k.verify_strict(&signed, &ed25519_dalek::Signature::from_bytes(&raw)))
            .map_err(|e| format!("{name}: verify_strict: {e}"))?;
        publics.push(public);
    }
    let text = str_of(v, "envelope")?;
    let json: Value = serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    ensure(
        json["payloadType"] == payload_type && json["payload"] == v["payload"],
        || format!("{name}: the envelope's members differ from the vector's"),
    )?;
    ensure(json["signatures"] == v["signatures"], || {
        format!("{name}: the envelope's signatures differ from the vector's")
    })?;
    let parsed = ParsedEnvelope::parse(text.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
    ensure(
        parsed.payload_type.as_str() == payload_type && parsed.payload == payload,
        || format!("{name}: parsed type or payload"),
    )?;
    let keys: Vec<&str> = publics.iter().map(String::as_str).collect();
    receive(payload_type, text, &keys).map_err(|e| format!("{name}: refused at {e:?}"))?;
    let digest = str_of(v, "digest")?;
    ensure(
        parsed.digest() == digest && hex::encode(Sha256::digest(&signed)) == digest,
        || format!("{name}: digest is not SHA-256 of the signed bytes"),
    )?;
    Ok(())
}

fn check_envelopes(file: &Value) -> Check {
    for v in array_of(file, "valid")? {
        check_valid_envelope(v)?;
    }
    for v in array_of(file, "invalid")? {
        let name = str_of(v, "name")?;
        let keys: Vec<&str> = match v.get("verify_with") {
            Some(keys) => keys
                .as_array()
                .ok_or_else(|| format!("{name}: verify_with"))?
                .iter()
                .map(|k| k.as_str().unwrap_or_default())
                .collect(),
            None => Vec::new(),
        };
        let stage = str_of(v, "stage")?;
        let error = str_of(v, "error")?;
        ensure(ProtocolErrorKind::from_code(error).is_some(), || {
            format!("{name}: {error} is not a protocol error code")
        })?;
        ensure(stage != "verify" || !keys.is_empty(), || {
            format!("{name}: a verify-stage vector names its keys")
        })?;
        let got = receive(str_of(v, "operation")?, str_of(v, "envelope")?, &keys);
        ensure(got == Err((stage, error.to_owned())), || {
            format!("{name}: expected {error} at {stage}, got {got:?}")
        })?;
    }
    Ok(())
}

fn check_codes(file: &Value) -> Check {
    let strings = |member: &str| -> Result<Vec<String>, String> {
        Ok(array_of(file, member)?
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect())
    };
    let reasons: Vec<&str> = DecisionReason::ALL.iter().map(|r| r.as_str()).collect();
    ensure(strings("decision_reasons")? == reasons, || {
        "decision_reasons is not DecisionReason::ALL".to_owned()
    })?;
    let policy: Vec<&str> = DecisionReason::ALL
        .iter()
        .filter(|r| r.is_policy())
        .map(|r| r.as_str())
        .collect();
    ensure(strings("policy_reasons")? == policy, || {
        "policy_reasons".to_owned()
    })?;
    let kinds: Vec<&str> = ProtocolErrorKind::ALL.iter().map(|k| k.code()).collect();
    ensure(strings("protocol_errors")? == kinds, || {
        "protocol_errors is not ProtocolErrorKind::ALL".to_owned()
    })?;
    let http = array_of(file, "http_errors")?;
    ensure(http.len() == ErrorCode::ALL.len(), || {
        "http_errors".to_owned()
    })?;
    for (v, code) in http.iter().zip(ErrorCode::ALL) {
        ensure(
            str_of(v, "code")? == code.as_str()
                && v["status"].as_u64() == Some(u64::from(code.http_status())),
            || format!("http_errors: {code}"),
        )?;
    }
    Ok(())
}

#[test]
fn committed_files_are_what_the_generator_writes() {
    let generated = generator::generate().expect("the generator agrees with the implementation");
    for (name, text) in &generated {
        let committed = std::fs::read_to_string(vectors_dir().join(name)).unwrap_or_default();
        if committed != *text {
            let line = committed
                .lines()
                .zip(text.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "the end".to_owned(), |i| format!("line {}", i + 1));
            panic!("protocol/test-vectors/{name} differs from the generator's output at {line}: {REGENERATE}");
        }
    }
    let expected: BTreeSet<String> = generated.iter().map(|(n, _)| (*n).to_owned()).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(vectors_dir())
        .expect("list test-vectors")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(on_disk, expected, "stray or missing files: {REGENERATE}");
}

#[test]
fn key_vectors_hold() {
    check_keys(&load("keys.json")).unwrap();
}

#[test]
fn pae_vectors_hold() {
    check_pae(&load("pae.json")).unwrap();
}

#[test]
fn envelope_vectors_hold() {
    check_envelopes(&load("envelopes.json")).unwrap();
}

#[test]
fn code_lists_are_complete() {
    check_codes(&load("decision-reasons.json")).unwrap();
    for kind in ProtocolErrorKind::ALL {
        assert_eq!(ProtocolErrorKind::from_code(kind.code()), Some(*kind));
    }
    for reason in DecisionReason::ALL {
        assert_eq!(
            serde_json::to_value(reason).unwrap(),
            Value::from(reason.as_str())
        );
    }
}

#[test]
fn the_weak_key_list_is_the_eight_torsion_points() {
    let keys = load("keys.json");
    let weak: BTreeSet<[u8; 32]> = keys["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["error"] == "weak_public_key")
        .map(|v| {
            unhex(v["public_key_hex"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert_eq!(weak.len(), 8, "eight distinct small-order points");
    for bytes in &weak {
        let point = VerifyingKey::from_bytes(bytes).expect("a curve point");
        assert!(point.is_weak(), "{}", hex::encode(bytes));
        assert_eq!(
            point.to_edwards().compress().to_bytes(),
            *bytes,
            "canonically encoded"
        );
    }
    // Every y >= p spelling, with either sign bit, is refused.
    let non_canonical = keys["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("y = p + "))
        .count();
    assert_eq!(non_canonical, 2 * 19);
}

#[test]
fn every_protocol_error_code_has_a_vector() {
    let mut seen = BTreeSet::new();
    for (file, list) in [("keys.json", "invalid"), ("envelopes.json", "invalid")] {
        for v in load(file)[list].as_array().unwrap() {
            seen.insert(v["error"].as_str().unwrap().to_owned());
        }
    }
    for kind in ProtocolErrorKind::ALL {
        assert!(seen.contains(kind.code()), "no vector for {}", kind.code());
    }
}

#[test]
fn every_valid_envelope_stops_verifying_when_a_byte_changes() {
    for v in load("envelopes.json")["valid"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let parsed = ParsedEnvelope::parse(v["envelope"].as_str().unwrap().as_bytes()).unwrap();
        let keys: Vec<PublicKey> = v["signers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| PublicKey::from_b64url(s["public_key"].as_str().unwrap()).unwrap())
            .collect();
        for key in &keys {
            parsed.verify(key).unwrap();
        }
        assert_eq!(keys.len(), parsed.signatures.len(), "{name}");
        for (signature, key) in keys.iter().enumerate() {
            for byte in [0, 17, 31, 32, 50, 63] {
                let mut changed = parsed.clone();
                changed.signatures[signature].sig[byte] ^= 0x01;
                let err = changed.verify(key).unwrap_err();
                assert!(
                    matches!(
                        err.kind,
                        ProtocolErrorKind::BadSignature | ProtocolErrorKind::NonCanonicalSignature
                    ),
                    "{name}: signature {signature} byte {byte}: {err}"
                );
            }
        }
        for byte in [0, parsed.payload.len() / 2, parsed.payload.len() - 1] {
            let mut changed = parsed.clone();
            changed.payload[byte] ^= 0x20;
            for key in &keys {
                assert_eq!(
                    changed.verify(key).unwrap_err().kind,
                    ProtocolErrorKind::BadSignature,
                    "{name}: payload byte {byte}"
                );
            }
        }
    }
}

/// Each check rejects a file with one vector changed, so a passing check means
/// something.
#[test]
fn the_checks_fail_on_a_changed_vector() {
    fn flip_last_char(text: &str) -> String {
        let mut s = text.to_owned();
        let last = s.pop().unwrap();
        s.push(if last == 'A' { 'B' } else { 'A' });
        s
    }

    let keys = load("keys.json");
    let mut changed = keys.clone();
    changed["valid"][1]["thumbprint"] = Value::from(flip_last_char(
        keys["valid"][1]["thumbprint"].as_str().unwrap(),
    ));
    assert!(check_keys(&changed).is_err());
    let mut changed = keys.clone();
    changed["invalid"][0]["error"] = Value::from("invalid_public_key");
    assert!(check_keys(&changed).is_err());

    let paes = load("pae.json");
    let mut changed = paes.clone();
    changed["cases"][0]["pae_hex"] = Value::from(flip_last_char(
        paes["cases"][0]["pae_hex"].as_str().unwrap(),
    ));
    assert!(check_pae(&changed).is_err());

    let envelopes = load("envelopes.json");
    // A flipped bit in a committed signature (in the envelope and the vector alike).
    let mut changed = envelopes.clone();
    let valid = &mut changed["valid"][1];
    let sig = valid["signatures"][0]["sig"].as_str().unwrap().to_owned();
    let mut raw = b64::decode(&sig).unwrap();
    raw[5] ^= 0x80;
    let bad = b64::encode(&raw);
    let text = valid["envelope"].as_str().unwrap().replace(&sig, &bad);
    valid["envelope"] = Value::from(text);
    valid["signatures"][0]["sig"] = Value::from(bad);
    assert!(check_envelopes(&changed).is_err());
    // A changed digest.
    let mut changed = envelopes.clone();
    changed["valid"][0]["digest"] = Value::from("00".repeat(32));
    assert!(check_envelopes(&changed).is_err());
    // An invalid vector expecting another code, or another stage.
    let mut changed = envelopes.clone();
    changed["invalid"][0]["error"] = Value::from("malformed_envelope");
    assert!(check_envelopes(&changed).is_err());
    let last = envelopes["invalid"].as_array().unwrap().len() - 1;
    let mut changed = envelopes.clone();
    changed["invalid"][last]["stage"] = Value::from("payload");
    assert!(check_envelopes(&changed).is_err());
    // A verify-stage failure claimed for the parse stage.
    let mut changed = envelopes.clone();
    let case = changed["invalid"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|v| v["name"] == "payload changed after signing")
        .unwrap();
    case["error"] = Value::from("bad_signature");
    case["stage"] = Value::from("parse");
    assert!(check_envelopes(&changed).is_err());

    let codes = load("decision-reasons.json");
    let mut changed = codes.clone();
    changed["decision_reasons"]
        .as_array_mut()
        .unwrap()
        .swap(1, 2);
    assert!(check_codes(&changed).is_err());
}
