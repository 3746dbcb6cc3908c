"""notify.py: every channel against a real HTTP server on loopback that answers as the service does.

The servers are stdlib `ThreadingHTTPServer`s on 127.0.0.1 with scripted answers (success, 429,
5xx, 4xx with the service's error body, a server that does not answer). Tests wait on events, never
on sleeps; elapsed times are measured and bounded generously.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _notify_messages as msg
import _notify_send
import httpx
import notify
import pytest
import stamina
from _fake_services import Answer, Service
from conftest import REPO, clean_env

CANARY_URL = "CANARY-5e1f"
CANARY_TOKEN = "ghp_CANARYTOKEN"
SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
ENV_KEYS = (
    *notify.SECRET_KEYS,
    "GITHUB_API_URL",
    "GITHUB_REPOSITORY",
    "GIT_COMMIT",
    "GIT_DIRTY",
    "NOTIFY_ON",
    "NOTIFY_TIMEOUT_S",
    *(f"{p}_proxy" for p in ("http", "https", "all", "HTTP", "HTTPS", "ALL")),
)
EVENT = {
    "event": "ended",
    "run_id": "train-0412",
    "job_id": 3,
    "backend": "sky",
    "state": "FAILED",
    "reason": "job_failed",
    "cause": "RuntimeError: CUDA error: an illegal memory access was encountered",
    "attempts": 2,
    "recoveries": 1,
    "runtime_s": 3725.5,
    "commit": SHA,
    "logs_hint": "make logs ID=3",
    "time": 1764633600,
}
#: A cause of 10,000 code points: emoji (astral: 4 UTF-8 bytes, 2 UTF-16 units), CJK, and every kind
#: of markup the services know (code fences, bold, mentions, entities, masked links).
NASTY = ("😀🚀 訓練が失敗しました ```rm -rf``` *bold* _it_ ~s~ <!channel> @everyone &amp; [x](y) `") * 250


@pytest.fixture
def serve() -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def start(*answers: Answer) -> Service:
        services.append(Service(*answers))
        return services[-1]

    yield start
    for service in services:
        service.close()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No channel configured, no proxy, and a working directory outside any git repository."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SKYPILOT_DISABLE_LOCAL_API_SERVER", "1")
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def configure(env: pytest.MonkeyPatch, **services: Service) -> None:
    """Point the named channels at their loopback services, canary secrets in every URL and token."""
    if "discord" in services:
        env.setenv("DISCORD_WEBHOOK_URL", services["discord"].url(f"/api/webhooks/123/{CANARY_URL}"))
    if "slack" in services:
        env.setenv("SLACK_WEBHOOK_URL", services["slack"].url(f"/services/T0/B0/{CANARY_URL}"))
    if "webhook" in services:
        env.setenv("NOTIFY_WEBHOOK_URL", services["webhook"].url(f"/hook?token={CANARY_URL}"))
    if "github" in services:
        env.setenv("GITHUB_TOKEN", CANARY_TOKEN)
        env.setenv("GITHUB_API_URL", services["github"].url(""))
        env.setenv("GITHUB_REPOSITORY", "owner/name")
        env.setenv("GIT_COMMIT", SHA)


def send(tmp_path: Path, *args: str, **fields: object) -> tuple[int, float]:
    """Run `notify.py send` on EVENT with `fields` changed; the exit code and the seconds it took."""
    path = tmp_path / "event.json"
    path.write_text(json.dumps({**EVENT, **fields}))
    start = time.monotonic()
    code = notify.main(["send", "--event-file", str(path), *args])
    return code, time.monotonic() - start


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert CANARY_URL not in text and CANARY_TOKEN not in text


# --- messages ------------------------------------------------------------------------------------


def test_messages_carry_everything_in_four_short_lines() -> None:
    event = msg.parse_event(EVENT)
    assert msg.render(event, msg.SLACK) == (
        "❌ *FAILED* · `train-0412` · job 3\n"
        "reason: job_failed · `RuntimeError: CUDA error: an illegal memory access was encountered`\n"
        "attempts 2 · recoveries 1 · runtime 1h02m · commit 1a2b3c4\n"
        "logs: `make logs ID=3`"
    )
    assert msg.render(event, msg.DISCORD).splitlines()[:2] == [
        "❌ **FAILED** · `train-0412` · job 3",
        "reason: job\\_failed · `RuntimeError: CUDA error: an illegal memory access was encountered`",
    ]
    assert msg.render(event, msg.PLAIN).splitlines()[0] == "❌ FAILED · train-0412 · job 3"


@pytest.mark.parametrize(
    ("fields", "first_line"),
    [
        ({"event": "started", "state": "RUNNING"}, "🚀 *RUNNING* · started · `train-0412` · job 3"),
        (
            {"event": "attempt_ended", "state": "RECOVERING"},
            "🔁 *RECOVERING* · attempt 2 ended · `train-0412` · job 3",
        ),
        (
            {"state": "SUCCEEDED", "reason": "completed", "cause": None},
            "✅ *SUCCEEDED* · `train-0412` · job 3",
        ),
        ({"state": "CANCELLED", "reason": "sigterm"}, "🛑 *CANCELLED* · `train-0412` · job 3"),
    ],
)
def test_each_event_has_its_own_first_line(fields: dict, first_line: str) -> None:
    assert msg.render(msg.parse_event({**EVENT, **fields}), msg.SLACK).splitlines()[0] == first_line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (725, "12m05s"), (3725.5, "1h02m"), (93600, "26h00m")],
)
def test_duration_for_people(seconds: float, text: str) -> None:
    assert msg.duration(seconds) == text


def test_fit_cuts_between_code_points_and_escapes_and_says_so() -> None:
    assert msg.fit("short", 5) == "short"
    assert msg.fit("a😀b", 2) == "a…"
    assert msg.fit("訓練が失敗", 3) == "訓練…"
    assert msg.fit("&&&", 6, msg.SLACK.text) == "&amp;…"  # never "&am…"
    assert msg.fit("&&&", 5, msg.SLACK.text) == "…"
    assert msg.fit("**", 3, msg.DISCORD.text) == "\\*…"  # never a lone backslash before the "…"


@pytest.mark.parametrize(
    ("body", "limit"), [(msg.discord_body, msg.DISCORD_CONTENT_MAX), (msg.slack_body, msg.SLACK_TEXT_MAX)]
)
def test_long_multibyte_markup_stays_within_limits_and_keeps_markup_closed(body, limit: int) -> None:
    event = msg.parse_event(
        {
            **EVENT,
            "cause": NASTY,
            "run_id": "r" * 300,
            "reason": "*_~" * 100,
            "logs_hint": NASTY,
            "attempts": msg.MAX_COUNT,
            "recoveries": msg.MAX_COUNT,
            "runtime_s": msg.MAX_SECONDS,
        }
    )
    text = next(iter(body(event).values()))
    text.encode("utf-8")  # whole code points only: a split surrogate or byte would fail here
    assert len(text) <= limit
    assert "…" in text
    for line in text.splitlines():
        assert line.count("`") % 2 == 0, line  # every code span is closed
    assert "```" not in text and "@everyone" in text  # a fence in the cause cannot open a block
    if body is msg.slack_body:
        assert "<" not in text and ">" not in text and "&amp;amp;" in text and "&lt;!channel&gt;" in text
    else:
        assert body(event)["allowed_mentions"] == {"parse": []}
        assert "\\*\\_\\~" in text  # markup in a plain value shows as itself


def test_github_description_is_140_code_points_at_most() -> None:
    body = msg.github_body(msg.parse_event({**EVENT, "cause": NASTY}))
    assert len(body["description"]) == 140 and body["description"].endswith("…")
    assert body["description"].startswith("job 3 FAILED: job_failed · attempts 2, recoveries 1 · 1h02m")
    assert body["state"] == "failure" and body["context"] == "skyops/train-0412"


@pytest.mark.parametrize(
    ("event", "state", "expected"),
    [
        ("started", "RUNNING", "pending"),
        ("ended", "SUCCEEDED", "success"),
        ("ended", "FAILED", "failure"),
        ("ended", "FAILED_SETUP", "failure"),
        ("ended", "CANCELLED", "error"),
        ("ended", "FAILED_CONTROLLER", "error"),
    ],
)
def test_github_states(event: str, state: str, expected: str) -> None:
    assert msg.github_state(msg.parse_event({**EVENT, "event": event, "state": state})) == expected


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"event": "finished"}, "'event'"),
        ({"job_id": "../x"}, "'job_id'"),
        ({"attempts": -1}, "'attempts'"),
        ({"attempts": True}, "'attempts'"),
        ({"recoveries": 10**7}, "'recoveries'"),
        ({"runtime_s": float("nan")}, "'runtime_s'"),
        ({"commit": "abc1234"}, "'commit'"),
        ({"cause": 3}, "'cause'"),
        ({"backend": "k8s"}, "'backend'"),
    ],
)
def test_bad_event_names_the_field(fields: dict, field_name: str) -> None:
    with pytest.raises(msg.BadEvent, match=field_name):
        msg.parse_event({**EVENT, **fields})


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert send(tmp_path, run_id="")[0] == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "field 'run_id'" in err and "event.json" in err
    (tmp_path / "broken.json").write_text("{")
    assert notify.main(["send", "--event-file", str(tmp_path / "broken.json")]) == 2
    assert "not JSON" in capsys.readouterr().err
    assert notify.main(["send", "--event-file", str(tmp_path / "missing.json")]) == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [("NOTIFY_ON", "ended,finished"), ("NOTIFY_TIMEOUT_S", "60"), ("NOTIFY_TIMEOUT_S", "abc")],
)
def test_bad_setting_names_the_key(env, tmp_path: Path, capsys, key: str, value: str) -> None:
    env.setenv(key, value)
    assert send(tmp_path)[0] == 2
    assert capsys.readouterr().err.startswith(f"notify: {key}={value!r}: expected ")


@pytest.mark.parametrize(
    ("url", "repository"),
    [
        ("https://github.com/owner/name.git", "owner/name"),
        ("https://github.com/owner/name", "owner/name"),
        ("https://x-access-token:ghp_x@github.com/owner/name.git/", "owner/name"),
        ("git@github.com:owner/name.git", "owner/name"),
        ("git@github.com:owner/name", "owner/name"),
        ("ssh://git@github.com/owner/name.git", "owner/name"),
        ("ssh://git@github.example.com:2222/owner/my.repo", "owner/my.repo"),
        ("/srv/git/name.git", None),
        ("https://gitlab.com/group/sub/name.git", None),
    ],
)
def test_repository_from_remote(url: str, repository: str | None) -> None:
    assert notify.repository_from_remote(url) == repository


def test_rate_limit_wait_as_each_service_counts() -> None:
    def wait(channel: str, status: int, now: float = 0.0, **kwargs: object) -> float | None:
        return _notify_send.rate_limit_wait(channel, httpx.Response(status, **kwargs), now)

    assert wait("discord", 429, json={"retry_after": 1.5}, headers={"Retry-After": "2"}) == 1.5
    assert wait("discord", 429, headers={"Retry-After": "2"}) == 2.0
    assert wait("slack", 429, headers={"Retry-After": "30"}) == 30.0
    assert (
        wait("github", 403, 1000.0, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1042"}) == 42
    )
    assert wait("github", 403, headers={"x-ratelimit-remaining": "12"}) is None  # a plain 403
    assert wait("slack", 403, headers={"Retry-After": "3"}) is None
    assert wait("webhook", 429) == _notify_send.DEFAULT_RETRY_AFTER_S
    assert wait("webhook", 404) is None


def test_redaction_covers_urls_and_their_pieces() -> None:
    formatter = notify._Redacting(["https://hooks.example/services/T0/B0/" + CANARY_URL, CANARY_TOKEN])
    record = logging.LogRecord(
        "notify", logging.WARNING, "", 0, "%s", (f"a {CANARY_URL} b {CANARY_TOKEN}",), None
    )
    assert formatter.format(record) == "notify: a *** b ***"


# --- claim ---------------------------------------------------------------------------------------


def test_claim_is_won_once_even_under_a_race(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def racer() -> None:
        barrier.wait()
        wins.append(notify.claim(tmp_path / "notify", "3-ended"))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert (tmp_path / "notify" / "3-ended.sent").exists()
    with pytest.raises(ValueError):
        notify.claim(tmp_path, "../x")


def test_claim_dir_dedups_an_ending_but_not_attempts(env, serve, tmp_path: Path, capsys) -> None:
    slack = serve(Answer(200, "ok"))
    configure(env, slack=slack)
    env.setenv("NOTIFY_ON", "attempt_ended,ended")
    claims = tmp_path / "claims"
    assert send(tmp_path, "--claim-dir", str(claims))[0] == 0
    assert send(tmp_path, "--claim-dir", str(claims))[0] == 0  # the watcher, after the node
    assert len(slack.seen) == 1 and "3-ended: already sent" in capsys.readouterr().err
    for attempt in (1, 2, 2):
        send(tmp_path, "--claim-dir", str(claims), event="attempt_ended", attempts=attempt)
    assert len(slack.seen) == 3
    assert sorted(p.name for p in claims.iterdir()) == [
        "3-attempt_ended-1.sent",
        "3-attempt_ended-2.sent",
        "3-ended.sent",
    ]


@pytest.mark.parametrize("where", ["read_only_dir", "full_dir", "under_a_file"])
def test_a_claim_dir_that_cannot_be_written_never_stops_the_message(
    env, serve, tmp_path: Path, capsys, request, where: str
) -> None:
    slack = serve(Answer(200, "ok"))
    configure(env, slack=slack)
    if where == "under_a_file":
        (tmp_path / "a-file").write_text("")
        claims = tmp_path / "a-file" / "claims"
    else:
        claims = request.getfixturevalue(where)
    assert send(tmp_path, "--claim-dir", str(claims))[0] == 0
    assert len(slack.seen) == 1  # a full disk may still take an empty file: then the claim simply holds
    if where != "full_dir":
        assert "sending anyway" in capsys.readouterr().err


# --- channels, end to end ------------------------------------------------------------------------


def test_all_four_channels_succeed(env, serve, tmp_path: Path, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    services = {
        "discord": serve(Answer(204)),
        "slack": serve(Answer(200, "ok")),
        "github": serve(Answer(201, {"id": 1, "state": "failure"})),
        "webhook": serve(Answer(200)),
    }
    configure(env, **services)
    code, elapsed = send(tmp_path, "-v")
    out, err = capsys.readouterr()
    assert code == 0 and out == "" and elapsed < 10
    assert [len(s.seen) for s in services.values()] == [1, 1, 1, 1]
    for channel in ("discord", "slack", "github", "webhook"):
        assert f"notify: {channel}: ok (HTTP " in err
    assert_no_secret(out, err, caplog.text)

    discord = services["discord"].seen[0]
    assert discord.path == f"/api/v10/webhooks/123/{CANARY_URL}"
    assert discord.body["allowed_mentions"] == {"parse": []}
    content = discord.body["content"]
    for part in ("**FAILED**", "train-0412", "job 3", "job\\_failed", "illegal memory access", "attempts 2"):
        assert part in content
    for part in ("recoveries 1", "runtime 1h02m", "commit 1a2b3c4", "`make logs ID=3`"):
        assert part in content
    assert services["slack"].seen[0].body == {"text": msg.render(msg.parse_event(EVENT), msg.SLACK)}

    github = services["github"].seen[0]
    assert github.path == f"/repos/owner/name/statuses/{SHA}"
    assert github.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert github.headers["x-github-api-version"] == _notify_send.GITHUB_API_VERSION
    assert github.body["state"] == "failure" and github.body["context"] == "skyops/train-0412"
    assert len(github.body["description"]) <= 140

    hook = services["webhook"].seen[0].body
    assert hook["schema"] == "skyops.notify/v1"
    assert {k: hook[k] for k in EVENT} == {**EVENT, "job_id": "3"}
    assert hook["text"].startswith("❌ FAILED · train-0412 · job 3\n")


def test_events_go_where_notify_on_and_github_say(env, serve, tmp_path: Path) -> None:
    slack, github = serve(Answer(200, "ok")), serve(Answer(201, {}))
    configure(env, slack=slack, github=github)
    send(tmp_path, event="started", state="RUNNING")  # default NOTIFY_ON=ended: GitHub's pending only
    send(tmp_path, event="attempt_ended", state="RECOVERING")  # nobody by default
    assert (len(slack.seen), [s.body["state"] for s in github.seen]) == (0, ["pending"])
    env.setenv("NOTIFY_ON", "started, attempt_ended")
    send(tmp_path, event="attempt_ended", state="RECOVERING")  # never a status per attempt
    send(tmp_path, state="SUCCEEDED", reason="completed")  # GitHub always gets the final state
    assert (len(slack.seen), [s.body["state"] for s in github.seen]) == (1, ["pending", "success"])


@pytest.mark.parametrize(
    ("extra", "warning"),
    [({"GIT_DIRTY": "1"}, "GIT_DIRTY=1"), ({"GIT_COMMIT": "abc1234"}, "GIT_COMMIT is not")],
)
def test_no_status_for_an_unpushed_commit(env, serve, tmp_path: Path, capsys, extra, warning) -> None:
    github = serve(Answer(201, {}))
    configure(env, github=github)
    for key, value in extra.items():
        env.setenv(key, value)
    assert send(tmp_path)[0] == 0
    err = capsys.readouterr().err
    assert github.seen == [] and err.count("\n") == 1 and f"notify: github: skipped: {warning}" in err


def test_rate_limits_are_honoured(env, serve, tmp_path: Path, capsys) -> None:
    # Discord: the JSON retry_after (seconds, API v10) wins over the header; Slack: Retry-After.
    discord = serve(
        Answer(429, {"message": "limited", "retry_after": 0.4, "global": False}, {"Retry-After": "9"}),
        Answer(204),
    )
    slack = serve(Answer(429, "rate_limited", {"Retry-After": "1"}), Answer(200, "ok"))
    github = serve(Answer(403, {"message": "API rate limit exceeded"}, {"Retry-After": "1"}), Answer(201, {}))
    configure(env, discord=discord, slack=slack, github=github)
    code, elapsed = send(tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and [len(s.seen) for s in (discord, slack, github)] == [2, 2, 2]
    assert 1.0 <= elapsed < 8, elapsed  # waited Slack's and GitHub's 1 s, not Discord's header's 9 s
    assert "discord: HTTP 429 limited, retrying in 0.4 s" in err and "slack: ok (HTTP 200, 2 tries)" in err


def test_a_rate_limit_past_the_time_cap_is_not_waited_for(env, serve, tmp_path: Path, capsys) -> None:
    discord = serve(Answer(429, {"message": "limited", "retry_after": 120.0}))
    configure(env, discord=discord)
    code, elapsed = send(tmp_path)
    assert code == 0 and len(discord.seen) == 1 and elapsed < 5
    assert (
        "discord: failed: HTTP 429 limited; retry after 120 s is past the time cap" in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("channel", "ok"),
    [
        ("discord", Answer(204)),
        ("slack", Answer(200, "ok")),
        ("github", Answer(201, {})),
        ("webhook", Answer(200)),
    ],
)
def test_5xx_then_success_is_retried(env, serve, tmp_path: Path, capsys, channel: str, ok: Answer) -> None:
    service = serve(Answer(503, "upstream unavailable"), Answer(500, "oops"), ok)
    configure(env, **{channel: service})
    with stamina.set_testing(True, attempts=_notify_send.RETRY_ATTEMPTS, cap=True):  # no backoff, same tries
        code, elapsed = send(tmp_path)
    assert code == 0 and len(service.seen) == 3 and elapsed < 10
    assert f"{channel}: ok (HTTP {ok.status}, 3 tries)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("channel", "error", "line"),
    [
        (
            "discord",
            Answer(404, {"message": "Unknown Webhook", "code": 10015}),
            "HTTP 404 Unknown Webhook (10015)",
        ),
        ("slack", Answer(404, "no_service"), "HTTP 404 no_service"),
        ("slack", Answer(400, "invalid_payload"), "HTTP 400 invalid_payload"),
        ("github", Answer(422, {"message": "Validation Failed", "errors": []}), "HTTP 422 Validation Failed"),
        ("github", Answer(401, {"message": "Bad credentials"}), "HTTP 401 Bad credentials"),
        ("webhook", Answer(410, "gone\nmore"), "HTTP 410 gone"),
    ],
)
def test_4xx_is_not_retried(
    env, serve, tmp_path: Path, capsys, channel: str, error: Answer, line: str
) -> None:
    service = serve(error, Answer(200, "ok"))
    configure(env, **{channel: service})
    assert send(tmp_path)[0] == 0
    err = capsys.readouterr().err
    assert len(service.seen) == 1 and err == f"notify: {channel}: failed: {line}\n"


def test_error_bodies_that_quote_the_secret_are_redacted(env, serve, tmp_path: Path, capsys) -> None:
    slack = serve(Answer(404, f"no_service for /services/T0/B0/{CANARY_URL}"))
    github = serve(Answer(401, {"message": f"Bad credentials {CANARY_TOKEN}"}))
    configure(env, slack=slack, github=github)
    send(tmp_path, "-v")
    err = capsys.readouterr().err
    assert_no_secret(err)
    assert "slack: failed: HTTP 404 no_service for ***" in err


def test_a_slow_server_cannot_hold_the_job(env, serve, tmp_path: Path, capsys) -> None:
    discord = serve(Answer(204, hold=True))
    slack = serve(Answer(200, "ok"))
    configure(env, discord=discord, slack=slack)
    env.setenv("NOTIFY_TIMEOUT_S", "1.5")
    code, elapsed = send(tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and 1.4 <= elapsed < 8, elapsed
    assert "discord: failed: no answer within the 1.5 s time cap" in err and "slack: ok (HTTP 200)" in err


def test_connection_refused_is_retried_then_reported(env, serve, tmp_path: Path, capsys) -> None:
    dead = serve(Answer(204))
    dead.close()  # nothing listens on its port any more
    configure(env, webhook=dead)
    env.setenv("NOTIFY_TIMEOUT_S", "20")
    code, elapsed = send(tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and elapsed < 15
    assert "webhook: failed: ConnectError" in err and f"({_notify_send.RETRY_ATTEMPTS} tries)" in err


# --- notify.py test ------------------------------------------------------------------------------


def test_test_command_reports_each_channel(env, serve, capsys) -> None:
    services = {
        "discord": serve(Answer(204)),
        "slack": serve(Answer(404, "no_service")),
        "github": serve(Answer(201, {})),
    }
    configure(env, **services)
    assert notify.main(["test"]) == 1
    err = capsys.readouterr().err
    assert "notify: discord: ok (HTTP 204)\n" in err and "notify: slack: failed: HTTP 404 no_service\n" in err
    assert "notify: github: ok (HTTP 201)\n" in err and len(err.splitlines()) == 3
    assert services["github"].seen[0].body["context"] == "skyops/notify-test"
    assert "🧪" in services["discord"].seen[0].body["content"]
    assert_no_secret(err)
    services["slack"].answers = [Answer(200, "ok")]
    assert notify.main(["test"]) == 0


def test_test_command_without_channels(capsys) -> None:
    assert notify.main(["test"]) == 1
    assert "no channel configured" in capsys.readouterr().err


def test_standalone_script_reads_stdin(env, serve, tmp_path: Path) -> None:
    """The script as a node runs it: `uv run --script`, the event on stdin."""
    webhook = serve(Answer(200))
    result = subprocess.run(
        [
            "uv",
            "run",
            "--quiet",
            "--script",
            str(REPO / "scripts" / "remote" / "notify.py"),
            "send",
            "--event-file",
            "-",
        ],
        input=json.dumps(EVENT),
        env=clean_env({"NOTIFY_WEBHOOK_URL": webhook.url(f"/hook/{CANARY_URL}")}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(webhook.seen) == 1 and result.stdout == ""
    assert "notify: webhook: ok (HTTP 200)" in result.stderr
    assert_no_secret(result.stderr)
