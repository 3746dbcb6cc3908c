"""`jobs.py` on the sky backend: managed jobs through the SkyPilot SDK boundary (`_sky_sdk.SkyJobsSDK`).
status (`sky_rows`, with the supervisor's reasons of `_sky_logs.supervisor_reasons`), logs
(`_sky_logs.show_logs`), cancel, and watch (`sky_watch`: `attempt_ended` per recovery, `ended` for every
final state no node sent, each claimed once).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from _config import EXIT_FAILED, EXIT_OK, EXIT_SKY_ERROR, ConfigError, JobsConfig
from _job_state import TERMINAL, JobState
from _jobs_notify import NO_CHANNEL_LINE, WATCH_INTERVAL_S, channels, send_event
from _jobs_view import COLUMNS, duration, ended_text, table, when

log = logging.getLogger("skyops.jobs")


def sky_rows(
    records: Sequence[Mapping[str, Any]],
    now: float,
    reasons: Mapping[int, Mapping[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """Status rows of queue_v2 records; `reasons` (job id -> the supervisor's summary, see
    _sky_logs.supervisor_reasons) adds `reason` (e.g. max_runtime for a SUCCEEDED job whose
    runtime budget ran out) and `cause`, None where unknown."""
    rows = []
    for r in records:
        status = r.get("status")
        status = getattr(status, "value", status)
        summary = (reasons or {}).get(int(r["job_id"])) if r.get("job_id") is not None else None
        rows.append({
            "job_id": r.get("job_id"), "task_id": r.get("task_id"), "name": r.get("job_name") or r.get("task_name"),
            "status": status, "recovery_count": r.get("recovery_count"),
            "submitted": when(r.get("submitted_at")), "submitted_at": r.get("submitted_at"),
            "duration": duration(r.get("job_duration")), "failure_reason": r.get("failure_reason"),
            "reason": summary.get("reason") if summary else None, "cause": summary.get("cause") if summary else None,
            "resources": r.get("resources"), "infra": r.get("infra"),
        })  # fmt: skip
    return rows


def sky_columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """COLUMNS, plus REASON (the supervisor's) before FAILURE_REASON when a row has one."""
    if not any(r.get("reason") for r in rows):
        return list(COLUMNS)
    return [*COLUMNS[:-1], ("REASON", "reason"), COLUMNS[-1]]


def sky_job_ids(sdk: Any, idents: Sequence[str]) -> list[int]:
    """Managed job ids for ids or names (a name: its latest job). Raises ConfigError if unknown."""
    ids: list[int] = []
    records: list[dict[str, Any]] | None = None
    for ident in idents:
        if ident.isdigit():
            ids.append(int(ident))
            continue
        if records is None:
            records = sdk.queue(None, False, False)
        match = sorted(int(r["job_id"]) for r in records if ident in (r.get("job_name"), r.get("task_name")))
        if not match:
            raise ConfigError(f"ID {ident!r}: no managed job of that name (see jobs.py --backend sky status)")
        ids.append(match[-1])
    return ids


#: Polls `watch` waits for a finished sky job's logs to show its ending (empty or unreadable logs may
#: not be synced yet) before it decides without them.
LOG_TRIES = 4
#: Failed API server polls in a row after which `watch` gives up (exit 3); the first poll must work.
WATCH_MAX_ERRORS = 20


@dataclass
class _Watched:
    """What `sky_watch` knows of one managed job between polls."""

    job_id: int
    shown: str | None = None
    recoveries: int | None = None  # recovery_count when first seen, then as last seen
    commit: tuple[dict[str, str], str] | None = None  # _sky_logs.job_commit of its task, once read
    announced: int = 0  # the last attempt whose attempt_ended this watcher sent (or found claimed)
    log_tries: int = 0
    code: int | None = None  # the exit code once it ended


def _sky_commit(sdk: Any, w: _Watched) -> tuple[dict[str, str], str]:
    """The job's GIT_COMMIT and GIT_DIRTY (its task's envs, read once), see _sky_logs.job_commit."""
    import _sky_logs

    if w.commit is None:
        try:
            w.commit = _sky_logs.job_commit(sdk.task_envs(w.job_id))
        except Exception as exc:  # a notification without a commit beats none
            log.warning("job %d: its task's GIT_COMMIT cannot be read (%s): no GitHub status", w.job_id, exc)
            w.commit = ({}, "")
    return w.commit


def _sky_log(sdk: Any, job_id: int) -> str | None:
    """The end of a managed job's logs (_sky_logs.SUMMARY_TAIL_LINES lines), None if unreadable."""
    import _sky_logs

    try:
        return str(sdk.log_tail(job_id, _sky_logs.SUMMARY_TAIL_LINES))
    except Exception as exc:
        log.debug("job %d: cannot read the end of its logs: %s", job_id, exc)
        return None


def sky_watch_step(
    sdk: Any, w: _Watched, record: Mapping[str, Any], env: Mapping[str, str], claims: Path
) -> None:
    """One look at managed job `w` (its queue_v2 `record`): print a change of state; send
    `attempt_ended` when it recovers (RECOVERING, or a recovery_count that grew between two polls:
    attempt recovery_count + 1 ended while it is RECOVERING); on a final state send `ended` unless its
    logs show that its node sent it, and set `w.code`. Every send is claimed in `claims`."""
    import _sky_logs

    status = _sky_logs.status_of(record) or "UNKNOWN"
    name = record.get("job_name") or record.get("task_name")
    what = f"job {w.job_id}{f' (run {name})' if name else ''}"
    count = int(record.get("recovery_count") or 0)
    if status not in TERMINAL:
        if w.shown != status:
            print(f"{what}: {status}", file=sys.stderr, flush=True)
            w.shown = status
        ended = 0  # the attempt that ended since the last poll, if one did
        if status == JobState.RECOVERING:
            ended = count + 1
        elif w.recoveries is not None and count > w.recoveries:
            ended = count
        if ended > w.announced and channels(env):
            w.announced = ended
            text = _sky_log(sdk, w.job_id) or ""
            found = [x for x in map(_sky_logs.summary_of_line, text.splitlines()) if x is not None]
            # the summary of the attempt that ended; recovery_count skips SkyPilot's own restarts, so
            # without one, the latest attempt's
            summary = _sky_logs.pick_summary(
                [x for x in found if x["attempt"] == ended]
            ) or _sky_logs.pick_summary(found)
            keys, commit = _sky_commit(sdk, w)
            doc = _sky_logs.watch_event(record, "attempt_ended", summary, commit, time.time(), attempt=ended)
            send_event(doc, {**env, **keys}, claims)
        w.recoveries = count
        return
    logs = None if status in _sky_logs.NO_NODE_ENDINGS else _sky_log(sdk, w.job_id)
    ran = float(record.get("job_duration") or 0) > 0
    if ran and not (logs or "").strip() and w.log_tries < LOG_TRIES:
        w.log_tries += 1  # logs not synced yet, or the server is busy: look again at the next poll
        return
    summary = _sky_logs.parse_summary(logs) if logs else None
    if logs is not None and _sky_logs.node_sent_ending(logs, w.job_id):
        print(f"{what}: its node sent the ending", file=sys.stderr, flush=True)
    elif logs is None and status == JobState.SUCCEEDED:
        log.warning(
            "%s: its logs cannot be read; a node sends every success it sees, so the watcher does not", what
        )
    elif channels(env):
        keys, commit = _sky_commit(sdk, w)
        send_event(
            _sky_logs.watch_event(record, "ended", summary, commit, time.time()), {**env, **keys}, claims
        )
    ok = status == JobState.SUCCEEDED and (summary or {}).get("reason") != "max_runtime_before_job"
    w.code = EXIT_OK if ok else EXIT_FAILED
    reason = record.get("failure_reason") or (summary or {}).get("reason")
    print(ended_text(what, status, reason if reason != "completed" else None), file=sys.stderr, flush=True)


def sky_watch(cfg: JobsConfig, sdk: Any, state_dir: Path) -> int:
    """Follow managed jobs (`sdk.queue` every `cfg.interval` s, default 15) until each has ended:
    sky_watch_step per job and poll. Sends are claimed under `state_dir/sky-notify/<id>-<submitted>/`,
    so a watcher started again sends nothing it sent before. 0 when every job succeeded, else 1.
    Raises what the SDK raises on the first poll, or after WATCH_MAX_ERRORS failed polls in a row;
    ConfigError for an unknown ID."""
    import _sky_sdk

    watched = {i: _Watched(i) for i in sky_job_ids(sdk, cfg.ids)}
    interval = cfg.interval if cfg.interval is not None else WATCH_INTERVAL_S["sky"]
    if not channels(cfg.notify_env):
        print(NO_CHANNEL_LINE, file=sys.stderr, flush=True)
    errors, polled = 0, False
    while True:
        todo = [i for i, w in watched.items() if w.code is None]
        try:
            records = {
                int(r["job_id"]): r for r in sdk.queue(todo, False, False) if r.get("job_id") is not None
            }
            errors = 0
        except Exception as exc:
            errors += 1
            if not polled or errors >= WATCH_MAX_ERRORS:
                raise
            log.warning("watch: %s; polling again in %g s", _sky_sdk.describe_sky_error(exc), interval)
            time.sleep(interval)
            continue
        for job_id in todo:
            record = records.get(job_id)
            if record is None:
                raise ConfigError(f"ID {job_id}: no such managed job (see jobs.py --backend sky status)")
            claims = state_dir / "sky-notify" / f"{job_id}-{int(float(record.get('submitted_at') or 0))}"
            sky_watch_step(sdk, watched[job_id], record, cfg.notify_env, claims)
        polled = True
        if all(w.code is not None for w in watched.values()):
            return EXIT_OK if all(w.code == EXIT_OK for w in watched.values()) else EXIT_FAILED
        time.sleep(interval)


def run_sky(cfg: JobsConfig, out: IO[str], sdk: Any = None, reasons_cache: Path | None = None) -> int:
    """The sky backend's commands. status: queue_v2 records, with the supervisor's reason of each
    finished job (from the end of its logs, cached in `reasons_cache`, default `sky-reasons.json`
    next to the runs directory: `$SKYOPS_STATE_DIR/`, else `<repo>/.skyops/`). logs:
    _sky_logs.show_logs (the outcome from the job's status when SkyPilot's tail_logs answers
    None, as it does without --follow)."""
    import _sky_logs
    import _sky_sdk

    reasons_cache = reasons_cache if reasons_cache is not None else cfg.runs_dir.parent / "sky-reasons.json"

    sdk = sdk if sdk is not None else _sky_sdk.SkyJobsSDK()
    try:
        if cfg.command == "status":
            ids = sky_job_ids(sdk, cfg.ids) if cfg.ids else None
            records = sdk.queue(ids, cfg.active and not ids, False)
            reasons = _sky_logs.supervisor_reasons(sdk, records, reasons_cache)
            rows = sky_rows(records, time.time(), reasons)
            out.write(
                json.dumps(rows, indent=2, default=str) + "\n" if cfg.json else table(rows, sky_columns(rows))
            )
            return EXIT_OK
        if cfg.command == "logs":
            (job_id,) = sky_job_ids(sdk, cfg.ids)
            code, line = _sky_logs.show_logs(sdk, job_id, out, cfg.follow)
            if line:  # logs exits with the job's outcome: say which
                out.flush()
                print(line, file=sys.stderr, flush=True)
            return code
        if cfg.command == "watch":
            return sky_watch(cfg, sdk, cfg.runs_dir.parent)
        ids = sky_job_ids(sdk, cfg.ids)
        sdk.cancel(ids)
        print(f"cancel requested: managed job(s) {', '.join(map(str, ids))}", file=sys.stderr)
        return EXIT_OK
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        sky_exceptions = _sky_sdk.sky_exceptions()
        if sky_exceptions is not None and isinstance(exc, sky_exceptions.ClusterNotUpError):
            # No jobs controller yet (sky/jobs/server/core.py): no managed jobs at all.
            if cfg.command == "status":
                out.write(json.dumps([]) + "\n" if cfg.json else table([], COLUMNS))
                return EXIT_OK
            raise ConfigError(
                f"ID {' '.join(cfg.ids)}: no such managed job (none on this API server)"
            ) from None
        if cfg.verbose:
            log.error("SkyPilot error", exc_info=exc)
        print(f"jobs.py: error: {_sky_sdk.describe_sky_error(exc)}", file=sys.stderr)
        return EXIT_SKY_ERROR
