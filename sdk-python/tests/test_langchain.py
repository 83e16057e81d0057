"""agentid.langchain with the real langchain-core: tools run only when allowed."""

from __future__ import annotations

import asyncio
from typing import List

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool, Tool, tool

import agentid
from agentid.langchain import GuardedTool, capability_for, guard_tool, guard_tools

from conftest import App

SENT: List[str] = []


@tool
def send_email(to: str, subject: str) -> str:
    """Send an email."""
    SENT.append(to)
    return f"sent {subject!r} to {to}"


@pytest.fixture
def agent(app: App, agent_name: str) -> agentid.Agent:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    app.grant(agent.id, "email:send", "*@example.com")
    return agent


def test_default_capability_names() -> None:
    assert capability_for("send_email") == "tool:send_email"
    assert capability_for("Send Email!") == "tool:send_email_"
    assert capability_for("__x") == "tool:x"


def test_a_tool_runs_only_when_allowed(agent: agentid.Agent) -> None:
    SENT.clear()
    guarded = guard_tool(agent, send_email, "email:send", resource=lambda args: args["to"])
    assert isinstance(guarded, GuardedTool)
    assert guarded.name == "send_email"
    assert guarded.description == send_email.description
    assert guarded.args == send_email.args

    out = guarded.invoke({"to": "bob@example.com", "subject": "Report"})
    assert out == "sent 'Report' to bob@example.com"
    with pytest.raises(agentid.CapabilityDenied) as denied:
        guarded.invoke({"to": "eve@evil.test", "subject": "Secrets"})
    assert denied.value.reason == "resource_not_in_scope"
    assert SENT == ["bob@example.com"]


def test_a_model_tool_call_is_checked(agent: agentid.Agent) -> None:
    SENT.clear()
    [guarded] = guard_tools(
        agent,
        [send_email],
        {"send_email": "email:send"},
        resources={"send_email": lambda args: args["to"]},
    )
    call = {
        "name": "send_email",
        "args": {"to": "ann@example.com", "subject": "Hi"},
        "id": "call-1",
        "type": "tool_call",
    }
    message = guarded.invoke(call)
    assert isinstance(message, ToolMessage)
    assert message.tool_call_id == "call-1"
    assert "ann@example.com" in str(message.content)
    assert SENT == ["ann@example.com"]


def test_the_default_capability_is_denied_until_granted(app: App, agent: agentid.Agent) -> None:
    SENT.clear()
    guarded = guard_tool(agent, send_email, on_denied="return")
    assert guarded.capability == "tool:send_email"
    refusal = guarded.invoke({"to": "bob@example.com", "subject": "x"})
    assert "capability_not_granted" in refusal and "did not run" in refusal
    assert SENT == []
    app.grant(agent.id, "tool:send_email")
    assert guarded.invoke({"to": "bob@example.com", "subject": "x"}).startswith("sent")
    assert SENT == ["bob@example.com"]


def test_async_and_single_input_tools(agent: agentid.Agent) -> None:
    seen: List[str] = []

    async def lookup(query: str) -> str:
        seen.append(query)
        return query.upper()

    structured = StructuredTool.from_function(
        coroutine=lookup, name="lookup", description="Look something up."
    )
    def echo(text: str) -> str:
        seen.append(text)
        return text

    legacy = Tool(name="echo", description="Echo.", func=echo)
    guarded_lookup, guarded_echo = guard_tools(
        agent,
        [structured, legacy],
        {"lookup": "email:send", "echo": "email:send"},
        resources={"lookup": "x@example.com", "echo": lambda args: args["input"]},
    )

    async def main() -> None:
        assert await guarded_lookup.ainvoke({"query": "abc"}) == "ABC"
        with pytest.raises(agentid.CapabilityDenied):
            await guarded_echo.ainvoke("not-an-address")

    asyncio.run(main())
    assert guarded_echo.invoke("y@example.com") == "y@example.com"
    assert seen == ["abc", "y@example.com"]


def test_a_network_failure_raises_and_the_tool_does_not_run(
    own_app: App, agent_name: str
) -> None:
    SENT.clear()
    agent = agentid.secure(
        agent_name,
        url=own_app.url,
        api_key=own_app.api_key,
        key_dir=own_app.key_dir(),
        retries=0,
    )
    own_app.grant(agent.id, "email:send")
    guarded = guard_tool(agent, send_email, "email:send", on_denied="return")
    own_app.server.stop()
    with pytest.raises(agentid.NetworkError):
        guarded.invoke({"to": "bob@example.com", "subject": "x"})
    assert SENT == []
