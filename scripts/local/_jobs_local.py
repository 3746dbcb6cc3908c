"""`jobs.py` on the local backend: the jobs are the run directories `<runs_dir>/<run>/job-<id>/`
(`job.json`, node logs), as the local launcher writes them. A job whose launcher is gone is settled
here (`settle`): running while any of its processes lives, then its end recorded. status
(`local_rows`), logs (`local_logs`), cancel (`local_cancel`, `cancel_orphaned`) and watch
(`local_watch`, sending the endings through `_jobs_notify`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import _atomic
from _config import EXIT_FAILED, EXIT_OK, ConfigError, JobsConfig
from _job_state import TERMINAL, JobState
from _jobs_notify import LAUNCHER_NOTIFY_WAIT_S, NO_CHANNEL_LINE, WATCH_INTERVAL_S, channels, send_event
from _jobs_view import duration, ended_text, table, when

#: failure_reason of a local job whose launcher died without tearing it down (killed with SIGKILL).
LAUNCHER_GONE_REASON = "launcher killed without tearing the job down"
#: psutil's create_time() is only as precise as the boot time (whole seconds on Linux).
CLOCK_SLACK = 1.0


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
    from _local_results import first_cause, node_results

    if job.state in TERMINAL or launcher_alive(job.record):
        return job, 0
    left = len(job_processes(job))
    if left:
        return job, left
    record = dict(job.record)
    attempts = record.get("attempts") or [{}]
    since = float(attempts[-1].get("started_at") or record.get("submitted_at") or 0)
    nodes = int(record.get("num_nodes") or 1)
    results = node_results(Path(record["run_data"]), nodes, since) if record.get("run_data") else []
    done = len(results) == nodes and all(r.get("exit_code") == 0 for r in results)
    cause = first_cause(results)
    record["state"] = JobState.SUCCEEDED if done else JobState.FAILED_CONTROLLER
    record["reason"] = f"{LAUNCHER_GONE_REASON}; no process of the job is left" + (
        f"; {cause}" if cause else ""
    )
    record["failure_reason"] = None if done else record["reason"]
    record["exit_code"] = EXIT_OK if done else EXIT_FAILED
    if attempts and isinstance(attempts[-1], dict):
        attempts[-1].setdefault("ended_at", time.time())
    with contextlib.suppress(OSError):
        _atomic.write_json(job.dir / "job.json", record)
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
            "submitted": when(r.get("submitted_at")), "submitted_at": r.get("submitted_at"),
            "duration": duration((end or now) - start) if start else "-", "reason": reason,
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
        ok = state == JobState.SUCCEEDED and job.record.get("exit_code", EXIT_OK) == EXIT_OK
        if ok and not reason:
            return EXIT_OK, None
        return (EXIT_OK if ok else EXIT_FAILED), f"{what} ended {state}{f': {reason}' if reason else ''}"
    if left:
        return EXIT_OK, (
            f"{what} is {state}: its launcher is gone, {left} process(es) live on"
            f" (jobs.py cancel {job.job_id} stops them)"
        )
    return EXIT_OK, f"{what} is {state}: not finished (logs --follow keeps printing)"


def local_cancel(
    job: LocalJob,
    runs_dir: Path,
    wait: float | None,
    force: bool = False,
    notify: Mapping[str, str] | None = None,
) -> int:
    """Cancel a local job: record the request (CANCEL_REQUEST, so the job's end says who cancelled
    it), SIGTERM its launcher, which stops every node with the job's whole GRACE, and wait up to `wait`
    seconds (default GRACE + 30) for job.json to show the end. `force`: SIGKILL every process of the job
    as soon as the launcher has started stopping (no grace). When the launcher is gone, stop the job's
    processes directly (cancel_orphaned). 0 when cancelled or already finished, 1 when it did not end."""
    import _teardown
    from _local_nodes import STOP_GRACE_EXTRA
    from _local_results import CANCEL_REQUEST

    what = f"job {job.job_id} ({job.run})"
    job, _ = settle(job)
    if job.state in TERMINAL:
        left = job_processes(job)  # e.g. left behind by a launcher killed in its own teardown
        if left:
            grace = 0.0 if force else float(job.record.get("grace_s") or 60)
            print(
                f"{what}: {job.state}, but {len(left)} of its processes live on: stopping them",
                file=sys.stderr,
            )
            _teardown.stop(lambda: job_processes(job), grace, force=force)
        print(f"{what}: already {job.state}", file=sys.stderr)
        return EXIT_OK
    grace = float(job.record.get("grace_s") or 60)
    wait = grace + STOP_GRACE_EXTRA + 20 if wait is None else wait
    by = "jobs.py cancel --force" if force else "jobs.py cancel"
    with contextlib.suppress(OSError):
        _atomic.write_json(job.dir / CANCEL_REQUEST, {"by": by, "time": time.time()})
    if not launcher_alive(job.record):
        return cancel_orphaned(job, force, notify)
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
            return cancel_orphaned(current, force, notify)
        if not killed and current.state == JobState.CANCELLING:
            _teardown.stop(lambda: job_processes(job), 0, force=True)
            killed = True
        time.sleep(0.1)
    print(f"{what}: still stopping after {wait:.0f} s (see jobs.py status)", file=sys.stderr)
    return EXIT_FAILED


def cancel_orphaned(job: LocalJob, force: bool = False, notify: Mapping[str, str] | None = None) -> int:
    """Cancel a local job whose launcher is gone (killed with SIGKILL before it tore the job down):
    stop every process of the job (found by marker, in any session, re-parented or not) with the job's
    GRACE, or at once with `force`, then record the end in job.json (FAILED_CONTROLLER, atomic write).
    0, or 1 when a process survived SIGKILL."""
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
    record.update(state=JobState.FAILED_CONTROLLER, failure_reason=f"{LAUNCHER_GONE_REASON}; {stopped}")
    record.update(reason=record["failure_reason"], exit_code=EXIT_FAILED)
    attempts = record.get("attempts")
    if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
        attempts[-1].setdefault("ended_at", time.time())
    _atomic.write_json(path, record)
    if result.survivors:
        print(f"{what}: FAILED_CONTROLLER, but pid(s) {result.survivors} survived SIGKILL", file=sys.stderr)
        return EXIT_FAILED
    if notify and record.get("run_data"):  # no launcher is left to tell anyone: the cancel does
        ended = LocalJob(job.job_id, job.run, job.dir, record)
        send_event(local_event(ended, time.time()), notify, Path(record["run_data"]) / "notify")
    print(f"{what}: FAILED_CONTROLLER ({record['reason']})", file=sys.stderr)
    return EXIT_OK


def _read_record(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return dict(default)
    return record if isinstance(record, dict) else dict(default)


_NODE_REASON_RE = re.compile(r"node\d+: (?P<reason>[a-z_]+) \(exit (?P<code>-?\d+|None)\)")


def local_reason(record: Mapping[str, Any]) -> str:
    """The short `reason` of a local job's ending (docs/notifications.md), from its job.json: the code
    that starts its reason text (`cancelled: ...`, `crash_loop: ...`, `max_runtime: ...`),
    `launcher_gone` for a job whose launcher died, the first failed node's reason (`job_failed`,
    `heartbeat_timeout`, ...), else `completed` for a success and `failed` for anything else."""
    text = str(record.get("reason") or record.get("failure_reason") or "")
    if text.startswith(LAUNCHER_GONE_REASON):
        return "launcher_gone"
    if re.fullmatch(r"[a-z][a-z0-9_]*", head := text.split(":", 1)[0].strip()):
        return head
    attempts = record.get("attempts") or [{}]
    for why in (attempts[-1].get("node_reasons") or []) if isinstance(attempts[-1], dict) else []:
        found = _NODE_REASON_RE.match(str(why))
        if found and found["code"] not in ("0", "130", "143", "None"):
            return found["reason"]
    return "completed" if record.get("state") == JobState.SUCCEEDED else "failed"


def local_event(job: LocalJob, now: float) -> dict[str, Any]:
    """The `ended` event document (docs/notifications.md) of a finished local job, from its job.json.
    Local jobs carry no commit (the local backend sets no GIT_COMMIT)."""
    r = job.record
    attempts = [a for a in r.get("attempts") or [] if isinstance(a, dict)]
    start = float((attempts[0].get("started_at") if attempts else None) or r.get("submitted_at") or now)
    end = float((attempts[-1].get("ended_at") if attempts else None) or now)
    cause = r.get("reason") or r.get("failure_reason")
    return {
        "event": "ended", "run_id": job.run, "job_id": str(job.job_id), "backend": "local",
        "state": job.state, "reason": local_reason(r), "cause": " ".join(str(cause).split()) if cause else None,
        "attempts": len(attempts), "recoveries": int(r.get("recovery_count") or 0),
        "runtime_s": round(max(0.0, end - start), 3), "commit": "", "logs_hint": f"make logs ID={job.job_id}",
        "time": now,
    }  # fmt: skip


def local_watch(cfg: JobsConfig, runs_dir: Path) -> int:
    """Follow local jobs (job.json, settled: a job whose launcher died gets its end recorded) until
    each has ended; print each change of state and, per job, how it ended (stderr). On a final state,
    send `ended` through notify.py, claimed in the run's `$DATA_DIR/$RUN_ID/notify/` as the nodes and
    the launcher claim theirs: whatever they sent is not sent again. A launcher still alive gets up to
    LAUNCHER_NOTIFY_WAIT_S to send its own first. 0 when every job succeeded (local_outcome), else 1."""
    jobs = local_jobs(runs_dir)
    targets = list({j.job_id: j for j in (find_local(jobs, i) for i in cfg.ids)}.values())
    interval = cfg.interval if cfg.interval is not None else WATCH_INTERVAL_S["local"]
    if not channels(cfg.notify_env):
        print(NO_CHANNEL_LINE, file=sys.stderr, flush=True)
    codes: dict[int, int] = {}
    shown: dict[int, str] = {}
    final_since: dict[int, float] = {}
    while True:
        for job in targets:
            if job.job_id in codes:
                continue
            what = f"job {job.job_id} (run {job.run})"
            record = _read_record(job.dir / "job.json", job.record)
            current, left = settle(LocalJob(job.job_id, job.run, job.dir, record))
            status = f"{current.state} (launcher gone)" if left else current.state
            if current.state not in TERMINAL:
                if shown.get(job.job_id) != status:
                    print(f"{what}: {status}", file=sys.stderr, flush=True)
                    shown[job.job_id] = status
                continue
            first = final_since.setdefault(job.job_id, time.monotonic())
            if launcher_alive(current.record) and time.monotonic() - first < LAUNCHER_NOTIFY_WAIT_S:
                continue  # it records the end, then sends its notification, then exits
            run_data = current.record.get("run_data")
            claims = Path(run_data) / "notify" if run_data else None
            send_event(local_event(current, time.time()), cfg.notify_env, claims)
            codes[job.job_id] = local_outcome(current)[0]
            reason = current.record.get("reason") or current.record.get("failure_reason")
            print(ended_text(what, current.state, reason), file=sys.stderr, flush=True)
        if len(codes) == len(targets):
            return EXIT_OK if all(c == EXIT_OK for c in codes.values()) else EXIT_FAILED
        time.sleep(interval)


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
    if cfg.command == "watch":
        return local_watch(cfg, cfg.runs_dir)
    targets = [find_local(jobs, i) for i in cfg.ids]
    return max(local_cancel(j, cfg.runs_dir, cfg.wait, cfg.force, cfg.notify_env) for j in targets)
