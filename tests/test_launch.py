"""launch.py: the output contract, exit codes, bad input, precedence, secrets, --dry-run."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import _job_path
import _task
import launch
import pytest
import yaml
from conftest import REPO, STATE, clean_env

CANARY = "canary-secret-7f3a9c"


def runs_snapshot() -> set[Path]:
    runs = STATE / "runs"
    return set(runs.rglob("*")) if runs.exists() else set()


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = launch.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run main() in-process without a developer's exported settings leaking in."""
    import os

    for key in list(os.environ):
        if (key != "SKYOPS_STATE_DIR" and key.startswith(("SKYOPS_", "SKYPILOT_NODE"))) or key in {
            "DATA_DIR",
            "RUN_ID",
            "WANDB_API_KEY",
            "HF_TOKEN",
        }:
            monkeypatch.delenv(key)


def test_help_returns_without_importing_skypilot() -> None:
    code = (
        "import sys, launch\n"
        "try:\n    launch.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    launch.main(['--nodes', '0', 'examples/train.py'])\nexcept SystemExit:\n    pass\n"
        "launch.main(['--run', '1bad', 'examples/train.py'])\n"
        "print('SKY-IMPORTED' if 'sky' in sys.modules else 'SKY-NOT-IMPORTED', file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=clean_env({"PYTHONPATH": str(REPO / "scripts" / "local")}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "SKY-NOT-IMPORTED" in result.stderr
    assert "usage: launch.py" in result.stdout


@pytest.mark.parametrize(
    ("argv", "env_text", "needle"),
    [
        (["--nodes", "0"], "", "--nodes"),
        (["--nodes", "two"], "", "--nodes"),
        (["--gpus", "-1"], "", "--gpus"),
        (["--run", "1run"], "", "--run '1run': must start with a letter"),
        (["--run", "exp/1"], "", "--run 'exp/1'"),
        (["--backend", "gcp"], "", "--backend"),
        (["--set", "bad-key=1"], "", "bad-key"),
        (["--set", "NOVALUE"], "", "--set 'NOVALUE'"),
        (["--set", "RUN_ID=x"], "", "--set RUN_ID"),
        ([], 'A=1\nTOKEN="abc\n', ".env:2: cannot parse"),
        ([], "SKYOPS_USE_SPOT=maybe\n", "SKYOPS_USE_SPOT"),
        ([], "SKYOPS_NODES=0\n", "SKYOPS_NODES (from "),
        ([], "SKYOPS_NODES=0\n", ".env:1): must be >= 1"),
        ([], "GITLAB_TOKEN=x\n", "GITLAB_TOKEN looks like a credential"),
        ([], "my-key=1\n", "my-key"),
        ([], "B\n", ".env:1: B has no value"),
        (["--unknown-flag"], "", "--unknown-flag"),
        (["--set", "GRACE=abc"], "", "GRACE (from flag): expected a number of seconds >= 0, got 'abc'"),
        (["--set", "HEARTBEAT_TIMEOUT=-5"], "", "HEARTBEAT_TIMEOUT (from flag)"),
        (["--set", "NCCL_PREFLIGHT=maybe"], "", "NCCL_PREFLIGHT (from flag): expected one of 1/0"),
        (["--set", "MASTER_PORT=70000"], "", "MASTER_PORT (from flag): expected an integer in [1, 65535]"),
        ([], "GRACE=soon # later\n", "GRACE (from "),
        ([], "MAX_RUNTIME_HOURS=x\n", "MAX_RUNTIME_HOURS (from "),
        ([], "JOB=other.py\n", ".env:1: JOB is set by the launcher"),
        ([], "RUN_ID=zzz\n", ".env:1: RUN_ID is set by the launcher"),
        (["--run", "r" * 64], "", "at most 63 characters"),
        (["--cpus", "8++"], "", "--cpus: expected a vCPU count"),
        (["--nodes", "100"], "", "--nodes 100: the local backend emulates at most 32"),
        ([], "BIG=" + "x" * 140000 + "\n", "BIG (from "),
        ([], "".join(f"K{i}={'x' * 100000}\n" for i in range(12)), "envs and secrets total"),
        (["--set", "NCCL_PREFLIGHT_FLOORS=garbage"], "", "NCCL_PREFLIGHT_FLOORS (from flag)"),
        (["--set", "NCCL_PREFLIGHT_FLOORS=H100@1=200:100"], "", "NCCL_PREFLIGHT_FLOORS (from flag)"),
        (["--set", "NCCL_PREFLIGHT_SIZE=12Q"], "", "NCCL_PREFLIGHT_SIZE (from flag)"),
        (["--set", "WORLD_SIZE=4"], "", "WORLD_SIZE is set on each node"),
        ([], "SKYPILOT_NODE_RANK=1\n", "SKYPILOT_NODE_RANK is set on each node"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    argv: list[str],
    env_text: str,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    no_env: None,
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(env_text)
    before = runs_snapshot()
    code, out, err = call(["--env-file", str(env_file), *argv, "examples/train.py"], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert runs_snapshot() == before


def test_missing_env_file_and_job(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_env: None) -> None:
    code, out, err = call(["--env-file", str(tmp_path / "missing.env"), "examples/train.py"], capsys)
    assert (code, out) == (2, "") and "missing.env: no such file" in err
    code, out, err = call(["--env-file", "/dev/null", "examples/nope.py"], capsys)
    assert (code, out) == (2, "") and "JOB 'examples/nope.py': no such file" in err
    code, out, err = call(["--env-file", "/dev/null", "/etc/hostname"], capsys)
    assert (code, out) == (2, "") and "must be inside the repository" in err


def test_verbose_shows_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_env: None
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text('TOKEN="abc\n')
    code, _, err = call(["-v", "--env-file", str(env_file), "examples/train.py"], capsys)
    assert code == 2 and "Traceback" in err


def test_dry_run_prints_yaml_only_and_redacts_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_env: None
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"WANDB_API_KEY={CANARY}\nHF_TOKEN=\nEXTRA=0123\n")
    before = runs_snapshot()
    code, out, err = call(
        [
            "--env-file",
            str(env_file),
            "--dry-run",
            "--nodes",
            "3",
            "--run",
            "dry-1",
            "examples/train.py",
            "--steps",
            "7",
            "a b",
        ],
        capsys,
    )
    assert code == 0
    assert CANARY not in out and CANARY not in err
    task = yaml.safe_load(out)
    assert task["name"] == "dry-1" and task["num_nodes"] == 3
    assert set(task["secrets"]) == {
        "WANDB_API_KEY", "HF_TOKEN", "DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN"
    }  # fmt: skip
    assert set(task["secrets"].values()) == {"<redacted>"}
    assert "WANDB_API_KEY" not in task["envs"]
    assert all(isinstance(v, str) for v in task["envs"].values())
    assert task["envs"]["EXTRA"] == "0123"
    assert task["envs"]["RUN_ID"] == "dry-1"
    assert shlex.split(task["envs"]["JOB_ARGS"]) == ["--steps", "7", "a b"]
    assert runs_snapshot() == before


def test_precedence_flags_env_file_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GRACE=11\nHEARTBEAT_TIMEOUT=22\nMASTER_PORT=33\nCKPT=${GRACE}-ckpt\n")
    monkeypatch.setenv("HEARTBEAT_TIMEOUT", "44")
    monkeypatch.setenv("MASTER_PORT", "55")
    code, out, _ = call(
        [
            "--env-file",
            str(env_file),
            "--dry-run",
            "--set",
            "MASTER_PORT=66",
            "--set",
            "GRACE=77",
            "examples/train.py",
        ],
        capsys,
    )
    envs = yaml.safe_load(out)["envs"]
    assert code == 0
    assert envs["GRACE"] == "77"  # flag > file
    assert envs["HEARTBEAT_TIMEOUT"] == "44"  # environment > file
    assert envs["MASTER_PORT"] == "66"  # flag > environment > file
    assert envs["STARTUP_GRACE"] == "1200"  # job.yaml default
    assert envs["CKPT"] == "77-ckpt"  # ${...} follows the same precedence


def test_repo_env_file_is_default_and_parent_env_never_read(tmp_path: Path) -> None:
    import datetime as dt

    args = launch.build_parser().parse_args(["--dry-run", "examples/train.py"])
    cfg = launch.load_config(args, {}, dt.datetime(2026, 1, 2, 3, 4, 5))
    assert cfg.run == "train-20260102-030405"
    assert cfg.backend == "local"
    # The only .env ever read implicitly is <repo>/.env (a parent folder's is ignored by construction).
    assert launch.REPO == REPO


def test_settings_from_env_file(tmp_path: Path) -> None:
    import datetime as dt

    env_file = tmp_path / ".env"
    env_file.write_text("SKYOPS_NODES=4\nSKYOPS_USE_SPOT=false\nSKYOPS_MAX_RESTARTS=3\n")
    args = launch.build_parser().parse_args(["--env-file", str(env_file), "examples/train.py"])
    cfg = launch.load_config(args, {}, dt.datetime.now())
    assert (cfg.nodes, cfg.use_spot, cfg.max_restarts) == (4, False, 3)
    assert "SKYOPS_NODES" not in cfg.envs
    args = launch.build_parser().parse_args(
        ["--env-file", str(env_file), "--nodes", "2", "--spot", "examples/train.py"]
    )
    cfg = launch.load_config(args, {"SKYOPS_MAX_RESTARTS": "5"}, dt.datetime.now())
    assert (cfg.nodes, cfg.use_spot, cfg.max_restarts) == (2, True, 5)


def test_job_args_reach_the_job_verbatim() -> None:
    tricky = ["--name", 'it\'s "quoted"', "$HOME", "a\nb", "", "*", "--", "ünï"]
    job_args = shlex.join(tricky)
    result = subprocess.run(
        ["bash", "-c", 'eval "set -- $JOB_ARGS"; printf "%s\\0" "$@"'],
        env={"JOB_ARGS": job_args, "HOME": "/nowhere", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    assert result.stdout.decode().split("\0")[:-1] == tricky


@pytest.mark.parametrize(
    ("accelerators", "expected"),
    [
        ("A100:8", "A100:4"),
        ({"A100": 8, "H100": 8}, {"A100": 4, "H100": 4}),
        (["A100:8", "H100:8"], ["A100:4", "H100:4"]),
    ],
)
def test_gpu_count_patch_keeps_the_shape(accelerators: object, expected: object) -> None:
    assert _task.set_accelerator_count(accelerators, 4) == expected


def test_a_secret_never_leaks_through_expansion_or_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_env: None
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"WANDB_API_KEY={CANARY}\nNOTE=key is ${{WANDB_API_KEY}}\n")
    code, out, err = call(["--env-file", str(env_file), "--dry-run", "examples/train.py"], capsys)
    assert code == 2 and out == ""
    assert "NOTE expands the secret WANDB_API_KEY" in err and CANARY not in err
    env_file.write_text(f'WANDB_API_KEY="{CANARY}\n')  # unclosed quote: the error must not echo it
    code, out, err = call(["--env-file", str(env_file), "--dry-run", "examples/train.py"], capsys)
    assert code == 2 and ".env:1: cannot parse the value of WANDB_API_KEY (unclosed quote?)" in err
    assert CANARY not in err + out


def test_self_reference_expands_from_the_layers_below(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GRACE=${GRACE}0\nSTARTUP_GRACE=${STARTUP_GRACE}\n")
    monkeypatch.setenv("GRACE", "5")
    code, out, _ = call(["--env-file", str(env_file), "--dry-run", "examples/train.py"], capsys)
    envs = yaml.safe_load(out)["envs"]
    assert code == 0
    assert envs["GRACE"] == "5"  # the environment beats the file: its own value, unexpanded
    assert envs["STARTUP_GRACE"] == "1200"  # ${STARTUP_GRACE} is job.yaml's value


def test_job_must_be_a_script(capsys: pytest.CaptureFixture[str], no_env: None) -> None:
    code, out, err = call(["--env-file", "/dev/null", "README.md"], capsys)
    assert (code, out) == (2, "") and "must be a Python script (.py) or an executable file" in err


def test_local_dry_run_shows_what_the_nodes_get(capsys: pytest.CaptureFixture[str], no_env: None) -> None:
    code, out, _ = call(["--env-file", "/dev/null", "--dry-run", "examples/train.py"], capsys)
    envs = yaml.safe_load(out)["envs"]
    assert code == 0
    assert envs["DATA_DIR"] == str(STATE / "data")
    assert envs["MASTER_PORT"] != "29500" and 1 <= int(envs["MASTER_PORT"]) <= 65535
    assert envs["NCCL_PREFLIGHT"] == "0", "no preflight on CPU unless asked for"
    code, out, _ = call(
        ["--env-file", "/dev/null", "--dry-run", "--set", "NCCL_PREFLIGHT=1", "examples/train.py"], capsys
    )
    assert code == 0 and yaml.safe_load(out)["envs"]["NCCL_PREFLIGHT"] == "1"


def test_misspelled_key_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, no_env: None
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("GRACEE=5\n")
    code, _, _ = call(["--env-file", str(env_file), "--dry-run", "examples/train.py"], capsys)
    assert code == 0 and "did you mean GRACE?" in caplog.text


# --------------------------------------------------------------------------------------------------
# JOB kinds (README "Bring your own script"): -m pkg.mod and project scripts


def test_job_kinds_the_launcher_accepts(tmp_path: Path) -> None:
    repo = tmp_path
    (repo / "pyproject.toml").write_text("[tool.ruff]\nline-length = 110\n")
    (repo / "pkg").mkdir()
    (repo / "pkg" / "train.py").write_text("print(1)\n")
    (repo / "src" / "lib" / "cli").mkdir(parents=True)
    (repo / "src" / "lib" / "cli" / "__main__.py").write_text("print(1)\n")
    (repo / "proj").mkdir()
    (repo / "proj" / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\n')
    (repo / "proj" / "train.py").write_text("print(1)\n")
    assert _job_path.relative_job_path("-m pkg.train", repo) == "-m pkg.train"
    assert _job_path.relative_job_path("-m  lib.cli", repo) == "-m lib.cli"
    assert _job_path.relative_job_path("-mpkg.train", repo) == "-m pkg.train"
    assert _job_path.relative_job_path(str(repo / "proj" / "train.py"), repo) == "proj/train.py"
    for job, message in [
        ("-m", 'as one word: "-m pkg.train"'),
        ("-m pkg/train", "expected -m and a module name"),
        ("-m pkg.missing", "none of pkg/missing.py, pkg/missing/__main__.py, src/pkg/missing.py"),
    ]:
        with pytest.raises(launch.ConfigError, match=message):
            _job_path.relative_job_path(job, repo)
    (repo / "proj" / "pyproject.toml").write_text('[project]\nname = "p"\nversion = \n')
    with pytest.raises(launch.ConfigError, match=r"^proj/pyproject.toml:3: not valid TOML"):
        _job_path.relative_job_path(str(repo / "proj" / "train.py"), repo)


def test_the_launcher_finds_modules_where_the_nodes_do(tmp_path: Path) -> None:
    """_job_path.py cannot import the node side's _job_command (docs/decisions/boundary.md): its copy of
    the module lookup is checked against the nodes' here."""
    import _job_command

    for name in ("a", "pkg.train", "pkg.sub.mod"):
        assert _job_path.module_paths(name) == _job_command.module_paths(name)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "train.py").write_text("")
    assert _job_command.module_file("pkg.train", tmp_path) == tmp_path / "pkg" / "train.py"
    assert _job_path.relative_job_path("-m pkg.train", tmp_path) == "-m pkg.train"


def test_a_module_job_reaches_the_nodes_as_one_word(capsys: pytest.CaptureFixture[str], no_env: None) -> None:
    """`launch.py "-m pkg.mod" ARGS`: JOB is `-m pkg.mod`, which job.yaml's run passes to run.py as one
    word ("$JOB") and run.py runs as `python -m` (torchrun -m)."""
    code, out, _ = call(["--env-file", "/dev/null", "--dry-run", "-m tests.jobs.exit_with", "3"], capsys)
    envs = yaml.safe_load(out)["envs"]
    assert code == 0 and (envs["JOB"], envs["JOB_ARGS"]) == ("-m tests.jobs.exit_with", "3")
