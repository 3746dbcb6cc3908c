#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["psutil==7.2.2"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Benchmark scripts/remote/run.py against a fixed-interval poll supervisor like the earlier design's.

Usage: benchmarks/bench_supervisor.py [--runs N] [--poll S] [--idle-seconds S] [--grace S]

Prints a Markdown table on stdout (progress on stderr); docs/performance-supervisor.md records it.
Medians over --runs runs of each design, measured side by side in one invocation:

- exit latency: the job's last instruction -> the supervisor's exit (job exits at a random moment);
- heartbeat lateness: the job's last heartbeat -> its SIGTERM, minus the heartbeat timeout (2 s);
- teardown: SIGTERM to the supervisor -> its exit, for a job tree of 10 processes of which 5 are in
  their own sessions (torchrun-style), children dying on SIGTERM or ignoring it; plus survivors;
- idle CPU: the supervisor's CPU time while the job runs quietly, over --idle-seconds, per hour
  (Linux /proc/<pid>/schedstat, nanosecond resolution; psutil's 10 ms ticks elsewhere).

The poll design: `Popen.poll()` + `time.sleep(poll)`, heartbeat age from wall-clock mtime, teardown by
`killpg` on the job's process group, then SIGKILL to the group after the grace period.
All times are CLOCK_MONOTONIC seconds, which every process on the machine shares.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

log = logging.getLogger("bench_supervisor")

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "scripts" / "remote" / "run.py"
HEARTBEAT_TIMEOUT_S = 2.0

POLL_SUPERVISOR = """
import os, signal, subprocess, sys, time
poll, timeout, grace = (float(a) for a in sys.argv[1:4])
cmd = sys.argv[sys.argv.index("--") + 1:]
hb = os.environ["HEARTBEAT_FILE"]
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
proc = subprocess.Popen(cmd, start_new_session=True)
while True:
    if proc.poll() is not None:
        sys.exit(proc.returncode)
    if stop or (timeout and os.path.exists(hb) and time.time() - os.path.getmtime(hb) > timeout):
        break
    time.sleep(poll)
os.killpg(proc.pid, signal.SIGTERM)
try:
    proc.wait(timeout=grace)
except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
sys.exit(143)
"""

EXIT_JOB = """
import os, sys, time
time.sleep(float(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    f.write(repr(time.monotonic()))
os._exit(0)
"""

HEARTBEAT_JOB = """
import os, signal, sys, time
from pathlib import Path
out = sys.argv[1]
def on_term(*args):
    with open(out + ".term", "w") as f:
        f.write(repr(time.monotonic()))
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
hb = Path(os.environ["HEARTBEAT_FILE"])
until = time.monotonic() + float(sys.argv[2])
while True:
    hb.touch()
    last = time.monotonic()
    if last >= until:
        break
    time.sleep(0.2)
with open(out + ".beat", "w") as f:
    f.write(repr(last))
while True:
    time.sleep(60)
"""

TREE_JOB = """
import os, signal, subprocess, sys, time
out, ignore = sys.argv[1], sys.argv[2] == "1"
child = "import signal, time\\nif %r: signal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)" % ignore
# 9 children; with the job, 10 processes: 5 in the job's session and group, 5 in sessions of their own.
procs = [subprocess.Popen([sys.executable, "-c", child], start_new_session=(i < 5)) for i in range(9)]
if ignore:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open(out, "w") as f:
    f.write(" ".join(str(p) for p in [os.getpid(), *(p.pid for p in procs)]))
while True:
    time.sleep(60)
"""

IDLE_JOB = "import time\ntime.sleep(3600)\n"


class Bench:
    """Runs jobs under either design in a scratch folder."""

    def __init__(self, tmp: Path, poll_s: float, grace_s: float) -> None:
        self.tmp = tmp
        self.poll_s = poll_s
        self.grace_s = grace_s
        self.count = 0
        for name, text in {
            "poll_supervisor.py": POLL_SUPERVISOR,
            "exit_job.py": EXIT_JOB,
            "heartbeat_job.py": HEARTBEAT_JOB,
            "tree_job.py": TREE_JOB,
            "idle_job.py": IDLE_JOB,
        }.items():
            (tmp / name).write_text(text)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SKYPILOT_")}
        self.env.update(NCCL_PREFLIGHT="0", HEARTBEAT_FILE=str(tmp / "poll-heartbeat"))

    def start(self, design: str, job: Sequence[str], heartbeat_timeout_s: float) -> subprocess.Popen:
        """Start a supervisor of `design` ("event" = run.py, "poll") over `job`."""
        self.count += 1
        Path(self.env["HEARTBEAT_FILE"]).unlink(missing_ok=True)
        if design == "event":
            argv = [sys.executable, str(RUN), "--no-preflight", "--data-dir", str(self.tmp / "data")]
            argv += ["--run-id", f"bench-{self.count}", "--grace", str(self.grace_s)]
            argv += ["--heartbeat-timeout", str(heartbeat_timeout_s)]
        else:
            argv = [sys.executable, str(self.tmp / "poll_supervisor.py"), str(self.poll_s)]
            argv += [str(heartbeat_timeout_s), str(self.grace_s)]
        return subprocess.Popen(
            [*argv, "--", sys.executable, *job],
            env=self.env,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def out(self, name: str) -> Path:
        return self.tmp / f"{name}-{self.count}"


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    time.sleep(0.02)  # let the writer finish


def exit_latency(bench: Bench, design: str, delay: float) -> float:
    """Seconds from the job's exit to the supervisor's."""
    out = bench.tmp / f"exit-{design}-{bench.count + 1}"
    proc = bench.start(design, [str(bench.tmp / "exit_job.py"), str(delay), str(out)], 0)
    proc.wait()
    return time.monotonic() - float(out.read_text())


def heartbeat_lateness(bench: Bench, design: str, beating: float) -> float:
    """Seconds from the last heartbeat to the job's SIGTERM, minus the heartbeat timeout; the job
    beats every 0.2 s for `beating` seconds, then hangs."""
    out = bench.tmp / f"hb-{design}-{bench.count + 1}"
    job = [str(bench.tmp / "heartbeat_job.py"), str(out), str(beating)]
    proc = bench.start(design, job, HEARTBEAT_TIMEOUT_S)
    proc.wait()
    beat = float(Path(f"{out}.beat").read_text())
    term = float(Path(f"{out}.term").read_text())
    return term - beat - HEARTBEAT_TIMEOUT_S


def teardown(bench: Bench, design: str, ignore_sigterm: bool, delay: float) -> tuple[float, int]:
    """(seconds from SIGTERM to the supervisor until it exits, processes of the tree left alive);
    the SIGTERM comes `delay` seconds after the tree is up."""
    out = bench.tmp / f"tree-{design}-{bench.count + 1}"
    proc = bench.start(design, [str(bench.tmp / "tree_job.py"), str(out), "1" if ignore_sigterm else "0"], 0)
    wait_for(out)
    pids = [int(p) for p in out.read_text().split()]
    time.sleep(0.3 + delay)  # let every child get past exec
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    took = time.monotonic() - sent
    left = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.Error:
            pass
    for p in left:  # clean up what the poll design leaves behind
        p.kill()
    psutil.wait_procs(left, timeout=5)
    return took, len(left)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process in seconds: schedstat's ns counter where Linux has it."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system


def idle_cpu(bench: Bench, seconds: float) -> dict[str, float]:
    """CPU seconds per hour of each design's supervisor while the job sleeps, measured side by side."""
    job = [str(bench.tmp / "idle_job.py")]
    procs = {
        "event (defaults: heartbeat 600 s)": bench.start("event", job, 600),
        "event (heartbeat 10 s)": bench.start("event", job, 10),
        f"poll every {bench.poll_s:g} s": bench.start("poll", job, 600),
    }
    time.sleep(3)  # start-up (imports, uv, spawning) is not idle time
    before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    time.sleep(seconds)
    after = {name: cpu_seconds(p.pid) for name, p in procs.items()}
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        p.wait()
    return {name: (after[name] - before[name]) * 3600 / seconds for name in procs}


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def measure(label: str, runs: int, fn: Callable[[int], float]) -> list[float]:
    """`fn(i)` for run i in range(runs), logged."""
    samples = []
    for i in range(runs):
        samples.append(fn(i))
        log.info("%s run %d/%d: %.3f", label, i + 1, runs, samples[-1])
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per design and measurement (median)")
    parser.add_argument("--poll", type=float, default=10.0, help="poll interval of the old design, seconds")
    parser.add_argument("--idle-seconds", type=float, default=25.0, help="idle CPU measurement window")
    parser.add_argument("--grace", type=float, default=2.0, help="teardown grace period, seconds")
    parser.add_argument("--seed", type=int, default=1, help="seed for the jobs' random exit moments")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    if args.runs < 1 or args.poll <= 0 or args.idle_seconds <= 0:
        parser.error("--runs, --poll and --idle-seconds must be positive")
    rng = random.Random(args.seed)
    # Moments of exit, hang and SIGTERM, uniform over one poll interval, the same for both designs.
    delays = [rng.uniform(0.2, 0.2 + args.poll) for _ in range(args.runs)]
    phases = [rng.uniform(0.0, args.poll) for _ in range(args.runs)]

    with tempfile.TemporaryDirectory(prefix="bench-supervisor-") as tmp:
        bench = Bench(Path(tmp), args.poll, args.grace)
        rows: list[tuple[str, str, str, str]] = []
        event = measure("exit latency event", args.runs, lambda i: exit_latency(bench, "event", delays[i]))
        poll = measure("exit latency poll", args.runs, lambda i: exit_latency(bench, "poll", delays[i]))
        rows.append(
            ("job exit -> supervisor exit (s)", f"{median(event):.3f}", f"{median(poll):.3f}", "< 0.1")
        )
        event = measure("heartbeat event", args.runs, lambda i: heartbeat_lateness(bench, "event", delays[i]))
        poll = measure("heartbeat poll", args.runs, lambda i: heartbeat_lateness(bench, "poll", delays[i]))
        rows.append(
            (
                f"last heartbeat -> teardown start, minus the {HEARTBEAT_TIMEOUT_S:g} s timeout (s)",
                f"{median(event):.3f}",
                f"{median(poll):.3f}",
                "< 1",
            )
        )
        for ignore in (False, True):
            kind = "ignore SIGTERM" if ignore else "die on SIGTERM"
            results = {}
            for design in ("event", "poll"):
                runs = [teardown(bench, design, ignore, phases[i]) for i in range(args.runs)]
                log.info("teardown %s %s: %s", design, kind, runs)
                results[design] = (median([t for t, _ in runs]), max(n for _, n in runs))
            rows.append(
                (
                    f"teardown, 10 processes, 5 in own sessions, {kind} (s; survivors)",
                    f"{results['event'][0]:.3f}; {results['event'][1]}",
                    f"{results['poll'][0]:.3f}; {results['poll'][1]}",
                    f"< {args.grace + 1:g} (grace + 1); 0",
                )
            )
        idle = idle_cpu(bench, args.idle_seconds)
        for name, value in idle.items():
            rows.append((f"idle CPU, {name} (CPU s per hour)", f"{value:.4f}" if "event" in name else "", "" if "event" in name else f"{value:.4f}", "< 1"))  # fmt: skip

    cpu = psutil.cpu_count()
    print(f"Supervisor benchmark: {args.runs} runs each, medians; poll design every {args.poll:g} s; ")
    print(
        f"grace {args.grace:g} s; {cpu} CPUs; Python {sys.version.split()[0]}; {time.strftime('%Y-%m-%d')}\n"
    )
    print("| measurement | run.py (event-driven) | poll design | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
