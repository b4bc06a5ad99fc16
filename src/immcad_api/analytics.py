"""Request analytics: one Workers Analytics Engine data point per request — THE field layout.

This module is the one place the data point's layout is written down. The Worker writes it (through the
ASGI middleware below and the sink in ``backend-cloudflare/src/entry.py``), and cfops reads it back
(``cfops.analytics`` builds its SQL from these constants). It ships in the Worker bundle (``cfops sync``
copies ``src/immcad_api``) and is imported by cfops from the installed package, so both sides read the
same file. It imports nothing outside the standard library: the Worker must not pay for it at start-up.

Layout of one data point (Analytics Engine columns; docs/analytics.md shows the same table):

=========  =================  ===============================================================
column     field              value
=========  =================  ===============================================================
index1     version            the Worker version id (the sampling key: each version is sampled
                              on its own, so a 10 % version is not drowned by the 90 % one)
blob1      version            the Worker version id again (blobs are what GROUP BY reads)
blob2      route              the route's path template (``/api/chat``), or ``unmatched`` —
                              never the raw path: no user data lands in analytics
blob3      status class       ``2xx`` … ``5xx``
blob4      method             ``GET``, ``POST`` …
blob5      origin             ``user``, or ``synthetic`` for cfops's own requests (they carry
                              ``SYNTHETIC_HEADER``); a point written before this field existed
                              has it empty, which reads as ``user``
double1    latency_ms         time from the request reaching the app to the response's start
double2    status             the HTTP status code
=========  =================  ===============================================================

cfops judges a release stage by user traffic only (``blob5 != 'synthetic'``): its smoke and canary
requests land in the same window and would otherwise dilute a regression, or be most of the evidence on
a quiet Worker. The header is a label, not a credential: a client that sends it only takes its own
requests out of the judgement.

Writing never fails a request and never waits: a missing sink (local dev without the binding) is a
no-op, and an exception from the sink is swallowed and counted (``write_failures``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

# The Worker's Analytics Engine binding (wrangler.toml [[analytics_engine_datasets]] binding). It must
# equal [tool.cfops.analytics] binding in pyproject.toml; `cfops preflight` (check "analytics") fails
# when wrangler.toml, pyproject.toml and this constant disagree.
BINDING = "IMMCAD_ANALYTICS"
# Where the app finds its version id: the Worker entry copies the version-metadata binding's id here;
# locally it is a dev var (unset: "local").
VERSION_VAR = "IMMCAD_VERSION_ID"
LOCAL_VERSION = "local"
UNMATCHED = "unmatched"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Where a request came from (blob5). cfops's own requests (perf smoke and canary, health polls) send
# SYNTHETIC_HEADER: SYNTHETIC_VALUE. The name is outside x-immcad-*, which the edge proxy strips from
# clients, so the label survives the local stack's proxy too.
ORIGIN_USER = "user"
ORIGIN_SYNTHETIC = "synthetic"
SYNTHETIC_HEADER = "x-cfops-synthetic"
SYNTHETIC_VALUE = "1"
_SYNTHETIC = (SYNTHETIC_HEADER.encode("latin-1"), SYNTHETIC_VALUE.encode("latin-1"))

# Column names, by field. cfops's queries are built from these, so a change here changes both sides.
INDEX_VERSION = "index1"
BLOB_VERSION = "blob1"
BLOB_ROUTE = "blob2"
BLOB_STATUS_CLASS = "blob3"
BLOB_METHOD = "blob4"
BLOB_ORIGIN = "blob5"
DOUBLE_LATENCY_MS = "double1"
DOUBLE_STATUS = "double2"
# Every data point stands for _sample_interval requests once Analytics Engine samples: counts are
# SUM(_sample_interval), quantiles are weighted by it.
SAMPLE_INTERVAL = "_sample_interval"


def status_class(status: int) -> str:
    return f"{min(max(status // 100, 1), 5)}xx"


def origin_of(scope: MutableMapping[str, Any]) -> str:
    """``synthetic`` when the request carries cfops's marker header, else ``user``."""
    name, value = _SYNTHETIC
    for key, given in scope.get("headers") or ():
        # ASGI headers are bytes (an adapter handing over str is read the same way); names compared
        # case-insensitively, the value without surrounding blanks.
        if _bytes(key).lower() == name and _bytes(given).strip() == value:
            return ORIGIN_SYNTHETIC
    return ORIGIN_USER


def _bytes(text: bytes | str) -> bytes:
    return text.encode("latin-1", "replace") if isinstance(text, str) else bytes(text)


@dataclass(frozen=True, kw_only=True)
class DataPoint:
    version: str
    route: str
    method: str
    status: int
    latency_ms: float
    origin: str = ORIGIN_USER

    def binding_args(self) -> dict[str, list[Any]]:
        """The argument of ``writeDataPoint`` (indexes, blobs, doubles in column order)."""
        return {
            "indexes": [self.version],
            "blobs": [self.version, self.route, status_class(self.status), self.method, self.origin],
            "doubles": [round(self.latency_ms, 3), float(self.status)],
        }

    def columns(self) -> dict[str, Any]:
        """The same point as the SQL API's columns (what a local JSONL record or a fake holds)."""
        args = self.binding_args()
        named = {INDEX_VERSION: args["indexes"][0]}
        named.update({f"blob{i}": v for i, v in enumerate(args["blobs"], start=1)})
        named.update({f"double{i}": v for i, v in enumerate(args["doubles"], start=1)})
        return named


Sink = Callable[[DataPoint], None]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RouteOf = Callable[[Scope], str | None]


class RequestAnalytics:
    """ASGI middleware: time each HTTP request and hand one DataPoint to ``sink`` after the response.

    ``route_of(scope)`` names the matched route template (or None); the app supplies it because only
    the router knows its templates.
    """

    def __init__(self, app: ASGIApp, *, sink: Sink | None, version: str, route_of: RouteOf) -> None:
        self.app = app
        self.sink = sink
        self.version = version or LOCAL_VERSION
        self.route_of = route_of
        self.write_failures = 0
        self.written = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or self.sink is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, float] = {}

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start" and "status" not in seen:
                seen["status"] = float(message.get("status", 500))
                seen["latency_ms"] = (time.perf_counter() - started) * 1000.0
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except BaseException:
            seen.setdefault("status", 500.0)
            raise
        finally:
            self._record(scope, seen, started)

    def _record(self, scope: Scope, seen: dict[str, float], started: float) -> None:
        try:
            assert self.sink is not None
            latency = seen.get("latency_ms", (time.perf_counter() - started) * 1000.0)
            point = DataPoint(
                version=self.version,
                route=self.route_of(scope) or UNMATCHED,
                method=str(scope.get("method", "GET")),
                status=int(seen.get("status", 500)),
                latency_ms=latency,
                origin=origin_of(scope),
            )
            self.sink(point)
            self.written += 1
        except Exception:  # analytics must never fail a request: counted instead
            self.write_failures += 1


def jsonl_sink(path: str) -> Sink:
    """A local sink: one JSON object per line (the columns, plus a UTC timestamp), for the rehearsal."""
    import json
    from datetime import UTC, datetime
    from pathlib import Path

    target = Path(path)

    def write(point: DataPoint) -> None:
        record = {"timestamp": datetime.now(UTC).isoformat(), "_sample_interval": 1, **point.columns()}
        with target.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    return write
