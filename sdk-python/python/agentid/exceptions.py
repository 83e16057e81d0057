"""Every exception the agentid package raises.

All derive from :class:`AgentIdError`, which carries the server's stable error
``code`` (``docs/errors.md``), its ``message`` and the ``request_id`` to quote to
an operator whenever the server answered. The native module raises these classes
through one conversion (``sdk-python/src/error.rs``): the class follows the
failure's kind and, for the server's answers, its HTTP status.

A denied action is not an error of the SDK: :meth:`agentid.Agent.verify` returns a
:class:`agentid.Decision` either way. Only guards (``@agent.requires``, the
LangChain integration) turn a denial into :class:`CapabilityDenied`.

No exception ever carries a private key, API key, token or passphrase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ._agent import Decision

__all__ = [
    "AgentIdError",
    "ConfigurationError",
    "InvalidInputError",
    "NetworkError",
    "ApiError",
    "InvalidRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "RateLimited",
    "ServerError",
    "KeyConflictError",
    "KeyStoreError",
    "VerificationError",
    "ProtocolViolation",
    "CapabilityDenied",
]


class AgentIdError(Exception):
    """Base class of every agentid failure.

    Attributes:
        message: what went wrong, for people (the server's message when it answered).
        code: the server's stable error code (e.g. ``"forbidden"``), or the protocol
            code for :class:`ProtocolViolation`, or the decision reason for
            :class:`CapabilityDenied`; ``None`` when there is none.
        request_id: the server's request id when it answered (quote it when asking
            an operator to look at the logs), else ``None``.
        status: the HTTP status of the server's answer, else ``None``.
        kind: the Rust SDK's error kind (``"api"``, ``"transport"``, ``"config"``,
            ...), stable snake_case.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        status: Optional[int] = None,
        kind: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.request_id = request_id
        self.status = status
        self.kind = kind

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.code is not None:
            details.append(f"code {self.code}")
        if self.request_id is not None:
            details.append(f"request id {self.request_id}")
        if not details:
            return self.message
        return f"{self.message} ({', '.join(details)})"


class ConfigurationError(AgentIdError):
    """A setting is missing or unusable (e.g. ``AGENTID_URL`` unset, a bad URL)."""


class InvalidInputError(AgentIdError, ValueError):
    """An argument was refused before anything was sent (e.g. an action that is not
    a ``namespace:action`` capability name, arguments that are not JSON)."""


class NetworkError(AgentIdError):
    """The server could not be reached, the connection failed or timed out (after
    the SDK's retries). Nothing was decided: never treat it as an allow."""


class ApiError(AgentIdError):
    """The server answered with its error envelope; ``code``, ``status`` and
    ``request_id`` are set."""


class InvalidRequestError(ApiError):
    """The server refused the request as malformed (400, 405, 413, 415, ...)."""


class AuthenticationError(ApiError):
    """The credential or proof was refused (401: ``unauthorized``,
    ``invalid_credentials``, ``invalid_proof``)."""


class PermissionDeniedError(ApiError):
    """The credential lacks a permission (403 ``forbidden``; the message names it)."""


class NotFoundError(ApiError):
    """No such thing in the credential's organization (404 ``not_found``)."""


class ConflictError(ApiError):
    """The request conflicts with the current state (409 ``conflict`` or
    ``invalid_state``)."""


class RateLimited(ApiError):
    """Too many requests (429 ``rate_limited``), after the SDK's retries.

    Attributes:
        retry_after: seconds the server asked to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        status: Optional[int] = None,
        kind: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message, code=code, request_id=request_id, status=status, kind=kind)
        self.retry_after = retry_after


class ServerError(ApiError):
    """The server failed (5xx), or answered something that is not agentid's format
    (for example a proxy's error page: ``code`` is then ``None``)."""


class KeyConflictError(AgentIdError):
    """The agent name is registered with a different public key than the local key
    file. ``secure()`` never silently creates a new identity: restore the agent's
    key file or use another name."""


class KeyStoreError(AgentIdError):
    """The key store refused a file or directory (permissions, format, a missing or
    wrong passphrase) or a file operation failed."""


class VerificationError(AgentIdError):
    """A token, receipt or envelope did not verify, or the server answered with
    identifiers that do not match the local key."""


class ProtocolViolation(VerificationError):
    """A signed statement or key broke a protocol rule (``docs/protocol.md``).

    Attributes:
        code: the protocol error code, e.g. ``"bad_signature"``.
        stage: where a receiver refused it: ``"parse"``, ``"payload"``, ``"key"``
            or ``"verify"``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        request_id: Optional[str] = None,
        status: Optional[int] = None,
        kind: Optional[str] = None,
        stage: Optional[str] = None,
    ) -> None:
        super().__init__(message, code=code, request_id=request_id, status=status, kind=kind)
        self.stage = stage


class CapabilityDenied(AgentIdError):
    """A guarded call was denied by the server: the guarded code did not run.

    Attributes:
        decision: the server's :class:`agentid.Decision` (``allowed`` is false).
        reason: the decision's stable reason (also ``code``), e.g.
            ``"capability_not_granted"``.
        capability: the capability that was asked for.
        resource: the resource it was asked for, if any.
    """

    def __init__(self, decision: Decision) -> None:
        resource = f" on {decision.resource!r}" if decision.resource is not None else ""
        super().__init__(
            f"{decision.capability}{resource} denied: {decision.message}",
            code=decision.reason,
            kind="denied",
        )
        self.decision = decision
        self.reason = decision.reason
        self.capability = decision.capability
        self.resource = decision.resource

    def __str__(self) -> str:
        return f"{self.message} (reason {self.reason}, decision {self.decision.decision_id})"
