#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["torch==2.13.0", "numpy==2.4.6"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""examples/train.py that fails once: the restart path end to end, locally or on the cloud.

usage: flaky_train.py [train.py options]     (default here: --fail-at-step 10 --checkpoint-every 10)

On attempt 1 (`SKYOPS_ATTEMPT`, set by scripts/remote/run.py) it checkpoints at step 10 and exits 1, a
plain job failure: SkyPilot (or the local backend) restarts it while `max_restarts_on_errors` lasts.
Attempt 2 resumes from `$DATA_DIR/$RUN_ID/checkpoint.pt`, finishes and writes `train_result.json`
with `attempt` 2 and `resumed_from_step` 10.

    make launch JOB=examples/flaky_train.py NODES=2 ARGS="--steps 40"
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train

DEFAULTS = ["--fail-at-step", "10", "--checkpoint-every", "10"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run examples/train.py with a failure on attempt 1 (later flags win over DEFAULTS)."""
    return train.main([*DEFAULTS, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
