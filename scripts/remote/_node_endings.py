"""What a node does about endings beyond its exit code: notifications, and a crash loop's self-cancel.

Both are optional extras: neither ever changes the node's exit code, and each is bounded in time
(NOTIFY_CAP_S, SELF_CANCEL_TIMEOUT_S + SELF_CANCEL_WAIT_S). docs/notifications.md,
docs/decisions/endings.md, docs/decisions/sky-self-cancel-findings.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import _contract
from _contract import EXIT_OK, NOTIFY_CLAIMS
from _files import os_error
from _job_command import as_int
from _proctree import Supervisor
from _sky_self import cancel_own_managed_job
from _supervisor_config import Config

log = logging.getLogger("run")

#: Keys that configure a notification channel (scripts/remote/notify.py); with none set, nothing runs.
NOTIFY_KEYS = ("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN")
#: Seconds notifications may delay the node's exit, in total (docs/notifications.md): the `started`
#: send still running at the end and the ending's send share it.
NOTIFY_CAP_S = 30.0
#: Seconds allowed for uv to start notify.py (its environment is built at setup).
UV_START_S = 3.0
#: Seconds node rank 0 waits for the other nodes' results before it calls an attempt a success.
PEERS_WAIT_S = 10.0
#: Seconds for the API server to accept a node's cancel of its own managed job, and to wait after it for
#: SkyPilot's teardown (its controller looks for cancel requests every 15 s).
SELF_CANCEL_TIMEOUT_S = 60.0
SELF_CANCEL_WAIT_S = 120.0


def peers_succeeded(
    results: Callable[[], Sequence[dict[str, object]]], attempt: int, num_nodes: int, sup: Supervisor
) -> bool:
    """True when every other node's result of `attempt` says exit 0; waits up to PEERS_WAIT_S for them
    (`results` reads every node's latest result). False as soon as one failed."""
    deadline = sup.clock() + PEERS_WAIT_S
    while True:
        done = {
            as_int(r.get("node_rank")): as_int(r.get("exit_code"))
            for r in results()
            if as_int(r.get("attempt")) == attempt
        }
        if any(c not in (None, EXIT_OK) for c in done.values()):
            return False
        if all(done.get(rank) == EXIT_OK for rank in range(1, num_nodes)):
            return True
        if sup.clock() >= deadline:
            return False
        sup.events.wait(0.5)


def event_document(
    cfg: Config, event: str, state: str, reason: str, cause: str | None, *, attempts: int, runtime_s: float
) -> dict[str, object]:
    """The event document notify.py sends (docs/notifications.md, "The event document")."""
    ident = cfg.identity
    local = (ident.cluster_info or {}).get("cloud") == "local"
    commit = cfg.env.get("GIT_COMMIT", "")
    return {
        "event": event,
        "run_id": cfg.run_id,
        "job_id": str(ident.managed_job_id),
        "backend": "local" if local else "sky",
        "state": state,
        "reason": reason,
        "cause": cause,
        "attempts": attempts,
        "recoveries": attempts - 1,
        "runtime_s": round(max(0.0, runtime_s), 3),
        "commit": commit if re.fullmatch(r"[0-9a-f]{40}", commit) else "",
        "logs_hint": f"make logs ID={ident.managed_job_id}" + ("" if local else " BACKEND=sky"),
        "time": time.time(),
    }


@dataclass
class Sending:
    """A notification on its way: notify.py's process, its event file, and when it must be done by
    (monotonic seconds)."""

    event: str
    job_id: int
    proc: subprocess.Popen[bytes]
    event_file: str
    deadline: float


def start_notify(
    cfg: Config, event: str, state: str, reason: str, cause: str | None, *, attempts: int, runtime_s: float,
    deadline: float,
) -> Sending | None:  # fmt: skip
    """Start sending one event through notify.py, when a channel is configured; None otherwise. The
    send must end by `deadline` (time.monotonic()): notify.py is told the time left (NOTIFY_TIMEOUT_S,
    less UV_START_S for uv to start it) and finish() kills it at the deadline. The claim folder
    `$DATA_DIR/$RUN_ID/notify/` keeps a watcher or the local backend from sending it again."""
    if not any(cfg.env.get(k) for k in NOTIFY_KEYS):
        return None
    try:
        notify_on = _contract.value(cfg.env, "NOTIFY_ON")
        chat = isinstance(notify_on, tuple) and event in notify_on
    except _contract.BadValue:
        chat = True  # notify.py names the bad value itself
    if not chat and not (cfg.env.get("GITHUB_TOKEN") and event in ("started", "ended")):
        return None  # no channel takes this event
    script = cfg.preflight_script.with_name("notify.py")
    if cfg.uv is None or not script.is_file():
        log.warning("notification %s not sent: needs uv and %s", event, script)
        return None
    doc = event_document(cfg, event, state, reason, cause, attempts=attempts, runtime_s=runtime_s)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=cfg.tmp_dir, delete=False) as f:
        json.dump(doc, f)
    argv = [cfg.uv, "run", "--quiet", "--script", str(script), "send", "--event-file", f.name]
    argv += ["--claim-dir", str(cfg.data_dir / cfg.run_id / NOTIFY_CLAIMS)]
    left = max(1.0, deadline - time.monotonic() - UV_START_S)
    env = {**cfg.env, "NOTIFY_TIMEOUT_S": f"{min(left, float(cfg.env.get('NOTIFY_TIMEOUT_S') or left)):.1f}"}
    try:
        proc = subprocess.Popen(argv, env=env, stdout=sys.stderr.fileno(), start_new_session=True)
    except OSError as exc:
        log.warning("notification %s not sent: %s", event, os_error(exc))
        os.unlink(f.name)
        return None
    return Sending(event, cfg.identity.managed_job_id, proc, f.name, deadline)


def finish(sending: Sending | None, deadline: float | None = None) -> None:
    """Wait for a send to end, until its own deadline or `deadline` if earlier; kill it then. Logs how
    it went (a failure is a warning, never an error)."""
    if sending is None:
        return
    until = sending.deadline if deadline is None else min(deadline, sending.deadline)
    try:
        code = sending.proc.wait(timeout=max(0.0, until - time.monotonic()))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(sending.proc.pid, signal.SIGKILL)
        sending.proc.wait()
        log.warning(
            "notification %s not sent in time (the node's exit waits %.0f s at most)",
            sending.event,
            NOTIFY_CAP_S,
        )
        code = None
    with contextlib.suppress(OSError):
        os.unlink(sending.event_file)
    if code == 0:
        log.info("notify: %s sent for job %s", sending.event, sending.job_id)  # jobs.py watch reads this line
    elif code is not None:
        log.warning("notification %s not sent: notify.py exited %d", sending.event, code)


def end_managed_job(cfg: Config, sup: Supervisor) -> None:
    """After a crash loop is declared, ask SkyPilot to cancel this managed job (exit 87 alone would
    spend max_restarts_on_errors on new nodes), then wait up to SELF_CANCEL_WAIT_S for SkyPilot's
    teardown (SIGTERM) so no restart starts before the cancel lands. Without API server access the
    node just exits 87; every later attempt then ends at once (see _policy.declared_crash_loop)."""
    ok, why = cancel_own_managed_job(cfg.env, timeout_s=SELF_CANCEL_TIMEOUT_S)
    if not ok:  # without API server access (the local backend, a server without service accounts): info
        level = logging.WARNING if cfg.env.get("SKYPILOT_API_SERVER_ENDPOINT") else logging.INFO
        log.log(level, "crash loop: managed job not cancelled from the node (%s); exit 87", why)
        return
    log.info("crash loop: %s; waiting up to %.0f s for SkyPilot's teardown", why, SELF_CANCEL_WAIT_S)
    deadline = sup.clock() + SELF_CANCEL_WAIT_S
    while not sup.events.signals and sup.clock() < deadline:
        sup.events.wait(deadline - sup.clock())
    if not sup.events.signals:
        log.warning(
            "managed job %d still running %.0f s after its cancel; exit 87",
            cfg.identity.managed_job_id,
            SELF_CANCEL_WAIT_S,
        )
