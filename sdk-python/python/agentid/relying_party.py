"""Checks for relying parties (a tool server, an MCP server, a gateway) that hold
no agent key: agent tokens and decision receipts verified with the server's JWKS,
and agents' action envelopes verified offline.

Every check is the Rust SDK's (``docs/tokens.md``): ``alg`` exactly ``EdDSA``, the
expected ``typ``, ``kid`` from the server's key set (never a key named inside the
token), issuer, audience and times with 30 s of leeway, strict Ed25519. Offline
checks cannot detect replays; :meth:`RelyingParty.decide` asks the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from . import _native
from ._agent import Decision

__all__ = [
    "RelyingParty",
    "VerifiedAction",
    "verify_action_envelope",
    "verify_agent_token_with",
    "verify_receipt_with",
]

#: A JWK set: the JSON text of ``/.well-known/jwks.json`` or its parsed dict.
Jwks = Union[str, Mapping[str, Any]]


def _jwks_text(jwks: Jwks) -> str:
    return jwks if isinstance(jwks, str) else json.dumps(jwks)


@dataclass(frozen=True)
class VerifiedAction:
    """An action envelope whose signature, audience and freshness were checked.

    Attributes:
        agent_id: the agent that signed it.
        action: the capability it asks for.
        resource: what it acts on, if any.
        args_digest: the digest of its arguments, if any (``sha256:<hex>``).
        iat: when it was signed, unix seconds.
        nonce: its single-use nonce.
        audience: the server it is for.
        digest: the envelope digest (hex SHA-256 of the signed bytes).
        key_id: the id of the key that signed it.
    """

    agent_id: str
    action: str
    resource: Optional[str]
    args_digest: Optional[str]
    iat: int
    nonce: str
    audience: str
    digest: str
    key_id: str

    @classmethod
    def _from_native(cls, data: Mapping[str, Any]) -> VerifiedAction:
        payload = data["payload"]
        return cls(
            agent_id=payload["agent_id"],
            action=payload["action"],
            resource=payload.get("resource"),
            args_digest=payload.get("args_digest"),
            iat=payload["iat"],
            nonce=payload["nonce"],
            audience=payload["aud"],
            digest=data["digest"],
            key_id=data["key_id"],
        )


class RelyingParty:
    """Verifies what one agentid server signs, with its published keys.

    The key set (``/.well-known/jwks.json``) is fetched when first needed and
    cached for 300 s; a token naming an unknown key id refetches it at most once
    a minute. Safe to share between threads; calls that may fetch release the GIL.

    Args:
        url: the server.
        issuer: the server's public URL (``AGENTID_PUBLIC_URL``) when it differs
            from ``url``; tokens and receipts must name it as ``iss``.
        timeout: seconds each HTTP request may take (default 30).
        retries: retries of transient failures (default 3; 0 disables).
    """

    __slots__ = ("_native",)

    def __init__(
        self,
        url: str,
        *,
        issuer: Optional[str] = None,
        timeout: Optional[float] = None,
        retries: Optional[int] = None,
    ) -> None:
        self._native = _native.RelyingParty(url, issuer=issuer, timeout=timeout, retries=retries)

    @property
    def issuer(self) -> str:
        """The issuer tokens and receipts must name."""
        return self._native.issuer

    def jwks(self) -> Dict[str, Any]:
        """The server's key set (fetched or cached); save it for fully offline checks
        with :func:`verify_agent_token_with` and :func:`verify_receipt_with`."""
        parsed: Dict[str, Any] = json.loads(self._native.jwks())
        return parsed

    def verify_agent_token(self, token: str) -> Dict[str, Any]:
        """Verifies an agent access token and returns its claims (``sub`` is the
        agent id, ``cnf.jkt`` the key it is bound to). Accept it as proof only
        together with a signature by that key (:meth:`verify_action_with_token`).

        Raises:
            VerificationError: the token does not verify.
        """
        claims: Dict[str, Any] = self._native.verify_agent_token(token)
        return claims

    def verify_receipt(self, receipt: str, envelope: Optional[str] = None) -> Dict[str, Any]:
        """Verifies a decision receipt and returns its claims; given the envelope's
        JSON text, also that the receipt is about that envelope. Check ``allowed``,
        ``capability`` and ``resource`` before acting on it.

        Raises:
            VerificationError: the receipt does not verify or is about another envelope.
        """
        claims: Dict[str, Any] = self._native.verify_receipt(receipt, envelope)
        return claims

    def verify_action_with_token(
        self, envelope: str, token: str, public_key: str
    ) -> Tuple[VerifiedAction, Dict[str, Any]]:
        """Verifies offline an action envelope from the holder of an agent token:
        the token, that ``public_key`` is the key it is bound to, the envelope's
        signature by that key, its agent, audience and freshness (300 s). Replays
        are not detected offline.

        Returns:
            The verified action and the token's claims.
        """
        action, claims = self._native.verify_action_with_token(envelope, token, public_key)
        return VerifiedAction._from_native(action), claims

    def decide(self, envelope: str) -> Decision:
        """Forwards an agent's action envelope to the server and returns its decision
        (the nonce is consumed; the decision is audited). A denial is a decision."""
        return Decision.from_dict(self._native.decide(envelope))

    def __repr__(self) -> str:
        return f"<agentid.RelyingParty issuer={self.issuer!r}>"


def verify_action_envelope(
    envelope: str,
    public_key: str,
    audience: str,
    *,
    now: Optional[int] = None,
    max_age: float = 300.0,
) -> VerifiedAction:
    """Verifies an action envelope offline with the agent's public key (base64url):
    strict parsing, payload rules, strict Ed25519 signature, ``aud`` equal to
    ``audience``, ``iat`` within ``[now - max_age, now + 30]``. No network.

    Raises:
        VerificationError: the envelope is refused.
    """
    data = _native.verify_action_envelope(envelope, public_key, audience, now=now, max_age=max_age)
    return VerifiedAction._from_native(data)


def verify_agent_token_with(
    jwks: Jwks, issuer: str, token: str, *, now: Optional[int] = None
) -> Dict[str, Any]:
    """Verifies an agent token with a key set you hold (no network); returns its claims."""
    claims: Dict[str, Any] = _native.verify_agent_token_with(
        _jwks_text(jwks), issuer, token, now=now
    )
    return claims


def verify_receipt_with(
    jwks: Jwks,
    issuer: str,
    receipt: str,
    envelope: Optional[str] = None,
    *,
    now: Optional[int] = None,
) -> Dict[str, Any]:
    """Verifies a decision receipt with a key set you hold (no network), and given
    the envelope's JSON text, that it is about that envelope; returns its claims."""
    claims: Dict[str, Any] = _native.verify_receipt_with(
        _jwks_text(jwks), issuer, receipt, envelope, now=now
    )
    return claims
