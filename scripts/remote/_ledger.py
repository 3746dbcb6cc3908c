"""Durable records on DATA_DIR: the attempt ledger, the node results, and the writes behind them.

DATA_DIR is a bucket mount in the cloud: files are rewritten whole (temp file and rename), never
appended, and every write may fail (full disk, read-only mount) without failing the attempt.
Layout: docs/contract.md, "Data directory"; why a ledger at all: docs/decisions/restart-tracking.md.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from _contract import LEDGER, RESULT
from _files import os_error, write_atomic

log = logging.getLogger("run")

#: Ledger `end` reason for an attempt that never recorded its end (written by the next attempt).
LEDGER_LOST = "lost"


LEDGER_EVENTS = frozenset({"start", "alive", "end", "node_result"})


def ledger_path(data_dir: Path, run_id: str, managed_job_id: int, task_index: int) -> Path:
    """`$DATA_DIR/$RUN_ID/supervisor/ledger-<managed_job_id>-<task_idx>.jsonl` (_contract.LEDGER)."""
    return data_dir / run_id / LEDGER.format(managed_job_id=managed_job_id, task_index=task_index)


def result_path(data_dir: Path, run_id: str, node_rank: int) -> Path:
    """`$DATA_DIR/$RUN_ID/supervisor/result-node<rank>.json` (_contract.RESULT)."""
    return data_dir / run_id / RESULT.format(node_rank=node_rank)


def parse_ledger(data: bytes, source: str = "ledger") -> list[dict[str, object]]:
    """The valid records of a ledger file's bytes; a corrupt or half-written line is logged and skipped."""
    records: list[dict[str, object]] = []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        attempt = record.get("attempt") if isinstance(record, dict) else None
        if not (
            isinstance(record, dict)
            and record.get("event") in LEDGER_EVENTS
            and isinstance(attempt, int)
            and not isinstance(attempt, bool)
            and attempt > 0
        ):
            log.warning("%s:%d: skipping a corrupt ledger line", source, lineno)
            continue
        records.append(record)
    return records


def read_ledger(path: Path) -> list[dict[str, object]]:
    """The ledger's records; [] when it is missing or unreadable (logged: supervision goes on)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read the ledger %s (%s); counting from attempt 1", path, exc)
        return []
    return parse_ledger(data, str(path))


def append_records(path: Path, records: Sequence[Mapping[str, object]]) -> bool:
    """Add JSON lines to the ledger; False (logged with the path and errno) when they cannot be written.

    Records are only ever added; earlier bytes, a corrupt line included, are kept as they are and a
    half-written last line gets a newline first. The file is rewritten whole (see _files.replacing);
    a ledger that exists but cannot be read is left alone rather than overwritten.
    """
    lines = b"".join(json.dumps(record, sort_keys=True).encode() + b"\n" for record in records)
    try:
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        write_atomic(path, old + lines)
    except OSError as exc:
        log.warning("cannot write the ledger %s: %s; supervision continues", path, os_error(exc))
        return False
    return True


def append_record(path: Path, record: Mapping[str, object]) -> bool:
    """Add one JSON line to the ledger (see append_records)."""
    return append_records(path, [record])


def write_json(path: Path, data: Mapping[str, object]) -> bool:
    """Write a JSON file whole (see _files.replacing); False (logged with the path and errno) on error."""
    try:
        write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    except OSError as exc:
        log.warning("cannot write %s: %s", path, os_error(exc))
        return False
    return True


def unwritable(folder: Path) -> str | None:
    """Why `folder` (created with its parents) cannot take files, in one line; None when it can.

    A full disk (ENOSPC, EDQUOT) is not "unwritable": the probe is an empty file, and what a full
    disk does to the job's own writes is the job's failure (see full_disk_note).
    """
    probe = folder / f".skyops-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return None
        return f"{folder}: {os_error(exc)}"
    return None


#: Free bytes under which DATA_DIR counts as full when a job fails (a failed checkpoint write leaves
#: a few blocks at most; 16 MiB is far below any checkpoint and far above a filesystem's slack).
FULL_DISK_BYTES = 16 * 2**20


def full_disk_note(path: Path) -> str | None:
    """`DATA_DIR <path> is full (ENOSPC: N bytes free)` when the filesystem of `path` has under
    FULL_DISK_BYTES free; None otherwise or when it cannot be measured."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= FULL_DISK_BYTES:
        return None
    return f"DATA_DIR {path} is full (ENOSPC: {free} bytes free)"
