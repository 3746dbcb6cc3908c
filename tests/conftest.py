"""Shared test helpers: the repository root, a clean environment, and running scripts as users do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: ../shared/cases/CASES.md N1 (and more of its kind): invalid run names and the reason each gets.
N1_INVALID_NAMES = [
    ("1run", "must start with a letter"),
    ("-run", "must start with a letter"),
    ("run-", "must end with a letter or digit"),
    ("run name", "character ' ' at position 3"),
    ("exp/1", "character '/' at position 3"),
    ("", "must not be empty"),
    ("a---b", "at most two"),
    ("ünï", "character 'ü' at position 0"),
    ("r" * 64, "at most 63 characters"),
]

# Set for the whole test run: no test may start a SkyPilot API server by accident.
os.environ["SKYPILOT_DISABLE_LOCAL_API_SERVER"] = "1"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without skyops/SkyPilot settings a developer may have exported,
    plus `extra`. Keeps PATH, HOME and the uv/pip settings that find torch's CPU wheel."""
    drop_prefixes = ("SKYOPS_", "SKYPILOT_", "TORCHELASTIC_")
    drop = {
        "VIRTUAL_ENV",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "DATA_DIR",
        "RUN_ID",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(drop_prefixes)}
    if "UV_FIND_LINKS" not in env and env.get("PIP_FIND_LINKS"):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
    env["SKYPILOT_DISABLE_LOCAL_API_SERVER"] = "1"
    env.update(extra or {})
    return env


def run_script(
    script: str | Path,
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = 300,
    via_uv: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a repository script the way job.yaml and nox do (`uv run --script`), capturing output."""
    cmd = (
        ["uv", "run", "--quiet", "--script", str(script), *args]
        if via_uv
        else [sys.executable, str(script), *args]
    )
    return subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def repo() -> Path:
    return REPO
