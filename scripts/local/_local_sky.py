"""SkyPilot's side of an emulated node (docs/decisions/local-backend.md): the job scripts SkyPilot 0.14.1
writes for a managed job's `setup` and `run` (`sky_script`: its prologue, one `export` per variable,
the commands), the variables it sets on every node (`sky_task_vars`, `sky_node_vars`) and a node's
process environment (`node_env`): the launcher's own, without what would lead the node back to it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
