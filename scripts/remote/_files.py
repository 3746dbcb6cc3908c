"""The node side's one way to write a file whole, and to say why a write failed (stdlib only).

Every file a node writes for others to read (the ledger, a node's result, job.json-like summaries,
the preflight's report and plot, the job's env file) goes through `replacing`: a temporary file beside
the target, then a rename, so a reader sees the old file or the new one, never half of one. A bucket
mount (goofys, gcsfuse) can write whole objects but not append to one, so appends are rewrites too.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


def os_error(exc: OSError, path: Path | str | None = None) -> str:
    """An OSError in one line with its errno name, e.g. `ENOSPC (No space left on device)`; with
    `path`, `PATH: ENOSPC (No space left on device)`."""
    name = errno.errorcode.get(exc.errno or 0)
    text = f"{name} ({exc.strerror or exc})" if name else str(exc) or type(exc).__name__
    return f"{path}: {text}" if path is not None else text


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its folder created); when the block ends without an error,
    flush it to disk and rename it over `path`. On any error the temporary file is removed and the
    error propagates (OSError: ENOSPC, EROFS, EACCES, ENOTDIR, ...); `path` is then left as it was.

    The temporary name keeps no suffix of `path`: a writer that infers a format from the suffix needs
    it passed explicitly.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with contextlib.suppress(FileExistsError):  # a file where the folder should be: ENOTDIR below
            path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with contextlib.suppress(OSError), open(tmp, "rb") as f:  # some bucket mounts lack fsync
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` (str as UTF-8) to `path` whole (see replacing). Raises OSError."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
