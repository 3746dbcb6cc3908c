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
       jobs.py [--backend {local,sky}] watch [--interval S] ID [ID ...]
       jobs.py notify-test

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

watch follows jobs until every one has ended and sends the endings no node sends (docs/notifications.md):
through scripts/remote/notify.py, run as a uv script, with the channel secrets and settings of the
environment > .env > job.yaml. local: `ended` for every final state, claimed in the run's
`$DATA_DIR/$RUN_ID/notify/` as the nodes and the launcher claim theirs, so each is sent once (the
launcher sends every ending it sees; the watcher's own is an ending recorded after a launcher died).
sky: `attempt_ended` per recovery it sees (RECOVERING), and `ended` for every final state
(FAILED_NO_RESOURCE, FAILED_PRECHECKS, FAILED_CONTROLLER, FAILED_SETUP, CANCELLED, FAILED, SUCCEEDED)
unless the job's logs show that its node sent it; claimed under `$SKYOPS_STATE_DIR/sky-notify/` (else
`<repo>/.skyops/`), so a watcher started again sends nothing twice. notify-test sends one test message
to every configured channel (one line each, secrets redacted).

stdout carries data (the status table or JSON, log lines); messages go to stderr. SkyPilot's own
output during its calls (e.g. when it starts a local API server, which then keeps running; `sky api
stop` stops it) is sent to stderr.
Exit codes: 0 ok (logs: the job succeeded, or has not finished yet; watch: every job succeeded;
notify-test: every channel answered); 1 the job failed or was cancelled (logs and watch end with one
line on stderr saying how it ended), a cancel did not finish, or a notify-test channel failed (or none
is configured); 2 bad input or unknown ID; 3 SkyPilot error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import _atomic
import _config
from _config import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, EXIT_SKY_ERROR, REPO, ConfigError, OneLineParser
from _job_state import TERMINAL, JobState

BACKENDS = ("local", "sky")

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
    #: watch: seconds between polls (None: WATCH_INTERVAL_S of the backend).
    interval: float | None = None
    #: watch, notify-test: the environment notify.py runs with (see notify_env); holds secrets.
    notify_env: Mapping[str, str] = field(default_factory=dict, repr=False)


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
    wa = sub.add_parser(
        "watch",
        help="follow jobs until every one has ended; send the endings no node sends (exit 0: all succeeded)",
        allow_abbrev=False,
    )
    wa.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between polls [default: 15 on sky (the API server), 1 locally]",
    )
    wa.add_argument("ids", metavar="ID", nargs="+", help="job ids or run names")
    sub.add_parser(
        "notify-test",
        help="send a test message to every configured notification channel (.env or environment)",
        allow_abbrev=False,
    )
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


# --------------------------------------------------------------------------------------- notifications

#: The channel secrets notify.py reads (job.yaml `secrets:`), and its settings (docs/notifications.md).
NOTIFY_SECRETS = ("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN")
NOTIFY_SETTINGS = ("NOTIFY_ON", "NOTIFY_TIMEOUT_S", "GITHUB_API_URL", "GITHUB_REPOSITORY")
#: Keys notify.py reads that belong to one job (set by launch.py), never taken from the watcher's own.
JOB_COMMIT_KEYS = ("GIT_COMMIT", "GIT_DIRTY")
NOTIFY_SCRIPT = REPO / "scripts" / "remote" / "notify.py"
#: Seconds one notify.py run may take: it caps all its channels at 30 s; the rest is uv's start.
NOTIFY_CAP_S = 45.0
#: Seconds between the polls of `watch`, per backend: sky asks the API server (whose controller looks
#: at its jobs about as often); local reads job.json.
WATCH_INTERVAL_S = {"local": 1.0, "sky": 15.0}
#: Seconds `watch` leaves a local launcher that is still alive after recording its job's end to send
#: its own notification (the local backend's NOTIFY_CAP_S of 35 s, plus slack) before sending.
LAUNCHER_NOTIFY_WAIT_S = 45.0
NO_CHANNEL_LINE = f"watch: no notification channel configured ({', '.join(NOTIFY_SECRETS)}): following only"


def notify_env(environ: Mapping[str, str], env_file: Path | None, repo: Path) -> dict[str, str]:
    """The environment notify.py runs with: `environ` (PATH, HOME, uv's settings) without the keys
    notify.py reads, plus the channel secrets and settings (NOTIFY_SECRETS, NOTIFY_SETTINGS) resolved
    as launch.py resolves them: process environment > .env (`env_file`, default <repo>/.env) >
    `<repo>/job.yaml`. GIT_COMMIT and GIT_DIRTY are left out: each job has its own. Raises ConfigError
    (a bad .env or job.yaml, naming `file:line`)."""
    path = env_file if env_file is not None else (repo / ".env" if (repo / ".env").is_file() else None)
    entries = _config.read_env_file(path) if path else []
    defaults: dict[str, str | None] = {}
    if (repo / "job.yaml").is_file():
        task = _config.load_task_file(repo / "job.yaml")
        defaults = {**task.envs, **task.secrets}
    resolved = _config.resolve_values(
        defaults=defaults, file_entries=entries, environ=environ, flags={}, file_label=str(path or ".env")
    )
    keys = (*NOTIFY_SECRETS, *NOTIFY_SETTINGS)
    env = {k: v for k, v in environ.items() if k not in keys and k not in JOB_COMMIT_KEYS}
    for key in keys:
        value = resolved.values.get(key, environ.get(key, ""))
        if value.strip():
            env[key] = value
    return env


def channels(env: Mapping[str, str]) -> list[str]:
    """The notification channels `env` configures, by key (NOTIFY_SECRETS with a value)."""
    return [k for k in NOTIFY_SECRETS if env.get(k, "").strip()]


def run_notify(args: Sequence[str], env: Mapping[str, str], stdin: str | None = None) -> int | None:
    """Run scripts/remote/notify.py with `args` as a uv script (scripts/local/ never imports
    scripts/remote/ beyond _contract), in `env`, with `stdin` as its input. Its lines, which notify.py
    redacts, are copied to stderr. Returns its exit code, or None (one warning) when uv is missing or
    it ran past NOTIFY_CAP_S (then its process group is killed)."""
    uv = shutil.which("uv", path=env.get("PATH"))
    if uv is None:
        log.warning("notify.py not run: uv is not on PATH")
        return None
    argv = [uv, "run", "--quiet", "--script", str(NOTIFY_SCRIPT), *args]
    log.debug("running: %s", shlex.join(argv))
    proc = subprocess.Popen(
        argv, cwd=REPO, env=dict(env), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    code: int | None
    try:
        output, _ = proc.communicate(stdin, timeout=NOTIFY_CAP_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
        log.warning("notify.py stopped after %.0f s", NOTIFY_CAP_S)
    sys.stderr.write(output)
    sys.stderr.flush()
    return code


def send_event(doc: Mapping[str, Any], env: Mapping[str, str], claim_dir: Path | None) -> None:
    """Send one event document (docs/notifications.md) with `notify.py send`; with `claim_dir`, only if
    nobody claimed that event there before (the node, the launcher, an earlier watcher). Nothing runs
    when `env` configures no channel. A failure is a warning: watching goes on."""
    if not channels(env):
        return
    args = ["send", "--event-file", "-", *(["--claim-dir", str(claim_dir)] if claim_dir else [])]
    code = run_notify(args, env, json.dumps(doc))
    if code not in (EXIT_OK, None):
        log.warning(
            "notification %s of job %s not sent: notify.py exited %d", doc["event"], doc["job_id"], code
        )


def notify_test(env: Mapping[str, str], environ: Mapping[str, str], repo: Path) -> int:
    """`notify.py test`: one test message to every channel `env` configures, one line per channel on
    stderr (secrets redacted by notify.py). The GitHub status goes on GIT_COMMIT from the environment,
    else on HEAD of `repo`. 0 when every channel answered, 1 otherwise (none configured included)."""
    import _git

    env = dict(env)
    commit = environ.get("GIT_COMMIT") or _git.head_commit(repo)
    if commit:
        env["GIT_COMMIT"] = commit
    code = run_notify(["test"], env)
    return EXIT_OK if code == EXIT_OK else EXIT_FAILED


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


def ended_text(what: str, state: str, reason: Any) -> str:
    """`job 3 (run r) ended FAILED: <reason>`: the last line `watch` prints for each job."""
    return f"{what} ended {state}{f': {reason}' if reason else ''}"


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


# --------------------------------------------------------------------------------------- sky


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
        notify = (
            notify_env(os.environ, args.env_file, REPO)
            if args.command in ("watch", "notify-test", "cancel")
            else {}
        )
        if args.command == "notify-test":  # no backend: it sends from here
            return notify_test(notify, os.environ, REPO)
        backend = resolve_backend(args.backend, dict(os.environ), args.env_file, REPO)
        if getattr(args, "interval", None) is not None and not args.interval >= 0:
            raise ConfigError(f"--interval: expected seconds >= 0, got {args.interval:g}")
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
            interval=getattr(args, "interval", None),
            notify_env=notify,
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
