"""One rank of the NCCL preflight: its stages in order, each under its deadline, and the verdict.

Every rank runs the same stages (_nccl_stages.py) and records its progress on the board
(_nccl_board.py); rank 0 writes the report and publishes the exit code, and every rank exits with it.
A stage that raises or times out ends the run with 86; rank 0 then names the ranks behind from the
board. Under torchrun this is the whole process; in launcher mode each forked rank runs it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from _contract import EXIT_BAD_NODE, EXIT_FAILURE, EXIT_OK, EXIT_SIGINT
from _nccl_bandwidth import find_floor
from _nccl_board import Board, Watchdog
from _nccl_checks import Finding, first_line, laggards, rank_label, verdict_of
from _nccl_config import Config, RankIdentity
from _nccl_report import build_report, discard_stale_report, publish, write_sweep_plot
from _nccl_stages import (
    Groups,
    Rank,
    bandwidth_stage,
    correctness_stage,
    init_groups,
    join,
    node_stage,
    sanity_stage,
    sweep_stage,
)

log = logging.getLogger("nccl_test")

#: Seconds rank 0 waits for the other ranks to read the verdict before closing the store.
ACK_TIMEOUT = 10.0
#: Seconds the other ranks' watchdogs wait past a deadline, so that rank 0 explains the timeout first.
EXPLAIN_GRACE = 2.0


class RankRun:
    """The stages of one rank and what they found; rank 0 also writes the report."""

    def __init__(self, cfg: Config, ident: RankIdentity, t0: float) -> None:
        self.cfg, self.id, self.t0 = cfg, ident, t0
        self.rank = Rank(cfg, ident)
        self.rpn = ident.local_world_size
        self.infos: list[dict[str, Any]] = []
        self.findings: list[Finding] = []
        self.correctness: list[dict[str, Any]] | None = None
        self.rows: list[dict[str, Any]] = []
        self.pairwise: dict[str, Any] | None = None
        self.sweep: list[dict[str, Any]] | None = None
        self.accelerator = cfg.accelerator
        self.groups: Groups | None = None  # set once the process group exists
        # One report per run: the watchdog's thread and the main thread can both reach a verdict at
        # the same deadline (a rank that never joins fails connect just as the stage times out).
        self._emit_lock = threading.Lock()
        self._emitted: dict[str, Any] | None = None
        grace = 0.0 if ident.rank == 0 else EXPLAIN_GRACE
        self.watchdog = Watchdog(t0 + cfg.timeout, self.on_timeout, grace=grace)
        self.board = Board(ident, self.watchdog, t0)

    @property
    def stage(self) -> str:
        return self.board.stage

    # -- the flow ----------------------------------------------------------------------------------

    def run(self) -> int:
        cfg, rank = self.cfg, self.id.rank
        if rank == 0 and cfg.json_out:
            discard_stale_report(cfg.json_out)
        if cfg.faults.skip_rank == rank:  # a dead node: no contact at all, then gone
            log.warning("fault injection: rank %d never joins", rank)
            self.watchdog.stop()
            time.sleep(cfg.timeout)
            return EXIT_BAD_NODE
        self.board.enter("connect", self.init_left())
        self.board.connect(cfg.init_timeout)
        self.board.enter("node", cfg.stage_timeout)
        info = node_stage(self.rank)
        self.board.enter("sanity", cfg.stage_timeout)
        info["sanity"] = sanity_stage(self.rank)
        self.board.enter("rendezvous", self.init_left())
        groups = self.rendezvous(info)
        if groups is None:
            return self.finish()
        self.board.enter("correctness", cfg.stage_timeout)
        self.correctness, found = correctness_stage(self.rank, self.board, self.infos)
        self.findings += found
        if verdict_of(self.findings)[0] == "fail":
            return self.finish()
        self.board.enter("bandwidth", cfg.stage_timeout)
        measured = bandwidth_stage(self.rank, self.board, self.infos, self.accelerator, groups)
        self.rows, self.pairwise = measured.rows, measured.pairwise
        self.findings += measured.findings
        if cfg.sweep:
            self.board.enter("sweep", cfg.stage_timeout * 2)
            self.sweep = sweep_stage(self.rank, self.board)
        return self.finish()

    def init_left(self) -> float:
        """Seconds left of --init-timeout, counted from this process's start (at least 1)."""
        return max(1.0, self.t0 + self.cfg.init_timeout - time.monotonic())

    def rendezvous(self, info: dict[str, Any]) -> Groups | None:
        """Join through the store, check what every rank found, then init the process group and its
        groups. None when the checks failed: no NCCL communicator is made then."""
        self.infos, found = join(self.rank, self.board, info)
        self.accelerator = self.accelerator or self.infos[0]["device_name"]
        self.findings += found
        if verdict_of(self.findings)[0] == "fail":
            return None
        self.watchdog.enter("rendezvous", self.cfg.stage_timeout)  # everyone joined: init has its own budget
        self.groups = init_groups(self.rank, self.board)
        return self.groups

    def finish(self) -> int:
        """Verdict: rank 0 reports and publishes the exit code; every rank exits with it."""
        self.board.enter("verdict", self.cfg.stage_timeout)
        code = verdict_of(self.findings)[1]
        if self.id.rank == 0:
            self.emit(self.findings)
            self.board.publish_verdict(code, ACK_TIMEOUT)
        else:
            code = self.board.read_verdict()
        if code == EXIT_OK and self.groups is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
        self.watchdog.stop()
        return code

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
            progress = self.board.progress(self.board.fresh_store())
            others = [f for f in laggards(progress, self.rpn) if 0 not in f.ranks]
        except Exception as err:  # the board is unreadable: still write what we know
            others = []
            own = dataclasses.replace(own, message=f"{message}; progress board unreadable: {first_line(err)}")
        self.emit([*self.findings, *(others or [own])])

    def on_error(self, err: BaseException) -> int:
        """A stage raised: publish it; rank 0 names the culprits from the board and writes the report."""
        text = f"{type(err).__name__}: {first_line(err)}"
        log.error("stage %s failed: %s", self.stage, text)
        if self.id.rank != 0:
            self.board.fail(text)
            return EXIT_BAD_NODE
        culprits: list[Finding] = []
        try:
            if self.board.store is not None:
                time.sleep(0.5)  # let a peer that failed first publish why
                culprits = [f for f in laggards(self.board.progress(), self.rpn) if 0 not in f.ranks]
        except Exception:
            culprits = []
        label = rank_label(None, 0, self.rpn)
        own = Finding(self.stage, "fail", f"{label} in {self.stage}: {text}", (0,), (self.id.node,))
        self.emit([*self.findings, *culprits, own])
        return EXIT_BAD_NODE

    # -- report ------------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "backend": self.rank.backend,
            "world_size": self.id.world_size,
            "nnodes": self.id.nnodes,
            "ranks_per_node": self.rpn,
            "accelerator": self.accelerator,
            "size_bytes": self.rank.size,
            "iters": self.cfg.iters,
            "warmup": self.cfg.warmup,
            "seconds_to_verdict": now - self.t0,
            "stages": {k: round(v, 3) for k, v in self.board.seconds_per_stage(now).items()},
            "plot": None,
        }

    def emit(self, findings: Sequence[Finding], error: str | None = None) -> dict[str, Any]:
        """Rank 0: build the report, write the sweep plot and --json-out, print JSON (--json), the table.

        Once per run: a second call (the watchdog's thread and the main thread, at the same deadline)
        waits for the first to finish writing and returns its report, so the file and stdout agree."""
        with self._emit_lock:
            if self._emitted is None:
                self._emitted = self._publish(findings, error)
            return self._emitted

    def _publish(self, findings: Sequence[Finding], error: str | None) -> dict[str, Any]:
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
            backend, n = self.rank.backend, self.id.nnodes
            title = f"NCCL preflight sweep: {backend}, {self.id.world_size} ranks on {n} node(s)"
            rule = find_floor(self.cfg.floors, self.accelerator, n) if backend == "nccl" else None
            plot = write_sweep_plot(self.sweep, self.cfg.plot_out, title, rule)
            report["plot"] = str(plot) if plot is not None else None
        publish(report, self.cfg.json_out, self.cfg.json)
        return report


def run_rank(cfg: Config, ident: RankIdentity, t0: float) -> int:
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
