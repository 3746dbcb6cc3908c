"""scripts/remote/_contract.py: the one table of env keys, the one parser, and the checked copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import _contract
import check_contract
import pytest
from conftest import REPO


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("MASTER_PORT", "80", 80),
        ("GRACE", "", 60.0),  # empty: the default
        ("GRACE", " 2.5 ", 2.5),
        ("NCCL_PREFLIGHT", "Yes", True),
        ("NCCL_PREFLIGHT", "off", False),
        ("NCCL_PREFLIGHT_SIZE", "32M", 32 << 20),
        ("NCCL_PREFLIGHT_SIZE", "", None),
        ("NCCL_PREFLIGHT_FLOORS", "none", ()),
        ("NCCL_PREFLIGHT_FLOORS", "", ()),  # set but empty: no floors
        ("NOTIFY_ON", "ended, started", ("ended", "started")),
        ("RUN_ID", "exp.1", "exp.1"),
        ("JOB_ARGS", "", ""),
    ],
)
def test_parse(key: str, text: str, value: object) -> None:
    assert _contract.parse(key, text) == value


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("MASTER_PORT", "0", "an integer in [1, 65535]"),
        ("MASTER_PORT", "70000", "an integer in [1, 65535]"),
        ("GRACE", "-1", "a number of seconds >= 0"),
        ("GRACE", "nan", "a number of seconds >= 0"),
        ("CRASH_LOOP_ATTEMPTS", "1.5", "an integer >= 0"),
        ("NCCL_PREFLIGHT", "maybe", "one of 1/0"),
        ("NCCL_PREFLIGHT_TIMEOUT", "0", "> 0"),
        ("NCCL_PREFLIGHT_SLOW_FRACTION", "0", "in (0, 1]"),
        ("NCCL_PREFLIGHT_FLOORS", "H100@1=5:1", "WARN >= FLOOR"),
        ("NCCL_PREFLIGHT_SIZE", "2", "a byte count >= 4096"),
        ("NCCL_PREFLIGHT_SIZE", "1K", "a byte count >= 4096"),
        ("NOTIFY_ON", "ended,finished", "a comma-separated list of started, attempt_ended, ended"),
        ("NOTIFY_TIMEOUT_S", "60", "in (0, 30]"),
        ("RUN_ID", "a/b", "without '/'"),
    ],
)
def test_bad_values_name_the_key_on_one_line(key: str, text: str, expected: str) -> None:
    with pytest.raises(_contract.BadValue) as err:
        _contract.parse(key, text)
    assert str(err.value).startswith(f"{key}={text!r}: expected ") and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_every_default_parses_and_every_key_is_documented() -> None:
    page = (REPO / "docs" / "contract.md").read_text()
    for key in _contract.KEYS:
        _contract.parse(key.name, key.default)  # a default is always a valid value
        assert f"| `{key.name}` |" in page


def test_enums_are_the_plain_values_json_and_shells_see() -> None:
    assert _contract.Exit.BAD_NODE == 86 and str(_contract.Reason.CRASH_LOOP) == "crash_loop"
    assert f"{_contract.REASON_MAX_RUNTIME}" == "max_runtime" and int(_contract.EXIT_SIGTERM) == 143


def test_the_copies_agree_with_the_table() -> None:
    assert check_contract.main([]) == 0


def test_a_drifted_copy_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("job.yaml", ".env.example", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    yaml_text = (
        (tmp_path / "job.yaml").read_text().replace('HEARTBEAT_TIMEOUT: "600"', 'HEARTBEAT_TIMEOUT: "601"')
    )
    (tmp_path / "job.yaml").write_text(yaml_text)
    env_text = (tmp_path / ".env.example").read_text().replace("# GRACE=60", "# GRACE=61")
    (tmp_path / ".env.example").write_text(env_text)
    readme = (
        (tmp_path / "README.md")
        .read_text()
        .replace("| `MAX_RUNTIME_HOURS` | `24` |", "| `MAX_RUNTIME_HOURS` | `12` |")
    )
    (tmp_path / "README.md").write_text(readme)
    problems = [
        *check_contract.check_job_yaml(tmp_path / "job.yaml"),
        *check_contract.check_env_example(tmp_path / ".env.example"),
        *check_contract.check_readme(tmp_path / "README.md"),
    ]
    assert problems == [
        "job.yaml: envs.HEARTBEAT_TIMEOUT is '601', the contract says '600'",
        ".env.example: GRACE is '61', the contract says '60'",
        "README.md: MAX_RUNTIME_HOURS's default is `12`, the contract says '24'",
    ]
