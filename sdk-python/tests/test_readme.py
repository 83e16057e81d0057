"""The READMEs, executed as a newcomer follows them: every block in order, in one shell
per terminal, with the real ``cargo run``, ``curl`` and ``python3``.

- ``sdk-python/README.md`` top to bottom (the create-owner block included, with the SDK's
  variables already exported), the quick start before and after the grant.
- ``README.md``'s "First hour": its first block as the server's terminal, all the others
  in order in a second shell.

Only these things differ from a newcomer's terminals: the server listens on a free port
(the READMEs' ``http://127.0.0.1:8080`` is replaced by the address it bound), bcrypt runs
at the cheapest cost, agent keys go to the default per-user directory under an
``XDG_DATA_HOME`` of the test's own, and:

- for the Python README, the server is the harness's, its data directory given by
  ``AGENTID_DATA_DIR`` instead of ``./data``, and ``pip install ./sdk-python`` is not run
  again (the harness installed the wheel built from ``./sdk-python``; the stand-in checks
  the README still says exactly that and that the distribution is ``agentid-client``);
- for the first hour, both terminals work in a fresh directory inside the workspace (so
  ``./data`` and the files the README writes are the test's own).

These tests run here, after the Rust test binaries, and not among them: the READMEs'
``cargo run`` re-links ``target/debug/agentid-server``, which those tests start
concurrently."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from conftest import REPO, _find, start_server

README = Path(__file__).resolve().parents[1] / "README.md"
ROOT_README = REPO / "README.md"
README_URL = "http://127.0.0.1:8080"
# `cargo run` may have to compile the server or the Rust SDK's examples first.
PATIENCE = 900


def newcomer_env(tmp: Path) -> Dict[str, str]:
    """A shell's environment without any agentid setting, the virtualenv's python3
    first on PATH (as in an activated venv), and agent keys under ``tmp``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGENTID_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["XDG_DATA_HOME"] = str(tmp / "xdg")
    env["AGENTID_BCRYPT_COST"] = "4"
    return env


def blocks(text: str) -> List[Tuple[str, str]]:
    """Every fenced block as (language, code), in order."""
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def quick_start() -> str:
    section = README.read_text().split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "no python block in the quick start"
    return match.group(1)


def test_the_quick_start_is_short() -> None:
    lines = [line for line in quick_start().splitlines() if line.strip()]
    assert len(lines) <= 10, lines


# `pip install ./sdk-python` builds the same wheel the harness built and installed.
PIP_STAND_IN = """
pip() {
    if [ "$*" != "install ./sdk-python" ] || [ ! -f sdk-python/pyproject.toml ]; then
        echo "the README's install line changed: pip $*" >&2
        return 97
    fi
    python3 -c 'import importlib.metadata as m; print("installed agentid-client", m.version("agentid-client"))'
}
"""


def python_step(code: str) -> str:
    return f"python3 - <<'AGENTID_README_PYTHON'\n{code}AGENTID_README_PYTHON\n"


def test_the_readme_runs_top_to_bottom_in_one_shell(tmp_path: Path) -> None:
    text = README.read_text()
    body, tests = text.split("## Tests", 1)
    # The Tests section runs this very suite; it is the only block not run here.
    assert [code.split("#")[0].strip() for _, code in blocks(tests)] == ["sdk-python/scripts/test"]
    steps = []
    for language, code in blocks(body):
        assert language in ("sh", "python"), language
        if language == "sh":
            steps.append(code.replace(README_URL, "$README_SERVER_URL"))
        else:
            steps.append(python_step(code))
    assert any("admin create-owner" in step for step in steps)
    # "Run the quick start again" after the grant.
    steps.append(python_step(quick_start()))

    server = start_server(tmp_path / "server")
    try:
        env = newcomer_env(tmp_path)
        env["README_SERVER_URL"] = server.url
        # The README's `./data`.
        env["AGENTID_DATA_DIR"] = str(server.data_dir)
        script = "set -euo pipefail\n" + PIP_STAND_IN + "\n".join(steps)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert '"email":"me@example.com"' in out.replace(" ", ""), out
    first = out.index("denied: capability_not_granted\n")
    assert out.endswith("sent 'Quarterly report' to bob@example.com\n"), out
    assert first < out.rindex("sent"), out
    key_file = tmp_path / "xdg" / "agentid" / "keys" / "my-agent.key"
    assert key_file.is_file()


def section_blocks(text: str, title: str) -> List[str]:
    """The ``sh`` blocks of the section ``## title``, in order."""
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_first_hour_works_as_written(tmp_path: Path) -> None:
    server_block, *terminal_two = section_blocks(ROOT_README.read_text(), "First hour")
    assert "cargo run -p agentid-server" in server_block, server_block
    assert any("admin create-owner" in block for block in terminal_two)

    # Inside the workspace, so `cargo run -p ...` finds it, as from the repository root.
    work = REPO / "target" / "readme-first-hour" / uuid.uuid4().hex
    work.mkdir(parents=True)
    env = newcomer_env(tmp_path)
    server_env = dict(env, AGENTID_LISTEN="127.0.0.1:0", AGENTID_LOG_FORMAT="json")
    server_log = work / "server.stderr"
    with open(server_log, "w") as stderr:
        server = subprocess.Popen(
            ["bash", "-c", "exec " + server_block],
            cwd=work,
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group, stopped as one below
        )
    try:
        listening: "queue.Queue[str]" = queue.Queue()

        def drain() -> None:
            assert server.stdout is not None
            for line in server.stdout:
                if "agentid is listening" in line:
                    listening.put(line)

        threading.Thread(target=drain, daemon=True).start()
        try:
            record = json.loads(listening.get(timeout=PATIENCE))
        except queue.Empty:
            pytest.fail("the README's server did not start:\n" + server_log.read_text())
        url = f"http://{_find(record, 'server.address')}"

        script = "set -euo pipefail\n" + "\n".join(terminal_two).replace(README_URL, url)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # What each step says it prints, in order.
    at = 0
    for expected in [
        '"email":"me@example.com"',
        "agent my-agent is ",
        "denied: capability_not_granted\n",
        '"capability":"email:send"',
        "allowed: audit record ",
        "receipt: ey",
        "receipt verified offline: allowed email:send on bob@example.com for agent ",
        '"valid":true',
        '"backup":"backup.db"',
    ]:
        found = out.find(expected, at)
        assert found >= 0, f"{expected!r} not printed after position {at}:\n{out}\n{done.stderr}"
        at = found + len(expected)
    assert (work / "data" / "agentid.db").is_file()
    assert (work / "backup.db").is_file()
    assert (tmp_path / "xdg" / "agentid" / "keys" / "my-agent.key").is_file()
    shutil.rmtree(work)
