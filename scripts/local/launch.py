#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "python-dotenv==1.2.4",
#     "pyyaml==6.0.4",
#     "psutil==7.2.2",
#     "skypilot==0.14.1",
# ]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Launch a training job: job.yaml on emulated local nodes, or as a SkyPilot managed job.

usage: launch.py [options] [JOB [JOB_ARGS...]]

    ./scripts/local/launch.py --nodes 2 examples/train.py --steps 100
    ./scripts/local/launch.py --backend sky --nodes 2 --gpus 8 --print-id examples/train.py
    ./scripts/local/launch.py --task tests/skypilot_examples/env_check.yaml --nodes 2

JOB is a script path inside the repository; JOB_ARGS reach it verbatim. JOB is required when the task
uses it (job.yaml does: its envs declare JOB, its run runs "$JOB"); a task that does not (--task,
e.g. one of SkyPilot's examples) launches without one. Configuration precedence:
flags (and --set KEY=VALUE) > process environment > .env (--env-file) > the task's envs.

stdout carries data only: nothing by default, job ids with --print-id (one per line), the task YAML
with --dry-run. Everything for people goes to stderr.

Exit codes: 0 the job succeeded; 1 the job failed; 2 bad input (one line naming the flag, key or
file:line; nothing launched); 3 SkyPilot error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import logging
import os
import re
import shlex
import sys
import tomllib
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import _config
import _env_file
import _task
from _config import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_OK,
    REPO,
    ConfigError,
    LaunchConfig,
    OneLineParser,
)

BACKENDS = ("local", "sky")

log = logging.getLogger("skyops.launch")


#: Launcher settings: consumed here, never passed to the job. key -> (flag, kind).
SETTINGS: dict[str, tuple[str, str]] = {
    "SKYOPS_BACKEND": ("--backend", "backend"),
    "SKYOPS_NODES": ("--nodes", "nodes"),
    "SKYOPS_GPUS": ("--gpus", "gpus"),
    "SKYOPS_CPUS": ("--cpus", "cpus"),
    "SKYOPS_USE_SPOT": ("--spot/--no-spot", "use_spot"),
    "SKYOPS_MAX_RESTARTS": ("--max-restarts", "max_restarts"),
}


def _positive(text: str) -> int:
    return _config.parse_int(text, "value", 1)


def _nonneg(text: str) -> int:
    return _config.parse_int(text, "value", 0)


def _type(fn: Any, name: str) -> Any:
    def convert(text: str) -> Any:
        try:
            return fn(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    convert.__name__ = name
    return convert


def _add_sky_flags(p: argparse.ArgumentParser) -> None:
    """The flags of --backend sky only (load_config refuses them on the local backend)."""
    sky = p.add_argument_group("--backend sky only")
    sky.add_argument(
        "--copies",
        type=_type(_positive, "copies"),
        default=1,
        help="launch N managed jobs named RUN-1 .. RUN-N",
    )
    sky.add_argument(
        "--git-ref",
        default=None,
        help="commit, tag or branch the nodes run, cloned from the git remote (None: HEAD)",
    )
    sky.add_argument(
        "--skip-git-check", action="store_true", help="skip the git gate: upload the working tree as it is"
    )
    sky.add_argument(
        "--confirm",
        action="store_true",
        help="show a summary on stderr and ask (answer on stdin); declining exits 1, no answer exits 2",
    )
    sky.add_argument(
        "--dump-config",
        choices=("yaml", "json"),
        default=None,
        help="print the final task (secrets redacted) and exit",
    )


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="launch.py",
        description="Launch JOB (a script in this repository) as a SkyPilot task, locally or on the cloud.",
        formatter_class=_config.DefaultsHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument(
        "--backend", choices=BACKENDS, default=None, help="where to run [env SKYOPS_BACKEND; default local]"
    )
    p.add_argument("--run", default=None, help="run name (RUN_ID); default: JOB's name and the time")
    p.add_argument(
        "--nodes",
        type=_type(_positive, "nodes"),
        default=None,
        help="number of nodes [SKYOPS_NODES; default job.yaml num_nodes]",
    )
    p.add_argument(
        "--gpus",
        type=_type(_nonneg, "gpus"),
        default=None,
        help="GPUs per node, 0 = CPU [SKYOPS_GPUS; default job.yaml (sky), 0 (local)]",
    )
    p.add_argument("--cpus", default=None, help="vCPUs per node, e.g. 8 or 8+ [SKYOPS_CPUS]")
    spot = p.add_mutually_exclusive_group()
    spot.add_argument(
        "--spot",
        dest="use_spot",
        action="store_true",
        default=None,
        help="spot instances only [SKYOPS_USE_SPOT]",
    )
    spot.add_argument(
        "--no-spot",
        dest="use_spot",
        action="store_false",
        default=argparse.SUPPRESS,
        help="on-demand instances only",
    )
    p.add_argument(
        "--max-restarts",
        type=_type(_nonneg, "max_restarts"),
        default=None,
        help="job_recovery.max_restarts_on_errors [SKYOPS_MAX_RESTARTS]",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a task env or secret (repeatable)",
    )
    p.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="configuration file (python-dotenv format) [default: <repo>/.env if present]",
    )
    p.add_argument("--task", type=Path, default=REPO / "job.yaml", help="the SkyPilot task file")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved task as SkyPilot YAML (secrets redacted); launch nothing",
    )
    p.add_argument("--print-id", action="store_true", help="print the job id on stdout, one per line")
    p.add_argument(
        "--follow", action="store_true", help="stream node logs to stderr, each line prefixed with its node"
    )
    p.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="no progress lines on stderr (the last line still says how it ended)",
    )
    _add_sky_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
    p.add_argument(
        "job",
        metavar="JOB",
        nargs="?",
        default=None,
        help="script path in the repository, e.g. examples/train.py (required when the task uses $JOB)",
    )
    p.add_argument(
        "job_args", metavar="JOB_ARGS", nargs=argparse.REMAINDER, help="arguments passed to JOB verbatim"
    )
    return p


def _setting(
    key: str, flag_value: Any, environ: Mapping[str, str], file_values: Mapping[str, str]
) -> tuple[Any, str] | None:
    """The raw value of a launcher setting and where it came from (flag > environment > .env)."""
    if flag_value is not None:
        return flag_value, SETTINGS[key][0]
    if key in environ:
        return environ[key], key
    if key in file_values:
        return file_values[key], key
    return None


#: `-m NAME` as JOB: a dotted module name, as `python -m` takes it.
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def module_paths(name: str) -> list[Path]:
    """Where the nodes find `-m NAME` in the repository (the nodes' rule: scripts/remote/_job_command.py
    module_paths; tests/test_launch.py checks that both agree): `pkg/mod.py`, `pkg/mod/__main__.py`,
    then both under `src/`."""
    parts = name.split(".")
    here = [Path(*parts[:-1], parts[-1] + ".py"), Path(*parts, "__main__.py")]
    return [*here, *(Path("src") / p for p in here)]


def check_project(script: Path, repo: Path) -> None:
    """A script inside a project runs in the project's environment on the nodes: every pyproject.toml
    from the script's folder up to the repository root must be valid TOML (the nearest one with a
    `[project]` table is the project). Raises ConfigError naming `file:line`."""
    for folder in (script.parent, *script.parent.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                found = re.search(r"at line (\d+)", str(exc))
                line = getattr(exc, "lineno", None) or (int(found[1]) if found else None)
                where = pyproject.relative_to(repo).as_posix() + (f":{line}" if line else "")
                raise ConfigError(
                    f"{where}: not valid TOML ({str(exc).split(' (at')[0]}); JOB runs in this project"
                ) from None
            if isinstance(data.get("project"), dict):
                return
        if folder == repo:
            return


def relative_job_path(job: str, repo: Path) -> str:
    """JOB as the nodes get it: a path relative to the repository root, or `-m NAME` for a module in the
    repository (README "Bring your own script"). Raises ConfigError if it is neither a `.py` or
    executable file inside the repository nor such a module, or if its project's pyproject.toml is
    not valid."""
    if job.startswith("-m"):
        name = job[2:].strip()
        if not _MODULE_RE.fullmatch(name):
            raise ConfigError(
                f'JOB {job!r}: expected -m and a module name like pkg.train, as one word: "-m pkg.train"'
            )
        if not any((repo / p).is_file() for p in module_paths(name)):
            tried = ", ".join(p.as_posix() for p in module_paths(name))
            raise ConfigError(
                f"JOB {job!r}: none of {tried} is in the repository {repo} (nodes receive only the repository)"
            )
        found = next(repo / p for p in module_paths(name) if (repo / p).is_file())
        check_project(found, repo)
        return f"-m {name}"
    path = Path(job)
    full = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not full.is_file() and not path.is_absolute():
        full = (repo / path).resolve()
    try:
        rel = full.relative_to(repo)
    except ValueError:
        raise ConfigError(
            f"JOB {job!r}: must be inside the repository {repo} (nodes receive only the repository)"
        ) from None
    if not full.is_file():
        raise ConfigError(f"JOB {job!r}: no such file")
    if full.suffix != ".py" and not os.access(full, os.X_OK):
        raise ConfigError(
            f"JOB {job!r}: must be a Python script (.py) or an executable file, or -m and a module name"
        )
    if full.suffix == ".py":
        check_project(full, repo)
    return rel.as_posix()


_JOB_REF_RE = re.compile(r"\$\{?JOB\b")


def task_uses_job(task: _config.TaskFile) -> bool:
    """Whether the task needs a JOB: its envs declare JOB, or its setup or run mentions $JOB / ${JOB}."""
    commands = f"{task.config.get('setup') or ''}\n{task.config.get('run') or ''}"
    return "JOB" in task.envs or bool(_JOB_REF_RE.search(commands))


class _Settings(NamedTuple):
    """The launcher settings of one launch (SETTINGS), resolved: flag > environment > .env > the task."""

    backend: str
    nodes: int
    gpus: int | None
    cpus: str | None
    use_spot: bool | None
    max_restarts: int | None


def _settings(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    file_settings: Mapping[str, str],
    task: _config.TaskFile,
) -> _Settings:
    """The launcher settings from the flags, the environment, .env's SKYOPS_* lines (`file_settings`) and
    the task's num_nodes. Raises ConfigError naming where a bad value came from."""

    def setting(key: str, flag_value: Any) -> tuple[Any, str] | None:
        return _setting(key, flag_value, environ, file_settings)

    backend = "local"
    if found := setting("SKYOPS_BACKEND", args.backend):
        backend, where = found
        if backend not in BACKENDS:
            raise ConfigError(f"{where}: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    nodes = int(task.config.get("num_nodes") or 1)
    if found := setting("SKYOPS_NODES", args.nodes):
        nodes = found[0] if isinstance(found[0], int) else _config.parse_int(found[0], found[1], 1)
    gpus: int | None = None
    if found := setting("SKYOPS_GPUS", args.gpus):
        gpus = found[0] if isinstance(found[0], int) else _config.parse_int(found[0], found[1], 0)
    cpus = None
    if found := setting("SKYOPS_CPUS", args.cpus):
        cpus = str(found[0]).strip()
        if not re.fullmatch(r"[1-9][0-9]*\+?", cpus):
            raise ConfigError(f"{found[1]}: expected a vCPU count like 8 or 8+, got {cpus!r}")
    use_spot = None
    if found := setting("SKYOPS_USE_SPOT", args.use_spot):
        use_spot = found[0] if isinstance(found[0], bool) else _config.parse_bool(found[0], found[1])
    max_restarts = None
    if found := setting("SKYOPS_MAX_RESTARTS", args.max_restarts):
        max_restarts = found[0] if isinstance(found[0], int) else _config.parse_int(found[0], found[1], 0)
    return _Settings(backend, nodes, gpus, cpus, use_spot, max_restarts)


def _check_values(resolved: _env_file.Resolved, task: _config.TaskFile, shown: Mapping[str, str]) -> None:
    """Refuse resolved values the nodes must never get or could not take: a credential-like key not
    declared a secret, a secret expanded into a plaintext env, a typed env the node side would reject,
    a key the nodes set themselves, and envs too large for a process environment. `shown` names where
    each value came from. Raises ConfigError."""
    task_name = task.path.name
    leaked = _config.secret_like_keys(resolved.values, task.secrets)
    if leaked:
        where = shown[leaked[0]]
        raise ConfigError(
            f"{where}: {', '.join(leaked)} looks like a credential: declare it under secrets: in {task_name}"
            " so it is never sent as a plaintext env"
        )
    for key, names in resolved.expanded_from.items():
        exposed = [n for n in names if n in task.secrets and key not in task.secrets]
        if exposed:
            raise ConfigError(
                f"{shown[key]}: {key} expands the secret {exposed[0]} into a plaintext env;"
                f" declare {key} under secrets: in {task_name} or drop the reference"
            )
    _config.check_typed_envs(resolved.values, shown)
    owned = sorted(k for k in resolved.values if k in _config.NODE_OWNED_ENVS)
    if owned:
        raise ConfigError(
            f"{shown[owned[0]]}: {', '.join(owned)} is set on each node (by SkyPilot, configure_environment.py"
            " or run.py) and would be replaced there; remove it"
        )
    total = sum(len(k) + 2 + len(v.encode()) for k, v in resolved.values.items())
    if total > _config.MAX_ENV_TOTAL:
        raise ConfigError(
            f"envs and secrets total {total} bytes (limit {_config.MAX_ENV_TOTAL}): pass large data as a file path"
        )
    for key, value in resolved.values.items():
        if len(key) + 1 + len(value.encode()) >= _config.MAX_ENV_ENTRY:
            raise ConfigError(
                f"{key} (from {shown[key]}): {len(value.encode())} bytes is too long for an"
                f" environment variable (limit {_config.MAX_ENV_ENTRY - 1} bytes with its name); pass a file path instead"
            )


def _launcher_envs(
    job: str,
    job_args: Sequence[str],
    run: str,
    flags: Mapping[str, str],
    env_entries: Sequence[_env_file.EnvLine],
    file_label: str,
) -> dict[str, str]:
    """The envs the launcher sets from JOB and --run (JOB, JOB_ARGS, RUN_ID). Raises ConfigError when a
    --set flag or a .env line sets one of them too."""
    launcher_flags = {"JOB": job, "JOB_ARGS": shlex.join(job_args)} if job else {}
    launcher_flags["RUN_ID"] = run
    for key in launcher_flags:
        origin = "--run" if key == "RUN_ID" else "JOB"
        if key in flags:
            raise ConfigError(f"--set {key}: set by the launcher from {origin}")
        in_file = next((e for e in env_entries if e.key == key), None)
        if in_file is not None:
            raise ConfigError(
                f"{file_label}:{in_file.line}: {key} is set by the launcher from {origin}; remove it"
            )
    return launcher_flags


def load_config(args: argparse.Namespace, environ: Mapping[str, str], now: dt.datetime) -> LaunchConfig:
    """Resolve flags, environment, .env and the task file into one LaunchConfig. Raises ConfigError."""
    repo = REPO
    task = _config.load_task_file(args.task)
    task_name = task.path.name

    env_path = _env_file.env_file_path(args.env_file, repo)
    entries = _env_file.read_env_file(env_path) if env_path else []
    file_label = str(env_path) if env_path else ".env"
    flags = _env_file.parse_set_flags(args.sets)

    # Launcher settings (SKYOPS_*) are consumed here; the rest are task envs and secrets.
    file_settings = {e.key: e.value for e in entries if e.key in SETTINGS and e.value is not None}
    env_entries = [e for e in entries if e.key not in SETTINGS]
    bad_set = sorted(set(flags) & set(SETTINGS))
    if bad_set:
        raise ConfigError(f"--set {bad_set[0]}: a launcher setting; use {SETTINGS[bad_set[0]][0]}")

    settings = _settings(args, environ, file_settings, task)
    sky_only = {"--copies": args.copies != 1, "--git-ref": args.git_ref is not None, "--skip-git-check": args.skip_git_check,
                "--confirm": args.confirm, "--dump-config": args.dump_config is not None}  # fmt: skip
    if settings.backend != "sky" and any(sky_only.values()):
        raise ConfigError(f"{next(k for k, v in sky_only.items() if v)}: only with --backend sky")
    if args.job is None and task_uses_job(task):
        raise ConfigError(
            f"JOB: missing; {task_name} runs $JOB (usage: launch.py [options] JOB [JOB_ARGS...])"
        )
    job = "" if args.job is None else relative_job_path(args.job, repo)
    # Checked here for both backends, so the message names the task file (the sky backend patches
    # the same resources again when it builds the task).
    _task.patch_resources(
        task.config.get("resources"), gpus=settings.gpus, cpus=settings.cpus, use_spot=settings.use_spot,
        max_restarts=settings.max_restarts, task=task_name,
    )  # fmt: skip
    stamp = now.strftime("%Y%m%d-%H%M%S")
    run = args.run if args.run is not None else _config.default_run_name(job or str(task.path), stamp)
    _config.validate_run_name(run)
    launcher_flags = _launcher_envs(job, args.job_args, run, flags, env_entries, file_label)
    defaults: dict[str, str | None] = {**task.envs, **task.secrets}
    resolved = _env_file.resolve_values(
        defaults=defaults,
        file_entries=env_entries,
        environ=environ,
        flags={**flags, **launcher_flags},
        file_label=file_label,
    )
    # Where each value came from, for messages: the task's own values are named by the task file.
    shown = {k: task_name if s == "job.yaml" else s for k, s in resolved.sources.items()}
    _check_values(resolved, task, shown)
    known = [*task.envs, *task.secrets, *SETTINGS]
    for key in resolved.values:
        if key not in known and (close := difflib.get_close_matches(key, known, n=1, cutoff=0.85)):
            log.warning("%s: %s is not in %s; passed to the job as a new env (did you mean %s?)",
                        shown[key], key, task.path.name, close[0])  # fmt: skip
    secrets = {k: v for k, v in resolved.values.items() if k in task.secrets}
    envs = {k: v for k, v in resolved.values.items() if k not in task.secrets}
    return LaunchConfig(
        **settings._asdict(),
        run=run,
        job=job,
        job_args=tuple(args.job_args),
        envs=envs,
        secrets=secrets,
        missing_secrets=resolved.missing,
        sources=resolved.sources,
        task=task,
        dry_run=args.dry_run,
        print_id=args.print_id,
        follow=args.follow,
        quiet=args.quiet,
        verbose=args.verbose,
        copies=args.copies,
        git_ref=args.git_ref,
        skip_git_check=args.skip_git_check,
        confirm=args.confirm,
        dump_config=args.dump_config,
        repo=repo,
        base_env=dict(environ),
    )


def task_config(cfg: LaunchConfig, *, redact: bool = True) -> dict[str, Any]:
    """The resolved task as a SkyPilot YAML config (a plain dict): job.yaml with the resolved envs,
    secrets (values shown as `<redacted>` unless `redact` is False; null when nobody supplied one),
    node count and the resource patches of the launch flags."""
    config = dict(cfg.task.config)
    config["name"] = cfg.run
    config["num_nodes"] = cfg.nodes
    config["envs"] = dict(cfg.envs)
    secrets: dict[str, Any] = {k: (_task.REDACTED if redact else v) for k, v in cfg.secrets.items()}
    secrets.update(dict.fromkeys(cfg.missing_secrets))
    config["secrets"] = secrets
    config["resources"] = _task.patch_resources(
        config.get("resources"),
        gpus=cfg.gpus,
        cpus=cfg.cpus,
        use_spot=cfg.use_spot,
        max_restarts=cfg.max_restarts,
        task=cfg.task.path.name,
    )
    return config


def pip_find_links(environ: Mapping[str, str]) -> str | None:
    """The wheel folder pip is configured with (PIP_FIND_LINKS, else `pip config`), for uv on the
    local backend's nodes: where these machines keep torch's CPU build. None when pip has none."""
    if environ.get("PIP_FIND_LINKS"):
        return environ["PIP_FIND_LINKS"]
    import subprocess

    try:
        out = subprocess.run(
            ["python3", "-m", "pip", "config", "get", "global.find-links"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or None


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2)
        return int(exc.code or 0)
    setup_logging(args.verbose)
    environ = dict(os.environ)
    try:
        cfg = load_config(args, environ, dt.datetime.now())
        if cfg.backend == "sky":
            import _sky_backend  # SkyPilot (1-2 s to import) is loaded only on this path

            return _sky_backend.launch(cfg)
        import _local_backend
        import _local_run

        cfg = _local_run.prepare(cfg)  # local defaults, so --dry-run shows what nodes get
        rendered = _task.dump_yaml(task_config(cfg))
        if cfg.dry_run:
            sys.stdout.write(rendered)
            return EXIT_OK
        # Let uv on the nodes use the wheel folder pip is configured with (torch's CPU build here).
        if "UV_FIND_LINKS" not in cfg.base_env and (links := pip_find_links(cfg.base_env)):
            cfg = replace(cfg, base_env={**cfg.base_env, "UV_FIND_LINKS": links})
        return _local_backend.launch(cfg, rendered)
    except ConfigError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("launch.py: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
