"""The boundary to SkyPilot's managed-jobs client SDK (`SkyJobsSDK`, the one thing tests replace with a
fake), and what goes with every call of it: stdout kept for data (`stdout_to_stderr`), no local API
server started behind the user's back (`never_start_local_api_server`), and every SkyPilot failure
told in one actionable line (`SkyError`, `describe_sky_error`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any, cast

log = logging.getLogger("skyops.sky")


class SkyError(Exception):
    """A SkyPilot failure, already phrased as one actionable line (exit 3)."""


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


def data_stream(stream: IO[str]) -> IO[str]:
    """Where data meant for `stream` goes: the real stdout when `stream` is the process's stdout and
    `stdout_to_stderr()` points file descriptor 1 at stderr; else `stream` itself."""
    if _REDIRECT["depth"] and _fileno(stream) == 1:
        return cast(IO[str], _REDIRECT["data"])
    return stream


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
        records = _queue_v2(
            list(job_ids) if job_ids else None, fields, skip_finished=skip_finished, all_users=all_users
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
        records = _queue_v2([job_id], ["job_id", "user_yaml"], skip_finished=False, all_users=False)
        texts = [
            getattr(r, "user_yaml", None) if not isinstance(r, dict) else r.get("user_yaml") for r in records
        ]
        return envs_of_task_yaml("\n---\n".join(t for t in texts if isinstance(t, str)))

    def cancel(self, job_ids: Sequence[int]) -> None:
        with stdout_to_stderr():
            import sky

            sky.get(sky.jobs.cancel(job_ids=list(job_ids)))


def _queue_v2(
    job_ids: list[int] | None, fields: list[str], *, skip_finished: bool, all_users: bool
) -> list[Any]:
    """The records of sky.jobs.queue_v2 (all jobs when `job_ids` is None), as the SDK returns them
    (response models or dicts), with only `fields` filled in; SkyPilot's chatter goes to stderr."""
    with stdout_to_stderr():
        import sky

        records, *_ = sky.get(
            sky.jobs.queue_v2(
                refresh=False,
                skip_finished=skip_finished,
                all_users=all_users,
                job_ids=job_ids,
                fields=fields,
            )
        )
    return list(records)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line:
            return strip_ansi(line)
    return type(exc).__name__


#: A terminal colour or cursor sequence (SkyPilot colours its messages and log lines).
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text)


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
    first = first_line(exc)
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
