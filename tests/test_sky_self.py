"""scripts/remote/_sky_self.py: a node cancels its own managed job through the SkyPilot API server.

Against FakeSkyApiServer, a real HTTP server on loopback that answers `POST /jobs/cancel` and
`GET /api/get` as SkyPilot 0.14.1's API server does (shapes recorded from a real `sky api start`
server: sky/server/server.py RequestIDMiddleware, BearerTokenMiddleware, api_get; sky/jobs/server/
server.py cancel). It is a fake because a real server can only cancel a managed job with a jobs
controller, which needs a cloud. The opt-in test at the end (SKYOPS_SKY_E2E=1) runs the same call
against a real local API server with a real service-account token minted by SkyPilot's own code.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import _sky_self
import pytest

TOKEN = "sky_CANARY-7c1e0f-service-account-token"
PASSWORD = "CANARY-basic-auth-password"


class FakeSkyApiServer:
    """A FAKE SkyPilot API server on 127.0.0.1 (a real HTTP server in a thread), for the two routes
    a managed job needs to cancel itself. Like SkyPilot 0.14.1's:

    - every answer carries a new `X-Skypilot-Request-ID` header; for a scheduled request it is that
      request's id (RequestIDMiddleware);
    - `Authorization: Bearer sky_...` is checked: 401 `{"detail": ...}` when service accounts are
      off, the token is unknown, or it expired (BearerTokenMiddleware);
    - `POST /jobs/cancel` validates the body (422 like FastAPI), schedules the cancel and answers
      200 `null` at once; the cancel runs for `run_s` seconds; an unknown job id is skipped, and the
      request still SUCCEEDS (sky/jobs/utils.py cancel_jobs_by_id);
    - `GET /api/get?request_id=ID` (an id prefix works) waits for the request and answers 200 with
      the request record (`status` SUCCEEDED), or 500 `{"detail": record}` whose `error` is a JSON
      text with `object`, `type` and `message`, or 404 `{"detail": "Request 'ID' not found"}`.

    Knobs: `fail_with` (type, message) makes the cancel request fail; `unavailable` answers the
    next N POSTs 503; `hang` keeps /api/get waiting; `redirect_to` answers POSTs 307 to that URL.
    `seen` records (method, path with query, headers, body) of every request.
    """

    def __init__(self, jobs: dict[int, str] | None = None, service_accounts: bool = True) -> None:
        self.jobs = dict(jobs or {})
        self.tokens = {TOKEN}
        self.expired: set[str] = set()
        self.service_accounts = service_accounts
        self.run_s = 0.2
        self.fail_with: tuple[str, str] | None = None
        self.unavailable = 0
        self.hang = False
        self.redirect_to: str | None = None
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.requests: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeSkyApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    # -------------------------------------------------------------- what the real server does

    def _record(self, request_id: str) -> dict[str, Any]:
        request = self.requests[request_id]
        return {
            "request_id": request_id, "name": "sky.jobs.cancel",
            "entrypoint": base64.b64encode(b"pickled sky.jobs.server.core.cancel").decode(),
            "request_body": base64.b64encode(b"pickled JobsCancelBody").decode(),
            "status": request["status"], "created_at": request["created_at"], "user_id": "fcd1e5cf",
            "return_value": "null", "error": json.dumps(request["error"]), "pid": 4242,
            "schedule_type": "short", "user_name": None, "cluster_name": "sky-jobs-controller-fcd1e5cf",
            "status_msg": None, "should_retry": False, "finished_at": request.get("finished_at"),
            "file_mounts_blob_id": None,
        }  # fmt: skip

    def _run_cancel(self, request_id: str, job_ids: list[int]) -> None:
        time.sleep(self.run_s)
        with self._lock:
            request = self.requests[request_id]
            if self.fail_with is not None:
                kind, message = self.fail_with
                request["error"] = {"object": base64.b64encode(b"pickled exception").decode(), "type": kind,
                                    "message": message}  # fmt: skip
                request["status"] = "FAILED"
            else:
                for job_id in job_ids:
                    if self.jobs.get(job_id) in ("PENDING", "STARTING", "RUNNING", "RECOVERING"):
                        self.jobs[job_id] = "CANCELLING"
                request["status"] = "SUCCEEDED"
            request["finished_at"] = time.time()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _answer(self, code: int, body: Any, request_id: str | None = None, **headers: str) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("x-skypilot-request-id", request_id or str(uuid.uuid4()))
                for key, value in headers.items():
                    self.send_header(key.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                auth = self.headers.get("Authorization") or ""
                if not (auth.lower().startswith("bearer ") and auth.split(" ", 1)[1].startswith("sky_")):
                    return True  # no service-account token: not validated here (an auth proxy's job)
                token = auth.split(" ", 1)[1]
                detail = None
                if not fake.service_accounts:
                    detail = "Service account authentication disabled"
                elif token not in fake.tokens:
                    detail = "Invalid or expired service account token"
                elif token in fake.expired:
                    detail = "Service account token has expired"
                if detail is not None:
                    self._answer(401, {"detail": detail}, cache_control="no-store")
                    return False
                return True

            def _seen(self, body: bytes) -> None:
                with fake._lock:
                    fake.seen.append((self.command, self.path, dict(self.headers), body))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                self._seen(body)
                if fake.redirect_to:
                    self._answer(307, None, location=fake.redirect_to)
                    return
                if fake.unavailable:
                    fake.unavailable -= 1
                    self._answer(503, {"detail": "Server is busy"})
                    return
                if not self._authorized():
                    return
                if self.path != "/jobs/cancel":
                    self._answer(404, {"detail": "Not Found"})
                    return
                try:
                    parsed = json.loads(body or b"{}")
                    job_ids = parsed.get("job_ids")
                    assert job_ids is None or (
                        isinstance(job_ids, list) and all(type(j) is int for j in job_ids)
                    )
                except (ValueError, AssertionError, AttributeError):
                    self._answer(422, {"detail": [{"type": "list_type", "loc": ["body", "job_ids"],
                                                   "msg": "Input should be a valid list"}]})  # fmt: skip
                    return
                request_id = str(uuid.uuid4())
                with fake._lock:
                    fake.requests[request_id] = {
                        "status": "PENDING",
                        "created_at": time.time(),
                        "error": None,
                    }
                threading.Thread(
                    target=fake._run_cancel, args=(request_id, job_ids or []), daemon=True
                ).start()
                self._answer(200, None, request_id)

            def do_GET(self) -> None:
                self._seen(b"")
                if not self._authorized():
                    return
                url = urllib.parse.urlsplit(self.path)
                if url.path != "/api/get":
                    self._answer(404, {"detail": "Not Found"})
                    return
                wanted = urllib.parse.parse_qs(url.query).get("request_id", [""])[0]
                matches = [r for r in fake.requests if r.startswith(wanted)] if wanted else []
                if len(matches) != 1:
                    self._answer(404, {"detail": f"Request {wanted!r} not found"})
                    return
                (request_id,) = matches
                while fake.hang or fake.requests[request_id]["status"] in ("PENDING", "RUNNING"):
                    if fake._stop.wait(0.01):
                        return
                record = fake._record(request_id)
                if record["status"] == "FAILED":
                    self._answer(500, {"detail": record})
                else:
                    self._answer(200, record)

        return Handler


@pytest.fixture
def server() -> Iterator[FakeSkyApiServer]:
    with FakeSkyApiServer(jobs={42: "RUNNING", 7: "SUCCEEDED"}) as fake:
        yield fake


def task_env(server: FakeSkyApiServer, **over: str) -> dict[str, str]:
    """What a managed job's task sees with api_server_access (and service accounts on the server)."""
    env = {
        "SKYPILOT_MANAGED_JOB_ID": "42",
        "SKYPILOT_API_SERVER_ENDPOINT": server.url,
        "SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN,
    }
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text and TOKEN[4:] not in text and PASSWORD not in text


def test_cancels_its_own_job_through_the_request_id_flow(
    server: FakeSkyApiServer, capfd: pytest.CaptureFixture[str]
) -> None:
    server.run_s = 0.5  # the answer waits for the cancel to run
    started = time.monotonic()
    ok, why = _sky_self.cancel_own_managed_job(task_env(server), timeout_s=10)
    assert ok, why
    assert time.monotonic() - started >= 0.5
    assert server.jobs == {42: "CANCELLING", 7: "SUCCEEDED"}
    (post, get) = server.seen
    assert (post[0], post[1], json.loads(post[3])) == ("POST", "/jobs/cancel", {"job_ids": [42]})
    assert post[2]["Authorization"] == f"Bearer {TOKEN}" and post[2]["Content-Type"] == "application/json"
    (request_id,) = server.requests
    assert (get[0], get[1]) == ("GET", f"/api/get?request_id={request_id}")
    assert get[2]["Authorization"] == f"Bearer {TOKEN}"
    assert not any(k.lower().startswith("x-skypilot") for _, _, headers, _ in server.seen for k in headers)
    assert why == f"cancel of managed job 42 accepted by {server.url} (request {request_id})"
    out, err = capfd.readouterr()
    assert out == err == ""  # never prints


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"SKYPILOT_MANAGED_JOB_ID": None}, "SKYPILOT_MANAGED_JOB_ID is not set: not a managed job"),
        ({"SKYPILOT_MANAGED_JOB_ID": "4x"}, "SKYPILOT_MANAGED_JOB_ID is '4x': not a managed job"),
        ({"SKYPILOT_API_SERVER_ENDPOINT": None}, "no API server access: SKYPILOT_API_SERVER_ENDPOINT is not set"),
        ({"SKYPILOT_SERVICE_ACCOUNT_TOKEN": ""}, "no API server access: SKYPILOT_SERVICE_ACCOUNT_TOKEN is not set"),
        ({"SKYPILOT_SERVICE_ACCOUNT_TOKEN": "CANARY-7c1e0f"}, "is not a service account token (no sky_ prefix)"),
        ({"SKYPILOT_API_SERVER_ENDPOINT": "ftp://host/x"}, "SKYPILOT_API_SERVER_ENDPOINT is not an http(s) URL"),
        ({"SKYPILOT_API_SERVER_ENDPOINT": "127.0.0.1:46580"}, "SKYPILOT_API_SERVER_ENDPOINT is not an http(s) URL"),
    ],
)  # fmt: skip
def test_without_api_access_nothing_is_sent(
    server: FakeSkyApiServer, over: dict[str, str | None], expected: str
) -> None:
    ok, why = _sky_self.cancel_own_managed_job(task_env(server, **over), timeout_s=5)
    assert not ok and expected in why and server.seen == []
    assert_no_secret(why)


@pytest.mark.parametrize("timeout_s", [0, -1, math.nan, math.inf, "5", True])
def test_timeout_must_be_positive_seconds(server: FakeSkyApiServer, timeout_s: Any) -> None:
    ok, why = _sky_self.cancel_own_managed_job(task_env(server), timeout_s=timeout_s)
    assert not ok and why.startswith("timeout_s must be a number of seconds > 0") and server.seen == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("disabled", "POST /jobs/cancel: HTTP 401 (Service account authentication disabled)"),
        ("revoked", "POST /jobs/cancel: HTTP 401 (Invalid or expired service account token)"),
        ("expired", "POST /jobs/cancel: HTTP 401 (Service account token has expired)"),
        ("failed", "GET /api/get: HTTP 500 (ClusterNotUpError: No in-progress managed jobs.)"),
    ],
)
def test_refusals_and_failed_requests_say_why(server: FakeSkyApiServer, setup: str, expected: str) -> None:
    if setup == "disabled":
        server.service_accounts = False
    elif setup == "revoked":
        server.tokens = set()
    elif setup == "expired":
        server.expired = {TOKEN}
    else:
        server.fail_with = ("ClusterNotUpError", "No in-progress managed jobs.")
    ok, why = _sky_self.cancel_own_managed_job(task_env(server), timeout_s=10)
    assert not ok and why == f"cancel of managed job 42 via {server.url}: {expected}"
    assert server.jobs[42] == "RUNNING"


def test_a_job_that_already_ended_is_a_successful_no_op(server: FakeSkyApiServer) -> None:
    """As SkyPilot's cancel_jobs_by_id: a terminal job is skipped, and the request succeeds."""
    ok, _ = _sky_self.cancel_own_managed_job(task_env(server, SKYPILOT_MANAGED_JOB_ID="7"), timeout_s=10)
    assert ok and server.jobs[7] == "SUCCEEDED"


def test_a_busy_server_is_retried_within_the_deadline(server: FakeSkyApiServer) -> None:
    server.unavailable = 2
    ok, why = _sky_self.cancel_own_managed_job(task_env(server), timeout_s=10)
    assert ok, why
    assert [m for m, *_ in server.seen] == ["POST", "POST", "POST", "GET"]


def test_no_answer_in_time_returns_by_the_deadline(server: FakeSkyApiServer) -> None:
    server.hang = True
    started = time.monotonic()
    ok, why = _sky_self.cancel_own_managed_job(task_env(server), timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert not ok and why.endswith("GET /api/get: no answer in time (the request may still take effect)")
    assert elapsed < 3.0, elapsed


def test_no_server_returns_by_the_deadline() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"SKYPILOT_MANAGED_JOB_ID": "42", "SKYPILOT_API_SERVER_ENDPOINT": f"http://127.0.0.1:{port}",
           "SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN}  # fmt: skip
    started = time.monotonic()
    ok, why = _sky_self.cancel_own_managed_job(env, timeout_s=1.5)
    assert not ok and "POST /jobs/cancel" in why and "ConnectionRefusedError" in why
    assert time.monotonic() - started < 3.5
    assert_no_secret(why)


def test_a_redirect_is_not_followed_so_the_token_stays(server: FakeSkyApiServer) -> None:
    with FakeSkyApiServer(jobs={42: "RUNNING"}) as elsewhere:
        server.redirect_to = f"{elsewhere.url}/jobs/cancel"
        ok, why = _sky_self.cancel_own_managed_job(task_env(server), timeout_s=5)
        assert not ok and "POST /jobs/cancel: HTTP 307" in why
        assert elsewhere.seen == []


def test_endpoint_credentials_are_dropped_and_never_shown(
    server: FakeSkyApiServer, capfd: pytest.CaptureFixture[str]
) -> None:
    """An endpoint may embed basic-auth credentials (http://user:password@host): the token is the
    authentication here; the password is neither sent nor shown, nor is the token."""
    host_port = server.url.removeprefix("http://")
    endpoint = f"http://alice:{PASSWORD}@{host_port}/"
    ok, why = _sky_self.cancel_own_managed_job(task_env(server, SKYPILOT_API_SERVER_ENDPOINT=endpoint), 10)
    assert ok and why.startswith(f"cancel of managed job 42 accepted by {server.url} (request ")
    assert all(h["Authorization"] == f"Bearer {TOKEN}" for _, _, h, _ in server.seen)
    server.tokens = set()  # a refusal's message is scrubbed too
    ok, why = _sky_self.cancel_own_managed_job(task_env(server, SKYPILOT_API_SERVER_ENDPOINT=endpoint), 10)
    assert not ok and "HTTP 401" in why
    assert_no_secret(why)
    out, err = capfd.readouterr()
    assert out == err == ""


def test_proxy_settings_come_from_the_task_env_not_os_environ(
    server: FakeSkyApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # would break the call if it were read
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert _sky_self.cancel_own_managed_job(task_env(server), 10)[0]
    with FakeSkyApiServer() as proxy:  # a proxy named in the task env is used ...
        env = task_env(server, http_proxy=proxy.url)
        ok, _ = _sky_self.cancel_own_managed_job(env, 3)
        assert not ok and proxy.seen and proxy.seen[0][1] == f"{server.url}/jobs/cancel"
        seen = len(server.seen)  # ... unless no_proxy names the host
        assert _sky_self.cancel_own_managed_job({**env, "no_proxy": "127.0.0.1"}, 10)[0]
        assert len(server.seen) == seen + 2 and len(proxy.seen) == 1


def test_never_raises_and_never_prints_in_a_real_process(server: FakeSkyApiServer, tmp_path: Path) -> None:
    """The node-side use: a fresh interpreter (-I) that imports only the standard library, the
    task's env in os.environ; stdout and stderr stay empty; the canary token appears nowhere."""
    remote = Path(_sky_self.__file__).parent
    result = tmp_path / "result.json"
    probe = (
        f"import json, os, sys\nsys.path.insert(0, {str(remote)!r})\nimport _sky_self\n"
        "assert not any(m.split('.')[0] in ('requests', 'sky', 'pydantic') for m in sys.modules)\n"
        "results = [_sky_self.cancel_own_managed_job(os.environ, 5),\n"
        "           _sky_self.cancel_own_managed_job({**os.environ, 'SKYPILOT_MANAGED_JOB_ID': 'x'}, 5),\n"
        "           _sky_self.cancel_own_managed_job(None, 5)]\n"
        "open(os.environ['RESULT'], 'w').write(json.dumps(results))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "RESULT": str(result), **task_env(server)}
    proc = subprocess.run(
        [sys.executable, "-I", "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    results = json.loads(result.read_text())
    assert [r[0] for r in results] == [True, False, False]
    assert results[2][1].startswith("unexpected error: AttributeError")
    assert_no_secret(json.dumps(results))


# --------------------------------------------------------------------------------------- opt-in

MINT = """
import sys
from sky import global_user_state, models
from sky.jobs.server import core
from sky.utils import common_utils

user = common_utils.get_user_hash()
global_user_state.add_or_update_user(models.User(id=user, name="skyops-e2e"))
# The code path `sky jobs launch` uses for a task with api_server_access (sky/jobs/server/core.py).
token, _ = core._create_job_api_token(creator_user_id=user, job_name="skyops-e2e", dag_uuid="0123456789ab")
sys.stdout.write(token)
"""


@pytest.mark.skipif(
    os.environ.get("SKYOPS_SKY_E2E") != "1", reason="opt-in: SKYOPS_SKY_E2E=1 (real API server)"
)
def test_against_a_real_api_server(tmp_path: Path) -> None:
    """A real local SkyPilot 0.14.1 API server with ENABLE_SERVICE_ACCOUNTS=true and a token minted
    by SkyPilot's own managed-job code: the token is accepted, the cancel request runs and fails only
    because this server has no jobs controller (no cloud here); a wrong token is refused (401)."""
    home = tmp_path / "home"
    (home / ".sky").mkdir(parents=True)
    (home / ".sky" / "version_cache.json").write_text(
        json.dumps({"release_version": None, "cached_at": time.time()})
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    drop = ("SKYOPS_", "SKYPILOT_", "SKY_", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(HOME=str(home), SKY_RUNTIME_DIR=str(home), SKYPILOT_API_SERVER_LOCAL_PORT=str(port),
               SKYPILOT_DISABLE_USAGE_COLLECTION="1", ENABLE_SERVICE_ACCOUNTS="true", NO_PROXY="*")  # fmt: skip
    sky_cli = str(Path(sys.executable).parent / "sky")
    start = subprocess.run([sky_cli, "api", "start"], env=env, capture_output=True, text=True, timeout=300)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        mint = subprocess.run(
            [sys.executable, "-c", MINT], env=env, capture_output=True, text=True, timeout=120
        )
        assert mint.returncode == 0 and mint.stdout.startswith("sky_"), mint.stderr[-2000:]
        task = {"SKYPILOT_MANAGED_JOB_ID": "424242", "SKYPILOT_API_SERVER_ENDPOINT": f"http://127.0.0.1:{port}",
                "SKYPILOT_SERVICE_ACCOUNT_TOKEN": mint.stdout}  # fmt: skip
        ok, why = _sky_self.cancel_own_managed_job(task, timeout_s=180)
        assert not ok and why.endswith(
            "GET /api/get: HTTP 500 (ClusterNotUpError: No in-progress managed jobs.)"
        ), why
        assert mint.stdout not in why
        wrong = {**task, "SKYPILOT_SERVICE_ACCOUNT_TOKEN": mint.stdout[:-4] + "AAAA"}
        ok, why = _sky_self.cancel_own_managed_job(wrong, timeout_s=60)
        assert not ok and why.endswith(
            "POST /jobs/cancel: HTTP 401 (Invalid or expired service account token)"
        ), why
    finally:
        stop = subprocess.run([sky_cli, "api", "stop"], env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr[-2000:]
