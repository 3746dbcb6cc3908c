#!/usr/bin/env -S uv run --script
# /// script
# requires-python = ">=3.11"
# dependencies = ["httpx==0.28.1", "stamina==26.1.0"]
# [tool.uv]
# exclude-newer = "2026-12-01T00:00:00Z"
# ///
"""Tell people why a job ended: Discord, Slack, a GitHub commit status, a generic JSON webhook.

usage: notify.py send --event-file EVENT.json [--claim-dir DIR]   (--event-file - reads stdin)
       notify.py test                                            (one test message to every channel)
       notify.py -v ...                                          (debug lines and tracebacks)

Channels, from the environment (SkyPilot secrets: never printed; a webhook URL holds its token):
DISCORD_WEBHOOK_URL, SLACK_WEBHOOK_URL, NOTIFY_WEBHOOK_URL, and GITHUB_TOKEN with GITHUB_REPOSITORY
(default: `git remote get-url origin` here), GITHUB_API_URL (default https://api.github.com) and
GIT_COMMIT (GIT_DIRTY=1: no status). NOTIFY_ON picks the events for Discord, Slack and the webhook
(comma list of started, attempt_ended, ended; default ended); GitHub gets `pending` on `started` and
the final state on `ended`, nothing per attempt. All channels together take at most NOTIFY_TIMEOUT_S
seconds (default and maximum 30). docs/notifications.md has the messages, limits and webhook schema.

`send` never fails a job: a channel that fails is one warning line on stderr naming the channel. With
--claim-dir, an event is sent only by the first process to claim it there (see `claim`).

Exit codes: 0 `send` done (channels may have failed: see stderr), `test` every channel ok;
1 `test`: a channel failed, or none is configured; 2 bad input (flags, the event document,
NOTIFY_ON, NOTIFY_TIMEOUT_S): one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import _contract
import _notify_messages as msg
import httpx
import stamina
from _contract import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK

log = logging.getLogger("notify")

#: Keys whose values are secrets: they and their URL parts are replaced by "***" in every line logged.
SECRET_KEYS = ("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN")
#: The webhook channels, each with the key of its URL and the body it is sent.
WEBHOOK_KEYS = {
    "discord": "DISCORD_WEBHOOK_URL",
    "slack": "SLACK_WEBHOOK_URL",
    "webhook": "NOTIFY_WEBHOOK_URL",
}
BODIES = {"discord": msg.discord_body, "slack": msg.slack_body, "webhook": msg.webhook_body}
#: Seconds one HTTP request may wait to connect, or for the next bytes of an answer (httpx timeouts).
REQUEST_TIMEOUT_S = 10.0
#: Requests per channel at most (1 + retries), for 5xx answers, rate limits, lost connections, timeouts.
RETRY_ATTEMPTS = 4
#: Backoff between retries (stamina): 0.5 s, 1 s, 2 s (at most 4 s), each plus up to 0.25 s of jitter.
#: A rate limit's own wait replaces it.
RETRY_WAIT_INITIAL_S = 0.5
RETRY_WAIT_MAX_S = 4.0
RETRY_JITTER_S = 0.25
#: Seconds to wait after a rate-limit answer that says nothing usable about when to retry.
DEFAULT_RETRY_AFTER_S = 1.0
#: GitHub REST API version header ("API versions" in GitHub's REST docs).
GITHUB_API_VERSION = "2022-11-28"
USER_AGENT = "skyops-notify"
_REPOSITORY_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class BadInput(Exception):
    """Input a user can fix; the message names the flag, key or file."""


@dataclass(frozen=True)
class GitHub:
    """The commit-status channel: POST `{api_url}/repos/{repository}/statuses/{commit}`."""

    token: str
    api_url: str
    #: "owner/name", or None when neither GITHUB_REPOSITORY nor the git remote gives one.
    repository: str | None
    #: GIT_COMMIT as set (checked when sending).
    commit: str
    #: GIT_DIRTY=1: the job runs an uploaded working tree that was never pushed.
    dirty: bool


@dataclass(frozen=True)
class Config:
    """Everything notify.py reads from the environment, read once in `main`."""

    #: channel ("discord", "slack", "webhook") -> URL, for the configured ones.
    webhooks: Mapping[str, str]
    github: GitHub | None
    #: Events the webhook channels are sent.
    notify_on: frozenset[str]
    #: Seconds all channels together may take.
    timeout_s: float


@dataclass(frozen=True)
class Post:
    """One HTTP POST of a JSON body to one channel."""

    channel: str
    url: str
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """How one channel went. `detail`: "HTTP 204" when ok, else "failed: ..." or "skipped: ..." (never
    a secret); `tries`: the HTTP requests made."""

    channel: str
    ok: bool
    detail: str
    tries: int = 0


def load_config(env: Mapping[str, str], cwd: Path) -> Config:
    """The configuration in `env` (the process environment; keys in the module docstring). The GitHub
    repository comes from GITHUB_REPOSITORY, else from the git remote `origin` of `cwd`.

    Raises BadInput for a bad NOTIFY_ON or NOTIFY_TIMEOUT_S. A channel's own problems (a bad URL, no
    repository, no commit) are reported when sending, without stopping the other channels.
    """
    try:
        names = _contract.value(env, "NOTIFY_ON")
        timeout_s = _contract.value(env, "NOTIFY_TIMEOUT_S")
        api_url = _contract.value(env, "GITHUB_API_URL")
    except _contract.BadValue as exc:
        raise BadInput(str(exc)) from None
    assert isinstance(names, tuple) and isinstance(timeout_s, float) and isinstance(api_url, str)
    github = None
    if token := env.get("GITHUB_TOKEN", "").strip():
        github = GitHub(
            token=token,
            api_url=api_url,
            repository=env.get("GITHUB_REPOSITORY", "").strip() or repository_from_git(cwd),
            commit=env.get("GIT_COMMIT", "").strip(),
            dirty=env.get("GIT_DIRTY", "").strip() == "1",
        )
    return Config(
        webhooks={ch: env[key].strip() for ch, key in WEBHOOK_KEYS.items() if env.get(key, "").strip()},
        github=github,
        notify_on=frozenset(names),
        timeout_s=timeout_s,
    )


def repository_from_remote(url: str) -> str | None:
    """ "owner/name" from a git remote URL: https://host/owner/name, ssh://git@host[:port]/owner/name
    or git@host:owner/name, each with or without ".git" (credentials in the URL are ignored); None for
    anything else (a local path, a deeper path)."""
    if "://" in url:
        path = urllib.parse.urlsplit(url).path
    elif m := re.fullmatch(r"(?:[^@/]+@)?[^@/:]+:(.+)", url):
        path = m[1]
    else:
        return None
    path = path.strip("/").removesuffix(".git")
    return path if _REPOSITORY_RE.fullmatch(path) else None


def repository_from_git(cwd: Path) -> str | None:
    """ "owner/name" of the git remote `origin` of `cwd`, or None (no git, no remote, another form)."""
    cmd = ["git", "remote", "get-url", "origin"]
    log.debug("running %s in %s", " ".join(cmd), cwd)
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return repository_from_remote(out.strip())


def url_problem(url: str) -> str | None:
    """Why `url` cannot be posted to ("is not an http(s) URL"), or None. Never quotes the URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "is not a valid URL"
    return None if parsed.scheme in ("http", "https") and parsed.host else "is not an http(s) URL"


def discord_v10(url: str) -> str:
    """The Discord webhook URL with API version 10 in its path when it names none (`/api/webhooks/...`,
    as Discord hands them out): without a version Discord uses its default, whose 429 `retry_after` is
    in milliseconds (discord-api-docs#4722), while v10 documents seconds ("Rate Limits")."""
    parts = urllib.parse.urlsplit(url)
    if parts.path.startswith("/api/webhooks/"):
        parts = parts._replace(path="/api/v10" + parts.path.removeprefix("/api"))
    return urllib.parse.urlunsplit(parts)


def github_post(gh: GitHub, event: msg.Event) -> Post | str:
    """The commit-status POST for `event`, or why there is none ("GIT_DIRTY=1 ...")."""
    if gh.dirty:
        return "GIT_DIRTY=1: the job runs an uploaded working tree, not a pushed commit; no status posted"
    if not msg.is_commit(gh.commit):
        return "GIT_COMMIT is not a 40-character commit id; no status posted"
    if gh.repository is None:
        return "no repository: set GITHUB_REPOSITORY=owner/name (git remote origin names none)"
    if not _REPOSITORY_RE.fullmatch(gh.repository):
        return "GITHUB_REPOSITORY is not owner/name"
    if problem := url_problem(gh.api_url):
        return f"GITHUB_API_URL {problem}"
    return Post(
        channel="github",
        url=f"{gh.api_url.rstrip('/')}/repos/{gh.repository}/statuses/{gh.commit.lower()}",
        body=msg.github_body(event),
        headers={
            "Authorization": f"Bearer {gh.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        },
    )


def plan(cfg: Config, event: msg.Event, *, chat: bool, github: bool) -> tuple[list[Post], list[Result]]:
    """The POSTs for `event`: to the webhook channels when `chat`, to GitHub when `github`; and a
    not-ok Result for each of those channels that cannot be posted to, saying why."""
    posts: list[Post] = []
    problems: list[Result] = []
    for channel, url in cfg.webhooks.items() if chat else ():
        if problem := url_problem(url):
            problems.append(Result(channel, False, f"failed: {WEBHOOK_KEYS[channel]} {problem}"))
        else:
            posts.append(
                Post(channel, discord_v10(url) if channel == "discord" else url, BODIES[channel](event))
            )
    if github and cfg.github is not None:
        post = github_post(cfg.github, event)
        if isinstance(post, Post):
            posts.append(post)
        else:
            problems.append(Result("github", False, f"skipped: {post}"))
    return posts, problems


def claim(notify_dir: Path, key: str) -> bool:
    """Atomically create `notify_dir/<key>.sent` (O_CREAT|O_EXCL): True for the one caller that creates
    it, False for every later one. This is how the node and the watcher never both send an ending.

    Atomic on local file systems and NFS v3+; a bucket mount (gcsfuse, s3fs) may not honour O_EXCL.
    Creates `notify_dir` if needed. Raises OSError when it cannot be written (read-only, full), and
    ValueError for a key that is not a plain file name.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", key):
        raise ValueError(f"claim key {key!r} is not a plain file name")
    notify_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(notify_dir / f"{key}.sent", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def rate_limit_wait(channel: str, response: httpx.Response, now: float) -> float | None:
    """Seconds to wait before retrying a rate-limited answer, or None when `response` is not one.

    A rate limit is a 429, and for GitHub also a 403 with `x-ratelimit-remaining: 0` or `retry-after`
    (GitHub "Rate limits for the REST API"). The wait, in seconds: Discord's JSON `retry_after` (a float
    in API v10, "Rate Limits"); else the `Retry-After` header in seconds (Slack "Rate limits", GitHub);
    else GitHub's `x-ratelimit-reset` (UTC epoch seconds) minus `now`; else DEFAULT_RETRY_AFTER_S.
    """
    headers = response.headers
    github_limit = response.status_code == 403 and (
        headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers
    )
    if response.status_code != 429 and not (channel == "github" and github_limit):
        return None
    if channel == "discord":
        try:
            if (wait := _seconds(response.json().get("retry_after"))) is not None:
                return wait
        except (ValueError, AttributeError):
            pass
    if (wait := _seconds(headers.get("retry-after"))) is not None:
        return wait
    if channel == "github" and (reset := _seconds(headers.get("x-ratelimit-reset"))) is not None:
        return max(0.0, reset - now)
    return DEFAULT_RETRY_AFTER_S


def describe(response: httpx.Response) -> str:
    """ "HTTP 404 Unknown Webhook (10015)": the status and the service's own words for it: the JSON
    `message` (and `code`) of Discord and GitHub, else the first line of the body (Slack's
    "no_service"), at most DETAIL_MAX characters."""
    try:
        body = response.json()
        detail = str(body["message"]) + (f" ({body['code']})" if "code" in body else "")
    except (ValueError, TypeError, KeyError):
        lines = response.text.strip().splitlines()
        detail = lines[0] if lines else ""
    return f"HTTP {response.status_code} {msg.fit(msg.one_line(detail), msg.DETAIL_MAX)}".rstrip()


class _Retry(Exception):
    """An answer worth another try: a 5xx (`wait_s` None), or a rate limit to wait `wait_s` seconds on."""

    def __init__(self, response: httpx.Response, wait_s: float | None) -> None:
        super().__init__(describe(response))
        self.response = response
        self.wait_s = wait_s


#: Failures of the request itself worth another try (not a bad URL or a bug).
_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _post(client: httpx.AsyncClient, post: Post, deadline: float, timeout_s: float) -> Result:
    """Make one POST, retrying 5xx answers, rate limits and transient errors, until `deadline` (event-loop
    time). Never raises for a failure of the channel: returns it."""
    loop = asyncio.get_running_loop()
    tries = 0
    last = ""

    def retry_on(exc: Exception) -> bool | float:
        nonlocal last
        if not isinstance(exc, (_Retry, *_TRANSIENT)):
            return False
        last = str(exc) if isinstance(exc, _Retry) else _error(exc)
        if isinstance(exc, _Retry) and exc.wait_s is not None:
            if loop.time() + exc.wait_s >= deadline:
                return False
            log.info("%s: %s, retrying in %.1f s", post.channel, last, exc.wait_s)
            return exc.wait_s
        log.info("%s: %s, retrying", post.channel, last)
        return True

    try:
        async with asyncio.timeout_at(deadline):
            async for attempt in stamina.retry_context(
                on=retry_on,
                attempts=RETRY_ATTEMPTS,
                timeout=None,
                wait_initial=RETRY_WAIT_INITIAL_S,
                wait_max=RETRY_WAIT_MAX_S,
                wait_jitter=RETRY_JITTER_S,
            ):
                with attempt:
                    tries = attempt.num
                    response = await client.post(post.url, json=post.body, headers=dict(post.headers))
                    if response.status_code >= 500:
                        raise _Retry(response, None)
                    if (wait := rate_limit_wait(post.channel, response, time.time())) is not None:
                        raise _Retry(response, wait)
    except TimeoutError:
        cap = f"the {timeout_s:g} s time cap"
        detail = f"{last}; gave up at {cap}" if last else f"no answer within {cap}"
    except _Retry as exc:
        past_cap = exc.wait_s is not None and loop.time() + exc.wait_s >= deadline
        detail = f"{exc}; retry after {exc.wait_s:g} s is past the time cap" if past_cap else str(exc)
    except httpx.HTTPError as exc:
        detail = _error(exc)
    else:
        if response.is_success:
            return Result(post.channel, True, f"HTTP {response.status_code}", tries)
        detail = describe(response)
    return Result(post.channel, False, f"failed: {detail}", tries)


async def deliver(posts: Sequence[Post], timeout_s: float) -> list[Result]:
    """Make every POST, concurrently; all of them together take at most `timeout_s` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, headers={"User-Agent": USER_AGENT}) as client:
        return list(await asyncio.gather(*(_post(client, p, deadline, timeout_s) for p in posts)))


def report(results: Iterable[Result]) -> bool:
    """Log one line per channel (ok: info, else a warning); True when every channel is ok."""
    all_ok = True
    for r in results:
        tries = f", {r.tries} tries" if r.tries > 1 else ""
        if r.ok:
            log.info("%s: ok (%s%s)", r.channel, r.detail, tries)
        else:
            log.warning("%s: %s%s", r.channel, r.detail, f" ({r.tries} tries)" if r.tries > 1 else "")
            all_ok = False
    return all_ok


def send(cfg: Config, event: msg.Event, claim_dir: Path | None) -> None:
    """Send `event`: to the webhook channels when NOTIFY_ON names it, to GitHub on `started` and `ended`.
    With `claim_dir`, only when this process wins the claim on `msg.claim_key(event)`; when the claim
    cannot be written, it warns and sends anyway."""
    posts, problems = plan(
        cfg, event, chat=event.event in cfg.notify_on, github=event.event in ("started", "ended")
    )
    if not posts and not problems:
        log.debug("%s: no channel takes this event", event.event)
        return
    if claim_dir is not None:
        key = msg.claim_key(event)
        try:
            if not claim(claim_dir, key):
                log.info("%s: already sent (%s exists)", key, claim_dir / f"{key}.sent")
                return
        except OSError as exc:
            log.warning("cannot claim %s in %s (%s); sending anyway", key, claim_dir, exc.strerror or exc)
    report([*problems, *asyncio.run(deliver(posts, cfg.timeout_s))])


def test_channels(cfg: Config, event: msg.Event) -> bool:
    """Send `event` (a test message) to every configured channel; True when every one is ok."""
    posts, problems = plan(cfg, event, chat=True, github=True)
    if not posts and not problems:
        log.error("no channel configured (set %s)", ", ".join([*WEBHOOK_KEYS.values(), "GITHUB_TOKEN"]))
        return False
    return report([*problems, *asyncio.run(deliver(posts, cfg.timeout_s))])


def read_event(path: str) -> msg.Event:
    """The event document in file `path` ("-": stdin). Raises BadInput naming the file and field."""
    name = "stdin" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return msg.parse_event(json.loads(text))
    except OSError as exc:
        raise BadInput(f"--event-file {name}: cannot read: {exc.strerror or exc}") from exc
    except msg.BadEvent as exc:
        raise BadInput(f"--event-file {name}: {exc}") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadInput(f"--event-file {name}: not JSON: {exc}") from exc


def secret_parts(value: str) -> set[str]:
    """`value` and, when it is a URL, its path and query and each piece of them of 8 or more characters:
    a webhook URL holds its token in the path, and an error may quote a piece of it."""
    value = value.strip()
    parts = {value} if value else set()
    url = urllib.parse.urlsplit(value)
    if url.scheme and url.netloc:
        rest = url.path + (f"?{url.query}" if url.query else "")
        parts |= {p for p in [rest, *re.split(r"[/?&=]", rest)] if len(p) >= 8}
    return parts


class _Redacting(logging.Formatter):
    """Formats a record (traceback included), then replaces every secret piece with "***"."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__("notify: %(message)s")
        self._secrets = sorted({p for s in secrets for p in secret_parts(s)}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _setup_logging(verbose: bool, secrets: Iterable[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Redacting(secrets))
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("httpx", "httpcore"):  # their request lines carry the URL, and so the token
        logging.getLogger(name).setLevel(logging.WARNING)
    stamina.instrumentation.set_on_retry_hooks([])  # retries are logged by `_post`, per channel


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="notify.py", description=__doc__, formatter_class=_Formatter, allow_abbrev=False)
    p.add_argument("-v", "--verbose", action="store_true", help="debug lines and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="{send,test}")
    send_p = sub.add_parser(
        "send",
        help="send one event to the channels that take it",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    send_p.add_argument(
        "--event-file", required=True, metavar="PATH", help="the event document (JSON); - for stdin"
    )
    send_p.add_argument(
        "--claim-dir",
        type=Path,
        metavar="DIR",
        help="send only if no other process claimed this event in DIR (<job_id>-<event>.sent)",
    )
    test_p = sub.add_parser(
        "test",
        help="send a test message to every configured channel",
        formatter_class=_Formatter,
        allow_abbrev=False,
    )
    for sp in (send_p, test_p):
        sp.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="as notify.py -v"
        )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ
    _setup_logging(args.verbose, [env.get(key, "") for key in SECRET_KEYS])
    try:
        cfg = load_config(env, Path.cwd())
        if args.command == "test":
            return (
                EXIT_OK
                if test_channels(cfg, msg.trial_event(env.get("GIT_COMMIT", ""), time.time()))
                else EXIT_FAILURE
            )
        event = read_event(args.event_file)
    except BadInput as exc:
        log.error("%s", exc, exc_info=args.verbose)
        return EXIT_BAD_INPUT
    try:
        send(cfg, event, args.claim_dir)
    except Exception as exc:  # a notification must never fail the job
        log.warning("unexpected error, nothing more sent: %s", _error(exc), exc_info=args.verbose)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
