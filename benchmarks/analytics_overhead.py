"""What recording one analytics data point per request costs: the middleware around a trivial ASGI app,
with a sink (a list append standing in for the binding's non-blocking ``writeDataPoint``) and without
one (the middleware passes straight through).

    .nox/tests/bin/python benchmarks/analytics_overhead.py [--requests 20000] [--rounds 5]

The middleware is called directly (no HTTP client, no FastAPI stack), so the difference is its own
work — the route-template lookup against the real app's routes (the case where routing has not run,
e.g. a 401 from auth), timing, building the point. Rounds are interleaved; medians are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import MutableMapping
from typing import Any

from immcad_api.analytics import DataPoint, RequestAnalytics
from immcad_api.main import _route_template, create_app
from immcad_api.settings import Settings

Message = MutableMapping[str, Any]


async def _inner(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


async def _round(layer: RequestAnalytics, requests: int) -> float:
    scope = {"type": "http", "method": "POST", "path": "/api/chat", "root_path": "", "headers": []}
    started = time.perf_counter()
    for _ in range(requests):
        await layer(dict(scope), _receive, _send)
    return (time.perf_counter() - started) / requests * 1e6  # µs per request


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/analytics_overhead.py")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    route_of = _route_template(create_app(Settings(version_id="bench")))
    points: list[DataPoint] = []
    layers = {
        "no sink": RequestAnalytics(_inner, sink=None, version="bench", route_of=route_of),
        "sink": RequestAnalytics(_inner, sink=points.append, version="bench", route_of=route_of),
    }
    results: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(args.rounds):
        for name, layer in layers.items():
            results[name].append(asyncio.run(_round(layer, args.requests)))
    for name, values in results.items():
        rounds = [round(v, 1) for v in values]
        print(f"{name:8} median {statistics.median(values):6.1f} µs/request  rounds {rounds}")
    delta = statistics.median(results["sink"]) - statistics.median(results["no sink"])
    print(f"analytics data point: {delta:+.1f} µs/request ({len(points)} points, last {points[-1].route})")


if __name__ == "__main__":
    main()
