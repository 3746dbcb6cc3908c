"""scripts/remote/run.py: the node-side supervisor (issue 3; docs/field-cases.md R1-R3).

Fault tests run the real script as a process under a small harness that is a child subreaper: any
process of the job's tree the supervisor leaves behind (alive or zombie) is adopted by the harness
and reported. Jobs are tiny Python scripts written into tmp_path; they log events (start, beat,
sigterm) with their pid and CLOCK_MONOTONIC time, which is shared by every process on the machine.
Timeouts are a few seconds; timing assertions have generous upper bounds (2 busy cores) and strict
lower bounds (a monitor must never fire early).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import _contract
import _distributed
import _heartbeat
import _job_command
import _ledger
import _policy
import _proctree
import _supervisor_config
import psutil
import pytest
import run
from _contract import (
    EXIT_BAD_INPUT,
    EXIT_BAD_NODE,
    EXIT_CRASH_LOOP,
    EXIT_FAILURE,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    RESERVED_EXIT_CODES,
)

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "remote" / "run.py"
JOB_COMMAND = ROOT / "scripts" / "remote" / "_job_command.py"
THIRD_PARTY = ROOT / "tests" / "jobs" / "third_party"
REPORT = ROOT / "tests" / "jobs" / "report_interpreter.py"
NCCL_TEST = ROOT / "scripts" / "remote" / "nccl_test.py"
JOB_ID, TASK = 7, 0
TASK_ID = f"sky-managed-2026-01-02-03-04-05-000006_train_{JOB_ID}-{TASK}"

pytestmark = pytest.mark.timeout(90)

HARNESS = """
import ctypes, json, os, signal, subprocess, sys, time
import psutil
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: adopt what the supervisor leaves
out = sys.argv[1]
proc = subprocess.Popen(sys.argv[2:])
with open(out + ".pid", "w") as f:
    f.write(str(proc.pid))
code = proc.wait()
left = []
for p in psutil.Process().children(recursive=True):
    try:
        left.append({"pid": p.pid, "status": p.status(), "cmdline": p.cmdline()})
        p.kill()
    except psutil.Error:
        pass
psutil.wait_procs(psutil.Process().children(), timeout=5)
with open(out, "w") as f:
    json.dump({"code": code, "left": left}, f)
"""

PRELUDE = """
import json, os, signal, subprocess, sys, time
from pathlib import Path

def note(event, **kw):
    with open(os.environ["TEST_EVENTS"], "a") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid(), "t": time.monotonic(), **kw}) + "\\n")

def beat():
    Path(os.environ["HEARTBEAT_FILE"]).touch()
    note("beat")

def on_sigterm(signum, frame):
    note("sigterm")
    sys.exit(143)

signal.signal(signal.SIGTERM, on_sigterm)
note("start", attempt=os.environ.get("SKYOPS_ATTEMPT"), heartbeat_file=os.environ.get("HEARTBEAT_FILE"))
"""

WORKER = PRELUDE + "\ntime.sleep(300)\n"


@dataclass
class Outcome:
    code: int
    stderr: str
    left: list[dict]
    events: list[dict]
    ledger: list[dict]
    result: dict | None
    wall_s: float
    #: The supervisor's stdout: the job's stdout and stderr, byte for byte (decoded).
    stdout: str = ""

    def reason(self) -> str | None:
        return self.result["reason"] if self.result else None

    def pids(self) -> set[int]:
        return {e["pid"] for e in self.events}

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e["event"] == event]


class Node:
    """One emulated node's supervisor invocations against a shared data dir."""

    def __init__(self, tmp_path: Path, rank: int = 0, **env: str) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.events = tmp_path / f"events-node{rank}.jsonl"
        (tmp_path / "harness.py").write_text(HARNESS)
        (tmp_path / "worker.py").write_text(WORKER)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
        for key in (
            "NNODES",
            "NODE_RANK",
            "NPROC_PER_NODE",
            "WORLD_SIZE",
            "MASTER_ADDR",
            "HEARTBEAT_FILE",
            *(k.name for k in _contract.KEYS),
        ):
            self.env.pop(key, None)
        self.env.update(
            DATA_DIR=str(self.data),
            RUN_ID="r",
            NCCL_PREFLIGHT="0",
            HEARTBEAT_TIMEOUT="30",
            STARTUP_GRACE="30",
            GRACE="2",
            SKYPILOT_NODE_RANK=str(rank),
            SKYPILOT_NUM_NODES="2" if rank else "1",
            SKYPILOT_MANAGED_JOB_ID=str(JOB_ID),
            SKYPILOT_TASK_ID=TASK_ID,
            SKYPILOT_CLUSTER_INFO='{"cluster_name": "c", "cloud": "local", "region": "r", "zone": null}',
            TEST_EVENTS=str(self.events),
            WORKER=str(tmp_path / "worker.py"),
            # A port of its own: torchrun's store on the default 29500 would meet another test's
            # when the tests run side by side, and its rendezvous would wait on the wrong job.
            MASTER_PORT=free_port(),
        )
        self.env.update(env)
        self.rank = rank
        self.count = 0

    @property
    def ledger_path(self) -> Path:
        return _ledger.ledger_path(self.data, "r", JOB_ID, TASK)

    def job(self, body: str) -> Path:
        self.count += 1
        path = self.tmp / f"job{self.count}_node{self.rank}.py"
        path.write_text(PRELUDE + textwrap.dedent(body))
        return path

    def start(
        self, body: str, *flags: str, script: Path | None = None, **env: str
    ) -> tuple[subprocess.Popen, Path]:
        """Start run.py on a job made of PRELUDE + `body`, or on `script` as it is."""
        out = self.tmp / f"harness{self.count + 1}_node{self.rank}.json"
        job = self.job(body) if script is None else script
        self.spawned = time.monotonic()  # before run.py starts: every grace period counts from later
        argv = [
            sys.executable,
            str(self.tmp / "harness.py"),
            str(out),
            sys.executable,
            str(RUN),
            *flags,
            "--",
            str(job),
        ]
        proc = subprocess.Popen(
            argv,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            cwd=self.tmp,
        )
        return proc, out

    def finish(self, proc: subprocess.Popen, out: Path, started: float) -> Outcome:
        stdout, stderr = proc.communicate(timeout=120)
        wall = time.monotonic() - started
        sys.stdout.write(stdout)
        sys.stderr.write(stderr)
        harness = json.loads(out.read_text())
        events = (
            [json.loads(line) for line in self.events.read_text().splitlines()]
            if self.events.exists()
            else []
        )
        self.events.unlink(missing_ok=True)
        result_file = _ledger.result_path(self.data, "r", self.rank)
        result = json.loads(result_file.read_text()) if result_file.exists() else None
        ledger = _ledger.parse_ledger(self.ledger_path.read_bytes()) if self.ledger_path.exists() else []
        outcome = Outcome(harness["code"], stderr, harness["left"], events, ledger, result, wall, stdout)
        assert_no_survivors(outcome, self.tmp)
        return outcome

    def __call__(self, body: str, *flags: str, script: Path | None = None, **env: str) -> Outcome:
        started = time.monotonic()
        proc, out = self.start(body, *flags, script=script, **env)
        return self.finish(proc, out, started)

    def supervisor_pid(self, out: Path, timeout: float = 20) -> int:
        pid_file = Path(str(out) + ".pid")
        wait_for(pid_file.exists, timeout)
        return int(pid_file.read_text())

    def wait_event(self, event: str, count: int = 1, timeout: float = 20) -> None:
        def seen() -> bool:
            if not self.events.exists():
                return False
            return (
                sum(json.loads(line)["event"] == event for line in self.events.read_text().splitlines())
                >= count
            )

        wait_for(seen, timeout)


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def assert_no_survivors(outcome: Outcome, tmp: Path) -> None:
    """No process of the job's tree is alive or a zombie once the supervisor has exited."""
    assert outcome.left == [], f"left behind: {outcome.left}"
    for pid in outcome.pids():
        try:
            proc = psutil.Process(pid)
            alive = str(tmp) in " ".join(proc.cmdline()) or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
        assert not alive, f"pid {pid} survived"


def ends(outcome: Outcome) -> list[tuple[int, int | None, str]]:
    return [(r["attempt"], r["exit_code"], r["reason"]) for r in outcome.ledger if r["event"] == "end"]


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


# --------------------------------------------------------------------------------------------------
# One test per fault (issue 3, "Tests")


def test_job_crash_code_3(node: Node) -> None:
    out = node("sys.exit(3)\n")
    assert (out.code, out.reason()) == (3, "job_failed")
    assert ends(out) == [(1, 3, "job_failed")]
    start = next(r for r in out.ledger if r["event"] == "start")
    assert start["num_nodes"] == 1 and start["cluster"]["cluster_name"] == "c"
    assert (start["managed_job_id"], start["task_index"]) == (JOB_ID, TASK)
    assert out.of("start")[0]["attempt"] == "1"
    assert "summary: node=0 attempt=1 reason=job_failed exit_code=3" in out.stderr


def test_hang_without_heartbeat_r3(node: Node) -> None:
    """R3: heartbeats for a while, then a hang; teardown starts timeout..timeout+slack after the last."""
    body = """
        subprocess.Popen([sys.executable, os.environ["WORKER"]], start_new_session=True)
        for _ in range(6):
            beat()
            time.sleep(0.25)
        time.sleep(300)
    """
    out = node(body, "--heartbeat-timeout", "2", "--grace", "1")
    assert (out.code, out.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    last_beat = max(e["t"] for e in out.of("beat"))
    first_term = min(e["t"] for e in out.of("sigterm"))
    assert 2 - _heartbeat.MTIME_SLACK_S <= first_term - last_beat < 2 + 1.5
    assert len(out.of("sigterm")) == 2  # the job and its worker in its own session
    assert ends(out) == [(1, EXIT_BAD_NODE, "heartbeat_timeout")]


def test_never_a_first_heartbeat(node: Node) -> None:
    out = node("time.sleep(300)\n", "--startup-grace", "1.5", "--heartbeat-timeout", "1", "--grace", "1")
    assert (out.code, out.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    start, term = out.of("start")[0]["t"], out.of("sigterm")[0]["t"]
    # The startup grace counts from the job's spawn, which comes after `node.spawned` and before the
    # job's first line runs: never early, and not much late (a loaded machine starts Python slowly).
    assert term - node.spawned >= 1.5
    assert term - start < 1.5 + 5
    assert ends(out) == [(1, EXIT_BAD_NODE, "heartbeat_timeout")]


def test_stale_heartbeat_file_from_before(node: Node) -> None:
    """A file from an earlier attempt is neither a heartbeat nor a reason to kill at start."""
    first = node("beat()\nsys.exit(1)\n", "--crash-loop-attempts", "0")
    old_path = first.of("start")[0]["heartbeat_file"]
    body = f"""
        hb = Path(os.environ["HEARTBEAT_FILE"])
        assert hb != Path({old_path!r}) and not hb.exists(), "a fresh path per attempt"
        hb.touch()
        old = time.time() - 3600
        os.utime(hb, (old, old))  # as if restored from an earlier attempt
        time.sleep(300)
    """
    out = node(body, "--startup-grace", "3", "--heartbeat-timeout", "1", "--grace", "1")
    assert (out.code, out.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    start, term = out.of("start")[0]["t"], out.of("sigterm")[0]["t"]
    # Counted as stale, the kill would come ~1 s after the touch; counted as a beat, ~2 s after it.
    # Never a beat: the startup grace (3 s from the job's spawn, after `node.spawned`) ends it.
    assert term - node.spawned >= 3 and term - start < 3 + 5
    assert ends(out) == [(1, 1, "job_failed"), (2, EXIT_BAD_NODE, "heartbeat_timeout")]
    assert out.of("start")[0]["attempt"] == "2"


def test_job_ignores_sigterm(node: Node) -> None:
    # One beat once the handler is in place: the timeout counts from it, however slowly Python starts.
    body = """
        signal.signal(signal.SIGTERM, lambda *a: note("sigterm"))
        beat()
        time.sleep(300)
    """
    out = node(body, "--startup-grace", "0.5", "--heartbeat-timeout", "0.5", "--grace", "1")
    assert (out.code, out.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    assert len(out.of("sigterm")) == 1  # got SIGTERM, ignored it, then SIGKILL after the grace period
    assert out.result["job_exit_code"] == 128 + signal.SIGKILL
    assert out.wall_s >= 0.5 + 1
    assert ends(out) == [(1, EXIT_BAD_NODE, "heartbeat_timeout")]


@pytest.mark.parametrize("how", ["launcher_exits", "supervisor_sigterm"])
def test_grandchildren_in_new_sessions_r2(node: Node, how: str) -> None:
    """R2: torchrun-like workers in their own sessions die with the job, whichever way it ends."""
    body = """
        workers = [subprocess.Popen([sys.executable, os.environ["WORKER"]], start_new_session=True) for _ in range(2)]
        while sum(1 for line in open(os.environ["TEST_EVENTS"]) if '"start"' in line) < 3:
            time.sleep(0.01)
        note("ready")
        if os.environ["HOW"] == "launcher_exits":
            os._exit(3)  # orphans its workers, as a crashed launcher would
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # like a launcher busy elsewhere
        time.sleep(300)
    """
    started = time.monotonic()
    proc, out_file = node.start(body, "--grace", "1", HOW=how)
    node.wait_event("ready")
    if how == "supervisor_sigterm":
        os.kill(node.supervisor_pid(out_file), signal.SIGTERM)
    out = node.finish(proc, out_file, started)
    assert len(out.pids()) == 3
    if how == "launcher_exits":
        assert (out.code, out.reason()) == (3, "job_failed")
    else:
        assert (out.code, out.reason()) == (EXIT_SIGTERM, "sigterm")
    assert len(out.of("sigterm")) == 2  # both workers; each in its own session


@pytest.mark.parametrize(
    ("signum", "code", "reason"),
    [(signal.SIGTERM, EXIT_SIGTERM, "sigterm"), (signal.SIGINT, EXIT_SIGINT, "sigint")],
)
def test_supervisor_gets_signal(node: Node, signum: int, code: int, reason: str) -> None:
    started = time.monotonic()
    proc, out_file = node.start("beat()\nnote('ready')\ntime.sleep(300)\n")
    node.wait_event("ready")
    os.kill(node.supervisor_pid(out_file), signum)
    out = node.finish(proc, out_file, started)
    assert (out.code, out.reason()) == (code, reason)
    assert len(out.of("sigterm")) == 1  # the job got SIGTERM and its grace period
    assert ends(out) == [(1, code, reason)]


def test_corrupt_last_ledger_line(node: Node) -> None:
    node.ledger_path.parent.mkdir(parents=True)
    good = [
        {"event": "start", "attempt": 1, "time": time.time() - 100},
        {
            "event": "end",
            "attempt": 1,
            "time": time.time() - 50,
            "runtime_s": 50.0,
            "exit_code": 3,
            "reason": "job_failed",
        },
    ]
    half = b'{"event": "end", "attempt": 2, "runtime'
    node.ledger_path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in good) + half)
    out = node("sys.exit(0)\n")
    assert (out.code, out.reason()) == (0, "completed")
    assert "skipping a corrupt ledger line" in out.stderr
    lines = node.ledger_path.read_bytes().split(b"\n")
    assert lines[2] == half, "the half-written line is kept as it was; new records start on a new line"
    assert ends(out) == [(1, 3, "job_failed"), (2, 0, "completed")]
    assert out.of("start")[0]["attempt"] == "2"


def test_unwritable_data_dir_is_a_plain_failure(node: Node, tmp_path: Path) -> None:
    """Not a bad node (fresh nodes mount the same storage): exit 1, a reason that says so, no job run."""
    blocker = tmp_path / "not-a-dir"  # root writes through permission bits: a plain file as the parent
    blocker.write_text("")
    data = blocker / "data"
    out = node("beat()\nsys.exit(0)\n", "--data-dir", str(data))
    assert out.code == EXIT_FAILURE
    assert "summary: node=0 attempt=1 reason=data_dir_unwritable exit_code=1" in out.stderr
    assert "ENOTDIR" in out.stderr and str(data) in out.stderr
    assert "Traceback" not in out.stderr
    assert not out.events, "the job never started"


def test_read_only_data_dir_mount(node: Node, read_only_dir: Path) -> None:
    out = node("beat()\nsys.exit(0)\n", "--data-dir", str(read_only_dir))
    assert out.code == EXIT_FAILURE
    assert "reason=data_dir_unwritable" in out.stderr and "EROFS" in out.stderr
    assert "Traceback" not in out.stderr and not out.events


def test_full_data_dir_optional_records_warn_and_job_failure_names_enospc(node: Node, full_dir: Path) -> None:
    """A full DATA_DIR: the ledger and result are optional (warnings with path and errno); the job runs,
    and when its own checkpoint write fails the reason is the job's failure, with ENOSPC in the cause."""
    body = """
        beat()
        try:
            with open(os.path.join(os.environ["DATA_DIR"], "checkpoint.pt"), "wb") as f:
                f.write(b"x" * 4_000_000)
        except OSError as exc:
            note("checkpoint_failed", errno=exc.errno)
            sys.exit(1)
        sys.exit(0)
    """
    out = node(body, "--data-dir", str(full_dir))
    assert out.of("checkpoint_failed"), "the job ran and its own write failed"
    assert out.code == 1
    assert "reason=job_failed" in out.stderr and "ENOSPC" in out.stderr.split("summary:")[-1]
    assert "preflight_error" not in out.stderr and "Traceback" not in out.stderr


def test_max_runtime_across_two_attempts(node: Node) -> None:
    # 5 s: attempt 1 spends 2 s and more, and attempt 2 has time left to put its handler in place.
    budget = ["--max-runtime-hours", str(5.0 / 3600), "--crash-loop-attempts", "0", "--grace", "2"]
    first = node("beat()\ntime.sleep(2)\nsys.exit(1)\n", *budget)
    assert (first.code, first.reason()) == (1, "job_failed")
    body = """
        def checkpoint(signum, frame):
            note("sigterm")
            note("checkpointed")
            sys.exit(0)
        signal.signal(signal.SIGTERM, checkpoint)
        while True:
            beat()
            time.sleep(0.2)
    """
    out = node(body, *budget)
    assert (out.code, out.reason()) == (0, "max_runtime")
    assert out.of("checkpointed"), "the job got SIGTERM and time to checkpoint"
    runtimes = {r["attempt"]: r["runtime_s"] for r in out.ledger if r["event"] == "end"}
    assert runtimes[1] >= 2
    assert runtimes[2] < 5 - runtimes[1] + 1.5, "only what was left of the 5 s budget"
    assert ends(out) == [(1, 1, "job_failed"), (2, 0, "max_runtime")]
    third = node("sys.exit(0)\n", *budget)  # budget spent: done without starting the job
    assert (third.code, third.reason()) == (0, "max_runtime") and not third.events


def test_crash_loop(node: Node) -> None:
    guard = [
        "--crash-loop-attempts",
        "3",
        "--crash-loop-window-minutes",
        "60",
        "--crash-loop-min-minutes",
        "5",
    ]
    codes = [node("sys.exit(3)\n", *guard).code for _ in range(3)]
    assert codes == [3, 3, EXIT_CRASH_LOOP]
    out = node("note('ran')\nsys.exit(3)\n", *guard, NCCL_PREFLIGHT="1")
    assert (out.code, out.reason()) == (EXIT_CRASH_LOOP, "crash_loop")
    assert not out.events, "once declared, no later attempt runs the job"
    assert "NCCL preflight" not in out.stderr, "nor the preflight"
    assert ends(out) == [
        (1, 3, "job_failed"),
        (2, 3, "job_failed"),
        (3, EXIT_CRASH_LOOP, "crash_loop"),
        (4, EXIT_CRASH_LOOP, "crash_loop"),
    ]


def test_recover_code_cap(node: Node) -> None:
    flags = [
        "--startup-grace",
        "0.5",
        "--heartbeat-timeout",
        "0.5",
        "--grace",
        "1",
        "--max-recover-restarts",
        "1",
    ]
    flags += ["--crash-loop-attempts", "0"]
    first = node("time.sleep(300)\n", *flags)
    assert (first.code, first.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    out = node("time.sleep(300)\n", *flags)
    assert (out.code, out.reason()) == (EXIT_FAILURE, "recover_cap")
    assert ends(out) == [(1, EXIT_BAD_NODE, "heartbeat_timeout"), (2, EXIT_FAILURE, "recover_cap")]


def test_recover_cap_counts_other_nodes_bad_node_exits(tmp_path: Path) -> None:
    """SkyPilot restarts uncounted when ANY node exits 86; rank 0 itself may have exited otherwise."""
    head, worker = Node(tmp_path), Node(tmp_path, rank=1)
    flags = ["--grace", "1", "--max-recover-restarts", "1", "--crash-loop-attempts", "0"]
    started = time.monotonic()
    head_proc, head_out = head.start("note('ready')\ntime.sleep(300)\n", *flags)
    head.wait_event("ready")
    bad = worker("time.sleep(300)\n", *flags, "--startup-grace", "0.5", "--heartbeat-timeout", "0.5")
    assert (bad.code, bad.result["attempt"]) == (EXIT_BAD_NODE, 1)
    os.kill(head.supervisor_pid(head_out), signal.SIGTERM)  # SkyPilot stops the other nodes
    assert head.finish(head_proc, head_out, started).code == EXIT_SIGTERM
    out = head("time.sleep(300)\n", *flags, "--startup-grace", "0.5", "--heartbeat-timeout", "0.5")
    assert (out.code, out.reason()) == (EXIT_FAILURE, "recover_cap")
    assert {"event": "node_result", "attempt": 1, "node_rank": 1, "exit_code": EXIT_BAD_NODE}.items() <= next(
        r for r in out.ledger if r["event"] == "node_result"
    ).items()
    assert all(r["event"] != "start" or r.get("node_rank") == 0 for r in out.ledger), "only rank 0 writes"


def test_crash_loop_anywhere_in_the_cluster(tmp_path: Path) -> None:
    """Node 1's job fails fast on every attempt; SkyPilot then stops node 0 (SIGTERM: 143, which never
    counts as a crash). Node 1's failures still count: its K-th failure is a crash loop, and so is rank
    0's own next failure, from the node results rank 0 folded into the ledger."""
    two = {"SKYPILOT_NUM_NODES": "2"}
    head, worker = Node(tmp_path, **two), Node(tmp_path, rank=1, **two)
    guard = ["--grace", "1", "--crash-loop-attempts", "3", "--crash-loop-window-minutes", "60"]
    guard += ["--crash-loop-min-minutes", "5"]

    def attempt() -> tuple[Outcome, Outcome]:
        started = time.monotonic()
        head_proc, head_out = head.start("note('ready')\ntime.sleep(300)\n", *guard)
        head.wait_event("ready")
        failed = worker("print('boom', flush=True)\nsys.exit(3)\n", *guard)
        os.kill(head.supervisor_pid(head_out), signal.SIGTERM)  # SkyPilot stops the other nodes
        return head.finish(head_proc, head_out, started), failed

    outcomes = [attempt() for _ in range(3)]
    assert [(h.code, h.reason()) for h, _ in outcomes] == [(EXIT_SIGTERM, "sigterm")] * 3
    assert [(w.result["attempt"], w.code, w.reason()) for _, w in outcomes] == [
        (1, 3, "job_failed"),
        (2, 3, "job_failed"),
        (3, EXIT_CRASH_LOOP, "crash_loop"),
    ]
    last = outcomes[-1][1]
    assert re.fullmatch(
        r"the last 3 failed attempts started within 60 min and ran [0-9.]+ s on average \(under 300 s\): "
        r"attempt 1: node1 job_failed \(exit 3\); attempt 2: node1 job_failed \(exit 3\); "
        r"attempt 3: node1 job_failed \(exit 3\)",
        last.result["cause"],
    )
    assert "summary: node=1 attempt=3 reason=crash_loop exit_code=87" in last.stderr
    assert "cause: the last 3 failed attempts" in last.stderr
    # The next attempt: the ledger knows attempt 3 declared a crash loop on node 1, so rank 0 ends at
    # once with 87, before the preflight and the job (no paid work once a loop is declared).
    out = head("note('ran')\nsys.exit(3)\n", *guard)
    assert (out.code, out.reason(), out.result["attempt"]) == (EXIT_CRASH_LOOP, "crash_loop", 4)
    assert out.result["cause"] == "crash loop declared at attempt 3; this attempt does not run the job"
    assert not out.events and out.result["job_started"] is False
    assert "previous attempt 3: node1 crash_loop (exit 87)" in out.stderr
    folded = [
        (r["attempt"], r["node_rank"], r["exit_code"], r["reason"])
        for r in out.ledger
        if r["event"] == "node_result"
    ]
    assert folded == [(1, 1, 3, "job_failed"), (2, 1, 3, "job_failed"), (3, 1, EXIT_CRASH_LOOP, "crash_loop")]
    assert ends(out) == [
        *[(n, EXIT_SIGTERM, "sigterm") for n in (1, 2, 3)],
        (4, EXIT_CRASH_LOOP, "crash_loop"),
    ]
    assert [(a.exit_code, a.reason, a.node_rank) for a in _policy.summarize(out.ledger)] == [
        (3, "job_failed", 1),
        (3, "job_failed", 1),
        (EXIT_CRASH_LOOP, "crash_loop", 1),
        (EXIT_CRASH_LOOP, "crash_loop", 0),
    ]


def test_worker_attempt_numbers_follow_its_own_results(tmp_path: Path) -> None:
    """Rank 0 was lost (no end yet) when node 1 starts the next attempt: node 1 still counts up."""
    head, worker = Node(tmp_path), Node(tmp_path, rank=1, SKYPILOT_NUM_NODES="2")
    head.ledger_path.parent.mkdir(parents=True)
    head.ledger_path.write_text(json.dumps({"event": "start", "attempt": 1, "time": time.time() - 60}) + "\n")
    first = worker("sys.exit(3)\n", "--crash-loop-attempts", "0")
    second = worker("sys.exit(3)\n", "--crash-loop-attempts", "0")
    assert (first.result["attempt"], second.result["attempt"]) == (1, 2)
    assert second.of("start")[0]["attempt"] == "2"
    assert not any(r["event"] == "end" for r in second.ledger), "only rank 0 writes"


def test_a_node_that_starts_after_rank_0_ended_the_attempt_joins_it(tmp_path: Path) -> None:
    """Found by running the tests side by side: a job that needs no peer (no preflight) ended on rank 0
    before node 1's supervisor read the ledger, and node 1 called itself attempt 2. Then rank 0 found no
    result of its peers for attempt 1 and left the success to the launcher to announce."""
    head, worker = Node(tmp_path), Node(tmp_path, rank=1, SKYPILOT_NUM_NODES="2")
    assert head("sys.exit(0)\n").result["attempt"] == 1
    late = worker("sys.exit(0)\n")
    assert (late.code, late.result["attempt"]) == (0, 1)
    assert late.of("start")[0]["attempt"] == "1"


def test_job_exit_with_reserved_code(node: Node) -> None:
    out = node(f"sys.exit({EXIT_BAD_NODE})\n")
    assert (out.code, out.reason()) == (EXIT_FAILURE, "job_failed_reserved_code")


def test_lost_attempt_is_closed_and_counted(node: Node) -> None:
    node.ledger_path.parent.mkdir(parents=True)
    lost = [
        {"event": "start", "attempt": 1, "time": time.time() - 900},
        {"event": "alive", "attempt": 1, "time": time.time() - 600, "runtime_s": 300.0},
    ]
    node.ledger_path.write_text("".join(json.dumps(r) + "\n" for r in lost))
    out = node("sys.exit(0)\n")
    assert ends(out) == [(1, None, _ledger.LEDGER_LOST), (2, 0, "completed")]
    assert "runtime used so far 300 s" in out.stderr


def test_preflight_wiring(node: Node, tmp_path: Path) -> None:
    fake = tmp_path / "fake_nccl_test.py"  # stands in for nccl_test.py: records argv, exits as told
    fake.write_text(
        PRELUDE + "note('preflight', argv=sys.argv[1:])\nsys.exit(int(os.environ['FAKE_CODE']))\n"
    )
    flags = ["--preflight", "--preflight-script", str(fake), "--crash-loop-attempts", "0"]
    bad = node("note('job')\n", *flags, FAKE_CODE=str(EXIT_BAD_NODE))
    assert (bad.code, bad.reason()) == (EXIT_BAD_NODE, "preflight_failed")
    assert not bad.of("job"), "the job does not start on a bad node"
    report = node.data / "r" / "preflight" / "nccl-report.json"
    assert bad.of("preflight")[0]["argv"] == ["--json-out", str(report)]
    broken = node("note('job')\n", *flags, FAKE_CODE="1")  # the preflight's own bug: not a bad node
    assert (broken.code, broken.reason()) == (EXIT_FAILURE, "preflight_error") and not broken.of("job")
    good = node("note('job')\n", *flags, FAKE_CODE="0")
    assert (good.code, good.reason()) == (0, "completed") and good.of("job")
    off = node("note('job')\n", "--preflight-script", str(fake), NCCL_PREFLIGHT="0", FAKE_CODE="86")
    assert off.code == 0 and not off.of("preflight")


def test_budget_spent_in_the_preflight_has_its_own_reason(node: Node, tmp_path: Path) -> None:
    """MAX_RUNTIME_HOURS runs out during the preflight: the job never starts, and the ending says so
    (exit 0 like any budget ending, reason max_runtime_before_job), in this and every later attempt."""
    slow = tmp_path / "slow_nccl_test.py"  # stands in for a preflight that outlasts the budget
    slow.write_text(PRELUDE + "note('preflight')\nwhile True:\n    time.sleep(1)\n")
    flags = ["--preflight", "--preflight-script", str(slow), "--max-runtime-hours", str(1.5 / 3600)]
    out = node("note('job')\n", *flags)
    assert (out.code, out.reason()) == (0, "max_runtime_before_job")
    assert out.of("preflight") and not out.of("job")
    assert out.of("sigterm"), "the preflight got SIGTERM and its grace"
    assert out.result["cause"].startswith(
        "runtime budget MAX_RUNTIME_HOURS=0.000416667 (2 s over all attempts)"
    )
    assert out.result["cause"].endswith("ran out in the NCCL preflight, before the job ever started")
    again = node("note('job')\n", *flags)
    assert (again.code, again.reason()) == (0, "max_runtime_before_job") and not again.events
    ran = node("note('job')\n", "--max-runtime-hours", str(1.5 / 3600), "--crash-loop-attempts", "0")
    assert ran.reason() == "max_runtime_before_job", "a budget spent earlier: still never started"


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(not NCCL_TEST.exists(), reason="scripts/remote/nccl_test.py is not written yet")
def test_real_preflight_passes_on_this_machine(node: Node) -> None:
    env = {"UV_FIND_LINKS": os.environ.get("UV_FIND_LINKS", os.environ.get("PIP_FIND_LINKS", ""))}
    out = node("sys.exit(0)\n", "--preflight", **env)
    assert (out.code, out.reason()) == (0, "completed")
    assert (node.data / "r" / "preflight" / "nccl-report.json").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("fail", "code", "reason", "cause"),
    [
        ("exit:3", 3, "job_failed", "worker rank 1 (local rank 1) exited 3"),
        (f"exit:{EXIT_BAD_NODE}", EXIT_FAILURE, "job_failed_reserved_code", "exit 86 is reserved"),
        (f"signal:{signal.SIGKILL}", 128 + signal.SIGKILL, "job_failed", "killed by signal 9"),
    ],
)
def test_torchrun_passes_the_workers_exit_code(node: Node, fail, code, reason, cause) -> None:
    """torchrun exits 1 whatever its worker did; run.py reports the first failed worker's own code
    (tests/jobs/fail_on_rank1.py: rank 1 fails as FAIL says while rank 0 still works)."""
    find_links = os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS")
    if not find_links:
        pytest.skip("no local wheel folder for torch (UV_FIND_LINKS / PIP_FIND_LINKS)")
    script = ROOT / "tests" / "jobs" / "fail_on_rank1.py"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {"NNODES": "1", "NPROC_PER_NODE": "2", "WORLD_SIZE": "2", "MASTER_PORT": port, "FAIL": fail}
    out = node("", "--crash-loop-attempts", "0", script=script, UV_FIND_LINKS=find_links, **env)
    assert (out.code, out.reason()) == (code, reason), out.stderr[-3000:]
    # The job's stderr reaches the supervisor's stdout (one pipe, every byte passed on: hang detection)
    assert "ChildFailedError" in out.stdout, "ran under torchrun, whose own output is kept"
    assert cause in out.result["cause"] and out.result["job_exit_code"] == (
        EXIT_BAD_NODE if reason == "job_failed_reserved_code" else code
    )
    assert ends(out) == [(1, code, reason)]


# --------------------------------------------------------------------------------------------------
# Pure functions


def limits(**overrides: float) -> _supervisor_config.Limits:
    return replace(
        _supervisor_config.load_config(["--", "true"], {}, tmp_dir=Path("/tmp"), here=RUN.parent).limits,
        **overrides,
    )


def test_monotonic_clock_wall_jump_never_kills_r3() -> None:
    """R3: the wall clock jumps 2 h (either way) between beats; no kill while beats keep coming."""
    start_wall = 1_000_000 * 10**9
    for jump in (2 * 3600, -2 * 3600):
        mon = _heartbeat.HeartbeatMonitor(
            timeout_s=3, startup_grace_s=10, start=100.0, start_wall_ns=start_wall
        )
        offset = 0
        for i in range(1, 20):  # a beat every second of monotonic time, looked at every 2.5 s
            now = 100.0 + i
            if i == 8:
                offset = jump * 10**9
            mtime = start_wall + i * 10**9 + offset
            if i % 2:
                assert not mon.observe(now + 0.5, start_wall + int((i + 0.5) * 1e9) + offset, mtime)
        assert mon.kill_deadline() is not None and mon.kill_deadline() > 119
        # and a hang after the jump is still caught, timeout_s after the last beat
        assert not mon.observe(121.0, start_wall + 21 * 10**9 + offset, mtime)
        assert mon.observe(119.5 + 3 + 0.01, start_wall + 23 * 10**9 + offset, mtime)


def test_heartbeat_monitor_uses_clock_values_only() -> None:
    mon = _heartbeat.HeartbeatMonitor(timeout_s=3, startup_grace_s=20, start=0.0, start_wall_ns=0)
    assert mon.next_wakeup() == 3  # before the first beat: look every timeout_s
    assert not mon.observe(3.0, 3 * 10**9, 10**9)  # a beat at 1 s, seen at 3 s
    assert mon.last_beat == pytest.approx(1.0)
    assert mon.next_wakeup() == pytest.approx(4.0)
    assert mon.observe(4.0, 4 * 10**9, 10**9)  # no newer beat: stale exactly timeout_s after the last
    never = _heartbeat.HeartbeatMonitor(timeout_s=3, startup_grace_s=5, start=0.0, start_wall_ns=0)
    assert not never.observe(4.9, 0, None) and never.observe(5.0, 0, None)
    off = _heartbeat.HeartbeatMonitor(timeout_s=0, startup_grace_s=5, start=0.0, start_wall_ns=0)
    assert off.next_wakeup() is None and not off.observe(10**6, 0, None)


def test_leftover_heartbeat_file_never_counts() -> None:
    start_wall = 5_000 * 10**9
    old = start_wall - 3600 * 10**9
    mon = _heartbeat.HeartbeatMonitor(
        timeout_s=3, startup_grace_s=10, start=0.0, start_wall_ns=start_wall, baseline_mtime_ns=old
    )
    assert not mon.observe(3.0, start_wall + 3 * 10**9, old)  # not stale at start despite its age
    assert mon.last_beat is None
    fresh = _heartbeat.HeartbeatMonitor(timeout_s=3, startup_grace_s=10, start=0.0, start_wall_ns=start_wall)
    assert not fresh.observe(3.0, start_wall + 3 * 10**9, old)  # appears, but with an old mtime
    assert fresh.last_beat is None
    assert not fresh.observe(6.0, start_wall + 6 * 10**9, start_wall + 5 * 10**9)  # a real touch
    assert fresh.last_beat == pytest.approx(5.0)


def test_build_job_command_r1() -> None:
    dist = _distributed.from_env(
        {
            "NNODES": "2",
            "NODE_RANK": "1",
            "NPROC_PER_NODE": "8",
            "MASTER_ADDR": "10.0.0.11",
            "WORLD_SIZE": "16",
        }
    )
    argv = _job_command.build_job_command(["examples/train.py", "--steps", "5"], dist, "/env/bin/python")
    assert argv == [
        "/env/bin/python", "-m", "torch.distributed.run", "--nnodes=2", "--node-rank=1", "--nproc-per-node=8",
        "--master-addr=10.0.0.11", "--master-port=29500", "examples/train.py", "--steps", "5",
    ]  # fmt: skip
    assert not any(a.endswith("=") for a in argv), "never a flag with an empty value"
    shim = _job_command.build_job_command(
        ["examples/train.py", "--steps", "5"], dist, "/env/bin/python", Path("/t/f.json")
    )
    assert shim == ["/env/bin/python", "-c", _job_command.TORCHRUN_SHIM, "/t/f.json", *argv[3:]]
    compile(_job_command.TORCHRUN_SHIM, "<shim>", "exec")
    laptop = _distributed.from_env({"MASTER_ADDR": "", "NNODES": " "})
    assert laptop == _distributed.Distributed()
    assert _job_command.build_job_command(["job.py", "a"], laptop, "python3") == ["python3", "job.py", "a"]
    # no torch in the job's environment: one process per node, never torchrun
    assert _job_command.build_job_command(["job.py", "a"], dist, "/env/bin/python", torchrun=False) == [
        "/env/bin/python",
        "job.py",
        "a",
    ]
    assert _job_command.build_job_command(["bash", "-c", "exit 3"], dist, None) == ["bash", "-c", "exit 3"]


def test_python_kind(tmp_path: Path) -> None:
    uv_script = tmp_path / "a.py"
    uv_script.write_text('# /// script\n# requires-python = ">=3.11"\n# dependencies = []\n# ///\nprint(1)\n')
    plain = tmp_path / "b.py"
    plain.write_text("print(1)  # /// script\n")
    assert (
        _job_command.python_kind(uv_script),
        _job_command.python_kind(plain),
        _job_command.python_kind(tmp_path / "c.sh"),
    ) == (
        "uv",
        "python",
        None,
    )


def test_identity_from_skypilot_env() -> None:
    ident = _distributed.identity(
        {"SKYPILOT_NODE_RANK": "1", "SKYPILOT_MANAGED_JOB_ID": "12", "SKYPILOT_TASK_ID": "sky-managed-2026-01-02-03-04-05-000006_my-run_12-3", "SKYPILOT_NUM_NODES": "2"},
        1,
    )  # fmt: skip
    assert (ident.node_rank, ident.managed_job_id, ident.task_index, ident.num_nodes) == (1, 12, 3, 2)
    assert _distributed.identity({}, 1) == _distributed.Identity()
    assert _distributed.task_index_from("sky-2026-01-02-03-04-05-000006_cluster_4") == 0


def test_ledger_parsing_tolerates_corruption(tmp_path: Path) -> None:
    data = b'{"event": "start", "attempt": 1, "time": 1.0}\n\nnot json\n{"event": "start", "attempt": "2"}\n[1]\n{"event": "end", "attempt": 1, "runtime_s": 4, "exit_code": 86, "reason": "heartbeat_timeout"}\n{"event": "al'
    records = _ledger.parse_ledger(data)
    assert [r["event"] for r in records] == ["start", "end"]
    [attempt] = _policy.summarize(records)
    assert (attempt.number, attempt.runtime_s, attempt.bad_node) == (1, 4.0, True)
    path = tmp_path / "l.jsonl"
    path.write_bytes(b'{"event": "st')
    assert _ledger.append_record(path, {"event": "start", "attempt": 1})
    assert len(_ledger.read_ledger(path)) == 1
    assert _ledger.read_ledger(tmp_path / "missing.jsonl") == []


def test_attempt_numbers() -> None:
    ended = _policy.Attempt(1, 0.0, 10.0, 3, "job_failed", ended=True)
    current = _policy.Attempt(2, 0.0)  # rank 0 already wrote this attempt's start
    assert _policy.attempt_number([ended], writer=True) == 2
    assert _policy.attempt_number([ended, current], writer=False) == 2
    # rank 0's attempt 2 was lost and is not closed yet; this node's own last result was attempt 2
    assert _policy.attempt_number([ended, current], writer=False, own_last=2) == 3
    # Rank 0 ran attempt 2 to its end before this node started (a job that waits for no peer): a node
    # with no result for attempt 2, starting within the window of its start, is in attempt 2.
    done = _policy.Attempt(2, 1000.0, 0.1, 0, "completed", ended=True)
    window = _policy.STRAGGLER_WINDOW_S
    assert _policy.attempt_number([ended, done], writer=False, own_last=1, now_wall=1005.0) == 2
    assert _policy.attempt_number([ended, done], writer=False, now_wall=1000.0 + window - 1) == 2
    assert _policy.attempt_number([ended, done], writer=False, own_last=2, now_wall=1005.0) == 3
    assert _policy.attempt_number([ended, done], writer=False, own_last=1, now_wall=1000.0 + window) == 3
    assert _policy.attempt_number([ended, done], writer=True, own_last=1, now_wall=1005.0) == 3


def test_attempt_outcome_over_all_nodes() -> None:
    """An attempt's outcome is its most significant node result: bad node > failure > signal."""
    now = 10_000.0

    def attempt(n: int, *outcomes: tuple[int, int | None, str]) -> list[dict]:
        recs = [{"event": "start", "attempt": n, "time": now - 600 + n}]
        for rank, code, reason in outcomes:
            event = (
                {"event": "end", "runtime_s": 20.0}
                if rank == 0
                else {"event": "node_result", "node_rank": rank}
            )
            recs.append({**event, "attempt": n, "exit_code": code, "reason": reason})
        return recs

    records = [
        *attempt(1, (0, EXIT_SIGTERM, "sigterm"), (1, 3, "job_failed")),
        *attempt(
            2, (0, EXIT_SIGTERM, "sigterm"), (1, EXIT_BAD_NODE, "heartbeat_timeout"), (2, 3, "job_failed")
        ),
        *attempt(3, (0, EXIT_SIGTERM, "sigterm"), (1, EXIT_SIGTERM, "sigterm"), (2, EXIT_SIGINT, "sigint")),
        *attempt(4, (0, 1, "job_failed"), (1, 3, "job_failed")),
        *attempt(5, (0, None, _ledger.LEDGER_LOST), (1, 0, "completed")),
    ]
    records.append(
        {
            "event": "node_result",
            "attempt": 5,
            "node_rank": 1,
            "runtime_s": 900.0,
            "exit_code": 0,
            "reason": "completed",
        }
    )
    got = [(a.exit_code, a.reason, a.node_rank, a.bad_node, a.runtime_s) for a in _policy.summarize(records)]
    assert got == [
        (3, "job_failed", 1, False, 20.0),
        (EXIT_BAD_NODE, "heartbeat_timeout", 1, True, 20.0),
        (EXIT_SIGTERM, "sigterm", 0, False, 20.0),  # every node ended by signal: cancel or preemption
        (1, "job_failed", 0, False, 20.0),  # a tie goes to rank 0's own end
        (0, "completed", 1, False, 900.0),  # a lost attempt's runtime: the longest node's
    ]
    lim = limits(crash_loop_attempts=3)
    attempts = _policy.summarize(records)
    assert _policy.crash_loop_evidence(attempts[:3], lim, now) is None, (
        "attempt 3 (all signals) does not count"
    )
    assert _policy.crash_loop_evidence(attempts[:4], lim, now) is not None
    cur = _policy.Attempt(6, now - 10, 10.0, node_rank=0)
    signals_only = _policy.summarize(attempt(1, (0, EXIT_SIGTERM, "sigterm"), (1, EXIT_SIGTERM, "sigterm")))
    two = replace(lim, crash_loop_attempts=2)
    decision = _policy.decide(None, 3, prior=signals_only, current=cur, limits=two, now_wall=now)
    assert decision == (3, "job_failed", None), "cancel or preemption on every node never counts"
    decision = _policy.decide(None, 3, prior=attempts[:2], current=cur, limits=lim, now_wall=now)
    assert decision == (
        EXIT_CRASH_LOOP,
        "crash_loop",
        "the last 3 failed attempts started within 60 min and ran 16.7 s on average (under 300 s): "
        "attempt 1: node1 job_failed (exit 3); attempt 2: node1 heartbeat_timeout (exit 86); "
        "attempt 6: node0 job_failed (exit 3)",
    )
    # the recover cap counts any node's bad-node exit
    one = replace(lim, max_recover_restarts=1, crash_loop_attempts=0)
    assert _policy.decide(
        "heartbeat_timeout", None, prior=attempts[:2], current=cur, limits=one, now_wall=now
    )[:2] == (
        EXIT_FAILURE,
        "recover_cap",
    )


def test_worker_failure_file(tmp_path: Path) -> None:
    """TORCHRUN_SHIM's record of the first failed worker; torchrun gives -N for a death by signal N."""
    path = tmp_path / "failure.json"

    def parse(**data: object) -> _job_command.WorkerFailure | None:
        path.write_text(json.dumps(data))
        return _job_command.worker_failure(path)

    assert parse(rank=1, local_rank=1, exitcode=3) == _job_command.WorkerFailure(1, 1, 3)
    assert parse(rank=9, local_rank=1, exitcode=-11) == _job_command.WorkerFailure(9, 1, 139, 11)
    assert (
        parse(rank=9, local_rank=1, exitcode=-11).describe()
        == "worker rank 9 (local rank 1) killed by signal 11"
    )
    assert parse(rank=0, local_rank=0, exitcode=0) is None
    assert parse(rank=0, exitcode="3") is None
    path.write_text("{half")
    assert _job_command.worker_failure(path) is None
    assert _job_command.worker_failure(tmp_path / "missing.json") is None
    now = 10_000.0
    cur = _policy.Attempt(1, now - 10, 10.0)
    lim = limits()
    for job_code, expected in ((3, (3, "job_failed")), (86, (EXIT_FAILURE, "job_failed_reserved_code"))):
        decision = _policy.decide(
            None, job_code, prior=[], current=cur, limits=lim, now_wall=now, detail="worker rank 1 exited"
        )
        assert decision[:2] == expected and decision.cause.startswith("worker rank 1 exited")


def test_decide_contract() -> None:
    lim = limits()
    now = 10_000.0
    cur = _policy.Attempt(1, now - 10, 10.0)

    def d(stop, code, prior=(), lim=lim):
        return _policy.decide(stop, code, prior=list(prior), current=cur, limits=lim, now_wall=now)[:2]

    assert d(None, 0) == (0, "completed")
    assert d(None, 3) == (3, "job_failed")
    for code in RESERVED_EXIT_CODES:
        assert d(None, code) == (EXIT_FAILURE, "job_failed_reserved_code")
    assert d("heartbeat_timeout", 137) == (EXIT_BAD_NODE, "heartbeat_timeout")
    assert d("preflight_failed", 86) == (EXIT_BAD_NODE, "preflight_failed")
    assert d("preflight_error", 1) == (EXIT_FAILURE, "preflight_error")
    assert d("max_runtime", 143) == (0, "max_runtime")
    assert d("sigterm", 1) == (EXIT_SIGTERM, "sigterm")
    assert d("sigint", None) == (EXIT_SIGINT, "sigint")
    bad = [
        _policy.Attempt(i, now - 5000, 4000.0, EXIT_BAD_NODE, "heartbeat_timeout", True) for i in range(1, 11)
    ]
    assert d("heartbeat_timeout", None, bad[:9]) == (EXIT_BAD_NODE, "heartbeat_timeout")
    assert d("heartbeat_timeout", None, bad) == (EXIT_FAILURE, "recover_cap")
    fast = [_policy.Attempt(i, now - 600, 30.0, 3, "job_failed") for i in (1, 2)]
    assert d(None, 3, fast) == (EXIT_CRASH_LOOP, "crash_loop")
    assert d(None, 3, fast[:1]) == (3, "job_failed")
    assert d(None, 3, fast, replace(lim, crash_loop_attempts=0)) == (3, "job_failed")
    old = [_policy.Attempt(i, now - 7200, 30.0, 3, "job_failed") for i in (1, 2)]
    assert d(None, 3, old) == (3, "job_failed"), "outside the window"
    slow = [_policy.Attempt(i, now - 1200, 900.0, 3, "job_failed") for i in (1, 2)]
    assert d(None, 3, slow) == (3, "job_failed"), "average runtime above the minimum"
    preempted = [_policy.Attempt(i, now - 600, 30.0, EXIT_SIGTERM, "sigterm") for i in (1, 2)]
    assert d(None, 3, preempted) == (3, "job_failed"), "preemptions are not crashes"
    assert d(None, 0, fast) == (0, "completed")


def test_exit_codes_match_job_yaml() -> None:
    yaml = pytest.importorskip("yaml")
    task = yaml.safe_load((ROOT / "job.yaml").read_text())
    codes = task["resources"]["job_recovery"]["recover_on_exit_codes"]
    codes = [codes] if isinstance(codes, int) else codes
    assert EXIT_BAD_NODE in codes
    assert EXIT_CRASH_LOOP not in codes and 137 not in codes and EXIT_FAILURE not in codes
    envs = task["envs"]
    for key in _supervisor_config.OPTIONS.values():
        assert envs[key] == _contract.KEY[key].default, (
            f"the contract's default for {key} differs from job.yaml"
        )
    assert "run.py -- " in task["run"].splitlines()[-1]


def test_precedence_flags_env_defaults() -> None:
    here = RUN.parent
    cfg = _supervisor_config.load_config(["--", "true"], {}, tmp_dir=Path("/tmp"), here=here)
    assert (cfg.limits.heartbeat_timeout_s, cfg.limits.max_runtime_s, cfg.limits.grace_s, cfg.preflight) == (
        600,
        86400,
        60,
        True,
    )
    env = {
        "HEARTBEAT_TIMEOUT": "5",
        "NCCL_PREFLIGHT": "0",
        "DATA_DIR": "/d",
        "RUN_ID": "x",
        "CRASH_LOOP_WINDOW_MINUTES": "2",
    }
    cfg = _supervisor_config.load_config(["--", "true"], env, tmp_dir=Path("/tmp"), here=here)
    assert (cfg.limits.heartbeat_timeout_s, cfg.preflight, cfg.data_dir, cfg.run_id) == (
        5,
        False,
        Path("/d"),
        "x",
    )
    assert cfg.limits.crash_loop_window_s == 120
    cfg = _supervisor_config.load_config(
        ["--heartbeat-timeout", "7", "--preflight", "--", "true", "--heartbeat-timeout", "9"],
        env,
        tmp_dir=Path("/tmp"),
        here=here,
    )
    assert (cfg.limits.heartbeat_timeout_s, cfg.preflight, cfg.command) == (
        7,
        True,
        ("true", "--heartbeat-timeout", "9"),
    )


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--grace", "soon", "--", "true"], {}, "--grace"),
        (["--heartbeat-timeout", "nan", "--", "true"], {}, "--heartbeat-timeout"),
        (["--", "true"], {"MAX_RUNTIME_HOURS": "-1"}, "MAX_RUNTIME_HOURS"),
        (["--", "true"], {"CRASH_LOOP_ATTEMPTS": "1.5"}, "CRASH_LOOP_ATTEMPTS"),
        (["--", "true"], {"NCCL_PREFLIGHT": "maybe"}, "NCCL_PREFLIGHT"),
        (["--run-id", "a/b", "--", "true"], {}, "--run-id"),
        (["--", "true"], {"SKYPILOT_NODE_RANK": "x"}, "SKYPILOT_NODE_RANK"),
        (["--", "true"], {"NNODES": "0"}, "NNODES"),
        (["--nope", "--", "true"], {}, "--nope"),
        (["--grace", "1"], {}, "CMD"),
        (["--", "missing-job.py"], {}, "missing-job.py"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, env, named, monkeypatch, capsys) -> None:
    for key in [*(k.name for k in _contract.KEYS), "NNODES", "SKYPILOT_NODE_RANK"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert run.main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and named in err and "Traceback" not in err


def test_help_shows_defaults(capsys) -> None:
    assert run.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--heartbeat-timeout" in out and "600" in out and "--max-recover-restarts" in out
    usage = out.split("\n\n")[0]
    assert usage.startswith("usage: run.py ") and usage.endswith(" -- CMD [ARGS...]")


def test_script_header() -> None:
    text = RUN.read_text()
    assert text.startswith("#!/usr/bin/env -S uv run --script\n# /// script\n")
    assert 'requires-python = ">=3.11"' in text and 'dependencies = ["psutil==7.2.2"]' in text
    assert os.access(RUN, os.X_OK)
    assert "raise SystemExit(main())" in text
    assert "allow_abbrev=False" in (RUN.parent / "_supervisor_config.py").read_text()
    assert math.isclose(run.ALIVE_INTERVAL_S, 300.0)


def test_every_reason_and_exit_code_is_in_the_contract_page() -> None:
    import _contract

    page = (ROOT / "docs" / "contract.md").read_text()
    reasons = {v for k, v in vars(_contract).items() if k.startswith("REASON_")}
    assert {r for r in reasons if f"`{r}`" not in page} == set()
    codes = {v for k, v in vars(_contract).items() if k.startswith("EXIT_")}
    assert {c for c in codes if f"| {c} |" not in page} == set()


def test_the_job_gets_grace_for_torchruns_own_shutdown(tmp_path: Path) -> None:
    """torchrun SIGKILLs its workers 30 s after a SIGTERM unless TORCH_ELASTIC_SHUTDOWN_TIMEOUT says
    otherwise: the supervisor sets it to GRACE (rounded up), and never overrides the user's."""
    env = {"DATA_DIR": str(tmp_path), "RUN_ID": "r", "GRACE": "61.5", "PATH": os.environ["PATH"]}
    script = tmp_path / "job.sh"
    script.write_text("exit 0\n")
    cfg = _supervisor_config.load_config(
        ["--", str(script)], env, tmp_dir=tmp_path, here=ROOT / "scripts" / "remote"
    )
    with _proctree.Events() as events:
        runner = run.AttemptRunner(cfg, _proctree.Supervisor(events, cfg.limits.grace_s))
        assert runner.job_env.env(runner.number)["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "62"
        mine = replace(cfg, env={**cfg.env, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "5"})
        assert run.AttemptRunner(mine, runner.sup).job_env.env(0)["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "5"


# --------------------------------------------------------------------------------------------------
# Hang detection that needs no code change (docs/decisions/hang-detection.md)


def test_output_counts_until_the_file_is_touched_then_the_file_rules() -> None:
    mon = _heartbeat.HeartbeatMonitor(timeout_s=2, startup_grace_s=10, start=0.0, start_wall_ns=0)
    mon.observe_output(1.0)  # an import warning, torchrun's own notes: never shortens the grace
    assert mon.kill_deadline() == 10
    mon.observe_output(9.5)
    assert mon.kill_deadline() == pytest.approx(11.5)
    assert not mon.observe(11.4, 0, None) and mon.observe(11.5, 0, None)
    assert "no output for 2.0 s" in mon.describe(11.5)
    mon.observe_output(12.0)  # any output keeps it alive, HEARTBEAT_TIMEOUT at a time
    assert mon.kill_deadline() == pytest.approx(14.0)
    # The job touches the file at 13 s (seen at 13.5 s): from then on output no longer counts.
    assert not mon.observe(13.5, int(13.5e9), int(13e9))
    assert mon.last_beat == pytest.approx(13.0)
    mon.observe_output(14.9)
    assert mon.kill_deadline() == pytest.approx(15.0) and mon.observe(15.0, int(15e9), int(13e9))
    assert "HEARTBEAT_FILE not touched for 2.0 s" in mon.describe(15.0)
    no_grace = _heartbeat.HeartbeatMonitor(timeout_s=2, startup_grace_s=0, start=0.0, start_wall_ns=0)
    assert no_grace.kill_deadline() is None
    no_grace.observe_output(1.0)
    assert no_grace.kill_deadline() == 3.0
    off = _heartbeat.HeartbeatMonitor(timeout_s=0, startup_grace_s=5, start=0.0, start_wall_ns=0)
    off.observe_output(1.0)
    assert off.kill_deadline() is None and off.next_wakeup() is None
    silent = _heartbeat.HeartbeatMonitor(timeout_s=2, startup_grace_s=5, start=0.0, start_wall_ns=0)
    assert "no output and no HEARTBEAT_FILE touch within STARTUP_GRACE=5 s" in silent.describe(5.0)


def run_bytes(
    argv: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout)


def test_the_jobs_output_is_passed_on_byte_for_byte(node: Node, tmp_path: Path) -> None:
    """stdout and stderr of every process of the job reach the supervisor's stdout in the order written,
    unchanged: no line buffering, binary bytes, a progress bar's `\r` without a newline, no final one."""
    job = node.job(
        """
        os.write(1, b"line one\\n")
        os.write(2, b"on stderr\\n")
        os.write(1, b"\\x00\\xff binary")
        os.write(1, b"\\rprogress 50%\\rprogress 100%\\n")
        subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child\\\\n')"])
        os.write(2, b"no newline at the end")
        """
    )
    done = run_bytes([sys.executable, str(RUN), "--", str(job)], node.env, tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == (
        b"line one\non stderr\n\x00\xff binary\rprogress 50%\rprogress 100%\nchild\nno newline at the end"
    )


def test_a_job_that_only_prints_is_never_killed_while_it_prints(node: Node) -> None:
    body = """
        for i in range(16):
            print(f"step {i}", flush=True)
            time.sleep(0.25)
    """
    out = node(body, "--heartbeat-timeout", "1", "--startup-grace", "2")
    assert (out.code, out.reason()) == (0, "completed")
    assert out.result["runtime_s"] > 3 * 1, "it ran for longer than HEARTBEAT_TIMEOUT"
    assert "step 15" in out.stdout


def test_a_job_that_prints_then_goes_silent_is_stopped(node: Node) -> None:
    """Output during the grace never shortens it; after it, HEARTBEAT_TIMEOUT of silence stops the job."""
    body = """
        print("loading", flush=True)
        time.sleep(1.5)  # silent, but within STARTUP_GRACE
        for i in range(10):
            note("printed")
            print(f"step {i}", flush=True)
            time.sleep(0.2)
        time.sleep(300)  # hangs silently
    """
    out = node(body, "--heartbeat-timeout", "1", "--startup-grace", "2.5", "--grace", "1")
    assert (out.code, out.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    last, term = max(e["t"] for e in out.of("printed")), out.of("sigterm")[0]["t"]
    assert 1 - 0.05 <= term - last < 1 + 1.5
    assert "no output for" in out.result["cause"]


def test_a_job_that_touched_the_file_once_then_only_prints_is_stopped(node: Node) -> None:
    """Once the job touched HEARTBEAT_FILE, the file rules: output no longer keeps it alive."""
    body = """
        beat()
        while True:
            print("still printing", flush=True)
            time.sleep(0.1)
    """
    out = node(body, "--heartbeat-timeout", "2", "--grace", "1")
    assert (out.code, out.reason()) == (EXIT_BAD_NODE, "heartbeat_timeout")
    beat, term = out.of("beat")[0]["t"], out.of("sigterm")[0]["t"]
    assert 2 - _heartbeat.MTIME_SLACK_S <= term - beat < 2 + 1.5
    assert "HEARTBEAT_FILE not touched" in out.result["cause"]


# --------------------------------------------------------------------------------------------------
# How a JOB runs (README "Bring your own script"; _job_command's table)


def test_classify_every_kind_of_job(tmp_path: Path) -> None:
    work = tmp_path
    (work / "pyproject.toml").write_text("[tool.ruff]\nline-length = 110\n")  # tool settings: no project
    (work / "plain.py").write_text("print(1)\n")
    (work / "pep723.py").write_text("# /// script\n# dependencies = []\n# ///\nprint(1)\n")
    proj = work / "sub" / "proj"
    (proj / "deep").mkdir(parents=True)
    (proj / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    (proj / "deep" / "train.py").write_text("print(1)\n")
    (proj / "deep" / "inline.py").write_text("# /// script\n# dependencies = []\n# ///\nprint(1)\n")
    (work / "pkg" / "sub").mkdir(parents=True)
    (work / "pkg" / "mod.py").write_text("print(1)\n")
    (work / "pkg" / "sub" / "__main__.py").write_text("print(1)\n")
    (work / "src" / "lib").mkdir(parents=True)
    (work / "src" / "lib" / "cli.py").write_text("print(1)\n")
    (work / "run.sh").write_text("#!/bin/sh\n")

    def kind(*command: str) -> tuple[str, str, bool, tuple[str, ...]]:
        job = _job_command.classify(command, work)
        return job.kind.value, job.target, job.module, job.args

    assert kind("plain.py", "a") == ("python", "plain.py", False, ("a",))
    assert kind("pep723.py") == ("script", "pep723.py", False, ())
    assert kind("sub/proj/deep/train.py") == ("project", "sub/proj/deep/train.py", False, ())
    assert _job_command.classify(["sub/proj/deep/train.py"], work).project == proj.resolve()
    assert kind("sub/proj/deep/inline.py") == ("script", "sub/proj/deep/inline.py", False, ()), (
        "PEP 723 first"
    )
    assert kind("-m pkg.mod", "x") == ("python", "pkg.mod", True, ("x",))
    assert kind("-m", "pkg.sub", "x") == ("python", "pkg.sub", True, ("x",))
    assert kind("-mlib.cli") == ("python", "lib.cli", True, ())
    assert _job_command.classify(["-m lib.cli"], work).source == work / "src" / "lib" / "cli.py"
    assert kind("-m", "not.in.repo") == ("python", "not.in.repo", True, ())  # maybe installed: python3
    assert kind("run.sh", "1") == ("executable", "run.sh", False, ("1",))
    assert kind("bash", "-c", "exit 3") == ("executable", "bash", False, ("-c", "exit 3"))
    for bad in (["-m"], ["-m 1pkg"], ["-m pkg/mod"]):
        with pytest.raises(_job_command.JobError, match="JOB -m"):
            _job_command.classify(bad, work)
    # A project is looked for up to the working directory, never above it.
    assert _job_command.find_project(proj / "deep" / "train.py", proj / "deep") is None
    (proj / "uv.lock").write_text("")
    locked = _job_command.classify(["sub/proj/deep/train.py"], work)
    assert _job_command.sync_command(locked, "uv", "-qq") == [
        "uv",
        "sync",
        "-qq",
        "--locked",
        "--project",
        str(proj.resolve()),
    ]
    script = _job_command.classify(["pep723.py"], work)
    assert _job_command.sync_command(script, "uv") == ["uv", "sync", "--script", str(work / "pep723.py")]
    assert _job_command.sync_command(_job_command.classify(["plain.py"], work), "uv") is None


def test_module_jobs_run_under_torchrun_with_dash_m() -> None:
    dist = _distributed.from_env(
        {"NNODES": "2", "NODE_RANK": "0", "NPROC_PER_NODE": "2", "MASTER_ADDR": "10.0.0.1"}
    )
    job = _job_command.Job(_job_command.Kind.PYTHON, "pkg.train", ("--lr", "3"), module=True)
    argv = _job_command.build_job_command(job, dist, "/node/bin/python3")
    assert argv[-5:] == ["--master-port=29500", "--module", "pkg.train", "--lr", "3"]
    laptop = _distributed.Distributed()
    assert _job_command.build_job_command(job, laptop, "/p") == ["/p", "-m", "pkg.train", "--lr", "3"]
    shell = _job_command.Job(_job_command.Kind.EXECUTABLE, "tools/run.sh", ("1",))
    assert _job_command.build_job_command(shell, dist, None) == ["tools/run.sh", "1"]


def test_node_environment_takes_out_ours_and_keeps_the_nodes() -> None:
    home = "/home/me"
    cache = f"{home}/.cache/uv"
    supervisor = f"{cache}/environments-v2/run-0123"
    launcher = f"{cache}/environments-v2/launch-4567"
    env = {
        "HOME": home,
        "PATH": os.pathsep.join(
            [
                f"{supervisor}/bin",  # `uv run --script run.py`
                "/root/.pyenv/versions/3.11.7/bin",  # pyenv's shim for uv (pyenv exec)
                "/root/.pyenv/libexec",
                "/root/.pyenv/plugins/python-build/bin",
                f"{home}/.local/bin",
                f"{launcher}/bin",  # the launcher's, on the local backend
                "/opt/conda/bin",  # the node's own
                "/root/.pyenv/plugins/pyenv-virtualenv/shims",
                "/root/.pyenv/shims",
                "/usr/bin",
            ]
        ),
        "PYENV_ROOT": "/root/.pyenv",
        "VIRTUAL_ENV": supervisor,
        "PYTHONPATH": f"{launcher}/lib:/work/src",
        "PYTHONHOME": "/x",
        "UV": "/usr/bin/uv",
        "UV_RUN_RECURSION_DEPTH": "1",
        "UV_FIND_LINKS": "/opt/wheels",
        "UV_CACHE_DIR": cache,
        "UV_PROJECT_ENVIRONMENT": "/elsewhere",
        "CONDA_PREFIX": "/opt/conda",
    }
    prefixes = _job_command.foreign_prefixes(env, own_venv=supervisor)
    out = _job_command.node_environment(env, prefixes)
    assert out["PATH"].split(os.pathsep) == [
        f"{home}/.local/bin",
        "/opt/conda/bin",
        "/root/.pyenv/plugins/pyenv-virtualenv/shims",
        "/root/.pyenv/shims",
        "/usr/bin",
    ]
    assert out["PYTHONPATH"] == "/work/src"
    assert {k for k in out if k.startswith("UV") or k in ("VIRTUAL_ENV", "PYTHONHOME")} == {
        "UV_FIND_LINKS",
        "UV_CACHE_DIR",
    }
    assert out["CONDA_PREFIX"] == "/opt/conda" and out["HOME"] == home
    active = _job_command.with_venv(out, Path("/w/proj/.venv"))
    assert active["VIRTUAL_ENV"] == "/w/proj/.venv"
    assert active["PATH"].split(os.pathsep)[:2] == ["/w/proj/.venv/bin", f"{home}/.local/bin"]
    # A uv.toml may move uv's cache: the supervisor's own environment says where it is.
    moved = _job_command.uv_caches({"HOME": home}, "/data/uvcache/environments-v2/run-0123")
    assert moved == (f"{home}/.cache/uv", "/data/uvcache")
    assert _job_command.uv_environment(env).get("VIRTUAL_ENV") is None


@pytest.fixture(scope="session")
def node_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node's own Python, as a person has it first on PATH: a virtual environment outside skyops'
    and uv's, which sees this test run's torch through a `.pth` file. Returns the environment's folder."""
    venv = tmp_path_factory.mktemp("node-python") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "test-torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def supervisor_env(tmp_path: Path, node_python: Path | None = None, **extra: str) -> dict[str, str]:
    """An emulated node's environment for run.py: SkyPilot's and configure_environment's keys, and the
    node's python3 first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "TORCHELASTIC_"))}
    for key in ("VIRTUAL_ENV", "NNODES", "NODE_RANK", "NPROC_PER_NODE", "WORLD_SIZE", "MASTER_ADDR",
                "HEARTBEAT_FILE", *(k.name for k in _contract.KEYS)):  # fmt: skip
        env.pop(key, None)
    if "UV_FIND_LINKS" not in env and env.get("PIP_FIND_LINKS"):
        env["UV_FIND_LINKS"] = env["PIP_FIND_LINKS"]
    if node_python is not None:
        env["PATH"] = f"{node_python / 'bin'}{os.pathsep}{env['PATH']}"
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        RUN_ID="r",
        NCCL_PREFLIGHT="0",
        GRACE="2",
        GLOO_SOCKET_IFNAME="lo",
        SKYPILOT_MANAGED_JOB_ID=str(JOB_ID),
        SKYPILOT_TASK_ID=TASK_ID,
    )
    env.update(extra)
    return env


class Streamed:
    """A process whose stdout and stderr lines are read as they come, each with its monotonic time."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, lines: list[tuple[float, str]]) -> None:
        for raw in iter(stream.readline, b""):
            lines.append((time.monotonic(), raw.decode(errors="replace")))

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=30)
        sys.stdout.write(self.stdout[-5000:])
        sys.stderr.write(self.stderr)
        return code

    @property
    def stdout(self) -> str:
        return "".join(line for _, line in self.out)

    @property
    def stderr(self) -> str:
        return "".join(line for _, line in self.err)


def under_uv(*command: str) -> list[str]:
    """run.py as job.yaml's `run` starts it: `uv run --locked --script` (which prepends its environment
    to PATH and sets VIRTUAL_ENV and UV_* for it: none of that may reach the job)."""
    return ["uv", "run", "--quiet", "--locked", "--script", str(RUN), "--", *command]


def reports(text: str) -> list[dict]:
    return [
        json.loads(line.split(" ", 1)[1]) for line in text.splitlines() if line.startswith("skyops-report ")
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_kind_of_job_runs_on_its_own_interpreter_and_nothing_of_ours(
    tmp_path: Path, node_python: Path
) -> None:
    """The README's JOB table, end to end: each kind of job reports the interpreter it runs on, and no
    trace of the supervisor's `uv run` (or any other uv environment) reaches it."""
    work = tmp_path / "work"  # the node's working directory (the repository)
    (work / "tools").mkdir(parents=True)
    (work / "tools" / "report.py").write_text(REPORT.read_text())
    pep723 = '# /// script\n# requires-python = ">=3.11"\n# dependencies = []\n# ///\n'
    (work / "tools" / "report_inline.py").write_text(pep723 + REPORT.read_text())
    (work / "pkg").mkdir()
    (work / "pkg" / "__init__.py").write_text("")
    (work / "pkg" / "report.py").write_text(REPORT.read_text())
    proj = work / "proj"
    (proj / "projpkg").mkdir(parents=True)
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "proj"\nversion = "0.1"\nrequires-python = ">=3.11"\ndependencies = []\n'
    )
    (proj / "train.py").write_text(REPORT.read_text())
    (proj / "projpkg" / "__init__.py").write_text("")
    (proj / "projpkg" / "report.py").write_text(REPORT.read_text())
    shell = work / "tools" / "report.sh"
    shell.write_text(
        '#!/bin/sh\nprintf \'skyops-report {"executable": "%s", "virtual_env": "%s", "path": "%s", '
        '"argv": ["%s"]}\\n\' "$(command -v python3)" "${VIRTUAL_ENV:-}" "$PATH" "$1"\n'
    )
    shell.chmod(0o755)
    mine = str(work / "mine")
    env = supervisor_env(tmp_path, node_python, PYTHONPATH=mine, UV_NO_PROGRESS="1")
    cache = subprocess.run(
        ["uv", "cache", "dir"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    node_bin = str(node_python / "bin")

    def run_job(cwd: Path, *command: str) -> dict:
        done = subprocess.run(
            under_uv(*command), env=env, cwd=cwd, capture_output=True, text=True, timeout=300
        )
        sys.stderr.write(done.stderr)
        assert done.returncode == 0, done.stderr
        (report,) = reports(done.stdout)
        uv_entries = [p for p in report["path"].split(os.pathsep) if p.startswith(cache)]
        own = report.get("virtual_env") or ""
        assert all(p == f"{own}/bin" for p in uv_entries), (
            f"uv's environments on the job's PATH: {uv_entries}"
        )
        assert set(report.get("uv_vars", [])) <= _job_command.UV_KEEP, report["uv_vars"]
        assert report.get("pythonpath", mine) == mine
        return report

    inline = run_job(work, "tools/report_inline.py", "a b")
    assert inline["prefix"].startswith(f"{cache}/environments-v") and inline["argv"] == ["a b"]
    assert inline["virtual_env"] == inline["prefix"]
    assert inline["path"].split(os.pathsep)[0] == f"{inline['prefix']}/bin"

    project = run_job(work, "proj/train.py")
    assert project["prefix"] == str((proj / ".venv").resolve()) == project["virtual_env"]
    assert (proj / "uv.lock").is_file(), "the project was synced (and locked) by uv"

    plain = run_job(work, "tools/report.py", "x")
    assert Path(plain["executable"]).parent == Path(node_bin) and plain["prefix"] == str(node_python)
    assert plain["virtual_env"] is None and plain["path"].split(os.pathsep)[0] == node_bin
    assert plain["torch"], "the node's python3 with its own packages"

    module = run_job(work, "-m pkg.report", "y")
    assert module["prefix"] == str(node_python) and module["argv"] == ["y"]

    project_module = run_job(proj, "-m projpkg.report")
    assert project_module["prefix"] == str((proj / ".venv").resolve())

    executable = run_job(work, "tools/report.sh", "z")
    assert Path(executable["executable"]).parent == Path(node_bin) and executable["virtual_env"] == ""
    assert executable["argv"] == ["z"]


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def third_party_job(work: Path, layout: str, hang: bool = False) -> tuple[str, Path]:
    """pytorch/examples' DDP tutorial script (tests/jobs/third_party) in `work` as a plain script or in a
    tiny project; `hang`: changed only to hang silently halfway (rank 1 sleeps, rank 0 then waits in
    its next all_reduce). Returns JOB and the script's folder."""
    folder = work / ("ddp_project" if layout == "project" else "ddp")
    folder.mkdir(parents=True)
    shutil.copy(THIRD_PARTY / "datautils.py", folder)
    if layout == "project":
        shutil.copy(THIRD_PARTY / "ddp_project" / "pyproject.toml", folder)
    source = (THIRD_PARTY / "multigpu_torchrun.py").read_text()
    if hang:
        loop = "        for epoch in range(self.epochs_run, max_epochs):\n"
        assert loop in source
        source = source.replace(
            loop,
            loop + "            if epoch == max_epochs // 2 and os.environ['RANK'] == '1':\n"
            "                __import__('time').sleep(3600)\n",
        )
    (folder / "multigpu_torchrun.py").write_text(source)
    return str((folder / "multigpu_torchrun.py").relative_to(work)), folder


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("layout", ["plain", "project"])
def test_third_party_ddp_script_runs_unchanged_on_two_nodes(
    tmp_path: Path, node_python: Path, layout: str
) -> None:
    """pytorch/examples' multigpu_torchrun.py, adapted only for CPU: no PEP 723 block, no heartbeat. On
    two emulated nodes (one supervisor each, as job.yaml's `run` starts them), after job.yaml's setup
    step: as a plain script it runs on the node's python3 (a torch-enabled one first on PATH); inside a
    project, in the project's locked environment, with torchrun from it. HEARTBEAT_TIMEOUT=2: its
    progress lines keep it alive for the whole run, far longer than that."""
    work = tmp_path / "work"
    job, folder = third_party_job(work, layout)
    port = free_port()
    common = supervisor_env(tmp_path, node_python, HEARTBEAT_TIMEOUT="2", STARTUP_GRACE="180")
    prepare = subprocess.run(  # job.yaml's setup, on the one machine both nodes share
        [sys.executable, str(JOB_COMMAND), "prepare", job],
        env=common,
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert prepare.returncode == 0, prepare.stderr
    if layout == "project":
        assert (folder / "uv.lock").is_file() and (folder / ".venv").is_dir()
    nodes = []
    for rank in (0, 1):
        env = {
            **common,
            "SKYPILOT_NODE_RANK": str(rank),
            "SKYPILOT_NUM_NODES": "2",
            "NNODES": "2",
            "NODE_RANK": str(rank),
            "NPROC_PER_NODE": "1",
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
        }
        nodes.append(Streamed(under_uv(job, "30", "10", "--batch_size", "64"), env, work))
    codes = [n.finish() for n in nodes]
    assert codes == [0, 0]
    python = node_python / "bin" / "python3" if layout == "plain" else folder / ".venv" / "bin" / "python"
    for rank, n in enumerate(nodes):
        assert f"; interpreter {python}, under torchrun (1 per node)" in n.stderr
        assert "reason=completed" in n.stderr
        assert "epoch 29 | steps 16" in n.stdout, f"node {rank} ran every epoch"
        result = json.loads(_ledger.result_path(tmp_path / "data", "r", rank).read_text())
        assert result["runtime_s"] > 2 * 2, "ran far longer than HEARTBEAT_TIMEOUT, printing"
    if layout == "project":
        assert "locked by uv.lock" in nodes[0].stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_third_party_ddp_script_that_hangs_silently_is_stopped(tmp_path: Path, node_python: Path) -> None:
    """The same script, changed only to hang silently halfway: stopped as heartbeat_timeout (a bad node,
    86) HEARTBEAT_TIMEOUT after its last line, or at the end of STARTUP_GRACE if that comes later."""
    # Startup here (torch imports, rendezvous) is 5-17 s with silent stretches longer than 2 s after a
    # first warning line: STARTUP_GRACE covers it. 40 epochs of ~0.05 s: the hang comes ~1 s in.
    # HEARTBEAT_TIMEOUT 5 s: an epoch line every ~0.05 s, with room for a machine loaded by other tests;
    # STARTUP_GRACE 45 s: a first import of torch in a fresh environment, on such a machine, is silent.
    timeout_s, grace_s = 5.0, 45.0
    work = tmp_path / "work"
    job, _ = third_party_job(work, "plain", hang=True)
    env = supervisor_env(
        tmp_path, node_python, HEARTBEAT_TIMEOUT=str(timeout_s), STARTUP_GRACE=str(grace_s),
        SKYPILOT_NODE_RANK="0", SKYPILOT_NUM_NODES="1", NNODES="1", NODE_RANK="0", NPROC_PER_NODE="2",
        WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=free_port(),
    )  # fmt: skip
    node = Streamed(under_uv(job, "40", "100", "--batch_size", "64"), env, work)
    code = node.finish()
    assert code == EXIT_BAD_NODE
    stopped = next(t for t, line in node.err if "stopping the job: heartbeat_timeout" in line)
    last = max(t for t, line in node.out if t < stopped)
    assert "epoch 20 |" not in node.stdout and "epoch 19 |" in node.stdout, "hung halfway"
    due = max(last + timeout_s, node.started + grace_s)
    assert stopped - last >= timeout_s - 0.1, "never before HEARTBEAT_TIMEOUT of silence"
    assert stopped - due < 3, f"stopped {stopped - due:.1f} s after it was due"
    result = json.loads(_ledger.result_path(tmp_path / "data", "r", 0).read_text())
    assert (result["reason"], result["exit_code"]) == ("heartbeat_timeout", EXIT_BAD_NODE)
    assert "no output for" in result["cause"]
    print(
        f"hang: last line -> stop {stopped - last:.2f} s (HEARTBEAT_TIMEOUT={timeout_s:g})", file=sys.stderr
    )


def test_gpu_watchdog_defaults_exist_in_torch_and_never_override() -> None:
    """configure_environment's NCCL defaults name variables torch 2.13's ProcessGroupNCCL reads (its
    header lists them), and a value already set on the node always wins."""
    import configure_environment
    import torch

    header = Path(torch.__file__).parent / "include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp"
    if not header.is_file():
        pytest.skip("this torch build ships no c10d headers")
    text = header.read_text()
    torch_keys = [k for k in configure_environment.NCCL_DEFAULTS if k.startswith("TORCH_NCCL_")]
    assert len(torch_keys) >= 4 and all(f'"{k}"' in text for k in torch_keys)
    dist = _distributed.Distributed()
    env = configure_environment.environment(dist, {"TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "900"})
    assert "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC" not in env and env["TORCH_NCCL_ENABLE_MONITORING"] == "1"
