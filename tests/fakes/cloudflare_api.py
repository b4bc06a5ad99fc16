"""A local fake of the Cloudflare API, as far as wrangler (4.164; 4.86 before it) uses it for deploys,
versions, secrets and rollbacks. The real wrangler CLI is pointed at it with ``CLOUDFLARE_API_BASE_URL``
(see ``wrangler_env``).

It is a real HTTP server on 127.0.0.1 (``http.server`` in a thread) that keeps consistent state — scripts,
versions (with their modules and bindings, secret values included), deployments with traffic
percentages, script settings, the workers.dev subdomain — so that a pipeline can upload, split, promote
and roll back against it. Every request is recorded (method, path, query, headers, body). A request can be
told to fail with a Cloudflare error code (``fail``), and an upload larger than ``script_size_limit`` is
refused with 10027 like the real API. Anything sent to another host through the proxy variables that
``wrangler_env`` sets lands here too and is kept in ``stray`` (and refused), so a test can prove that
wrangler never tried a real Cloudflare host.

Endpoints (all under ``/client/v4``; ``{s}`` = ``/accounts/{account}/workers/scripts/{name}``):

    GET    /accounts/{account}/workers/services/{name}      service metadata (10007 when unknown)
    GET    /accounts/{account}/workers/subdomain            the account's workers.dev subdomain
    PUT    {s}                                              upload + deploy at 100% (first deploy)
    POST   {s}/versions                                     upload a version (not deployed)
    GET    {s}/versions                                     versions, newest first (``items``)
    GET    {s}/versions/{id}                                one version
    GET    {s}/deployments                                  deployments, newest first
    POST   {s}/deployments                                  deploy 1-2 versions by percentage
    GET    {s}/settings                                     bindings of the latest version (no secret text)
    PATCH  {s}/settings                                     bindings update (``wrangler secret bulk``):
                                                            new version deployed at 100%, or 10215 when the
                                                            latest version is not the one fully deployed
    GET    {s}/script-settings, PATCH {s}/script-settings  non-versioned settings
    GET    {s}/content/v2?version={id}                      a version's modules (multipart, cf-entrypoint)
    GET    {s}/subdomain, POST {s}/subdomain                workers.dev / preview URL switches
    GET    {s}/secrets                                      secret names of the latest version
    PUT    {s}/secrets, DELETE {s}/secrets/{name}           one secret (``wrangler secret put/delete``): a
                                                            new version from the latest, deployed at 100%,
                                                            or 10214 when the latest is not fully deployed
    PATCH  {s}/secrets-bulk                                 `wrangler secret bulk` (4.164): merge-patch of
                                                            secrets, same rule as PATCH {s}/settings
    GET    /accounts/{account}/workers/workers/{name}       the Worker (4.164 reads its workers.dev switches
                                                            here; the same state as {s}/subdomain)
    PATCH  /accounts/{account}/workers/workers/{name}       merge-patch of subdomain / previews_base_config
    POST   /accounts/{account}/workers/workers              create a Worker (no version yet)
    PATCH  /accounts/{account}/workers/workers/{name}/versions/latest
                                                            `wrangler versions secret bulk` (4.164): a new
                                                            version = the LATEST one + the env merge-patch,
                                                            not deployed (10222 when there is no version)
    GET    /user, /memberships, /accounts, /user/tokens/verify   what ``wrangler whoami`` reads after 10000
    POST   /accounts/{account}/analytics_engine/sql         Workers Analytics Engine SQL (tests/fakes/
                                                            analytics_engine.py: data points, evaluator)
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.analytics_engine import SQL_ERROR_STATUS, FakeAnalyticsEngine, SqlError

PREFIX = "/client/v4"
WORKER_NOT_FOUND = 10007
SCRIPT_TOO_LARGE = 10027
VERSION_NOT_DEPLOYED = 10215
SECRET_NOT_DEPLOYED_SINGLE = 10214
AUTH_ERROR = 10000
VALIDATION = 10021
NO_VERSIONS = 10222


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes

    def text(self) -> str:
        return self.data.decode()


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str  # without /client/v4 and without the query
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, Part]:
        return parse_multipart(self.headers.get("content-type", ""), self.body)

    def metadata(self) -> dict[str, Any]:
        """The ``metadata`` part of a Worker upload."""
        data: dict[str, Any] = json.loads(self.form()["metadata"].data)
        return data


@dataclass
class Failure:
    method: str
    pattern: re.Pattern[str]
    code: int
    message: str
    status: int
    times: int
    # Transient faults (``inject``): a Retry-After header; "drop" closes the connection without an
    # answer; "lost" carries the request out and then drops the connection (the answer is lost).
    retry_after: float | None = None
    mode: Literal["answer", "drop", "lost"] = "answer"


class _Drop(Exception):
    """Close the connection without answering (after ``then`` ran, when it is set)."""

    def __init__(self, then: Callable[[], Any] | None = None) -> None:
        super().__init__("dropped")
        self.then = then


@dataclass
class Version:
    id: str
    number: int
    created_on: str
    main_module: str
    modules: dict[str, Part]
    bindings: list[dict[str, Any]]  # secret_text bindings keep their "text": the fake is the vault
    compatibility_date: str | None
    compatibility_flags: list[str]
    annotations: dict[str, str]
    etag: str

    def public_bindings(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in b.items() if not (b.get("type") == "secret_text" and k == "text")}
            for b in self.bindings
        ]

    def secrets(self) -> dict[str, str]:
        return {b["name"]: b["text"] for b in self.bindings if b.get("type") == "secret_text"}

    def vars(self) -> dict[str, Any]:
        return {b["name"]: b.get("text") for b in self.bindings if b.get("type") == "plain_text"}


@dataclass
class Deployment:
    id: str
    created_on: str
    versions: list[dict[str, Any]]  # [{"version_id", "percentage"}]
    annotations: dict[str, str]
    source: str = "wrangler"

    def traffic(self) -> dict[str, float]:
        return {v["version_id"]: v["percentage"] for v in self.versions}


@dataclass
class Script:
    name: str
    tag: str
    created_on: str
    versions: list[Version] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    workers_dev: bool = False
    previews_enabled: bool = False
    previews_base_config: dict[str, Any] = field(default_factory=dict)
    script_settings: dict[str, Any] = field(
        default_factory=lambda: {"logpush": False, "tail_consumers": None, "observability": None, "tags": []}
    )

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def version(self, version_id: str) -> Version | None:
        return next((v for v in self.versions if v.id == version_id), None)

    def current(self) -> Deployment | None:
        return self.deployments[-1] if self.deployments else None


class ApiError(Exception):
    def __init__(
        self, code: int, message: str, status: int = 400, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


def send_answer(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    """One whole HTTP answer with its content-length (the fakes' servers all answer this way)."""
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _error_answer(exc: ApiError) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps(
        {
            "success": False,
            "errors": [{"code": exc.code, "message": exc.message}],
            "messages": [],
            "result": None,
        }
    ).encode()
    headers = {"content-type": "application/json"}
    if exc.retry_after is not None:
        headers["retry-after"] = f"{exc.retry_after:g}"
    return exc.status, headers, body


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    if not content_type.startswith("multipart/"):
        raise ValueError(f"not a multipart body: {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts: dict[str, Part] = {}
    for sub in message.iter_parts():
        name = sub.get_param("name", header="content-disposition")
        payload = sub.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        parts[name] = Part(
            name=name, filename=sub.get_filename(), content_type=sub.get_content_type(), data=payload
        )
    return parts


def _multipart(parts: list[Part]) -> tuple[str, bytes]:
    boundary = f"fakecf{uuid.uuid4().hex}"
    chunks: list[bytes] = []
    for part in parts:
        disposition = f'form-data; name="{part.name}"; filename="{part.filename or part.name}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {part.content_type}"
        chunks.append(f"{head}\r\n\r\n".encode() + part.data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(chunks)


Handler = Callable[["FakeCloudflare", Recorded, re.Match[str]], Any]


class FakeCloudflare:
    """The fake API's state and its HTTP server. Use as a context manager (or the pytest fixture)."""

    def __init__(
        self,
        *,
        account_id: str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        token: str = "fake-cloudflare-api-token-for-tests",  # noqa: S107 - a fake's credential
        subdomain: str = "immcad-test",
    ) -> None:
        self.account_id = account_id
        self.token = token
        self.subdomain = subdomain
        # Accounts the token also sees, listed before this one (GET /accounts pages through them).
        self.other_accounts = 0
        self.scripts: dict[str, Script] = {}
        self.requests: list[Recorded] = []
        self.stray: list[str] = []
        self.failures: list[Failure] = []
        self.script_size_limit: int | None = None
        # Requests held until ``released`` is set, then dropped unanswered and not carried out: what a
        # runner killed mid-call leaves (the request never reached the API).
        self.holds: list[tuple[str, re.Pattern[str]]] = []
        self.released = threading.Event()
        self.frozen: dict[str, list[Deployment]] | None = None
        # The account's Analytics Engine (the SQL endpoint); deployments feed it its traffic model.
        self.analytics = FakeAnalyticsEngine()
        self._lock = threading.RLock()
        self._clock = itertools.count()
        self._epoch = datetime.now(UTC)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake API is not running"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}{PREFIX}"

    def start(self) -> FakeCloudflare:
        fake = self

        class RequestHandler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-cloudflare", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeCloudflare:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wrangler_env(self) -> dict[str, str]:
        """What a wrangler process needs to talk to this fake and to nothing else.

        The proxy variables send any request for another host (a real Cloudflare API, the npm update
        check, telemetry) to this server, which records it in ``stray`` and refuses it; wrangler's
        default NO_PROXY keeps 127.0.0.1 direct.
        """
        return {
            "CLOUDFLARE_API_BASE_URL": self.base_url,
            "CLOUDFLARE_API_TOKEN": self.token,
            "CLOUDFLARE_ACCOUNT_ID": self.account_id,
            "WRANGLER_SEND_METRICS": "false",
            "WRANGLER_SEND_ERROR_REPORTS": "false",
            "HTTPS_PROXY": self.origin,
            "HTTP_PROXY": self.origin,
            "NO_PROXY": "127.0.0.1,localhost,::1",
        }

    # ------------------------------------------------------------------------------- test controls

    def fail(
        self, method: str, path: str, code: int, message: str = "", *, status: int = 400, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and the ``path`` regex with ``code``."""
        with self._lock:
            self.failures.append(
                Failure(
                    method.upper(), re.compile(path), code, message or f"injected error {code}", status, times
                )
            )

    def inject(
        self,
        method: str,
        path: str,
        *,
        status: int = 503,
        times: int = 1,
        retry_after: float | None = None,
        drop: bool = False,
        lose_answer: bool = False,
    ) -> None:
        """Transient faults for the next ``times`` matching requests, as the real API shows them.

        ``status`` 5xx answers Cloudflare's envelope with error 10013 ("An unknown error occurred"); 429
        answers error 971 with a ``Retry-After`` header (``retry_after`` seconds, 1 by default); ``drop``
        closes the connection without an answer; ``lose_answer`` carries the request out (an upload
        lands) and then drops the connection, so the client never learns it succeeded.
        """
        if status == 429:
            code, message = 971, "Please wait and consider throttling your request speed"
            retry_after = 1.0 if retry_after is None else retry_after
        else:
            code, message = 10013, "An unknown error occurred"
        mode: Literal["answer", "drop", "lost"] = "lost" if lose_answer else "drop" if drop else "answer"
        with self._lock:
            self.failures.append(
                Failure(method.upper(), re.compile(path), code, message, status, times, retry_after, mode)
            )

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally filtered by method and a path regex."""
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if (method is None or r.method == method) and (path is None or re.search(path, r.path))
        ]

    def script(self, name: str) -> Script:
        with self._lock:
            return self.scripts[name]

    def seed(
        self, name: str, *, versions: int = 1, vars: dict[str, str] | None = None, deployed: int = -1
    ) -> list[str]:
        """Create a Worker with ``versions`` uploaded versions; ``ids[deployed]`` (the last) gets 100%."""
        ids = []
        with self._lock:
            for index in range(versions):
                bindings = [{"type": "plain_text", "name": k, "text": v} for k, v in (vars or {}).items()]
                module = Part("worker.js", "worker.js", "application/javascript+module", b"export default {}")
                version = self._new_version(
                    name, "worker.js", {"worker.js": module}, bindings, {"workers/message": f"seed {index}"}
                )
                ids.append(version.id)
            self._deploy(name, [(ids[deployed], 100.0)], {"workers/triggered_by": "upload"})
        return ids

    def deploy_behind_the_back(self, name: str, traffic: dict[str, float], *, message: str) -> None:
        """A deployment someone else makes (another release, a person) with ``traffic`` by version id;
        an id not uploaded yet is uploaded for it first."""
        with self._lock:
            module = Part("worker.js", "worker.js", "application/javascript+module", b"export default {}")
            ids = []
            for version_id, share in traffic.items():
                if self._script(name).version(version_id) is None:
                    uploaded = self._new_version(name, "worker.js", {"worker.js": module}, [], {})
                    uploaded.id = version_id
                ids.append((version_id, share))
            self._deploy(name, ids, {"workers/triggered_by": "deployment", "workers/message": message})

    # ---------------------------------------------------------------------------------- internals

    def _now(self) -> str:
        # Strictly increasing timestamps: wrangler orders versions and deployments by created_on.
        moment = self._epoch + timedelta(milliseconds=next(self._clock))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"

    def _script(self, name: str) -> Script:
        script = self.scripts.get(name)
        if script is None:
            raise ApiError(WORKER_NOT_FOUND, "This Worker does not exist on your account.", 404)
        return script

    def _ensure_script(self, name: str) -> Script:
        if name not in self.scripts:
            self.scripts[name] = Script(name=name, tag=uuid.uuid4().hex, created_on=self._now())
        return self.scripts[name]

    def _new_version(
        self,
        name: str,
        main_module: str,
        modules: dict[str, Part],
        bindings: list[dict[str, Any]],
        annotations: dict[str, str],
        compatibility_date: str | None = None,
        compatibility_flags: list[str] | None = None,
    ) -> Version:
        script = self._ensure_script(name)
        version = Version(
            id=str(uuid.uuid4()),
            number=len(script.versions) + 1,
            created_on=self._now(),
            main_module=main_module,
            modules=modules,
            bindings=bindings,
            compatibility_date=compatibility_date,
            compatibility_flags=list(compatibility_flags or []),
            annotations={k: v for k, v in annotations.items() if v},
            etag=uuid.uuid4().hex,
        )
        script.versions.append(version)
        return version

    def _deploy(self, name: str, traffic: list[tuple[str, float]], annotations: dict[str, str]) -> Deployment:
        script = self._script(name)
        if not 1 <= len(traffic) <= 2:
            raise ApiError(VALIDATION, "A deployment must have one or two versions.")
        for version_id, _ in traffic:
            if script.version(version_id) is None:
                raise ApiError(10209, f"Version {version_id} was not found for this Worker.", 404)
        if abs(sum(p for _, p in traffic) - 100.0) > 1e-6:
            raise ApiError(VALIDATION, "Version percentages must add up to 100.")
        deployment = Deployment(
            id=str(uuid.uuid4()),
            created_on=self._now(),
            versions=[{"version_id": v, "percentage": p} for v, p in traffic],
            annotations={k: v for k, v in annotations.items() if v},
        )
        script.deployments.append(deployment)
        return deployment

    def _version_json(self, script: Script, version: Version) -> dict[str, Any]:
        return {
            "id": version.id,
            "number": version.number,
            "metadata": {
                "author_id": "fake-author",
                "author_email": "ci@example.com",
                "source": "wrangler",
                "created_on": version.created_on,
                "modified_on": version.created_on,
                "has_preview": script.previews_enabled,
            },
            "annotations": dict(version.annotations),
            "resources": {
                "script": {"etag": version.etag, "handlers": ["fetch"], "last_deployed_from": "wrangler"},
                "script_runtime": {
                    "compatibility_date": version.compatibility_date,
                    "compatibility_flags": version.compatibility_flags,
                    "usage_model": "standard",
                    "limits": {},
                },
                "bindings": version.public_bindings(),
            },
            "startup_time_ms": 7,
        }

    def _deployment_json(self, deployment: Deployment) -> dict[str, Any]:
        return {
            "id": deployment.id,
            "source": deployment.source,
            "strategy": "percentage",
            "author_email": "ci@example.com",
            "created_on": deployment.created_on,
            "annotations": dict(deployment.annotations),
            "versions": [dict(v) for v in deployment.versions],
        }

    def _resolve_bindings(
        self, script: Script | None, requested: list[dict[str, Any]], keep: list[str]
    ) -> list[dict[str, Any]]:
        """Apply "inherit" entries and ``keep_bindings`` against the latest version, as the API does."""
        previous = {b["name"]: b for b in script.latest.bindings} if script and script.versions else {}
        resolved: dict[str, dict[str, Any]] = {}
        for binding in requested:
            name = binding["name"]
            # A text binding without its text inherits it; a binding that is only a name and a type by
            # nature (version_metadata) does not.
            inherits = binding.get("type") == "inherit" or (
                binding.get("type") in {"secret_text", "plain_text"} and "text" not in binding
            )
            if inherits:
                if name not in previous:
                    raise ApiError(VALIDATION, f"binding {name} cannot be inherited: it does not exist")
                resolved[name] = dict(previous[name])
            else:
                resolved[name] = dict(binding)
        for name, binding in previous.items():
            if name not in resolved and binding.get("type") in keep:
                resolved[name] = dict(binding)
        return list(resolved.values())

    def _upload(self, name: str, request: Recorded) -> Version:
        form = request.form()
        metadata = json.loads(form.pop("metadata").data)
        size = sum(len(p.data) for p in form.values())
        if self.script_size_limit is not None and size > self.script_size_limit:
            raise ApiError(
                SCRIPT_TOO_LARGE,
                f"Your Worker exceeded the size limit of {self.script_size_limit} bytes "
                f"({size} bytes uploaded).",
            )
        bindings = self._resolve_bindings(
            self.scripts.get(name), metadata.get("bindings", []), metadata.get("keep_bindings", [])
        )
        main_module = metadata.get("main_module") or metadata.get("body_part")
        if main_module not in form:
            raise ApiError(VALIDATION, f"main module {main_module!r} is not part of the upload")
        return self._new_version(
            name,
            main_module,
            form,
            bindings,
            metadata.get("annotations") or {},
            metadata.get("compatibility_date"),
            metadata.get("compatibility_flags"),
        )

    # ------------------------------------------------------------------------------------- routes

    def freeze_deployments(self) -> None:
        """From now on reads of the deployments show them as they are now (writes still apply): an API
        whose reads lag behind its writes."""
        with self._lock:
            self.frozen = {name: list(s.deployments) for name, s in self.scripts.items()}

    def hold(self, method: str, path: str) -> None:
        """Hold matching requests (unanswered) until ``released`` is set; then drop them undone."""
        with self._lock:
            self.holds.append((method.upper(), re.compile(path)))

    def dispatch(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            held = any(m == request.method and p.search(request.path) for m, p in self.holds)
            if held:
                self.requests.append(request)
        if held:
            self.released.wait(timeout=600)
            raise _Drop()
        with self._lock:
            self.requests.append(request)
            auth = request.headers.get("authorization", "")
            try:
                if auth != f"Bearer {self.token}":
                    raise ApiError(AUTH_ERROR, "Authentication error", 403)
                for failure in self.failures:
                    if (
                        failure.times > 0
                        and failure.method == request.method
                        and failure.pattern.search(request.path)
                    ):
                        failure.times -= 1
                        if failure.mode == "drop":
                            raise _Drop()
                        if failure.mode == "lost":
                            raise _Drop(then=lambda: self._route(request))
                        raise ApiError(
                            failure.code, failure.message, failure.status, retry_after=failure.retry_after
                        )
                return self._route(request)
            except ApiError as exc:
                return _error_answer(exc)

    def _route(self, request: Recorded) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            try:
                for method, pattern, handler in ROUTES:
                    if method != request.method:
                        continue
                    match = pattern.fullmatch(request.path)
                    if match is None:
                        continue
                    account = match.groupdict().get("account")
                    if account is not None and account != self.account_id:
                        raise ApiError(AUTH_ERROR, "Authentication error", 403)
                    result = handler(self, request, match)
                    if isinstance(result, tuple):  # a raw (content type, body, headers[, status]) answer
                        content_type, body, extra, *status = result
                        return (status or [200])[0], {"content-type": content_type, **extra}, body
                    return 200, {"content-type": "application/json"}, _envelope(result)
                raise ApiError(7000, f"No route for {request.method} {request.path} in the fake API", 404)
            except ApiError as exc:
                return _error_answer(exc)

    def _service(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        return {
            "id": script.name,
            "default_environment": {
                "environment": "production",
                "script": {
                    "id": script.name,
                    "tag": script.tag,
                    "tags": script.script_settings.get("tags") or [],
                    "etag": script.latest.etag if script.versions else None,
                    "handlers": ["fetch"],
                    "last_deployed_from": "wrangler",
                    "created_on": script.created_on,
                    "modified_on": script.created_on,
                },
                "created_on": script.created_on,
                "modified_on": script.created_on,
            },
            "created_on": script.created_on,
            "modified_on": script.created_on,
        }

    def _account_subdomain(self, request: Recorded, match: re.Match[str]) -> Any:
        return {"subdomain": self.subdomain}

    def _put_script(self, request: Recorded, match: re.Match[str]) -> Any:
        name = match["name"]
        version = self._upload(name, request)
        self._deploy(name, [(version.id, 100.0)], {"workers/triggered_by": "upload"})
        script = self.scripts[name]
        return {
            "id": name,
            "tag": script.tag,
            "etag": version.etag,
            "handlers": ["fetch"],
            "deployment_id": version.id,  # wrangler reads the version id from here
            "startup_time_ms": 7,
            "created_on": script.created_on,
            "modified_on": version.created_on,
        }

    def _post_version(self, request: Recorded, match: re.Match[str]) -> Any:
        name = match["name"]
        version = self._upload(name, request)
        return self._version_json(self.scripts[name], version)

    def _list_versions(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        items = [self._version_json(script, v) for v in reversed(script.versions)]
        return {"items": items}

    def _get_version(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        version = script.version(match["version"])
        if version is None:
            raise ApiError(10209, f"Version {match['version']} was not found.", 404)
        return self._version_json(script, version)

    def _list_deployments(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        shown = script.deployments if self.frozen is None else self.frozen.get(script.name, [])
        return {"deployments": [self._deployment_json(d) for d in reversed(shown)]}

    def _post_deployment(self, request: Recorded, match: re.Match[str]) -> Any:
        body = request.json()
        traffic = [(v["version_id"], float(v["percentage"])) for v in body.get("versions", [])]
        annotations = {"workers/triggered_by": "deployment", **(body.get("annotations") or {})}
        deployment = self._deploy(match["name"], traffic, annotations)
        # The split's real traffic reaches Analytics Engine (when a test set a traffic model).
        self.analytics.on_deployment(self.scripts[match["name"]].latest.id, deployment.traffic())
        return self._deployment_json(deployment)

    def _analytics_sql(self, request: Recorded, match: re.Match[str]) -> Any:
        if not self.analytics.readable:
            raise ApiError(AUTH_ERROR, "Authentication error", 403)
        try:
            answer = self.analytics.answer(request.body.decode("utf-8", errors="replace"))
        except SqlError as exc:
            return "text/plain; charset=utf-8", str(exc).encode(), {}, SQL_ERROR_STATUS
        return "application/json", json.dumps(answer).encode(), {}

    def _get_settings(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        latest = script.latest
        return {
            "bindings": latest.public_bindings(),
            "compatibility_date": latest.compatibility_date,
            "compatibility_flags": latest.compatibility_flags,
            **script.script_settings,
        }

    @staticmethod
    def _require_latest_deployed(script: Script, code: int = VERSION_NOT_DEPLOYED) -> None:
        """Secrets can be edited only while the latest version alone serves: otherwise the edit would
        ship code nobody deployed (10215 for a settings/bulk edit, 10214 for a single secret)."""
        current = script.current()
        if current is None or current.traffic() != {script.latest.id: 100.0}:
            raise ApiError(
                code,
                "Secret edit failed. You attempted to modify a secret, but the latest version of your Worker "
                "isn't currently deployed. Please ensure that the latest version of your Worker is fully "
                "deployed (wrangler versions deploy) before modifying secrets.",
            )

    def _secret_version(self, script: Script, bindings: list[dict[str, Any]]) -> Version:
        """A new version from the LATEST version's code with ``bindings``, deployed at 100 %."""
        latest = script.latest
        version = self._new_version(
            script.name,
            latest.main_module,
            dict(latest.modules),
            bindings,
            {"workers/triggered_by": "secret"},
            latest.compatibility_date,
            latest.compatibility_flags,
        )
        self._deploy(script.name, [(version.id, 100.0)], {"workers/triggered_by": "secret"})
        return version

    def _put_secret(self, request: Recorded, match: re.Match[str]) -> Any:
        """``wrangler secret put``: one secret into a new deployed version (10214 when the latest is not
        the deployed one)."""
        script = self._script(match["name"])
        self._require_latest_deployed(script, SECRET_NOT_DEPLOYED_SINGLE)
        body = request.json()
        kept = [b for b in script.latest.bindings if b.get("name") != body.get("name")]
        self._secret_version(
            script, [*kept, {"type": "secret_text", "name": body["name"], "text": body["text"]}]
        )
        return {"name": body["name"], "type": "secret_text"}

    def _delete_secret(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        self._require_latest_deployed(script, SECRET_NOT_DEPLOYED_SINGLE)
        self._secret_version(script, [b for b in script.latest.bindings if b.get("name") != match["secret"]])
        return None

    def _patch_settings(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        self._require_latest_deployed(script)
        settings = json.loads(request.form()["settings"].data)
        bindings = self._resolve_bindings(script, settings.get("bindings", []), keep=[])
        self._secret_version(script, bindings)
        return self._get_settings(request, match)

    def _get_script_settings(self, request: Recorded, match: re.Match[str]) -> Any:
        return dict(self._script(match["name"]).script_settings)

    def _patch_script_settings(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        script.script_settings.update(request.json())
        return dict(script.script_settings)

    def _content(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        wanted = (request.query.get("version") or [script.latest.id])[0]
        version = script.version(wanted)
        if version is None:
            raise ApiError(10209, f"Version {wanted} was not found.", 404)
        content_type, body = _multipart(list(version.modules.values()))
        return content_type, body, {"cf-entrypoint": version.main_module}

    def _get_subdomain(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        return {"enabled": script.workers_dev, "previews_enabled": script.previews_enabled}

    def _post_subdomain(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        body = request.json()
        script.workers_dev = bool(body.get("enabled", script.workers_dev))
        script.previews_enabled = bool(body.get("previews_enabled", script.previews_enabled))
        return self._get_subdomain(request, match)

    def _list_secrets(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        return [{"name": n, "type": "secret_text"} for n in script.latest.secrets()]

    def _version_with(
        self, script: Script, changes: dict[str, dict[str, Any] | None], annotations: dict[str, str]
    ) -> Version:
        """A new version of ``script``: its latest one with bindings set (a dict) or removed (None)."""
        if not script.versions:
            raise ApiError(
                NO_VERSIONS,
                "There are currently no uploaded versions of this Worker. Please upload a version before "
                "modifying a secret.",
            )
        latest = script.latest
        bindings = {b["name"]: dict(b) for b in latest.bindings}
        for name, binding in changes.items():
            if binding is None:
                bindings.pop(name, None)
            else:
                bindings[name] = {**binding, "name": name}
        return self._new_version(
            script.name,
            latest.main_module,
            dict(latest.modules),
            list(bindings.values()),
            annotations,
            latest.compatibility_date,
            latest.compatibility_flags,
        )

    def _patch_secrets_bulk(self, request: Recorded, match: re.Match[str]) -> Any:
        """`wrangler secret bulk` (4.164): ``{"secrets": {name: {type, text} | null}}``, deployed at 100%."""
        script = self._script(match["name"])
        self._require_latest_deployed(script)
        secrets = request.json().get("secrets")
        if not isinstance(secrets, dict):
            raise ApiError(VALIDATION, "secrets must be an object of name: binding | null")
        changes = {
            str(name): None if value is None else {"type": "secret_text", "text": value.get("text")}
            for name, value in secrets.items()
        }
        version = self._version_with(script, changes, {"workers/triggered_by": "secret"})
        self._deploy(script.name, [(version.id, 100.0)], {"workers/triggered_by": "secret"})
        return [{"name": n, "type": "secret_text"} for n in version.secrets()]

    def _patch_latest_version(self, request: Recorded, match: re.Match[str]) -> Any:
        """`wrangler versions secret bulk` (4.164): a new, undeployed version from the LATEST one."""
        script = self._script(match["name"])
        body = request.json()
        env = body.get("env") or {}
        if not isinstance(env, dict):
            raise ApiError(VALIDATION, "env must be an object of name: binding | null")
        annotations = {"workers/triggered_by": "secret", **(body.get("annotations") or {})}
        version = self._version_with(script, {str(k): v for k, v in env.items()}, annotations)
        return self._version_json(script, version)

    def _worker_json(self, script: Script) -> dict[str, Any]:
        return {
            "id": script.tag,
            "name": script.name,
            "created_on": script.created_on,
            "updated_on": script.versions[-1].created_on if script.versions else script.created_on,
            "subdomain": {"enabled": script.workers_dev, "previews_enabled": script.previews_enabled},
            "previews_base_config": dict(script.previews_base_config),
            "observability": script.script_settings.get("observability"),
            "logpush": script.script_settings.get("logpush", False),
            "tags": script.script_settings.get("tags") or [],
            "tail_consumers": script.script_settings.get("tail_consumers"),
        }

    def _get_worker(self, request: Recorded, match: re.Match[str]) -> Any:
        return self._worker_json(self._script(match["name"]))

    def _apply_worker_patch(self, script: Script, body: dict[str, Any]) -> None:
        subdomain = body.get("subdomain")
        if isinstance(subdomain, dict):
            script.workers_dev = bool(subdomain.get("enabled", script.workers_dev))
            script.previews_enabled = bool(subdomain.get("previews_enabled", script.previews_enabled))
        if isinstance(body.get("previews_base_config"), dict):
            script.previews_base_config = dict(body["previews_base_config"])

    def _patch_worker(self, request: Recorded, match: re.Match[str]) -> Any:
        script = self._script(match["name"])
        self._apply_worker_patch(script, request.json())
        return self._worker_json(script)

    def _create_worker(self, request: Recorded, match: re.Match[str]) -> Any:
        body = request.json()
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(VALIDATION, "name is required")
        if name in self.scripts:
            raise ApiError(10013, f"A Worker named {name} already exists.", 409)
        script = self._ensure_script(name)
        self._apply_worker_patch(script, body)
        return self._worker_json(script)

    def _user(self, request: Recorded, match: re.Match[str]) -> Any:
        return {"id": "fake-user", "email": "ci@example.com"}

    def _memberships(self, request: Recorded, match: re.Match[str]) -> Any:
        return [{"id": "m1", "account": {"id": self.account_id, "name": "IMMCAD test account"}}]

    def _accounts(self, request: Recorded, match: re.Match[str]) -> Any:
        """One page (``page``, ``per_page``: 5–50, default 20, as the real API) of the token's accounts."""
        listed = [
            {"id": f"{i:032x}", "name": f"other account {i}"} for i in range(1, self.other_accounts + 1)
        ]
        listed.append({"id": self.account_id, "name": "IMMCAD test account"})
        page = int((request.query.get("page") or ["1"])[0])
        per_page = int((request.query.get("per_page") or ["20"])[0])
        if page < 1 or not 5 <= per_page <= 50:
            raise ApiError(VALIDATION, f"page {page} / per_page {per_page} out of range")
        return listed[(page - 1) * per_page : page * per_page]

    def _verify(self, request: Recorded, match: re.Match[str]) -> Any:
        return {"id": "fake-token", "status": "active"}

    # ------------------------------------------------------------------------------- assertions

    def secret_values_received(self) -> list[str]:
        """Every secret value that reached the API (secret_text bindings in uploads and settings)."""
        values = []
        for request in self.calls():
            content_type = request.headers.get("content-type", "")
            if "json" in content_type and request.body:
                # secrets-bulk ({"secrets": {...}}) and versions/latest ({"env": {...}}), 4.164's paths
                body = request.json()
                for key in ("secrets", "env"):
                    for binding in (body.get(key) or {}).values() if isinstance(body, dict) else ():
                        if isinstance(binding, dict) and binding.get("type") == "secret_text":
                            values.append(binding["text"])
                continue
            if not content_type.startswith("multipart/"):
                continue
            form = request.form()
            for key in ("metadata", "settings"):
                if key in form:
                    for binding in json.loads(form[key].data).get("bindings", []):
                        if binding.get("type") == "secret_text" and "text" in binding:
                            values.append(binding["text"])
        return values


def _envelope(result: Any) -> bytes:
    return json.dumps({"success": True, "errors": [], "messages": [], "result": result}).encode()


_S = r"/accounts/(?P<account>[^/]+)/workers/scripts/(?P<name>[^/]+)"
_W = r"/accounts/(?P<account>[^/]+)/workers/workers/(?P<name>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    (
        "GET",
        re.compile(r"/accounts/(?P<account>[^/]+)/workers/services/(?P<name>[^/]+)"),
        FakeCloudflare._service,
    ),
    ("GET", re.compile(r"/accounts/(?P<account>[^/]+)/workers/subdomain"), FakeCloudflare._account_subdomain),
    ("PUT", re.compile(_S), FakeCloudflare._put_script),
    ("POST", re.compile(_S + r"/versions"), FakeCloudflare._post_version),
    ("GET", re.compile(_S + r"/versions"), FakeCloudflare._list_versions),
    ("GET", re.compile(_S + r"/versions/(?P<version>[^/]+)"), FakeCloudflare._get_version),
    ("GET", re.compile(_S + r"/deployments"), FakeCloudflare._list_deployments),
    ("POST", re.compile(_S + r"/deployments"), FakeCloudflare._post_deployment),
    ("GET", re.compile(_S + r"/settings"), FakeCloudflare._get_settings),
    ("PATCH", re.compile(_S + r"/settings"), FakeCloudflare._patch_settings),
    ("GET", re.compile(_S + r"/script-settings"), FakeCloudflare._get_script_settings),
    ("PATCH", re.compile(_S + r"/script-settings"), FakeCloudflare._patch_script_settings),
    ("GET", re.compile(_S + r"/content/v2"), FakeCloudflare._content),
    ("GET", re.compile(_S + r"/subdomain"), FakeCloudflare._get_subdomain),
    ("POST", re.compile(_S + r"/subdomain"), FakeCloudflare._post_subdomain),
    ("GET", re.compile(_S + r"/secrets"), FakeCloudflare._list_secrets),
    ("PUT", re.compile(_S + r"/secrets"), FakeCloudflare._put_secret),
    ("DELETE", re.compile(_S + r"/secrets/(?P<secret>[^/]+)"), FakeCloudflare._delete_secret),
    ("PATCH", re.compile(_S + r"/secrets-bulk"), FakeCloudflare._patch_secrets_bulk),
    ("GET", re.compile(_W), FakeCloudflare._get_worker),
    ("PATCH", re.compile(_W), FakeCloudflare._patch_worker),
    ("POST", re.compile(r"/accounts/(?P<account>[^/]+)/workers/workers"), FakeCloudflare._create_worker),
    ("PATCH", re.compile(_W + r"/versions/latest"), FakeCloudflare._patch_latest_version),
    ("POST", re.compile(r"/accounts/(?P<account>[^/]+)/analytics_engine/sql"), FakeCloudflare._analytics_sql),
    ("GET", re.compile(r"/user"), FakeCloudflare._user),
    ("GET", re.compile(r"/user/tokens/verify"), FakeCloudflare._verify),
    ("GET", re.compile(r"/memberships"), FakeCloudflare._memberships),
    ("GET", re.compile(r"/accounts"), FakeCloudflare._accounts),
]


class _Handler(BaseHTTPRequestHandler):
    api: FakeCloudflare
    protocol_version = "HTTP/1.1"  # keep-alive, as undici expects

    def log_message(self, format: str, *args: Any) -> None:  # quiet: requests are recorded instead
        pass

    def date_time_string(self, timestamp: float | None = None) -> str:
        # The Date header follows the fake API's own clock (a test can skew it against the runner's).
        when = (
            (datetime.now(UTC) + self.api.analytics.clock_skew).timestamp()
            if timestamp is None
            else timestamp
        )
        return super().date_time_string(when)

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        send_answer(self, status, headers, body)

    def _handle(self) -> None:
        body = self._body()
        target = urlsplit(self.path)
        if self.command == "CONNECT" or target.scheme or not target.path.startswith(PREFIX):
            # A proxied request for another host: record it and refuse it.
            with self.api._lock:
                self.api.stray.append(f"{self.command} {self.path}")
            self._answer(403, {"content-type": "text/plain"}, b"the fake Cloudflare API refuses other hosts")
            self.close_connection = True
            return
        request = Recorded(
            method=self.command,
            path=target.path[len(PREFIX) :] or "/",
            query=parse_qs(target.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        try:
            answer = self.api.dispatch(request)
        except _Drop as drop:
            if drop.then is not None:
                drop.then()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._answer(*answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_CONNECT = _handle


@pytest.fixture
def cloudflare_api() -> Iterator[FakeCloudflare]:
    """A running fake Cloudflare API on 127.0.0.1 (stopped at teardown); see ``wrangler_env``."""
    with FakeCloudflare() as api:
        yield api
