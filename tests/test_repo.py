"""The repository's own contracts: script headers, job.yaml, docs/contract.md, .env.example."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import _config
import _contract
import _env_file
import launch
import pytest
import yaml
from conftest import REPO

ENTRY_SCRIPTS = sorted(
    p
    for p in [
        *(REPO / "scripts").rglob("*.py"),
        *(REPO / "examples").glob("*.py"),
        *(REPO / "benchmarks").glob("*.py"),
    ]
    if not p.name.startswith("_")
)
JOB_YAML = REPO / "job.yaml"


def pep723(script) -> dict:
    """The script's PEP 723 `script` block as TOML."""
    match = re.search(r"(?m)^# /// script\n((?:#.*\n)*?)# ///\n", script.read_text())
    assert match, f"{script.name}: no PEP 723 block"
    return tomllib.loads("".join(line[2:] for line in match.group(1).splitlines(keepends=True)))


def needs_torch(script) -> bool:
    return any(re.match(r"torch\b", dep) for dep in pep723(script)["dependencies"])


def lock_of(script):
    return script.with_name(script.name + ".lock")


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_entry_scripts_are_executable_uv_scripts(script) -> None:
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env -S uv run --script"
    assert lines[1] == "# /// script"
    block = text.split("# /// script\n", 1)[1].split("# ///\n", 1)[0]
    assert "# requires-python" in block and "# dependencies" in block
    for dep in re.findall(r'"([A-Za-z0-9_.\-\[\]]+[=<>!~][^"]*)"', block):
        assert "==" in dep, f"{script.name}: pin {dep}"
    assert "from __future__ import annotations" in text
    assert os.access(script, os.X_OK)


def test_every_script_has_one_uv_policy() -> None:
    """Every PEP 723 block bounds its resolution with the same `exclude-newer` date
    (docs/decisions/locked-environments.md)."""
    policies = {str(s.relative_to(REPO)): pep723(s).get("tool", {}).get("uv") for s in ENTRY_SCRIPTS}
    assert all(policies.values()), [name for name, policy in policies.items() if not policy]
    dates = {policy.get("exclude-newer") for policy in policies.values()}
    assert len(dates) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00Z", dates.pop() or ""), policies


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_without_torch_are_locked(script) -> None:
    """A script that needs no torch has a committed lock made under its own policy, with every package
    from a public index; one that needs torch has none (a lock would pin PyPI's CUDA build, or an
    absolute path to this machine's wheel folder). `nox -s locks` checks that the locks are current."""
    lock = lock_of(script)
    if needs_torch(script):
        assert not lock.exists(), f"{lock.name}: scripts that need torch are not locked"
        return
    assert lock.is_file(), f"missing {lock.relative_to(REPO)}: uv lock --script {script.relative_to(REPO)}"
    data = tomllib.loads(lock.read_text())
    assert data.get("options", {}).get("exclude-newer") == pep723(script)["tool"]["uv"]["exclude-newer"]
    sources = {str(pkg.get("source", {}).get("registry")) for pkg in data.get("package", [])}
    assert sources <= {"https://pypi.org/simple"}, sources


def test_remote_never_imports_local_and_local_imports_only_the_contract() -> None:
    """Nodes never need laptop code; the laptop side may import the node side's stdlib-only contract
    module, so that every reason and exit code is defined once (docs/decisions/boundary.md)."""
    local = {p.stem for p in (REPO / "scripts" / "local").glob("*.py")}
    remote = {p.stem for p in (REPO / "scripts" / "remote").glob("*.py")}
    for room, others in (("local", remote - {"_contract"}), ("remote", local)):
        for path in (REPO / "scripts" / room).glob("*.py"):
            imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", path.read_text(), re.M))
            assert not imported & others, f"{path.name} imports {imported & others}"
    contract = (REPO / "scripts" / "remote" / "_contract.py").read_text()
    imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", contract, re.M))
    assert imported <= {"__future__", "enum", "dataclasses", "typing", "collections"} | set(
        sys.stdlib_module_names
    )


def test_job_yaml_reads_like_the_contract() -> None:
    text = JOB_YAML.read_text()
    config = yaml.safe_load(text)
    task = _config.load_task_file(JOB_YAML)
    assert text.startswith("#") and "make launch" in text.split("\n\n", 1)[0]
    resources = config["resources"]
    assert [c["use_spot"] for c in resources["any_of"]] == [True, False]
    recovery = resources["job_recovery"]
    assert {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"} <= recovery.keys()
    assert _contract.EXIT_BAD_NODE in recovery["recover_on_exit_codes"]
    assert _contract.EXIT_CRASH_LOOP not in recovery["recover_on_exit_codes"]
    assert 137 not in recovery["recover_on_exit_codes"]
    # envs: every default is a string as written (quoted in the file), secrets are null.
    assert all(isinstance(v, str) for v in config["envs"].values())
    assert task.envs == {k: str(v) for k, v in config["envs"].items()}
    # secrets: null = must be supplied at launch; "" = optional (a notification channel not configured)
    assert config["secrets"] and all(v in (None, "") for v in config["secrets"].values())
    assert {k for k, v in config["secrets"].items() if v is None} == {"WANDB_API_KEY", "HF_TOKEN"}
    run_lines = [
        line
        for line in config["run"].strip().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert "scripts/remote/configure_environment.py" in config["run"]
    assert run_lines[-1].startswith("exec uv run --locked --script scripts/remote/run.py")
    assert "command -v uv" in config["setup"]


def test_job_yaml_uses_the_locks_and_compiles_bytecode() -> None:
    """setup builds the environment of every script a node runs and compiles their bytecode (run only
    uses them, so it does not compile: uv would walk each environment again at every call), and setup
    and run use a script's lock wherever it has one (`--locked`) (docs/decisions/locked-environments.md)."""
    config = yaml.safe_load(JOB_YAML.read_text())
    compile_bytecode = r'(?m)^\s*export .*\bUV_COMPILE_BYTECODE="\$\{UV_COMPILE_BYTECODE:-1\}"'
    assert re.search(compile_bytecode, config["setup"])
    assert re.search(r"(?m)^unset UV_COMPILE_BYTECODE$", config["run"].split("uv run", 1)[0])
    for phase in ("setup", "run"):
        text = config[phase]
        calls = re.findall(r"uv[ _](?:run|sync) ((?:--?[a-z]+ )*)--script (scripts/\S+\.py)", text)
        assert calls, phase
        for flags, path in calls:
            assert ("--locked" in flags.split()) == lock_of(REPO / path).is_file(), (phase, path)
    synced = set(re.findall(r"uv[ _]sync .*--script (scripts/\S+\.py)", config["setup"]))
    run_scripts = {
        "scripts/remote/configure_environment.py",
        "scripts/remote/run.py",
        "scripts/remote/nccl_test.py",
    }
    assert synced == run_scripts


def test_setup_syncs_a_job_with_its_lock(tmp_path) -> None:
    """A PEP 723 job without a lock is resolved in setup; one with a lock gets it `--locked`, so a lock
    that no longer matches its job stops setup instead of being rewritten on the node."""
    config = yaml.safe_load(JOB_YAML.read_text())
    job = tmp_path / "job.py"
    job.write_text('# /// script\n# requires-python = ">=3.11"\n# dependencies = []\n# ///\nprint(1)\n')
    env = {**os.environ, **{k: str(v) for k, v in config["envs"].items()}, "JOB": str(job)}
    env["NCCL_PREFLIGHT"] = "0"
    env.pop("VIRTUAL_ENV", None)

    def setup() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", config["setup"]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )

    assert setup().returncode == 0
    stale = lock_of(job)
    stale.write_bytes(lock_of(REPO / "scripts/remote/run.py").read_bytes())  # locks psutil, not []
    result = setup()
    assert result.returncode != 0 and "--locked" in result.stderr, result.stderr
    assert stale.read_bytes() == lock_of(REPO / "scripts/remote/run.py").read_bytes()


def test_setup_is_safe_to_run_twice(tmp_path) -> None:
    """job.yaml's setup on a node that already has uv and the environments: a no-op, exit 0."""
    config = yaml.safe_load(JOB_YAML.read_text())
    env = {**os.environ, **{k: str(v) for k, v in config["envs"].items()}}
    env.pop("VIRTUAL_ENV", None)
    for _ in range(2):
        result = subprocess.run(
            ["bash", "-c", config["setup"]], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr


def test_contract_doc_matches_code() -> None:
    doc = (REPO / "docs" / "contract.md").read_text()
    config = yaml.safe_load(JOB_YAML.read_text())
    for key, value in config["envs"].items():
        assert f"| `{key}` | `{value}` |" in doc or f'| `{key}` | `""` |' in doc, key
    for key in config["secrets"]:
        assert f"`{key}`" in doc
    for name in ("EXIT_BAD_NODE", "EXIT_CRASH_LOOP", "EXIT_SIGTERM", "EXIT_SIGINT"):
        assert f"| {getattr(_contract, name)} |" in doc, name
    for code in (
        _config.EXIT_OK,
        _config.EXIT_FAILED,
        _config.EXIT_BAD_INPUT,
        _config.EXIT_SKY_ERROR,
        _config.EXIT_INTERRUPTED,
    ):
        assert f"| {code} |" in doc


def test_env_example_lists_every_key() -> None:
    text = (REPO / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z_][A-Z0-9_]*)=", text, re.M))
    config = yaml.safe_load(JOB_YAML.read_text())
    launcher_set = {"JOB", "JOB_ARGS", "RUN_ID"}
    expected = (set(config["envs"]) - launcher_set) | set(config["secrets"]) | set(launch.SETTINGS)
    assert expected - listed == set()
    for key, value in config["envs"].items():
        if key not in launcher_set:
            assert f"# {key}={value}\n" in text, key


def test_env_example_parses_and_changes_no_default(tmp_path) -> None:
    entries = _env_file.read_env_file(REPO / ".env.example")
    assert {e.key for e in entries} == set(yaml.safe_load(JOB_YAML.read_text())["secrets"])


def test_readme_quick_start_and_ci_use_the_same_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make launch JOB=examples/train.py NODES=2" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text()
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_make_help_is_the_default_and_launch_requires_job() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"JOB", "MAKEFLAGS"}}
    help_out = subprocess.run(["make", "-s"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert help_out.returncode == 0 and "make launch" in help_out.stdout
    missing = subprocess.run(
        ["make", "-s", "launch"], cwd=REPO, capture_output=True, text=True, env=env, timeout=60
    )
    assert missing.returncode == 2 and "JOB is required" in missing.stderr


@pytest.mark.parametrize("key", sorted(_config.TYPED_KEYS))
def test_launch_time_checks_agree_with_the_node_side_parsers(key: str, tmp_path) -> None:
    """A typed env the launcher accepts is accepted on the node, and one it refuses is refused there:
    the check before launch neither lets a node fail on it nor blocks a value that works."""
    from pathlib import Path

    import _supervisor_config
    import configure_environment
    import nccl_test
    import notify
    import run

    def node_rejects(value: str) -> bool:
        env = {key: value}
        try:
            if key == "MASTER_PORT":
                configure_environment.derive("", "", "", "", value)
            elif key.startswith("NOTIFY_"):
                notify.load_config(env, tmp_path)
            elif key.startswith("NCCL_PREFLIGHT_"):
                nccl_test.make_config(nccl_test.build_parser(env).parse_args([]), env)
            else:
                _supervisor_config.load_config(
                    ["--", "true"], env, tmp_dir=tmp_path, here=Path(run.__file__).parent
                )
        except (
            _supervisor_config.BadInput,
            nccl_test.BadInput,
            configure_environment.InputError,
            notify.BadInput,
        ):
            return True
        return False

    def launcher_rejects(value: str) -> bool:
        try:
            _config.check_typed_envs({key: value}, {key: "test"})
        except _config.ConfigError:
            return True
        return False

    default = str(yaml.safe_load(JOB_YAML.read_text())["envs"].get(key, ""))
    for value in {
        default,
        "abc",
        "-1",
        "0",
        "1",
        "2.5",
        "",
        "nan",
        "inf",
        "1e400",
        "none",
        "12Q",
        "32M",
        "H100@2+=10:40",
    }:
        assert launcher_rejects(value) == node_rejects(value), f"{key}={value!r}"


def test_prepare_rebuilds_an_environment_an_interrupted_setup_left_broken(tmp_path: Path) -> None:
    """Found by a Ctrl-C one second into a launch: uv stopped mid-install left torch without its
    METADATA, and every later setup on that node slot failed reading it. prepare rebuilds instead."""
    script = tmp_path / "job.py"
    script.write_text(
        '# /// script\n# requires-python = ">=3.11"\n# dependencies = ["psutil==7.2.2"]\n# ///\n'
    )
    prepare = [sys.executable, str(REPO / "scripts" / "remote" / "_job_command.py"), "prepare", "job.py"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(prepare, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert run().returncode == 0
    python = subprocess.run(["uv", "python", "find", "--script", str(script)], capture_output=True, text=True)
    site = Path(python.stdout.strip()).parents[1] / "lib"
    (metadata,) = site.glob("python3*/site-packages/psutil-7.2.2.dist-info/METADATA")
    metadata.unlink()  # what the interrupted install left
    again = run()
    assert again.returncode == 0, again.stderr
    assert metadata.is_file()


def test_bytecode_warm_up_compiles_in_every_cache_entry_of_the_same_version(tmp_path: Path) -> None:
    """tests/_bytecode.py: an imported module's source is compiled in each uv cache entry that holds
    the installed distribution and version, and nowhere else; the .pyc is valid for that file; a later
    warm-up compiles only in entries it has not seen."""
    import _bytecode

    source = Path(yaml.__file__)
    sources, _, failed = _bytecode.sources_by_dist((("yaml",), ("no_such_module_here",)))
    assert failed == ["no_such_module_here"]
    info = next(
        f.parts[0] for f in importlib.metadata.distribution("PyYAML").files or () if f.name == "METADATA"
    )
    assert "yaml/__init__.py" in sources[info]
    entries = {name: tmp_path / "archive-v0" / name for name in ("a", "b", "older", "later")}
    for name, entry in entries.items():
        (entry / (info if name != "older" else "PyYAML-0.1.dist-info")).mkdir(parents=True)
        (entry / "yaml").mkdir()
        (entry / "yaml" / "__init__.py").write_bytes(source.read_bytes())

    def pyc(name: str) -> Path:
        return Path(importlib.util.cache_from_source(str(entries[name] / "yaml" / "__init__.py")))

    done, holders = _bytecode.warm(tmp_path, sources, skip=frozenset({"later"}))
    assert done == 2 and holders == ["a", "b", "later"]  # only yaml/__init__.py has twins here
    assert [name for name in entries if pyc(name).is_file()] == ["a", "b"]
    stat = (entries["a"] / "yaml" / "__init__.py").stat()
    header = pyc("a").read_bytes()[:16]  # PEP 552: magic, flags 0 (timestamp), source mtime, source size
    assert header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 0
    assert int.from_bytes(header[8:12], "little") == int(stat.st_mtime) & 0xFFFFFFFF
    assert int.from_bytes(header[12:16], "little") == stat.st_size & 0xFFFFFFFF
    assert _bytecode.warm(tmp_path, sources, skip=frozenset({"a", "b"})) == (1, ["a", "b", "later"])
    assert pyc("later").is_file()


def test_bytecode_warm_up_record_is_rewritten_when_unreadable_and_kept_only_when_current(
    tmp_path: Path,
) -> None:
    """A record that is garbage, of another key, or names a distribution no longer installed counts as
    none (the next warm-up imports again and rewrites it); records are written whole (rename)."""
    import _bytecode

    path = tmp_path / "skyops" / "bytecode-warm-up.json"
    info = next(
        f.parts[0] for f in importlib.metadata.distribution("PyYAML").files or () if f.name == "METADATA"
    )
    good = {"key": "k", "sources": {info: ["yaml/__init__.py"]}, "entries": ["a"]}
    assert _bytecode.write_record(path, good) == "written" and [p.name for p in path.parent.iterdir()] == [
        path.name
    ]
    assert _bytecode.read_record(path, "k") == good
    assert _bytecode.read_record(path, "other key") is None
    for text in ('{"key": 1', "", "[]", "null", '{"key": "k", "sources": [], "entries": []}'):
        path.write_text(text)
        assert _bytecode.read_record(path, "k") is None, text
    _bytecode.write_record(path, {**good, "sources": {"torch-0.0.1.dist-info": ["torch/__init__.py"]}})
    assert _bytecode.read_record(path, "k") is None  # that torch is not installed here
    (tmp_path / "file").write_text("")
    assert _bytecode.write_record(tmp_path / "file" / "x.json", good).startswith("not written: ")


def test_bytecode_warm_up_without_uv_prints_one_line_and_exits_0(tmp_path: Path) -> None:
    """No uv on PATH: one JSON line naming the error, exit 0 (a failed warm-up costs speed, not tests)."""
    script = REPO / "tests" / "_bytecode.py"
    env = {"PATH": "/nonexistent", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "No such file or directory: 'uv'" in json.loads(done.stdout)["error"]
