"""How a managed job ended, from the API server's record and the end of its logs: its logs followed
to the end (`show_logs`, `tail_until_done`) and the line that says how it ended (`ended_line`), the
supervisor's summary line (`parse_summary`) and its reason per finished job, cached
(`supervisor_reasons`), and the event documents `jobs.py watch` sends (`watch_event`).
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import _atomic
from _config import EXIT_FAILED, EXIT_OK, EXIT_SKY_ERROR, REPO, ConfigError
from _job_state import TERMINAL, JobState
from _sky_sdk import data_stream, strip_ansi

log = logging.getLogger("skyops.sky")

#: sky.jobs.tail_logs return codes (sky/exceptions.py JobExitCode). With follow=False, SkyPilot
#: 0.14.1 returns None instead (sky/jobs/client/sdk.py tail_logs: `get_result=follow`): the outcome
#: then comes from the job's status (`tail_code_of_status`).
TAIL_SUCCEEDED, TAIL_FAILED, TAIL_NOT_FINISHED, TAIL_NOT_FOUND, TAIL_CANCELLED = 0, 100, 101, 102, 103
#: The supervisor's reason per finished job id (`supervisor_reasons`) when no path is given;
#: `jobs.py` passes the one in its state folder ($SKYOPS_STATE_DIR, else <repo>/.skyops).
REASONS_CACHE = REPO / ".skyops" / "sky-reasons.json"
#: Log lines fetched from the end of a finished job's logs to find the supervisor's summary line.
SUMMARY_TAIL_LINES = 200
#: Uncached finished jobs whose logs one `jobs.py status` fetches at most (newest first).
MAX_REASON_FETCHES = 20


def tail_until_done(
    sdk: Any,
    job_id: int,
    stream: IO[str] | io.TextIOBase,
    *,
    poll: float = 5.0,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """`sdk.tail_logs(follow=True)` again while it answers 101 (not finished); returns the last
    tail_logs code (TAIL_*). A None (what SkyPilot answers without follow) is read from the job's
    status instead (`tail_code_of_status`)."""
    while True:
        code = sdk.tail_logs(job_id, True, stream)
        if code is None:
            code = tail_code_of_status(status_of(job_record(sdk, job_id)))
        if code != TAIL_NOT_FINISHED:
            return code
        log.info("job %d: not finished (recovering?): following again", job_id)
        (sleep or time.sleep)(poll)


def exit_code_of_tail(job_id: int, code: int) -> int:
    """The launcher's exit code for a final tail_logs code: 0 succeeded, 3 not found, 1 otherwise."""
    if code == TAIL_SUCCEEDED:
        return EXIT_OK
    if code == TAIL_NOT_FOUND:
        log.error("job %d: not found on the API server", job_id)
        return EXIT_SKY_ERROR
    return EXIT_FAILED


def job_record(sdk: Any, job_id: int) -> dict[str, Any] | None:
    """The API server's record of managed job `job_id` (`sdk.queue`), or None when it has none.
    Raises what the SDK raises."""
    records = [r for r in sdk.queue([job_id], False, False) if r.get("job_id") in (job_id, str(job_id))]
    return records[-1] if records else None


def status_of(record: Mapping[str, Any] | None) -> str | None:
    """The record's status as a string (`ManagedJobStatus.X.value`, or the text), None without one."""
    if record is None:
        return None
    status = record.get("status")
    status = getattr(status, "value", status)
    return str(status) if status else None


def tail_code_of_status(status: str | None) -> int:
    """The tail_logs code (TAIL_*) a followed job would end with, from its status: SUCCEEDED 0,
    CANCELLED 103, any FAILED* 100, not finished 101, no record 102 (sky/exceptions.py JobExitCode,
    from_job_status)."""
    if status is None:
        return TAIL_NOT_FOUND
    if status == JobState.SUCCEEDED:
        return TAIL_SUCCEEDED
    if status == JobState.CANCELLED:
        return TAIL_CANCELLED
    if status in TERMINAL:
        return TAIL_FAILED
    return TAIL_NOT_FINISHED


def ended_line(
    sdk: Any,
    job_id: int,
    code: int,
    summary: Mapping[str, Any] | None = None,
    record: Mapping[str, Any] | None = None,
) -> str:
    """One line that explains a failed or cancelled job's non-zero exit (`jobs.py logs`,
    `launch.py --follow`): `job N (run R) ended STATUS: failure_reason (supervisor: reason)`, from
    the API server's record (`record`, else `sdk.queue`) and the supervisor's summary line
    (`parse_summary`); from the tail_logs code alone when the record cannot be read."""
    fallback = {TAIL_FAILED: JobState.FAILED, TAIL_CANCELLED: JobState.CANCELLED}.get(
        code, f"(tail_logs code {code})"
    )
    why = f" (supervisor: {summary['reason']})" if summary and summary.get("reason") else ""
    if record is None:
        try:
            record = job_record(sdk, job_id)
        except Exception as exc:  # the line explains an exit code; it must not replace it
            log.debug("job %d: no record for the outcome line: %s", job_id, exc)
    if record is None:
        return f"job {job_id} ended {fallback}{why}"
    status = status_of(record) or fallback
    name = record.get("job_name") or record.get("task_name")
    reason = record.get("failure_reason")
    return (
        f"job {job_id}{f' (run {name})' if name else ''} ended {status}{f': {reason}' if reason else ''}{why}"
    )


def show_logs(
    sdk: Any,
    job_id: int,
    out: IO[str],
    follow: bool,
    *,
    poll: float = 5.0,
    sleep: Callable[[float], None] | None = None,
) -> tuple[int, str | None]:
    """Print a managed job's logs on `out` (with `follow`, until it ends; 101 means still running)
    and say how it ended. Returns (exit code, line for stderr or None):

    - follow: 0 succeeded, 1 failed or cancelled, 3 not found (`exit_code_of_tail`);
    - no follow: SkyPilot answers None, so the outcome is the job's status (`job_record`):
      0 SUCCEEDED or not finished yet, 1 any other end.

    The line (`ended_line`, with the supervisor's reason from the summary line seen in the logs) is
    given for exit 1. Raises ConfigError (exit 2) when, without follow, the API server has no such
    job. Raises what the SDK raises.
    """
    watch = SummaryWatch(out)
    if follow:
        tail = tail_until_done(sdk, job_id, watch, poll=poll, sleep=sleep)
        code = exit_code_of_tail(job_id, tail)
        return code, (ended_line(sdk, job_id, tail, watch.summary()) if code == EXIT_FAILED else None)
    sdk.tail_logs(job_id, False, watch)  # None in SkyPilot 0.14.1; the status says how it ended
    record = job_record(sdk, job_id)
    tail = tail_code_of_status(status_of(record))
    if tail == TAIL_NOT_FOUND:
        raise ConfigError(f"ID {job_id}: no such managed job")
    if tail in (TAIL_SUCCEEDED, TAIL_NOT_FINISHED):
        return EXIT_OK, None
    return EXIT_FAILED, ended_line(sdk, job_id, tail, watch.summary(), record)


# --------------------------------------------------------------------------------------- why it ended

#: The supervisor's last line on each node (scripts/remote/run.py): `run.py: INFO: summary: node=0
#: attempt=2 reason=max_runtime exit_code=0 runtime_s=12.5[ cause: ...]`, possibly behind SkyPilot's
#: per-node prefix `(worker1, rank=1, pid=..., ip=...) `.
SUMMARY_RE = re.compile(
    r"run\.py: [A-Z]+: summary: node=(?P<node>\d+) attempt=(?P<attempt>\d+) reason=(?P<reason>\S+)"
    r" exit_code=(?P<exit_code>-?\d+) runtime_s=(?P<runtime_s>[0-9.]+)(?: cause: (?P<cause>.*))?$"
)


def summary_of_line(line: str) -> dict[str, Any] | None:
    """The fields of one supervisor summary line (see SUMMARY_RE), or None for any other line."""
    match = SUMMARY_RE.search(strip_ansi(line).rstrip("\r\n"))
    if match is None:
        return None
    return {
        "node": int(match["node"]),
        "attempt": int(match["attempt"]),
        "reason": match["reason"],
        "exit_code": int(match["exit_code"]),
        "runtime_s": float(match["runtime_s"]),
        "cause": match["cause"],
    }


def _weight(summary: Mapping[str, Any]) -> int:
    """How much a node's result says about the attempt, as the supervisor folds them: bad node (86) >
    failure (other non-zero) > stopped by a signal (130, 143: SkyPilot stopping the other nodes) > 0."""
    code = summary["exit_code"]
    return 3 if code == 86 else 1 if code in (130, 143) else 0 if code == 0 else 2


def pick_summary(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The summary that says how the job ended: of the last attempt seen, the most significant node
    result (`_weight`), the later line on a tie. None for no summaries."""
    if not summaries:
        return None
    last = max(s["attempt"] for s in summaries)
    best = None
    for summary in summaries:
        if summary["attempt"] == last and (best is None or _weight(summary) >= _weight(best)):
            best = summary
    return dict(best) if best is not None else None


def parse_summary(text: str) -> dict[str, Any] | None:
    """The summary (`pick_summary`) among the supervisor summary lines of a log text, or None."""
    found = [s for s in map(summary_of_line, text.splitlines()) if s is not None]
    return pick_summary(found)


class SummaryWatch(io.TextIOBase):
    """A text stream that writes through to `inner` and keeps the supervisor summary lines it sees.
    When `inner` is the process's stdout, writes go to the real stdout also inside
    `stdout_to_stderr()` (where file descriptor 1 points at stderr)."""

    def __init__(self, inner: IO[str]) -> None:
        super().__init__()
        self.inner = inner
        self.summaries: list[dict[str, Any]] = []
        self._partial = ""

    def writable(self) -> bool:
        return True

    def _target(self) -> IO[str]:
        return data_stream(self.inner)

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if "summary:" in line and (found := summary_of_line(line)) is not None:
                self.summaries.append(found)
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def summary(self) -> dict[str, Any] | None:
        """The summary that says how the job ended, from the lines written so far."""
        tail = summary_of_line(self._partial) if "summary:" in self._partial else None
        return pick_summary([*self.summaries, *([tail] if tail else [])])


def _read_reasons(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return jobs if isinstance(jobs, dict) else {}


def _write_reasons(path: Path, jobs: Mapping[str, Any]) -> None:
    """Atomic (`_atomic.write_json`); a failure is only logged (a cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic.write_json(path, {"version": 1, "jobs": dict(jobs)}, indent=1, sort_keys=True)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


def supervisor_reasons(
    sdk: Any,
    records: Sequence[Mapping[str, Any]],
    cache: Path | None = None,
    *,
    lines: int = SUMMARY_TAIL_LINES,
    max_fetches: int = MAX_REASON_FETCHES,
) -> dict[int, dict[str, Any] | None]:
    """The supervisor's summary (`parse_summary`: reason, exit_code, cause, ...) of each finished job
    in `records` (queue_v2 records), keyed by job id; None where its logs hold no summary line (e.g.
    FAILED_NO_RESOURCE: no node ever ran).

    A finished job never changes, so each answer is cached in `cache` (default REASONS_CACHE), keyed
    by job id and checked against `submitted_at` (another API server's job of the same id is not
    taken for it). Uncached jobs are read with `sdk.log_tail(job_id, lines)`, newest first, at most
    `max_fetches` per call; the first failure stops the fetching for this call (the rest are shown
    without a reason and tried again next time; nothing is cached for them). Never raises for a
    log it cannot read."""
    path = cache if cache is not None else REASONS_CACHE
    cached = _read_reasons(path)
    answers: dict[int, dict[str, Any] | None] = {}
    todo: list[tuple[int, Any]] = []
    for record in records:
        if status_of(record) not in TERMINAL or record.get("job_id") is None:
            continue
        job_id, submitted = int(record["job_id"]), record.get("submitted_at")
        entry = cached.get(str(job_id))
        if isinstance(entry, dict) and entry.get("submitted_at") == submitted:
            answers[job_id] = entry.get("summary")
        elif job_id not in dict(todo):
            todo.append((job_id, submitted))
    changed = False
    for job_id, submitted in sorted(todo, reverse=True)[:max_fetches]:
        try:
            text = sdk.log_tail(job_id, lines)
        except Exception as exc:  # a status view must not fail for one log
            log.debug("job %d: cannot read the end of its logs: %s", job_id, exc)
            break
        summary = parse_summary(text)
        answers[job_id] = summary
        if summary is not None or text.strip():  # an empty answer may be logs not synced yet
            cached[str(job_id)] = {"submitted_at": submitted, "summary": summary}
            changed = True
    if changed:
        _write_reasons(path, cached)
    return answers


# --------------------------------------------------------------------------------------- watch

#: Node rank 0's log line once it has run notify.py for an ending (scripts/remote/run.py `_notify`):
#: `run.py: INFO: notify: ended sent for job 3`. `jobs.py watch` sends no ending a node has sent.
NODE_ENDING_SENT_RE = re.compile(r"notify: ended sent for job (?P<job_id>\d+)\b")
#: The notification `reason` of an ending SkyPilot decides, not a node's supervisor
#: (docs/notifications.md); CANCELLED keeps a node's `crash_loop` (the node cancelled its own job).
STATUS_REASONS: dict[str, str] = {
    JobState.FAILED_NO_RESOURCE: "no_resource",
    JobState.FAILED_PRECHECKS: "failed_prechecks",
    JobState.FAILED_CONTROLLER: "controller_failed",
    JobState.FAILED_SETUP: "setup_failed",
    JobState.CANCELLED: "cancelled",
}
#: Endings before any node ran the job's setup or run: no node can have sent them, no log holds a line.
NO_NODE_ENDINGS = frozenset({JobState.FAILED_NO_RESOURCE, JobState.FAILED_PRECHECKS})
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def node_sent_ending(log_text: str, job_id: int) -> bool:
    """True when the job's logs show that its node rank 0 sent the ending (NODE_ENDING_SENT_RE)."""
    return any(int(m["job_id"]) == job_id for m in NODE_ENDING_SENT_RE.finditer(strip_ansi(log_text)))


def ending_reason(status: str, summary: Mapping[str, Any] | None) -> str:
    """The short `reason` of a notification about a job in `status` (docs/notifications.md): the
    supervisor's (from its summary line, `parse_summary`) where a node's outcome decided the state, else
    SkyPilot's state as a code (STATUS_REASONS): `no_resource`, `failed_prechecks`, `controller_failed`,
    `setup_failed`, `cancelled` (a crash loop stays `crash_loop`). Without a summary: `completed` for
    SUCCEEDED, `recovering` for an attempt that ended, `failed` otherwise."""
    told = summary.get("reason") if summary else None
    if status == JobState.CANCELLED and told == "crash_loop":
        return "crash_loop"
    if status in STATUS_REASONS:
        return STATUS_REASONS[status]
    if told:
        return str(told)
    ending: dict[str, str] = {JobState.SUCCEEDED: "completed", JobState.RECOVERING: "recovering"}
    return ending.get(status, "failed")


def job_commit(envs: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The job's own GIT_COMMIT and GIT_DIRTY (set by launch.py), for notify.py's environment, and the
    commit an event may name: the 40-hex GIT_COMMIT when GIT_DIRTY is 0, else ""."""
    keys = {k: envs[k] for k in ("GIT_COMMIT", "GIT_DIRTY") if envs.get(k)}
    commit = keys.get("GIT_COMMIT", "")
    return keys, commit if _COMMIT_RE.fullmatch(commit) and keys.get("GIT_DIRTY") == "0" else ""


def watch_event(
    record: Mapping[str, Any],
    event: str,
    summary: Mapping[str, Any] | None,
    commit: str,
    now: float,
    attempt: int | None = None,
) -> dict[str, Any]:
    """The event document (docs/notifications.md) of `event` (`ended`, or `attempt_ended` for
    `attempt`) for a queue_v2 record: state and failure_reason from SkyPilot, the supervisor's reason
    and cause from its summary line where a node decided (see `ending_reason`). Attempts: those that ran
    (0 when the job ended before any did), at least the summary's."""
    status = status_of(record) or "UNKNOWN"
    job_id = int(record["job_id"])
    count = int(record.get("recovery_count") or 0)
    ran = summary is not None or status == JobState.FAILED_SETUP or float(record.get("job_duration") or 0) > 0
    attempts = max(count + 1 if ran else count, int(summary["attempt"]) if summary else 0)
    recoveries = count
    if event == "attempt_ended":
        attempts = recoveries = attempt if attempt is not None else count + 1
    failure = record.get("failure_reason") or None
    told = summary.get("cause") if summary else None
    node_decided = (
        status in (JobState.FAILED, JobState.RECOVERING, JobState.SUCCEEDED) or event == "attempt_ended"
    )
    cause = (told or failure) if node_decided else (failure or told)
    return {
        "event": event, "run_id": str(record.get("job_name") or record.get("task_name") or f"job-{job_id}"),
        "job_id": str(job_id), "backend": "sky", "state": JobState.RECOVERING if event == "attempt_ended" else status,
        "reason": ending_reason(JobState.RECOVERING if event == "attempt_ended" else status, summary),
        "cause": " ".join(str(cause).split()) if cause else None, "attempts": attempts, "recoveries": recoveries,
        "runtime_s": round(max(0.0, float(record.get("job_duration") or 0)), 3), "commit": commit,
        "logs_hint": f"make logs ID={job_id} BACKEND=sky", "time": now,
    }  # fmt: skip
