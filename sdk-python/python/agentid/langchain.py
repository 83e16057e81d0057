"""LangChain integration: every tool call is verified by agentid before it runs.

Install with ``pip install "agentid-client[langchain]"`` (from a checkout:
``pip install "./sdk-python[langchain]"``). Wrap the tools you give a model
or an agent::

    from agentid import secure
    from agentid.langchain import guard_tools

    agent = secure("research-assistant")
    tools = guard_tools(agent, [search, send_email], capabilities={"send_email": "email:send"})

Each call of a guarded tool first asks the server (:meth:`agentid.Agent.verify`)
for the tool's capability, with the tool's input as the action's arguments. When
the server denies, the tool does not run and :class:`agentid.CapabilityDenied` is
raised (the default, ``on_denied="raise"``: the run stops), or, with
``on_denied="return"``, the tool returns a refusal text instead, so the model can
read it and carry on. When no decision can be had (network failure, server error)
the error is always raised: a guard never fails open. Async calls (``ainvoke``)
are checked in a worker thread, off the event loop.

The capability of a tool is ``capabilities[tool.name]`` when given, else
``tool:<name>`` with the name lowercased and every character outside
``a-z 0-9 _ . -`` replaced by ``_`` (``"Send Email"`` -> ``tool:send_email``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from typing import Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Union

if importlib.util.find_spec("langchain_core") is None:  # pragma: no cover - installation
    raise ImportError(
        'agentid.langchain needs langchain-core: pip install "langchain-core>=0.3" '
        '(the extra "agentid-client[langchain]" installs it)'
    )

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool

from ._agent import Agent, Decision
from .exceptions import CapabilityDenied

__all__ = ["GuardedTool", "guard_tool", "guard_tools", "capability_for"]

#: A tool call's resource: a fixed string, or a function of the tool's input.
ToolResource = Union[str, None, Callable[[Dict[str, Any]], Optional[str]]]


def capability_for(tool_name: str) -> str:
    """The default capability of a tool: ``tool:<normalized name>``."""
    action = re.sub(r"[^a-z0-9_.-]", "_", tool_name.lower()).lstrip("_.-")[:64]
    return f"tool:{action or 'unnamed'}"


def _input_dict(args: tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The tool input as a dict (a single-string tool's input is ``{"input": ...}``)."""
    if args:
        return {"input": args[0]}
    return dict(kwargs)


class GuardedTool(BaseTool):
    """A tool that runs only after agentid allowed the call (see the module's doc).

    It has the wrapped tool's name, description and argument schema, so a model
    sees the same tool.
    """

    tool: BaseTool
    """The wrapped tool."""
    agent: Agent
    """The agent whose capability is checked."""
    capability: str
    """The capability each call needs."""
    resource: Any = None
    """A string, or a function of the tool input (a dict) returning the resource."""
    on_denied: Literal["raise", "return"] = "raise"
    """``"raise"``: raise CapabilityDenied; ``"return"``: return a refusal text."""

    def _check(self, tool_input: Dict[str, Any]) -> Optional[str]:
        """Asks the server; returns a refusal text when denied and ``on_denied`` is
        ``"return"``, raises when denied otherwise, ``None`` when allowed."""
        resource = self.resource(tool_input) if callable(self.resource) else self.resource
        try:
            args: Optional[Dict[str, Any]] = json.loads(json.dumps(tool_input))
        except (TypeError, ValueError):
            args = None  # not JSON: checked without an args digest
        decision: Decision = self.agent.verify(self.capability, resource, args)
        if decision.allowed:
            return None
        if self.on_denied == "return":
            return (
                f"agentid denied {self.capability}: {decision.reason} ({decision.message}); "
                "the tool did not run."
            )
        raise CapabilityDenied(decision)

    def _tool_input(self, args: tuple[Any, ...], kwargs: Dict[str, Any]) -> Union[str, Dict[str, Any]]:
        return args[0] if args else kwargs

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: Optional[CallbackManagerForToolRun] = None,
        **kwargs: Any,
    ) -> Any:
        refusal = self._check(_input_dict(args, kwargs))
        if refusal is not None:
            return refusal
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        return self.tool.invoke(self._tool_input(args, kwargs), child)

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: Optional[AsyncCallbackManagerForToolRun] = None,
        **kwargs: Any,
    ) -> Any:
        refusal = await asyncio.to_thread(self._check, _input_dict(args, kwargs))
        if refusal is not None:
            return refusal
        child = patch_config(config, callbacks=run_manager.get_child() if run_manager else None)
        return await self.tool.ainvoke(self._tool_input(args, kwargs), child)


def guard_tool(
    agent: Agent,
    tool: BaseTool,
    capability: Optional[str] = None,
    *,
    resource: ToolResource = None,
    on_denied: Literal["raise", "return"] = "raise",
) -> GuardedTool:
    """``tool``, checked by ``agent`` before each call.

    Args:
        agent: the agent (from :func:`agentid.secure`).
        tool: any LangChain tool (``@tool`` functions, ``StructuredTool``, ``BaseTool``
            subclasses).
        capability: the capability a call needs (default :func:`capability_for`).
        resource: a string, or a function of the tool input (a dict; a
            single-string tool's input is ``{"input": text}``) returning the resource.
        on_denied: ``"raise"`` (default) raises :class:`agentid.CapabilityDenied`;
            ``"return"`` returns a refusal text as the tool's output.
    """
    return GuardedTool(
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
        return_direct=tool.return_direct,
        tool=tool,
        agent=agent,
        capability=capability or capability_for(tool.name),
        resource=resource,
        on_denied=on_denied,
    )


def guard_tools(
    agent: Agent,
    tools: Iterable[BaseTool],
    capabilities: Optional[Mapping[str, str]] = None,
    *,
    resources: Optional[Mapping[str, ToolResource]] = None,
    on_denied: Literal["raise", "return"] = "raise",
) -> List[GuardedTool]:
    """Every tool of ``tools`` guarded by ``agent`` (see :func:`guard_tool`);
    ``capabilities`` and ``resources`` map tool names to their capability and
    resource."""
    capabilities = capabilities or {}
    resources = resources or {}
    return [
        guard_tool(
            agent,
            tool,
            capabilities.get(tool.name),
            resource=resources.get(tool.name),
            on_denied=on_denied,
        )
        for tool in tools
    ]
