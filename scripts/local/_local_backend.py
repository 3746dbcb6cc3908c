"""The local backend: job.yaml's `setup` and `run` on N emulated nodes on this machine.

Each node is its own process tree (its own session), started with SkyPilot's environment contract
(../shared/notes/skypilot.md): SKYPILOT_NODE_RANK, SKYPILOT_NODE_IPS (loopback, one per line),
SKYPILOT_NUM_NODES, SKYPILOT_NUM_GPUS_PER_NODE, SKYPILOT_TASK_ID (managed-job format),
SKYPILOT_MANAGED_JOB_ID, SKYPILOT_CLUSTER_INFO, SKYPILOT_USER and the setup-time variables, plus the
task's envs and secrets. The job follows SkyPilot's managed-job rules:

- success only if every node exits 0; when one node fails the others are killed and recorded as 137;
- job recovery: a failure whose node exit codes include one of `recover_on_exit_codes` restarts
  without counting; any other failure (setup included) spends `max_restarts_on_errors`;
- every restart is a fresh attempt on "fresh nodes": node-local scratch (TMPDIR) is new.

Node logs go to `.skyops/runs/<run>/job-<id>/attempt<N>/`; `job.json` there records the state.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from _config import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK

log = logging.getLogger("skyops.local")

KILLED_PEER_CODE = 137  # what SkyPilot records for the nodes it kills after another node failed
SECOND_SIGNAL_AFTER = 1.0  # seconds: a later Ctrl-C skips the grace period and kills at once
STOP_GRACE_EXTRA = 10.0
MAX_LOCAL_NODES = 32  # emulated nodes on one machine  # seconds on top of the supervisor's GRACE before the launcher uses SIGKILL

#: Variables of the launcher's own environment that must not leak into an emulated node.
_NODE_ENV_DROP_PREFIXES = ("SKYPILOT_", "TORCHELASTIC_")
_NODE_ENV_DROP = frozenset(
    {
        "VIRTUAL_ENV",
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
    }
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


def node_env(
    base: Mapping[str, str],
    task_envs: Mapping[str, str],
    secrets: Mapping[str, str],
    cluster: Cluster,
    rank: int,
    *,
    setup: bool,
    tmpdir: str | None = None,
) -> dict[str, str]:
    """The environment of one emulated node for `setup` or `run` (formats: notes/skypilot.md)."""
    env = {
        k: v for k, v in base.items() if k not in _NODE_ENV_DROP and not k.startswith(_NODE_ENV_DROP_PREFIXES)
    }
    venv = base.get("VIRTUAL_ENV")
    if venv and "PATH" in env:  # the launcher's own uv environment is not the node's
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(venv))
    env.update(task_envs)
    env.update(secrets)
    ips = "\n".join(cluster.ips)
    env.update(
        {
            "SKYPILOT_NUM_NODES": str(cluster.num_nodes),
            "SKYPILOT_CLUSTER_INFO": cluster.cluster_info,
            "SKYPILOT_USER": cluster.user,
            "SKYPILOT_TASK_ID": cluster.task_id,
            "SKYPILOT_MANAGED_JOB_ID": str(cluster.job_id),
            # Nodes share one machine: keep torch.distributed traffic on loopback.
            "GLOO_SOCKET_IFNAME": base.get("GLOO_SOCKET_IFNAME", "lo"),
            "NCCL_SOCKET_IFNAME": base.get("NCCL_SOCKET_IFNAME", "lo"),
        }
    )
    if setup:
        env.update(
            {
                "SKYPILOT_SETUP_NODE_RANK": str(rank),
                "SKYPILOT_SETUP_NODE_IPS": ips,
                "SKYPILOT_SETUP_NUM_GPUS_PER_NODE": str(cluster.gpus_per_node),
            }
        )
    else:
        env.update(
            {
                "SKYPILOT_NODE_RANK": str(rank),
                "SKYPILOT_NODE_IPS": ips,
                "SKYPILOT_NUM_GPUS_PER_NODE": str(cluster.gpus_per_node),
            }
        )
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
        path.write_text(f"{last + 1}\n")
        return last + 1


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def exit_code_of(returncode: int) -> int:
    """A Popen returncode as a shell would report it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


class Node:
    """One emulated node running one bash script in its own session, its output copied to a log."""

    def __init__(self, rank: int, script: str, env: dict[str, str], cwd: Path, log_path: Path, follow: bool):
        self.rank = rank
        self.label = "head, rank=0" if rank == 0 else f"worker{rank}, rank={rank}"
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed by the pump thread
        self.proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, args=(follow,), daemon=True)
        self._pump.start()

    def _copy_output(self, follow: bool) -> None:
        assert self.proc.stdout is not None
        prefix = f"({self.label}) ".encode()
        with self._log:
            for line in iter(self.proc.stdout.readline, b""):
                self._log.write(line)
                self._log.flush()
                if follow:
                    sys.stderr.buffer.write(prefix + line)
                    sys.stderr.buffer.flush()

    def wait_output(self) -> None:
        self._pump.join(timeout=5)


def _descendants(pids: Sequence[int]) -> dict[int, Any]:
    import psutil

    found: dict[int, Any] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            found[pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
    return found


def stop_nodes(nodes: Sequence[Node], grace: float, *, kill_now: threading.Event | None = None) -> None:
    """Stop every node as a cancel does: SIGTERM to each node's process group and to every process of
    its tree, including those in sessions of their own (torchrun workers); wait until all of them have
    exited or `grace` seconds have passed (or `kill_now` is set); SIGKILL whatever is left; reap."""
    import psutil

    running = [n for n in nodes if n.proc.poll() is None]
    roots = {n.proc.pid for n in running}
    seen = _descendants(list(roots))
    for node in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.proc.pid, signal.SIGTERM)
    for pid, proc in seen.items():
        if pid not in roots:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not (kill_now is not None and kill_now.is_set()):
        live_roots = [n.proc.pid for n in running if n.proc.poll() is None]
        seen.update(_descendants(live_roots))
        if not live_roots and not any(_alive(p) for pid, p in seen.items() if pid not in roots):
            break
        time.sleep(0.1)
    seen.update(_descendants([n.proc.pid for n in running if n.proc.poll() is None]))
    survivors = [p for pid, p in seen.items() if pid not in roots and _alive(p)]
    for node in running:
        if node.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)
    for proc in survivors:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(survivors, timeout=5)
    for node in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(timeout=5)
        node.wait_output()


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Interrupt:
    signum: int = 0


def run_phase(
    scripts: Sequence[tuple[str, dict[str, str]]],
    cwd: Path,
    log_paths: Sequence[Path],
    follow: bool,
    grace: float,
    events: queue.SimpleQueue,
    interrupt: Interrupt,
    first_rank: int = 0,
    started: Callable[[list[int]], None] | None = None,
) -> list[int] | None:
    """Run one phase (setup or run) on every node; returns the node exit codes, or None when
    interrupted. When a node fails, the others are stopped and recorded as 137 (SkyPilot's rule)."""
    nodes = [
        Node(rank, script, env, cwd, path, follow)
        for rank, ((script, env), path) in enumerate(zip(scripts, log_paths, strict=True), start=first_rank)
    ]
    if started is not None:
        started([n.proc.pid for n in nodes])
    for node in nodes:
        threading.Thread(target=lambda n=node: events.put(("exit", n, n.proc.wait())), daemon=True).start()
    codes: dict[int, int] = {}
    kill_now = threading.Event()
    while len(codes) < len(nodes):
        kind, *rest = events.get()
        if kind == "exit" and rest[0] not in nodes:
            continue  # a node of an earlier phase, already accounted for
        if kind == "signal":
            interrupt.signum = rest[0]
            log.warning("interrupted: stopping %d node(s) (again to kill at once)", len(nodes))
            stopper = threading.Thread(target=stop_nodes, args=(nodes, grace), kwargs={"kill_now": kill_now})
            stopper.start()
            first = time.monotonic()
            while stopper.is_alive():
                with contextlib.suppress(queue.Empty):
                    # Ctrl-C reaches the launcher twice at once (from the terminal and forwarded by
                    # `uv run`): only a signal after SECOND_SIGNAL_AFTER seconds means "kill now".
                    if (
                        events.get(timeout=0.2)[0] == "signal"
                        and time.monotonic() - first > SECOND_SIGNAL_AFTER
                    ):
                        kill_now.set()
            return None
        rank, code = rest[0].rank, exit_code_of(rest[1])
        codes[rank] = code
        if code != 0 and len(codes) < len(nodes):
            others = [n for n in nodes if n.rank not in codes]
            log.info("node %d exited %d: stopping the other node(s)", rank, code)
            stop_nodes(others, grace=min(grace, 10.0))
            for other in others:
                codes[other.rank] = KILLED_PEER_CODE
                with contextlib.suppress(subprocess.TimeoutExpired):
                    other.proc.wait(timeout=1)
    for node in nodes:
        node.wait_output()
    return [codes[node.rank] for node in nodes]


def prepare(cfg: Any) -> Any:
    """`cfg` (a launch.LaunchConfig) with the local backend's defaults applied, so that --dry-run
    shows what the nodes will get: GPUs 0 unless --gpus; DATA_DIR `.skyops/data` unless the user
    set one (a relative path is relative to the repository); a free MASTER_PORT unless set.

    Raises ConfigError for more nodes than one machine can emulate.
    """
    from dataclasses import replace

    from _config import ConfigError

    if cfg.nodes > MAX_LOCAL_NODES:
        raise ConfigError(
            f"--nodes {cfg.nodes}: the local backend emulates at most {MAX_LOCAL_NODES} nodes on one machine"
        )
    envs = dict(cfg.envs)
    if cfg.sources.get("DATA_DIR", "job.yaml") == "job.yaml":
        envs["DATA_DIR"] = str(cfg.repo / ".skyops" / "data")
    else:
        envs["DATA_DIR"] = str((cfg.repo / envs["DATA_DIR"]).resolve())
    if cfg.sources.get("MASTER_PORT", "job.yaml") == "job.yaml":
        envs["MASTER_PORT"] = str(free_port())
    gpus = cfg.gpus or 0
    if gpus and not shutil.which("nvidia-smi"):
        log.warning(
            "--gpus %d: this machine shows no NVIDIA GPU (no nvidia-smi); the job decides what to run on",
            gpus,
        )
    return replace(cfg, envs=envs, gpus=gpus)


@contextlib.contextmanager
def run_lock(run_data: Path, run: str) -> Iterator[None]:
    """Hold the lock of a run's durable state `run_data` (`$DATA_DIR/$RUN_ID/`: checkpoints, the
    attempt ledger) while its job runs, whichever clone launched it. Raises ConfigError if another
    job holds it."""
    from _config import ConfigError

    run_data.mkdir(parents=True, exist_ok=True)
    with open(run_data / ".skyops-run.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"--run {run}: a job of this run is still running on this machine (it holds {run_data});"
                " wait for it, cancel it, or pick another --run"
            ) from None
        yield


def launch(cfg: Any, task_yaml: str) -> int:
    """Run the task of `cfg` (a launch.LaunchConfig, after `prepare`) on `cfg.nodes` emulated nodes;
    block until done. `task_yaml` is the resolved task (secrets redacted), kept in the run directory.

    Returns 0 if the job succeeded, 1 if it failed, 130 (SIGINT) or 128+N (signal N) if interrupted.
    Raises ConfigError if another job of the same run (same `$DATA_DIR/$RUN_ID/`) is still running.
    """
    run_data = Path(cfg.envs["DATA_DIR"]) / cfg.envs.get("RUN_ID", cfg.run)
    with run_lock(run_data, cfg.run):
        return _launch_locked(cfg, task_yaml, cfg.repo / ".skyops")


def _launch_locked(cfg: Any, task_yaml: str, state_dir: Path) -> int:
    assert cfg.task is not None
    job_id = allocate_job_id(state_dir)
    job_dir = state_dir / "runs" / cfg.run / f"job-{job_id}"
    job_dir.mkdir(parents=True)
    if cfg.print_id:
        print(cfg.run, flush=True)

    envs = dict(cfg.envs)
    Path(envs["DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    for key in cfg.missing_secrets:
        log.warning(
            "secret %s is not set (.env or environment): the local backend runs without it; --backend sky would refuse",
            key,
        )

    (job_dir / "task.yaml").write_text(task_yaml)
    max_restarts, recover_codes = job_recovery_settings(cfg.task.config.get("resources"), cfg.max_restarts)
    grace = float(envs.get("GRACE", "60") or 60) + STOP_GRACE_EXTRA
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
        "state": "STARTING",
        "launcher_pid": os.getpid(),
        "num_nodes": cfg.nodes,
        "recovery_count": 0,
        "attempts": [],
        "failure_reason": None,
        "submitted_at": time.time(),
    }
    write_json(job_dir / "job.json", status)
    log.info(
        "run %s: local job %d on %d node(s); logs in %s",
        cfg.run,
        job_id,
        cfg.nodes,
        os.path.relpath(job_dir, Path.cwd()),
    )

    events: queue.SimpleQueue = queue.SimpleQueue()
    interrupt = Interrupt()
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: events.put(("signal", signum)))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        return _recovery_loop(
            cfg, envs, cluster, job_dir, status, events, interrupt, grace, max_restarts, recover_codes
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _recovery_loop(
    cfg: Any,
    envs: dict[str, str],
    cluster: Cluster,
    job_dir: Path,
    status: dict[str, Any],
    events: queue.SimpleQueue,
    interrupt: Interrupt,
    grace: float,
    max_restarts: int,
    recover_codes: list[int],
) -> int:
    restarts_on_errors = 0
    attempt = 0
    while True:
        attempt += 1
        attempt_dir = job_dir / f"attempt{attempt}"
        attempt_dir.mkdir()
        record: dict[str, Any] = {"attempt": attempt, "started_at": time.time()}
        status["attempts"].append(record)
        tmpdirs = [attempt_dir / f"node{rank}.tmp" for rank in range(cluster.num_nodes)]
        for path in tmpdirs:
            path.mkdir()
        phases = [("setup", cfg.task.config.get("setup")), ("run", cfg.task.config["run"])]

        def record_pids(pids: list[int]) -> None:
            """Node process-group leaders in job.json: `jobs.py cancel` can reach them if the
            launcher dies without tearing down."""
            status["node_pids"] = pids
            write_json(job_dir / "job.json", status)

        codes: list[int] | None = []
        phase = "run"
        for phase, script in phases:
            if not script:
                continue
            status["state"] = "STARTING" if phase == "setup" else "RUNNING"
            write_json(job_dir / "job.json", status)
            scripts = [
                (
                    script,
                    node_env(
                        cfg.base_env,
                        envs,
                        cfg.secrets,
                        cluster,
                        rank,
                        setup=phase == "setup",
                        tmpdir=str(tmpdirs[rank]),
                    ),
                )
                for rank in range(cluster.num_nodes)
            ]
            logs = [
                attempt_dir / (f"setup-node{r}.log" if phase == "setup" else f"node{r}.log")
                for r in range(cluster.num_nodes)
            ]
            if phase == "setup":
                # Node by node: the emulated nodes share one uv cache, and concurrent `uv sync` of the
                # same script environment races (SkyPilot runs setup in parallel on separate machines).
                codes = []
                for rank in range(cluster.num_nodes):
                    one = run_phase(
                        scripts[rank : rank + 1],
                        cfg.repo,
                        logs[rank : rank + 1],
                        cfg.follow,
                        grace,
                        events,
                        interrupt,
                        first_rank=rank,
                        started=record_pids,
                    )
                    codes = None if one is None else codes + one
                    if not codes or codes[-1]:
                        break
                if codes and len(codes) < cluster.num_nodes:
                    codes += [KILLED_PEER_CODE] * (cluster.num_nodes - len(codes))
            else:
                codes = run_phase(
                    scripts, cfg.repo, logs, cfg.follow, grace, events, interrupt, started=record_pids
                )
            record[f"{phase}_exit_codes"] = codes
            if codes is None or any(codes):
                break
        record["ended_at"] = time.time()
        for path in tmpdirs:  # "fresh nodes" next time: node-local disk is lost
            shutil.rmtree(path, ignore_errors=True)
        if codes is None:
            status["state"] = "CANCELLED"
            status["failure_reason"] = f"interrupted by {signal.Signals(interrupt.signum).name}"
            write_json(job_dir / "job.json", status)
            log.warning("run %s: cancelled; every node stopped", cfg.run)
            return EXIT_INTERRUPTED if interrupt.signum == signal.SIGINT else 128 + interrupt.signum
        if not any(codes):
            status["state"] = "SUCCEEDED"
            write_json(job_dir / "job.json", status)
            log.info("run %s: SUCCEEDED (attempt %d, node exit codes %s)", cfg.run, attempt, codes)
            return EXIT_OK
        decision, restarts_on_errors = recovery_decision(
            codes, recover_codes, restarts_on_errors, max_restarts
        )
        failed = "FAILED_SETUP" if phase == "setup" else "FAILED"
        _show_failure(cfg.run, attempt_dir, phase, codes)
        why = node_reasons(
            Path(envs["DATA_DIR"]) / envs.get("RUN_ID", cfg.run), cluster.num_nodes, record["started_at"]
        )
        record["node_reasons"] = why
        if decision == "fail":
            status["state"] = failed
            status["failure_reason"] = (
                f"{phase} failed with node exit codes {codes}"
                + (f" ({'; '.join(why)})" if why else "")
                + f"; max_restarts_on_errors={max_restarts} spent"
            )
            write_json(job_dir / "job.json", status)
            log.error("run %s: %s (%s)", cfg.run, failed, status["failure_reason"])
            return EXIT_FAILED
        status["recovery_count"] += 1
        status["state"] = "RECOVERING"
        write_json(job_dir / "job.json", status)
        if decision == "recover":
            log.warning(
                "run %s: node exit codes %s include a recover_on_exit_codes code: recovering onto fresh nodes (not counted)",
                cfg.run,
                codes,
            )
        else:
            log.warning(
                "run %s: restart %d of %d after node exit codes %s%s",
                cfg.run,
                restarts_on_errors,
                max_restarts,
                codes,
                f" ({'; '.join(why)})" if why else "",
            )


def node_reasons(run_data: Path, num_nodes: int, since: float) -> list[str]:
    """The supervisor's end-of-attempt reason of every node that wrote one since `since` (Unix
    seconds), from `$DATA_DIR/$RUN_ID/supervisor/result-node<rank>.json` (docs/contract.md), e.g.
    `["node0: sigterm (exit 143)", "node1: job_failed (exit 3)"]`. Unreadable results are skipped."""
    reasons = []
    for rank in range(num_nodes):
        path = run_data / "supervisor" / f"result-node{rank}.json"
        with contextlib.suppress(OSError, ValueError, TypeError):
            if path.stat().st_mtime >= since:
                result = json.loads(path.read_text())
                cause = f": {result['cause']}" if result.get("cause") else ""
                reasons.append(f"node{rank}: {result['reason']} (exit {result['exit_code']}){cause}")
    return reasons


def _show_failure(run: str, attempt_dir: Path, phase: str, codes: Sequence[int], lines: int = 40) -> None:
    """Log the tail of the first failed node's log, so the reason is visible without opening files."""
    for rank, code in enumerate(codes):
        if code not in (0, KILLED_PEER_CODE):
            path = attempt_dir / (f"setup-node{rank}.log" if phase == "setup" else f"node{rank}.log")
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
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
