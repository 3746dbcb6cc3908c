"""The managed jobs of a sky launch, planned and built before anything costs money: one `Plan` per copy
(`copy_names`, `plan_copy`: job.yaml with the resolved envs, secrets by name only, resource patches,
GIT_COMMIT and GIT_DIRTY), the git workdir the nodes clone (`resolve_git`; SkyPilot's own clone
settings: `set_git_workdir`), the `sky.Task` built with SkyPilot's SDK (`build_task`) and its YAML
(`render`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import _config
import _git
import _task
from _config import ConfigError, LaunchConfig
from _sky_sdk import SkyError, describe_sky_error, first_line, stdout_to_stderr

log = logging.getLogger("skyops.sky")

REDACTED = _task.REDACTED
#: Envs the launcher sets for the job: GIT_COMMIT and GIT_DIRTY. SkyPilot sets its own for its clone
#: of a git workdir (GIT_URL, GIT_COMMIT_HASH, ...: `skypilot_git_envs`).
LAUNCHER_ENVS = _config.GIT_ENVS
#: GIT_COMMIT's suffix when the uploaded code matches no commit (as `git describe --dirty` writes it).
DIRTY_SUFFIX = "-dirty"


# --------------------------------------------------------------------------------------- names


def copy_names(run: str, copies: int) -> list[str]:
    """The run name of each copy: `[run]` for one, `run-1 .. run-N` for N; each one validated.

    Raises ConfigError for copies < 1 or a name SkyPilot would reject.
    """
    if copies < 1:
        raise ConfigError(f"--copies: must be >= 1, got {copies}")
    _config.validate_run_name(run)
    names = [run] if copies == 1 else [f"{run}-{i}" for i in range(1, copies + 1)]
    for name in names:
        _config.validate_run_name(name, "--run" if copies == 1 else f"--run/--copies (copy name {name!r})")
    return names


# --------------------------------------------------------------------------------------- the task


@dataclass(frozen=True)
class Plan:
    """One copy to launch: its name, the task config without secret values, and the secret values."""

    name: str
    config: dict[str, Any]  # job.yaml + patches; secrets are None here: values never enter it
    envs: dict[str, str]
    secrets: dict[str, str]  # never printed; see render()

    def __repr__(self) -> str:  # keep secret values out of reprs and tracebacks
        return f"Plan(name={self.name!r}, secrets={sorted(self.secrets)})"


def skypilot_git_envs() -> tuple[str, ...]:
    """The envs SkyPilot sets for its own clone of a git workdir (sky/utils/git.py, set by
    sky/task.py update_envs_and_secrets_from_workdir): GIT_URL, and by the ref's kind GIT_COMMIT_HASH,
    GIT_BRANCH or GIT_TAG. Imports SkyPilot."""
    with stdout_to_stderr():
        from sky.utils import git as sky_git

    return (sky_git.GIT_URL_ENV_VAR, sky_git.GIT_COMMIT_HASH_ENV_VAR, sky_git.GIT_BRANCH_ENV_VAR,
            sky_git.GIT_TAG_ENV_VAR)  # fmt: skip


def plan_copy(
    cfg: LaunchConfig, name: str, pin: _git.GitPin | None, commit: str | None, dirty: bool = False
) -> Plan:
    """The Plan of one copy of `cfg`: job.yaml with name, num_nodes, workdir
    (`{url, ref}` with a pin, else the working tree) and resource patches; envs = resolved envs +
    RUN_ID + GIT_COMMIT + GIT_DIRTY. `dirty`: the uploaded code is not exactly `commit`; then GIT_DIRTY
    is "1" and GIT_COMMIT is `<commit>-dirty` (never a bare commit the code does not match). SkyPilot's
    own git settings are set when the task is built (`build_task`, `set_git_workdir`). Secrets: the
    declared names (values only in `Plan.secrets`) and job.yaml's managed references as written.

    Raises ConfigError when the user set, by flag or .env, an env the launcher (LAUNCHER_ENVS) or
    SkyPilot (`skypilot_git_envs`) sets.
    """
    for keys, who in ((LAUNCHER_ENVS, "the launcher from the git state (--git-ref, --skip-git-check)"),
                      (skypilot_git_envs(), "SkyPilot for its clone of the git workdir (--git-ref)")):  # fmt: skip
        owned = [k for k in keys if k in cfg.envs and cfg.sources.get(k) != "job.yaml"]
        if owned:
            source = cfg.sources[owned[0]]
            where = f"--set {owned[0]}" if source == "flag" else source
            raise ConfigError(f"{where}: {owned[0]} is set by {who}; remove it")
    assert not (pin is not None and dirty), "a pinned commit is never dirty"
    config = copy.deepcopy(cfg.task.config)
    config["name"] = name
    config["num_nodes"] = cfg.nodes
    resources = _task.patch_resources(
        config.get("resources"),
        gpus=cfg.gpus,
        cpus=cfg.cpus,
        use_spot=cfg.use_spot,
        max_restarts=cfg.max_restarts,
    )
    config["resources"] = resources
    envs = {k: v for k, v in cfg.envs.items() if k not in LAUNCHER_ENVS}
    envs["RUN_ID"] = name
    if commit:
        envs["GIT_COMMIT"] = commit + DIRTY_SUFFIX if dirty else commit
    envs["GIT_DIRTY"] = "1" if dirty or not commit else "0"
    if pin is not None:
        config["workdir"] = {"url": pin.url, "ref": pin.commit}
    else:
        config["workdir"] = str(cfg.repo)
    # job.yaml's envs as written (text, docs/field-cases.md Y1); the resolved values arrive as env_overrides.
    config["envs"] = {k: v for k, v in cfg.task.envs.items() if k not in LAUNCHER_ENVS}
    declared = list(dict.fromkeys([*cfg.task.secrets, *cfg.secrets, *cfg.missing_secrets]))
    # Managed references (`secrets:NAME`, resolved by the API server) in the mapping form, null, as
    # SkyPilot itself merges the list form with values given at launch (sky/task.py from_yaml_config).
    config["secrets"] = {k: None for k in [*declared, *cfg.task.secret_refs]}
    return Plan(name=name, config=config, envs=envs, secrets=dict(cfg.secrets))


def build_task(plan: Plan, *, dry: bool = False) -> Any:
    """A real `sky.Task` from the plan, through SkyPilot's SDK (no API server call), with SkyPilot's
    own settings for a git workdir (`set_git_workdir`, which reads the git remote). `dry` (--dry-run,
    --dump-config): a remote SkyPilot cannot read is only a warning, and the task lacks those settings.

    Raises ConfigError when SkyPilot rejects the task (a job.yaml or flag problem), SkyError when it
    cannot build it for another reason (e.g. the accelerator catalog cannot be fetched) or cannot
    read the git remote.
    """
    try:
        with stdout_to_stderr():
            import sky

            task = sky.Task.from_yaml_config(
                copy.deepcopy(plan.config),
                env_overrides=list(plan.envs.items()),
                secrets_overrides=list(plan.secrets.items()),
            )
    except ValueError as exc:  # includes sky.exceptions.InvalidSkyPilotConfigError
        raise ConfigError(f"job.yaml (as patched by the flags): {first_line(exc)}") from exc
    except Exception as exc:
        raise SkyError(describe_sky_error(exc, building=True)) from exc
    auth = {k: v for k in GIT_AUTH_KEYS if (v := plan.secrets.get(k, plan.envs.get(k))) is not None}
    try:
        set_git_workdir(task, auth)
    except SkyError as exc:
        if not dry:
            raise
        log.warning("%s (a launch would refuse)", exc)
    return task


#: What SkyPilot's git check reads from the process environment besides the workdir (sky/task.py
#: update_envs_and_secrets_from_workdir; sky/utils/git.py GIT_TOKEN_ENV_VAR, GIT_SSH_KEY_PATH_ENV_VAR).
GIT_AUTH_KEYS = ("GIT_TOKEN", "GIT_SSH_KEY_PATH")


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set while the block runs; restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def set_git_workdir(task: Any, auth: Mapping[str, str]) -> None:
    """SkyPilot's own settings for its clone of a git workdir (`{url, ref}`), set the way its CLI sets
    them: `task.update_envs_and_secrets_from_workdir()` right after the task is built
    (sky/client/cli/command.py `_make_task_or_dag_from_entrypoint_with_overrides`). SkyPilot reads
    the remote (a public /info/refs probe, then `git ls-remote` with GIT_TOKEN or an SSH key), sets
    GIT_URL and GIT_COMMIT_HASH in the task's envs, and puts GIT_TOKEN, or the content of the key at
    GIT_SSH_KEY_PATH as GIT_SSH_KEY, into its secrets (never its envs). No-op for a working-tree
    workdir.

    `auth`: the launch's resolved GIT_TOKEN and GIT_SSH_KEY_PATH (flags > environment > .env >
    job.yaml), which SkyPilot reads from the process environment: set there for the call only, with
    GIT_TERMINAL_PROMPT=0 unless set (a launch never waits on a hidden password prompt).

    Raises SkyError (one line, never the token) when SkyPilot cannot read the remote at the ref.
    """
    workdir = task.workdir
    if not isinstance(workdir, dict):
        return
    env = {"GIT_TERMINAL_PROMPT": os.environ.get("GIT_TERMINAL_PROMPT", "0"), **auth}
    try:
        with stdout_to_stderr(), _environ(env):
            task.update_envs_and_secrets_from_workdir()
    except Exception as exc:  # sky/task.py raises the GitError of sky/utils/git.py as a ValueError
        message = first_line(exc)
        for value in auth.values():
            if value:
                message = message.replace(value, REDACTED)
        # `from None`: the original message may hold the token, and --verbose prints the chain.
        raise SkyError(
            f"SkyPilot cannot read the git remote {workdir.get('url')} at {str(workdir.get('ref'))[:12]}:"
            f" {message} (a private repository: declare GIT_TOKEN under secrets: and set it, or set"
            " GIT_SSH_KEY_PATH to your SSH key)"
        ) from None


def render(plan: Plan, task: Any, fmt: str = "yaml") -> str:
    """The final task as SkyPilot YAML (or JSON), launchable with `sky jobs launch`: name, envs and
    secrets as the built sky.Task holds them (secret values `<redacted>`; null = not set), resources
    and the rest as patched. Never contains a secret value."""
    config = {k: v for k, v in plan.config.items() if k not in ("envs", "secrets")}
    ordered: dict[str, Any] = {}
    for key in ("name", "workdir", "num_nodes", "resources"):
        if key in config:
            ordered[key] = config.pop(key)
    ordered["name"] = task.name
    ordered["num_nodes"] = task.num_nodes
    ordered["envs"] = {k: str(v) for k, v in task.envs.items()}
    # The declared names (null: no value, or a managed reference), then those SkyPilot added (GIT_TOKEN,
    # GIT_SSH_KEY: set_git_workdir); every value <redacted>.
    declared = list(plan.config.get("secrets", {}))
    names = [*declared, *(k for k in task.secrets if k not in declared)]
    ordered["secrets"] = {k: (REDACTED if k in task.secrets else None) for k in names}
    ordered.update(config)
    if fmt == "json":
        return json.dumps(ordered, indent=2) + "\n"
    return _task.dump_yaml(ordered)


def resolve_git(cfg: LaunchConfig) -> tuple[_git.GitPin | None, str | None, bool]:
    """The git pin, the commit and whether the code is dirty, for a launch (see `plan_copy`).

    Through the gate: the pin, its commit, not dirty. With --skip-git-check: no pin (the working tree
    is uploaded as workdir), HEAD if known, and dirty unless the tree is exactly HEAD
    (`_git.worktree_matches`; no repository counts as dirty). On a dry run (--dry-run,
    --dump-config) a refusal is only a warning on stderr, and the preview uploads the working tree.

    Raises GitError (exit 2) when the gate refuses (`_git.gate`) or when the remote's URL is a local
    path the cloud nodes cannot clone (`_git.remote_url_problem`).
    """
    dry = bool(cfg.dry_run or cfg.dump_config)
    if cfg.skip_git_check:
        if cfg.git_ref:
            raise ConfigError(
                "--git-ref: cannot be combined with --skip-git-check (the ref is cloned from the remote)"
            )
        commit = _git.head_commit(cfg.repo)
        dirty = not _git.worktree_matches(cfg.repo, commit)
        log.warning(
            "--skip-git-check: uploading the working tree as it is%s",
            (f" (HEAD {commit[:12]}" + (" with uncommitted changes: GIT_DIRTY=1)" if dirty else ")"))
            if commit
            else " (not a git repository: GIT_DIRTY=1, no GIT_COMMIT)",
        )
        return None, commit, dirty
    try:
        pin = _git.gate(cfg.repo, cfg.git_ref)
    except _git.GitError as exc:
        if not dry:
            raise
        log.warning("git gate: %s (a launch would refuse)", exc)
        commit = _git.resolve_ref(cfg.repo, cfg.git_ref) if cfg.git_ref else _git.head_commit(cfg.repo)
        return None, commit, not _git.worktree_matches(cfg.repo, commit)
    problem = _git.remote_url_problem(pin.remote, pin.url)
    if problem:
        if not dry:
            raise _git.GitError(problem)
        log.warning("git gate: %s (a launch would refuse)", problem)
    return pin, pin.commit, False


def check_task_keys(task: _config.TaskFile) -> None:
    """Refuse job.yaml's top-level keys that SkyPilot's own task schema does not know (sky/utils/schemas.py
    get_task_schema; `_config.TASK_KEYS` is the copy for the paths that never import SkyPilot).
    Imports SkyPilot. Raises ConfigError (one line, as `_config.load_task_file` words it)."""
    with stdout_to_stderr():
        from sky.utils import schemas

    problems = _config.unknown_task_keys(task.config, schemas.get_task_schema()["properties"])
    if problems:
        raise ConfigError(f"{task.path}: {'; '.join(problems)}")
