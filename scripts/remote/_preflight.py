"""The NCCL preflight of an attempt: nccl_test.py on this node's ranks before the job, and what its
exit code means for the attempt (docs/contract.md: preflight_failed, preflight_error)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from _contract import EXIT_BAD_NODE, REASON_PREFLIGHT_ERROR, REASON_PREFLIGHT_FAILED
from _job_env import JobEnv, Step
from _proctree import Phase
from _supervisor_config import Config

log = logging.getLogger("run")


def preflight(
    cfg: Config, job_env: JobEnv, step: Step, *, attempt: int, clock: Callable[[], float]
) -> Phase | None:
    """Run the NCCL preflight (cfg.preflight_script) as a `step` of attempt number `attempt`, within
    STARTUP_GRACE seconds of `clock` (monotonic seconds) once its interpreter is ready; a Phase to end
    the attempt with, or None when it passed (or its script does not exist)."""
    script = cfg.preflight_script
    if not script.is_file():
        log.warning("NCCL preflight skipped: %s does not exist", script)
        return None
    python, failed = job_env.python(script, step)
    if failed is not None:
        return failed
    report = cfg.data_dir / cfg.run_id / "preflight" / "nccl-report.json"
    # nccl_test.py starts this node's ranks itself (NNODES, NODE_RANK, NPROC_PER_NODE, MASTER_*
    # from the environment) and keeps its exit codes exact: under torchrun every failure is 1.
    argv = [python or "python3", str(script), "--json-out", str(report)]
    limit = clock() + cfg.limits.startup_grace_s if cfg.limits.startup_grace_s > 0 else None
    phase = step(
        "in the NCCL preflight", argv, job_env.env(attempt), [(limit, REASON_PREFLIGHT_FAILED)], None
    )
    if phase.stop is not None:
        return phase
    if phase.code == EXIT_BAD_NODE:
        log.error("NCCL preflight failed: this node or its fabric is bad (report: %s)", report)
        return Phase(REASON_PREFLIGHT_FAILED, phase.code)
    if phase.code != 0:
        log.error(
            "NCCL preflight could not run (exit %s): not a node fault, counted as a job failure",
            phase.code,
        )
        return Phase(REASON_PREFLIGHT_ERROR, phase.code)
    log.info("NCCL preflight passed")
    return None
