"""Compile the bytecode of what the tests' torch jobs import, once per machine, into uv's cache.

    python tests/_bytecode.py      # tests/conftest.py runs it once per test run (before the workers)

Why: the tests emulate many nodes on one machine, and uv keys a script's environment by the script's
path, so a test run builds about 25 torch environments (one per script, node slot and node rank, and
the projects' `.venv`s). In each, the first `import torch` compiled torch's bytecode again: 5.0-5.5 s
of CPU against 2.2-2.5 s with a bytecode cache, about 70 s of CPU over a run. A real node builds one
environment and job.yaml's setup compiles it (UV_COMPILE_BYTECODE); nothing here changes that.

How: uv builds an environment by hard-linking every file of a package's unpacked wheel from its cache
(`<uv cache dir>/archive-v0/<id>/`), `__pycache__` folders included. This script imports MODULES in
this interpreter (the test venv, which uv built from the same cache), and compiles each imported
module's source *in the cache entry it is linked from* (same inode). Every environment uv builds after
that gets the bytecode with its files. A `.pyc` is checked against its source's mtime and size, which
a hard link shares, so a stale one is never used. Modules whose files are not hard links of the cache
(another link mode, another file system) are left alone: their environments compile at import, as
before. Everything here is best effort: a failure costs speed, never a test.
"""

from __future__ import annotations

import compileall
import importlib
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

#: What the tests' jobs import: torchrun and the preflight (torch.distributed.run), DDP training
#: (examples/train.py, pytorch/examples' DDP script, SkyPilot's minGPT example), the preflight's plot.
MODULES = (
    "torch.distributed.run",
    "torch.nn.parallel",
    "torch.optim",
    "torch.utils.data",
    "numpy",
    "matplotlib.pyplot",
)


def imported_sources(modules: tuple[str, ...] = MODULES) -> list[Path]:
    """The `.py` files of site-packages that importing `modules` loads (a missing module is skipped)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    roots = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return sorted(
        {Path(f) for f in files if f and f.endswith(".py") and any(Path(f).is_relative_to(r) for r in roots)}
    )


def cache_entry(source: Path, site: Path, archives: list[Path]) -> Path | None:
    """The cache entry (of `archives`) whose file `source` (under `site`) is a hard link of, or None."""
    rel = source.relative_to(site)
    for archive in archives:
        try:
            if os.path.samefile(archive / rel, source):
                return archive
        except OSError:
            continue
    return None


def warm(cache_dir: Path) -> tuple[int, int]:
    """Compile, in uv's cache, the twin of every imported source. Returns (sources compiled or already
    current, sources that are no hard link of the cache)."""
    archives = sorted(p for p in (cache_dir / "archive-v0").iterdir() if p.is_dir())
    sites = sorted({Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}, key=lambda p: -len(p.parts))
    entries: dict[str, list[Path]] = {}  # per top-level package: the cache entries that hold it
    done = missing = 0
    for source in imported_sources():
        site = next(s for s in sites if source.is_relative_to(s))
        top = source.relative_to(site).parts[0]
        candidates = entries.setdefault(top, [a for a in archives if (a / top).exists()])
        archive = cache_entry(source, site, candidates)
        if archive is None:
            missing += 1
            continue
        candidates.insert(0, candidates.pop(candidates.index(archive)))  # its siblings are there too
        done += bool(compileall.compile_file(str(archive / source.relative_to(site)), quiet=2))
    return done, missing


def main() -> int:
    try:
        uv = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
        cache_dir = Path(uv.stdout.strip())
        done, missing = warm(cache_dir)
    except (OSError, subprocess.CalledProcessError) as err:
        print(json.dumps({"error": str(err)}))
        return 0
    print(json.dumps({"compiled_or_current": done, "not_in_cache": missing, "cache": str(cache_dir)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
