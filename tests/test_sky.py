"""The SkyPilot backend (scripts/local/_sky_backend.py): task building with real SkyPilot objects,
resource patches across every shape (Y2), env text (Y1), secrets (Y3, a canary in every stream and
dumped file), structure errors (Y4), names (N1, --copies), and the launch path against a fake at the
SDK boundary (FakeSkyJobsSDK): job-id normalisation, --print-id, partial copies, exit 3, --follow.

Building resources with accelerators reads SkyPilot's catalog; it is seeded here, offline, in a
temporary SKY_RUNTIME_DIR (a catalog without an .md5 sidecar is never re-fetched;
docs/skypilot-facts.md). SkyPilot captures that path at import, so it is set before `import sky`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "scripts" / "local"
CANARY = "canary-9f3e1d7c-secret"
RUNTIME = Path(
    os.environ.get("SKY_RUNTIME_DIR", str(Path.home()))
)  # seeded by conftest, before any `import sky`
os.environ["SKYPILOT_DISABLE_LOCAL_API_SERVER"] = "1"
os.environ["SKYPILOT_DISABLE_USAGE_COLLECTION"] = "1"  # SkyPilot's telemetry goes to the internet

import _config  # noqa: E402
import _git  # noqa: E402
import _sky_backend as sb  # noqa: E402
import _sky_logs  # noqa: E402
import _sky_plan  # noqa: E402
import _sky_sdk  # noqa: E402
import _task  # noqa: E402
import launch  # noqa: E402
from _config import ConfigError  # noqa: E402
from _job_state import LIVE, TERMINAL, JobState  # noqa: E402
from conftest import N1_INVALID_NAMES, seed_runtime_dir  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (RUNTIME / ".sky/catalogs/v8/common/accelerators.csv").is_file(),
    reason="SkyPilot was imported before this module could seed an offline catalog",
)


class FakeSkyJobsSDK:
    """A fake of _sky_sdk.SkyJobsSDK, the boundary to the API server (no server or cloud here). Like
    SkyPilot 0.14.1's sky.jobs.tail_logs, `tail_logs` answers a code only when following and None
    without follow (sky/jobs/client/sdk.py: `get_result=follow`); `log_tail` gives the last lines."""

    def __init__(
        self, ids: list[Any] | None = None, fail_at: int | None = None, error: Exception | None = None
    ):
        self.ids = ids if ids is not None else [[11], 12, [13]]
        self.fail_at = fail_at
        self.error = error or RuntimeError("boom")
        self.launched: list[tuple[Any, str]] = []
        self.tails: list[int] = []
        self.tail_codes: list[int] = []
        self.cancelled: list[int] = []
        self.records: list[dict[str, Any]] = []
        self.logs: dict[int, str] = {}  # job id -> its whole log; default: one line
        self.log_tails: list[tuple[int, int]] = []  # (job id, lines) of each log_tail call
        self.log_tail_error: Exception | None = None

    def launch(self, task: Any, name: str) -> Any:
        if self.fail_at is not None and len(self.launched) == self.fail_at:
            raise self.error
        self.launched.append((task, name))
        return self.ids[len(self.launched) - 1]

    def _log(self, job_id: int) -> str:
        return self.logs.get(job_id, f"log line of {job_id}\n")

    def tail_logs(self, job_id: int, follow: bool, stream: Any) -> int | None:
        self.tails.append(job_id)
        stream.write(self._log(job_id))
        if not follow:
            return None
        return self.tail_codes.pop(0) if self.tail_codes else 0

    def log_tail(self, job_id: int, lines: int) -> str:
        self.log_tails.append((job_id, lines))
        if self.log_tail_error is not None:
            raise self.log_tail_error
        return "".join(self._log(job_id).splitlines(keepends=True)[-lines:])

    def queue(self, job_ids: Any, skip_finished: bool, all_users: bool) -> list[dict[str, Any]]:
        return [r for r in self.records if not job_ids or r["job_id"] in job_ids]

    def cancel(self, job_ids: Any) -> None:
        self.cancelled.extend(job_ids)


class FakeGitHost:
    """The git host of SkyPilot's own git check (sky/utils/git.py GitRepo, run by
    sky.Task.update_envs_and_secrets_from_workdir), faked at its two ways out: the public probe of
    /info/refs (its `requests.get`) and `git ls-remote` (GitPython's `git.cmd.Git`); SkyPilot's own
    logic in between runs as is. `public`: the probe answers 200; else 401, and ls-remote needs
    `token` in an https URL, or, for an ssh URL, a key (GIT_SSH_COMMAND with -i). `refs`: what
    ls-remote lists. `calls`: every contact, as (kind, URL as GitPython would log it)."""

    def __init__(self) -> None:
        self.public = True
        self.token: str | None = None
        self.refs = ""
        self.calls: list[tuple[str, str]] = []

    def get(self, url: str, **kwargs: Any) -> Any:
        self.calls.append(("probe", url))
        return types.SimpleNamespace(status_code=200 if self.public else 401)

    def gitpython(self) -> Any:
        import git as gitpython
        from git.util import remove_password_if_present

        host = self

        class Git:
            def __init__(self) -> None:
                self.env: dict[str, str] = {}

            def update_environment(self, **env: str) -> None:
                self.env.update(env)

            def ls_remote(self, url: str) -> str:
                command = remove_password_if_present(["git", "ls-remote", url])  # as GitPython logs it
                host.calls.append(("ls-remote", command[-1]))
                ok = (
                    host.public
                    or (host.token is not None and url.startswith(f"https://{host.token}@"))
                    or (url.startswith("ssh://") and " -i " in self.env.get("GIT_SSH_COMMAND", ""))
                )
                if not ok:
                    raise gitpython.exc.GitCommandError(command, 128, stderr="fatal: Authentication failed")
                return host.refs

        return types.SimpleNamespace(cmd=types.SimpleNamespace(Git=Git), exc=gitpython.exc)


@pytest.fixture(autouse=True)
def fake_git_host(monkeypatch: pytest.MonkeyPatch) -> FakeGitHost:
    """No test here reaches a real git host through SkyPilot's git check."""
    from sky.utils import git as sky_git

    host = FakeGitHost()
    monkeypatch.setattr(sky_git, "requests", types.SimpleNamespace(get=host.get))
    monkeypatch.setattr(sky_git, "git", host.gitpython())
    return host


# --------------------------------------------------------------------------------------- helpers

JOB_YAML = """\
name: t
resources:
  accelerators: H100:8
  any_of:
    - use_spot: true
    - use_spot: false
  job_recovery:
    strategy: EAGER_NEXT_REGION
    max_restarts_on_errors: 3
    recover_on_exit_codes: [86]
envs:
  JOB: "examples/train.py"
  JOB_ARGS: ""
  RUN_ID: "t"
  COMMIT: 0123456
  DEBUG: true
  VERSION: 1.10
  START: 12:30
secrets:
  WANDB_API_KEY: null
  OPTIONAL_TOKEN: ""
run: echo hi
"""


def make_cfg(tmp_path: Path, *argv: str, env_file: str | None = f"WANDB_API_KEY={CANARY}\n", task: str = JOB_YAML,
             environ: dict[str, str] | None = None, repo: Path | None = None) -> _config.LaunchConfig:  # fmt: skip
    """A LaunchConfig through the real parser and loader, with skip-git unless a repo is given."""
    (tmp_path / "job.yaml").write_text(task)
    args = ["--backend", "sky", "--task", str(tmp_path / "job.yaml"), "--run", "r1"]
    if env_file is not None:
        (tmp_path / "test.env").write_text(env_file)
        args += ["--env-file", str(tmp_path / "test.env")]
    if repo is None:
        args.append("--skip-git-check")
    parsed = launch.build_parser().parse_args([*args, *argv, "examples/train.py", "--steps", "3"])
    cfg = launch.load_config(parsed, environ or {}, dt.datetime(2026, 1, 2, 3, 4, 5))
    return dataclasses.replace(cfg, repo=repo) if repo is not None else cfg


def run_launch(cfg: _config.LaunchConfig, sdk: Any = None, ask: Any = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    kwargs = {"ask": ask} if ask else {}
    code = sb.launch(cfg, sdk=sdk or FakeSkyJobsSDK(), stdout=out, stderr=err, **kwargs)
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------------------- Y2 patches

SHAPES = [
    ({"accelerators": "A100:8"}, 4, {"accelerators": "A100:4"}),
    ({"accelerators": {"A100": 8, "H100": 8}}, 4, {"accelerators": {"A100": 4, "H100": 4}}),
    ({"accelerators": ["A100:8", "H100:8"]}, 2, {"accelerators": ["A100:2", "H100:2"]}),
    (
        {"ordered": [{"accelerators": "A100:8"}, {"accelerators": "H100:8", "use_spot": True}]},
        1,
        {"ordered": [{"accelerators": "A100:1"}, {"accelerators": "H100:1", "use_spot": True}]},
    ),
    (
        {"accelerators": "H100:8", "any_of": [{"use_spot": True}, {"use_spot": False}]},
        2,
        {"accelerators": "H100:2", "any_of": [{"use_spot": True}, {"use_spot": False}]},
    ),
]


@pytest.mark.parametrize(("resources", "gpus", "expected"), SHAPES)
def test_y2_gpu_count_patch_keeps_the_shape_and_builds(resources: dict, gpus: int, expected: dict) -> None:
    patched = _task.patch_resources(resources, gpus=gpus)
    assert patched == expected
    import sky

    task = sky.Task.from_yaml_config({"name": "x", "run": "true", "resources": patched})
    counts = {next(iter(r.accelerators.values())) for r in task.resources}
    assert counts == {gpus}


@pytest.mark.parametrize("value", ["A100:0", {"A100": 0, "H100": 8}, ["A100:8", "H100:0"], "A100:-1"])
def test_y2_zero_count_is_an_error(value: Any) -> None:
    with pytest.raises(ConfigError, match=r"resources.accelerators: .*count must be > 0"):
        _task.patch_resources({"accelerators": value})


def test_spot_and_cpus_apply_to_every_candidate() -> None:
    res = {"accelerators": "H100:8", "any_of": [{"use_spot": True, "cpus": 4}, {"use_spot": False}]}
    assert _task.patch_resources(res, use_spot=False) == {
        "accelerators": "H100:8",
        "any_of": [{"cpus": 4}, {}],
        "use_spot": False,
    }
    assert _task.patch_resources(res, use_spot=True, cpus="8+") == {
        "accelerators": "H100:8",
        "use_spot": True,
        "cpus": "8+",
    }
    ordered = {"ordered": [{"accelerators": "A100:8"}, {"accelerators": "H100:8", "use_spot": False}]}
    assert _task.patch_resources(ordered, use_spot=True) == {
        "ordered": [{"accelerators": "A100:8"}, {"accelerators": "H100:8"}],
        "use_spot": True,
    }
    assert res["any_of"][0] == {"use_spot": True, "cpus": 4}  # input untouched


def test_gpus_zero_drops_accelerators_and_max_restarts_everywhere() -> None:
    res = {"ordered": [{"accelerators": "A100:8", "job_recovery": "FAILOVER"}, {"accelerators": "H100:8"}]}
    patched = _task.patch_resources(res, gpus=0, max_restarts=5)
    assert patched == {
        "ordered": [{"job_recovery": {"strategy": "FAILOVER", "max_restarts_on_errors": 5}}, {}],
        "job_recovery": {"max_restarts_on_errors": 5},
    }
    with pytest.raises(ConfigError, match=r"--gpus 2: job\.yaml names no accelerator type"):
        _task.patch_resources({"cpus": 4}, gpus=2)


def test_task_built_with_all_patches(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path, "--gpus", "4", "--nodes", "3", "--cpus", "16+", "--no-spot", "--max-restarts", "7"
    )
    plan = _sky_plan.plan_copy(cfg, "r1", None, "a" * 40)
    task = _sky_plan.build_task(plan)
    assert task.name == "r1" and task.num_nodes == 3
    for r in task.resources:
        assert r.accelerators == {"H100": 4} and not r.use_spot and r.cpus == "16+"
        assert r.job_recovery["max_restarts_on_errors"] == 7 and r.job_recovery["recover_on_exit_codes"] == [
            86
        ]
    assert task.envs["RUN_ID"] == "r1" and task.envs["GIT_COMMIT"] == "a" * 40
    assert task.envs["JOB_ARGS"] == "--steps 3"


# --------------------------------------------------------------------------------------- Y1, Y3


def test_y1_env_values_reach_the_task_as_written(tmp_path: Path) -> None:
    task = _sky_plan.build_task(_sky_plan.plan_copy(make_cfg(tmp_path), "r1", None, None))
    assert (task.envs["COMMIT"], task.envs["DEBUG"], task.envs["VERSION"], task.envs["START"]) == (
        "0123456",
        "true",
        "1.10",
        "12:30",
    )


def test_y3_secrets_only_as_secrets(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    plan = _sky_plan.plan_copy(cfg, "r1", None, None)
    task = _sky_plan.build_task(plan)
    assert task.secrets["WANDB_API_KEY"].get_secret_value() == CANARY
    assert task.secrets["OPTIONAL_TOKEN"].get_secret_value() == ""  # a valid empty secret
    assert "WANDB_API_KEY" not in task.envs and CANARY not in json.dumps(task.envs)
    assert CANARY not in json.dumps(plan.config) and CANARY not in repr(plan)
    assert CANARY not in str(task.to_yaml_config(use_user_specified_yaml=True))


def test_y3_missing_secret_is_an_error_before_launch(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, env_file="")
    sdk = FakeSkyJobsSDK()
    with pytest.raises(ConfigError, match=r"secrets WANDB_API_KEY: not set"):
        run_launch(cfg, sdk)
    assert sdk.launched == []
    # a dry run does not need credentials: shown as null, with a warning
    code, out, _ = run_launch(dataclasses.replace(cfg, dry_run=True), sdk)
    assert code == 0 and "WANDB_API_KEY: null" in out and "OPTIONAL_TOKEN: <redacted>" in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def no_server_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a real launch.py/jobs.py process whose SkyPilot endpoint is the default local
    one (a free port), with no server running there and nothing that turns SkyPilot's auto-start off:
    its own HOME and SKY_RUNTIME_DIR (with the offline catalog), no SKYPILOT_* variables."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYOPS_", "SKYPILOT_", "SKY_"))}
    env.update(
        HOME=str(home),
        SKY_RUNTIME_DIR=str(seed_runtime_dir(tmp_path / "runtime")),
        SKYPILOT_API_SERVER_LOCAL_PORT=str(free_port()),
        SKYPILOT_DISABLE_USAGE_COLLECTION="1",
    )
    return env


NO_SERVER_LINE = (
    "{script}: error: no SkyPilot API server running at http://127.0.0.1:{port}: start it from your own"
    " SkyPilot install, the one with your clouds' extras: `sky api start` (or use a remote one:"
    " `sky api login -e <url>`); skyops never starts one (docs/decisions/local-api-server.md)"
)


def test_y3_canary_in_no_stream_and_no_dumped_file(tmp_path: Path) -> None:
    """Real processes: --dry-run, --dump-config json to a file and a -v failing launch (no API server at
    the default local endpoint, and none started: test_never_starts_a_local_api_server)."""
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    (tmp_path / "c.env").write_text(f"WANDB_API_KEY={CANARY}\n")
    env = no_server_env(tmp_path)
    base = [sys.executable, str(LOCAL / "launch.py"), "--backend", "sky", "--task", str(tmp_path / "job.yaml"),
            "--env-file", str(tmp_path / "c.env"), "--skip-git-check", "--run", "canary"]  # fmt: skip
    dumped = tmp_path / "task.json"
    cmd = " ".join(
        [
            *map(str, [*base, "--dump-config", "json", "examples/train.py"]),
            ">",
            str(dumped),
            "&&",
            *map(str, [*base, "--dry-run", "examples/train.py"]),
            "&&",
            *map(str, [*base, "-v", "--print-id", "examples/train.py"]),
        ]
    )
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert proc.returncode == 3, proc.stderr[-2000:]  # the last launch: no API server
    assert (
        "<redacted>" in proc.stdout
        and json.loads(dumped.read_text())["secrets"]["WANDB_API_KEY"] == "<redacted>"
    )
    port = int(env["SKYPILOT_API_SERVER_LOCAL_PORT"])
    assert NO_SERVER_LINE.format(script="launch.py", port=port) in proc.stderr.splitlines()
    assert "Traceback" in proc.stderr and not listening(port)  # -v
    for text in (proc.stdout, proc.stderr, dumped.read_text()):
        assert CANARY not in text


# --------------------------------------------------------------------------------------- Y4, N1


def test_y4_structural_mistakes_exit_2_listing_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "job.yaml").write_text(
        "resources:\n  # accelerators: H100:8\nnum_workers: 2\nenvs:\n  - A: 1\nrun: echo\n"
    )
    code = launch.main(["--backend", "sky", "--task", str(tmp_path / "job.yaml"), "examples/train.py"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    for part in (
        "resources is null",
        "num_workers unknown, did you mean num_nodes?",
        "envs must be a mapping",
    ):
        assert part in err


@pytest.mark.parametrize("name", ["train-run-01", "run_01", "Run.A", "a"])
def test_n1_valid_names_and_copies(name: str) -> None:
    assert _sky_plan.copy_names(name, 1) == [name]
    assert _sky_plan.copy_names(name, 3) == [f"{name}-1", f"{name}-2", f"{name}-3"]
    for n in _sky_plan.copy_names(name, 2):
        assert _config.CLUSTER_NAME_RE.match(n) and _config.TASK_NAME_RE.match(n)


@pytest.mark.parametrize(("name", "reason"), N1_INVALID_NAMES)
def test_n1_invalid_names(name: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        _sky_plan.copy_names(name, 2)


# --------------------------------------------------------------------------------------- launch path


def test_dump_config_json_and_copies(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "--dump-config", "json", "--copies", "2")
    sdk = FakeSkyJobsSDK()
    code, out, _ = run_launch(cfg, sdk)
    docs = json.loads(out)
    assert code == 0 and sdk.launched == []
    assert [d["name"] for d in docs] == ["r1-1", "r1-2"] and [d["envs"]["RUN_ID"] for d in docs] == [
        "r1-1",
        "r1-2",
    ]
    assert docs[0]["secrets"] == {"WANDB_API_KEY": "<redacted>", "OPTIONAL_TOKEN": "<redacted>"}
    assert docs[0]["workdir"] == str(REPO)  # --skip-git-check: the working tree is uploaded


def test_launch_copies_normalises_ids_and_prints_them(tmp_path: Path) -> None:
    sdk = FakeSkyJobsSDK(ids=[[11], 12, (13,)])
    code, out, err = run_launch(make_cfg(tmp_path, "--copies", "3", "--print-id"), sdk)
    assert code == 0 and out == "11\n12\n13\n"
    assert [name for _, name in sdk.launched] == ["r1-1", "r1-2", "r1-3"]
    task = sdk.launched[0][0]
    import sky

    assert isinstance(task, sky.Task) and task.envs["RUN_ID"] == "r1-1"
    assert task.secrets["WANDB_API_KEY"].get_secret_value() == CANARY and CANARY not in out + err


def test_partial_copies_say_which_launched_and_exit_3(tmp_path: Path) -> None:
    sdk = FakeSkyJobsSDK(ids=[[21], [22], [23]], fail_at=2, error=RuntimeError("controller exploded"))
    code, out, err = run_launch(make_cfg(tmp_path, "--copies", "3", "--print-id"), sdk)
    assert code == 3 and out == "21\n22\n"
    lines = [line for line in err.splitlines() if "error" in line]
    assert lines == [
        "launch.py: error: already launched: r1-1 (job 21), r1-2 (job 22); SkyPilot error (RuntimeError): controller exploded"
    ]


def test_normalise_job_ids() -> None:
    assert _sky_sdk.normalise_job_ids(7) == [7]
    assert _sky_sdk.normalise_job_ids([7, 8]) == [7, 8]
    assert _sky_sdk.normalise_job_ids(None) == []
    with pytest.raises(_sky_sdk.SkyError):
        _sky_sdk.normalise_job_ids("x")


def _exc(module: str, name: str, *args: Any) -> Exception:
    import importlib

    return getattr(importlib.import_module(module), name)(*args)


def _local_server_refusal() -> Exception:
    """The genuine error of SkyPilot 0.14.1 when it may not start a local API server
    (sky/server/common.py check_local_api_server_enabled_or_raise), with its traceback."""
    from sky.server import common

    os.environ[_sky_sdk.NO_LOCAL_API_SERVER_ENV] = "1"  # this module sets it for every test already
    try:
        with _sky_sdk.stdout_to_stderr():  # as every SkyPilot call of the launcher
            common.check_local_api_server_enabled_or_raise()
    except RuntimeError as exc:
        return exc
    raise AssertionError("SkyPilot did not refuse")


class _NoCloudSubclass(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (("sky.exceptions", "ApiServerConnectionError", "https://sky.example.invalid"), "no SkyPilot API server reachable (Could not connect to SkyPilot API server at https://sky.example.invalid."),
        (_local_server_refusal, "no SkyPilot API server running at http://127.0.0.1:"),
        (("sky.exceptions", "ApiServerAuthenticationError", "https://sky.example.invalid"), "needs a login: `sky api login -e <url>`"),
        (("sky.exceptions", "APIVersionMismatchError", "client 0.14.1, server 0.9"), "this SkyPilot client and the API server do not match (client 0.14.1"),
        (("sky.exceptions", "NoCloudAccessError", "anything at all"), "no cloud enabled for SkyPilot: run `sky check`"),
        (("sky.exceptions", "ResourcesUnavailableError", "no H100 anywhere"), "no resources match the task: no H100 anywhere"),
        (("requests.exceptions", "ConnectionError", "reset by peer"), "lost the connection to the SkyPilot API server (reset by peer)"),
        # Told apart by class, never by text: these say "API server" and "no cloud" in vain.
        (("builtins", "RuntimeError", "Could not connect to SkyPilot API server; no cloud enabled"), "SkyPilot error (RuntimeError): Could not"),
        (("builtins", "ValueError", "weird\nsecond line"), "SkyPilot error (ValueError): weird"),
    ],
)  # fmt: skip
def test_errors_are_one_actionable_line_exit_3(tmp_path: Path, error: Any, expected: str) -> None:
    sdk = FakeSkyJobsSDK(fail_at=0, error=error() if callable(error) else _exc(*error))
    code, out, err = run_launch(make_cfg(tmp_path), sdk)
    assert code == 3 and out == ""
    (line,) = [ln for ln in err.splitlines() if ln.startswith("launch.py:")]
    assert expected in line and "Traceback" not in err


def test_errors_are_told_apart_by_class() -> None:
    import requests
    import sky.exceptions

    class Quota(sky.exceptions.ResourcesUnavailableError):  # a subclass is still that error
        pass

    assert _sky_sdk.describe_sky_error(Quota("out of quota")).startswith(
        "no resources match the task: out of quota"
    )
    catalog = requests.exceptions.ConnectionError("Failed to fetch common catalog")
    assert _sky_sdk.describe_sky_error(catalog, building=True).startswith(
        "cannot reach the network for SkyPilot's catalog"
    )
    limit = getattr(sys, "tracebacklimit", None)
    refusal = RuntimeError(str(_local_server_refusal()))  # the same words, raised elsewhere
    assert _sky_sdk.describe_sky_error(refusal).startswith(
        "SkyPilot error (RuntimeError): No SkyPilot API server"
    )
    assert getattr(sys, "tracebacklimit", None) == limit  # SkyPilot's raise leaves it at 0; restored


def test_follow_treats_101_as_still_running(tmp_path: Path) -> None:
    sdk = FakeSkyJobsSDK(ids=[[5]])
    sdk.tail_codes = [101, 101, 100]
    sleeps: list[float] = []
    assert (
        _sky_logs.exit_code_of_tail(5, _sky_logs.tail_until_done(sdk, 5, io.StringIO(), sleep=sleeps.append))
        == 1
    )
    assert sdk.tails == [5, 5, 5] and len(sleeps) == 2
    sdk.tail_codes = [0]
    code, _, err = run_launch(make_cfg(tmp_path, "--follow"), FakeSkyJobsSDK(ids=[[5]]))
    assert code == 0 and "log line of 5" in err  # logs are for people: stderr
    with pytest.raises(ConfigError, match="--follow: works with one copy"):
        run_launch(make_cfg(tmp_path, "--follow", "--copies", "2"))


def test_confirm_asks_and_declining_launches_nothing(tmp_path: Path) -> None:
    sdk = FakeSkyJobsSDK()
    code, out, err = run_launch(make_cfg(tmp_path, "--confirm"), sdk, ask=lambda q: "n")
    assert code == 1 and sdk.launched == [] and "launch 1 managed job(s): r1" in err and CANARY not in err
    assert (
        out == ""
        and err.strip().splitlines()[-1] == "launch.py: not launched (declined at the --confirm prompt)"
    )
    code, _, _ = run_launch(make_cfg(tmp_path, "--confirm"), sdk, ask=lambda q: "yes")
    assert code == 0 and len(sdk.launched) == 1

    def no_answer(question: str) -> str:
        raise EOFError

    with pytest.raises(
        ConfigError, match=r"^--confirm: no answer on stdin \(use it from a terminal, or drop --confirm\)$"
    ):
        run_launch(make_cfg(tmp_path, "--confirm"), sdk, ask=no_answer)
    assert len(sdk.launched) == 1


def test_confirm_prompt_on_stderr_answer_from_stdin() -> None:
    err = io.StringIO()
    assert sb.ask_stdin("Launch? [y/N] ", err, io.StringIO("y\n")) == "y\n"
    assert err.getvalue() == "Launch? [y/N] "
    for stdin in (io.StringIO(""), None):
        err = io.StringIO()
        with pytest.raises(EOFError):
            sb.ask_stdin("Launch? [y/N] ", err, stdin)
        assert err.getvalue() == "Launch? [y/N] \n"  # the error line that follows starts a line


# ------------------------------------------------------------- stdout = data (real processes)

FAKE_SKY_INIT = '''\
"""FAKE of SkyPilot's client SDK (the `sky` package), for tests only: no API server here.
Like the real one it prints to stdout on its own: through a handler that holds the original
sys.stdout (SkyPilot's logger), through sys.__stdout__, and to file descriptor 1."""
import os
import sys

_HANDLER_STREAM = sys.stdout


def _chatter(what):
    _HANDLER_STREAM.write(f"CHATTER handler {what}\\n")
    _HANDLER_STREAM.flush()
    sys.__stdout__.write(f"CHATTER __stdout__ {what}\\n")  # left in the buffer
    os.write(1, f"CHATTER fd1 {what}\\n".encode())


_chatter("import")


class Task:
    @staticmethod
    def from_yaml_config(config, env_overrides=(), secrets_overrides=()):
        _chatter("task")
        task = Task()
        task.name, task.num_nodes = config["name"], config.get("num_nodes", 1)
        task.workdir = config.get("workdir")
        task.envs = dict(env_overrides)
        task.secrets = dict(secrets_overrides)
        return task


def get(request):
    _chatter("get")
    return request


from sky import jobs  # noqa: E402
'''

# sky.utils.schemas and sky.utils.git, as far as the launcher reads them: the task keys (here the copy
# that test_task_keys_copy_is_skypilots_schema holds to SkyPilot's) and the git env names.
FAKE_SKY_UTILS = {
    "__init__.py": "",
    "schemas.py": "import _config\n\n\ndef get_task_schema():\n    return {'properties': dict.fromkeys(_config.TASK_KEYS)}\n",
    "git.py": "GIT_URL_ENV_VAR, GIT_COMMIT_HASH_ENV_VAR = 'GIT_URL', 'GIT_COMMIT_HASH'\n"
    "GIT_BRANCH_ENV_VAR, GIT_TAG_ENV_VAR = 'GIT_BRANCH', 'GIT_TAG'\n",
}

FAKE_SKY_JOBS = """\
import json
import os

import sky

RECORDS = json.loads(os.environ["FAKE_SKY_RECORDS"])
LOGS = json.loads(os.environ["FAKE_SKY_LOGS"])


def _called(what):
    with open(os.environ["FAKE_SKY_CALLS"], "a") as fh:
        fh.write(what + "\\n")


def launch(task, name=None):
    sky._chatter("launch")
    return ([7], None)


def queue_v2(refresh, skip_finished, all_users, job_ids, fields):
    sky._chatter("queue")
    return ([r for r in RECORDS if not job_ids or r["job_id"] in job_ids], 1, {}, 1)


def tail_logs(name=None, job_id=None, follow=True, controller=False, refresh=False, tail=None,
              tail_offset=None, output_stream=None, task=None, *, preload_content=True):
    # As SkyPilot 0.14.1's: prints the (last `tail`) lines; a code only when following, else None.
    sky._chatter("tail")
    _called(f"tail_logs {job_id} follow={follow} tail={tail}")
    lines = LOGS.get(str(job_id), "").splitlines(keepends=True)
    output_stream.write("".join(lines[-tail:] if tail else lines))
    if not follow:
        return None
    status = next((r["status"] for r in RECORDS if r["job_id"] == job_id), None)
    if status is None:
        return 102
    return {"SUCCEEDED": 0, "CANCELLED": 103}.get(status, 100 if status.startswith("FAILED") else 101)


def cancel(job_ids):
    sky._chatter("cancel")
"""
FAKE_RECORDS = [
    {"job_id": 7, "job_name": "r", "status": "FAILED", "recovery_count": 1, "failure_reason": "setup failed",
     "submitted_at": 1000.0, "job_duration": 5.0},
    {"job_id": 8, "job_name": "b", "status": "SUCCEEDED", "recovery_count": 0, "failure_reason": None,
     "submitted_at": 1100.0, "job_duration": 90.0},
    {"job_id": 9, "job_name": "a", "status": "RUNNING", "recovery_count": 0, "failure_reason": None,
     "submitted_at": 1200.0, "job_duration": 9.0},
]  # fmt: skip
SUMMARY_7 = "run.py: ERROR: summary: node=0 attempt=3 reason=crash_loop exit_code=87 runtime_s=4.0 cause: 3 fast fails"
SUMMARY_8 = "run.py: INFO: summary: node=0 attempt=1 reason=max_runtime exit_code=0 runtime_s=86.5"
FAKE_LOGS = {
    "7": f"log line of 7\n{SUMMARY_7}\n",
    "8": "".join(f"step {i}\n" for i in range(300)) + SUMMARY_8 + "\n✓ Job finished (status: SUCCEEDED).\n",
    "9": "step 1\n",
}


@pytest.fixture
def fake_sky_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a real launch.py/jobs.py process whose `import sky` finds FAKE_SKY_*
    (first on PYTHONPATH) instead of SkyPilot; ENV_FILE names a .env with the job's secrets,
    FAKE_SKY_CALLS the file the fake lists its tail_logs calls in; state (sky-reasons.json) goes to
    SKYOPS_STATE_DIR, a temporary folder."""
    pkg = tmp_path / "fake-sky" / "sky"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_SKY_INIT)
    (pkg / "jobs.py").write_text(FAKE_SKY_JOBS)
    (pkg / "utils").mkdir()
    for name, text in FAKE_SKY_UTILS.items():
        (pkg / "utils" / name).write_text(text)
    (tmp_path / "c.env").write_text("WANDB_API_KEY=x\nHF_TOKEN=\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYOPS_", "SKYPILOT_"))}
    env.update(
        PYTHONPATH=str(pkg.parent), SKYPILOT_DISABLE_LOCAL_API_SERVER="1", ENV_FILE=str(tmp_path / "c.env"),
        FAKE_SKY_RECORDS=json.dumps(FAKE_RECORDS), FAKE_SKY_LOGS=json.dumps(FAKE_LOGS),
        FAKE_SKY_CALLS=str(tmp_path / "calls.txt"), SKYOPS_STATE_DIR=str(tmp_path / "state"),
    )  # fmt: skip
    return env


def run_script(
    env: dict[str, str], script: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCAL / script), *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def assert_chatter_on_stderr(proc: subprocess.CompletedProcess[str], *calls: str) -> None:
    assert "CHATTER" not in proc.stdout
    for what in ("import", *calls):
        for how in ("handler", "__stdout__", "fd1"):
            assert f"CHATTER {how} {what}" in proc.stderr, (how, what, proc.stderr)


def test_stdout_is_data_only_while_the_sdk_prints(fake_sky_env: dict[str, str]) -> None:
    """QA finding: SkyPilot's start-up messages of a local API server landed on stdout, so
    `jobs.py --backend sky status --json` printed them before `[]`. With a fake SDK that writes to
    sys.stdout's original object, sys.__stdout__ and fd 1, stdout is exactly the data."""
    import _jobs_sky

    proc = run_script(fake_sky_env, "jobs.py", "--backend", "sky", "status", "--json")
    assert proc.returncode == 0, proc.stderr
    reasons = {7: _sky_logs.parse_summary(SUMMARY_7), 8: _sky_logs.parse_summary(SUMMARY_8)}
    assert (
        proc.stdout
        == json.dumps(_jobs_sky.sky_rows(FAKE_RECORDS, 0.0, reasons), indent=2, default=str) + "\n"
    )
    assert_chatter_on_stderr(proc, "get", "queue", "tail")

    proc = run_script(fake_sky_env, "jobs.py", "--backend", "sky", "logs", "7")  # streamed data
    assert proc.returncode == 1 and proc.stdout == FAKE_LOGS["7"], proc.stderr
    assert (
        proc.stderr.strip().splitlines()[-1]
        == "job 7 (run r) ended FAILED: setup failed (supervisor: crash_loop)"
    )
    assert_chatter_on_stderr(proc, "tail")

    proc = run_script(fake_sky_env, "jobs.py", "--backend", "sky", "cancel", "7")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert_chatter_on_stderr(proc, "cancel")

    launch_args = [
        "--backend",
        "sky",
        "--env-file",
        fake_sky_env["ENV_FILE"],
        "--skip-git-check",
        "--run",
        "r",
    ]
    proc = run_script(fake_sky_env, "launch.py", *launch_args, "--print-id", "examples/train.py")
    assert proc.returncode == 0 and proc.stdout == "7\n", proc.stderr
    assert_chatter_on_stderr(proc, "task", "launch", "get")


def test_confirm_in_a_real_process(fake_sky_env: dict[str, str]) -> None:
    """The prompt goes to stderr; no answer on stdin (EOF) is bad input (2), not a failed job;
    declining is 1 with "not launched"; a piped yes launches."""
    args = ["--backend", "sky", "--env-file", fake_sky_env["ENV_FILE"], "--skip-git-check", "--run", "r",
            "--confirm", "--print-id", "examples/train.py"]  # fmt: skip
    proc = run_script(fake_sky_env, "launch.py", *args)  # stdin: /dev/null
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "Launch 1 managed job(s)? [y/N]" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "launch.py: error: --confirm: no answer on stdin (use it from a terminal, or drop --confirm)"
    )
    proc = run_script(fake_sky_env, "launch.py", *args, stdin="n\n")
    assert proc.returncode == 1 and proc.stdout == "" and "not launched" in proc.stderr
    assert "CHATTER fd1 launch" not in proc.stderr
    proc = run_script(fake_sky_env, "launch.py", *args, stdin="y\n")
    assert proc.returncode == 0 and proc.stdout == "7\n", proc.stderr


def test_stdout_to_stderr_restores_fd_1_and_nests() -> None:
    """fd 1 points at stderr inside the block, is restored after (also on an exception), and the
    yielded stream (the outer one, in a nested block) writes to the real stdout."""
    probe = (
        "import os, sys, _sky_sdk\n"
        "print('before', flush=True)\n"
        "try:\n"
        "    with _sky_sdk.stdout_to_stderr() as data:\n"
        "        print('chatter1')\n"
        "        with _sky_sdk.stdout_to_stderr() as inner:\n"
        "            os.write(1, b'chatter2\\n')\n"
        "            inner.write('data-inner\\n')\n"
        "        data.write('data\\n')\n"
        "        raise KeyError\n"
        "except KeyError:\n"
        "    pass\n"
        "print('after')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(LOCAL)}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "before\ndata-inner\ndata\nafter\n"
    assert proc.stderr == "chatter1\nchatter2\n"


HOSTED_URL = "https://git.example.invalid/org/repo.git"


def hosted_clone(tmp_path: Path) -> tuple[Path, str]:
    """A repository whose origin is a hosted URL (never contacted): `origin/main` and the upstream
    are recorded locally, as after a push. Returns (work tree, HEAD)."""
    from test_git import commit, sh

    work = tmp_path / "work"
    sh(tmp_path, "init", "-q", "-b", "main", str(work))
    sh(work, "remote", "add", "origin", HOSTED_URL)
    head = commit(work, "a.txt")
    sh(work, "update-ref", "refs/remotes/origin/main", head)
    sh(work, "config", "branch.main.remote", "origin")
    sh(work, "config", "branch.main.merge", "refs/heads/main")
    return work, head


def test_git_pin_in_workdir_and_git_commit(tmp_path: Path, fake_git_host: FakeGitHost) -> None:
    """SkyPilot's own git check (Task.update_envs_and_secrets_from_workdir, as its CLI calls it) reads
    the remote and sets GIT_URL and GIT_COMMIT_HASH; the launcher sets only GIT_COMMIT and GIT_DIRTY."""
    from test_git import commit

    work, head = hosted_clone(tmp_path)
    fake_git_host.refs = f"{head}\trefs/heads/main\n"
    sdk = FakeSkyJobsSDK()
    code, _, _ = run_launch(make_cfg(tmp_path, repo=work), sdk)
    assert code == 0
    task = sdk.launched[0][0]
    assert task.workdir == {"url": HOSTED_URL, "ref": head}
    assert (task.envs["GIT_COMMIT"], task.envs["GIT_DIRTY"]) == (head, "0")
    assert (task.envs["GIT_COMMIT_HASH"], task.envs["GIT_URL"]) == (head, HOSTED_URL)  # set by SkyPilot
    assert ("probe", f"{HOSTED_URL}/info/refs?service=git-upload-pack") in fake_git_host.calls
    assert ("ls-remote", HOSTED_URL) in fake_git_host.calls  # SkyPilot checked the ref's kind
    commit(work, "b.txt")  # unpushed: refused before anything is launched
    with pytest.raises(ConfigError, match="1 unpushed commit on main"):
        run_launch(make_cfg(tmp_path, repo=work), sdk)
    assert len(sdk.launched) == 1
    with pytest.raises(ConfigError, match="--git-ref: cannot be combined with --skip-git-check"):
        run_launch(make_cfg(tmp_path, "--git-ref", "HEAD"))


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_local_remote_url_refused_on_launch_warned_on_dry_run(
    tmp_path: Path, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A remote that is a path on this machine (QA: a clone of /work/main) cannot be cloned by the
    cloud nodes: a launch refuses (exit 2, one line naming the remote and the fix), a dry run warns."""
    from test_git import commit, sh

    remote, work = tmp_path / "remote.git", tmp_path / "work"
    sh(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    sh(tmp_path, "init", "-q", "-b", "main", str(work))
    sh(work, "remote", "add", "origin", f"{scheme}{remote}")
    head = commit(work, "a.txt")
    sh(work, "push", "-q", "-u", "origin", "main")
    sdk = FakeSkyJobsSDK()
    with pytest.raises(_git.GitError) as info:
        run_launch(make_cfg(tmp_path, repo=work), sdk)
    assert sdk.launched == []
    message = str(info.value)
    assert message.startswith(f"git remote origin is '{scheme}{remote}', a path on this machine")
    assert "push to a hosted remote" in message and "--skip-git-check" in message and "\n" not in message
    for flags in (["--dry-run"], ["--dump-config", "json"]):
        caplog.clear()
        code, out, _ = run_launch(make_cfg(tmp_path, *flags, repo=work), sdk)
        assert code == 0 and head in out and f"{scheme}{remote}" in out
        assert any(
            "a path on this machine" in r.getMessage() for r in caplog.records if r.levelname == "WARNING"
        )
    assert sdk.launched == []


def test_sky_only_flags_rejected_on_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = launch.main(["--copies", "2", "--run", "x", "examples/train.py"])
    assert (
        code == 2 and capsys.readouterr().err.strip() == "launch.py: error: --copies: only with --backend sky"
    )


def test_help_and_bad_input_never_import_skypilot(tmp_path: Path) -> None:
    script = str(LOCAL / "launch.py")
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, *sys.argv[1:]]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('SKY' if 'sky' in sys.modules else 'NOSKY', code, file=sys.stderr)\n"
    )
    env = {**os.environ, "SKYPILOT_DISABLE_LOCAL_API_SERVER": "1", "PYTHONPATH": str(LOCAL)}
    cases = [
        ["--help"],
        ["--backend", "sky", "--run", "1run", "examples/train.py"],
        ["--backend", "sky", "--copies", "0", "examples/train.py"],
        ["--backend", "sky", "--dump-config", "xml", "examples/train.py"],
        ["--backend", "sky", "--nodes", "0", "examples/train.py"],
    ]
    for args in cases:
        proc = subprocess.run(
            [sys.executable, "-c", probe, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        last = proc.stderr.strip().splitlines()[-1]
        assert last in ("NOSKY 0", "NOSKY 2"), (args, proc.stderr)


# ------------------------------------------------------------- GIT_COMMIT / GIT_DIRTY tell the truth


def _git_envs(tmp_path: Path, *argv: str, repo: Path) -> dict[str, str]:
    sdk = FakeSkyJobsSDK()
    code, _, _ = run_launch(make_cfg(tmp_path, *argv, repo=repo), sdk)
    assert code == 0
    task = sdk.launched[0][0]
    return {k: v for k, v in task.envs.items() if k.startswith("GIT_")} | {"workdir": str(task.workdir)}


def _notifier_would_post(envs: dict[str, str]) -> bool:
    """The rule a notifier follows (README "Going to the cloud"): a GitHub status only for a clean
    40-hex GIT_COMMIT."""
    import re

    return (
        envs.get("GIT_DIRTY") != "1" and re.fullmatch(r"[0-9a-f]{40}", envs.get("GIT_COMMIT", "")) is not None
    )


def test_skip_git_check_never_tells_the_job_a_commit_its_code_does_not_match(tmp_path: Path) -> None:
    from test_git import commit

    work, head = hosted_clone(tmp_path)
    pinned = _git_envs(tmp_path, repo=work)
    assert (pinned["GIT_COMMIT"], pinned["GIT_DIRTY"]) == (head, "0") and _notifier_would_post(pinned)
    clean = _git_envs(tmp_path, "--skip-git-check", repo=work)  # the uploaded tree is exactly HEAD
    assert clean == {"GIT_COMMIT": head, "GIT_DIRTY": "0", "workdir": str(work)}
    (work / "a.txt").write_text("changed, not committed")
    dirty = _git_envs(tmp_path, "--skip-git-check", repo=work)
    assert dirty == {"GIT_COMMIT": f"{head}-dirty", "GIT_DIRTY": "1", "workdir": str(work)}
    assert not _notifier_would_post(dirty)
    (work / "a.txt").write_text("x")  # back to HEAD's content; an untracked file is uploaded too
    (work / "new.py").write_text("print('not committed')\n")
    assert _git_envs(tmp_path, "--skip-git-check", repo=work)["GIT_DIRTY"] == "1"
    (work / "new.py").unlink()
    commit(work, "b.txt")  # committed but not pushed: the tree is HEAD, so HEAD is the truth
    assert _git_envs(tmp_path, "--skip-git-check", repo=work)["GIT_DIRTY"] == "0"
    nogit = tmp_path / "nogit"
    nogit.mkdir()
    bare = _git_envs(tmp_path, "--skip-git-check", repo=nogit)
    assert bare == {"GIT_DIRTY": "1", "workdir": str(nogit)} and not _notifier_would_post(bare)


def test_dry_run_shows_git_dirty(tmp_path: Path) -> None:
    work, head = hosted_clone(tmp_path)
    (work / "a.txt").write_text("changed")
    code, out, _ = run_launch(make_cfg(tmp_path, "--skip-git-check", "--dump-config", "json", repo=work))
    envs = json.loads(out)["envs"]
    assert code == 0 and (envs["GIT_COMMIT"], envs["GIT_DIRTY"]) == (f"{head}-dirty", "1")


@pytest.mark.parametrize("key", ["GIT_DIRTY", "GIT_COMMIT"])
def test_git_keys_are_launcher_owned(tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job.yaml").write_text(JOB_YAML)
    base = [
        "--backend",
        "sky",
        "--task",
        str(tmp_path / "job.yaml"),
        "--skip-git-check",
        "--run",
        "r1",
        "--dry-run",
    ]
    (tmp_path / "flag.env").write_text(f"WANDB_API_KEY={CANARY}\n")
    code = launch.main(
        [*base, "--env-file", str(tmp_path / "flag.env"), "--set", f"{key}=0", "examples/train.py"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == (
        f"launch.py: error: --set {key}: {key} is set by the launcher from the git state (--git-ref,"
        " --skip-git-check); remove it\n"
    )
    (tmp_path / "owned.env").write_text(f"WANDB_API_KEY={CANARY}\n{key}=0\n")
    code = launch.main([*base, "--env-file", str(tmp_path / "owned.env"), "examples/train.py"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and CANARY not in captured.err
    assert (
        captured.err
        == f"launch.py: error: {tmp_path / 'owned.env'}:2: {key} is set by the launcher from the git state (--git-ref, --skip-git-check); remove it\n"
    )


# ------------------------------------------------------------- how a managed job ended

FAILED_LOG = (
    "(head, rank=0, pid=2211) step 1\n"
    "(worker1, rank=1, pid=3121, ip=10.0.0.2) \x1b[31mboom\x1b[0m\n"
    "(head, rank=0, pid=2211) run.py: INFO: summary: node=0 attempt=3 reason=sigterm exit_code=143 runtime_s=3.0\n"
    "(worker1, rank=1, pid=3121, ip=10.0.0.2) run.py: ERROR: summary: node=1 attempt=3 reason=crash_loop"
    " exit_code=87 runtime_s=2.5 cause: the last 3 failed attempts started within 60 min\n"
)


def test_parse_summary_picks_the_line_that_says_how_the_job_ended() -> None:
    summary = _sky_logs.parse_summary(FAILED_LOG)
    assert summary == {"node": 1, "attempt": 3, "reason": "crash_loop", "exit_code": 87, "runtime_s": 2.5,
                       "cause": "the last 3 failed attempts started within 60 min"}  # fmt: skip
    earlier = "run.py: INFO: summary: node=0 attempt=2 reason=job_failed exit_code=1 runtime_s=1.0\n"
    assert _sky_logs.parse_summary(earlier + FAILED_LOG)["attempt"] == 3  # the last attempt counts
    assert _sky_logs.parse_summary("run.py: INFO: summary: node=0 attempt=1 reason=max_runtime exit_code=0 runtime_s=7.0\r\n") == {
        "node": 0, "attempt": 1, "reason": "max_runtime", "exit_code": 0, "runtime_s": 7.0, "cause": None}  # fmt: skip
    assert _sky_logs.parse_summary("no summary: here\nsummary: node=x\n") is None


def _records() -> list[dict[str, Any]]:
    return [
        {"job_id": 4, "job_name": "live", "status": "RUNNING", "submitted_at": 400.0, "failure_reason": None},
        {"job_id": 5, "job_name": "loop", "status": "FAILED", "submitted_at": 500.0,
         "failure_reason": "Job exited with exit codes [143, 87] (user program failure)."},
        {"job_id": 6, "job_name": "budget", "status": "SUCCEEDED", "submitted_at": 600.0, "failure_reason": None},
        {"job_id": 7, "job_name": "noresource", "status": "FAILED_NO_RESOURCE", "submitted_at": 700.0,
         "failure_reason": "no resources"},
    ]  # fmt: skip


def _sdk_with_logs() -> FakeSkyJobsSDK:
    sdk = FakeSkyJobsSDK()
    sdk.records = _records()
    sdk.logs = {
        4: "step 1\n",
        5: FAILED_LOG,
        6: "".join(f"step {i}\n" for i in range(500))
        + "run.py: INFO: summary: node=0 attempt=2 reason=max_runtime exit_code=0 runtime_s=86400.0\n"
        + "Shared connection to 10.0.0.1 closed.\n",
        7: "No logs: the job never ran on a cluster.\n",
    }
    return sdk


def test_supervisor_reasons_are_fetched_once_per_finished_job(tmp_path: Path) -> None:
    sdk, cache = _sdk_with_logs(), tmp_path / "state" / "sky-reasons.json"
    reasons = _sky_logs.supervisor_reasons(sdk, sdk.records, cache)
    assert {k: v and v["reason"] for k, v in reasons.items()} == {5: "crash_loop", 6: "max_runtime", 7: None}
    assert sdk.log_tails == [(7, 200), (6, 200), (5, 200)]  # finished jobs only, newest first, by tail
    assert (
        _sky_logs.supervisor_reasons(sdk, sdk.records, cache) == reasons and len(sdk.log_tails) == 3
    )  # cached
    moved = [{**r, "submitted_at": 9.0} if r["job_id"] == 6 else r for r in sdk.records]
    _sky_logs.supervisor_reasons(sdk, moved, cache)  # same id, another job (another API server): read again
    assert sdk.log_tails[3:] == [(6, 200)]


def test_supervisor_reasons_never_fail_status_and_never_cache_a_miss(tmp_path: Path) -> None:
    sdk, cache = _sdk_with_logs(), tmp_path / "sky-reasons.json"
    sdk.log_tail_error = RuntimeError("controller is stopped")
    assert _sky_logs.supervisor_reasons(sdk, sdk.records, cache) == {}
    assert sdk.log_tails == [(7, 200)] and not cache.exists()  # the first failure stops the fetching
    sdk.log_tail_error = None
    sdk.logs[6] = ""  # logs not synced yet: asked again next time
    assert _sky_logs.supervisor_reasons(sdk, sdk.records, cache, max_fetches=2) == {7: None, 6: None}
    assert sorted(json.loads(cache.read_text())["jobs"]) == ["7"]
    cache.write_text("{corrupt")  # a broken cache is a cache miss, and rewritten
    assert _sky_logs.supervisor_reasons(sdk, sdk.records, cache)[5]["reason"] == "crash_loop"
    assert sorted(json.loads(cache.read_text())["jobs"]) == ["5", "7"]


def test_status_shows_the_supervisors_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import _jobs_sky

    sdk, cache = _sdk_with_logs(), tmp_path / "sky-reasons.json"
    cfg = _config.JobsConfig(backend="sky", command="status")
    assert _jobs_sky.run_sky(cfg, sys.stdout, sdk=sdk, reasons_cache=cache) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "STATUS",
        "RECOVERIES",
        "SUBMITTED",
        "DURATION",
        "REASON",
        "FAILURE_REASON",
    ]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert by_id["6"].split()[1:3] == ["budget", "SUCCEEDED"] and "max_runtime" in by_id["6"]
    assert "crash_loop" in by_id["5"] and "Job exited with exit codes [143, 87]" in by_id["5"]
    assert (
        _jobs_sky.run_sky(dataclasses.replace(cfg, json=True), sys.stdout, sdk=sdk, reasons_cache=cache) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert {r["job_id"]: (r["status"], r["reason"]) for r in rows} == {
        4: ("RUNNING", None), 5: ("FAILED", "crash_loop"), 6: ("SUCCEEDED", "max_runtime"), 7: ("FAILED_NO_RESOURCE", None)
    }  # fmt: skip
    assert rows[1]["cause"] == "the last 3 failed attempts started within 60 min"
    assert len(sdk.log_tails) == 3  # the second status read the cache
    sdk.records = [r for r in sdk.records if r["job_id"] == 4]  # nothing finished: no REASON column
    assert _jobs_sky.run_sky(cfg, sys.stdout, sdk=sdk, reasons_cache=cache) == 0
    assert "REASON " not in capsys.readouterr().out.splitlines()[0]


@pytest.mark.parametrize(
    ("job_id", "follow", "code", "last_line"),
    [
        (5, False, 1, "job 5 (run loop) ended FAILED: Job exited with exit codes [143, 87] (user program failure). (supervisor: crash_loop)"),
        (5, True, 1, "job 5 (run loop) ended FAILED: Job exited with exit codes [143, 87] (user program failure). (supervisor: crash_loop)"),
        (7, False, 1, "job 7 (run noresource) ended FAILED_NO_RESOURCE: no resources"),
        (6, False, 0, None),
        (4, False, 0, None),
    ],
)  # fmt: skip
def test_logs_ends_with_how_the_job_ended(
    job_id: int, follow: bool, code: int, last_line: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --follow SkyPilot answers None (not a code): the outcome comes from the job's status."""
    import _jobs_sky

    sdk = _sdk_with_logs()
    sdk.tail_codes = [
        _sky_logs.tail_code_of_status(r["status"]) for r in sdk.records if r["job_id"] == job_id
    ]
    cfg = _config.JobsConfig(backend="sky", command="logs", ids=(str(job_id),), follow=follow)
    assert _jobs_sky.run_sky(cfg, sys.stdout, sdk=sdk) == code
    out, err = capsys.readouterr()
    assert out == sdk.logs[job_id]
    assert (err.strip().splitlines() or [None])[-1] == last_line


def test_logs_of_an_unknown_job_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    import _jobs_sky

    sdk = _sdk_with_logs()
    with pytest.raises(ConfigError, match=r"^ID 99: no such managed job$"):
        _jobs_sky.run_sky(_config.JobsConfig(backend="sky", command="logs", ids=("99",)), sys.stdout, sdk=sdk)


def test_launch_follow_ends_with_the_supervisors_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sky_logs.time, "sleep", lambda s: None)
    sdk = FakeSkyJobsSDK(ids=[[5]])
    sdk.records = _records()
    sdk.logs = {5: FAILED_LOG}
    sdk.tail_codes = [101, 100]
    code, out, err = run_launch(make_cfg(tmp_path, "--follow"), sdk)
    assert code == 1 and out == "" and FAILED_LOG in err
    assert err.strip().splitlines()[-1].endswith("(supervisor: crash_loop)")


def test_status_reasons_are_cached_across_real_processes(fake_sky_env: dict[str, str]) -> None:
    """`jobs.py --backend sky status` reads the last 200 lines of each finished job once (tail=200),
    then answers from $SKYOPS_STATE_DIR/sky-reasons.json (else <repo>/.skyops/)."""
    calls = Path(fake_sky_env["FAKE_SKY_CALLS"])
    proc = run_script(fake_sky_env, "jobs.py", "--backend", "sky", "status")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split()[-2:] == ["REASON", "FAILURE_REASON"]
    assert [r.split()[:3] for r in rows] == [
        ["7", "r", "FAILED"],
        ["8", "b", "SUCCEEDED"],
        ["9", "a", "RUNNING"],
    ]
    assert "max_runtime" in rows[1] and "crash_loop" in rows[0] and "setup failed" in rows[0]
    first = calls.read_text().splitlines()
    assert sorted(first) == ["tail_logs 7 follow=False tail=200", "tail_logs 8 follow=False tail=200"]
    cache = json.loads((Path(fake_sky_env["SKYOPS_STATE_DIR"]) / "sky-reasons.json").read_text())
    assert cache["jobs"]["8"] == {"submitted_at": 1100.0, "summary": _sky_logs.parse_summary(SUMMARY_8)}
    proc = run_script(fake_sky_env, "jobs.py", "--backend", "sky", "status", "--json")
    assert proc.returncode == 0 and calls.read_text().splitlines() == first, proc.stderr
    assert [r["reason"] for r in json.loads(proc.stdout)] == ["crash_loop", "max_runtime", None]


# ------------------------------------------------------------- SkyPilot's own definitions (issue 11, item 6)


def test_task_keys_copy_is_skypilots_schema() -> None:
    """_config.TASK_KEYS, the copy for the paths that never import SkyPilot, is the installed
    SkyPilot's own list (sky/utils/schemas.py get_task_schema): this fails the day SkyPilot adds or
    drops a task key. With SkyPilot imported, `task_keys()` is SkyPilot's schema itself."""
    from sky.utils import schemas

    skypilots = set(schemas.get_task_schema()["properties"])
    assert set(_config.TASK_KEYS) == skypilots, (
        f"update _config.TASK_KEYS: add {sorted(skypilots - _config.TASK_KEYS)},"
        f" drop {sorted(_config.TASK_KEYS - skypilots)}"
    )
    assert _config.task_keys() == skypilots


def test_job_states_copy_is_skypilots() -> None:
    """_job_state.JobState, the copy for the paths that never import SkyPilot, is the installed
    SkyPilot's ManagedJobStatus (sky/jobs/state.py), state for state, and TERMINAL its
    terminal_statuses(): this fails the day SkyPilot adds, drops or renames a managed-job state."""
    from sky.jobs.state import ManagedJobStatus

    skypilots = {status.value for status in ManagedJobStatus}
    ours = {state.value for state in JobState}
    assert ours == skypilots, (
        f"update JobState: add {sorted(skypilots - ours)}, drop {sorted(ours - skypilots)}"
    )
    assert all(state.name == state.value for state in JobState)
    assert {status.value for status in ManagedJobStatus.terminal_statuses()} == TERMINAL
    assert {status.value for status in ManagedJobStatus if not status.is_terminal()} == LIVE


def test_task_keys_come_from_skypilot_once_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SkyPilot that adds `brand_new` and drops `pool`: job.yaml is checked against it, not the copy,
    both where _config loads job.yaml with SkyPilot imported and on launch's sky path."""
    from sky.utils import schemas

    real = schemas.get_task_schema

    def newer() -> dict[str, Any]:
        schema = real()
        schema["properties"]["brand_new"] = {"type": "string"}
        del schema["properties"]["pool"]
        return schema

    monkeypatch.setattr(schemas, "get_task_schema", newer)
    (tmp_path / "a.yaml").write_text("run: echo\nbrand_new: x\n")
    assert _config.load_task_file(tmp_path / "a.yaml").config["brand_new"] == "x"
    (tmp_path / "b.yaml").write_text("run: echo\npool: {}\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: pool unknown"):
        _config.load_task_file(tmp_path / "b.yaml")
    task = dataclasses.replace(make_cfg(tmp_path).task, config={"run": "echo", "pool": {}, "brand_new": "x"})
    with pytest.raises(ConfigError, match=r"job\.yaml: pool unknown$"):
        _sky_plan.check_task_keys(task)


REFS_YAML = JOB_YAML.replace(
    'secrets:\n  WANDB_API_KEY: null\n  OPTIONAL_TOKEN: ""\n',
    "secrets:\n  - secrets:HF_TOKEN\n  - secrets:workspace.WANDB_API_KEY\n",
)


def _refs(task: Any) -> list[tuple[str, str | None]]:
    return [(r.name, r.scope_override) for r in task.managed_secret_refs]


def test_secret_references_reach_skypilot_as_references(tmp_path: Path) -> None:
    """The list form of `secrets:` (sky/task.py: managed secret references, resolved by the API
    server's managed secrets provider) is accepted, needs no value at launch, and reaches SkyPilot as
    the same references; the dump keeps them null, and SkyPilot reads the dump back the same."""
    import sky
    import yaml

    assert "- secrets:HF_TOKEN" in REFS_YAML
    cfg = make_cfg(tmp_path, env_file="", task=REFS_YAML)
    assert cfg.task.secret_refs == ("secrets:HF_TOKEN", "secrets:workspace.WANDB_API_KEY")
    assert cfg.missing_secrets == () and cfg.secrets == {}
    sdk = FakeSkyJobsSDK()
    assert run_launch(cfg, sdk)[0] == 0
    task = sdk.launched[0][0]
    assert _refs(task) == [("HF_TOKEN", None), ("WANDB_API_KEY", "workspace")] and task.secrets == {}
    code, out, _ = run_launch(dataclasses.replace(cfg, dry_run=True), sdk)
    doc = yaml.safe_load(out)
    assert code == 0 and doc["secrets"] == {"secrets:HF_TOKEN": None, "secrets:workspace.WANDB_API_KEY": None}
    assert _refs(sky.Task.from_yaml_config(doc)) == _refs(task)
    # the mapping form mixes values supplied at launch with references
    mixed = JOB_YAML.replace('  OPTIONAL_TOKEN: ""\n', '  OPTIONAL_TOKEN: ""\n  "secrets:HF_TOKEN": null\n')
    assert run_launch(make_cfg(tmp_path, task=mixed), sdk)[0] == 0
    task = sdk.launched[-1][0]
    assert _refs(task) == [("HF_TOKEN", None)] and task.secrets["WANDB_API_KEY"].get_secret_value() == CANARY


@pytest.mark.parametrize("key", ["GIT_URL", "GIT_COMMIT_HASH", "GIT_BRANCH"])
def test_skypilots_git_envs_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^--set {key}: {key} is set by SkyPilot for its clone of the git"
    ):
        run_launch(make_cfg(tmp_path, "--set", f"{key}=x"))


GIT_TOKEN = "ghp_canary-7c1e0b5a-git-token"
GIT_TOKEN_YAML = JOB_YAML.replace('  OPTIONAL_TOKEN: ""\n', '  OPTIONAL_TOKEN: ""\n  GIT_TOKEN: null\n')


def test_git_token_reaches_skypilot_only_as_a_secret(
    tmp_path: Path, fake_git_host: FakeGitHost, capfd: pytest.CaptureFixture[str]
) -> None:
    """A private repository over https: the launch's GIT_TOKEN (here from .env) reaches SkyPilot's git
    check, which maps it into the task's secrets; it is in no env, stream, dump or error line, and
    the process environment is as it was."""
    work, head = hosted_clone(tmp_path)
    fake_git_host.public, fake_git_host.token, fake_git_host.refs = (
        False,
        GIT_TOKEN,
        f"{head}\trefs/heads/main\n",
    )
    before = os.environ.get("GIT_TOKEN")
    env_file = f"WANDB_API_KEY={CANARY}\nGIT_TOKEN={GIT_TOKEN}\n"
    sdk = FakeSkyJobsSDK()
    code, out, err = run_launch(make_cfg(tmp_path, env_file=env_file, task=GIT_TOKEN_YAML, repo=work), sdk)
    assert code == 0, err
    task = sdk.launched[0][0]
    assert task.secrets["GIT_TOKEN"].get_secret_value() == GIT_TOKEN
    assert (task.envs["GIT_URL"], task.envs["GIT_COMMIT_HASH"]) == (HOSTED_URL, head)
    assert ("ls-remote", "https://*****@git.example.invalid/org/repo.git") in fake_git_host.calls
    assert os.environ.get("GIT_TOKEN") == before
    yaml_dump = run_launch(
        make_cfg(tmp_path, "--dry-run", env_file=env_file, task=GIT_TOKEN_YAML, repo=work)
    )[1]
    json_dump = run_launch(make_cfg(tmp_path, "--dump-config", "json", env_file=env_file, task=GIT_TOKEN_YAML,
                                    repo=work))[1]  # fmt: skip
    assert (
        "GIT_TOKEN: <redacted>" in yaml_dump and json.loads(json_dump)["secrets"]["GIT_TOKEN"] == "<redacted>"
    )
    assert f"GIT_COMMIT_HASH: {head}" in yaml_dump
    fake_git_host.token = "another-token"  # the remote refuses this one
    code, _, wrong = run_launch(make_cfg(tmp_path, env_file=env_file, task=GIT_TOKEN_YAML, repo=work), sdk)
    (line,) = [ln for ln in wrong.splitlines() if ln.startswith("launch.py:")]
    assert code == 3 and len(sdk.launched) == 1
    assert line.startswith(
        f"launch.py: error: SkyPilot cannot read the git remote {HOSTED_URL} at {head[:12]}: "
    )
    captured = capfd.readouterr()
    texts = [json.dumps(task.envs), str(task.to_yaml_config(use_user_specified_yaml=True)), out, err, wrong,
             yaml_dump, json_dump, captured.out, captured.err]  # fmt: skip
    assert not [t for t in texts if GIT_TOKEN in t]


def test_git_ssh_key_reaches_skypilot_only_as_a_secret(
    tmp_path: Path, fake_git_host: FakeGitHost, capfd: pytest.CaptureFixture[str]
) -> None:
    """A private repository over ssh: SkyPilot reads the key at GIT_SSH_KEY_PATH and sends it as the
    secret GIT_SSH_KEY (sky/task.py update_envs_and_secrets_from_workdir); never as an env."""
    from test_git import sh

    work, head = hosted_clone(tmp_path)
    sh(work, "remote", "set-url", "origin", "git@git.example.invalid:org/repo.git")
    key_text = "key-canary-5d2a9e61"
    key = tmp_path / "id_test"
    key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{key_text}\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    fake_git_host.public, fake_git_host.refs = False, f"{head}\trefs/heads/main\n"
    env_file = f"WANDB_API_KEY={CANARY}\nGIT_SSH_KEY_PATH={key}\n"
    sdk = FakeSkyJobsSDK()
    code, out, err = run_launch(make_cfg(tmp_path, env_file=env_file, repo=work), sdk)
    assert code == 0, err
    task = sdk.launched[0][0]
    assert task.secrets["GIT_SSH_KEY"].get_secret_value() == key.read_text()
    assert (task.envs["GIT_URL"], task.envs["GIT_COMMIT_HASH"]) == (
        "ssh://git@git.example.invalid/org/repo.git",
        head,
    )
    dump = run_launch(make_cfg(tmp_path, "--dry-run", env_file=env_file, repo=work))[1]
    assert "GIT_SSH_KEY: <redacted>" in dump
    captured = capfd.readouterr()
    for text in (json.dumps(task.envs), out, err, dump, captured.out, captured.err):
        assert key_text not in text


def test_git_remote_skypilot_cannot_read(
    tmp_path: Path, fake_git_host: FakeGitHost, caplog: pytest.LogCaptureFixture
) -> None:
    """A private repository and no credentials: a launch ends in one line (exit 3) before anything is
    launched; a dry run only warns and shows the task without SkyPilot's git settings."""
    work, head = hosted_clone(tmp_path)
    fake_git_host.public = False
    sdk = FakeSkyJobsSDK()
    code, out, err = run_launch(make_cfg(tmp_path, repo=work), sdk)
    (line,) = [ln for ln in err.splitlines() if ln.startswith("launch.py:")]
    assert code == 3 and out == "" and sdk.launched == []
    assert "Failed to access repository" in line and "GIT_TOKEN" in line and "GIT_SSH_KEY_PATH" in line
    code, out, _ = run_launch(make_cfg(tmp_path, "--dry-run", repo=work), sdk)
    assert code == 0 and f"ref: {head}" in out and "GIT_URL" not in out and sdk.launched == []
    assert any("a launch would refuse" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_never_starts_a_local_api_server(tmp_path: Path) -> None:
    """docs/decisions/local-api-server.md. Real processes, real SkyPilot, the default local endpoint
    (a free port) with no server there: SkyPilot 0.14.1 would start one from the launcher's own
    environment (sky/server/common.py _start_api_server, `sys.executable`). jobs.py says to start it
    from your own SkyPilot install instead (exit 3, one line), and nothing listens there; launch.py
    says the same (test_y3_canary_in_no_stream_and_no_dumped_file)."""
    env = no_server_env(tmp_path)
    port = int(env["SKYPILOT_API_SERVER_LOCAL_PORT"])
    try:
        proc = run_script(env, "jobs.py", "--backend", "sky", "status")
        assert proc.returncode == 3 and proc.stdout == "", proc.stderr[-3000:]
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("jobs.py: error:")]
        assert errors == [NO_SERVER_LINE.format(script="jobs.py", port=port)], proc.stderr[-3000:]
        assert not listening(port)
    finally:
        if listening(port):  # a regression started one: stop it as SkyPilot's notes say
            sky_cli = str(Path(sys.executable).parent / "sky")
            subprocess.run([sky_cli, "api", "stop"], env=env, capture_output=True, timeout=120)
