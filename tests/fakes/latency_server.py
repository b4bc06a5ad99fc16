"""A real HTTP server on 127.0.0.1 whose latency and status follow a script, for cfops.perf's tests.

``python -m tests.fakes.latency_server --port N`` (the ``latency_server`` context manager starts it as a
process owned by the test). Counters are per full URL (path + query), so each test picks its own
``tag=`` and gets a fresh script:

- ``/script?fast_ms=5&slow_ms=400&every=20``: the k-th request (k = 1, 2, …) sleeps ``slow_ms`` when k is
  a multiple of ``every``, else ``fast_ms``: N requests give exactly N/every slow ones.
- ``/status?code=503&every=4``: every ``every``-th request answers ``code``, the others 200.
- ``/sleep?ms=N``: sleeps N ms. ``/redirect``: 302. ``/drop``: closes the connection without answering.
- ``/stall?after_ms=300&for_ms=1000``: the first request starts a clock; requests arriving between
  ``after_ms`` and ``after_ms + for_ms`` are held until that window ends (a stalled server).
- ``/auth``: 200 with ``Authorization: Bearer $FAKE_TOKEN``; otherwise 401 *echoing what it was sent*
  (a careless server), which is how the tests prove the client redacts its token from error examples.
- ``/require-header?name=X&value=Y``: 200 when header X equals Y, else 412 naming what arrived; for a
  version override (``<worker>="<id>"``) the 200 carries ``x-immcad-version: <id>``, as an honoured one does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from cfops import procs

OVERRIDE_HEADER = "cloudflare-workers-version-overrides"

_counts: Counter[str] = Counter()
_stall_start: dict[str, float] = {}


def _int(request: web.Request, name: str, default: int) -> int:
    return int(request.query.get(name, default))


async def script(request: web.Request) -> web.Response:
    _counts[str(request.rel_url)] += 1
    k = _counts[str(request.rel_url)]
    slow = k % _int(request, "every", 10) == 0
    await asyncio.sleep(_int(request, "slow_ms" if slow else "fast_ms", 400 if slow else 5) / 1000)
    return web.Response(text="slow" if slow else "fast")


async def status(request: web.Request) -> web.Response:
    _counts[str(request.rel_url)] += 1
    if _counts[str(request.rel_url)] % _int(request, "every", 1) == 0:
        return web.Response(status=_int(request, "code", 503), text="scripted status")
    return web.Response(text="ok")


async def sleep(request: web.Request) -> web.Response:
    await asyncio.sleep(_int(request, "ms", 10) / 1000)
    return web.Response(text="ok")


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/sleep?ms=1"})


async def drop(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    return web.Response(text="never sent")


async def stall(request: web.Request) -> web.Response:
    key = str(request.rel_url)
    now = time.monotonic()
    start = _stall_start.setdefault(key, now)
    begin = start + _int(request, "after_ms", 300) / 1000
    end = begin + _int(request, "for_ms", 1000) / 1000
    if begin <= now < end:
        await asyncio.sleep(end - now)
    return web.Response(text="ok")


async def auth(request: web.Request) -> web.Response:
    presented = request.headers.get("Authorization", "")
    if presented == f"Bearer {os.environ.get('FAKE_TOKEN', '')}":
        return web.Response(text="ok")
    return web.Response(status=401, text=f"invalid credentials: {presented}")


async def require_header(request: web.Request) -> web.Response:
    name, value = request.query["name"], request.query["value"]
    got = request.headers.get(name)
    if got == value:
        # Cloudflare honouring a version override answers from that version, and the backend names it.
        honoured = re.fullmatch(r'[^=]+="([^"]+)"', value) if name.lower() == OVERRIDE_HEADER else None
        return web.Response(text="ok", headers={"x-immcad-version": honoured[1]} if honoured else {})
    return web.Response(status=412, text=f"{name} was {got!r}")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def app() -> web.Application:
    application = web.Application()
    for path, handler in {
        "/script": script,
        "/status": status,
        "/sleep": sleep,
        "/redirect": redirect,
        "/drop": drop,
        "/stall": stall,
        "/auth": auth,
        "/require-header": require_header,
        "/healthz": healthz,
    }.items():
        application.router.add_route("*", path, handler)
    return application


@contextmanager
def latency_server(**env: str) -> Iterator[str]:
    """Start the server as a process on a free port; yields its base URL; stops it on exit."""
    port = procs.free_port()
    repo = Path(__file__).resolve().parents[2]
    with procs.Service(
        "latency-server",
        [sys.executable, "-m", "tests.fakes.latency_server", "--port", str(port)],
        cwd=repo,
        env=env,
        health_url=f"http://127.0.0.1:{port}/healthz",
        ready_timeout=30,
        forward_output=False,
    ):
        yield f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(app(), host="127.0.0.1", port=args.port, access_log=None, print=None)
