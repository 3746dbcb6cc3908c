"""The local backend: a task's `setup` and `run` on N emulated nodes on this machine.

Each node runs them as SkyPilot 0.14.1 runs them on a cloud node (docs/decisions/local-backend.md):
its own process tree (its own session; `_local_nodes.py`); SkyPilot's job script (`/bin/bash -i`,
`~/.bashrc` sourced, no `set -e`, from `~/sky_workdir`) with every variable SkyPilot sets for a managed
job's task (SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS on loopback, SKYPILOT_TASK_ID(S), ...; `_local_sky.py`)
plus the task's envs and secrets; its own HOME and its own copy of the repository at ~/sky_workdir
(`_local_disk.py`), so a job that assumes a shared file system fails here as it would in the cloud. uv's
cache and DATA_DIR (the bucket) are shared. The job follows SkyPilot's managed-job rules
(`_local_results.py`):

- success only if every node exits 0; when one node fails the others are killed and recorded as 137;
- job recovery: a failure whose node exit codes include one of `recover_on_exit_codes` restarts
  without counting; any other failure (setup included) spends `max_restarts_on_errors`;
- every restart is a fresh attempt on "fresh nodes": each node's HOME, workdir and TMPDIR are new.

Node logs go to `.skyops/runs/<run>/job-<id>/attempt<N>/`; `job.json` there records the state. The
nodes' disks are `~/.cache/skyops/nodes/<clone>/slot<k>/node<rank>/` (`_local_disk.nodes_dir`,
`node_slot`), removed after each attempt. One job at a time owns a run's `$DATA_DIR/$RUN_ID/`
(`_local_run.py`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _atomic
import _contract
import _progress
import _teardown
from _config import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, LaunchConfig
from _contract import REASON_CRASH_LOOP
from _job_state import JobState
from _local_disk import NodeDisk, check_job_received, copy_files, node_slot, nodes_dir, workdir_files
from _local_nodes import STOP_GRACE_EXTRA, Interrupt, NodeCommand, run_phase
from _local_results import (
    BUDGET_REASONS,
    cancel_cause,
    describe_result,
    first_cause,
    first_reason,
    job_recovery_settings,
    node_results,
    recovery_decision,
    show_failure,
)
from _local_run import allocate_job_id, check_data_dir, run_lock
from _local_sky import (
    SKY_BASH,
    Cluster,
    managed_task_id,
    node_env,
    sky_node_vars,
    sky_run_commands,
    sky_script,
    sky_setup_commands,
    sky_task_vars,
)

log = logging.getLogger("skyops.local")


def launch(cfg: LaunchConfig, task_yaml: str) -> int:
    """Run the task of `cfg` (after `prepare`) on `cfg.nodes` emulated nodes;
    block until done. `task_yaml` is the resolved task (secrets redacted), kept in the run directory.

    Returns 0 if the job succeeded, 1 if it failed (or its runtime budget ran out before it started),
    130 (SIGINT) or 128+N (signal N) if interrupted. Raises ConfigError (nothing launched) if DATA_DIR
    cannot be written, JOB is a file the nodes do not receive (git ignores it), or another job of the
    same run (same `$DATA_DIR/$RUN_ID/`) is still running.
    """
    files = workdir_files(cfg.repo, skip=[cfg.state_dir])
    check_job_received(cfg.job, files)  # before the DATA_DIR check, which creates DATA_DIR
    data_dir = Path(cfg.envs["DATA_DIR"])
    check_data_dir(data_dir)
    run_data = data_dir / cfg.envs.get("RUN_ID", cfg.run)
    state_dir = cfg.state_dir
    job_id: list[int] = []

    def job_dir() -> Path:
        job_id.append(allocate_job_id(state_dir))
        return state_dir / "runs" / cfg.run / f"job-{job_id[0]}"

    with run_lock(run_data, cfg.run, job_dir):
        return _launch_locked(cfg, task_yaml, state_dir, job_id[0], run_data, files)


#: Keys that configure a notification channel (scripts/remote/notify.py, docs/notifications.md).
NOTIFY_KEYS = ("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN")
#: Seconds a notification may take: notify.py caps all channels at 30 s, plus uv's start.
NOTIFY_CAP_S = 35.0


@dataclass
class _LocalJob:
    """One local managed job while its launcher runs: its cluster, job.json, and the signal queue."""

    cfg: LaunchConfig
    envs: dict[str, str]
    cluster: Cluster
    job_dir: Path
    run_data: Path
    status: dict[str, Any]
    grace: float
    events: queue.SimpleQueue
    interrupt: Interrupt
    #: The repository's files as launched (SkyPilot's uploaded workdir), and the folder of the node disks.
    snapshot: Path | None = None
    slot: Path | None = None
    #: What the launcher says while people wait (stderr only).
    progress: _progress.Progress = field(default_factory=lambda: _progress.Progress("", quiet=True))

    def save(self) -> None:
        _atomic.write_json(self.job_dir / "job.json", self.status)

    def node_env(self, rank: int, *, setup: bool, disk: NodeDisk) -> dict[str, str]:
        env = node_env(
            self.cfg.base_env,
            self.envs,
            self.cfg.secrets,
            self.cluster,
            rank,
            setup=setup,
            tmpdir=str(disk.tmp),
            home=str(disk.home),
        )
        env[_teardown.JOB_MARKER] = str(self.job_dir)
        env[_teardown.RUN_MARKER] = str(self.run_data)
        return env

    def command(self, phase: str, commands: str, rank: int, disk: NodeDisk) -> NodeCommand:
        """Node `rank`'s command for `phase` ("setup" or "run"), with SkyPilot's job scripts written into
        its disk: `run` is one script; `setup` is SkyPilot's detached setup, a script that runs the
        node's setup script (each with SkyPilot's prologue and its own exports). The scripts export
        the task's envs and SkyPilot's variables as SkyPilot does; the secrets reach the node through
        its process environment only, so that none is ever written to this machine's disk (SkyPilot
        exports them in its script on the cloud node)."""
        task_vars = sky_task_vars(self.envs, {}, self.cluster)
        before, after = sky_node_vars(self.cluster, rank, setup=phase == "setup")
        if phase == "setup":
            inner = disk.write_script("sky_setup", sky_script(commands, {**task_vars, **after}))
            script = disk.write_script(
                "sky_app_setup", sky_script(sky_setup_commands(inner), {**task_vars, **before})
            )
        else:
            exports = {**before, **task_vars, **after}
            script = disk.write_script("sky_app_run", sky_script(sky_run_commands(commands), exports))
        env = self.node_env(rank, setup=phase == "setup", disk=disk)
        return NodeCommand((*SKY_BASH, str(script)), env, disk.home)

    def end(self, state: JobState, reason: str | None, code: int, message: str, kind: str = "") -> int:
        """Record the job's end in job.json, tell the notification channels (`kind`: the short reason,
        e.g. job_failed), and say it in the launcher's last stderr line."""
        self.status.update(
            state=state,
            failure_reason=reason if state != JobState.SUCCEEDED else None,
            reason=reason,
            exit_code=code,
        )
        self.status["attempts"][-1].setdefault("ended_at", time.time())
        self.save()
        self.progress.close()
        self.notify("ended", state, kind or (reason or "completed").split(":")[0], reason)
        (log.info if code == EXIT_OK else log.error)("run %s: %s", self.cfg.run, message)
        return code

    def notify(self, event: str, state: str, reason: str, cause: str | None) -> None:
        """Send an event through the node side's notifier (scripts/remote/notify.py, run as a uv script,
        never imported), with the job's secrets and envs, as SkyPilot's controller side would see it.
        The claim folder it shares with the nodes keeps an ending from being sent twice. At most
        NOTIFY_CAP_S; never changes how the job ended."""
        env = {**self.cfg.base_env, **self.envs, **self.cfg.secrets}
        if not any(env.get(k) for k in NOTIFY_KEYS):
            return
        uv, script = (
            shutil.which("uv", path=env.get("PATH")),
            self.cfg.repo / "scripts" / "remote" / "notify.py",
        )
        if uv is None:
            log.warning("notification %s not sent: uv is not on PATH", event)
            return
        attempts = self.status["attempts"]
        started = attempts[0].get("started_at") if attempts else self.status["submitted_at"]
        commit = self.envs.get("GIT_COMMIT", "")
        doc = {
            "event": event, "run_id": self.cfg.run, "job_id": str(self.cluster.job_id), "backend": "local",
            "state": state, "reason": reason, "cause": cause, "attempts": len(attempts),
            "recoveries": self.status["recovery_count"], "runtime_s": round(max(0.0, time.time() - started), 3),
            "commit": commit if len(commit) == 40 else "", "logs_hint": f"make logs ID={self.cluster.job_id}",
            "time": time.time(),
        }  # fmt: skip
        argv = [uv, "run", "--quiet", "--script", str(script), "send", "--event-file", "-"]
        argv += ["--claim-dir", str(self.run_data / "notify")]
        try:
            done = subprocess.run(
                argv, input=json.dumps(doc), text=True, env=env, stdout=sys.stderr, timeout=NOTIFY_CAP_S
            )
            if done.returncode != 0:
                log.warning("notification %s not sent: notify.py exited %d", event, done.returncode)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("notification %s not sent: %s", event, type(exc).__name__)


def _new_job(cfg: LaunchConfig, task_yaml: str, state_dir: Path, job_id: int, run_data: Path) -> _LocalJob:
    """Job `job_id` of `cfg.run`: its directory with task.yaml (the resolved task, secrets redacted), its
    emulated cluster and its first job.json record (STARTING; not written yet). Raises OSError."""
    job_dir = state_dir / "runs" / cfg.run / f"job-{job_id}"
    job_dir.mkdir(parents=True)
    if cfg.print_id:
        print(cfg.run, flush=True)
    envs = dict(cfg.envs)
    if cfg.missing_secrets:  # matters only on the cloud, where the launch is refused: said once, with -v
        log.debug(
            "secret(s) %s not set (.env or environment): the local backend runs without them; --backend sky would refuse",
            ", ".join(cfg.missing_secrets),
        )
    (job_dir / "task.yaml").write_text(task_yaml)
    grace = _contract.value(envs, "GRACE")
    assert isinstance(grace, float)
    grace_s = grace
    cluster = Cluster(
        job_id=job_id,
        run=cfg.run,
        num_nodes=cfg.nodes,
        gpus_per_node=cfg.gpus or 0,
        task_id=managed_task_id(cfg.run, job_id, dt.datetime.now()),
        user=_user(),
    )
    status: dict[str, Any] = {
        "job_id": job_id,
        "run": cfg.run,
        "backend": "local",
        "state": JobState.STARTING,
        "launcher_pid": os.getpid(),
        "num_nodes": cfg.nodes,
        "recovery_count": 0,
        "attempts": [],
        "failure_reason": None,
        "reason": None,
        "submitted_at": time.time(),
        "grace_s": grace_s,
        "run_data": str(run_data),
    }
    return _LocalJob(
        cfg,
        envs,
        cluster,
        job_dir,
        run_data,
        status,
        grace_s + STOP_GRACE_EXTRA,
        queue.SimpleQueue(),
        Interrupt(),
        progress=_progress.Progress(cfg.run, quiet=cfg.quiet or cfg.follow),
    )


def _launch_locked(
    cfg: LaunchConfig, task_yaml: str, state_dir: Path, job_id: int, run_data: Path, files: Sequence[str]
) -> int:
    job = _new_job(cfg, task_yaml, state_dir, job_id, run_data)
    # From here on a signal is the job's to handle (it waits in the queue until the nodes start, then
    # stops them): installed before job.json exists, so a Ctrl-C is never mistaken for a killed launcher.
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: job.events.put(("signal", signum)))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    job.save()
    log.info(
        "run %s: local job %d on %d node(s); logs in %s",
        cfg.run,
        job_id,
        cfg.nodes,
        os.path.relpath(job.job_dir, Path.cwd()),
    )
    # The workdir as launched, as SkyPilot uploads it once per managed job: every attempt's nodes get
    # this, whatever changes in the repository meanwhile. Removed when the job ends (logs stay).
    job.snapshot = job.job_dir / "workdir"
    try:
        started = time.monotonic()
        size = copy_files(cfg.repo, files, job.snapshot)
        log.debug(
            "workdir: %d files, %.1f MB copied in %.3f s", len(files), size / 1e6, time.monotonic() - started
        )
        with node_slot(nodes_dir(cfg.repo, cfg.base_env), job.job_dir) as job.slot:
            return _recovery_loop(job)
    finally:
        shutil.rmtree(job.snapshot, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_attempt(job: _LocalJob, attempt_dir: Path, record: dict[str, Any]) -> tuple[str, list[int] | None]:
    """Setup, then run, on every node, each on a fresh disk (`NodeDisk`: home, ~/sky_workdir, TMPDIR),
    removed at the end: (the last phase run, its node exit codes or None if interrupted)."""
    cfg, n = job.cfg, job.cluster.num_nodes
    assert job.slot is not None and job.snapshot is not None
    disks = [NodeDisk(job.slot / f"node{rank}") for rank in range(n)]
    codes: list[int] | None = []
    phase = "run"
    try:
        started = time.monotonic()
        for disk in disks:
            disk.create(job.snapshot)
        log.debug("%d fresh node disk(s) in %s in %.3f s", n, job.slot, time.monotonic() - started)
        for phase, commands in (("setup", cfg.task.config.get("setup")), ("run", cfg.task.config["run"])):
            if not commands:
                continue
            codes = _run_phase(job, phase, commands, disks, attempt_dir, record)
            if codes is None or any(codes):
                break
    finally:
        _end_attempt(job, disks, codes, record)
    return phase, codes


def _run_phase(
    job: _LocalJob,
    phase: str,
    commands: str,
    disks: Sequence[NodeDisk],
    attempt_dir: Path,
    record: dict[str, Any],
) -> list[int] | None:
    """`phase` ("setup" or "run") on every node of the attempt, its state in job.json: the node exit
    codes (also in `record`), or None if interrupted (`run_phase`)."""
    n = job.cluster.num_nodes

    def record_pids(pids: list[int]) -> None:
        """Node process-group leaders in job.json (informational: cancel finds processes by marker)."""
        job.status["node_pids"] = pids
        job.save()

    def stopping() -> None:
        job.status["state"] = JobState.CANCELLING
        job.save()
        job.progress.phase(
            f"stopping {n} node(s): each process gets GRACE={job.grace - STOP_GRACE_EXTRA:g} s"
        )

    job.status["state"] = JobState.STARTING if phase == "setup" else JobState.RUNNING
    job.save()
    what = "setup" if phase == "setup" else "running"
    job.progress.phase(
        f"attempt {record['attempt']}: {what} on {n} node(s)",
        attempt_dir / f"{'setup-' if phase == 'setup' else ''}node0.log",
    )
    # Setup runs on every node at once, as on SkyPilot's nodes: each node syncs its own uv
    # environments (they are keyed by the path of the node's own copy of each script).
    node_commands = [job.command(phase, commands, rank, disks[rank]) for rank in range(n)]
    logs = [attempt_dir / (f"setup-node{r}.log" if phase == "setup" else f"node{r}.log") for r in range(n)]
    codes = run_phase(
        node_commands, logs, job.cfg.follow, job.grace, job.events, job.interrupt,
        started=record_pids, stopping=stopping, marker=str(job.job_dir), tick=job.progress.tick,
    )  # fmt: skip
    record[f"{phase}_exit_codes"] = codes
    return codes


def _end_attempt(
    job: _LocalJob, disks: Sequence[NodeDisk], codes: list[int] | None, record: dict[str, Any]
) -> None:
    """What an attempt leaves is gone at its end, as its nodes are on SkyPilot: the processes the nodes'
    scripts left running (unless `codes` is None: an interrupt stopped them all already), then the
    node disks. Records the attempt's `ended_at`."""
    # What the nodes' scripts left running (a daemon started in `setup`, a background `&`) dies with
    # the node on SkyPilot: here, with the attempt, and with the job's GRACE like every ending.
    if codes is not None and (left := _teardown.marked(_teardown.JOB_MARKER, str(job.job_dir))):
        log.warning(
            "run %s: %d process(es) outlived the nodes' scripts: stopping them", job.cfg.run, len(left)
        )
        _teardown.stop(
            lambda: _teardown.marked(_teardown.JOB_MARKER, str(job.job_dir)), job.grace - STOP_GRACE_EXTRA
        )
    record["ended_at"] = time.time()
    # "Fresh nodes" next time: node-local disk is lost. In parallel: a home with a torch
    # environment is some 17,000 files.
    removers = [threading.Thread(target=disk.remove) for disk in disks]
    for remover in removers:
        remover.start()
    for remover in removers:
        remover.join()


def _succeeded(job: _LocalJob, results: Sequence[Mapping[str, Any]], attempt: int) -> int:
    """End a job whose every node exited 0: SUCCEEDED, or stopped by a runtime budget (BUDGET_REASONS
    says the exit code: 1 when the job itself never ran)."""
    budget = next((r for r in results if r.get("reason") in BUDGET_REASONS), None)
    if budget is None:
        return job.end(JobState.SUCCEEDED, None, EXIT_OK, f"SUCCEEDED (attempt {attempt})")
    reason = f"{budget['reason']}: {budget.get('cause') or 'the runtime budget ran out'}"
    return job.end(
        JobState.SUCCEEDED,
        reason,
        BUDGET_REASONS[budget["reason"]],
        f"SUCCEEDED, stopped by its budget: {reason}",
    )


def _recovery_loop(job: _LocalJob) -> int:
    """Attempts until the job ends (SkyPilot's managed-job rules, see the module docstring): returns the
    launcher's exit code, see `launch`."""
    cfg, status = job.cfg, job.status
    max_restarts, recover_codes = job_recovery_settings(cfg.task.config.get("resources"), cfg.max_restarts)
    restarts_on_errors = 0
    attempt = 0
    while True:
        attempt += 1
        attempt_dir = job.job_dir / f"attempt{attempt}"
        attempt_dir.mkdir()
        record: dict[str, Any] = {"attempt": attempt, "started_at": time.time()}
        status["attempts"].append(record)
        phase, codes = _run_attempt(job, attempt_dir, record)
        results = node_results(job.run_data, job.cluster.num_nodes, record["started_at"])
        why = [describe_result(r) for r in results]
        record["node_reasons"] = why
        if codes is None:
            cause = cancel_cause(job.job_dir, job.interrupt.signum)
            code = EXIT_INTERRUPTED if job.interrupt.signum == signal.SIGINT else 128 + job.interrupt.signum
            return job.end(
                JobState.CANCELLED, f"cancelled: {cause}", code, f"CANCELLED ({cause}); every node stopped"
            )
        if not any(codes):
            return _succeeded(job, results, attempt)
        failed = JobState.FAILED_SETUP if phase == "setup" else JobState.FAILED
        show_failure(cfg.run, attempt_dir, phase, codes)
        first = first_cause(results)
        detail = f"{phase} failed with node exit codes {codes}" + (f": {first}" if first else "")
        if any(r.get("reason") == REASON_CRASH_LOOP for r in results):
            # A node that declares a crash loop cancels its own managed job through SkyPilot's API server
            # (run.py, docs/decisions/endings.md); the local backend does what SkyPilot then does.
            reason = (
                f"crash_loop: {detail}; the managed job is cancelled, as a node on SkyPilot cancels its own"
                " (no further attempt)"
            )
            return job.end(JobState.CANCELLED, reason, EXIT_FAILED, f"CANCELLED: {reason}")
        decision, restarts_on_errors = recovery_decision(
            codes, recover_codes, restarts_on_errors, max_restarts
        )
        if decision == "fail":
            reason = f"{detail}; max_restarts_on_errors={max_restarts} spent"
            return job.end(
                failed, reason, EXIT_FAILED, f"{failed} ({reason})", first_reason(results) or "failed"
            )
        status["recovery_count"] += 1
        status["state"] = JobState.RECOVERING
        status["reason"] = detail
        job.save()
        job.notify("attempt_ended", JobState.RECOVERING, first_reason(results) or "failed", detail)
        if decision == "recover":
            log.warning(
                "run %s: %s; a recover_on_exit_codes code: recovering onto fresh nodes (not counted)",
                cfg.run,
                detail,
            )
        else:
            log.warning("run %s: %s; restart %d of %d", cfg.run, detail, restarts_on_errors, max_restarts)


def _user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"
