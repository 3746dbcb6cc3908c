"""Compile the bytecode of what the tests' torch jobs import, once per machine, into uv's cache.

    python tests/_bytecode.py      # tests/conftest.py runs it as a test run starts, before the workers

Why: the tests emulate many nodes on one machine, and uv keys a script's environment by the script's
path, so a test run builds about 20 torch environments (one per script, node slot and node rank, and
the projects' `.venv`s). In each, the first `import torch` compiled torch's bytecode again: 5.0-5.5 s
of CPU against 2.2-2.5 s with a bytecode cache, about 70 s of CPU over a run. A real node builds one
environment and job.yaml's setup compiles it (UV_COMPILE_BYTECODE); nothing here changes that. The
same goes for SkyPilot in the launcher's environments (`import sky`: 5.8 s without, 2.4 s with).

How: uv builds an environment by hard-linking every file of a package's unpacked wheel from its cache
(`<uv cache dir>/archive-v0/<id>/`), `__pycache__` folders included. This script imports MODULES in
this interpreter (the test venv) and compiles each imported module's source in every cache entry
that holds the same distribution and version (uv can unpack one wheel into several entries: here
five hold sympy 1.14.0). Every environment uv builds after that gets the bytecode with its files. A
`.pyc` is checked against its source's mtime and size, which a hard link shares, so a stale one is
never used; an environment whose files uv copied (another link mode or file system) compiles at
import, as before. Everything here is best effort: a failure costs speed, never a test.

When: before any test runs, so the first environments the run builds get the bytecode too (run in
the background, it lost the race to the slow tests, which start first). Measured here (2 cores):
21 s (32 s of CPU, on every core) with nothing compiled yet, where uv's cache held five entries of
sympy; 0.5-1 s after that. The first warm-up records what it compiled in
`$XDG_CACHE_HOME/skyops/bytecode-warm-up.json`; later ones compile those files only in the cache
entries that appeared since (a test run unpacks a few wheels again), and import nothing.
"""

from __future__ import annotations

import compileall
import concurrent.futures
import hashlib
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

#: What the tests' jobs import: torchrun and the preflight (torch.distributed.run), DDP training
#: (examples/train.py, pytorch/examples' DDP script, SkyPilot's minGPT example; torch._dynamo is
#: imported by the first optimizer made, 1.7 s of import), the preflight's plot; and what the
#: launcher imports for `--backend sky` (SkyPilot: 5.8 s to import without bytecode, 2.4 s with).
MODULES = (
    ("torch.distributed.run", "torch._dynamo", "torch.nn.parallel", "torch.optim", "torch.utils.data"),
    ("numpy", "matplotlib.pyplot"),
    ("sky", "sky.utils.schemas", "sky.utils.git"),
)  # each group is imported by a process of its own, side by side: 9 s instead of 15 s without bytecode
#: This interpreter's site-packages folders, the deepest first.
SITES = sorted({Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}, key=lambda p: -len(p.parts))


def imported_sources(modules: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    """The `.py` files of site-packages that importing `modules` loads, and the modules that failed to
    import (skipped)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            failed.append(name)
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    found = {
        Path(f) for f in files if f and f.endswith(".py") and any(Path(f).is_relative_to(s) for s in SITES)
    }
    return sorted(found), failed


def dist_info_names() -> dict[str, set[str]]:
    """Per top-level import name: the `.dist-info` folder names (name and version) that provide it here."""
    names: dict[str, set[str]] = {}
    for top, dists in importlib.metadata.packages_distributions().items():
        for name in dists:
            files = importlib.metadata.distribution(name).files or ()
            metadata = (f for f in files if f.name == "METADATA" and len(f.parts) == 2)
            names.setdefault(top, set()).update(
                f.parts[0] for f in metadata if f.parts[0].endswith(".dist-info")
            )
    return names


def sources_by_dist(
    groups: tuple[tuple[str, ...], ...] = MODULES,
) -> tuple[dict[str, list[str]], int, list[str]]:
    """Import each group of modules in a process of its own; returns the imported sources of
    site-packages as paths relative to it, per `.dist-info` name of the distribution that provides
    them, how many belong to none, and the modules that failed to import."""
    infos = dist_info_names()
    found: dict[str, set[str]] = {}
    orphans = 0
    with concurrent.futures.ProcessPoolExecutor(len(groups)) as pool:
        results = list(pool.map(imported_sources, groups))
    failed = [name for _, names in results for name in names]
    for source in sorted({source for sources, _ in results for source in sources}):
        site = next(s for s in SITES if source.is_relative_to(s))
        rel = source.relative_to(site)
        wanted = infos.get(rel.parts[0].removesuffix(".py"), set())
        orphans += not wanted
        for info in wanted:
            found.setdefault(info, set()).add(str(rel))
    return {info: sorted(rels) for info, rels in sorted(found.items())}, orphans, failed


def warm(
    cache_dir: Path, sources: dict[str, list[str]], skip: frozenset[str] = frozenset()
) -> tuple[int, list[str]]:
    """Compile `sources` (per `.dist-info` name, as `sources_by_dist` gives them) in every entry of uv's
    cache that holds that distribution and version (uv may unpack one wheel into several entries), but
    not in the entries named in `skip`. Returns (files compiled or already current, the names of every
    entry that holds one of the distributions)."""
    archives = sorted(p for p in (cache_dir / "archive-v0").iterdir() if p.is_dir())
    twins: list[str] = []
    holders: list[str] = []
    for info, rels in sources.items():
        for archive in (a for a in archives if (a / info).is_dir()):
            holders.append(archive.name)
            if archive.name not in skip:
                twins += (str(archive / rel) for rel in rels if (archive / rel).is_file())
    if not twins:
        return 0, sorted(set(holders))
    with concurrent.futures.ProcessPoolExecutor(
        len(os.sched_getaffinity(0))
    ) as pool:  # 5,000 files: 14 s CPU
        done = sum(map(bool, pool.map(_compile, twins, chunksize=64)))
    return done, sorted(set(holders))


def _compile(path: str) -> bool:
    """compileall's compile_file, quiet: compiles `path` unless its .pyc is current."""
    return bool(compileall.compile_file(path, quiet=2))


def stamp_path() -> Path:
    """Where the last warm-up is recorded: `$XDG_CACHE_HOME/skyops/bytecode-warm-up.json`."""
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skyops" / "bytecode-warm-up.json"
    )


def read_record(path: Path, key: str) -> dict[str, Any] | None:
    """The record of an earlier complete warm-up for `key` whose distributions are all still installed
    here (a new torch: import again), or None: none, another key, unreadable or malformed."""
    installed = {n for site in SITES if site.is_dir() for n in os.listdir(site) if n.endswith(".dist-info")}
    try:
        record = json.loads(path.read_text())
        sources, entries = record["sources"], record["entries"]
        valid = record["key"] == key and isinstance(sources, dict) and isinstance(entries, list)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return record if valid and set(sources) <= installed else None


def write_record(path: Path, record: dict[str, Any]) -> str:
    """Write `record` atomically (a temporary file, then a rename); returns "written" or why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, path)
    except OSError as err:
        return f"not written: {err}"
    return "written"


def main() -> int:
    """Warm uv's cache; with a record of an earlier complete warm-up for this Python, MODULES and the
    versions installed here, only the cache entries that appeared since (a test run unpacks some wheels
    again), and no import at all. Prints one JSON line; exits 0 whatever happens."""
    key = hashlib.sha256(json.dumps([sys.version, MODULES]).encode()).hexdigest()
    report: dict[str, Any] = {}
    try:
        uv = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
        cache_dir, stamp = Path(uv.stdout.strip()), stamp_path()
        report["cache"] = str(cache_dir)
        last = read_record(stamp, key)
        if last is not None:
            sources, skip, failed = last["sources"], frozenset(last["entries"]), []
            report["from_record"] = True
        else:
            sources, report["sources_outside_any_dist"], failed = sources_by_dist()
            skip = frozenset()
        report["files_compiled_or_current"], entries = warm(cache_dir, sources, skip)
        if failed:  # e.g. a Python without torch: a record of it would stop the warm-up for good
            report["not_imported"] = failed
            report["record"] = "not written: some modules did not import"
        else:
            report["record"] = write_record(stamp, {"key": key, "sources": sources, "entries": entries})
    except (
        OSError,
        ValueError,
        subprocess.CalledProcessError,
        BrokenProcessPool,
    ) as err:
        report["error"] = str(err)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
