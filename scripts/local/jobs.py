#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "python-dotenv==1.2.4",
#     "pyyaml==6.0.4",
#     "psutil==7.2.2",
#     "skypilot==0.14.1",
# ]
# ///
"""Watch and stop the jobs launch.py started: status, logs, cancel.

usage: jobs.py [--backend {local,sky}] [--env-file PATH] [-v] status [--active] [--json] [ID ...]
       jobs.py [--backend {local,sky}] logs [--follow] ID
       jobs.py [--backend {local,sky}] cancel ID [ID ...]

    ./scripts/local/jobs.py --backend sky status          # managed jobs not finished yet
    ./scripts/local/jobs.py --backend sky logs --follow 42
    ./scripts/local/jobs.py cancel demo-2                 # local backend: by run name or job id

ID is a job id (an integer) or a run name (its latest job). The backend comes from --backend >
SKYOPS_BACKEND in the environment > .env > local, as for launch.py.

- sky: status from `sky.jobs.queue_v2` with `failure_reason` and `recovery_count`; logs from
  `sky.jobs.tail_logs` (with --follow, 101 "not finished" means still running); `sky.jobs.cancel`.
- local: the local backend's run directories `.skyops/runs/<run>/job-<id>/` (`job.json`, node logs);
  cancel sends SIGTERM to the job's launcher (`launcher_pid`), which tears every node down. A job
  whose launcher is gone (killed by SIGHUP or SIGKILL) is shown `<STATE> (launcher gone)`; cancel
  then stops its node process groups itself (`node_pids` in job.json, when recorded: SIGTERM, 10 s,
  SIGKILL; a pid is signalled only while it is still that node's process) and marks the job
  FAILED_CONTROLLER.

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

#: failure_reason of a local job cancelled after its launcher died without tearing it down.
LAUNCHER_GONE_REASON = "launcher exited without tearing the job down (cancelled afterwards)"
#: Seconds between SIGTERM and SIGKILL for the node process groups of such a job.
NODE_TERM_WAIT = 10.0
#: psutil's create_time() is only as precise as the boot time (whole seconds on Linux).
CLOCK_SLACK = 1.0

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
    wait: float = 90.0
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
        "--runs-dir", type=Path, default=REPO / ".skyops" / "runs", help="local backend run directories"
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
    ca.add_argument("--wait", type=float, default=90.0, help="local: seconds to wait for the teardown")
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
    """A plain text table (header + rows) of `columns` = [(title, key)]; None shown as `-`."""
    cells = [[t for t, _ in columns]] + [
        ["-" if r.get(k) in (None, "") else str(r.get(k)) for _, k in columns] for r in rows
    ]
    widths = [
        max(len(row[i].splitlines()[0] if row[i] else "") for row in cells) for i in range(len(columns))
    ]
    lines = []
    for row in cells:
        parts = [(c.splitlines()[0] if c else "").ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(parts).rstrip())
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
    return submitted is None or started <= float(submitted) + 1.0


def local_state(job: LocalJob) -> str:
    """The recorded state; a job not finished whose launcher is gone is shown as such."""
    state = job.state
    if state not in TERMINAL and not launcher_alive(job.record):
        return f"{state} (launcher gone)"
    return state


def local_rows(jobs: Sequence[LocalJob], now: float) -> list[dict[str, Any]]:
    rows = []
    for j in jobs:
        r = j.record
        attempts = r.get("attempts") or []
        start = attempts[0].get("started_at") if attempts else r.get("submitted_at")
        end = attempts[-1].get("ended_at") if attempts and j.state in TERMINAL else None
        rows.append({
            "job_id": j.job_id, "name": j.run, "status": local_state(j), "recovery_count": r.get("recovery_count", 0),
            "submitted": _when(r.get("submitted_at")), "submitted_at": r.get("submitted_at"),
            "duration": _duration((end or now) - start) if start else "-", "failure_reason": r.get("failure_reason"),
            "num_nodes": r.get("num_nodes"), "dir": str(j.dir),
        })  # fmt: skip
    return rows


def _log_files(job_dir: Path) -> list[Path]:
    def key(p: Path) -> tuple[int, int, str]:
        attempt = int(p.parent.name.removeprefix("attempt") or 0)
        return attempt, 0 if p.name.startswith("setup") else 1, p.name

    return sorted(job_dir.glob("attempt*/*.log"), key=key)


def local_logs(job: LocalJob, runs_dir: Path, out: IO[str], follow: bool, poll: float = 0.3) -> int:
    """Print every node log of the job, each line prefixed `(attemptN/nodeR.log)`; with `follow`,
    keep printing new lines (new attempts included) until the job ends. 0 succeeded, 1 otherwise."""
    offsets: dict[Path, int] = {}
    partial: dict[Path, bytes] = {}

    def drain() -> bool:
        wrote = False
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
                    wrote = True
        out.flush()
        return wrote

    while True:
        drain()
        current = find_local(local_jobs(runs_dir), str(job.job_id))
        if not follow or current.state in TERMINAL or not launcher_alive(current.record):
            drain()
            for path, rest in partial.items():
                out.write(f"({path.parent.name}/{path.name}) {rest.decode(errors='replace')}\n")
            out.flush()
            code, line = local_outcome(current)
            if line:
                print(line, file=sys.stderr, flush=True)
            return code
        time.sleep(poll)


def local_outcome(job: LocalJob) -> tuple[int, str | None]:
    """The exit code of `jobs.py logs` for a local job, and the line that explains it on stderr:
    0 SUCCEEDED; 0 not finished yet (launcher alive); 1 any other end, and a job whose launcher is
    gone without finishing it."""
    state, what = job.state, f"job {job.job_id} (run {job.run})"
    if state == "SUCCEEDED":
        return EXIT_OK, None
    if state in TERMINAL:
        reason = job.record.get("failure_reason")
        return EXIT_FAILED, f"{what} ended {state}{f': {reason}' if reason else ''}"
    if launcher_alive(job.record):
        return EXIT_OK, f"{what} is {state}: not finished (logs --follow keeps printing)"
    return EXIT_FAILED, (
        f"{what} is {state} but its launcher is gone: it will not finish"
        f" (jobs.py cancel {job.job_id} stops its nodes and marks it ended)"
    )


def local_cancel(job: LocalJob, runs_dir: Path, wait: float, term_wait: float | None = None) -> int:
    """SIGTERM the job's launcher (the local backend stops every node); wait up to `wait` seconds
    for job.json to show the end. When the launcher is gone, stop what it left behind instead
    (`cancel_orphaned`, with `term_wait` seconds, default NODE_TERM_WAIT, between SIGTERM and
    SIGKILL). 0 when cancelled or already finished, 1 when it did not end in time."""
    term_wait = NODE_TERM_WAIT if term_wait is None else term_wait
    if job.state in TERMINAL:
        print(f"job {job.job_id} ({job.run}): already {job.state}", file=sys.stderr)
        return EXIT_OK
    if not launcher_alive(job.record):
        return cancel_orphaned(job, term_wait)
    os.kill(int(job.record["launcher_pid"]), signal.SIGTERM)
    print(
        f"job {job.job_id} ({job.run}): SIGTERM sent to launcher {job.record['launcher_pid']}; stopping nodes",
        file=sys.stderr,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        current = find_local(local_jobs(runs_dir), str(job.job_id))
        if current.state in TERMINAL:
            print(f"job {job.job_id} ({job.run}): {current.state}", file=sys.stderr)
            return EXIT_OK
        if not launcher_alive(current.record):  # it died without recording the end
            return cancel_orphaned(current, term_wait)
        time.sleep(0.2)
    print(
        f"job {job.job_id} ({job.run}): still stopping after {wait:.0f} s (see jobs.py status)",
        file=sys.stderr,
    )
    return EXIT_FAILED


def cancel_orphaned(job: LocalJob, term_wait: float) -> int:
    """Cancel a local job whose launcher is gone (killed by SIGHUP or SIGKILL before it tore the job
    down): stop the node process groups job.json lists (`node_pids`, optional; see
    `verified_node_groups` and `stop_process_groups`), then record the end in job.json (state
    FAILED_CONTROLLER, failure_reason LAUNCHER_GONE_REASON; atomic write). 0, or 1 when a node
    process group survived SIGKILL."""
    path = job.dir / "job.json"
    what = f"job {job.job_id} ({job.run})"
    try:
        written_at = path.stat().st_mtime
    except OSError:
        written_at = time.time()
    groups, skipped = verified_node_groups(job.record, written_at)
    for pid in skipped:
        print(f"{what}: node pid {pid} not signalled: no longer that node's process", file=sys.stderr)
    left: list[int] = []
    if groups:
        print(
            f"{what}: its launcher is gone; SIGTERM to node process group(s) {', '.join(map(str, groups))}",
            file=sys.stderr,
            flush=True,
        )
        left = stop_process_groups(groups, term_wait)
    else:
        print(f"{what}: its launcher is gone; no node process left to signal", file=sys.stderr)
    record = _read_record(path, job.record)
    if str(record.get("state")) in TERMINAL:  # it ended after all
        print(f"{what}: {record.get('state')}", file=sys.stderr)
        return EXIT_OK
    record["state"] = "FAILED_CONTROLLER"
    record["failure_reason"] = LAUNCHER_GONE_REASON
    attempts = record.get("attempts")
    if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
        attempts[-1].setdefault("ended_at", time.time())
    write_json_atomic(path, record)
    if left:
        print(
            f"{what}: marked FAILED_CONTROLLER, but node process group(s) {', '.join(map(str, left))}"
            " survived SIGKILL",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"{what}: FAILED_CONTROLLER ({LAUNCHER_GONE_REASON})", file=sys.stderr)
    return EXIT_OK


def _read_record(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return dict(default)
    return record if isinstance(record, dict) else dict(default)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as JSON to `path` through a temp file in the same folder and os.replace()."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def verified_node_groups(record: Mapping[str, Any], written_at: float) -> tuple[list[int], list[int]]:
    """The node process groups of `record["node_pids"]` that are safe to signal, and the listed pids
    that are not. A pid is safe while it is still the node's process: a live process (a zombie
    still holds its pid, so it counts), leader of its own process group (the local backend starts
    each node in a new session), started no earlier than the job's `submitted_at` and no later than
    job.json's last write `written_at` (the launcher lists a node after starting it), both with
    CLOCK_SLACK seconds for psutil's precision. A reused pid fails the time window, so it is never
    signalled. Missing or malformed `node_pids`, or no `submitted_at`: nothing is safe."""
    import psutil

    pids = record.get("node_pids")
    if not isinstance(pids, list):
        return [], []
    submitted = record.get("submitted_at")
    own = {os.getpid(), os.getpgrp()}
    safe: list[int] = []
    skipped: list[int] = []
    for pid in dict.fromkeys(pids):
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1 or pid in own:
            continue
        try:
            started = psutil.Process(pid).create_time()
            leader = os.getpgid(pid) == pid
        except (psutil.Error, OSError):
            continue  # gone: nothing to signal
        if (
            leader
            and isinstance(submitted, (int, float))
            and float(submitted) - CLOCK_SLACK <= started <= written_at + CLOCK_SLACK
        ):
            safe.append(pid)
        else:
            skipped.append(pid)
    return safe, skipped


def group_alive(pgid: int) -> bool:
    """True while process group `pgid` has a member that is not a zombie."""
    import psutil

    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (psutil.Error, OSError):
            continue
    return False


def stop_process_groups(pgids: Sequence[int], wait: float, poll: float = 0.1) -> list[int]:
    """SIGTERM each process group, wait up to `wait` seconds for them to empty, SIGKILL what remains.
    Returns the groups still alive 2 s after SIGKILL (normally none)."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    remaining = list(pgids)
    deadline = time.monotonic() + wait
    while remaining and time.monotonic() < deadline:
        time.sleep(poll)
        remaining = [g for g in remaining if group_alive(g)]
    if not remaining:
        return []
    for pgid in remaining:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while remaining and time.monotonic() < deadline:
        time.sleep(poll)
        remaining = [g for g in remaining if group_alive(g)]
    return remaining


def run_local(cfg: JobsConfig, out: IO[str]) -> int:
    jobs = local_jobs(cfg.runs_dir)
    if cfg.command == "status":
        chosen = [find_local(jobs, i) for i in cfg.ids] if cfg.ids else jobs
        if cfg.active and not cfg.ids:
            chosen = [j for j in chosen if j.state not in TERMINAL]
        rows = local_rows(chosen, time.time())
        out.write(json.dumps(rows, indent=2) + "\n" if cfg.json else table(rows, COLUMNS))
        return EXIT_OK
    if cfg.command == "logs":
        return local_logs(find_local(jobs, cfg.ids[0]), cfg.runs_dir, out, cfg.follow)
    targets = [find_local(jobs, i) for i in cfg.ids]
    return max(local_cancel(j, cfg.runs_dir, cfg.wait) for j in targets)


# --------------------------------------------------------------------------------------- sky


def sky_rows(records: Sequence[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
    rows = []
    for r in records:
        status = r.get("status")
        status = getattr(status, "value", status)
        rows.append({
            "job_id": r.get("job_id"), "task_id": r.get("task_id"), "name": r.get("job_name") or r.get("task_name"),
            "status": status, "recovery_count": r.get("recovery_count"),
            "submitted": _when(r.get("submitted_at")), "submitted_at": r.get("submitted_at"),
            "duration": _duration(r.get("job_duration")), "failure_reason": r.get("failure_reason"),
            "resources": r.get("resources"), "infra": r.get("infra"),
        })  # fmt: skip
    return rows


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


def run_sky(cfg: JobsConfig, out: IO[str], sdk: Any = None) -> int:
    import _sky_backend

    sdk = sdk if sdk is not None else _sky_backend.SkyJobsSDK()
    try:
        if cfg.command == "status":
            ids = sky_job_ids(sdk, cfg.ids) if cfg.ids else None
            records = sdk.queue(ids, cfg.active and not ids, False)
            rows = sky_rows(records, time.time())
            out.write(json.dumps(rows, indent=2, default=str) + "\n" if cfg.json else table(rows, COLUMNS))
            return EXIT_OK
        if cfg.command == "logs":
            (job_id,) = sky_job_ids(sdk, cfg.ids)
            if cfg.follow:
                tail = _sky_backend.tail_until_done(sdk, job_id, out)
                code = _sky_backend.exit_code_of_tail(job_id, tail)
            else:
                tail = sdk.tail_logs(job_id, False, out)
                if tail == _sky_backend.TAIL_NOT_FOUND:
                    raise ConfigError(f"ID {job_id}: no such managed job")
                ok = (_sky_backend.TAIL_SUCCEEDED, _sky_backend.TAIL_NOT_FINISHED)
                code = EXIT_OK if tail in ok else EXIT_FAILED
            if code == EXIT_FAILED:  # logs exits with the job's outcome: say which
                out.flush()
                print(_sky_backend.ended_line(sdk, job_id, tail), file=sys.stderr, flush=True)
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
            wait=getattr(args, "wait", 90.0),
            verbose=args.verbose,
            runs_dir=args.runs_dir,
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
