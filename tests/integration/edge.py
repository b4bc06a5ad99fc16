"""Helpers for the edge proxy tests: the recording backend, a raw HTTP client, and bare workerd.

``raw_request`` writes the request line byte for byte: httpx (and curl without --path-as-is) resolve
dot segments and re-encode paths before sending, which would test the client instead of the proxy.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cfops import procs
from cfops.config import Settings
from cfops.wrangler import QUIET_ENV, read_config, toolchain_env, wrangler_bin
from tests.conftest import REPO, clean_env


@dataclass
class RecordingBackend:
    url: str
    service: procs.Service

    def records(self, path_prefix: str = "/") -> list[dict[str, Any]]:
        """Every request the backend received whose raw path starts with ``path_prefix``."""
        response = httpx.get(f"{self.url}/__recorder/requests", timeout=10, trust_env=False)
        response.raise_for_status()
        return [r for r in response.json() if r["path"].startswith(path_prefix)]

    def paths(self) -> list[str]:
        return [r["path"] for r in self.records()]


@contextmanager
def recording_backend() -> Iterator[RecordingBackend]:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    service = procs.Service(
        "recorder",
        [sys.executable, "-m", "tests.fakes.recorder", "--port", str(port)],
        cwd=REPO,
        env=clean_env(),
        inherit_env=False,
        health_url=f"{url}/__recorder/requests",
        ready_timeout=30,
        forward_output=False,
    )
    with service:
        yield RecordingBackend(url=url, service=service)


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        """The proxy's error envelope, checked for shape and trace-id consistency."""
        body = self.json()
        assert set(body) == {"error"}, body
        error: dict[str, Any] = body["error"]
        assert set(error) == {"code", "message", "trace_id", "policy_reason"}, error
        assert error["trace_id"] == self.headers["x-trace-id"] == self.headers["x-immcad-trace-id"]
        assert self.headers["cache-control"] == "no-store"
        return error


def raw_request(
    base_url: str,
    target: bytes,
    *,
    method: bytes = b"GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 90,
) -> RawResponse:
    """Send one HTTP/1.1 request whose request-target is exactly ``target``; read the whole answer."""
    host_port = base_url.removeprefix("http://")
    host, _, port = host_port.partition(":")
    extra = dict(headers or {})
    # One request per connection: the answer ends when the server closes it.
    connection = extra.pop("Connection", "")
    lines = [method + b" " + target + b" HTTP/1.1", f"Host: {host_port}".encode()]
    lines.append(f"Connection: close{', ' + connection if connection else ''}".encode())
    lines += [f"{k}: {v}".encode() for k, v in extra.items()]
    if body or method in (b"POST", b"PUT", b"PATCH"):
        lines.append(f"Content-Length: {len(body)}".encode())
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock, method=method.decode())
        response.begin()
        data = response.read()
        return RawResponse(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=data,
        )


# ------------------------------------------------------------------------------------- bare workerd


def bundle_proxy(settings: Settings, outdir: Path) -> Path:
    """The proxy exactly as `wrangler deploy` would upload it (pinned wrangler, --dry-run)."""
    procs.run(
        [
            wrangler_bin(settings),
            "deploy",
            "--dry-run",
            "--config",
            settings.proxy.config,
            "--outdir",
            outdir,
        ],
        cwd=settings.proxy.config.parent,
        env={**QUIET_ENV, **toolchain_env(settings)},
        timeout=120,
        echo=False,
    )
    bundle = outdir / "worker.js"
    assert bundle.is_file(), sorted(p.name for p in outdir.iterdir())
    return bundle


def _capnp_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Cap'n Proto text literal for ASCII


@contextmanager
def bare_workerd(settings: Settings, bundle: Path, bindings: Mapping[str, str]) -> Iterator[str]:
    """Serve ``bundle`` with the pinned workerd binary directly, without wrangler's dev entry layer.

    wrangler dev routes each request through miniflare's entry Worker, whose URL parsing resolves
    ``%2e%2e`` and backslashes before the proxy sees them. workerd on its own hands those spellings to
    the Worker as they arrived, so this is where the Worker's own refusal of them is observable.
    """
    config = read_config(settings.proxy.config)
    port = procs.free_port()
    text_bindings = ",\n".join(
        f"      (name = {_capnp_string(k)}, text = {_capnp_string(v)})" for k, v in bindings.items()
    )
    capnp = bundle.parent / "proxy.capnp"
    capnp.write_text(
        f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .proxy),
    # workerd's default "internet" service refuses private and loopback addresses; the test origin is local.
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")],
);
const proxy :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "{bundle.name}")],
  compatibilityDate = {_capnp_string(str(config["compatibility_date"]))},
  bindings = [
{text_bindings}
  ],
  globalOutbound = "internet",
);
"""
    )
    workerd = wrangler_bin(settings).parent / "workerd"
    url = f"http://127.0.0.1:{port}"
    service = procs.Service(
        "workerd",
        [workerd, "serve", capnp],
        cwd=bundle.parent,
        health_url=f"{url}/__edge-proxy-ready",
        healthy=lambda response: "x-immcad-trace-id" in response.headers,
        ready_timeout=30,
        stop_signal=signal.SIGTERM,
        forward_output=False,
    )
    with service:
        yield url
