"""Heartbeat monitor: decides from monotonic time whether a job shows no sign of life (pure: every time
value comes in as an argument). docs/field-cases.md R3: a file from an earlier attempt, a wall clock that
jumps, and a job that never beats are all handled.

A sign of life is a touch of the job's HEARTBEAT_FILE or, until the job first touches it, any output of
the job (docs/decisions/hang-detection.md): a script that knows nothing of skyops is watched by its
output; one that touches the file is watched by the file alone."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: File timestamps come from the kernel's coarse clock (a few ms behind); tolerated in age estimates.
MTIME_SLACK_S = 0.05


def heartbeat_mtime(path: Path) -> int | None:
    """The heartbeat file's mtime in ns, None when it does not exist (or cannot be read)."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


@dataclass
class HeartbeatMonitor:
    """Decides staleness of one attempt's job from monotonic time.

    Stale means, once the job has touched the heartbeat file (`observe`): no touch for `timeout_s`
    seconds; the file rules and output no longer counts. Before that: no output (`observe_output`) for
    `timeout_s` seconds, and never before `startup_grace_s` seconds from `start` (0: no limit), so a
    job with no output at all is stopped at the end of the grace. Output during the grace (an import
    warning, torchrun's own notes, "loading data...") says nothing about a training loop, so it never
    shortens the grace (docs/decisions/hang-detection.md). Times are `time.monotonic()` seconds; the
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
    #: Monotonic time of the last touch of the file seen (None: never touched).
    last_beat: float | None = None
    #: Monotonic time of the job's last output read before the first touch (None: none yet).
    last_output: float | None = None
    _seen_mtime_ns: int | None = field(default=None, repr=False)
    _last_check: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._seen_mtime_ns = self.baseline_mtime_ns
        self._last_check = self.start

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def kill_deadline(self) -> float | None:
        """Monotonic time at which the job is stale unless a sign of life is seen; None: never."""
        if not self.enabled:
            return None
        if self.last_beat is not None:
            return self.last_beat + self.timeout_s
        grace_end = self.start + self.startup_grace_s if self.startup_grace_s > 0 else None
        if self.last_output is None:
            return grace_end
        silent = self.last_output + self.timeout_s
        return silent if grace_end is None else max(silent, grace_end)

    def next_wakeup(self) -> float | None:
        """When to look at the file next: the kill deadline, and before the first touch also every
        `timeout_s` seconds, so a job that beats once and hangs (or beats once and then only prints) is
        caught `timeout_s` after that beat."""
        deadline = self.kill_deadline()
        if not self.enabled or self.last_beat is not None:
            return deadline
        probe = self._last_check + self.timeout_s
        return probe if deadline is None else min(deadline, probe)

    def observe_output(self, now: float) -> None:
        """Record that the job wrote output at monotonic `now` (any bytes, from any of its processes).
        A sign of life only until the file's first touch is seen: from then on the file rules."""
        if self.last_beat is None:
            self.last_output = now if self.last_output is None else max(self.last_output, now)

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

    def describe(self, now: float) -> str:
        """Why the job is stale at `now`, in one line for people (the attempt's cause)."""
        if self.last_beat is not None:
            return (
                f"HEARTBEAT_FILE not touched for {now - self.last_beat:.1f} s"
                f" (HEARTBEAT_TIMEOUT={self.timeout_s:g} s; output no longer counts once the job touched it)"
            )
        if self.last_output is not None:
            return (
                f"no output for {now - self.last_output:.1f} s (HEARTBEAT_TIMEOUT={self.timeout_s:g} s,"
                f" STARTUP_GRACE={self.startup_grace_s:g} s; the job never touched HEARTBEAT_FILE, so its"
                " output was its sign of life)"
            )
        return f"no output and no HEARTBEAT_FILE touch within STARTUP_GRACE={self.startup_grace_s:g} s"

    def _counts(self, mtime_ns: int, now_wall_ns: int) -> bool:
        # A touch carries an mtime after the attempt's start, unless the wall clock itself has since
        # gone back before the start (then any change is a touch: never a false kill).
        slack = int(MTIME_SLACK_S * 1e9)
        return mtime_ns > self.start_wall_ns - slack or now_wall_ns < self.start_wall_ns
