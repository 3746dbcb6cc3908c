"""What `notify.py` says: the event document, and the body each service is sent for it.

Pure functions on plain values, standard library only: no I/O, no network, no environment.

Lengths are counted in Unicode code points (Python `len`), as Discord counts them (its API is written in
Python: discord-api-docs#1315); text is cut between code points, never inside a UTF-8 sequence, and a
cut ends in "…". Every value that comes from the event (the run name, the cause, ...) gets its own
budget (`FIELD_MAX`) and is cut and escaped on its own, before it is put into the message, so markup
is never cut open and a message never needs cutting as a whole: all budgets together stay far below
the smallest service limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: Version of the generic webhook's JSON document (docs/notifications.md, "Generic webhook").
SCHEMA = "skyops.notify/v1"
#: Events an event document may name, in the order a job goes through them.
EVENTS = ("started", "attempt_ended", "ended")
#: The event of `notify.py test`'s message; never accepted in an event document.
TEST_EVENT = "test"
BACKENDS = ("local", "sky")

#: Discord `content`: at most 2000 characters (Discord "Execute Webhook"/"Create Message").
DISCORD_CONTENT_MAX = 2000
#: Slack `text`: Slack truncates past 40,000 characters and advises 4,000 at most (Slack
#: "chat.postMessage", "Truncating content"); 3,000 keeps a message readable on a phone.
SLACK_TEXT_MAX = 3000
#: GitHub commit status `description`: longer ones are refused with HTTP 422 ("description is too long
#: (maximum is 140 characters)").
GITHUB_DESCRIPTION_MAX = 140
#: Code points each event value may take in a message, after escaping. Their sum plus the fixed text
#: (about 150) is under 1,100: below every limit above except GitHub's, whose description is cut whole.
FIELD_MAX = {"run_id": 100, "job_id": 40, "state": 40, "reason": 60, "cause": 500, "logs_hint": 200}
#: Bounds on the event's numbers, which keep every number in a message short.
MAX_COUNT = 1_000_000
MAX_SECONDS = 1e10
#: Error text quoted from a service's answer.
DETAIL_MAX = 200
ELLIPSIS = "…"

_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_COMMIT_RE = re.compile(r"[0-9a-fA-F]{40}")
#: Discord markdown: a backslash before any of these shows the character itself (mentions are
#: suppressed separately, with `allowed_mentions`).
_DISCORD_SPECIAL = frozenset("\\`*_~|>#-[]()<:@")
#: Slack: the three characters its docs say to escape as HTML entities ("Formatting text", "Escaping").
_SLACK_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
#: Replaces a backtick inside a code span, which could only end the span early (neither service has an
#: escape for it there).
_BACKTICK_STAND_IN = "\u02cb"  # MODIFIER LETTER GRAVE ACCENT


class BadEvent(ValueError):
    """The event document is invalid; the message names the field."""


@dataclass(frozen=True)
class Event:
    """One event document (docs/notifications.md, "The event document"). Times are Unix seconds."""

    event: str
    run_id: str
    job_id: str
    backend: str
    state: str
    reason: str
    cause: str | None
    attempts: int
    recoveries: int
    runtime_s: float
    commit: str
    logs_hint: str
    time: float


def parse_event(doc: object) -> Event:
    """The Event in a decoded JSON document. Unknown keys are ignored; `cause` may be null or missing.

    Raises BadEvent naming the first field that is missing or wrong.
    """
    if not isinstance(doc, Mapping):
        raise BadEvent("the event document must be a JSON object")

    def field(key: str, kinds: type | tuple[type, ...], check: Callable[[Any], bool], want: str) -> Any:
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, kinds) or not check(value):
            raise BadEvent(f"field {key!r} must be {want}, got {value!r:.80}")
        return value

    def nonempty(value: str) -> bool:
        return bool(value.strip())

    def count(value: int) -> bool:
        return 0 <= value <= MAX_COUNT

    def seconds(value: float) -> bool:
        return math.isfinite(value) and 0 <= value <= MAX_SECONDS

    cause = doc.get("cause")
    if cause is not None and not isinstance(cause, str):
        raise BadEvent(f"field 'cause' must be a string or null, got {cause!r:.80}")
    return Event(
        event=field("event", str, EVENTS.__contains__, "one of " + ", ".join(EVENTS)),
        run_id=field("run_id", str, nonempty, "a non-empty string"),
        job_id=str(
            field(
                "job_id",
                (int, str),
                lambda v: bool(_JOB_ID_RE.fullmatch(str(v))),
                "a job id ([A-Za-z0-9._-])",
            )
        ),
        backend=field("backend", str, BACKENDS.__contains__, "one of " + ", ".join(BACKENDS)),
        state=field("state", str, nonempty, "a non-empty string"),
        reason=field("reason", str, lambda v: True, "a string"),
        cause=cause,
        attempts=field("attempts", int, count, f"an integer from 0 to {MAX_COUNT}"),
        recoveries=field("recoveries", int, count, f"an integer from 0 to {MAX_COUNT}"),
        runtime_s=float(field("runtime_s", (int, float), seconds, f"seconds from 0 to {MAX_SECONDS:g}")),
        commit=field("commit", str, lambda v: v == "" or is_commit(v), '40 hex digits or ""'),
        logs_hint=field("logs_hint", str, lambda v: True, "a string"),
        time=float(field("time", (int, float), seconds, f"Unix seconds from 0 to {MAX_SECONDS:g}")),
    )


def is_commit(text: str) -> bool:
    """True for a full commit id: exactly 40 hex digits."""
    return bool(_COMMIT_RE.fullmatch(text))


def claim_key(event: Event) -> str:
    """The dedup key of an event: `<job_id>-<event>`, plus the attempt number for `attempt_ended`."""
    key = f"{event.job_id}-{event.event}"
    return f"{key}-{event.attempts}" if event.event == "attempt_ended" else key


def one_line(text: str) -> str:
    """`text` with every run of white space (newlines included) turned into one space, trimmed."""
    return " ".join(text.split())


def fit(text: str, limit: int, escape: Callable[[str], str] = str) -> str:
    """`text` with each character escaped, at most `limit` code points long.

    A cut ends in "…" (which counts) and falls between escaped characters, so it never splits a code
    point, an escape sequence or an HTML entity.
    """
    units = [escape(c) for c in text]
    if sum(map(len, units)) <= limit:
        return "".join(units)
    kept: list[str] = []
    used = 0
    for unit in units:
        if used + len(unit) > limit - len(ELLIPSIS):
            break
        kept.append(unit)
        used += len(unit)
    return "".join(kept) + ELLIPSIS


def duration(seconds: float) -> str:
    """A runtime for people: "42s", "12m05s", "1h02m" (hours keep counting past a day: "26h00m")."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def short_commit(commit: str) -> str:
    """The first 7 hex digits of a commit id, or "none"."""
    return commit[:7] or "none"


@dataclass(frozen=True)
class Markup:
    """How a service marks text up: its bold and code-span delimiters, and how one character of an
    event value is escaped outside (`text`) and inside (`code`) a code span."""

    bold: str
    code: str
    text: Callable[[str], str]
    code_text: Callable[[str], str]


def _discord_text(c: str) -> str:
    return "\\" + c if c in _DISCORD_SPECIAL else c


def _slack_text(c: str) -> str:
    return _SLACK_ENTITIES.get(c, c)


def _in_code_span(c: str) -> str:
    return _BACKTICK_STAND_IN if c == "`" else c


PLAIN = Markup(bold="", code="", text=str, code_text=str)
DISCORD = Markup(bold="**", code="`", text=_discord_text, code_text=_in_code_span)
SLACK = Markup(bold="*", code="`", text=_slack_text, code_text=lambda c: _slack_text(_in_code_span(c)))


def _icon(event: Event) -> str:
    if event.event == "started":
        return "🚀"
    if event.event == "attempt_ended":
        return "🔁"
    if event.event == TEST_EVENT:
        return "🧪"
    return {"SUCCEEDED": "✅", "CANCELLED": "🛑"}.get(event.state, "❌")


def render(event: Event, m: Markup) -> str:
    """The chat message for `event`, four short lines in the service's markup:

    ❌ *FAILED* · `train-0412` · job 3
    reason: job_failed · `RuntimeError: CUDA error: out of memory`
    attempts 2 · recoveries 1 · runtime 1h02m · commit 1a2b3c4
    logs: `make logs ID=3`
    """

    def text(key: str, value: str) -> str:
        return fit(one_line(value), FIELD_MAX[key], m.text)

    def code(key: str, value: str) -> str:
        return m.code + fit(one_line(value), FIELD_MAX[key] - 2 * len(m.code), m.code_text) + m.code

    head = [f"{_icon(event)} {m.bold}{text('state', event.state)}{m.bold}"]
    if event.event == "started":
        head.append("started")
    elif event.event == "attempt_ended":
        head.append(f"attempt {event.attempts} ended")
    head += [code("run_id", event.run_id), f"job {text('job_id', event.job_id)}"]
    lines = [" · ".join(head)]
    why = [text("reason", event.reason)] if one_line(event.reason) else []
    if event.cause and one_line(event.cause):
        why.append(code("cause", event.cause))
    if why:
        lines.append("reason: " + " · ".join(why))
    lines.append(
        f"attempts {event.attempts} · recoveries {event.recoveries} · runtime {duration(event.runtime_s)}"
        f" · commit {short_commit(event.commit)}"
    )
    if one_line(event.logs_hint):
        lines.append(f"logs: {code('logs_hint', event.logs_hint)}")
    return "\n".join(lines)


def discord_body(event: Event) -> dict[str, Any]:
    """Discord "Execute Webhook" JSON: the message as `content`, every mention suppressed."""
    return {"content": render(event, DISCORD), "allowed_mentions": {"parse": []}}


def slack_body(event: Event) -> dict[str, Any]:
    """Slack incoming-webhook JSON: the message as mrkdwn `text`."""
    return {"text": render(event, SLACK)}


def github_state(event: Event) -> str:
    """The commit status state (GitHub allows exactly error, failure, pending, success) for an event:
    `started` is pending; an ending is success for SUCCEEDED (unless the runtime budget ran out before
    the job ever started), failure when the code failed (FAILED, FAILED_SETUP, a crash loop, that
    budget), error for anything else (CANCELLED, FAILED_CONTROLLER, FAILED_NO_RESOURCE, ...)."""
    if event.event == "started":
        return "pending"
    if event.event == TEST_EVENT or (event.state == "SUCCEEDED" and event.reason != "max_runtime_before_job"):
        return "success"
    code_failed = event.state in ("FAILED", "FAILED_SETUP") or event.reason in (
        "crash_loop",
        "max_runtime_before_job",
    )
    return "failure" if code_failed else "error"


def github_body(event: Event) -> dict[str, Any]:
    """GitHub "Create a commit status" JSON; context `skyops/<run>`, description plain text."""
    if event.event == "started":
        parts = [f"job {event.job_id} started"]
    else:
        parts = [
            f"job {event.job_id} {event.state}: {event.reason}".rstrip(": "),
            f"attempts {event.attempts}, recoveries {event.recoveries}",
            duration(event.runtime_s),
        ]
    parts += [event.logs_hint, event.cause or ""]
    description = " · ".join(p for p in map(one_line, parts) if p)
    return {
        "state": github_state(event),
        "description": fit(description, GITHUB_DESCRIPTION_MAX),
        "context": f"skyops/{fit(one_line(event.run_id), FIELD_MAX['run_id'])}",
    }


def webhook_body(event: Event) -> dict[str, Any]:
    """The generic webhook's JSON document, schema `skyops.notify/v1`: the event's fields as given,
    plus `text`, the message as plain text."""
    return {"schema": SCHEMA, **asdict(event), "text": render(event, PLAIN)}


def trial_event(commit: str, now: float) -> Event:
    """The event of `notify.py test`'s message."""
    return Event(
        event=TEST_EVENT,
        run_id="notify-test",
        job_id="0",
        backend="local",
        state="TEST",
        reason="test",
        cause="a test message from notify.py test: this channel works",
        attempts=0,
        recoveries=0,
        runtime_s=0.0,
        commit=commit if is_commit(commit) else "",
        logs_hint="",
        time=now,
    )
