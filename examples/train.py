#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["torch==2.13.0", "numpy==2.4.6"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""A small, real PyTorch DDP training job: gloo on CPU, NCCL on GPU.

usage: train.py [--steps 300] [--batch-size 64] [--lr 0.05] [--checkpoint-every 50] [--fail-at-step N]

Run it under torchrun (or skyops' supervisor, which does that) for several ranks, or plainly for one.
It fits a linear map y = W x + noise on synthetic data (fixed seed, so every attempt sees the same
problem), touches $HEARTBEAT_FILE every step, checkpoints to $DATA_DIR/$RUN_ID/checkpoint.pt and
resumes from it when started again, and finally writes $DATA_DIR/$RUN_ID/train_result.json:
world_size, steps, first_loss, final_loss, resumed_from_step, backend, attempt, seconds.

Exit codes: 0 done; 1 failed (including --fail-at-step on attempt 1, for recovery demos).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

IN_FEATURES = 32
OUT_FEATURES = 4


@dataclass(frozen=True)
class Settings:
    steps: int
    batch_size: int
    lr: float
    checkpoint_every: int
    fail_at_step: int
    run_dir: Path
    heartbeat: Path | None
    attempt: int
    rank: int
    local_rank: int
    world_size: int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--steps", type=int, default=300, help="optimizer steps in total (across attempts)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per rank per step")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--fail-at-step", type=int, default=0, help="exit 1 at this step on attempt 1 (0: never)")
    return p


def touch(path: Path | None) -> None:
    """Heartbeat: update the file's mtime (create it if needed)."""
    if path is not None:
        path.touch()


def batch(
    step: int, rank: int, batch_size: int, true_w: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic regression batch, deterministic in (step, rank)."""
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randn(batch_size, IN_FEATURES, generator=g)
    y = x @ true_w.T + 0.01 * torch.randn(batch_size, OUT_FEATURES, generator=g)
    return x.to(device), y.to(device)


def train(s: Settings) -> dict[str, object]:
    """Train with DDP; returns the result written to train_result.json."""
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda", s.local_rank) if use_cuda else torch.device("cpu")
    backend = "nccl" if use_cuda else "gloo"
    distributed = s.world_size > 1
    if distributed:
        if use_cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    torch.manual_seed(0)
    true_w = torch.randn(OUT_FEATURES, IN_FEATURES, generator=torch.Generator().manual_seed(42))
    model = nn.Linear(IN_FEATURES, OUT_FEATURES).to(device)
    ddp = DistributedDataParallel(model) if distributed else model
    opt = torch.optim.SGD(ddp.parameters(), lr=s.lr)
    ckpt_path = s.run_dir / "checkpoint.pt"
    start_step, first_loss, ckpt = 0, None, {}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_step, first_loss = int(ckpt["step"]), ckpt["first_loss"]
        print(f"[rank {s.rank}] resumed from step {start_step}", flush=True)
    started = time.monotonic()
    # A run restarted after its last step (e.g. a node failed while shutting down) trains no more
    # and reports the checkpoint's loss: the result of a finished run never changes.
    loss_value = float(ckpt["last_loss"]) if start_step and "last_loss" in ckpt else float("nan")
    for step in range(start_step, s.steps):
        touch(s.heartbeat)
        if s.fail_at_step and step == s.fail_at_step and s.attempt == 1:
            if distributed:
                dist.barrier()  # rank 0 has written the checkpoint of this step
            print(
                f"[rank {s.rank}] failing on purpose at step {step} (attempt 1)", file=sys.stderr, flush=True
            )
            raise SystemExit(1)
        x, y = batch(step, s.rank, s.batch_size, true_w, device)
        loss = nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reported = loss.detach().clone()
        if distributed:
            dist.all_reduce(reported)
            reported /= s.world_size
        loss_value = float(reported)
        if first_loss is None:
            first_loss = loss_value
        if (step + 1) % s.checkpoint_every == 0 or step + 1 == s.steps:
            if s.rank == 0:
                tmp = ckpt_path.with_suffix(".tmp")
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "step": step + 1,
                        "first_loss": first_loss,
                        "last_loss": loss_value,
                    },
                    tmp,
                )
                os.replace(tmp, ckpt_path)
            if s.rank == 0 and (step + 1) % (s.checkpoint_every * 2) == 0:
                print(f"step {step + 1}/{s.steps} loss {loss_value:.5f}", flush=True)
    result = {
        "world_size": s.world_size,
        "steps": s.steps,
        "first_loss": first_loss,
        "final_loss": loss_value if math.isfinite(loss_value) else None,
        "resumed_from_step": start_step,
        "backend": backend if distributed else "none",
        "attempt": s.attempt,
        "seconds": round(time.monotonic() - started, 3),
    }
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ
    run_dir = Path(env.get("DATA_DIR", ".skyops/data")) / env.get("RUN_ID", "train")
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoint_every=max(args.checkpoint_every, 1),
        fail_at_step=args.fail_at_step,
        run_dir=run_dir,
        heartbeat=Path(env["HEARTBEAT_FILE"]) if env.get("HEARTBEAT_FILE") else None,
        attempt=int(env.get("SKYOPS_ATTEMPT", "1") or 1),
        rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
    )
    result = train(settings)
    if settings.rank == 0:
        tmp = run_dir / "train_result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, run_dir / "train_result.json")
        print(f"train_result: {json.dumps(result)}", flush=True)
    if settings.world_size > 1:
        # Everything is written and the process group destroyed: skip the interpreter's teardown,
        # where c10d/gloo threads can hang or abort once a peer has gone (seen as SIGABRT,
        # "terminate called without an active exception", on a loaded 2-core machine).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
