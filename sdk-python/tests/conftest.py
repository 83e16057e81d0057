"""Test harness: a real agentid server process per test session (and one per test
that needs to stop it), on 127.0.0.1 port 0 with its own SQLite directory, an
owner created with ``agentid-server admin create-owner``, and an API key made
over HTTP. Nothing is mocked: the package talks to the server it will talk to in
production.

The server binary is ``$AGENTID_SERVER_BIN``, else ``target/debug/agentid-server``
of the workspace (``sdk-python/scripts/test`` builds it). A missing binary fails
the run; it never skips.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "protocol" / "test-vectors"
OWNER_EMAIL = "owner@example.com"
OWNER_PASSWORD = "correct horse battery staple"
API_KEY_PERMISSIONS = [
    "org:manage",
    "agents:read",
    "agents:write",
    "capabilities:grant",
    "audit:read",
    "keys:manage",
]


def server_binary() -> Path:
    path = Path(os.environ.get("AGENTID_SERVER_BIN", REPO / "target" / "debug" / "agentid-server"))
    if not path.is_file():
        pytest.fail(f"no server binary at {path}: run `cargo build -p agentid-server` first")
    return path


def _find(value: Any, key: str) -> Optional[Any]:
    """The first member named ``key`` anywhere in a JSON log line."""
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for member in value.values():
            found = _find(member, key)
            if found is not None:
                return found
    return None


@dataclass
class Server:
    """A running agentid server process."""

    process: "subprocess.Popen[str]"
    url: str
    public_url: str
    data_dir: Path
    env: Dict[str, str]
    lines: List[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, body: Any = None, token: Optional[str] = None
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if token is not None:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                text = answer.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: {e.code} {e.read()!r}") from e
        return json.loads(text) if text else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(tmp: Path) -> Server:
    """Starts a server on a free port with its own data directory and waits until
    it says it is listening."""
    binary = server_binary()
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True)
    # The server is configured by this harness alone, whatever AGENTID_* variables
    # the caller's environment holds.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTID_")}
    env.update(
        AGENTID_LISTEN="127.0.0.1:0",
        AGENTID_DATA_DIR=str(data_dir),
        AGENTID_BCRYPT_COST="4",
        AGENTID_LOG_FORMAT="json",
        AGENTID_WORKERS="2",
    )
    env.pop("DATABASE_URL", None)
    process = subprocess.Popen(
        [str(binary)],
        cwd=tmp,  # no stray .env file is read
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: List[str] = []
    listening: "queue.Queue[Dict[str, Any]]" = queue.Queue()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "agentid is listening" in line:
                try:
                    listening.put(json.loads(line))
                except ValueError:
                    pass

    threading.Thread(target=drain, daemon=True).start()
    try:
        record = listening.get(timeout=60)
    except queue.Empty:
        process.kill()
        pytest.fail("the server did not start:\n" + "".join(lines))
    address = _find(record, "server.address")
    public_url = _find(record, "server.public_url")
    assert address, record
    server = Server(
        process=process,
        url=f"http://{address}",
        public_url=str(public_url),
        data_dir=data_dir,
        env=env,
        lines=lines,
    )
    return server


@dataclass
class App:
    """A server with an organization, its owner and an API key."""

    server: Server
    api_key: str
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.url

    def key_dir(self) -> Path:
        """A fresh key directory (not created yet: the SDK creates it 0700)."""
        return self.tmp / f"keys-{uuid.uuid4().hex}"

    def create_capability(self, name: str, min_trust: int = 0) -> None:
        """Adds ``name`` to the catalogue (already there is fine)."""
        try:
            self.server.request(
                "POST",
                "/api/v1/capabilities",
                {"name": name, "risk_level": "low", "min_trust": min_trust},
                self.api_key,
            )
        except AssertionError as e:
            if "409" not in str(e):
                raise

    def grant(self, agent_id: str, capability: str, pattern: Optional[str] = None) -> None:
        """Creates ``capability`` if needed and grants it to the agent."""
        self.create_capability(capability)
        body: Dict[str, Any] = {"capability": capability}
        if pattern is not None:
            body["resource_pattern"] = pattern
        self.server.request("POST", f"/api/v1/agents/{agent_id}/grants", body, self.api_key)

    def env(self) -> Dict[str, str]:
        """An environment for a child process using this server through the SDK's
        variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTID_")}
        env["AGENTID_URL"] = self.url
        env["AGENTID_API_KEY"] = self.api_key
        return env


def make_app(tmp: Path) -> App:
    server = start_server(tmp)
    try:
        created = subprocess.run(
            [
                str(server_binary()),
                "admin",
                "create-owner",
                "--org",
                "Python SDK tests",
                "--email",
                OWNER_EMAIL,
            ],
            cwd=tmp,
            env=server.env,
            input=OWNER_PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        tokens = server.request(
            "POST", "/api/v1/auth/login", {"email": OWNER_EMAIL, "password": OWNER_PASSWORD}
        )
        key = server.request(
            "POST",
            "/api/v1/api-keys",
            {"name": "python sdk tests", "permissions": API_KEY_PERMISSIONS},
            tokens["access_token"],
        )
    except BaseException:
        server.stop()
        raise
    return App(server=server, api_key=key["key"], tmp=tmp)


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One server for the session (tests use their own agents and key dirs)."""
    app = make_app(tmp_path_factory.mktemp("server"))
    yield app
    app.server.stop()


@pytest.fixture
def own_app(tmp_path: Path) -> Iterator[App]:
    """A server of this test's own, which the test may stop."""
    app = make_app(tmp_path)
    yield app
    app.server.stop()


@pytest.fixture
def agent_name() -> str:
    """A name no other test uses."""
    return f"py-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def _no_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass settings explicitly unless they set the variables themselves."""
    for name in ("AGENTID_URL", "AGENTID_API_KEY", "AGENTID_KEY_DIR", "AGENTID_KEY_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)

