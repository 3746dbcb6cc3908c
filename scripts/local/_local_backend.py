"""The local backend: a task's `setup` and `run` on N emulated nodes on this machine.

Each node runs them as SkyPilot 0.14.1 runs them on a cloud node (docs/decisions/local-backend.md):
its own process tree (its own session); SkyPilot's job script (`/bin/bash -i`, `~/.bashrc` sourced,
no `set -e`, from `~/sky_workdir`; `sky_script`) with every variable SkyPilot sets for a managed job's
task (`sky_task_vars`, `sky_node_vars`: SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS on loopback,
SKYPILOT_TASK_ID(S), ...) plus the task's envs and secrets; its own HOME and its own copy of the
repository at ~/sky_workdir (`NodeDisk`), so a job that assumes a shared file system fails here as it
would in the cloud. uv's cache and DATA_DIR (the bucket) are shared. The job follows SkyPilot's
managed-job rules:

- success only if every node exits 0; when one node fails the others are killed and recorded as 137;
- job recovery: a failure whose node exit codes include one of `recover_on_exit_codes` restarts
  without counting; any other failure (setup included) spends `max_restarts_on_errors`;
- every restart is a fresh attempt on "fresh nodes": each node's HOME, workdir and TMPDIR are new.

Node logs go to `.skyops/runs/<run>/job-<id>/attempt<N>/`; `job.json` there records the state. The
nodes' disks are `~/.cache/skyops/nodes/<clone>/slot<k>/node<rank>/` (`nodes_dir`, `node_slot`), removed
after each attempt.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import hashlib
import json
import logging
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _atomic
import _config
import _contract
import _progress
import _teardown
from _config import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, LaunchConfig
from _contract import REASON_CRASH_LOOP, REASON_MAX_RUNTIME, REASON_MAX_RUNTIME_BEFORE_JOB
from _job_state import LIVE, JobState

log = logging.getLogger("skyops.local")

KILLED_PEER_CODE = 137  # what SkyPilot records for the nodes it kills after another node failed
#: Seconds on top of the supervisor's GRACE before the launcher SIGKILLs what is left of a node: the
#: supervisor's own teardown (SIGTERM, GRACE, SIGKILL, reap) must be able to finish first.
STOP_GRACE_EXTRA = 10.0
MAX_LOCAL_NODES = 32  # emulated nodes on one machine

#: Variables of the launcher's own environment that must not leak into an emulated node.
_NODE_ENV_DROP_PREFIXES = ("SKYPILOT_", "TORCHELASTIC_", "SKYOPS_LOCAL_")
_NODE_ENV_DROP = frozenset(
    {
        "VIRTUAL_ENV",
        # uv's project target and interpreter of the launcher's own session (nox sets both): a node's
        # `uv venv`, `uv pip install` or `uv sync --project` would use them instead of the node's own.
        "UV_PROJECT_ENVIRONMENT",
        "UV_PYTHON",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "NNODES",
        "NODE_RANK",
        "NPROC_PER_NODE",
        "HEARTBEAT_FILE",
        "SKYOPS_ATTEMPT",
        # The node starts in a folder of its own; a git hook's variables would point its git at the
        # repository the launcher runs in.
        "PWD",
        "OLDPWD",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_PREFIX",
        "GIT_CEILING_DIRECTORIES",
    }
)
#: Dropped as well when the node has a home of its own: they would lead it back into the user's (a
#: fresh VM has none of them; bash -i writes its history to $HISTFILE).
_HOME_ENV_DROP = frozenset(
    {"XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "HISTFILE"}
)

#: SkyPilot's job-script prologue, verbatim (sky/skylet/log_lib.py `make_task_bash_script`, 0.14.1):
#: every `setup` and `run` is this, one `export` per task variable, then the commands; SkyPilot runs
#: the file with `/bin/bash -i` (so ~/.bashrc is sourced twice), without `set -e`. Checked against
#: SkyPilot's own function by tests/test_local_backend.py.
SKY_SCRIPT_PROLOGUE = """\
#!/bin/bash
[ -f ~/.bashrc ] && source ~/.bashrc
set -a
. $(conda info --base 2> /dev/null)/etc/profile.d/conda.sh > /dev/null 2>&1 || true
set +a
export PATH=$(echo $PATH | sed "s|$(echo ${SKY_RUNTIME_DIR:-$HOME}/skypilot-runtime)/bin:||") && unset VIRTUAL_ENV && unset VIRTUAL_ENV_PROMPT
# Activate the default user environment (replaces conda base) so
# user commands get a writable python/pip. DEACTIVATE above unsets
# VIRTUAL_ENV, so re-activate here to keep it consistent (a venv
# uses VIRTUAL_ENV, unlike conda which uses CONDA_PREFIX).
# Use getattr with a fallback: this function is embedded into the
# on-cluster job program via inspect.getsource (see
# sky/backends/task_codegen.py) and evaluated at runtime against the
# cluster's own sky.skylet.constants. Older clusters predate
# ACTIVATE_SKY_USER_ENV, so referencing it directly would raise
# AttributeError; those clusters have no ~/sky-user-env anyway, so an
# empty string is the correct no-op.
if [ -z "${CONDA_PREFIX:-}" ] && [ -f ~/sky-user-env/bin/activate ]; then source ~/sky-user-env/bin/activate; fi
export PYTHONUNBUFFERED=1
cd ~/sky_workdir"""
#: How SkyPilot starts a job script: "Need this `-i` option to make sure `source ~/.bashrc` work"
#: (sky/skylet/log_lib.py run_bash_command_with_log; sky/backends/cloud_vm_ray_backend.py _setup).
SKY_BASH = ("/bin/bash", "-i")
#: The two lines `bash -i` prints when it has no terminal; SkyPilot's log streaming skips them
#: (sky/skylet/log_lib.py run_with_log), and so do --follow and the failure excerpt here.
BASH_I_NOISE = (b"bash: cannot set terminal process group", b"bash: no job control in this shell")
#: SkyPilot's job id of the task on its (fresh) cluster: a managed job's cluster runs that one job.
INTERNAL_JOB_ID = 1
#: Where a node's copy of the repository is, in its home (sky/skylet/constants.py SKY_REMOTE_WORKDIR).
SKY_WORKDIR = "sky_workdir"


def sky_script(commands: str, exports: Mapping[str, str]) -> str:
    """The job script SkyPilot writes for `commands` (`make_task_bash_script`): the prologue, then
    `export KEY=value` (shell-quoted) for each of `exports` in order, then the commands."""
    lines = [SKY_SCRIPT_PROLOGUE, *(f"export {k}={shlex.quote(str(v))}" for k, v in exports.items())]
    return "\n".join([*lines, commands, ""])


def sky_run_commands(run: str) -> str:
    """A task's `run` as SkyPilot wraps it (sky/backends/task_codegen.py `build_task_bash_script`):
    Ray's variable unset first, and the node's result is the exit code of the last command, kept through
    SkyPilot's epilogue. The epilogue's wait for CACHED_MOUNT uploads is left out: none exist here."""
    return f"unset RAY_RAYLET_PID; {run}\n__skypilot_user_exit_code=$?\nexit $__skypilot_user_exit_code"


def sky_setup_commands(setup_script: Path) -> str:
    """The command SkyPilot runs on each node for a managed job's `setup` (detached setup:
    cloud_vm_ray_backend.py `_setup` writes the node's setup script, task_codegen.py `add_setup` runs
    it): CUDA_VISIBLE_DEVICES and Ray's variable unset, then the setup script under `bash -i`."""
    return (
        "unset CUDA_VISIBLE_DEVICES; unset RAY_RAYLET_PID; "
        f"{' '.join(SKY_BASH)} {shlex.quote(str(setup_script))} 2>&1"
    )


@dataclass(frozen=True)
class Cluster:
    """The emulated cluster of one managed job: what SkyPilot would tell its nodes."""

    job_id: int
    run: str
    num_nodes: int
    gpus_per_node: int
    task_id: str
    user: str

    @property
    def ips(self) -> list[str]:
        """One loopback address per node, head node first."""
        return [f"127.0.0.{rank + 1}" for rank in range(self.num_nodes)]

    @property
    def cluster_info(self) -> str:
        return json.dumps(
            {"cluster_name": f"{self.run}-{self.job_id}", "cloud": "local", "region": "local", "zone": None}
        )


def managed_task_id(run: str, job_id: int, when: dt.datetime, task_idx: int = 0) -> str:
    """SKYPILOT_TASK_ID in the managed-job format:
    `sky-managed-<YYYY-mm-dd-HH-MM-SS-ffffff>_<name>_<job_id>-<task_idx>`."""
    return f"sky-managed-{when.strftime('%Y-%m-%d-%H-%M-%S-%f')}_{run}_{job_id}-{task_idx}"


def sky_task_vars(
    task_envs: Mapping[str, str], secrets: Mapping[str, str], cluster: Cluster
) -> dict[str, str]:
    """The variables of a one-task managed job on every node, in setup and run, in SkyPilot 0.14.1's
    order: the task's envs; SKYPILOT_NUM_JOBS (sky/jobs/server/core.py, 1 job per launch);
    SKYPILOT_TASK_ID, SKYPILOT_TASK_IDS (newline-separated ids of the job's tasks: this one),
    SKYPILOT_MANAGED_JOB_ID and SKYPILOT_JOB_RANK (sky/jobs/controller.py; 0 outside a pool); the
    secrets; SKYPILOT_CLUSTER_INFO and SKYPILOT_USER (cloud_vm_ray_backend.py `_get_task_env_vars`).
    Not set, as SkyPilot sets none of them for a plain job launched from a local API server:
    SKYPILOT_ROOT_JOB_ID (job groups), SKYPILOT_JOBGROUP_NAME, SKYPILOT_API_SERVER_ENDPOINT and
    SKYPILOT_SERVICE_ACCOUNT_TOKEN (api_server_access)."""
    return {
        **task_envs,
        "SKYPILOT_NUM_JOBS": "1",
        "SKYPILOT_TASK_ID": cluster.task_id,
        "SKYPILOT_TASK_IDS": cluster.task_id,
        "SKYPILOT_MANAGED_JOB_ID": str(cluster.job_id),
        "SKYPILOT_JOB_RANK": "0",
        **secrets,
        "SKYPILOT_CLUSTER_INFO": cluster.cluster_info,
        "SKYPILOT_USER": cluster.user,
    }


def sky_node_vars(cluster: Cluster, rank: int, *, setup: bool) -> tuple[dict[str, str], dict[str, str]]:
    """SkyPilot's per-node variables as (those set before the task's, those set after): run gets
    SKYPILOT_NODE_IPS (newline-separated, head node first) and SKYPILOT_NUM_NODES before, and
    SKYPILOT_NUM_GPUS_PER_NODE, SKYPILOT_NODE_RANK, SKYPILOT_INTERNAL_JOB_ID after
    (task_codegen.py `_add_ray_task`); setup gets SKYPILOT_NUM_NODES (`add_setup`), then
    SKYPILOT_SETUP_NODE_IPS, SKYPILOT_SETUP_NODE_RANK, SKYPILOT_SETUP_NUM_GPUS_PER_NODE
    (cloud_vm_ray_backend.py `_setup`)."""
    ips = "\n".join(cluster.ips)
    if setup:
        return {"SKYPILOT_NUM_NODES": str(cluster.num_nodes)}, {
            "SKYPILOT_SETUP_NODE_IPS": ips,
            "SKYPILOT_SETUP_NODE_RANK": str(rank),
            "SKYPILOT_SETUP_NUM_GPUS_PER_NODE": str(cluster.gpus_per_node),
        }
    return {"SKYPILOT_NODE_IPS": ips, "SKYPILOT_NUM_NODES": str(cluster.num_nodes)}, {
        "SKYPILOT_NUM_GPUS_PER_NODE": str(cluster.gpus_per_node),
        "SKYPILOT_NODE_RANK": str(rank),
        "SKYPILOT_INTERNAL_JOB_ID": str(INTERNAL_JOB_ID),
    }


def shared_uv_dirs(base: Mapping[str, str]) -> dict[str, str]:
    """uv's cache and its Python installations where the launcher's uv has them (UV_CACHE_DIR, else
    $XDG_CACHE_HOME/uv or ~/.cache/uv; UV_PYTHON_INSTALL_DIR, else $XDG_DATA_HOME/uv/python or
    ~/.local/share/uv/python: uv's documented defaults), for nodes with homes of their own: they share
    them, as the emulated nodes share one disk (docs/decisions/local-backend.md)."""
    home = Path(base.get("HOME") or Path.home())
    cache = Path(base.get("XDG_CACHE_HOME") or home / ".cache") / "uv"
    data = Path(base.get("XDG_DATA_HOME") or home / ".local" / "share") / "uv"
    return {
        "UV_CACHE_DIR": base.get("UV_CACHE_DIR") or str(cache),
        "UV_PYTHON_INSTALL_DIR": base.get("UV_PYTHON_INSTALL_DIR") or str(data / "python"),
    }


def node_env(
    base: Mapping[str, str],
    task_envs: Mapping[str, str],
    secrets: Mapping[str, str],
    cluster: Cluster,
    rank: int,
    *,
    setup: bool,
    tmpdir: str | None = None,
    home: str | None = None,
) -> dict[str, str]:
    """The process environment of one emulated node for `setup` or `run`: the launcher's environment
    without its own job settings (its uv environment off PATH), the task's envs and secrets, and
    SkyPilot's variables (`sky_task_vars`, `sky_node_vars`). With `home`: HOME is that folder, uv keeps
    the launcher's cache and Pythons (`shared_uv_dirs`), and git stops looking for a repository at the
    node's folder (GIT_CEILING_DIRECTORIES), so it never finds the one the nodes' folders live in.
    torch.distributed's traffic stays on loopback (GLOO_/NCCL_SOCKET_IFNAME=lo unless set)."""
    drop = _NODE_ENV_DROP | (_HOME_ENV_DROP if home else frozenset())
    env = {k: v for k, v in base.items() if k not in drop and not k.startswith(_NODE_ENV_DROP_PREFIXES)}
    venv = base.get("VIRTUAL_ENV")
    if venv and "PATH" in env:  # the launcher's own uv environment is not the node's
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv))
    if home:
        env.update(shared_uv_dirs(base))
        env.update(HOME=home, GIT_CEILING_DIRECTORIES=str(Path(home).parent))
    before, after = sky_node_vars(cluster, rank, setup=setup)
    env.update(before)
    env.update(sky_task_vars(task_envs, secrets, cluster))
    env.update(after)
    # Nodes share one machine: keep torch.distributed traffic on loopback.
    env["GLOO_SOCKET_IFNAME"] = base.get("GLOO_SOCKET_IFNAME", "lo")
    env["NCCL_SOCKET_IFNAME"] = base.get("NCCL_SOCKET_IFNAME", "lo")
    if tmpdir:
        env["TMPDIR"] = tmpdir
    return env


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def allocate_job_id(state_dir: Path) -> int:
    """The next local managed-job id (1, 2, ...), race-free across concurrent launches."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "job_ids.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        path = state_dir / "last_job_id"
        last = int(path.read_text().strip() or 0) if path.exists() else 0
        _atomic.write_text(path, f"{last + 1}\n")
        return last + 1


def exit_code_of(returncode: int) -> int:
    """A Popen returncode as a shell would report it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class NodeCommand:
    """What one emulated node runs in one phase: `argv` (SkyPilot's `bash -i <script>`), its process
    environment and the folder it starts in (its home; the script then changes to ~/sky_workdir)."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(repr=False)
    cwd: Path


class Node:
    """One emulated node running one command in its own session. Its output goes straight into its
    log file, as on a SkyPilot node, so it outlives the launcher (a pipe to a killed launcher would
    break the job's writes); with `follow`, a thread copies new lines to stderr, prefixed."""

    def __init__(self, rank: int, command: NodeCommand, log_path: Path, follow: bool):
        self.rank = rank
        self.label = "head, rank=0" if rank == 0 else f"worker{rank}, rank={rank}"
        self.log_path = log_path
        with open(log_path, "wb") as log_file:
            self.proc = subprocess.Popen(
                command.argv,
                cwd=command.cwd,
                env=command.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pump: threading.Thread | None = None
        if follow:
            self._pump = threading.Thread(target=self._follow, daemon=True)
            self._pump.start()

    def _follow(self, poll: float = 0.1) -> None:
        prefix = f"({self.label}) ".encode()
        with open(self.log_path, "rb") as fh:
            while True:
                done = self.proc.poll() is not None
                for line in iter(fh.readline, b""):
                    if not line.startswith(BASH_I_NOISE):
                        sys.stderr.buffer.write(prefix + line)
                sys.stderr.buffer.flush()
                if done:
                    return
                time.sleep(poll)

    def wait_output(self) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)


def stop_nodes(nodes: Sequence[Node], grace: float, *, marker: str | None = None) -> _teardown.Teardown:
    """Stop every node as SkyPilot's cancel does: SIGTERM to every process of each node's tree (the
    supervisor, torchrun, its workers in their own sessions), once; the whole `grace` seconds for them to
    exit; SIGKILL what is left; reap the node roots. `marker`: the job's SKYOPS_LOCAL_JOB value, so that
    processes re-parented away from the node trees are found too (see _teardown)."""
    roots = [n.proc.pid for n in nodes if n.proc.poll() is None]

    def find() -> list[Any]:
        procs = _teardown.tree(n.proc.pid for n in nodes if n.proc.poll() is None)
        return procs + (_teardown.marked(_teardown.JOB_MARKER, marker) if marker else [])

    result = _teardown.stop(find, grace) if roots else _teardown.Teardown()
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=5)
        node.wait_output()
    if result.signalled:
        log.info(
            "teardown: %d process(es) stopped in %.1f s%s",
            result.signalled,
            result.seconds,
            f", {len(result.killed)} SIGKILLed after the {grace:.0f} s grace" if result.killed else "",
        )
    return result


@dataclass
class Interrupt:
    signum: int = 0


def run_phase(
    commands: Sequence[NodeCommand],
    log_paths: Sequence[Path],
    follow: bool,
    grace: float,
    events: queue.SimpleQueue,
    interrupt: Interrupt,
    first_rank: int = 0,
    started: Callable[[list[int]], None] | None = None,
    stopping: Callable[[], None] | None = None,
    marker: str | None = None,
    tick: Callable[[], None] | None = None,
) -> list[int] | None:
    """Run one phase (setup or run) on every node; returns the node exit codes, or None when
    interrupted (then `stopping` is called before the teardown). When a node fails, the others are
    stopped and recorded as 137 (SkyPilot's rule). A signal stops every node with the whole `grace`;
    repeated signals (Ctrl-C reaches the launcher twice: from the terminal and forwarded by `uv run`)
    change nothing (`jobs.py cancel --force` skips the grace). `tick` is called about every second
    while waiting (the progress line)."""
    nodes = [
        Node(rank, command, path, follow)
        for rank, (command, path) in enumerate(zip(commands, log_paths, strict=True), start=first_rank)
    ]
    if started is not None:
        started([n.proc.pid for n in nodes])
    for node in nodes:
        threading.Thread(target=lambda n=node: events.put(("exit", n, n.proc.wait())), daemon=True).start()
    codes: dict[int, int] = {}
    while len(codes) < len(nodes):
        try:
            kind, *rest = events.get(timeout=1.0)
        except queue.Empty:
            if tick is not None:
                tick()
            continue
        if kind == "exit" and rest[0] not in nodes:
            continue  # a node of an earlier phase, already accounted for
        if kind == "signal":
            interrupt.signum = rest[0]
            log.warning(
                "%s: stopping %d node(s); each process gets GRACE=%.0f s to exit (jobs.py cancel --force kills at once)",
                signal.Signals(rest[0]).name,
                len(nodes),
                grace - STOP_GRACE_EXTRA,
            )
            if stopping is not None:
                stopping()
            stopper = threading.Thread(target=stop_nodes, args=(nodes, grace), kwargs={"marker": marker})
            stopper.start()
            while stopper.is_alive():
                with contextlib.suppress(queue.Empty):
                    if events.get(timeout=0.2)[0] == "signal":
                        log.info("already stopping: waiting for the job's processes to exit")
            return None
        rank, code = rest[0].rank, exit_code_of(rest[1])
        codes[rank] = code
        if code != 0 and len(codes) < len(nodes):
            others = [n for n in nodes if n.rank not in codes]
            log.info("node %d exited %d: stopping the other node(s)", rank, code)
            stop_nodes(others, grace=grace)
            for other in others:
                codes[other.rank] = KILLED_PEER_CODE
    for node in nodes:
        node.wait_output()
    return [codes[node.rank] for node in nodes]


def nodes_dir(repo: Path, env: Mapping[str, str]) -> Path:
    """The emulated nodes' disks of this clone: `$XDG_CACHE_HOME/skyops/nodes/<repo path hash>` (default
    `~/.cache/...`), beside uv's own cache and never inside the repository. The path stays the same from
    job to job: uv keys a script's environment by the script's absolute path, so nodes whose copies of
    the repository keep their paths reuse the environments earlier setups built (a torch environment
    takes about 45 s to build with bytecode, 1 s to check), and uv's cache does not fill up with one
    environment per node, attempt and job (docs/decisions/local-backend.md)."""
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "skyops" / "nodes" / hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:12]


def workdir_files(repo: Path, skip: Sequence[Path] = ()) -> list[str]:
    """The repository's files a node's ~/sky_workdir receives, relative paths, sorted: its tracked and
    untracked files that git does not ignore (`git ls-files --cached --others --exclude-standard`; a
    deleted file is left out), as SkyPilot uploads a workdir without what .gitignore ignores and as
    --backend sky's git workdir holds what is committed. No `.git`: ~/sky_workdir is no repository
    here. Outside git (or without it), every file but `.git` and those under `skip`."""
    skip = [p.resolve() for p in skip]

    def kept(rel: str) -> bool:
        full = (repo / rel).absolute()
        return not any(full == s or s in full.parents for s in skip)

    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        names = sorted({n for n in os.fsdecode(out).split("\0") if n})
        return [n for n in names if os.path.lexists(repo / n) and kept(n)]
    except (OSError, subprocess.SubprocessError):
        log.debug("%s: not a git work tree (or no git): nodes receive every file but .git", repo)
    found = []
    for folder, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git" and kept(os.path.relpath(os.path.join(folder, d), repo))]
        found += [os.path.relpath(os.path.join(folder, f), repo) for f in files]
    return sorted(f for f in found if kept(f))


def copy_files(src: Path, files: Sequence[str], dest: Path) -> int:
    """Copy `files` (paths relative to `src`) into `dest`, creating folders: real copies, never hard
    links (a node that writes a file in place must not change the repository's, or another node's),
    with modes and times kept; symlinks stay symlinks; a listed folder (a submodule) is copied whole.
    A file that is gone by the time it is copied (an editor's swap file, a test's temporary file) is
    left out. Returns the bytes copied. Raises OSError."""
    total = 0
    made: set[Path] = set()
    for rel in files:
        source, target = src / rel, dest / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        try:
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            elif source.is_dir():
                shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            else:
                shutil.copy2(source, target)
                total += target.stat().st_size
        except FileNotFoundError:
            log.debug("workdir: %s is gone, left out", rel)
    return total


@dataclass(frozen=True)
class NodeDisk:
    """One emulated node's disk for one attempt, under `root`: `home/` (its HOME, with its copy of the
    repository at ~/sky_workdir), `tmp/` (its TMPDIR) and SkyPilot's script files. Made fresh at each
    attempt's start and removed at its end: every recovery lands on fresh VMs (EAGER_NEXT_REGION)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def workdir(self) -> Path:
        return self.home / SKY_WORKDIR

    def create(self, snapshot: Path) -> None:
        """Wipe whatever an earlier job left, then a fresh home holding a copy of `snapshot` (the
        repository's files as the job was launched) as ~/sky_workdir. Raises OSError."""
        self.remove()
        self.tmp.mkdir(parents=True)
        self.home.mkdir(mode=0o700)
        shutil.copytree(snapshot, self.workdir, symlinks=True)

    def write_script(self, name: str, text: str) -> Path:
        """A job script in the node's folder (owner-only; it never holds a secret: `_LocalJob.command`)."""
        path = self.root / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _job_lives(job_dir: Path) -> bool:
    """Whether a process of the job in `job_dir` may still run: its job.json shows no final state and
    a process carries its marker (a launcher killed with SIGKILL leaves its nodes running)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads((job_dir / "job.json").read_text()).get("state") not in LIVE:
            return False
    return bool(_teardown.marked(_teardown.JOB_MARKER, str(job_dir)))


@contextlib.contextmanager
def node_slot(nodes_dir: Path, job_dir: Path) -> Iterator[Path]:
    """The folder for the disks of this job's nodes, `<nodes_dir>/slot<k>`, with the smallest k that no
    other job holds, held until the context ends: a job holds its slot through its launcher's lock on
    `slot<k>.lock`, and, once its launcher was killed, through its live processes (the lock file names
    the job). Paths stay the same from job to job (nodes_dir says why). Raises OSError."""
    nodes_dir.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        fh = open(nodes_dir / f"slot{k}.lock", "a+")  # noqa: SIM115 (held open for the whole job)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fh.seek(0)
            owner = fh.read().strip()
            if not owner or owner == str(job_dir) or not _job_lives(Path(owner)):
                fh.seek(0)
                fh.truncate()
                fh.write(f"{job_dir}\n")
                fh.flush()
                break
        except BlockingIOError:
            pass
        except BaseException:
            fh.close()
            raise
        fh.close()
        k += 1
    try:
        yield nodes_dir / f"slot{k}"
    finally:
        fh.close()


def prepare(cfg: LaunchConfig) -> LaunchConfig:
    """`cfg` with the local backend's defaults applied, so that --dry-run
    shows what the nodes will get: GPUs 0 unless --gpus; DATA_DIR `.skyops/data` unless the user
    set one (a relative path is relative to the repository); a free MASTER_PORT unless set; no NCCL
    preflight on CPU unless NCCL_PREFLIGHT is set.

    Raises ConfigError for more nodes than one machine can emulate.
    """
    from dataclasses import replace

    from _config import ConfigError

    if cfg.nodes > MAX_LOCAL_NODES:
        raise ConfigError(
            f"--nodes {cfg.nodes}: the local backend emulates at most {MAX_LOCAL_NODES} nodes on one machine"
        )
    owned = [k for k in _config.GIT_ENVS if k in cfg.envs and cfg.sources.get(k) != "job.yaml"]
    if owned:  # the local backend runs the working tree as it is: no commit to name
        source = cfg.sources[owned[0]]
        where = f"--set {owned[0]}" if source == "flag" else source
        raise ConfigError(
            f"{where}: {owned[0]} is set by the launcher (on --backend sky, from the git state); remove it"
        )
    envs = dict(cfg.envs)
    if cfg.sources.get("DATA_DIR", "job.yaml") == "job.yaml":
        envs["DATA_DIR"] = str(cfg.state_dir / "data")
    else:
        envs["DATA_DIR"] = str((cfg.repo / envs["DATA_DIR"]).resolve())
    if cfg.sources.get("MASTER_PORT", "job.yaml") == "job.yaml":
        envs["MASTER_PORT"] = str(free_port())
    gpus = cfg.gpus or 0
    if not gpus and cfg.sources.get("NCCL_PREFLIGHT", "job.yaml") == "job.yaml":
        # On CPU the preflight runs gloo over loopback with no bandwidth floor: it proves little and costs
        # about 5 s of every attempt (docs/decisions/nccl-preflight.md). Asked for, it runs.
        envs["NCCL_PREFLIGHT"] = "0"
    if gpus and not shutil.which("nvidia-smi"):
        log.warning(
            "--gpus %d: this machine shows no NVIDIA GPU (no nvidia-smi); the job decides what to run on",
            gpus,
        )
    return replace(cfg, envs=envs, gpus=gpus)


#: Free space in DATA_DIR under which the launcher warns (docs/decisions/endings.md): a checkpoint of a
#: small model plus the logs; a job whose checkpoint write fails on a full disk fails with ENOSPC.
LOW_SPACE_BYTES = 2 * 2**30
LOCK_NAME = ".skyops-run.lock"


def check_data_dir(data_dir: Path) -> None:
    """Refuse a DATA_DIR that cannot be written (ConfigError naming DATA_DIR, the path and the errno,
    e.g. `DATA_DIR=/mnt/ro: not writable: EROFS (Read-only file system)`), before anything is written
    or launched; warn when it has under LOW_SPACE_BYTES free."""
    from _config import ConfigError

    probe = data_dir / f".skyops-probe-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        import errno

        name = errno.errorcode.get(exc.errno or 0, "error")
        raise ConfigError(f"DATA_DIR={data_dir}: not writable: {name} ({exc.strerror})") from None
    with contextlib.suppress(OSError):
        free = shutil.disk_usage(data_dir).free
        if free < LOW_SPACE_BYTES:
            log.warning(
                "DATA_DIR=%s has %.2f GiB free (under %.0f GiB): checkpoint writes may fail with ENOSPC",
                data_dir,
                free / 2**30,
                LOW_SPACE_BYTES / 2**30,
            )


def run_owner(run_data: Path) -> tuple[str, int] | None:
    """The job that owns `run_data` ($DATA_DIR/$RUN_ID/) because some process of it is alive, with or
    without its launcher: (its job directory, its live process count); None when no process is."""
    procs = _teardown.marked(_teardown.RUN_MARKER, str(run_data))
    for proc in procs:
        with contextlib.suppress(Exception):
            return proc.environ().get(_teardown.JOB_MARKER, "?"), len(procs)
    return None


@contextlib.contextmanager
def run_lock(run_data: Path, run: str, job_dir: Callable[[], Path]) -> Iterator[None]:
    """Own a run's durable state `run_data` (`$DATA_DIR/$RUN_ID/`: checkpoints, the attempt ledger) while
    its job runs, whichever clone launched it: a lock file while the launcher lives, and the job's
    processes themselves (run_owner) when the launcher was killed and its nodes live on. Raises
    ConfigError naming the running job and `jobs.py cancel` if another job owns it. `job_dir` gives
    this job's directory, written into the lock file for the next one's message."""
    from _config import ConfigError

    def refuse(owner: str, how: str) -> ConfigError:
        job = Path(owner).name.removeprefix("job-") if owner else "?"
        return ConfigError(
            f"--run {run}: job {job} of this run is still running ({how}); stop it with"
            f" `jobs.py cancel {job}` (make cancel ID={job}), or pick another --run"
        )

    run_data.mkdir(parents=True, exist_ok=True)
    with open(run_data / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise refuse(fh.read().strip(), "its launcher holds the run") from None
        owner = run_owner(run_data)
        if owner is not None:
            raise refuse(owner[0], f"its launcher is gone, {owner[1]} of its processes live on")
        owner_line = f"{job_dir()}\n"
        with contextlib.suppress(OSError):  # only names the owner in the next refusal; a full disk is fine
            os.ftruncate(fh.fileno(), 0)
            os.pwrite(fh.fileno(), owner_line.encode(), 0)
        yield


def launch(cfg: LaunchConfig, task_yaml: str) -> int:
    """Run the task of `cfg` (after `prepare`) on `cfg.nodes` emulated nodes;
    block until done. `task_yaml` is the resolved task (secrets redacted), kept in the run directory.

    Returns 0 if the job succeeded, 1 if it failed (or its runtime budget ran out before it started),
    130 (SIGINT) or 128+N (signal N) if interrupted. Raises ConfigError (nothing launched) if DATA_DIR
    cannot be written, JOB is a file the nodes do not receive (git ignores it), or another job of the
    same run (same `$DATA_DIR/$RUN_ID/`) is still running.
    """
    data_dir = Path(cfg.envs["DATA_DIR"])
    check_data_dir(data_dir)
    files = workdir_files(cfg.repo, skip=[cfg.state_dir])
    check_job_received(cfg.job, files)
    run_data = data_dir / cfg.envs.get("RUN_ID", cfg.run)
    state_dir = cfg.state_dir
    job_id: list[int] = []

    def job_dir() -> Path:
        job_id.append(allocate_job_id(state_dir))
        return state_dir / "runs" / cfg.run / f"job-{job_id[0]}"

    with run_lock(run_data, cfg.run, job_dir):
        return _launch_locked(cfg, task_yaml, state_dir, job_id[0], run_data, files)


def check_job_received(job: str, files: Sequence[str]) -> None:
    """Raise ConfigError when JOB (a path relative to the repository; "" when the task runs none; a
    `-m NAME` module is not checked here) is not among the `files` every node's ~/sky_workdir receives
    (`workdir_files`): git ignores it."""
    from _config import ConfigError

    if job.startswith("-"):
        return
    if job and job not in files and not any(job.startswith(f"{f}/") for f in files):
        raise ConfigError(
            f"JOB {job!r}: git ignores it, so the nodes' ~/sky_workdir does not have it (nodes receive"
            " the repository's files that git does not ignore); un-ignore it or move it"
        )


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


def _launch_locked(
    cfg: LaunchConfig, task_yaml: str, state_dir: Path, job_id: int, run_data: Path, files: Sequence[str]
) -> int:
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
    job = _LocalJob(
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
        os.path.relpath(job_dir, Path.cwd()),
    )
    # The workdir as launched, as SkyPilot uploads it once per managed job: every attempt's nodes get
    # this, whatever changes in the repository meanwhile. Removed when the job ends (logs stay).
    job.snapshot = job_dir / "workdir"
    try:
        started = time.monotonic()
        size = copy_files(cfg.repo, files, job.snapshot)
        log.debug(
            "workdir: %d files, %.1f MB copied in %.3f s", len(files), size / 1e6, time.monotonic() - started
        )
        with node_slot(nodes_dir(cfg.repo, cfg.base_env), job_dir) as job.slot:
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
            logs = [
                attempt_dir / (f"setup-node{r}.log" if phase == "setup" else f"node{r}.log") for r in range(n)
            ]
            codes = run_phase(
                node_commands, logs, cfg.follow, job.grace, job.events, job.interrupt,
                started=record_pids, stopping=stopping, marker=str(job.job_dir), tick=job.progress.tick,
            )  # fmt: skip
            record[f"{phase}_exit_codes"] = codes
            if codes is None or any(codes):
                break
    finally:
        # What the nodes' scripts left running (a daemon started in `setup`, a background `&`) dies with
        # the node on SkyPilot: here, with the attempt, and with the job's GRACE like every ending.
        if codes is not None and (left := _teardown.marked(_teardown.JOB_MARKER, str(job.job_dir))):
            log.warning(
                "run %s: %d process(es) outlived the nodes' scripts: stopping them", cfg.run, len(left)
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
    return phase, codes


def _recovery_loop(job: _LocalJob) -> int:
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
        failed = JobState.FAILED_SETUP if phase == "setup" else JobState.FAILED
        _show_failure(cfg.run, attempt_dir, phase, codes)
        first = first_cause(results)
        detail = f"{phase} failed with node exit codes {codes}" + (f": {first}" if first else "")
        if any(r.get("reason") == REASON_CRASH_LOOP for r in results):
            # A node that declares a crash loop cancels its own managed job through SkyPilot's API server
            # (run.py, docs/decisions/endings.md); the local backend does what SkyPilot then does.
            reason = f"crash_loop: {detail}; the node cancelled the managed job (no further attempt)"
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


def _show_failure(run: str, attempt_dir: Path, phase: str, codes: Sequence[int], lines: int = 40) -> None:
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


def _user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"
