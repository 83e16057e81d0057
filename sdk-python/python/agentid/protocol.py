"""The agentid protocol's building blocks (``docs/protocol.md``), from the same
Rust code the server runs: key ids and ``did:key``, the DSSE pre-authentication
encoding, envelope checks in a receiver's order, the arguments digest, and every
stable code a server may send.

Agents do not need this module (:class:`agentid.Agent` signs and verifies);
it is for relying parties, interoperability tests and the protocol's test vectors.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Optional, Tuple

from . import _native

__all__ = [
    "ACTION",
    "CHALLENGE_RESPONSE",
    "KEY_ROTATION",
    "DECISION_REASONS",
    "POLICY_REASONS",
    "PROTOCOL_ERRORS",
    "ERROR_CODES",
    "pae",
    "key_id",
    "did_key",
    "public_key_from_seed",
    "check_envelope",
    "canonical_json",
    "args_digest",
    "sign_action_envelope",
]

#: Payload type of an action envelope.
ACTION = "application/vnd.agentid.action+json"
#: Payload type of a proof-of-possession answer.
CHALLENGE_RESPONSE = "application/vnd.agentid.challenge-response+json"
#: Payload type of a key rotation (signed by the current and the new key).
KEY_ROTATION = "application/vnd.agentid.key-rotation+json"

#: Every decision reason, in check order (``"allowed"`` first).
DECISION_REASONS: Tuple[str, ...] = tuple(_native.decision_reasons())
#: The reasons an organization in monitor mode lets through.
POLICY_REASONS: Tuple[str, ...] = tuple(_native.policy_reasons())
#: Every protocol error code (signed-statement violations).
PROTOCOL_ERRORS: Tuple[str, ...] = tuple(_native.protocol_errors())
#: Every HTTP error code with its status, e.g. ``ERROR_CODES["forbidden"] == 403``.
ERROR_CODES: Dict[str, int] = dict(_native.error_codes())


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 <len> <type> <len> <payload>``: the bytes every signature covers."""
    return _native.pae(payload_type, payload)


def key_id(public_key: str) -> str:
    """The key id (RFC 7638 JWK thumbprint) of a public key (base64url).

    Raises:
        ProtocolViolation: the key breaks a key rule (``invalid_public_key``,
            ``weak_public_key``; stage ``"key"``).
    """
    return _native.public_key_info(public_key)[0]


def did_key(public_key: str) -> str:
    """The ``did:key`` of a public key (base64url); raises like :func:`key_id`."""
    return _native.public_key_info(public_key)[1]


def public_key_from_seed(seed: bytes) -> str:
    """The public key (base64url) of a 32-byte Ed25519 seed (RFC 8032)."""
    return _native.public_key_from_seed(seed)


def check_envelope(envelope: str, operation: str, verify_with: Iterable[str] = ()) -> str:
    """Receives ``envelope`` as an operation taking payload type ``operation``
    would: parse (size, nesting, strict JSON, encodings), then the payload's rules,
    then the signature by each public key of ``verify_with``.

    Returns:
        The envelope digest (hex SHA-256 of the signed bytes).

    Raises:
        ProtocolViolation: with ``stage`` (``"parse"``, ``"payload"``, ``"key"``,
            ``"verify"``) and ``code`` of the first failure.
    """
    return _native.check_envelope(envelope, operation, list(verify_with))


def canonical_json(args: Any) -> str:
    """The canonical JSON text of arguments (compact, members sorted by name)."""
    return _native.canonical_json(json.dumps(args, allow_nan=False))


def args_digest(args: Any) -> str:
    """``sha256:`` + hex SHA-256 of :func:`canonical_json`: the ``args_digest``
    :meth:`agentid.Agent.verify` signs for ``args``."""
    return _native.args_digest(json.dumps(args, allow_nan=False))


def sign_action_envelope(
    seed: bytes,
    *,
    agent_id: str,
    audience: str,
    action: str,
    iat: int,
    nonce: str,
    resource: Optional[str] = None,
    args_digest: Optional[str] = None,
) -> Tuple[str, str]:
    """Signs an action envelope with every member given (deterministic): returns
    (envelope JSON text, digest). For test vectors and interoperability tests;
    agents use :meth:`agentid.Agent.sign_action`, whose key never leaves the key
    store."""
    return _native.sign_action_envelope(
        seed,
        agent_id=agent_id,
        audience=audience,
        action=action,
        iat=iat,
        nonce=nonce,
        resource=resource,
        args_digest=args_digest,
    )
