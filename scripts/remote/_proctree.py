"""Mechanism: one process tree at a time, events instead of polling, and the node side's one teardown.

The job's stdout and stderr reach the supervisor through one pipe: every byte is passed on unchanged to
the supervisor's own stdout, and each read is a sign of life for the heartbeat monitor (a job that
never touches HEARTBEAT_FILE is watched by its output: docs/decisions/hang-detection.md). The pipe is
one more fd in the same poll(2) as the signals and the deadlines.

The supervisor is a child subreaper, so orphans of the job (torchrun workers whose launcher died) are
re-parented to it and found; teardown gives every process of the tree SIGTERM once, the whole grace
period, then SIGKILL, and reaps (docs/field-cases.md R2; docs/decisions/endings.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import math
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from _contract import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    REASON_HEARTBEAT_TIMEOUT,
    REASON_SIGINT,
    REASON_SIGTERM,
)
from _heartbeat import HeartbeatMonitor, heartbeat_mtime

log = logging.getLogger("run")

#: Seconds to wait for SIGKILLed processes to be reaped before reporting them as survivors
#: (a process in uninterruptible sleep, e.g. stuck in a GPU driver, cannot die sooner).
KILL_WAIT_S = 10.0
# Linux prctl(2) options.
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


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
        self._old: dict[int, signal._HANDLER] = {}
        #: fds read whenever they are ready, in every wait (the job's output pipe), with their reader.
        self._watched: dict[int, Callable[[], bool]] = {}

    def __enter__(self) -> Events:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._old = {s: signal.signal(s, self._on_signal) for s in self.HANDLED}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        signal.set_wakeup_fd(self._old_fd)
        self._r.close()
        self._w.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            self.signals.append(signum)

    def watch(self, fd: int, on_ready: Callable[[], bool]) -> None:
        """Call `on_ready()` whenever `fd` is readable (or closed), in every later wait, until it
        returns False (end of file) or `unwatch(fd)`."""
        self._watched[fd] = on_ready

    def unwatch(self, fd: int) -> None:
        self._watched.pop(fd, None)

    def wait(self, timeout: float | None, fds: Sequence[int] = ()) -> None:
        """Block until a handled signal arrives, one of `fds` or of the watched fds is readable, or
        `timeout` seconds pass; then read what the watched fds have."""
        poller = select.poll()
        poller.register(self._r, select.POLLIN)
        for fd in (*fds, *self._watched):
            poller.register(fd, select.POLLIN)
        ready = poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000)))
        with contextlib.suppress(BlockingIOError):
            while self._r.recv(4096):
                pass
        for fd, _ in ready:
            on_ready = self._watched.get(fd)
            if on_ready is not None and not on_ready():
                self.unwatch(fd)


def _child_preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If the supervisor dies without tearing down (SIGKILL), the job gets SIGTERM rather than living on.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class OutputRelay:
    """Copies a non-blocking pipe to `dst` byte for byte, and calls `on_output()` after each read.

    `pump()` reads what is there (at most MAX_READS_PER_PUMP reads, so a flood of output never keeps the
    supervisor from its signals and deadlines) and returns False at end of file. Writes block until
    `dst` takes the bytes (the job sees the same back-pressure as writing there itself); when `dst`
    cannot be written at all (closed, EPIPE), the output is dropped with one warning and still counts.
    """

    CHUNK = 65536
    MAX_READS_PER_PUMP = 16

    def __init__(self, src: int, dst: int | None, on_output: Callable[[], None]) -> None:
        self.src = src
        self.dst = dst
        self.on_output = on_output
        self.eof = False

    def pump(self, limit: int | None = MAX_READS_PER_PUMP) -> bool:
        reads = 0
        while not self.eof and (limit is None or reads < limit):
            try:
                data = os.read(self.src, self.CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.eof = True
                break
            reads += 1
            self.on_output()
            self._write(data)
        return not self.eof

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.dst is not None:
            try:
                view = view[os.write(self.dst, view) :]
            except BlockingIOError:  # a non-blocking stdout: wait until it takes more
                select.select([], [self.dst], [])
            except OSError as exc:
                log.warning(
                    "the job's output is dropped from now on: cannot write to fd %d: %s", self.dst, exc
                )
                self.dst = None


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
        #: Where the job's output goes: the supervisor's own stdout.
        self.output_fd: int | None = 1
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
        tick: tuple[float, Callable[[], object]] | None = None,
        stdout: int | None = None,
    ) -> Phase:
        """Run argv in its own session until it exits or a deadline, the heartbeat or a signal stops
        it; then tear down whatever of its tree is left. `deadlines` are (monotonic time, reason);
        `tick` is (interval seconds, callback) for periodic records; `stdout` an fd for the process's
        stdout (None: the supervisor's). With `heartbeat` (the job), stdout and stderr go through one
        pipe to the supervisor's stdout (`output_fd`), unchanged, and every read is a sign of life for
        the monitor until the job first touches the heartbeat file."""
        pending = self._signal_reason()
        if pending is not None:
            return Phase(pending, None)
        log.debug("running: %s", shlex.join(argv))
        started = self._start(argv, env, heartbeat, stdout)
        if isinstance(started, Phase):
            return started
        proc, relay = started
        self._root, self._root_code = proc.pid, None
        try:
            stop, detail = self._watch(deadlines, heartbeat, tick)
            if stop is not None:
                log.warning("stopping the job: %s%s", stop, f" ({detail})" if detail else "")
            self.teardown()  # its waits keep relaying the job's output while it saves its work
        finally:
            if relay is not None:
                self.events.unwatch(relay.src)
                relay.pump(limit=None)  # what the tree wrote before it was gone (none of it is left)
                os.close(relay.src)
        proc.returncode = self._root_code  # reaped here, not by Popen
        return Phase(stop, self._root_code, detail)

    def _start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        heartbeat: tuple[HeartbeatMonitor, Path] | None,
        stdout: int | None,
    ) -> tuple[subprocess.Popen[bytes], OutputRelay | None] | Phase:
        """Start argv in its own session, as `run` says; with `heartbeat`, also the OutputRelay that
        reads its output (watched by the event loop). A Phase (127 or 126) when it cannot start."""
        relay: OutputRelay | None = None
        out, err = stdout, None
        if heartbeat is not None:
            read_end, out = os.pipe()
            err = subprocess.STDOUT
            monitor = heartbeat[0]
            relay = OutputRelay(read_end, self.output_fd, lambda: monitor.observe_output(self.clock()))
        try:
            proc = subprocess.Popen(
                argv,
                env=dict(env),
                start_new_session=True,
                stdout=out,
                stderr=err,
                preexec_fn=_child_preexec,
            )
        except OSError as exc:
            if relay is not None:
                os.close(relay.src)
            log.error("cannot start %s: %s", argv[0], exc)
            return Phase(None, EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE)
        finally:
            if relay is not None and out is not None:
                os.close(out)  # the job holds the write end; EOF comes once every process of it is gone
        if relay is not None:
            os.set_blocking(relay.src, False)
            self.events.watch(relay.src, relay.pump)
        return proc, relay

    def _watch(
        self,
        deadlines: Sequence[tuple[float | None, str]],
        heartbeat: tuple[HeartbeatMonitor, Path] | None,
        tick: tuple[float, Callable[[], object]] | None,
    ) -> tuple[str | None, str | None]:
        """Wait on events until the started tree's root exits, (None, None), or a signal, a deadline or
        the heartbeat stops it: (the reason, a note for people or None). Calls `tick` on time."""
        next_tick = self.clock() + tick[0] if tick else None
        while True:
            self._reap()
            if self._root_code is not None:
                return None, None
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
                    return REASON_HEARTBEAT_TIMEOUT, monitor.describe(now)
            if stop is not None:
                return stop, None
            if tick and next_tick is not None and now >= next_tick:
                tick[1]()
                next_tick = now + tick[0]
            wakes = [when for when, _ in deadlines if when is not None]
            wakes += [
                w for w in (heartbeat[0].next_wakeup() if heartbeat else None, next_tick) if w is not None
            ]
            self.events.wait(max(0.0, min(wakes) - now) if wakes else None)

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

    def exclude(self, pid: int) -> None:
        """Leave child `pid` (and its descendants) out of every job tree: a helper of the supervisor's
        own, such as a notification in flight, that no teardown of the job should stop."""
        self._foreign.add(pid)

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
