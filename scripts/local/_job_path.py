"""JOB as the nodes get it: a script path relative to the repository root, or `-m NAME` for a module in
the repository (README "Bring your own script"), checked on the laptop before anything is launched.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import _config
from _config import ConfigError

#: `-m NAME` as JOB: a dotted module name, as `python -m` takes it.
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def module_paths(name: str) -> list[Path]:
    """Where the nodes find `-m NAME` in the repository (the nodes' rule: scripts/remote/_job_command.py
    module_paths; tests/test_launch.py checks that both agree): `pkg/mod.py`, `pkg/mod/__main__.py`,
    then both under `src/`."""
    parts = name.split(".")
    here = [Path(*parts[:-1], parts[-1] + ".py"), Path(*parts, "__main__.py")]
    return [*here, *(Path("src") / p for p in here)]


def check_project(script: Path, repo: Path) -> None:
    """A script inside a project runs in the project's environment on the nodes: every pyproject.toml
    from the script's folder up to the repository root must be valid TOML (the nearest one with a
    `[project]` table is the project). Raises ConfigError naming `file:line`."""
    for folder in (script.parent, *script.parent.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                found = re.search(r"at line (\d+)", str(exc))
                line = getattr(exc, "lineno", None) or (int(found[1]) if found else None)
                where = pyproject.relative_to(repo).as_posix() + (f":{line}" if line else "")
                raise ConfigError(
                    f"{where}: not valid TOML ({str(exc).split(' (at')[0]}); JOB runs in this project"
                ) from None
            if isinstance(data.get("project"), dict):
                return
        if folder == repo:
            return


def relative_job_path(job: str, repo: Path) -> str:
    """JOB as the nodes get it: a path relative to the repository root, or `-m NAME` for a module in the
    repository (README "Bring your own script"). Raises ConfigError if it is neither a `.py` or
    executable file inside the repository nor such a module, or if its project's pyproject.toml is
    not valid."""
    if job.startswith("-m"):
        name = job[2:].strip()
        if not _MODULE_RE.fullmatch(name):
            raise ConfigError(
                f'JOB {job!r}: expected -m and a module name like pkg.train, as one word: "-m pkg.train"'
            )
        if not any((repo / p).is_file() for p in module_paths(name)):
            tried = ", ".join(p.as_posix() for p in module_paths(name))
            raise ConfigError(
                f"JOB {job!r}: none of {tried} is in the repository {repo} (nodes receive only the repository)"
            )
        found = next(repo / p for p in module_paths(name) if (repo / p).is_file())
        check_project(found, repo)
        return f"-m {name}"
    path = Path(job)
    full = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not full.is_file() and not path.is_absolute():
        full = (repo / path).resolve()
    try:
        rel = full.relative_to(repo)
    except ValueError:
        raise ConfigError(
            f"JOB {job!r}: must be inside the repository {repo} (nodes receive only the repository)"
        ) from None
    if not full.is_file():
        raise ConfigError(f"JOB {job!r}: no such file")
    if full.suffix != ".py" and not os.access(full, os.X_OK):
        raise ConfigError(
            f"JOB {job!r}: must be a Python script (.py) or an executable file, or -m and a module name"
        )
    if full.suffix == ".py":
        check_project(full, repo)
    return rel.as_posix()


_JOB_REF_RE = re.compile(r"\$\{?JOB\b")


def task_uses_job(task: _config.TaskFile) -> bool:
    """Whether the task needs a JOB: its envs declare JOB, or its setup or run mentions $JOB / ${JOB}."""
    commands = f"{task.config.get('setup') or ''}\n{task.config.get('run') or ''}"
    return "JOB" in task.envs or bool(_JOB_REF_RE.search(commands))


def job_path(job: str | None, task: _config.TaskFile, repo: Path) -> str:
    """The JOB a launch sends (relative_job_path), or "" when the launch names none. Raises ConfigError
    when the task needs a JOB (task_uses_job) and none was given, or when JOB is not one the nodes can run."""
    if job is None and task_uses_job(task):
        raise ConfigError(
            f"JOB: missing; {task.path.name} runs $JOB (usage: launch.py [options] JOB [JOB_ARGS...])"
        )
    return "" if job is None else relative_job_path(job, repo)
