#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "python-dotenv==1.2.4",
#     "pyyaml==6.0.4",
#     "psutil==7.2.2",
#     "skypilot==0.14.1",
# ]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Launcher latency, side by side with its floor; prints numbers (recorded in docs/performance-launch.md).

usage: bench_launch.py [--runs N]

- floor: `python -c "import sky; sky.Task.from_yaml('job.yaml')"` (SkyPilot's import + task build);
- dry run: `launch.py --backend sky --dry-run examples/train.py` (config, git gate, the real sky.Task);
  goal: median <= 1.3x the floor;
- `launch.py --help` and a bad input (`--run 1run`): goal < 0.3 s warm (no `import sky`).

Commands alternate (floor, dry run, floor, ...) so machine load hits both alike; the first round is
a warm-up and not counted. Offline: a seeded accelerator catalog in a temporary SKY_RUNTIME_DIR.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = str(REPO / "scripts" / "local" / "launch.py")


def timed(cmd: Sequence[str], env: dict[str, str], expect: int) -> float:
    """Wall seconds of one run of `cmd`; raises if it exits other than `expect`."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"{cmd}: exit {proc.returncode}, expected {expect}: {proc.stderr[-500:]}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=5, help="counted runs of each command")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skyops-bench-") as runtime:
        catalog = Path(runtime, ".sky", "catalogs", "v8", "common")
        catalog.mkdir(parents=True)
        (catalog / "accelerators.csv").write_text("AcceleratorName,Clouds\nH100,\"['AWS']\"\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYOPS_", "SKYPILOT_"))}
        env.update(
            SKY_RUNTIME_DIR=runtime,
            SKYPILOT_DISABLE_LOCAL_API_SERVER="1",
            SKYPILOT_DISABLE_USAGE_COLLECTION="1",
        )
        py = sys.executable
        commands = {
            "floor: import sky + Task.from_yaml": (
                [py, "-c", "import sky; sky.Task.from_yaml('job.yaml')"],
                0,
            ),
            "launch.py --backend sky --dry-run": (
                [py, LAUNCH, "--backend", "sky", "--dry-run", "examples/train.py"],
                0,
            ),
            "launch.py --help": ([py, LAUNCH, "--help"], 0),
            "launch.py bad input (--run 1run)": (
                [py, LAUNCH, "--backend", "sky", "--run", "1run", "examples/train.py"],
                2,
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(args.runs + 1):
            for name, (cmd, expect) in commands.items():
                t = timed(cmd, env, expect)
                if round_:
                    times[name].append(t)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    floor = medians["floor: import sky + Task.from_yaml"]
    print(
        f"{'command':40s} {'median s':>9s} {'min s':>7s} {'max s':>7s}  ratio to floor  (runs={args.runs}, cpus={os.cpu_count()})"
    )
    for name, ts in times.items():
        print(f"{name:40s} {medians[name]:9.3f} {min(ts):7.3f} {max(ts):7.3f}  {medians[name] / floor:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
