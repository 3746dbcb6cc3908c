"""scripts/local/jobs.py: status, logs, cancel and watch. The local backend end to end (a real launcher,
real nodes, a real SIGTERM); the sky backend against a fake at the SDK boundary (FakeSkyJobsSDK)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _atomic
import _jobs_local
import _jobs_notify
import jobs
import pytest
from _fake_services import CANARY, CANARY_TOKEN, SHA, Channels
from conftest import STATE

REPO = Path(__file__).resolve().parents[1]
RUNS = STATE / "runs"

SLEEP_TASK = """\
name: t
envs:
  JOB: "examples/train.py"
  JOB_ARGS: ""
  RUN_ID: "t"
  GRACE: "5"
run: |
  echo "started on node $SKYPILOT_NODE_RANK"
  exec sleep 120
"""


@pytest.fixture
def running_local_job(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A real local-backend launch of a 2-node job that sleeps; yields (run name, launcher)."""
    run = f"jobs-test-{uuid.uuid4().hex[:8]}"
    (tmp_path / "job.yaml").write_text(SLEEP_TASK)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYOPS_", "SKYPILOT_"))}
    env.update(UV_FIND_LINKS=env.get("UV_FIND_LINKS", "/opt/wheels"), SKYPILOT_DISABLE_LOCAL_API_SERVER="1")
    env["SKYOPS_STATE_DIR"] = str(STATE)
    launcher = subprocess.Popen(
        [sys.executable, str(REPO / "scripts/local/launch.py"), "--task", str(tmp_path / "job.yaml"), "--nodes", "2",
         "--run", run, "--env-file", os.devnull, "examples/train.py"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = list((RUNS / run).glob("job-*/attempt1/node1.log"))
            if logs and "started" in logs[0].read_text():
                break
            assert launcher.poll() is None, launcher.communicate()
            time.sleep(0.1)
        yield run, launcher
    finally:
        if launcher.poll() is None:
            launcher.terminate()
            launcher.wait(timeout=30)
        shutil.rmtree(RUNS / run, ignore_errors=True)


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = jobs.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_local_status_logs_cancel_end_to_end(
    running_local_job: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import psutil

    run, launcher = running_local_job
    base = ["--backend", "local", "--runs-dir", str(RUNS)]
    code, out, _ = call([*base, "status", "--json", run], capsys)
    (row,) = json.loads(out)
    assert code == 0 and row["name"] == run and row["status"] == "RUNNING" and row["recovery_count"] == 0
    code, out, _ = call([*base, "status"], capsys)
    assert code == 0 and out.startswith("ID  ") and run in out
    code, out, _ = call([*base, "logs", run], capsys)
    assert "(attempt1/node0.log) started on node 0" in out and "(attempt1/node1.log) started on node 1" in out
    node_pids = [p.pid for p in psutil.Process(launcher.pid).children(recursive=True)]
    assert node_pids

    code, _, err = call([*base, "cancel", "--wait", "60", str(row["job_id"])], capsys)
    assert code == 0 and "CANCELLED" in err
    assert launcher.wait(timeout=30) == 143  # the local backend's SIGTERM exit
    assert not [
        pid
        for pid in node_pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    code, out, _ = call([*base, "status", "--json", run], capsys)
    assert json.loads(out)[0]["status"] == "CANCELLED"
    code, out, _ = call([*base, "status", "--active", "--json"], capsys)  # --active hides finished jobs
    assert run not in out
    code, out, _ = call([*base, "status", "--json"], capsys)  # by default: finished ones too, with why
    assert run in out
    code, _, err = call([*base, "cancel", run], capsys)
    assert code == 0 and "already CANCELLED" in err
    code, _, err = call([*base, "logs", run], capsys)  # not SUCCEEDED: 1, and why on stderr
    assert code == 1 and err.strip().splitlines()[-1] == (
        f"job {row['job_id']} (run {run}) ended CANCELLED: cancelled: jobs.py cancel"
    )


def _write_job(runs: Path, run: str, job_id: int, **record: Any) -> Path:
    job_dir = runs / run / f"job-{job_id}"
    (job_dir / "attempt1").mkdir(parents=True)
    data = {"job_id": job_id, "run": run, "state": "SUCCEEDED", "launcher_pid": 0, "recovery_count": 0,
            "attempts": [{"attempt": 1, "started_at": 100.0, "ended_at": 160.0}], "submitted_at": 99.0, **record}  # fmt: skip
    (job_dir / "job.json").write_text(json.dumps(data))
    return job_dir


def test_local_stale_launcher_and_unknown_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_job(tmp_path, "a", 1, state="RUNNING", launcher_pid=2**22 + 7)
    job_dir = _write_job(
        tmp_path, "b", 2, state="FAILED", failure_reason="run failed with node exit codes [3]"
    )
    (job_dir / "attempt1" / "node0.log").write_bytes(b"one\r\ntwo")
    base = ["--runs-dir", str(tmp_path)]
    code, out, _ = call([*base, "status", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    # a's launcher is gone and no process of it is left: a final state with the reason, never RUNNING
    assert rows["a"]["status"] == "FAILED_CONTROLLER" and rows["a"]["reason"].startswith(
        _jobs_local.LAUNCHER_GONE_REASON
    )
    assert rows["b"]["failure_reason"].endswith("[3]")
    assert rows["b"]["duration"] == "1m00s"
    code, out, err = call([*base, "logs", "2"], capsys)
    assert code == 1 and out == "(attempt1/node0.log) one\n(attempt1/node0.log) two\n"
    assert err.strip() == "job 2 (run b) ended FAILED: run failed with node exit codes [3]"
    code, out, err = call([*base, "logs", "a"], capsys)
    assert code == 1 and out == ""
    assert err.strip().startswith(
        f"job 1 (run a) ended FAILED_CONTROLLER: {_jobs_local.LAUNCHER_GONE_REASON}"
    )
    code, _, err = call([*base, "logs", "9"], capsys)
    assert code == 2 and err.strip() == "jobs.py: error: ID '9': no such local job (see jobs.py status)"
    assert call([*base, "bogus"], capsys)[0] == 2


def test_backend_precedence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SKYOPS_BACKEND=sky\n")
    assert jobs.resolve_backend(None, {}, None, tmp_path) == "sky"
    assert jobs.resolve_backend(None, {"SKYOPS_BACKEND": "local"}, None, tmp_path) == "local"
    assert jobs.resolve_backend("local", {"SKYOPS_BACKEND": "sky"}, None, tmp_path) == "local"
    assert jobs.resolve_backend(None, {}, None, tmp_path / "nowhere") == "local"
    with pytest.raises(jobs.ConfigError, match="SKYOPS_BACKEND: expected one of local, sky, got 'aws'"):
        jobs.resolve_backend(None, {"SKYOPS_BACKEND": "aws"}, None, tmp_path)


class FakeSkyJobsSDK:
    """A fake of _sky_sdk.SkyJobsSDK (the API server boundary)."""

    def __init__(self) -> None:
        self.records = [
            {"job_id": 4, "job_name": "r1", "status": "RUNNING", "recovery_count": 2, "failure_reason": None,
             "submitted_at": 1000.0, "job_duration": 75.0},
            {"job_id": 3, "job_name": "r0", "status": "FAILED", "recovery_count": 0,
             "failure_reason": "max_restarts_on_errors spent", "submitted_at": 900.0, "job_duration": 3700.0},
        ]  # fmt: skip
        self.queries: list[tuple[Any, bool]] = []
        self.cancelled: list[int] = []
        self.tail_codes = [101, 0]

    def queue(self, job_ids: Any, skip_finished: bool, all_users: bool) -> list[dict[str, Any]]:
        self.queries.append((job_ids, skip_finished))
        return [r for r in self.records if (not job_ids or r["job_id"] in job_ids)]

    def tail_logs(self, job_id: int, follow: bool, stream: Any) -> int:
        stream.write(f"log of {job_id}\n")
        return self.tail_codes.pop(0)

    def cancel(self, job_ids: Any) -> None:
        self.cancelled.extend(job_ids)


def test_sky_status_logs_cancel(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import _sky_logs
    import _sky_sdk

    fake = FakeSkyJobsSDK()
    monkeypatch.setattr(_sky_sdk, "SkyJobsSDK", lambda: fake)
    monkeypatch.setattr(_sky_logs.time, "sleep", lambda s: None)
    code, out, _ = call(["--backend", "sky", "status", "--active"], capsys)
    assert code == 0 and fake.queries[-1] == (None, True)
    header, first, second = out.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "RECOVERIES", "SUBMITTED", "DURATION", "FAILURE_REASON"]
    assert first.split()[:4] == ["4", "r1", "RUNNING", "2"] and "1m15s" in first
    assert "max_restarts_on_errors spent" in second and "1h01m" in second
    code, out, _ = call(["--backend", "sky", "status", "--json"], capsys)
    assert [r["recovery_count"] for r in json.loads(out)] == [2, 0] and fake.queries[-1] == (None, False)
    code, out, _ = call(
        ["--backend", "sky", "logs", "--follow", "r1"], capsys
    )  # 101: still running, follow again
    assert code == 0 and out == "log of 4\nlog of 4\n"
    fake.tail_codes = [100]  # r0 failed: logs exits 1 and says why on stderr
    code, out, err = call(["--backend", "sky", "logs", "r0"], capsys)
    assert code == 1 and out == "log of 3\n"
    assert err.strip().splitlines()[-1] == "job 3 (run r0) ended FAILED: max_restarts_on_errors spent"
    fake.tail_codes = [101, 103]
    code, out, err = call(["--backend", "sky", "logs", "-f", "3"], capsys)
    assert (
        code == 1
        and err.strip().splitlines()[-1] == "job 3 (run r0) ended FAILED: max_restarts_on_errors spent"
    )
    code, _, err = call(["--backend", "sky", "cancel", "r0", "4"], capsys)
    assert code == 0 and fake.cancelled == [3, 4] and "cancel requested: managed job(s) 3, 4" in err
    code, _, err = call(["--backend", "sky", "cancel", "nope"], capsys)
    assert code == 2 and "ID 'nope': no managed job of that name" in err


def test_sky_error_is_one_line_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import _sky_sdk

    class DownSDK(FakeSkyJobsSDK):
        def queue(self, *a: Any) -> list[dict[str, Any]]:
            from sky import exceptions  # SkyPilot's own class, as its client raises it

            raise exceptions.ApiServerConnectionError("http://127.0.0.1:1")

    monkeypatch.setattr(_sky_sdk, "SkyJobsSDK", DownSDK)
    code, out, err = call(["--backend", "sky", "status"], capsys)
    assert code == 3 and out == "" and err.startswith("jobs.py: error: no SkyPilot API server reachable")
    assert len(err.strip().splitlines()) == 1


def test_local_commands_never_import_skypilot() -> None:
    probe = "import sys, jobs; code = jobs.main(['--runs-dir', '/nonexistent', 'status']); print('sky' in sys.modules, code)"
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts/local"), "SKYOPS_BACKEND": "local"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False 0", proc.stderr


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    """job.json and the reasons cache are written through _atomic: the old file stays whole when a
    write fails, and no temporary file is left either way."""
    path = tmp_path / "job.json"
    _atomic.write_json(path, {"state": "RUNNING"})
    assert path.read_text() == '{\n  "state": "RUNNING"\n}\n'
    with pytest.raises(TypeError):
        _atomic.write_json(path, {"state": object()})
    _atomic.write_json(tmp_path / "cache.json", {"b": 1, "a": 2}, indent=1, sort_keys=True)
    assert (tmp_path / "cache.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    with pytest.raises(IsADirectoryError):
        _atomic.write_text(tmp_path, "x")  # the temporary file is written, the replace fails
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*.tmp"))
    assert json.loads(path.read_text()) == {"state": "RUNNING"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.json", "job.json"]


# ------------------------------------------------------------- cancel when the launcher is gone


def test_cancel_after_launcher_sigkill_stops_nodes_and_marks_failed_controller(
    running_local_job: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """A launcher killed by SIGKILL leaves its nodes running: status says so, and cancel finds every
    process of the job by its marker, stops it with the job's GRACE, and records the end."""
    import psutil

    run, launcher = running_local_job
    base = ["--backend", "local", "--runs-dir", str(RUNS)]
    (job_json,) = (RUNS / run).glob("job-*/job.json")
    record = json.loads(job_json.read_text())
    node_pids = record["node_pids"]
    assert len(node_pids) == 2 and all(psutil.pid_exists(p) for p in node_pids)
    launcher.kill()
    launcher.wait(timeout=30)
    try:
        code, out, _ = call([*base, "status", "--json", run], capsys)
        row = json.loads(out)[0]
        assert (
            row["status"] == "RUNNING (launcher gone)" and "process(es) of the job live on" in row["reason"]
        )
        code, _, err = call([*base, "cancel", run], capsys)
        assert code == 0, err
        assert "its launcher is gone; stopping" in err
        assert not [p for p in node_pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        after = json.loads(job_json.read_text())
        assert after["state"] == "FAILED_CONTROLLER"
        assert after["failure_reason"].startswith(
            f"{_jobs_local.LAUNCHER_GONE_REASON}; cancelled afterwards by jobs.py cancel"
        )
        assert after["attempts"][-1]["ended_at"] >= after["attempts"][-1]["started_at"]
        assert not list(job_json.parent.glob(".job.json.*"))  # the temp file of the atomic write
        code, out, _ = call([*base, "status", "--json", run], capsys)
        assert json.loads(out)[0]["status"] == "FAILED_CONTROLLER"
        code, _, err = call([*base, "cancel", run], capsys)
        assert code == 0 and "already FAILED_CONTROLLER" in err
    finally:
        for pid in node_pids:  # only if the test failed half-way
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)


def test_cancel_orphaned_without_node_pids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A job whose launcher is gone and no process of it is left is settled by any look at it: a final
    state with the reason, never RUNNING; cancel then has nothing to do."""
    _write_job(tmp_path, "a", 1, state="RECOVERING", launcher_pid=2**22 + 7)
    code, _, err = call(["--runs-dir", str(tmp_path), "cancel", "a"], capsys)
    assert code == 0 and "already FAILED_CONTROLLER" in err
    record = json.loads((tmp_path / "a/job-1/job.json").read_text())
    reason = f"{_jobs_local.LAUNCHER_GONE_REASON}; no process of the job is left"
    assert (record["state"], record["failure_reason"]) == ("FAILED_CONTROLLER", reason)
    assert record["attempts"][-1]["ended_at"] == 160.0  # kept as recorded
    code, _, err = call(["--runs-dir", str(tmp_path), "logs", "a"], capsys)
    assert code == 1 and err.strip() == f"job 1 (run a) ended FAILED_CONTROLLER: {reason}"


# ------------------------------------------------------------- watch: the endings no node sends


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[Channels]:
    """All four notification channels on loopback servers, configured in the process environment (as
    `jobs.py watch` reads it), no proxy; closed after the test."""
    started = Channels.start()
    for key in ("GIT_COMMIT", "GIT_DIRTY", "NOTIFY_ON", "NOTIFY_TIMEOUT_S"):
        monkeypatch.delenv(key, raising=False)
    for key in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in started.settings().items():
        monkeypatch.setenv(key, value)
    try:
        yield started
    finally:
        started.close()


def test_watch_local_sends_the_ending_of_a_job_whose_launcher_died(
    running_local_job: tuple[str, Any], channels: Channels, capsys: pytest.CaptureFixture[str]
) -> None:
    """A launcher killed with SIGKILL sends no ending: the watcher records it (settle) and sends it,
    once; a second watcher finds it claimed in the run's notify/ folder and sends nothing."""
    run, launcher = running_local_job
    (job_json,) = (RUNS / run).glob("job-*/job.json")
    record = json.loads(job_json.read_text())
    launcher.kill()
    launcher.wait(timeout=30)
    argv = ["--runs-dir", str(RUNS), "--env-file", os.devnull, "watch", "--interval", "0.2", run]
    result: dict[str, int] = {}
    watcher = threading.Thread(target=lambda: result.setdefault("code", jobs.main(argv)))
    watcher.start()
    try:
        time.sleep(1.0)  # the watcher sees the job running without its launcher
        assert watcher.is_alive()
        for pid in record["node_pids"]:
            os.killpg(pid, signal.SIGKILL)
        watcher.join(timeout=90)
        assert not watcher.is_alive()
    finally:
        for pid in record["node_pids"]:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
    _, err = capsys.readouterr()
    job_id = record["job_id"]
    assert result["code"] == 1, err
    assert f"job {job_id} (run {run}): RUNNING (launcher gone)" in err
    assert f"job {job_id} (run {run}) ended FAILED_CONTROLLER: {_jobs_local.LAUNCHER_GONE_REASON}" in err
    assert channels.counts() == {"discord": 1, "slack": 1, "github": 0, "webhook": 1}
    doc = channels.webhook.seen[0].body
    assert (doc["event"], doc["state"], doc["reason"], doc["job_id"], doc["run_id"], doc["backend"]) == (
        "ended", "FAILED_CONTROLLER", "launcher_gone", str(job_id), run, "local"
    )  # fmt: skip
    assert (
        doc["cause"].startswith(_jobs_local.LAUNCHER_GONE_REASON)
        and doc["logs_hint"] == f"make logs ID={job_id}"
    )
    assert (
        channels.slack.seen[0].body["text"].splitlines()[0]
        == f"❌ *FAILED_CONTROLLER* · `{run}` · job {job_id}"
    )
    # no commit on the local backend: GitHub is skipped, said once
    assert err.count("github: skipped: GIT_COMMIT is not a 40-character commit id") == 1
    assert (Path(record["run_data"]) / "notify" / f"{job_id}-ended.sent").is_file()

    code, _, err = call(argv, capsys)  # watched again: claimed, nothing sent twice
    assert code == 1 and channels.counts() == {"discord": 1, "slack": 1, "github": 0, "webhook": 1}
    assert f"{job_id}-ended: already sent" in err
    assert CANARY not in err and CANARY_TOKEN not in err


class ScriptedSkyJobsSDK(FakeSkyJobsSDK):
    """A fake of _sky_sdk.SkyJobsSDK (the API server boundary; no server or cloud here) whose jobs
    go through scripted states: `script[job_id]` is its queue_v2 record at each poll (the last one
    stays); `logs[job_id]` the end of its logs, `envs[job_id]` its task's envs (task_envs)."""

    def __init__(self, script: dict[int, list[dict[str, Any]]], logs: dict[int, str], envs: dict[int, dict]):
        super().__init__()
        self.script, self.logs, self.envs = script, logs, envs
        self.polls = 0
        self.log_tails: list[int] = []

    def queue(self, job_ids: Any, skip_finished: bool, all_users: bool) -> list[dict[str, Any]]:
        self.queries.append((job_ids, skip_finished))
        step, self.polls = self.polls, self.polls + 1
        return [
            {"job_id": i, "job_name": f"run-{i}", "recovery_count": 0, "failure_reason": None, "submitted_at": 1000.0 + i,
             "job_duration": 0.0, **steps[min(step, len(steps) - 1)]}
            for i, steps in self.script.items() if not job_ids or i in job_ids
        ]  # fmt: skip

    def log_tail(self, job_id: int, lines: int) -> str:
        self.log_tails.append(job_id)
        return self.logs.get(job_id, "")

    def task_envs(self, job_id: int) -> dict[str, str]:
        return self.envs.get(job_id, {})


def summary_line(attempt: int, reason: str, code: int, cause: str = "") -> str:
    """The supervisor's summary line (scripts/remote/run.py), behind SkyPilot's node prefix."""
    return (
        f"(head, rank=0, pid=2001, ip=10.0.0.1) run.py: INFO: summary: node=0 attempt={attempt} reason={reason}"
        f" exit_code={code} runtime_s=12.5{f' cause: {cause}' if cause else ''}\n"
    )


def test_watch_sky_sends_each_ending_once_and_none_a_node_sent(
    monkeypatch: pytest.MonkeyPatch, channels: Channels, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import _sky_sdk

    run = {"status": "RUNNING", "job_duration": 30.0}
    script = {
        # no resources: no node ever ran, so nobody else can tell
        7: [{"status": "PENDING"}, {"status": "FAILED_NO_RESOURCE", "failure_reason": "No launchable resource found"}],
        # a hang recovered onto fresh nodes, then a success its node told (the watcher must not)
        8: [run, {"status": "RECOVERING"}, {"status": "RECOVERING"}, {**run, "recovery_count": 1},
            {"status": "SUCCEEDED", "recovery_count": 1, "job_duration": 80.0}],
        # the job's own failure: the node never sends that one
        9: [run, run, {"status": "FAILED", "job_duration": 42.0, "failure_reason": "max_restarts_on_errors spent"}],
        # cancelled before it started
        10: [{"status": "PENDING"}, {"status": "CANCELLED"}],
    }  # fmt: skip
    logs = {
        8: summary_line(1, "heartbeat_timeout", 86, "no heartbeat for 600 s")
        + summary_line(2, "completed", 0)
        + "(head, rank=0, pid=2001, ip=10.0.0.1) run.py: INFO: notify: ended sent for job 8\n",
        9: summary_line(1, "job_failed", 3, "worker rank 1 (local rank 0) exited 3"),
    }
    envs = {8: {"GIT_COMMIT": SHA, "GIT_DIRTY": "0"}, 9: {"GIT_COMMIT": SHA, "GIT_DIRTY": "0"},
            7: {"GIT_COMMIT": SHA + "-dirty", "GIT_DIRTY": "1"}}  # fmt: skip
    fake = ScriptedSkyJobsSDK(script, logs, envs)
    monkeypatch.setattr(_sky_sdk, "SkyJobsSDK", lambda: fake)
    monkeypatch.setenv("NOTIFY_ON", "ended,attempt_ended")
    runs = tmp_path / "state" / "runs"
    argv = ["--backend", "sky", "--env-file", os.devnull, "--runs-dir", str(runs), "watch", "--interval", "0"]
    code, out, err = call([*argv, "7", "8", "9", "10"], capsys)
    assert code == 1 and out == "", err
    for line in ("job 8 (run run-8): RECOVERING", "job 8 (run run-8) ended SUCCEEDED",
                 "job 7 (run run-7) ended FAILED_NO_RESOURCE: No launchable resource found",
                 "job 9 (run run-9) ended FAILED: max_restarts_on_errors spent", "job 10 (run run-10) ended CANCELLED",
                 "job 8 (run run-8): its node sent the ending"):  # fmt: skip
        assert line in err
    sent = [(s.body["job_id"], s.body["event"], s.body["reason"]) for s in channels.webhook.seen]
    assert sorted(sent) == [
        ("10", "ended", "cancelled"), ("7", "ended", "no_resource"), ("8", "attempt_ended", "heartbeat_timeout"),
        ("9", "ended", "job_failed"),
    ]  # fmt: skip
    assert channels.counts()["discord"] == channels.counts()["slack"] == 4
    docs = {(s.body["job_id"], s.body["event"]): s.body for s in channels.webhook.seen}
    assert {k: docs[("7", "ended")][k] for k in ("state", "attempts", "recoveries", "commit", "backend", "logs_hint")} == {
        "state": "FAILED_NO_RESOURCE", "attempts": 0, "recoveries": 0, "commit": "", "backend": "sky",
        "logs_hint": "make logs ID=7 BACKEND=sky",
    }  # fmt: skip
    assert docs[("7", "ended")]["cause"] == "No launchable resource found"
    failed = docs[("9", "ended")]
    assert (failed["state"], failed["cause"], failed["attempts"], failed["runtime_s"], failed["commit"]) == (
        "FAILED", "worker rank 1 (local rank 0) exited 3", 1, 42.0, SHA
    )  # fmt: skip
    recovered = docs[("8", "attempt_ended")]
    assert (recovered["state"], recovered["attempts"], recovered["recoveries"]) == ("RECOVERING", 1, 1)
    # GitHub: the final state of the failed job on its commit; no status per attempt, none on a dirty tree
    assert [(s.path, s.body["state"]) for s in channels.github.seen] == [
        (f"/repos/owner/name/statuses/{SHA}", "failure")
    ]
    assert "GIT_DIRTY=1: the job runs an uploaded working tree" in err
    assert 7 not in fake.log_tails  # no node ran: nothing to read
    assert CANARY not in err and CANARY_TOKEN not in err

    # a watcher started again sends nothing it sent before (claims in the state folder)
    before = channels.counts()
    fake.polls = 0
    code, _, err = call([*argv, "7", "8", "9", "10"], capsys)
    assert code == 1 and channels.counts() == before
    assert sorted(p.name for p in (tmp_path / "state" / "sky-notify").iterdir()) == [
        "10-1010",
        "7-1007",
        "8-1008",
        "9-1009",
    ]


def test_watch_sky_exit_code_and_unknown_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every job succeeded: 0 (a budget that ran out before the job started is no success); an id the
    API server does not know: 2. With no channel configured, watch only follows."""
    import _sky_sdk

    for key in _jobs_notify.NOTIFY_SECRETS:
        monkeypatch.delenv(key, raising=False)
    script = {1: [{"status": "RUNNING"}, {"status": "SUCCEEDED"}], 2: [{"status": "SUCCEEDED"}]}
    fake = ScriptedSkyJobsSDK(
        script, {1: summary_line(1, "completed", 0), 2: summary_line(1, "max_runtime", 0)}, {}
    )
    monkeypatch.setattr(_sky_sdk, "SkyJobsSDK", lambda: fake)
    argv = [
        "--backend",
        "sky",
        "--env-file",
        os.devnull,
        "--runs-dir",
        str(tmp_path / "runs"),
        "watch",
        "--interval",
        "0",
    ]
    code, _, err = call([*argv, "1", "2"], capsys)
    assert code == 0, err
    assert (
        "no notification channel configured" in err
        and "job 2 (run run-2) ended SUCCEEDED: max_runtime" in err
    )
    fake.logs[2] = summary_line(1, "max_runtime_before_job", 0)
    fake.polls = 0
    code, _, err = call([*argv, "2"], capsys)
    assert code == 1
    code, _, err = call([*argv, "5"], capsys)
    assert code == 2 and "ID 5: no such managed job" in err


@pytest.mark.parametrize(
    ("status", "summary", "reason"),
    [
        ("FAILED_NO_RESOURCE", None, "no_resource"),
        ("FAILED_PRECHECKS", None, "failed_prechecks"),
        ("FAILED_CONTROLLER", {"reason": "sigterm"}, "controller_failed"),
        ("FAILED_SETUP", None, "setup_failed"),
        ("CANCELLED", {"reason": "sigterm"}, "cancelled"),
        ("CANCELLED", {"reason": "crash_loop"}, "crash_loop"),
        ("FAILED", {"reason": "job_failed"}, "job_failed"),
        ("FAILED", None, "failed"),
        ("SUCCEEDED", {"reason": "max_runtime"}, "max_runtime"),
        ("SUCCEEDED", None, "completed"),
    ],
)
def test_sky_ending_reasons(status: str, summary: dict | None, reason: str) -> None:
    import _sky_logs

    assert _sky_logs.ending_reason(status, summary) == reason


def test_watch_reads_channels_as_the_launcher_does(tmp_path: Path) -> None:
    """environment > .env > job.yaml; the job's own commit never comes from the watcher's environment."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SLACK_WEBHOOK_URL=http://127.0.0.1:9/from-file\nNOTIFY_ON=ended,attempt_ended\nDISCORD_WEBHOOK_URL=\n"
    )
    environ = {
        "PATH": "/bin",
        "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/from-env",
        "GIT_COMMIT": SHA,
        "GIT_DIRTY": "0",
    }
    env = _jobs_notify.notify_env(environ, env_file, REPO)
    assert env["SLACK_WEBHOOK_URL"].endswith("from-env") and env["NOTIFY_ON"] == "ended,attempt_ended"
    assert env["GITHUB_API_URL"] == "https://api.github.com"  # job.yaml
    assert "DISCORD_WEBHOOK_URL" not in env and "GIT_COMMIT" not in env and "GIT_DIRTY" not in env
    assert _jobs_notify.channels(env) == ["SLACK_WEBHOOK_URL"]
    env_file.write_text("NOTIFY_ON=${LATER}\nLATER=x\n")
    with pytest.raises(jobs.ConfigError, match=r"\.env:1: NOTIFY_ON uses \$\{LATER\}"):
        _jobs_notify.notify_env({}, env_file, REPO)
