"""The load generator: C long-lived worker coroutines, each timing send-and-read-body with perf_counter_ns.

Why it looks like this (benchmarks/perf_fidelity.py has the numbers): one httpx AsyncClient spends
so much CPU per request on pool bookkeeping that at 50 in flight it measured a 11 ms server at
hundreds of ms. The hot loop therefore runs on aiohttp by default (httpx engines remain selectable
for comparison), on uvloop where installed, with one worker coroutine per connection instead of one
task per request, and warm-up requests excluded from the statistics.

Closed model: N requests, C in flight, latency from send to last body byte. Open model (``rate``):
request i is *due* at start + i/rate; latency is measured from that due time, so when the server
stalls and every worker is busy, the wait of the requests that could not be sent is counted instead
of silently skipped (coordinated omission).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import httpx
import yarl

from cfops import output
from cfops.config import PerfProbe
from cfops.errors import CheckFailed, MissingToolError
from cfops.perf.config import ANSWERED_BY_HEADER, USER_AGENT, RunConfig, probe_body
from cfops.procs import Terminated, begin_unwinding
from immcad_api import analytics as layout

# One httpx pool stays fast up to about 10 connections (encode/httpcore#1035): shard above that.
HTTPX_SHARD_SIZE = 10
_PROGRESS_INTERVAL = 0.25
_LAG_PROBE_NS = 5_000_000
_EXAMPLE_CHARS = 160

ErrorKind = str  # "connect" | "timeout" | "4xx" | "5xx" | "unexpected status" | "protocol"
# status, body, and the x-immcad-version the answer carried (None without one)
Send = Callable[["Prepared", bytes | None], Awaitable[tuple[int, bytes, str | None]]]


@dataclass(frozen=True)
class Prepared:
    """A probe turned into what the hot loop sends: absolute URL, final headers, encoded body."""

    name: str
    method: str
    url: str
    headers: dict[str, str]
    expected: frozenset[int]
    body: bytes | None
    templated: bool

    def body_for(self, index: int) -> bytes | None:
        if self.templated and self.body is not None:
            return self.body.replace(b"{i}", str(index).encode())
        return self.body


def prepare(config: RunConfig, base_url: str) -> list[Prepared]:
    common = {"User-Agent": USER_AGENT, **config.headers}
    if config.bearer_token:
        common["Authorization"] = f"Bearer {config.bearer_token}"
    prepared = []
    for probe in config.probes:
        headers = dict(common)
        body = probe_body(probe)
        if probe.json is not None:
            headers["Content-Type"] = "application/json"
        headers.update(probe.headers)
        # Last, so no probe or --header can drop it: the release's analysis leaves these requests out
        # of the users' traffic it judges (immcad_api.analytics: the origin field).
        headers[layout.SYNTHETIC_HEADER] = layout.SYNTHETIC_VALUE
        prepared.append(
            Prepared(
                name=probe.name,
                method=probe.method,
                url=base_url + probe.path,
                headers=headers,
                expected=frozenset(probe.status),
                body=body,
                templated=body is not None and b"{i}" in body,
            )
        )
    return prepared


def schedule(probes: Sequence[PerfProbe]) -> list[int]:
    """Probe indices in smooth weighted round-robin order: weights 3:1 give a a b a, a a b a, …

    Deterministic, so a run of N requests sends each probe in proportion from the first requests on
    (a random mix would make short canaries differ run to run)."""
    total = sum(p.weight for p in probes)
    current = [0] * len(probes)
    order = []
    for _ in range(total):
        for i, probe in enumerate(probes):
            current[i] += probe.weight
        best = max(range(len(probes)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def classify_status(status: int, expected: frozenset[int]) -> ErrorKind | None:
    if status in expected:
        return None
    if 400 <= status < 500:
        return "4xx"
    if 500 <= status < 600:
        return "5xx"
    return "unexpected status"


def classify_error(exc: BaseException) -> ErrorKind:
    # httpx-aiohttp re-raises aiohttp errors as httpx ones (a dropped connection as ConnectTimeout):
    # classify the original where there is one.
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError | TimeoutError):
        exc = cause
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError | httpx.ConnectError | ConnectionRefusedError):
        return "connect"
    return "protocol"


# ------------------------------------------------------------------------------------------ engines


class Engine(Protocol):
    name: str

    def sender(self, worker: int) -> Send: ...

    async def aclose(self) -> None: ...


class AiohttpEngine:
    name = "aiohttp"

    def __init__(self, concurrency: int, timeout: float) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
            timeout=aiohttp.ClientTimeout(total=timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # every probe starts from the same state
            trust_env=False,
        )
        self._urls: dict[str, yarl.URL] = {}

    def sender(self, worker: int) -> Send:
        session, urls = self._session, self._urls

        async def send(p: Prepared, body: bytes | None) -> tuple[int, bytes, str | None]:
            url = urls.get(p.url)
            if url is None:
                url = urls[p.url] = yarl.URL(p.url)  # parsed once, not per request
            async with session.request(
                p.method, url, data=body, headers=p.headers, allow_redirects=False
            ) as response:
                return response.status, await response.read(), response.headers.get(ANSWERED_BY_HEADER)

        return send

    async def aclose(self) -> None:
        await self._session.close()


class HttpxEngine:
    """httpx as well as it goes: Limits sized to the concurrency, sharded over clients of at most
    10 connections, each worker bound to one client. Kept to show (and re-check) why it is not the
    default."""

    def __init__(self, concurrency: int, timeout: float, *, aiohttp_transport: bool = False) -> None:
        self.name = "httpx-aiohttp" if aiohttp_transport else "httpx"
        shards = math.ceil(concurrency / HTTPX_SHARD_SIZE)
        per_shard = math.ceil(concurrency / shards)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._clients = []
        for _ in range(shards):
            transport: httpx.AsyncBaseTransport | None = None
            if aiohttp_transport:
                try:
                    from httpx_aiohttp import AiohttpTransport
                except ImportError:
                    raise MissingToolError(
                        "engine httpx-aiohttp needs the httpx-aiohttp package: pip install -e '.[dev]'"
                    ) from None
                transport = AiohttpTransport(limits=limits)
            self._clients.append(
                httpx.AsyncClient(
                    limits=limits, timeout=httpx.Timeout(timeout), transport=transport, trust_env=False
                )
            )

    def sender(self, worker: int) -> Send:
        client = self._clients[worker % len(self._clients)]

        async def send(p: Prepared, body: bytes | None) -> tuple[int, bytes, str | None]:
            response = await client.request(p.method, p.url, content=body, headers=p.headers)
            return response.status_code, response.content, response.headers.get(ANSWERED_BY_HEADER)

        return send

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def make_engine(name: str, concurrency: int, timeout: float) -> Engine:
    if name == "aiohttp":
        return AiohttpEngine(concurrency, timeout)
    return HttpxEngine(concurrency, timeout, aiohttp_transport=name == "httpx-aiohttp")


# ------------------------------------------------------------------------------------------ results


@dataclass
class Samples:
    """Per measured request, in parallel lists (cheap to append from the hot loop)."""

    latency_ns: list[int] = field(default_factory=list)  # until the response, or until the error
    status: list[int] = field(default_factory=list)  # 0: no response (connect, timeout, protocol)
    kind: list[ErrorKind | None] = field(default_factory=list)
    probe: list[int] = field(default_factory=list)
    lag_ns: list[int] = field(default_factory=list)  # open model: actual send - due time
    version: list[str | None] = field(default_factory=list)  # which Worker version answered

    def __len__(self) -> int:
        return len(self.latency_ns)


@dataclass
class RunResult:
    samples: Samples
    probes: list[Prepared]
    wall_ns: int
    cpu_seconds: float
    warmup_sent: int
    warmup_failed: int
    examples: dict[ErrorKind, str]
    loop: str
    engine: str
    stopped_by_bound: bool
    loop_lag_ns: list[int] = field(default_factory=list)


class ProgressSink(Protocol):
    def update(self, done: int, failed: int, elapsed: float) -> None: ...


def _example(kind: ErrorKind, probe: Prepared, status: int, body: bytes, exc: BaseException | None) -> str:
    if exc is not None:
        text = f"{probe.name}: {type(exc).__name__}: {exc}".strip().rstrip(":")
    else:
        snippet = " ".join(body[:_EXAMPLE_CHARS].decode(errors="replace").split())
        text = f"{probe.name}: HTTP {status}" + (f" {snippet}" if snippet else "")
    return output.redact(text)[: _EXAMPLE_CHARS + 40]


async def _run(config: RunConfig, base_url: str, progress: ProgressSink | None) -> RunResult:
    probes = prepare(config, base_url)
    order = schedule(config.probes)
    engine = make_engine(config.engine, config.concurrency, config.timeout_seconds)
    samples = Samples()
    examples: dict[ErrorKind, str] = {}
    failed = 0
    bound_ns = int(config.bounds.max_duration_seconds * 1e9)

    async def one(send: Send, index: int, due_ns: int | None) -> None:
        nonlocal failed
        probe = probes[order[index % len(order)]]
        body = probe.body_for(index)
        status, payload, version = 0, b"", None
        error: BaseException | None = None
        started = time.perf_counter_ns()
        try:
            status, payload, version = await send(probe, body)
            kind = classify_status(status, probe.expected)
        except (aiohttp.ClientError, httpx.HTTPError, OSError, TimeoutError) as exc:
            kind, error = classify_error(exc), exc
        finished = time.perf_counter_ns()
        origin = started if due_ns is None else due_ns
        samples.latency_ns.append(finished - origin)
        samples.status.append(status)
        samples.kind.append(kind)
        samples.probe.append(order[index % len(order)])
        samples.lag_ns.append(0 if due_ns is None else max(0, started - due_ns))
        samples.version.append(version)
        if kind is not None:
            failed += 1
            if kind not in examples:
                examples[kind] = _example(kind, probe, status, payload, error)

    try:
        # Warm-up: open the connections and wake the server, outside the statistics.
        warm_failed = 0
        if config.warmup:
            counter = iter(range(config.warmup))

            async def warm(worker: int) -> None:
                nonlocal warm_failed
                send = engine.sender(worker)
                for index in counter:
                    probe = probes[order[index % len(order)]]
                    try:
                        status, _, _ = await send(probe, probe.body_for(index))
                        warm_failed += classify_status(status, probe.expected) is not None
                    except (aiohttp.ClientError, httpx.HTTPError, OSError, TimeoutError):
                        warm_failed += 1

            try:
                await asyncio.wait_for(
                    asyncio.gather(*(warm(w) for w in range(config.concurrency))),
                    timeout=config.bounds.max_duration_seconds,
                )
            except TimeoutError:
                raise CheckFailed(
                    f"{config.warmup} warm-up requests did not finish within the "
                    f"{config.bounds.max_duration_seconds:g} s bound; lower --warmup"
                ) from None

        total = config.requests
        indices = itertools.count()
        cpu_start = time.process_time()
        start_ns = time.perf_counter_ns()
        deadline_ns = start_ns + (
            int(config.duration_seconds * 1e9) if config.duration_seconds is not None else bound_ns
        )
        deadline_ns = min(deadline_ns, start_ns + bound_ns)
        interval_ns = 1e9 / config.rate if config.rate else 0.0
        stopped_by_bound = False

        async def worker(w: int) -> None:
            nonlocal stopped_by_bound
            send = engine.sender(w)
            while True:
                index = next(indices)
                if index >= total:
                    return
                if config.rate:
                    due = start_ns + round(index * interval_ns)
                    if due >= deadline_ns:
                        return
                    wait = due - time.perf_counter_ns()
                    if wait > 0:
                        await asyncio.sleep(wait / 1e9)
                    await one(send, index, due)
                else:
                    if time.perf_counter_ns() >= deadline_ns:
                        stopped_by_bound = config.duration_seconds is None
                        return
                    await one(send, index, None)

        async def monitor() -> None:
            # How late does a timer fire? A response that arrives is timed no sooner than the loop
            # gets to it, so this lag is what the client adds to every latency it reports, whether
            # the loop is busy or the process is starved of CPU by others.
            last_progress = start_ns
            while True:
                before = time.perf_counter_ns()
                await asyncio.sleep(_LAG_PROBE_NS / 1e9)
                now = time.perf_counter_ns()
                loop_lag.append(max(0, now - before - _LAG_PROBE_NS))
                if progress is not None and now - last_progress >= _PROGRESS_INTERVAL * 1e9:
                    last_progress = now
                    progress.update(len(samples), failed, (now - start_ns) / 1e9)

        loop_lag: list[int] = []
        reporter = asyncio.create_task(monitor())
        try:
            await asyncio.gather(*(worker(w) for w in range(config.concurrency)))
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
        wall_ns = time.perf_counter_ns() - start_ns
        cpu = time.process_time() - cpu_start
        if progress is not None:
            progress.update(len(samples), failed, wall_ns / 1e9)
    finally:
        await engine.aclose()
    return RunResult(
        samples=samples,
        probes=probes,
        wall_ns=wall_ns,
        cpu_seconds=cpu,
        warmup_sent=config.warmup,
        warmup_failed=warm_failed,
        examples=examples,
        loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
        engine=engine.name,
        stopped_by_bound=stopped_by_bound,
        loop_lag_ns=loop_lag,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where the platform has it
        return None
    return uvloop.new_event_loop


def generate(config: RunConfig, base_url: str, progress: ProgressSink | None = None) -> RunResult:
    """Run the load described by ``config`` against ``base_url`` and return every sample.

    Ctrl-C is handled by asyncio.Runner (it cancels the run, then raises KeyboardInterrupt). SIGTERM
    gets the same treatment here: raised from a Python signal handler it could land inside one of
    uvloop's C callbacks, which would print a traceback instead of unwinding cleanly. So does an alarm
    the caller armed (a release step's time limit): the run is cancelled, then the caller's SIGALRM
    handler runs here, outside the loop, where what it raises unwinds as it should.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        loop = runner.get_loop()
        task: asyncio.Task[RunResult] | None = None
        stopped_by: int | None = None  # SIGTERM or SIGALRM, once one has cancelled the run

        def stop(signum: int) -> None:
            nonlocal stopped_by
            stopped_by = signum
            if task is not None:
                task.cancel()

        async def run() -> RunResult:
            nonlocal task
            task = asyncio.current_task()
            return await _run(config, base_url, progress)

        previous = signal.getsignal(signal.SIGTERM)
        previous_int = signal.getsignal(signal.SIGINT)
        previous_alarm = signal.getsignal(signal.SIGALRM)
        if main_thread:
            loop.add_signal_handler(signal.SIGTERM, stop, signal.SIGTERM)
            if callable(previous_alarm):
                loop.add_signal_handler(signal.SIGALRM, stop, signal.SIGALRM)
            if previous_int is not signal.SIG_IGN:
                # asyncio.Runner takes Ctrl-C over (cancel, then KeyboardInterrupt) only from Python's
                # own handler, not from cli's unwind-once one.
                signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return runner.run(run())
        except KeyboardInterrupt:
            begin_unwinding()  # the caller's cleanup runs now: a later Ctrl-C must not cut it short
            raise
        except asyncio.CancelledError:
            if stopped_by == signal.SIGTERM:
                begin_unwinding()
                raise Terminated from None
            if stopped_by == signal.SIGALRM and callable(previous_alarm):
                previous_alarm(signal.SIGALRM, None)  # the caller's time limit, raised out here
            raise
        finally:
            if main_thread:
                loop.remove_signal_handler(signal.SIGTERM)
                signal.signal(signal.SIGTERM, previous)  # the caller's handler, not the default
                if callable(previous_alarm):
                    loop.remove_signal_handler(signal.SIGALRM)
                    signal.signal(signal.SIGALRM, previous_alarm)
                if previous_int is not None:
                    signal.signal(signal.SIGINT, previous_int)
