"""The Analytics Engine SQL API over httpx: ``POST {api}/accounts/<id>/analytics_engine/sql``, the query
text as the body, the API token as a bearer token.

Transient failures (network errors, 429, 5xx) are retried a bounded number of times with backoff; what
is left is ``AnalyticsUnavailable``. A refused token is ``AnalyticsAccessError`` (one line naming the
missing permission), a refused query ``AnalyticsQueryError``. The transport is injectable for tests of
the retry policy; the integration tests talk to the fake API's real HTTP server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from cfops import cloudflare, output
from cfops.cloudflare import ACCOUNT_ID, API_BASE_URL, API_TOKEN, AUTH_CODES, CREDENTIALS
from cfops.config import Settings
from cfops.errors import CfopsError, CheckFailed, UsageError

PERMISSION = cloudflare.ANALYTICS_PERMISSION


class AnalyticsAccessError(CheckFailed):
    """The token may not read Analytics Engine (or the account id is not its account)."""


class AnalyticsQueryError(CheckFailed):
    """The SQL API refused the query (bad SQL, unknown dataset)."""


class AnalyticsUnavailable(CfopsError):
    """The SQL API did not answer after the bounded retries."""


@dataclass(frozen=True)
class Answer:
    data: dict[str, Any]
    # The API's clock (its Date header), for the skew note: windows never depend on the runner's clock.
    server_time: float | None
    attempts: int


def _error_text(response: httpx.Response) -> str:
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text.splitlines()[0][:300] if text else f"HTTP {response.status_code}"
    if isinstance(body, dict):
        errors = body.get("errors") or []
        if errors and isinstance(errors[0], dict):
            return f"{errors[0].get('message', '')} (code {errors[0].get('code')})".strip()
        if "error" in body:
            return str(body["error"])[:300]
    return text[:300]


def _auth_refused(response: httpx.Response) -> bool:
    if response.status_code in (401, 403):
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    errors = body.get("errors") if isinstance(body, dict) else None
    return isinstance(errors, list) and any(
        isinstance(e, dict) and e.get("code") in AUTH_CODES for e in errors
    )


class SqlClient:
    """One account's SQL API. Use ``query(text)``; ``close()`` (or ``with``) when done."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        missing = [name for name in CREDENTIALS if not settings.env.get(name, "").strip()]
        if missing:
            raise UsageError(
                f"{' and '.join(missing)} not set: the analysis reads the account's Analytics Engine "
                f"(the token needs {PERMISSION})"
            )
        env = settings.env
        base = (env.get(API_BASE_URL) or cloudflare.DEFAULT_API_BASE_URL).rstrip("/")
        self.url = f"{base}/accounts/{env[ACCOUNT_ID].strip()}/analytics_engine/sql"
        token = env[API_TOKEN].strip()
        output.add_secrets([token])
        self.attempts = max(1, settings.analytics.attempts)
        self._sleep = sleep
        self._client = httpx.Client(
            headers={"authorization": f"Bearer {token}", "content-type": "text/plain"},
            timeout=httpx.Timeout(settings.analytics.timeout_seconds, connect=10.0),
            transport=transport,
            trust_env=True,
        )

    def __enter__(self) -> SqlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def query(self, text: str) -> Answer:
        # TODO(i12): switch to the shared Cloudflare API client's retry helper once it is on main; the
        # policy is the same (bounded attempts, exponential backoff, 5xx/429/network only).
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.post(self.url, content=text.encode())
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return self._answer(response, attempt)
                if _auth_refused(response):
                    raise AnalyticsAccessError(
                        f"the SQL API refused the token ({_error_text(response)}): {API_TOKEN} "
                        f"needs the permission {PERMISSION} on the account {ACCOUNT_ID} names"
                    )
                if response.status_code != 429 and response.status_code < 500:
                    raise AnalyticsQueryError(f"the SQL API refused the query: {_error_text(response)}")
                last = f"HTTP {response.status_code}: {_error_text(response)}"
            if attempt < self.attempts:
                self._sleep(min(2.0 ** (attempt - 1), 8.0))
        raise AnalyticsUnavailable(
            f"the Analytics Engine SQL API did not answer after {self.attempts} attempts "
            f"({output.redact(last)})"
        )

    @staticmethod
    def _answer(response: httpx.Response, attempt: int) -> Answer:
        try:
            data = response.json()
        except ValueError:
            raise AnalyticsQueryError("the SQL API answered something other than JSON") from None
        if not isinstance(data, dict):
            raise AnalyticsQueryError("the SQL API answered JSON that is not an object")
        return Answer(data=data, server_time=_server_time(response.headers), attempts=attempt)


def _server_time(headers: Mapping[str, str]) -> float | None:
    try:
        return parsedate_to_datetime(headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
