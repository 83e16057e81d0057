"""secure(), decisions, tokens, rotation and errors against a real server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentid
from agentid import protocol

from conftest import App


def test_the_installed_wheel_is_under_test() -> None:
    # Not the source tree: what users install (scripts/test installs the wheel).
    assert "site-packages" in Path(agentid.__file__).parts
    native = Path(agentid._native.__file__).name
    assert native.startswith("_native.") and native.endswith((".so", ".pyd"))
    assert ".abi3." in native or native.endswith(".pyd")


def test_version_comes_from_cargo() -> None:
    cargo = (Path(__file__).resolve().parents[2] / "Cargo.toml").read_text()
    assert f'version = "{agentid.__version__}"' in cargo


def test_secure_first_and_second_run_are_the_same_agent(app: App, agent_name: str) -> None:
    key_dir = app.key_dir()
    first = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir)
    key_file = key_dir / f"{agent_name}.key"
    assert key_file.is_file()
    if os.name == "posix":
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert first.name == agent_name
    assert first.did.startswith("did:key:z6Mk")
    assert first.key_id == protocol.key_id(first.public_key)
    assert first.did == protocol.did_key(first.public_key)
    assert first.audience == app.server.public_url
    assert first.url == app.url
    key_text = key_file.read_bytes()

    # A second run (same name, same key file) is the same agent, not a new one.
    second = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir)
    assert (second.id, second.key_id) == (first.id, first.key_id)
    assert key_file.read_bytes() == key_text  # the key file is reused, never rewritten


def test_secure_reads_the_environment(
    app: App, agent_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_dir = app.key_dir()
    monkeypatch.setenv("AGENTID_URL", app.url)
    monkeypatch.setenv("AGENTID_API_KEY", app.api_key)
    monkeypatch.setenv("AGENTID_KEY_DIR", str(key_dir))
    agent = agentid.secure(agent_name, capabilities=["email:send"], description="from env")
    assert (key_dir / f"{agent_name}.key").is_file()
    record = app.server.request("GET", f"/api/v1/agents/{agent.id}", token=app.api_key)
    assert record["requested_capabilities"] == ["email:send"]
    assert record["description"] == "from env"
    assert record["status"] == "active"


def test_secure_without_a_url_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(agentid.ConfigurationError) as raised:
        agentid.secure("nobody", api_key="aid_x", key_dir=tmp_path / "keys")
    assert "AGENTID_URL" in raised.value.message
    assert raised.value.kind == "config"


def test_a_passphrase_encrypts_the_key_file(app: App, agent_name: str) -> None:
    key_dir = app.key_dir()
    agent = agentid.secure(
        agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir, passphrase="s3cret pass"
    )
    text = (key_dir / f"{agent_name}.key").read_text()
    assert "argon2id-xchacha20poly1305" in text
    again = agentid.secure(
        agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir, passphrase="s3cret pass"
    )
    assert again.id == agent.id
    with pytest.raises(agentid.KeyStoreError):
        agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir)


def test_the_same_name_with_another_key_is_a_key_conflict(app: App, agent_name: str) -> None:
    agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    with pytest.raises(agentid.KeyConflictError) as raised:
        agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    assert raised.value.kind == "key_conflict"


def test_allowed_action(app: App, agent_name: str) -> None:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    app.grant(agent.id, "email:send", "*@example.com")
    decision = agent.verify("email:send", "bob@example.com", {"subject": "Report", "n": 1})
    assert decision.allowed is True
    assert decision.reason == "allowed"
    assert decision.capability == "email:send"
    assert decision.resource == "bob@example.com"
    assert decision.agent_id == agent.id
    assert decision.enforcement == "enforce"
    assert isinstance(decision.trust_score, float)
    assert decision.trust_alert is False
    assert decision.decision_id and decision.receipt.count(".") == 2
    assert decision.audit_seq > 0
    assert decision.decided_at
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


def test_denied_actions_are_decisions_not_errors(app: App, agent_name: str) -> None:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    app.grant(agent.id, "email:send", "*@example.com")
    not_granted = agent.verify("files:delete", "/etc/passwd")
    assert (not_granted.allowed, not_granted.reason) == (False, "capability_not_granted")
    out_of_scope = agent.verify("email:send", "eve@evil.test")
    assert (out_of_scope.allowed, out_of_scope.reason) == (False, "resource_not_in_scope")
    assert not_granted.reason in protocol.DECISION_REASONS
    assert not_granted.message


def test_bad_input_is_refused_before_anything_is_sent(app: App, agent_name: str) -> None:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    with pytest.raises(agentid.InvalidInputError) as raised:
        agent.verify("Send Email")
    assert isinstance(raised.value, ValueError)
    with pytest.raises(agentid.InvalidInputError):
        agent.verify("email:send", args={"when": object()})
    with pytest.raises(agentid.InvalidInputError):
        agent.verify("email:send", args={"x": float("nan")})


def test_server_errors_carry_code_message_and_request_id(app: App, agent_name: str) -> None:
    with pytest.raises(agentid.AuthenticationError) as raised:
        agentid.secure(agent_name, url=app.url, api_key="aid_wrong", key_dir=app.key_dir())
    error = raised.value
    assert isinstance(error, agentid.ApiError)
    assert error.status == 401
    assert error.code in protocol.ERROR_CODES
    assert error.request_id
    assert error.request_id in str(error)
    assert error.kind == "api"

    # A key without agents:write may not register agents.
    reader = app.server.request(
        "POST",
        "/api/v1/api-keys",
        {"name": "reader", "permissions": ["agents:read"]},
        app.api_key,
    )["key"]
    with pytest.raises(agentid.PermissionDeniedError) as denied:
        agentid.secure(agent_name, url=app.url, api_key=reader, key_dir=app.key_dir())
    assert (denied.value.status, denied.value.code) == (403, "forbidden")
    assert "agents:write" in denied.value.message

    rp = agentid.RelyingParty(app.url, issuer=app.server.public_url)
    with pytest.raises(agentid.InvalidRequestError) as invalid:
        rp.decide("{}")
    assert (invalid.value.status, invalid.value.code) == (400, "invalid_envelope")

    envelope, _ = protocol.sign_action_envelope(
        bytes(range(32)),
        agent_id="00000000-0000-4000-8000-000000000000",
        audience=app.server.public_url,
        action="files:read",
        iat=int(time.time()),
        nonce="lBY_d6GtOS03jLPGu-i3nA",
    )
    with pytest.raises(agentid.NotFoundError) as missing:
        rp.decide(envelope)
    assert (missing.value.status, missing.value.code) == (404, "not_found")


def test_token_is_bound_to_the_agent_and_its_key(app: App, agent_name: str) -> None:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    token = agent.token()
    assert agent.token() == token  # cached while fresh
    claims = agent.relying_party().verify_agent_token(token)
    assert claims["sub"] == agent.id
    assert claims["cnf"]["jkt"] == agent.key_id
    assert claims["did"] == agent.did
    assert claims["iss"] == app.server.public_url


def test_rotation_replaces_the_key_and_retires_the_old_one(app: App, agent_name: str) -> None:
    key_dir = app.key_dir()
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir)
    app.grant(agent.id, "files:read")
    old_key, old_did = agent.key_id, agent.did
    signed_before = agent.sign_action("files:read", "/srv/a.txt")

    new_key = agent.rotate_key()
    assert new_key != old_key
    assert agent.key_id == new_key
    assert agent.did != old_did
    assert agent.verify("files:read", "/srv/a.txt").allowed

    # The old key's statements are now refused as retired.
    rp = agent.relying_party()
    assert rp.decide(signed_before.envelope).reason == "key_retired"
    # The new token is bound to the new key.
    assert rp.verify_agent_token(agent.token())["cnf"]["jkt"] == new_key
    # The key file holds the new key: the next start is the same agent.
    again = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=key_dir)
    assert (again.id, again.key_id) == (agent.id, new_key)
    keys = app.server.request("GET", f"/api/v1/agents/{agent.id}/keys", token=app.api_key)
    assert {k["key_id"]: k["status"] for k in keys} == {old_key: "retired", new_key: "active"}


def test_offline_verification_of_tokens_envelopes_and_receipts(app: App, agent_name: str) -> None:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    app.grant(agent.id, "email:send")
    rp = agent.relying_party()
    assert rp.issuer == app.server.public_url

    # The agent hands a relying party an envelope, its token and its public key.
    signed = agent.sign_action("email:send", "bob@example.com", {"to": "bob@example.com"})
    action, claims = rp.verify_action_with_token(signed.envelope, agent.token(), agent.public_key)
    assert (action.agent_id, action.action, action.resource) == (
        agent.id,
        "email:send",
        "bob@example.com",
    )
    assert action.args_digest == protocol.args_digest({"to": "bob@example.com"})
    assert action.digest == signed.digest
    assert action.key_id == agent.key_id
    assert claims["sub"] == agent.id

    # Fully offline, with the agent's public key only.
    offline = agentid.verify_action_envelope(signed.envelope, agent.public_key, agent.audience)
    assert offline == action
    with pytest.raises(agentid.VerificationError):
        agentid.verify_action_envelope(signed.envelope, agent.public_key, "https://elsewhere")
    stranger = protocol.public_key_from_seed(bytes(32))
    with pytest.raises(agentid.VerificationError):
        agentid.verify_action_envelope(signed.envelope, stranger, agent.audience)

    # The server decides once; its receipt names this very envelope.
    decision = rp.decide(signed.envelope)
    assert decision.allowed
    receipt = rp.verify_receipt(decision.receipt, signed.envelope)
    assert receipt["jti"] == decision.decision_id
    assert receipt["envelope_sha256"] == signed.digest
    assert receipt["allowed"] is True
    other = agent.sign_action("email:send", "bob@example.com")
    with pytest.raises(agentid.VerificationError):
        rp.verify_receipt(decision.receipt, other.envelope)
    # The same envelope again is a replay.
    assert rp.decide(signed.envelope).reason == "replayed_nonce"

    # With a saved key set, no network at all.
    jwks = rp.jwks()
    assert jwks["keys"]
    issuer = app.server.public_url
    assert agentid.verify_receipt_with(jwks, issuer, decision.receipt, signed.envelope)["allowed"]
    assert agentid.verify_agent_token_with(jwks, issuer, agent.token())["sub"] == agent.id
    with pytest.raises(agentid.VerificationError):
        agentid.verify_agent_token_with(jwks, "https://elsewhere", agent.token())
    with pytest.raises(agentid.VerificationError):
        agentid.verify_receipt_with(jwks, issuer, decision.receipt[:-4] + "AAAA")
    # A receipt is not an agent token.
    with pytest.raises(agentid.VerificationError):
        agentid.verify_agent_token_with(jwks, issuer, decision.receipt)


def test_network_failure_is_an_error_never_an_allow(own_app: App, agent_name: str) -> None:
    agent = agentid.secure(
        agent_name, url=own_app.url, api_key=own_app.api_key, key_dir=own_app.key_dir(), retries=0
    )
    own_app.grant(agent.id, "files:read")
    assert agent.verify("files:read").allowed
    own_app.server.stop()
    with pytest.raises(agentid.NetworkError) as raised:
        agent.verify("files:read")
    assert raised.value.kind == "transport"
    assert raised.value.code is None


def test_the_package_imports_on_its_own() -> None:
    # A fresh interpreter: no test fixture has imported anything first.
    code = "import agentid, agentid.protocol, agentid.exceptions; print(agentid.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == agentid.__version__
