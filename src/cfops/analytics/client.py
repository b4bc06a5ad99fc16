"""The Analytics Engine SQL API over httpx: ``POST {api}/accounts/<id>/analytics_engine/sql``, the query
text as the body, the API token as a bearer token.

Transient failures (network errors, 429, 5xx) are retried through ``cfops.retry`` (bounded, with backoff,
honouring Retry-After); what is left is ``AnalyticsUnavailable``. A refused token is
``AnalyticsAccessError`` (one line naming the missing permission), a refused query
``AnalyticsQueryError``. The transport is injectable; the integration tests talk to the fake API's real
HTTP server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from cfops import cloudflare, output, retry
from cfops.cloudflare import ACCOUNT_ID, API_BASE_URL, API_TOKEN, AUTH_CODES, CREDENTIALS
from cfops.cloudflare_api import retry_after_seconds
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
        # The SQL API is read-only, so every transient failure may be retried: the shared policy
        # (bounded attempts and time, exponential backoff with jitter, Retry-After honoured).
        self._policy = retry.RetryPolicy(
            attempts=max(1, settings.analytics.attempts),
            max_seconds=settings.deploy.retry_max_seconds,
            initial_wait=1.0,
        )
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
        attempts = 0

        def once() -> httpx.Response:
            nonlocal attempts
            attempts += 1
            return self._post(text)

        try:
            response = retry.call("the Analytics Engine SQL API", once, self._policy, sleep=self._sleep)
        except retry.TransientError as exc:
            raise AnalyticsUnavailable(
                f"the Analytics Engine SQL API did not answer after {attempts} attempts "
                f"({output.redact(str(exc))})"
            ) from None
        return self._answer(response, attempts)

    def _post(self, text: str) -> httpx.Response:
        """One attempt: the answer, or the error that says whether another attempt may help."""
        try:
            response = self._client.post(self.url, content=text.encode())
        except httpx.HTTPError as exc:
            raise retry.TransientError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code < 400:
            return response
        if _auth_refused(response):
            raise AnalyticsAccessError(
                f"the SQL API refused the token ({_error_text(response)}): {API_TOKEN} "
                f"needs the permission {PERMISSION} on the account {ACCOUNT_ID} names"
            )
        if response.status_code != 429 and response.status_code < 500:
            raise AnalyticsQueryError(f"the SQL API refused the query: {_error_text(response)}")
        raise retry.TransientError(
            f"HTTP {response.status_code}: {_error_text(response)}",
            retry_after=retry_after_seconds(response),
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
