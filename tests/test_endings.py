"""How a job ends, end to end on the local backend: real launcher, real supervisor, torchrun, signals.

Each test launches job.yaml with a real job (tests/jobs/graceful.py: every torchrun worker saves a
"checkpoint" on SIGTERM, which takes HANDLER_S seconds, and leaves a descendant in its own session
that ignores SIGTERM) and ends it one way, then checks the promises: the handler got its grace period,
no process of the job survives, and the reason is shown in the launcher's last line, `jobs.py status`
and `jobs.py logs`. Every wait is on an event (a file appearing, a process exiting), never a sleep.
The same paths, repeated, fill docs/reliability.md (benchmarks/reliability.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import _jobs_local
import psutil
import pytest
from conftest import REPO, STATE, UV_LAUNCH, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = STATE / "runs"
GRACE = 8  # seconds: longer than the handler's 3 s, short enough for a test


def launcher(
    run: str, out: Path, *args: str, job: str = "tests/jobs/graceful.py", **env: str
) -> subprocess.Popen:
    """`uv run --script scripts/local/launch.py` as a person types it, in a session of its own (as a
    terminal's foreground job is), with stderr kept for the last line."""
    sets = [f"OUT={out}", f"GRACE={GRACE}", "NCCL_PREFLIGHT=0", *(f"{k}={v}" for k, v in env.items())]
    argv = [
        *UV_LAUNCH,
        "--nodes",
        "2",
        "--run",
        run,
        *(a for kv in sets for a in ("--set", kv)),
        *args,
        *job.split(),
    ]
    return subprocess.Popen(
        argv, cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"launcher exited {proc.returncode}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def started(out: Path, n: int = 2) -> bool:
    return len(list(out.glob("started-*"))) >= n and len(list(out.glob("stray-*"))) >= n


def job_dir(run: str) -> Path:
    return next((RUNS / run).glob("job-*"))


def survivors(run: str, out: Path) -> list[int]:
    """Live processes of the job: marked with its job directory, or one of its strays."""
    marked = {p.pid for p in psutil.process_iter() if _marker(p) == str(job_dir(run))}
    strays = {int(p.read_text()) for p in out.glob("stray-*")}
    return sorted(pid for pid in marked | strays if _alive(pid))


def _marker(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("SKYOPS_LOCAL_JOB")
    except psutil.Error:
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_launcher(run: str, proc: subprocess.Popen) -> None:
    """kill -9 of the launcher itself (the Python process under `uv run`, as job.json records it):
    its nodes live on in their own sessions."""
    pid = json.loads((job_dir(run) / "job.json").read_text())["launcher_pid"]
    os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def jobs_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["uv", "run", "--quiet", "--script", "scripts/local/jobs.py", *args],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def status_row(run: str) -> dict:
    done = jobs_cli("status", "--json", run)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("path", ["ctrl-c", "jobs.py cancel", "sigterm"])
def test_every_path_gives_the_handler_its_grace_and_leaves_no_process(tmp_path: Path, path: str) -> None:
    run = f"end-{uuid.uuid4().hex[:6]}"
    proc = launcher(run, tmp_path)
    wait_for(lambda: started(tmp_path), 180, proc)
    if path == "ctrl-c":  # as a terminal sends it: to the whole foreground group, so uv forwards it too
        os.killpg(proc.pid, signal.SIGINT)
    elif path == "sigterm":
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGTERM)  # a duplicate never shortens the grace period
    else:
        done = jobs_cli("cancel", run)
        assert done.returncode == 0, done.stderr
        assert f"every process gets GRACE={GRACE} s" in done.stderr
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == {"ctrl-c": 130, "sigterm": 143, "jobs.py cancel": 143}[path], err[-3000:]
    assert sorted(p.name for p in tmp_path.glob("saved-*")) == ["saved-0", "saved-1"], err[-3000:]
    assert survivors(run, tmp_path) == []
    row = status_row(run)
    assert row["status"] == "CANCELLED"
    expected = {"ctrl-c": "SIGINT", "sigterm": "SIGTERM to the launcher", "jobs.py cancel": "jobs.py cancel"}[
        path
    ]
    assert expected in row["reason"] and expected in last_line(err)
    logs = jobs_cli("logs", run)
    assert logs.returncode == 1 and expected in last_line(logs.stderr)


def test_after_a_launcher_sigkill_the_run_stays_owned_and_cancel_leaves_nothing(tmp_path: Path) -> None:
    run = f"k9-{uuid.uuid4().hex[:6]}"
    proc = launcher(run, tmp_path)
    wait_for(lambda: started(tmp_path), 180, proc)
    kill_launcher(run, proc)
    row = status_row(run)
    assert row["status"] == "RUNNING (launcher gone)" and "live on" in row["reason"]
    again = launcher(run, tmp_path / "again")
    _, err = again.communicate(timeout=120)
    job_id = job_dir(run).name.removeprefix("job-")
    assert again.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert f"job {job_id} of this run is still running" in err and f"jobs.py cancel {job_id}" in err
    assert len(list((RUNS / run).glob("job-*"))) == 1, "nothing was launched or written"
    began = time.monotonic()
    done = jobs_cli("cancel", run)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert survivors(run, tmp_path) == [], "own-session descendants that ignore SIGTERM included"
    assert took >= GRACE, "the descendant that ignores SIGTERM was SIGKILLed only after GRACE"
    assert sorted(p.name for p in tmp_path.glob("saved-*")) == ["saved-0", "saved-1"]
    row = status_row(run)
    assert row["status"] == "FAILED_CONTROLLER" and row["reason"].startswith(_jobs_local.LAUNCHER_GONE_REASON)


def test_nodes_that_end_after_a_launcher_sigkill_show_a_final_state(tmp_path: Path) -> None:
    run = f"k9done-{uuid.uuid4().hex[:6]}"
    proc = launcher(run, tmp_path, job="tests/jobs/exit_with.py 0", HEARTBEAT_TIMEOUT="0")
    wait_for(
        lambda: (job_dir(run) / "attempt1" / "node1.log").exists() if (RUNS / run).exists() else False, 120
    )
    kill_launcher(run, proc)
    wait_for(lambda: survivors(run, tmp_path) == [], 120)
    row = status_row(run)
    assert row["status"] in ("SUCCEEDED", "FAILED_CONTROLLER") and "launcher killed" in row["reason"]


def test_runtime_budget_reason_is_shown_everywhere(tmp_path: Path) -> None:
    run = f"budget-{uuid.uuid4().hex[:6]}"
    proc = launcher(run, tmp_path, MAX_RUNTIME_HOURS="0.002", HANDLER_S="0.1")
    _, err = proc.communicate(timeout=240)
    assert "max_runtime" in last_line(err), err[-3000:]
    row = status_row(run)
    assert row["status"] == "SUCCEEDED" and row["reason"].startswith(
        ("max_runtime:", "max_runtime_before_job:")
    )
    assert "runtime budget MAX_RUNTIME_HOURS=0.002" in row["reason"]
    logs = jobs_cli("logs", run)
    assert "max_runtime" in last_line(logs.stderr)
    record = json.loads((job_dir(run) / "job.json").read_text())
    assert record["reason"] == row["reason"]
    assert proc.returncode == (0 if row["reason"].startswith("max_runtime:") else 1)


def test_budget_spent_in_the_preflight_is_never_a_plain_success(tmp_path: Path) -> None:
    run = f"pfbudget-{uuid.uuid4().hex[:6]}"
    proc = launcher(run, tmp_path, NCCL_PREFLIGHT="1", MAX_RUNTIME_HOURS=str(round(0.5 / 3600, 6)))
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]
    assert "max_runtime_before_job" in last_line(err) and "before the job ever started" in last_line(err)
    assert not list(tmp_path.glob("started-*"))


def test_a_job_that_exits_3_at_once_stops_when_the_crash_loop_guard_fires(tmp_path: Path) -> None:
    run = f"loop-{uuid.uuid4().hex[:6]}"
    # No preflight (NCCL_PREFLIGHT=0, as every test here but those about the preflight): nothing holds
    # rank 0 back, so it may start and end an attempt before node 1's supervisor reads the ledger, the
    # hardest case for the nodes to agree on attempt numbers (STRAGGLER_WINDOW_S,
    # docs/decisions/restart-tracking.md). The preflight's own endings: the tests below and test_nccl.py.
    proc = launcher(run, tmp_path, job="tests/jobs/exit_with.py 3")
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err[-3000:]
    record = json.loads((job_dir(run) / "job.json").read_text())
    assert len(record["attempts"]) == 3, "attempt 3 declares the loop; SkyPilot (emulated) runs no 4th"
    assert record["state"] == "CANCELLED" and record["reason"].startswith("crash_loop: ")
    assert "crash_loop" in last_line(err)


def test_a_read_only_data_dir_is_refused_at_launch(tmp_path: Path, read_only_dir: Path) -> None:
    run = f"ro-{uuid.uuid4().hex[:6]}"
    proc = launcher(run, tmp_path, DATA_DIR=str(read_only_dir))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert f"DATA_DIR={read_only_dir}: not writable: EROFS" in err and "Traceback" not in err
    assert not (RUNS / run).exists()


def test_a_full_data_dir_never_fails_the_preflight(tmp_path: Path, full_dir: Path) -> None:
    run = f"full-{uuid.uuid4().hex[:6]}"
    proc = launcher(
        run, tmp_path, job="tests/jobs/exit_with.py 0", DATA_DIR=str(full_dir), NCCL_PREFLIGHT="1"
    )
    _, err = proc.communicate(timeout=240)
    logs = jobs_cli("logs", run).stdout
    assert "preflight_error" not in err + logs
    assert "NCCL preflight passed" in logs and "ENOSPC" in logs
    assert proc.returncode == 0, err[-3000:]


def test_processes_left_by_setup_end_with_the_job_and_free_the_run(tmp_path: Path) -> None:
    """A daemon started in `setup` (or a background `&` in `run`) dies with its node on SkyPilot: here it is
    stopped with the job's GRACE at the end of the attempt, so the run is free for the next launch."""
    task = tmp_path / "daemon.yaml"
    task.write_text(
        "name: daemon\nenvs:\n  GRACE: '2'\n"
        "setup: |\n  setsid bash -c 'trap \"\" TERM; sleep 300' >/dev/null 2>&1 &\n"
        "run: |\n  exit 0\n"
    )
    run = f"daemon-{uuid.uuid4().hex[:6]}"
    first = launcher(run, tmp_path, "--task", str(task), job="", GRACE="2")
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert "outlived the nodes' scripts: stopping them" in err
    assert survivors(run, tmp_path) == []
    again = launcher(run, tmp_path, "--task", str(task), job="", GRACE="2")
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err[-3000:]
