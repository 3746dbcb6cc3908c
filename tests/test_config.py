"""The configuration loader: .env cases E1-E9, job.yaml cases Y1/Y4, run names N1 (docs/field-cases.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import _config
import _env_file
import pytest
from _config import ConfigError
from _env_file import EnvLine
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
    resolved = _env_file.resolve_values(
        defaults={},
        file_entries=_env_file.read_env_file(path),
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
    assert _env_file.parse_set_flags(["A=x\r\ny"]) == {"A": "x\ny"}


# ---------------------------------------------------------------- E5 empty vs bare


def test_e5_empty_and_bare_keys(tmp_path: Path) -> None:
    assert values(tmp_path, 'A=\nB\nC=""\n', environ={"B": "from_env"}) == {"A": "", "B": "from_env", "C": ""}
    assert values(tmp_path, 'A=\nB\nC=""\n', flags={"B": "from_flag"})["B"] == "from_flag"
    with pytest.raises(ConfigError, match=r"\.env:2: B has no value"):
        values(tmp_path, 'A=\nB\nC=""\n')


def test_e5_none_is_never_a_value(tmp_path: Path) -> None:
    path = env_file(tmp_path, 'A=\nC=""\n')
    resolved = _env_file.resolve_values(
        defaults={"S": None},
        file_entries=_env_file.read_env_file(path),
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
    resolved = _env_file.resolve_values(
        defaults={"A": "yaml", "B": "yaml", "C": "yaml"},
        file_entries=_env_file.read_env_file(path),
        environ={"C": "env"},
        flags={},
        file_label=".env",
    )
    assert resolved.values == {"A": "yaml", "B": "file", "C": "env"}
    assert resolved.sources == {"A": "job.yaml", "B": ".env:1", "C": "environment"}


# ---------------------------------------------------------------- E6 expansion follows the file's order


def resolve(
    tmp_path: Path,
    content: str,
    *,
    defaults: dict[str, str | None] | None = None,
    environ: dict[str, str] | None = None,
    flags: dict[str, str] | None = None,
) -> _env_file.Resolved:
    path = env_file(tmp_path, content)
    return _env_file.resolve_values(
        defaults=defaults or {},
        file_entries=_env_file.read_env_file(path),
        environ=environ or {},
        flags=flags or {},
        file_label=".env",
    )


def test_e6_forward_reference_is_an_error_naming_both_keys_and_the_line(tmp_path: Path) -> None:
    content = "C=1\nD=2\nA=${B}/x\nE=3\nB=later\n"
    with pytest.raises(ConfigError) as info:
        resolve(tmp_path, content)
    assert str(info.value) == ".env:3: A uses ${B}, which is defined only below (line 5); move B above A"
    # A flag or the process environment still wins, so then there is nothing to get wrong (E6).
    assert resolve(tmp_path, content, environ={"B": "env"}).values["A"] == "env/x"
    assert resolve(tmp_path, content, flags={"B": "cli"}).values["A"] == "cli/x"
    # job.yaml's B does not excuse it: the job's B would be the later line's, A would hold another.
    with pytest.raises(ConfigError, match=r"^\.env:3: A uses \$\{B\}"):
        resolve(tmp_path, content, defaults={"B": "yaml"})
    # A bare `B` below (value from a flag or the environment) is a definition below too.
    with pytest.raises(
        ConfigError, match=r"^\.env:1: A uses \$\{B\}, which is defined only below \(line 2\)"
    ):
        resolve(tmp_path, "A=${B}\nB\nB=b\n")


def test_e6_forward_reference_is_what_bash_and_python_dotenv_read_as_empty(tmp_path: Path) -> None:
    """Why it is an error: python-dotenv 1.2.4 (`dotenv_values` here; `load_dotenv` gives the same,
    interpolate=True by default) and bash (`set -a; source .env`) both read the file top to bottom,
    so `A=${B}` above `B=later` silently gives A="" there, while the launcher used to give A="later":
    one file, two readings. Neither silent answer is safe, so the launcher refuses it."""
    from dotenv import dotenv_values

    path = env_file(tmp_path, "SKYOPS_T_A=${SKYOPS_T_B}\nSKYOPS_T_B=later\n")
    assert dotenv_values(path) == {"SKYOPS_T_A": "", "SKYOPS_T_B": "later"}
    assert _bash_reads(path, ["SKYOPS_T_A", "SKYOPS_T_B"]) == ["", "later"]
    with pytest.raises(ConfigError, match="SKYOPS_T_A uses"):
        resolve(tmp_path, path.read_text())


def _bash_reads(path: Path, keys: list[str]) -> list[str]:
    if not shutil.which("bash"):
        pytest.skip("bash not installed")
    script = 'set -a; source "$1"; shift; for k in "$@"; do printf "%s\\0" "${!k}"; done'
    proc = subprocess.run(
        ["bash", "-c", script, "bash", str(path), *keys],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.split("\0")[:-1]


def test_e6_file_order_agrees_with_bash_and_python_dotenv(tmp_path: Path) -> None:
    """Every reference that is not an error reads as bash and python-dotenv read it."""
    from dotenv import dotenv_values

    content = (
        "SKYOPS_T_C=c\n"
        "SKYOPS_T_B=${SKYOPS_T_C}/b\n"  # a chain in order: C -> B -> A
        "SKYOPS_T_A=${SKYOPS_T_B}/a\n"
        "SKYOPS_T_D=${SKYOPS_T_LATE:-dflt}\n"  # a forward reference with a default: the default
        "SKYOPS_T_LATE=late\n"
        "SKYOPS_T_P=/a\n"
        "SKYOPS_T_P=${SKYOPS_T_P}:/b\n"  # a repeated key sees its line above
        "SKYOPS_T_R=r1\n"
        "SKYOPS_T_S=${SKYOPS_T_R}\n"  # the value above, not a later redefinition
        "SKYOPS_T_R=r2\n"
        "SKYOPS_T_U=${SKYOPS_T_UNSET}-${SKYOPS_T_UNSET:-u}\n"
    )
    expected = {
        "SKYOPS_T_C": "c",
        "SKYOPS_T_B": "c/b",
        "SKYOPS_T_A": "c/b/a",
        "SKYOPS_T_D": "dflt",
        "SKYOPS_T_LATE": "late",
        "SKYOPS_T_P": "/a:/b",
        "SKYOPS_T_R": "r2",
        "SKYOPS_T_S": "r1",
        "SKYOPS_T_U": "-u",
    }
    assert resolve(tmp_path, content).values == expected
    path = env_file(tmp_path, content)
    assert dotenv_values(path) == expected
    assert dict(zip(expected, _bash_reads(path, list(expected)), strict=True)) == expected


def test_e6_chain_out_of_order_names_the_first_forward_reference(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^\.env:1: A uses \$\{B\}, which is defined only below \(line 2\)"
    ):
        resolve(tmp_path, "A=${B}/a\nB=${C}/b\nC=c\n")
    with pytest.raises(
        ConfigError, match=r"^\.env:1: B uses \$\{C\}, which is defined only below \(line 3\)"
    ):
        resolve(tmp_path, "B=${C}/b\nA=${B}/a\nC=c\n")  # B moved up: now B's own reference
    with pytest.raises(ConfigError, match=r"^\.env:1: X uses \$\{B\}"):  # the second reference of a line
        resolve(tmp_path, "X=${A:-a}-${B}\nB=b\n")
    # Single-quoted values are literal: no reference, no error, and a later line sees the text.
    got = resolve(tmp_path, "L='${B}'\nM=${L}\nB=b\n").values
    assert (got["L"], got["M"]) == ("${B}", "${B}")


def test_e6_job_yaml_is_defined_before_the_file(tmp_path: Path) -> None:
    """job.yaml is the lowest layer: a key no flag, environment or line above sets reads job.yaml's."""
    defaults: dict[str, str | None] = {"DATA_DIR": "/skyops-data", "S": None}
    got = resolve(tmp_path, "OUT=${DATA_DIR}/out\nSS=${S:-none}\n", defaults=defaults).values
    assert (got["OUT"], got["DATA_DIR"]) == ("/skyops-data/out", "/skyops-data")
    assert got["SS"] == "none"  # a secret nobody supplied has no value to expand
    # A key the file also sets below: ${DATA_DIR} is a forward reference (the job's DATA_DIR will be
    # /mnt, so OUT would silently disagree with it); ${DATA_DIR:-d} reads what is defined before its
    # line, job.yaml's, as bash reads it with job.yaml's envs exported before `source .env`.
    with pytest.raises(ConfigError, match=r"^\.env:1: OUT uses \$\{DATA_DIR\}, .* \(line 3\)"):
        resolve(tmp_path, "OUT=${DATA_DIR}/out\nX=1\nDATA_DIR=/mnt\n", defaults=defaults)
    got = resolve(tmp_path, "LATE=${DATA_DIR:-d}\nDATA_DIR=/mnt\n", defaults=defaults).values
    assert (got["LATE"], got["DATA_DIR"]) == ("/skyops-data", "/mnt")


def test_e6_self_reference_means_the_layers_below(tmp_path: Path) -> None:
    assert resolve(tmp_path, "K=${K}/x\n", defaults={"K": "yaml"}).values["K"] == "yaml/x"
    assert resolve(tmp_path, "K=${K}/x\n").values["K"] == "/x"
    assert resolve(tmp_path, "K=${K:-d}/x\n").values["K"] == "d/x"
    # The environment or a flag wins over the whole line (the line is never used).
    assert resolve(tmp_path, "K=${K}/x\n", environ={"K": "env"}).values["K"] == "env"
    # A key redefined below its self-reference is not a forward reference: the last line wins.
    assert resolve(tmp_path, "K=${K}/x\nK=last\n", defaults={"K": "yaml"}).values["K"] == "last"


def test_e6_expanded_from_follows_references_through_earlier_lines(tmp_path: Path) -> None:
    """The launcher refuses a plaintext env that expands a secret; through another key too."""
    got = resolve(tmp_path, "TOK=s3cret\nA=${TOK}\nB=${A}/x\nA=plain\n", defaults={"TOK": None})
    assert got.values["B"] == "s3cret/x" and got.values["A"] == "plain"
    assert got.expanded_from["B"] == ["A", "TOK"]
    assert "A" not in got.expanded_from  # A's last line expands nothing
    assert got.sources["B"] == ".env:3"


# ---------------------------------------------------------------- E7 silent loss


def test_e7_unparseable_line_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.env:2: cannot parse"):
        values(tmp_path, 'A=1\nTOKEN="abc\nB=2\n')


def test_e7_missing_env_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--env-file .*nope\.env: no such file"):
        _env_file.read_env_file(tmp_path / "nope.env")


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
        _env_file.parse_set_flags(["my-key=1", "OK=2"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        _env_file.parse_set_flags(["NOEQUALS"])


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


def test_y4_skypilot_0_14_1_task_keys_are_accepted(tmp_path: Path) -> None:
    """Keys of SkyPilot 0.14.1's task schema that an older copy refused (tests/test_sky.py holds the
    copy to the installed SkyPilot's schema)."""
    task = tmp_path / "job.yaml"
    task.write_text("run: echo\napi_server_access: false\nvolume_mounts: []\nmanaged_secrets: [HF_TOKEN]\n")
    assert _config.load_task_file(task).config["managed_secrets"] == ["HF_TOKEN"]


def test_secrets_list_form_is_managed_references(tmp_path: Path) -> None:
    """SkyPilot's list form of `secrets:` (sky/task.py from_yaml_config): only `secrets:NAME` references,
    resolved by the API server, so nothing to supply at launch; the mapping form may hold them too."""
    task = tmp_path / "job.yaml"
    task.write_text("run: echo\nsecrets:\n  - secrets:HF_TOKEN\n  - secrets:workspace.WANDB_API_KEY\n")
    loaded = _config.load_task_file(task)
    assert (loaded.secrets, loaded.secret_refs) == (
        {},
        ("secrets:HF_TOKEN", "secrets:workspace.WANDB_API_KEY"),
    )
    task.write_text("run: echo\nsecrets:\n  T: null\n  secrets:HF_TOKEN: null\n  O: ''\n")
    loaded = _config.load_task_file(task)
    assert (loaded.secrets, loaded.secret_refs) == ({"T": None, "O": ""}, ("secrets:HF_TOKEN",))


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ("\n  - HF_TOKEN\n", r"job\.yaml:3: secrets: 'HF_TOKEN': the list form holds only managed secret references, resolved by the API server \(secrets:HF_TOKEN\); for a value supplied at launch use the mapping form \(HF_TOKEN: null\)$"),
        ("\n  - 'secrets:'\n", r"job\.yaml:3: secrets: 'secrets:' names no secret"),
        ("\n  - {HF_TOKEN: x}\n", r"job\.yaml:3: secrets: each item of the list form must be a string like secrets:NAME$"),
        ("\n  secrets:HF_TOKEN: abc\n", r"job\.yaml:3: secrets\.secrets:HF_TOKEN: a managed secret reference must be null"),
        (" 3\n", r"job\.yaml: secrets must be a mapping \(or a list of secrets:NAME references\)$"),
    ],
)  # fmt: skip
def test_secrets_in_neither_form_name_the_line(tmp_path: Path, secrets: str, message: str) -> None:
    task = tmp_path / "job.yaml"
    task.write_text(f"run: echo\nsecrets:{secrets}")
    with pytest.raises(ConfigError, match=message):
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
    assert _env_file.read_env_file(path) == [EnvLine("A", "1", 3), EnvLine("B", "2", 4)]
