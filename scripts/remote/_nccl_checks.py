"""Pure checks of the NCCL preflight (scripts/remote/nccl_test.py): no torch, no environment, no I/O.

Findings and verdicts, the node checks (from facts the node stage collects: /dev/shm, memlock, GPU
counts, nvidia-smi, Xid lines), versions across ranks, the ranks behind a timeout, correctness counts,
parsers for nvidia-smi, kernel-log and NCCL-log text, and the launcher's exit code from its ranks'.
Bandwidth lives in _nccl_bandwidth.py, the report in _nccl_report.py; tests call these directly.

Decision record: docs/decisions/nccl-preflight.md.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from _contract import EXIT_BAD_INPUT, EXIT_BAD_NODE, EXIT_FAILURE, EXIT_OK

#: Xid codes that mean the GPU or its links cannot be trusted (NVIDIA Xid catalogue): double-bit ECC,
#: NVLink error, fallen off the bus, contained/uncontained ECC, GSP errors. Other Xids only warn.
FATAL_XIDS = frozenset({48, 74, 79, 94, 95, 119, 120})


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


def first_line(err: BaseException) -> str:
    """An exception's first line: torch's C++ errors append a whole stack trace."""
    return (str(err).strip().splitlines() or [""])[0]


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
        pci, code = match["pci"], int(match["code"])
        seen.setdefault((pci, code), {"pci": pci, "code": code})
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
