"""The settings of the commands that run on this machine: sync, dev, dev-proxy, perf, image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cfops.config.metadata import setting
from cfops.config.scenario import PerfProbe, parse_scenario
from cfops.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class SyncEntry:
    source: Path
    dest: Path


def _sync_map(raw: Any, root: Path) -> tuple[SyncEntry, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[tool.cfops.sync] map must be a non-empty table of source = destination")
    entries = []
    for source, dest in raw.items():
        if not isinstance(dest, str):
            raise ConfigError(f"[tool.cfops.sync.map] {source!r}: destination must be a string")
        entries.append(SyncEntry(source=(root / source).resolve(), dest=(root / dest).resolve()))
    return tuple(entries)


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    name: str = field(metadata=setting(help="the Worker's name on Cloudflare"))
    config: Path = field(metadata=setting(help="its wrangler config"))


@dataclass(frozen=True, kw_only=True)
class SyncSettings:
    map: tuple[SyncEntry, ...] = field(
        default=(),
        metadata={
            "convert": _sync_map,
            "help": "source (repo) = destination (inside worker_dir); every destination is owned by the sync",
        },
    )
    manifest: Path = field(
        default=Path("backend-cloudflare/sync-manifest.json"),
        metadata=setting(help="the sha256 manifest of the synced files"),
    )
    exclude: tuple[str, ...] = field(
        default=("__pycache__", "*.pyc", "*.pyo", ".DS_Store"),
        metadata=setting(help="file name patterns never copied"),
    )


Runtime = Literal["auto", "uvicorn", "pywrangler"]


@dataclass(frozen=True, kw_only=True)
class DevSettings:
    host: str = field(
        default="127.0.0.1", metadata=setting("CFOPS_DEV_HOST", flag="--host", help="interface to serve on")
    )
    port: int = field(
        default=8787, metadata=setting("CFOPS_DEV_PORT", flag="--port", help="port to serve on")
    )
    runtime: Runtime = field(
        default="auto",
        metadata=setting(
            "CFOPS_DEV_RUNTIME",
            flag="--runtime",
            help="pywrangler dev, uvicorn, or auto (pywrangler if it can run)",
        ),
    )
    startup_timeout: float = field(default=30.0, metadata=setting(help="seconds to wait for /healthz"))
    pywrangler_probe: tuple[str, ...] = field(
        default=("index.pyodide.org:443",),
        metadata=setting(help="hosts pywrangler must reach to fetch Pyodide; unreachable: uvicorn fallback"),
    )
    vars: dict[str, str] = field(
        default_factory=dict,
        metadata=setting(help="Worker vars for local runs, over wrangler.toml [vars] and under .dev.vars"),
    )


@dataclass(frozen=True, kw_only=True)
class PerfBounds:
    """Limits on one run. They may be lowered in [tool.cfops.perf.bounds], never raised past these."""

    max_requests: int = field(
        default=100_000, metadata=setting(help="ceiling of requests per run (may be lowered, never raised)")
    )
    max_concurrency: int = field(default=1_000, metadata=setting(help="ceiling of requests in flight"))
    max_duration_seconds: float = field(default=600.0, metadata=setting(help="ceiling of one run's duration"))


Engine = Literal["aiohttp", "httpx", "httpx-aiohttp"]


@dataclass(frozen=True, kw_only=True)
class PerfSettings:
    # Empty: start the local backend on a free port and measure that.
    base_url: str = field(
        default="",
        metadata=setting(
            "IMMCAD_API_BASE_URL",
            deferred=True,
            flag="--base-url",
            help="target; empty: start the local backend",
        ),
    )
    requests: int = field(
        default=20, metadata=setting("REQUESTS", deferred=True, flag="--requests", help="measured requests")
    )
    concurrency: int = field(
        default=5,
        metadata=setting("CONCURRENCY", deferred=True, flag="--concurrency", help="requests in flight"),
    )
    duration_seconds: float | None = field(
        default=None,
        metadata=setting(flag="--duration", help="seconds to run instead of a request count"),
    )
    rate: float | None = field(
        default=None,
        metadata=setting(
            flag="--rate", help="open model: requests per second, latency from the intended send time"
        ),
    )
    max_p95_seconds: float = field(
        default=2.5,
        metadata=setting("MAX_P95_SECONDS", deferred=True, flag="--max-p95", help="p95 threshold, s"),
    )
    max_p99_seconds: float | None = field(
        default=None,
        metadata=setting(
            "MAX_P99_SECONDS", deferred=True, flag="--max-p99", help="p99 threshold, s (none: unchecked)"
        ),
    )
    max_error_rate: float = field(
        default=0.0,
        metadata=setting(
            "MAX_ERROR_RATE",
            deferred=True,
            flag="--max-error-rate",
            help="fraction of failed requests allowed",
        ),
    )
    max_regression_percent: float = field(
        default=20.0,
        metadata=setting(flag="--max-regression", help="percent of p95 regression allowed vs --baseline"),
    )
    chat_path: str = field(
        default="/api/chat",
        metadata=setting("CHAT_PATH", deferred=True, flag="--chat-path", help="path of the default probe"),
    )
    timeout_seconds: float = field(
        default=10.0, metadata=setting(flag="--timeout", help="per-request timeout, s")
    )
    warmup: int = field(
        default=0,
        metadata=setting(flag="--warmup", help="requests sent first and left out of the statistics"),
    )
    engine: Engine = field(
        default="aiohttp",
        metadata=setting(flag="--engine", help="HTTP client of the hot loop (see docs/benchmarks.md)"),
    )
    bounds: PerfBounds = field(default_factory=PerfBounds)
    # Empty: the old canary probe (POST chat_path with a session id and a fixed message).
    scenario: tuple[PerfProbe, ...] = field(
        default=(),
        metadata={
            "convert": lambda raw, _root: parse_scenario(raw, "[tool.cfops.perf.scenario]"),
            "help": "weighted probes: name = {method, path, weight, status, json | body, headers}",
        },
    )


@dataclass(frozen=True, kw_only=True)
class DevProxySettings:
    """`cfops dev-proxy`: the edge proxy Worker under wrangler dev in front of the local backend."""

    port: int = field(
        default=8788, metadata=setting("CFOPS_DEV_PROXY_PORT", flag="--port", help="proxy port")
    )
    # wrangler dev bundles with esbuild and boots workerd before it answers.
    startup_timeout: float = field(
        default=60.0, metadata=setting(help="seconds for wrangler dev to bundle, boot workerd and answer")
    )
    # Extra Worker vars for local runs (BACKEND_REQUEST_TIMEOUT_MS, BACKEND_RETRY_ATTEMPTS), layered
    # over the config's vars; BACKEND_ORIGIN is always the backend started (or named with --origin).
    vars: dict[str, str] = field(
        default_factory=dict,
        metadata=setting(
            help="Worker vars for local runs over the config's (BACKEND_ORIGIN is always set by the command)"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class ImageTarget:
    dockerfile: Path = field(metadata=setting(help="the Dockerfile (the build context is the project root)"))
    tag: str = field(metadata=setting(help="the image tag"))


@dataclass(frozen=True, kw_only=True)
class ImageSettings:
    # The base of both images (the Dockerfiles' ARG PYTHON_IMAGE). Where Docker Hub is out of reach,
    # scripts/make_base_image.sh builds a local one and PYTHON_IMAGE names it.
    python_image: str = field(
        default="python:3.12-slim",
        metadata=setting("PYTHON_IMAGE", flag="--python-image", help="base image of both Dockerfiles"),
    )
    # org.opencontainers.image.source; empty: the git remote "origin" (credentials stripped).
    source: str = field(
        default="",
        metadata=setting(
            help="org.opencontainers.image.source label; empty: the git remote origin without credentials"
        ),
    )
    health_timeout: float = field(
        default=60.0,
        metadata=setting(
            "CFOPS_IMAGE_HEALTH_TIMEOUT",
            flag="--health-timeout",
            help="with --run: seconds to wait for /healthz",
        ),
    )
    # Bounds the whole build and every silent stretch of it (a RUN step that prints nothing).
    build_timeout: float = field(
        default=1800.0, metadata=setting(help="seconds for a whole build and for any silent stretch of it")
    )
    spike: ImageTarget = field(
        default_factory=lambda: ImageTarget(
            dockerfile=Path("backend-cloudflare/Dockerfile"), tag="immcad-backend-spike:local"
        )
    )
    origin: ImageTarget = field(
        default_factory=lambda: ImageTarget(dockerfile=Path("Dockerfile"), tag="immcad-backend-origin:local")
    )
