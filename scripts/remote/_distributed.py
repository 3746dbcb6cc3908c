"""torch.distributed settings of a node, derived once from SkyPilot's environment.

Standard library only. `derive` is the one place SkyPilot's node contract (SKYPILOT_NODE_IPS,
SKYPILOT_NODE_RANK, SKYPILOT_NUM_NODES, SKYPILOT_NUM_GPUS_PER_NODE) becomes torch.distributed's
settings: configure_environment.py writes its result as the env file job.yaml's `run` sources, and
everything after it (the supervisor, the preflight, the job) reads those keys back with `from_env`.
`identity` is what the supervisor needs of SkyPilot's managed-job keys.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from _contract import KEY

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)


class InputError(ValueError):
    """A value SkyPilot or the env file gave is not valid; the message names it."""


@dataclass(frozen=True)
class Distributed:
    """torch.distributed settings of one node: rendezvous address and port, node count and rank,
    processes per node (GPUs per node, 1 on CPU). Defaults describe one process on a laptop."""

    master_addr: str = "127.0.0.1"
    master_port: int = int(KEY["MASTER_PORT"].default)
    nnodes: int = 1
    node_rank: int = 0
    nproc_per_node: int = 1

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node

    def as_env(self) -> dict[str, str]:
        """The keys configure_environment.py writes (docs/contract.md) and `from_env` reads."""
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "NNODES": str(self.nnodes),
            "NODE_RANK": str(self.node_rank),
            "NPROC_PER_NODE": str(self.nproc_per_node),
            "WORLD_SIZE": str(self.world_size),
        }


def _int(text: str, name: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise InputError(f"{name}: expected an integer, got {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InputError(f"{name}: must be {bound}, got {value}")
    return value


def parse_node_ips(text: str) -> list[str]:
    """SKYPILOT_NODE_IPS (newline-separated, line 1 is the head node) to a list. CRLF, blank lines and
    stray spaces are tolerated (docs/field-cases.md R1, E4). Raises InputError for anything not an IP address or
    host name."""
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
    unset: a laptop is one node, 127.0.0.1, rank 0; an empty port is the contract's default). Raises InputError naming the flag when they
    disagree (docs/field-cases.md R1: 3 nodes but 2 IPs, rank 2 of 2)."""
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
    port = _int(master_port or KEY["MASTER_PORT"].default, "--master-port", 1, 65535)
    return Distributed(ips[0] if ips else "127.0.0.1", port, nnodes, rank, gpus or 1)


def from_env(env: Mapping[str, str]) -> Distributed:
    """The settings configure_environment.py wrote (MASTER_ADDR, MASTER_PORT, NNODES, NODE_RANK,
    NPROC_PER_NODE), as the supervisor and the preflight read them; a missing key takes the laptop
    default. Raises InputError naming the key for a bad value or a rank out of range."""

    def number(key: str, default: int, minimum: int, maximum: int | None = None) -> int:
        text = env.get(key, "").strip()
        return _int(text, key, minimum, maximum) if text else default

    nnodes = number("NNODES", 1, 1)
    rank = number("NODE_RANK", 0, 0)
    if rank >= nnodes:
        raise InputError(f"NODE_RANK: {rank} is out of range for NNODES={nnodes}")
    return Distributed(
        master_addr=env.get("MASTER_ADDR", "").strip() or "127.0.0.1",
        master_port=number("MASTER_PORT", int(KEY["MASTER_PORT"].default), 1, 65535),
        nnodes=nnodes,
        node_rank=rank,
        nproc_per_node=number("NPROC_PER_NODE", 1, 1),
    )


@dataclass(frozen=True)
class Identity:
    """Where an attempt runs: SkyPilot's node rank and node count, the managed job id and task index
    (0 on a laptop), the task id, and SKYPILOT_CLUSTER_INFO (cloud, region, ...; None if absent)."""

    node_rank: int = 0
    num_nodes: int = 1
    managed_job_id: int = 0
    task_index: int = 0
    task_id: str = ""
    cluster_info: Mapping[str, object] | None = None


def task_index_from(task_id: str) -> int:
    """The task index of a managed job's SKYPILOT_TASK_ID (`..._<job_id>-<task_idx>`); 0 when absent."""
    suffix = task_id.strip().rsplit("-", 1)[-1] if "-" in task_id else ""
    return int(suffix) if suffix.isdigit() else 0


def identity(env: Mapping[str, str], nnodes: int) -> Identity:
    """This node's SkyPilot identity; laptop defaults (rank 0, job 0, task 0) when the keys are absent.

    Raises InputError naming the key for a non-integer rank, node count or job id. A malformed
    SKYPILOT_CLUSTER_INFO is ignored (cluster_info None): it is informational.
    """

    def number(key: str, default: int, minimum: int) -> int:
        text = env.get(key, "").strip()
        return _int(text, key, minimum) if text else default

    managed = env.get("SKYPILOT_MANAGED_JOB_ID", "").strip()
    task_id = env.get("SKYPILOT_TASK_ID", "").strip()
    info: Mapping[str, object] | None = None
    try:
        parsed = json.loads(env.get("SKYPILOT_CLUSTER_INFO", "") or "null")
        info = parsed if isinstance(parsed, dict) else None
    except ValueError:
        info = None
    return Identity(
        node_rank=number("SKYPILOT_NODE_RANK", 0, 0),
        num_nodes=number("SKYPILOT_NUM_NODES", nnodes, 1),
        managed_job_id=number("SKYPILOT_MANAGED_JOB_ID", 0, 0),
        task_index=task_index_from(task_id) if managed else 0,
        task_id=task_id,
        cluster_info=info,
    )
