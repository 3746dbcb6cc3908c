"""Launcher mode of the NCCL preflight: fork this node's ranks, wait for them under a hard deadline.

torch is imported once, before the fork, so the ranks share it. The launcher's exit code is its ranks'
common verdict (combine_exit_codes). Its own deadline, --timeout + 15 s, comes after the ranks'
watchdogs; once a rank has failed the others get FAIL_GRACE to finish. Past either, the ranks still
running are SIGKILLed: the only SIGKILL the launcher sends. A SIGTERM or SIGINT is passed on to the
ranks once, and the launcher waits for them: the supervisor (run.py) owns the grace period and the
SIGKILL after it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from multiprocessing.process import BaseProcess
from typing import Any

from _contract import EXIT_SIGINT, EXIT_SIGTERM
from _nccl_checks import Finding, combine_exit_codes
from _nccl_config import Config, RankIdentity
from _nccl_rank import run_rank
from _nccl_report import build_report, discard_stale_report, write_report

log = logging.getLogger("nccl_test")

#: Seconds the launcher lets the other ranks finish after the first one failed.
FAIL_GRACE = 2.0
#: Seconds past --timeout before the launcher kills its ranks: their own watchdogs end them first.
DEADLINE_MARGIN = 15.0


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _child(cfg: Config, ident: RankIdentity, t0: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = run_rank(cfg, ident, t0)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def start_ranks(cfg: Config, port: int, t0: float) -> dict[int, BaseProcess]:
    """Fork ranks node_rank*nproc .. +nproc-1 (emulated nodes of --ranks-per-node); {rank: process}."""
    rpn = cfg.ranks_per_node or cfg.nproc
    world = cfg.nnodes * cfg.nproc
    ctx = multiprocessing.get_context("fork")
    procs: dict[int, BaseProcess] = {}
    for local in range(cfg.nproc):
        rank = cfg.node_rank * cfg.nproc + local
        ident = RankIdentity(
            rank, world, rank % rpn, rpn, rank // rpn, cfg.master_addr, port, agent_store=False
        )
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
    return procs


@contextlib.contextmanager
def passing_signals_on(procs: Mapping[int, BaseProcess]) -> Iterator[list[int]]:
    """While inside: the first SIGTERM or SIGINT goes to every rank still running, once; a repeated
    signal changes nothing. Yields the list that holds that first signal's number (empty: none came)."""
    interrupted: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        if interrupted:
            return
        interrupted.append(signum)
        for p in procs.values():
            if p.exitcode is None and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield interrupted
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def wait_ranks(procs: Mapping[int, BaseProcess], t0: float, deadline: float) -> set[int]:
    """Wait until every rank has ended; SIGKILL those still running past `deadline` or FAIL_GRACE after
    the first failure. Returns the ranks killed."""
    killed: set[int] = set()
    first_failure: float | None = None
    while any(p.exitcode is None for p in procs.values()):
        multiprocessing.connection.wait(
            [p.sentinel for p in procs.values() if p.exitcode is None], timeout=0.2
        )
        now = time.monotonic()
        if first_failure is None and any(p.exitcode not in (None, 0) for p in procs.values()):
            first_failure = now
        if now > deadline or (first_failure is not None and now > first_failure + FAIL_GRACE):
            why = "the deadline" if now > deadline else "another rank failed"
            for rank, p in procs.items():
                if p.exitcode is None and p.pid is not None:
                    log.error("rank %d still running %.0f s after %s: killed", rank, now - t0, why)
                    os.kill(p.pid, signal.SIGKILL)
                    killed.add(rank)
            for p in procs.values():
                p.join(5)
    return killed


def report_lost_rank0(cfg: Config, rank0: BaseProcess, killed: bool, t0: float) -> None:
    """Rank 0 was killed or died from a signal, so it wrote no report: write one that says so."""
    how = "killed" if killed else f"signal {-(rank0.exitcode or 0)}"
    report = build_report(
        findings=[Finding("verdict", "fail", f"rank 0 ended without a verdict ({how})", (0,), (0,))],
        meta={
            "world_size": cfg.nnodes * cfg.nproc,
            "nnodes": cfg.nnodes,
            "seconds_to_verdict": time.monotonic() - t0,
        },
    )
    write_report(report, cfg.json_out, cfg.json)


def launch_local(cfg: Config, t0: float) -> int:
    """Fork `cfg.nproc` ranks of this node; return their combined exit code (see combine_exit_codes),
    or 143/130 after a SIGTERM/SIGINT was passed on to them."""
    # Import torch once here: the forked ranks share it (about 4 s of CPU per process saved). Nothing
    # touches CUDA before the fork.
    import torch.distributed  # noqa: F401

    port = cfg.master_port or _free_port(cfg.master_addr)
    if cfg.node_rank == 0 and cfg.json_out:
        discard_stale_report(cfg.json_out)
    procs = start_ranks(cfg, port, t0)
    with passing_signals_on(procs) as interrupted:
        killed = wait_ranks(procs, t0, deadline=t0 + cfg.timeout + DEADLINE_MARGIN)
    if interrupted:
        log.warning("stopped by %s", signal.Signals(interrupted[0]).name)
        return EXIT_SIGTERM if interrupted[0] == signal.SIGTERM else EXIT_SIGINT
    codes = {r: (None if r in killed else p.exitcode) for r, p in procs.items()}
    code = combine_exit_codes(codes)
    for rank, c in codes.items():
        if c is not None and c < 0:
            log.error("rank %d died from signal %d", rank, -c)
    rank0 = procs.get(0)  # on node rank 0 only
    if rank0 is not None and rank0.exitcode is not None and (0 in killed or rank0.exitcode < 0):
        report_lost_rank0(cfg, rank0, 0 in killed, t0)
    log.info(
        "exit %d after %.1f s (rank exit codes: %s)",
        code,
        time.monotonic() - t0,
        ", ".join(f"{r}={'killed' if c is None else c}" for r, c in codes.items()),
    )
    return code
