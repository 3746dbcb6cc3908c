"""Node side: a managed job ends itself, by cancelling its own managed job through the API server.

Why: SkyPilot 0.14.1 has no exit code that ends a managed job without a restart. A non-zero exit
that is not in `recover_on_exit_codes` counts against `max_restarts_on_errors` and restarts the job
while the count allows (sky/jobs/recovery_strategy.py `StrategyExecutor.should_restart_on_failure`),
so a crash loop the supervisor has already diagnosed (exit 87) still costs the remaining restarts,
each a full provisioning cycle. A cancel ends the job at once (CANCELLED, no restart). Findings and
line references: docs/decisions/sky-self-cancel-findings.md.

What a task gets (SkyPilot 0.14.1, `api_server_access`, on by default, sky/task.py):
- `SKYPILOT_API_SERVER_ENDPOINT` (sky/skylet/constants.py SKY_API_SERVER_URL_ENV_VAR): set by the
  launching client (sky/jobs/client/sdk.py launch) unless its API server is a local one;
- `SKYPILOT_SERVICE_ACCOUNT_TOKEN` (SERVICE_ACCOUNT_TOKEN_ENV_VAR), a `sky_...` token of the
  launching user, valid 3 days and not renewed (sky/jobs/constants.py MANAGED_JOB_TOKEN_TTL_DAYS):
  a secret set by the API server (sky/jobs/server/core.py launch) only when it runs with
  ENABLE_SERVICE_ACCOUNTS=true;
- `SKYPILOT_MANAGED_JOB_ID`: the managed job's id.

The call is what `sky.jobs.cancel(job_ids=[id])` + `sky.get(...)` send (sky/jobs/client/sdk.py
cancel, sky/client/sdk.py get): `POST {endpoint}/jobs/cancel` with the JSON body `{"job_ids": [id]}`
(sky/server/requests/payloads.py JobsCancelBody; other fields default) and `Authorization: Bearer
<token>` (sky/client/service_account_auth.py); the server schedules the cancel and answers at once
with the request id in the `X-Skypilot-Request-ID` header (sky/server/server.py RequestIDMiddleware).
`GET {endpoint}/api/get?request_id=<id>` then waits for the request: 200 with the request record
(`status` SUCCEEDED) when it ran, 500 with `{"detail": record}` whose `error` is a JSON text with
`type` and `message` when it failed (sky/server/server.py api_get). No version headers are sent:
the server then skips its version check (sky/server/server.py APIVersionMiddleware).

Only the standard library: this runs on the node, before or instead of anything else.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

ENDPOINT_ENV = "SKYPILOT_API_SERVER_ENDPOINT"
TOKEN_ENV = "SKYPILOT_SERVICE_ACCOUNT_TOKEN"
JOB_ID_ENV = "SKYPILOT_MANAGED_JOB_ID"
#: A service account token starts with this (sky/client/service_account_auth.py).
TOKEN_PREFIX = "sky_"
CANCEL_PATH = "/jobs/cancel"
GET_PATH = "/api/get"
REQUEST_ID_HEADER = "X-Skypilot-Request-ID"
#: Answers worth a retry within the deadline: the server or a proxy in front of it is busy or
#: restarting (the SDK retries these too: sky/server/rest.py).
RETRY_STATUSES = frozenset({502, 503, 504})
#: Seconds between retries: doubled from the first value up to the last.
RETRY_BACKOFF_S = (0.5, 4.0)
REDACTED = "<redacted>"
USER_AGENT = "skyops-sky-self/1"


class _Refused(Exception):
    """An answer (or none) that ends the call: the message says why; the caller scrubs secrets."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: urllib would send the Authorization header along, to any host."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def cancel_own_managed_job(env: Mapping[str, str], timeout_s: float) -> tuple[bool, str]:
    """Cancel managed job `SKYPILOT_MANAGED_JOB_ID` through the API server the task has access to.

    `env`: the task's environment (see the module docstring for the keys read). `timeout_s`: the
    whole call's limit in seconds, retries and the wait for the cancel request included.

    Returns (True, what happened) once the API server has run the cancel request (its status is
    SUCCEEDED); SkyPilot then tears the job's nodes down and records it CANCELLED (the request also
    succeeds when the job had already ended or is outside the server's active workspace: the
    caller learns the effect from the teardown). Returns (False, why) otherwise: not a managed job,
    no API server access (no endpoint or token in `env`), a refusal (401: token expired, revoked or
    service accounts off), no answer within `timeout_s` (the cancel may still take effect), or a
    failed request. Never raises, never prints; the token and any password in the endpoint appear
    in no message.
    """
    secrets: list[str] = []
    try:
        token = str(env.get(TOKEN_ENV) or "").strip()
        endpoint = str(env.get(ENDPOINT_ENV) or "").strip()
        secrets += [token, *_url_password(endpoint)]
        return _cancel(env, token, endpoint, timeout_s, secrets)
    except Exception as exc:  # never raise: the caller falls back to its exit code
        return False, _scrub(f"unexpected error: {type(exc).__name__}: {exc}", secrets)


def _cancel(
    env: Mapping[str, str], token: str, endpoint: str, timeout_s: float, secrets: list[str]
) -> tuple[bool, str]:
    job_text = str(env.get(JOB_ID_ENV) or "").strip()
    why = _unusable(job_text, token, endpoint, timeout_s)
    if why is not None:
        return False, why
    job_id = int(job_text)
    base = _base_url(endpoint)
    if base is None:
        return False, f"{ENDPOINT_ENV} is not an http(s) URL with a host"
    shown = base
    deadline = time.monotonic() + float(timeout_s)
    opener = _opener(env, base)
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }
    body = json.dumps({"job_ids": [job_id]}).encode()
    try:
        status, answer_headers, _ = _call(
            opener,
            "POST",
            base + CANCEL_PATH,
            {**headers, "Content-Type": "application/json"},
            body,
            deadline,
        )
        request_id = answer_headers.get(REQUEST_ID_HEADER)
        if not request_id:
            raise _Refused(f"POST {CANCEL_PATH} answered {status} without a {REQUEST_ID_HEADER} header")
        query = urllib.parse.urlencode({"request_id": request_id})
        _, _, payload = _call(opener, "GET", f"{base}{GET_PATH}?{query}", headers, None, deadline)
    except _Refused as exc:
        return False, _scrub(f"cancel of managed job {job_id} via {shown}: {exc}", secrets)
    record = _json(payload)
    state = record.get("status") if isinstance(record, dict) else None
    if state != "SUCCEEDED":
        return False, _scrub(
            f"cancel request {request_id} for managed job {job_id} ended {state or 'without a status'}",
            secrets,
        )
    return True, f"cancel of managed job {job_id} accepted by {shown} (request {request_id})"


def _unusable(job_text: str, token: str, endpoint: str, timeout_s: float) -> str | None:
    """Why no cancel can be asked for with these inputs (not a managed job, no API server access, a
    bad `timeout_s`), or None. `job_text` is JOB_ID_ENV's value, `token` and `endpoint` stripped."""
    if not job_text.isdigit():
        return f"{JOB_ID_ENV} is {'not set' if not job_text else repr(job_text)}: not a managed job"
    if not endpoint:
        return (
            f"no API server access: {ENDPOINT_ENV} is not set (the task has api_server_access: false,"
            " or it was launched through an API server local to the launching machine)"
        )
    if not token:
        return (
            f"no API server access: {TOKEN_ENV} is not set (the API server does not run with"
            " ENABLE_SERVICE_ACCOUNTS=true, or the task has api_server_access: false)"
        )
    if not token.startswith(TOKEN_PREFIX):
        return f"no API server access: {TOKEN_ENV} is not a service account token (no {TOKEN_PREFIX} prefix)"
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not math.isfinite(timeout_s)
        or timeout_s <= 0
    ):
        return f"timeout_s must be a number of seconds > 0, got {timeout_s!r}"
    return None


def _call(
    opener: urllib.request.OpenerDirector,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
) -> tuple[int, Any, bytes]:
    """One HTTP exchange, retried on connection errors and RETRY_STATUSES until `deadline`
    (time.monotonic()). Returns (status, headers, body) of a 2xx answer; raises _Refused otherwise."""
    path = urllib.parse.urlsplit(url).path
    delay = RETRY_BACKOFF_S[0]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Refused(f"{method} {path}: no answer in time (the request may still take effect)")
        request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
        try:
            with opener.open(request, timeout=left) as answer:
                return answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            data = exc.read() if exc.fp is not None else b""
            if exc.code not in RETRY_STATUSES:
                raise _Refused(f"{method} {path}: HTTP {exc.code}{_detail(data, exc.code)}") from None
            why = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, TLS, socket timeout
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError) or isinstance(exc, TimeoutError):
                raise _Refused(
                    f"{method} {path}: no answer in time (the request may still take effect)"
                ) from None
            why = f"{type(reason).__name__}: {reason}"
        if deadline - time.monotonic() <= delay:
            raise _Refused(f"{method} {path}: {why} until the deadline")
        time.sleep(delay)
        delay = min(delay * 2, RETRY_BACKOFF_S[1])


def _detail(data: bytes, code: int) -> str:
    """`: <what the server said>` for an error answer: FastAPI's `detail` (a text, validation
    errors, or for /api/get a request record whose `error` names the exception), one line, short."""
    body = _json(data)
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict):  # /api/get 500: the request record
        error = _json(detail.get("error") or "null")
        if isinstance(error, dict):
            detail = f"{error.get('type') or 'error'}: {error.get('message') or ''}".rstrip(": ")
        else:
            detail = f"request {detail.get('status') or 'failed'}"
    elif isinstance(body, dict) and "message" in body:  # a version mismatch (400)
        detail = body.get("message")
    if detail is None:
        detail = data.decode(errors="replace") if data else ""
    text = " ".join(str(detail).split())
    if code == 401 and not text:
        text = "unauthorized"
    return f" ({text[:300]})" if text else ""


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, TypeError):
        return None


def _url_password(url: str) -> list[str]:
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def _base_url(endpoint: str) -> str | None:
    """The URL requests go to (and messages show): scheme, host, port and path of `endpoint` without
    user and password and without a trailing slash; None when it is not an http(s) URL with a host.
    Credentials in the URL are dropped: the service account token is the authentication."""
    try:
        parts = urllib.parse.urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))


def _opener(env: Mapping[str, str], base: str) -> urllib.request.OpenerDirector:
    """An opener that never follows redirects and takes its proxy from `env` (http_proxy,
    https_proxy, no_proxy, lower case first, as urllib reads them), not from os.environ."""
    proxies = {}
    for scheme in ("http", "https", "no"):
        value = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
        if value:
            proxies[scheme] = value
    host = urllib.parse.urlsplit(base).hostname or ""
    # urllib.request.proxy_bypass_environment (CPython's no_proxy rule for a given proxies dict) is
    # not in typeshed's stubs: looked up by name.
    bypass = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009
    if "no" in proxies and bypass(host, proxies):
        proxies = {}
    proxies.pop("no", None)
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies), _NoRedirect())


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return " ".join(text.split())
