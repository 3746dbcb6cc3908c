"""What the launcher is doing while people wait: one live status line on a terminal, plain lines when
stderr is not one (CI, a pipe), nothing with --quiet. Never on stdout (the launcher's stdout is data).

The rule: no phase longer than SILENCE_S seconds passes without a line saying what is going on.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any

#: Seconds without a plain line before the current phase is said again, with its elapsed time.
SILENCE_S = 10.0


class Progress:
    """Phases (`phase`), the job's own last output line (`watch`), and a tick every second (`tick`)."""

    def __init__(self, run: str, *, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.run, self.quiet = run, quiet
        self.stream = stream or sys.stderr
        self.text, self.since, self.said = "", time.monotonic(), 0.0
        self.log: Path | None = None
        self.status: Any = None
        if not quiet and self.stream.isatty():
            from rich.console import Console  # rich comes with SkyPilot on the laptop side

            self.status = Console(file=self.stream).status("")
            self.status.start()

    def phase(self, text: str, log: Path | None = None) -> None:
        """A new phase (e.g. `attempt 1: running on 2 nodes`); `log`: a node log whose last line shows."""
        self.text, self.since, self.log = text, time.monotonic(), log
        self._show(force=True)

    def tick(self) -> None:
        """Called about every second while waiting."""
        self._show(force=False)

    def _show(self, *, force: bool) -> None:
        if self.quiet or not self.text:
            return
        now = time.monotonic()
        elapsed = f"{now - self.since:.0f} s"
        if self.status is not None:
            last = _last_line(self.log) if self.log else ""
            self.status.update(f"run {self.run}: {self.text} ({elapsed})" + (f" · {last}" if last else ""))
        elif force or now - self.said >= SILENCE_S:
            self.stream.write(f"run {self.run}: {self.text}" + ("" if force else f" ({elapsed})") + "\n")
            self.stream.flush()
            self.said = now

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _last_line(path: Path, size: int = 4096) -> str:
    """The last non-empty line of a log file, cut to 80 characters; "" when there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - size))
            lines = [line.strip() for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:80] if lines else ""
