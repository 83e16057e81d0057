"""The public API is documented and typed."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Iterator, Tuple

import agentid
import agentid.exceptions
import agentid.langchain
import agentid.protocol
import agentid.relying_party
from agentid import _native

MODULES = [agentid, agentid.exceptions, agentid.protocol, agentid.relying_party, agentid.langchain]


def public_objects() -> Iterator[Tuple[str, object]]:
    for module in [*MODULES, _native]:
        yield module.__name__, module
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if name.isupper() or name == "__version__":
                continue  # constants
            yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not callable(member) and not isinstance(
                        member, (property, staticmethod, classmethod)
                    ):
                        continue
                    yield f"{module.__name__}.{name}.{attr}", member


def test_everything_public_has_a_docstring() -> None:
    missing = [name for name, obj in public_objects() if not (inspect.getdoc(obj) or "").strip()]
    assert missing == []


def test_every_exported_name_exists() -> None:
    for module in MODULES:
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_the_package_ships_its_types() -> None:
    root = Path(agentid.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "_native.pyi").is_file()


def test_the_exception_hierarchy() -> None:
    e = agentid.exceptions
    for cls in (
        e.ConfigurationError,
        e.InvalidInputError,
        e.NetworkError,
        e.ApiError,
        e.KeyConflictError,
        e.KeyStoreError,
        e.VerificationError,
        e.CapabilityDenied,
    ):
        assert issubclass(cls, e.AgentIdError)
    for cls in (
        e.InvalidRequestError,
        e.AuthenticationError,
        e.PermissionDeniedError,
        e.NotFoundError,
        e.ConflictError,
        e.RateLimited,
        e.ServerError,
    ):
        assert issubclass(cls, e.ApiError)
    assert issubclass(e.ProtocolViolation, e.VerificationError)
    assert issubclass(e.InvalidInputError, ValueError)
    limited = e.RateLimited("slow down", code="rate_limited", status=429, retry_after=2.0)
    assert limited.retry_after == 2.0
    assert str(limited) == "slow down (HTTP 429, code rate_limited)"
