"""The SkyPilot backend of launch.py: job.yaml as SkyPilot managed jobs, built with SkyPilot's own SDK.

What `launch(cfg)` does, in order (nothing costs money before step 5; steps 1-3 are `_sky_plan.py`):

1. names: `--run`, or `<run>-1 .. <run>-N` with `--copies N`, each valid as a SkyPilot task and
   cluster name (docs/field-cases.md N1);
2. the git gate (`_git.gate`): the nodes clone the job's code from the git remote at one commit
   (SkyPilot's git `workdir: {url, ref}`); the job sees it as `GIT_COMMIT`, and `GIT_DIRTY=0`.
   SkyPilot's own `Task.update_envs_and_secrets_from_workdir` then checks that the remote can be
   read and sets its clone settings, as its CLI does (`set_git_workdir`). With --skip-git-check the
   working tree is uploaded instead: `GIT_COMMIT` is HEAD when the tree is exactly HEAD
   (`GIT_DIRTY=0`), else `<HEAD>-dirty` with `GIT_DIRTY=1` (absent without a repository), so the job
   is never told a commit its code does not match;
3. the task: `sky.Task.from_yaml_config(job.yaml, env_overrides=..., secrets_overrides=...)` with the
   resolved envs (the text the user wrote, docs/field-cases.md Y1) and secrets (passed only as SkyPilot
   secrets, Y3), and the resource patches of `patch_resources` applied to every candidate (Y2);
4. `--dry-run` / `--dump-config {yaml,json}`: print the final task, secrets `<redacted>`, and stop
   before any server call (a git gate refusal, or a remote URL the nodes cannot clone, is only a
   warning there); `--confirm` shows a summary on stderr and asks on stderr, reading the answer
   from stdin: declined exits 1 ("not launched"), no answer (EOF) exits 2;
5. one `sky.jobs.launch` per copy; job ids on stdout with `--print-id`; `--follow` tails the logs
   (`sky.jobs.tail_logs`; 101 "not finished" means still running, e.g. while a job recovers).

For `jobs.py --backend sky` (`_sky_logs.py`): `show_logs` prints a job's logs and says how it ended
(without follow, SkyPilot's tail_logs answers None, so the outcome comes from the job's status), with
the supervisor's reason from its summary line (`parse_summary`); `supervisor_reasons` reads that line
from the end of each finished job's logs (`tail=N`) once, and caches it (finished jobs never change).

Every SkyPilot failure (no API server, no cloud enabled, catalog unreachable, any exception) ends
in one actionable line and exit 3 (`_sky_sdk.py`: `SkyError`, `describe_sky_error`; SkyPilot's errors
are told apart by their `sky.exceptions` class); the traceback only with --verbose. Copies that did launch
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
import functools
import itertools
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import _git
from _config import EXIT_FAILED, EXIT_OK, EXIT_SKY_ERROR, ConfigError, LaunchConfig
from _sky_logs import show_logs
from _sky_plan import Plan, build_task, check_task_keys, copy_names, plan_copy, render, resolve_git
from _sky_sdk import SkyError, SkyJobsSDK, describe_sky_error, normalise_job_ids

log = logging.getLogger("skyops.sky")


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
        _dump(plans, tasks, dump, out)
        return EXIT_OK

    if cfg.confirm and not _confirmed(cfg, plans, pin, asker, err):
        print("launch.py: not launched (declined at the --confirm prompt)", file=err, flush=True)
        return EXIT_FAILED

    sdk = sdk if sdk is not None else SkyJobsSDK()
    launched: list[tuple[str, int]] = []
    failed = _submit(cfg, sdk, plans, tasks, launched, out, err)
    if failed is not None:
        return failed
    if cfg.follow:
        job_id = launched[0][1]
        code, line = show_logs(sdk, job_id, err, True)
        if line:
            print(line, file=err, flush=True)
        return code
    if not cfg.print_id:
        log.info("watch: jobs.py --backend sky status | logs --follow ID | cancel ID")
    return EXIT_OK


def _confirmed(
    cfg: LaunchConfig, plans: Sequence[Plan], pin: _git.GitPin | None, ask: Callable[[str], str], err: IO[str]
) -> bool:
    """--confirm: the `summary` on `err`, then the question (`ask`); whether the answer was yes.
    Raises ConfigError when there is no answer."""
    print(summary(cfg, plans, pin), file=err, flush=True)
    answer = confirm(f"Launch {len(plans)} managed job(s)? [y/N] ", ask)
    if answer is None:
        raise ConfigError("--confirm: no answer on stdin (use it from a terminal, or drop --confirm)")
    return answer


def _dump(plans: Sequence[Plan], tasks: Sequence[Any], fmt: str, out: IO[str]) -> None:
    """--dry-run / --dump-config: the final tasks on `out` as YAML documents, or as JSON (one object
    for one copy, else a list); secrets redacted (`render`)."""
    if fmt == "json":
        docs = [json.loads(render(p, t, "json")) for p, t in zip(plans, tasks, strict=True)]
        out.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
    else:
        out.write("---\n".join(render(p, t) for p, t in zip(plans, tasks, strict=True)))
    out.flush()


def _submit(
    cfg: LaunchConfig,
    sdk: Any,
    plans: Sequence[Plan],
    tasks: Sequence[Any],
    launched: list[tuple[str, int]],
    out: IO[str],
    err: IO[str],
) -> int | None:
    """One `sdk.launch` per copy, each (name, job id) appended to `launched` (and printed on `out` with
    --print-id). None when every copy was submitted, else the exit code of the failure (3), said on
    `err` with the copies already launched. KeyboardInterrupt propagates, after a line on `err`."""
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
    return None


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
