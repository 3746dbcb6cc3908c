"""Notifications from `jobs.py`: the endings `watch` sends that no node sends, and `notify-test`. Both
run the node side's scripts/remote/notify.py as a uv script (never imported: the laptop side imports
only scripts/remote/_contract.py), with the channel secrets and settings resolved as launch.py
resolves them (`notify_env`); `watch` polls each backend every WATCH_INTERVAL_S.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import _config
import _env_file
from _config import EXIT_FAILED, EXIT_OK, REPO

log = logging.getLogger("skyops.jobs")


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
    path = _env_file.env_file_path(env_file, repo)
    entries = _env_file.read_env_file(path) if path else []
    defaults: dict[str, str | None] = {}
    if (repo / "job.yaml").is_file():
        task = _config.load_task_file(repo / "job.yaml")
        defaults = {**task.envs, **task.secrets}
    resolved = _env_file.resolve_values(
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
