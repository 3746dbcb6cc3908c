#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "python-dotenv==1.2.4",
#     "pyyaml==6.0.4",
#     "psutil==7.2.2",
#     "skypilot==0.14.1",
# ]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Watch and stop the jobs launch.py started: status, logs, cancel.

usage: jobs.py [--backend {local,sky}] [--env-file PATH] [-v] status [--active] [--json] [ID ...]
       jobs.py [--backend {local,sky}] logs [--follow] ID
       jobs.py [--backend {local,sky}] cancel [--force] [--wait S] ID [ID ...]

    ./scripts/local/jobs.py --backend sky status          # managed jobs, finished ones with why
    ./scripts/local/jobs.py --backend sky logs --follow 42
    ./scripts/local/jobs.py cancel demo-2                 # local backend: by run name or job id

ID is a job id (an integer) or a run name (its latest job). The backend comes from --backend >
SKYOPS_BACKEND in the environment > .env > local, as for launch.py.

- sky: status from `sky.jobs.queue_v2` with `failure_reason` and `recovery_count`, plus the
  supervisor's reason for finished jobs (REASON: from the summary line at the end of their logs,
  cached); logs from `sky.jobs.tail_logs` (with --follow, 101 "not finished" means still running;
  the outcome of a finished job from its status); `sky.jobs.cancel`.
- local: the local backend's run directories `.skyops/runs/<run>/job-<id>/` (`job.json`, node logs;
  `$SKYOPS_STATE_DIR/runs/` when set). cancel sends SIGTERM to the job's launcher (`launcher_pid`),
  which stops every process of the job with its whole GRACE; `--force` SIGKILLs them at once. A job
  whose launcher is gone (killed by SIGKILL) is shown `<STATE> (launcher gone)` while any process of it
  lives (found by its SKYOPS_LOCAL_JOB marker, in any session); cancel then stops them itself with the
  job's GRACE and records FAILED_CONTROLLER. Once none lives, any look at the job records its end.

stdout carries data (the status table or JSON, log lines); messages go to stderr. SkyPilot's own
output during its calls (e.g. when it starts a local API server, which then keeps running; `sky api
stop` stops it) is sent to stderr.
Exit codes: 0 ok (logs: the job succeeded, or has not finished yet); 1 the job failed or was
cancelled (logs ends with one line on stderr saying how it ended), or a cancel did not finish;
2 bad input or unknown ID; 3 SkyPilot error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import _config
from _config import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_SKY_ERROR, ConfigError, OneLineParser

REPO = Path(__file__).resolve().parents[2]
BACKENDS = ("local", "sky")
TERMINAL = frozenset(
    {
        "SUCCEEDED",
        "CANCELLED",
        "FAILED",
        "FAILED_SETUP",
        "FAILED_PRECHECKS",
        "FAILED_NO_RESOURCE",
        "FAILED_CONTROLLER",
    }
)

#: failure_reason of a local job whose launcher died without tearing it down (killed with SIGKILL).
LAUNCHER_GONE_REASON = "launcher killed without tearing the job down"
#: psutil's create_time() is only as precise as the boot time (whole seconds on Linux).
CLOCK_SLACK = 1.0
#: Longest reason shown in the status table (the whole text is in --json and at the end of `logs`).
TABLE_REASON_CHARS = 100

log = logging.getLogger("skyops.jobs")


@dataclass(frozen=True)
class JobsConfig:
    """Resolved once in main()."""

    backend: str
    command: str
    ids: tuple[str, ...] = ()
    active: bool = False
    json: bool = False
    follow: bool = False
    wait: float | None = None
    force: bool = False
    verbose: bool = False
    runs_dir: Path = REPO / ".skyops" / "runs"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="jobs.py", description=__doc__.split("\n")[0], allow_abbrev=False,
                      formatter_class=_config.DefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--backend", choices=BACKENDS, default=None, help="[env SKYOPS_BACKEND; default local]")
    p.add_argument(
        "--env-file", type=Path, default=None, help="configuration file [default: <repo>/.env if present]"
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="local backend run directories [default: $SKYOPS_STATE_DIR/runs, else <repo>/.skyops/runs]",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    st = sub.add_parser(
        "status", help="list jobs, finished ones included (why each ended)", allow_abbrev=False
    )
    st.add_argument("--active", action="store_true", help="only jobs that have not finished")
    st.add_argument("--json", action="store_true", help="JSON records instead of a table")
    st.add_argument("ids", metavar="ID", nargs="*", help="job ids or run names")
    lg = sub.add_parser("logs", help="print a job's logs", allow_abbrev=False)
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    lg.add_argument("ids", metavar="ID", nargs=1, help="job id or run name")
    ca = sub.add_parser("cancel", help="cancel jobs", allow_abbrev=False)
    ca.add_argument(
        "--wait",
        type=float,
        default=None,
        help="local: seconds to wait for the teardown [default: the job's GRACE + 30]",
    )
    ca.add_argument(
        "--force",
        action="store_true",
        help="local: SIGKILL every process of the job now, skipping its GRACE period (its SIGTERM"
        " handlers get no time to save anything)",
    )
    ca.add_argument("ids", metavar="ID", nargs="+", help="job ids or run names")
    return p


def resolve_backend(flag: str | None, environ: Mapping[str, str], env_file: Path | None, repo: Path) -> str:
    """--backend > SKYOPS_BACKEND (environment) > .env > local. Raises ConfigError."""
    if flag:
        return flag
    value, where = environ.get("SKYOPS_BACKEND"), "SKYOPS_BACKEND"
    if value is None:
        path = env_file if env_file is not None else (repo / ".env" if (repo / ".env").is_file() else None)
        if path is not None:
            for entry in _config.read_env_file(path):
                if entry.key == "SKYOPS_BACKEND" and entry.value is not None:
                    value, where = entry.value, f"{path}:{entry.line}"
    if value is None:
        return "local"
    if value not in BACKENDS:
        raise ConfigError(f"{where}: expected one of {', '.join(BACKENDS)}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------- table


def _when(ts: Any) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: Any) -> str:
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


# --------------------------------------------------------------------------------------- local


@dataclass(frozen=True)
class LocalJob:
    job_id: int
    run: str
    dir: Path
    record: dict[str, Any]

    @property
    def state(self) -> str:
        return str(self.record.get("state") or "UNKNOWN")


def local_jobs(runs_dir: Path) -> list[LocalJob]:
    """Every local job under `runs_dir` (`<run>/job-<id>/job.json`), oldest first."""
    jobs = []
    for path in runs_dir.glob("*/job-*/job.json"):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            jobs.append(
                LocalJob(
                    int(record.get("job_id") or path.parent.name[4:]),
                    path.parent.parent.name,
                    path.parent,
                    record,
                )
            )
    return sorted(jobs, key=lambda j: j.job_id)


def find_local(jobs: Sequence[LocalJob], ident: str) -> LocalJob:
    """The job with id `ident`, or the latest job of run `ident`. Raises ConfigError."""
    if ident.isdigit():
        match = [j for j in jobs if j.job_id == int(ident)]
    else:
        match = [j for j in jobs if j.run == ident]
    if not match:
        raise ConfigError(f"ID {ident!r}: no such local job (see jobs.py status)")
    return match[-1]


def launcher_alive(record: Mapping[str, Any]) -> bool:
    """True when the job's launcher process still runs (and is not a later process with its pid)."""
    import psutil

    pid = record.get("launcher_pid")
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        started = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.Error, ValueError):
        return False
    submitted = record.get("submitted_at")
    return submitted is None or started <= float(submitted) + CLOCK_SLACK


def job_processes(job: LocalJob) -> list[Any]:
    """The live processes of a local job, wherever they are (found by their SKYOPS_LOCAL_JOB marker)."""
    import _teardown

    return _teardown.marked(_teardown.JOB_MARKER, str(job.dir))


def settle(job: LocalJob) -> tuple[LocalJob, int]:
    """The job as it really stands, and how many of its processes live on without a launcher.

    A job not finished whose launcher is gone (killed with SIGKILL) is still running while any of its
    processes lives; once none does, its end is recorded in job.json: SUCCEEDED when every node's last
    result says exit 0, else FAILED_CONTROLLER with LAUNCHER_GONE_REASON and the nodes' causes."""
    import _local_backend as lb

    if job.state in TERMINAL or launcher_alive(job.record):
        return job, 0
    left = len(job_processes(job))
    if left:
        return job, left
    record = dict(job.record)
    attempts = record.get("attempts") or [{}]
    since = float(attempts[-1].get("started_at") or record.get("submitted_at") or 0)
    nodes = int(record.get("num_nodes") or 1)
    results = lb.node_results(Path(record["run_data"]), nodes, since) if record.get("run_data") else []
    done = len(results) == nodes and all(r.get("exit_code") == 0 for r in results)
    cause = lb.first_cause(results)
    record["state"] = "SUCCEEDED" if done else "FAILED_CONTROLLER"
    record["reason"] = f"{LAUNCHER_GONE_REASON}; no process of the job is left" + (
        f"; {cause}" if cause else ""
    )
    record["failure_reason"] = None if done else record["reason"]
    record["exit_code"] = EXIT_OK if done else EXIT_FAILED
    if attempts and isinstance(attempts[-1], dict):
        attempts[-1].setdefault("ended_at", time.time())
    with contextlib.suppress(OSError):
        lb.write_json(job.dir / "job.json", record)
    return LocalJob(job.job_id, job.run, job.dir, record), 0


LOCAL_COLUMNS = [("ID", "job_id"), ("NAME", "name"), ("STATUS", "status"), ("RECOVERIES", "recovery_count"),
                 ("SUBMITTED", "submitted"), ("DURATION", "duration"), ("REASON", "reason")]  # fmt: skip


def local_rows(jobs: Sequence[LocalJob], now: float) -> list[dict[str, Any]]:
    """Status rows of local jobs (each settled first: see settle); `reason` says why a job ended, or
    why it is still shown running."""
    rows = []
    for job in jobs:
        j, left = settle(job)
        r = j.record
        attempts = r.get("attempts") or []
        start = attempts[0].get("started_at") if attempts else r.get("submitted_at")
        end = attempts[-1].get("ended_at") if attempts and j.state in TERMINAL else None
        status, reason = j.state, r.get("reason") or r.get("failure_reason")
        if left:
            status = f"{j.state} (launcher gone)"
            reason = (
                f"launcher gone; {left} process(es) of the job live on (jobs.py cancel {j.job_id} stops them)"
            )
        rows.append({
            "job_id": j.job_id, "name": j.run, "status": status, "recovery_count": r.get("recovery_count", 0),
            "submitted": _when(r.get("submitted_at")), "submitted_at": r.get("submitted_at"),
            "duration": _duration((end or now) - start) if start else "-", "reason": reason,
            "failure_reason": r.get("failure_reason"), "num_nodes": r.get("num_nodes"), "dir": str(j.dir),
        })  # fmt: skip
    return rows


def _log_files(job_dir: Path) -> list[Path]:
    def key(p: Path) -> tuple[int, int, str]:
        attempt = int(p.parent.name.removeprefix("attempt") or 0)
        return attempt, 0 if p.name.startswith("setup") else 1, p.name

    return sorted(job_dir.glob("attempt*/*.log"), key=key)


def local_logs(job: LocalJob, runs_dir: Path, out: IO[str], follow: bool, poll: float = 0.3) -> int:
    """Print every node log of the job, each line prefixed `(attemptN/nodeR.log)`; with `follow`,
    keep printing new lines (new attempts included) until the job ends. Then one line on stderr says
    how it ended (see local_outcome); returns its exit code."""
    offsets: dict[Path, int] = {}
    partial: dict[Path, bytes] = {}

    def drain() -> None:
        for path in _log_files(job.dir):
            with contextlib.suppress(OSError), open(path, "rb") as fh:
                fh.seek(offsets.get(path, 0))
                data = partial.pop(path, b"") + fh.read()
                offsets[path] = fh.tell()
                lines = data.split(b"\n")
                if lines[-1]:
                    partial[path] = lines[-1]
                label = f"({path.parent.name}/{path.name}) "
                for line in lines[:-1]:
                    out.write(label + line.decode(errors="replace").rstrip("\r") + "\n")
        out.flush()

    while True:
        drain()
        current, left = settle(find_local(local_jobs(runs_dir), str(job.job_id)))
        if not follow or current.state in TERMINAL:
            drain()
            for path, rest in partial.items():
                out.write(f"({path.parent.name}/{path.name}) {rest.decode(errors='replace')}\n")
            out.flush()
            code, line = local_outcome(current, left)
            if line:
                print(line, file=sys.stderr, flush=True)
            return code
        time.sleep(poll)


def local_outcome(job: LocalJob, left: int = 0) -> tuple[int, str | None]:
    """The exit code of `jobs.py logs` for a (settled) local job, and the line on stderr that explains
    it: 0 for a success (with its reason when it has one, e.g. a runtime budget) and for a job not
    finished yet; 1 for any other end, and for a success that never ran the job (launcher exit 1)."""
    state, what = job.state, f"job {job.job_id} (run {job.run})"
    reason = job.record.get("reason") or job.record.get("failure_reason")
    if state in TERMINAL:
        ok = state == "SUCCEEDED" and job.record.get("exit_code", EXIT_OK) == EXIT_OK
        if ok and not reason:
            return EXIT_OK, None
        return (EXIT_OK if ok else EXIT_FAILED), f"{what} ended {state}{f': {reason}' if reason else ''}"
    if left:
        return EXIT_OK, (
            f"{what} is {state}: its launcher is gone, {left} process(es) live on"
            f" (jobs.py cancel {job.job_id} stops them)"
        )
    return EXIT_OK, f"{what} is {state}: not finished (logs --follow keeps printing)"


def local_cancel(job: LocalJob, runs_dir: Path, wait: float | None, force: bool = False) -> int:
    """Cancel a local job: record the request (CANCEL_REQUEST, so the job's end says who cancelled
    it), SIGTERM its launcher, which stops every node with the job's whole GRACE, and wait up to `wait`
    seconds (default GRACE + 30) for job.json to show the end. `force`: SIGKILL every process of the job
    as soon as the launcher has started stopping (no grace). When the launcher is gone, stop the job's
    processes directly (cancel_orphaned). 0 when cancelled or already finished, 1 when it did not end."""
    import _local_backend as lb
    import _teardown

    what = f"job {job.job_id} ({job.run})"
    job, _ = settle(job)
    if job.state in TERMINAL:
        print(f"{what}: already {job.state}", file=sys.stderr)
        return EXIT_OK
    grace = float(job.record.get("grace_s") or 60)
    wait = grace + lb.STOP_GRACE_EXTRA + 20 if wait is None else wait
    by = "jobs.py cancel --force" if force else "jobs.py cancel"
    with contextlib.suppress(OSError):
        lb.write_json(job.dir / lb.CANCEL_REQUEST, {"by": by, "time": time.time()})
    if not launcher_alive(job.record):
        return cancel_orphaned(job, force)
    os.kill(int(job.record["launcher_pid"]), signal.SIGTERM)
    how = "--force: SIGKILL to every process now" if force else f"every process gets GRACE={grace:g} s"
    print(f"{what}: SIGTERM sent to its launcher {job.record['launcher_pid']}; {how}", file=sys.stderr)
    deadline = time.monotonic() + wait
    killed = not force
    while time.monotonic() < deadline:
        current = find_local(local_jobs(runs_dir), str(job.job_id))
        if current.state in TERMINAL:
            print(f"{what}: {current.state} ({current.record.get('reason') or 'cancelled'})", file=sys.stderr)
            return EXIT_OK
        if not launcher_alive(current.record):  # it died without recording the end
            return cancel_orphaned(current, force)
        if not killed and current.state == "CANCELLING":
            _teardown.stop(lambda: job_processes(job), 0, force=True)
            killed = True
        time.sleep(0.1)
    print(f"{what}: still stopping after {wait:.0f} s (see jobs.py status)", file=sys.stderr)
    return EXIT_FAILED


def cancel_orphaned(job: LocalJob, force: bool = False) -> int:
    """Cancel a local job whose launcher is gone (killed with SIGKILL before it tore the job down):
    stop every process of the job (found by marker, in any session, re-parented or not) with the job's
    GRACE, or at once with `force`, then record the end in job.json (FAILED_CONTROLLER, atomic write).
    0, or 1 when a process survived SIGKILL."""
    import _local_backend as lb
    import _teardown

    what = f"job {job.job_id} ({job.run})"
    grace = float(job.record.get("grace_s") or 60)
    procs = job_processes(job)
    result = _teardown.Teardown()
    if procs:
        how = "SIGKILL (--force)" if force else f"SIGTERM, GRACE={grace:g} s, then SIGKILL"
        print(
            f"{what}: its launcher is gone; stopping {len(procs)} process(es): {how}",
            file=sys.stderr,
            flush=True,
        )
        result = _teardown.stop(lambda: job_processes(job), grace, force=force)
    path = job.dir / "job.json"
    record = _read_record(path, job.record)
    if str(record.get("state")) in TERMINAL:  # it ended after all
        print(f"{what}: {record.get('state')}", file=sys.stderr)
        return EXIT_OK
    stopped = f"cancelled afterwards by jobs.py cancel{' --force' if force else ''}"
    stopped += f": {result.signalled or len(result.killed)} process(es) stopped"
    record.update(state="FAILED_CONTROLLER", failure_reason=f"{LAUNCHER_GONE_REASON}; {stopped}")
    record.update(reason=record["failure_reason"], exit_code=EXIT_FAILED)
    attempts = record.get("attempts")
    if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
        attempts[-1].setdefault("ended_at", time.time())
    lb.write_json(path, record)
    if result.survivors:
        print(f"{what}: FAILED_CONTROLLER, but pid(s) {result.survivors} survived SIGKILL", file=sys.stderr)
        return EXIT_FAILED
    print(f"{what}: FAILED_CONTROLLER ({record['reason']})", file=sys.stderr)
    return EXIT_OK


def _read_record(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return dict(default)
    return record if isinstance(record, dict) else dict(default)


def run_local(cfg: JobsConfig, out: IO[str]) -> int:
    jobs = local_jobs(cfg.runs_dir)
    if cfg.command == "status":
        chosen = [find_local(jobs, i) for i in cfg.ids] if cfg.ids else jobs
        rows = local_rows(chosen, time.time())
        if cfg.active and not cfg.ids:
            rows = [r for r in rows if r["status"] not in TERMINAL]
        out.write(json.dumps(rows, indent=2) + "\n" if cfg.json else table(rows, LOCAL_COLUMNS))
        return EXIT_OK
    if cfg.command == "logs":
        return local_logs(find_local(jobs, cfg.ids[0]), cfg.runs_dir, out, cfg.follow)
    targets = [find_local(jobs, i) for i in cfg.ids]
    return max(local_cancel(j, cfg.runs_dir, cfg.wait, cfg.force) for j in targets)


# --------------------------------------------------------------------------------------- sky


def sky_rows(
    records: Sequence[Mapping[str, Any]],
    now: float,
    reasons: Mapping[int, Mapping[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """Status rows of queue_v2 records; `reasons` (job id -> the supervisor's summary, see
    _sky_backend.supervisor_reasons) adds `reason` (e.g. max_runtime for a SUCCEEDED job whose
    runtime budget ran out) and `cause`, None where unknown."""
    rows = []
    for r in records:
        status = r.get("status")
        status = getattr(status, "value", status)
        summary = (reasons or {}).get(int(r["job_id"])) if r.get("job_id") is not None else None
        rows.append({
            "job_id": r.get("job_id"), "task_id": r.get("task_id"), "name": r.get("job_name") or r.get("task_name"),
            "status": status, "recovery_count": r.get("recovery_count"),
            "submitted": _when(r.get("submitted_at")), "submitted_at": r.get("submitted_at"),
            "duration": _duration(r.get("job_duration")), "failure_reason": r.get("failure_reason"),
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


def run_sky(cfg: JobsConfig, out: IO[str], sdk: Any = None, reasons_cache: Path | None = None) -> int:
    """The sky backend's commands. status: queue_v2 records, with the supervisor's reason of each
    finished job (from the end of its logs, cached in `reasons_cache`, default `sky-reasons.json`
    next to the runs directory: `$SKYOPS_STATE_DIR/`, else `<repo>/.skyops/`). logs:
    _sky_backend.show_logs (the outcome from the job's status when SkyPilot's tail_logs answers
    None, as it does without --follow)."""
    import _sky_backend

    reasons_cache = reasons_cache if reasons_cache is not None else cfg.runs_dir.parent / "sky-reasons.json"

    sdk = sdk if sdk is not None else _sky_backend.SkyJobsSDK()
    try:
        if cfg.command == "status":
            ids = sky_job_ids(sdk, cfg.ids) if cfg.ids else None
            records = sdk.queue(ids, cfg.active and not ids, False)
            reasons = _sky_backend.supervisor_reasons(sdk, records, reasons_cache)
            rows = sky_rows(records, time.time(), reasons)
            out.write(
                json.dumps(rows, indent=2, default=str) + "\n" if cfg.json else table(rows, sky_columns(rows))
            )
            return EXIT_OK
        if cfg.command == "logs":
            (job_id,) = sky_job_ids(sdk, cfg.ids)
            code, line = _sky_backend.show_logs(sdk, job_id, out, cfg.follow)
            if line:  # logs exits with the job's outcome: say which
                out.flush()
                print(line, file=sys.stderr, flush=True)
            return code
        ids = sky_job_ids(sdk, cfg.ids)
        sdk.cancel(ids)
        print(f"cancel requested: managed job(s) {', '.join(map(str, ids))}", file=sys.stderr)
        return EXIT_OK
    except (ConfigError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if type(exc).__name__ == "ClusterNotUpError":  # no jobs controller yet: no managed jobs at all
            if cfg.command == "status":
                out.write(json.dumps([]) + "\n" if cfg.json else table([], COLUMNS))
                return EXIT_OK
            raise ConfigError(
                f"ID {' '.join(cfg.ids)}: no such managed job (none on this API server)"
            ) from None
        if cfg.verbose:
            log.error("SkyPilot error", exc_info=exc)
        print(f"jobs.py: error: {_sky_backend.describe_sky_error(exc)}", file=sys.stderr)
        return EXIT_SKY_ERROR


# --------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        backend = resolve_backend(args.backend, dict(os.environ), args.env_file, REPO)
        cfg = JobsConfig(
            backend=backend,
            command=args.command,
            ids=tuple(args.ids),
            active=getattr(args, "active", False),
            json=getattr(args, "json", False),
            follow=getattr(args, "follow", False),
            wait=getattr(args, "wait", None),
            force=getattr(args, "force", False),
            verbose=args.verbose,
            runs_dir=args.runs_dir or Path(os.environ.get("SKYOPS_STATE_DIR") or REPO / ".skyops") / "runs",
        )
        if cfg.backend == "sky":
            return run_sky(cfg, sys.stdout)
        return run_local(cfg, sys.stdout)
    except ConfigError as exc:
        print(f"jobs.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("jobs.py: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
