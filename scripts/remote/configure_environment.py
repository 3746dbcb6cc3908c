#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = []
# ///
"""Derive torch.distributed settings from SkyPilot's node contract; write a bash-sourceable env file.

usage: configure_environment.py --node-ips "$SKYPILOT_NODE_IPS" --node-rank "$SKYPILOT_NODE_RANK"
           --num-nodes "$SKYPILOT_NUM_NODES" --gpus-per-node "$SKYPILOT_NUM_GPUS_PER_NODE"
           [--master-port 29500] [--output FILE]

Writes `export KEY='value'` lines (to FILE, atomically, or to stdout) that `source` restores
byte-identically: MASTER_ADDR (the first line of the node IPs), MASTER_PORT, NNODES, NODE_RANK,
NPROC_PER_NODE (GPUs per node, or 1 on CPU) and WORLD_SIZE (NNODES * NPROC_PER_NODE), plus NCCL
defaults that never replace a value already set in the environment. With nothing set (a laptop) it
describes one node: 127.0.0.1, rank 0.

Exit codes: 0 written; 2 bad input (one line naming the flag, nothing written).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

EXIT_OK = 0
EXIT_BAD_INPUT = 2

#: Set only where the environment has no value (SkyPilot may set NCCL variables itself:
#: ../shared/notes/skypilot.md). Async error handling turns a dead peer into an error, not a hang.
NCCL_DEFAULTS: dict[str, str] = {
    "NCCL_DEBUG": "WARN",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
}
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


class InputError(Exception):
    """Bad input: the message names the flag."""


@dataclass(frozen=True)
class Distributed:
    """torch.distributed settings of one node."""

    master_addr: str
    master_port: int
    nnodes: int
    node_rank: int
    nproc_per_node: int

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def as_env(self) -> dict[str, str]:
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "NNODES": str(self.nnodes),
            "NODE_RANK": str(self.node_rank),
            "NPROC_PER_NODE": str(self.nproc_per_node),
            "WORLD_SIZE": str(self.world_size),
        }


def _int(text: str, flag: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise InputError(f"{flag}: expected an integer, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InputError(f"{flag}: must be {bound}, got {value}")
    return value


def parse_node_ips(text: str) -> list[str]:
    """SKYPILOT_NODE_IPS (newline-separated, line 1 is the head node) to a list. CRLF, blank lines
    and stray spaces are tolerated (CASES.md R1, E4). Raises InputError for anything not an IP address
    or host name."""
    ips = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            if not _HOSTNAME_RE.match(ip):
                raise InputError(f"--node-ips: {ip!r} is not an IP address or host name") from None
    return ips


def derive(
    node_ips: str, node_rank: str, num_nodes: str, gpus_per_node: str, master_port: str
) -> Distributed:
    """Distributed settings from SkyPilot's values, given as the strings SkyPilot sets (empty when
    unset). Raises InputError naming the flag when they disagree (CASES.md R1)."""
    ips = parse_node_ips(node_ips)
    nnodes = _int(num_nodes, "--num-nodes", 1) if num_nodes.strip() else max(len(ips), 1)
    if ips and len(ips) != nnodes:
        raise InputError(f"--node-ips: {nnodes} nodes (--num-nodes) but {len(ips)} IPs")
    if not ips and nnodes > 1:
        raise InputError(f"--node-ips: empty, but --num-nodes is {nnodes}")
    rank = _int(node_rank, "--node-rank", 0) if node_rank.strip() else 0
    if rank >= nnodes:
        raise InputError(f"--node-rank: {rank} is out of range for {nnodes} node(s) (0..{nnodes - 1})")
    gpus = _int(gpus_per_node, "--gpus-per-node", 0) if gpus_per_node.strip() else 0
    port = _int(master_port, "--master-port", 1, 65535)
    return Distributed(ips[0] if ips else "127.0.0.1", port, nnodes, rank, gpus or 1)


def environment(dist: Distributed, existing: Mapping[str, str]) -> dict[str, str]:
    """The variables to export: the derived settings, then NCCL defaults not already in `existing`."""
    env = dist.as_env()
    env.update({k: v for k, v in NCCL_DEFAULTS.items() if k not in existing})
    return env


def render(env: Mapping[str, str]) -> str:
    """`export KEY='value'` lines; bash `source` restores every value byte-identically."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    p.add_argument("--master-port", default="29500", help="rendezvous port on the head node")
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
