"""agentid: identity and trust verification for AI agents.

::

    from agentid import secure

    agent = secure("my-agent")                     # AGENTID_URL, AGENTID_API_KEY
    decision = agent.verify("email:send", "bob@example.com")

    @agent.requires("email:send", resource=lambda to, body: to)
    def send_email(to: str, body: str) -> None: ...

The package is a thin shell over the Rust SDK (the private module
``agentid._native``); ``docs/sdk-python.md`` describes it.
"""

from ._agent import Agent, Decision, SignedAction, secure
from ._native import __version__
from .exceptions import (
    AgentIdError,
    ApiError,
    AuthenticationError,
    CapabilityDenied,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    InvalidRequestError,
    KeyConflictError,
    KeyStoreError,
    NetworkError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolViolation,
    RateLimited,
    ServerError,
    VerificationError,
)
from .relying_party import (
    RelyingParty,
    VerifiedAction,
    verify_action_envelope,
    verify_agent_token_with,
    verify_receipt_with,
)

__all__ = [
    "__version__",
    "secure",
    "Agent",
    "Decision",
    "SignedAction",
    "RelyingParty",
    "VerifiedAction",
    "verify_action_envelope",
    "verify_agent_token_with",
    "verify_receipt_with",
    "AgentIdError",
    "ApiError",
    "AuthenticationError",
    "CapabilityDenied",
    "ConfigurationError",
    "ConflictError",
    "InvalidInputError",
    "InvalidRequestError",
    "KeyConflictError",
    "KeyStoreError",
    "NetworkError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolViolation",
    "RateLimited",
    "ServerError",
    "VerificationError",
]
