"""The job's command on one node: what kind of job JOB is, which interpreter and environment run it,
under torchrun or not, and the first failed torchrun worker's own exit code (torchrun itself exits 1 for
any worker failure).

How a JOB runs, one rule (README "Bring your own script"):

  JOB                                   environment                          torchrun (world size > 1)
  a `.py` with a PEP 723 block          its own uv environment               when the env has torch
                                        (`uv sync --script`, --locked with its `<script>.lock`)
  a `.py` inside a project              the project's `.venv`                torchrun from that env,
    (the nearest `pyproject.toml` with    (`uv sync --project DIR`,            when it has torch
    a `[project]` table, from the         --locked with its `uv.lock`)
    script's folder up to the working
    directory)
  any other `.py`                       the node's own `python3`: the first  when that python3 has torch
                                        on PATH once skyops' and uv's own
                                        environments are taken out
  `-m pkg.mod`                          as its file would (`pkg/mod.py` or   `torchrun -m pkg.mod`
                                        `pkg/mod/__main__.py`, from the
                                        working directory, or under `src/`)
  anything else (shell script, binary)  runs as is                           never: one process per node,
                                                                             which may call torchrun itself

Never leaked into the job: the supervisor's and the launcher's Python environments (PATH and PYTHONPATH
entries inside them, inside uv's cache or put first by pyenv's shims; VIRTUAL_ENV, PYTHONHOME, `UV` and
UV_* settings other than UV_KEEP; see node_environment).

Usage (job.yaml's `setup` prepares the job's environment once per node, online, as the supervisor then
re-checks it offline at every attempt):

    "$(uv python find --script scripts/remote/run.py)" scripts/remote/_job_command.py prepare "$JOB"

Exit codes of `prepare`: 0 ready (or nothing to prepare); 1 the environment could not be built; 2 bad JOB.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from _contract import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from _distributed import Distributed

#: A PEP 723 inline metadata block (https://peps.python.org/pep-0723/#specification).
PEP723_RE = re.compile(r"(?m)^# /// script[ \t]*$\n(?:^#(?:[ \t].*)?$\n)*?^# ///[ \t]*$")
#: A dotted module name as `python -m` takes it.
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: uv settings that say where the node's packages and Pythons come from: the job's own `uv` needs them.
#: Every other UV_* variable (UV_RUN_RECURSION_DEPTH, UV_PROJECT_ENVIRONMENT, UV_LOCKED, ...) and `UV`
#: describe the supervisor's own `uv run`, not the node.
UV_KEEP = frozenset(
    {
        "UV_CACHE_DIR",
        "UV_FIND_LINKS",
        "UV_INDEX",
        "UV_DEFAULT_INDEX",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        "UV_PYTHON_INSTALL_DIR",
        "UV_NATIVE_TLS",
        "UV_OFFLINE",
    }
)


class JobError(ValueError):
    """JOB cannot be run as given; the message names it."""


class Kind(StrEnum):
    """What kind of job JOB is, which decides its environment (the module docstring's table)."""

    SCRIPT = "script"
    PROJECT = "project"
    PYTHON = "python"
    EXECUTABLE = "executable"


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


def split_module(command: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
    """(module, args) for a `-m` JOB, (None, args) for any other. Takes `-m pkg.mod` as one word (JOB
    as job.yaml passes it), `-m` and `pkg.mod` as two, or `-mpkg.mod` as python does. Raises JobError
    for a missing or malformed module name."""
    first = command[0]
    if first == "-m":
        if len(command) < 2:
            raise JobError("JOB -m: no module name (e.g. -m pkg.train)")
        name, args = command[1], tuple(command[2:])
    elif first.startswith("-m"):
        name, args = first[2:].strip(), tuple(command[1:])
    else:
        return None, tuple(command[1:])
    if not MODULE_RE.match(name):
        raise JobError(f"JOB -m {name!r}: not a module name like pkg.train")
    return name, args


def module_paths(name: str) -> list[Path]:
    """Where `python -m name` finds `name` in a working directory, relative to it: `pkg/mod.py`, then
    `pkg/mod/__main__.py`, then both under `src/` (a project's usual layout)."""
    parts = name.split(".")
    here = [Path(*parts[:-1], parts[-1] + ".py"), Path(*parts, "__main__.py")]
    return [*here, *(Path("src") / p for p in here)]


def module_file(name: str, root: Path) -> Path | None:
    """The file `-m name` runs, found under `root` (see module_paths); None when it is not there."""
    return next((root / p for p in module_paths(name) if (root / p).is_file()), None)


def is_project(pyproject: Path) -> bool:
    """Whether `pyproject` declares a project (a `[project]` table; a file of tool settings only, like
    this repository's, does not). One that is not valid TOML counts: uv names its error at sync."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except OSError:
        return False
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return True
    return isinstance(data.get("project"), dict)


def find_project(path: Path, root: Path) -> Path | None:
    """The folder of the nearest project `pyproject.toml` (see is_project) from `path`'s folder upward:
    up to `root` (included) when `path` is inside it, else up to the file system's root."""
    here = path.resolve().parent
    top = root.resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file() and is_project(candidate):
            return folder
        if folder == top:
            break
    return None


@dataclass(frozen=True)
class Job:
    """JOB, classified: `kind`, `target` (the path as given, or the module name when `module`), its
    `args`, the `source` file its kind was read from (None for an executable or a module not found in
    the working directory) and, for a project, the `project` folder."""

    kind: Kind
    target: str
    args: tuple[str, ...] = ()
    module: bool = False
    source: Path | None = None
    project: Path | None = None

    @property
    def lock(self) -> Path | None:
        """The lock its environment is synced with (`--locked`): a script's `<script>.lock`, a project's
        `uv.lock`; None when there is none."""
        if self.kind is Kind.SCRIPT and self.source is not None:
            lock = self.source.with_name(self.source.name + ".lock")
        elif self.kind is Kind.PROJECT and self.project is not None:
            lock = self.project / "uv.lock"
        else:
            return None
        return lock if lock.is_file() else None

    def describe(self) -> str:
        """E.g. `-m pkg.train: a project script (its environment: pkg/.venv, locked by uv.lock)`."""
        name = f"-m {self.target}" if self.module else self.target
        if self.kind is Kind.SCRIPT:
            how = "a PEP 723 script (its own uv environment)"
        elif self.kind is Kind.PROJECT:
            how = f"a project script (its environment: {self.project}/.venv)"
        elif self.kind is Kind.PYTHON:
            how = "a plain Python script (the node's own python3)"
        else:
            how = "an executable (run as is, never under torchrun)"
        if self.lock is not None:
            how += f", locked by {self.lock.name}"
        return f"{name}: {how}"


def classify(command: Sequence[str], root: Path) -> Job:
    """What kind of job `command` (JOB and its arguments) is, in the working directory `root`.
    Raises JobError for a malformed `-m`."""
    module, args = split_module(command)
    if module is not None:
        source = module_file(module, root)
    else:
        target = command[0]
        path = Path(target) if Path(target).is_absolute() else root / target
        if path.suffix != ".py":
            return Job(Kind.EXECUTABLE, target, args)
        source = path
    name = module if module is not None else command[0]
    if source is not None and python_kind(source) == "uv":
        return Job(Kind.SCRIPT, name, args, module is not None, source)
    project = find_project(source, root) if source is not None else None
    if project is not None:
        return Job(Kind.PROJECT, name, args, module is not None, source, project)
    return Job(Kind.PYTHON, name, args, module is not None, source)


def sync_command(job: Job, uv: str, *flags: str) -> list[str] | None:
    """The `uv sync` that builds the job's environment (with `flags`, `--locked` where it has a lock);
    None for a job that has no environment of its own."""
    locked = ["--locked"] if job.lock is not None else []
    if job.kind is Kind.SCRIPT and job.source is not None:
        return [uv, "sync", *flags, *locked, "--script", str(job.source)]
    if job.kind is Kind.PROJECT and job.project is not None:
        return [uv, "sync", *flags, *locked, "--project", str(job.project)]
    return None


def project_venv(project: Path, env: Mapping[str, str]) -> Path:
    """Where `uv sync --project` puts a project's environment: UV_PROJECT_ENVIRONMENT (relative to the
    project) when set, else the project's `.venv`."""
    venv = Path(env.get("UV_PROJECT_ENVIRONMENT") or ".venv")
    return venv if venv.is_absolute() else project / venv


# --------------------------------------------------------------------------------------------------
# The job's environment


def uv_caches(env: Mapping[str, str], own_venv: str | None = None) -> tuple[str, ...]:
    """uv's cache folders: the one uv picks on Linux without a uv.toml (UV_CACHE_DIR, else
    $XDG_CACHE_HOME/uv, else ~/.cache/uv), and the one holding `own_venv` when that is a `uv run
    --script` environment (`<cache>/environments-v2/<name>`), wherever a uv.toml put it. Computed, not
    asked of `uv cache dir`: a uv behind a shim costs half a second per call on a loaded node."""
    found = []
    if env.get("UV_CACHE_DIR"):
        found.append(env["UV_CACHE_DIR"])
    elif env.get("XDG_CACHE_HOME"):
        found.append(os.path.join(env["XDG_CACHE_HOME"], "uv"))
    elif env.get("HOME"):
        found.append(os.path.join(env["HOME"], ".cache", "uv"))
    if own_venv is not None and Path(own_venv).parent.name.startswith("environments-v"):
        found.append(str(Path(own_venv).parent.parent))
    return tuple(found)


def foreign_prefixes(env: Mapping[str, str], *, own_venv: str | None) -> tuple[str, ...]:
    """Folders whose insides are never the node's own environment: the supervisor's virtual environment
    (`own_venv`: sys.prefix when it differs from sys.base_prefix), the one `uv run` announced
    (VIRTUAL_ENV), and uv's cache (uv_caches), where `uv run --script`, `uv run --with` and uvx keep
    theirs."""
    dirs = (own_venv, env.get("VIRTUAL_ENV"), *uv_caches(env, own_venv))
    return tuple(os.path.normpath(d) for d in dirs if d)


def _pyenv_exec_dir(entry: str, pyenv_root: str | None) -> bool:
    """A folder pyenv's shims put first on PATH for the program they run (`pyenv exec`): its libexec,
    plugins' bin and the selected version's bin. A node where uv is a pyenv shim (the supervisor and the
    launcher run through it) would otherwise hand that Python to every job, ahead of the node's PATH."""
    if not pyenv_root:
        return False
    root = os.path.normpath(pyenv_root)
    parts = Path(os.path.relpath(entry, root)).parts if entry.startswith(root + os.sep) else ()
    return parts == ("libexec",) or (
        len(parts) == 3 and parts[0] in ("plugins", "versions") and parts[2] == "bin"
    )


def node_environment(env: Mapping[str, str], prefixes: Sequence[str]) -> dict[str, str]:
    """`env` as the node had it before skyops' and uv's own Python environments: PATH and PYTHONPATH
    without entries inside `prefixes` (see foreign_prefixes) or put there by pyenv's shims; no
    VIRTUAL_ENV, PYTHONHOME or `UV`; of the UV_* variables only UV_KEEP."""
    out: dict[str, str] = {}
    pyenv_root = env.get("PYENV_ROOT")

    def foreign(entry: str) -> bool:
        entry = os.path.normpath(entry)
        return any(entry == d or entry.startswith(d + os.sep) for d in prefixes) or _pyenv_exec_dir(
            entry, pyenv_root
        )

    for key, value in env.items():
        if key in ("VIRTUAL_ENV", "PYTHONHOME", "UV") or (key.startswith("UV_") and key not in UV_KEEP):
            continue
        if key in ("PATH", "PYTHONPATH"):
            value = os.pathsep.join(p for p in value.split(os.pathsep) if p and not foreign(p))
            if key == "PYTHONPATH" and not value:
                continue
        out[key] = value
    return out


def uv_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for the `uv` commands that build the job's environment: `env` without
    VIRTUAL_ENV (a `uv run` parent's, which `uv sync --project` would warn about and ignore); every UV_*
    setting stays (UV_FIND_LINKS, UV_COMPILE_BYTECODE in setup, ...)."""
    return {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}


def with_venv(env: Mapping[str, str], venv: Path | None) -> dict[str, str]:
    """`env` with `venv` active as `uv run` activates one: VIRTUAL_ENV set and its `bin` first on PATH,
    so the job's own subprocesses (`python`, console scripts) use it too. None: `env` as it is."""
    out = dict(env)
    if venv is not None:
        out["VIRTUAL_ENV"] = str(venv)
        out["PATH"] = os.pathsep.join(p for p in (str(venv / "bin"), env.get("PATH", "")) if p)
    return out


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
    command: Job | Sequence[str],
    dist: Distributed,
    python: str | None,
    failure_file: Path | None = None,
    *,
    torchrun: bool = True,
) -> list[str]:
    """The argv that runs `command` (a classified Job, or JOB and its arguments) on this node.

    `python` is the job's interpreter (its uv environment's, its project's, or the node's python3);
    None runs the command as is. A world size above 1 runs the script (`-m` module) under
    torch.distributed.run (torchrun) with this node's rendezvous settings, through TORCHRUN_SHIM when
    `failure_file` is given (where the first failed worker's exit code is written; read it with
    worker_failure), unless `torchrun` is False (the interpreter has no torch): then one process per
    node, which reads NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT itself. Never emits a flag with an
    empty value.
    """
    job = command if isinstance(command, Job) else Job(Kind.PYTHON, command[0], tuple(command[1:]))
    if python is None:
        return [job.target, *job.args]
    entry = ["-m", job.target] if job.module else [job.target]
    if dist.world_size <= 1 or not torchrun:
        return [python, *entry, *job.args]
    launcher = ["-c", TORCHRUN_SHIM, str(failure_file)] if failure_file else ["-m", "torch.distributed.run"]
    return [
        python,
        *launcher,
        f"--nnodes={dist.nnodes}",
        f"--node-rank={dist.node_rank}",
        f"--nproc-per-node={dist.nproc_per_node}",
        f"--master-addr={dist.master_addr}",
        f"--master-port={dist.master_port}",
        *(["--module"] if job.module else []),
        job.target,
        *job.args,
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


def main(argv: Sequence[str] | None = None) -> int:
    """`prepare JOB`: build the job's environment the way the supervisor runs it (online, quiet)."""
    parser = argparse.ArgumentParser(
        prog="_job_command.py",
        description="Prepare the environment of JOB (job.yaml's setup).",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    prepare = sub.add_parser("prepare", help="uv sync the environment JOB runs in (if it has one of its own)")
    prepare.add_argument("job", nargs=argparse.REMAINDER, metavar="JOB", help="a script path, or -m pkg.mod")
    args = parser.parse_args(argv)
    if not args.job or args.job == [""]:  # a task that runs no JOB (launch.py --task)
        return EXIT_OK
    env = dict(os.environ)  # read here only
    try:
        job = classify(args.job, Path.cwd())
    except JobError as exc:
        print(f"_job_command.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"_job_command.py: {job.describe()}", file=sys.stderr)
    argv_sync = sync_command(job, "uv", "--quiet")
    if argv_sync is None:
        return EXIT_OK
    try:
        if subprocess.run(argv_sync, env=uv_environment(env)).returncode == 0:
            return EXIT_OK
        # An earlier setup stopped mid-install (Ctrl-C, a cancel) can leave an environment uv cannot
        # read (a package without its METADATA): rebuild it rather than fail on it again.
        rebuild = [*argv_sync[:2], "--reinstall", *argv_sync[2:]]
        return EXIT_OK if subprocess.run(rebuild, env=uv_environment(env)).returncode == 0 else EXIT_FAILURE
    except OSError as exc:
        print(f"_job_command.py: error: cannot run uv: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
