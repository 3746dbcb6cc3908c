"""The contract between the laptop side and the nodes, as code: env keys, exit codes, reasons, paths.

Standard library only. Imported by every node-side script, and by `scripts/local/` (the one node-side
module the laptop side may import: docs/decisions/boundary.md), so that every key, default, bound, exit
code and reason is written once. docs/contract.md, job.yaml's `envs` and `.env.example` are checked
against `KEYS` by `scripts/local/contract.py --check` (`nox -s contract`, part of `make lint`).

The one parser: `parse(key, text)` turns a key's text into its typed value or raises `BadValue` with
one line naming the key and what it must be; `value(env, key)` does the same for an environment, with
the key's default when it is not set (or empty, for the keys where empty means "the default").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any


class Exit(IntEnum):
    """Node-side exit codes (docs/contract.md, "Exit codes")."""

    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    #: Node or fabric fault (heartbeat timeout, failed NCCL preflight). In job.yaml's
    #: `recover_on_exit_codes`: SkyPilot moves the job to fresh nodes without spending its error budget.
    BAD_NODE = 86
    #: Crash-loop stop. Deliberately NOT in `recover_on_exit_codes`.
    CRASH_LOOP = 87
    #: The shell's codes for a job command that is not executable / not found (POSIX `sh`, "Exit Status").
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127
    SIGINT = 130
    SIGTERM = 143


EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = Exit.OK, Exit.FAILURE, Exit.BAD_INPUT
EXIT_BAD_NODE, EXIT_CRASH_LOOP, EXIT_SIGINT, EXIT_SIGTERM = (
    Exit.BAD_NODE,
    Exit.CRASH_LOOP,
    Exit.SIGINT,
    Exit.SIGTERM,
)
EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND = Exit.NOT_EXECUTABLE, Exit.NOT_FOUND
#: Codes a job may not use to steer SkyPilot: a job exiting with one is reported as EXIT_FAILURE.
RESERVED_EXIT_CODES = frozenset({Exit.BAD_NODE, Exit.CRASH_LOOP})


class Reason(StrEnum):
    """Why an attempt ended on a node: `reason` in the node's result, the ledger and every status view."""

    COMPLETED = "completed"
    MAX_RUNTIME = "max_runtime"
    #: The runtime budget ran out before the job itself ever started (while its environment was prepared
    #: or in the NCCL preflight, in every attempt so far): exit 0 like max_runtime, never a plain success.
    MAX_RUNTIME_BEFORE_JOB = "max_runtime_before_job"
    #: DATA_DIR (or the run's folder in it) cannot be written: read-only, not a folder, no permission.
    #: A plain failure (exit 1), not a bad node: fresh nodes mount the same storage.
    DATA_DIR = "data_dir_unwritable"
    JOB_FAILED = "job_failed"
    JOB_FAILED_RESERVED = "job_failed_reserved_code"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    PREFLIGHT_FAILED = "preflight_failed"
    #: The preflight could not run (its own bug or bad input: exit 1/2): not evidence of a bad node.
    PREFLIGHT_ERROR = "preflight_error"
    RECOVER_CAP = "recover_cap"
    CRASH_LOOP = "crash_loop"
    SIGTERM = "sigterm"
    SIGINT = "sigint"


REASON_COMPLETED, REASON_MAX_RUNTIME = Reason.COMPLETED, Reason.MAX_RUNTIME
REASON_MAX_RUNTIME_BEFORE_JOB, REASON_DATA_DIR = Reason.MAX_RUNTIME_BEFORE_JOB, Reason.DATA_DIR
REASON_JOB_FAILED, REASON_JOB_FAILED_RESERVED = Reason.JOB_FAILED, Reason.JOB_FAILED_RESERVED
REASON_HEARTBEAT_TIMEOUT, REASON_PREFLIGHT_FAILED = Reason.HEARTBEAT_TIMEOUT, Reason.PREFLIGHT_FAILED
REASON_PREFLIGHT_ERROR, REASON_RECOVER_CAP = Reason.PREFLIGHT_ERROR, Reason.RECOVER_CAP
REASON_CRASH_LOOP, REASON_SIGTERM, REASON_SIGINT = Reason.CRASH_LOOP, Reason.SIGTERM, Reason.SIGINT


# --------------------------------------------------------------------------------------------------
# Data directory layout (docs/contract.md, "Data directory"): all under $DATA_DIR/$RUN_ID/


#: The attempt ledger, written by node rank 0 (str.format with managed_job_id, task_index).
LEDGER = "supervisor/ledger-{managed_job_id}-{task_index}.jsonl"
#: A node's end-of-attempt result (str.format with node_rank).
RESULT = "supervisor/result-node{node_rank}.json"
PREFLIGHT_REPORT = "preflight/nccl-report.json"
PREFLIGHT_PLOT = "preflight/nccl-sweep.png"
#: The notifications already sent (claim files: scripts/remote/notify.py).
NOTIFY_CLAIMS = "notify"


# --------------------------------------------------------------------------------------------------
# Value grammars


class BadValue(ValueError):
    """A key's text is not a valid value; the message is one line naming the key."""


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_FLOOR_RE = re.compile(
    r"^(?P<acc>[A-Za-z0-9_.-]+)@(?P<nodes>\d+)(?P<plus>\+?)=(?P<floor>[0-9.]+)(?::(?P<warn>[0-9.]+))?$"
)


def parse_size(text: str) -> int:
    """Parse a byte count with an optional binary suffix: "4096", "1K", "32M", "1GiB" (K = 1024).

    Raises ValueError for anything else or for a size under 4 bytes (one float32).
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r} (expected e.g. 32M, 1G, 4096)")
    value = int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")
    if value < 4:
        raise ValueError(f"size {text!r} is under 4 bytes")
    return value


@dataclass(frozen=True)
class FloorRule:
    """A busbw floor and warning level (GB/s) for an accelerator type on a range of node counts."""

    accelerator: str
    min_nodes: int
    max_nodes: int | None  # None: no upper bound ("2+")
    floor: float
    warn: float

    def spec(self) -> str:
        """The rule as written in --floors: "H100@2+=10:40"."""
        nodes = f"{self.min_nodes}+" if self.max_nodes is None else str(self.min_nodes)
        return f"{self.accelerator}@{nodes}={self.floor:g}:{self.warn:g}"


def parse_floors(spec: str) -> tuple[FloorRule, ...]:
    """Parse a comma-separated floor table: `ACCEL@NODES=FLOOR[:WARN]`, NODES an int or `N+`.

    Example: "H100@1=100:200,H100@2+=10:40". FLOOR and WARN are all_reduce busbw in GB/s; WARN
    defaults to FLOOR (no warning band) and must be >= FLOOR; FLOOR 0 means warn only. An empty spec
    or `none` is an empty table (no floors). Raises ValueError naming the bad entry.
    """
    rules = []
    if spec.strip().lower() == "none":
        return ()
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        match = _FLOOR_RE.match(entry)
        if not match:
            raise ValueError(
                f"invalid floor {entry!r} (expected ACCEL@NODES=FLOOR[:WARN], e.g. H100@2+=10:40)"
            )
        try:
            floor = float(match["floor"])
            warn = float(match["warn"]) if match["warn"] is not None else floor
        except ValueError:
            raise ValueError(f"invalid number in floor {entry!r}") from None
        nodes = int(match["nodes"])
        if nodes < 1 or warn < floor:
            raise ValueError(f"invalid floor {entry!r}: NODES must be >= 1 and WARN >= FLOOR")
        rules.append(FloorRule(match["acc"], nodes, None if match["plus"] else nodes, floor, warn))
    return tuple(rules)


# --------------------------------------------------------------------------------------------------
# Env keys (job.yaml `envs`, .env.example, docs/contract.md "Env keys")


@dataclass(frozen=True)
class Key:
    """One env key of the task.

    `kind`: "str", "name" (no '/'), "int", "float", "bool", "size" (bytes, K/M/G = 1024^n), "floors"
    (parse_floors) or "list" (comma-separated words). `minimum`/`maximum` bound numbers (`above`: strictly greater than
    `minimum`). `default` is the text job.yaml or the reader uses when the key is not set; `in_job_yaml`:
    job.yaml's `envs` lists it (else it is an optional key, shown commented out in .env.example).
    `empty`: what an empty value means ("default": the default; "value": the empty text itself).
    `readers` names who reads it; `doc` is one line for the docs, with the unit.
    """

    name: str
    kind: str
    default: str
    doc: str
    readers: tuple[str, ...]
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    choices: tuple[str, ...] = ()
    in_job_yaml: bool = True
    empty: str = "default"

    def expected(self) -> str:
        """What a value must be, in words: `a number of seconds >= 0`."""
        if self.kind == "bool":
            return "one of 1/0, true/false, yes/no, on/off"
        if self.kind == "size":
            return f"a byte count >= {self.minimum or 4:g} like 32M, 1G or 4096"
        if self.kind == "floors":
            return "ACCEL@NODES[+]=FLOOR[:WARN],... (GB/s, WARN >= FLOOR) or none"
        if self.kind == "list":
            return "a comma-separated list of " + ", ".join(self.choices)
        if self.kind == "str":
            return "a non-empty string"
        if self.kind == "name":
            return "a non-empty name without '/'"
        what = "an integer" if self.kind == "int" else "a number"
        if self.unit and self.kind == "float":
            what += f" of {self.unit}"
        if self.minimum is not None and self.maximum is not None:
            return f"{what} in {'(' if self.above else '['}{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{what} {'>' if self.above else '>='} {self.minimum:g}"
        return what


def _k(name: str, kind: str, default: str, doc: str, *readers: str, **more: Any) -> Key:
    return Key(name, kind, default, doc, readers, **more)


S, RUN, NCCL, SETUP = "seconds", "run.py", "nccl_test.py", "job.yaml setup"
KEYS: tuple[Key, ...] = (
    _k("JOB", "str", "examples/train.py", "the job: a script path relative to the repository root", "job.yaml"),
    _k("JOB_ARGS", "str", "", "the job's arguments, one shell-quoted string (`shlex.join`)", "job.yaml", empty="value"),
    _k("RUN_ID", "name", "skyops-train", "the run's name; the launcher sets it to `--run`", RUN, "the job"),
    _k("DATA_DIR", "str", "/skyops-data", "durable storage (a bucket in the cloud; `.skyops/data` locally)", RUN, "the job"),
    _k("MASTER_PORT", "int", "29500", "torch.distributed rendezvous port on the head node", "configure_environment.py",
       minimum=1, maximum=65535),
    _k("HEARTBEAT_TIMEOUT", "float", "600", "seconds without a heartbeat before the node is declared bad; 0: off",
       RUN, unit=S, minimum=0),
    _k("STARTUP_GRACE", "float", "1200", "seconds allowed before the first heartbeat (bounds the preflight too); 0: no limit",
       RUN, unit=S, minimum=0),
    _k("MAX_RUNTIME_HOURS", "float", "24", "runtime budget over all attempts, hours; 0: off", RUN, unit="hours", minimum=0),
    _k("GRACE", "float", "60", "seconds between SIGTERM and SIGKILL at teardown, for every process of the job",
       RUN, unit=S, minimum=0),
    _k("CRASH_LOOP_ATTEMPTS", "int", "3", "crash-loop guard: K failed attempts ... (0: off)", RUN, minimum=0),
    _k("CRASH_LOOP_WINDOW_MINUTES", "float", "60", "... started within W minutes ...", RUN, unit="minutes", minimum=0),
    _k("CRASH_LOOP_MIN_MINUTES", "float", "5", "... that average under T minutes of runtime stop the job (0: off)",
       RUN, unit="minutes", minimum=0),
    _k("MAX_RECOVER_RESTARTS", "int", "10", "bad-node exits allowed per managed job before they count as failures",
       RUN, minimum=0),
    _k("NCCL_PREFLIGHT", "bool", "1", "run the NCCL preflight at the start of every attempt; 0: off", RUN),
    _k("NCCL_PREFLIGHT_TIMEOUT", "float", "300", "hard limit for the whole preflight, seconds; then exit 86",
       NCCL, unit=S, minimum=0, above=True),
    _k("NCCL_PREFLIGHT_FLOORS", "floors",
       "H200@1=100:200,H100@1=100:200,A100@1=50:100,H200@2+=0:50,H100@2+=0:50,A100@2+=0:20",
       "all_reduce busbw `floor:warn` GB/s per `accelerator@nodes` (NCCL only; none: no floors)", NCCL, empty="value"),
    _k("NCCL_PREFLIGHT_MIN_SHM_GIB", "float", "1", "minimum free /dev/shm, GiB; 0: off", NCCL, unit="GiB", minimum=0),
    _k("NCCL_PREFLIGHT_SIZE", "size", "", "bytes per operation (empty: 32M with NCCL, 16M with gloo)", NCCL,
       minimum=4096, in_job_yaml=False),
    _k("NCCL_PREFLIGHT_ITERS", "int", "20", "timed iterations per measurement (nccl-tests' default)", NCCL,
       minimum=1, in_job_yaml=False),
    _k("NCCL_PREFLIGHT_WARMUP", "int", "1", "untimed iterations first (nccl-tests' default)", NCCL, minimum=0,
       in_job_yaml=False),
    _k("NCCL_PREFLIGHT_INIT_TIMEOUT", "float", "120", "seconds for every rank to join", NCCL, unit=S, minimum=0,
       above=True, in_job_yaml=False),
    _k("NCCL_PREFLIGHT_STAGE_TIMEOUT", "float", "60", "seconds for each later stage", NCCL, unit=S, minimum=0,
       above=True, in_job_yaml=False),
    _k("NCCL_PREFLIGHT_SLOW_FRACTION", "float", "0.5", "on 4+ nodes, a pair is slow under this fraction of the median",
       NCCL, minimum=0, maximum=1, above=True, in_job_yaml=False),
    _k("NCCL_PREFLIGHT_PAIR_PARTNERS", "int", "2", "on 4+ nodes, partners per node in pairwise rounds; 0: skip",
       NCCL, minimum=0, in_job_yaml=False),
    _k("UV_VERSION", "str", "0.13.9", "the uv release setup installs where a node has none", SETUP),
    _k("NOTIFY_ON", "list", "ended", "events for Discord, Slack and the webhook (docs/notifications.md)", "notify.py",
       choices=("started", "attempt_ended", "ended")),
    _k("NOTIFY_TIMEOUT_S", "float", "30", "seconds all notification channels together may take (at most 30)",
       "notify.py", unit=S, minimum=0, maximum=30, above=True, in_job_yaml=False),
    _k("GITHUB_REPOSITORY", "str", "", "the `owner/name` of commit statuses (empty: from `git remote get-url origin`)",
       "notify.py", empty="value", in_job_yaml=False),
    _k("GITHUB_API_URL", "str", "https://api.github.com",
       "GitHub's API base for commit statuses (GitHub Enterprise: https://HOST/api/v3)", "notify.py"),
)  # fmt: skip
KEY: Mapping[str, Key] = {k.name: k for k in KEYS}


def parse(key: str, text: str) -> object:
    """The typed value of `text` for env key `key` (see Key): int, float, bool, int bytes, a tuple of
    FloorRule, a tuple of words, or the text. An empty text gives the default's value where `empty` is
    "default". Raises BadValue naming the key; KeyError for a key not in KEYS."""
    spec = KEY[key]
    text = text.strip()
    if not text and spec.empty == "default":
        text = spec.default
    try:
        return _convert(spec, text)
    except ValueError:
        raise BadValue(f"{key}={text!r}: expected {spec.expected()}") from None


def _convert(spec: Key, text: str) -> object:
    if spec.kind == "str":
        if not text and spec.empty != "value":
            raise ValueError
        return text
    if spec.kind == "name":
        if not text or "/" in text or text in (".", ".."):
            raise ValueError
        return text
    if spec.kind == "bool":
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ValueError
    if spec.kind == "size":
        size = parse_size(text) if text else None
        if size is not None and spec.minimum is not None and size < spec.minimum:
            raise ValueError
        return size
    if spec.kind == "floors":
        return parse_floors(text)
    if spec.kind == "list":
        words = tuple(w.strip() for w in text.split(",") if w.strip())
        if not words or any(w not in spec.choices for w in words):
            raise ValueError
        return words
    number: float = int(text) if spec.kind == "int" else float(text)
    if not math.isfinite(number):
        raise ValueError
    low, high = spec.minimum, spec.maximum
    if low is not None and (number < low or (spec.above and number == low)):
        raise ValueError
    if high is not None and number > high:
        raise ValueError
    return number


def value(env: Mapping[str, str], key: str) -> object:
    """The typed value of `key` in `env`, or of its default when unset (see parse). Raises BadValue."""
    return parse(key, env.get(key, KEY[key].default))
