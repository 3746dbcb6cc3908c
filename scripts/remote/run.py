#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["psutil==7.2.2"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Node-side supervisor: run the job, watch it, tear its whole tree down, exit with a code SkyPilot acts on.

Usage: scripts/remote/run.py [--heartbeat-timeout S] [--startup-grace S] [--max-runtime-hours H]
                             [--grace S] [--data-dir DIR] [--run-id ID] [options] -- CMD [ARGS...]

One invocation is one *attempt* of the managed job on this node. It reads the attempt ledger
(`$DATA_DIR/$RUN_ID/supervisor/ledger-<managed_job_id>-<task_idx>.jsonl`), optionally runs the NCCL
preflight, then runs CMD: a `.py` file under torchrun when the world size is above 1 (in its own uv
environment when it has a PEP 723 block), anything else as is. CMD runs in its own session with
`HEARTBEAT_FILE` and `SKYOPS_ATTEMPT` set. The supervisor waits on events (SIGCHLD, SIGTERM, SIGINT,
the next monitor deadline), never on a fixed poll. Every way out ends with a teardown of every
descendant (also those in their own sessions): SIGTERM, `--grace` seconds, SIGKILL, reap.

Every node writes `result-node<rank>.json` at the end of its attempt. At the start of the next one
every node folds the other nodes' results into the ledger's attempts (rank 0 also records them), so an
attempt's outcome is its most significant node result (bad node > failure > cancel or preemption):
a crash loop on any node is caught although SkyPilot then stops the others (rank 0 exits 143).

Configuration precedence: flags > process environment (the job.yaml envs) > docs/contract.md defaults.

Exit codes (docs/contract.md; constants in _contract.py), each with a reason string:
  0    completed, max_runtime
  N    job_failed: the job's own non-zero code (128+S when a signal S killed it); under torchrun, the
       first failed worker's (torchrun itself exits 1 for any worker failure)
  1    job_failed_reserved_code (the job itself exited 86 or 87), recover_cap
  2    bad_input (one line on stderr naming the flag or key)
  86   heartbeat_timeout, preflight_failed (bad node: job.yaml recover_on_exit_codes)
  87   crash_loop
  130  sigint;  143  sigterm

Why a ledger at all: docs/decisions/restart-tracking.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import functools
import json
import logging
import math
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import psutil
from _contract import (
    EXIT_BAD_INPUT,
    EXIT_BAD_NODE,
    EXIT_CRASH_LOOP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    REASON_COMPLETED,
    REASON_CRASH_LOOP,
    REASON_DATA_DIR,
    REASON_HEARTBEAT_TIMEOUT,
    REASON_JOB_FAILED,
    REASON_JOB_FAILED_RESERVED,
    REASON_MAX_RUNTIME,
    REASON_MAX_RUNTIME_BEFORE_JOB,
    REASON_PREFLIGHT_ERROR,
    REASON_PREFLIGHT_FAILED,
    REASON_RECOVER_CAP,
    REASON_SIGINT,
    REASON_SIGTERM,
    RESERVED_EXIT_CODES,
)
from _sky_self import cancel_own_managed_job

log = logging.getLogger("run")

#: Defaults of the job.yaml env keys this script reads (docs/contract.md, "Env keys").
DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        "HEARTBEAT_TIMEOUT": "600",
        "STARTUP_GRACE": "1200",
        "MAX_RUNTIME_HOURS": "24",
        "GRACE": "60",
        "CRASH_LOOP_ATTEMPTS": "3",
        "CRASH_LOOP_WINDOW_MINUTES": "60",
        "CRASH_LOOP_MIN_MINUTES": "5",
        "MAX_RECOVER_RESTARTS": "10",
        "NCCL_PREFLIGHT": "1",
        "DATA_DIR": "/skyops-data",
        "RUN_ID": "skyops-train",
    }
)

#: Seconds between the ledger's `alive` records: bounds the runtime lost from the budget when an
#: attempt dies without writing its `end` record (a VM that vanishes on preemption).
ALIVE_INTERVAL_S = 300.0
#: Seconds to wait for SIGKILLed processes to be reaped before reporting them as survivors
#: (a process in uninterruptible sleep, e.g. stuck in a GPU driver, cannot die sooner).
KILL_WAIT_S = 10.0
#: File timestamps come from the kernel's coarse clock (a few ms behind); tolerated in age estimates.
MTIME_SLACK_S = 0.05
#: Seconds for the API server to accept a node's cancel of its own managed job, and to wait after it for
#: SkyPilot's teardown (its controller looks for cancel requests every 15 s; docs/decisions/endings.md).
SELF_CANCEL_TIMEOUT_S = 60.0
SELF_CANCEL_WAIT_S = 120.0
#: Keys that configure a notification channel (scripts/remote/notify.py); with none set, nothing runs.
NOTIFY_KEYS = ("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN")
#: Seconds a notification may delay the node's exit: notify.py caps all channels at 30 s, plus uv's start.
NOTIFY_CAP_S = 35.0
#: Seconds node rank 0 waits for the other nodes' results before it calls an attempt a success.
PEERS_WAIT_S = 10.0
#: Ledger `end` reason for an attempt that never recorded its end (written by the next attempt).
LEDGER_LOST = "lost"
#: Exit codes of a command that could not be started (POSIX shell convention).
EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE = 127, 126

#: A PEP 723 inline metadata block (https://peps.python.org/pep-0723/#specification).
PEP723_RE = re.compile(r"(?m)^# /// script[ \t]*$\n(?:^#(?:[ \t].*)?$\n)*?^# ///[ \t]*$")

# Linux prctl(2) options.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


class BadInput(Exception):
    """A user error: the message names the flag or key; main() prints it on one line and exits 2."""


# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Distributed:
    """torch.distributed settings of this node, as written by configure_environment.py."""

    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    world_size: int = 1


@dataclass(frozen=True)
class Identity:
    """Where this attempt runs: SkyPilot's node rank, managed job id and task index (0 on a laptop)."""

    node_rank: int = 0
    num_nodes: int = 1
    managed_job_id: int = 0
    task_index: int = 0
    task_id: str = ""
    cluster_info: Mapping[str, object] | None = None


@dataclass(frozen=True)
class Limits:
    """The monitors' and guards' settings. Durations in seconds; 0 turns a monitor off."""

    heartbeat_timeout_s: float
    startup_grace_s: float
    max_runtime_s: float
    grace_s: float
    crash_loop_attempts: int
    crash_loop_window_s: float
    crash_loop_min_runtime_s: float
    max_recover_restarts: int


@dataclass(frozen=True)
class Config:
    """Everything the supervisor needs, read once in main()."""

    command: tuple[str, ...]
    limits: Limits
    dist: Distributed
    identity: Identity
    data_dir: Path
    run_id: str
    preflight: bool
    preflight_script: Path
    tmp_dir: Path
    uv: str | None
    env: Mapping[str, str]
    verbose: bool = False


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("must be a number >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be a number >= 0")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("must be an integer >= 0") from None
    if value < 0:
        raise ValueError("must be an integer >= 0")
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def _run_id(text: str) -> str:
    if not text or "/" in text or text in {".", ".."}:
        raise ValueError("must be a non-empty name without '/'")
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


@dataclass(frozen=True)
class _Option:
    flag: str
    key: str
    parse: Callable[[str], object]
    help: str


OPTIONS: tuple[_Option, ...] = (
    _Option(
        "--heartbeat-timeout",
        "HEARTBEAT_TIMEOUT",
        _seconds,
        "seconds without a heartbeat before the node is declared bad; 0: off",
    ),
    _Option(
        "--startup-grace",
        "STARTUP_GRACE",
        _seconds,
        "seconds allowed before the first heartbeat (and for the preflight); 0: no limit",
    ),
    _Option(
        "--max-runtime-hours",
        "MAX_RUNTIME_HOURS",
        _seconds,
        "runtime budget over all attempts, in hours; 0: off",
    ),
    _Option("--grace", "GRACE", _seconds, "seconds between SIGTERM and SIGKILL at teardown"),
    _Option(
        "--crash-loop-attempts",
        "CRASH_LOOP_ATTEMPTS",
        _count,
        "crash-loop guard: K failed attempts ... (0: off)",
    ),
    _Option(
        "--crash-loop-window-minutes",
        "CRASH_LOOP_WINDOW_MINUTES",
        _seconds,
        "... started within W minutes ...",
    ),
    _Option(
        "--crash-loop-min-minutes",
        "CRASH_LOOP_MIN_MINUTES",
        _seconds,
        "... that average under T minutes of runtime stop the job (0: off)",
    ),
    _Option(
        "--max-recover-restarts",
        "MAX_RECOVER_RESTARTS",
        _count,
        "bad-node exits allowed per managed job before they count as plain failures",
    ),
    _Option("--data-dir", "DATA_DIR", _nonempty, "durable storage; state lives in DATA_DIR/RUN_ID/"),
    _Option("--run-id", "RUN_ID", _run_id, "the run's name"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


def _parser(env: Mapping[str, str], preflight_script: Path) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run.py",
        description=(__doc__ or "").split("\n\n")[0],
        epilog=(
            "CMD [ARGS...]: the job; a .py file runs under torchrun when WORLD_SIZE is above 1.\n"
            "Exit codes and reasons: see the module docstring and docs/contract.md."
        ),
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for opt in OPTIONS:
        now = f"{opt.key}={env[opt.key]}" if opt.key in env else DEFAULTS[opt.key]
        parser.add_argument(
            opt.flag,
            metavar=opt.key,
            help=f"{opt.help} (default: ${opt.key}, else {DEFAULTS[opt.key]}; now {now})",
        )
    preflight_now = env.get("NCCL_PREFLIGHT", DEFAULTS["NCCL_PREFLIGHT"])
    parser.add_argument(
        "--preflight",
        action=argparse.BooleanOptionalAction,
        help=f"run the NCCL preflight at the start of the attempt (default: $NCCL_PREFLIGHT, else 1; now {preflight_now})",
    )
    parser.add_argument(
        "--preflight-script",
        type=Path,
        default=preflight_script,
        help=f"the preflight (default: {preflight_script})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, commands and tracebacks")
    # argparse never sees what follows `--` (load_config splits it off), so the usage says it.
    parser.usage = parser.format_usage().removeprefix("usage: ").rstrip() + " -- CMD [ARGS...]"
    return parser


def _option_value(opt: _Option, flag_value: str | None, env: Mapping[str, str]) -> object:
    source, text = (opt.flag, flag_value) if flag_value is not None else (opt.key, env.get(opt.key))
    if text is None:
        source, text = opt.key, DEFAULTS[opt.key]
    try:
        return opt.parse(text.strip())
    except ValueError as exc:
        raise BadInput(f"{source}={text!r}: {exc}") from None


def _env_int(env: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{key}={raw!r}: not an integer") from None
    if value < minimum:
        raise BadInput(f"{key}={raw!r}: must be >= {minimum}")
    return value


def distributed_from_env(env: Mapping[str, str]) -> Distributed:
    """torch.distributed settings from configure_environment.py's keys; missing keys mean one process.

    Raises BadInput naming the key when a value is not a valid integer.
    """
    nnodes = _env_int(env, "NNODES", 1, minimum=1)
    nproc = _env_int(env, "NPROC_PER_NODE", 1, minimum=1)
    node_rank = _env_int(env, "NODE_RANK", 0)
    if node_rank >= nnodes:
        raise BadInput(f"NODE_RANK={node_rank}: must be below NNODES={nnodes}")
    return Distributed(
        nnodes=nnodes,
        node_rank=node_rank,
        nproc_per_node=nproc,
        master_addr=env.get("MASTER_ADDR", "").strip() or "127.0.0.1",
        master_port=_env_int(env, "MASTER_PORT", 29500, minimum=1),
        world_size=_env_int(env, "WORLD_SIZE", nnodes * nproc, minimum=1),
    )


def task_index_from(task_id: str) -> int:
    """The task index of a managed job's SKYPILOT_TASK_ID (`..._<job_id>-<task_idx>`); 0 when absent."""
    suffix = task_id.strip().rsplit("-", 1)[-1] if "-" in task_id else ""
    return int(suffix) if suffix.isdigit() else 0


def identity_from_env(env: Mapping[str, str], nnodes: int) -> Identity:
    """This node's SkyPilot identity; laptop defaults (rank 0, job 0, task 0) when the keys are absent.

    Raises BadInput naming the key for a non-integer rank, node count or job id. A malformed
    SKYPILOT_CLUSTER_INFO is only logged: it is informational.
    """
    managed = env.get("SKYPILOT_MANAGED_JOB_ID", "").strip()
    task_id = env.get("SKYPILOT_TASK_ID", "").strip()
    info: Mapping[str, object] | None = None
    raw_info = env.get("SKYPILOT_CLUSTER_INFO", "").strip()
    if raw_info:
        try:
            parsed = json.loads(raw_info)
            info = parsed if isinstance(parsed, dict) else None
        except ValueError:
            log.warning("SKYPILOT_CLUSTER_INFO is not JSON; the ledger records no cluster info")
    return Identity(
        node_rank=_env_int(env, "SKYPILOT_NODE_RANK", 0),
        num_nodes=_env_int(env, "SKYPILOT_NUM_NODES", nnodes, minimum=1),
        managed_job_id=_env_int(env, "SKYPILOT_MANAGED_JOB_ID", 0),
        task_index=task_index_from(task_id) if managed else 0,
        task_id=task_id,
        cluster_info=info,
    )


def load_config(argv: Sequence[str], env: Mapping[str, str], *, tmp_dir: Path, here: Path) -> Config:
    """Build the configuration from the command line and the environment (flags > env > defaults).

    `here` is the folder of run.py (the preflight script's default place). Raises BadInput naming
    the flag or key on any bad value, a missing CMD, or a `.py` CMD that does not exist.
    Raises SystemExit(0) for --help.
    """
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    options, command = argv[:split], tuple(argv[split + 1 :])
    args = _parser(env, here / "nccl_test.py").parse_args(options)
    if not command:
        raise BadInput("missing CMD: usage: run.py [options] -- CMD [ARGS...]")
    values = {
        opt.key: _option_value(opt, getattr(args, opt.flag[2:].replace("-", "_")), env) for opt in OPTIONS
    }
    if args.preflight is not None:
        preflight = bool(args.preflight)
    else:
        preflight = bool(_option_value(_Option("--preflight", "NCCL_PREFLIGHT", _flag, ""), None, env))
    limits = Limits(
        heartbeat_timeout_s=values["HEARTBEAT_TIMEOUT"],  # type: ignore[arg-type]
        startup_grace_s=values["STARTUP_GRACE"],  # type: ignore[arg-type]
        max_runtime_s=values["MAX_RUNTIME_HOURS"] * 3600.0,  # type: ignore[operator]
        grace_s=values["GRACE"],  # type: ignore[arg-type]
        crash_loop_attempts=values["CRASH_LOOP_ATTEMPTS"],  # type: ignore[arg-type]
        crash_loop_window_s=values["CRASH_LOOP_WINDOW_MINUTES"] * 60.0,  # type: ignore[operator]
        crash_loop_min_runtime_s=values["CRASH_LOOP_MIN_MINUTES"] * 60.0,  # type: ignore[operator]
        max_recover_restarts=values["MAX_RECOVER_RESTARTS"],  # type: ignore[arg-type]
    )
    dist = distributed_from_env(env)
    uv = shutil.which("uv", path=env.get("PATH"))
    job = Path(command[0])
    if job.suffix == ".py":
        if not job.is_file():
            raise BadInput(f"CMD {command[0]}: no such file")
        if python_kind(job) == "uv" and uv is None:
            raise BadInput(f"CMD {command[0]}: has a PEP 723 block but uv is not on PATH")
    return Config(
        command=command,
        limits=limits,
        dist=dist,
        identity=identity_from_env(env, dist.nnodes),
        data_dir=Path(values["DATA_DIR"]),  # type: ignore[arg-type]
        run_id=values["RUN_ID"],  # type: ignore[arg-type]
        preflight=preflight,
        preflight_script=args.preflight_script,
        tmp_dir=tmp_dir,
        uv=uv,
        env=MappingProxyType(dict(env)),
        verbose=args.verbose,
    )


# --------------------------------------------------------------------------------------------------
# The job's command


def has_pep723_block(text: str) -> bool:
    """Whether a script's source text carries a PEP 723 `# /// script` block."""
    return PEP723_RE.search(text if text.endswith("\n") else text + "\n") is not None


def python_kind(path: Path) -> str | None:
    """How to run `path`: "uv" (a `.py` with a PEP 723 block), "python" (other `.py`), None (as is)."""
    if path.suffix != ".py":
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "python"
    return "uv" if has_pep723_block(text) else "python"


#: Runs torch.distributed.run (torchrun) and, when a worker fails, writes the first failure (the
#: "Root Cause" of torchrun's summary) as JSON to the path given as its first argument, then fails as
#: torchrun does (exit 1). torchrun itself reports every worker failure as 1 (its ChildFailedError), and
#: TORCHELASTIC_ERROR_FILE only receives a worker's error when the worker wrote one (`@record`), never a
#: plain `sys.exit(3)` or a signal death. Output and exit code are otherwise torchrun's own.
TORCHRUN_SHIM = """\
import json, sys
out = sys.argv.pop(1)
sys.argv[0] = "torchrun"
from torch.distributed.run import main
try:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
except ImportError:  # another torch layout: plain torchrun, its exit code 1 is reported
    ChildFailedError = ()
try:
    main()
except ChildFailedError as exc:
    try:
        rank, failure = exc.get_first_failure()
        with open(out, "w") as f:
            json.dump({"rank": rank, "local_rank": failure.local_rank, "exitcode": failure.exitcode,
                       "message": str(failure.message)[:1000]}, f)
    except Exception as note:
        print(f"run.py: cannot record the failed worker: {note}", file=sys.stderr)
    raise
"""


def build_job_command(
    command: Sequence[str],
    dist: Distributed,
    python: str | None,
    failure_file: Path | None = None,
    *,
    torchrun: bool = True,
) -> list[str]:
    """The argv that runs `command` on this node.

    `python` is the interpreter for a `.py` command (its uv environment's, or "python3"); None runs
    the command as is. A world size above 1 runs the script under torch.distributed.run (torchrun)
    with this node's rendezvous settings, through TORCHRUN_SHIM when `failure_file` is given (where
    the first failed worker's exit code is written; read it with worker_failure), unless `torchrun`
    is False (the interpreter has no torch): then one process per node, which reads NNODES,
    NODE_RANK, MASTER_ADDR and MASTER_PORT itself. Never emits a flag with an empty value.
    """
    if python is None:
        return list(command)
    script, *args = command
    if dist.world_size <= 1 or not torchrun:
        return [python, script, *args]
    launcher = ["-c", TORCHRUN_SHIM, str(failure_file)] if failure_file else ["-m", "torch.distributed.run"]
    return [
        python,
        *launcher,
        f"--nnodes={dist.nnodes}",
        f"--node-rank={dist.node_rank}",
        f"--nproc-per-node={dist.nproc_per_node}",
        f"--master-addr={dist.master_addr}",
        f"--master-port={dist.master_port}",
        script,
        *args,
    ]


@dataclass(frozen=True)
class WorkerFailure:
    """The first failed torchrun worker: its global `rank`, `local_rank`, and `code`, the job's own exit
    code (1..255; 128+N when signal N killed it, then `signal` is N)."""

    rank: int | None
    local_rank: int | None
    code: int
    signal: int | None = None

    def describe(self) -> str:
        how = f"killed by signal {self.signal}" if self.signal else f"exited {self.code}"
        local = f" (local rank {self.local_rank})" if self.local_rank is not None else ""
        return f"worker rank {self.rank}{local} {how}"


def worker_failure(path: Path) -> WorkerFailure | None:
    """The first failed worker as TORCHRUN_SHIM wrote it to `path`; None when there is no such file, it
    is not valid, or its exit code is no failure (torchrun gives -N for a death by signal N)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    raw = _code(data.get("exitcode"))
    if raw is None or raw == 0 or not -127 <= raw <= 255:
        return None
    rank, local_rank = _code(data.get("rank")), _code(data.get("local_rank"))
    if raw < 0:
        return WorkerFailure(rank, local_rank, 128 - raw, -raw)
    return WorkerFailure(rank, local_rank, raw)


# --------------------------------------------------------------------------------------------------
# Heartbeat monitor (pure: time values come in as arguments)


def heartbeat_mtime(path: Path) -> int | None:
    """The heartbeat file's mtime in ns, None when it does not exist (or cannot be read)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


@dataclass
class HeartbeatMonitor:
    """Decides staleness of one attempt's heartbeat file from monotonic time.

    Stale means: no touch for `timeout_s` seconds after the first touch, or no first touch within
    `startup_grace_s` seconds of `start` (0: no limit). Times are `time.monotonic()` seconds; the
    file's wall-clock mtime is used only to notice a touch and, when it agrees with the monotonic
    clock, to date it more precisely. A wall-clock jump therefore never brings a kill earlier.
    A touch is a change of the mtime (from `baseline_mtime_ns`, None: no file at `start`) to a value
    after `start_wall_ns`, so a file left from an earlier attempt, or restored with its old mtime,
    never counts.
    """

    timeout_s: float
    startup_grace_s: float
    start: float
    start_wall_ns: int
    baseline_mtime_ns: int | None = None
    last_beat: float | None = None
    _seen_mtime_ns: int | None = field(default=None, repr=False)
    _last_check: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._seen_mtime_ns = self.baseline_mtime_ns
        self._last_check = self.start

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def kill_deadline(self) -> float | None:
        """Monotonic time at which the job is stale unless a touch is seen; None: never."""
        if not self.enabled:
            return None
        if self.last_beat is not None:
            return self.last_beat + self.timeout_s
        return self.start + self.startup_grace_s if self.startup_grace_s > 0 else None

    def next_wakeup(self) -> float | None:
        """When to look at the file next: the kill deadline, and before the first touch also every
        `timeout_s` seconds, so a job that beats once and hangs is caught `timeout_s` after that beat."""
        deadline = self.kill_deadline()
        if not self.enabled or self.last_beat is not None:
            return deadline
        probe = self._last_check + self.timeout_s
        return probe if deadline is None else min(deadline, probe)

    def observe(self, now: float, now_wall_ns: int, mtime_ns: int | None) -> bool:
        """Record a look at the file (its mtime, None if absent) at monotonic `now`; True if stale."""
        if mtime_ns is not None and mtime_ns != self._seen_mtime_ns and self._counts(mtime_ns, now_wall_ns):
            age = (now_wall_ns - mtime_ns) / 1e9
            window = now - self._last_check
            if -MTIME_SLACK_S <= age <= window + MTIME_SLACK_S:
                beat = min(max(now - age, self._last_check), now)
            else:  # the wall clock jumped (or mtime was set by hand): date the touch now, never earlier
                beat = now
            self.last_beat = beat if self.last_beat is None else max(self.last_beat, beat)
            self._seen_mtime_ns = mtime_ns
        self._last_check = now
        deadline = self.kill_deadline()
        return deadline is not None and now >= deadline

    def _counts(self, mtime_ns: int, now_wall_ns: int) -> bool:
        # A touch carries an mtime after the attempt's start, unless the wall clock itself has since
        # gone back before the start (then any change is a touch: never a false kill).
        slack = int(MTIME_SLACK_S * 1e9)
        return mtime_ns > self.start_wall_ns - slack or now_wall_ns < self.start_wall_ns


# --------------------------------------------------------------------------------------------------
# Attempt ledger (docs/contract.md, "Data directory"; docs/decisions/restart-tracking.md)

LEDGER_EVENTS = frozenset({"start", "alive", "end", "node_result"})


def ledger_path(data_dir: Path, run_id: str, managed_job_id: int, task_index: int) -> Path:
    """`$DATA_DIR/$RUN_ID/supervisor/ledger-<managed_job_id>-<task_idx>.jsonl`."""
    return data_dir / run_id / "supervisor" / f"ledger-{managed_job_id}-{task_index}.jsonl"


def result_path(data_dir: Path, run_id: str, node_rank: int) -> Path:
    """`$DATA_DIR/$RUN_ID/supervisor/result-node<rank>.json`."""
    return data_dir / run_id / "supervisor" / f"result-node{node_rank}.json"


def parse_ledger(data: bytes, source: str = "ledger") -> list[dict[str, object]]:
    """The valid records of a ledger file's bytes; a corrupt or half-written line is logged and skipped."""
    records: list[dict[str, object]] = []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        attempt = record.get("attempt") if isinstance(record, dict) else None
        if not (
            isinstance(record, dict)
            and record.get("event") in LEDGER_EVENTS
            and isinstance(attempt, int)
            and not isinstance(attempt, bool)
            and attempt > 0
        ):
            log.warning("%s:%d: skipping a corrupt ledger line", source, lineno)
            continue
        records.append(record)
    return records


def read_ledger(path: Path) -> list[dict[str, object]]:
    """The ledger's records; [] when it is missing or unreadable (logged: supervision goes on)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read the ledger %s (%s); counting from attempt 1", path, exc)
        return []
    return parse_ledger(data, str(path))


def _replace_bytes(path: Path, data: bytes) -> None:
    """Write a whole file through a temporary file and a rename (bucket mounts such as goofys can
    write whole objects but not append to one). Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            with contextlib.suppress(OSError):  # some bucket mounts do not implement fsync
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def os_error(exc: OSError) -> str:
    """An OSError in one line with its errno name, e.g. `ENOSPC (No space left on device)`."""
    name = errno.errorcode.get(exc.errno or 0)
    return f"{name} ({exc.strerror})" if name and exc.strerror else str(exc)


def append_records(path: Path, records: Sequence[Mapping[str, object]]) -> bool:
    """Add JSON lines to the ledger; False (logged with the path and errno) when they cannot be written.

    Records are only ever added; earlier bytes, a corrupt line included, are kept as they are and a
    half-written last line gets a newline first. The file is rewritten whole (see _replace_bytes);
    a ledger that exists but cannot be read is left alone rather than overwritten.
    """
    lines = b"".join(json.dumps(record, sort_keys=True).encode() + b"\n" for record in records)
    try:
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        _replace_bytes(path, old + lines)
    except OSError as exc:
        log.warning("cannot write the ledger %s: %s; supervision continues", path, os_error(exc))
        return False
    return True


def append_record(path: Path, record: Mapping[str, object]) -> bool:
    """Add one JSON line to the ledger (see append_records)."""
    return append_records(path, [record])


def write_json(path: Path, data: Mapping[str, object]) -> bool:
    """Write a JSON file whole (see _replace_bytes); False (logged with the path and errno) on error."""
    try:
        _replace_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        log.warning("cannot write %s: %s", path, os_error(exc))
        return False
    return True


def unwritable(folder: Path) -> str | None:
    """Why `folder` (created with its parents) cannot take files, in one line; None when it can.

    A full disk (ENOSPC, EDQUOT) is not "unwritable": the probe is an empty file, and what a full
    disk does to the job's own writes is the job's failure (see full_disk_note).
    """
    probe = folder / f".skyops-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return None
        return f"{folder}: {os_error(exc)}"
    return None


#: Free bytes under which DATA_DIR counts as full when a job fails (a failed checkpoint write leaves
#: a few blocks at most; 16 MiB is far below any checkpoint and far above a filesystem's slack).
FULL_DISK_BYTES = 16 * 2**20


def full_disk_note(path: Path) -> str | None:
    """`DATA_DIR <path> is full (ENOSPC: N bytes free)` when the filesystem of `path` has under
    FULL_DISK_BYTES free; None otherwise or when it cannot be measured."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= FULL_DISK_BYTES:
        return None
    return f"DATA_DIR {path} is full (ENOSPC: {free} bytes free)"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _code(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def significance(code: int | None) -> int:
    """How much one node's exit code says about the attempt it ended, to pick the attempt's outcome
    across nodes: 4 a bad node (EXIT_BAD_NODE) > 3 a failure (any other non-zero code, the crash-loop
    stop included) > 2 cancelled or preempted (EXIT_SIGINT, EXIT_SIGTERM) > 1 success (0) > 0 unknown
    (None: the node's end was lost). SkyPilot stops the other nodes when one fails, so the failing node's
    code, not the stopped nodes' 143 (or 137), says why the attempt ended."""
    if code is None:
        return 0
    if code == EXIT_OK:
        return 1
    if code in (EXIT_SIGINT, EXIT_SIGTERM):
        return 2
    return 4 if code == EXIT_BAD_NODE else 3


@dataclass(frozen=True)
class Attempt:
    """One attempt of the managed job, over all its nodes, as the ledger knows it.

    `exit_code` and `reason` are the attempt's effective outcome: the most significant (see
    `significance`; rank 0 first on a tie) of rank 0's `end` record and the other nodes' results folded
    in as `node_result` records; `node_rank` is the node it came from. `reason` None: no node recorded an
    end (still running, or lost). `ended`: rank 0 recorded an end (a `lost` one included). `bad_node`:
    any node exited EXIT_BAD_NODE. `job_started`: any node's record says the job itself ran (records
    from before this field existed count as started).
    """

    number: int
    start_time: float | None = None
    runtime_s: float = 0.0
    exit_code: int | None = None
    reason: str | None = None
    bad_node: bool = False
    node_rank: int | None = None
    ended: bool = False
    job_started: bool = False

    def describe(self) -> str:
        """E.g. `attempt 3: node1 job_failed (exit 3)`."""
        node = f"node{self.node_rank} " if self.node_rank is not None else ""
        return f"attempt {self.number}: {node}{self.reason} (exit {self.exit_code})"


def summarize(records: Iterable[Mapping[str, object]]) -> list[Attempt]:
    """Fold ledger records into attempts, ordered by number.

    An attempt's runtime (seconds) is its `end` record's; for one without an end, or a `lost` one, the
    longest of its latest `alive` record's and the other nodes' results. Its outcome is the most
    significant node outcome (see Attempt).
    """
    acc: dict[int, dict[str, object]] = {}
    outcomes: dict[int, list[tuple[int | None, str | None, int | None]]] = {}
    for rec in records:
        number = rec["attempt"]
        assert isinstance(number, int)
        a = acc.setdefault(number, {"runtime_s": 0.0})
        mine = outcomes.setdefault(number, [])
        event = rec["event"]
        if event in ("end", "node_result") and rec.get("job_started", True) is not False:
            a["job_started"] = True
        runtime = _number(rec.get("runtime_s"))
        if event == "start":
            a["start_time"] = _number(rec.get("time"))
        elif event == "alive":
            a["runtime_s"] = max(runtime or 0.0, a["runtime_s"])  # type: ignore[type-var]
        elif event == "end":
            reason = str(rec.get("reason"))
            a["ended"] = True
            if reason == LEDGER_LOST:
                a["runtime_s"] = max(runtime or 0.0, a["runtime_s"])  # type: ignore[type-var]
            else:
                a["final_runtime_s"] = runtime if runtime is not None else a["runtime_s"]
            mine.insert(0, (_code(rec.get("exit_code")), reason, 0))
        elif event == "node_result":
            a["node_runtime_s"] = max(runtime or 0.0, a.get("node_runtime_s", 0.0))  # type: ignore[type-var]
            reason = rec.get("reason")
            mine.append(
                (
                    _code(rec.get("exit_code")),
                    None if reason is None else str(reason),
                    _code(rec.get("node_rank")),
                )
            )
    attempts = []
    for number, a in sorted(acc.items()):
        mine = outcomes[number]
        code, reason, node = max(mine, key=lambda o: significance(o[0]), default=(None, None, None))
        if "final_runtime_s" in a:
            runtime = a["final_runtime_s"]
        else:
            runtime = max(a["runtime_s"], a.get("node_runtime_s", 0.0))  # type: ignore[type-var]
        attempts.append(
            Attempt(
                number=number,
                start_time=a.get("start_time"),  # type: ignore[arg-type]
                runtime_s=float(runtime),  # type: ignore[arg-type]
                exit_code=code,
                reason=reason,
                bad_node=any(c == EXIT_BAD_NODE for c, _, _ in mine),
                node_rank=node,
                ended=bool(a.get("ended")),
                job_started=bool(a.get("job_started")),
            )
        )
    return attempts


def attempt_number(attempts: Sequence[Attempt], *, writer: bool, own_last: int | None = None) -> int:
    """This attempt's number (1-based). The writer (node rank 0) counts every attempt in the ledger;
    other nodes count those rank 0 recorded an end for, since rank 0 may already have recorded this
    attempt's start. `own_last` is the attempt of this node's own previous result: a node's attempts
    only go up, also when rank 0 has not yet closed a lost attempt."""
    seen = [a.number for a in attempts if writer or a.ended]
    return max(max(seen, default=0), own_last or 0) + 1


def crash_loop_evidence(attempts: Sequence[Attempt], limits: Limits, now_wall: float) -> list[Attempt] | None:
    """The last `crash_loop_attempts` failed attempts when they all started within the window (wall-clock
    seconds, the only clock shared across nodes and recoveries) and average under the minimum runtime;
    None when that is not a crash loop.

    An attempt's outcome is over all its nodes (see Attempt): attempts that succeeded, were lost, or
    that every node ended by cancel or preemption (130, 143) do not count; one where any node failed does.
    """
    k = limits.crash_loop_attempts
    if k <= 0 or limits.crash_loop_min_runtime_s <= 0:
        return None
    failed = [a for a in attempts if significance(a.exit_code) >= significance(EXIT_FAILURE)]
    last = failed[-k:]
    if len(last) < k or any(
        a.start_time is None or now_wall - a.start_time > limits.crash_loop_window_s for a in last
    ):
        return None
    return last if sum(a.runtime_s for a in last) / k < limits.crash_loop_min_runtime_s else None


class Decision(NamedTuple):
    """The node's exit code and reason (docs/contract.md), and `cause`: one line for people on where
    the outcome came from (which worker, which nodes and attempts), None when the reason says it all."""

    code: int
    reason: str
    cause: str | None = None


def decide(
    stop: str | None,
    job_code: int | None,
    *,
    prior: Sequence[Attempt],
    current: Attempt,
    limits: Limits,
    now_wall: float,
    detail: str | None = None,
    job_started: bool = True,
) -> Decision:
    """Apply the exit-code contract (docs/contract.md) to how the attempt ended.

    `stop` is the reason the supervisor stopped the job (REASON_SIGTERM, REASON_SIGINT,
    REASON_MAX_RUNTIME, REASON_HEARTBEAT_TIMEOUT, REASON_PREFLIGHT_FAILED, REASON_PREFLIGHT_ERROR,
    REASON_DATA_DIR, REASON_CRASH_LOOP when a crash loop was already declared) or None when the job
    exited on its own with `job_code`; `detail` says where it came from (the first failed torchrun
    worker, the phase the budget ran out in). `prior` are the earlier attempts of this managed job with
    their outcomes over all nodes; `current` is this one on this node (its exit code and reason are
    filled in here). `job_started`: the job itself ran in this attempt or an earlier one; a budget that
    ran out before it ever did is REASON_MAX_RUNTIME_BEFORE_JOB (docs/decisions/endings.md).
    """
    if stop == REASON_SIGTERM:
        return Decision(EXIT_SIGTERM, REASON_SIGTERM)
    if stop == REASON_SIGINT:
        return Decision(EXIT_SIGINT, REASON_SIGINT)
    if stop == REASON_MAX_RUNTIME:
        if not job_started:
            return Decision(EXIT_OK, REASON_MAX_RUNTIME_BEFORE_JOB, detail)
        return Decision(EXIT_OK, REASON_MAX_RUNTIME, detail)
    if stop == REASON_CRASH_LOOP:
        return Decision(EXIT_CRASH_LOOP, REASON_CRASH_LOOP, detail)
    cause = detail
    if stop in (REASON_HEARTBEAT_TIMEOUT, REASON_PREFLIGHT_FAILED):
        code, reason = EXIT_BAD_NODE, stop
    elif stop in (REASON_PREFLIGHT_ERROR, REASON_DATA_DIR):
        code, reason = EXIT_FAILURE, stop
    elif job_code == 0:
        return Decision(EXIT_OK, REASON_COMPLETED)
    elif job_code in RESERVED_EXIT_CODES:
        code, reason = EXIT_FAILURE, REASON_JOB_FAILED_RESERVED
        cause = f"{detail or 'the job'}: exit {job_code} is reserved for the supervisor"
    else:
        code, reason = (job_code if job_code is not None else EXIT_FAILURE), REASON_JOB_FAILED
    bad_before = sum(a.bad_node for a in prior)
    if code == EXIT_BAD_NODE and bad_before >= limits.max_recover_restarts:
        cause = f"{reason} after {bad_before} bad-node attempts (MAX_RECOVER_RESTARTS={limits.max_recover_restarts})"
        code, reason = EXIT_FAILURE, REASON_RECOVER_CAP
    this = replace(current, exit_code=code, reason=reason, bad_node=code == EXIT_BAD_NODE)
    loop = crash_loop_evidence([*prior, this], limits, now_wall)
    if loop is not None:
        return Decision(EXIT_CRASH_LOOP, REASON_CRASH_LOOP, crash_loop_cause(loop, limits))
    return Decision(code, reason, cause)


def crash_loop_cause(loop: Sequence[Attempt], limits: Limits) -> str:
    """One line on why `loop` (see crash_loop_evidence) is a crash loop."""
    average = sum(a.runtime_s for a in loop) / len(loop)
    return (
        f"the last {len(loop)} failed attempts started within {limits.crash_loop_window_s / 60:g} min "
        f"and ran {average:.1f} s on average (under {limits.crash_loop_min_runtime_s:g} s): "
        + "; ".join(a.describe() for a in loop)
    )


def declared_crash_loop(prior: Sequence[Attempt], limits: Limits, now_wall: float) -> str | None:
    """Checked at the start of an attempt, before the preflight and the job: the cause line when an
    earlier attempt declared a crash loop, or the earlier attempts already are one (a node whose
    result was folded in late); None when this attempt may run. Once declared, no later attempt of
    the managed job does paid work."""
    declared = next((a for a in reversed(prior) if a.reason == REASON_CRASH_LOOP), None)
    if declared is not None:
        return f"crash loop declared at attempt {declared.number}; this attempt does not run the job"
    loop = crash_loop_evidence(prior, limits, now_wall)
    return None if loop is None else crash_loop_cause(loop, limits)


# --------------------------------------------------------------------------------------------------
# Processes: events, spawn, teardown


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl(option: int, value: int) -> bool:
    libc = _libc()
    try:
        return libc is not None and libc.prctl(option, value, 0, 0, 0) == 0
    except AttributeError:
        return False


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Events:
    """Signals and child exits delivered as readiness of one socket (signal.set_wakeup_fd).

    A context manager: installs handlers for SIGCHLD, SIGTERM and SIGINT on entry, restores on exit.
    `signals` lists the SIGTERM/SIGINT received, in order.
    """

    HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._old: dict[int, object] = {}

    def __enter__(self) -> Events:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, self._on_signal) for s in self.HANDLED}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._old_fd)
        self._r.close()
        self._w.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def wait(self, timeout: float | None, fds: Sequence[int] = ()) -> None:
        """Block until a handled signal arrives, one of `fds` is readable, or `timeout` seconds pass."""
        poller = select.poll()
        poller.register(self._r, select.POLLIN)
        for fd in fds:
            poller.register(fd, select.POLLIN)
        poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(4096):
                pass


def _child_preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the supervisor dies without tearing down (SIGKILL), the job gets SIGTERM rather than living on.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Phase:
    """How one supervised process tree ended: `stop` is the supervisor's reason to stop it, or None
    when it exited by itself; `code` its exit code (128+S for signal S), None if never started;
    `detail` a note for people on where a failure came from (e.g. which torchrun worker)."""

    stop: str | None
    code: int | None
    detail: str | None = None


class Supervisor:
    """Runs process trees one at a time and tears each down completely.

    `clock` gives monotonic seconds (time.monotonic) for every timeout; `wall_ns` wall-clock
    nanoseconds (time.time_ns), used only to read the heartbeat file's mtime. No fixed-interval
    polling: the loop sleeps in poll(2) until SIGCHLD/SIGTERM/SIGINT or the next deadline.
    """

    def __init__(
        self,
        events: Events,
        grace_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.events = events
        self.grace_s = grace_s
        self.clock = clock
        self.wall_ns = wall_ns
        # As the subreaper, orphans of the job (workers whose launcher died) become our children,
        # so they can be found and reaped; no descendant escapes to PID 1.
        self.subreaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        self._foreign = {p.pid for p in psutil.Process().children()}
        self._root: int | None = None
        self._root_code: int | None = None

    # -- one process tree ------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        deadlines: Sequence[tuple[float | None, str]] = (),
        heartbeat: tuple[HeartbeatMonitor, Path] | None = None,
        tick: tuple[float, Callable[[], None]] | None = None,
        stdout: int | None = None,
    ) -> Phase:
        """Run argv in its own session until it exits or a deadline, the heartbeat or a signal stops
        it; then tear down whatever of its tree is left. `deadlines` are (monotonic time, reason);
        `tick` is (interval seconds, callback) for periodic records."""
        pending = self._signal_reason()
        if pending is not None:
            return Phase(pending, None)
        log.debug("running: %s", shlex.join(argv))
        try:
            proc = subprocess.Popen(
                argv, env=dict(env), start_new_session=True, stdout=stdout, preexec_fn=_child_preexec
            )
        except OSError as exc:
            log.error("cannot start %s: %s", argv[0], exc)
            return Phase(None, EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE)
        self._root, self._root_code = proc.pid, None
        next_tick = self.clock() + tick[0] if tick else None
        stop = None
        while True:
            self._reap()
            if self._root_code is not None:
                break
            now = self.clock()
            stop = self._signal_reason()
            for when, reason in deadlines:
                if stop is None and when is not None and now >= when:
                    stop = reason
            if stop is None and heartbeat is not None:
                monitor, path = heartbeat
                wake = monitor.next_wakeup()
                if (
                    wake is not None
                    and now >= wake
                    and monitor.observe(now, self.wall_ns(), heartbeat_mtime(path))
                ):
                    stop = REASON_HEARTBEAT_TIMEOUT
            if stop is not None:
                break
            if tick and next_tick is not None and now >= next_tick:
                tick[1]()
                next_tick = now + tick[0]
            wakes = [when for when, _ in deadlines if when is not None]
            wakes += [
                w for w in (heartbeat[0].next_wakeup() if heartbeat else None, next_tick) if w is not None
            ]
            self.events.wait(max(0.0, min(wakes) - now) if wakes else None)
        if stop is not None:
            log.warning("stopping the job: %s", stop)
        self.teardown()
        proc.returncode = self._root_code  # reaped here, not by Popen
        return Phase(stop, self._root_code)

    def _signal_reason(self) -> str | None:
        if not self.events.signals:
            return None
        return REASON_SIGINT if self.events.signals[0] == signal.SIGINT else REASON_SIGTERM

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._root:
                self._root_code = _exit_code(status)

    def tree(self) -> list[psutil.Process]:
        """Every process descended from the job: our children (the job, and orphans adopted as the
        subreaper) and their descendants, in any session or process group."""
        procs: list[psutil.Process] = []
        for child in psutil.Process().children():
            if child.pid in self._foreign:
                continue
            procs.append(child)
            with contextlib.suppress(psutil.Error):
                procs.extend(child.children(recursive=True))
        return procs

    def teardown(self) -> float:
        """SIGTERM every live process of the tree, SIGKILL what is left after the grace period, reap.

        Never signals the supervisor or its process group. New processes that appear meanwhile get
        the same treatment. Every process gets the whole grace period from the first SIGTERM: a
        repeated or duplicate SIGTERM/SIGINT to the supervisor (SkyPilot signals the whole tree, `uv
        run` forwards what it gets, Ctrl-C reaches a process group twice) never shortens it, and no
        process is sent SIGTERM twice. Returns the seconds it took; logs processes that survive even
        SIGKILL for KILL_WAIT_S.
        """
        start = self.clock()
        term_until = start + self.grace_s
        give_up = term_until + KILL_WAIT_S
        sent: dict[psutil.Process, int] = {}
        pidfds: dict[psutil.Process, int | None] = {}
        try:
            while True:
                self._reap()
                live = [p for p in self.tree() if _alive(p)]
                if not live:
                    self._reap()
                    break
                now = self.clock()
                if now >= give_up:
                    log.error("processes survive SIGKILL: %s", ", ".join(str(p.pid) for p in live))
                    break
                sig = signal.SIGTERM if now < term_until else signal.SIGKILL
                for proc in live:
                    if sent.get(proc) != sig:
                        with contextlib.suppress(psutil.Error):
                            proc.send_signal(sig)
                            if sig == signal.SIGTERM:  # a stopped process must run to handle it
                                proc.send_signal(signal.SIGCONT)
                        sent[proc] = sig
                fds = [fd for fd in (self._pidfd(p, pidfds) for p in live) if fd is not None]
                until = term_until if now < term_until else give_up
                # Without pidfds (not Linux) exits of grandchildren are noticed by a short poll.
                timeout = until - now if len(fds) == len(live) else min(until - now, 0.05)
                self.events.wait(timeout, fds)
        finally:
            for fd in pidfds.values():
                if fd is not None:
                    os.close(fd)
        if sent:
            log.info("teardown: %d process(es) stopped in %.2f s", len(sent), self.clock() - start)
        return self.clock() - start

    @staticmethod
    def _pidfd(proc: psutil.Process, cache: dict[psutil.Process, int | None]) -> int | None:
        if proc not in cache:
            try:
                fd = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):
                fd = None
            if fd is not None and not proc.is_running():  # the pid was reused meanwhile
                os.close(fd)
                fd = None
            cache[proc] = fd
        return cache[proc]


# --------------------------------------------------------------------------------------------------
# One attempt


class AttemptRunner:
    """One attempt on this node: ledger in, preflight, job, decision, ledger and result out."""

    def __init__(self, cfg: Config, sup: Supervisor) -> None:
        self.cfg = cfg
        self.sup = sup
        ident = cfg.identity
        self.writer = ident.node_rank == 0
        self.ledger = ledger_path(cfg.data_dir, cfg.run_id, ident.managed_job_id, ident.task_index)
        self.number = 0
        self.start = 0.0
        self.start_wall = 0.0
        #: What the attempt is doing now, for people: "preparing the job's environment", ...
        self.phase = "starting"
        #: The job itself was started in this attempt.
        self.job_started = False
        #: Records not yet in the ledger: a failed write (a full or flaky bucket mount) is retried with
        #: the next record, so the ledger never drops a record it accepted.
        self._pending: list[dict[str, object]] = []

    def _record(self, event: str, **fields: object) -> bool:
        """Add a record to the ledger (node rank 0 only), with any earlier ones that failed to write;
        True when every record so far is written."""
        if not self.writer:
            return True
        self._pending.append({"event": event, "attempt": self.number, "time": time.time(), **fields})
        if append_records(self.ledger, self._pending):
            self._pending.clear()
            return True
        return False

    def _results(self) -> list[dict[str, object]]:
        """Every node's latest `result-node<rank>.json` of this managed job and task (unreadable ones
        and those of other managed jobs skipped)."""
        cfg, ident = self.cfg, self.cfg.identity
        try:
            paths = sorted((cfg.data_dir / cfg.run_id / "supervisor").glob("result-node*.json"))
        except OSError:
            return []
        results = []
        for path in paths:
            try:
                res = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(res, dict) and (res.get("managed_job_id"), res.get("task_index")) == (
                ident.managed_job_id,
                ident.task_index,
            ):
                results.append(res)
        return results

    def _history(self) -> tuple[list[Attempt], int]:
        """The earlier attempts, each with its outcome over all nodes, and this attempt's number.

        Every node folds the other nodes' results (`result-node<rank>.json`, rank > 0; rank 0's own
        outcome is its `end` record) into the attempts they belong to, so a failure on any node counts
        for the crash-loop guard and the recover cap although SkyPilot then stops rank 0 (143). The
        writer also records them (`node_result`) and closes attempts that never recorded an end."""
        ident = self.cfg.identity
        records = read_ledger(self.ledger)
        attempts = summarize(records)
        results = self._results()
        own_last = next(
            (_code(r.get("attempt")) for r in results if _code(r.get("node_rank")) == ident.node_rank), None
        )
        number = attempt_number(attempts, writer=self.writer, own_last=own_last)
        known = {a.number for a in attempts}
        folded = {(r.get("attempt"), r.get("node_rank")) for r in records if r["event"] == "node_result"}
        extra: list[dict[str, object]] = []
        for res in results:
            done, rank = _code(res.get("attempt")), _code(res.get("node_rank"))
            if not rank or done is None or done >= number or done not in known or (done, rank) in folded:
                continue
            extra.append(
                {
                    "event": "node_result",
                    "attempt": done,
                    "node_rank": rank,
                    "exit_code": _code(res.get("exit_code")),
                    "reason": res.get("reason"),
                    "job_exit_code": _code(res.get("job_exit_code")),
                    "job_started": res.get("job_started", True) is not False,
                    "runtime_s": _number(res.get("runtime_s")),
                    "cause": res.get("cause"),
                }
            )
            folded.add((done, rank))
        if self.writer:
            for a in attempts:
                if not a.ended:
                    extra.append(
                        {
                            "event": "end",
                            "attempt": a.number,
                            "runtime_s": a.runtime_s,
                            "exit_code": None,
                            "reason": LEDGER_LOST,
                        }
                    )
            if extra:
                append_records(self.ledger, [{**rec, "time": time.time()} for rec in extra])
        prior = [a for a in summarize([*records, *extra]) if a.number < number]
        if prior and prior[-1].reason is not None:
            log.info("previous %s", prior[-1].describe())
        return prior, number

    def run(self) -> int:
        cfg, lim = self.cfg, self.cfg.limits
        prior, self.number = self._history()
        self.start, self.start_wall = self.sup.clock(), time.time()
        used = sum(a.runtime_s for a in prior)
        budget_end = self.start + (lim.max_runtime_s - used) if lim.max_runtime_s > 0 else None
        ident = cfg.identity
        self._record(
            "start",
            node_rank=ident.node_rank,
            num_nodes=ident.num_nodes,
            cluster=dict(ident.cluster_info) if ident.cluster_info else None,
            managed_job_id=ident.managed_job_id,
            task_index=ident.task_index,
            task_id=ident.task_id,
            hostname=socket.gethostname(),
            command=list(cfg.command),
        )
        log.info("attempt %d on node %d (runtime used so far %.0f s)", self.number, ident.node_rank, used)
        phase = self._gate(prior, budget_end)
        if phase is None:
            if self.number == 1:
                self._notify("started", "STARTING", "", None, 0.0)
            phase = self._preflight_then_job(budget_end)
        runtime = self.sup.clock() - self.start
        current = Attempt(self.number, self.start_wall, runtime, node_rank=ident.node_rank)
        job_started = self.job_started or any(a.job_started for a in prior)
        detail = phase.detail
        if phase.stop == REASON_MAX_RUNTIME:
            detail = self._budget_note(lim.max_runtime_s, job_started)
        elif phase.stop is None and phase.code:
            detail = "; ".join(filter(None, [detail, full_disk_note(cfg.data_dir)])) or None
        code, reason, cause = decide(
            phase.stop,
            phase.code,
            prior=prior,
            current=current,
            limits=lim,
            now_wall=time.time(),
            detail=detail,
            job_started=job_started,
        )
        result: dict[str, object] = {
            "run_id": cfg.run_id,
            "managed_job_id": ident.managed_job_id,
            "task_index": ident.task_index,
            "node_rank": ident.node_rank,
            "num_nodes": ident.num_nodes,
            "attempt": self.number,
            "exit_code": code,
            "reason": reason,
            "cause": cause,
            "job_exit_code": phase.code,
            "job_started": self.job_started,
            "runtime_s": round(runtime, 3),
            "start_time": self.start_wall,
            "end_time": time.time(),
        }
        recorded = self._record(
            "end",
            runtime_s=round(runtime, 3),
            exit_code=code,
            reason=reason,
            cause=cause,
            job_exit_code=phase.code,
            job_started=self.job_started,
            num_nodes=ident.num_nodes,
            cluster=dict(ident.cluster_info) if ident.cluster_info else None,
        )
        if not recorded:
            result["ledger_error"] = f"the ledger {self.ledger} is missing {len(self._pending)} record(s)"
        write_json(result_path(cfg.data_dir, cfg.run_id, ident.node_rank), result)
        log.info(
            "summary: node=%d attempt=%d reason=%s exit_code=%d runtime_s=%.1f%s",
            ident.node_rank,
            self.number,
            reason,
            code,
            runtime,
            f" cause: {cause}" if cause else "",
        )
        self._notify_end(code, reason, cause, used + runtime)
        if code == EXIT_CRASH_LOOP:
            self._end_managed_job()
        return code

    def _notify_end(self, code: int, reason: str, cause: str | None, total_runtime_s: float) -> None:
        """Node rank 0 tells the endings it knows for sure (docs/notifications.md): a success (every
        node exited 0: their results are read back), a runtime budget, a crash loop. A cancel or
        preemption (143/130), a bad node and the job's own failures are told by whoever sees the
        managed job's state (the local backend, `jobs.py watch`), which then knows whether it goes on."""
        if not self.writer:
            return
        if code == EXIT_OK and self._peers_succeeded():
            self._notify("ended", "SUCCEEDED", reason, cause, total_runtime_s)
        elif code == EXIT_CRASH_LOOP:
            self._notify("ended", "FAILED", reason, cause, total_runtime_s)

    def _peers_succeeded(self) -> bool:
        """True when every other node's result of this attempt says exit 0 (waits up to PEERS_WAIT_S)."""
        ident = self.cfg.identity
        deadline = self.sup.clock() + PEERS_WAIT_S
        while True:
            done = {
                _code(r.get("node_rank")): _code(r.get("exit_code"))
                for r in self._results()
                if _code(r.get("attempt")) == self.number
            }
            if any(c not in (None, EXIT_OK) for c in done.values()):
                return False
            if all(done.get(rank) == EXIT_OK for rank in range(1, ident.num_nodes)):
                return True
            if self.sup.clock() >= deadline:
                return False
            self.sup.events.wait(0.5)

    def _notify(self, event: str, state: str, reason: str, cause: str | None, runtime_s: float) -> None:
        """Send one event through notify.py (rank 0 only; when a channel is configured). Never changes
        the exit code; delays it by NOTIFY_CAP_S at most; a failure is a warning. The claim folder
        `$DATA_DIR/$RUN_ID/notify/` keeps a watcher from sending the same ending again."""
        cfg, ident = self.cfg, self.cfg.identity
        if not any(cfg.env.get(k) for k in NOTIFY_KEYS):
            return
        script = cfg.preflight_script.with_name("notify.py")
        if cfg.uv is None or not script.is_file():
            log.warning("notification %s not sent: needs uv and %s", event, script)
            return
        local = (ident.cluster_info or {}).get("cloud") == "local"
        commit = cfg.env.get("GIT_COMMIT", "")
        doc = {
            "event": event,
            "run_id": cfg.run_id,
            "job_id": str(ident.managed_job_id),
            "backend": "local" if local else "sky",
            "state": state,
            "reason": reason,
            "cause": cause,
            "attempts": self.number,
            "recoveries": self.number - 1,
            "runtime_s": round(max(0.0, runtime_s), 3),
            "commit": commit if re.fullmatch(r"[0-9a-f]{40}", commit) else "",
            "logs_hint": f"make logs ID={ident.managed_job_id}" + ("" if local else " BACKEND=sky"),
            "time": time.time(),
        }
        claims = cfg.data_dir / cfg.run_id / "notify"
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=cfg.tmp_dir, delete=False) as f:
            json.dump(doc, f)
        argv = [cfg.uv, "run", "--quiet", "--script", str(script), "send", "--event-file", f.name]
        argv += ["--claim-dir", str(claims)]
        try:
            proc = subprocess.Popen(
                argv, env=dict(cfg.env), stdout=sys.stderr.fileno(), start_new_session=True
            )
            try:
                code = proc.wait(timeout=NOTIFY_CAP_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                log.warning("notification %s not sent within %.0f s", event, NOTIFY_CAP_S)
                return
            if code == 0:
                log.info("notify: %s sent for job %s", event, ident.managed_job_id)
            else:
                log.warning("notification %s not sent: notify.py exited %d", event, code)
        except OSError as exc:
            log.warning("notification %s not sent: %s", event, os_error(exc))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(f.name)

    def _end_managed_job(self) -> None:
        """After a crash loop is declared, ask SkyPilot to cancel this managed job (exit 87 alone would
        spend max_restarts_on_errors on new nodes), then wait up to SELF_CANCEL_WAIT_S for SkyPilot's
        teardown (SIGTERM) so no restart starts before the cancel lands. Without API server access the
        node just exits 87; every later attempt then ends at once (see declared_crash_loop).
        docs/decisions/endings.md, docs/decisions/sky-self-cancel-findings.md."""
        ident = self.cfg.identity
        ok, why = cancel_own_managed_job(self.cfg.env, timeout_s=SELF_CANCEL_TIMEOUT_S)
        if not ok:
            log.warning("crash loop: managed job not cancelled from the node (%s); exit 87", why)
            return
        log.info("crash loop: %s; waiting up to %.0f s for SkyPilot's teardown", why, SELF_CANCEL_WAIT_S)
        deadline = self.sup.clock() + SELF_CANCEL_WAIT_S
        while not self.sup.events.signals and self.sup.clock() < deadline:
            self.sup.events.wait(deadline - self.sup.clock())
        if not self.sup.events.signals:
            log.warning(
                "managed job %d still running %.0f s after its cancel; exit 87",
                ident.managed_job_id,
                SELF_CANCEL_WAIT_S,
            )

    def _gate(self, prior: Sequence[Attempt], budget_end: float | None) -> Phase | None:
        """Checked before any paid work: a Phase to end the attempt with at once, or None to go on."""
        cfg = self.cfg
        why = unwritable(cfg.data_dir / cfg.run_id / "supervisor")
        if why is not None:
            log.error("DATA_DIR cannot be written: %s", why)
            return Phase(REASON_DATA_DIR, None, f"DATA_DIR is not writable: {why}")
        loop = declared_crash_loop(prior, cfg.limits, time.time())
        if loop is not None:
            log.error("crash loop: %s", loop)
            return Phase(REASON_CRASH_LOOP, None, loop)
        if budget_end is not None and budget_end <= self.start:
            log.warning(
                "the runtime budget (%.0f s) is spent; not starting the job", cfg.limits.max_runtime_s
            )
            return Phase(REASON_MAX_RUNTIME, None)
        return None

    def _budget_note(self, budget_s: float, job_started: bool) -> str:
        """E.g. `runtime budget MAX_RUNTIME_HOURS=0.002 (7 s over all attempts) ran out in the NCCL
        preflight, before the job ever started`."""
        where = "while the job ran" if self.job_started else self.phase
        if not job_started:
            where += ", before the job ever started"
        return (
            f"runtime budget MAX_RUNTIME_HOURS={budget_s / 3600:g} ({budget_s:.0f} s over all attempts)"
            f" ran out {where}"
        )

    def _deadline(self, budget_end: float | None) -> list[tuple[float | None, str]]:
        return [(budget_end, REASON_MAX_RUNTIME)]

    def _tick(self) -> tuple[float, Callable[[], None]] | None:
        if not self.writer:
            return None
        return ALIVE_INTERVAL_S, lambda: self._record(
            "alive", runtime_s=round(self.sup.clock() - self.start, 3)
        )

    def _python(self, script: Path, budget_end: float | None) -> tuple[str | None, Phase | None]:
        """The interpreter for `script` (see build_job_command); a Phase instead if preparing failed."""
        kind = python_kind(script)
        if kind != "uv":
            return ("python3" if kind else None), None
        uv = self.cfg.uv or "uv"
        self.phase = f"while preparing the environment of {script.name} (uv sync)"
        # job.yaml's setup built this environment: check it offline (uv's cache, no index round
        # trip), against the script's committed lock where it has one (a stale lock fails). Only an
        # environment that setup never built (or whose packages left the cache) resolves, online.
        # docs/decisions/locked-environments.md
        locked = ["--locked"] if script.with_name(script.name + ".lock").is_file() else []

        def sync(*flags: str) -> Phase:
            return self.sup.run(
                [uv, "sync", *flags, *locked, "--script", str(script)],
                self.cfg.env,
                deadlines=self._deadline(budget_end),
                tick=self._tick(),
                stdout=sys.stderr.fileno(),
            )

        phase = sync("-qq", "--offline")  # silent: the online try below reports any error
        if phase.stop is None and phase.code != 0:
            log.info("the environment of %s cannot be built offline; resolving it online", script.name)
            phase = sync("--quiet")
        if phase.stop is not None or phase.code != 0:
            log.error("uv sync --script %s failed (exit %s)", script, phase.code)
            return None, Phase(phase.stop, phase.code if phase.stop else EXIT_FAILURE)
        find = [uv, "python", "find", "--script", str(script)]
        log.debug("running: %s", shlex.join(find))
        try:
            out = subprocess.run(
                find, env=dict(self.cfg.env), capture_output=True, text=True, check=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            log.error("uv python find --script %s failed: %s", script, exc)
            return None, Phase(None, EXIT_FAILURE)
        return out.strip().splitlines()[-1], None

    def _has_torch(self, python: str) -> bool:
        """Whether `python` can import torch (torchrun is part of torch), without importing it."""
        probe = [
            python,
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)",
        ]
        try:
            return (
                subprocess.run(probe, env=dict(self.cfg.env), capture_output=True, timeout=60).returncode == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _job_env(self, **extra: str) -> dict[str, str]:
        """The job's environment. torchrun SIGKILLs its workers 30 s after it forwards a SIGTERM
        unless told otherwise (torch.distributed.run `--shutdown-timeout`, read from
        TORCH_ELASTIC_SHUTDOWN_TIMEOUT in torch 2.13; older torch ignores it): it gets GRACE, so the
        workers do too."""
        env = dict(self.cfg.env)
        env.update(
            DATA_DIR=str(self.cfg.data_dir), RUN_ID=self.cfg.run_id, SKYOPS_ATTEMPT=str(self.number), **extra
        )
        env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(math.ceil(self.cfg.limits.grace_s)))
        return env

    def _preflight_then_job(self, budget_end: float | None) -> Phase:
        cfg, lim = self.cfg, self.cfg.limits
        if cfg.preflight:
            phase = self._preflight(budget_end)
            if phase is not None:
                return phase
        python, failed = self._python(Path(cfg.command[0]), budget_end)
        if failed is not None:
            return failed
        attempt_dir = Path(tempfile.mkdtemp(prefix=f"skyops-attempt-{self.number}-", dir=cfg.tmp_dir))
        hb_file = attempt_dir / "heartbeat"
        failure_file = attempt_dir / "torchrun-failure.json"
        torchrun = cfg.dist.world_size > 1 and python is not None and self._has_torch(python)
        if cfg.dist.world_size > 1 and python is not None and not torchrun:
            log.info("no torch in the job's environment: one process on this node, without torchrun")
        argv = build_job_command(cfg.command, cfg.dist, python, failure_file, torchrun=torchrun)
        self.phase, self.job_started = "while the job ran", True
        try:
            monitor = HeartbeatMonitor(
                timeout_s=lim.heartbeat_timeout_s,
                startup_grace_s=lim.startup_grace_s,
                start=self.sup.clock(),
                start_wall_ns=self.sup.wall_ns(),
                baseline_mtime_ns=heartbeat_mtime(hb_file),
            )
            phase = self.sup.run(
                argv,
                self._job_env(HEARTBEAT_FILE=str(hb_file)),
                deadlines=self._deadline(budget_end),
                heartbeat=(monitor, hb_file),
                tick=self._tick(),
            )
            # torchrun exits 1 for any worker failure: the job's own code is the first failed worker's.
            failure = worker_failure(failure_file) if phase.stop is None and phase.code else None
            if failure is not None:
                log.error("torchrun: %s (torchrun itself exited %s)", failure.describe(), phase.code)
                return Phase(None, failure.code, failure.describe())
            return phase
        finally:
            shutil.rmtree(attempt_dir, ignore_errors=True)

    def _preflight(self, budget_end: float | None) -> Phase | None:
        """Run the NCCL preflight; a Phase to end the attempt with, or None when it passed."""
        cfg = self.cfg
        script = cfg.preflight_script
        if not script.is_file():
            log.warning("NCCL preflight skipped: %s does not exist", script)
            return None
        python, failed = self._python(script, budget_end)
        if failed is not None:
            return failed
        report = cfg.data_dir / cfg.run_id / "preflight" / "nccl-report.json"
        # nccl_test.py starts this node's ranks itself (NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_*
        # from the environment) and keeps its exit codes exact: under torchrun every failure is 1.
        argv = [python or "python3", str(script), "--json-out", str(report)]
        limit = self.sup.clock() + cfg.limits.startup_grace_s if cfg.limits.startup_grace_s > 0 else None
        self.phase = "in the NCCL preflight"
        phase = self.sup.run(
            argv,
            self._job_env(),
            deadlines=[*self._deadline(budget_end), (limit, REASON_PREFLIGHT_FAILED)],
            tick=self._tick(),
        )
        if phase.stop is not None:
            return phase
        if phase.code == EXIT_BAD_NODE:
            log.error("NCCL preflight failed: this node or its fabric is bad (report: %s)", report)
            return Phase(REASON_PREFLIGHT_FAILED, phase.code)
        if phase.code != 0:
            log.error(
                "NCCL preflight could not run (exit %s): not a node fault, counted as a job failure",
                phase.code,
            )
            return Phase(REASON_PREFLIGHT_ERROR, phase.code)
        log.info("NCCL preflight passed")
        return None


# --------------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = args[: args.index("--")] if "--" in args else args
    verbose = "-v" in opts or "--verbose" in opts
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="run.py: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    here = Path(__file__).resolve().parent
    try:
        cfg = load_config(args, os.environ, tmp_dir=Path(tempfile.gettempdir()), here=here)
    except BadInput as exc:
        if verbose:
            log.exception("bad input")
        print(f"run.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    with Events() as events:
        sup = Supervisor(events, cfg.limits.grace_s)
        try:
            return AttemptRunner(cfg, sup).run()
        except Exception as exc:
            log.error("internal error: %s", exc, exc_info=cfg.verbose)
            sup.teardown()
            return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
