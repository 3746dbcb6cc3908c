"""The NCCL preflight's configuration: flags > environment > defaults, read once into a frozen Config.

Every NCCL_PREFLIGHT_* key is parsed by the contract's one parser (`_contract.parse`, the same the
launcher checks it with before anything is launched), and a flag that overrides a key is parsed by it
too; every default is the contract's. The node settings (NPROC_PER_NODE, NNODES, NODE_RANK,
MASTER_ADDR, MASTER_PORT: the env file configure_environment.py writes) are read by
`_distributed.from_env`, with the flags that override them laid over the environment first.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import _contract
from _contract import PREFLIGHT_PLOT, FloorRule
from _distributed import Distributed, InputError, from_env
from _nccl_bandwidth import parse_sweep

#: Local ranks when NPROC_PER_NODE is not set (a laptop): two, so every collective crosses processes.
LAPTOP_NPROC = 2
#: The node settings when the env file sets none (from_env's defaults: one node, rank 0, loopback).
_LAPTOP = Distributed()

#: The flags that override a contract key (docs/contract.md), each with its key.
KEYED_FLAGS: Mapping[str, str] = {
    "--size": "NCCL_PREFLIGHT_SIZE",
    "--iters": "NCCL_PREFLIGHT_ITERS",
    "--warmup": "NCCL_PREFLIGHT_WARMUP",
    "--floors": "NCCL_PREFLIGHT_FLOORS",
    "--min-shm-gib": "NCCL_PREFLIGHT_MIN_SHM_GIB",
    "--slow-fraction": "NCCL_PREFLIGHT_SLOW_FRACTION",
    "--pair-partners": "NCCL_PREFLIGHT_PAIR_PARTNERS",
    "--timeout": "NCCL_PREFLIGHT_TIMEOUT",
    "--init-timeout": "NCCL_PREFLIGHT_INIT_TIMEOUT",
    "--stage-timeout": "NCCL_PREFLIGHT_STAGE_TIMEOUT",
}
#: The flags that override a node setting of the env file, each with its key (read by from_env).
NODE_FLAGS: Mapping[str, str] = {
    "--nproc": "NPROC_PER_NODE",
    "--nnodes": "NNODES",
    "--node-rank": "NODE_RANK",
    "--master-addr": "MASTER_ADDR",
}


class BadInput(Exception):
    """A value a user can fix: a flag or an environment key. Its message names it."""


@dataclass(frozen=True)
class Faults:
    """Test-only fault injection (--inject-fault): ranks that misbehave on purpose."""

    skip_rank: int | None = None  # never contacts the store
    hang_rank: int | None = None  # stops before the correctness all_reduce
    corrupt_rank: int | None = None  # adds 1 to one element of its contributions


@dataclass(frozen=True)
class Config:
    """Everything the run needs, read once in main(). Times in seconds, sizes in bytes."""

    nproc: int
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int  # 0: a free one, chosen by the launcher (single node only)
    ranks_per_node: int | None
    backend: str  # auto | nccl | gloo
    size: int | None  # None: DEFAULT_SIZE of the backend (_nccl_stages.py)
    iters: int
    warmup: int
    timeout: float
    init_timeout: float
    stage_timeout: float
    floors: tuple[FloorRule, ...]
    accelerator: str | None
    min_shm_bytes: int
    slow_fraction: float
    pair_partners: int
    sweep: tuple[int, int | None] | None  # (min, max) bytes; max None: the size
    plot_out: Path | None
    json: bool
    json_out: Path | None
    verbose: bool
    faults: Faults
    expected_gpus: int | None  # SKYPILOT_NUM_GPUS_PER_NODE; None: unknown or 0
    capture_nccl_log: bool  # NCCL_DEBUG unset: log INIT,NET to a file to learn the transport


@dataclass(frozen=True)
class RankIdentity:
    """Who this process is in the preflight: its rank, its node and where the rendezvous store is."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node: int
    master_addr: str
    master_port: int
    agent_store: bool  # torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True)

    @property
    def nnodes(self) -> int:
        return self.world_size // self.local_world_size


def parse_faults(specs: Sequence[str]) -> Faults:
    """Parse --inject-fault values "skip-rank=N", "hang-rank=N", "corrupt-rank=N"."""
    values: dict[str, int] = {}
    for spec in specs:
        name, _, number = spec.partition("=")
        field = name.replace("-", "_")
        if field not in {f.name for f in dataclasses.fields(Faults)} or not number.isdigit():
            raise ValueError(f"invalid fault {spec!r} (expected skip-rank=N, hang-rank=N or corrupt-rank=N)")
        values[field] = int(number)
    return Faults(**values)


# ---------------------------------------------------------------------------------------------------
# Flags


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (house style)
        raise BadInput(message)


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _keyed(key: str) -> Callable[[str], object]:
    """The argparse type of a flag that overrides contract key `key`: `_contract.parse`, its BadValue
    turned into argparse's one-line error, which names the flag."""

    def parse(text: str) -> object:
        try:
            return _contract.parse(key, text)
        except _contract.BadValue:
            raise argparse.ArgumentTypeError(
                f"expected {_contract.KEY[key].expected()}, got {text!r}"
            ) from None

    return parse


def _node_key(key: str) -> Callable[[str], str]:
    """The argparse type of a flag that overrides node key `key`: the text, once `from_env` accepts it."""

    def parse(text: str) -> str:
        try:
            from_env({key: text})
        except InputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    return parse


def _port(text: str) -> int:
    """--master-port: 0 (a free port, single node only) or a TCP port, checked as from_env checks one."""
    if text.strip() == "0":
        return 0
    try:
        return from_env({"MASTER_PORT": text}).master_port
    except InputError:
        raise argparse.ArgumentTypeError(f"expected 0 or a port in 1..65535, got {text!r}") from None


def _now(env: Mapping[str, str], key: str) -> str:
    return f"; now {key}={env[key]}" if key in env else ""


def _add_keyed(group: argparse._ArgumentGroup, flag: str, env: Mapping[str, str]) -> None:
    key = _contract.KEY[KEYED_FLAGS[flag]]
    help = f"{key.doc} (default: ${key.name}, else {key.default or 'empty'}{_now(env, key.name)})"
    group.add_argument(
        flag,
        type=_keyed(key.name),
        default=argparse.SUPPRESS,
        help=help.replace("%", "%%"),
    )


def _add_rank_flags(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    run = parser.add_argument_group("ranks (launcher mode; ignored under torchrun)")
    run.add_argument(
        "--nproc",
        type=_node_key("NPROC_PER_NODE"),
        default=argparse.SUPPRESS,
        help=f"local ranks to start (default: $NPROC_PER_NODE, else {LAPTOP_NPROC}{_now(env, 'NPROC_PER_NODE')})",
    )
    run.add_argument(
        "--nnodes",
        type=_node_key("NNODES"),
        default=argparse.SUPPRESS,
        help=f"nodes in the job (default: $NNODES, else {_LAPTOP.nnodes}{_now(env, 'NNODES')})",
    )
    run.add_argument(
        "--node-rank",
        default=argparse.SUPPRESS,
        help=f"this node's rank (default: $NODE_RANK, else {_LAPTOP.node_rank}{_now(env, 'NODE_RANK')})",
    )
    run.add_argument(
        "--master-addr",
        default=argparse.SUPPRESS,
        help=f"rendezvous host, node rank 0 (default: $MASTER_ADDR, else {_LAPTOP.master_addr}{_now(env, 'MASTER_ADDR')})",
    )
    run.add_argument(
        "--master-port",
        type=_port,
        default=argparse.SUPPRESS,
        # Not the training's own port: a node that starts training a moment early must never join the
        # preflight's store while it closes.
        help="rendezvous port (default: $MASTER_PORT + 1, so the training's port stays free; else 0:"
        f" a free one, single node only{_now(env, 'MASTER_PORT')})",
    )
    run.add_argument(
        "--ranks-per-node",
        type=int,
        default=None,
        help="emulate nodes of this many ranks on one machine, single node only (None: one node of --nproc)",
    )


def _add_measurement_flags(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    test = parser.add_argument_group("measurement")
    test.add_argument(
        "--backend",
        choices=["auto", "nccl", "gloo"],
        default="auto",
        help="auto: NCCL when CUDA is available, else gloo",
    )
    for flag in ("--size", "--iters", "--warmup"):
        _add_keyed(test, flag, env)
    test.add_argument(
        "--sweep",
        nargs="?",
        const="",
        default=None,
        metavar="MIN:MAX",
        help="also sweep all_reduce/all_gather sizes MIN..MAX (doubling; no value: 1K:--size) and plot busbw",
    )
    test.add_argument(
        "--plot-out",
        type=Path,
        default=None,
        help="sweep plot PNG (None: nccl-sweep.png beside --json-out, else in $DATA_DIR/$RUN_ID/preflight/,"
        " else in a new temporary folder; never the current directory)",
    )


def build_parser(env: Mapping[str, str], description: str = "") -> argparse.ArgumentParser:
    """The CLI; `env` only shows the current values in --help. A flag that overrides an environment
    key is absent from the parsed namespace unless given: make_config reads the key then. Parsing
    raises BadInput (one line naming the flag) instead of exiting."""
    parser = _Parser(
        prog="nccl_test.py",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    _add_rank_flags(parser, env)
    _add_measurement_flags(parser, env)
    limits = parser.add_argument_group("thresholds and deadlines")
    for flag in ("--floors", "--min-shm-gib", "--slow-fraction", "--pair-partners"):
        _add_keyed(limits, flag, env)
    limits.add_argument(
        "--accelerator",
        default=None,
        help="accelerator name matched by --floors (None: the CUDA device name)",
    )
    for flag in ("--timeout", "--init-timeout", "--stage-timeout"):
        _add_keyed(limits, flag, env)
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    out.add_argument(
        "--json-out", type=Path, default=None, help="write the JSON report here (rank 0; parents created)"
    )
    out.add_argument(
        "--verbose", action="store_true", help="log every rank at debug level; tracebacks on errors"
    )
    parser.add_argument("--inject-fault", action="append", default=[], help=argparse.SUPPRESS)  # tests only
    return parser


# ---------------------------------------------------------------------------------------------------
# Values


def keyed_values(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Every KEYED_FLAGS key's value: the flag's if given, else the environment's, else the contract's
    default, all parsed by `_contract.parse`. Raises BadInput naming the key."""
    given = vars(args)
    values: dict[str, Any] = {}
    for flag, key in KEYED_FLAGS.items():
        try:
            values[key] = given[_dest(flag)] if _dest(flag) in given else _contract.value(env, key)
        except _contract.BadValue as err:
            raise BadInput(str(err)) from None
    return values


def node_settings(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Distributed, int]:
    """This node's settings (the NODE_FLAGS given, laid over `env`, read by from_env) and the number of
    local ranks to start (NPROC_PER_NODE, else LAPTOP_NPROC). Raises BadInput naming key and flags."""
    given = {key: str(getattr(args, _dest(flag))) for flag, key in NODE_FLAGS.items() if _dest(flag) in args}
    merged = {**env, **given}
    try:
        dist = from_env(merged)
    except InputError as err:
        flags = " ".join(f"{flag} {given[key]}" for flag, key in NODE_FLAGS.items() if key in given)
        raise BadInput(f"{err} (given {flags})" if flags else str(err)) from None
    nproc = dist.nproc_per_node if merged.get("NPROC_PER_NODE", "").strip() else LAPTOP_NPROC
    return dist, nproc


def preflight_port(args: argparse.Namespace, env: Mapping[str, str], dist: Distributed) -> int:
    """--master-port, else the training's MASTER_PORT + 1, else 0 (a free one). Raises BadInput."""
    if "master_port" in args:
        port = args.master_port
    else:
        port = dist.master_port + 1 if env.get("MASTER_PORT", "").strip() else 0
    if port > 65535:
        raise BadInput(f"--master-port {port}: must be < 65536 (MASTER_PORT + 1 by default)")
    if dist.nnodes > 1 and port == 0:
        raise BadInput("--master-port: must be set (or MASTER_PORT) when --nnodes > 1")
    return port


def _count(env: Mapping[str, str], key: str, default: int) -> int:
    """A count SkyPilot or torchrun set (not a contract key); `default` when unset. BadInput names it."""
    text = env.get(key, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()):
        raise BadInput(f"{key}={text!r}: expected an integer >= 0")
    return int(text)


def make_config(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """The parsed flags and the environment, cross-checked into a Config. BadInput names flag or key."""
    v = keyed_values(args, env)
    try:
        faults = parse_faults(args.inject_fault)
    except ValueError as err:
        raise BadInput(f"--inject-fault: {err}") from None
    size = v["NCCL_PREFLIGHT_SIZE"]
    sweep = None
    if args.sweep is not None:
        try:
            sweep = parse_sweep(args.sweep) if args.sweep else (1024, size)
        except ValueError as err:
            raise BadInput(f"--sweep: {err}") from None
    dist, nproc = node_settings(args, env)
    rpn = args.ranks_per_node
    if rpn is not None and (rpn < 1 or dist.nnodes > 1 or nproc % rpn):
        raise BadInput(
            f"--ranks-per-node {rpn}: must be >= 1, needs --nnodes 1 and must divide --nproc {nproc}"
        )
    plot = args.plot_out
    if sweep and plot is None:
        plot = default_plot_path(args.json_out, env)
    return Config(
        nproc=nproc,
        nnodes=dist.nnodes,
        node_rank=dist.node_rank,
        master_addr=dist.master_addr,
        master_port=preflight_port(args, env, dist),
        ranks_per_node=rpn,
        backend=args.backend,
        size=size,
        iters=v["NCCL_PREFLIGHT_ITERS"],
        warmup=v["NCCL_PREFLIGHT_WARMUP"],
        timeout=v["NCCL_PREFLIGHT_TIMEOUT"],
        init_timeout=v["NCCL_PREFLIGHT_INIT_TIMEOUT"],
        stage_timeout=v["NCCL_PREFLIGHT_STAGE_TIMEOUT"],
        floors=v["NCCL_PREFLIGHT_FLOORS"],
        accelerator=args.accelerator,
        min_shm_bytes=int(v["NCCL_PREFLIGHT_MIN_SHM_GIB"] * 2**30),
        slow_fraction=v["NCCL_PREFLIGHT_SLOW_FRACTION"],
        pair_partners=v["NCCL_PREFLIGHT_PAIR_PARTNERS"],
        sweep=sweep,
        plot_out=plot,
        json=args.json,
        json_out=args.json_out,
        verbose=args.verbose,
        faults=faults,
        expected_gpus=_count(env, "SKYPILOT_NUM_GPUS_PER_NODE", 0) or None,
        capture_nccl_log="NCCL_DEBUG" not in env,
    )


def default_plot_path(json_out: Path | None, env: Mapping[str, str]) -> Path | None:
    """Where --sweep puts its plot without --plot-out: beside --json-out, else the run's preflight
    folder in the data directory ($DATA_DIR/$RUN_ID/preflight/nccl-sweep.png, docs/contract.md; without
    RUN_ID, $DATA_DIR/preflight/), else None: a new temporary folder, made when the plot is written."""
    if json_out is not None:
        return json_out.with_name(Path(PREFLIGHT_PLOT).name)
    data_dir = env.get("DATA_DIR", "").strip()
    if data_dir:
        return Path(data_dir) / env.get("RUN_ID", "").strip() / PREFLIGHT_PLOT
    return None


def identity_from_env(env: Mapping[str, str]) -> RankIdentity | None:
    """The rank torchrun started (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK; its store
    at MASTER_ADDR:MASTER_PORT, read by from_env), or None outside torchrun. Raises BadInput."""
    if not all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return None
    rank, world = _count(env, "RANK", 0), _count(env, "WORLD_SIZE", 1)
    local, lws = _count(env, "LOCAL_RANK", 0), _count(env, "LOCAL_WORLD_SIZE", world)
    if rank >= world or local >= lws or world % lws:
        raise BadInput(
            f"torchrun environment: RANK={rank} LOCAL_RANK={local} LOCAL_WORLD_SIZE={lws} WORLD_SIZE={world} disagree"
        )
    try:
        dist = from_env(env)
    except InputError as err:
        raise BadInput(str(err)) from None
    return RankIdentity(
        rank=rank,
        world_size=world,
        local_rank=local,
        local_world_size=lws,
        node=_count(env, "GROUP_RANK", rank // lws),
        master_addr=dist.master_addr,
        master_port=dist.master_port,
        agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
    )
