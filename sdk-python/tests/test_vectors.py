"""The protocol's test vectors (protocol/test-vectors/*.json) through the package."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict

import pytest

import agentid
from agentid import protocol

from conftest import VECTORS


def load(name: str) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_valid_keys_derive_the_vectors_ids_and_dids() -> None:
    valid = load("keys.json")["valid"]
    assert valid
    for v in valid:
        public_key = protocol.public_key_from_seed(bytes.fromhex(v["seed_hex"]))
        assert public_key == v["public_key"], v["name"]
        assert b64url_decode(public_key).hex() == v["public_key_hex"], v["name"]
        assert protocol.key_id(public_key) == v["thumbprint"], v["name"]
        assert protocol.did_key(public_key) == v["did_key"], v["name"]


def test_invalid_keys_are_refused_with_their_code() -> None:
    invalid = load("keys.json")["invalid"]
    assert len(invalid) == 57
    for v in invalid:
        with pytest.raises(agentid.ProtocolViolation) as raised:
            protocol.key_id(v["public_key"])
        assert (raised.value.stage, raised.value.code) == ("key", v["error"]), v["name"]


def test_pae_bytes() -> None:
    cases = load("pae.json")["cases"]
    assert cases
    for case in cases:
        payload = b64url_decode(case["payload"])
        assert protocol.pae(case["payload_type"], payload).hex() == case["pae_hex"], case["name"]


def test_valid_envelopes_verify_and_are_signed_byte_for_byte() -> None:
    vectors = load("envelopes.json")
    signed_again = 0
    for v in vectors["valid"]:
        keys = [s["public_key"] for s in v["signers"]]
        digest = protocol.check_envelope(v["envelope"], v["payload_type"], keys)
        assert digest == v["digest"], v["name"]
        payload = v["payload_utf8"].encode()
        assert protocol.pae(v["payload_type"], payload) == b64url_decode(v["signed_bytes"])
        fields = json.loads(payload)
        compact = json.dumps(fields, separators=(",", ":"), ensure_ascii=False) == v["payload_utf8"]
        if v["payload_type"] == protocol.ACTION and compact:
            envelope, digest = protocol.sign_action_envelope(
                bytes.fromhex(v["signers"][0]["seed_hex"]),
                agent_id=fields["agent_id"],
                audience=fields["aud"],
                action=fields["action"],
                iat=fields["iat"],
                nonce=fields["nonce"],
                resource=fields.get("resource"),
                args_digest=fields.get("args_digest"),
            )
            # One vector pads the envelope text with trailing spaces up to the size
            # limit; the package never writes padding.
            assert (envelope, digest) == (v["envelope"].rstrip(" "), v["digest"]), v["name"]
            signed_again += 1
        if v["payload_type"] == protocol.ACTION:
            # The relying-party check accepts it too (at the vectors' time).
            action = agentid.verify_action_envelope(
                v["envelope"], keys[0], vectors["audience"], now=vectors["iat"]
            )
            assert action.digest == v["digest"]
    assert signed_again >= 2


def test_invalid_envelopes_are_refused_at_their_stage_with_their_code() -> None:
    vectors = load("envelopes.json")
    invalid = vectors["invalid"]
    assert len(invalid) == 63
    agent_key = vectors["valid"][0]["signers"][0]["public_key"]
    for v in invalid:
        with pytest.raises(agentid.ProtocolViolation) as raised:
            protocol.check_envelope(v["envelope"], v["operation"], v.get("verify_with") or [])
        assert (raised.value.stage, raised.value.code) == (v["stage"], v["error"]), v["name"]
        if v["operation"] == protocol.ACTION:
            # The offline relying-party check refuses every one of them as well.
            with pytest.raises(agentid.VerificationError):
                agentid.verify_action_envelope(
                    v["envelope"],
                    (v.get("verify_with") or [agent_key])[0],
                    vectors["audience"],
                    now=vectors["iat"],
                )


def test_the_package_knows_every_code() -> None:
    reasons = load("decision-reasons.json")
    assert list(protocol.DECISION_REASONS) == reasons["decision_reasons"]
    assert list(protocol.POLICY_REASONS) == reasons["policy_reasons"]
    assert list(protocol.PROTOCOL_ERRORS) == reasons["protocol_errors"]
    assert protocol.ERROR_CODES == {e["code"]: e["status"] for e in reasons["http_errors"]}


def test_args_digest_matches_the_protocol_example() -> None:
    # docs/protocol.md: the example digest is of the arguments' literal text,
    # which is already canonical (members sorted).
    args = {"subject": "Quarterly report", "to": "bob@example.com"}
    assert protocol.canonical_json(args) == '{"subject":"Quarterly report","to":"bob@example.com"}'
    assert protocol.args_digest({"to": "bob@example.com", "subject": "Quarterly report"}) == (
        protocol.args_digest(args)
    )
