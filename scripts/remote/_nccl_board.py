"""How the ranks of the NCCL preflight keep time and see each other: a watchdog and the progress board.

The board is the rendezvous store (a torch.distributed TCPStore): every rank records each step there
(its stage, step and a counter every rank advances alike), all-gathers small JSON values through it
before any process group exists, and reads the verdict from it. When a stage times out, rank 0 reads
the board to name the ranks behind. The watchdog ends a rank that a stuck collective holds.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from _contract import EXIT_BAD_NODE
from _nccl_checks import first_line, rank_label
from _nccl_config import RankIdentity

log = logging.getLogger("nccl_test")

#: Prefix of every key the preflight sets in the store.
KEY = "skyops-preflight"
#: Seconds the watchdog gives `on_timeout` to write the verdict before the process exits regardless.
VERDICT_WRITE_S = 10.0


class Watchdog:
    """Ends a stuck rank: past the stage deadline or the overall one, run `on_timeout` then os._exit(86).

    A daemon thread, so it fires while the main thread blocks in a collective (those release the GIL).
    `on_timeout(stage, why)` gets VERDICT_WRITE_S to write the verdict; then the process exits regardless.
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
            writer.join(VERDICT_WRITE_S)
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(EXIT_BAD_NODE)


class Board:
    """One rank's view of the progress board, and its stage clock (seconds per stage, deadlines).

    `store` is None until connect(). Every exchange and wait ends within the stage's deadline, a second
    before the watchdog's, so a rank that does not publish is named instead of timing the rank out.
    """

    def __init__(self, ident: RankIdentity, watchdog: Watchdog, t0: float) -> None:
        self.id, self.watchdog = ident, watchdog
        self.rpn = ident.local_world_size
        self.store: Any = None
        self.seq = 0
        self.stage = "startup"
        self.stage_started = t0  # "startup": interpreter and torch import
        self.stage_seconds: dict[str, float] = {}

    # -- the stage clock ---------------------------------------------------------------------------

    def enter(self, stage: str, budget: float) -> None:
        """Start `stage` with `budget` seconds (the watchdog enforces it) and record it on the board."""
        now = time.monotonic()
        self.stage_seconds[self.stage] = self.stage_seconds.get(self.stage, 0.0) + now - self.stage_started
        self.stage, self.stage_started = stage, now
        self.watchdog.enter(stage, budget)
        self.mark("start")

    def seconds_per_stage(self, now: float) -> dict[str, float]:
        """Seconds spent in each stage so far, the current one up to `now`."""
        current = self.stage_seconds.get(self.stage, 0.0) + now - self.stage_started
        return {**self.stage_seconds, self.stage: current}

    def remaining(self) -> float:
        """Seconds left in this stage, less a margin so a store wait times out before the watchdog."""
        return max(0.5, self.watchdog.deadline - time.monotonic() - 1.0)

    # -- the store ---------------------------------------------------------------------------------

    def connect(self, init_timeout: float) -> None:
        """Reach the rendezvous store: rank 0 hosts it unless torchrun's agent does. Raises OSError when
        it cannot be hosted, TimeoutError when it cannot be reached (both name the address)."""
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
                f"rendezvous store at {where} unreachable within --init-timeout {init_timeout:g} s"
                f" (rank 0 on node 0 not up, or the port is blocked): {why}"
            ) from None
        self.mark("connected")

    def fresh_store(self, timeout: float = 2.0) -> Any:
        """A second client: the main one may be blocked inside a wait."""
        import torch.distributed as dist

        return dist.TCPStore(
            self.id.master_addr,
            self.id.master_port,
            is_master=False,
            timeout=datetime.timedelta(seconds=timeout),
        )

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

    def fail(self, text: str) -> None:
        """Record on the board that this rank failed in its stage, and why (never raises)."""
        with contextlib.suppress(Exception):
            if self.store is not None:
                self.store.set(f"{KEY}/progress/{self.id.rank}", self._mark_value(self.stage, "failed", text))

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

    def progress(self, store: Any = None) -> list[dict[str, Any] | None]:
        """Every rank's last progress mark (None: never reached the store)."""
        store = store or self.store
        keys = [f"{KEY}/progress/{r}" for r in range(self.id.world_size)]
        present = [store.check([k]) for k in keys]
        values = store.multi_get([k for k, ok in zip(keys, present, strict=True) if ok])
        it = iter(values)
        return [json.loads(next(it)) if ok else None for ok in present]

    def publish_verdict(self, code: int, ack_timeout: float) -> None:
        """Rank 0: publish the exit code, then let the other ranks read it before the store closes."""
        self.store.set(f"{KEY}/verdict", str(code))
        with contextlib.suppress(Exception):
            self.store.wait(
                [f"{KEY}/ack/{r}" for r in range(1, self.id.world_size)],
                datetime.timedelta(seconds=ack_timeout),
            )

    def read_verdict(self) -> int:
        """The other ranks: wait for rank 0's exit code (within the stage deadline) and acknowledge it."""
        self.store.wait([f"{KEY}/verdict"], datetime.timedelta(seconds=self.remaining()))
        code = int(self.store.get(f"{KEY}/verdict"))
        self.store.set(f"{KEY}/ack/{self.id.rank}", "1")
        return code
