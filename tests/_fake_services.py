"""Loopback HTTP servers that answer as Discord, Slack, GitHub and a generic webhook do, for the
notification tests (tests/test_notify.py, tests/test_notify_e2e.py, tests/test_jobs.py).

Each `Service` is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (port 0: the kernel picks a free one),
started by the test, answering every POST with scripted answers and recording what it was sent.
`Channels` starts all four at once and gives the settings that point skyops at them, with canary
secrets in every URL and token, so a test can look for them in every output.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Canary secrets: a webhook URL carries its token in its path, GitHub's is a bearer token.
CANARY = "CANARY-9d2e"
CANARY_TOKEN = "ghp_CANARY9d2eTOKEN"
#: A full commit id for the GitHub channel.
SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


@dataclass
class Answer:
    """One scripted HTTP answer; `hold`: answer only once the test releases the server (a slow server)."""

    status: int
    body: bytes | str | dict = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: bool = False


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict


class Service:
    """A loopback HTTP server answering POSTs with `answers` in order (the last one repeats)."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.seen: list[Seen] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with service._lock:
                    service.seen.append(
                        Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    answer = service.answers[min(len(service.seen), len(service.answers)) - 1]
                if answer.hold:
                    service.release.wait(60)
                data = answer.body
                if isinstance(data, dict):
                    data = json.dumps(data)
                data = data.encode() if isinstance(data, str) else data
                try:
                    self.send_response(answer.status)
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (the slow-server test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Channels:
    """All four services at once, answering as the services do when all is well (or as scripted)."""

    discord: Service
    slack: Service
    github: Service
    webhook: Service

    @classmethod
    def start(cls, *, same: Answer | None = None) -> Channels:
        """Discord 204, Slack 200 "ok", GitHub 201, the webhook 200; `same`: every one answers that."""
        return cls(
            discord=Service(same or Answer(204)),
            slack=Service(same or Answer(200, "ok")),
            github=Service(same or Answer(201, {"id": 1})),
            webhook=Service(same or Answer(200)),
        )

    def all(self) -> dict[str, Service]:
        return {"discord": self.discord, "slack": self.slack, "github": self.github, "webhook": self.webhook}

    def settings(self) -> dict[str, str]:
        """The keys that point every channel at its service (canary secrets in each URL and token)."""
        return {
            "DISCORD_WEBHOOK_URL": self.discord.url(f"/api/webhooks/123/{CANARY}"),
            "SLACK_WEBHOOK_URL": self.slack.url(f"/services/T0/B0/{CANARY}"),
            "NOTIFY_WEBHOOK_URL": self.webhook.url(f"/hook/{CANARY}"),
            "GITHUB_TOKEN": CANARY_TOKEN,
            "GITHUB_API_URL": self.github.url(""),
            "GITHUB_REPOSITORY": "owner/name",
        }

    def counts(self) -> dict[str, int]:
        return {name: len(s.seen) for name, s in self.all().items()}

    def close(self) -> None:
        for service in self.all().values():
            service.close()
