"""Atomic file writes on the laptop side: a reader (another jobs.py, a launcher, a watcher) sees the old
file or the new one, never a half-written one, even when the writer dies mid-write.

Each write goes to a temporary file in the target's folder (same file system, so os.replace() is
atomic), is flushed and fsynced, then replaces the target; the temporary file is removed on failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (see the module docstring). Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically. Raises OSError."""
    write_bytes(path, text.encode())


def write_json(path: Path, data: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Replace `path` with `data` as JSON (`indent`, `sort_keys`) and a final newline, atomically.
    Raises OSError, or TypeError/ValueError for data JSON cannot hold (then `path` is untouched)."""
    write_text(path, json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n")
