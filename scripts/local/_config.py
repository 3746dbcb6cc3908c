"""Configuration for the laptop-side scripts: one loader, one precedence.

Every value a launch uses is resolved once, in this order (highest first):

    command-line flags (including --set KEY=VALUE)  >  process environment  >  .env file  >  job.yaml

The .env file and its merge with the other layers are _env_file.py's: python-dotenv plus small, tested
corrections for the cases where it is known to be wrong or silent (docs/field-cases.md E1-E9).

job.yaml's `envs` and `secrets` are read as the text written in the file (PyYAML's composer, not its
constructor), so `COMMIT: 0123456` reaches the job as `0123456`, not `42798` (docs/field-cases.md Y1).

Errors a user can cause raise `ConfigError` with one line naming the flag, key or `file:line`.
Nothing here reads `os.environ`: callers pass the process environment in.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

# The laptop side may import the node side's stdlib-only contract module (scripts/remote/_contract.py:
# reasons and exit codes defined once); a uv script only has its own folder on sys.path.
_REMOTE = str(Path(__file__).resolve().parents[1] / "remote")
if _REMOTE not in sys.path:
    sys.path.append(_REMOTE)
import _contract  # noqa: E402

#: The repository root: what the nodes receive, and where job.yaml, .env and .skyops/ are by default.
REPO = Path(__file__).resolve().parents[2]

#: Exit codes of the laptop-side scripts (docs/contract.md, "Laptop side"): the node side's where the
#: meaning is the same, plus 3, which only the laptop gives.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = _contract.Exit.OK, _contract.Exit.FAILURE, _contract.Exit.BAD_INPUT
EXIT_SKY_ERROR = 3  # SkyPilot or its API server refused or failed
EXIT_INTERRUPTED = _contract.Exit.SIGINT

#: SkyPilot's env-key rule (sky/utils/schemas.py): also what a POSIX shell accepts.
ENV_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: SkyPilot's cluster-name rule (sky/skylet/constants.py CLUSTER_NAME_VALID_REGEX).
CLUSTER_NAME_RE = re.compile(r"^[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$")
#: SkyPilot's task-name rule (sky/task.py _VALID_NAME_REGEX).
TASK_NAME_RE = re.compile(r"^[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*$")
#: Names that look like credentials: such keys must be declared under job.yaml `secrets:`.
SECRET_LIKE_RE = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|WEBHOOK|CREDENTIAL)"
)

#: Envs the launcher sets from the git state (--backend sky): never from a flag or .env.
GIT_ENVS = ("GIT_COMMIT", "GIT_DIRTY")
#: Longest run name accepted: a DNS label (Kubernetes and most clouds name resources after it).
MAX_RUN_NAME = 63
#: Longest `KEY=value` the kernel passes to a process (MAX_ARG_STRLEN, 32 pages of 4 KiB).
MAX_ENV_ENTRY = 131072

TRUE_WORDS, FALSE_WORDS = _contract.TRUE_WORDS, _contract.FALSE_WORDS

#: Top-level keys of a SkyPilot task: a copy of SkyPilot 0.14.1's own (sky/utils/schemas.py
#: get_task_schema()["properties"]), for the paths that never import SkyPilot (1-2 s). `task_keys()`
#: uses SkyPilot's own schema whenever SkyPilot is imported anyway; tests/test_sky.py fails the day
#: the copy and the installed SkyPilot's schema differ.
TASK_KEYS = frozenset(
    {
        "name",
        "workdir",
        "event_callback",
        "num_nodes",
        "resources",
        "file_mounts",
        "service",
        "pool",
        "setup",
        "run",
        "envs",
        "secrets",
        "managed_secrets",
        "inputs",
        "outputs",
        "file_mounts_mapping",
        "config",
        "volumes",
        "volume_mounts",
        "api_server_access",
        "_metadata",
    }
)
#: A managed secret reference under `secrets:` (sky/task.py Task.from_yaml_config): every item of the
#: list form, or a key of the mapping form with a null value, `secrets:[personal.|workspace.|global.]NAME`.
#: SkyPilot resolves it at launch through the API server's managed secrets provider; the launcher
#: neither needs nor sends a value for it.
SECRET_REF_PREFIX = "secrets:"


def task_keys() -> frozenset[str]:
    """The top-level keys a SkyPilot task may have: SkyPilot's own schema when SkyPilot is already
    imported (`sky.utils.schemas` in sys.modules: the sky backend's paths), else the copy TASK_KEYS."""
    schemas = sys.modules.get("sky.utils.schemas")
    if schemas is None:
        return TASK_KEYS
    return frozenset(schemas.get_task_schema()["properties"])


def unknown_task_keys(config: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """One `KEY unknown[, did you mean K?]` per top-level key of `config` that is not in `keys`."""
    known = sorted(keys)
    problems = []
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            problems.append(f"{key} unknown" + (f", did you mean {close[0]}?" if close else ""))
    return problems


#: What in a user's environment would steer a launch or a jobs.py command: skyops', SkyPilot's and
#: torch.distributed's settings, a virtual environment, a DATA_DIR or RUN_ID exported for a job.
_USER_ENV_DROP_PREFIXES = ("SKYOPS_", "SKYPILOT_", "TORCHELASTIC_")
_USER_ENV_DROP = frozenset(
    {"VIRTUAL_ENV", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "DATA_DIR", "RUN_ID"}
)


def isolated_env(environ: Mapping[str, str], state_dir: Path) -> dict[str, str]:
    """`environ` for launch.py and jobs.py run apart from the user's own jobs (tests, benchmarks):
    without the settings that would steer them (_USER_ENV_DROP), with `state_dir` as SKYOPS_STATE_DIR
    and no local SkyPilot API server started."""
    env = {
        k: v
        for k, v in environ.items()
        if k not in _USER_ENV_DROP and not k.startswith(_USER_ENV_DROP_PREFIXES)
    }
    env["SKYOPS_STATE_DIR"] = str(state_dir)
    env["SKYPILOT_DISABLE_LOCAL_API_SERVER"] = "1"
    return env


class ConfigError(Exception):
    """Bad user input: the message is one line naming the flag, key or file:line."""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default in --help only when there is one (no "(default: None)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS) or action.nargs == argparse.REMAINDER:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


# --------------------------------------------------------------------------------------- values


def parse_bool(text: str, field_name: str) -> bool:
    """`true/false/1/0/yes/no/on/off`, any case, to a bool (docs/field-cases.md E9: `bool("false")` is True).

    Raises ConfigError naming `field_name` for anything else.
    """
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{field_name}: expected true/false/yes/no/1/0, got {text!r}")


def parse_int(text: str, field_name: str, minimum: int) -> int:
    """A decimal integer >= `minimum`; raises ConfigError naming `field_name` otherwise."""
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise ConfigError(f"{field_name}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise ConfigError(f"{field_name}: must be >= {minimum}, got {value}")
    return value


def run_name_problem(name: str) -> str | None:
    """Why `name` is not a valid run name, or None when it is.

    A run name becomes the managed job's task name and, through it, its cluster name, so it must
    satisfy both SkyPilot rules (CLUSTER_NAME_RE and TASK_NAME_RE above; docs/skypilot-facts.md).
    """
    if not name:
        return "must not be empty"
    if len(name) > MAX_RUN_NAME:
        return f"at most {MAX_RUN_NAME} characters, got {len(name)}"
    for pos, ch in enumerate(name):
        if not (ch.isascii() and (ch.isalnum() or ch in "-_.")):
            return f"character {ch!r} at position {pos} is not allowed (use letters, digits, '-', '_', '.')"
    if not name[0].isalpha():
        return "must start with a letter"
    if not name[-1].isalnum():
        return "must end with a letter or digit"
    run = re.search(r"[-_.]{3,}", name)
    if run:
        return f"at most two of '-', '_', '.' in a row (position {run.start()})"
    if not (
        CLUSTER_NAME_RE.match(name) and TASK_NAME_RE.match(name)
    ):  # pragma: no cover - rules above cover it
        return "does not match SkyPilot's cluster-name and task-name rules"
    return None


def validate_run_name(name: str, flag: str = "--run") -> str:
    """Return `name` if it is a valid run name; raise ConfigError with the precise reason."""
    problem = run_name_problem(name)
    if problem:
        raise ConfigError(f"{flag} {name!r}: {problem}")
    return name


def default_run_name(job: str, stamp: str) -> str:
    """A valid run name from the job's file name and a time stamp, e.g. `train-20261129-153000`."""
    stem = re.sub(r"[^a-zA-Z0-9]+", "-", Path(job).stem).strip("-") or "job"
    if not stem[0].isalpha():
        stem = f"run-{stem}"
    return f"{stem}-{stamp}"


# --------------------------------------------------------------------------------------- typed envs


#: Task envs the node side parses as numbers, flags, sizes or tables: checked here with the node side's
#: own parser (_contract.parse) before anything is launched, so a typo costs exit 2, not a failed
#: attempt on paid nodes.
TYPED_KEYS = tuple(k.name for k in _contract.KEYS if k.kind not in ("str", "name"))


#: Set on the node by SkyPilot, configure_environment.py or run.py: a task env of that name would be
#: silently replaced there, so the launcher refuses it.
NODE_OWNED_ENVS = frozenset(
    {
        *(
            "MASTER_ADDR",
            "NNODES",
            "NODE_RANK",
            "NPROC_PER_NODE",
            "WORLD_SIZE",
            "HEARTBEAT_FILE",
            "SKYOPS_ATTEMPT",
        ),
        *("SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS", "SKYPILOT_NUM_NODES", "SKYPILOT_NUM_GPUS_PER_NODE"),
        *(
            "SKYPILOT_TASK_ID",
            "SKYPILOT_TASK_IDS",
            "SKYPILOT_MANAGED_JOB_ID",
            "SKYPILOT_CLUSTER_INFO",
            "SKYPILOT_USER",
        ),
        *("SKYPILOT_SETUP_NODE_RANK", "SKYPILOT_SETUP_NODE_IPS", "SKYPILOT_SETUP_NUM_GPUS_PER_NODE"),
        *("SKYPILOT_JOB_RANK", "SKYPILOT_NUM_JOBS"),
    }
)
#: Total size of a task's envs and secrets: the kernel's ARG_MAX (2 MiB here) covers the whole
#: environment and argv of every process on the node; keep well under it.
MAX_ENV_TOTAL = 1 << 20


def check_typed_envs(values: Mapping[str, str], sources: Mapping[str, str]) -> None:
    """Raise ConfigError naming the key and where its value came from when a typed env (TYPED_KEYS)
    would be rejected on the node (docs/field-cases.md E9: strings that mean numbers and booleans)."""
    for key in TYPED_KEYS:
        if key in values:
            try:
                _contract.parse(key, values[key])
            except _contract.BadValue:
                raise ConfigError(
                    f"{key} (from {sources.get(key, '?')}): expected {_contract.KEY[key].expected()},"
                    f" got {values[key]!r}"
                ) from None


# --------------------------------------------------------------------------------------- job.yaml


@dataclass(frozen=True)
class TaskFile:
    """job.yaml, read once: the plain config plus `envs`/`secrets` exactly as written.

    `config` is PyYAML's ordinary load (for resources, setup, run, ...). `envs` holds every env value
    as the text in the file; `secrets` maps each key to its text, or None for "must be supplied".
    `secret_refs` are the managed secret references (SECRET_REF_PREFIX), as written, in file order:
    the whole list form of `secrets:`, or the null `secrets:NAME` keys of the mapping form.
    """

    path: Path
    config: dict[str, Any]
    envs: dict[str, str]
    secrets: dict[str, str | None] = field(repr=False)
    secret_refs: tuple[str, ...] = ()


def _scalar_text(node: Any, label: str, *, allow_null: bool) -> str | None:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(
            f"{label}: must be a string, not a {'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}"
        )
    if node.style is None and node.tag == "tag:yaml.org,2002:null":
        if allow_null:
            return None
        raise ConfigError(f'{label}: is null; write "" for an empty value')
    return node.value


def _mapping_texts(node: Any, label: str, path: Path, *, allow_null: bool) -> dict[str, str | None]:
    import yaml

    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"):
        return {}
    if not isinstance(node, yaml.MappingNode):
        line = node.start_mark.line + 1
        raise ConfigError(f"{path}:{line}: {label} must be a mapping of KEY: value")
    out: dict[str, str | None] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if not ENV_KEY_RE.match(key):
            raise ConfigError(f"{path}:{key_node.start_mark.line + 1}: {label}.{key}: invalid key")
        out[key] = _scalar_text(
            value_node, f"{path}:{value_node.start_mark.line + 1}: {label}.{key}", allow_null=allow_null
        )
    return out


def _secret_texts(node: Any, path: Path) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """The `secrets:` of job.yaml in either of SkyPilot's forms (sky/utils/schemas.py get_task_schema,
    sky/task.py Task.from_yaml_config): the mapping (KEY: text, KEY: null = supplied at launch, and
    `secrets:NAME: null` = a managed reference) or the list (managed references only, each
    `secrets:NAME`). Returns (the KEY: text|None mapping, the references)."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        refs: list[str] = []
        for item in node.value:
            where = f"{path}:{item.start_mark.line + 1}: secrets"
            text = item.value if isinstance(item, yaml.ScalarNode) and item.tag.endswith(":str") else None
            if text is None:
                raise ConfigError(f"{where}: each item of the list form must be a string like secrets:NAME")
            if not text.startswith(SECRET_REF_PREFIX):
                raise ConfigError(
                    f"{where}: {text!r}: the list form holds only managed secret references, resolved by the"
                    f" API server ({SECRET_REF_PREFIX}{text}); for a value supplied at launch use the mapping"
                    f" form ({text}: null)"
                )
            if not text[len(SECRET_REF_PREFIX) :]:
                raise ConfigError(f"{where}: {text!r} names no secret ({SECRET_REF_PREFIX}NAME)")
            refs.append(text)
        return {}, tuple(refs)
    if isinstance(node, yaml.MappingNode):
        inline_nodes, refs = [], []
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if not key.startswith(SECRET_REF_PREFIX):
                inline_nodes.append((key_node, value_node))
                continue
            where = f"{path}:{key_node.start_mark.line + 1}: secrets.{key}"
            if key == SECRET_REF_PREFIX:
                raise ConfigError(f"{where}: names no secret ({SECRET_REF_PREFIX}NAME)")
            if not (value_node.tag == "tag:yaml.org,2002:null" and value_node.style is None):
                raise ConfigError(
                    f"{where}: a managed secret reference must be null; for a value supplied at launch,"
                    f" drop the {SECRET_REF_PREFIX!r} prefix"
                )
            refs.append(key)
        node = yaml.MappingNode(node.tag, inline_nodes, node.start_mark, node.end_mark)
        return _mapping_texts(node, "secrets", path, allow_null=True), tuple(refs)
    return _mapping_texts(node, "secrets", path, allow_null=True), ()


def load_task_file(path: Path) -> TaskFile:
    """Read and check job.yaml. Raises ConfigError (`file:line: ...`, or every structural problem in
    one line, docs/field-cases.md Y4) for YAML errors, unknown keys (`task_keys()`), a null `resources`,
    `envs` not a mapping, `secrets` in neither of SkyPilot's forms (`_secret_texts`)."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except FileNotFoundError:
        raise ConfigError(f"--task {path}: no such file") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        config = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {exc.problem or exc.context}") from None
    if not isinstance(config, dict) or root is None:
        raise ConfigError(f"{path}: must be a mapping (a SkyPilot task)")

    problems = unknown_task_keys(config, task_keys())
    if "resources" in config and config["resources"] is None:
        problems.append("resources is null")
    if "envs" in config and config["envs"] is not None and not isinstance(config["envs"], dict):
        problems.append("envs must be a mapping")
    if config.get("secrets") is not None and not isinstance(config["secrets"], (dict, list)):
        problems.append("secrets must be a mapping (or a list of secrets:NAME references)")
    if not isinstance(config.get("run"), str):
        problems.append("run must be a string (the command each node runs)")
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")

    nodes = {k.value: v for k, v in root.value}
    envs = _mapping_texts(nodes.get("envs"), "envs", path, allow_null=False)
    secrets, refs = _secret_texts(nodes.get("secrets"), path)
    both = sorted(set(envs) & set(secrets))
    if both:
        raise ConfigError(f"{path}: {', '.join(both)} declared under both envs and secrets")
    return TaskFile(path, config, {k: v for k, v in envs.items() if v is not None}, secrets, refs)


def secret_like_keys(keys: Iterable[str], declared_secrets: Iterable[str]) -> list[str]:
    """Keys that look like credentials but are not declared under `secrets:` (they would travel as
    plaintext envs, shown in SkyPilot's dashboard)."""
    declared = set(declared_secrets)
    return sorted(k for k in keys if k not in declared and SECRET_LIKE_RE.search(k.upper()))


# --------------------------------------------------------------------------------------- the launch


@dataclass(frozen=True)
class LaunchConfig:
    """Everything one launch needs, resolved once in launch.py main() (`load_config`) and passed
    down to the backends."""

    backend: str
    run: str
    job: str  # path relative to the repository root; "" when the task runs no JOB
    job_args: tuple[str, ...]
    nodes: int
    gpus: int | None  # None: keep job.yaml's accelerators (sky); 0 on the local backend
    cpus: str | None
    use_spot: bool | None
    max_restarts: int | None
    envs: dict[str, str]
    secrets: dict[str, str] = field(repr=False)
    task: TaskFile = field(repr=False)
    missing_secrets: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    print_id: bool = False
    follow: bool = False
    quiet: bool = False
    verbose: bool = False
    # --backend sky only (scripts/local/_sky_backend.py)
    copies: int = 1
    git_ref: str | None = None
    skip_git_check: bool = False
    confirm: bool = False
    dump_config: str | None = None  # "yaml" | "json"
    repo: Path = REPO
    base_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def state_dir(self) -> Path:
        """The local backend's run state: `$SKYOPS_STATE_DIR`, else `<repo>/.skyops`."""
        return Path(self.base_env.get("SKYOPS_STATE_DIR") or self.repo / ".skyops")


@dataclass(frozen=True)
class JobsConfig:
    """What one `jobs.py` command needs, resolved once in jobs.py main()."""

    backend: str
    command: str
    ids: tuple[str, ...] = ()
    active: bool = False
    json: bool = False
    follow: bool = False
    wait: float | None = None
    force: bool = False
    verbose: bool = False
    runs_dir: Path = REPO / ".skyops" / "runs"
    #: watch: seconds between polls (None: WATCH_INTERVAL_S of the backend).
    interval: float | None = None
    #: watch, notify-test: the environment notify.py runs with (see _jobs_notify.notify_env); holds secrets.
    notify_env: Mapping[str, str] = field(default_factory=dict, repr=False)
