#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["psutil==7.2.2"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Reliability table: every way a local job can end, run N times, checked against skyops' promises.

Usage: benchmarks/reliability.py [--repeat N] [--paths 1,2,8b,...] [--grace S] [--json-out PATH]
                                 [--state-dir DIR] [--keep] [-v]

    uv run --script benchmarks/reliability.py --repeat 5 --json-out /tmp/reliability.json
    ./benchmarks/reliability.py --repeat 1 --paths 1,6,7

Drives the real `./scripts/local/launch.py` and `./scripts/local/jobs.py` as subprocesses, exactly as
a user would (the shebang, `uv run --script`, signals to the process or its session), on the local
backend, and checks the three promises of docs/reliability.md:

1. grace: from the first termination signal that reaches the job, every process of it gets the whole
   GRACE seconds before SIGKILL, on every path, however many signals arrive;
2. no survivors: after the end no process of the job is left (psutil: environment holds
   SKYOPS_LOCAL_JOB=<job dir>, or the command line names this run's temporary folder), also after the
   launcher itself was killed with SIGKILL;
3. the reason: the launcher's last stderr line, `jobs.py status` (table and --json), the end line of
   `jobs.py logs ID` and job.json agree, with the right exit code.

Paths 1-12 are those of the issue ("Endings you can trust", item 8); 6b, 7b, 8d, 9b, 13 and 14 are more
endings of the same kinds (docs/reliability.md lists them all).

The test job (every path but 8b, 9, 9b, 10, 11 and 12): a 2-node task written to a temporary folder,
whose `run` is job.yaml's (configure_environment.py, then the supervisor scripts/remote/run.py) on a
job script in the same folder. Each node's job process catches SIGTERM, sleeps 3 s, writes a file and exits 143; it starts a
descendant with `setsid` that catches SIGTERM/SIGINT/SIGHUP, records when they arrive and carries on,
so only SIGKILL ends it. The benchmark watches both with pidfds: SIGTERM -> exit of the handler, first
signal -> SIGKILL of the descendant (CLOCK_MONOTONIC, shared by every process of the machine). Paths
8b, 9, 9b, 10 and 12 run the repository's job.yaml itself (examples/train.py, tests/jobs/exit_with.py).

Prints a Markdown table on stdout (progress on stderr) and, with --json-out, every measurement.
The `sky` backend is never run here (it needs a cloud account) and says so in the table.
Needs Linux; paths 11 and 12 mount small tmpfs folders and need root (else reported "not run").

Exit codes: 0 every selected path kept every promise; 1 some path did not (see the table);
2 bad input (one line naming the flag).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import json
import logging
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "scripts" / "local" / "launch.py"
JOBS = REPO / "scripts" / "local" / "jobs.py"
# The laptop side's own modules (stdlib and psutil only), found as the launcher finds them.
sys.path.append(str(LAUNCH.parent))
import _config  # noqa: E402
import _contract  # noqa: E402
import _teardown  # noqa: E402

log = logging.getLogger("reliability")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
#: Seconds the test job's SIGTERM handler sleeps before it writes its file and exits.
HANDLER_S = 3.0
#: Timestamps are taken by different processes (signal sent, handler runs, pidfd readable): a grace
#: shorter than GRACE by at most this much is counted as honoured, and the shortfall still reported.
TOLERANCE_S = 0.1
#: Upper bounds (seconds) so that a hung launcher never hangs the benchmark.
START_TIMEOUT_S = 300.0
END_TIMEOUT_S = 180.0
TERMINAL = ("SUCCEEDED", "CANCELLED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE",
            "FAILED_CONTROLLER")  # fmt: skip

# --------------------------------------------------------------------------------------------------
# The test job and its task

#: The test job (run by the supervisor as `$BENCH_JOB [--exit-after S]`, or with `--ignore-sigterm DIR`
#: as its own setsid descendant). Writes into $BENCH_OUT/node<rank>/.
#: Its PEP 723 block, spelled so that uv does not take it for a second block of this script.
_JOB_METADATA = "# /" + '// script\n# requires-python = ">=3.11"\n# dependencies = []\n# /' + "//\n"
TEST_JOB = '''\
@METADATA@"""skyops reliability test job: a SIGTERM handler that needs 3 s, and a setsid descendant that
ignores SIGTERM (catches it and carries on), so that only SIGKILL ends it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def note(path, text):
    with open(path, "a") as fh:
        fh.write(text + "\\n")


def ignorer(out):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: note(out / "ignorer.signals", f"{s} {time.monotonic()!r}"))
    note(out / "ignorer.pid", str(os.getpid()))
    while True:
        time.sleep(3600)


def option(name, default=None):
    return float(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def main():
    if sys.argv[1:2] == ["--ignore-sigterm"]:
        out = Path(sys.argv[2])
        out.mkdir(parents=True, exist_ok=True)
        ignorer(out)
    exit_after = option("--exit-after")  # exit 0 this many seconds after ready
    fail_rank = option("--fail-rank")  # this node exits 3 as soon as it is ready
    print_every = option("--print-every")  # a progress line on stdout this often, as training loops do
    rank = os.environ.get("NODE_RANK", "0")
    out = Path(os.environ["BENCH_OUT"]) / f"node{rank}"
    out.mkdir(parents=True, exist_ok=True)
    handling = []

    def on_term(signum, _frame):
        note(out / "handler.signals", f"{signum} {time.monotonic()!r}")
        if handling:
            return  # a repeated signal: keep cleaning up
        handling.append(signum)
        time.sleep(@HANDLER_S@)
        note(out / "handler.done", repr(time.monotonic()))
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    note(out / "handler.pid", str(os.getpid()))
    subprocess.Popen(["setsid", sys.executable, __file__, "--ignore-sigterm", str(out)], stdin=subprocess.DEVNULL)
    while not (out / "ignorer.pid").exists():
        time.sleep(0.05)
    note(out / "ready", repr(time.monotonic()))
    print(f"reliability job on node {rank}: ready", flush=True)
    if fail_rank is not None and int(fail_rank) == int(rank):
        note(out / "exited", repr(time.monotonic()))
        sys.exit(3)
    heartbeat = os.environ.get("HEARTBEAT_FILE")
    start = last_print = time.monotonic()
    while exit_after is None or time.monotonic() - start < exit_after:
        if heartbeat:
            Path(heartbeat).touch()
        if print_every is not None and time.monotonic() - last_print >= print_every:
            print(f"node {rank}: step at {time.monotonic() - start:.1f} s", flush=True)
            last_print = time.monotonic()
        time.sleep(0.1 if print_every else 0.5)
    note(out / "exited", repr(time.monotonic()))
    sys.exit(0)


main()
'''.replace("@HANDLER_S@", repr(HANDLER_S)).replace("@METADATA@", _JOB_METADATA)

#: The task: job.yaml's `run` (configure_environment.py, then the supervisor) on $BENCH_JOB.
TASK = """\
# skyops reliability benchmark: job.yaml's run on the test job $BENCH_JOB (benchmarks/reliability.py).
name: reliability
num_nodes: 2
resources:
  job_recovery:
    max_restarts_on_errors: 0
    recover_on_exit_codes: [86]
envs:
  JOB: "examples/train.py"
  JOB_ARGS: ""
  RUN_ID: "reliability"
  NCCL_PREFLIGHT: "0"
  BENCH_JOB: ""
  BENCH_OUT: ""
setup: |
  set -euo pipefail
  export PATH="$HOME/.local/bin:$PATH"
  uv sync --quiet --script scripts/remote/configure_environment.py
  uv sync --quiet --script scripts/remote/run.py
  uv sync --quiet --script "$BENCH_JOB"
@SETUP_EXTRA@run: |
  export PATH="$HOME/.local/bin:$PATH"
  SKYOPS_ENV_FILE="$(mktemp)"
  uv run --script scripts/remote/configure_environment.py \\
    --node-ips "$SKYPILOT_NODE_IPS" --node-rank "$SKYPILOT_NODE_RANK" \\
    --num-nodes "$SKYPILOT_NUM_NODES" --gpus-per-node "$SKYPILOT_NUM_GPUS_PER_NODE" \\
    --master-port "$MASTER_PORT" --output "$SKYOPS_ENV_FILE" || exit $?
  source "$SKYOPS_ENV_FILE"
  eval "set -- $JOB_ARGS"
  exec uv run --script scripts/remote/run.py -- "$BENCH_JOB" "$@"
"""

#: Path 14: a setup that leaves a daemon behind (a SIGTERM-ignoring setsid descendant), as `nohup cmd &` does.
SETUP_DAEMON = """\
  setsid python3 "$BENCH_JOB" --ignore-sigterm "$BENCH_OUT/setup-node$SKYPILOT_SETUP_NODE_RANK" >/dev/null 2>&1 &
"""

#: Path 8a: a setup that starts a SIGTERM-ignoring setsid descendant, then sleeps 5 s.
SETUP_SLEEP = """\
  setsid python3 "$BENCH_JOB" --ignore-sigterm "$BENCH_OUT/setup-node$SKYPILOT_SETUP_NODE_RANK" &
  sleep 5
"""

# --------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Config:
    """Everything one benchmark run needs, resolved once in main()."""

    repeat: int
    paths: tuple[str, ...]
    grace: float
    json_out: Path | None
    state_dir: Path
    work: Path
    env: Mapping[str, str]
    keep: bool = False


@dataclass(frozen=True)
class Path_:
    """One ending path: its id, what is done, and what must be seen."""

    ident: str
    title: str
    states: tuple[str, ...]  # the job's final state, one of these (empty: no job, or not checked)
    codes: tuple[int, ...]  # the launcher's exit code(s) expected
    keyword: str  # must appear in the reason everywhere it is shown
    handler: bool  # the test job's handler and descendant are expected to be signalled


PATHS: dict[str, Path_] = {
    p.ident: p
    for p in (
        Path_("1", "Ctrl-C: SIGINT to the session of `uv run --script launch.py`", ("CANCELLED",), (130,), "SIGINT", True),
        Path_("2", "`jobs.py cancel ID`", ("CANCELLED",), (143,), "jobs.py cancel", True),
        Path_("3", "SIGTERM to the launcher", ("CANCELLED",), (143,), "SIGTERM", True),
        Path_("4", "SIGHUP to the launcher", ("CANCELLED",), (129,), "SIGHUP", True),
        Path_("5", "SIGTERM to the launcher 3 times, 0.2 s apart", ("CANCELLED",), (143,), "SIGTERM", True),
        Path_("6", "kill -9 launcher; status; relaunch; `jobs.py cancel ID`", ("FAILED_CONTROLLER",), (137,),
              "launcher killed", True),
        Path_("6b", "kill -9 launcher; two `jobs.py cancel`, the second 1 s after the first", ("FAILED_CONTROLLER",),
              (137,), "launcher killed", True),
        Path_("7", "kill -9 launcher; the nodes end by themselves (exit 0 after 5 s)", ("SUCCEEDED",), (137,),
              "launcher killed", False),
        Path_("7b", "as 7, but the job prints a progress line every 0.5 s", ("SUCCEEDED",), (137,),
              "launcher killed", False),
        Path_("8a", "Ctrl-C 1 s into setup (setup sleeps 5 s)", ("CANCELLED",), (130,), "SIGINT", False),
        Path_("8b", "Ctrl-C during the NCCL preflight (examples/train.py)", ("CANCELLED",), (130,), "SIGINT", False),
        Path_("8c", "a second `jobs.py cancel` during the first one's teardown", ("CANCELLED",), (143,),
              "jobs.py cancel", True),
        Path_("8d", "Ctrl-C the moment job.json appears (before any node starts)", ("CANCELLED",), (130,),
              "SIGINT", False),
        Path_("9", "MAX_RUNTIME_HOURS=0.002, examples/train.py, preflight on", ("SUCCEEDED",), (0, 1), "max_runtime",
              False),
        Path_("9b", "as 9 with MAX_RUNTIME_HOURS=0.01 (36 s), so that the job itself runs", ("SUCCEEDED",), (0, 1),
              "max_runtime", False),
        Path_("10", "`tests/jobs/exit_with.py 3` under the defaults", ("FAILED", "CANCELLED"), (1,), "exit 3", False),
        Path_("11", "read-only DATA_DIR (tmpfs mounted ro)", (), (2,), "DATA_DIR", False),
        Path_("12", "full DATA_DIR (1 MiB tmpfs, filled)", (), (0, 1), "", False),
        Path_("13", "node 1 fails (exit 3) while node 0 runs; GRACE=30", ("FAILED",), (1,), "exit 3", True),
        Path_("14", "setup starts a setsid daemon, the job then succeeds; relaunch the run", ("SUCCEEDED",), (0,), "",
              False),
    )
}  # fmt: skip


def parse_paths(text: str) -> tuple[str, ...]:
    """`1,2,8` -> ("1", "2", "8a", "8b", "8c"); `all` -> every path. Raises ValueError naming the path."""
    if text.strip() == "all":
        return tuple(PATHS)
    chosen: list[str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        group = [p for p in PATHS if p == item or (item.isdigit() and re.fullmatch(rf"{item}[a-z]", p))]
        if not group:
            raise ValueError(f"--paths: unknown path {item!r} (choose from {', '.join(PATHS)} or all)")
        chosen += [p for p in group if p not in chosen]
    if not chosen:
        raise ValueError("--paths: empty")
    return tuple(chosen)


def clean_env(environ: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """The environment for launch.py and jobs.py: the user's, without skyops/SkyPilot/torch.distributed
    settings, with a private SKYOPS_STATE_DIR, the local API server off and uv pointed at the wheel
    folder pip uses (torch's CPU build)."""
    env = _config.isolated_env(environ, state_dir)
    if "UV_FIND_LINKS" not in env:
        links = env.get("PIP_FIND_LINKS") or ("/opt/wheels" if Path("/opt/wheels").is_dir() else "")
        if links:
            env["UV_FIND_LINKS"] = links
    return env


# --------------------------------------------------------------------------------------------------
# Measurements of one repetition


@dataclass
class Rep:
    """What one repetition of one path saw. Times in seconds (CLOCK_MONOTONIC differences)."""

    path: str
    rep: int
    run: str = ""
    job_id: int | None = None
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    handlers_expected: int = 0
    handlers_written: int = 0
    handler_s: list[float] = field(default_factory=list)  # SIGTERM -> exit, per handler
    ignorer_s: list[float | None] = field(default_factory=list)  # first signal -> SIGKILL, per descendant
    ignorer_honoured: int = 0  # descendants SIGKILLed no sooner than GRACE (less TOLERANCE_S) after a signal
    grace: float | None = None  # the GRACE this repetition's job ran with
    signal_to_end_s: float | None = None
    survivors: int | None = None
    survivors_late: int | None = None
    survivor_cmds: list[str] = field(default_factory=list)
    state: str | None = None
    reason: str | None = None
    reason_ok: bool | None = None
    shown: dict[str, Any] = field(default_factory=dict)
    attempts: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        log.warning("path %s rep %d: %s", self.path, self.rep, text)
        self.problems.append(text)


class DeathWatch:
    """Records when processes exit (pidfd readable), for processes that are not our children."""

    def __init__(self) -> None:
        self.deaths: dict[int, float | None] = {}
        self._threads: list[threading.Thread] = []

    def add(self, pid: int) -> bool:
        """Watch `pid`; False if it is already gone (its exit time is then unknown)."""
        if pid in self.deaths:
            return True
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            self.deaths[pid] = None
            return False
        self.deaths[pid] = None

        def wait() -> None:
            try:
                select.select([fd], [], [])
                self.deaths[pid] = time.monotonic()
            finally:
                os.close(fd)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        self._threads.append(thread)
        return True

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))


def read_times(path: Path) -> list[tuple[int, float]]:
    """Lines `<signum> <monotonic>` of a signal record (empty when missing)."""
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                signum, when = line.split()
                out.append((int(signum), float(when)))
    return out


def read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().split()[0])
    return None


def job_processes(job_dir: Path | None, needles: Sequence[str]) -> list[psutil.Process]:
    """Live processes (not zombies, not this one) of a job: SKYOPS_LOCAL_JOB=<job_dir> in their
    environment, or one of `needles` (folders) in their command line."""

    def of_job(proc: psutil.Process) -> bool:
        if job_dir is not None and proc.environ().get(_teardown.JOB_MARKER) == str(job_dir):
            return True
        return bool(needles) and any(n in " ".join(proc.cmdline()) for n in needles)

    return _teardown.processes(of_job)


def describe(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"{proc.pid} {' '.join(proc.cmdline())[:160]}"
    return str(proc.pid)


# --------------------------------------------------------------------------------------------------
# Running the scripts as a user does


class Runner:
    """Runs launch.py and jobs.py for one benchmark run; every call logged at debug level."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def jobs(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [str(JOBS), *args]
        log.debug("$ %s", " ".join(argv))
        return subprocess.run(argv, cwd=REPO, env=dict(self.cfg.env), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip

    def jobs_started(self, *args: str) -> subprocess.Popen[str]:
        """`jobs.py ARGS` started, not waited for; its stderr is piped."""
        argv = [str(JOBS), *args]
        log.debug("$ %s &", " ".join(argv))
        return subprocess.Popen(argv, cwd=REPO, env=dict(self.cfg.env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip

    def launch(self, argv: Sequence[str], stderr: Path, *, via_uv: bool = False,
               env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start the launcher in a session of its own (as a shell starts a foreground job)."""
        cmd = (["uv", "run", "--script", str(LAUNCH.relative_to(REPO))] if via_uv else [str(LAUNCH)]) + list(
            argv
        )
        log.debug("$ %s", " ".join(cmd))
        with open(stderr, "wb") as err:
            return subprocess.Popen(cmd, cwd=REPO, env=dict(env or self.cfg.env), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)  # fmt: skip

    def job_dir(self, run: str) -> Path | None:
        dirs = sorted((self.cfg.state_dir / "runs" / run).glob("job-*"), key=lambda p: int(p.name[4:]))
        return dirs[-1] if dirs else None


def wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes] | None = None,
             poll: float = 0.05) -> bool:  # fmt: skip
    """True once `predicate()` holds; False after `timeout` s or when `proc` exited first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return predicate()
        time.sleep(poll)
    return False


def wait_exit(proc: subprocess.Popen[bytes], timeout: float, rep: Rep, what: str = "launcher") -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        rep.problem(f"{what} still running {timeout:.0f} s after the ending began; killed by the benchmark")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else ""
    return ""


def norm(text: str | None) -> str:
    return " ".join(str(text or "").split())


@dataclass
class Job:
    """A launched test job."""

    rep: Rep
    proc: subprocess.Popen[bytes]
    out: Path  # $BENCH_OUT
    stderr: Path
    argv: list[str]
    job_dir: Path | None = None
    watch: DeathWatch = field(default_factory=DeathWatch)
    handlers: list[int] = field(default_factory=list)
    ignorers: list[int] = field(default_factory=list)

    @property
    def launcher_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return int(json.loads((self.job_dir / "job.json").read_text())["launcher_pid"])  # type: ignore[operator]
        return None


class Bench:
    """The paths: each method runs one repetition and fills its Rep."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.r = Runner(cfg)
        self.nodes = 2

    # -- helpers ----------------------------------------------------------------------------------

    def task(self, name: str, setup_extra: str = "") -> Path:
        path = self.cfg.work / f"{name}.yaml"
        if not path.exists():
            path.write_text(TASK.replace("@SETUP_EXTRA@", setup_extra))
        return path

    def rep_dir(self, rep: Rep) -> Path:
        path = self.cfg.work / f"path{rep.path}-rep{rep.rep}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start_test_job(self, rep: Rep, *, via_uv: bool = False, setup: str = "",
                       job_args: Sequence[str] = (), wait_ready: bool = True, grace: float | None = None,
                       first_record: bool = False) -> Job | None:  # fmt: skip
        """Launch the 2-node test job; wait until every node's handler and descendant run (`wait_ready`),
        or only until its directory appears, or (`first_record`) spin until its job.json appears."""
        rep.grace = grace or self.cfg.grace
        d = self.rep_dir(rep)
        out = d / "out"
        out.mkdir(exist_ok=True)
        rep.run = f"rel-{rep.path}-{rep.rep}-{uuid.uuid4().hex[:6]}"
        task = self.task(
            f"task-{setup or 'plain'}", {"": "", "sleep": SETUP_SLEEP, "daemon": SETUP_DAEMON}[setup]
        )
        argv = ["--env-file", os.devnull, "--task", str(task), "--nodes", str(self.nodes), "--run", rep.run,
                "--set", f"GRACE={rep.grace:g}", "--set", "NCCL_PREFLIGHT=0",
                "--set", f"BENCH_JOB={self.cfg.work / 'reliability_job.py'}", "--set", f"BENCH_OUT={out}",
                "examples/train.py", *job_args]  # fmt: skip
        stderr = d / "launcher.stderr"
        job = Job(rep, self.r.launch(argv, stderr, via_uv=via_uv), out, stderr, argv)
        runs = self.cfg.state_dir / "runs" / rep.run
        if first_record:  # as tight as a poll can be: the first moment job.json exists
            if not wait_for(lambda: any(runs.glob("job-*/job.json")), START_TIMEOUT_S, job.proc, poll=0):
                rep.problem(f"job.json never appeared; launcher said: {last_line(stderr)}")
                self.kill(job)
                return None
            job.job_dir = next(runs.glob("job-*/job.json")).parent
            rep.job_id = int(job.job_dir.name[4:])
            return job
        if not wait_for(lambda: self.r.job_dir(rep.run) is not None, START_TIMEOUT_S, job.proc):
            rep.problem(f"no job directory appeared; launcher said: {last_line(stderr)}")
            self.kill(job)
            return None
        job.job_dir = self.r.job_dir(rep.run)
        rep.job_id = int(job.job_dir.name[4:])  # type: ignore[union-attr]
        if not wait_ready:
            return job
        ready = [out / f"node{r}" / "ready" for r in range(self.nodes)]
        if not wait_for(lambda: all(p.exists() for p in ready), START_TIMEOUT_S, job.proc):
            rep.problem(f"the test job never became ready; launcher said: {last_line(stderr)}")
            self.kill(job)
            return None
        for r in range(self.nodes):
            self.track(job, out / f"node{r}")
        return job

    def track(self, job: Job, folder: Path) -> None:
        """Watch the handler and the descendant whose pids the test job wrote into `folder`."""
        for name, bucket in (("handler.pid", job.handlers), ("ignorer.pid", job.ignorers)):
            pid = read_pid(folder / name)
            if pid is not None:
                bucket.append(pid)
                job.watch.add(pid)

    def kill(self, job: Job) -> None:
        """Benchmark-side cleanup after a failure: SIGKILL the launcher's session and the job."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.proc.wait(10)
        for proc in job_processes(job.job_dir, [str(self.rep_dir(job.rep))]):
            with contextlib.suppress(psutil.Error):
                proc.kill()

    def grace_of(self, job: Job, folders: Sequence[Path], *, handlers: bool) -> None:
        """Fill the rep's handler and descendant measurements from the job's files and the pidfds."""
        rep = job.rep
        job.watch.join(2.0)
        for folder in folders:
            if handlers:
                rep.handlers_expected += 1
                done = folder / "handler.done"
                if done.exists():
                    rep.handlers_written += 1
                pid = read_pid(folder / "handler.pid")
                sigs = read_times(folder / "handler.signals")
                died = job.watch.deaths.get(pid) if pid else None
                if sigs and died:
                    rep.handler_s.append(round(died - sigs[0][1], 3))
                if not sigs:
                    rep.problem(f"{folder.name}: the job's handler never got SIGTERM")
                elif not done.exists():
                    rep.problem(
                        f"{folder.name}: the handler's file was not written (killed before its {HANDLER_S:g} s)"
                    )
            pid = read_pid(folder / "ignorer.pid")
            if pid is None:
                continue
            sigs = read_times(folder / "ignorer.signals")
            died = job.watch.deaths.get(pid)
            if not sigs:
                rep.ignorer_s.append(None)
                rep.problem(
                    f"{folder.name}: the SIGTERM-ignoring descendant was killed without any SIGTERM first"
                )
                continue
            if died is None:
                rep.ignorer_s.append(None)
                rep.problem(f"{folder.name}: the descendant's end was not observed")
                continue
            took = round(died - sigs[0][1], 3)
            rep.ignorer_s.append(took)
            grace = rep.grace or self.cfg.grace
            if took >= grace - TOLERANCE_S:
                rep.ignorer_honoured += 1
            else:
                rep.problem(
                    f"{folder.name}: the SIGTERM-ignoring descendant was SIGKILLed {took:.2f} s after its first"
                    f" {signal.Signals(sigs[0][0]).name} (GRACE={grace:g})"
                )

    def survivors(self, rep: Rep, job_dir: Path | None, *, late: bool = True) -> None:
        needles = [str(self.rep_dir(rep))]
        procs = job_processes(job_dir, needles)
        rep.survivors = len(procs)
        rep.survivor_cmds = [describe(p) for p in procs]
        if procs:
            rep.problem(f"{len(procs)} process(es) of the job left at its end: {rep.survivor_cmds[:3]}")
        if late:
            time.sleep(2.0 if procs else 0.5)
            left = job_processes(job_dir, needles)
            rep.survivors_late = len(left)
            for proc in left:  # never let one repetition's leftovers disturb the next
                with contextlib.suppress(psutil.Error):
                    proc.kill()

    def reason(self, rep: Rep, job_dir: Path | None, spec: Path_, launcher_line: str | None) -> None:
        """Collect the reason where people look and check that the places agree."""
        if job_dir is None or rep.job_id is None:
            rep.reason_ok = False
            return
        ident = str(rep.job_id)
        st_json = self.r.jobs("status", "--json", ident)
        st_table = self.r.jobs("status", ident)
        logs = self.r.jobs("logs", ident)
        rep.exit_codes["logs"] = logs.returncode
        record = json.loads((job_dir / "job.json").read_text())
        rep.state = record.get("state")
        rep.reason = record.get("reason") or record.get("failure_reason")
        rep.attempts = len(record.get("attempts") or [])
        try:
            row = json.loads(st_json.stdout)[0]
        except (ValueError, IndexError):
            row = {}
        table_row = next((line for line in st_table.stdout.splitlines() if line.split()[:1] == [ident]), "")
        logs_line = last_line_of(logs.stderr)
        rep.shown = {"job.json": {"state": rep.state, "reason": rep.reason}, "status --json":
                     {"status": row.get("status"), "reason": row.get("reason")}, "status": table_row,
                     "logs": logs_line, "launcher": launcher_line}  # fmt: skip
        reason = norm(rep.reason)
        checks = {
            "status --json agrees with job.json": row.get("status") == rep.state and norm(row.get("reason")) == reason,
            "status table shows the state and reason": bool(rep.state) and f"  {rep.state} " in f"  {table_row} "
            and reason[:90] in norm(table_row),
            "logs end line shows the state and reason": (f"ended {rep.state}" in logs_line and reason in norm(logs_line))
            if reason or rep.state != "SUCCEEDED" else logs_line == "",
            f"state is {' or '.join(spec.states)}": not spec.states or rep.state in spec.states,
            f"reason names {spec.keyword!r}": spec.keyword.lower() in reason.lower(),
        }  # fmt: skip
        if rep.state != "SUCCEEDED" or reason:
            checks["logs exits 1 for an end that is not a plain success"] = logs.returncode == (
                EXIT_OK if rep.state == "SUCCEEDED" and record.get("exit_code", 0) == 0 else EXIT_FAILED
            )
        if launcher_line is not None:
            checks["launcher's last line shows the state and the reason"] = (
                bool(rep.state)
                and rep.state in launcher_line
                and spec.keyword.lower() in launcher_line.lower()
            )
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            short = lambda text: (norm(text)[:140] + "…") if len(norm(text)) > 140 else norm(text)  # noqa: E731
            rep.problem(
                f"reason: not true that {'; '.join(failed)} (job.json {rep.state}: {short(rep.reason)!r};"
                f" launcher: {short(launcher_line) if launcher_line is not None else 'killed'!r})"
            )
        rep.reason_ok = not failed

    def node_dirs(self, job: Job) -> list[Path]:
        """The folders the test job writes into, one a node."""
        return [job.out / f"node{r}" for r in range(self.nodes)]

    def stopped(self, rep: Rep, spec: Path_, proc: subprocess.Popen[bytes], t0: float, job_dir: Path | None,
                timeout: float = END_TIMEOUT_S) -> int | None:  # fmt: skip
        """After the ending that began at `t0`: the launcher's exit (timed), the survivors, its exit code."""
        code = wait_exit(proc, timeout, rep)
        rep.signal_to_end_s = round(time.monotonic() - t0, 3)
        self.survivors(rep, job_dir)
        self.launcher_code(rep, code, spec)
        return code

    def ended(self, job: Job, spec: Path_, t0: float, *, handlers: Sequence[Path] = (),
              others: Sequence[Path] = ()) -> None:  # fmt: skip
        """The test job's end (see `stopped`), the grace its `handlers` and its `others` (folders whose
        handler is not expected to be signalled) got, and the reason."""
        self.stopped(job.rep, spec, job.proc, t0, job.job_dir)
        if handlers:
            self.grace_of(job, handlers, handlers=True)
        if others:
            self.grace_of(job, others, handlers=False)
        self.reason(job.rep, job.job_dir, spec, last_line(job.stderr))

    def launcher_code(self, rep: Rep, code: int | None, spec: Path_) -> None:
        rep.exit_codes["launcher"] = code
        if code not in spec.codes:
            rep.problem(f"launcher exit code {code}, expected {' or '.join(map(str, spec.codes))}")

    # -- the paths ---------------------------------------------------------------------------------

    def signalled(self, rep: Rep, send: Callable[[Job], None], *, via_uv: bool = False) -> None:
        """Paths 1, 3, 4, 5: start the test job, `send` the ending, check everything."""
        spec = PATHS[rep.path]
        job = self.start_test_job(rep, via_uv=via_uv)
        if job is None:
            return
        t0 = time.monotonic()
        send(job)
        self.ended(job, spec, t0, handlers=self.node_dirs(job))

    def path_1(self, rep: Rep) -> None:
        self.signalled(rep, lambda job: os.killpg(job.proc.pid, signal.SIGINT), via_uv=True)

    def _to_launcher(self, job: Job, sig: int, times: int = 1) -> None:
        pid = job.launcher_pid
        if pid is None:
            job.rep.problem("job.json names no launcher_pid")
            return
        for i in range(times):
            if i:
                time.sleep(0.2)
            os.kill(pid, sig)

    def path_3(self, rep: Rep) -> None:
        self.signalled(rep, lambda job: self._to_launcher(job, signal.SIGTERM))

    def path_4(self, rep: Rep) -> None:
        self.signalled(rep, lambda job: self._to_launcher(job, signal.SIGHUP))

    def path_5(self, rep: Rep) -> None:
        self.signalled(rep, lambda job: self._to_launcher(job, signal.SIGTERM, times=3))

    def path_2(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        job = self.start_test_job(rep)
        if job is None:
            return
        t0 = time.monotonic()
        cancel = self.r.jobs("cancel", str(rep.job_id), timeout=END_TIMEOUT_S)
        rep.exit_codes["cancel"] = cancel.returncode
        if cancel.returncode != 0:
            rep.problem(f"jobs.py cancel exited {cancel.returncode}: {last_line_of(cancel.stderr)}")
        self.ended(job, spec, t0, handlers=self.node_dirs(job))

    def path_8c(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        job = self.start_test_job(rep)
        if job is None:
            return
        t0 = time.monotonic()
        first = self.r.jobs_started("cancel", str(rep.job_id))
        # The first teardown is waiting once the handlers have their SIGTERM (they need 3 s).
        signalled = [folder / "handler.signals" for folder in self.node_dirs(job)]
        if not wait_for(lambda: all(p.exists() for p in signalled), 60):
            rep.problem("the first cancel never reached the job's handlers")
        time.sleep(0.5)
        second = self.r.jobs("cancel", str(rep.job_id), timeout=END_TIMEOUT_S)
        rep.exit_codes["cancel 2"] = second.returncode
        rep.notes.append(f"second cancel said: {last_line_of(second.stderr)}")
        try:
            _, err = first.communicate(timeout=END_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            first.kill()
            _, err = first.communicate()
        rep.notes.append(f"first cancel said: {last_line_of(err)}")
        rep.exit_codes["cancel 1"] = first.returncode
        for name in ("cancel 1", "cancel 2"):
            if rep.exit_codes[name] != 0:
                rep.problem(f"{name} exited {rep.exit_codes[name]}")
        self.ended(job, spec, t0, handlers=self.node_dirs(job))

    def path_6b(self, rep: Rep) -> None:
        self.path_6(rep, twice=True)

    def launcher_killed(
        self, rep: Rep, spec: Path_, job_args: Sequence[str] = ()
    ) -> tuple[Job, float] | None:
        """Paths 6 and 7: the test job started and its launcher SIGKILLed (its exit code checked);
        the job and when the SIGKILL was sent."""
        job = self.start_test_job(rep, job_args=job_args)
        if job is None:
            return None
        pid = job.launcher_pid
        if pid is None:
            rep.problem("job.json names no launcher_pid")
            self.kill(job)
            return None
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self.launcher_code(rep, wait_exit(job.proc, 30, rep), spec)
        return job, t0

    def relaunch(self, job: Job, timeout: float) -> tuple[int | None, Path]:
        """The job's launch command again (the same --run); its exit code, recorded as "relaunch", and
        the file its stderr went to."""
        stderr = self.rep_dir(job.rep) / "relaunch.stderr"
        code = wait_exit(self.r.launch(job.argv, stderr), timeout, job.rep, "relaunch")
        job.rep.exit_codes["relaunch"] = code
        return code, stderr

    def path_6(self, rep: Rep, twice: bool = False) -> None:
        spec = PATHS[rep.path]
        if (killed := self.launcher_killed(rep, spec)) is None:
            return
        job, _ = killed
        ident = str(rep.job_id)
        status = self.r.jobs("status", "--json", ident)
        with contextlib.suppress(ValueError, IndexError):
            row = json.loads(status.stdout)[0]
            rep.notes.append(f"status after kill -9: {row.get('status')}: {row.get('reason')}")
            if row.get("status") != "RUNNING (launcher gone)":
                rep.problem(
                    f"status after kill -9 shows {row.get('status')!r}, expected 'RUNNING (launcher gone)'"
                )
        code, said = self.relaunch(job, 120)
        lines = [ln for ln in said.read_text().splitlines() if ln.strip()]
        rep.notes.append(f"relaunch said: {lines[-1] if lines else ''}")
        if code != 2 or len(lines) != 1 or f"job {ident}" not in lines[0] or "jobs.py cancel" not in lines[0]:
            rep.problem(f"relaunch exited {code} with {len(lines)} line(s): {lines[-3:]}")
        t0 = time.monotonic()
        second = None
        if twice:
            second = self.r.jobs_started("cancel", ident)
            time.sleep(1.0)
        cancel = self.r.jobs("cancel", ident, timeout=END_TIMEOUT_S)
        if second is not None:
            _, err = second.communicate(timeout=END_TIMEOUT_S)
            rep.exit_codes["cancel 1"] = second.returncode
            rep.notes.append(f"first cancel said: {last_line_of(err)}")
            if second.returncode != 0:
                rep.problem(f"the first jobs.py cancel exited {second.returncode}: {last_line_of(err)}")
        rep.signal_to_end_s = round(time.monotonic() - t0, 3)
        rep.exit_codes["cancel"] = cancel.returncode
        rep.notes.append(f"cancel said: {last_line_of(cancel.stderr)}")
        if cancel.returncode != 0:
            rep.problem(f"jobs.py cancel exited {cancel.returncode}: {last_line_of(cancel.stderr)}")
        self.survivors(rep, job.job_dir)
        self.grace_of(job, self.node_dirs(job), handlers=True)
        self.reason(rep, job.job_dir, spec, None)

    def path_7b(self, rep: Rep) -> None:
        self.path_7(rep, ["--print-every", "0.5"])

    def path_7(self, rep: Rep, extra: Sequence[str] = ()) -> None:
        spec = PATHS[rep.path]
        if (killed := self.launcher_killed(rep, spec, ["--exit-after", "5", *extra])) is None:
            return
        job, t0 = killed
        seen: list[str] = []
        final = None
        end = time.monotonic() + END_TIMEOUT_S
        needles = [str(self.rep_dir(rep))]
        while time.monotonic() < end:
            left = len(job_processes(job.job_dir, needles))
            status = self.r.jobs("status", "--json", str(rep.job_id))
            with contextlib.suppress(ValueError, IndexError):
                state = json.loads(status.stdout)[0].get("status")
                if not seen or seen[-1] != state:
                    seen.append(state)
                if left == 0 and state not in TERMINAL:
                    rep.problem(f"no process of the job is left, yet status shows {state!r}")
                if state in TERMINAL:
                    final = state
                    break
            time.sleep(1.0)
        rep.signal_to_end_s = round(time.monotonic() - t0, 3)
        rep.notes.append(f"status went {' -> '.join(map(str, seen))}")
        if final is None:
            rep.problem(f"status never showed a final state within {END_TIMEOUT_S:.0f} s")
        self.survivors(rep, job.job_dir)
        self.grace_of(job, self.node_dirs(job), handlers=False)
        self.reason(rep, job.job_dir, spec, None)

    def path_8a(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        job = self.start_test_job(rep, via_uv=True, setup="sleep", wait_ready=False)
        if job is None:
            return
        pidfile = job.out / "setup-node0" / "ignorer.pid"
        if not wait_for(pidfile.exists, START_TIMEOUT_S, job.proc):
            rep.problem(f"setup never started its descendant; launcher said: {last_line(job.stderr)}")
            self.kill(job)
            return
        job.watch.add(read_pid(pidfile) or 0)
        time.sleep(1.0)
        t0 = time.monotonic()
        os.killpg(job.proc.pid, signal.SIGINT)
        self.ended(job, spec, t0, others=[job.out / "setup-node0"])

    def path_14(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        job = self.start_test_job(rep, setup="daemon", job_args=["--exit-after", "1"])
        if job is None:
            return
        for r in range(self.nodes):
            self.track(job, job.out / f"setup-node{r}")
        code = wait_exit(job.proc, END_TIMEOUT_S, rep)
        self.launcher_code(rep, code, spec)
        self.survivors(rep, job.job_dir, late=False)
        self.reason(rep, job.job_dir, spec, last_line(job.stderr))
        cancel = self.r.jobs("cancel", str(rep.job_id))
        rep.notes.append(f"jobs.py cancel after the end said: {last_line_of(cancel.stderr)}")
        code, stderr = self.relaunch(job, END_TIMEOUT_S)
        said = last_line(stderr)
        rep.notes.append(f"relaunch of the same --run exited {code}: {said}")
        if code != 0:
            rep.problem(f"relaunching the finished run exited {code}: {said}")
        self.survivors(rep, None)  # both jobs' leftovers (found by this repetition's folder), then removed

    def path_8d(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        job = self.start_test_job(rep, via_uv=True, first_record=True)
        if job is None:
            return
        t0 = time.monotonic()
        os.killpg(job.proc.pid, signal.SIGINT)
        self.ended(job, spec, t0)

    def path_13(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        job = self.start_test_job(rep, job_args=["--fail-rank", "1"], grace=max(30.0, self.cfg.grace))
        if job is None:
            return
        self.ended(job, spec, time.monotonic(), handlers=[job.out / "node0"], others=[job.out / "node1"])

    def repo_job(self, rep: Rep, job: str, args: Sequence[str], sets: Sequence[str], *, nodes: int = 2,
                 via_uv: bool = False) -> tuple[subprocess.Popen[bytes], Path, list[str]]:  # fmt: skip
        """Launch a job of the repository with job.yaml itself."""
        rep.run = f"rel-{rep.path}-{rep.rep}-{uuid.uuid4().hex[:6]}"
        default = _contract.KEY["GRACE"].default
        rep.grace = next((float(v.split("=", 1)[1]) for v in sets if v.startswith("GRACE=")), float(default))
        argv = ["--env-file", os.devnull, "--nodes", str(nodes), "--run", rep.run]
        for item in sets:
            argv += ["--set", item]
        argv += [job, *args]
        stderr = self.rep_dir(rep) / "launcher.stderr"
        return self.r.launch(argv, stderr, via_uv=via_uv), stderr, argv

    def path_8b(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        proc, stderr, _ = self.repo_job(rep, "examples/train.py", ["--steps", "100000"],
                                        [f"GRACE={self.cfg.grace:g}", "NCCL_PREFLIGHT=1"], via_uv=True)  # fmt: skip

        def preflight_started() -> bool:
            d = self.r.job_dir(rep.run)
            log0 = d / "attempt1" / "node0.log" if d else None
            return bool(log0 and log0.exists() and "started ranks" in log0.read_text(errors="replace"))

        if not wait_for(preflight_started, START_TIMEOUT_S, proc, poll=0.1):
            rep.problem(
                f"the node log never showed the preflight starting; launcher said: {last_line(stderr)}"
            )
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            wait_exit(proc, END_TIMEOUT_S, rep)
            return
        job_dir = self.r.job_dir(rep.run)
        rep.job_id = int(job_dir.name[4:])  # type: ignore[union-attr]
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        self.stopped(rep, spec, proc, t0, job_dir)
        self.reason(rep, job_dir, spec, last_line(stderr))

    def path_9b(self, rep: Rep) -> None:
        self.path_9(rep, hours="0.01")

    def path_9(self, rep: Rep, hours: str = "0.002") -> None:
        code = self.repo_job_to_end(rep, "examples/train.py", ["--steps", "100000"],
                                    [f"MAX_RUNTIME_HOURS={hours}", f"GRACE={self.cfg.grace:g}"], 600)  # fmt: skip
        # README: 0 when the job itself ran (max_runtime), 1 when the budget ran out before it started.
        before = norm(rep.reason).startswith("max_runtime_before_job")
        rep.notes.append(
            "the budget ran out before the job started" if before else "the budget ran out while the job ran"
        )
        if code != (EXIT_FAILED if before else EXIT_OK):
            rep.problem(
                f"launcher exit code {code} for {'max_runtime_before_job' if before else 'max_runtime'}"
            )

    def path_10(self, rep: Rep) -> None:
        self.repo_job_to_end(rep, "tests/jobs/exit_with.py", ["3"], [], 900)

    def repo_job_to_end(
        self, rep: Rep, job: str, args: Sequence[str], sets: Sequence[str], timeout: float
    ) -> int | None:
        """Launch a job of the repository (repo_job) and let it end by itself; check its end (see
        `stopped`, timed from the launch) and reason, note every attempt's node reasons."""
        spec = PATHS[rep.path]
        t0 = time.monotonic()
        proc, stderr, _ = self.repo_job(rep, job, args, sets)
        code = wait_exit(proc, timeout, rep)
        rep.signal_to_end_s = round(time.monotonic() - t0, 3)
        job_dir = self.r.job_dir(rep.run)
        rep.job_id = int(job_dir.name[4:]) if job_dir else None
        self.survivors(rep, job_dir)
        self.launcher_code(rep, code, spec)
        self.reason(rep, job_dir, spec, last_line(stderr))
        self.node_reasons(rep, job_dir)
        return code

    def node_reasons(self, rep: Rep, job_dir: Path | None) -> list[str]:
        """Every attempt's node reasons (job.json), noted on the rep."""
        if job_dir is None:
            return []
        record = json.loads((job_dir / "job.json").read_text())
        out = []
        for attempt in record.get("attempts") or []:
            why = attempt.get("node_reasons") or []
            out += why
            rep.notes.append(
                f"attempt {attempt.get('attempt')}: run {attempt.get('run_exit_codes')}; {'; '.join(why)}"
            )
        return out

    def mounted(self, rep: Rep, name: str, options: str) -> Path | None:
        path = self.rep_dir(rep) / name
        path.mkdir(exist_ok=True)
        if os.geteuid() != 0 or not shutil.which("mount"):
            rep.notes.append("not run: mounting a tmpfs needs root and mount(8)")
            return None
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
        )
        if done.returncode != 0:
            rep.notes.append(f"not run: mount failed: {done.stderr.strip()}")
            return None
        return path

    def path_11(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        data = self.mounted(rep, "ro", "ro,size=1m")
        if data is None:
            return
        try:
            t0 = time.monotonic()
            proc, stderr, _ = self.repo_job(rep, "tests/jobs/exit_with.py", ["0"], [f"DATA_DIR={data}"])
            code = wait_exit(proc, 120, rep)
            rep.signal_to_end_s = round(time.monotonic() - t0, 3)
            self.launcher_code(rep, code, spec)
            lines = [ln for ln in stderr.read_text(errors="replace").splitlines() if ln.strip()]
            rep.shown = {"launcher": lines}
            rep.reason = lines[-1] if lines else None
            rep.reason_ok = len(lines) == 1 and "DATA_DIR" in lines[0] and str(data) in lines[0]
            if not rep.reason_ok:
                rep.problem(f"expected one line naming DATA_DIR and the path, got {lines[-5:]}")
            if (self.cfg.state_dir / "runs" / rep.run).exists():
                rep.problem("a run directory was created although nothing may be launched")
            self.survivors(rep, None)
        finally:
            subprocess.run(["umount", str(data)], capture_output=True)

    def path_12(self, rep: Rep) -> None:
        spec = PATHS[rep.path]
        data = self.mounted(rep, "full", "size=1m,mode=0755")
        if data is None:
            return
        try:
            fd = os.open(data / ".filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
            finally:
                os.close(fd)
            t0 = time.monotonic()
            proc, stderr, _ = self.repo_job(rep, "tests/jobs/exit_with.py", ["0"],
                                            [f"DATA_DIR={data}", f"GRACE={self.cfg.grace:g}"])  # fmt: skip
            code = wait_exit(proc, 900, rep)
            rep.signal_to_end_s = round(time.monotonic() - t0, 3)
            rep.exit_codes["launcher"] = code
            job_dir = self.r.job_dir(rep.run)
            rep.job_id = int(job_dir.name[4:]) if job_dir else None
            self.survivors(rep, job_dir)
            launcher_line = last_line(stderr)
            if job_dir is None:
                rep.reason = launcher_line
                rep.shown = {"launcher": launcher_line}
                rep.notes.append(f"no job launched; launcher exited {code}: {launcher_line}")
                rep.reason_ok = code == 2 and len(stderr.read_text().strip().splitlines()) == 1
                if not rep.reason_ok:
                    rep.problem(f"launcher exited {code} without launching: {stderr.read_text()[-800:]}")
                return
            self.reason(rep, job_dir, spec, launcher_line)
            why = self.node_reasons(rep, job_dir)
            if any("preflight_error" in w for w in why) or "preflight_error" in norm(rep.reason):
                rep.problem(f"the job ended with preflight_error: {rep.reason}")
            if code not in spec.codes:
                rep.problem(f"launcher exit code {code}")
        finally:
            subprocess.run(["umount", str(data)], capture_output=True)


def last_line_of(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------------------------------
# Summary and table


def median(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


def summarize(ident: str, reps: Sequence[Rep], grace: float) -> dict[str, Any]:
    spec = PATHS[ident]
    ran = [r for r in reps if not any(n.startswith("not run") for n in r.notes)]
    handler = [s for r in ran for s in r.handler_s]
    ignorer = [s for r in ran for s in r.ignorer_s]
    codes: dict[str, list[int | None]] = {}
    for r in ran:
        for k, v in r.exit_codes.items():
            codes.setdefault(k, []).append(v)
    return {
        "path": ident,
        "title": spec.title,
        "backend": "local",
        "repetitions": len(ran),
        "grace_s": sorted({r.grace for r in ran if r.grace}),
        "not_run": sorted({n for r in reps for n in r.notes if n.startswith("not run")}),
        "handlers_written": sum(r.handlers_written for r in ran),
        "handlers_expected": sum(r.handlers_expected for r in ran),
        "handler_term_to_exit_s": {"median": median(handler), "max": max(handler) if handler else None},
        "ignorer_term_to_kill_s": {
            "median": median(ignorer),
            "min": min((v for v in ignorer if v is not None), default=None),
            "honoured": sum(r.ignorer_honoured for r in ran),
            "measured": len(ignorer),
        },
        "signal_to_end_s": {"median": median([r.signal_to_end_s for r in ran])},
        "survivors": sum(r.survivors or 0 for r in ran),
        "survivors_late": sum(r.survivors_late or 0 for r in ran),
        "reason_agrees": sum(1 for r in ran if r.reason_ok),
        "states": sorted({str(r.state) for r in ran if r.state}),
        "attempts": [r.attempts for r in ran if r.attempts is not None],
        "budget_before_job": sum(1 for r in ran if "the budget ran out before the job started" in r.notes),
        "exit_codes": {k: sorted(set(v), key=lambda c: (c is None, c or 0)) for k, v in codes.items()},
        "failed_reps": sum(1 for r in ran if r.problems),
        "problems": sorted({p for r in ran for p in r.problems}),
        "reps": [asdict(r) for r in reps],
    }


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table_row(s: dict[str, Any], grace: float) -> str:
    if s["not_run"] and not s["repetitions"]:
        text = "; ".join(s["not_run"])
        return f"| {s['path']} {s['title']} | local | 0 | {text} | | | | | **not run** |"
    n = s["repetitions"]
    written = f"{s['handlers_written']}/{s['handlers_expected']}" if s["handlers_expected"] else "n/a"
    ign = s["ignorer_term_to_kill_s"]
    parts = []
    if s["handler_term_to_exit_s"]["median"] is not None:
        parts.append(f"handler {fmt_s(s['handler_term_to_exit_s']['median'])} s")
    if ign["measured"]:
        g = "/".join(f"{v:g}" for v in s["grace_s"]) or f"{grace:g}"
        parts.append(
            f"descendant {fmt_s(ign['median'])} s (min {fmt_s(ign['min'])}), {ign['honoured']}/{ign['measured']} ≥ GRACE={g} s"
        )
    grace_cell = "; ".join(parts) or "n/a"
    survivors = f"{s['survivors']}" + (f" (after 2 s: {s['survivors_late']})" if s["survivors_late"] else "")
    codes = "; ".join(f"{k} {'/'.join(map(str, v))}" for k, v in s["exit_codes"].items())
    if s["attempts"] and s["path"] in ("10", "12"):
        codes += f"; attempts {'/'.join(map(str, sorted(set(s['attempts']))))}"
    if s["path"] in ("9", "9b"):
        codes += f"; budget out before the job started: {s.get('budget_before_job', 0)}/{n}"
    states = "/".join(s["states"]) or "-"
    verdict = "pass" if not s["failed_reps"] else f"**FAIL** {s['failed_reps']}/{n}"
    return (f"| {s['path']} {s['title']} | local | {n} | {written} | {grace_cell} | {survivors} |"
            f" {s['reason_agrees']}/{n} ({states}) | {codes} | {verdict} |")  # fmt: skip


def markdown(summaries: Sequence[dict[str, Any]], grace: float) -> str:
    lines = [
        "| path | backend | reps | handler file written | grace honoured: median SIGTERM→exit (handler), first signal→SIGKILL (descendant) | survivors | reason agrees (state) | exit codes seen | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    lines += [table_row(s, grace) for s in summaries]
    lines.append("| all paths | sky | not run: no cloud account | | | | | | |")
    out = "\n".join(lines) + "\n"
    problems = [(s["path"], p) for s in summaries for p in s["problems"]]
    if problems:
        out += "\nProblems seen:\n\n" + "".join(f"- path {p}: {text}\n" for p, text in problems)
    return out


# --------------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reliability.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--repeat", type=int, default=5, help="repetitions of each path")
    p.add_argument(
        "--paths", default="all", help=f"comma-separated paths ({', '.join(PATHS)}; 8 = 8a-8d) or all"
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="GRACE given to the jobs (--set GRACE=...), seconds"
    )
    p.add_argument("--json-out", type=Path, default=None, help="write every measurement as JSON here")
    p.add_argument("--state-dir", type=Path, default=None,
                   help="SKYOPS_STATE_DIR for the launches (None: a new temporary folder, removed unless --keep)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (task, job, logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug output: every command run")
    return p


def run_paths(cfg: Config) -> list[dict[str, Any]]:
    """Every repetition of every selected path; a summary a path (`summarize`)."""
    bench = Bench(cfg)
    summaries = []
    for ident in cfg.paths:
        reps = []
        for i in range(1, cfg.repeat + 1):
            rep = Rep(ident, i)
            log.info("path %s (%s), repetition %d of %d", ident, PATHS[ident].title, i, cfg.repeat)
            t = time.monotonic()
            try:
                getattr(bench, f"path_{ident}")(rep)
            except Exception as exc:  # a benchmark bug or an unexpected end: recorded, never hidden
                log.exception("path %s rep %d", ident, i)
                rep.problem(f"benchmark error: {type(exc).__name__}: {exc}")
            log.info("  -> %.1f s, exit codes %s, %s", time.monotonic() - t, rep.exit_codes,
                     "ok" if not rep.problems else f"{len(rep.problems)} problem(s)")  # fmt: skip
            reps.append(rep)
            if any(n.startswith("not run") for n in rep.notes):
                break
        summaries.append(summarize(ident, reps, cfg.grace))
    return summaries


def result(cfg: Config, started: dt.datetime, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything --json-out writes: the summaries, and what they were measured on."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout
    dirty = subprocess.run(
        ["git", "status", "--short", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
    ).stdout
    return {
        "started": started.isoformat(timespec="seconds"),
        "commit": commit.strip() or None,
        "uncommitted_changes": [line[3:] for line in dirty.splitlines()],
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "grace_s": cfg.grace,
        "handler_s": HANDLER_S,
        "tolerance_s": TOLERANCE_S,
        "repeat": cfg.repeat,
        "sky": "not run: no cloud account",
        "paths": summaries,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="reliability: %(message)s",
                        stream=sys.stderr)  # fmt: skip
    try:
        paths = parse_paths(args.paths)
        if args.repeat < 1:
            raise ValueError(f"--repeat: must be at least 1, got {args.repeat}")
        if args.grace <= HANDLER_S:
            raise ValueError(f"--grace: must exceed the handler's {HANDLER_S:g} s, got {args.grace:g}")
    except ValueError as exc:
        print(f"reliability.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not sys.platform.startswith("linux"):
        print("reliability.py: error: needs Linux (pidfds, /proc)", file=sys.stderr)
        return EXIT_BAD_INPUT
    work = Path(tempfile.mkdtemp(prefix="skyops-reliability-"))
    state_dir = args.state_dir or work / "state"
    cfg = Config(repeat=args.repeat, paths=paths, grace=args.grace, json_out=args.json_out, state_dir=state_dir,
                 work=work, env=clean_env(os.environ, state_dir), keep=args.keep)  # fmt: skip
    (work / "reliability_job.py").write_text(TEST_JOB)
    started = dt.datetime.now(dt.UTC)
    try:
        summaries = run_paths(cfg)
    finally:
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
    if cfg.json_out:
        cfg.json_out.write_text(json.dumps(result(cfg, started, summaries), indent=2) + "\n")
    sys.stdout.write(markdown(summaries, cfg.grace))
    return EXIT_OK if all(not s["failed_reps"] and s["repetitions"] for s in summaries) else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
