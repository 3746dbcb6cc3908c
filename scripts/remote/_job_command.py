"""The job's command on one node: which interpreter runs it, under torchrun or not, and the first
failed torchrun worker's own exit code (torchrun itself exits 1 for any worker failure)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _distributed import Distributed

#: A PEP 723 inline metadata block (https://peps.python.org/pep-0723/#specification).
PEP723_RE = re.compile(r"(?m)^# /// script[ \t]*$\n(?:^#(?:[ \t].*)?$\n)*?^# ///[ \t]*$")


def as_int(value: object) -> int | None:
    """`value` when it is an int (not a bool), else None: for numbers read back from JSON."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def has_pep723_block(text: str) -> bool:
    """Whether a script's source text carries a PEP 723 `# /// script` block."""
    return PEP723_RE.search(text if text.endswith("\n") else text + "\n") is not None


def python_kind(path: Path) -> str | None:
    """How to run `path`: "uv" (a `.py` with a PEP 723 block), "python" (other `.py`), None (as is)."""
    if path.suffix != ".py":
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "python"
    return "uv" if has_pep723_block(text) else "python"


#: Runs torch.distributed.run (torchrun) and, when a worker fails, writes the first failure (the
#: "Root Cause" of torchrun's summary) as JSON to the path given as its first argument, then fails as
#: torchrun does (exit 1). torchrun itself reports every worker failure as 1 (its ChildFailedError), and
#: TORCHELASTIC_ERROR_FILE only receives a worker's error when the worker wrote one (`@record`), never a
#: plain `sys.exit(3)` or a signal death. Output and exit code are otherwise torchrun's own.
TORCHRUN_SHIM = """\
import json, sys
out = sys.argv.pop(1)
sys.argv[0] = "torchrun"
from torch.distributed.run import main
try:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
except ImportError:  # another torch layout: plain torchrun, its exit code 1 is reported
    ChildFailedError = ()
try:
    main()
except ChildFailedError as exc:
    try:
        rank, failure = exc.get_first_failure()
        with open(out, "w") as f:
            json.dump({"rank": rank, "local_rank": failure.local_rank, "exitcode": failure.exitcode,
                       "message": str(failure.message)[:1000]}, f)
    except Exception as note:
        print(f"run.py: cannot record the failed worker: {note}", file=sys.stderr)
    raise
"""


def build_job_command(
    command: Sequence[str],
    dist: Distributed,
    python: str | None,
    failure_file: Path | None = None,
    *,
    torchrun: bool = True,
) -> list[str]:
    """The argv that runs `command` on this node.

    `python` is the interpreter for a `.py` command (its uv environment's, or "python3"); None runs
    the command as is. A world size above 1 runs the script under torch.distributed.run (torchrun)
    with this node's rendezvous settings, through TORCHRUN_SHIM when `failure_file` is given (where
    the first failed worker's exit code is written; read it with worker_failure), unless `torchrun`
    is False (the interpreter has no torch): then one process per node, which reads NNODES,
    NODE_RANK, MASTER_ADDR and MASTER_PORT itself. Never emits a flag with an empty value.
    """
    if python is None:
        return list(command)
    script, *args = command
    if dist.world_size <= 1 or not torchrun:
        return [python, script, *args]
    launcher = ["-c", TORCHRUN_SHIM, str(failure_file)] if failure_file else ["-m", "torch.distributed.run"]
    return [
        python,
        *launcher,
        f"--nnodes={dist.nnodes}",
        f"--node-rank={dist.node_rank}",
        f"--nproc-per-node={dist.nproc_per_node}",
        f"--master-addr={dist.master_addr}",
        f"--master-port={dist.master_port}",
        script,
        *args,
    ]


@dataclass(frozen=True)
class WorkerFailure:
    """The first failed torchrun worker: its global `rank`, `local_rank`, and `code`, the job's own exit
    code (1..255; 128+N when signal N killed it, then `signal` is N)."""

    rank: int | None
    local_rank: int | None
    code: int
    signal: int | None = None

    def describe(self) -> str:
        how = f"killed by signal {self.signal}" if self.signal else f"exited {self.code}"
        local = f" (local rank {self.local_rank})" if self.local_rank is not None else ""
        return f"worker rank {self.rank}{local} {how}"


def worker_failure(path: Path) -> WorkerFailure | None:
    """The first failed worker as TORCHRUN_SHIM wrote it to `path`; None when there is no such file, it
    is not valid, or its exit code is no failure (torchrun gives -N for a death by signal N)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    raw = as_int(data.get("exitcode"))
    if raw is None or raw == 0 or not -127 <= raw <= 255:
        return None
    rank, local_rank = as_int(data.get("rank")), as_int(data.get("local_rank"))
    if raw < 0:
        return WorkerFailure(rank, local_rank, 128 - raw, -raw)
    return WorkerFailure(rank, local_rank, raw)
