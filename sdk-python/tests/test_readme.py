"""The README, executed top to bottom in one shell against a fresh server, the way a
newcomer follows it: every block in order (the create-owner block included, with the
SDK's variables already exported), the quick start before and after the grant.

Two things differ from a newcomer's terminal, and only these: the server is the
harness's (on a free port, so the README's URL is replaced by it, with its data
directory given by ``AGENTID_DATA_DIR`` instead of ``./data``), and ``pip install
./sdk-python`` is not run again (the harness installed the wheel built from
``./sdk-python``; the stand-in checks the README still says exactly that and that the
distribution installed is ``agentid-client``). ``cargo run`` is the real one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

from conftest import REPO, start_server

README = Path(__file__).resolve().parents[1] / "README.md"
README_URL = "http://127.0.0.1:8080"


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
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTID_")}
        env.update(
            # The virtualenv's python3 (with the wheel), as in an activated venv.
            PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            # Agent keys go to the default per-user directory, inside this test.
            XDG_DATA_HOME=str(tmp_path / "xdg"),
            README_SERVER_URL=server.url,
            # The README's `./data`, and the server's cheap test bcrypt cost.
            AGENTID_DATA_DIR=str(server.data_dir),
            AGENTID_BCRYPT_COST="4",
        )
        script = "set -euo pipefail\n" + PIP_STAND_IN + "\n".join(steps)
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
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
