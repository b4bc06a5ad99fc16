"""Does `nox -s perf_smoke` measure the server, or itself? Compare it with wrk on the same server.

One local server with a 10 ms and a 50 ms endpoint (nginx + the echo module's echo_sleep when
installed, else a small aiohttp server), pinned to CPU 0; every client pinned to CPU 1. For C = 5 and
C = 50 on both endpoints, each client runs for --duration seconds, --runs times; the table shows the
median of the runs. Clients: wrk (the reference), and cfops.perf with each hot-loop engine.

Goals (issue 5), per engine and case: p50 and p95 within 1.25 x wrk's + 1 ms; at C = 50 on the 10 ms
endpoint, throughput at least 80 % of wrk's. Exit 0 when the default engine meets every goal.

    apt-get install wrk nginx libnginx-mod-http-echo     # nginx is optional (fallback: aiohttp server)
    python3 -m nox -s perf_fidelity [-- --runs 3 --duration 3]

Not part of the test suite: it needs a quiet machine to mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cfops import procs
from cfops.perf.config import ENGINES

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = {"10 ms": "/sleep10", "50 ms": "/sleep50"}
CONCURRENCIES = (5, 50)
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
WRK_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95)))
end
"""
NGINX_CONF = """
load_module {module};
worker_processes 1;
daemon off;
master_process off;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location = /healthz {{ return 200 "ok"; }}
    location = /sleep10 {{ echo_sleep 0.01; echo ok; }}
    location = /sleep50 {{ echo_sleep 0.05; echo ok; }}
  }}
}}
"""


@dataclass(frozen=True)
class Sample:
    rps: float
    p50: float
    p95: float
    cpu_ratio: float | None = None
    lag_p95: float | None = None


def pin(cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


@contextmanager
def server(tmp: Path) -> Iterator[tuple[str, str]]:
    port = procs.free_port()
    if shutil.which("nginx") and ECHO_MODULE.is_file():
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(module=ECHO_MODULE, tmp=tmp, port=port))
        cmd = [*pin(0), "nginx", "-e", str(tmp / "error.log"), "-p", str(tmp), "-c", str(conf)]
        kind = "nginx + echo_sleep"
    else:
        cmd = [*pin(0), sys.executable, __file__, "--serve", str(port)]
        kind = "aiohttp server (nginx + libnginx-mod-http-echo not installed)"
    with procs.Service("server", cmd, health_url=f"http://127.0.0.1:{port}/healthz", forward_output=False):
        yield f"http://127.0.0.1:{port}", kind


def run_wrk(url: str, concurrency: int, duration: float, script: Path) -> Sample:
    result = procs.run(
        [*pin(1), "wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "-s", str(script), url],
        echo=False,
        timeout=duration + 60,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    requests, micros, p50, p95 = (int(v) for v in line.split()[1:])
    return Sample(rps=requests / (micros / 1e6), p50=p50 / 1000, p95=p95 / 1000)


def run_tool(url: str, path: str, engine: str, concurrency: int, duration: float, tmp: Path) -> Sample:
    scenario = tmp / "scenario.yaml"
    scenario.write_text(f"get: {{method: GET, path: {path}}}\n")
    artifact = tmp / "perf.json"
    env = {k: v for k, v in os.environ.items() if k not in {"GITHUB_STEP_SUMMARY", "IMMCAD_API_BEARER_TOKEN"}}
    procs.run(
        [
            *pin(1),
            sys.executable,
            "-m",
            "cfops.perf",
            "--base-url",
            url,
            "--scenario",
            str(scenario),
            "--engine",
            engine,
            "--concurrency",
            str(concurrency),
            "--duration",
            f"{duration:g}",
            "--warmup",
            str(concurrency * 4),
            "--max-p95",
            "60",
            "--json",
            str(artifact),
        ],
        env={**env, "CFOPS_ROOT": str(ROOT), "CI": "true"},
        inherit_env=False,
        echo=False,
        timeout=duration + 120,
        check=False,  # the tool's own verdict does not matter here, its numbers do
    )
    data = json.loads(artifact.read_text())
    lat = data["stats"]["latency_ms"]
    return Sample(
        rps=data["stats"]["throughput_rps"],
        p50=lat["p50"],
        p95=lat["p95"],
        cpu_ratio=data["self_check"]["cpu_ratio"],
        lag_p95=(data["self_check"]["event_loop_lag_ms"] or {}).get("p95"),
    )


def median(samples: list[Sample]) -> Sample:
    ratios = [s.cpu_ratio for s in samples if s.cpu_ratio is not None]
    lags = [s.lag_p95 for s in samples if s.lag_p95 is not None]
    return Sample(
        rps=statistics.median(s.rps for s in samples),
        p50=statistics.median(s.p50 for s in samples),
        p95=statistics.median(s.p95 for s in samples),
        cpu_ratio=statistics.median(ratios) if ratios else None,
        lag_p95=statistics.median(lags) if lags else None,
    )


def within(value: float, reference: float) -> bool:
    return value <= 1.25 * reference + 1.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/perf_fidelity.py", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per client per case")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {ENGINES}")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the fallback server process
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    procs.which("wrk", hint="apt-get install wrk")
    engines = [e for e in args.engines.split(",") if e]
    clients = ["wrk", *engines]
    results: dict[tuple[str, str, int], list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="perf-fidelity-") as raw:
        tmp = Path(raw)
        script = tmp / "latency.lua"
        script.write_text(WRK_SCRIPT)
        with server(tmp) as (base, kind):
            print(f"server: {kind}, pinned to CPU 0; clients pinned to CPU 1; {os.cpu_count()} CPUs")
            print(f"{args.runs} runs x {args.duration:g} s per client and case; table: median of the runs\n")
            for run in range(args.runs):
                for label, path in ENDPOINTS.items():
                    for concurrency in CONCURRENCIES:
                        for client in clients:
                            if client == "wrk":
                                sample = run_wrk(base + path, concurrency, args.duration, script)
                            else:
                                sample = run_tool(base, path, client, concurrency, args.duration, tmp)
                            results.setdefault((client, label, concurrency), []).append(sample)
                print(f"run {run + 1}/{args.runs} done", flush=True)
    return report(results, clients, engines)


def report(results: dict[tuple[str, str, int], list[Sample]], clients: list[str], engines: list[str]) -> int:
    header = "| client | endpoint | C | req/s | p50 ms | p95 ms | client CPU | loop lag p95 ms | goals |"
    print("\n" + header + "\n" + "| --- " * 9 + "|")
    verdicts: dict[str, bool] = {}
    for label in ENDPOINTS:
        for concurrency in CONCURRENCIES:
            ref = median(results[("wrk", label, concurrency)])
            for client in clients:
                m = median(results[(client, label, concurrency)])
                goals = ""
                if client != "wrk":
                    checks = [
                        ("p50", within(m.p50, ref.p50)),
                        ("p95", within(m.p95, ref.p95)),
                    ]
                    if label == "10 ms" and concurrency == 50:
                        checks.append(("req/s", m.rps >= 0.8 * ref.rps))
                    goals = " ".join(f"{name} {'✓' if ok else '✗'}" for name, ok in checks)
                    verdicts[client] = verdicts.get(client, True) and all(ok for _, ok in checks)
                cpu = f"{m.cpu_ratio:.0%}" if m.cpu_ratio is not None else "–"
                lag = f"{m.lag_p95:.2f}" if m.lag_p95 is not None else "–"
                print(
                    f"| {client} | {label} | {concurrency} | {m.rps:.0f} | {m.p50:.2f} | {m.p95:.2f} | {cpu} "
                    f"| {lag} | {goals} |"
                )
    print()
    for client in engines:
        verdict = "PASS" if verdicts[client] else "FAIL"
        print(f"{client}: {verdict} (p50/p95 <= 1.25 x wrk + 1 ms; req/s >= 80 %)")
    default = "aiohttp"
    return 0 if verdicts.get(default, False) else 1


def serve(port: int) -> int:
    """The fallback server: aiohttp on uvloop, one process (pinned by the caller)."""
    import asyncio

    from aiohttp import web

    async def sleeper(request: web.Request) -> web.Response:
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return web.Response(text="ok")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/sleep{ms:\\d+}", sleeper)
    app.router.add_get("/healthz", healthz)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
