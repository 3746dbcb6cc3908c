"""notify.py's HTTP side: the channels and the POSTs an event makes, rate limits, retries, delivery.

Imported by notify.py alone: it runs in notify.py's environment (httpx, stamina). A channel that
cannot be posted to, or fails, comes back as a Result that says why, never as an exception: one
channel never stops the others (docs/notifications.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import _notify_messages as msg
import httpx
import stamina

log = logging.getLogger("notify")

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
#: "owner/name" of a GitHub repository.
REPOSITORY_RE = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


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
    if not REPOSITORY_RE.fullmatch(gh.repository):
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


def error_text(exc: BaseException) -> str:
    """ "ConnectError: [Errno 111] Connection refused": the exception's type and its message, if any."""
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
        last = str(exc) if isinstance(exc, _Retry) else error_text(exc)
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
        detail = error_text(exc)
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
