"""The rank stages of the NCCL preflight, in their order: node, sanity, rendezvous, correctness,
bandwidth, sweep. Each takes this rank (Rank) and the progress board, and returns what it found;
_nccl_rank.py runs them under their deadlines and turns their findings into the verdict.

Bandwidth follows nccl-tests (doc/PERFORMANCE.md), computed by _nccl_bandwidth.py from each rank's
seconds per operation: warmup, a barrier, `iters` operations, a device sync.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _nccl_bandwidth import (
    GB,
    bandwidth_findings,
    bandwidth_row,
    bandwidth_rows,
    pair_busbw,
    pair_rounds,
    slow_nodes,
    sweep_sizes,
)
from _nccl_board import KEY, Board
from _nccl_checks import (
    Finding,
    check_node,
    check_versions,
    correctness_findings,
    first_line,
    parse_nccl_network,
    parse_nvidia_smi,
    parse_xids,
    rank_label,
)
from _nccl_config import Config, RankIdentity

log = logging.getLogger("nccl_test")

#: Bytes per operation when --size is not given: nccl-tests' default with NCCL; half of it with gloo,
#: where it only proves the path works (no floor) and 4 ranks on 2 shared cores must finish in 15 s.
DEFAULT_SIZE = {"nccl": 32 << 20, "gloo": 16 << 20}
#: Elements of the correctness tensors: odd lengths, so no power-of-two chunking hides an edge.
CORRECTNESS_COUNT = 1_000_003
GATHER_COUNT = 250_007
PATTERN_PERIOD = 13


class Rank:
    """What every stage knows of this rank: configuration, identity, torch, backend, device, size."""

    def __init__(self, cfg: Config, ident: RankIdentity) -> None:
        import torch

        self.torch = torch
        self.cfg, self.id = cfg, ident
        self.rpn = ident.local_world_size
        self.backend = (
            cfg.backend if cfg.backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
        )
        self.device = (
            torch.device("cuda", ident.local_rank) if self.backend == "nccl" else torch.device("cpu")
        )
        self.size = cfg.size or DEFAULT_SIZE[self.backend]

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def pattern(self, rank: int, count: int) -> Any:
        """Rank `rank`'s contribution: rank + 1 plus a period-13 ramp, integer-valued (exact in float32)."""
        torch = self.torch
        base = (torch.arange(count, device=self.device) % PATTERN_PERIOD).float()
        return base + float(rank + 1)

    def contribution(self, count: int) -> Any:
        x = self.pattern(self.id.rank, count)
        if self.cfg.faults.corrupt_rank == self.id.rank:
            x[count // 2] += 1.0
        return x


@dataclass
class Groups:
    """What the rendezvous leaves: the gloo side group (NCCL only), this node's group (when a node has
    more than one rank and the job more than one node), and the NCCL INFO log (None: not captured)."""

    side: Any = None
    node: Any = None
    nccl_log: Path | None = None


@dataclass
class Bandwidth:
    """The bandwidth stage's report rows, pairwise summary (None under 4 nodes) and findings."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    pairwise: dict[str, Any] | None = None
    findings: list[Finding] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------
# node and sanity: this rank alone


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


def node_stage(rank: Rank) -> dict[str, Any]:
    """This rank's info for the others: rank, node, host, versions, device; on local rank 0 the node's
    facts too. The node checks' findings travel in it (`node_findings`), named by rank and node."""
    torch, ident = rank.torch, rank.id
    on_gpu = rank.backend == "nccl"
    gpus = torch.cuda.device_count() if on_gpu else None
    info: dict[str, Any] = {
        "rank": ident.rank,
        "node": ident.node,
        "local_rank": ident.local_rank,
        "host": socket.gethostname(),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
        "device": str(rank.device),
        "device_name": None,
        "node_facts": None,
        "node_findings": [],
    }
    if on_gpu:
        info["versions"]["cuda"] = torch.version.cuda
        info["versions"]["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        if ident.local_rank < (gpus or 0):
            torch.cuda.set_device(rank.device)
            info["device_name"] = torch.cuda.get_device_name(rank.device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // rank.rpn))
    found: list[Finding] = []
    if on_gpu and ident.local_rank >= (gpus or 0):
        label = rank_label(info, ident.rank, rank.rpn)
        found.append(Finding("node", "fail", f"{label} has no GPU: the node shows {gpus}"))
    if ident.local_rank == 0:
        facts = collect_node_facts(gpus_torch=gpus, on_gpu=on_gpu)
        info["node_facts"] = facts
        driver = next((g["driver"] for g in (facts.get("nvidia_smi") or {}).get("gpus", [])), None)
        if driver:
            info["versions"]["driver"] = driver
        found += check_node(
            facts,
            where=f"node {ident.node} ({info['host']})",
            expected_gpus=rank.cfg.expected_gpus,
            min_shm_bytes=rank.cfg.min_shm_bytes,
            backend=rank.backend,
            nnodes=ident.nnodes,
        )
    info["node_findings"] = [
        dataclasses.replace(f, ranks=(ident.rank,), nodes=(ident.node,)).to_json() for f in found
    ]
    return info


def sanity_stage(rank: Rank) -> dict[str, Any]:
    """Exact integer-valued matmul against a CPU int64 reference; device copy bandwidth (GB/s)."""
    torch, device = rank.torch, rank.device
    if rank.backend == "nccl" and rank.id.local_rank >= torch.cuda.device_count():
        return {"matmul_wrong": None, "copy_gbps": None, "error": "no GPU for this local rank"}
    try:
        gen = torch.Generator().manual_seed(rank.id.rank)
        a = torch.randint(-8, 8, (256, 256), generator=gen)
        b = torch.randint(-8, 8, (256, 256), generator=gen)
        want = a @ b
        got = (a.float().to(device) @ b.float().to(device)).cpu().long()
        wrong = int((got != want).sum())
        src = torch.ones(rank.size // 4, device=device)
        dst = torch.empty_like(src)
        dst.copy_(src)
        rank.sync()
        t = time.perf_counter()
        for _ in range(5):
            dst.copy_(src)
        rank.sync()
        secs = (time.perf_counter() - t) / 5
        return {"matmul_wrong": wrong, "copy_gbps": 2 * src.numel() * 4 / GB / secs, "error": None}
    except Exception as err:  # a broken device (Xid 79: "unspecified launch failure") is a finding
        return {
            "matmul_wrong": None,
            "copy_gbps": None,
            "error": f"{type(err).__name__}: {first_line(err)}",
        }


# ---------------------------------------------------------------------------------------------------
# rendezvous: through the store first, then the process group


def join(rank: Rank, board: Board, info: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Every rank's info through the store (a missing rank is named), and the findings of the node and
    sanity checks and of the version comparison: all before any NCCL communicator exists."""
    infos = board.exchange("join", info)
    names = {i["rank"]: rank_label(i, i["rank"], rank.rpn) for i in infos}
    found: list[Finding] = []
    for i in infos:
        found += [
            Finding(**{**f, "ranks": tuple(f["ranks"]), "nodes": tuple(f["nodes"])})
            for f in i["node_findings"]
        ]
        s = i["sanity"]
        if s.get("error") or s.get("matmul_wrong"):
            what = s.get("error") or f"matmul wrong in {s['matmul_wrong']} of 65536 elements"
            found.append(Finding("sanity", "fail", f"{names[i['rank']]}: {what}", (i["rank"],), (i["node"],)))
    found += check_versions(infos, rank.rpn)
    return infos, found


def init_groups(rank: Rank, board: Board) -> Groups:
    """init_process_group (eager NCCL init with device_id: errors surface here), the gloo side group and
    the node groups, then monitored_barrier(wait_all_ranks=True), which names every missing rank."""
    import torch.distributed as dist

    cfg, groups = rank.cfg, Groups()
    board.mark("init_process_group")
    if rank.backend == "nccl" and cfg.capture_nccl_log:
        groups.nccl_log = Path(f"/tmp/skyops-nccl-preflight-{os.getpid()}.log")
        os.environ.update(
            NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET", NCCL_DEBUG_FILE=str(groups.nccl_log)
        )
    pg_timeout = datetime.timedelta(seconds=cfg.stage_timeout + 30)  # our watchdog fires first
    dist.init_process_group(
        rank.backend,
        store=dist.PrefixStore(f"{KEY}/pg", board.store),
        rank=rank.id.rank,
        world_size=rank.id.world_size,
        timeout=pg_timeout,
        device_id=rank.device if rank.backend == "nccl" else None,
    )
    board.mark("gloo side group")
    groups.side = dist.new_group(backend="gloo") if rank.backend == "nccl" else None
    if 1 < rank.rpn < rank.id.world_size:
        board.mark("node groups")
        groups.node, _ = dist.new_subgroups(group_size=rank.rpn)
    board.mark("monitored_barrier")
    dist.monitored_barrier(
        group=groups.side, timeout=datetime.timedelta(seconds=board.remaining()), wait_all_ranks=True
    )
    return groups


# ---------------------------------------------------------------------------------------------------
# correctness


def correctness_stage(
    rank: Rank, board: Board, infos: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Finding]]:
    """all_reduce (sum of rank+1 plus a period-13 ramp: exact in float32), all_gather, two broadcasts;
    every rank's wrong-element counts (exchanged) and the findings that name the culprits."""
    import torch.distributed as dist

    torch, device, n = rank.torch, rank.device, rank.id.world_size
    if rank.cfg.faults.hang_rank == rank.id.rank:
        log.warning("fault injection: rank %d hangs before all_reduce", rank.id.rank)
        time.sleep(rank.cfg.timeout + 60)
    board.mark("all_reduce")
    x = rank.contribution(CORRECTNESS_COUNT)
    dist.all_reduce(x)
    ramp = (torch.arange(CORRECTNESS_COUNT, device=device) % PATTERN_PERIOD).float()
    want = ramp * n + n * (n + 1) / 2  # sum over ranks r of (r + 1 + ramp)
    ar_wrong = int((x != want).sum())
    board.mark("all_gather")
    out = torch.empty(GATHER_COUNT * n, device=device)
    dist.all_gather_single(out, rank.contribution(GATHER_COUNT))
    base = (torch.arange(GATHER_COUNT, device=device) % PATTERN_PERIOD).float()
    ag_wrong = [
        int((out[r * GATHER_COUNT : (r + 1) * GATHER_COUNT] != base + (r + 1)).sum()) for r in range(n)
    ]
    bc_wrong = {}
    for root in sorted({0, n - 1}):
        board.mark(f"broadcast from {root}")
        t = (
            rank.contribution(GATHER_COUNT)
            if rank.id.rank == root
            else torch.full((GATHER_COUNT,), -1.0, device=device)
        )
        dist.broadcast(t, src=root)
        bc_wrong[str(root)] = int((t != rank.pattern(root, GATHER_COUNT)).sum())
    mine = {"all_reduce_wrong": ar_wrong, "all_gather_wrong": ag_wrong, "broadcast_wrong": bc_wrong}
    results = board.exchange("correctness", mine)
    return results, correctness_findings(results, infos, rank.rpn)


# ---------------------------------------------------------------------------------------------------
# bandwidth and sweep


def timed(rank: Rank, op: Callable[[], Any], group: Any = None) -> float:
    """Seconds per operation on this rank: warmup, barrier, `iters` operations, device sync."""
    import torch.distributed as dist

    for _ in range(rank.cfg.warmup):
        op()
    rank.sync()
    dist.barrier(group=group)
    rank.sync()
    start = time.perf_counter()
    for _ in range(rank.cfg.iters):
        op()
    rank.sync()
    return (time.perf_counter() - start) / rank.cfg.iters


def collective_timings(
    rank: Rank, board: Board, size: int, group: Any, n: int, prefix: str
) -> dict[str, float]:
    """Seconds per all_reduce of `size` bytes and per all_gather of a `size`-byte output over `group`
    (n ranks; None: the world), keyed "<prefix>/all_reduce" and "<prefix>/all_gather"."""
    import torch.distributed as dist

    torch = rank.torch
    buf = torch.ones(size // 4, device=rank.device)
    board.mark(f"{prefix}/all_reduce {size}")
    result = {f"{prefix}/all_reduce": timed(rank, lambda: dist.all_reduce(buf, group=group), group)}
    per_rank = size // (4 * n)
    if per_rank:
        src = torch.ones(per_rank, device=rank.device)
        out = torch.empty(per_rank * n, device=rank.device)
        board.mark(f"{prefix}/all_gather {size}")
        result[f"{prefix}/all_gather"] = timed(
            rank, lambda: dist.all_gather_single(out, src, group=group), group
        )
    return result


def pair_timings(rank: Rank, board: Board, rounds: list[list[tuple[int, int]]]) -> dict[str, float | None]:
    """Seconds per send/recv exchange with this node's partner in each round, keyed "pair/<round>"
    (None: this node sits the round out, odd node count). Each rank pairs with its local rank there."""
    import torch.distributed as dist

    torch, node = rank.torch, rank.id.node
    send = torch.ones(rank.size // 4, device=rank.device)
    recv = torch.empty_like(send)
    mine: dict[str, float | None] = {}
    for index, pairs in enumerate(rounds):
        board.mark(f"pair round {index}")
        partner = next((b if a == node else a for a, b in pairs if node in (a, b)), None)
        if partner is None:  # sit this round out, but keep the barriers in step
            dist.barrier()
            dist.barrier()
            mine[f"pair/{index}"] = None
            continue
        peer = partner * rank.rpn + rank.id.local_rank

        def exchange(peer: int = peer) -> None:
            ops = [dist.P2POp(dist.isend, send, peer), dist.P2POp(dist.irecv, recv, peer)]
            for work in dist.batch_isend_irecv(ops):
                work.wait()

        mine[f"pair/{index}"] = timed(rank, exchange)
        dist.barrier()
    return mine


def bandwidth_stage(
    rank: Rank, board: Board, infos: list[dict[str, Any]], accelerator: str | None, groups: Groups
) -> Bandwidth:
    """World and per-node all_reduce/all_gather; pairwise send/recv rounds on >= 4 nodes. Sets each
    info's `network` (the transport NCCL chose there; None when unknown)."""
    cfg, nnodes = rank.cfg, rank.id.nnodes
    mine: dict[str, float | None] = {}
    mine.update(collective_timings(rank, board, rank.size, None, rank.id.world_size, "world"))
    if groups.node is not None:
        mine.update(collective_timings(rank, board, rank.size, groups.node, rank.rpn, "node"))
    rounds = pair_rounds(nnodes, cfg.pair_partners) if nnodes >= 4 and cfg.pair_partners else []
    mine.update(pair_timings(rank, board, rounds))
    timings = board.exchange("bandwidth", {**mine, "network": network(groups.nccl_log)})
    result = Bandwidth()
    result.rows = bandwidth_rows(
        timings,
        [i["node"] for i in infos],
        size=rank.size,
        rounds=rounds,
        rules=cfg.floors,
        accelerator=accelerator,
        backend=rank.backend,
    )
    slow: list[int] = []
    if rounds:
        slow = slow_nodes(pair_busbw(result.rows), cfg.slow_fraction)
        result.pairwise = {"rounds": rounds, "slow_fraction": cfg.slow_fraction, "slow_nodes": slow}
    for i, t in zip(infos, timings, strict=True):
        i["network"] = t["network"]
    if nnodes > 1 and "Socket" in {t["network"] for t in timings}:
        result.findings.append(
            Finding(
                "bandwidth",
                "warn",
                "NCCL uses TCP sockets between nodes on some ranks"
                " (no IB/EFA): expect 10-100x lower inter-node busbw (aws/aws-ofi-nccl#67)",
            )
        )
    result.findings += bandwidth_findings(result.rows, slow, rank.backend)
    return result


def network(nccl_log: Path | None) -> str | None:
    """The network NCCL chose on this rank ("IB", "Socket", ...), from its INFO log (then deleted);
    None if unknown."""
    if nccl_log is None:
        return None
    try:
        text = nccl_log.read_text(errors="replace")
        nccl_log.unlink()
    except OSError:
        return None
    return parse_nccl_network(text)


def sweep_stage(rank: Rank, board: Board) -> list[dict[str, Any]]:
    """all_reduce and all_gather over the whole cluster at each --sweep size (rows with status info)."""
    low, high = rank.cfg.sweep or (rank.size, rank.size)
    n, sizes = rank.id.world_size, sweep_sizes(low, high or rank.size)
    mine: dict[str, float] = {}
    for size in sizes:
        mine.update(collective_timings(rank, board, size, None, n, str(size)))
    timings = board.exchange("sweep", mine)
    nodes = range(rank.id.nnodes)
    return [
        bandwidth_row(op, "sweep", nodes, [t[f"{size}/{op}"] for t in timings], size, n)
        for size in sizes
        for op in ("all_reduce", "all_gather")
        if f"{size}/{op}" in timings[0]
    ]
