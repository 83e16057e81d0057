"""The @agent.requires guard (plain and async functions) and use from threads."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Dict, List

import pytest

import agentid

from conftest import App


@pytest.fixture
def agent(app: App, agent_name: str) -> agentid.Agent:
    agent = agentid.secure(agent_name, url=app.url, api_key=app.api_key, key_dir=app.key_dir())
    app.grant(agent.id, "email:send", "*@example.com")
    return agent


def test_sync_function_runs_only_when_allowed(agent: agentid.Agent) -> None:
    calls: List[Any] = []

    @agent.requires("email:send", resource=lambda to, subject: to)
    def send_email(to: str, subject: str) -> str:
        """Sends a mail."""
        calls.append((to, subject))
        return f"sent to {to}"

    assert send_email.__name__ == "send_email"
    assert send_email.__doc__ == "Sends a mail."
    assert send_email("bob@example.com", subject="Hi") == "sent to bob@example.com"
    with pytest.raises(agentid.CapabilityDenied) as denied:
        send_email("eve@evil.test", "Hi")
    assert calls == [("bob@example.com", "Hi")]
    error = denied.value
    assert error.reason == error.code == "resource_not_in_scope"
    assert error.decision.allowed is False
    assert error.capability == "email:send"
    assert error.resource == "eve@evil.test"
    assert error.decision.decision_id in str(error)
    assert isinstance(error, agentid.AgentIdError)


def test_an_ungranted_capability_never_runs(agent: agentid.Agent) -> None:
    ran = []

    @agent.requires("files:delete", resource="/etc/passwd")
    def delete() -> None:
        ran.append(True)

    with pytest.raises(agentid.CapabilityDenied) as denied:
        delete()
    assert denied.value.reason == "capability_not_granted"
    assert ran == []


def test_async_function_is_checked_off_the_event_loop(agent: agentid.Agent) -> None:
    threads: Dict[str, int] = {}
    calls: List[str] = []

    def resource_of(to: str) -> str:
        threads["check"] = threading.get_ident()
        return to

    @agent.requires("email:send", resource=resource_of)
    async def send_email(to: str) -> str:
        threads["body"] = threading.get_ident()
        calls.append(to)
        await asyncio.sleep(0)
        return f"sent to {to}"

    assert asyncio.iscoroutinefunction(send_email)

    async def main() -> None:
        assert await send_email("bob@example.com") == "sent to bob@example.com"
        with pytest.raises(agentid.CapabilityDenied) as denied:
            await send_email("eve@evil.test")
        assert denied.value.reason == "resource_not_in_scope"
        # Several guarded calls at once.
        results = await asyncio.gather(*(send_email(f"u{i}@example.com") for i in range(5)))
        assert len(results) == 5

    asyncio.run(main())
    assert calls[0] == "bob@example.com" and "eve@evil.test" not in calls
    # The decision was fetched on a worker thread, the body ran on the loop's.
    assert threads["check"] != threads["body"]
    assert threads["body"] == threading.get_ident()


def test_args_are_bound_or_left_out(agent: agentid.Agent) -> None:
    seen: List[Any] = []

    @agent.requires("email:send", resource="a@example.com")
    def with_object(payload: object) -> None:
        seen.append(payload)

    # Not JSON-serializable: the call is still checked, without an args digest.
    marker = object()
    with_object(marker)
    assert seen == [marker]

    @agent.requires("email:send", resource="a@example.com", args=lambda payload: {"p": payload})
    def explicit(payload: object) -> None:
        seen.append(payload)

    with pytest.raises(agentid.InvalidInputError):
        explicit(object())
    explicit("text")
    assert seen[-1] == "text"

    @agent.requires("email:send", resource="a@example.com", args=False)
    def unbound(payload: object) -> None:
        seen.append(payload)

    unbound(marker)

    class Mailer:
        @agent.requires("email:send", resource=lambda self, to: to)
        def send(self, to: str) -> str:
            return to

    assert Mailer().send("c@example.com") == "c@example.com"


def test_network_failure_raises_and_never_runs_the_function(
    own_app: App, agent_name: str
) -> None:
    agent = agentid.secure(
        agent_name,
        url=own_app.url,
        api_key=own_app.api_key,
        key_dir=own_app.key_dir(),
        retries=0,
    )
    own_app.grant(agent.id, "email:send")
    ran: List[str] = []

    @agent.requires("email:send")
    def send() -> None:
        ran.append("sync")

    @agent.requires("email:send")
    async def send_async() -> None:
        ran.append("async")

    send()
    assert ran == ["sync"]
    own_app.server.stop()  # the server is gone

    with pytest.raises(agentid.NetworkError):
        send()
    with pytest.raises(agentid.NetworkError):
        asyncio.run(send_async())
    assert ran == ["sync"]


def test_one_agent_from_many_threads(agent: agentid.Agent) -> None:
    results: List[agentid.Decision] = []
    errors: List[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        try:
            start.wait()
            for j in range(4):
                decision = agent.verify("email:send", f"t{i}-{j}@example.com", {"i": i, "j": j})
                with lock:
                    results.append(decision)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(results) == 32
    assert all(d.allowed for d in results)
    assert len({d.decision_id for d in results}) == 32


def test_network_calls_release_the_gil() -> None:
    # A server that accepts connections and never answers: a relying party's
    # fetch waits for its timeout inside the native module.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        rp = agentid.RelyingParty(url, timeout=3, retries=0)
        failures: List[BaseException] = []

        def fetch() -> None:
            try:
                rp.jwks()
            except agentid.AgentIdError as e:
                failures.append(e)

        fetching = threading.Thread(target=fetch)
        fetching.start()
        time.sleep(0.3)
        # While the other thread is inside the native call, this one runs Python.
        count, deadline = 0, time.monotonic() + 0.5
        while time.monotonic() < deadline:
            count += 1
        assert fetching.is_alive()
        assert count > 10_000
        fetching.join(timeout=60)
    assert failures and isinstance(failures[0], agentid.NetworkError)
