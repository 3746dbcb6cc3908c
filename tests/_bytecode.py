"""Compile the bytecode of what the tests' torch jobs import, once per machine, into uv's cache.

    python tests/_bytecode.py      # tests/conftest.py runs it as a test run starts, before the workers

Why: the tests emulate many nodes on one machine, and uv keys a script's environment by the script's
path, so a test run builds about 20 torch environments (one per script, node slot and node rank, and
the projects' `.venv`s). In each, the first `import torch` compiled torch's bytecode again: 5.0-5.5 s
of CPU against 2.2-2.5 s with a bytecode cache, about 70 s of CPU over a run. A real node builds one
environment and job.yaml's setup compiles it (UV_COMPILE_BYTECODE); nothing here changes that.

How: uv builds an environment by hard-linking every file of a package's unpacked wheel from its cache
(`<uv cache dir>/archive-v0/<id>/`), `__pycache__` folders included. This script imports MODULES in
this interpreter (the test venv) and compiles each imported module's source in every cache entry
that holds the same distribution and version (uv can unpack one wheel into several entries: here
five hold sympy 1.14.0). Every environment uv builds after that gets the bytecode with its files. A
`.pyc` is checked against its source's mtime and size, which a hard link shares, so a stale one is
never used; an environment whose files uv copied (another link mode or file system) compiles at
import, as before. Everything here is best effort: a failure costs speed, never a test.

When: before any test runs, so the first environments the run builds get the bytecode too (run in
the background, it lost the race to the slow tests, which start first). Measured here: 16.6 s with
nothing compiled yet (44 s of CPU where uv's cache held five entries of sympy), 5.4 s when all is
compiled, and 0.2 s when uv's cache holds no new entry of those distributions since the last
warm-up (its key is kept in `$XDG_CACHE_HOME/skyops/bytecode-warm-up.json`).
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
    "torch.distributed.run",
    "torch._dynamo",
    "torch.nn.parallel",
    "torch.optim",
    "torch.utils.data",
    "numpy",
    "matplotlib.pyplot",
    "sky",
    "sky.utils.schemas",
    "sky.utils.git",
)
#: This interpreter's site-packages folders, the deepest first.
SITES = sorted({Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}, key=lambda p: -len(p.parts))


def imported_sources(modules: tuple[str, ...] = MODULES) -> list[Path]:
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


def warm(cache_dir: Path, modules: tuple[str, ...] = MODULES) -> tuple[int, int, set[str]]:
    """Compile, in every cache entry of uv that holds the same distribution and version as this
    interpreter's (uv may unpack one wheel into several entries), the twin of every imported source.
    Returns (files compiled or already current, imported sources with no entry in the cache, the
    `.dist-info` names of the distributions the imported sources belong to)."""
    archives = sorted(p for p in (cache_dir / "archive-v0").iterdir() if p.is_dir())
    infos = dist_info_names()
    entries: dict[str, list[Path]] = {}  # per top-level package
    used: set[str] = set()
    twins: list[str] = []
    missing = 0
    for source in imported_sources(modules):
        site = next(s for s in SITES if source.is_relative_to(s))
        rel = source.relative_to(site)
        if rel.parts[0] not in entries:
            wanted = infos.get(rel.parts[0].removesuffix(".py"), set())
            used |= wanted
            entries[rel.parts[0]] = [a for a in archives if any((a / info).is_dir() for info in wanted)]
        found = [str(a / rel) for a in entries[rel.parts[0]] if (a / rel).is_file()]
        missing += not found
        twins += found
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:  # 5,000 files here: 14 s of CPU
        done = sum(map(bool, pool.map(_compile, twins, chunksize=64)))
    return done, missing, used


def _compile(path: str) -> bool:
    """compileall's compile_file, quiet: compiles `path` unless its .pyc is current."""
    return bool(compileall.compile_file(path, quiet=2))


def stamp_path() -> Path:
    """Where the last warm-up's key is kept: `$XDG_CACHE_HOME/skyops/bytecode-warm-up.json`."""
    return (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skyops" / "bytecode-warm-up.json"
    )


def cache_key(cache_dir: Path, infos: list[str]) -> str:
    """What a warm-up depends on: this Python, MODULES, and the entries of uv's cache that hold the
    distributions it compiled (`infos`: another unpack of one of them means warming again)."""
    archives = (cache_dir / "archive-v0").iterdir()
    entries = sorted(a.name for a in archives if any((a / info).is_dir() for info in infos))
    return hashlib.sha256(json.dumps([sys.version, MODULES, infos, entries]).encode()).hexdigest()


def main() -> int:
    try:
        uv = subprocess.run(["uv", "cache", "dir"], capture_output=True, text=True, check=True)
        cache_dir, stamp = Path(uv.stdout.strip()), stamp_path()
        last = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if last.get("key") and last["key"] == cache_key(cache_dir, last.get("infos", [])):
            print(json.dumps({"current": str(cache_dir)}))
            return 0
        done, missing, used = warm(cache_dir)
        infos = sorted(used)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"key": cache_key(cache_dir, infos), "infos": infos}) + "\n")
    except (OSError, ValueError, subprocess.CalledProcessError) as err:
        print(json.dumps({"error": str(err)}))
        return 0
    report = {"files_compiled_or_current": done, "sources_not_in_cache": missing, "cache": str(cache_dir)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
