"""What an attempt's outcome means: attempts folded from the ledger over all nodes, the exit-code
contract (decide), the crash-loop guard and the bad-node cap. Pure: no I/O, no clocks read.
docs/contract.md ("Exit codes"), docs/decisions/restart-tracking.md, docs/decisions/endings.md."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from _contract import (
    EXIT_BAD_NODE,
    EXIT_CRASH_LOOP,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    REASON_COMPLETED,
    REASON_CRASH_LOOP,
    REASON_DATA_DIR,
    REASON_HEARTBEAT_TIMEOUT,
    REASON_JOB_FAILED,
    REASON_JOB_FAILED_RESERVED,
    REASON_MAX_RUNTIME,
    REASON_MAX_RUNTIME_BEFORE_JOB,
    REASON_PREFLIGHT_ERROR,
    REASON_PREFLIGHT_FAILED,
    REASON_RECOVER_CAP,
    REASON_SIGINT,
    REASON_SIGTERM,
    RESERVED_EXIT_CODES,
)
from _job_command import as_int
from _ledger import LEDGER_LOST
from _supervisor_config import Limits


def as_float(value: object) -> float | None:
    """`value` as a float when it is a number (not a bool), else None: for numbers read back from JSON."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def significance(code: int | None) -> int:
    """How much one node's exit code says about the attempt it ended, to pick the attempt's outcome
    across nodes: 4 a bad node (EXIT_BAD_NODE) > 3 a failure (any other non-zero code, the crash-loop
    stop included) > 2 cancelled or preempted (EXIT_SIGINT, EXIT_SIGTERM) > 1 success (0) > 0 unknown
    (None: the node's end was lost). SkyPilot stops the other nodes when one fails, so the failing node's
    code, not the stopped nodes' 143 (or 137), says why the attempt ended."""
    if code is None:
        return 0
    if code == EXIT_OK:
        return 1
    if code in (EXIT_SIGINT, EXIT_SIGTERM):
        return 2
    return 4 if code == EXIT_BAD_NODE else 3


@dataclass(frozen=True)
class Attempt:
    """One attempt of the managed job, over all its nodes, as the ledger knows it.

    `exit_code` and `reason` are the attempt's effective outcome: the most significant (see
    `significance`; rank 0 first on a tie) of rank 0's `end` record and the other nodes' results folded
    in as `node_result` records; `node_rank` is the node it came from. `reason` None: no node recorded an
    end (still running, or lost). `ended`: rank 0 recorded an end (a `lost` one included). `bad_node`:
    any node exited EXIT_BAD_NODE. `job_started`: any node's record says the job itself ran (records
    from before this field existed count as started).
    """

    number: int
    start_time: float | None = None
    runtime_s: float = 0.0
    exit_code: int | None = None
    reason: str | None = None
    bad_node: bool = False
    node_rank: int | None = None
    ended: bool = False
    job_started: bool = False

    def describe(self) -> str:
        """E.g. `attempt 3: node1 job_failed (exit 3)`."""
        node = f"node{self.node_rank} " if self.node_rank is not None else ""
        return f"attempt {self.number}: {node}{self.reason} (exit {self.exit_code})"


@dataclass
class _Fold:
    """One attempt while summarize folds its records: times in seconds, outcomes (exit code, reason,
    node rank) with rank 0's own end first."""

    start_time: float | None = None
    runtime_s: float = 0.0
    node_runtime_s: float = 0.0
    final_runtime_s: float | None = None
    ended: bool = False
    job_started: bool = False
    outcomes: list[tuple[int | None, str | None, int | None]] = field(default_factory=list)


def summarize(records: Iterable[Mapping[str, object]]) -> list[Attempt]:
    """Fold ledger records into attempts, ordered by number.

    An attempt's runtime (seconds) is its `end` record's; for one without an end, or a `lost` one, the
    longest of its latest `alive` record's and the other nodes' results. Its outcome is the most
    significant node outcome (see Attempt).
    """
    acc: dict[int, _Fold] = {}
    for rec in records:
        number = rec["attempt"]
        assert isinstance(number, int)
        a = acc.setdefault(number, _Fold())
        event = rec["event"]
        if event in ("end", "node_result") and rec.get("job_started", True) is not False:
            a.job_started = True
        runtime = as_float(rec.get("runtime_s"))
        if event == "start":
            a.start_time = as_float(rec.get("time"))
        elif event == "alive":
            a.runtime_s = max(runtime or 0.0, a.runtime_s)
        elif event == "end":
            end_reason = str(rec.get("reason"))
            a.ended = True
            if end_reason == LEDGER_LOST:
                a.runtime_s = max(runtime or 0.0, a.runtime_s)
            else:
                a.final_runtime_s = runtime if runtime is not None else a.runtime_s
            a.outcomes.insert(0, (as_int(rec.get("exit_code")), end_reason, 0))
        elif event == "node_result":
            a.node_runtime_s = max(runtime or 0.0, a.node_runtime_s)
            node_reason = rec.get("reason")
            a.outcomes.append(
                (
                    as_int(rec.get("exit_code")),
                    None if node_reason is None else str(node_reason),
                    as_int(rec.get("node_rank")),
                )
            )
    attempts = []
    for number, a in sorted(acc.items()):
        code, reason, node = max(a.outcomes, key=lambda o: significance(o[0]), default=(None, None, None))
        runtime = a.final_runtime_s if a.final_runtime_s is not None else max(a.runtime_s, a.node_runtime_s)
        attempts.append(
            Attempt(
                number=number,
                start_time=a.start_time,
                runtime_s=runtime,
                exit_code=code,
                reason=reason,
                bad_node=any(c == EXIT_BAD_NODE for c, _, _ in a.outcomes),
                node_rank=node,
                ended=a.ended,
                job_started=a.job_started,
            )
        )
    return attempts


#: Seconds within which every node of one attempt starts its supervisor: SkyPilot starts `run` on all
#: nodes together once setup is done everywhere, while the next attempt comes only after a teardown and
#: a provisioning (minutes on a cloud). Used to recognise a node that starts late in its attempt.
STRAGGLER_WINDOW_S = 60.0


def attempt_number(
    attempts: Sequence[Attempt], *, writer: bool, own_last: int | None = None, now_wall: float | None = None
) -> int:
    """This attempt's number (1-based). The writer (node rank 0) counts every attempt in the ledger;
    other nodes count those rank 0 recorded an end for, since rank 0 may already have recorded this
    attempt's start. `own_last` is the attempt of this node's own previous result: a node's attempts
    only go up, also when rank 0 has not yet closed a lost attempt.

    A node that starts after rank 0 already ended this very attempt (a job that waits for no peer, with
    no preflight to hold rank 0 back) joins it: rank 0's last attempt, ended, which this node has no
    result for, and which rank 0 started under STRAGGLER_WINDOW_S before `now_wall` (wall-clock epoch
    seconds, the only clock the nodes share)."""
    seen = [a.number for a in attempts if writer or a.ended]
    number = max(max(seen, default=0), own_last or 0) + 1
    last = max(attempts, key=lambda a: a.number, default=None)
    if (
        not writer
        and now_wall is not None
        and last is not None
        and last.ended
        and last.number == number - 1
        and last.number > (own_last or 0)
        and last.start_time is not None
        and 0 <= now_wall - last.start_time < STRAGGLER_WINDOW_S
    ):
        return last.number
    return number


def crash_loop_evidence(attempts: Sequence[Attempt], limits: Limits, now_wall: float) -> list[Attempt] | None:
    """The last `crash_loop_attempts` failed attempts when they all started within the window (wall-clock
    seconds, the only clock shared across nodes and recoveries) and average under the minimum runtime;
    None when that is not a crash loop.

    An attempt's outcome is over all its nodes (see Attempt): attempts that succeeded, were lost, or
    that every node ended by cancel or preemption (130, 143) do not count; one where any node failed does.
    """
    k = limits.crash_loop_attempts
    if k <= 0 or limits.crash_loop_min_runtime_s <= 0:
        return None
    failed = [a for a in attempts if significance(a.exit_code) >= significance(EXIT_FAILURE)]
    last = failed[-k:]
    if len(last) < k or any(
        a.start_time is None or now_wall - a.start_time > limits.crash_loop_window_s for a in last
    ):
        return None
    return last if sum(a.runtime_s for a in last) / k < limits.crash_loop_min_runtime_s else None


class Decision(NamedTuple):
    """The node's exit code and reason (docs/contract.md), and `cause`: one line for people on where
    the outcome came from (which worker, which nodes and attempts), None when the reason says it all."""

    code: int
    reason: str
    cause: str | None = None


def decide(
    stop: str | None,
    job_code: int | None,
    *,
    prior: Sequence[Attempt],
    current: Attempt,
    limits: Limits,
    now_wall: float,
    detail: str | None = None,
    job_started: bool = True,
) -> Decision:
    """Apply the exit-code contract (docs/contract.md) to how the attempt ended.

    `stop` is the reason the supervisor stopped the job (REASON_SIGTERM, REASON_SIGINT,
    REASON_MAX_RUNTIME, REASON_HEARTBEAT_TIMEOUT, REASON_PREFLIGHT_FAILED, REASON_PREFLIGHT_ERROR,
    REASON_DATA_DIR, REASON_CRASH_LOOP when a crash loop was already declared) or None when the job
    exited on its own with `job_code`; `detail` says where it came from (the first failed torchrun
    worker, the phase the budget ran out in). `prior` are the earlier attempts of this managed job with
    their outcomes over all nodes; `current` is this one on this node (its exit code and reason are
    filled in here). `job_started`: the job itself ran in this attempt or an earlier one; a budget that
    ran out before it ever did is REASON_MAX_RUNTIME_BEFORE_JOB (docs/decisions/endings.md).
    """
    if stop == REASON_SIGTERM:
        return Decision(EXIT_SIGTERM, REASON_SIGTERM)
    if stop == REASON_SIGINT:
        return Decision(EXIT_SIGINT, REASON_SIGINT)
    if stop == REASON_MAX_RUNTIME:
        if not job_started:
            return Decision(EXIT_OK, REASON_MAX_RUNTIME_BEFORE_JOB, detail)
        return Decision(EXIT_OK, REASON_MAX_RUNTIME, detail)
    if stop == REASON_CRASH_LOOP:
        return Decision(EXIT_CRASH_LOOP, REASON_CRASH_LOOP, detail)
    cause = detail
    code: int
    reason: str
    if stop in (REASON_HEARTBEAT_TIMEOUT, REASON_PREFLIGHT_FAILED):
        code, reason = EXIT_BAD_NODE, stop
    elif stop in (REASON_PREFLIGHT_ERROR, REASON_DATA_DIR):
        code, reason = EXIT_FAILURE, stop
    elif job_code == 0:
        return Decision(EXIT_OK, REASON_COMPLETED)
    elif job_code in RESERVED_EXIT_CODES:
        code, reason = EXIT_FAILURE, REASON_JOB_FAILED_RESERVED
        cause = f"{detail or 'the job'}: exit {job_code} is reserved for the supervisor"
    else:
        code, reason = (job_code if job_code is not None else EXIT_FAILURE), REASON_JOB_FAILED
    bad_before = sum(a.bad_node for a in prior)
    if code == EXIT_BAD_NODE and bad_before >= limits.max_recover_restarts:
        cause = f"{reason} after {bad_before} bad-node attempts (MAX_RECOVER_RESTARTS={limits.max_recover_restarts})"
        code, reason = EXIT_FAILURE, REASON_RECOVER_CAP
    this = replace(current, exit_code=code, reason=reason, bad_node=code == EXIT_BAD_NODE)
    loop = crash_loop_evidence([*prior, this], limits, now_wall)
    if loop is not None:
        return Decision(EXIT_CRASH_LOOP, REASON_CRASH_LOOP, crash_loop_cause(loop, limits))
    return Decision(code, reason, cause)


def crash_loop_cause(loop: Sequence[Attempt], limits: Limits) -> str:
    """One line on why `loop` (see crash_loop_evidence) is a crash loop."""
    average = sum(a.runtime_s for a in loop) / len(loop)
    return (
        f"the last {len(loop)} failed attempts started within {limits.crash_loop_window_s / 60:g} min "
        f"and ran {average:.1f} s on average (under {limits.crash_loop_min_runtime_s:g} s): "
        + "; ".join(a.describe() for a in loop)
    )


def declared_crash_loop(prior: Sequence[Attempt], limits: Limits, now_wall: float) -> str | None:
    """Checked at the start of an attempt, before the preflight and the job: the cause line when an
    earlier attempt declared a crash loop, or the earlier attempts already are one (a node whose
    result was folded in late); None when this attempt may run. Once declared, no later attempt of
    the managed job does paid work."""
    declared = next((a for a in reversed(prior) if a.reason == REASON_CRASH_LOOP), None)
    if declared is not None:
        return f"crash loop declared at attempt {declared.number}; this attempt does not run the job"
    loop = crash_loop_evidence(prior, limits, now_wall)
    return None if loop is None else crash_loop_cause(loop, limits)
