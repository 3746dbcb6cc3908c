"""Opt-in end to end against a real local SkyPilot API server (`nox -s sky-e2e`; SKYOPS_SKY_E2E=1).

The server gets its own HOME and SKYPILOT_API_SERVER_LOCAL_PORT and is stopped with `sky api stop`
under the same environment. A sitecustomize on PYTHONPATH guards every Python process of the run
(server, launcher, jobs.py): a connection or name lookup for anything but loopback is refused and
recorded, and the test asserts the record is empty. Shown: the real error path (no cloud enabled ->
one actionable line, exit 3, from the class of SkyPilot's error) and that status and cancel work
against the server. The server is started as the README says, `sky api start`: the scripts never
start one (docs/decisions/local-api-server.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "scripts" / "local"

pytestmark = pytest.mark.skipif(os.environ.get("SKYOPS_SKY_E2E") != "1", reason="opt-in: nox -s sky-e2e")

GUARD = """
import os, socket
_LOG = os.environ["SKYOPS_NET_GUARD_LOG"]
_LOOP = ("127.", "::1", "localhost", "0.0.0.0", "::")

def _ok(host):
    host = "" if host is None else str(host)
    return host == "" or host.startswith(_LOOP) or host.startswith("/")

def _deny(what):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()} {what}\\n")
    raise OSError(101, f"skyops e2e guard: no network beyond loopback ({what})")

_connect, _connect_ex, _gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _ok(address[0]):
        _deny(f"connect {address!r}")
    return _connect(self, address)

def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _ok(address[0]):
        _deny(f"connect_ex {address!r}")
    return _connect_ex(self, address)

def getaddrinfo(host, *args, **kwargs):
    if not _ok(host if not isinstance(host, bytes) else host.decode()):
        _deny(f"getaddrinfo {host!r}")
    return _gai(host, *args, **kwargs)

socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real local API server; yields the environment that reaches it."""
    root = tmp_path_factory.mktemp("sky-e2e")
    home, guard = root / "home", root / "guard"
    home.mkdir()
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    catalog = home / ".sky" / "catalogs" / "v8" / "common"
    catalog.mkdir(parents=True)
    (catalog / "accelerators.csv").write_text("AcceleratorName,Clouds\nH100,\"['AWS']\"\n")
    # The server checks pypi.org for a newer release unless its version cache is fresh: seed it.
    (home / ".sky" / "version_cache.json").write_text(
        json.dumps({"release_version": None, "cached_at": time.time()})
    )
    port = free_port()
    drop = ("SKYOPS_", "SKYPILOT_", "SKY_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        HOME=str(home),
        SKY_RUNTIME_DIR=str(home),
        SKYPILOT_API_SERVER_LOCAL_PORT=str(port),
        SKYPILOT_DISABLE_USAGE_COLLECTION="1",
        SKYOPS_NET_GUARD_LOG=str(root / "net-guard.log"),
        PYTHONPATH=os.pathsep.join([str(guard), str(LOCAL)]),
        NO_PROXY="*",
    )
    sky_cli = str(Path(sys.executable).parent / "sky")
    start = subprocess.run([sky_cli, "api", "start"], env=env, capture_output=True, text=True, timeout=240)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    try:
        yield env
    finally:
        stop = subprocess.run([sky_cli, "api", "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr[-2000:]
        log = root / "net-guard.log"
        assert not log.exists() or not log.read_text().strip(), f"non-loopback attempts: {log.read_text()}"


def run(env: dict[str, str], script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(LOCAL / script), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


def test_no_cloud_enabled_is_one_actionable_line_exit_3(server: dict[str, str]) -> None:
    proc = run(server, "launch.py", "--backend", "sky", "--skip-git-check", "--run", "e2e", "--gpus", "0",
               "--set", "WANDB_API_KEY=", "--set", "HF_TOKEN=", "--print-id", "examples/train.py")  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("launch.py: error:")]
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert proc.stdout == "" and len(errors) == 1, proc.stderr[-3000:]
    # sky.exceptions.NoCloudAccessError, raised on the server, told apart by its class on the client
    assert errors[0].startswith("launch.py: error: no cloud enabled for SkyPilot: run `sky check`"), errors
    assert "Traceback" not in proc.stderr


def test_status_and_cancel_against_the_server(server: dict[str, str]) -> None:
    status = run(server, "jobs.py", "--backend", "sky", "status")
    assert status.returncode == 0, status.stderr[-3000:]
    assert status.stdout.split()[:7] == [
        "ID",
        "NAME",
        "STATUS",
        "RECOVERIES",
        "SUBMITTED",
        "DURATION",
        "FAILURE_REASON",
    ]
    cancel = run(server, "jobs.py", "--backend", "sky", "cancel", "424242")
    assert cancel.returncode == 2, cancel.stderr[-3000:]
    assert cancel.stderr.strip().splitlines()[-1].startswith("jobs.py: error: ID 424242: no such managed job")
