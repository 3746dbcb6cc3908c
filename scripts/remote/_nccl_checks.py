"""Pure parts of the NCCL preflight (scripts/remote/nccl_test.py): no torch, no environment, no I/O.

Sizes, nccl-tests bandwidth (algbw, busbw), floors per accelerator and node count, pairwise rounds
and slow-node detection, parsers for nvidia-smi / kernel-log / NCCL-log text, findings, verdicts and
the JSON report. Only nccl_test.py imports it; tests call these functions directly.

Source of the bandwidth definitions: NVIDIA/nccl-tests doc/PERFORMANCE.md. Decision record:
docs/decisions/nccl-preflight.md.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from _contract import EXIT_BAD_INPUT, EXIT_BAD_NODE, EXIT_FAILURE, EXIT_OK, REASON_PREFLIGHT_FAILED

SCHEMA = 1
GB = 1e9  # nccl-tests reports GB/s = 1e9 bytes/s
#: Xid codes that mean the GPU or its links cannot be trusted (NVIDIA Xid catalogue): double-bit ECC,
#: NVLink error, fallen off the bus, contained/uncontained ECC, GSP errors. Other Xids only warn.
FATAL_XIDS = frozenset({48, 74, 79, 94, 95, 119, 120})

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse a byte count with an optional binary suffix: "4096", "1K", "32M", "1GiB" (K = 1024).

    Raises ValueError for anything else or for a size under 4 bytes (one float32).
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r} (expected e.g. 32M, 1G, 4096)")
    value = int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")
    if value < 4:
        raise ValueError(f"size {text!r} is under 4 bytes")
    return value


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


@dataclass(frozen=True)
class FloorRule:
    """A busbw floor and warning level (GB/s) for an accelerator type on a range of node counts."""

    accelerator: str
    min_nodes: int
    max_nodes: int | None  # None: no upper bound ("2+")
    floor: float
    warn: float

    def spec(self) -> str:
        """The rule as written in --floors: "H100@2+=10:40"."""
        nodes = f"{self.min_nodes}+" if self.max_nodes is None else str(self.min_nodes)
        return f"{self.accelerator}@{nodes}={self.floor:g}:{self.warn:g}"


_FLOOR_RE = re.compile(
    r"^(?P<acc>[A-Za-z0-9_.-]+)@(?P<nodes>\d+)(?P<plus>\+?)=(?P<floor>[0-9.]+)(?::(?P<warn>[0-9.]+))?$"
)


def parse_floors(spec: str) -> tuple[FloorRule, ...]:
    """Parse a comma-separated floor table: `ACCEL@NODES=FLOOR[:WARN]`, NODES an int or `N+`.

    Example: "H100@1=100:200,H100@2+=10:40". FLOOR and WARN are all_reduce busbw in GB/s; WARN
    defaults to FLOOR (no warning band) and must be >= FLOOR; FLOOR 0 means warn only. An empty spec
    is an empty table (no floors). Raises ValueError naming the bad entry.
    """
    rules = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        match = _FLOOR_RE.match(entry)
        if not match:
            raise ValueError(
                f"invalid floor {entry!r} (expected ACCEL@NODES=FLOOR[:WARN], e.g. H100@2+=10:40)"
            )
        try:
            floor = float(match["floor"])
            warn = float(match["warn"]) if match["warn"] is not None else floor
        except ValueError:
            raise ValueError(f"invalid number in floor {entry!r}") from None
        nodes = int(match["nodes"])
        if nodes < 1 or warn < floor:
            raise ValueError(f"invalid floor {entry!r}: NODES must be >= 1 and WARN >= FLOOR")
        rules.append(FloorRule(match["acc"], nodes, None if match["plus"] else nodes, floor, warn))
    return tuple(rules)


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


@dataclass(frozen=True)
class Finding:
    """One failed or doubtful check: which stage, how bad, what, and where (ranks, nodes)."""

    stage: str
    severity: str  # "fail" or "warn"
    message: str
    ranks: tuple[int, ...] = ()
    nodes: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ranks": list(self.ranks), "nodes": list(self.nodes)}


def verdict_of(findings: Iterable[Finding]) -> tuple[str, int]:
    """("fail", 86) if any finding fails, else ("warn", 0) if any warns, else ("pass", 0)."""
    severities = {f.severity for f in findings}
    if "fail" in severities:
        return "fail", EXIT_BAD_NODE
    if "warn" in severities:
        return "warn", EXIT_OK
    return "pass", EXIT_OK


def rank_label(info: Mapping[str, Any] | None, rank: int, ranks_per_node: int) -> str:
    """ "rank 3 (node 1, local rank 1, host h)" from a rank's published info, or from the rank alone."""
    if info is None:
        node, local = divmod(rank, ranks_per_node)
        return f"rank {rank} (node {node}, local rank {local})"
    return f"rank {rank} (node {info['node']}, local rank {info['local_rank']}, host {info['host']})"


def check_node(
    facts: Mapping[str, Any],
    *,
    where: str,
    expected_gpus: int | None,
    min_shm_bytes: int,
    backend: str,
    nnodes: int,
) -> list[Finding]:
    """Findings for one node's facts (see collect_node_facts); `where` names the node in messages.

    Fails: /dev/shm missing or with less than `min_shm_bytes` available; torch or nvidia-smi seeing a
    GPU count other than SKYPILOT_NUM_GPUS_PER_NODE (`expected_gpus`, None: unknown); nvidia-smi
    failing on a GPU node; uncorrected ECC errors; fatal Xid codes. Warns: memlock limited on a
    multi-node NCCL run (RDMA needs it unlimited, NCCL then falls back to sockets); other Xid codes.
    """
    found: list[Finding] = []

    def add(severity: str, message: str) -> None:
        found.append(Finding("node", severity, f"{where}: {message}"))

    shm_free = facts.get("shm_free_bytes")
    if shm_free is None:
        add("fail", "/dev/shm is missing (NCCL's shared-memory transport and DataLoader workers need it)")
    elif shm_free < min_shm_bytes:
        add(
            "fail",
            f"/dev/shm has {shm_free / 2**30:.2f} GiB available (size {facts['shm_total_bytes'] / 2**30:.2f} GiB),"
            f" under the {min_shm_bytes / 2**30:.2f} GiB minimum: 'Error while creating shared memory"
            " segment' (NVIDIA/nccl#342); give the container a larger --shm-size",
        )
    memlock = facts.get("memlock_bytes")  # None: unlimited
    if backend == "nccl" and nnodes > 1 and memlock is not None:
        add(
            "warn",
            f"memlock ulimit is {memlock // 1024} KiB, not unlimited: IB/EFA RDMA may fall back to sockets",
        )
    gpus = facts.get("gpus_torch")
    if expected_gpus and gpus is not None and gpus != expected_gpus:
        add("fail", f"torch sees {gpus} of {expected_gpus} GPUs (SKYPILOT_NUM_GPUS_PER_NODE={expected_gpus})")
    smi = facts.get("nvidia_smi")
    if smi is not None:
        if smi.get("error"):
            add("fail", f"nvidia-smi failed: {smi['error']}")
        gpus_smi = len(smi.get("gpus", []))
        if expected_gpus and not smi.get("error") and gpus_smi != expected_gpus:
            add("fail", f"nvidia-smi lists {gpus_smi} of {expected_gpus} GPUs")
        for gpu in smi.get("gpus", []):
            if gpu.get("ecc_uncorrected"):
                add(
                    "fail",
                    f"GPU {gpu['index']} ({gpu['bus_id']}) has {gpu['ecc_uncorrected']} uncorrected ECC errors",
                )
    for xid in facts.get("xids") or []:
        fatal = xid["code"] in FATAL_XIDS
        add("fail" if fatal else "warn", f"kernel log: Xid {xid['code']} on {xid['pci']}")
    return found


def check_versions(infos: Sequence[Mapping[str, Any]], ranks_per_node: int) -> list[Finding]:
    """Fail when torch, CUDA, NCCL or driver versions differ across ranks (silent hangs: NVIDIA/nccl#1634).

    Each info carries a `versions` dict; a key missing on some ranks is compared only where present.
    The most common value is taken as expected; the ranks with another value are named.
    """
    found = []
    for key in ("torch", "cuda", "nccl", "driver"):
        values = {i["rank"]: i["versions"][key] for i in infos if key in i["versions"]}
        counts = Counter(values.values())
        if len(counts) <= 1:
            continue
        expected = counts.most_common(1)[0][0]
        odd = sorted(r for r, v in values.items() if v != expected)
        by_rank = {i["rank"]: i for i in infos}
        listed = "; ".join(f"{rank_label(by_rank[r], r, ranks_per_node)} has {values[r]}" for r in odd)
        found.append(
            Finding(
                "rendezvous",
                "fail",
                f"{key} versions differ across ranks (most have {expected}): {listed}",
                tuple(odd),
                tuple(sorted({by_rank[r]["node"] for r in odd})),
            )
        )
    return found


def laggards(progress: Sequence[Mapping[str, Any] | None], ranks_per_node: int) -> list[Finding]:
    """Name the ranks that hold a run up, from each rank's last progress mark (None: never seen).

    Every rank makes the same marks in the same order, so a mark's `seq` says how far a rank got.
    Named: ranks that never reached the store; ranks that failed (with their error); running ranks
    behind the furthest mark. When no rank is behind, every running rank is named as waiting at the
    same step: the step itself hangs (the fabric, not one node).
    """
    found = []
    furthest = max((p["seq"] for p in progress if p is not None), default=0)
    running = {r: p for r, p in enumerate(progress) if p is not None and p["state"] == "running"}
    behind = {r: p for r, p in running.items() if p["seq"] < furthest}
    for rank, mark in enumerate(progress):
        label = rank_label(mark, rank, ranks_per_node)
        if mark is None:
            node = rank // ranks_per_node
            found.append(
                Finding("connect", "fail", f"{label} never reached the rendezvous store", (rank,), (node,))
            )
            continue
        at = f"{mark['stage']}/{mark['step']}"
        if mark["state"] != "running":
            text = f"{label} {mark['state']} in {at}" + (f": {mark['error']}" if mark.get("error") else "")
        elif rank in behind:
            text = f"{label} stopped at {at} while others got further"
        elif not behind and len(found) == 0 and rank == min(running):
            text = f"every rank waits at {at} (all {len(running)} running ranks): the step itself hangs"
        else:
            continue
        found.append(Finding(mark["stage"], "fail", text, (rank,), (mark["node"],)))
    return found


def correctness_findings(
    results: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]], rpn: int
) -> list[Finding]:
    """Findings from every rank's correctness counts (zero tolerance, as nccl-tests' `#wrong`).

    Each result holds `all_reduce_wrong` (int), `all_gather_wrong` (list: wrong elements per source
    rank) and `broadcast_wrong` ({root: int}). A source whose all_gather slot is wrong on any rank is
    named as the one that contributed wrong data; all_reduce and broadcast errors name the receivers.
    """
    found = []
    world = len(results)
    label = {i["rank"]: rank_label(i, i["rank"], rpn) for i in infos}
    node = {i["rank"]: i["node"] for i in infos}
    for src in range(world):
        seen = [r for r in range(world) if results[r]["all_gather_wrong"][src]]
        if seen:
            total = sum(results[r]["all_gather_wrong"][src] for r in seen)
            found.append(
                Finding(
                    "correctness",
                    "fail",
                    f"{label[src]} contributed wrong data: all_gather slot wrong in"
                    f" {total} elements on {len(seen)} of {world} ranks",
                    (src,),
                    (node[src],),
                )
            )
    wrong_ar = [r for r in range(world) if results[r]["all_reduce_wrong"]]
    if wrong_ar:
        total = sum(results[r]["all_reduce_wrong"] for r in wrong_ar)
        found.append(
            Finding(
                "correctness",
                "fail",
                f"all_reduce #wrong = {total} elements, on {len(wrong_ar)} of {world} ranks"
                f" ({', '.join(label[r] for r in wrong_ar[:4])}{', ...' if len(wrong_ar) > 4 else ''})",
                tuple(wrong_ar),
                tuple(sorted({node[r] for r in wrong_ar})),
            )
        )
    for root in sorted({int(k) for res in results for k in res["broadcast_wrong"]}):
        bad = [r for r in range(world) if results[r]["broadcast_wrong"].get(str(root))]
        if bad:
            found.append(
                Finding(
                    "correctness",
                    "fail",
                    f"broadcast from {label[root]}: wrong on {len(bad)} of {world} ranks",
                    tuple(sorted({root, *bad})),
                    tuple(sorted({node[r] for r in (root, *bad)})),
                )
            )
    return found


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


def build_report(
    *,
    findings: Sequence[Finding],
    meta: Mapping[str, Any],
    infos: Sequence[Mapping[str, Any]] = (),
    correctness: Sequence[Mapping[str, Any]] | None = None,
    rows: Sequence[Mapping[str, Any]] = (),
    pairwise: Mapping[str, Any] | None = None,
    sweep: Sequence[Mapping[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """The JSON report (fields in the module docstring). `error` marks an internal error (exit 1)."""
    verdict, code = verdict_of(findings)
    if error is not None:
        verdict, code = "error", EXIT_FAILURE
    return {
        "schema": SCHEMA,
        "verdict": verdict,
        "exit_code": code,
        "reason": REASON_PREFLIGHT_FAILED if verdict == "fail" else None,
        "error": error,
        "failures": [f.to_json() for f in findings if f.severity == "fail"],
        "warnings": [f.to_json() for f in findings if f.severity == "warn"],
        **meta,
        "ranks": list(infos),
        "correctness": list(correctness) if correctness is not None else None,
        "bandwidth": list(rows),
        "pairwise": dict(pairwise) if pairwise is not None else None,
        "sweep": list(sweep) if sweep is not None else None,
    }


def format_table(report: Mapping[str, Any]) -> str:
    """The report for people: a header line, bandwidth rows, then one line per finding."""
    head = (
        f"NCCL preflight: {report['verdict'].upper()} (exit {report['exit_code']}); {report.get('backend')},"
        f" {report.get('world_size')} ranks on {report.get('nnodes')} node(s),"
        f" {format_size(report.get('size_bytes') or 0)} x {report.get('iters')} iters,"
        f" {report.get('seconds_to_verdict', 0):.1f} s"
    )
    lines = [head]
    rows = list(report.get("bandwidth") or []) + list(report.get("sweep") or [])
    if rows:
        lines.append(
            f"  {'op':<11}{'scope':<12}{'ranks':>6}{'size':>11}{'time us':>11}{'algbw GB/s':>12}{'busbw GB/s':>12}  status"
        )
        for r in rows:
            floor = f" (floor {r['floor_gbps']:g})" if r.get("floor_gbps") is not None else ""
            lines.append(
                f"  {r['op']:<11}{r['scope']:<12}{r['ranks']:>6}{format_size(r['size_bytes']):>11}"
                f"{r['seconds'] * 1e6:>11.0f}{r['algbw_gbps']:>12.3f}{r['busbw_gbps']:>12.3f}  {r['status']}{floor}"
            )
    lines += [f"  FAIL {f['message']}" for f in report.get("failures", [])]
    lines += [f"  warn {f['message']}" for f in report.get("warnings", [])]
    if report.get("error"):
        lines.append(f"  ERROR {report['error']}")
    return "\n".join(lines)


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Parse `nvidia-smi --query-gpu=index,pci.bus_id,name,driver_version,ecc.errors.uncorrected.volatile.total
    --format=csv,noheader,nounits` output: one dict per GPU; an ECC count "[N/A]" becomes None."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        ecc = parts[4]
        gpus.append(
            {
                "index": int(parts[0]),
                "bus_id": parts[1],
                "name": parts[2],
                "driver": parts[3],
                "ecc_uncorrected": int(ecc) if ecc.isdigit() else None,
            }
        )
    return gpus


_XID_RE = re.compile(r"NVRM: Xid \((?P<pci>[^)]*)\): (?P<code>\d+)")


def parse_xids(text: str) -> list[dict[str, Any]]:
    """Xid events in kernel-log text ("NVRM: Xid (PCI:0000:3b:00): 79, ..."), first of each (pci, code)."""
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for match in _XID_RE.finditer(text):
        item = {"pci": match["pci"], "code": int(match["code"])}
        seen.setdefault((item["pci"], item["code"]), item)
    return list(seen.values())


def parse_nccl_network(text: str) -> str | None:
    """The network NCCL chose, from an NCCL_DEBUG=INFO log ("Using network IB" -> "IB"); None if absent."""
    found = re.findall(r"Using network (\S.*?)\s*$", text, flags=re.MULTILINE)
    return found[-1] if found else None


def combine_exit_codes(codes: Mapping[int, int | None]) -> int:
    """The launcher's exit code from its ranks' (None: killed by the launcher; negative: a signal).

    All 0 -> 0; any 2 -> 2; any 86, signal or kill -> 86; otherwise (internal errors) 1.
    """
    values = list(codes.values())
    if all(c == EXIT_OK for c in values):
        return EXIT_OK
    if EXIT_BAD_INPUT in values:
        return EXIT_BAD_INPUT
    if any(c is None or c < 0 or c == EXIT_BAD_NODE for c in values):
        return EXIT_BAD_NODE
    return EXIT_FAILURE
