"""Tests for the NCCL preflight: the pure parts (scripts/remote/_nccl_checks.py, _nccl_bandwidth.py,
the report's builder and writers in _nccl_report.py, the configuration in _nccl_config.py) directly,
and scripts/remote/nccl_test.py end to end on CPU.

The end-to-end cases run the real script (gloo, forked ranks or torchrun, loopback, a free port
each), so they check the exit codes and the JSON report as the supervisor sees them. Faults come
from the script's hidden, test-only `--inject-fault` flag.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import _contract
import _nccl_bandwidth as bw
import _nccl_checks as checks
import _nccl_config as config
import _nccl_report as reporting
import nccl_test
import pytest
from _contract import EXIT_BAD_INPUT, EXIT_BAD_NODE, EXIT_FAILURE, EXIT_OK
from conftest import mount_tmpfs, unmount

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "remote" / "nccl_test.py"
REPORT_FIELDS = {
    "schema", "verdict", "exit_code", "reason", "error", "failures", "warnings", "backend", "world_size",
    "nnodes", "ranks_per_node", "accelerator", "size_bytes", "iters", "warmup", "seconds_to_verdict",
    "stages", "plot", "ranks", "correctness", "bandwidth", "pairwise", "sweep",
}  # fmt: skip
GIB = 1 << 30


# --- pure functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "n", "factor"),
    [
        ("all_reduce", 8, 1.75),
        ("all_reduce", 2, 1.0),
        ("all_reduce", 1, 0.0),  # nccl-tests#249: busbw 0 on one rank
        ("all_gather", 4, 0.75),
        ("reduce_scatter", 8, 0.875),
        ("broadcast", 8, 1.0),
        ("sendrecv", 2, 1.0),
    ],
)
def test_busbw_is_algbw_times_nccl_tests_factor(op: str, n: int, factor: float) -> None:
    assert bw.busbw_factor(op, n) == pytest.approx(factor)
    algbw, busbw = bw.bandwidth(op, 32 << 20, 0.002, n)
    assert algbw == pytest.approx((32 << 20) / 1e9 / 0.002)  # GB/s = 1e9 bytes/s
    assert busbw == pytest.approx(algbw * factor)
    with pytest.raises(ValueError, match="unknown op"):
        bw.busbw_factor("gather", n)


def test_sizes_floors_and_classification() -> None:
    sizes = [_contract.parse_size(s) for s in ("4096", "1K", "32M", "1GiB", "2g")]
    assert sizes == [4096, 1024, 32 << 20, GIB, 2 * GIB]
    for bad in ("", "1T", "-1M", "1.5M", "2"):
        with pytest.raises(ValueError):
            _contract.parse_size(bad)
    assert bw.sweep_sizes(1024, 5000) == [1024, 2048, 4096, 5000]

    rules = _contract.parse_floors("H100@1=100:200, H100@2+=10:40,H100-SXM@1=150,A100@2=5")
    assert [r.spec() for r in rules] == [
        "H100@1=100:200",
        "H100@2+=10:40",
        "H100-SXM@1=150:150",
        "A100@2=5:5",
    ]
    assert bw.find_floor(rules, "NVIDIA H100 80GB HBM3", 1).floor == 100
    assert bw.find_floor(rules, "NVIDIA H100-SXM 80GB", 1).floor == 150  # the longest name wins
    assert bw.find_floor(rules, "NVIDIA H100 80GB HBM3", 16).floor == 10
    assert bw.find_floor(rules, "NVIDIA A100-SXM4-80GB", 3) is None
    assert bw.find_floor(rules, None, 1) is None
    assert [bw.classify(b, rules[0]) for b in (99.9, 100, 199, 200)] == ["fail", "warn", "warn", "pass"]
    assert bw.classify(0.1, None) == "info"  # CPU mode: no floor
    for bad in ("H100=1", "H100@0=1", "H100@1=5:4", "H100@1=x"):
        with pytest.raises(ValueError, match="floor"):
            _contract.parse_floors(bad)
    assert _contract.parse_floors(
        _contract.KEY["NCCL_PREFLIGHT_FLOORS"].default
    )  # the shipped default parses


def test_floors_apply_per_node_count_with_nccl_only() -> None:
    timings = [{"world/all_reduce": 0.001, "node/all_reduce": 0.0005 if r < 2 else 0.005} for r in range(4)]
    rules = _contract.parse_floors("H100@1=20:100,H100@2+=0:60")
    common = {"size": 32 << 20, "rounds": [], "rules": rules, "accelerator": "NVIDIA H100 80GB HBM3"}

    rows = bw.bandwidth_rows(timings, [0, 0, 1, 1], backend="nccl", **common)
    status = {r["scope"]: (round(r["busbw_gbps"], 1), r["floor_gbps"], r["status"]) for r in rows}
    assert status == {"world": (50.3, 0, "warn"), "node 0": (67.1, 20, "warn"), "node 1": (6.7, 20, "fail")}
    found = bw.bandwidth_findings(rows, [], "nccl")
    assert [(f.severity, f.nodes) for f in found] == [("warn", ()), ("warn", (0,)), ("fail", (1,))]
    assert "all_reduce busbw 6.71 GB/s on node 1 is under the floor 20 GB/s (32 MiB)" in found[2].message

    gloo = bw.bandwidth_rows(timings, [0, 0, 1, 1], backend="gloo", **common)
    assert {r["status"] for r in gloo} == {"info"}
    assert [f.severity for f in bw.bandwidth_findings(gloo, [2], "gloo")] == ["warn"]  # slow node: warn


@pytest.mark.parametrize("nnodes", [4, 5, 6, 7, 8, 16])
def test_pair_rounds_give_every_node_two_partners(nnodes: int) -> None:
    rounds = bw.pair_rounds(nnodes, partners=2)
    partners: dict[int, set[int]] = {n: set() for n in range(nnodes)}
    seen = set()
    for pairs in rounds:
        nodes = [n for pair in pairs for n in pair]
        assert len(nodes) == len(set(nodes)), "a node is in two pairs of one round"
        for a, b in pairs:
            assert a < b and (a, b) not in seen
            seen.add((a, b))
            partners[a].add(b)
            partners[b].add(a)
    assert all(len(p) >= 2 for p in partners.values())
    assert len(rounds) == (2 if nnodes % 2 == 0 else 3)  # odd counts: one node sits out per round


def test_slow_node_found_from_pairs() -> None:
    pairs = {(0, 3): 40.0, (1, 2): 400.0, (0, 2): 35.0, (1, 3): 410.0}  # node 0 is slow
    assert bw.slow_nodes(pairs, 0.5) == [0]
    assert bw.slow_nodes(dict.fromkeys(pairs, 400.0), 0.5) == []  # uniform: nothing to blame
    one_pair_each = {(0, 1): 40.0, (2, 3): 400.0, (4, 5): 400.0}
    assert bw.slow_nodes(one_pair_each, 0.5) == []  # 0 or 1? ambiguous, so neither
    measured = {pair: (30.0 if 5 in pair else 300.0) for r in bw.pair_rounds(8) for pair in r}
    assert bw.slow_nodes(measured, 0.5) == [5]


def test_laggards_name_missing_failed_and_stuck_ranks() -> None:
    def mark(seq: int, state: str = "running", error: str | None = None) -> dict:
        where = {"stage": "correctness", "step": "all_reduce", "node": 1, "local_rank": 0, "host": "h"}
        return {**where, "state": state, "seq": seq, "error": error}

    found = checks.laggards([mark(9), None, mark(8), mark(9, "failed", "CUDA error")], ranks_per_node=2)
    assert [f.ranks for f in found] == [(1,), (2,), (3,)]
    assert "rank 1 (node 0, local rank 1) never reached the rendezvous store" in found[0].message
    assert "stopped at correctness/all_reduce while others got further" in found[1].message
    assert found[2].message.endswith("failed in correctness/all_reduce: CUDA error")
    everyone = checks.laggards([mark(9), mark(9)], ranks_per_node=1)
    assert len(everyone) == 1 and "every rank waits at correctness/all_reduce" in everyone[0].message


def test_node_checks() -> None:
    docker_default = {"shm_total_bytes": 64 << 20, "shm_free_bytes": 64 << 20, "memlock_bytes": 64 << 10}
    facts = {**docker_default, "gpus_torch": 7}
    found = checks.check_node(
        facts, where="node 1 (h)", expected_gpus=8, min_shm_bytes=GIB, backend="nccl", nnodes=2
    )
    msgs = [(f.severity, f.message) for f in found]
    assert ("fail", "node 1 (h): torch sees 7 of 8 GPUs (SKYPILOT_NUM_GPUS_PER_NODE=8)") in msgs
    assert any(s == "fail" and "/dev/shm has 0.06 GiB available" in m for s, m in msgs)
    assert any(s == "warn" and "memlock" in m for s, m in msgs)
    assert not checks.check_node(
        facts, where="n", expected_gpus=None, min_shm_bytes=0, backend="gloo", nnodes=2
    )

    smi = checks.parse_nvidia_smi(
        "0, 00000000:10:1C.0, NVIDIA H100 80GB HBM3, 550.54.15, 0\n"
        "1, 00000000:10:1D.0, NVIDIA H100 80GB HBM3, 550.54.15, 3\n"
    )
    assert [g["ecc_uncorrected"] for g in smi] == [0, 3] and smi[0]["driver"] == "550.54.15"
    assert checks.parse_nvidia_smi("0, 0:1, NVIDIA A10G, 535.1, [N/A]")[0]["ecc_uncorrected"] is None
    xids = checks.parse_xids(
        "[  12.3] NVRM: Xid (PCI:0000:3b:00): 79, pid=123, GPU has fallen off the bus.\n"
        "[  13.0] NVRM: Xid (PCI:0000:3b:00): 79, pid=123\n"
        "NVRM: Xid (PCI:0000:5e:00): 13, Graphics Exception\n"
    )
    gpu_node = {"shm_free_bytes": 2 * GIB, "shm_total_bytes": 2 * GIB, "xids": xids}
    gpu_node["nvidia_smi"] = {"gpus": smi, "error": None}
    found = checks.check_node(
        gpu_node, where="node 0", expected_gpus=2, min_shm_bytes=GIB, backend="nccl", nnodes=1
    )
    assert sorted((f.severity, f.message) for f in found) == [
        ("fail", "node 0: GPU 1 (00000000:10:1D.0) has 3 uncorrected ECC errors"),
        ("fail", "node 0: kernel log: Xid 79 on PCI:0000:3b:00"),
        ("warn", "node 0: kernel log: Xid 13 on PCI:0000:5e:00"),
    ]
    log = "h:1:1 [0] NCCL INFO NET/Plugin: no plugin\nh:1:1 [0] NCCL INFO Using network Socket\n"
    assert checks.parse_nccl_network(log) == "Socket"


def test_versions_must_match() -> None:
    infos = [
        {"rank": r, "node": r // 2, "local_rank": r % 2, "host": f"h{r // 2}",
         "versions": {"torch": "2.13.0", "nccl": "2.21.5" if r == 3 else "2.27.3"}}
        for r in range(4)
    ]  # fmt: skip
    (found,) = checks.check_versions(infos, 2)
    assert (found.ranks, found.nodes) == ((3,), (1,))
    assert "nccl versions differ across ranks (most have 2.27.3): rank 3 (node 1" in found.message


def test_rank_0_writes_one_report_when_two_verdicts_race() -> None:
    """A rank that never joins fails connect just as the watchdog's stage deadline passes: the main
    thread and the watchdog's thread both reach a verdict. The first report is the only one written
    (the other waits for it and gets it back), so --json-out and stdout never disagree. (Seen on a
    loaded machine: the file held the watchdog's report, stdout the main thread's.)"""
    import threading

    import _nccl_rank

    published: list[str] = []

    def slow_publish(findings: list[str], error: str | None) -> dict[str, str]:
        published.append(findings[0])
        time.sleep(0.2)  # writing the file, then stdout: the other thread arrives meanwhile
        return {"by": findings[0]}

    run = object.__new__(_nccl_rank.RankRun)  # only the report's guard, no torch, no store
    run._emit_lock, run._emitted = threading.Lock(), None
    run._publish = slow_publish  # type: ignore[method-assign]
    got: dict[str, dict[str, str]] = {}
    threads = [
        threading.Thread(target=lambda who=who: got.update({who: run.emit([who])}))  # type: ignore[list-item]
        for who in ("main", "watchdog")
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert published == ["main"] and got == {"main": {"by": "main"}, "watchdog": {"by": "main"}}


def test_verdicts_and_exit_codes() -> None:
    warn = checks.Finding("bandwidth", "warn", "slow-ish")
    assert checks.verdict_of([]) == ("pass", EXIT_OK)
    assert checks.verdict_of([warn]) == ("warn", EXIT_OK)  # between floor and warning level: passes
    assert checks.verdict_of([warn, checks.Finding("node", "fail", "x")]) == ("fail", EXIT_BAD_NODE)
    assert checks.combine_exit_codes({0: 0, 1: 0}) == EXIT_OK
    assert checks.combine_exit_codes({0: 86, 1: None}) == EXIT_BAD_NODE  # None: killed by the launcher
    assert checks.combine_exit_codes({0: 0, 1: -9}) == EXIT_BAD_NODE  # a rank died from a signal
    assert checks.combine_exit_codes({0: 1, 1: 0}) == EXIT_FAILURE  # a bug is not a bad node
    assert checks.combine_exit_codes({0: 2, 1: 86}) == EXIT_BAD_INPUT
    report = reporting.build_report(findings=[checks.Finding("node", "fail", "m", (1,), (0,))], meta={})
    assert (report["verdict"], report["exit_code"], report["reason"]) == ("fail", 86, "preflight_failed")


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--size", "lots"], {}, "argument --size"),
        (["--nproc", "0"], {}, "argument --nproc"),
        (["--floors", "H100=1"], {}, "--floors"),
        (["--nproc", "4", "--ranks-per-node", "3"], {}, "--ranks-per-node 3"),
        (["--nnodes", "2"], {"MASTER_PORT": ""}, "--master-port"),
        (["--inject-fault", "melt-rank=1"], {}, "--inject-fault"),
        ([], {"NCCL_PREFLIGHT_TIMEOUT": "soon"}, "NCCL_PREFLIGHT_TIMEOUT"),
        ([], {"NCCL_PREFLIGHT_MIN_SHM_GIB": "-1"}, "NCCL_PREFLIGHT_MIN_SHM_GIB"),
        (["--bogus"], {}, "--bogus"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert nccl_test.main(argv) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and named in err and "Traceback" not in err


# --- end to end on CPU (gloo) ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """This process's environment without rank, node or preflight settings, on loopback."""
    ours = ("SKYPILOT_", "NCCL_PREFLIGHT_", "TORCHELASTIC_")
    rank_keys = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_PORT"}
    rank_keys |= {"NPROC_PER_NODE", "NNODES", "NODE_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in rank_keys and not k.startswith(ours)}
    return {**env, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}


def run_preflight(tmp_path: Path, *args: str) -> tuple[int, dict, str, float]:
    """Run the script as the supervisor would; returns (exit code, report, stderr, seconds)."""
    report = tmp_path / "preflight" / "nccl-report.json"
    argv = [
        sys.executable,
        str(SCRIPT),
        "--json",
        "--json-out",
        str(report),
        "--master-port",
        str(_free_port()),
    ]
    start = time.monotonic()
    proc = subprocess.run([*argv, *args], env=_env(), capture_output=True, text=True, timeout=90, check=False)
    seconds = time.monotonic() - start
    data = json.loads(report.read_text())
    assert json.loads(proc.stdout) == data  # --json: the same report on stdout, nothing else there
    return proc.returncode, data, proc.stderr, seconds


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("nproc", "per_node"), [(2, 2), (4, 1)])
def test_cpu_preflight_passes(tmp_path: Path, nproc: int, per_node: int) -> None:
    args = ("--nproc", str(nproc), "--ranks-per-node", str(per_node), "--size", "2M", "--iters", "5")
    code, report, err, _ = run_preflight(tmp_path, *args)
    assert code == EXIT_OK, err
    assert set(report) == REPORT_FIELDS
    assert (report["verdict"], report["exit_code"], report["backend"]) == ("pass", 0, "gloo")
    assert (report["world_size"], report["nnodes"]) == (nproc, nproc // per_node)
    stages = {"startup", "connect", "node", "sanity", "rendezvous", "correctness", "bandwidth", "verdict"}
    assert set(report["stages"]) == stages
    assert [r["rank"] for r in report["ranks"]] == list(range(nproc))
    assert all(r["versions"]["torch"].startswith("2.13.0") for r in report["ranks"])
    assert all(r["sanity"]["matmul_wrong"] == 0 for r in report["ranks"])
    assert all(c["all_reduce_wrong"] == 0 and not any(c["all_gather_wrong"]) for c in report["correctness"])
    assert {r["op"] for r in report["bandwidth"] if r["scope"] == "world"} == {"all_reduce", "all_gather"}
    for row in report["bandwidth"]:
        n = 2 if row["op"] == "sendrecv" else row["ranks"]  # a send/recv row is over rank pairs
        assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * bw.busbw_factor(row["op"], n))
        assert row["floor_gbps"] is None and row["status"] == "info"  # no floor in CPU mode
    if nproc // per_node >= 4:  # emulated nodes: the pairwise rounds ran
        assert report["pairwise"]["rounds"] == [[[0, 3], [1, 2]], [[0, 2], [1, 3]]]
        pairs = {r["scope"] for r in report["bandwidth"] if r["op"] == "sendrecv"}
        assert pairs == {"pair 0-3", "pair 1-2", "pair 0-2", "pair 1-3"}
    assert "NCCL preflight: PASS" in err


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["skip-rank=1", "hang-rank=1"])
def test_missing_or_stuck_rank_fails_within_timeout_and_is_named(tmp_path: Path, fault: str) -> None:
    deadlines = ("--init-timeout", "6", "--stage-timeout", "3", "--timeout", "60")
    code, report, _, seconds = run_preflight(
        tmp_path, "--nproc", "2", "--size", "1M", *deadlines, "--inject-fault", fault
    )
    assert (code, report["verdict"], report["reason"]) == (EXIT_BAD_NODE, "fail", "preflight_failed")
    named = [f for f in report["failures"] if f["ranks"] == [1]]
    assert named and "rank 1 (node 0, local rank 1" in named[0]["message"]
    # Inside --timeout, startup included and on a loaded machine: the stage's own deadline ended it.
    assert seconds < 60


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_corrupt_contribution_caught_and_small_shm_reported(tmp_path: Path) -> None:
    code, report, _, _ = run_preflight(
        tmp_path, "--nproc", "2", "--size", "1M", "--inject-fault", "corrupt-rank=1"
    )
    assert code == EXIT_BAD_NODE
    first = report["failures"][0]
    assert (first["stage"], first["ranks"]) == ("correctness", [1])
    assert (
        "rank 1 (node 0, local rank 1, host" in first["message"]
        and "contributed wrong data" in first["message"]
    )
    assert sum(c["all_reduce_wrong"] for c in report["correctness"]) > 0  # nccl-tests' #wrong

    code, report, err, _ = run_preflight(tmp_path, "--nproc", "2", "--size", "1M", "--min-shm-gib", "100000")
    assert code == EXIT_BAD_NODE and report["correctness"] is None  # stopped before any collective
    assert [f["stage"] for f in report["failures"]] == ["node"]
    assert "/dev/shm has" in report["failures"][0]["message"] and "under the 100000.00 GiB minimum" in err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_under_torchrun_each_process_is_one_rank(tmp_path: Path) -> None:
    """The other way in: torchrun's agent hosts the store (TORCHELASTIC_USE_AGENT_STORE=True)."""
    report = tmp_path / "nccl-report.json"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    argv = [*torchrun, str(SCRIPT), "--json-out", str(report), "--size", "1M", "--iters", "2"]
    proc = subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=100, check=False)
    assert proc.returncode == EXIT_OK, proc.stderr
    data = json.loads(report.read_text())
    assert (data["verdict"], data["world_size"], data["nnodes"]) == ("pass", 2, 1)


# --- where the sweep plot goes ------------------------------------------------------------------------


def test_sweep_plot_never_defaults_to_the_current_directory(tmp_path: Path) -> None:
    """Beside --json-out, else $DATA_DIR/$RUN_ID/preflight/ (docs/contract.md), else None: a new
    temporary folder at write time. A relative `nccl-sweep.png` in the repository root would make the
    git gate refuse every sky launch."""
    report = tmp_path / "p" / "nccl-report.json"
    data = {"DATA_DIR": str(tmp_path / "data"), "RUN_ID": "r1"}
    assert config.default_plot_path(report, data) == tmp_path / "p" / "nccl-sweep.png"
    assert config.default_plot_path(None, data) == tmp_path / "data" / "r1" / "preflight" / "nccl-sweep.png"
    assert config.default_plot_path(None, {"DATA_DIR": "/d"}) == Path("/d/preflight/nccl-sweep.png")
    assert config.default_plot_path(None, {"DATA_DIR": " ", "RUN_ID": "r1"}) is None
    assert config.default_plot_path(None, {}) is None

    def plot_out(argv: list[str], env: dict[str, str]) -> Path | None:
        return config.make_config(config.build_parser(env).parse_args(argv), env).plot_out

    assert plot_out(["--sweep"], data) == tmp_path / "data" / "r1" / "preflight" / "nccl-sweep.png"
    assert plot_out(["--sweep", "--plot-out", "x.png"], data) == Path("x.png")  # asked for: as given
    assert plot_out(["--sweep"], {}) is None
    assert plot_out([], data) is None  # no sweep, no plot


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sweep_plot_lands_in_the_data_dir_or_a_temp_dir_and_its_path_is_logged(tmp_path: Path) -> None:
    cwd = tmp_path / "repo"
    cwd.mkdir()
    argv = [sys.executable, str(SCRIPT), "--nproc", "2", "--sweep", "4K:8K", "--size", "64K", "--iters", "2"]
    argv += ["--json", "--master-port", str(_free_port())]
    data = {"DATA_DIR": str(tmp_path / "data"), "RUN_ID": "r1"}
    proc = subprocess.run(argv, cwd=cwd, env={**_env(), **data}, capture_output=True, text=True, timeout=90)
    assert proc.returncode == EXIT_OK, proc.stderr
    plot = tmp_path / "data" / "r1" / "preflight" / "nccl-sweep.png"
    assert json.loads(proc.stdout)["plot"] == str(plot)
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert f"sweep plot written: {plot}" in proc.stderr
    assert list(cwd.iterdir()) == []

    temp = tmp_path / "tmp"
    temp.mkdir()  # no DATA_DIR: a new folder in the temporary directory ($TMPDIR)
    proc = subprocess.run(
        argv, cwd=cwd, env={**_env(), "TMPDIR": str(temp)}, capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == EXIT_OK, proc.stderr
    (plot,) = temp.glob("nccl-preflight-*/nccl-sweep.png")
    assert json.loads(proc.stdout)["plot"] == str(plot)
    assert f"sweep plot written: {plot}" in proc.stderr
    assert list(cwd.iterdir()) == []


# --- nox and make keep stdout for data -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "command",
    [
        ["uvx", "--from", "nox==2026.10.20", "nox", "-s", "nccl", "--", "--json", "--nproc", "2"],
        ["make", "--no-print-directory", "nccl", "ARGS=--json --nproc 2"],
    ],
    ids=["nox", "make"],
)
def test_nox_and_make_nccl_json_keep_stdout_pure(command: list[str]) -> None:
    """`make nccl ARGS=--json | jq` works: the report alone on stdout; nox's own lines, make's recipe
    echo (the recipe is silent) and the preflight's log all go to stderr."""
    if not shutil.which(command[0]):
        pytest.skip(f"{command[0]} not installed")
    env = {k: v for k, v in _env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == EXIT_OK, proc.stderr
    report = json.loads(proc.stdout)  # nothing else on stdout
    assert (report["verdict"], report["world_size"]) == ("pass", 2)
    assert "nox > " in proc.stderr and "NCCL preflight: PASS" in proc.stderr


# --- optional artifacts never fail an attempt ---------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_report_on_a_full_disk_one_warning_nothing_half_written(
    full_dir: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = full_dir / "preflight" / "nccl-report.json"
    report = {"verdict": "pass", "exit_code": 0, "pad": "x" * 10000}
    assert reporting.write_report(report, path, to_stdout=True) is False
    assert json.loads(capsys.readouterr().out) == report  # --json still prints it
    assert _warnings(caplog) == [f"nccl-report.json not written: {path}: ENOSPC (No space left on device)"]
    assert sorted(p.name for p in full_dir.rglob("*")) == [".filler", "preflight"]  # no temp file left


def test_report_on_a_read_only_file_system(read_only_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = read_only_dir / "nccl-report.json"
    assert reporting.write_report({"verdict": "pass"}, path, to_stdout=False) is False
    assert _warnings(caplog) == [f"nccl-report.json not written: {path}: EROFS (Read-only file system)"]
    reporting.discard_stale_report(path)  # EROFS even for a missing file: never raised


def test_report_under_a_regular_file_and_an_earlier_report_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be\n")
    for path in (blocker / "nccl-report.json", blocker / "run" / "preflight" / "nccl-report.json"):
        caplog.clear()
        assert reporting.write_report({"verdict": "pass"}, path, to_stdout=False) is False
        assert _warnings(caplog) == [f"nccl-report.json not written: {path}: ENOTDIR (Not a directory)"]
        reporting.discard_stale_report(path)
    # A report that cannot be replaced (its folder is read-only) is named as an earlier one.
    folder = tmp_path / "ro"
    mount_tmpfs(folder, "size=64k")
    try:
        (folder / "nccl-report.json").write_text('{"verdict": "fail"}\n')
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        caplog.clear()
        assert reporting.write_report({"verdict": "pass"}, folder / "nccl-report.json", False) is False
        (warning,) = _warnings(caplog)
        assert warning.endswith("EROFS (Read-only file system) (an earlier one is still there)")
    finally:
        unmount(folder)


def test_a_writer_that_raises_leaves_no_temp_file(tmp_path: Path) -> None:
    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("matplotlib broke")

    with pytest.raises(ValueError, match="matplotlib broke"):
        reporting.write_artifact(tmp_path / "nccl-sweep.png", broken)
    assert list(tmp_path.iterdir()) == []


def _run_artifacts(tmp_path: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, str(SCRIPT), "--size", "64K", "--iters", "2", "--json"]
    return subprocess.run(
        [*base, *argv], cwd=tmp_path, env={**_env(), **env}, capture_output=True, text=True, timeout=90
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_full_disk_never_fails_the_preflight(tmp_path: Path, full_dir: Path) -> None:
    """Launcher mode, 2 ranks, --sweep: the report and the plot both hit ENOSPC; exit 0, the verdict on
    stdout, one warning per artifact, nothing half-written."""
    report = full_dir / "preflight" / "nccl-report.json"
    argv = ["--nproc", "2", "--sweep", "4K:8K", "--json-out", str(report), "--master-port", str(_free_port())]
    proc = _run_artifacts(tmp_path, argv, {})
    assert proc.returncode == EXIT_OK, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["verdict"], data["exit_code"], data["plot"]) == ("pass", 0, None)
    warnings = [line.split(": WARNING ", 1)[1] for line in proc.stderr.splitlines() if ": WARNING " in line]
    assert warnings == [
        f"nccl-sweep.png not written: {report.with_name('nccl-sweep.png')}: ENOSPC (No space left on device)",
        f"nccl-report.json not written: {report}: ENOSPC (No space left on device)",
    ]
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in full_dir.rglob("*")) == [".filler", "preflight"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_unwritable_report_keeps_the_verdict_of_a_rank(tmp_path: Path, read_only_dir: Path) -> None:
    """One rank as torchrun starts it (RANK, WORLD_SIZE, ...): EROFS keeps 0 a 0; a file where the
    report's folder should be (ENOTDIR) keeps a bad node's 86 an 86."""
    rank = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": str(_free_port())}
    proc = _run_artifacts(tmp_path, ["--json-out", str(read_only_dir / "nccl-report.json")], rank)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "pass"
    assert f"nccl-report.json not written: {read_only_dir}/nccl-report.json: EROFS" in proc.stderr

    (tmp_path / "data").write_text("not a folder\n")
    report = tmp_path / "data" / "preflight" / "nccl-report.json"
    rank["MASTER_PORT"] = str(_free_port())
    proc = _run_artifacts(tmp_path, ["--json-out", str(report), "--min-shm-gib", "100000"], rank)
    assert proc.returncode == EXIT_BAD_NODE, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "fail"
    assert proc.stderr.count(": WARNING ") == 1
    assert f"nccl-report.json not written: {report}: ENOTDIR (Not a directory)" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_unwritable_report_keeps_the_launchers_verdict(tmp_path: Path, read_only_dir: Path) -> None:
    argv = ["--nproc", "2", "--json-out", str(read_only_dir / "nccl-report.json")]
    proc = _run_artifacts(tmp_path, [*argv, "--master-port", str(_free_port())], {})
    assert proc.returncode == EXIT_OK, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "pass"
    assert "EROFS (Read-only file system)" in proc.stderr and "Traceback" not in proc.stderr
