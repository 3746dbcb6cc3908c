"""The interpreter and the environment the job and the NCCL preflight run with on this node.

The interpreter follows _job_command's table: the node's python3 for a plain script or module, the
script's or project's own uv environment (built by job.yaml's setup, checked here) for one with a
PEP 723 block or a pyproject.toml, none for an executable. The environment is the node's, without
skyops' and uv's own Python environments, with the job's variables.
"""

from __future__ import annotations

import functools
import logging
import math
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from _contract import EXIT_FAILURE, EXIT_NOT_FOUND
from _job_command import (
    Job,
    Kind,
    classify,
    foreign_prefixes,
    node_environment,
    project_venv,
    sync_command,
    uv_environment,
    with_venv,
)
from _proctree import Phase
from _supervisor_config import Config

log = logging.getLogger("run")


#: Runs argv as one step of the attempt: (what it does, named for people ("in the NCCL preflight");
#: argv; env; deadlines besides the attempt's runtime budget, each (monotonic seconds, reason); an fd
#: for its stdout, None: the supervisor's) -> how the step's process tree ended.
Step = Callable[
    [str, Sequence[str], Mapping[str, str], Sequence[tuple[float | None, str]], int | None], Phase
]


class JobEnv:
    """The job's and the preflight's interpreters and environments, for the configuration `cfg`."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @functools.cached_property
    def node_env(self) -> dict[str, str]:
        """The node's environment without skyops' and uv's own Python environments (the supervisor's
        `uv run`, the launcher's on the local backend, pyenv's shims): the base of the job's and the
        preflight's environments, and where the node's python3 is looked up (_job_command)."""
        env = self.cfg.env
        own = sys.prefix if sys.prefix != sys.base_prefix else None
        return node_environment(env, foreign_prefixes(env, own_venv=own))

    def python(self, job: Job | Path, step: Step) -> tuple[str | None, Phase | None]:
        """The interpreter for `job` (a Job, or a script path; see _job_command's table): the node's
        python3, or the job's own environment's after building it (`uv sync`, run as a `step`); None
        for an executable (run as is). A Phase instead if that failed."""
        if isinstance(job, Path):
            job = classify([str(job)], Path.cwd())
        if job.kind is Kind.EXECUTABLE:
            return None, None
        if job.kind is Kind.PYTHON:
            python = shutil.which("python3", path=self.node_env.get("PATH", ""))
            if python is None:
                log.error(
                    "no python3 on the node's PATH for %s: %s", job.target, self.node_env.get("PATH", "")
                )
                return None, Phase(None, EXIT_NOT_FOUND)
            return python, None
        uv = self.cfg.uv
        if uv is None:
            log.error("uv is not on PATH: %s needs it", job.describe())
            return None, Phase(None, EXIT_FAILURE)
        env = uv_environment(self.cfg.env)
        # job.yaml's setup built this environment: check it offline (uv's cache, no index round
        # trip), against the script's or project's committed lock where it has one (a stale lock
        # fails). Only an environment that setup never built (or whose packages left the cache)
        # resolves, online. docs/decisions/locked-environments.md

        def sync(*flags: str) -> Phase:
            argv = sync_command(job, uv, *flags)
            assert argv is not None
            what = f"while preparing the environment of {job.target} (uv sync)"
            return step(what, argv, env, (), sys.stderr.fileno())

        phase = sync("-qq", "--offline")  # silent: the online try below reports any error
        if phase.stop is None and phase.code != 0:
            log.info("the environment of %s cannot be built offline; resolving it online", job.target)
            phase = sync("--quiet")
        if phase.stop is not None or phase.code != 0:
            log.error("%s failed (exit %s)", shlex.join(sync_command(job, "uv") or []), phase.code)
            return None, Phase(phase.stop, phase.code if phase.stop else EXIT_FAILURE)
        if job.kind is Kind.PROJECT and job.project is not None:
            venv_python = project_venv(job.project, env) / "bin" / "python"
            if not venv_python.exists():
                log.error("uv sync --project %s built no %s", job.project, venv_python)
                return None, Phase(None, EXIT_FAILURE)
            return str(venv_python), None
        find = [uv, "python", "find", "--script", str(job.source)]
        log.debug("running: %s", shlex.join(find))
        try:
            out = subprocess.run(find, env=env, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            log.error("uv python find --script %s failed: %s", job.source, exc)
            return None, Phase(None, EXIT_FAILURE)
        return out.strip().splitlines()[-1], None

    def has_torch(self, python: str) -> bool:
        """Whether `python` can import torch (torchrun is part of torch), without importing it."""
        probe = [
            python,
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)",
        ]
        try:
            return subprocess.run(probe, env=self.node_env, capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def env(self, attempt: int, venv: Path | None = None, **extra: str) -> dict[str, str]:
        """The environment of attempt number `attempt`'s job: the node's (`node_env`: no trace of the
        supervisor's or the launcher's Python environments), with `venv` active as `uv run` would
        activate it (the job's own uv environment or project `.venv`), and `extra`.

        torchrun SIGKILLs its workers 30 s after it forwards a SIGTERM unless told otherwise
        (torch.distributed.run `--shutdown-timeout`, read from TORCH_ELASTIC_SHUTDOWN_TIMEOUT in torch
        2.13; older torch ignores it): it gets GRACE, so the workers do too. PYTHONUNBUFFERED=1 (unless
        set): the job's output is its sign of life until it touches HEARTBEAT_FILE, so a Python job's
        prints must reach the supervisor as they are made, not in 8 KiB blocks (torchrun starts its
        workers with `-u` anyway; docs/decisions/hang-detection.md)."""
        env = with_venv(self.node_env, venv)
        env.update(
            DATA_DIR=str(self.cfg.data_dir), RUN_ID=self.cfg.run_id, SKYOPS_ATTEMPT=str(attempt), **extra
        )
        env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(math.ceil(self.cfg.limits.grace_s)))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env
