#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = [
#     "torch==2.13.0",
#     "matplotlib==3.11.2",
# ]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""NCCL preflight: find a dead-on-arrival node or fabric before training starts.

Usage:
    nccl_test.py --nproc 4                      # 4 local ranks (gloo on CPU, NCCL on GPUs)
    nccl_test.py --nproc 4 --ranks-per-node 1   # 4 emulated nodes: pairwise rounds run too
    nccl_test.py --json-out DIR/nccl-report.json  # on a node: NPROC_PER_NODE, NNODES, NODE_RANK,
                                                  # MASTER_ADDR, MASTER_PORT (+1) from the environment
    torchrun --nproc-per-node 8 ... nccl_test.py --json-out report.json   # one rank per process
    nccl_test.py --nproc 2 --sweep 1K:64M --plot-out sweep.png             # busbw against size

Modes. Under torchrun (RANK, LOCAL_RANK and WORLD_SIZE set) the process is one rank. Otherwise it is a
launcher: it imports torch once and forks `--nproc` ranks (ranks node_rank*nproc .. +nproc-1), waits
for them under a hard deadline and exits with their common verdict on every node (torchrun turns a
worker's 86 into 1: under torchrun read `exit_code` from the report).

Stages, each with a deadline (a stuck stage ends the run with 86 and names the ranks behind):
    connect      reach the rendezvous store (rank 0 hosts it, or torchrun's agent)
    node         local rank 0 of each node: GPUs vs SKYPILOT_NUM_GPUS_PER_NODE, /dev/shm, memlock,
                 nvidia-smi (ECC, GPU count, topology) and Xid lines in the kernel log where readable
    sanity       every rank: exact integer-valued matmul on its device, device copy bandwidth
    rendezvous   every rank publishes versions (torch, CUDA, NCCL, driver, host) and its checks
                 through the store; a missing rank is named, a version mismatch fails before any
                 NCCL communicator exists; then init_process_group (eager with device_id on GPU)
                 and monitored_barrier(wait_all_ranks=True) on a gloo group
    correctness  all_reduce of integer-valued float32 (zero tolerance, `#wrong` as in nccl-tests),
                 all_gather (names the rank whose contribution is wrong), broadcast from rank 0 and
                 from the last rank
    bandwidth    all_reduce and all_gather at one fixed --size (32 MiB with NCCL, 16 MiB with gloo):
                 whole cluster, per node, and on >= 4 nodes pairwise send/recv rounds that find a
                 slow node; optional --sweep (table and PNG of busbw against size)
    verdict      JSON report (--json-out, and stdout with --json), table on stderr, exit code

Bandwidth follows nccl-tests (doc/PERFORMANCE.md): algbw = bytes / 1e9 / seconds per operation, busbw =
algbw x factor (all_reduce 2(n-1)/n; all_gather (n-1)/n; send/recv 1), time = mean over the ranks of
each rank's time per operation. Floors apply to all_reduce busbw with NCCL only, never with gloo.

Exit codes (scripts/remote/_contract.py, docs/contract.md):
    0   pass (or warn: a bandwidth between floor and warning level)
    1   internal error of this script (a bug, not a node fault)
    2   bad input: one line naming the flag or environment key
    86  EXIT_BAD_NODE: a check failed or a stage timed out (`recover_on_exit_codes`)
    130, 143  interrupted (SIGINT), terminated (SIGTERM): the launcher stops its ranks first

JSON report (one object): schema, verdict (pass|warn|fail|error), exit_code, reason
(`preflight_failed` on a fail), error (an internal error's text, else null), failures and warnings (each: stage, severity, message, ranks, nodes),
backend, world_size, nnodes, ranks_per_node, accelerator, size_bytes, iters, warmup,
seconds_to_verdict, stages (seconds per stage on rank 0), ranks (per rank: rank, node, local_rank,
host, versions, sanity, node facts on local rank 0), correctness, bandwidth (rows: op, scope, ranks,
nodes, size_bytes, seconds, algbw_gbps, busbw_gbps, floor_gbps, warn_gbps, status; round for
send/recv pairs), pairwise (rounds, slow_fraction, slow_nodes; null under 4 nodes), sweep (rows, or
null), plot (path or null). Rank 0 writes it; it deletes an earlier report first.

The report file and the sweep plot are optional: writing either never changes the exit code. A write
that fails (full disk, read-only file system, no permission, a file where a folder should be) leaves
no partial file and logs one warning naming the path and the errno, e.g.
`nccl-report.json not written: /data/run/preflight/nccl-report.json: ENOSPC (No space left on device)`.
The plot goes to --plot-out, else beside --json-out, else $DATA_DIR/$RUN_ID/preflight/ (the data
directory layout of docs/contract.md), else a new temporary folder; never the current directory (the
git gate refuses a launch while an untracked file sits in the repository). Its path is logged.

Configuration: flags > environment > defaults. The NCCL_PREFLIGHT_* keys and their defaults are the
contract's (scripts/remote/_contract.py, docs/contract.md), parsed by its one parser; the node settings
NPROC_PER_NODE (else 2 ranks), NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT are those
configure_environment.py wrote, read by scripts/remote/_distributed.py. SKYPILOT_NUM_GPUS_PER_NODE is
the GPU count the node stage expects.

Code: this entry point keeps main(); _nccl_config.py (flags and environment -> Config),
_nccl_launch.py (launcher mode), _nccl_rank.py (one rank: stages in order, failure paths, verdict),
_nccl_board.py (watchdog, progress board), _nccl_stages.py (the stages), _nccl_checks.py and
_nccl_bandwidth.py (pure checks and nccl-tests' bandwidth), _nccl_report.py (report, table, plot).
Decision record: docs/decisions/nccl-preflight.md.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence

from _contract import EXIT_BAD_INPUT
from _nccl_config import BadInput, build_parser, identity_from_env, make_config
from _nccl_launch import launch_local
from _nccl_rank import run_rank

DESCRIPTION = (__doc__ or "").split("\n\n")[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags (environment values are their defaults), then run as the launcher or as one rank.

    Returns the exit code in launcher mode; under torchrun it ends the process with os._exit(code).
    """
    t0 = time.monotonic()
    env = os.environ
    try:
        cfg = make_config(build_parser(env, DESCRIPTION).parse_args(argv), env)
        ident = identity_from_env(env)
    except BadInput as err:
        print(f"nccl_test.py: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not cfg.verbose:  # c10d's C++ logs (store retries with stack traces) drown the verdict
        env.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    logging.basicConfig(
        level=logging.DEBUG if cfg.verbose else logging.INFO,
        format="%(asctime)s nccl_test: %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    if ident is None and cfg.nnodes == 1 and cfg.master_addr.startswith("127.") and sys.platform == "linux":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: keep gloo on loopback
    if ident is None:
        return launch_local(cfg, t0)
    code = run_rank(cfg, ident, t0)  # under torchrun: skip interpreter teardown (a dead peer can hang it)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
