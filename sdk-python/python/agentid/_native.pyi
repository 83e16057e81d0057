"""Type stubs of the native core (``sdk-python/src``), checked by mypy's stubtest."""

from typing import Any, Optional, final

__all__ = [
    "__version__",
    "Agent",
    "RelyingParty",
    "verify_action_envelope",
    "verify_agent_token_with",
    "verify_receipt_with",
    "pae",
    "public_key_info",
    "public_key_from_seed",
    "sign_action_envelope",
    "check_envelope",
    "canonical_json",
    "args_digest",
    "decision_reasons",
    "policy_reasons",
    "protocol_errors",
    "error_codes",
]

__version__: str

@final
class Agent:
    """An agent with its identity (see ``agentid.Agent``)."""

    @staticmethod
    def connect(
        name: str,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        capabilities: Optional[list[str]] = None,
        key_dir: Optional[str] = None,
        passphrase: Optional[str] = None,
        description: Optional[str] = None,
        timeout: Optional[float] = None,
        retries: Optional[int] = None,
    ) -> Agent: ...
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def did(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def url(self) -> str: ...
    def verify(
        self, action: str, resource: Optional[str] = None, args_json: Optional[str] = None
    ) -> dict[str, Any]: ...
    def sign_action(
        self, action: str, resource: Optional[str] = None, args_json: Optional[str] = None
    ) -> tuple[str, str]: ...
    def token(self) -> str: ...
    def rotate_key(self) -> str: ...

@final
class RelyingParty:
    """Verifies what one server signs (see ``agentid.RelyingParty``)."""

    def __new__(
        cls,
        url: str,
        *,
        issuer: Optional[str] = None,
        timeout: Optional[float] = None,
        retries: Optional[int] = None,
    ) -> RelyingParty: ...
    @property
    def issuer(self) -> str: ...
    def jwks(self) -> str: ...
    def verify_agent_token(self, token: str) -> dict[str, Any]: ...
    def verify_receipt(self, receipt: str, envelope: Optional[str] = None) -> dict[str, Any]: ...
    def verify_action_with_token(
        self, envelope: str, token: str, public_key: str
    ) -> tuple[dict[str, Any], dict[str, Any]]: ...
    def decide(self, envelope: str) -> dict[str, Any]: ...

def verify_action_envelope(
    envelope: str,
    public_key: str,
    audience: str,
    *,
    now: Optional[int] = None,
    max_age: float = 300.0,
) -> dict[str, Any]: ...
def verify_agent_token_with(
    jwks: str, issuer: str, token: str, *, now: Optional[int] = None
) -> dict[str, Any]: ...
def verify_receipt_with(
    jwks: str,
    issuer: str,
    receipt: str,
    envelope: Optional[str] = None,
    *,
    now: Optional[int] = None,
) -> dict[str, Any]: ...
def pae(payload_type: str, payload: bytes) -> bytes: ...
def public_key_info(public_key: str) -> tuple[str, str]: ...
def public_key_from_seed(seed: bytes) -> str: ...
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
) -> tuple[str, str]: ...
def check_envelope(envelope: str, operation: str, verify_with: list[str] = ...) -> str: ...
def canonical_json(args_json: str) -> str: ...
def args_digest(args_json: str) -> str: ...
def decision_reasons() -> list[str]: ...
def policy_reasons() -> list[str]: ...
def protocol_errors() -> list[str]: ...
def error_codes() -> list[tuple[str, int]]: ...
