"""Shared test helpers: the repository root, a clean environment, and running scripts as users do."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import _config
import pytest

REPO = Path(__file__).resolve().parents[1]

#: docs/field-cases.md N1 (and more of its kind): invalid run names and the reason each gets.
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
# nox points uv's project commands and interpreter at its own session venv (UV_PROJECT_ENVIRONMENT,
# UV_PYTHON); the jobs the tests run must build and use their own.
for _key in ("UV_PROJECT_ENVIRONMENT", "UV_PYTHON"):
    os.environ.pop(_key, None)
# Machines that set PYTHONDONTWRITEBYTECODE make every test process compile SkyPilot and torch again at
# import (`import sky` 5.8 s without a bytecode cache, 2.4 s with). The test run caches bytecode, for
# itself and the processes it starts, the first time each module is imported.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False
# ... and never compiles whole environments: job.yaml's setup compiles each node's environments
# (UV_COMPILE_BYTECODE, default 1), 23 s of CPU for a torch environment, and the tests' emulated nodes
# build one per script, node slot and node rank (uv keys a script's environment by its path).
os.environ["UV_COMPILE_BYTECODE"] = "0"
#: SkyPilot 0.14.1's accelerator catalog (schema v8), enough for the resources the tests build offline.
CATALOG_CSV = "AcceleratorName,Clouds\nA100,\"['AWS', 'GCP']\"\nH100,\"['AWS', 'GCP']\"\nL4,\"['GCP']\"\n"


def seed_runtime_dir(root: Path) -> Path:
    """A SKY_RUNTIME_DIR with the accelerator catalog and no .md5 sidecar, which SkyPilot never re-fetches
    (building resources with accelerators reads it, and would fetch it from the internet when missing)."""
    catalog = root / ".sky" / "catalogs" / "v8" / "common"
    catalog.mkdir(parents=True, exist_ok=True)
    (catalog / "accelerators.csv").write_text(CATALOG_CSV)
    return root


# SkyPilot reads SKY_RUNTIME_DIR when it is imported: seed it before any test module can import sky.
if "sky" not in sys.modules and "SKY_RUNTIME_DIR" not in os.environ:
    os.environ["SKY_RUNTIME_DIR"] = str(
        seed_runtime_dir(Path(tempfile.mkdtemp(prefix="skyops-sky-runtime-")))
    )
os.environ.setdefault("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")  # SkyPilot's telemetry goes to the internet

# The local backend's run state (job ids, run directories, default DATA_DIR) goes to a folder of this
# test run, never into the repository's .skyops/: `make status` shows only the user's own jobs.
# Under pytest-xdist each worker gets a folder of its own, so job ids and `jobs.py status` stay per worker.
STATE = Path(os.environ.get("SKYOPS_STATE_DIR") or tempfile.mkdtemp(prefix="skyops-test-state-"))
if os.environ.get("PYTEST_XDIST_WORKER") and STATE.name != os.environ["PYTEST_XDIST_WORKER"]:
    STATE = STATE / os.environ["PYTEST_XDIST_WORKER"]
os.environ["SKYOPS_STATE_DIR"] = str(STATE)


#: launch.py as a person starts it in the repository root (`uv run --script`), with no .env file.
UV_LAUNCH = ("uv", "run", "--quiet", "--script", "scripts/local/launch.py", "--env-file", os.devnull)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without skyops/SkyPilot settings a developer may have exported,
    plus `extra`. Keeps PATH, HOME and the uv/pip settings that find torch's CPU wheel."""
    env = _config.isolated_env(os.environ, STATE)
    if "UV_FIND_LINKS" not in env and env.get("PIP_FIND_LINKS"):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
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


def mount_tmpfs(path: Path, options: str) -> None:
    """Mount a small tmpfs on `path`; skips the test where mounting is not allowed (not root, no
    CAP_SYS_ADMIN, no mount(8)). Unmounted by the caller."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
    except FileNotFoundError:
        pytest.skip("no mount(8) here: a real full or read-only file system needs it")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")


def unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], check=True, capture_output=True)


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A real full file system: a 64 KiB tmpfs filled to the last block, so every write ends in ENOSPC
    (creating folders still works). Needs root and mount; skipped where unavailable."""
    path = tmp_path / "full"
    mount_tmpfs(path, "size=64k,mode=0755")
    try:
        fd = os.open(path / ".filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as err:
            assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield path
    finally:
        unmount(path)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (EROFS on every write, root included, unlike chmod 0o555): a
    tmpfs mounted ro. Needs root and mount; skipped where unavailable."""
    path = tmp_path / "ro"
    mount_tmpfs(path, "ro,size=64k")
    try:
        yield path
    finally:
        unmount(path)


_WARM_UP: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Once per test run (not per xdist worker), before any test: compile the bytecode of what the torch
    jobs import into uv's cache, so the ~20 torch environments the run builds share it
    (tests/_bytecode.py; docs/decisions/test-suite.md)."""
    if hasattr(config, "workerinput"):
        return
    script = Path(__file__).with_name("_bytecode.py")
    proc = subprocess.Popen(  # in a session of its own: a timeout ends its process pool too
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=600)
        _WARM_UP.append(out.strip() or f"exit {proc.returncode}: {err.strip()[-500:]}")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        _WARM_UP.append("stopped after 600 s")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _WARM_UP:
        terminalreporter.write_line(f"bytecode warm-up (tests/_bytecode.py): {line}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (stable otherwise): pytest-xdist hands tests out in this order, so the long
    end-to-end runs start while the quick ones fill the gaps, instead of one of them ending the run
    alone on one core (docs/decisions/test-suite.md)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
