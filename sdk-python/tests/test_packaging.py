"""The distribution's name: ``agentid`` and ``agentid-sdk`` on PyPI are unrelated
projects, so ours is ``agentid-client`` while the import stays ``import agentid``,
and no install line in the docs may name the others."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path
from typing import List

import agentid
from conftest import REPO

DISTRIBUTION = "agentid-client"


def test_the_installed_distribution_is_agentid_client() -> None:
    dist = importlib.metadata.distribution(DISTRIBUTION)
    assert dist.metadata["Name"] == DISTRIBUTION
    assert dist.version == agentid.__version__
    assert importlib.metadata.packages_distributions()["agentid"] == [DISTRIBUTION]
    assert "langchain" in (dist.metadata.get_all("Provides-Extra") or [])


def test_pyproject_names_the_distribution() -> None:
    pyproject = (REPO / "sdk-python" / "pyproject.toml").read_text()
    assert re.search(rf'^name = "{DISTRIBUTION}"$', pyproject, flags=re.M), pyproject


def documents() -> List[Path]:
    found = [REPO / "README.md", REPO / "sdk-python" / "README.md", REPO / "sdk-rust" / "README.md"]
    found += sorted((REPO / "docs").glob("*.md"))
    found += sorted((REPO / "sdk-python" / "python").rglob("*.py"))
    return found


# What may follow `pip install` when it installs this SDK: the distribution's own name
# or the source tree, each with or without extras.
OURS = re.compile(r"""^["']*(agentid-client|\./sdk-python)(\[[a-z,]+\])?["']*$""")
# Anything that looks like a name of this SDK: agentid, agentid-sdk, "agentid[langchain]".
LOOKS_LIKE_US = re.compile(r"""^["']*(agentid([-_][a-z]+)?|\./sdk-python)(\[[a-z,]+\])?["']*$""")


def test_every_install_line_names_agentid_client() -> None:
    checked = 0
    wrong = []
    for path in documents():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"pip3? install((?:\s+[^\s`#|)]+)+)", line):
                for word in match.group(1).split():
                    if word.startswith("-") or not LOOKS_LIKE_US.match(word):
                        continue
                    checked += 1
                    if not OURS.match(word):
                        wrong.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not wrong, "install lines that fetch somebody else's package:\n" + "\n".join(wrong)
    assert checked >= 2, "no install line of this SDK was found"
