"""The README's quick start, executed exactly as written against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from conftest import App

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> List[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def quick_start() -> str:
    section = README.read_text().split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "no python block in the quick start"
    return match.group(1)


def test_the_quick_start_is_short() -> None:
    lines = [line for line in quick_start().splitlines() if line.strip()]
    assert len(lines) <= 10, lines


def run(code: str, env: Dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_quick_start_works_as_written(app: App, tmp_path: Path) -> None:
    code = quick_start()
    env = app.env()
    # Only AGENTID_URL and AGENTID_API_KEY are set; the key goes to the default
    # per-user directory, here inside this test's own home.
    env["HOME"] = str(tmp_path)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")

    # First run: registered, nothing granted yet.
    assert run(code, env, tmp_path) == "denied: capability_not_granted\n"
    key_file = tmp_path / "data" / "agentid" / "keys" / "my-agent.key"
    assert key_file.is_file()

    # The README's own grant commands, pointed at the test server.
    [grant] = [b for b in blocks("sh") if "/grants" in b]
    script = grant.replace("http://127.0.0.1:8080", app.url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

    # Second run: the same agent, now allowed.
    assert run(code, env, tmp_path) == "sent 'Quarterly report' to bob@example.com\n"
