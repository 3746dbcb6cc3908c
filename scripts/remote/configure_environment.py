#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = []
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Derive torch.distributed settings from SkyPilot's node contract; write a bash-sourceable env file.

usage: configure_environment.py --node-ips "$SKYPILOT_NODE_IPS" --node-rank "$SKYPILOT_NODE_RANK"
           --num-nodes "$SKYPILOT_NUM_NODES" --gpus-per-node "$SKYPILOT_NUM_GPUS_PER_NODE"
           [--master-port PORT] [--output FILE]

Writes `export KEY='value'` lines (to FILE, atomically, or to stdout) that `source` restores
byte-identically: MASTER_ADDR (the first line of the node IPs), MASTER_PORT, NNODES, NODE_RANK,
NPROC_PER_NODE (GPUs per node, or 1 on CPU) and WORLD_SIZE (NNODES * NPROC_PER_NODE), plus NCCL
defaults that never replace a value already set in the environment. With nothing set (a laptop) it
describes one node: 127.0.0.1, rank 0.

Exit codes: 0 written; 2 bad input (one line naming the flag, nothing written).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from _contract import EXIT_BAD_INPUT, EXIT_OK, KEY
from _distributed import Distributed, InputError, derive, parse_node_ips
from _files import write_atomic

__all__ = ["Distributed", "InputError", "derive", "environment", "main", "parse_node_ips", "render"]

#: Set only where the environment has no value (SkyPilot sets NCCL variables itself on some network
#: setups, e.g. NCCL_SOCKET_IFNAME: never override them). Read by NCCL and torch's ProcessGroupNCCL only
#: (GPU jobs); gloo ignores them. Together they turn a hung collective into a crash the supervisor sees
#: (the job's own failure, with torch's reason in the log) instead of a silent hang; each setting, its
#: source and torch 2.13's default: docs/decisions/hang-detection.md, "GPU watchdog defaults".
NCCL_DEFAULTS: dict[str, str] = {
    "NCCL_DEBUG": "WARN",
    # A collective that fails or passes the process group's timeout (init_process_group(timeout=...):
    # 10 min for NCCL) aborts the communicators and ends the process (torch's default, 3, skips the
    # abort; torchrun already sets 1 for its workers).
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    # A watchdog thread stuck in a CUDA or NCCL call is itself watched: the process is aborted after
    # TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC (torch's default 480 s; 300 s is below HEARTBEAT_TIMEOUT's 600 s,
    # so torch's own, more precise verdict comes first).
    "TORCH_NCCL_ENABLE_MONITORING": "1",
    "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC": "300",
    # On a timeout or error, dump the flight recorder (the last 2000 collectives per rank: torch 2.13's
    # TORCH_FR_BUFFER_SIZE default) for `torchfrtrace`, to find the rank that fell behind.
    "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
}


def environment(dist: Distributed, existing: Mapping[str, str]) -> dict[str, str]:
    """The variables to export: the derived settings, then NCCL defaults not already in `existing`."""
    env = dist.as_env()
    env.update({k: v for k, v in NCCL_DEFAULTS.items() if k not in existing})
    return env


def render(env: Mapping[str, str]) -> str:
    """`export KEY='value'` lines; bash `source` restores every value byte-identically."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="configure_environment.py",
        description="Derive torch.distributed settings from SkyPilot's node environment.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--node-ips", default="", help="$SKYPILOT_NODE_IPS: newline-separated, head node first")
    p.add_argument("--node-rank", default="", help="$SKYPILOT_NODE_RANK (empty: 0)")
    p.add_argument("--num-nodes", default="", help="$SKYPILOT_NUM_NODES (empty: number of IPs, or 1)")
    p.add_argument("--gpus-per-node", default="", help="$SKYPILOT_NUM_GPUS_PER_NODE (empty or 0: CPU)")
    p.add_argument(
        "--master-port",
        default=KEY["MASTER_PORT"].default,
        help="rendezvous port on the head node ($MASTER_PORT)",
    )
    p.add_argument("--output", type=Path, default=None, help="env file to write (default: stdout)")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    existing = dict(os.environ)  # read here only: which NCCL values are already set
    try:
        dist = derive(args.node_ips, args.node_rank, args.num_nodes, args.gpus_per_node, args.master_port)
    except InputError as exc:
        if args.verbose:
            raise
        print(f"configure_environment.py: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    text = render(environment(dist, existing))
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
    print(
        f"configure_environment.py: node {dist.node_rank}/{dist.nnodes}, {dist.nproc_per_node} proc(s) per node,"
        f" world size {dist.world_size}, master {dist.master_addr}:{dist.master_port}",
        file=sys.stderr,
    )
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
