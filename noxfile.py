"""nox sessions: the orchestra. Logic lives in scripts/; sessions only set up environments and call it.

nox -s tests            # pytest (what `make test` and CI run)
nox -s lint             # ruff check + ruff format --check
nox -s locks            # the committed script locks (<script>.py.lock) match their scripts
nox -s types            # mypy on scripts/local and scripts/remote
nox -s contract         # job.yaml, .env.example, docs/contract.md, README agree with scripts/remote/_contract.py
nox -s nccl -- --nproc 4   # NCCL/gloo preflight on this machine
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "uv"
nox.options.error_on_external_run = True
# Keep a session's venv between runs (its packages are re-checked, not reinstalled): the test venv
# then keeps the bytecode its first run cached (tests/conftest.py), `import sky` 2.4 s instead of 5.8 s.
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "locks", "contract", "types", "tests"]

ROOT = Path(__file__).parent
SCRIPTS = sorted(p for p in (ROOT / "scripts").rglob("*.py") if not p.name.startswith("_"))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
TEST_DEPS = ["pytest==9.2.0", "pytest-timeout==2.4.0", "pytest-xdist==3.8.0"]
#: pytest-xdist workers: 2 x CPUs + 1, from 3 to 8. The slow tests mostly wait on real processes (grace
#: periods, heartbeats, servers that never answer), so there are more workers than cores;
#: SKYOPS_TEST_WORKERS overrides (0: one process). The measurements: docs/decisions/test-suite.md.
TEST_WORKERS = os.environ.get("SKYOPS_TEST_WORKERS") or str(max(3, min(2 * (os.cpu_count() or 1) + 1, 8)))
RUFF = "ruff==0.17.6"
#: mypy and the stubs of the typed third-party packages the scripts use.
TYPE_DEPS = [
    "mypy==1.18.2",
    "types-PyYAML==6.0.12.20261122",
    "types-psutil==7.2.2.20261111",
    "httpx==0.28.1",
    "stamina==26.1.0",
    "python-dotenv==1.2.4",
]

# torch's CPU build lies in the wheel folder pip is configured with (find-links); let uv use it too,
# so no session downloads a multi-GB CUDA build. See README, "Offline torch".
if "UV_FIND_LINKS" not in os.environ and os.environ.get("PIP_FIND_LINKS"):
    os.environ["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]

# Bytecode compiled when uv installs an environment (UV_COMPILE_BYTECODE): for the script environments
# a session builds and then reuses from uv's cache (nccl). Not for the test session: nox rebuilds its
# venv on every run (+35 s to compile), and the tests build throwaway torch environments (+24 s); the
# environments the tests' jobs use are compiled by job.yaml's setup. docs/decisions/locked-environments.md
COMPILE_BYTECODE = {"UV_COMPILE_BYTECODE": os.environ.get("UV_COMPILE_BYTECODE", "1")}


def script_dependencies(paths: list[Path]) -> list[str]:
    """The union of the PEP 723 `dependencies` of the given scripts, sorted."""
    deps: set[str] = set()
    for path in paths:
        deps.update(nox.project.load_toml(path).get("dependencies", []))
    return sorted(deps)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest); posargs go to pytest."""
    session.install(*TEST_DEPS, *script_dependencies(SCRIPTS + EXAMPLES))
    # One test at a time to whichever worker is free (`load`, chunks of 1: larger first chunks would
    # hand every slow test to the first worker); with the slow tests first (tests/conftest.py), the
    # longest start first and the short ones fill in (durations: 0-45 s).
    workers = ["-n", TEST_WORKERS, "--dist", "load", "--maxschedchunk", "1"] if TEST_WORKERS != "0" else []
    session.run("pytest", *workers, *session.posargs, env={"SKYPILOT_DISABLE_LOCAL_API_SERVER": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """Check style: ruff check and ruff format --check; posargs go to ruff check."""
    session.install(RUFF)
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_backend="none")
def locks(session: nox.Session) -> None:
    """Check that every committed script lock matches its script (uv lock --check); posargs go to uv."""
    # job.yaml's setup and run use these locks `--locked`: a stale one would stop every node at setup.
    # Re-lock after changing a script's dependencies: uv lock --script <script>; after moving its
    # exclude-newer date: uv lock --upgrade --script <script> (uv keeps a lock whose date moved later).
    locked = [p for p in SCRIPTS + EXAMPLES + BENCHMARKS if p.with_name(p.name + ".lock").is_file()]
    for script in locked:
        rel = str(script.relative_to(ROOT))
        session.run("uv", "lock", "--check", "--script", rel, *session.posargs, external=True)


@nox.session(venv_backend="none")
def contract(session: nox.Session) -> None:
    """Check job.yaml's envs, .env.example, docs/contract.md and the README against the contract's table."""
    session.run("uv", "run", "--locked", "--quiet", "--script", "scripts/local/check_contract.py", *session.posargs,
                external=True)  # fmt: skip


@nox.session
def types(session: nox.Session) -> None:
    """Type-check both sides with mypy (torch, SkyPilot, matplotlib untyped here); posargs go to mypy."""
    session.install(*TYPE_DEPS)
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").rglob("*.py"))
    session.run(
        "mypy", "--python-version", "3.11", "--ignore-missing-imports", "--cache-dir", ".nox/mypy-cache",
        *files, *session.posargs, env={"MYPYPATH": "scripts/local:scripts/remote"},
    )  # fmt: skip


@nox.session(default=False, venv_backend="none")
def nccl(session: nox.Session) -> None:
    """Run the NCCL preflight (gloo on CPU) on this machine; posargs go to nccl_test.py."""
    # No venv of nox's own: uv builds (and caches) the script's environment, so two runs at once share it.
    # stderr=None: the script's log lines keep to stderr (nox merges them into stdout by default), so
    # `nox -s nccl -- --json` prints the report alone on stdout, ready for a pipe into jq.
    session.run(
        "uv",
        "run",
        "--script",
        "scripts/remote/nccl_test.py",
        *session.posargs,
        external=True,
        stderr=None,
        env=COMPILE_BYTECODE,
    )


@nox.session(name="sky-e2e", default=False)
def sky_e2e(session: nox.Session) -> None:
    """End to end against a real local SkyPilot API server (own HOME and port, loopback only); posargs go to pytest."""
    scripts = [ROOT / "scripts/local/launch.py", ROOT / "scripts/local/jobs.py"]
    session.install(*TEST_DEPS, *script_dependencies(scripts))
    session.run("pytest", "tests/test_sky_e2e.py", *session.posargs, env={"SKYOPS_SKY_E2E": "1"})
