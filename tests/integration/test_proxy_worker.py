"""The edge proxy Worker (backend-cloudflare/src/worker.ts) as it runs: in workerd, under the pinned
``wrangler dev`` (cfops.proxy.edge_proxy), in front of a real recording backend on 127.0.0.1.

Each wrangler dev configuration is started once per module. The two checks that must wait out a
long timeout (60 s and 15 s) are sent in the background when the module starts and collected by their
tests at the end, so the module costs about one minute, not two.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from cfops import procs
from cfops.config import Settings, load_settings
from cfops.proxy import EdgeProxy, edge_proxy
from tests.conftest import REPO, clean_env
from tests.integration.edge import (
    RawResponse,
    RecordingBackend,
    bare_workerd,
    bundle_proxy,
    raw_request,
    recording_backend,
)

# One worker runs the whole module under parallel runs: each wrangler dev configuration starts once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("proxy-worker")]

ALLOWLIST = json.loads((REPO / "backend-cloudflare/src/allowlist.json").read_text())
SPOOFED_TRACE = "spoofed-trace-id-0001"

# name -> (BACKEND_ORIGIN kind, vars). "recorder" is the recording backend's URL.
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "main": ("recorder", {"BACKEND_REQUEST_TIMEOUT_MS": "2000", "BACKEND_RETRY_ATTEMPTS": "2"}),
    "low": ("recorder", {"BACKEND_REQUEST_TIMEOUT_MS": "10", "BACKEND_RETRY_ATTEMPTS": "-4"}),
    "high": ("recorder", {"BACKEND_REQUEST_TIMEOUT_MS": "600000", "BACKEND_RETRY_ATTEMPTS": "9"}),
    "nan": ("recorder", {"BACKEND_REQUEST_TIMEOUT_MS": "soon", "BACKEND_RETRY_ATTEMPTS": "twice"}),
    "no_origin": ("", {}),
    "ftp_origin": ("ftp", {}),
    "unreachable": ("closed", {"BACKEND_REQUEST_TIMEOUT_MS": "2000", "BACKEND_RETRY_ATTEMPTS": "2"}),
}
ProxyFactory = Callable[[str], EdgeProxy]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(REPO, environ=clean_env())


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingBackend]:
    with recording_backend() as backend:
        yield backend


@pytest.fixture(scope="module")
def proxy(settings: Settings, recorder: RecordingBackend) -> Iterator[ProxyFactory]:
    """``proxy(name)``: the wrangler dev instance for CONFIGS[name], started on first use."""
    started: dict[str, EdgeProxy] = {}
    with ExitStack() as stack:

        def get(name: str) -> EdgeProxy:
            if name not in started:
                kind, worker_vars = CONFIGS[name]
                origin = {
                    "recorder": recorder.url,
                    "": "",
                    "ftp": "ftp://" + recorder.url.removeprefix("http://"),
                    "closed": f"http://127.0.0.1:{procs.free_port()}",  # nothing listens there
                }[kind]
                started[name] = stack.enter_context(
                    edge_proxy(settings, origin=origin, vars=worker_vars, forward_output=False)
                )
            return started[name]

        yield get


@pytest.fixture(scope="module", autouse=True)
def slow_probes(request: pytest.FixtureRequest, proxy: ProxyFactory) -> Iterator[dict[str, Future[Any]]]:
    """Start the 60 s and 15 s timeout probes first (only when their tests are selected)."""
    selected = {item.name for item in request.session.items}
    probes = {
        "test_timeout_above_the_maximum_is_clamped_to_60_s": ("high", 64000),
        "test_non_numeric_tunables_fall_back_to_the_defaults": ("nan", 17000),
    }
    futures: dict[str, Future[Any]] = {}
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        for test, (name, sleep_ms) in probes.items():
            if test in selected:
                target = proxy(name)
                futures[test] = pool.submit(timed_post, target.url, f"/api/slow-{name}?sleep_ms={sleep_ms}")
        yield futures


def timed_post(url: str, target: str) -> tuple[float, RawResponse]:
    started = time.monotonic()
    response = raw_request(url, target.encode(), method=b"POST", body=b"{}", timeout=120)
    return time.monotonic() - started, response


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def assert_refused(response: RawResponse, reason: str) -> None:
    assert response.status == 404, response.body
    error = response.error()
    assert error["code"] == "VALIDATION_ERROR"
    assert error["policy_reason"] == reason, error


# ----------------------------------------------------------------------------------- the allowlist


def test_every_allowlisted_route_and_method_reaches_the_backend(
    proxy: ProxyFactory, recorder: RecordingBackend
) -> None:
    url = proxy("main").url
    paths = list(ALLOWLIST["exact"]) + [unique(prefix + "route-") for prefix in ALLOWLIST["prefixes"]]
    assert "/healthz" in paths and any(p.startswith("/api/") for p in paths)
    for path in paths:
        for method in ALLOWLIST["methods"]:
            before = len(recorder.records(path))
            body = b'{"probe": true}' if method == "POST" else b""
            response = raw_request(url, f"{path}?q=1&x=%2F..".encode(), method=method.encode(), body=body)
            assert response.status == 200, (method, path, response.body)
            assert response.headers["x-backend-header"] == "1"
            assert response.headers["x-immcad-version"] == "recorder"  # the canary's proof passes through
            received = recorder.records(path)[before:]
            assert [(r["method"], r["path"], r["query"]) for r in received] == [(method, path, "q=1&x=%2F..")]
            if method == "POST":
                assert received[0]["body"] == '{"probe": true}'
            # the origin's host, not the proxy's: the URL was built from BACKEND_ORIGIN
            assert dict(received[0]["headers"])["host"] == recorder.url.removeprefix("http://")


@pytest.mark.parametrize(
    "target",
    [
        "/",
        "/nope",
        "/Healthz",
        "/healthz/",
        "/healthzx",
        "/api",
        "/apix/y",
        "/API/x",
        "/Ops/metrics",
        "/opsy",
    ],
)
def test_paths_outside_the_allowlist_are_refused(
    proxy: ProxyFactory, recorder: RecordingBackend, target: str
) -> None:
    before = recorder.paths()
    assert_refused(raw_request(proxy("main").url, target.encode()), "path_not_allowlisted")
    assert recorder.paths() == before


@pytest.mark.parametrize("method", [b"PUT", b"PATCH", b"DELETE", b"TRACE"])
def test_methods_outside_the_allowlist_are_refused(
    proxy: ProxyFactory, recorder: RecordingBackend, method: bytes
) -> None:
    before = recorder.paths()
    assert_refused(raw_request(proxy("main").url, b"/api/chat", method=method), "method_not_allowlisted")
    assert recorder.paths() == before


# ------------------------------------------------------------------------------------ hostile paths

# Spellings that reach the Worker as sent under wrangler dev: refused by the Worker itself.
HOSTILE = [
    (b"//api/x", "double_slash"),
    (b"/api//x", "double_slash"),
    (b"/api/x//", "double_slash"),
    (b"//127.0.0.1:1/api/x", "double_slash"),
    (b"/api/%2fetc", "encoded_slash"),
    (b"/api/%2Fetc", "encoded_slash"),
    (b"/api/%5cetc", "encoded_slash"),
    (b"/api/%5Cetc", "encoded_slash"),
    (b"/api/..%2f..%2fops/metrics", "encoded_slash"),
    (b"/api/%252f", "encoded_slash"),  # encoded twice
    (b"/api/%00", "control_character"),
    (b"/api/x%0a", "control_character"),
    (b"/api/x%0D%0Ax-injected:%201", "control_character"),
    (b"/api/%09", "control_character"),
    (b"/api/%1f", "control_character"),
    (b"/api/%7F", "control_character"),
    (b"/api/%252e%252e/ops/metrics", "dot_segment"),  # dot segments encoded twice
    (b"/api/%25%32%65%25%32%65/x", "dot_segment"),
    (b"/api/%zz", "malformed_percent_encoding"),
    (b"/api/x%", "malformed_percent_encoding"),
    (b"/api/%c0%ae%c0%ae/x", "malformed_percent_encoding"),  # overlong UTF-8 "."
    (b"/api/%u002e%u002e/x", "malformed_percent_encoding"),
]


@pytest.mark.parametrize(("target", "reason"), HOSTILE, ids=[t.decode("latin-1") for t, _ in HOSTILE])
def test_hostile_paths_are_refused_and_never_reach_the_backend(
    proxy: ProxyFactory, recorder: RecordingBackend, target: bytes, reason: str
) -> None:
    before = recorder.paths()
    assert_refused(raw_request(proxy("main").url, target), reason)
    assert recorder.paths() == before


# Raw control bytes in the request line: workerd's HTTP parser (since the 2026 releases that wrangler 4.164
# pins; earlier ones passed \x01 and \x7f through to the Worker) refuses the request line itself.
@pytest.mark.parametrize("target", [b"/api/\x00x", b"/api/\x01x", b"/api/x\x7f"], ids=["NUL", "SOH", "DEL"])
def test_raw_control_bytes_are_rejected_before_the_worker(
    proxy: ProxyFactory, recorder: RecordingBackend, target: bytes
) -> None:
    before = recorder.paths()
    response = raw_request(proxy("main").url, target)
    assert response.status == 400
    assert recorder.paths() == before


# Literal and single-encoded dot segments and raw backslashes: under wrangler dev, miniflare's entry
# Worker parses the URL (WHATWG) before the proxy runs, so the proxy receives them already resolved.
# What matters is that no dot segment or backslash ever reaches the origin, and that a resolution
# leaving the allowlist is refused. Bare workerd (below) shows the Worker's own refusal of them.
RESOLVED_BEFORE_THE_WORKER = [
    (b"/api/x/../y", "/api/y"),
    (b"/api/x/%2e%2e/y", "/api/y"),
    (b"/api/x/%2E%2e/y", "/api/y"),
    (b"/api/x/.%2e/y", "/api/y"),
    (b"/api/./x", "/api/x"),
    (b"/api\\x", "/api/x"),
    (b"/api/%2e%2e/internal", None),
    (b"/api/..\\..\\internal", None),
    (b"/healthz/..", None),
]


@pytest.mark.parametrize(
    ("target", "forwarded"),
    RESOLVED_BEFORE_THE_WORKER,
    ids=[t.decode("latin-1") for t, _ in RESOLVED_BEFORE_THE_WORKER],
)
def test_dot_segments_never_reach_the_backend_under_wrangler_dev(
    proxy: ProxyFactory, recorder: RecordingBackend, target: bytes, forwarded: str | None
) -> None:
    before = len(recorder.records())
    response = raw_request(proxy("main").url, target)
    received = [r["path"] for r in recorder.records()[before:]]
    if forwarded is None:
        assert_refused(response, "path_not_allowlisted")
        assert received == []
    else:
        assert response.status == 200
        assert received == [forwarded]


@pytest.fixture(scope="module")
def raw_workerd(
    settings: Settings, recorder: RecordingBackend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    bundle = bundle_proxy(settings, Path(tmp_path_factory.mktemp("proxy-bundle")))
    bindings = {
        "BACKEND_ORIGIN": recorder.url,
        "BACKEND_REQUEST_TIMEOUT_MS": "5000",
        "BACKEND_RETRY_ATTEMPTS": "0",
    }
    with bare_workerd(settings, bundle, bindings) as url:
        yield url


RAW_ONLY = [
    (b"/api/x/%2e%2e/y", "dot_segment"),
    (b"/api/%2E%2E/ops/metrics", "dot_segment"),
    (b"/api/x/.%2e/y", "dot_segment"),
    (b"/api/x/%2e./y", "dot_segment"),
    (b"/api/%2e/x", "dot_segment"),
    (b"/api/x/%2e%2e", "dot_segment"),
    (b"/api\\x", "backslash"),
    (b"/api\\..\\ops/metrics", "backslash"),
    (b"/api/x%5c..%5cy", "encoded_slash"),
]


@pytest.mark.parametrize(
    ("target", "reason"), RAW_ONLY + HOSTILE, ids=[t.decode("latin-1") for t, _ in RAW_ONLY + HOSTILE]
)
def test_the_bundle_refuses_every_spelling_under_bare_workerd(
    raw_workerd: str, recorder: RecordingBackend, target: bytes, reason: str
) -> None:
    before = recorder.paths()
    assert_refused(raw_request(raw_workerd, target), reason)
    assert recorder.paths() == before


def test_the_bundle_forwards_under_bare_workerd(raw_workerd: str, recorder: RecordingBackend) -> None:
    """The refusals above are not a Worker that forwards nothing: an allowlisted path goes through."""
    path = unique("/api/raw-")
    response = raw_request(raw_workerd, path.encode())
    assert response.status == 200
    assert [r["path"] for r in recorder.records(path)] == [path]


# ----------------------------------------------------------------------------------------- headers


def test_forwarding_headers_are_set_by_the_proxy_not_the_client(
    proxy: ProxyFactory, recorder: RecordingBackend
) -> None:
    target = proxy("main")
    path = unique("/api/headers-")
    response = raw_request(
        target.url,
        path.encode(),
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Proto": "gopher",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Port": "1",
            "Forwarded": "for=6.6.6.6;host=evil.example",
            "X-Real-IP": "6.6.6.6",
            "X-Immcad-Edge-Proxy": "spoofed",
            "X-Immcad-Trace-Id": SPOOFED_TRACE,
            "X-Immcad-Role": "admin",
            "Authorization": "Bearer client-token-123",
            "X-Custom": "kept",
            # The runtime consumes Connection, Keep-Alive and TE itself; the Worker strips the rest.
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic c3B5OnNweQ==",
            "TE": "trailers",
        },
    )
    assert response.status == 200
    (record,) = recorder.records(path)
    names = [name for name, _ in record["headers"]]
    assert len(names) == len(set(names)), f"duplicated headers: {names}"
    received = dict(record["headers"])
    assert received["x-forwarded-for"] == "127.0.0.1"  # the connecting address the runtime saw
    assert received["x-forwarded-proto"] == "http"
    assert received["x-forwarded-host"] == target.url.removeprefix("http://")
    assert received["x-immcad-edge-proxy"] == "immcad-backend-proxy"
    assert received["x-immcad-trace-id"] == response.headers["x-trace-id"] != SPOOFED_TRACE
    assert received["authorization"] == "Bearer client-token-123"
    assert received["x-custom"] == "kept"
    for absent in (
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-immcad-role",
        "x-drop-me",
        "keep-alive",
        "proxy-authorization",
        "te",
    ):
        assert absent not in received, absent
    assert "6.6.6.6" not in json.dumps(record)


def test_hop_by_hop_response_headers_are_stripped(proxy: ProxyFactory) -> None:
    """The backend names x-private-hop in its Connection header: the Worker must not pass it on."""
    response = raw_request(proxy("main").url, unique("/api/hop-").encode() + b"?hop=1")
    assert response.status == 200
    assert response.headers["x-backend-header"] == "1"
    assert "x-private-hop" not in response.headers
    assert "keep-alive" not in response.headers


def test_trace_id_comes_from_cf_ray_or_is_a_fresh_uuid(
    proxy: ProxyFactory, recorder: RecordingBackend
) -> None:
    url = proxy("main").url
    path = unique("/api/trace-")
    ray = "8f1e2d3c4b5a6978-YYZ"
    with_ray = raw_request(url, path.encode(), headers={"cf-ray": ray})
    assert with_ray.headers["x-trace-id"] == with_ray.headers["x-immcad-trace-id"] == ray
    assert dict(recorder.records(path)[0]["headers"])["x-immcad-trace-id"] == ray

    ids = []
    for headers in ({}, {}, {"cf-ray": "<script>alert(1)</script>"}):
        response = raw_request(url, path.encode(), headers=headers)
        assert response.headers["x-trace-id"] == response.headers["x-immcad-trace-id"]
        ids.append(response.headers["x-trace-id"])
    assert all(uuid.UUID(value).version == 4 for value in ids)
    assert len(set(ids)) == 3
    # ... and the proxy's own answers carry one too
    assert uuid.UUID(raw_request(url, b"/nope").error()["trace_id"]).version == 4


def test_redirects_are_returned_not_followed(proxy: ProxyFactory, recorder: RecordingBackend) -> None:
    followed = unique("/api/followed-")
    location = f"{recorder.url}{followed}"
    response = raw_request(
        proxy("main").url, unique("/api/redirect-").encode() + f"?redirect={location}".encode()
    )
    assert response.status == 302
    assert response.headers["location"] == location
    assert recorder.records(followed) == []


# ---------------------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        (b"GET", 503, 3),
        (b"HEAD", 503, 3),
        (b"OPTIONS", 503, 3),
        (b"GET", 502, 3),
        (b"GET", 504, 3),
        (b"GET", 500, 1),  # not a transient gateway status
        (b"GET", 404, 1),
        (b"POST", 503, 1),  # not idempotent: sent exactly once
    ],
)
def test_retries_only_idempotent_methods_on_gateway_errors(
    proxy: ProxyFactory, recorder: RecordingBackend, method: bytes, status: int, expected: int
) -> None:
    """BACKEND_RETRY_ATTEMPTS=2: a GET gets exactly two more attempts; the last answer is returned."""
    path = unique("/api/retry-")
    response = raw_request(proxy("main").url, f"{path}?status={status}".encode(), method=method)
    assert response.status == status
    assert [r["method"] for r in recorder.records(path)] == [method.decode()] * expected


def test_retry_attempts_are_clamped_and_default(proxy: ProxyFactory, recorder: RecordingBackend) -> None:
    for name, expected in (("low", 1), ("high", 3), ("nan", 2)):  # -4 -> 0, 9 -> 2, "twice" -> 1
        path = unique(f"/api/retry-{name}-")
        assert raw_request(proxy(name).url, f"{path}?status=503".encode()).status == 503
        assert len(recorder.records(path)) == expected, name
        post = unique(f"/api/retry-{name}-post-")
        assert raw_request(proxy(name).url, f"{post}?status=503".encode(), method=b"POST").status == 503
        assert len(recorder.records(post)) == 1, name


# --------------------------------------------------------------------------------------- timeouts


def assert_timeout(response: RawResponse) -> None:
    assert response.status == 504, response.body
    error = response.error()
    assert (error["code"], error["policy_reason"]) == ("PROVIDER_ERROR", "backend_timeout")


def test_a_slow_backend_gives_504_within_the_timeout_plus_1_s(
    proxy: ProxyFactory, recorder: RecordingBackend
) -> None:
    url = proxy("main").url  # 2000 ms
    path = unique("/api/slow-")
    elapsed, response = timed_post(url, f"{path}?sleep_ms=5000")
    assert_timeout(response)
    assert 1.9 <= elapsed <= 3.0, elapsed
    assert len(recorder.records(path)) == 1
    # under the timeout the answer gets through
    elapsed, response = timed_post(url, f"{path}?sleep_ms=1000")
    assert response.status == 200 and elapsed >= 1.0


def test_a_get_that_times_out_is_retried(proxy: ProxyFactory, recorder: RecordingBackend) -> None:
    path = unique("/api/slow-get-")
    started = time.monotonic()
    response = raw_request(proxy("main").url, f"{path}?sleep_ms=2600".encode())
    elapsed = time.monotonic() - started
    assert_timeout(response)
    assert len(recorder.records(path)) == 3  # 1 + BACKEND_RETRY_ATTEMPTS, each given 2000 ms
    assert 5.8 <= elapsed <= 8.0, elapsed


def test_timeout_below_the_minimum_is_clamped_to_1000_ms(proxy: ProxyFactory) -> None:
    url = proxy("low").url  # BACKEND_REQUEST_TIMEOUT_MS=10
    # 10 ms taken literally would time this out; clamped to 1000 ms it answers.
    elapsed, response = timed_post(url, unique("/api/low-") + "?sleep_ms=500")
    assert response.status == 200, response.body
    # and 1000 ms is the limit: not the 15000 ms default
    elapsed, response = timed_post(url, unique("/api/low-") + "?sleep_ms=4000")
    assert_timeout(response)
    assert 0.9 <= elapsed <= 2.0, elapsed


def test_timeout_above_the_maximum_is_clamped_to_60_s(slow_probes: dict[str, Future[Any]]) -> None:
    """BACKEND_REQUEST_TIMEOUT_MS=600000 against a backend that needs 64 s: 504 at 60 s, not 200 at 64 s."""
    elapsed, response = slow_probes["test_timeout_above_the_maximum_is_clamped_to_60_s"].result(timeout=120)
    assert_timeout(response)
    assert 59.8 <= elapsed <= 61.0, elapsed


def test_non_numeric_tunables_fall_back_to_the_defaults(slow_probes: dict[str, Future[Any]]) -> None:
    """BACKEND_REQUEST_TIMEOUT_MS=soon against a backend that needs 17 s: 504 at the 15 s default."""
    elapsed, response = slow_probes["test_non_numeric_tunables_fall_back_to_the_defaults"].result(timeout=120)
    assert_timeout(response)
    assert 14.8 <= elapsed <= 16.0, elapsed


# ---------------------------------------------------------------------------------------- origins


def test_an_unreachable_origin_gives_502(proxy: ProxyFactory) -> None:
    url = proxy("unreachable").url
    for method in (b"GET", b"POST"):
        started = time.monotonic()
        response = raw_request(url, b"/healthz", method=method)
        assert response.status == 502, response.body
        error = response.error()
        assert (error["code"], error["policy_reason"]) == ("PROVIDER_ERROR", "backend_unreachable")
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("name", "reason"), [("no_origin", "backend_origin_missing"), ("ftp_origin", "backend_origin_not_http")]
)
def test_a_missing_or_non_http_origin_gives_500(
    proxy: ProxyFactory, recorder: RecordingBackend, name: str, reason: str
) -> None:
    before = recorder.paths()
    for method in (b"GET", b"POST"):
        response = raw_request(proxy(name).url, b"/api/chat", method=method)
        assert response.status == 500, response.body
        error = response.error()
        assert (error["code"], error["policy_reason"]) == ("PROVIDER_ERROR", reason)
    assert recorder.paths() == before
