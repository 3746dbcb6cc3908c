"""scripts/local/_progress.py: what the launcher says while people wait (stderr only)."""

from __future__ import annotations

import io
from pathlib import Path

import _progress


def test_plain_lines_when_not_a_terminal(tmp_path: Path) -> None:
    out = io.StringIO()  # not a terminal: one plain line per phase, and again after SILENCE_S
    p = _progress.Progress("r1", stream=out)
    p.phase("attempt 1: running on 2 node(s)")
    p.tick()
    assert out.getvalue() == "run r1: attempt 1: running on 2 node(s)\n"
    p.said -= _progress.SILENCE_S  # as if SILENCE_S seconds passed without a line
    p.tick()
    assert out.getvalue().splitlines()[-1].startswith("run r1: attempt 1: running on 2 node(s) (")
    p.close()


def test_quiet_says_nothing() -> None:
    out = io.StringIO()
    p = _progress.Progress("r1", quiet=True, stream=out)
    p.phase("attempt 1: setup on 2 node(s)")
    p.said -= 60
    p.tick()
    assert out.getvalue() == ""


def test_the_last_line_of_a_node_log(tmp_path: Path) -> None:
    log = tmp_path / "node0.log"
    log.write_text("first\nstep 10 loss 0.5\n\n")
    assert _progress._last_line(log) == "step 10 loss 0.5"
    assert _progress._last_line(tmp_path / "missing.log") == ""
