"""Node-side exit codes and reasons: the single source of the contract in docs/contract.md.

Imported by the node-side scripts (`run.py`, `nccl_test.py`); never by `scripts/local/`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
#: Node or fabric fault (heartbeat timeout, failed NCCL preflight). Listed in job.yaml's
#: `recover_on_exit_codes`, so SkyPilot moves the job to fresh nodes without spending its error budget.
EXIT_BAD_NODE = 86
#: Crash-loop stop. Deliberately NOT in `recover_on_exit_codes`.
EXIT_CRASH_LOOP = 87
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

#: Codes a job may not use to steer SkyPilot: a job exiting with one is reported as EXIT_FAILURE.
RESERVED_EXIT_CODES = frozenset({EXIT_BAD_NODE, EXIT_CRASH_LOOP})

REASON_COMPLETED = "completed"
REASON_MAX_RUNTIME = "max_runtime"
#: The runtime budget ran out before the job itself ever started (during setup of its environment or
#: the NCCL preflight, in every attempt so far): exit 0 like max_runtime, but never a plain success.
REASON_MAX_RUNTIME_BEFORE_JOB = "max_runtime_before_job"
#: DATA_DIR (or the run's folder in it) cannot be written: read-only, not a folder, no permission.
#: A plain failure (exit 1), not a bad node: fresh nodes mount the same storage.
REASON_DATA_DIR = "data_dir_unwritable"
REASON_JOB_FAILED = "job_failed"
REASON_JOB_FAILED_RESERVED = "job_failed_reserved_code"
REASON_HEARTBEAT_TIMEOUT = "heartbeat_timeout"
REASON_PREFLIGHT_FAILED = "preflight_failed"
#: The preflight could not run (its own bug or bad input: exit 1/2): not evidence of a bad node.
REASON_PREFLIGHT_ERROR = "preflight_error"
REASON_RECOVER_CAP = "recover_cap"
REASON_CRASH_LOOP = "crash_loop"
REASON_SIGTERM = "sigterm"
REASON_SIGINT = "sigint"
REASON_BAD_INPUT = "bad_input"
