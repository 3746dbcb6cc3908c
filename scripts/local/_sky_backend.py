"""The SkyPilot backend of launch.py: job.yaml as SkyPilot managed jobs, built with SkyPilot's own SDK.

What `launch(cfg)` does, in order (nothing costs money before step 5):

1. names: `--run`, or `<run>-1 .. <run>-N` with `--copies N`, each valid as a SkyPilot task and
   cluster name (docs/field-cases.md N1);
2. the git gate (`_git.gate`): the nodes clone the job's code from the git remote at one commit
   (SkyPilot's git `workdir: {url, ref}`); the job sees it as `GIT_COMMIT`, and `GIT_DIRTY=0`.
   SkyPilot's own `Task.update_envs_and_secrets_from_workdir` then checks that the remote can be
   read and sets its clone settings, as its CLI does (`set_git_workdir`). With --skip-git-check the working tree is uploaded instead: `GIT_COMMIT` is HEAD when the tree
   is exactly HEAD (`GIT_DIRTY=0`), else `<HEAD>-dirty` with `GIT_DIRTY=1` (absent without a
   repository), so the job is never told a commit its code does not match;
3. the task: `sky.Task.from_yaml_config(job.yaml, env_overrides=..., secrets_overrides=...)` with the
   resolved envs (the text the user wrote, docs/field-cases.md Y1) and secrets (passed only as SkyPilot
   secrets, Y3), and the resource patches of `patch_resources` applied to every candidate (Y2);
4. `--dry-run` / `--dump-config {yaml,json}`: print the final task, secrets `<redacted>`, and stop
   before any server call (a git gate refusal, or a remote URL the nodes cannot clone, is only a
   warning there); `--confirm` shows a summary on stderr and asks on stderr, reading the answer
   from stdin: declined exits 1 ("not launched"), no answer (EOF) exits 2;
5. one `sky.jobs.launch` per copy; job ids on stdout with `--print-id`; `--follow` tails the logs
   (`sky.jobs.tail_logs`; 101 "not finished" means still running, e.g. while a job recovers).

For `jobs.py --backend sky`: `show_logs` prints a job's logs and says how it ended (without follow,
SkyPilot's tail_logs answers None, so the outcome comes from the job's status), with the
supervisor's reason from its summary line (`parse_summary`); `supervisor_reasons` reads that line
from the end of each finished job's logs (`tail=N`) once, and caches it (finished jobs never change).

Every SkyPilot failure (no API server, no cloud enabled, catalog unreachable, any exception) ends
in one actionable line and exit 3 (`SkyError`, `describe_sky_error`: SkyPilot's errors are told
apart by their `sky.exceptions` class); the traceback only with --verbose. Copies that did launch
before a failure are named. The SkyPilot SDK is reached only through `SkyJobsSDK`, the one boundary
tests replace with a fake.

The launcher never starts SkyPilot's local API server (docs/decisions/local-api-server.md): one it
started would run from the launcher's own environment, whose SkyPilot has no cloud extras, and could
reach no cloud. `SkyJobsSDK` turns SkyPilot's auto-start off (`never_start_local_api_server`), so a
local endpoint with no server running ends in one line: start it from your own SkyPilot install,
`sky api start`.

stdout carries data only. SkyPilot prints to stdout itself (its logger holds the original
`sys.stdout`), so `import sky` and every SDK call run inside `stdout_to_stderr()`, which points file
descriptor 1 at stderr for the duration; data is written outside those blocks (or, for streamed
logs, to the real stdout that block hands out).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import _atomic
import _config
import _git
import _task
from _config import EXIT_FAILED, EXIT_OK, EXIT_SKY_ERROR, REPO, ConfigError, LaunchConfig
from _job_state import TERMINAL, JobState

log = logging.getLogger("skyops.sky")


REDACTED = _task.REDACTED
#: sky.jobs.tail_logs return codes (sky/exceptions.py JobExitCode). With follow=False, SkyPilot
#: 0.14.1 returns None instead (sky/jobs/client/sdk.py tail_logs: `get_result=follow`): the outcome
#: then comes from the job's status (`tail_code_of_status`).
TAIL_SUCCEEDED, TAIL_FAILED, TAIL_NOT_FINISHED, TAIL_NOT_FOUND, TAIL_CANCELLED = 0, 100, 101, 102, 103
#: The supervisor's reason per finished job id (`supervisor_reasons`) when no path is given;
#: `jobs.py` passes the one in its state folder ($SKYOPS_STATE_DIR, else <repo>/.skyops).
REASONS_CACHE = REPO / ".skyops" / "sky-reasons.json"
#: Log lines fetched from the end of a finished job's logs to find the supervisor's summary line.
SUMMARY_TAIL_LINES = 200
#: Uncached finished jobs whose logs one `jobs.py status` fetches at most (newest first).
MAX_REASON_FETCHES = 20
#: Envs the launcher sets for the job: GIT_COMMIT and GIT_DIRTY. SkyPilot sets its own for its clone
#: of a git workdir (GIT_URL, GIT_COMMIT_HASH, ...: `skypilot_git_envs`).
LAUNCHER_ENVS = _config.GIT_ENVS
#: GIT_COMMIT's suffix when the uploaded code matches no commit (as `git describe --dirty` writes it).
DIRTY_SUFFIX = "-dirty"


class SkyError(Exception):
    """A SkyPilot failure, already phrased as one actionable line (exit 3)."""


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
        raise ConfigError(f"job.yaml (as patched by the flags): {_first_line(exc)}") from exc
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
        message = _first_line(exc)
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


# --------------------------------------------------------------------------------------- the SDK


def normalise_job_ids(value: Any) -> list[int]:
    """Job ids from `sky.get(sky.jobs.launch(...))[0]`: a list in 0.14.1, an int from older servers."""
    if value is None:
        return []
    if isinstance(value, bool):
        raise SkyError(f"unexpected job id {value!r} from the API server")
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [i for v in value for i in normalise_job_ids(v)]
    if isinstance(value, str) and value.strip().isdigit():
        return [int(value)]
    raise SkyError(f"unexpected job id {value!r} from the API server")


_REDIRECT: dict[str, Any] = {"depth": 0, "data": None}


def _flush_stdout() -> None:
    for stream in {id(s): s for s in (sys.stdout, sys.__stdout__) if s is not None}.values():
        with contextlib.suppress(Exception):
            stream.flush()


def _fileno(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except Exception:
        return None


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[IO[str]]:
    """Point file descriptor 1 at stderr while the block runs, so that whatever SkyPilot prints to
    stdout (its logger holds the original `sys.stdout` object, so `contextlib.redirect_stdout` is
    not enough; the local API server's start-up messages; C-level writes to fd 1) reaches stderr.

    `sys.stdout` is flushed before and after; fd 1 is restored in `finally`. Yields a text stream
    on the real stdout (a duplicate of the original fd 1) for data that must be written inside the
    block, e.g. streamed log lines. Re-entrant (an inner block yields the outer block's stream).
    Without a usable fd 1 or fd 2 nothing is redirected and `sys.stdout` is yielded.

    Also restores `sys.tracebacklimit`: SkyPilot sets it to 0 around its own raises and leaves it so
    when it raises (sky/utils/ux_utils.py print_exception_no_traceback has no `finally`), which would
    hide every later traceback of the process, --verbose's included.
    """
    if _REDIRECT["depth"]:
        _REDIRECT["depth"] += 1
        try:
            yield _REDIRECT["data"]
        finally:
            _REDIRECT["depth"] -= 1
        return
    _flush_stdout()
    try:
        saved: int | None = os.dup(1)
    except OSError:
        saved = None
    if saved is not None:
        try:
            os.dup2(2, 1)
        except OSError:
            os.close(saved)
            saved = None
    if saved is None:
        data: IO[str] = sys.stdout
    else:
        encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"
        data = open(saved, "w", encoding=encoding, errors="replace", closefd=False)  # noqa: SIM115
    _REDIRECT.update(depth=1, data=data)
    limit = getattr(sys, "tracebacklimit", None)
    try:
        yield data
    finally:
        if limit is None:
            with contextlib.suppress(AttributeError):
                del sys.tracebacklimit
        else:
            sys.tracebacklimit = limit
        _REDIRECT.update(depth=0, data=None)
        _flush_stdout()
        if saved is not None:
            with contextlib.suppress(Exception):
                data.close()  # flushes; closefd=False keeps `saved` open
            os.dup2(saved, 1)
            os.close(saved)


#: SkyPilot's switch that turns its silent start of a local API server into an error
#: (sky/utils/env_options.py Options.DISABLE_LOCAL_API_SERVER, read at each call).
NO_LOCAL_API_SERVER_ENV = "SKYPILOT_DISABLE_LOCAL_API_SERVER"


def never_start_local_api_server() -> None:
    """Turn off SkyPilot's auto-start of a local API server for this process
    (docs/decisions/local-api-server.md). With no server reachable at the default local endpoint, a
    SkyPilot 0.14.1 client call starts one itself (sky/server/common.py
    check_server_healthy_or_start_fn -> _start_api_server), as `sys.executable -m sky.server.server`:
    from the launcher's own environment, whose SkyPilot has no cloud extras. With this set, it raises
    instead (check_local_api_server_enabled_or_raise), and `describe_sky_error` says what to run."""
    os.environ[NO_LOCAL_API_SERVER_ENV] = "1"


class SkyJobsSDK:
    """The boundary to SkyPilot's managed-jobs client SDK (every call goes to the API server).
    Every call, `import sky` included, runs inside `stdout_to_stderr()`. Never starts a local API
    server (`never_start_local_api_server`, from the constructor on).
    Tests replace it with a fake of the same shape (FakeSkyJobsSDK)."""

    def __init__(self) -> None:
        never_start_local_api_server()

    def launch(self, task: Any, name: str) -> Any:
        """Submit one managed job; returns job ids as the server gives them (list or int)."""
        with stdout_to_stderr():
            import sky

            job_ids, _handle = sky.get(sky.jobs.launch(task, name=name))
        return job_ids

    def queue(
        self, job_ids: Sequence[int] | None, skip_finished: bool, all_users: bool
    ) -> list[dict[str, Any]]:
        """Managed-job records with status, failure_reason and recovery_count."""
        fields = ["job_id", "task_id", "job_name", "task_name", "status", "recovery_count", "failure_reason",
                  "submitted_at", "end_at", "job_duration", "resources", "infra", "user_name"]  # fmt: skip
        with stdout_to_stderr():
            import sky

            records, *_ = sky.get(
                sky.jobs.queue_v2(
                    refresh=False,
                    skip_finished=skip_finished,
                    all_users=all_users,
                    job_ids=list(job_ids) if job_ids else None,
                    fields=fields,
                )
            )
            return [r.model_dump() if hasattr(r, "model_dump") else dict(r) for r in records]

    def tail_logs(self, job_id: int, follow: bool, stream: IO[str]) -> int | None:
        """Write the job's logs to `stream`; returns what sky.jobs.tail_logs returns: a TAIL_* code
        with `follow`, None without (SkyPilot 0.14.1, sky/jobs/client/sdk.py: `get_result=follow`
        in its call of `stream_response`, which returns None unless get_result). When `stream` is
        the process's stdout, the lines go to the real stdout while SkyPilot's own chatter goes to
        stderr."""
        with stdout_to_stderr() as real_stdout:
            import sky

            target = real_stdout if _fileno(stream) == 1 else stream
            # The SDK annotates output_stream as io.TextIOBase; any text stream with write() does.
            code = sky.jobs.tail_logs(job_id=job_id, follow=follow, output_stream=cast(io.TextIOBase, target))
            target.flush()
        return None if code is None else int(code)

    def log_tail(self, job_id: int, lines: int) -> str:
        """The last `lines` lines of a managed job's logs as text (sky.jobs.tail_logs with
        follow=False and tail=lines, SkyPilot 0.14.1 sky/jobs/client/sdk.py; the server reads the
        file backwards, sky/jobs/server/core.py tail_logs)."""
        buffer = io.StringIO()
        with stdout_to_stderr():
            import sky

            sky.jobs.tail_logs(job_id=job_id, follow=False, tail=lines, output_stream=buffer)
        return buffer.getvalue()

    def task_envs(self, job_id: int) -> dict[str, str]:
        """The envs of a managed job's task as it was submitted (GIT_COMMIT, GIT_DIRTY, NOTIFY_ON, ...):
        queue_v2's `user_yaml` field, the task YAML the API server keeps with secret values redacted
        (SkyPilot 0.14.1 sky/jobs/utils.py, sky/task.py redact_task_yaml_dict); {} when it has none."""
        with stdout_to_stderr():
            import sky

            records, *_ = sky.get(
                sky.jobs.queue_v2(
                    refresh=False,
                    skip_finished=False,
                    all_users=False,
                    job_ids=[job_id],
                    fields=["job_id", "user_yaml"],
                )
            )
        texts = [
            getattr(r, "user_yaml", None) if not isinstance(r, dict) else r.get("user_yaml") for r in records
        ]
        return envs_of_task_yaml("\n---\n".join(t for t in texts if isinstance(t, str)))

    def cancel(self, job_ids: Sequence[int]) -> None:
        with stdout_to_stderr():
            import sky

            sky.get(sky.jobs.cancel(job_ids=list(job_ids)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line:
            return _strip_ansi(line)
    return type(exc).__name__


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def sky_exceptions() -> Any:
    """SkyPilot's `sky.exceptions` module when SkyPilot is already imported, else None (an error that
    came from SkyPilot implies it is; this never imports SkyPilot)."""
    return sys.modules.get("sky.exceptions")


def _raised_in(exc: BaseException, function: Any) -> bool:
    """True when `function`'s own code is a frame of `exc`'s traceback (it raised `exc`, or a call
    below it did)."""
    code = getattr(function, "__code__", None)
    tb = exc.__traceback__
    while tb is not None:
        if code is not None and tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def local_api_server_refused(exc: BaseException) -> bool:
    """True for SkyPilot's refusal to start a local API server (with NO_LOCAL_API_SERVER_ENV set, the
    endpoint local and no server healthy there): a plain RuntimeError, recognised by where it was
    raised, sky/server/common.py check_local_api_server_enabled_or_raise, not by its text."""
    common = sys.modules.get("sky.server.common")
    check = getattr(common, "check_local_api_server_enabled_or_raise", None)
    return isinstance(exc, RuntimeError) and check is not None and _raised_in(exc, check)


def describe_sky_error(exc: BaseException, *, building: bool = False) -> str:
    """One actionable line for a SkyPilot failure, told apart by its `sky.exceptions` class (a
    server-side error reaches the client as the same class: sky/exceptions.py deserialize_exception):
    no local API server running (`local_api_server_refused`), none reachable, a login needed, a
    version mismatch, no cloud enabled, no resources, the network (`building`: while building the
    task, i.e. SkyPilot's catalog; else the API server), anything else."""
    first = _first_line(exc)
    if isinstance(exc, SkyError):
        return first
    if local_api_server_refused(exc):
        common = sys.modules["sky.server.common"]
        return (
            f"no SkyPilot API server running at {common.get_server_url()}: start it from your own SkyPilot"
            " install, the one with your clouds' extras: `sky api start` (or use a remote one:"
            " `sky api login -e <url>`); skyops never starts one (docs/decisions/local-api-server.md)"
        )
    ex = sky_exceptions()
    if ex is not None:
        if isinstance(exc, ex.ApiServerConnectionError):
            return f"no SkyPilot API server reachable ({first}): check `sky api info`, or log in to yours: `sky api login -e <url>`"
        if isinstance(exc, ex.ApiServerAuthenticationError):
            return f"the SkyPilot API server needs a login: `sky api login -e <url>` ({first})"
        if isinstance(exc, ex.APIVersionMismatchError):
            return f"this SkyPilot client and the API server do not match ({first}): restart or upgrade the server"
        if isinstance(exc, ex.NoCloudAccessError):
            return f"no cloud enabled for SkyPilot: run `sky check` and set up credentials for one ({first})"
        if isinstance(exc, ex.ResourcesUnavailableError):
            return f"no resources match the task: {first} (try other --gpus, --no-spot, or `sky show-gpus`)"
    requests_exceptions = sys.modules.get("requests.exceptions")
    if requests_exceptions is not None and isinstance(exc, requests_exceptions.RequestException):
        if building:  # sky/catalog/common.py re-raises the RequestException of a failed catalog fetch
            return f"cannot reach the network for SkyPilot's catalog ({first}): check the connection or proxy, then retry"
        return f"lost the connection to the SkyPilot API server ({first}): check it with `sky api info`, then retry"
    return f"SkyPilot error ({type(exc).__name__}): {first}"


# --------------------------------------------------------------------------------------- progress


@contextlib.contextmanager
def progress(message: str, stream: IO[str] | None = None) -> Iterator[None]:
    """A spinner with elapsed seconds on `stream` (stderr) while the block runs; one log line when
    the stream is not a terminal."""
    out = stream if stream is not None else sys.stderr
    if not (hasattr(out, "isatty") and out.isatty()):
        log.info("%s ...", message)
        yield
        return
    done = threading.Event()
    start = time.monotonic()

    def spin() -> None:
        for frame in itertools.cycle("|/-\\"):
            out.write(f"\r{frame} {message} ({time.monotonic() - start:.0f} s)")
            out.flush()
            if done.wait(0.2):
                break
        out.write("\r\x1b[K")
        out.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)


def tail_until_done(
    sdk: Any,
    job_id: int,
    stream: IO[str] | io.TextIOBase,
    *,
    poll: float = 5.0,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """`sdk.tail_logs(follow=True)` again while it answers 101 (not finished); returns the last
    tail_logs code (TAIL_*). A None (what SkyPilot answers without follow) is read from the job's
    status instead (`tail_code_of_status`)."""
    while True:
        code = sdk.tail_logs(job_id, True, stream)
        if code is None:
            code = tail_code_of_status(status_of(job_record(sdk, job_id)))
        if code != TAIL_NOT_FINISHED:
            return code
        log.info("job %d: not finished (recovering?): following again", job_id)
        (sleep or time.sleep)(poll)


def exit_code_of_tail(job_id: int, code: int) -> int:
    """The launcher's exit code for a final tail_logs code: 0 succeeded, 3 not found, 1 otherwise."""
    if code == TAIL_SUCCEEDED:
        return EXIT_OK
    if code == TAIL_NOT_FOUND:
        log.error("job %d: not found on the API server", job_id)
        return EXIT_SKY_ERROR
    return EXIT_FAILED


def job_record(sdk: Any, job_id: int) -> dict[str, Any] | None:
    """The API server's record of managed job `job_id` (`sdk.queue`), or None when it has none.
    Raises what the SDK raises."""
    records = [r for r in sdk.queue([job_id], False, False) if r.get("job_id") in (job_id, str(job_id))]
    return records[-1] if records else None


def status_of(record: Mapping[str, Any] | None) -> str | None:
    """The record's status as a string (`ManagedJobStatus.X.value`, or the text), None without one."""
    if record is None:
        return None
    status = record.get("status")
    status = getattr(status, "value", status)
    return str(status) if status else None


def tail_code_of_status(status: str | None) -> int:
    """The tail_logs code (TAIL_*) a followed job would end with, from its status: SUCCEEDED 0,
    CANCELLED 103, any FAILED* 100, not finished 101, no record 102 (sky/exceptions.py JobExitCode,
    from_job_status)."""
    if status is None:
        return TAIL_NOT_FOUND
    if status == JobState.SUCCEEDED:
        return TAIL_SUCCEEDED
    if status == JobState.CANCELLED:
        return TAIL_CANCELLED
    if status in TERMINAL:
        return TAIL_FAILED
    return TAIL_NOT_FINISHED


def ended_line(
    sdk: Any,
    job_id: int,
    code: int,
    summary: Mapping[str, Any] | None = None,
    record: Mapping[str, Any] | None = None,
) -> str:
    """One line that explains a failed or cancelled job's non-zero exit (`jobs.py logs`,
    `launch.py --follow`): `job N (run R) ended STATUS: failure_reason (supervisor: reason)`, from
    the API server's record (`record`, else `sdk.queue`) and the supervisor's summary line
    (`parse_summary`); from the tail_logs code alone when the record cannot be read."""
    fallback = {TAIL_FAILED: JobState.FAILED, TAIL_CANCELLED: JobState.CANCELLED}.get(
        code, f"(tail_logs code {code})"
    )
    why = f" (supervisor: {summary['reason']})" if summary and summary.get("reason") else ""
    if record is None:
        try:
            record = job_record(sdk, job_id)
        except Exception as exc:  # the line explains an exit code; it must not replace it
            log.debug("job %d: no record for the outcome line: %s", job_id, exc)
    if record is None:
        return f"job {job_id} ended {fallback}{why}"
    status = status_of(record) or fallback
    name = record.get("job_name") or record.get("task_name")
    reason = record.get("failure_reason")
    return (
        f"job {job_id}{f' (run {name})' if name else ''} ended {status}{f': {reason}' if reason else ''}{why}"
    )


def show_logs(
    sdk: Any,
    job_id: int,
    out: IO[str],
    follow: bool,
    *,
    poll: float = 5.0,
    sleep: Callable[[float], None] | None = None,
) -> tuple[int, str | None]:
    """Print a managed job's logs on `out` (with `follow`, until it ends; 101 means still running)
    and say how it ended. Returns (exit code, line for stderr or None):

    - follow: 0 succeeded, 1 failed or cancelled, 3 not found (`exit_code_of_tail`);
    - no follow: SkyPilot answers None, so the outcome is the job's status (`job_record`):
      0 SUCCEEDED or not finished yet, 1 any other end.

    The line (`ended_line`, with the supervisor's reason from the summary line seen in the logs) is
    given for exit 1. Raises ConfigError (exit 2) when, without follow, the API server has no such
    job. Raises what the SDK raises.
    """
    watch = SummaryWatch(out)
    if follow:
        tail = tail_until_done(sdk, job_id, watch, poll=poll, sleep=sleep)
        code = exit_code_of_tail(job_id, tail)
        return code, (ended_line(sdk, job_id, tail, watch.summary()) if code == EXIT_FAILED else None)
    sdk.tail_logs(job_id, False, watch)  # None in SkyPilot 0.14.1; the status says how it ended
    record = job_record(sdk, job_id)
    tail = tail_code_of_status(status_of(record))
    if tail == TAIL_NOT_FOUND:
        raise ConfigError(f"ID {job_id}: no such managed job")
    if tail in (TAIL_SUCCEEDED, TAIL_NOT_FINISHED):
        return EXIT_OK, None
    return EXIT_FAILED, ended_line(sdk, job_id, tail, watch.summary(), record)


# --------------------------------------------------------------------------------------- why it ended

#: The supervisor's last line on each node (scripts/remote/run.py): `run.py: INFO: summary: node=0
#: attempt=2 reason=max_runtime exit_code=0 runtime_s=12.5[ cause: ...]`, possibly behind SkyPilot's
#: per-node prefix `(worker1, rank=1, pid=..., ip=...) `.
SUMMARY_RE = re.compile(
    r"run\.py: [A-Z]+: summary: node=(?P<node>\d+) attempt=(?P<attempt>\d+) reason=(?P<reason>\S+)"
    r" exit_code=(?P<exit_code>-?\d+) runtime_s=(?P<runtime_s>[0-9.]+)(?: cause: (?P<cause>.*))?$"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def summary_of_line(line: str) -> dict[str, Any] | None:
    """The fields of one supervisor summary line (see SUMMARY_RE), or None for any other line."""
    match = SUMMARY_RE.search(_ANSI.sub("", line).rstrip("\r\n"))
    if match is None:
        return None
    return {
        "node": int(match["node"]),
        "attempt": int(match["attempt"]),
        "reason": match["reason"],
        "exit_code": int(match["exit_code"]),
        "runtime_s": float(match["runtime_s"]),
        "cause": match["cause"],
    }


def _weight(summary: Mapping[str, Any]) -> int:
    """How much a node's result says about the attempt, as the supervisor folds them: bad node (86) >
    failure (other non-zero) > stopped by a signal (130, 143: SkyPilot stopping the other nodes) > 0."""
    code = summary["exit_code"]
    return 3 if code == 86 else 1 if code in (130, 143) else 0 if code == 0 else 2


def pick_summary(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The summary that says how the job ended: of the last attempt seen, the most significant node
    result (`_weight`), the later line on a tie. None for no summaries."""
    if not summaries:
        return None
    last = max(s["attempt"] for s in summaries)
    best = None
    for summary in summaries:
        if summary["attempt"] == last and (best is None or _weight(summary) >= _weight(best)):
            best = summary
    return dict(best) if best is not None else None


def parse_summary(text: str) -> dict[str, Any] | None:
    """The summary (`pick_summary`) among the supervisor summary lines of a log text, or None."""
    found = [s for s in map(summary_of_line, text.splitlines()) if s is not None]
    return pick_summary(found)


class SummaryWatch(io.TextIOBase):
    """A text stream that writes through to `inner` and keeps the supervisor summary lines it sees.
    When `inner` is the process's stdout, writes go to the real stdout also inside
    `stdout_to_stderr()` (where file descriptor 1 points at stderr)."""

    def __init__(self, inner: IO[str]) -> None:
        super().__init__()
        self.inner = inner
        self.summaries: list[dict[str, Any]] = []
        self._partial = ""

    def writable(self) -> bool:
        return True

    def _target(self) -> IO[str]:
        if _REDIRECT["depth"] and _fileno(self.inner) == 1:
            return _REDIRECT["data"]
        return self.inner

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if "summary:" in line and (found := summary_of_line(line)) is not None:
                self.summaries.append(found)
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def summary(self) -> dict[str, Any] | None:
        """The summary that says how the job ended, from the lines written so far."""
        tail = summary_of_line(self._partial) if "summary:" in self._partial else None
        return pick_summary([*self.summaries, *([tail] if tail else [])])


def _read_reasons(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return jobs if isinstance(jobs, dict) else {}


def _write_reasons(path: Path, jobs: Mapping[str, Any]) -> None:
    """Atomic (`_atomic.write_json`); a failure is only logged (a cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic.write_json(path, {"version": 1, "jobs": dict(jobs)}, indent=1, sort_keys=True)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


def supervisor_reasons(
    sdk: Any,
    records: Sequence[Mapping[str, Any]],
    cache: Path | None = None,
    *,
    lines: int = SUMMARY_TAIL_LINES,
    max_fetches: int = MAX_REASON_FETCHES,
) -> dict[int, dict[str, Any] | None]:
    """The supervisor's summary (`parse_summary`: reason, exit_code, cause, ...) of each finished job
    in `records` (queue_v2 records), keyed by job id; None where its logs hold no summary line (e.g.
    FAILED_NO_RESOURCE: no node ever ran).

    A finished job never changes, so each answer is cached in `cache` (default REASONS_CACHE), keyed
    by job id and checked against `submitted_at` (another API server's job of the same id is not
    taken for it). Uncached jobs are read with `sdk.log_tail(job_id, lines)`, newest first, at most
    `max_fetches` per call; the first failure stops the fetching for this call (the rest are shown
    without a reason and tried again next time; nothing is cached for them). Never raises for a
    log it cannot read."""
    path = cache if cache is not None else REASONS_CACHE
    cached = _read_reasons(path)
    answers: dict[int, dict[str, Any] | None] = {}
    todo: list[tuple[int, Any]] = []
    for record in records:
        if status_of(record) not in TERMINAL or record.get("job_id") is None:
            continue
        job_id, submitted = int(record["job_id"]), record.get("submitted_at")
        entry = cached.get(str(job_id))
        if isinstance(entry, dict) and entry.get("submitted_at") == submitted:
            answers[job_id] = entry.get("summary")
        elif job_id not in dict(todo):
            todo.append((job_id, submitted))
    changed = False
    for job_id, submitted in sorted(todo, reverse=True)[:max_fetches]:
        try:
            text = sdk.log_tail(job_id, lines)
        except Exception as exc:  # a status view must not fail for one log
            log.debug("job %d: cannot read the end of its logs: %s", job_id, exc)
            break
        summary = parse_summary(text)
        answers[job_id] = summary
        if summary is not None or text.strip():  # an empty answer may be logs not synced yet
            cached[str(job_id)] = {"submitted_at": submitted, "summary": summary}
            changed = True
    if changed:
        _write_reasons(path, cached)
    return answers


# --------------------------------------------------------------------------------------- launch


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


def summary(cfg: LaunchConfig, plans: Sequence[Plan], pin: _git.GitPin | None) -> str:
    """What will be launched, for people (stderr): names, nodes, resources, code, secrets by name."""
    first = plans[0].config
    lines = [
        f"launch {len(plans)} managed job(s): {', '.join(p.name for p in plans)}",
        f"  nodes: {first['num_nodes']}  resources: {json.dumps(first.get('resources') or {}, sort_keys=True)}",
        f"  code: {pin.url} @ {pin.commit}"
        if pin
        else f"  code: working tree of {cfg.repo} (uploaded; GIT_COMMIT={plans[0].envs.get('GIT_COMMIT', '-')},"
        f" GIT_DIRTY={plans[0].envs.get('GIT_DIRTY')})",
        f"  job: {plans[0].envs.get('JOB', '')} {plans[0].envs.get('JOB_ARGS', '')}".rstrip(),
        f"  secrets: {', '.join(sorted(plans[0].secrets)) or 'none'}"
        + (f" (managed: {', '.join(cfg.task.secret_refs)})" if cfg.task.secret_refs else ""),
    ]
    return "\n".join(lines)


def ask_stdin(question: str, prompt_to: IO[str], answer_from: IO[str] | None) -> str:
    """Write `question` to `prompt_to` (stderr: stdout carries data only) and read one line of
    `answer_from` (stdin). A piped answer counts like a typed one.

    Raises EOFError when there is no answer (no stdin, or end of file: e.g. `< /dev/null`, CI).
    """
    prompt_to.write(question)
    prompt_to.flush()
    line = answer_from.readline() if answer_from is not None and not answer_from.closed else ""
    if not line:
        prompt_to.write("\n")
        raise EOFError(question)
    return line


def confirm(question: str, ask: Callable[[str], str]) -> bool | None:
    """True for y/yes, False for anything else, None when there is no answer (EOFError)."""
    try:
        answer = ask(question)
    except EOFError:
        return None
    return answer.strip().lower() in ("y", "yes")


def launch(
    cfg: LaunchConfig,
    *,
    sdk: Any = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    ask: Callable[[str], str] | None = None,
) -> int:
    """Launch `cfg` (backend sky) as `cfg.copies` managed jobs.

    `ask` asks the --confirm question (default: `ask_stdin` on stderr/stdin).
    Returns 0 (launched; or the followed job succeeded; or a dry run), 1 (the followed job failed, or
    --confirm declined: "not launched"), 3 (SkyPilot error). Raises ConfigError (exit 2) for bad
    input before anything is launched, --confirm without an answer on stdin included;
    KeyboardInterrupt propagates (130).
    """
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    asker = ask if ask is not None else functools.partial(ask_stdin, prompt_to=err, answer_from=sys.stdin)
    if not cfg.verbose:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # SkyPilot's database set-up chatter
    dump = cfg.dump_config or ("yaml" if cfg.dry_run else None)
    if cfg.follow and cfg.copies > 1:
        raise ConfigError("--follow: works with one copy; follow each with `jobs.py logs --follow ID`")
    names = copy_names(cfg.run, cfg.copies)
    if cfg.missing_secrets and not dump:
        keys = ", ".join(cfg.missing_secrets)
        raise ConfigError(
            f"secrets {keys}: not set; add {cfg.missing_secrets[0]}=... to .env, export it, or --set it"
            " (an empty value is allowed)"
        )
    pin, commit, dirty = resolve_git(cfg)
    check_task_keys(cfg.task)
    plans = [plan_copy(cfg, name, pin, commit, dirty) for name in names]
    try:
        tasks = [build_task(plan, dry=bool(dump)) for plan in plans]
    except SkyError as exc:
        return _fail(exc, cfg.verbose, err)

    if dump:
        for key in cfg.missing_secrets:
            log.warning("secret %s is not set: a launch would refuse", key)
        if dump == "json":
            docs = [json.loads(render(p, t, "json")) for p, t in zip(plans, tasks, strict=True)]
            out.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
        else:
            out.write("---\n".join(render(p, t) for p, t in zip(plans, tasks, strict=True)))
        out.flush()
        return EXIT_OK

    if cfg.confirm:
        print(summary(cfg, plans, pin), file=err, flush=True)
        answer = confirm(f"Launch {len(plans)} managed job(s)? [y/N] ", asker)
        if answer is None:
            raise ConfigError("--confirm: no answer on stdin (use it from a terminal, or drop --confirm)")
        if not answer:
            print("launch.py: not launched (declined at the --confirm prompt)", file=err, flush=True)
            return EXIT_FAILED

    sdk = sdk if sdk is not None else SkyJobsSDK()
    launched: list[tuple[str, int]] = []
    for i, (plan, task) in enumerate(zip(plans, tasks, strict=True), start=1):
        what = f"launching {plan.name}" + (f" (copy {i}/{len(plans)})" if len(plans) > 1 else "")
        try:
            with progress(what, err):
                ids = normalise_job_ids(sdk.launch(task, plan.name))
        except KeyboardInterrupt:
            done = _launched_text(launched)
            print(
                f"launch.py: interrupted while launching {plan.name}: it may have been submitted; {done}check `jobs.py --backend sky status`",
                file=err,
            )
            raise
        except Exception as exc:
            return _fail(exc, cfg.verbose, err, prefix=_launched_text(launched) if launched else "")
        if not ids:
            return _fail(
                SkyError(f"{plan.name}: the API server returned no job id"),
                cfg.verbose,
                err,
                prefix=_launched_text(launched),
            )
        for job_id in ids:
            launched.append((plan.name, job_id))
            if cfg.print_id:
                print(job_id, file=out, flush=True)
        log.info("run %s: managed job %s submitted", plan.name, ", ".join(map(str, ids)))
    if cfg.follow:
        job_id = launched[0][1]
        code, line = show_logs(sdk, job_id, err, True)
        if line:
            print(line, file=err, flush=True)
        return code
    if not cfg.print_id:
        log.info("watch: jobs.py --backend sky status | logs --follow ID | cancel ID")
    return EXIT_OK


def _launched_text(launched: Sequence[tuple[str, int]]) -> str:
    if not launched:
        return "nothing else launched; "
    return "already launched: " + ", ".join(f"{name} (job {job_id})" for name, job_id in launched) + "; "


def _fail(exc: BaseException, verbose: bool, err: IO[str], prefix: str = "") -> int:
    if verbose:  # an explicit limit: SkyPilot sets sys.tracebacklimit = 0 around some raises
        err.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=100)))
    message = str(exc) if isinstance(exc, SkyError) else describe_sky_error(exc)
    print(f"launch.py: error: {prefix}{message}", file=err, flush=True)
    return EXIT_SKY_ERROR


# --------------------------------------------------------------------------------------- watch

#: Node rank 0's log line once it has run notify.py for an ending (scripts/remote/run.py `_notify`):
#: `run.py: INFO: notify: ended sent for job 3`. `jobs.py watch` sends no ending a node has sent.
NODE_ENDING_SENT_RE = re.compile(r"notify: ended sent for job (?P<job_id>\d+)\b")
#: The notification `reason` of an ending SkyPilot decides, not a node's supervisor
#: (docs/notifications.md); CANCELLED keeps a node's `crash_loop` (the node cancelled its own job).
STATUS_REASONS: dict[str, str] = {
    JobState.FAILED_NO_RESOURCE: "no_resource",
    JobState.FAILED_PRECHECKS: "failed_prechecks",
    JobState.FAILED_CONTROLLER: "controller_failed",
    JobState.FAILED_SETUP: "setup_failed",
    JobState.CANCELLED: "cancelled",
}
#: Endings before any node ran the job's setup or run: no node can have sent them, no log holds a line.
NO_NODE_ENDINGS = frozenset({JobState.FAILED_NO_RESOURCE, JobState.FAILED_PRECHECKS})
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def envs_of_task_yaml(text: str) -> dict[str, str]:
    """The `envs` of the task document(s) in a task YAML text (later documents win), as strings;
    {} for text that is not YAML."""
    import yaml

    envs: dict[str, str] = {}
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return {}
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("envs"), dict):
            envs.update({str(k): "" if v is None else str(v) for k, v in doc["envs"].items()})
    return envs


def node_sent_ending(log_text: str, job_id: int) -> bool:
    """True when the job's logs show that its node rank 0 sent the ending (NODE_ENDING_SENT_RE)."""
    return any(int(m["job_id"]) == job_id for m in NODE_ENDING_SENT_RE.finditer(_ANSI.sub("", log_text)))


def ending_reason(status: str, summary: Mapping[str, Any] | None) -> str:
    """The short `reason` of a notification about a job in `status` (docs/notifications.md): the
    supervisor's (from its summary line, `parse_summary`) where a node's outcome decided the state, else
    SkyPilot's state as a code (STATUS_REASONS): `no_resource`, `failed_prechecks`, `controller_failed`,
    `setup_failed`, `cancelled` (a crash loop stays `crash_loop`). Without a summary: `completed` for
    SUCCEEDED, `recovering` for an attempt that ended, `failed` otherwise."""
    told = summary.get("reason") if summary else None
    if status == JobState.CANCELLED and told == "crash_loop":
        return "crash_loop"
    if status in STATUS_REASONS:
        return STATUS_REASONS[status]
    if told:
        return str(told)
    ending: dict[str, str] = {JobState.SUCCEEDED: "completed", JobState.RECOVERING: "recovering"}
    return ending.get(status, "failed")


def job_commit(envs: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The job's own GIT_COMMIT and GIT_DIRTY (set by launch.py), for notify.py's environment, and the
    commit an event may name: the 40-hex GIT_COMMIT when GIT_DIRTY is 0, else ""."""
    keys = {k: envs[k] for k in ("GIT_COMMIT", "GIT_DIRTY") if envs.get(k)}
    commit = keys.get("GIT_COMMIT", "")
    return keys, commit if _COMMIT_RE.fullmatch(commit) and keys.get("GIT_DIRTY") == "0" else ""


def watch_event(
    record: Mapping[str, Any],
    event: str,
    summary: Mapping[str, Any] | None,
    commit: str,
    now: float,
    attempt: int | None = None,
) -> dict[str, Any]:
    """The event document (docs/notifications.md) of `event` (`ended`, or `attempt_ended` for
    `attempt`) for a queue_v2 record: state and failure_reason from SkyPilot, the supervisor's reason
    and cause from its summary line where a node decided (see `ending_reason`). Attempts: those that ran
    (0 when the job ended before any did), at least the summary's."""
    status = status_of(record) or "UNKNOWN"
    job_id = int(record["job_id"])
    count = int(record.get("recovery_count") or 0)
    ran = summary is not None or status == JobState.FAILED_SETUP or float(record.get("job_duration") or 0) > 0
    attempts = max(count + 1 if ran else count, int(summary["attempt"]) if summary else 0)
    recoveries = count
    if event == "attempt_ended":
        attempts = recoveries = attempt if attempt is not None else count + 1
    failure = record.get("failure_reason") or None
    told = summary.get("cause") if summary else None
    node_decided = (
        status in (JobState.FAILED, JobState.RECOVERING, JobState.SUCCEEDED) or event == "attempt_ended"
    )
    cause = (told or failure) if node_decided else (failure or told)
    return {
        "event": event, "run_id": str(record.get("job_name") or record.get("task_name") or f"job-{job_id}"),
        "job_id": str(job_id), "backend": "sky", "state": JobState.RECOVERING if event == "attempt_ended" else status,
        "reason": ending_reason(JobState.RECOVERING if event == "attempt_ended" else status, summary),
        "cause": " ".join(str(cause).split()) if cause else None, "attempts": attempts, "recoveries": recoveries,
        "runtime_s": round(max(0.0, float(record.get("job_duration") or 0)), 3), "commit": commit,
        "logs_hint": f"make logs ID={job_id} BACKEND=sky", "time": now,
    }  # fmt: skip
