"""What the edge proxy adds to a request, locally: the backend direct vs through wrangler dev (workerd).

    python benchmarks/proxy_overhead.py [--requests 300] [--path /healthz]

Starts the backend (``python -m immcad_api``, uvicorn) and the proxy Worker in front of it on free
ports on 127.0.0.1, warms both up, then sends the same sequential GETs to each with one keep-alive
httpx client per target and prints latency percentiles. Numbers depend on the machine's load: quote
them with the machine they came from.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import httpx

from cfops import output, procs
from cfops.config import load_settings
from cfops.proxy import edge_proxy


def measure(url: str, count: int) -> list[float]:
    timings: list[float] = []
    with httpx.Client(timeout=httpx.Timeout(30.0), trust_env=False) as client:
        for _ in range(min(20, count)):  # warm-up: connections, workerd's first isolate, uvicorn
            client.get(url).raise_for_status()
        for _ in range(count):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/proxy_overhead.py", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--path", default="/healthz")
    args = parser.parse_args()
    settings = load_settings()
    port = procs.free_port()
    backend = procs.Service(
        "backend",
        [sys.executable, "-m", "immcad_api", "--port", str(port), "--log-level", "warning"],
        env={"ENVIRONMENT": "development", "IMMCAD_ENVIRONMENT": "development"},
        health_url=f"http://127.0.0.1:{port}/healthz",
        forward_output=False,
    )
    with backend, edge_proxy(settings, origin=f"http://127.0.0.1:{port}", forward_output=False) as proxy:
        results = {
            "direct (uvicorn)": measure(f"http://127.0.0.1:{port}{args.path}", args.requests),
            "through the proxy (wrangler dev, workerd)": measure(f"{proxy.url}{args.path}", args.requests),
        }
    output.echo(f"GET {args.path}, {args.requests} sequential requests per target (ms)")
    output.echo(f"{'target':<44}{'p50':>8}{'p95':>8}{'p99':>8}{'mean':>8}")
    for name, timings in results.items():
        row = [percentile(timings, 0.5), percentile(timings, 0.95), percentile(timings, 0.99)]
        row.append(statistics.fmean(timings))
        output.echo(f"{name:<44}" + "".join(f"{value:>8.2f}" for value in row))
    direct, proxied = results.values()
    added = percentile(proxied, 0.5) - percentile(direct, 0.5)
    output.echo(f"added by the proxy at p50: {added:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
