"""The FastAPI app: routes, bearer auth, request metrics and one error envelope."""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from immcad_api import __version__
from immcad_api.analytics import RequestAnalytics, Scope, Sink, jsonl_sink
from immcad_api.resources import Resources, find_resource_root
from immcad_api.settings import Settings

TRACE_HEADER = "x-trace-id"
VERSION_HEADER = "x-immcad-version"
# Trace ids that arrive from the edge proxy (cf-ray or a UUID) are reused; anything else is replaced,
# so a client cannot inject arbitrary text into logs and responses.
_TRACE_ID_RE = re.compile(r"^[A-Za-z0-9-]{8,64}$")
_STATUS_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    422: "VALIDATION_ERROR",
}


class ChatRequest(BaseModel):
    session_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    message: str = Field(min_length=1, max_length=4000)
    locale: str = Field(default="en-CA", pattern=r"^(en|fr)-CA$")


class CaseSearchRequest(BaseModel):
    query: str = Field(min_length=2, max_length=500)
    limit: int = Field(default=5, ge=1, le=20)
    court: str | None = Field(default=None, max_length=16)


def error_response(
    status: int, code: str, message: str, trace_id: str, policy_reason: str | None = None
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "trace_id": trace_id, "policy_reason": policy_reason}}
    return JSONResponse(
        body, status_code=status, headers={TRACE_HEADER: trace_id, "cache-control": "no-store"}
    )


def _trace_id(request: Request) -> str:
    for header in ("x-immcad-trace-id", TRACE_HEADER):
        value = request.headers.get(header, "")
        if _TRACE_ID_RE.match(value):
            return value
    return str(uuid.uuid4())


def _bearer_ok(request: Request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _route_template(app: FastAPI) -> Callable[[Scope], str | None]:
    """The matched route's path template (``/api/chat``), never the raw path: analytics hold no user data.

    Routing has not run when auth answered first (a 401), so the routes are matched here as well.
    """

    def route_of(scope: Scope) -> str | None:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                found = getattr(route, "path", None)
                return found if isinstance(found, str) else None
        return None

    return route_of


def create_app(
    settings: Settings | None = None, resources: Resources | None = None, analytics_sink: Sink | None = None
) -> FastAPI:
    """Build the app. Raises SettingsError when the configuration must not be served.

    ``analytics_sink`` receives one data point per request (the Worker passes its Analytics Engine
    binding's writer); without one, ``IMMCAD_ANALYTICS_FILE`` (local runs) or nothing.
    """
    settings = settings or Settings.from_env()
    resources = resources or Resources.load(find_resource_root(settings.resource_root))
    app = FastAPI(title="IMMCAD API", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    started = time.monotonic()
    by_route: Counter[str] = Counter()
    by_status: Counter[str] = Counter()

    @app.middleware("http")
    async def auth_trace_and_count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        trace_id = _trace_id(request)
        request.state.trace_id = trace_id
        path = request.url.path
        response: Response
        if path.startswith("/ops/"):
            if not settings.bearer_token:
                response = error_response(
                    401,
                    "UNAUTHORIZED",
                    "ops endpoints are disabled: no bearer token is configured",
                    trace_id,
                    "ops_token_not_configured",
                )
            elif not _bearer_ok(request, settings.bearer_token):
                response = error_response(401, "UNAUTHORIZED", "missing or invalid bearer token", trace_id)
            else:
                response = await call_next(request)
        elif (
            path.startswith("/api/")
            and settings.bearer_token
            and not _bearer_ok(request, settings.bearer_token)
        ):
            response = error_response(401, "UNAUTHORIZED", "missing or invalid bearer token", trace_id)
        else:
            response = await call_next(request)
        response.headers[TRACE_HEADER] = trace_id
        response.headers[VERSION_HEADER] = settings.version_id
        # Counted by path even when auth answered before routing; unknown paths share one bucket so
        # a scanner cannot grow the counters without bound.
        known = {getattr(r, "path", None) for r in app.routes}
        by_route[f"{request.method} {path if path in known else '(unmatched)'}"] += 1
        by_status[str(response.status_code)] += 1
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "HTTP_ERROR")
        return error_response(exc.status_code, code, str(exc.detail), request.state.trace_id)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        message = (
            f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", "invalid"))
        )
        return error_response(422, "VALIDATION_ERROR", message, request.state.trace_id)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        trace_id = getattr(request.state, "trace_id", str(uuid.uuid4()))
        return error_response(500, "INTERNAL_ERROR", "internal error; quote the trace id", trace_id)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name, "version": __version__}

    @app.post("/api/chat", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> dict[str, Any] | JSONResponse:
        trace_id = request.state.trace_id
        reason = resources.blocked_reason(body.message)
        if reason:
            return error_response(
                422,
                "POLICY_BLOCKED",
                "this request cannot be answered under the source policy",
                trace_id,
                reason,
            )
        citations = resources.citable_documents(body.message)
        rules = resources.compilation_rules(body.message)
        if citations:
            titles = "; ".join(c["title"] for c in citations)
            answer = f"General information relevant to your question can be found in: {titles}."
        else:
            answer = "I could not match your question to a bundled source; try naming the program or issue."
        # The reference backend never calls a model: it answers from bundled data only, so the answer is
        # deterministic. A configured model key is reported, not used.
        return {
            "session_id": body.session_id,
            "answer": answer,
            "citations": citations,
            "document_rules": rules,
            "provider": "scaffold",
            "model_key_configured": settings.model_api_key is not None,
            "disclaimer": resources.disclaimer,
            "trace_id": trace_id,
        }

    @app.post("/api/search/cases")
    async def search_cases(body: CaseSearchRequest, request: Request) -> dict[str, Any]:
        results = resources.search_cases(body.query, body.limit, body.court)
        return {
            "query": body.query,
            "results": results,
            "total": len(results),
            "trace_id": request.state.trace_id,
        }

    if analytics_sink is None and settings.analytics_file:
        analytics_sink = jsonl_sink(settings.analytics_file)
    # Outermost of the app's own middleware, so that its latency covers auth and routing as well.
    app.add_middleware(
        RequestAnalytics, sink=analytics_sink, version=settings.version_id, route_of=_route_template(app)
    )

    def analytics_counts() -> dict[str, int]:
        layer = app.middleware_stack
        while layer is not None and not isinstance(layer, RequestAnalytics):
            layer = getattr(layer, "app", None)
        if layer is None:
            return {"written": 0, "write_failures": 0}
        return {"written": layer.written, "write_failures": layer.write_failures}

    @app.get("/ops/metrics")
    async def metrics() -> dict[str, Any]:
        return {
            "version_id": settings.version_id,
            "analytics": analytics_counts(),
            "service": settings.service_name,
            "environment": settings.environment,
            "uptime_seconds": round(time.monotonic() - started, 3),
            "requests_total": sum(by_route.values()),
            "by_route": dict(sorted(by_route.items())),
            "by_status": dict(sorted(by_status.items())),
        }

    return app
