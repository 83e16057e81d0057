"""``secure()``, the :class:`Agent` it returns, and the :class:`Decision` values.

Everything that signs, talks to the server or checks a signature is the native
module's (the Rust SDK); this module adds the Python shapes: dataclasses, the
``requires`` decorator (plain and ``async def`` functions) and JSON conversion of
arguments. A guard never lets a call through unless the server allowed it: a
denial raises :class:`~agentid.CapabilityDenied`, and a failure to get a decision
raises too (never fails open).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import os
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
    TypeVar,
    Union,
    cast,
)

from . import _native
from .exceptions import CapabilityDenied, InvalidInputError

if TYPE_CHECKING:
    from .relying_party import RelyingParty

__all__ = ["Agent", "Decision", "SignedAction", "secure"]

F = TypeVar("F", bound=Callable[..., Any])

#: A resource: a fixed string, or a function of the guarded call's arguments.
Resource = Union[str, None, Callable[..., Optional[str]]]
#: Arguments to bind a guarded call's decision to: ``True`` (the call's bound
#: arguments when they are JSON-serializable), ``False`` (none), or a function of
#: the call's arguments returning a JSON-serializable value.
ArgsSpec = Union[bool, Callable[..., Any]]


def _args_json(args: Any) -> Optional[str]:
    """``args`` as JSON text for the native module, or ``None``."""
    if args is None:
        return None
    try:
        return json.dumps(args, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise InvalidInputError(
            f"args must be JSON-serializable (dicts, lists, strings, numbers, booleans, None): {e}",
            kind="invalid_input",
        ) from e


@dataclass(frozen=True)
class Decision:
    """The server's answer to one signed action (``docs/protocol.md``).

    Act only when ``allowed`` is true; branch on ``reason`` (stable codes, see
    :data:`agentid.protocol.DECISION_REASONS`), never on ``message``. Treat a
    reason you do not know as a denial you do not understand.

    Attributes:
        allowed: whether the action may proceed.
        reason: ``"allowed"`` or the first failing check, e.g. ``"capability_not_granted"``.
        message: a sentence for people.
        trust_score: the agent's trust score (0-100) when deciding, or ``None``
            when the statement was not authenticated.
        trust_alert: whether that score is below the organization's alert threshold.
        decision_id: the decision's id (also its audit record's and the receipt's ``jti``).
        receipt: the server's signed receipt (compact JWS); verify it offline with
            :meth:`agentid.RelyingParty.verify_receipt`.
        audit_seq: the decision's position in the organization's audit chain.
        enforcement: ``"enforce"``, or ``"monitor"`` (policy failures allowed but recorded).
        capability: the capability asked for.
        resource: the resource asked for, if any.
        decided_at: when, RFC 3339.
        agent_id: the agent that asked.
    """

    allowed: bool
    reason: str
    message: str
    trust_score: Optional[float]
    trust_alert: bool
    decision_id: str
    receipt: str
    audit_seq: int
    enforcement: str
    capability: str
    resource: Optional[str]
    decided_at: str
    agent_id: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Decision:
        """A decision from the server's JSON members (unknown members are ignored)."""
        return cls(
            allowed=bool(data["allowed"]),
            reason=str(data["reason"]),
            message=str(data.get("message", "")),
            trust_score=data.get("trust_score"),
            trust_alert=bool(data.get("trust_alert", False)),
            decision_id=str(data["decision_id"]),
            receipt=str(data.get("receipt", "")),
            audit_seq=int(data.get("audit_seq", 0)),
            enforcement=str(data.get("enforcement", "enforce")),
            capability=str(data.get("capability", "")),
            resource=data.get("resource"),
            decided_at=str(data.get("decided_at", "")),
            agent_id=str(data.get("agent_id", "")),
        )


@dataclass(frozen=True)
class SignedAction:
    """A signed action envelope, ready to hand to a relying party or the server.

    Attributes:
        envelope: the envelope's JSON text; send it exactly as is.
        digest: the envelope digest (hex SHA-256 of the signed bytes), as a
            receipt's ``envelope_sha256`` names it.
    """

    envelope: str
    digest: str


def _bound_arguments(
    signature: inspect.Signature, args: Tuple[Any, ...], kwargs: Dict[str, Any]
) -> Dict[str, Any]:
    """The call's arguments by parameter name, defaults applied, without
    ``self``/``cls``."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return {k: v for k, v in bound.arguments.items() if k not in ("self", "cls")}


class Agent:
    """An agent with its identity, as returned by :func:`secure`.

    Holds its key (in the key store; the private key never enters Python), is
    registered with the server and keeps an agent token. Safe to share between
    threads: network calls release the GIL.
    """

    __slots__ = ("_native",)

    def __init__(self, native: _native.Agent) -> None:
        """Wraps a native agent; use :func:`secure` to get one."""
        self._native = native

    @property
    def id(self) -> str:
        """The agent's id (stable across key rotations)."""
        return self._native.id

    @property
    def name(self) -> str:
        """The agent's name."""
        return self._native.name

    @property
    def key_id(self) -> str:
        """The current key id (RFC 7638 JWK thumbprint)."""
        return self._native.key_id

    @property
    def public_key(self) -> str:
        """The current public key, base64url."""
        return self._native.public_key

    @property
    def did(self) -> str:
        """The agent's ``did:key`` (changes with the key; the id does not)."""
        return self._native.did

    @property
    def audience(self) -> str:
        """The server's public URL: the audience of the agent's statements and the
        issuer of its tokens and receipts."""
        return self._native.audience

    @property
    def url(self) -> str:
        """The URL the agent reaches the server at."""
        return self._native.url

    def verify(self, action: str, resource: Optional[str] = None, args: Any = None) -> Decision:
        """Asks the server whether the agent may perform ``action``.

        Args:
            action: the capability the action needs, ``namespace:action``
                (e.g. ``"email:send"``).
            resource: what it acts on (an address, a path, a URL), matched against
                the grant's resource pattern.
            args: the action's arguments (JSON-serializable); their digest
                (SHA-256 of canonical JSON) is signed into the action and the receipt.

        Returns:
            The decision. A denial is a :class:`Decision` with ``allowed`` false,
            not an exception.

        Raises:
            AgentIdError: no decision could be had (network, server, input); see
                :mod:`agentid.exceptions`.
        """
        data = self._native.verify(action, resource, _args_json(args))
        return Decision.from_dict(data)

    def sign_action(
        self, action: str, resource: Optional[str] = None, args: Any = None
    ) -> SignedAction:
        """Signs an action envelope without sending it (no network), for a relying
        party to check (:meth:`agentid.RelyingParty.verify_action_with_token`) or
        forward to the server (:meth:`agentid.RelyingParty.decide`). Each call has
        a fresh nonce and the current time."""
        envelope, digest = self._native.sign_action(action, resource, _args_json(args))
        return SignedAction(envelope=envelope, digest=digest)

    def token(self) -> str:
        """A valid agent access token (EdDSA JWT bound to the current key), renewed
        by a new proof of possession when close to expiry."""
        return self._native.token()

    def rotate_key(self) -> str:
        """Replaces the agent's key (server first, then the key file) and returns the
        new key id. Actions signed with the old key are then ``key_retired``."""
        return self._native.rotate_key()

    def relying_party(self, *, timeout: Optional[float] = None) -> RelyingParty:
        """A :class:`agentid.RelyingParty` for this agent's server, expecting the
        server's own public URL as issuer."""
        from .relying_party import RelyingParty

        return RelyingParty(self.url, issuer=self.audience, timeout=timeout)

    def requires(
        self, capability: str, *, resource: Resource = None, args: ArgsSpec = True
    ) -> Callable[[F], F]:
        """Decorator: the function runs only if the server allows ``capability``.

        Before each call the agent asks the server (:meth:`verify`). If the
        decision denies, :class:`~agentid.CapabilityDenied` is raised (with the
        decision); if no decision can be had (network failure, server error), that
        error is raised. In both cases the function does not run: the guard never
        fails open. ``async def`` functions are guarded too: the check runs in a
        worker thread (``asyncio.to_thread``) so the event loop is not blocked.

        Args:
            capability: ``namespace:action``, e.g. ``"email:send"``.
            resource: a string, or a function called with the call's arguments
                that returns the resource (or ``None``).
            args: what the decision is bound to (its ``args_digest``): ``True``
                (default) binds the call's arguments by parameter name (defaults
                applied, ``self``/``cls`` left out) when they are all
                JSON-serializable, and nothing otherwise; ``False`` binds nothing; a
                function called with the call's arguments returns the value to bind
                (which must be JSON-serializable).
        """

        def decorate(func: F) -> F:
            signature = inspect.signature(func)

            def check(call_args: Tuple[Any, ...], call_kwargs: Dict[str, Any]) -> None:
                res = resource(*call_args, **call_kwargs) if callable(resource) else resource
                if args is True:
                    try:
                        args_text = _args_json(
                            _bound_arguments(signature, call_args, call_kwargs)
                        )
                    except InvalidInputError:
                        args_text = None
                elif args is False:
                    args_text = None
                else:
                    args_text = _args_json(args(*call_args, **call_kwargs))
                decision = Decision.from_dict(self._native.verify(capability, res, args_text))
                if not decision.allowed:
                    raise CapabilityDenied(decision)

            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def guarded_async(*call_args: Any, **call_kwargs: Any) -> Any:
                    await asyncio.to_thread(check, call_args, call_kwargs)
                    return await func(*call_args, **call_kwargs)

                return cast(F, guarded_async)

            @functools.wraps(func)
            def guarded(*call_args: Any, **call_kwargs: Any) -> Any:
                check(call_args, call_kwargs)
                return func(*call_args, **call_kwargs)

            return cast(F, guarded)

        return decorate

    def __repr__(self) -> str:
        return f"<agentid.Agent name={self.name!r} id={self.id!r} key_id={self.key_id!r}>"


def secure(
    name: str,
    *,
    url: Optional[str] = None,
    api_key: Optional[str] = None,
    capabilities: Optional[List[str]] = None,
    key_dir: Union[str, os.PathLike[str], None] = None,
    passphrase: Optional[str] = None,
    description: Optional[str] = None,
    timeout: Optional[float] = None,
    retries: Optional[int] = None,
) -> Agent:
    """Returns a ready :class:`Agent` named ``name``.

    Loads the agent's key from the key store or creates it (``<key_dir>/<name>.key``,
    mode 0600), registers the agent (idempotent: the same name and key is the same
    agent, so calling it on every start is safe), proves possession of the key and
    keeps an agent token. A name registered with another key raises
    :class:`~agentid.KeyConflictError`: never a silent new identity.

    Args:
        name: the agent's name, unique in its organization.
        url: the server (default: ``AGENTID_URL``).
        api_key: a credential with ``agents:write`` (default: ``AGENTID_API_KEY``).
        capabilities: capabilities requested at first registration (information
            for administrators; nothing is granted by asking).
        key_dir: the key directory (default: ``AGENTID_KEY_DIR``, else
            ``~/.local/share/agentid/keys`` or the platform's equivalent).
        passphrase: encrypt the key file (default: ``AGENTID_KEY_PASSPHRASE``, else
            unencrypted).
        description: sent at first registration.
        timeout: seconds each HTTP request may take (default 30).
        retries: retries of transient failures (default 3; 0 disables).

    Raises:
        ConfigurationError: no URL or credential.
        NetworkError: the server cannot be reached.
        AgentIdError: any other failure (see :mod:`agentid.exceptions`).
    """
    native = _native.Agent.connect(
        name,
        url=url,
        api_key=api_key,
        capabilities=capabilities,
        key_dir=os.fspath(key_dir) if key_dir is not None else None,
        passphrase=passphrase,
        description=description,
        timeout=timeout,
        retries=retries,
    )
    return Agent(native)
