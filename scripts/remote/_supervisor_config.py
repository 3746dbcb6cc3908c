"""The supervisor's configuration: flags > process environment (job.yaml's envs) > the contract's defaults.

Every key is parsed by the contract's one parser (`_contract.parse`): the launcher checked the same
values with it before anything was launched. Read once, in run.py's main(), into a frozen Config.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import NoReturn

import _contract
from _distributed import Distributed, Identity, InputError, from_env, identity
from _job_command import python_kind


class BadInput(Exception):
    """A user error: the message names the flag or key; main() prints it on one line and exits 2."""


@dataclass(frozen=True)
class Limits:
    """The monitors' and guards' settings. Durations in seconds; 0 turns a monitor off."""

    heartbeat_timeout_s: float
    startup_grace_s: float
    max_runtime_s: float
    grace_s: float
    crash_loop_attempts: int
    crash_loop_window_s: float
    crash_loop_min_runtime_s: float
    max_recover_restarts: int


@dataclass(frozen=True)
class Config:
    """Everything the supervisor needs, read once in main()."""

    command: tuple[str, ...]
    limits: Limits
    dist: Distributed
    identity: Identity
    data_dir: Path
    run_id: str
    preflight: bool
    preflight_script: Path
    tmp_dir: Path
    uv: str | None
    env: Mapping[str, str]
    verbose: bool = False


#: The flags that override a contract key, each with the key it overrides.
OPTIONS: Mapping[str, str] = {
    "--heartbeat-timeout": "HEARTBEAT_TIMEOUT",
    "--startup-grace": "STARTUP_GRACE",
    "--max-runtime-hours": "MAX_RUNTIME_HOURS",
    "--grace": "GRACE",
    "--crash-loop-attempts": "CRASH_LOOP_ATTEMPTS",
    "--crash-loop-window-minutes": "CRASH_LOOP_WINDOW_MINUTES",
    "--crash-loop-min-minutes": "CRASH_LOOP_MIN_MINUTES",
    "--max-recover-restarts": "MAX_RECOVER_RESTARTS",
    "--data-dir": "DATA_DIR",
    "--run-id": "RUN_ID",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


def _parser(env: Mapping[str, str], preflight_script: Path, description: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run.py",
        description=description,
        epilog=(
            "CMD [ARGS...]: the job; a .py file runs under torchrun when WORLD_SIZE is above 1.\n"
            "Exit codes and reasons: see the module docstring and docs/contract.md."
        ),
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, key in OPTIONS.items():
        spec = _contract.KEY[key]
        now = f"{key}={env[key]}" if key in env else spec.default
        parser.add_argument(
            flag, metavar=key, help=f"{spec.doc} (default: ${key}, else {spec.default}; now {now})"
        )
    preflight = _contract.KEY["NCCL_PREFLIGHT"]
    parser.add_argument(
        "--preflight",
        action=argparse.BooleanOptionalAction,
        help=f"{preflight.doc} (default: $NCCL_PREFLIGHT, else {preflight.default};"
        f" now {env.get('NCCL_PREFLIGHT', preflight.default)})",
    )
    parser.add_argument(
        "--preflight-script",
        type=Path,
        default=preflight_script,
        help=f"the preflight (default: {preflight_script})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, commands and tracebacks")
    # argparse never sees what follows `--` (load_config splits it off), so the usage says it.
    parser.usage = parser.format_usage().removeprefix("usage: ").rstrip() + " -- CMD [ARGS...]"
    return parser


def _values(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, object]:
    """Every OPTIONS key and NCCL_PREFLIGHT, parsed: the flag's text if given, else the environment's,
    else the contract's default. Raises BadInput naming the flag or the key."""
    values: dict[str, object] = {}
    for flag, key in OPTIONS.items():
        given = getattr(args, flag[2:].replace("-", "_"))
        try:
            values[key] = _contract.parse(key, given) if given is not None else _contract.value(env, key)
        except _contract.BadValue as exc:
            expected = _contract.KEY[key].expected()
            raise BadInput(
                f"{flag}={given!r}: expected {expected}" if given is not None else str(exc)
            ) from None
    try:
        values["NCCL_PREFLIGHT"] = (
            args.preflight if args.preflight is not None else _contract.value(env, "NCCL_PREFLIGHT")
        )
    except _contract.BadValue as exc:
        raise BadInput(str(exc)) from None
    return values


def load_config(
    argv: Sequence[str], env: Mapping[str, str], *, tmp_dir: Path, here: Path, description: str = ""
) -> Config:
    """Build the configuration from the command line and the environment (flags > env > defaults).

    `here` is the folder of run.py (the preflight script's default place). Raises BadInput naming
    the flag or key on any bad value, a missing CMD, or a `.py` CMD that does not exist.
    Raises SystemExit(0) for --help.
    """
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    options, command = argv[:split], tuple(argv[split + 1 :])
    args = _parser(env, here / "nccl_test.py", description).parse_args(options)
    if not command:
        raise BadInput("missing CMD: usage: run.py [options] -- CMD [ARGS...]")
    v = _values(args, env)

    def number(key: str) -> float:
        value = v[key]
        assert isinstance(value, int | float)
        return float(value)

    limits = Limits(
        heartbeat_timeout_s=number("HEARTBEAT_TIMEOUT"),
        startup_grace_s=number("STARTUP_GRACE"),
        max_runtime_s=number("MAX_RUNTIME_HOURS") * 3600.0,
        grace_s=number("GRACE"),
        crash_loop_attempts=int(number("CRASH_LOOP_ATTEMPTS")),
        crash_loop_window_s=number("CRASH_LOOP_WINDOW_MINUTES") * 60.0,
        crash_loop_min_runtime_s=number("CRASH_LOOP_MIN_MINUTES") * 60.0,
        max_recover_restarts=int(number("MAX_RECOVER_RESTARTS")),
    )
    try:
        dist = from_env(env)
        ident = identity(env, dist.nnodes)
    except InputError as exc:
        raise BadInput(str(exc)) from None
    uv = shutil.which("uv", path=env.get("PATH"))
    job = Path(command[0])
    if job.suffix == ".py":
        if not job.is_file():
            raise BadInput(f"CMD {command[0]}: no such file")
        if python_kind(job) == "uv" and uv is None:
            raise BadInput(f"CMD {command[0]}: has a PEP 723 block but uv is not on PATH")
    return Config(
        command=command,
        limits=limits,
        dist=dist,
        identity=ident,
        data_dir=Path(str(v["DATA_DIR"])),
        run_id=str(v["RUN_ID"]),
        preflight=bool(v["NCCL_PREFLIGHT"]),
        preflight_script=args.preflight_script,
        tmp_dir=tmp_dir,
        uv=uv,
        env=MappingProxyType(dict(env)),
        verbose=args.verbose,
    )
