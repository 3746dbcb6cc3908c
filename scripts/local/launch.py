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
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import _config
import _env_file
import _job_path
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


def _add_count(p: argparse.ArgumentParser, flag: str, convert: Callable[[str], int], help_text: str) -> None:
    """A whole-number launcher setting; None when not given (the environment, .env or the task decide)."""
    p.add_argument(flag, type=_type(convert, flag[2:].replace("-", "_")), default=None, help=help_text)


def _add_resource_flags(p: argparse.ArgumentParser) -> None:
    """The launcher settings of the nodes (SETTINGS, but --backend)."""
    _add_count(p, "--nodes", _positive, "number of nodes [SKYOPS_NODES; default job.yaml num_nodes]")
    _add_count(
        p, "--gpus", _nonneg, "GPUs per node, 0 = CPU [SKYOPS_GPUS; default job.yaml (sky), 0 (local)]"
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
    _add_count(p, "--max-restarts", _nonneg, "job_recovery.max_restarts_on_errors [SKYOPS_MAX_RESTARTS]")


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    """Where the task's envs and secrets come from: --set, the .env file, the task file."""
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


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    """What the launcher prints: the task instead of a launch, job ids, node logs, progress."""
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
    _add_resource_flags(p)
    _add_input_flags(p)
    _add_output_flags(p)
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
    key: str, flag_value: Any, environ: Mapping[str, str], file_values: Mapping[str, tuple[str, str]]
) -> tuple[Any, str] | None:
    """The raw value of a launcher setting and where it came from (flag > environment > .env; a .env
    line is named `KEY (from FILE:LINE)`)."""
    if flag_value is not None:
        return flag_value, SETTINGS[key][0]
    if key in environ:
        return environ[key], key
    return file_values.get(key)


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
    file_settings: Mapping[str, tuple[str, str]],
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


class _Inputs(NamedTuple):
    """A launch's .env lines and --set flags, its launcher settings (SETTINGS) split off."""

    file_settings: dict[str, tuple[str, str]]  # .env's SKYOPS_* lines: value, `KEY (from FILE:LINE)`
    env_entries: list[_env_file.EnvLine]  # .env's other lines: task envs and secrets
    file_label: str  # how messages name the .env file
    flags: dict[str, str]  # --set KEY=VALUE


def _inputs(args: argparse.Namespace, repo: Path) -> _Inputs:
    """Read the .env file and the --set flags. Raises ConfigError, also for a --set of a launcher setting."""
    env_path = _env_file.env_file_path(args.env_file, repo)
    entries = _env_file.read_env_file(env_path) if env_path else []
    file_label = str(env_path) if env_path else ".env"
    flags = _env_file.parse_set_flags(args.sets)
    # Launcher settings (SKYOPS_*) are consumed here; the rest are task envs and secrets.
    file_settings = {
        e.key: (e.value, f"{e.key} (from {file_label}:{e.line})")
        for e in entries
        if e.key in SETTINGS and e.value is not None
    }
    env_entries = [e for e in entries if e.key not in SETTINGS]
    bad_set = sorted(set(flags) & set(SETTINGS))
    if bad_set:
        raise ConfigError(f"--set {bad_set[0]}: a launcher setting; use {SETTINGS[bad_set[0]][0]}")
    return _Inputs(file_settings, env_entries, file_label, flags)


def _check_sky_only(args: argparse.Namespace, backend: str) -> None:
    """Raise ConfigError naming the first flag of --backend sky only given on another backend."""
    sky_only = {"--copies": args.copies != 1, "--git-ref": args.git_ref is not None, "--skip-git-check": args.skip_git_check,
                "--confirm": args.confirm, "--dump-config": args.dump_config is not None}  # fmt: skip
    if backend != "sky" and any(sky_only.values()):
        raise ConfigError(f"{next(k for k, v in sky_only.items() if v)}: only with --backend sky")


def _resolve(
    task: _config.TaskFile, inputs: _Inputs, launcher_flags: Mapping[str, str], environ: Mapping[str, str]
) -> _env_file.Resolved:
    """The task's envs and secrets, every layer merged (flags > environment > .env > the task) and
    checked (_env_file.check_values); a warning for each key the task does not know. Raises ConfigError."""
    task_name = task.path.name
    defaults: dict[str, str | None] = {**task.envs, **task.secrets}
    resolved = _env_file.resolve_values(
        defaults=defaults,
        file_entries=inputs.env_entries,
        environ=environ,
        flags={**inputs.flags, **launcher_flags},
        file_label=inputs.file_label,
    )
    # Where each value came from, for messages: the task's own values are named by the task file.
    shown = {k: task_name if s == "job.yaml" else s for k, s in resolved.sources.items()}
    _env_file.check_values(resolved, task, shown)
    known = [*task.envs, *task.secrets, *SETTINGS]
    for key in resolved.values:
        if key not in known and (close := difflib.get_close_matches(key, known, n=1, cutoff=0.85)):
            log.warning("%s: %s is not in %s; passed to the job as a new env (did you mean %s?)",
                        shown[key], key, task.path.name, close[0])  # fmt: skip
    return resolved


def load_config(args: argparse.Namespace, environ: Mapping[str, str], now: dt.datetime) -> LaunchConfig:
    """Resolve flags, environment, .env and the task file into one LaunchConfig. Raises ConfigError."""
    repo = REPO
    task = _config.load_task_file(args.task)
    inputs = _inputs(args, repo)
    settings = _settings(args, environ, inputs.file_settings, task)
    _check_sky_only(args, settings.backend)
    job = _job_path.job_path(args.job, task, repo)
    # Checked here for both backends, so the message names the task file (the sky backend patches
    # the same resources again when it builds the task).
    _task.patch_resources(
        task.config.get("resources"), gpus=settings.gpus, cpus=settings.cpus, use_spot=settings.use_spot,
        max_restarts=settings.max_restarts, task=task.path.name,
    )  # fmt: skip
    stamp = now.strftime("%Y%m%d-%H%M%S")
    run = args.run if args.run is not None else _config.default_run_name(job or str(task.path), stamp)
    _config.validate_run_name(run)
    launcher_flags = _launcher_envs(
        job, args.job_args, run, inputs.flags, inputs.env_entries, inputs.file_label
    )
    resolved = _resolve(task, inputs, launcher_flags, environ)
    return LaunchConfig(
        **settings._asdict(),
        run=run,
        job=job,
        job_args=tuple(args.job_args),
        envs={k: v for k, v in resolved.values.items() if k not in task.secrets},
        secrets={k: v for k, v in resolved.values.items() if k in task.secrets},
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
        if "UV_FIND_LINKS" not in cfg.base_env and (links := _local_run.pip_find_links(cfg.base_env)):
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
