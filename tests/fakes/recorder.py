"""A recording HTTP backend: answers any path and remembers exactly what it received.

Served by a real uvicorn (``python -m tests.fakes.recorder --port N``). Every request is recorded with
its method, the raw path as it arrived on the wire, the query, headers and body. Behaviour is
chosen by query parameters, so any allowlisted path can be made slow or failing:

- ``sleep_ms=N``: wait N ms before answering;
- ``status=N``: answer with that status;
- ``redirect=URL``: answer 302 to URL;
- ``hop=1``: add connection-scoped headers to the response (a proxy must strip them).

Every response carries ``x-backend-header: 1`` and ``x-immcad-version: recorder``, which a proxy must
pass through.

``GET /__recorder/requests`` returns the records (never recorded itself); tests call it directly, not
through the proxy. The response body echoes the record as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CONTROL_PREFIX = "/__recorder/"


class Recorder:
    """A raw ASGI app (no framework: it must see the request target exactly as it arrived)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": f"{kind}.complete"})  # lifespan.startup / lifespan.shutdown
                if kind == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        raw_path = scope.get("raw_path") or scope["path"].encode()
        target = raw_path.decode("latin-1")
        if scope["path"].startswith(CONTROL_PREFIX):
            await self._respond(send, 200, self.records, [])
            return
        query = scope["query_string"].decode("latin-1")
        record = {
            "method": scope["method"],
            "path": target,
            "query": query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": body.decode("latin-1")[:2000],
            "at": time.time(),
        }
        self.records.append(record)
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if "sleep_ms" in params:
            await asyncio.sleep(int(params["sleep_ms"]) / 1000)
        extra: list[tuple[bytes, bytes]] = []
        if params.get("hop") == "1":
            extra += [
                (b"connection", b"x-private-hop"),
                (b"x-private-hop", b"1"),
                (b"keep-alive", b"timeout=5"),
            ]
        if "redirect" in params:
            extra.append((b"location", params["redirect"].encode()))
            await self._respond(send, 302, record, extra)
            return
        await self._respond(send, int(params.get("status", "200")), record, extra)

    @staticmethod
    async def _respond(send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]]) -> None:
        data = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
            (b"x-backend-header", b"1"),
            (b"x-immcad-version", b"recorder"),  # as the backend names its version
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers + extra})
        await send({"type": "http.response.body", "body": data})


app = Recorder()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.recorder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
