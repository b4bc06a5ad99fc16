"""A local stand-in for Cloudflare's edge in front of a Worker: routes each request to a version.

It reads the fake API's current deployment of the Worker for every request, as the edge does:

- ``Cloudflare-Workers-Version-Overrides: <worker>="<id>"`` is honoured only when ``<id>`` is part of the
  current deployment; otherwise (or with ``honour_overrides=False``, a propagation delay or a mistaken
  setup) it is silently ignored and the request follows the split;
- the split is followed with a smooth weighted round-robin, so 10 % is exactly one request in ten.

The request is forwarded to the upstream backend, and the answer carries ``x-immcad-version`` with the
version chosen — what the Worker's version-metadata binding gives the backend on Cloudflare (the backend
itself sends it from IMMCAD_VERSION_ID, which a local process cannot vary per request). ``answered``
counts the versions chosen. With ``analytics_dataset`` set, each answered request also writes the data
point the Worker's middleware would (its origin read by ``immcad_api.analytics.origin_of``) to the fake
API's Analytics Engine: cfops's own smoke then lands in the stage's window, as on Cloudflare.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from immcad_api import analytics as layout
from tests.fakes.cloudflare_api import FakeCloudflare, send_answer

OVERRIDE = "cloudflare-workers-version-overrides"
_PAIR = re.compile(r'\s*([^=\s]+)\s*=\s*"([^"]*)"\s*')
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "x-immcad-version"}


class WorkerFront:
    def __init__(self, api: FakeCloudflare, worker: str, upstream: str) -> None:
        self.api = api
        self.worker = worker
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.honour_overrides = True
        # While this says so for the live traffic, requests wait unanswered until ``released`` (then 503):
        # a smoke that is in flight when its runner dies.
        self.hold_when: Callable[[dict[str, float]], bool] | None = None
        self.released = threading.Event()
        self.answered: Counter[str] = Counter()
        self.analytics_dataset: str | None = None
        self._current: dict[str, float] = {}
        self._split: dict[str, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def choose(self, override: str | None) -> str:
        deployment = self.api.script(self.worker).current()
        traffic = deployment.traffic() if deployment else {}
        if not traffic:
            raise LookupError(f"{self.worker} has no deployment")
        if self.hold_when is not None and self.hold_when(traffic):
            self.released.wait(timeout=600)
            raise LookupError("held, then released unanswered")
        wanted = dict(_PAIR.findall(override or "")).get(self.worker)
        with self._lock:
            if traffic != self._split:  # a new deployment: the round-robin starts over
                self._split, self._current = dict(traffic), {}
            if self.honour_overrides and wanted in traffic:
                chosen = wanted
            else:
                for version, share in traffic.items():
                    self._current[version] = self._current.get(version, 0.0) + share
                chosen = max(traffic, key=lambda v: self._current[v])
                self._current[chosen] -= 100.0
            self.answered[chosen] += 1
        return chosen

    def start(self) -> WorkerFront:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                try:
                    version = front.choose(self.headers.get(OVERRIDE))
                except LookupError as exc:
                    send_answer(self, 503, {"content-type": "text/plain"}, str(exc).encode())
                    return
                connection = http.client.HTTPConnection(*front.upstream, timeout=30)
                started = time.perf_counter()
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    payload = answer.read()
                    out = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP}
                finally:
                    connection.close()
                out["x-immcad-version"] = version
                send_answer(self, answer.status, out, payload)
                if front.analytics_dataset:
                    scope = {"headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]}
                    front.api.analytics.write(
                        front.analytics_dataset,
                        version,
                        status=answer.status,
                        latency_ms=(time.perf_counter() - started) * 1000,
                        route=urlsplit(self.path).path,
                        method=self.command,
                        origin=layout.origin_of(scope),
                    )

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="worker-front", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def worker_front(api: FakeCloudflare, worker: str, upstream: str) -> Iterator[WorkerFront]:
    front = WorkerFront(api, worker, upstream).start()
    try:
        yield front
    finally:
        front.released.set()
        front.stop()
