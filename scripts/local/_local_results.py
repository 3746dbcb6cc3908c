"""How an attempt of a local job ended, and what comes next: the supervisors' results
(`node_results`, from `$DATA_DIR/$RUN_ID/supervisor/`), their cause in one line (`first_cause`),
the failed node's last log lines (`show_failure`), how the job was cancelled (`cancel_cause`), and
SkyPilot's recovery rule (`recovery_decision`, `job_recovery_settings`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from _config import EXIT_FAILED, EXIT_OK
from _contract import REASON_MAX_RUNTIME, REASON_MAX_RUNTIME_BEFORE_JOB
from _local_nodes import KILLED_PEER_CODE
from _local_sky import BASH_I_NOISE

log = logging.getLogger("skyops.local")


def recovery_decision(
    exit_codes: Sequence[int], recover_codes: Sequence[int], restarts_on_errors: int, max_restarts: int
) -> tuple[str, int]:
    """SkyPilot's rule after a failed attempt (sky/jobs/recovery_strategy.py should_restart_on_failure).

    Returns (decision, restarts_on_errors after it): decision is "recover" (uncounted: a node exit code
    is in `recover_codes`), "restart" (counted, within `max_restarts`) or "fail".
    """
    if any(code in recover_codes for code in exit_codes):
        return "recover", restarts_on_errors
    restarts_on_errors += 1
    if restarts_on_errors <= max_restarts:
        return "restart", restarts_on_errors
    return "fail", restarts_on_errors


def job_recovery_settings(
    resources: Mapping[str, Any] | None, max_restarts: int | None
) -> tuple[int, list[int]]:
    """(max_restarts_on_errors, recover_on_exit_codes) from job.yaml's resources.job_recovery."""
    recovery = (resources or {}).get("job_recovery") or {}
    if not isinstance(recovery, dict):
        recovery = {}
    limit = int(recovery.get("max_restarts_on_errors") or 0) if max_restarts is None else max_restarts
    codes = recovery.get("recover_on_exit_codes") or []
    if isinstance(codes, int):
        codes = [codes]
    return limit, [int(c) for c in codes]


#: Node-side reasons (scripts/remote/_contract.py) that end a job that exited 0 everywhere, with what
#: the launcher says and exits: a budget ending is a success only when the job itself ever ran.
BUDGET_REASONS = {REASON_MAX_RUNTIME: EXIT_OK, REASON_MAX_RUNTIME_BEFORE_JOB: EXIT_FAILED}
#: How a signal to the launcher is described in job.json and the status table.
SIGNAL_CAUSES = {
    signal.SIGINT: "interrupted (SIGINT, Ctrl-C)",
    signal.SIGTERM: "SIGTERM to the launcher",
    signal.SIGHUP: "SIGHUP to the launcher (terminal closed)",
}
#: Written by `jobs.py cancel` into the job directory before it signals the launcher.
CANCEL_REQUEST = "cancel-request.json"


def cancel_cause(job_dir: Path, signum: int) -> str:
    """How the job was cancelled, for job.json and the launcher's last line: `jobs.py cancel` says so in
    CANCEL_REQUEST before it signals the launcher; otherwise the signal the launcher got."""
    with contextlib.suppress(OSError, ValueError):
        request = json.loads((job_dir / CANCEL_REQUEST).read_text())
        return str(request.get("by") or "jobs.py cancel")
    return SIGNAL_CAUSES.get(signal.Signals(signum), signal.Signals(signum).name) if signum else "stopped"


def node_results(run_data: Path, num_nodes: int, since: float) -> list[dict[str, Any]]:
    """The supervisors' end-of-attempt results written since `since` (Unix seconds), from
    `$DATA_DIR/$RUN_ID/supervisor/result-node<rank>.json` (docs/contract.md); unreadable ones skipped."""
    results = []
    for rank in range(num_nodes):
        path = run_data / "supervisor" / f"result-node{rank}.json"
        with contextlib.suppress(OSError, ValueError):
            if path.stat().st_mtime >= since:
                result = json.loads(path.read_text())
                if isinstance(result, dict) and "reason" in result:
                    results.append({**result, "node_rank": rank})
    return results


def describe_result(result: Mapping[str, Any]) -> str:
    """E.g. `node1: job_failed (exit 3): worker rank 1 (local rank 0) exited 3`."""
    cause = f": {result['cause']}" if result.get("cause") else ""
    return f"node{result['node_rank']}: {result['reason']} (exit {result.get('exit_code')}){cause}"


def first_failure(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The attempt's cause: the failed node that ended earliest (a bad node before any other failure);
    None when no node failed (only cancels, or no results)."""
    failed = [r for r in results if r.get("exit_code") not in (0, 130, 143, None)]
    return min(failed, key=lambda r: (r.get("exit_code") != 86, r.get("end_time") or 0), default=None)


def first_reason(results: Sequence[Mapping[str, Any]]) -> str | None:
    """The short reason (e.g. job_failed) of the attempt's cause, see first_failure."""
    first = first_failure(results)
    return None if first is None else str(first.get("reason"))


def first_cause(results: Sequence[Mapping[str, Any]]) -> str | None:
    """The attempt's cause first, then its consequences: the failed node that ended earliest (a bad
    node before any other failure), then the nodes stopped because of it. None without results."""
    stopped = [r for r in results if r.get("exit_code") in (130, 143)]
    first = first_failure(results)
    if first is None:
        return "; ".join(describe_result(r) for r in results) or None
    text = describe_result(first)
    if stopped:
        ranks = ", ".join(f"node{r['node_rank']}" for r in stopped)
        text += f"; then {ranks} stopped (SIGTERM) because node{first['node_rank']} failed"
    return text


def show_failure(run: str, attempt_dir: Path, phase: str, codes: Sequence[int], lines: int = 40) -> None:
    """Log the tail of the first failed node's log, so the reason is visible without opening files."""
    for rank, code in enumerate(codes):
        if code not in (0, KILLED_PEER_CODE):
            path = attempt_dir / (f"setup-node{rank}.log" if phase == "setup" else f"node{rank}.log")
            with contextlib.suppress(OSError):
                noise = tuple(n.decode() for n in BASH_I_NOISE)
                text = path.read_text(errors="replace").splitlines()
                tail = [t for t in text if not t.startswith(noise)][-lines:]
                log.error(
                    "run %s: %s failed on node %d (exit %d); last lines of %s:\n%s",
                    run,
                    phase,
                    rank,
                    code,
                    path,
                    "\n".join(f"  | {t}" for t in tail),
                )
            return
