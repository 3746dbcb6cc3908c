"""The laptop side's one teardown: find every process of a local job, SIGTERM once, grace, SIGKILL.

Used by the local backend (Ctrl-C, SIGTERM/SIGHUP to the launcher, a failed peer node) and by
`jobs.py cancel` (also after the launcher was killed with SIGKILL). The node side has its own, in the
supervisor (scripts/remote/run.py `Supervisor.teardown`); the two never import each other.

Finding a job's processes: every process the local backend starts carries `SKYOPS_LOCAL_JOB=<job dir>`
and `SKYOPS_LOCAL_RUN=<$DATA_DIR/$RUN_ID>` in its environment, and children inherit it. So a job's
processes are found wherever they went: in sessions of their own (torchrun workers), re-parented to
PID 1 after their launcher or supervisor died. A process that clears its own environment escapes the
scan, but not the walk down from the node roots while those live.

The grace promise (docs/decisions/endings.md): from the first SIGTERM every process gets the whole grace
period before SIGKILL; nobody is sent SIGTERM twice by this code, and a repeated request never
shortens the wait. Only `force=True` skips it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

log = logging.getLogger("skyops.teardown")

#: Environment keys that mark a local job's processes (see the module docstring).
JOB_MARKER = "SKYOPS_LOCAL_JOB"
RUN_MARKER = "SKYOPS_LOCAL_RUN"
#: Seconds between scans for new processes of the job while waiting (pidfds wake us on exits).
RESCAN_S = 0.5
#: Seconds to wait for SIGKILLed processes to vanish before reporting them as survivors (a process in
#: uninterruptible sleep, e.g. stuck in a driver, cannot die sooner).
KILL_WAIT_S = 10.0


def alive(proc: psutil.Process) -> bool:
    """True while `proc` runs and is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def processes(match: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
    """Live processes (this one and zombies excluded) for which `match(proc)` holds; a process that
    ends or denies access while `match` reads it is passed over."""
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if match(proc) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def marked(key: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment holds `key=value` (any session, any parent; this one excluded).

    Reads /proc/<pid>/environ: the environment a process started with, which is what children inherit.
    """
    return processes(lambda proc: proc.environ().get(key) == value)


def tree(roots: Iterable[int]) -> list[psutil.Process]:
    """The processes `roots` (pids) and all their descendants that are alive now."""
    found: list[psutil.Process] = []
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            found.append(root)
            found.extend(root.children(recursive=True))
    return found


@dataclass
class Teardown:
    """What a teardown did: `signalled` processes, those SIGKILLed after the grace (`killed`), those
    still alive KILL_WAIT_S after SIGKILL (`survivors`, pids), and `seconds` from start to end."""

    signalled: int = 0
    killed: list[int] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    seconds: float = 0.0


def stop(
    find: Callable[[], Iterable[psutil.Process]],
    grace_s: float,
    *,
    force: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Teardown:
    """SIGTERM (and SIGCONT, so a stopped process can handle it) every process `find()` returns, once;
    wait until all have exited or `grace_s` seconds have passed since the first SIGTERM; SIGKILL what is
    left; wait up to KILL_WAIT_S for it to vanish. Processes that appear meanwhile are found by calling
    `find` again (every RESCAN_S seconds and on every exit) and get the same treatment. `force`: SIGKILL
    at once, no grace. Never raises for processes that are gone or not ours to signal.
    """
    start = clock()
    term_until: float | None = start if force else None  # counted from the first SIGTERM sent
    give_up = start + KILL_WAIT_S if force else math.inf
    result = Teardown()
    sent: dict[psutil.Process, int] = {}
    pidfds: dict[psutil.Process, int | None] = {}
    try:
        while True:
            live = [p for p in dict.fromkeys(find()) if alive(p)]
            now = clock()
            if not live:
                break
            if now >= give_up:
                result.survivors = [p.pid for p in live]
                log.error("processes survive SIGKILL: %s", ", ".join(map(str, result.survivors)))
                break
            first = term_until is None
            sig = signal.SIGTERM if term_until is None or now < term_until else signal.SIGKILL
            for proc in live:
                if sent.get(proc) in (sig, signal.SIGKILL):
                    continue
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
                    if sig == signal.SIGTERM:
                        proc.send_signal(signal.SIGCONT)
                        result.signalled += 1
                    else:
                        result.killed.append(proc.pid)
                sent[proc] = sig
            if first:  # the grace counts from the moment every process has its SIGTERM
                term_until = clock() + grace_s
                give_up = term_until + KILL_WAIT_S
            assert term_until is not None
            until = term_until if now < term_until else give_up
            _wait_any(live, pidfds, min(until - now, RESCAN_S))
    finally:
        for fd in pidfds.values():
            if fd is not None:
                os.close(fd)
    result.seconds = clock() - start
    return result


def _wait_any(procs: list[psutil.Process], pidfds: dict[psutil.Process, int | None], timeout: float) -> None:
    """Block until one of `procs` exits (pidfd readable) or `timeout` seconds pass."""
    poller = select.poll()
    for proc in procs:
        if proc not in pidfds:
            try:
                fd: int | None = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):
                fd = None
            pidfds[proc] = fd
        fd = pidfds[proc]
        if fd is not None:
            poller.register(fd, select.POLLIN)
    poller.poll(max(0, int(timeout * 1000)))
