"""Notifications end to end on the local backend: the real launcher, 2 emulated nodes, the real supervisor
and notify.py, against real loopback HTTP servers that answer as Discord (204), Slack (200 "ok"),
GitHub commit statuses (201) and a generic webhook (200) do (tests/_fake_services.py).

All four channels are configured at once with `--set` on the launcher, their secrets carrying a canary
(`CANARY-9d2e`, `ghp_CANARY...`) that must appear in no output and no file of the state folder. Each
ending must arrive exactly once per channel, with the documented text and fields; GitHub gets `pending`
then the final state, never a status per attempt; the launcher's exit code is the job's, whatever the
servers answer.

The local backend sets no GIT_COMMIT (only `--backend sky` has a pushed commit to name). What reaches
the nodes and the launcher's notifications is the launcher's process environment, so the tests that
check GitHub's states export GIT_COMMIT there; `--set GIT_COMMIT` is refused (launcher-owned).

The hang and the cancel run job.yaml with one change: `run` hands the supervisor a small script from
the test's folder (E2E_JOB) instead of $JOB, since a job must otherwise be a file of the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _fake_services import CANARY, CANARY_TOKEN, SHA, Answer, Channels
from conftest import REPO, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROXIES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "no_proxy",
)

#: On attempt 1 it never touches HEARTBEAT_FILE and sleeps (a hang); on any later attempt it succeeds.
HANG_JOB = """\
import os, time

attempt = os.environ.get("SKYOPS_ATTEMPT")
print(f"node {os.environ.get('NODE_RANK')}: attempt {attempt}", flush=True)
if attempt == "1":
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own SKYOPS_STATE_DIR (run directories, job ids, the default DATA_DIR), so that the
    canary scan covers every file these launches wrote."""
    return tmp_path_factory.mktemp("notify-e2e-state")


@pytest.fixture
def channels() -> Iterator[Channels]:
    started = Channels.start()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def hang_task(tmp_path: Path) -> Path:
    """job.yaml whose `run` gives the supervisor HANG_JOB (E2E_JOB) instead of $JOB."""
    (tmp_path / "hang.py").write_text(HANG_JOB)
    text = (REPO / "job.yaml").read_text()
    assert text.count('-- "$JOB" "$@"') == 1 and text.count("\nenvs:\n") == 1
    text = text.replace('-- "$JOB" "$@"', '-- "$E2E_JOB" "$@"')
    text = text.replace("\nenvs:\n", f'\nenvs:\n  E2E_JOB: "{tmp_path / "hang.py"}"\n')
    (tmp_path / "job.yaml").write_text(text)
    return tmp_path / "job.yaml"


def env_for(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if k not in PROXIES and k not in ("GIT_COMMIT", "GIT_DIRTY")}
    env.update(SKYOPS_STATE_DIR=str(state), **extra)
    return env


def launch_argv(
    channels: Channels | None, run: str, *args: str, job: str = "tests/jobs/exit_with.py 0"
) -> list[str]:
    sets = {**(channels.settings() if channels else {}), "NCCL_PREFLIGHT": "0", "GRACE": "5"}
    argv = ["uv", "run", "--quiet", "--script", "scripts/local/launch.py", "--env-file", os.devnull]
    argv += ["--nodes", "2", "--run", run, *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    return [*argv, *args, *job.split()]


@dataclass
class Launched:
    code: int
    stdout: str
    stderr: str
    wall_s: float
    job_dir: Path

    @property
    def job_id(self) -> str:
        return self.job_dir.name.removeprefix("job-")

    def node_log(self, rank: int, attempt: int = 1) -> str:
        return (self.job_dir / f"attempt{attempt}" / f"node{rank}.log").read_text()


def launch(
    state: Path, channels: Channels | None, *args: str, env: dict[str, str] | None = None, **kw: str
) -> Launched:
    """Run the launcher to the job's end; the exit code, its output, the seconds it took, the job's folder."""
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    proc = subprocess.run(
        launch_argv(channels, run, *args, **kw), cwd=REPO, env=env_for(state, **(env or {})),
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.monotonic() - start
    (job_dir,) = (state / "runs" / run).glob("job-*")
    return Launched(proc.returncode, proc.stdout, proc.stderr, wall, job_dir)


def launch_watched(
    state: Path, channels: Channels, *args: str, env: dict[str, str] | None = None, **kw: str
) -> tuple[Launched, subprocess.CompletedProcess[str]]:
    """`launch`, with `jobs.py watch` following the job from its start, as a second terminal (or CI
    step) would, configured with the same channels: the launcher and the watcher both see the end."""
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    launcher = subprocess.Popen(
        launch_argv(channels, run, *args, **kw), cwd=REPO, env=env_for(state, **(env or {})),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not list((state / "runs" / run).glob("job-*/job.json")):
            assert launcher.poll() is None, launcher.communicate()
            time.sleep(0.05)
        watched = jobs_py(
            state, "watch", "--interval", "0.1", run, env={**channels.settings(), **(env or {})}
        )
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    (job_dir,) = (state / "runs" / run).glob("job-*")
    return Launched(launcher.returncode, out, err, time.monotonic() - start, job_dir), watched


def jobs_py(state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["uv", "run", "--quiet", "--script", "scripts/local/jobs.py", "--env-file", os.devnull, *args]
    return subprocess.run(
        argv, cwd=REPO, env=env_for(state, **(env or {})), capture_output=True, text=True, timeout=300
    )


def no_canary(state: Path, *outputs: str) -> None:
    """No canary secret in any output, nor in any file under the state folder (node logs, job.json,
    task.yaml, the run's data and claim files)."""
    for text in outputs:
        assert CANARY not in text and CANARY_TOKEN not in text
    for path in state.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert CANARY.encode() not in data and CANARY_TOKEN.encode() not in data, path


def chat(channels: Channels) -> list[tuple[str, str, str]]:
    """What each chat channel got, as (discord content, slack text, webhook text), per message."""
    return [
        (d.body["content"], s.body["text"], w.body["text"])
        for d, s, w in zip(channels.discord.seen, channels.slack.seen, channels.webhook.seen, strict=True)
    ]


def lines_ok(text: str, expected: list[str]) -> None:
    """`text`'s lines match `expected` (regular expressions, whole lines)."""
    assert len(text.splitlines()) == len(expected), text
    for line, pattern in zip(text.splitlines(), expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def webhook_doc(channels: Channels, i: int = 0) -> dict:
    doc = channels.webhook.seen[i].body
    assert doc["schema"] == "skyops.notify/v1" and doc["backend"] == "local"
    return doc


def test_a_job_that_succeeds_is_told_once_without_a_github_status(state: Path, channels: Channels) -> None:
    """No commit on the local backend: no GitHub status, one warning per send; the node sends the
    success (after every node's result), the launcher's own send finds it claimed; a watcher after the
    end sends nothing either."""
    done = launch(state, channels)
    assert done.code == 0, done.stderr
    run, job = done.job_dir.parent.name, done.job_id
    assert channels.counts() == {"discord": 1, "slack": 1, "github": 0, "webhook": 1}
    ((discord, slack, plain),) = chat(channels)
    tail = [r"attempts 1 · recoveries 0 · runtime \d+s · commit none"]
    lines_ok(slack, [re.escape(f"✅ *SUCCEEDED* · `{run}` · job {job}"), "reason: completed", *tail,
                     re.escape(f"logs: `make logs ID={job}`")])  # fmt: skip
    lines_ok(discord, [re.escape(f"✅ **SUCCEEDED** · `{run}` · job {job}"), "reason: completed", *tail,
                       re.escape(f"logs: `make logs ID={job}`")])  # fmt: skip
    assert plain.splitlines()[0] == f"✅ SUCCEEDED · {run} · job {job}"
    assert channels.discord.seen[0].body["allowed_mentions"] == {"parse": []}
    doc = webhook_doc(channels)
    assert {k: doc[k] for k in ("event", "run_id", "job_id", "state", "reason", "cause", "attempts", "recoveries",
                                "commit", "logs_hint")} == {
        "event": "ended", "run_id": run, "job_id": job, "state": "SUCCEEDED", "reason": "completed",
        "cause": None, "attempts": 1, "recoveries": 0, "commit": "", "logs_hint": f"make logs ID={job}",
    }  # fmt: skip
    node0 = done.node_log(0)
    assert "notify: started sent for job" in node0 and "notify: ended sent for job" in node0
    # started (GitHub only) and ended: each send says once that it posts no status
    assert node0.count("github: skipped: GIT_COMMIT is not a 40-character commit id; no status posted") == 2
    assert f"{job}-ended: already sent" in done.stderr  # the launcher's own send of the same ending
    watched = jobs_py(state, "watch", job, env=channels.settings())
    assert watched.returncode == 0 and f"{job}-ended: already sent" in watched.stderr, watched.stderr
    assert channels.counts() == {"discord": 1, "slack": 1, "github": 0, "webhook": 1}
    no_canary(state, done.stdout, done.stderr, watched.stdout, watched.stderr)


def test_a_job_that_fails_is_told_once_with_its_reason(state: Path, channels: Channels) -> None:
    """The node never sends a job's own failure: the launcher does; a watcher following the job from its
    start sees the same ending and finds it claimed."""
    done, watched = launch_watched(
        state, channels, "--max-restarts", "0", job="tests/jobs/exit_with.py 3", env={"GIT_COMMIT": SHA}
    )
    assert done.code == 1, done.stderr
    assert watched.returncode == 1, watched.stderr
    assert f"job {done.job_id} (run {done.job_dir.parent.name}) ended FAILED: run failed" in watched.stderr
    run, job = done.job_dir.parent.name, done.job_id
    assert channels.counts()["discord"] == channels.counts()["slack"] == channels.counts()["webhook"] == 1
    ((_, slack, _),) = chat(channels)
    lines_ok(slack, [
        re.escape(f"❌ *FAILED* · `{run}` · job {job}"),
        r"reason: job_failed · `run failed with node exit codes \[(3|137), (3|137)\]: node[01]: job_failed \(exit 3\).*"
        r"max_restarts_on_errors=0 spent`",
        r"attempts 1 · recoveries 0 · runtime \d+s · commit .*",
        re.escape(f"logs: `make logs ID={job}`"),
    ])  # fmt: skip
    doc = webhook_doc(channels)
    assert (doc["event"], doc["state"], doc["reason"], doc["attempts"], doc["recoveries"]) == (
        "ended", "FAILED", "job_failed", 1, 0
    )  # fmt: skip
    assert re.search(r"node[01]: job_failed \(exit 3\)", doc["cause"]), doc["cause"]
    # GitHub: pending when node 0 starts, then the final state. Node 1 fails at once here, and the
    # teardown that follows may stop node 0 while it still sends `started` (its `pending` is then lost,
    # never posted late): the final state is always there, and is always the last.
    github = [(s.path, s.body["state"], s.body["context"]) for s in channels.github.seen]
    path = f"/repos/owner/name/statuses/{SHA}"
    assert github in ([(path, "pending", f"skyops/{run}"), (path, "failure", f"skyops/{run}")],
                      [(path, "failure", f"skyops/{run}")])  # fmt: skip
    assert channels.github.seen[-1].headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    description = channels.github.seen[-1].body["description"]
    assert (
        description.startswith(f"job {job} FAILED: job_failed · attempts 1, recoveries 0")
        and len(description) <= 140
    )
    no_canary(state, done.stdout, done.stderr, watched.stdout, watched.stderr)


def test_a_job_that_hangs_and_is_recovered_is_told_per_attempt_and_at_its_end(
    state: Path, channels: Channels, hang_task: Path
) -> None:
    """Attempt 1 never heartbeats: a bad node (86), recovered onto fresh nodes (the launcher sends
    attempt_ended); attempt 2 succeeds (the node sends ended). GitHub: pending at attempt 1, success
    at the end, nothing for the attempt."""
    done = launch(
        state, channels, "--task", str(hang_task), "--set", "HEARTBEAT_TIMEOUT=2", "--set", "STARTUP_GRACE=20",
        "--set", "NOTIFY_ON=ended,attempt_ended", env={"GIT_COMMIT": SHA},
    )  # fmt: skip
    assert done.code == 0, done.stderr
    run, job = done.job_dir.parent.name, done.job_id
    assert channels.counts() == {"discord": 2, "slack": 2, "github": 2, "webhook": 2}
    (_, attempt_slack, _), (_, end_slack, _) = chat(channels)
    lines_ok(attempt_slack, [
        re.escape(f"🔁 *RECOVERING* · attempt 1 ended · `{run}` · job {job}"),
        r"reason: heartbeat_timeout · `.*node[01]: heartbeat_timeout \(exit 86\).*`",
        r"attempts 1 · recoveries 1 · runtime \d+s · commit .*",
        re.escape(f"logs: `make logs ID={job}`"),
    ])  # fmt: skip
    lines_ok(end_slack, [
        re.escape(f"✅ *SUCCEEDED* · `{run}` · job {job}"),
        "reason: completed",
        rf"attempts 2 · recoveries 1 · runtime \d+s · commit {SHA[:7]}",
        re.escape(f"logs: `make logs ID={job}`"),
    ])  # fmt: skip
    first, last = webhook_doc(channels, 0), webhook_doc(channels, 1)
    assert (first["event"], first["state"], first["reason"], first["attempts"]) == (
        "attempt_ended", "RECOVERING", "heartbeat_timeout", 1
    )  # fmt: skip
    assert (last["event"], last["state"], last["attempts"], last["recoveries"], last["commit"]) == (
        "ended", "SUCCEEDED", 2, 1, SHA
    )  # fmt: skip
    assert [s.body["state"] for s in channels.github.seen] == ["pending", "success"]
    no_canary(state, done.stdout, done.stderr)


def test_a_job_that_is_cancelled_is_told_once(state: Path, channels: Channels, hang_task: Path) -> None:
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    env = env_for(state, GIT_COMMIT=SHA)
    argv = launch_argv(channels, run, "--task", str(hang_task), job="tests/jobs/exit_with.py 0")
    launcher = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        node0 = state / "runs" / run
        while not any("node 0: attempt 1" in p.read_text() for p in node0.glob("job-*/attempt1/node0.log")):
            assert launcher.poll() is None, launcher.communicate()
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        (job_dir,) = node0.glob("job-*")
        while not channels.github.seen:  # `started` goes out in the background: the job does not wait
            assert time.monotonic() < deadline, "no pending status"
            time.sleep(0.1)
        cancelled = jobs_py(state, "cancel", run)
        assert cancelled.returncode == 0, cancelled.stderr
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 143, err  # the local backend's exit on SIGTERM: unchanged
    job = job_dir.name.removeprefix("job-")
    assert channels.counts() == {"discord": 1, "slack": 1, "github": 2, "webhook": 1}
    ((discord, slack, _),) = chat(channels)
    assert slack.splitlines()[:2] == [
        f"🛑 *CANCELLED* · `{run}` · job {job}",
        "reason: cancelled · `cancelled: jobs.py cancel`",
    ]
    assert discord.splitlines()[0] == f"🛑 **CANCELLED** · `{run}` · job {job}"
    doc = webhook_doc(channels)
    assert (doc["state"], doc["reason"], doc["cause"], doc["attempts"]) == (
        "CANCELLED", "cancelled", "cancelled: jobs.py cancel", 1
    )  # fmt: skip
    assert [s.body["state"] for s in channels.github.seen] == ["pending", "error"]
    no_canary(state, out, err, cancelled.stdout, cancelled.stderr)


ANSWERS = {"answer 500": Answer(500, "oops"), "are down": None, "never answer": Answer(204, hold=True)}


@pytest.mark.parametrize(
    ("servers", "job", "code"), [("answer 500", "3", 1), ("are down", "0", 0), ("never answer", "3", 1)]
)
def test_the_exit_code_is_the_jobs_whatever_the_servers_answer(
    state: Path, servers: str, job: str, code: int
) -> None:
    """Every server answers 500 (each request retried, then a warning), none listens (connection
    refused), or none answers at all: the launcher exits as the job did, and an ending's send takes at
    most its 30 s cap. (Measured, all servers silent: a job exiting 3 at once takes ~36 s instead of
    ~4 s; one that succeeds ~68 s instead of ~3 s, as node rank 0 sends both `started` and `ended`.)"""
    channels = Channels.start(same=ANSWERS[servers])
    if servers == "are down":
        channels.close()
    try:
        args = ("--max-restarts", "0")
        done = launch(state, channels, *args, job=f"tests/jobs/exit_with.py {job}", env={"GIT_COMMIT": SHA})
    finally:
        channels.close()
    assert done.code == code, done.stderr
    print(f"servers {servers}: launcher exit {done.code} after {done.wall_s:.1f} s")
    log = done.stderr + done.node_log(0)
    assert re.search(r"notify: (discord|slack|webhook|github): failed: ", log), log
    if servers == "answer 500":
        assert all(len(s.seen) >= 2 for s in channels.all().values())  # 5xx: retried
    if servers == "never answer":
        # node 1 fails at once, so the teardown cuts node 0's `started`; the launcher's `ended` waits
        # for the cap, and not longer
        assert re.search(r"notify: discord: failed: .*30 s time cap", done.stderr), done.stderr
        assert 30 <= done.wall_s < 60
    else:
        assert done.wall_s < 60
    no_canary(state, done.stdout, done.stderr)


def test_make_notify_test_reports_each_channel_in_one_line(state: Path, tmp_path: Path) -> None:
    """`make notify-test` with every channel in the environment: one test message each, one line each,
    exit 0; from a .env file with one channel failing: that line says why, exit 1 (make: 2)."""
    channels = Channels.start()
    try:
        done = subprocess.run(
            ["make", "--no-print-directory", "notify-test"], cwd=REPO, capture_output=True, text=True, timeout=300,
            env=env_for(state, **channels.settings(), GIT_COMMIT=SHA),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("notify: ")]
        assert sorted(lines) == [
            "notify: discord: ok (HTTP 204)", "notify: github: ok (HTTP 201)", "notify: slack: ok (HTTP 200)",
            "notify: webhook: ok (HTTP 200)",
        ]  # fmt: skip
        assert channels.counts() == {"discord": 1, "slack": 1, "github": 1, "webhook": 1}
        assert channels.github.seen[0].path == f"/repos/owner/name/statuses/{SHA}"
        assert channels.webhook.seen[0].body["event"] == "test"

        channels.slack.answers = [Answer(404, "no_service")]
        env_file = tmp_path / "notify.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in channels.settings().items()))
        argv = [
            "uv",
            "run",
            "--quiet",
            "--script",
            "scripts/local/jobs.py",
            "--env-file",
            str(env_file),
            "notify-test",
        ]
        failed = subprocess.run(
            argv, cwd=REPO, env=env_for(state, GIT_COMMIT=SHA), capture_output=True, text=True
        )
        assert failed.returncode == 1
        assert "notify: slack: failed: HTTP 404 no_service" in failed.stderr.splitlines()
        no_canary(state, done.stdout, done.stderr, failed.stdout, failed.stderr)
    finally:
        channels.close()
