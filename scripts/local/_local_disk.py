"""The emulated nodes' disks: the repository's files a node receives (`workdir_files`, `copy_files`),
one node's disk for one attempt (`NodeDisk`: its HOME with ~/sky_workdir, its TMPDIR), and the folder
that holds a job's node disks (`nodes_dir`, `node_slot`), whose paths stay the same from job to job.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import _teardown
from _job_state import LIVE
from _local_sky import SKY_WORKDIR

log = logging.getLogger("skyops.local")


def nodes_dir(repo: Path, env: Mapping[str, str]) -> Path:
    """The emulated nodes' disks of this clone: `$XDG_CACHE_HOME/skyops/nodes/<repo path hash>` (default
    `~/.cache/...`), beside uv's own cache and never inside the repository. The path stays the same from
    job to job: uv keys a script's environment by the script's absolute path, so nodes whose copies of
    the repository keep their paths reuse the environments earlier setups built (a torch environment
    takes about 45 s to build with bytecode, 1 s to check), and uv's cache does not fill up with one
    environment per node, attempt and job (docs/decisions/local-backend.md)."""
    cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "skyops" / "nodes" / hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:12]


def workdir_files(repo: Path, skip: Sequence[Path] = ()) -> list[str]:
    """The repository's files a node's ~/sky_workdir receives, relative paths, sorted: its tracked and
    untracked files that git does not ignore (`git ls-files --cached --others --exclude-standard`; a
    deleted file is left out), as SkyPilot uploads a workdir without what .gitignore ignores and as
    --backend sky's git workdir holds what is committed. No `.git`: ~/sky_workdir is no repository
    here. Outside git (or without it), every file but `.git` and those under `skip`."""
    skip = [p.resolve() for p in skip]

    def kept(rel: str) -> bool:
        full = (repo / rel).absolute()
        return not any(full == s or s in full.parents for s in skip)

    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo, capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        names = sorted({n for n in os.fsdecode(out).split("\0") if n})
        return [n for n in names if os.path.lexists(repo / n) and kept(n)]
    except (OSError, subprocess.SubprocessError):
        log.debug("%s: not a git work tree (or no git): nodes receive every file but .git", repo)
    found = []
    for folder, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git" and kept(os.path.relpath(os.path.join(folder, d), repo))]
        found += [os.path.relpath(os.path.join(folder, f), repo) for f in files]
    return sorted(f for f in found if kept(f))


def copy_files(src: Path, files: Sequence[str], dest: Path) -> int:
    """Copy `files` (paths relative to `src`) into `dest`, creating folders: real copies, never hard
    links (a node that writes a file in place must not change the repository's, or another node's),
    with modes and times kept; symlinks stay symlinks; a listed folder (a submodule) is copied whole.
    A file that is gone by the time it is copied (an editor's swap file, a test's temporary file) is
    left out. Returns the bytes copied. Raises OSError."""
    total = 0
    made: set[Path] = set()
    for rel in files:
        source, target = src / rel, dest / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        try:
            if source.is_symlink():
                os.symlink(os.readlink(source), target)
            elif source.is_dir():
                shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            else:
                shutil.copy2(source, target)
                total += target.stat().st_size
        except FileNotFoundError:
            log.debug("workdir: %s is gone, left out", rel)
    return total


@dataclass(frozen=True)
class NodeDisk:
    """One emulated node's disk for one attempt, under `root`: `home/` (its HOME, with its copy of the
    repository at ~/sky_workdir), `tmp/` (its TMPDIR) and SkyPilot's script files. Made fresh at each
    attempt's start and removed at its end: every recovery lands on fresh VMs (EAGER_NEXT_REGION)."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def workdir(self) -> Path:
        return self.home / SKY_WORKDIR

    def create(self, snapshot: Path) -> None:
        """Wipe whatever an earlier job left, then a fresh home holding a copy of `snapshot` (the
        repository's files as the job was launched) as ~/sky_workdir. Raises OSError."""
        self.remove()
        self.tmp.mkdir(parents=True)
        self.home.mkdir(mode=0o700)
        shutil.copytree(snapshot, self.workdir, symlinks=True)

    def write_script(self, name: str, text: str) -> Path:
        """A job script in the node's folder (owner-only; it never holds a secret:
        `_local_backend._LocalJob.command`)."""
        path = self.root / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _job_lives(job_dir: Path) -> bool:
    """Whether a process of the job in `job_dir` may still run: its job.json shows no final state and
    a process carries its marker (a launcher killed with SIGKILL leaves its nodes running)."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads((job_dir / "job.json").read_text()).get("state") not in LIVE:
            return False
    return bool(_teardown.marked(_teardown.JOB_MARKER, str(job_dir)))


@contextlib.contextmanager
def node_slot(nodes_dir: Path, job_dir: Path) -> Iterator[Path]:
    """The folder for the disks of this job's nodes, `<nodes_dir>/slot<k>`, with the smallest k that no
    other job holds, held until the context ends: a job holds its slot through its launcher's lock on
    `slot<k>.lock`, and, once its launcher was killed, through its live processes (the lock file names
    the job). Paths stay the same from job to job (nodes_dir says why). Raises OSError."""
    nodes_dir.mkdir(parents=True, exist_ok=True)
    k = 0
    while True:
        fh = open(nodes_dir / f"slot{k}.lock", "a+")  # noqa: SIM115 (held open for the whole job)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fh.seek(0)
            owner = fh.read().strip()
            if not owner or owner == str(job_dir) or not _job_lives(Path(owner)):
                fh.seek(0)
                fh.truncate()
                fh.write(f"{job_dir}\n")
                fh.flush()
                break
        except BlockingIOError:
            pass
        except BaseException:
            fh.close()
            raise
        fh.close()
        k += 1
    try:
        yield nodes_dir / f"slot{k}"
    finally:
        fh.close()


def check_job_received(job: str, files: Sequence[str]) -> None:
    """Raise ConfigError when JOB (a path relative to the repository; "" when the task runs none; a
    `-m NAME` module is not checked here) is not among the `files` every node's ~/sky_workdir receives
    (`workdir_files`): git ignores it."""
    from _config import ConfigError

    if job.startswith("-"):
        return
    if job and job not in files and not any(job.startswith(f"{f}/") for f in files):
        raise ConfigError(
            f"JOB {job!r}: git ignores it, so the nodes' ~/sky_workdir does not have it (nodes receive"
            " the repository's files that git does not ignore); un-ignore it or move it"
        )
