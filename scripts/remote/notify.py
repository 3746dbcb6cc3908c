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
import os
import re
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

import _contract
import _notify_messages as msg
import stamina
from _contract import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK
from _notify_send import REPOSITORY_RE, WEBHOOK_KEYS, Config, GitHub, Result, deliver, error_text, plan

log = logging.getLogger("notify")

#: Keys whose values are secrets: they and their URL parts are replaced by "***" in every line logged.
SECRET_KEYS = ("DISCORD_WEBHOOK_URL", "SLACK_WEBHOOK_URL", "NOTIFY_WEBHOOK_URL", "GITHUB_TOKEN")


class BadInput(Exception):
    """Input a user can fix; the message names the flag, key or file."""


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
    return path if REPOSITORY_RE.fullmatch(path) else None


def repository_from_git(cwd: Path) -> str | None:
    """ "owner/name" of the git remote `origin` of `cwd`, or None (no git, no remote, another form)."""
    cmd = ["git", "remote", "get-url", "origin"]
    log.debug("running %s in %s", " ".join(cmd), cwd)
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return repository_from_remote(out.strip())


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
    stamina.instrumentation.set_on_retry_hooks([])  # retries are logged per channel (_notify_send)


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
        log.warning("unexpected error, nothing more sent: %s", error_text(exc), exc_info=args.verbose)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
