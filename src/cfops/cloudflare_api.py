"""Reads of a Worker's live state straight from the Cloudflare API over httpx (no Node process).

The same token, account and ``CLOUDFLARE_API_BASE_URL`` wrangler uses, so the fake API in tests serves
both. One shared client per process (``client``) with an explicit Timeout; tests may pass a transport.
Every read is repeated on a transient failure (``cfops.retry``). Writes (uploads, splits, rollbacks,
secrets) stay on wrangler.
"""

from __future__ import annotations

import atexit
import email.utils
import math
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import httpx

from cfops import cloudflare, output, retry
from cfops.cloudflare import ACCOUNT_ID, API_BASE_URL, API_TOKEN, NOT_FOUND_CODE, advice_for
from cfops.config import Settings
from cfops.errors import CfopsError
from cfops.wrangler import require_credentials

DEFAULT_BASE_URL = cloudflare.DEFAULT_API_BASE_URL
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ApiFailed(CfopsError):
    """The API answered with an error that another attempt would meet too (a 4xx). Exit 1."""

    def __init__(self, message: str, *, status: int, code: int | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# ------------------------------------------------------------------------------------- what it reads


@dataclass(frozen=True)
class Deployment:
    id: str
    created_on: str
    traffic: dict[str, float]  # version id -> percentage
    message: str = ""
    source: str = ""

    @property
    def primary_version(self) -> str | None:
        """The version serving most of the traffic (the only one, outside a gradual rollout)."""
        return max(self.traffic, key=lambda v: self.traffic[v]) if self.traffic else None

    @property
    def stable_version(self) -> str | None:
        return next((v for v, p in self.traffic.items() if p == 100), None)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Deployment:
        annotations = data.get("annotations") or {}
        return cls(
            id=str(data.get("id", "")),
            created_on=str(data.get("created_on", "")),
            traffic={str(v["version_id"]): float(v["percentage"]) for v in data.get("versions", [])},
            message=str(annotations.get("workers/message") or ""),
            source=str(annotations.get("workers/triggered_by") or data.get("source") or ""),
        )


@dataclass(frozen=True)
class VersionInfo:
    id: str
    number: int | None
    created_on: str
    source: str
    message: str
    tag: str

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> VersionInfo:
        metadata = data.get("metadata") or {}
        annotations = data.get("annotations") or {}
        number = data.get("number")
        return cls(
            id=str(data.get("id", "")),
            number=number if isinstance(number, int) else None,
            created_on=str(metadata.get("created_on", "")),
            source=str(annotations.get("workers/triggered_by") or metadata.get("source") or ""),
            message=str(annotations.get("workers/message") or ""),
            tag=str(annotations.get("workers/tag") or ""),
        )


# -------------------------------------------------------------------------------------------- client


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The wait a 429/503 asks for: ``Retry-After`` in seconds or as an HTTP date (None if absent)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None  # neither form: the retry policy's own backoff applies
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class CloudflareApi:
    """GETs under ``/accounts/<account>/workers/scripts/<name>``, unwrapped from the API's envelope."""

    def __init__(
        self,
        *,
        token: str,
        account_id: str,
        base_url: str = DEFAULT_BASE_URL,
        policy: retry.RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.account_id = account_id
        self.policy = policy or retry.RetryPolicy()
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "cfops"},
            timeout=TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def _get_once(self, path: str, what: str, params: dict[str, str] | None) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.TransportError as exc:
            raise retry.TransientError(f"{type(exc).__name__} ({exc or 'connection lost'})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        errors = body.get("errors") if isinstance(body, dict) else None
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        code = first.get("code") if isinstance(first.get("code"), int) else None
        if response.status_code == 429 or response.status_code >= 500:
            raise retry.TransientError(
                f"HTTP {response.status_code}" + (f" (Cloudflare error {code})" if code else ""),
                retry_after=retry_after_seconds(response),
            )
        if response.is_success and isinstance(body, dict) and body.get("success", True):
            return body.get("result")
        message = output.redact(str(first.get("message") or response.reason_phrase or "no message"))
        text = f"{what} failed (HTTP {response.status_code}"
        text += f", Cloudflare error {code}): {message}" if code is not None else f"): {message}"
        advice = advice_for(code)
        if advice:
            text += f" — {advice}"
        raise ApiFailed(text, status=response.status_code, code=code)

    def get(
        self,
        path: str,
        what: str,
        params: dict[str, str] | None = None,
        policy: retry.RetryPolicy | None = None,
    ) -> Any:
        try:
            return retry.call(what, lambda: self._get_once(path, what, params), policy or self.policy)
        except retry.TransientError as exc:
            raise retry.TransientError(f"{what} failed: {exc}, also on every retry") from None

    def account_ids(
        self, *, per_page: int = 50, max_pages: int = 20, policy: retry.RetryPolicy | None = None
    ) -> list[str]:
        """The accounts this token can act on (``GET /accounts``: what ``wrangler whoami`` lists; unlike
        ``GET /accounts/<id>`` it needs no Account Settings permission, which a deploy token may lack).
        Page by page (50 is the API's largest page) until this client's account shows up."""
        found: list[str] = []
        for page in range(1, max_pages + 1):
            params = {"page": str(page), "per_page": str(per_page)}
            items = self.get("/accounts", "listing the token's accounts", params, policy) or []
            found += [str(a["id"]) for a in items if isinstance(a, dict) and a.get("id")]
            if self.account_id in found or len(items) < per_page:
                break
        return found

    def _script(self, name: str) -> str:
        return f"/accounts/{self.account_id}/workers/scripts/{name}"

    def deployments(self, name: str) -> list[Deployment]:
        """The Worker's recent deployments, oldest first (empty when it does not exist yet)."""
        try:
            data = self.get(f"{self._script(name)}/deployments", f"reading the deployments of {name}")
        except ApiFailed as exc:
            if exc.code == NOT_FOUND_CODE:
                return []
            raise
        items = (data or {}).get("deployments") or []
        return sorted((Deployment.from_api(d) for d in items), key=lambda d: d.created_on)

    def versions(self, name: str) -> list[VersionInfo]:
        """The Worker's recent versions, newest first (empty when it does not exist yet)."""
        try:
            # As wrangler asks: the versions that can be deployed, newest first.
            path, what = f"{self._script(name)}/versions", f"reading the versions of {name}"
            data = self.get(path, what, {"deployable": "true"})
        except ApiFailed as exc:
            if exc.code == NOT_FOUND_CODE:
                return []
            raise
        items = (data or {}).get("items") or []
        return sorted((VersionInfo.from_api(v) for v in items), key=lambda v: v.created_on, reverse=True)

    def version(self, name: str, version_id: str) -> VersionInfo:
        path = f"{self._script(name)}/versions/{version_id}"
        data = self.get(path, f"reading version {version_id} of {name}")
        return VersionInfo.from_api(data or {})


def policy(settings: Settings) -> retry.RetryPolicy:
    return retry.RetryPolicy(
        attempts=settings.deploy.retry_attempts, max_seconds=settings.deploy.retry_max_seconds
    )


_clients: dict[tuple[str, str, str], CloudflareApi] = {}


def client(settings: Settings, what: str = "reading the live state") -> CloudflareApi:
    """The process's client for these credentials (exit 2 without them)."""
    require_credentials(settings, what)
    token = settings.env[API_TOKEN].strip()
    account = settings.env[ACCOUNT_ID].strip()
    base = settings.env.get(API_BASE_URL, "").strip() or DEFAULT_BASE_URL
    output.add_secrets([token])
    key = (base, account, token)
    if key not in _clients:
        _clients[key] = CloudflareApi(token=token, account_id=account, base_url=base, policy=policy(settings))
    return _clients[key]


@atexit.register
def _close_clients() -> None:
    for api in _clients.values():
        api.close()
    _clients.clear()
