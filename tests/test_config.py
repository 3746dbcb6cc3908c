"""The configuration loader: .env cases E1-E9, job.yaml cases Y1/Y4, run names N1 (../shared/cases)."""

from __future__ import annotations

from pathlib import Path

import _config
import pytest
from _config import ConfigError, EnvLine
from conftest import N1_INVALID_NAMES


def env_file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / ".env"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def values(
    tmp_path: Path,
    content: str | bytes,
    environ: dict[str, str] | None = None,
    flags: dict[str, str] | None = None,
) -> dict[str, str]:
    path = env_file(tmp_path, content)
    resolved = _config.resolve_values(
        defaults={},
        file_entries=_config.read_env_file(path),
        environ=environ or {},
        flags=flags or {},
        file_label=str(path),
    )
    return resolved.values


# ---------------------------------------------------------------- E1 export prefix


def test_e1_export_prefix_removed_only_as_a_whole_word(tmp_path: Path) -> None:
    got = values(tmp_path, "export port_number=8000\nexport   E = 3\nexporter=1\nexportX=5\n")
    assert got == {"port_number": "8000", "E": "3", "exporter": "1", "exportX": "5"}


# ---------------------------------------------------------------- E2 comments


def test_e2_empty_value_followed_by_comment_is_empty(tmp_path: Path) -> None:
    got = values(
        tmp_path,
        'WANDB_API_KEY=      # paste your key here\nMODE=sandbox # note\nCOLOR=val#x\nQUOTED="x" # note\nTAB=\t# c\n',
    )
    assert got == {"WANDB_API_KEY": "", "MODE": "sandbox", "COLOR": "val#x", "QUOTED": "x", "TAB": ""}


# ---------------------------------------------------------------- E3 multi-line and escapes


def test_e3_escapes_and_multiline(tmp_path: Path) -> None:
    got = values(tmp_path, 'A="line1\\nline2"\nB=\'l1\\nl2\'\nC=foo\\nbar\nM="one\ntwo\nthree"\n')
    assert got["A"] == "line1\nline2"
    assert got["B"] == "l1\\nl2"
    assert got["C"] == "foo\\nbar"
    assert got["M"] == "one\ntwo\nthree"


def test_e3_stray_line_after_unquoted_value_is_an_error_at_that_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.env:2: bar has no value"):
        values(tmp_path, "U=foo\nbar\n")


# ---------------------------------------------------------------- E4 CRLF


def test_e4_crlf_leaves_no_carriage_return(tmp_path: Path) -> None:
    got = values(tmp_path, b"A=1\r\nB=\"x\r\ny\"\r\nC=3   \r\nD='q\r\n'\r\n")
    assert got == {"A": "1", "B": "x\ny", "C": "3", "D": "q\n"}
    assert not any("\r" in v for v in got.values())


def test_e4_crlf_in_set_flags_is_normalised() -> None:
    assert _config.parse_set_flags(["A=x\r\ny"]) == {"A": "x\ny"}


# ---------------------------------------------------------------- E5 empty vs bare


def test_e5_empty_and_bare_keys(tmp_path: Path) -> None:
    assert values(tmp_path, 'A=\nB\nC=""\n', environ={"B": "from_env"}) == {"A": "", "B": "from_env", "C": ""}
    assert values(tmp_path, 'A=\nB\nC=""\n', flags={"B": "from_flag"})["B"] == "from_flag"
    with pytest.raises(ConfigError, match=r"\.env:2: B has no value"):
        values(tmp_path, 'A=\nB\nC=""\n')


def test_e5_none_is_never_a_value(tmp_path: Path) -> None:
    path = env_file(tmp_path, 'A=\nC=""\n')
    resolved = _config.resolve_values(
        defaults={"S": None},
        file_entries=_config.read_env_file(path),
        environ={},
        flags={},
        file_label=".env",
    )
    assert "None" not in resolved.values.values()
    assert resolved.missing == ("S",)
    assert "S" not in resolved.values


# ---------------------------------------------------------------- E6 precedence


def test_e6_precedence_also_inside_interpolation(tmp_path: Path) -> None:
    content = "NAME=from_file\nX=${NAME}/x\nLIT='${NAME}'\n"
    got = values(tmp_path, content, environ={"NAME": "from_env"})
    assert (got["NAME"], got["X"], got["LIT"]) == ("from_env", "from_env/x", "${NAME}")
    got = values(tmp_path, content, environ={"NAME": "from_env"}, flags={"NAME": "from_cli"})
    assert (got["NAME"], got["X"]) == ("from_cli", "from_cli/x")
    got = values(tmp_path, content)
    assert (got["NAME"], got["X"]) == ("from_file", "from_file/x")


def test_e6_defaults_rank_last(tmp_path: Path) -> None:
    path = env_file(tmp_path, "B=file\n")
    resolved = _config.resolve_values(
        defaults={"A": "yaml", "B": "yaml", "C": "yaml"},
        file_entries=_config.read_env_file(path),
        environ={"C": "env"},
        flags={},
        file_label=".env",
    )
    assert resolved.values == {"A": "yaml", "B": "file", "C": "env"}
    assert resolved.sources == {"A": "job.yaml", "B": ".env:1", "C": "environment"}


# ---------------------------------------------------------------- E7 silent loss


def test_e7_unparseable_line_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.env:2: cannot parse"):
        values(tmp_path, 'A=1\nTOKEN="abc\nB=2\n')


def test_e7_missing_env_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--env-file .*nope\.env: no such file"):
        _config.read_env_file(tmp_path / "nope.env")


# ---------------------------------------------------------------- E8 keys


def test_e8_invalid_keys_listed_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        values(tmp_path, "my-key=1\nmy.key=2\n1BAD=3\nGOOD_1=4\n")
    message = str(info.value)
    assert "\n" not in message
    for key in ("my-key", "my.key", "1BAD"):
        assert key in message
    assert "GOOD_1" not in message


def test_e8_invalid_set_keys() -> None:
    with pytest.raises(ConfigError, match="--set: invalid keys my-key"):
        _config.parse_set_flags(["my-key=1", "OK=2"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        _config.parse_set_flags(["NOEQUALS"])


# ---------------------------------------------------------------- E9 typed values


@pytest.mark.parametrize(
    ("text", "expected"),
    [("false", False), ("TRUE", True), ("1", True), ("0", False), ("Yes", True), ("no", False)],
)
def test_e9_booleans(text: str, expected: bool) -> None:
    assert _config.parse_bool(text, "SKYOPS_USE_SPOT") is expected


def test_e9_bad_values_name_the_field() -> None:
    with pytest.raises(ConfigError, match="SKYOPS_USE_SPOT: expected true/false"):
        _config.parse_bool("maybe", "SKYOPS_USE_SPOT")
    with pytest.raises(ConfigError, match="--nodes: must be >= 1, got 0"):
        _config.parse_int("0", "--nodes", 1)
    with pytest.raises(ConfigError, match="--max-restarts: must be >= 0, got -1"):
        _config.parse_int("-1", "--max-restarts", 0)
    assert _config.parse_int("2", "--nodes", 1) == 2


# ---------------------------------------------------------------- N1 run names


@pytest.mark.parametrize("name", ["train-run-01", "run_01", "Run.A", "a", "a--b", "x1"])
def test_n1_valid_run_names(name: str) -> None:
    assert _config.run_name_problem(name) is None


@pytest.mark.parametrize(("name", "reason"), N1_INVALID_NAMES)
def test_n1_invalid_run_names_give_precise_reasons(name: str, reason: str) -> None:
    problem = _config.run_name_problem(name)
    assert problem is not None and reason in problem


def test_default_run_name_is_valid() -> None:
    for job in ("examples/train.py", "2stage.py", "my job!.py", "___.py"):
        name = _config.default_run_name(job, "20261129-153000")
        assert _config.run_name_problem(name) is None, name


# ---------------------------------------------------------------- job.yaml: Y1, Y4


def test_y1_env_values_are_read_as_written(tmp_path: Path) -> None:
    task = tmp_path / "job.yaml"
    task.write_text(
        "run: echo\nenvs:\n  COMMIT: 0123456\n  DEBUG: true\n  VERSION: 1.10\n  START: 12:30\n  Q: '007'\nsecrets:\n  T: null\n  O: ''\n"
    )
    loaded = _config.load_task_file(task)
    assert loaded.envs == {
        "COMMIT": "0123456",
        "DEBUG": "true",
        "VERSION": "1.10",
        "START": "12:30",
        "Q": "007",
    }
    assert loaded.secrets == {"T": None, "O": ""}


def test_y1_null_env_value_is_an_error_with_line(tmp_path: Path) -> None:
    task = tmp_path / "job.yaml"
    task.write_text("run: echo\nenvs:\n  A: x\n  B:\n")
    with pytest.raises(ConfigError, match=r"job.yaml:4: envs.B: is null"):
        _config.load_task_file(task)


def test_y4_structural_mistakes_listed_in_one_line(tmp_path: Path) -> None:
    task = tmp_path / "job.yaml"
    task.write_text("resources:\n  # accelerators: A100:8\nnum_workers: 2\nenvs:\n  - A: 1\nrun: echo\n")
    with pytest.raises(ConfigError) as info:
        _config.load_task_file(task)
    message = str(info.value)
    assert "\n" not in message
    assert "resources is null" in message
    assert "num_workers unknown, did you mean num_nodes?" in message
    assert "envs must be a mapping" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    task = tmp_path / "job.yaml"
    task.write_text("run: echo\nenvs:\n  A: [unclosed\n")
    with pytest.raises(ConfigError, match=r"job.yaml:\d+: "):
        _config.load_task_file(task)


def test_secret_like_keys_must_be_declared() -> None:
    assert _config.secret_like_keys(
        ["GITHUB_TOKEN", "DATA_DIR", "WANDB_API_KEY", "SLACK_WEBHOOK_URL"], ["WANDB_API_KEY"]
    ) == [
        "GITHUB_TOKEN",
        "SLACK_WEBHOOK_URL",
    ]


def test_env_line_keeps_line_numbers(tmp_path: Path) -> None:
    path = env_file(tmp_path, "# comment\n\nA=1\nexport B=2\n")
    assert _config.read_env_file(path) == [EnvLine("A", "1", 3), EnvLine("B", "2", 4)]
