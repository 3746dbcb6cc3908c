"""The NCCL preflight's verdict for people and programs: the JSON report, the table, the sweep plot.

`build_report` and `format_table` are pure; the writers are atomic and never raise OSError: the report
file and the plot are optional, and a failure to write them never changes the preflight's exit code
(one warning names the path and the errno). Fields of the report: nccl_test.py's docstring.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _contract import EXIT_FAILURE, PREFLIGHT_PLOT, REASON_PREFLIGHT_FAILED, FloorRule
from _files import os_error, replacing
from _nccl_bandwidth import format_size
from _nccl_checks import Finding, first_line, verdict_of

log = logging.getLogger("nccl_test")

SCHEMA = 1
#: File name of the sweep plot (docs/contract.md, data directory: preflight/nccl-sweep.png).
PLOT_NAME = Path(PREFLIGHT_PLOT).name


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
    """The JSON report (fields: nccl_test.py's docstring). `error` marks an internal error (exit 1)."""
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


def discard_stale_report(path: Path) -> None:
    """Delete an earlier attempt's report, so no old verdict is ever read as this one's. A report that
    cannot be deleted (read-only, not a folder) is left: writing the new one fails too, and says so."""
    with contextlib.suppress(OSError):
        path.unlink()


def write_artifact(path: Path, write: Callable[[Path], object]) -> bool:
    """Write an optional file atomically: `write(tmp)` into a temporary file beside `path` (parents
    created), then rename it to `path`, so a reader sees the whole file or none.

    Returns False, after one warning naming `path` and the errno (ENOSPC, EROFS, EACCES, ENOTDIR, ...),
    when the file system refuses; the temporary file is removed. Never raises OSError: the report and
    the plot are optional, and a failure to write them never changes the preflight's exit code.
    """
    try:
        with replacing(path) as tmp:
            write(tmp)
    except OSError as err:
        stale = " (an earlier one is still there)" if _exists(path) else ""
        log.warning("%s not written: %s%s", path.name, os_error(err, path), stale)
        return False
    return True


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def write_report(report: Mapping[str, Any], path: Path | None, to_stdout: bool) -> bool:
    """Write the JSON report to `path` (see write_artifact: atomic, never raises OSError) and/or stdout.

    Returns False when `path` could not be written (one warning logged), else True.
    """
    text = json.dumps(report, indent=2, default=str)
    written = path is None or write_artifact(path, lambda tmp: tmp.write_text(text + "\n"))
    if to_stdout:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    return written


def write_plot(rows: Sequence[Mapping[str, Any]], path: Path, title: str, rule: FloorRule | None) -> None:
    """PNG of busbw (GB/s) against message size (bytes, log2 axis), one line per op, floor dashed.

    Writes `path` as PNG whatever its suffix (write_artifact hands it a temporary name); its folder
    must exist. Raises OSError when the file cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for op in ("all_reduce", "all_gather"):
        pts = [(r["size_bytes"], r["busbw_gbps"]) for r in rows if r["op"] == op]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{op} busbw")
    if rule is not None and rule.floor > 0:
        ax.axhline(
            rule.floor, color="red", linestyle="--", label=f"floor {rule.floor:g} GB/s ({rule.spec()})"
        )
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_size(int(x))))
    ax.set_xlabel("message size")
    ax.set_ylabel("busbw (GB/s = 1e9 B/s)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def write_sweep_plot(
    rows: Sequence[Mapping[str, Any]], path: Path | None, title: str, rule: FloorRule | None
) -> Path | None:
    """Write the sweep plot (write_plot) to `path`, or into a new temporary folder when `path` is None,
    and log where. Returns the path, or None after one warning when it was not written: never raises,
    matplotlib's errors included (the plot is optional)."""
    made = None
    try:
        if path is None:
            made = Path(tempfile.mkdtemp(prefix="nccl-preflight-"))
            path = made / PLOT_NAME
        if write_artifact(path, lambda tmp: write_plot(rows, tmp, title, rule)):
            log.info("sweep plot written: %s", path)
            return path
        if made is not None:
            with contextlib.suppress(OSError):
                made.rmdir()
    except OSError as err:  # the temporary folder
        log.warning("%s not written: %s", PLOT_NAME, os_error(err, path))
    except Exception as err:  # matplotlib: an optional extra never fails the preflight
        log.warning("%s not written: %s: %s", PLOT_NAME, path, first_line(err))
    return None


def publish(report: Mapping[str, Any], json_out: Path | None, to_stdout: bool) -> None:
    """Rank 0's last word: the report to --json-out and (with --json) stdout, the table to stderr."""
    write_report(report, json_out, to_stdout)
    sys.stderr.write(format_table(report) + "\n")
    sys.stderr.flush()
