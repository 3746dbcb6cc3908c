#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["psutil==7.2.2"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Node-side supervisor: run the job, watch it, tear its whole tree down, exit with a code SkyPilot acts on.

Usage: scripts/remote/run.py [--heartbeat-timeout S] [--startup-grace S] [--max-runtime-hours H]
                             [--grace S] [--data-dir DIR] [--run-id ID] [options] -- CMD [ARGS...]

One invocation is one *attempt* of the managed job on this node. It reads the attempt ledger
(`$DATA_DIR/$RUN_ID/supervisor/ledger-<managed_job_id>-<task_idx>.jsonl`), optionally runs the NCCL
preflight, then runs CMD: a `.py` file under torchrun when the world size is above 1 (in its own uv
environment when it has a PEP 723 block), anything else as is. CMD runs in its own session with
`HEARTBEAT_FILE` and `SKYOPS_ATTEMPT` set. The supervisor waits on events (SIGCHLD, SIGTERM, SIGINT,
the next monitor deadline), never on a fixed poll. Every way out ends with a teardown of every
descendant (also those in their own sessions): SIGTERM, `--grace` seconds, SIGKILL, reap.

Every node writes `result-node<rank>.json` at the end of its attempt. At the start of the next one
every node folds the other nodes' results into the ledger's attempts (rank 0 also records them), so an
attempt's outcome is its most significant node result (bad node > failure > cancel or preemption):
a crash loop on any node is caught although SkyPilot then stops the others (rank 0 exits 143).

Configuration precedence: flags > process environment (the job.yaml envs) > docs/contract.md defaults.

Exit codes (docs/contract.md; constants in _contract.py), each with a reason string:
  0    completed, max_runtime, max_runtime_before_job
  N    job_failed: the job's own non-zero code (128+S when a signal S killed it); under torchrun, the
       first failed worker's (torchrun itself exits 1 for any worker failure)
  1    job_failed_reserved_code (the job itself exited 86 or 87), recover_cap
  1    data_dir_unwritable; preflight_error
  2    bad input (one line on stderr naming the flag or key; no result written)
  86   heartbeat_timeout, preflight_failed (bad node: job.yaml recover_on_exit_codes)
  87   crash_loop
  130  sigint;  143  sigterm

Why a ledger at all: docs/decisions/restart-tracking.md. How endings work: docs/decisions/endings.md.

The pieces, one concern each: _supervisor_config (flags and env, read once), _job_command (the job's
argv), _heartbeat (staleness), _ledger (durable records), _policy (what an outcome means), _proctree
(processes, events, teardown), _node_endings (notifications, self-cancel), _job_env (the job's
interpreter and environment), _preflight (the NCCL preflight). This file is the attempt.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from _contract import (
    EXIT_BAD_INPUT,
    EXIT_CRASH_LOOP,
    EXIT_FAILURE,
    EXIT_OK,
    REASON_CRASH_LOOP,
    REASON_DATA_DIR,
    REASON_MAX_RUNTIME,
)
from _heartbeat import HeartbeatMonitor, heartbeat_mtime
from _job_command import JobError, Kind, as_int, build_job_command, classify, worker_failure
from _job_env import JobEnv
from _ledger import (
    LEDGER_LOST,
    append_records,
    full_disk_note,
    ledger_path,
    read_ledger,
    result_path,
    unwritable,
    write_json,
)
from _node_endings import NOTIFY_CAP_S, Sending, end_managed_job, finish, peers_succeeded, start_notify
from _policy import Attempt, Decision, as_float, attempt_number, decide, declared_crash_loop, summarize
from _preflight import preflight
from _proctree import Events, Phase, Supervisor
from _supervisor_config import BadInput, Config, load_config

log = logging.getLogger("run")
DESCRIPTION = (__doc__ or "").split("\n\n")[0]

#: Seconds between the ledger's `alive` records: bounds the runtime lost from the budget when an
#: attempt dies without writing its `end` record (a VM that vanishes on preemption).
ALIVE_INTERVAL_S = 300.0


class AttemptRunner:
    """One attempt on this node: ledger in, preflight, job, decision, ledger and result out."""

    def __init__(self, cfg: Config, sup: Supervisor) -> None:
        self.cfg = cfg
        self.sup = sup
        ident = cfg.identity
        self.writer = ident.node_rank == 0
        self.ledger = ledger_path(cfg.data_dir, cfg.run_id, ident.managed_job_id, ident.task_index)
        self.number = 0
        self.start = 0.0
        self.start_wall = 0.0
        #: Monotonic time the runtime budget runs out at (None: no budget), set when the attempt starts.
        self.budget_end: float | None = None
        #: The job's and the preflight's interpreters and environments.
        self.job_env = JobEnv(cfg)
        #: What the attempt is doing now, for people: "preparing the job's environment", ...
        self.phase = "starting"
        #: The `started` notification, sent in the background (attempt 1, node rank 0).
        self.started: Sending | None = None
        #: The job itself was started in this attempt.
        self.job_started = False
        #: Records not yet in the ledger: a failed write (a full or flaky bucket mount) is retried with
        #: the next record, so the ledger never drops a record it accepted.
        self._pending: list[dict[str, object]] = []

    def _record(self, event: str, **fields: object) -> bool:
        """Add a record to the ledger (node rank 0 only), with any earlier ones that failed to write;
        True when every record so far is written."""
        if not self.writer:
            return True
        self._pending.append({"event": event, "attempt": self.number, "time": time.time(), **fields})
        if append_records(self.ledger, self._pending):
            self._pending.clear()
            return True
        return False

    def _results(self) -> list[dict[str, object]]:
        """Every node's latest `result-node<rank>.json` of this managed job and task (unreadable ones
        and those of other managed jobs skipped)."""
        cfg, ident = self.cfg, self.cfg.identity
        try:
            paths = sorted((cfg.data_dir / cfg.run_id / "supervisor").glob("result-node*.json"))
        except OSError:
            return []
        results = []
        for path in paths:
            try:
                res = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(res, dict) and (res.get("managed_job_id"), res.get("task_index")) == (
                ident.managed_job_id,
                ident.task_index,
            ):
                results.append(res)
        return results

    def _history(self) -> tuple[list[Attempt], int]:
        """The earlier attempts, each with its outcome over all nodes, and this attempt's number.

        Every node folds the other nodes' results (`result-node<rank>.json`, rank > 0; rank 0's own
        outcome is its `end` record) into the attempts they belong to, so a failure on any node counts
        for the crash-loop guard and the recover cap although SkyPilot then stops rank 0 (143). The
        writer also records them (`node_result`) and closes attempts that never recorded an end."""
        ident = self.cfg.identity
        records = read_ledger(self.ledger)
        attempts = summarize(records)
        results = self._results()
        own_last = next(
            (as_int(r.get("attempt")) for r in results if as_int(r.get("node_rank")) == ident.node_rank), None
        )
        number = attempt_number(attempts, writer=self.writer, own_last=own_last, now_wall=time.time())
        known = {a.number for a in attempts}
        folded = {(r.get("attempt"), r.get("node_rank")) for r in records if r["event"] == "node_result"}
        extra: list[dict[str, object]] = []
        for res in results:
            done, rank = as_int(res.get("attempt")), as_int(res.get("node_rank"))
            if not rank or done is None or done >= number or done not in known or (done, rank) in folded:
                continue
            extra.append(
                {
                    "event": "node_result",
                    "attempt": done,
                    "node_rank": rank,
                    "exit_code": as_int(res.get("exit_code")),
                    "reason": res.get("reason"),
                    "job_exit_code": as_int(res.get("job_exit_code")),
                    "job_started": res.get("job_started", True) is not False,
                    "runtime_s": as_float(res.get("runtime_s")),
                    "cause": res.get("cause"),
                }
            )
            folded.add((done, rank))
        if self.writer:
            for a in attempts:
                if not a.ended:
                    extra.append(
                        {
                            "event": "end",
                            "attempt": a.number,
                            "runtime_s": a.runtime_s,
                            "exit_code": None,
                            "reason": LEDGER_LOST,
                        }
                    )
            if extra:
                append_records(self.ledger, [{**rec, "time": time.time()} for rec in extra])
        prior = [a for a in summarize([*records, *extra]) if a.number < number]
        if prior and prior[-1].reason is not None:
            log.info("previous %s", prior[-1].describe())
        return prior, number

    def run(self) -> int:
        lim, ident = self.cfg.limits, self.cfg.identity
        prior, self.number = self._history()
        self.start, self.start_wall = self.sup.clock(), time.time()
        used = sum(a.runtime_s for a in prior)
        self.budget_end = self.start + (lim.max_runtime_s - used) if lim.max_runtime_s > 0 else None
        self._record_start()
        log.info("attempt %d on node %d (runtime used so far %.0f s)", self.number, ident.node_rank, used)
        phase = self._gate(prior)
        if phase is None:
            if self.number == 1 and self.writer:  # in the background: the job does not wait for it
                self.started = start_notify(
                    self.cfg, "started", "STARTING", "", None, attempts=1, runtime_s=0.0,
                    deadline=self.sup.clock() + NOTIFY_CAP_S,
                )  # fmt: skip
                if self.started is not None:
                    self.sup.exclude(self.started.proc.pid)
            phase = self._preflight_then_job()
        runtime = self.sup.clock() - self.start
        code, reason, cause = self._decide(phase, prior, runtime)
        self._write_end(phase, code, reason, cause, runtime)
        log.info(
            "summary: node=%d attempt=%d reason=%s exit_code=%d runtime_s=%.1f%s",
            ident.node_rank,
            self.number,
            reason,
            code,
            runtime,
            f" cause: {cause}" if cause else "",
        )
        self._notify_end(code, reason, cause, used + runtime)
        if code == EXIT_CRASH_LOOP:
            end_managed_job(self.cfg, self.sup)
        return code

    def _record_start(self) -> None:
        """The ledger's `start` record of this attempt: where it runs, and what."""
        cfg, ident = self.cfg, self.cfg.identity
        self._record(
            "start",
            node_rank=ident.node_rank,
            num_nodes=ident.num_nodes,
            cluster=dict(ident.cluster_info) if ident.cluster_info else None,
            managed_job_id=ident.managed_job_id,
            task_index=ident.task_index,
            task_id=ident.task_id,
            hostname=socket.gethostname(),
            command=list(cfg.command),
        )

    def _decide(self, phase: Phase, prior: Sequence[Attempt], runtime: float) -> Decision:
        """The attempt's exit code, reason and cause (_policy.decide), from how its last `phase` ended
        and its `runtime` in seconds."""
        cfg, lim = self.cfg, self.cfg.limits
        current = Attempt(self.number, self.start_wall, runtime, node_rank=cfg.identity.node_rank)
        job_started = self.job_started or any(a.job_started for a in prior)
        detail = phase.detail
        if phase.stop == REASON_MAX_RUNTIME:
            detail = self._budget_note(lim.max_runtime_s, job_started)
        elif phase.stop is None and phase.code:
            detail = "; ".join(filter(None, [detail, full_disk_note(cfg.data_dir)])) or None
        return decide(
            phase.stop,
            phase.code,
            prior=prior,
            current=current,
            limits=lim,
            now_wall=time.time(),
            detail=detail,
            job_started=job_started,
        )

    def _write_end(self, phase: Phase, code: int, reason: str, cause: str | None, runtime: float) -> None:
        """The ledger's `end` record of this attempt and this node's `result-node<rank>.json` (which
        names the ledger's missing records, if any)."""
        cfg, ident = self.cfg, self.cfg.identity
        result: dict[str, object] = {
            "run_id": cfg.run_id,
            "managed_job_id": ident.managed_job_id,
            "task_index": ident.task_index,
            "node_rank": ident.node_rank,
            "num_nodes": ident.num_nodes,
            "attempt": self.number,
            "exit_code": code,
            "reason": reason,
            "cause": cause,
            "job_exit_code": phase.code,
            "job_started": self.job_started,
            "runtime_s": round(runtime, 3),
            "start_time": self.start_wall,
            "end_time": time.time(),
        }
        recorded = self._record(
            "end",
            runtime_s=round(runtime, 3),
            exit_code=code,
            reason=reason,
            cause=cause,
            job_exit_code=phase.code,
            job_started=self.job_started,
            num_nodes=ident.num_nodes,
            cluster=dict(ident.cluster_info) if ident.cluster_info else None,
        )
        if not recorded:
            result["ledger_error"] = f"the ledger {self.ledger} is missing {len(self._pending)} record(s)"
        write_json(result_path(cfg.data_dir, cfg.run_id, ident.node_rank), result)

    def _notify_end(self, code: int, reason: str, cause: str | None, total_runtime_s: float) -> None:
        """Node rank 0 tells the endings it knows for sure (docs/notifications.md): a success (every
        node exited 0: their results are read back), a runtime budget, a crash loop. A cancel or
        preemption (143/130), a bad node and the job's own failures are told by whoever sees the
        managed job's state (the local backend, `jobs.py watch`), which then knows whether it goes on."""
        exit_by = self.sup.clock() + NOTIFY_CAP_S  # every send together delays the exit by this at most
        finish(self.started, exit_by)
        if not self.writer:
            return
        state = None
        if code == EXIT_OK and peers_succeeded(
            self._results, self.number, self.cfg.identity.num_nodes, self.sup
        ):
            state = "SUCCEEDED"
        elif code == EXIT_CRASH_LOOP:
            state = "FAILED"
        if state is not None:
            sending = start_notify(
                self.cfg, "ended", state, reason, cause, attempts=self.number, runtime_s=total_runtime_s,
                deadline=exit_by,
            )  # fmt: skip
            finish(sending)

    def _gate(self, prior: Sequence[Attempt]) -> Phase | None:
        """Checked before any paid work: a Phase to end the attempt with at once, or None to go on."""
        cfg = self.cfg
        why = unwritable(cfg.data_dir / cfg.run_id / "supervisor")
        if why is not None:
            log.error("DATA_DIR cannot be written: %s", why)
            return Phase(REASON_DATA_DIR, None, f"DATA_DIR is not writable: {why}")
        loop = declared_crash_loop(prior, cfg.limits, time.time())
        if loop is not None:
            log.error("crash loop: %s", loop)
            return Phase(REASON_CRASH_LOOP, None, loop)
        if self.budget_end is not None and self.budget_end <= self.start:
            log.warning(
                "the runtime budget (%.0f s) is spent; not starting the job", cfg.limits.max_runtime_s
            )
            return Phase(REASON_MAX_RUNTIME, None)
        return None

    def _budget_note(self, budget_s: float, job_started: bool) -> str:
        """E.g. `runtime budget MAX_RUNTIME_HOURS=0.002 (7 s over all attempts) ran out in the NCCL
        preflight, before the job ever started`."""
        where = "while the job ran" if self.job_started else self.phase
        if not job_started:
            where += ", before the job ever started"
        return (
            f"runtime budget MAX_RUNTIME_HOURS={budget_s / 3600:g} ({budget_s:.0f} s over all attempts)"
            f" ran out {where}"
        )

    def _tick(self) -> tuple[float, Callable[[], object]] | None:
        if not self.writer:
            return None
        return ALIVE_INTERVAL_S, lambda: self._record(
            "alive", runtime_s=round(self.sup.clock() - self.start, 3)
        )

    def _step(
        self,
        what: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        deadlines: Sequence[tuple[float | None, str]] = (),
        stdout: int | None = None,
        *,
        heartbeat: tuple[HeartbeatMonitor, Path] | None = None,
    ) -> Phase:
        """Run `argv` as a step of the attempt (a _job_env.Step): `what` becomes the attempt's phase,
        the runtime budget its first deadline, the ledger's `alive` records its tick; `heartbeat` as
        Supervisor.run's."""
        self.phase = what
        return self.sup.run(
            argv,
            env,
            deadlines=[(self.budget_end, REASON_MAX_RUNTIME), *deadlines],
            heartbeat=heartbeat,
            tick=self._tick(),
            stdout=stdout,
        )

    def _preflight_then_job(self) -> Phase:
        cfg, lim = self.cfg, self.cfg.limits
        try:
            job = classify(cfg.command, Path.cwd())
        except JobError as exc:
            log.error("%s", exc)
            return Phase(None, EXIT_FAILURE, str(exc))
        if cfg.preflight:
            phase = preflight(cfg, self.job_env, self._step, attempt=self.number, clock=self.sup.clock)
            if phase is not None:
                return phase
        python, failed = self.job_env.python(job, self._step)
        if failed is not None:
            return failed
        own_env = job.kind in (Kind.SCRIPT, Kind.PROJECT) and python is not None
        venv = Path(python).parent.parent if own_env and python is not None else None
        attempt_dir = Path(tempfile.mkdtemp(prefix=f"skyops-attempt-{self.number}-", dir=cfg.tmp_dir))
        hb_file = attempt_dir / "heartbeat"
        failure_file = attempt_dir / "torchrun-failure.json"
        torchrun = cfg.dist.world_size > 1 and python is not None and self.job_env.has_torch(python)
        if cfg.dist.world_size > 1 and python is not None and not torchrun:
            log.info("no torch in the job's environment: one process on this node, without torchrun")
        log.info(
            "job %s; interpreter %s%s",
            job.describe(),
            python or "none (run as is)",
            f", under torchrun ({cfg.dist.nproc_per_node} per node)" if torchrun else "",
        )
        argv = build_job_command(job, cfg.dist, python, failure_file, torchrun=torchrun)
        self.job_started = True
        try:
            monitor = HeartbeatMonitor(
                timeout_s=lim.heartbeat_timeout_s,
                startup_grace_s=lim.startup_grace_s,
                start=self.sup.clock(),
                start_wall_ns=self.sup.wall_ns(),
                baseline_mtime_ns=heartbeat_mtime(hb_file),
            )
            phase = self._step(
                "while the job ran",
                argv,
                self.job_env.env(self.number, venv, HEARTBEAT_FILE=str(hb_file)),
                heartbeat=(monitor, hb_file),
            )
            # torchrun exits 1 for any worker failure: the job's own code is the first failed worker's.
            failure = worker_failure(failure_file) if phase.stop is None and phase.code else None
            if failure is not None:
                log.error("torchrun: %s (torchrun itself exited %s)", failure.describe(), phase.code)
                return Phase(None, failure.code, failure.describe())
            return phase
        finally:
            shutil.rmtree(attempt_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = args[: args.index("--")] if "--" in args else args
    verbose = "-v" in opts or "--verbose" in opts
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="run.py: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    here = Path(__file__).resolve().parent
    try:
        cfg = load_config(
            args, os.environ, tmp_dir=Path(tempfile.gettempdir()), here=here, description=DESCRIPTION
        )
    except BadInput as exc:
        if verbose:
            log.exception("bad input")
        print(f"run.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    with Events() as events:
        sup = Supervisor(events, cfg.limits.grace_s)
        try:
            return AttemptRunner(cfg, sup).run()
        except Exception as exc:
            log.error("internal error: %s", exc, exc_info=cfg.verbose)
            sup.teardown()
            return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
