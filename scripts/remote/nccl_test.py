#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "torch==2.13.0",
#     "matplotlib==3.11.2",
# ]
# ///
"""NCCL preflight: find a dead-on-arrival node or fabric before training starts.

Usage:
    nccl_test.py --nproc 4                      # 4 local ranks (gloo on CPU, NCCL on GPUs)
    nccl_test.py --nproc 4 --ranks-per-node 1   # 4 emulated nodes: pairwise rounds run too
    nccl_test.py --json-out DIR/nccl-report.json  # on a node: NPROC_PER_NODE, NNODES, NODE_RANK,
                                                  # MASTER_ADDR, MASTER_PORT (+1) from the environment
    torchrun --nproc-per-node 8 ... nccl_test.py --json-out report.json   # one rank per process
    nccl_test.py --nproc 2 --sweep 1K:64M --plot-out sweep.png             # busbw against size

Modes. Under torchrun (RANK, LOCAL_RANK and WORLD_SIZE set) the process is one rank. Otherwise it is a
launcher: it imports torch once and forks `--nproc` ranks (ranks node_rank*nproc .. +nproc-1), waits
for them under a hard deadline and exits with their common verdict on every node (torchrun turns a
worker's 86 into 1: under torchrun read `exit_code` from the report).

Stages, each with a deadline (a stuck stage ends the run with 86 and names the ranks behind):
    connect      reach the rendezvous store (rank 0 hosts it, or torchrun's agent)
    node         local rank 0 of each node: GPUs vs SKYPILOT_NUM_GPUS_PER_NODE, /dev/shm, memlock,
                 nvidia-smi (ECC, GPU count, topology) and Xid lines in the kernel log where readable
    sanity       every rank: exact integer-valued matmul on its device, device copy bandwidth
    rendezvous   every rank publishes versions (torch, CUDA, NCCL, driver, host) and its checks
                 through the store; a missing rank is named, a version mismatch fails before any
                 NCCL communicator exists; then init_process_group (eager with device_id on GPU)
                 and monitored_barrier(wait_all_ranks=True) on a gloo group
    correctness  all_reduce of integer-valued float32 (zero tolerance, `#wrong` as in nccl-tests),
                 all_gather (names the rank whose contribution is wrong), broadcast from rank 0 and
                 from the last rank
    bandwidth    all_reduce and all_gather at one fixed --size (32 MiB with NCCL, 16 MiB with gloo):
                 whole cluster, per node, and on >= 4 nodes pairwise send/recv rounds that find a
                 slow node; optional --sweep (table and PNG of busbw against size)
    verdict      JSON report (--json-out, and stdout with --json), table on stderr, exit code

Bandwidth follows nccl-tests (doc/PERFORMANCE.md): algbw = bytes / 1e9 / seconds per operation, busbw =
algbw x factor (all_reduce 2(n-1)/n; all_gather (n-1)/n; send/recv 1), time = mean over the ranks of
each rank's time per operation. Floors apply to all_reduce busbw with NCCL only, never with gloo.

Exit codes (scripts/remote/_contract.py, docs/contract.md):
    0   pass (or warn: a bandwidth between floor and warning level)
    1   internal error of this script (a bug, not a node fault)
    2   bad input: one line naming the flag or environment key
    86  EXIT_BAD_NODE: a check failed or a stage timed out (`recover_on_exit_codes`)
    130, 143  interrupted (SIGINT), terminated (SIGTERM): the launcher stops its ranks first

JSON report (one object): schema, verdict (pass|warn|fail|error), exit_code, reason
(`preflight_failed` on a fail), error (an internal error's text, else null), failures and warnings (each: stage, severity, message, ranks, nodes),
backend, world_size, nnodes, ranks_per_node, accelerator, size_bytes, iters, warmup,
seconds_to_verdict, stages (seconds per stage on rank 0), ranks (per rank: rank, node, local_rank,
host, versions, sanity, node facts on local rank 0), correctness, bandwidth (rows: op, scope, ranks,
nodes, size_bytes, seconds, algbw_gbps, busbw_gbps, floor_gbps, warn_gbps, status; round for
send/recv pairs), pairwise (rounds, slow_fraction, slow_nodes; null under 4 nodes), sweep (rows, or
null), plot (path or null). Rank 0 writes it; it deletes an earlier report first.

The report file and the sweep plot are optional: writing either never changes the exit code. A write
that fails (full disk, read-only file system, no permission, a file where a folder should be) leaves
no partial file and logs one warning naming the path and the errno, e.g.
`nccl-report.json not written: /data/run/preflight/nccl-report.json: ENOSPC (No space left on device)`.
The plot goes to --plot-out, else beside --json-out, else $DATA_DIR/$RUN_ID/preflight/ (the data
directory layout of docs/contract.md), else a new temporary folder; never the current directory (the
git gate refuses a launch while an untracked file sits in the repository). Its path is logged.

Configuration: flags > environment (NCCL_PREFLIGHT_*, and NPROC_PER_NODE, NNODES, NODE_RANK,
MASTER_ADDR, MASTER_PORT written by configure_environment.py) > defaults. Decision record:
docs/decisions/nccl-preflight.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import errno
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _contract import EXIT_BAD_INPUT, EXIT_BAD_NODE, EXIT_FAILURE, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM
from _nccl_checks import (
    GB,
    Finding,
    FloorRule,
    bandwidth_findings,
    bandwidth_row,
    bandwidth_rows,
    build_report,
    check_node,
    check_versions,
    combine_exit_codes,
    correctness_findings,
    find_floor,
    format_size,
    format_table,
    laggards,
    pair_busbw,
    pair_rounds,
    parse_floors,
    parse_nccl_network,
    parse_nvidia_smi,
    parse_size,
    parse_sweep,
    parse_xids,
    rank_label,
    slow_nodes,
    sweep_sizes,
    verdict_of,
)

log = logging.getLogger("nccl_test")

#: Bytes per operation when --size is not given: nccl-tests' default with NCCL; half of it with gloo,
#: where it only proves the path works (no floor) and 4 ranks on 2 shared cores must finish in 15 s.
DEFAULT_SIZE = {"nccl": 32 << 20, "gloo": 16 << 20}
DEFAULT_ITERS = 20  # nccl-tests default iterations
DEFAULT_WARMUP = 1  # nccl-tests default warmup iterations
DEFAULT_TIMEOUT = 300.0
DEFAULT_INIT_TIMEOUT = 120.0
DEFAULT_STAGE_TIMEOUT = 60.0
DEFAULT_MIN_SHM_GIB = 1.0
DEFAULT_SLOW_FRACTION = 0.5
DEFAULT_PAIR_PARTNERS = 2
#: all_reduce busbw floors:warning levels in GB/s at the default 32 MiB, NCCL only. Single-node floors
#: sit near 1/3 of public 32 MiB figures (8x H200: 276 GB/s), so they catch a broken NVLink/P2P path,
#: not a 10 % regression. Multi-node entries only warn: the right floor depends on the cloud's fabric
#: (EFA/IB vs TCP), and a false floor costs a fresh-node restart per attempt. See the decision record.
DEFAULT_FLOORS = "H200@1=100:200,H100@1=100:200,A100@1=50:100,H200@2+=0:50,H100@2+=0:50,A100@2+=0:20"
#: Elements of the correctness tensors: odd lengths, so no power-of-two chunking hides an edge.
CORRECTNESS_COUNT = 1_000_003
GATHER_COUNT = 250_007
PATTERN_PERIOD = 13
KEY = "skyops-preflight"
#: Seconds the launcher lets the other ranks finish after the first one failed.
FAIL_GRACE = 2.0
#: Seconds rank 0 waits for the other ranks to read the verdict before closing the store.
ACK_TIMEOUT = 10.0
#: File name of the sweep plot (docs/contract.md, data directory: preflight/nccl-sweep.png).
PLOT_NAME = "nccl-sweep.png"


class BadInput(Exception):
    """A value a user can fix: a flag or an environment key. Its message names it."""


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


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
    master_port: int
    ranks_per_node: int | None
    backend: str  # auto | nccl | gloo
    size: int | None  # None: DEFAULT_SIZE of the backend
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
    expected_gpus: int | None  # SKYPILOT_NUM_GPUS_PER_NODE
    capture_nccl_log: bool  # NCCL_DEBUG unset: log INIT,NET to a file to learn the transport


@dataclass(frozen=True)
class Identity:
    """Who this process is in the job."""

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2 (house style)
        raise BadInput(message)


def _env(env: Mapping[str, str], keys: Sequence[str], convert: Callable[[str], Any], default: Any) -> Any:
    """The first of `keys` set in `env`, converted; `default` when none is set. BadInput names the key."""
    for key in keys:
        value = env.get(key)
        if value is not None and value.strip() != "":
            try:
                return convert(value.strip())
            except ValueError as err:
                raise BadInput(f"environment {key}={value!r}: {err}") from None
    return default


def _arg(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from `convert`: its ValueError message becomes argparse's one-line error."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _at_least(kind: Callable[[str], Any], minimum: float, *, strict: bool = False) -> Callable[[str], Any]:
    """`kind(text)` checked to be finite and >= minimum (> with `strict`); ValueError otherwise."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise ValueError(f"must be a finite number {'>' if strict else '>='} {minimum:g}, got {text!r}")
        return value

    return convert


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The CLI; environment values become defaults here (and only here). BadInput names a bad key."""
    pos_int, nonneg_int = _at_least(int, 1), _at_least(int, 0)
    pos_float, nonneg_float = _at_least(float, 0, strict=True), _at_least(float, 0)
    parser = _Parser(
        prog="nccl_test.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    gpus = _env(env, ["SKYPILOT_NUM_GPUS_PER_NODE"], nonneg_int, None)
    run = parser.add_argument_group("ranks (launcher mode; ignored under torchrun)")
    run.add_argument(
        "--nproc",
        type=_arg(pos_int),
        default=_env(env, ["NPROC_PER_NODE"], pos_int, gpus or 2),
        help="local ranks to start (env NPROC_PER_NODE, else SKYPILOT_NUM_GPUS_PER_NODE, else 2)",
    )
    run.add_argument(
        "--nnodes",
        type=_arg(pos_int),
        default=_env(env, ["NNODES", "SKYPILOT_NUM_NODES"], pos_int, 1),
        help="nodes in the job (env NNODES, SKYPILOT_NUM_NODES)",
    )
    run.add_argument(
        "--node-rank",
        type=_arg(nonneg_int),
        default=_env(env, ["NODE_RANK", "SKYPILOT_NODE_RANK"], nonneg_int, 0),
        help="this node's rank (env NODE_RANK, SKYPILOT_NODE_RANK)",
    )
    run.add_argument(
        "--master-addr",
        default=env.get("MASTER_ADDR") or "127.0.0.1",
        help="rendezvous host, node rank 0 (env MASTER_ADDR)",
    )
    run.add_argument(
        "--master-port",
        type=_arg(nonneg_int),
        # Not the training's own port: a node that starts training a moment early must never join the
        # preflight's store while it closes.
        default=_env(env, ["MASTER_PORT"], lambda text: _at_least(int, 0)(text) and int(text) + 1, 0),
        help="rendezvous port (env: MASTER_PORT + 1, so the training's port stays free);"
        " 0 picks a free one, single node only",
    )
    run.add_argument(
        "--ranks-per-node",
        type=_arg(pos_int),
        default=None,
        help="emulate nodes of this many ranks on one machine, single node only (None: one node of --nproc)",
    )
    test = parser.add_argument_group("measurement")
    test.add_argument(
        "--backend",
        choices=["auto", "nccl", "gloo"],
        default="auto",
        help="auto: NCCL when CUDA is available, else gloo",
    )
    test.add_argument(
        "--size",
        type=_arg(parse_size),
        default=_env(env, ["NCCL_PREFLIGHT_SIZE"], lambda text: parse_size(text) and text, None),
        help="bytes per all_reduce / all_gather output / send, K, M, G = 1024^n (env NCCL_PREFLIGHT_SIZE;"
        " None: 32M with NCCL, 16M with gloo)",
    )
    test.add_argument(
        "--iters",
        type=_arg(pos_int),
        default=_env(env, ["NCCL_PREFLIGHT_ITERS"], pos_int, DEFAULT_ITERS),
        help="timed iterations per measurement (env NCCL_PREFLIGHT_ITERS)",
    )
    test.add_argument(
        "--warmup",
        type=_arg(nonneg_int),
        default=_env(env, ["NCCL_PREFLIGHT_WARMUP"], nonneg_int, DEFAULT_WARMUP),
        help="untimed iterations first (env NCCL_PREFLIGHT_WARMUP)",
    )
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
    limits = parser.add_argument_group("thresholds and deadlines")
    limits.add_argument(
        "--floors",
        default=env.get("NCCL_PREFLIGHT_FLOORS", DEFAULT_FLOORS),  # set but empty: no floors
        help="all_reduce busbw floors ACCEL@NODES=FLOOR[:WARN],... in GB/s, NCCL only; '' or none: no floors"
        " (env NCCL_PREFLIGHT_FLOORS)",
    )
    limits.add_argument(
        "--accelerator",
        default=None,
        help="accelerator name matched by --floors (None: the CUDA device name)",
    )
    limits.add_argument(
        "--min-shm-gib",
        type=_arg(nonneg_float),
        default=_env(env, ["NCCL_PREFLIGHT_MIN_SHM_GIB"], nonneg_float, DEFAULT_MIN_SHM_GIB),
        help="minimum available /dev/shm in GiB; 0 turns the check off (env NCCL_PREFLIGHT_MIN_SHM_GIB)",
    )
    limits.add_argument(
        "--slow-fraction",
        type=_arg(pos_float),
        default=_env(env, ["NCCL_PREFLIGHT_SLOW_FRACTION"], pos_float, DEFAULT_SLOW_FRACTION),
        help="a node pair is slow under this fraction of the median pair busbw (env NCCL_PREFLIGHT_SLOW_FRACTION)",
    )
    limits.add_argument(
        "--pair-partners",
        type=_arg(nonneg_int),
        default=_env(env, ["NCCL_PREFLIGHT_PAIR_PARTNERS"], nonneg_int, DEFAULT_PAIR_PARTNERS),
        help="on >= 4 nodes, partners each node meets in pairwise rounds; 0 skips them (env NCCL_PREFLIGHT_PAIR_PARTNERS)",
    )
    limits.add_argument(
        "--timeout",
        type=_arg(pos_float),
        default=_env(env, ["NCCL_PREFLIGHT_TIMEOUT"], pos_float, DEFAULT_TIMEOUT),
        help="hard limit for the whole run in seconds; then exit 86 (env NCCL_PREFLIGHT_TIMEOUT)",
    )
    limits.add_argument(
        "--init-timeout",
        type=_arg(pos_float),
        default=_env(env, ["NCCL_PREFLIGHT_INIT_TIMEOUT"], pos_float, DEFAULT_INIT_TIMEOUT),
        help="seconds for every rank to reach the store and join (env NCCL_PREFLIGHT_INIT_TIMEOUT)",
    )
    limits.add_argument(
        "--stage-timeout",
        type=_arg(pos_float),
        default=_env(env, ["NCCL_PREFLIGHT_STAGE_TIMEOUT"], pos_float, DEFAULT_STAGE_TIMEOUT),
        help="seconds for each later stage (env NCCL_PREFLIGHT_STAGE_TIMEOUT)",
    )
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


def make_config(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """Cross-check the parsed flags into a Config. BadInput names the flag."""
    try:
        floors = parse_floors("" if args.floors.strip().lower() == "none" else args.floors)
    except ValueError as err:
        raise BadInput(f"--floors (or NCCL_PREFLIGHT_FLOORS): {err}") from None
    try:
        faults = parse_faults(args.inject_fault)
    except ValueError as err:
        raise BadInput(f"--inject-fault: {err}") from None
    sweep = None
    if args.sweep is not None:
        try:
            sweep = parse_sweep(args.sweep) if args.sweep else (1024, args.size)
        except ValueError as err:
            raise BadInput(f"--sweep: {err}") from None
    rpn = args.ranks_per_node
    if rpn is not None and (args.nnodes > 1 or args.nproc % rpn):
        raise BadInput(f"--ranks-per-node {rpn}: needs --nnodes 1 and must divide --nproc {args.nproc}")
    if args.node_rank >= args.nnodes:
        raise BadInput(f"--node-rank {args.node_rank}: must be < --nnodes {args.nnodes}")
    if args.master_port > 65535:
        raise BadInput(f"--master-port {args.master_port}: must be < 65536 (MASTER_PORT + 1 by default)")
    if args.nnodes > 1 and args.master_port == 0:
        raise BadInput("--master-port: must be set (or MASTER_PORT) when --nnodes > 1")
    if args.slow_fraction > 1:
        raise BadInput(f"--slow-fraction {args.slow_fraction}: must be <= 1")
    if args.size is not None and args.size < 4096:
        raise BadInput(f"--size {args.size}: must be at least 4K")
    plot = args.plot_out
    if sweep and plot is None:
        plot = default_plot_path(args.json_out, env)
    return Config(
        nproc=args.nproc,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port,
        ranks_per_node=rpn,
        backend=args.backend,
        size=args.size,
        iters=args.iters,
        warmup=args.warmup,
        timeout=args.timeout,
        init_timeout=args.init_timeout,
        stage_timeout=args.stage_timeout,
        floors=floors,
        accelerator=args.accelerator,
        min_shm_bytes=int(args.min_shm_gib * 2**30),
        slow_fraction=args.slow_fraction,
        pair_partners=args.pair_partners,
        sweep=sweep,
        plot_out=plot,
        json=args.json,
        json_out=args.json_out,
        verbose=args.verbose,
        faults=faults,
        expected_gpus=_env(env, ["SKYPILOT_NUM_GPUS_PER_NODE"], int, None),
        capture_nccl_log="NCCL_DEBUG" not in env,
    )


def default_plot_path(json_out: Path | None, env: Mapping[str, str]) -> Path | None:
    """Where --sweep puts its plot without --plot-out: beside --json-out, else the run's preflight
    folder in the data directory ($DATA_DIR/$RUN_ID/preflight/nccl-sweep.png, docs/contract.md; without
    RUN_ID, $DATA_DIR/preflight/), else None: a new temporary folder, made when the plot is written."""
    if json_out is not None:
        return json_out.with_name(PLOT_NAME)
    data_dir = env.get("DATA_DIR", "").strip()
    if data_dir:
        return Path(data_dir) / env.get("RUN_ID", "").strip() / "preflight" / PLOT_NAME
    return None


def identity_from_env(env: Mapping[str, str]) -> Identity | None:
    """The torchrun identity (RANK, LOCAL_RANK, WORLD_SIZE, ...), or None outside torchrun."""
    if not all(k in env for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        return None
    nonneg, positive = _at_least(int, 0), _at_least(int, 1)
    rank = _env(env, ["RANK"], nonneg, 0)
    world = _env(env, ["WORLD_SIZE"], positive, 1)
    local = _env(env, ["LOCAL_RANK"], nonneg, 0)
    lws = _env(env, ["LOCAL_WORLD_SIZE"], positive, world)
    if rank >= world or local >= lws or world % lws:
        raise BadInput(
            f"torchrun environment: RANK={rank} LOCAL_RANK={local} LOCAL_WORLD_SIZE={lws} WORLD_SIZE={world} disagree"
        )
    return Identity(
        rank=rank,
        world_size=world,
        local_rank=local,
        local_world_size=lws,
        node=_env(env, ["GROUP_RANK"], nonneg, rank // lws),
        master_addr=env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=_env(env, ["MASTER_PORT"], nonneg, 29500),
        agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
    )


# ---------------------------------------------------------------------------------------------------
# One rank (torch from here on)
# ---------------------------------------------------------------------------------------------------


def collect_node_facts(*, gpus_torch: int | None, on_gpu: bool) -> dict[str, Any]:
    """Facts about this machine for check_node: /dev/shm, memlock, GPU counts, nvidia-smi, Xid lines.

    nvidia-smi (20 s limit) and dmesg (5 s) run on GPU nodes only; an unreadable kernel log is noted
    (`xids_readable` false), not failed.
    """
    facts: dict[str, Any] = {"gpus_torch": gpus_torch}
    try:
        st = os.statvfs("/dev/shm")
        facts["shm_total_bytes"] = st.f_blocks * st.f_frsize
        facts["shm_free_bytes"] = st.f_bavail * st.f_frsize
    except OSError:
        facts["shm_total_bytes"] = facts["shm_free_bytes"] = None
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    facts["memlock_bytes"] = None if soft == resource.RLIM_INFINITY else soft
    if not on_gpu:
        return facts
    query = "index,pci.bus_id,name,driver_version,ecc.errors.uncorrected.volatile.total"
    smi: dict[str, Any] = {"gpus": [], "error": None, "topology": None}
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if out.returncode:
            smi["error"] = ((out.stderr or out.stdout).strip().splitlines() or [f"exit {out.returncode}"])[-1]
        smi["gpus"] = parse_nvidia_smi(out.stdout)
        topo = subprocess.run(
            ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=20, check=False
        )
        smi["topology"] = topo.stdout[:4000] if topo.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired) as err:
        smi["error"] = f"{type(err).__name__}: {err}"
    facts["nvidia_smi"] = smi
    try:
        kern = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5, check=False)
        facts["xids_readable"] = kern.returncode == 0
        facts["xids"] = parse_xids(kern.stdout) if kern.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired):
        facts["xids_readable"], facts["xids"] = False, []
    return facts


class Watchdog:
    """Ends a stuck rank: past the stage deadline or the overall one, run `on_timeout` then os._exit(86).

    A daemon thread, so it fires while the main thread blocks in a collective (those release the GIL).
    `on_timeout` gets 10 s to write the verdict; then the process exits regardless.
    """

    def __init__(
        self, overall_deadline: float, on_timeout: Callable[[str, str], None], grace: float = 0.0
    ) -> None:
        self._grace = grace
        self._overall = overall_deadline
        self._deadline = overall_deadline
        self._stage, self._budget = "startup", overall_deadline - time.monotonic()
        self._on_timeout = on_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="preflight-watchdog", daemon=True)
        self._thread.start()

    @property
    def deadline(self) -> float:
        """time.monotonic() value at which the current stage times out."""
        return self._deadline

    def enter(self, stage: str, budget: float) -> None:
        """Start `stage`: it must end within `budget` seconds (and before the overall deadline)."""
        self._stage, self._budget = stage, budget
        self._deadline = min(time.monotonic() + budget, self._overall)

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if time.monotonic() < self._deadline + self._grace:
                continue
            stage = self._stage
            why = "the overall --timeout" if self._deadline >= self._overall else f"{self._budget:.0f} s"
            writer = threading.Thread(target=self._on_timeout, args=(stage, why), daemon=True)
            writer.start()
            writer.join(10)
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(EXIT_BAD_NODE)


class RankRun:
    """The stages of one rank; rank 0 also writes the report. Progress goes to the store (the board)."""

    def __init__(self, cfg: Config, ident: Identity, t0: float) -> None:
        import torch

        self.torch = torch
        self.cfg, self.id, self.t0 = cfg, ident, t0
        self.rpn = ident.local_world_size
        self.backend = (
            cfg.backend if cfg.backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
        )
        self.device = (
            torch.device("cuda", ident.local_rank) if self.backend == "nccl" else torch.device("cpu")
        )
        self.size = cfg.size or DEFAULT_SIZE[self.backend]
        self.store: Any = None
        self.seq = 0
        self.stage = "startup"
        self.stage_started = t0  # "startup": interpreter and torch import
        self.stage_seconds: dict[str, float] = {}
        self.infos: list[dict[str, Any]] = []
        self.findings: list[Finding] = []
        self.correctness: list[dict[str, Any]] | None = None
        self.rows: list[dict[str, Any]] = []
        self.pairwise: dict[str, Any] | None = None
        self.sweep: list[dict[str, Any]] | None = None
        self.accelerator = cfg.accelerator
        self.pg_ready = False
        self.side_group: Any = None
        self.node_group: Any = None
        self.nccl_log: Path | None = None
        # Rank 0 explains a timeout; the others give it 2 s to do so before they end too.
        self.watchdog = Watchdog(t0 + cfg.timeout, self.on_timeout, grace=0.0 if ident.rank == 0 else 2.0)

    # -- progress, exchange, deadlines ------------------------------------------------------------

    def enter(self, stage: str, budget: float) -> None:
        now = time.monotonic()
        self.stage_seconds[self.stage] = self.stage_seconds.get(self.stage, 0.0) + now - self.stage_started
        self.stage, self.stage_started = stage, now
        self.watchdog.enter(stage, budget)
        self.mark("start")

    def remaining(self) -> float:
        """Seconds left in this stage, less a margin so a store wait times out before the watchdog."""
        return max(0.5, self.watchdog.deadline - time.monotonic() - 1.0)

    def _mark_value(self, step: str, state: str, error: str | None) -> str:
        return json.dumps(
            {
                "stage": self.stage,
                "step": step,
                "state": state,
                "seq": self.seq,
                "error": error,
                "node": self.id.node,
                "local_rank": self.id.local_rank,
                "host": socket.gethostname(),
            }
        )

    def mark(self, step: str) -> None:
        """Record progress on the board: the rank's stage, step and a counter every rank advances alike."""
        self.seq += 1
        log.debug("%s/%s", self.stage, step)
        if self.store is not None:
            self.store.set(f"{KEY}/progress/{self.id.rank}", self._mark_value(step, "running", None))

    def exchange(self, name: str, payload: Any) -> list[Any]:
        """All-gather a JSON value through the store; every rank gets every rank's value (rank order).

        Within the stage deadline; a rank that does not publish is named (TimeoutError with names).
        """
        self.mark(f"exchange {name}")
        self.store.set(f"{KEY}/x/{name}/{self.id.rank}", json.dumps(payload))
        keys = [f"{KEY}/x/{name}/{r}" for r in range(self.id.world_size)]
        try:
            self.store.wait(keys, datetime.timedelta(seconds=self.remaining()))
        except Exception:
            missing = [r for r, k in enumerate(keys) if not self.store.check([k])]
            names = ", ".join(rank_label(None, r, self.rpn) for r in missing)
            raise TimeoutError(f"no {name} from {names} within the {self.stage} deadline") from None
        return [json.loads(v) for v in self.store.multi_get(keys)]

    def board(self, store: Any = None) -> list[dict[str, Any] | None]:
        """Every rank's last progress mark (None: never reached the store)."""
        store = store or self.store
        keys = [f"{KEY}/progress/{r}" for r in range(self.id.world_size)]
        present = [store.check([k]) for k in keys]
        values = store.multi_get([k for k, ok in zip(keys, present, strict=True) if ok])
        it = iter(values)
        return [json.loads(next(it)) if ok else None for ok in present]

    def fresh_store(self, timeout: float = 2.0) -> Any:
        """A second client: the main one may be blocked inside a wait."""
        import torch.distributed as dist

        return dist.TCPStore(
            self.id.master_addr,
            self.id.master_port,
            is_master=False,
            timeout=datetime.timedelta(seconds=timeout),
        )

    # -- failure paths -----------------------------------------------------------------------------

    def on_timeout(self, stage: str, why: str) -> None:
        """Watchdog: rank 0 names the ranks behind (from the board) and writes the report; others log."""
        message = f"{rank_label(None, self.id.rank, self.rpn)} timed out in stage {stage} (after {why})"
        if stage == "connect":
            message += (
                f": rendezvous store at {self.id.master_addr}:{self.id.master_port} unreachable"
                " (rank 0 on node 0 not up, or the port is blocked)"
            )
        log.error("%s", message)
        if self.id.rank != 0:
            return
        own = Finding(stage, "fail", message, (0,), (self.id.node,))
        try:
            others = [f for f in laggards(self.board(self.fresh_store()), self.rpn) if 0 not in f.ranks]
        except Exception as err:  # the board is unreadable: still write what we know
            others = []
            own = dataclasses.replace(own, message=f"{message}; progress board unreadable: {first_line(err)}")
        self.emit([*self.findings, *(others or [own])])

    def on_error(self, err: BaseException) -> int:
        """A stage raised: publish it; rank 0 names the culprits from the board and writes the report."""
        text = f"{type(err).__name__}: {first_line(err)}"
        log.error("stage %s failed: %s", self.stage, text)
        if self.id.rank != 0:
            with contextlib.suppress(Exception):
                if self.store is not None:
                    self.store.set(
                        f"{KEY}/progress/{self.id.rank}", self._mark_value(self.stage, "failed", text)
                    )
            return EXIT_BAD_NODE
        culprits: list[Finding] = []
        with contextlib.suppress(Exception):
            if self.store is not None:
                time.sleep(0.5)  # let a peer that failed first publish why
                culprits = [f for f in laggards(self.board(), self.rpn) if 0 not in f.ranks]
        own = Finding(
            self.stage,
            "fail",
            f"{rank_label(None, 0, self.rpn)} in {self.stage}: {text}",
            (0,),
            (self.id.node,),
        )
        self.emit([*self.findings, *culprits, own])
        return EXIT_BAD_NODE

    # -- report ------------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        now = time.monotonic()
        stages = {
            **self.stage_seconds,
            self.stage: self.stage_seconds.get(self.stage, 0.0) + now - self.stage_started,
        }
        return {
            "backend": self.backend,
            "world_size": self.id.world_size,
            "nnodes": self.id.nnodes,
            "ranks_per_node": self.rpn,
            "accelerator": self.accelerator,
            "size_bytes": self.size,
            "iters": self.cfg.iters,
            "warmup": self.cfg.warmup,
            "seconds_to_verdict": now - self.t0,
            "stages": {k: round(v, 3) for k, v in stages.items()},
            "plot": None,
        }

    def emit(self, findings: Sequence[Finding], error: str | None = None) -> dict[str, Any]:
        """Rank 0: build the report, write --json-out (atomically), print JSON (--json) and the table."""
        report = build_report(
            findings=findings,
            meta=self.meta(),
            infos=self.infos,
            correctness=self.correctness,
            rows=self.rows,
            pairwise=self.pairwise,
            sweep=self.sweep,
            error=error,
        )
        if self.sweep:
            title = f"NCCL preflight sweep: {self.backend}, {self.id.world_size} ranks on {self.id.nnodes} node(s)"
            rule = (
                find_floor(self.cfg.floors, self.accelerator, self.id.nnodes)
                if self.backend == "nccl"
                else None
            )
            sweep, path, made = self.sweep, self.cfg.plot_out, None
            try:
                if path is None:
                    made = Path(tempfile.mkdtemp(prefix="nccl-preflight-"))
                    path = made / PLOT_NAME
                if write_artifact(path, lambda tmp: write_plot(sweep, tmp, title, rule)):
                    report["plot"] = str(path)
                    log.info("sweep plot written: %s", path)
                elif made is not None:
                    with contextlib.suppress(OSError):
                        made.rmdir()
            except OSError as err:  # the temporary folder
                log.warning("%s not written: %s", PLOT_NAME, os_error_text(err, path))
            except Exception as err:  # matplotlib: an optional extra never fails the preflight
                log.warning("%s not written: %s: %s", PLOT_NAME, path, first_line(err))
        write_report(report, self.cfg.json_out, self.cfg.json)
        sys.stderr.write(format_table(report) + "\n")
        sys.stderr.flush()
        return report

    # -- stages ------------------------------------------------------------------------------------

    def run(self) -> int:
        cfg, rank = self.cfg, self.id.rank
        if rank == 0 and cfg.json_out:
            discard_stale_report(cfg.json_out)
        if cfg.faults.skip_rank == rank:  # a dead node: no contact at all, then gone
            log.warning("fault injection: rank %d never joins", rank)
            self.watchdog.stop()
            time.sleep(cfg.timeout)
            return EXIT_BAD_NODE
        self.enter("connect", self.init_left())
        self.connect()
        self.enter("node", cfg.stage_timeout)
        info = self.node_stage()
        self.enter("sanity", cfg.stage_timeout)
        info["sanity"] = self.sanity_stage()
        self.enter("rendezvous", self.init_left())
        if not self.rendezvous_stage(info):
            return self.finish()
        self.enter("correctness", cfg.stage_timeout)
        self.correctness_stage()
        if verdict_of(self.findings)[0] == "fail":
            return self.finish()
        self.enter("bandwidth", cfg.stage_timeout)
        self.bandwidth_stage()
        if cfg.sweep:
            self.enter("sweep", cfg.stage_timeout * 2)
            self.sweep_stage()
        return self.finish()

    def init_left(self) -> float:
        """Seconds left of --init-timeout, counted from this process's start (at least 1)."""
        return max(1.0, self.t0 + self.cfg.init_timeout - time.monotonic())

    def connect(self) -> None:
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=self.remaining())
        host = self.id.rank == 0 and not self.id.agent_store
        try:
            self.store = dist.TCPStore(
                self.id.master_addr,
                self.id.master_port,
                None,
                host,
                timeout,
                wait_for_workers=False,
                multi_tenant=True,
            )
        except Exception as err:
            where, why = f"{self.id.master_addr}:{self.id.master_port}", first_line(err)
            if host:
                raise OSError(f"cannot host the rendezvous store on {where}: {why}") from None
            raise TimeoutError(
                f"rendezvous store at {where} unreachable within --init-timeout {self.cfg.init_timeout:g} s"
                f" (rank 0 on node 0 not up, or the port is blocked): {why}"
            ) from None
        self.mark("connected")

    def node_stage(self) -> dict[str, Any]:
        torch = self.torch
        on_gpu = self.backend == "nccl"
        gpus = torch.cuda.device_count() if on_gpu else None
        info: dict[str, Any] = {
            "rank": self.id.rank,
            "node": self.id.node,
            "local_rank": self.id.local_rank,
            "host": socket.gethostname(),
            "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
            "device": str(self.device),
            "device_name": None,
            "node_facts": None,
            "node_findings": [],
        }
        if on_gpu:
            info["versions"]["cuda"] = torch.version.cuda
            info["versions"]["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            if self.id.local_rank < (gpus or 0):
                torch.cuda.set_device(self.device)
                info["device_name"] = torch.cuda.get_device_name(self.device)
        else:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.rpn))
        where = f"node {self.id.node} ({info['host']})"
        found: list[Finding] = []
        if on_gpu and self.id.local_rank >= (gpus or 0):
            found.append(
                Finding(
                    "node",
                    "fail",
                    f"{rank_label(info, self.id.rank, self.rpn)} has no GPU: the node shows {gpus}",
                )
            )
        if self.id.local_rank == 0:
            facts = collect_node_facts(gpus_torch=gpus, on_gpu=on_gpu)
            info["node_facts"] = facts
            driver = next((g["driver"] for g in (facts.get("nvidia_smi") or {}).get("gpus", [])), None)
            if driver:
                info["versions"]["driver"] = driver
            found += check_node(
                facts,
                where=where,
                expected_gpus=self.cfg.expected_gpus,
                min_shm_bytes=self.cfg.min_shm_bytes,
                backend=self.backend,
                nnodes=self.id.nnodes,
            )
        info["node_findings"] = [
            dataclasses.replace(f, ranks=(self.id.rank,), nodes=(self.id.node,)).to_json() for f in found
        ]
        return info

    def sanity_stage(self) -> dict[str, Any]:
        """Exact integer-valued matmul against a CPU int64 reference; device copy bandwidth (GB/s)."""
        torch = self.torch
        if self.backend == "nccl" and self.id.local_rank >= torch.cuda.device_count():
            return {"matmul_wrong": None, "copy_gbps": None, "error": "no GPU for this local rank"}
        try:
            gen = torch.Generator().manual_seed(self.id.rank)
            a = torch.randint(-8, 8, (256, 256), generator=gen)
            b = torch.randint(-8, 8, (256, 256), generator=gen)
            want = a @ b
            got = (a.float().to(self.device) @ b.float().to(self.device)).cpu().long()
            wrong = int((got != want).sum())
            src = torch.ones(self.size // 4, device=self.device)
            dst = torch.empty_like(src)
            dst.copy_(src)
            self.sync()
            t = time.perf_counter()
            for _ in range(5):
                dst.copy_(src)
            self.sync()
            secs = (time.perf_counter() - t) / 5
            return {"matmul_wrong": wrong, "copy_gbps": 2 * src.numel() * 4 / GB / secs, "error": None}
        except Exception as err:  # a broken device (Xid 79: "unspecified launch failure") is a finding
            return {
                "matmul_wrong": None,
                "copy_gbps": None,
                "error": f"{type(err).__name__}: {first_line(err)}",
            }

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def rendezvous_stage(self, info: dict[str, Any]) -> bool:
        """Join through the store (names a missing rank), check versions and node checks, then init."""
        import torch.distributed as dist

        self.infos = self.exchange("join", info)
        names = {i["rank"]: rank_label(i, i["rank"], self.rpn) for i in self.infos}
        self.accelerator = self.accelerator or self.infos[0]["device_name"]
        for i in self.infos:
            self.findings += [
                Finding(**{**f, "ranks": tuple(f["ranks"]), "nodes": tuple(f["nodes"])})
                for f in i["node_findings"]
            ]
            s = i["sanity"]
            if s.get("error") or s.get("matmul_wrong"):
                what = s.get("error") or f"matmul wrong in {s['matmul_wrong']} of 65536 elements"
                self.findings.append(
                    Finding("sanity", "fail", f"{names[i['rank']]}: {what}", (i["rank"],), (i["node"],))
                )
        self.findings += check_versions(self.infos, self.rpn)
        if verdict_of(self.findings)[0] == "fail":
            return False
        self.watchdog.enter("rendezvous", self.cfg.stage_timeout)  # everyone joined: init has its own budget
        self.mark("init_process_group")
        if self.backend == "nccl" and self.cfg.capture_nccl_log:
            self.nccl_log = Path(f"/tmp/skyops-nccl-preflight-{os.getpid()}.log")
            os.environ.update(
                NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET", NCCL_DEBUG_FILE=str(self.nccl_log)
            )
        pg_timeout = datetime.timedelta(seconds=self.cfg.stage_timeout + 30)  # our watchdog fires first
        dist.init_process_group(
            self.backend,
            store=dist.PrefixStore(f"{KEY}/pg", self.store),
            rank=self.id.rank,
            world_size=self.id.world_size,
            timeout=pg_timeout,
            device_id=self.device if self.backend == "nccl" else None,  # eager NCCL init: errors surface here
        )
        self.pg_ready = True
        self.mark("gloo side group")
        self.side_group = dist.new_group(backend="gloo") if self.backend == "nccl" else None
        if 1 < self.rpn < self.id.world_size:
            self.mark("node groups")
            self.node_group, _ = dist.new_subgroups(group_size=self.rpn)
        self.mark("monitored_barrier")
        dist.monitored_barrier(
            group=self.side_group, timeout=datetime.timedelta(seconds=self.remaining()), wait_all_ranks=True
        )
        return True

    def pattern(self, rank: int, count: int) -> Any:
        torch = self.torch
        base = (torch.arange(count, device=self.device) % PATTERN_PERIOD).float()
        return base + float(rank + 1)

    def contribution(self, count: int) -> Any:
        x = self.pattern(self.id.rank, count)
        if self.cfg.faults.corrupt_rank == self.id.rank:
            x[count // 2] += 1.0
        return x

    def correctness_stage(self) -> None:
        """all_reduce (sum of rank+1 plus a period-13 ramp: exact in float32), all_gather, two broadcasts."""
        import torch.distributed as dist

        torch, n = self.torch, self.id.world_size
        if self.cfg.faults.hang_rank == self.id.rank:
            log.warning("fault injection: rank %d hangs before all_reduce", self.id.rank)
            time.sleep(self.cfg.timeout + 60)
        self.mark("all_reduce")
        x = self.contribution(CORRECTNESS_COUNT)
        dist.all_reduce(x)
        ramp = (torch.arange(CORRECTNESS_COUNT, device=self.device) % PATTERN_PERIOD).float()
        want = ramp * n + n * (n + 1) / 2  # sum over ranks r of (r + 1 + ramp)
        ar_wrong = int((x != want).sum())
        self.mark("all_gather")
        out = torch.empty(GATHER_COUNT * n, device=self.device)
        dist.all_gather_single(out, self.contribution(GATHER_COUNT))
        base = (torch.arange(GATHER_COUNT, device=self.device) % PATTERN_PERIOD).float()
        ag_wrong = [
            int((out[r * GATHER_COUNT : (r + 1) * GATHER_COUNT] != base + (r + 1)).sum()) for r in range(n)
        ]
        bc_wrong = {}
        for root in sorted({0, n - 1}):
            self.mark(f"broadcast from {root}")
            t = (
                self.contribution(GATHER_COUNT)
                if self.id.rank == root
                else torch.full((GATHER_COUNT,), -1.0, device=self.device)
            )
            dist.broadcast(t, src=root)
            bc_wrong[str(root)] = int((t != self.pattern(root, GATHER_COUNT)).sum())
        mine = {"all_reduce_wrong": ar_wrong, "all_gather_wrong": ag_wrong, "broadcast_wrong": bc_wrong}
        self.correctness = self.exchange("correctness", mine)
        self.findings += correctness_findings(self.correctness, self.infos, self.rpn)

    def timed(self, op: Callable[[], Any], group: Any = None) -> float:
        """Seconds per operation on this rank: warmup, barrier, `iters` operations, device sync."""
        import torch.distributed as dist

        for _ in range(self.cfg.warmup):
            op()
        self.sync()
        dist.barrier(group=group)
        self.sync()
        start = time.perf_counter()
        for _ in range(self.cfg.iters):
            op()
        self.sync()
        return (time.perf_counter() - start) / self.cfg.iters

    def collective_timings(self, size: int, group: Any, n: int, prefix: str) -> dict[str, float]:
        import torch.distributed as dist

        torch = self.torch
        buf = torch.ones(size // 4, device=self.device)
        self.mark(f"{prefix}/all_reduce {size}")
        result = {f"{prefix}/all_reduce": self.timed(lambda: dist.all_reduce(buf, group=group), group)}
        per_rank = size // (4 * n)
        if per_rank:
            src = torch.ones(per_rank, device=self.device)
            out = torch.empty(per_rank * n, device=self.device)
            self.mark(f"{prefix}/all_gather {size}")
            result[f"{prefix}/all_gather"] = self.timed(
                lambda: dist.all_gather_single(out, src, group=group), group
            )
        return result

    def bandwidth_stage(self) -> None:
        """World and per-node all_reduce/all_gather; pairwise send/recv rounds on >= 4 nodes."""
        import torch.distributed as dist

        torch, cfg, nnodes = self.torch, self.cfg, self.id.nnodes
        mine: dict[str, float | None] = self.collective_timings(self.size, None, self.id.world_size, "world")
        if self.node_group is not None:
            mine.update(self.collective_timings(self.size, self.node_group, self.rpn, "node"))
        rounds = pair_rounds(nnodes, cfg.pair_partners) if nnodes >= 4 and cfg.pair_partners else []
        send = torch.ones(self.size // 4, device=self.device)
        recv = torch.empty_like(send)
        for index, pairs in enumerate(rounds):
            self.mark(f"pair round {index}")
            partner = next((b if a == self.id.node else a for a, b in pairs if self.id.node in (a, b)), None)
            if partner is None:  # odd node count: sit this round out, but keep the barriers in step
                dist.barrier()
                dist.barrier()
                mine[f"pair/{index}"] = None
                continue
            peer = partner * self.rpn + self.id.local_rank

            def exchange(peer: int = peer) -> None:
                ops = [dist.P2POp(dist.isend, send, peer), dist.P2POp(dist.irecv, recv, peer)]
                for work in dist.batch_isend_irecv(ops):
                    work.wait()

            mine[f"pair/{index}"] = self.timed(exchange)
            dist.barrier()
        timings = self.exchange("bandwidth", {**mine, "network": self.network()})
        self.rows = bandwidth_rows(
            timings,
            [i["node"] for i in self.infos],
            size=self.size,
            rounds=rounds,
            rules=cfg.floors,
            accelerator=self.accelerator,
            backend=self.backend,
        )
        slow: list[int] = []
        if rounds:
            slow = slow_nodes(pair_busbw(self.rows), cfg.slow_fraction)
            self.pairwise = {"rounds": rounds, "slow_fraction": cfg.slow_fraction, "slow_nodes": slow}
        for i, t in zip(self.infos, timings, strict=True):
            i["network"] = t["network"]
        if nnodes > 1 and "Socket" in {t["network"] for t in timings}:
            self.findings.append(
                Finding(
                    "bandwidth",
                    "warn",
                    "NCCL uses TCP sockets between nodes on some ranks"
                    " (no IB/EFA): expect 10-100x lower inter-node busbw (aws/aws-ofi-nccl#67)",
                )
            )
        self.findings += bandwidth_findings(self.rows, slow, self.backend)

    def network(self) -> str | None:
        """The network NCCL chose on this rank ("IB", "Socket", ...), from its INFO log; None if unknown."""
        if self.nccl_log is None:
            return None
        try:
            text = self.nccl_log.read_text(errors="replace")
            self.nccl_log.unlink()
        except OSError:
            return None
        return parse_nccl_network(text)

    def sweep_stage(self) -> None:
        """all_reduce and all_gather over the whole cluster at each --sweep size (rows with status info)."""
        low, high = self.cfg.sweep or (self.size, self.size)
        n, sizes = self.id.world_size, sweep_sizes(low, high or self.size)
        mine: dict[str, float] = {}
        for size in sizes:
            mine.update(self.collective_timings(size, None, n, str(size)))
        timings = self.exchange("sweep", mine)
        nodes = range(self.id.nnodes)
        self.sweep = [
            bandwidth_row(op, "sweep", nodes, [t[f"{size}/{op}"] for t in timings], size, n)
            for size in sizes
            for op in ("all_reduce", "all_gather")
            if f"{size}/{op}" in timings[0]
        ]

    def finish(self) -> int:
        """Verdict: rank 0 reports and publishes the exit code; every rank exits with it."""
        self.enter("verdict", self.cfg.stage_timeout)
        code = verdict_of(self.findings)[1]
        if self.id.rank == 0:
            self.emit(self.findings)
            self.store.set(f"{KEY}/verdict", str(code))
            with contextlib.suppress(Exception):  # let the others read it before the store closes
                self.store.wait(
                    [f"{KEY}/ack/{r}" for r in range(1, self.id.world_size)],
                    datetime.timedelta(seconds=ACK_TIMEOUT),
                )
        else:
            self.store.wait([f"{KEY}/verdict"], datetime.timedelta(seconds=self.remaining()))
            code = int(self.store.get(f"{KEY}/verdict"))
            self.store.set(f"{KEY}/ack/{self.id.rank}", "1")
        if code == EXIT_OK and self.pg_ready:
            import torch.distributed as dist

            dist.destroy_process_group()
        self.watchdog.stop()
        return code


def first_line(err: BaseException) -> str:
    """An exception's first line: torch's C++ errors append a whole stack trace."""
    return (str(err).strip().splitlines() or [""])[0]


def os_error_text(err: OSError, path: Path | None) -> str:
    """`PATH: ENOSPC (No space left on device)`: the path and the errno's name and text."""
    name = errno.errorcode.get(err.errno, f"errno {err.errno}") if err.errno else type(err).__name__
    return f"{path if path is not None else err.filename}: {name} ({err.strerror or err})"


def discard_stale_report(path: Path) -> None:
    """Delete an earlier attempt's report, so no old verdict is ever read as this one's. A report that
    cannot be deleted (read-only, not a folder) is left: writing the new one fails too, and says so."""
    with contextlib.suppress(OSError):
        path.unlink()


def write_artifact(path: Path, write: Callable[[Path], None]) -> bool:
    """Write an optional file atomically: `write(tmp)` into a temporary file beside `path` (parents
    created), then rename it to `path`, so a reader sees the whole file or none.

    Returns False, after one warning naming `path` and the errno (ENOSPC, EROFS, EACCES, ENOTDIR, ...),
    when the file system refuses; the temporary file is removed. Never raises OSError: the report and
    the plot are optional, and a failure to write them never changes the preflight's exit code.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileExistsError):  # a file where the folder should be: ENOTDIR below
            path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        stale = " (an earlier one is still there)" if _exists(path) else ""
        log.warning("%s not written: %s%s", path.name, os_error_text(err, path), stale)
        return False
    except BaseException:
        _remove(tmp)
        raise
    return True


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def write_report(report: Mapping[str, Any], path: Path | None, to_stdout: bool) -> bool:
    """Write the JSON report to `path` (see write_artifact: atomic, never raises OSError) and/or stdout.

    Returns False when `path` could not be written (one warning logged), else True.
    """
    text = json.dumps(report, indent=2, default=str)
    written = path is None or write_artifact(path, lambda tmp: tmp.write_text(text + "\n"))
    if to_stdout:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return written


def write_plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str, rule: FloorRule | None) -> None:
    """PNG of busbw (GB/s) against message size (bytes, log2 axis), one line per op, floor dashed.

    Writes `path` as PNG whatever its suffix (write_artifact hands it a temporary name); its folder
    must exist. Raises OSError when the file cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for op in ("all_reduce", "all_gather"):
        pts = [(r["size_bytes"], r["busbw_gbps"]) for r in rows if r["op"] == op]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{op} busbw")
    if rule is not None and rule.floor > 0:
        ax.axhline(
            rule.floor, color="red", linestyle="--", label=f"floor {rule.floor:g} GB/s ({rule.spec()})"
        )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_size(int(x))))
    ax.set_xlabel("message size")
    ax.set_ylabel("busbw (GB/s = 1e9 B/s)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def run_rank(cfg: Config, ident: Identity, t0: float) -> int:
    """Run every stage as one rank; returns its exit code (0, 1, 86)."""
    logging.getLogger().handlers[0].setFormatter(
        logging.Formatter(
            f"%(asctime)s nccl_test rank {ident.rank} node {ident.node}: %(levelname)s %(message)s"
        )
    )
    if not cfg.verbose and ident.rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    run = RankRun(cfg, ident, t0)
    try:
        return run.run()
    except KeyboardInterrupt:
        return EXIT_SIGINT
    except (RuntimeError, OSError, TimeoutError, ValueError) as err:  # torch's DistError is a RuntimeError
        if cfg.verbose:
            log.exception("stage %s", run.stage)
        return run.on_error(err)
    except Exception as err:
        log.exception("internal error in stage %s", run.stage)
        if ident.rank == 0:
            run.emit(run.findings, error=f"{type(err).__name__}: {err}")
        return EXIT_FAILURE
    finally:
        run.watchdog.stop()


# ---------------------------------------------------------------------------------------------------
# Launcher: fork the local ranks, wait under a hard deadline
# ---------------------------------------------------------------------------------------------------


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _child(cfg: Config, ident: Identity, t0: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = run_rank(cfg, ident, t0)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def launch_local(cfg: Config, t0: float) -> int:
    """Fork `cfg.nproc` ranks of this node; return their combined exit code (see combine_exit_codes)."""
    # Import torch once here: the forked ranks share it (about 4 s of CPU per process saved). Nothing
    # touches CUDA before the fork.
    import torch.distributed  # noqa: F401

    rpn = cfg.ranks_per_node or cfg.nproc
    port = cfg.master_port or _free_port(cfg.master_addr)
    world = cfg.nnodes * cfg.nproc
    if cfg.node_rank == 0 and cfg.json_out:
        discard_stale_report(cfg.json_out)
    ctx = multiprocessing.get_context("fork")
    procs: dict[int, multiprocessing.process.BaseProcess] = {}
    for local in range(cfg.nproc):
        rank = cfg.node_rank * cfg.nproc + local
        ident = Identity(rank, world, rank % rpn, rpn, rank // rpn, cfg.master_addr, port, agent_store=False)
        procs[rank] = ctx.Process(target=_child, args=(cfg, ident, t0), name=f"rank{rank}", daemon=False)
        procs[rank].start()
    log.info(
        "started ranks %d-%d of %d (%d per node) with rendezvous at %s:%d",
        min(procs),
        max(procs),
        world,
        rpn,
        cfg.master_addr,
        port,
    )
    killed: set[int] = set()
    deadline = t0 + cfg.timeout + 15  # the ranks' own watchdogs end them first
    first_failure: float | None = None

    interrupted: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        # Pass the first SIGTERM/SIGINT on to the ranks once and wait for them: the supervisor (run.py)
        # owns the grace period and the SIGKILL after it; a repeated signal changes nothing.
        if interrupted:
            return
        interrupted.append(signum)
        for p in procs.values():
            if p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while any(p.exitcode is None for p in procs.values()):
            multiprocessing.connection.wait(
                [p.sentinel for p in procs.values() if p.exitcode is None], timeout=0.2
            )
            now = time.monotonic()
            if first_failure is None and any(p.exitcode not in (None, 0) for p in procs.values()):
                first_failure = now
            if now > deadline or (first_failure is not None and now > first_failure + FAIL_GRACE):
                for rank, p in procs.items():
                    if p.exitcode is None:
                        log.error(
                            "rank %d still running %.0f s after %s: killed",
                            rank,
                            now - t0,
                            "the deadline" if now > deadline else "another rank failed",
                        )
                        os.kill(p.pid, signal.SIGKILL)
                        killed.add(rank)
                for p in procs.values():
                    p.join(5)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if interrupted:
        log.warning("stopped by %s", signal.Signals(interrupted[0]).name)
        return EXIT_SIGTERM if interrupted[0] == signal.SIGTERM else EXIT_SIGINT
    codes = {r: (None if r in killed else p.exitcode) for r, p in procs.items()}
    code = combine_exit_codes(codes)
    for rank, c in codes.items():
        if c not in (0, None) and c < 0:
            log.error("rank %d died from signal %d", rank, -c)
    if cfg.node_rank == 0 and procs[0].exitcode is not None and (0 in killed or procs[0].exitcode < 0):
        message = (
            f"rank 0 ended without a verdict ({'killed' if 0 in killed else f'signal {-procs[0].exitcode}'})"
        )
        report = build_report(
            findings=[Finding("verdict", "fail", message, (0,), (0,))],
            meta={"world_size": world, "nnodes": cfg.nnodes, "seconds_to_verdict": time.monotonic() - t0},
        )
        write_report(report, cfg.json_out, cfg.json)
    log.info(
        "exit %d after %.1f s (rank exit codes: %s)",
        code,
        time.monotonic() - t0,
        ", ".join(f"{r}={'killed' if c is None else c}" for r, c in codes.items()),
    )
    return code


# ---------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (environment values are their defaults), then run as the launcher or as one rank.

    Returns the exit code in launcher mode; under torchrun it ends the process with os._exit(code).
    """
    t0 = time.monotonic()
    env = os.environ
    try:
        args = build_parser(env).parse_args(argv)
        cfg = make_config(args, env)
        ident = identity_from_env(env)
    except BadInput as err:
        print(f"nccl_test.py: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not cfg.verbose:  # c10d's C++ logs (store retries with stack traces) drown the verdict
        env.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    logging.basicConfig(
        level=logging.DEBUG if cfg.verbose else logging.INFO,
        format="%(asctime)s nccl_test: %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if ident is None and cfg.nnodes == 1 and cfg.master_addr.startswith("127.") and sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: keep gloo on loopback
    if ident is None:
        return launch_local(cfg, t0)
    code = run_rank(cfg, ident, t0)  # under torchrun: skip interpreter teardown (a dead peer can hang it)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
