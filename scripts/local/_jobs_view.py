"""How `jobs.py` shows jobs to people: the status table (`table`, COLUMNS, times and durations) and the
line that says how a job ended (`ended_text`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

#: Longest reason shown in the status table (the whole text is in --json and at the end of `logs`).
TABLE_REASON_CHARS = 100


def when(ts: Any) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: Any) -> str:
    if seconds is None:
        return "-"
    s = int(float(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain text table (header + rows) of `columns` = [(title, key)]; None shown as `-`. Every cell
    is one line of at most TABLE_REASON_CHARS characters (cut with `…`; --json has the whole text)."""

    def cell(value: Any) -> str:
        text = "-" if value in (None, "") else " ".join(str(value).split())
        return text if len(text) <= TABLE_REASON_CHARS else text[: TABLE_REASON_CHARS - 1] + "…"

    cells = [[t for t, _ in columns]] + [[cell(r.get(k)) for _, k in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines) + "\n"


COLUMNS = [("ID", "job_id"), ("NAME", "name"), ("STATUS", "status"), ("RECOVERIES", "recovery_count"),
           ("SUBMITTED", "submitted"), ("DURATION", "duration"), ("FAILURE_REASON", "failure_reason")]  # fmt: skip


def ended_text(what: str, state: str, reason: Any) -> str:
    """`job 3 (run r) ended FAILED: <reason>`: the last line `watch` prints for each job."""
    return f"{what} ended {state}{f': {reason}' if reason else ''}"
