"""The local backend: SkyPilot's node contract, its exit-code and recovery rules, and teardown.

These run real bash nodes from small task files written into tmp_path (the JOB is examples/train.py
only because JOB must name a script in the repository; these tasks never run it).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import _ledger
import _local_backend as lb
import _policy
import launch
import psutil
import pytest
from conftest import REPO, STATE, clean_env


def task_file(tmp_path: Path, run: str, setup: str = "", recovery: str = "") -> Path:
    path = tmp_path / "job.yaml"
    text = "name: t\nnum_nodes: 1\n"
    if recovery:
        text += f"resources:\n  job_recovery:\n{recovery}"
    text += "envs:\n  OUT: ''\n  GRACE: '2'\nsecrets:\n  MY_TOKEN: null\n"
    if setup:
        text += "setup: |\n" + "".join(f"  {line}\n" for line in setup.splitlines())
    text += "run: |\n" + "".join(f"  {line}\n" for line in run.splitlines())
    path.write_text(text)
    return path


def launch_local(
    tmp_path: Path, task: Path, *args: str, env_file: str = "/dev/null"
) -> tuple[int, str, dict]:
    run = f"t-{uuid.uuid4().hex[:8]}"
    code = launch.main(
        [
            "--env-file",
            env_file,
            "--task",
            str(task),
            "--run",
            run,
            "--set",
            f"OUT={tmp_path}",
            *args,
            "examples/train.py",
        ]
    )
    job_dirs = sorted((STATE / "runs" / run).glob("job-*"))
    status = json.loads((job_dirs[-1] / "job.json").read_text())
    return code, run, status


def test_node_env_follows_skypilot_contract() -> None:
    cluster = lb.Cluster(
        job_id=7,
        run="demo",
        num_nodes=3,
        gpus_per_node=2,
        task_id=lb.managed_task_id("demo", 7, dt.datetime(2026, 1, 2, 3, 4, 5, 6)),
        user="me",
    )
    base = {"PATH": "/usr/bin", "SKYPILOT_NODE_RANK": "9", "RANK": "3", "HOME": "/h"}
    env = lb.node_env(base, {"A": "1"}, {"S": "secret"}, cluster, 1, setup=False)
    assert env["SKYPILOT_NODE_RANK"] == "1"
    assert env["SKYPILOT_NODE_IPS"] == "127.0.0.1\n127.0.0.2\n127.0.0.3"
    assert env["SKYPILOT_NUM_NODES"] == "3"
    assert env["SKYPILOT_NUM_GPUS_PER_NODE"] == "2"
    assert env["SKYPILOT_MANAGED_JOB_ID"] == "7"
    assert re.fullmatch(r"sky-managed-\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d-\d{6}_demo_7-0", env["SKYPILOT_TASK_ID"])
    assert env["SKYPILOT_TASK_ID"] == "sky-managed-2026-01-02-03-04-05-000006_demo_7-0"
    assert json.loads(env["SKYPILOT_CLUSTER_INFO"]).keys() == {"cluster_name", "cloud", "region", "zone"}
    assert (env["A"], env["S"], env["HOME"], env["SKYPILOT_USER"]) == ("1", "secret", "/h", "me")
    assert "RANK" not in env and "SKYPILOT_SETUP_NODE_RANK" not in env
    setup_env = lb.node_env(base, {}, {}, cluster, 2, setup=True)
    assert (setup_env["SKYPILOT_SETUP_NODE_RANK"], setup_env["SKYPILOT_SETUP_NUM_GPUS_PER_NODE"]) == (
        "2",
        "2",
    )
    assert setup_env["SKYPILOT_SETUP_NODE_IPS"] == env["SKYPILOT_NODE_IPS"]
    assert "SKYPILOT_NODE_RANK" not in setup_env


@pytest.mark.parametrize(
    ("codes", "recover", "count", "limit", "expected"),
    [
        ([3, 137], [86], 0, 0, ("fail", 1)),
        ([3, 137], [86], 0, 2, ("restart", 1)),
        ([137, 86], [86], 5, 0, ("recover", 5)),
        ([1], [], 2, 2, ("fail", 3)),
    ],
)
def test_recovery_decision_follows_skypilot(
    codes: list[int], recover: list[int], count: int, limit: int, expected: tuple[str, int]
) -> None:
    assert lb.recovery_decision(codes, recover, count, limit) == expected


def test_every_node_gets_the_contract_and_envs(tmp_path: Path) -> None:
    task = task_file(
        tmp_path,
        'env > "$OUT/node$SKYPILOT_NODE_RANK.env"',
        setup='env > "$OUT/setup$SKYPILOT_SETUP_NODE_RANK.env"',
    )
    code, run, status = launch_local(tmp_path, task, "--nodes", "3", "--set", "MY_TOKEN=tok")
    assert code == 0 and status["state"] == "SUCCEEDED"
    for rank in range(3):
        env = dict(
            line.split("=", 1)
            for line in (tmp_path / f"node{rank}.env").read_text().splitlines()
            if "=" in line and not line.startswith((" ", "\t"))
        )
        assert env["SKYPILOT_NODE_RANK"] == str(rank)
        assert env["SKYPILOT_NUM_NODES"] == "3"
        assert env["RUN_ID"] == run and env["MY_TOKEN"] == "tok"
        assert env["SKYPILOT_MANAGED_JOB_ID"] == str(status["job_id"])
        assert (tmp_path / f"setup{rank}.env").exists()


def test_success_only_if_every_node_exits_zero(tmp_path: Path) -> None:
    task = task_file(tmp_path, 'if [ "$SKYPILOT_NODE_RANK" = 1 ]; then exit 3; fi\nsleep 30')
    started = time.monotonic()
    code, _, status = launch_local(tmp_path, task, "--nodes", "2")
    assert code == 1
    assert status["state"] == "FAILED"
    assert status["attempts"][-1]["run_exit_codes"] == [137, 3]  # peers of a failed node are killed
    assert time.monotonic() - started < 25


def test_counted_restarts_then_failure(tmp_path: Path) -> None:
    task = task_file(
        tmp_path, 'echo x >> "$OUT/attempts"; exit 3', recovery="    max_restarts_on_errors: 2\n"
    )
    code, _, status = launch_local(tmp_path, task)
    assert code == 1
    assert len(status["attempts"]) == 3 and status["recovery_count"] == 2
    assert (tmp_path / "attempts").read_text().count("x") == 3


def test_recover_exit_code_restarts_without_counting(tmp_path: Path) -> None:
    script = (
        'n=$(cat "$OUT/n" 2>/dev/null || echo 0); echo $((n+1)) > "$OUT/n"\n[ "$n" -ge 2 ] && exit 0\nexit 86'
    )
    task = task_file(
        tmp_path, script, recovery="    max_restarts_on_errors: 0\n    recover_on_exit_codes: [86]\n"
    )
    code, _, status = launch_local(tmp_path, task)
    assert code == 0
    assert status["state"] == "SUCCEEDED" and status["recovery_count"] == 2
    assert [a["run_exit_codes"] for a in status["attempts"]] == [[86], [86], [0]]


def test_setup_failure_spends_the_budget(tmp_path: Path) -> None:
    task = task_file(tmp_path, "exit 0", setup="exit 5")
    code, _, status = launch_local(tmp_path, task, "--nodes", "2", "--max-restarts", "0")
    assert code == 1 and status["state"] == "FAILED_SETUP"


def test_ctrl_c_tears_every_node_down(tmp_path: Path) -> None:
    """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group (uv forwards it
    too, so the launcher sees it twice). Nodes still get their grace period: a node process that
    needs a second to clean up on SIGTERM finishes; one that ignores SIGTERM is killed; none survive."""
    pids = tmp_path / "pids"
    run = (
        'echo $$ >> "$OUT/pids"\n'
        'setsid bash -c \'echo $$ >> "$OUT/pids"; trap "" TERM; sleep 300\' &\n'
        'bash -c \'echo $$ >> "$OUT/pids"; trap "sleep 1; echo clean > $OUT/clean-$SKYPILOT_NODE_RANK; exit 0" TERM;'
        " sleep 300 & wait' &\n"
        "wait"
    )
    task = task_file(tmp_path, run)
    proc = subprocess.Popen(
        [
            "uv",
            "run",
            "--quiet",
            "--script",
            "scripts/local/launch.py",
            "--env-file",
            "/dev/null",
            "--task",
            str(task),
            "--nodes",
            "2",
            "--set",
            f"OUT={tmp_path}",
            "examples/train.py",
        ],
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 6):
        time.sleep(0.1)
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 6
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == ""
    assert sorted(p.name for p in tmp_path.glob("clean-*")) == ["clean-0", "clean-1"]
    time.sleep(0.2)
    alive = [
        p for p in recorded if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def test_job_ids_are_unique_and_increasing(tmp_path: Path) -> None:
    ids = [lb.allocate_job_id(tmp_path) for _ in range(3)]
    assert ids == [1, 2, 3]


@pytest.mark.slow
def test_train_example_on_two_nodes(tmp_path: Path) -> None:
    """The walking skeleton end to end: launcher -> local backend -> configure_environment ->
    supervisor -> torchrun -> examples/train.py, on 2 emulated nodes."""
    run = f"it-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        [
            "uv",
            "run",
            "--quiet",
            "--script",
            "scripts/local/launch.py",
            "--print-id",
            "--nodes",
            "2",
            "--run",
            run,
            "--env-file",
            "/dev/null",
            "--set",
            f"DATA_DIR={tmp_path}",
            "examples/train.py",
            "--steps",
            "40",
        ],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == f"{run}\n"
    train = json.loads((tmp_path / run / "train_result.json").read_text())
    assert train["world_size"] == 2
    assert train["steps"] == 40
    assert train["final_loss"] < train["first_loss"]


def test_secret_canary_appears_in_no_output_or_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    env_file = tmp_path / "canary.env"
    env_file.write_text(f"MY_TOKEN={canary}\n")
    task = task_file(tmp_path, '[ -n "$MY_TOKEN" ] && echo "token present" > "$OUT/seen"')
    code, run, _ = launch_local(tmp_path, task, "--follow", env_file=str(env_file))
    out, err = capsys.readouterr()
    assert code == 0
    assert (tmp_path / "seen").read_text() == "token present\n"  # the node got it
    assert canary not in out and canary not in err
    for path in (STATE / "runs" / run).rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    assert "<redacted>" in next((STATE / "runs" / run).rglob("task.yaml")).read_text()


@pytest.mark.slow
def test_flaky_example_restarts_and_resumes_on_the_local_backend(tmp_path: Path) -> None:
    """Issue 3 item 11: attempt 1 fails (a counted restart), attempt 2 resumes from the checkpoint;
    the job, the supervisor's ledger and the result all show it."""
    run = f"fl-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        ["uv", "run", "--quiet", "--script", "scripts/local/launch.py", "--nodes", "2", "--run", run,
         "--env-file", "/dev/null", "--set", f"DATA_DIR={tmp_path}", "--set", "NCCL_PREFLIGHT=0",
         "examples/flaky_train.py", "--steps", "20"],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "restart 1 of 3" in result.stderr
    train = json.loads((tmp_path / run / "train_result.json").read_text())
    assert (train["attempt"], train["resumed_from_step"], train["world_size"]) == (2, 10, 2)
    status = json.loads(next((STATE / "runs" / run).glob("job-*/job.json")).read_text())
    assert status["state"] == "SUCCEEDED" and status["recovery_count"] == 1
    assert [a["run_exit_codes"] for a in status["attempts"]][-1] == [0, 0]
    # Each attempt's outcome over all nodes: in attempt 1 either node may fail first (the other is then
    # stopped, 143), so rank 0's own `end` record alone can say sigterm.
    ledger = next((tmp_path / run / "supervisor").glob("ledger-*.jsonl")).read_bytes()
    outcomes = [(a.number, a.reason) for a in _policy.summarize(_ledger.parse_ledger(ledger))]
    assert outcomes == [(1, "job_failed"), (2, "completed")]


def test_one_job_per_run_name_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = task_file(tmp_path, "exit 0")
    data = tmp_path / "data"
    other = lambda: STATE / "runs" / "locked-run" / "job-99"  # noqa: E731
    with lb.run_lock(data / "locked-run", "locked-run", other):  # e.g. a job launched from another clone
        code = launch.main(
            ["--env-file", "/dev/null", "--task", str(task), "--run", "locked-run", "--set", f"DATA_DIR={data}",
             "examples/train.py"]
        )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 2 and "--run locked-run: job 99 of this run is still running" in err
    assert "jobs.py cancel 99" in err and len(err.strip().splitlines()) == 1
    assert not (STATE / "runs" / "locked-run").exists()


def test_sighup_tears_down_and_records_the_end(tmp_path: Path) -> None:
    """Closing the terminal (SIGHUP) stops every node like a cancel: exit 129, state CANCELLED."""
    run = f"hup-{uuid.uuid4().hex[:6]}"
    task = task_file(tmp_path, 'echo $$ >> "$OUT/pids"; sleep 300 & echo $! >> "$OUT/pids"; wait')
    proc = subprocess.Popen(
        ["uv", "run", "--quiet", "--script", "scripts/local/launch.py", "--env-file", "/dev/null", "--task", str(task),
         "--run", run, "--nodes", "2", "--set", f"OUT={tmp_path}", "examples/train.py"],
        cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    pids = tmp_path / "pids"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not pids.exists() or len(pids.read_text().split()) < 4):
        time.sleep(0.1)
    recorded = [int(p) for p in pids.read_text().split()]
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err
    status = json.loads(next((STATE / "runs" / run).glob("job-*/job.json")).read_text())
    assert status["state"] == "CANCELLED" and "SIGHUP" in status["failure_reason"]
    assert len(status["node_pids"]) == 2
    time.sleep(0.2)
    assert [
        p for p in recorded if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ] == []


@pytest.mark.slow
def test_a_job_without_torch_runs_on_every_node_and_its_exit_code_counts(tmp_path: Path) -> None:
    """No torch in the job's environment: no torchrun, one process per node; the job's own exit
    code (3) reaches the launcher's record, its output the failure excerpt, and the reason status."""
    run = f"nt-{uuid.uuid4().hex[:6]}"
    result = subprocess.run(
        ["uv", "run", "--quiet", "--script", "scripts/local/launch.py", "--nodes", "2", "--run", run, "--max-restarts", "0",
         "--env-file", "/dev/null", "--set", f"DATA_DIR={tmp_path}", "--set", "NCCL_PREFLIGHT=0", "tests/jobs/exit_with.py", "3"],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "node 1 of 2: exiting ['3']" in result.stderr or "node 0 of 2: exiting ['3']" in result.stderr
    status = json.loads(next((STATE / "runs" / run).glob("job-*/job.json")).read_text())
    assert status["state"] == "FAILED" and 3 in status["attempts"][-1]["run_exit_codes"]
    assert "job_failed (exit 3)" in status["failure_reason"]
