"""The processes of the emulated nodes: one phase (`setup` or `run`) on every node at once
(`run_phase`), each node in its own session with its output in its log file (`Node`), and their stop
as SkyPilot stops a managed job's nodes (`stop_nodes`: SIGTERM, the whole grace, SIGKILL).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _teardown
from _local_sky import BASH_I_NOISE

log = logging.getLogger("skyops.local")

KILLED_PEER_CODE = 137  # what SkyPilot records for the nodes it kills after another node failed
#: Seconds on top of the supervisor's GRACE before the launcher SIGKILLs what is left of a node: the
#: supervisor's own teardown (SIGTERM, GRACE, SIGKILL, reap) must be able to finish first.
STOP_GRACE_EXTRA = 10.0


def exit_code_of(returncode: int) -> int:
    """A Popen returncode as a shell would report it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class NodeCommand:
    """What one emulated node runs in one phase: `argv` (SkyPilot's `bash -i <script>`), its process
    environment and the folder it starts in (its home; the script then changes to ~/sky_workdir)."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    cwd: Path


class Node:
    """One emulated node running one command in its own session. Its output goes straight into its
    log file, as on a SkyPilot node, so it outlives the launcher (a pipe to a killed launcher would
    break the job's writes); with `follow`, a thread copies new lines to stderr, prefixed."""

    def __init__(self, rank: int, command: NodeCommand, log_path: Path, follow: bool):
        self.rank = rank
        self.label = "head, rank=0" if rank == 0 else f"worker{rank}, rank={rank}"
        self.log_path = log_path
        with open(log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                env=command.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pump: threading.Thread | None = None
        if follow:
            self._pump = threading.Thread(target=self._follow, daemon=True)
            self._pump.start()

    def _follow(self, poll: float = 0.1) -> None:
        prefix = f"({self.label}) ".encode()
        with open(self.log_path, "rb") as fh:
            while True:
                done = self.proc.poll() is not None
                for line in iter(fh.readline, b""):
                    if not line.startswith(BASH_I_NOISE):
                        sys.stderr.buffer.write(prefix + line)
                sys.stderr.buffer.flush()
                if done:
                    return
                time.sleep(poll)

    def wait_output(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)


def stop_nodes(nodes: Sequence[Node], grace: float, *, marker: str | None = None) -> _teardown.Teardown:
    """Stop every node as SkyPilot's cancel does: SIGTERM to every process of each node's tree (the
    supervisor, torchrun, its workers in their own sessions), once; the whole `grace` seconds for them to
    exit; SIGKILL what is left; reap the node roots. `marker`: the job's SKYOPS_LOCAL_JOB value, so that
    processes re-parented away from the node trees are found too (see _teardown)."""
    roots = [n.proc.pid for n in nodes if n.proc.poll() is None]

    def find() -> list[Any]:
        procs = _teardown.tree(n.proc.pid for n in nodes if n.proc.poll() is None)
        return procs + (_teardown.marked(_teardown.JOB_MARKER, marker) if marker else [])

    result = _teardown.stop(find, grace) if roots else _teardown.Teardown()
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=5)
        node.wait_output()
    if result.signalled:
        log.info(
            "teardown: %d process(es) stopped in %.1f s%s",
            result.signalled,
            result.seconds,
            f", {len(result.killed)} SIGKILLed after the {grace:.0f} s grace" if result.killed else "",
        )
    return result


@dataclass
class Interrupt:
    signum: int = 0


def _stop_for_signal(
    nodes: Sequence[Node],
    grace: float,
    events: queue.SimpleQueue,
    signum: int,
    stopping: Callable[[], None] | None,
    marker: str | None,
) -> None:
    """A signal reached the launcher: `stopping`, then every node stopped with the whole `grace`
    (`stop_nodes`); the signals that come meanwhile change nothing."""
    log.warning(
        "%s: stopping %d node(s); each process gets GRACE=%.0f s to exit (jobs.py cancel --force kills at once)",
        signal.Signals(signum).name,
        len(nodes),
        grace - STOP_GRACE_EXTRA,
    )
    if stopping is not None:
        stopping()
    stopper = threading.Thread(target=stop_nodes, args=(nodes, grace), kwargs={"marker": marker})
    stopper.start()
    while stopper.is_alive():
        with contextlib.suppress(queue.Empty):
            if events.get(timeout=0.2)[0] == "signal":
                log.info("already stopping: waiting for the job's processes to exit")


def run_phase(
    commands: Sequence[NodeCommand],
    log_paths: Sequence[Path],
    follow: bool,
    grace: float,
    events: queue.SimpleQueue,
    interrupt: Interrupt,
    first_rank: int = 0,
    started: Callable[[list[int]], None] | None = None,
    stopping: Callable[[], None] | None = None,
    marker: str | None = None,
    tick: Callable[[], None] | None = None,
) -> list[int] | None:
    """Run one phase (setup or run) on every node; returns the node exit codes, or None when
    interrupted (then `stopping` is called before the teardown). When a node fails, the others are
    stopped and recorded as 137 (SkyPilot's rule). A signal stops every node with the whole `grace`;
    repeated signals (Ctrl-C reaches the launcher twice: from the terminal and forwarded by `uv run`)
    change nothing (`jobs.py cancel --force` skips the grace). `tick` is called about every second
    while waiting (the progress line)."""
    nodes = [
        Node(rank, command, path, follow)
        for rank, (command, path) in enumerate(zip(commands, log_paths, strict=True), start=first_rank)
    ]
    if started is not None:
        started([n.proc.pid for n in nodes])
    for node in nodes:
        threading.Thread(target=lambda n=node: events.put(("exit", n, n.proc.wait())), daemon=True).start()
    codes: dict[int, int] = {}
    while len(codes) < len(nodes):
        try:
            kind, *rest = events.get(timeout=1.0)
        except queue.Empty:
            if tick is not None:
                tick()
            continue
        if kind == "exit" and rest[0] not in nodes:
            continue  # a node of an earlier phase, already accounted for
        if kind == "signal":
            interrupt.signum = rest[0]
            _stop_for_signal(nodes, grace, events, rest[0], stopping, marker)
            return None
        rank, code = rest[0].rank, exit_code_of(rest[1])
        codes[rank] = code
        if code != 0 and len(codes) < len(nodes):
            others = [n for n in nodes if n.rank not in codes]
            log.info("node %d exited %d: stopping the other node(s)", rank, code)
            stop_nodes(others, grace=grace)
            for other in others:
                codes[other.rank] = KILLED_PEER_CODE
    for node in nodes:
        node.wait_output()
    return [codes[node.rank] for node in nodes]
