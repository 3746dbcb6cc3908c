"""Bandwidth as nccl-tests reports it, and what the preflight concludes from it: pure, no torch, no I/O.

Sizes, algbw and busbw, floors per accelerator and node count, pairwise rounds and slow-node
detection, and the report rows of the bandwidth and sweep stages (scripts/remote/_nccl_stages.py).

Source of the definitions: NVIDIA/nccl-tests doc/PERFORMANCE.md (algbw = bytes / 1e9 / seconds per
operation; busbw = algbw x a factor per collective). Decision record: docs/decisions/nccl-preflight.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from _contract import FloorRule, parse_size
from _nccl_checks import Finding

GB = 1e9  # nccl-tests reports GB/s = 1e9 bytes/s


def format_size(size: int) -> str:
    """Human form of a byte count, binary units: 33554432 -> "32 MiB"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def parse_sweep(text: str) -> tuple[int, int]:
    """Parse "MIN:MAX" (sizes as in parse_size) into (min_bytes, max_bytes), MIN <= MAX."""
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError(f"invalid sweep {text!r} (expected MIN:MAX, e.g. 1K:64M)")
    lo, hi = parse_size(low), parse_size(high)
    if lo > hi:
        raise ValueError(f"sweep {text!r}: MIN is larger than MAX")
    return lo, hi


def sweep_sizes(low: int, high: int) -> list[int]:
    """Sizes from low to high in bytes, doubling, rounded down to whole float32 elements; high included."""
    sizes, size = [], low
    while size < high:
        sizes.append(size - size % 4)
        size *= 2
    sizes.append(high - high % 4)
    return sorted(set(sizes))


_BUSBW_FACTORS: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "reduce": lambda n: 1.0,
    "sendrecv": lambda n: 1.0,
}


def busbw_factor(op: str, nranks: int) -> float:
    """nccl-tests' bus-bandwidth factor for `op` over `nranks` ranks (doc/PERFORMANCE.md).

    all_reduce 2(n-1)/n; reduce_scatter, all_gather, all_to_all (n-1)/n; broadcast, reduce, sendrecv 1.
    With n = 1 the all_reduce factor is 0: busbw is 0 by definition (nccl-tests#249).
    Raises ValueError for an unknown op or nranks < 1.
    """
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    try:
        return _BUSBW_FACTORS[op](nranks)
    except KeyError:
        raise ValueError(f"unknown op {op!r}; known: {', '.join(_BUSBW_FACTORS)}") from None


def bandwidth(op: str, size_bytes: int, seconds: float, nranks: int) -> tuple[float, float]:
    """(algbw, busbw) in GB/s (1e9 bytes/s) for one operation of `size_bytes` taking `seconds`.

    As in nccl-tests: algbw = size / 1e9 / seconds; busbw = algbw x busbw_factor(op, nranks). For
    all_gather `size_bytes` is the whole output (nranks x the per-rank input), as nccl-tests counts it.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    algbw = size_bytes / GB / seconds
    return algbw, algbw * busbw_factor(op, nranks)


def find_floor(rules: Iterable[FloorRule], accelerator: str | None, nnodes: int) -> FloorRule | None:
    """The rule for `accelerator` (a device name such as "NVIDIA H100 80GB HBM3") on `nnodes` nodes.

    A rule matches when its accelerator is a case-insensitive substring of the name and nnodes lies in
    its range; the longest accelerator wins, then the narrowest node range. None when nothing matches.
    """
    if not accelerator:
        return None
    name = accelerator.lower()
    matches = [
        r
        for r in rules
        if r.accelerator.lower() in name
        and r.min_nodes <= nnodes
        and (r.max_nodes is None or nnodes <= r.max_nodes)
    ]
    if not matches:
        return None
    return max(matches, key=lambda r: (len(r.accelerator), r.max_nodes is not None, r.min_nodes))


def classify(busbw: float, rule: FloorRule | None) -> str:
    """ "fail" below the floor, "warn" below the warning level, "pass" above, "info" without a rule."""
    if rule is None:
        return "info"
    if busbw < rule.floor:
        return "fail"
    if busbw < rule.warn:
        return "warn"
    return "pass"


def pair_rounds(nnodes: int, partners: int = 2) -> list[list[tuple[int, int]]]:
    """Rounds of disjoint node pairs (circle method) until every node has met `partners` others.

    Each round is a list of (a, b) with a < b; with an odd node count one node sits out per round.
    Nodes in a round exchange concurrently, so a round costs one send/recv measurement. Needs
    nnodes >= 2; `partners` is capped at nnodes - 1.
    """
    if nnodes < 2:
        return []
    slots: list[int | None] = [*range(nnodes), *([None] if nnodes % 2 else [])]
    want = min(partners, nnodes - 1)
    met: dict[int, set[int]] = {n: set() for n in range(nnodes)}
    rounds = []
    for _ in range(len(slots) - 1):
        if all(len(m) >= want for m in met.values()):
            break
        pairs = []
        for i in range(len(slots) // 2):
            a, b = slots[i], slots[-1 - i]
            if a is None or b is None:
                continue
            pairs.append((min(a, b), max(a, b)))
            met[a].add(b)
            met[b].add(a)
        rounds.append(sorted(pairs))
        slots = [slots[0], slots[-1], *slots[1:-1]]
    return rounds


def slow_nodes(pair_busbw: Mapping[tuple[int, int], float], fraction: float) -> list[int]:
    """Nodes whose every pair is slow: below `fraction` x the median busbw of all pairs.

    A node needs at least two measured pairs to be judged, so one slow partner cannot condemn the
    other; pair_rounds(partners=2) guarantees two. Nodes sorted ascending; [] for no pairs.
    """
    if not pair_busbw:
        return []
    limit = fraction * statistics.median(pair_busbw.values())
    pairs_of: dict[int, list[bool]] = {}
    for (a, b), busbw in pair_busbw.items():
        for node in (a, b):
            pairs_of.setdefault(node, []).append(busbw < limit)
    return sorted(node for node, slow in pairs_of.items() if len(slow) >= 2 and all(slow))


def bandwidth_row(
    op: str,
    scope: str,
    nodes: Sequence[int],
    seconds: Sequence[float],
    size: int,
    n: int,
    rule: FloorRule | None = None,
) -> dict[str, Any]:
    """One report row from each participating rank's seconds per operation.

    Time = mean over the ranks (nccl-tests' default average); `size` is bytes per rank for all_reduce
    and send/recv, the whole output for all_gather (rounded down to n equal float32 chunks); `n` is
    the group size for busbw_factor (2 for send/recv pairs). Status from classify(busbw, rule).
    """
    mean = statistics.fmean(seconds)
    eff = n * (size // (4 * n)) * 4 if op == "all_gather" else size
    algbw, busbw = bandwidth(op, eff, mean, n)
    return {
        "op": op,
        "scope": scope,
        "nodes": list(nodes),
        "ranks": len(seconds),
        "size_bytes": eff,
        "seconds": mean,
        "algbw_gbps": algbw,
        "busbw_gbps": busbw,
        "floor_gbps": rule.floor if rule else None,
        "warn_gbps": rule.warn if rule else None,
        "status": classify(busbw, rule),
    }


def bandwidth_rows(
    timings: Sequence[Mapping[str, Any]],
    nodes: Sequence[int],
    *,
    size: int,
    rounds: Sequence[Sequence[tuple[int, int]]],
    rules: Sequence[FloorRule],
    accelerator: str | None,
    backend: str,
) -> list[dict[str, Any]]:
    """Report rows from every rank's seconds per operation; `nodes[rank]` is the rank's node.

    Timing keys: "world/all_reduce", "world/all_gather", "node/all_reduce", "node/all_gather",
    "pair/<round>" (None: the rank sat the round out). Floors apply to all_reduce with NCCL only:
    the world row against the rule for the node count, per-node rows against the rule for 1 node.
    """
    nnodes = max(nodes) + 1
    per_node = {k: [r for r, n in enumerate(nodes) if n == k] for k in range(nnodes)}

    def rule_for(op: str, count: int) -> FloorRule | None:
        return find_floor(rules, accelerator, count) if backend == "nccl" and op == "all_reduce" else None

    rows = []
    for op in ("all_reduce", "all_gather"):
        secs = [t[f"world/{op}"] for t in timings if t.get(f"world/{op}") is not None]
        if secs:
            rows.append(
                bandwidth_row(op, "world", range(nnodes), secs, size, len(timings), rule_for(op, nnodes))
            )
    for node, members in per_node.items():
        for op in ("all_reduce", "all_gather"):
            secs = [timings[r][f"node/{op}"] for r in members if timings[r].get(f"node/{op}") is not None]
            if secs:
                rows.append(
                    bandwidth_row(op, f"node {node}", [node], secs, size, len(members), rule_for(op, 1))
                )
    for index, pairs in enumerate(rounds):
        for a, b in pairs:
            secs = [timings[r][f"pair/{index}"] for r in per_node[a] + per_node[b]]
            rows.append({**bandwidth_row("sendrecv", f"pair {a}-{b}", [a, b], secs, size, 2), "round": index})
    return rows


def pair_busbw(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[int, int], float]:
    """{(node a, node b): busbw} from the send/recv rows of bandwidth_rows, for slow_nodes."""
    return {(r["nodes"][0], r["nodes"][1]): r["busbw_gbps"] for r in rows if r["op"] == "sendrecv"}


def bandwidth_findings(rows: Sequence[Mapping[str, Any]], slow: Sequence[int], backend: str) -> list[Finding]:
    """Findings for rows under a floor or warning level, and for slow nodes from the pairwise rounds.

    With gloo a slow node only warns: CPU timings on a shared host are too noisy to move a job.
    """
    found = []
    for r in rows:
        if r["status"] in ("fail", "warn"):
            limit = r["floor_gbps"] if r["status"] == "fail" else r["warn_gbps"]
            word = "floor" if r["status"] == "fail" else "warning level"
            nodes = tuple(r["nodes"]) if r["scope"] != "world" else ()
            found.append(
                Finding(
                    "bandwidth",
                    r["status"],
                    f"{r['op']} busbw {r['busbw_gbps']:.2f} GB/s on {r['scope']} is under"
                    f" the {word} {limit:g} GB/s ({format_size(r['size_bytes'])})",
                    (),
                    nodes,
                )
            )
    for node in slow:
        found.append(
            Finding(
                "bandwidth",
                "fail" if backend == "nccl" else "warn",
                f"node {node} is slow: every send/recv pair it is in runs under the others' median",
                (),
                (node,),
            )
        )
    return found
