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
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import _config
import _env_file
from _config import EXIT_BAD_INPUT, REPO, ConfigError, JobsConfig, OneLineParser
from _jobs_local import run_local
from _jobs_notify import notify_env, notify_test
from _jobs_sky import run_sky

BACKENDS = ("local", "sky")


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
        path = _env_file.env_file_path(env_file, repo)
        if path is not None:
            for entry in _env_file.read_env_file(path):
                if entry.key == "SKYOPS_BACKEND" and entry.value is not None:
                    value, where = entry.value, f"{path}:{entry.line}"
    if value is None:
        return "local"
    if value not in BACKENDS:
        raise ConfigError(f"{where}: expected one of {', '.join(BACKENDS)}, got {value!r}")
    return value


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
