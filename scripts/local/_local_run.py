"""A local launch before its nodes start: the local backend's defaults for it (`prepare`), the wheel
folder its nodes' uv may use (`pip_find_links`), its job id
(`allocate_job_id`), a DATA_DIR it can write (`check_data_dir`), and its run's durable state
`$DATA_DIR/$RUN_ID/`, which one job at a time owns, whichever clone launched it (`run_lock`,
`run_owner`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import _atomic
import _config
import _teardown
from _config import ConfigError, LaunchConfig

log = logging.getLogger("skyops.local")

MAX_LOCAL_NODES = 32  # emulated nodes on one machine


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pip_find_links(environ: Mapping[str, str]) -> str | None:
    """The wheel folder pip is configured with (PIP_FIND_LINKS, else `pip config`), for uv on the
    local backend's nodes: where these machines keep torch's CPU build. None when pip has none."""
    if environ.get("PIP_FIND_LINKS"):
        return environ["PIP_FIND_LINKS"]
    try:
        out = subprocess.run(
            ["python3", "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or None


def prepare(cfg: LaunchConfig) -> LaunchConfig:
    """`cfg` with the local backend's defaults applied, so that --dry-run shows what the nodes will
    get: GPUs 0 unless --gpus; DATA_DIR `.skyops/data` unless the user set one (a relative path is
    relative to the repository); a free MASTER_PORT unless set; no NCCL preflight on CPU unless
    NCCL_PREFLIGHT is set.

    Raises ConfigError for more nodes than one machine can emulate.
    """
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


def allocate_job_id(state_dir: Path) -> int:
    """The next local managed-job id (1, 2, ...), race-free across concurrent launches."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "job_ids.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        path = state_dir / "last_job_id"
        last = int(path.read_text().strip() or 0) if path.exists() else 0
        _atomic.write_text(path, f"{last + 1}\n")
        return last + 1


#: Free space in DATA_DIR under which the launcher warns (docs/decisions/endings.md): a checkpoint of a
#: small model plus the logs; a job whose checkpoint write fails on a full disk fails with ENOSPC.
LOW_SPACE_BYTES = 2 * 2**30
LOCK_NAME = ".skyops-run.lock"


def check_data_dir(data_dir: Path) -> None:
    """Refuse a DATA_DIR that cannot be written (ConfigError naming DATA_DIR, the path and the errno,
    e.g. `DATA_DIR=/mnt/ro: not writable: EROFS (Read-only file system)`), before anything is written
    or launched; warn when it has under LOW_SPACE_BYTES free."""
    probe = data_dir / f".skyops-probe-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
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
