"""The states of a managed job, one set for both backends: SkyPilot's own (sky/jobs/state.py
ManagedJobStatus, SkyPilot 0.14.1), which the local backend's job.json uses as well.

A copy, so that the laptop's fast paths (the local backend, `jobs.py status`) never import SkyPilot
(seconds); tests/test_sky.py fails the day the copy and the installed SkyPilot's differ. A StrEnum: each
state is its name as a string, so job.json, `--json` output and SkyPilot's records compare equal to it.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """A managed job's state (sky.jobs.state.ManagedJobStatus; SUBMITTED is SkyPilot's
    DEPRECATED_SUBMITTED, kept for its older databases)."""

    PENDING = "PENDING"
    SUBMITTED = "SUBMITTED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    WINDING_DOWN = "WINDING_DOWN"
    RECOVERING = "RECOVERING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    FAILED_SETUP = "FAILED_SETUP"
    FAILED_PRECHECKS = "FAILED_PRECHECKS"
    FAILED_NO_RESOURCE = "FAILED_NO_RESOURCE"
    FAILED_CONTROLLER = "FAILED_CONTROLLER"


#: States that never change again (ManagedJobStatus.terminal_statuses()).
TERMINAL = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.CANCELLED,
        JobState.FAILED,
        JobState.FAILED_SETUP,
        JobState.FAILED_PRECHECKS,
        JobState.FAILED_NO_RESOURCE,
        JobState.FAILED_CONTROLLER,
    }
)
#: States in which a job may still have processes or nodes: every other one.
LIVE = frozenset(JobState) - TERMINAL
