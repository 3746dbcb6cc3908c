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
from pathlib import Path

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


def imported_sources(modules: tuple[str, ...]) -> list[Path]:
    """The `.py` files of site-packages that importing `modules` loads (a missing module is skipped)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
    files = (getattr(module, "__file__", None) for module in list(sys.modules.values()))
    return sorted(
        {Path(f) for f in files if f and f.endswith(".py") and any(Path(f).is_relative_to(s) for s in SITES)}
    )


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


def sources_by_dist(groups: tuple[tuple[str, ...], ...] = MODULES) -> tuple[dict[str, list[str]], int]:
    """Import each group of modules in a process of its own; returns the imported sources of
    site-packages as paths relative to it, per `.dist-info` name of the distribution that provides
    them, and how many belong to none."""
    infos = dist_info_names()
    found: dict[str, set[str]] = {}
    orphans = 0
    with concurrent.futures.ProcessPoolExecutor(len(groups)) as pool:
        sources = {source for imported in pool.map(imported_sources, groups) for source in imported}
    for source in sorted(sources):
        site = next(s for s in SITES if source.is_relative_to(s))
        rel = source.relative_to(site)
        wanted = infos.get(rel.parts[0].removesuffix(".py"), set())
        orphans += not wanted
        for info in wanted:
            found.setdefault(info, set()).add(str(rel))
    return {info: sorted(rels) for info, rels in sorted(found.items())}, orphans


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
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:  # 5,000 files here: 14 s of CPU
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


def main() -> int:
    """Warm uv's cache; with a record of an earlier warm-up for this Python, MODULES and the versions
    installed here, only the cache entries that appeared since (a test run unpacks some wheels again),
    and no import at all."""
    key = hashlib.sha256(json.dumps([sys.version, MODULES]).encode()).hexdigest()
    try:
        uv = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
        cache_dir, stamp = Path(uv.stdout.strip()), stamp_path()
        last = json.loads(stamp.read_text()) if stamp.is_file() else {}
        installed = {
            n for site in SITES if site.is_dir() for n in os.listdir(site) if n.endswith(".dist-info")
        }
        if last.get("key") == key and set(last["sources"]) <= installed:  # a new torch: import again
            sources, orphans, skip = last["sources"], 0, frozenset(last["entries"])
        else:
            (sources, orphans), skip = sources_by_dist(), frozenset()
        done, entries = warm(cache_dir, sources, skip)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"key": key, "sources": sources, "entries": entries}) + "\n")
    except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as err:
        print(json.dumps({"error": str(err)}))
        return 0
    report = {"cache": str(cache_dir), "files_compiled_or_current": done, "sources_outside_any_dist": orphans}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
