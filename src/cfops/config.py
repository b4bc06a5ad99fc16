"""Project settings, read once into frozen dataclasses.

Layering, lowest first: defaults here < ``[tool.cfops]`` in pyproject.toml < ``.env`` < the process
environment < command-line flags. One mechanism for all of it: a field names its environment variables
in ``metadata["env"]`` and its command-line flag in ``metadata["flag"]`` (see ``setting``); commands
declare which sections they take flags for (``cfops.cli``), and ``load_settings(flags=…)`` layers the
parsed values with the same coercion and error messages as the config file. Unknown keys in
``[tool.cfops]`` are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from dotenv import dotenv_values

from cfops import cloudflare
from cfops.errors import ConfigError, UsageError

T = TypeVar("T")

PYPROJECT = "pyproject.toml"


def setting(
    *env: str, flag: str | None = None, help: str | None = None, deferred: bool = False
) -> dict[str, Any]:
    """Field metadata: the environment variables that override this setting (first one set wins), the
    command-line flag that overrides both, and the one-line help shown by ``--help`` and the docs.

    ``deferred``: generic names kept for compatibility (REQUESTS, CONCURRENCY …) are applied and
    validated only by the command that uses them (``with_deferred_env``), so a stray value in someone's
    shell cannot break unrelated commands. A flag always wins over them.
    """
    return {"env": env, "deferred": deferred, "flag": flag, "help": help}


def from_env(
    *names: str, deferred: bool = False, flag: str | None = None, help: str | None = None
) -> dict[str, Any]:
    """``setting`` by its older name: a field overridden by environment variables (and a flag)."""
    return setting(*names, flag=flag, help=help, deferred=deferred)


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


_PROBE_KEYS = {"method", "path", "weight", "status", "json", "body", "headers"}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
MAX_PROBE_WEIGHT = 1000


@dataclass(frozen=True, kw_only=True)
class PerfProbe:
    """One weighted request of a latency scenario. ``{i}`` in a string of ``json``/``body`` is the index."""

    name: str
    method: str = "GET"
    path: str
    weight: int = 1
    status: tuple[int, ...] = (200,)
    json: Any = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _check_json(value: Any, at: str) -> None:
    """A probe's ``json`` must be JSON: YAML also reads dates, timestamps and sets, which are not."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{at}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{at}: key {key!r} must be a string (quote it)")
            _check_json(item, f"{at}.{key}")
        return
    kind = type(value).__name__
    raise ConfigError(f"{at} = {value} is a YAML {kind}, not a JSON value; quote it ('{value}') to send text")


def parse_scenario(raw: Any, where: str) -> tuple[PerfProbe, ...]:
    """A table of ``name = {method, path, weight, status, json | body, headers}`` (TOML or YAML)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of probe name = {{method, path, ...}}")
    probes = []
    for name, spec in raw.items():
        at = f"{where}.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{at} must be a table with at least a path")
        unknown = sorted(set(spec) - _PROBE_KEYS)
        if unknown:
            raise ConfigError(f"unknown key {at}.{unknown[0]} (known: {', '.join(sorted(_PROBE_KEYS))})")
        path = spec.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{at}.path must be a string starting with /, got {path!r}")
        method = spec.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise ConfigError(f"{at}.method must be one of {', '.join(sorted(_METHODS))}, got {method!r}")
        weight = spec.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_PROBE_WEIGHT:
            raise ConfigError(f"{at}.weight must be an integer from 1 to {MAX_PROBE_WEIGHT}, got {weight!r}")
        status = spec.get("status", 200)
        statuses = status if isinstance(status, list) else [status]
        if not statuses or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in statuses
        ):
            raise ConfigError(
                f"{at}.status must be an HTTP status (100-599) or a list of them, got {status!r}"
            )
        if "json" in spec and "body" in spec:
            raise ConfigError(f"{at}: give json or body, not both")
        body = spec.get("body")
        if body is not None and not isinstance(body, str):
            raise ConfigError(f"{at}.body must be a string (use json for structured bodies)")
        headers = spec.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigError(f"{at}.headers must be a table of strings")
        for key, value in headers.items():
            if not (key + value).isascii() or not value.isprintable():
                raise ConfigError(f"{at}.headers.{key} must be printable ASCII (HTTP headers are)")
        if "json" in spec:
            _check_json(spec["json"], f"{at}.json")
        probes.append(
            PerfProbe(
                name=str(name),
                method=method.upper(),
                path=path,
                weight=weight,
                status=tuple(statuses),
                json=spec.get("json"),
                body=body,
                headers=dict(headers),
            )
        )
    return tuple(probes)


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


BackendMode = Literal["proxy", "native"]
PreflightCachePolicy = Literal["reuse", "same-commit", "off"]


@dataclass(frozen=True, kw_only=True)
class PreflightSettings:
    """`cfops preflight`: Cloudflare platform facts and release policy, kept out of the code."""

    # Cloudflare's limits (cfops.cloudflare), lowered here to test the checks or to keep a margin.
    size_limit_kib: int = field(
        default=cloudflare.WORKER_SIZE_LIMIT_KIB,
        metadata=setting(help="Worker size limit (uncompressed), Cloudflare's unless lowered"),
    )
    # Optional gzip budget: the old per-plan limits (Free 3 MiB, Paid 10 MiB gzip) that teams keep.
    gzip_budget_kib: int | None = field(
        default=None,
        metadata=from_env(
            "CFOPS_PREFLIGHT_GZIP_BUDGET_KIB",
            "CLOUDFLARE_FREE_WORKER_GZIP_LIMIT_KIB",
            help="optional gzip budget (the old Free 3 MiB / Paid 10 MiB limits); none: no budget",
        ),
    )
    startup_limit_ms: float = field(
        default=cloudflare.STARTUP_LIMIT_MS, metadata=setting(help="Worker startup CPU limit")
    )
    compatibility_date_max_age_days: int = field(
        default=365, metadata=setting(help="warn when a compatibility_date is older")
    )
    # Which Worker production runs; the other one's over-budget bundle is only a warning.
    mode: BackendMode = field(
        default="native",
        metadata=setting(
            "CLOUDFLARE_BACKEND_MODE", flag="--mode", help="the Worker production runs: native or proxy"
        ),
    )
    # Secrets a production deploy cannot work without (the hardened app refuses to start without a token).
    required_secrets: tuple[str, ...] = field(
        default=(cloudflare.BEARER_TOKEN,),
        metadata=setting(help="secrets a production deploy cannot work without"),
    )
    # Secrets the CI workflows may read besides secret_names (deploy credentials; GITHUB_TOKEN is built in).
    ci_secrets: tuple[str, ...] = field(
        default=cloudflare.CREDENTIALS,
        metadata=setting(help="secrets the CI workflows may read besides secret_names"),
    )
    # Case-insensitive shell-style patterns of values that were never filled in (what templates and
    # .env.example files ship with). The one placeholder rule (is_placeholder): preflight flags such a
    # value, secrets sync never pushes one.
    placeholder_patterns: tuple[str, ...] = field(
        default=(
            "your-*",
            "your_*",
            "changeme*",
            "change-me*",
            "change_me*",
            "replace-*",
            "replace_*",
            "replaceme*",
            "*placeholder*",
            "<*",
            "todo",
            "xxx*",
        ),
        metadata=setting(help="case-insensitive patterns of values never filled in (flagged, never pushed)"),
    )
    # [vars] the native Worker must hold for --target production (the app's hardened settings).
    production_vars: dict[str, str] = field(
        default_factory=lambda: {
            "ENVIRONMENT": "production",
            "IMMCAD_ENVIRONMENT": "production",
            "ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS": "false",
            "ENABLE_SCAFFOLD_PROVIDER": "false",
            "EXPORT_POLICY_GATE_ENABLED": "true",
        },
        metadata=setting(help="[vars] the native Worker must hold for --target production"),
    )
    allowlist: Path = field(
        default=Path("backend-cloudflare/src/allowlist.json"),
        metadata=setting(help="the edge proxy's path allowlist"),
    )
    # Paths under these prefixes must answer 401 without a bearer token.
    protected_prefixes: tuple[str, ...] = field(
        default=("/ops/",), metadata=setting(help="paths that must answer 401 without a bearer token")
    )
    # Owners whose GitHub Actions need no commit-SHA pin (GitHub's own).
    first_party_action_owners: tuple[str, ...] = field(
        default=("actions", "github"),
        metadata=setting(help="GitHub Action owners that need no commit-SHA pin"),
    )
    # Upper bound for each external command a check runs (wrangler, git, node).
    command_timeout: float = field(
        default=180.0, metadata=setting(help="seconds for each external command a check runs")
    )
    # Reuse of the expensive checks' findings while nothing they read changed (cfops.preflight.cache):
    # reuse | same-commit (also only from a run at the current commit) | off. A run takes the strictest
    # of `cache`, `cache_ci` when CI is set, and `cache_production` with --target production.
    cache: PreflightCachePolicy = field(
        default="reuse",
        metadata=setting(
            "CFOPS_PREFLIGHT_CACHE", help="reuse cached findings: reuse, same-commit or off (--no-cache)"
        ),
    )
    cache_ci: PreflightCachePolicy = field(
        default="same-commit", metadata=setting(help="the cache policy when CI is set")
    )
    cache_production: PreflightCachePolicy = field(
        default="same-commit", metadata=setting(help="the cache policy of --target production")
    )
    cache_file: Path = field(
        default=Path(".cfops-cache/preflight.json"), metadata=setting(help="where the findings are cached")
    )


NativeRunner = Literal["auto", "pywrangler", "wrangler"]


@dataclass(frozen=True, kw_only=True)
class DeploySettings:
    # The container origin the edge proxy forwards to (https://…); passed as --var BACKEND_ORIGIN.
    backend_origin: str = field(
        default="",
        metadata=setting(
            "IMMCAD_BACKEND_ORIGIN",
            "BACKEND_ORIGIN",
            flag="--origin",
            help="the proxy's https container origin",
        ),
    )
    # Who uploads the native Worker: pywrangler (vendors the Python packages), or the pinned wrangler
    # standing in for it (uploads the synced source only). auto = pywrangler when its toolchain can run.
    native_runner: NativeRunner = field(
        default="auto",
        metadata=setting("CFOPS_NATIVE_RUNNER", flag="--runner", help="who uploads the native Worker"),
    )
    # Upper bound for one wrangler call (an upload of the native bundle is the slowest).
    timeout: float = field(
        default=600.0, metadata=from_env("CFOPS_WRANGLER_TIMEOUT", help="seconds for one wrangler call")
    )
    # Cloudflare calls that are safe to repeat (reads, splits, rollbacks) are tried at most this many
    # times on a transient failure (connection lost, 5xx, 429), and none starts after this many seconds.
    retry_attempts: int = field(
        default=4, metadata=from_env("CFOPS_RETRY_ATTEMPTS", help="tries of a repeatable Cloudflare call")
    )
    retry_max_seconds: float = field(
        default=60.0,
        metadata=from_env("CFOPS_RETRY_MAX_SECONDS", help="no retry of a Cloudflare call starts after this"),
    )


InconclusivePolicy = Literal["fail", "pass"]


@dataclass(frozen=True, kw_only=True)
class AnalyticsSettings:
    """Workers Analytics Engine: where the native Worker records each request (docs/analytics.md).

    The one place of truth for the names: wrangler.toml's [[analytics_engine_datasets]] and the Worker's
    code (immcad_api.analytics.BINDING) must agree with these; preflight check "analytics" fails if not.
    """

    binding: str = field(default="IMMCAD_ANALYTICS", metadata=setting(help="the Worker's dataset binding"))
    dataset: str = field(default="immcad_requests", metadata=setting(help="the dataset the release reads"))
    # The SQL API (``POST {api}/accounts/<id>/analytics_engine/sql``): per attempt, and attempts in all
    # (transient failures — 5xx, 429, network — are retried with backoff; then the stage is inconclusive).
    timeout_seconds: float = field(default=30.0, metadata=setting(help="per SQL API call, s"))
    attempts: int = field(
        default=4, metadata=setting(help="SQL API attempts (5xx, 429, network are retried)")
    )


@dataclass(frozen=True, kw_only=True)
class StageGates:
    """How each production stage is judged from real traffic per version (docs/analytics.md)."""

    enabled: bool = field(
        default=True,
        metadata=setting("CFOPS_RELEASE_ANALYSIS", help="judge each stage by Analytics Engine at all"),
    )
    # Too little traffic on the new version: extend the soak up to this (0: never extend) …
    max_soak_seconds: float = field(
        default=900.0,
        metadata=setting(
            "CFOPS_RELEASE_MAX_SOAK", help="an inconclusive stage's soak is extended up to this, s"
        ),
    )
    # … and then the policy decides: "fail" (roll back; the safe default) or "pass" (on the smoke alone).
    inconclusive: InconclusivePolicy = field(
        default="fail",
        metadata=setting(
            "CFOPS_RELEASE_INCONCLUSIVE",
            help="then: fail (roll back, the safe default) or pass (on the smoke)",
        ),
    )
    min_requests: int = field(
        default=200, metadata=setting(help="requests (sample-weighted) on the new version for a verdict")
    )
    # A fraction: 0.01 = one percentage point.
    error_rate_margin: float = field(default=0.01, metadata=setting(help="new 5xx rate <= old + this"))
    # A broken route often answers 404/422, not 500.
    client_error_rate_margin: float = field(default=0.05, metadata=setting(help="new 4xx rate <= old + this"))
    # The slack keeps a 3 ms -> 5 ms change from counting as a regression.
    p95_factor: float = field(default=1.5, metadata=setting(help="new p95 <= factor x old p95 + slack"))
    p95_slack_ms: float = field(default=20.0, metadata=setting(help="the p95 gate's slack, ms"))


@dataclass(frozen=True, kw_only=True)
class ReleaseSettings:
    """`invoke release`: the pipelines' policy."""

    # Traffic shares the new native version is promoted through after its canary (the last must be 100).
    stages: tuple[float, ...] = field(
        default=(10.0, 50.0, 100.0),
        metadata=setting(
            flag="--stages", help="production: traffic percentages after the canary, e.g. 10,50,100"
        ),
    )
    # The origin the local rehearsal's proxy deploy dry-run is bundled with (.invalid is never resolvable).
    rehearsal_origin: str = field(
        default="https://origin.example.invalid",
        metadata=setting(help="the origin the rehearsal's proxy dry-run is bundled with"),
    )
    # Where the deployed edge proxy answers, for the smoke test of `invoke release-proxy`.
    proxy_url: str = field(
        default="",
        metadata=setting(
            "IMMCAD_PROXY_URL", flag="--proxy-url", help="proxy: where the deployed proxy answers"
        ),
    )
    # Upper bound for one step (the test suite is the slowest).
    step_timeout: float = field(default=3600.0, metadata=setting(help="seconds for one pipeline step"))
    # Each production stage soaks this long after its promote before its analysis reads the window.
    soak_seconds: float = field(
        default=300.0,
        metadata=setting(
            "CFOPS_RELEASE_SOAK",
            flag="--soak",
            help="production: seconds each stage soaks before its analysis",
        ),
    )
    # Each stage judged by real traffic per version (Workers Analytics Engine) after its soak.
    gates: StageGates = field(default_factory=StageGates)


@dataclass(frozen=True, kw_only=True)
class Settings:
    root: Path
    artifacts_dir: Path = field(
        default=Path("artifacts"),
        metadata=from_env("CFOPS_ARTIFACTS_DIR", help="where JSON and Markdown reports go"),
    )
    worker_dir: Path = field(
        default=Path("backend-cloudflare"), metadata=setting(help="the Worker bundle directory")
    )
    # The Node that runs wrangler and tsc; unset: the one pinned in worker_dir/package.json (cfops.node).
    node: Path | None = field(
        default=None,
        metadata=setting(
            "CFOPS_NODE",
            help="the node executable wrangler and tsc run on (>= wrangler's engines); unset: the pinned one",
        ),
    )
    native: WorkerSettings = field(
        default_factory=lambda: WorkerSettings(
            name="immcad-backend-native-python", config=Path("backend-cloudflare/wrangler.toml")
        )
    )
    proxy: WorkerSettings = field(
        default_factory=lambda: WorkerSettings(
            name="immcad-backend-proxy", config=Path("backend-cloudflare/wrangler.backend-proxy.jsonc")
        )
    )
    # Names whose values are secrets: pushed by secrets sync, redacted from every output.
    secret_names: tuple[str, ...] = field(
        default=(
            *cloudflare.BEARER_TOKEN_NAMES,
            "GEMINI_API_KEY",
            "CANLII_API_KEY",
            "REDIS_URL",
        ),
        metadata=setting(
            help="names whose values are secrets: pushed by `cfops secrets`, redacted everywhere"
        ),
    )
    sync: SyncSettings = field(default_factory=SyncSettings)
    dev: DevSettings = field(default_factory=DevSettings)
    perf: PerfSettings = field(default_factory=PerfSettings)
    dev_proxy: DevProxySettings = field(default_factory=DevProxySettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    preflight: PreflightSettings = field(default_factory=PreflightSettings)
    release: ReleaseSettings = field(default_factory=ReleaseSettings)
    deploy: DeploySettings = field(default_factory=DeploySettings)
    analytics: AnalyticsSettings = field(default_factory=AnalyticsSettings)
    # The merged .env + process environment, for lookups of secrets and compatible env vars.
    # repr=False: the settings object may be printed while debugging; secret values must not be.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The command-line overrides these settings were built with, by dotted field path.
    flags: Mapping[str, Any] = field(default_factory=dict, repr=False)


_SECRET_HINTS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")


def is_secret_name(settings: Settings, name: str) -> bool:
    """Configured secret names, plus anything named like a credential."""
    return name in settings.secret_names or any(hint in name.upper() for hint in _SECRET_HINTS)


def is_placeholder(settings: Settings, value: str) -> bool:
    """Whether ``value`` was never filled in (``[tool.cfops.preflight] placeholder_patterns``).

    The one rule for both sides: preflight flags such a value, secrets sync skips it (never pushes it).
    """
    lowered = value.strip().lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in settings.preflight.placeholder_patterns)


def find_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` whose pyproject.toml has a [tool.cfops] table."""
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / PYPROJECT
        if candidate.is_file() and "[tool.cfops" in candidate.read_text(encoding="utf-8", errors="replace"):
            return directory
    raise UsageError(f"no {PYPROJECT} with a [tool.cfops] table at or above {start}; run from the project")


def _read_table(root: Path) -> dict[str, Any]:
    path = root / PYPROJECT
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("tool", {}).get("cfops", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.cfops] must be a table")
    return table


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, where: str, root: Path) -> Any:
    """Turn a TOML value or an environment string into the field's type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    is_text = isinstance(value, str)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None or (is_text and value == "" and type(None) in args):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where, root)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if is_text and value.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if is_text and value.strip().lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return (root / value).resolve()
    if origin is tuple:
        items = [p.strip() for p in value.split(",") if p.strip()] if is_text else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(item, args[0], where, root) for item in items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}", root) for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported setting type {_describe(tp)}")  # pragma: no cover


def build(
    base: T,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    root: Path,
    where: str,
    flags: Mapping[str, Any] | None = None,
    path: str = "",
) -> T:
    """Overlay a config table, then the environment, then command-line flags on ``base`` (a settings
    dataclass instance). ``flags`` maps dotted field paths ("perf.requests") to the parsed text."""
    flags = flags or {}
    hints = typing.get_type_hints(type(base))
    fields = {f.name: f for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields) - {"root", "env", "flags"})
    if unknown:
        known = ", ".join(sorted(set(fields) - {"root", "env", "flags"}))
        raise ConfigError(f"unknown setting {where}.{unknown[0]} (known: {known})")
    changes: dict[str, Any] = {}
    for name, f in fields.items():
        if name in {"root", "env", "flags"}:
            continue
        key = f"{where}.{name}"
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            sub = table.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{key} must be a table")
            changes[name] = build(current, sub, env, root, f"{where[:-1]}.{name}]", flags, f"{path}{name}.")
            continue
        if name in table:
            convert: Callable[[Any, Path], Any] | None = f.metadata.get("convert")
            changes[name] = (
                convert(table[name], root) if convert else _coerce(table[name], hints[name], key, root)
            )
        if not f.metadata.get("deferred"):
            override = _env_override(f, hints[name], env, root)
            if override is not _UNSET:
                changes[name] = override
        override = _flag_override(f, hints[name], flags.get(f"{path}{name}", _UNSET))
        if override is not _UNSET:
            changes[name] = override
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


_UNSET: Any = object()


def _env_override(f: dataclasses.Field[Any], tp: Any, env: Mapping[str, str], root: Path) -> Any:
    for var in f.metadata.get("env", ()):
        if env.get(var) is not None:
            return _coerce(env[var], tp, var, root)
    return _UNSET


def _flag_override(f: dataclasses.Field[Any], tp: Any, value: Any) -> Any:
    if value is _UNSET or value is None:
        return _UNSET
    # A path on the command line is relative to where the user stands, not to the project root.
    return _coerce(value, tp, str(f.metadata.get("flag") or f.name), Path.cwd())


def with_deferred_env(section: T, settings: Settings) -> T:
    """``section`` with its deferred environment overrides applied (ConfigError if one is malformed);
    a field given as a command-line flag keeps the flag's value."""
    hints = typing.get_type_hints(type(section))
    prefix = next(
        (
            f"{f.name}."
            for f in dataclasses.fields(settings)
            if type(getattr(settings, f.name)) is type(section)
        ),
        "",
    )
    changes = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        if f.metadata.get("deferred") and f"{prefix}{f.name}" not in settings.flags:
            override = _env_override(f, hints[f.name], settings.env, settings.root)
            if override is not _UNSET:
                changes[f.name] = override
    return dataclasses.replace(section, **changes)  # type: ignore[type-var]


def read_env(root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``.env`` under ``root`` overlaid by the process environment (which wins)."""
    merged: dict[str, str] = {}
    dotenv = root / ".env"
    if dotenv.is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    merged.update(environ)
    return merged


def load_settings(
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the settings for the project at ``root`` (found from the cwd when not given).

    ``flags``: command-line overrides by dotted field path ("dev.port" -> "8790"), the top layer.
    """
    environ = {} if environ is None else environ
    if root is None:
        explicit = environ.get("CFOPS_ROOT")
        root = Path(explicit).resolve() if explicit else find_root(Path.cwd())
    root = root.resolve()
    env = read_env(root, environ)
    table = _read_table(root)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    settings = build(_with_resolved_paths(Settings(root=root)), table, env, root, "[tool.cfops]", given)
    return dataclasses.replace(settings, env=env, flags=given)


def _with_resolved_paths(settings: Settings) -> Settings:
    """Defaults are written relative to the project root; make them absolute like configured ones."""
    root = settings.root

    def fix(obj: Any) -> Any:
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            return obj
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in {"root", "env", "flags"}:
                continue
            if isinstance(value, Path) and not value.is_absolute():
                changes[f.name] = (root / value).resolve()
            elif dataclasses.is_dataclass(value):
                changes[f.name] = fix(value)
        return dataclasses.replace(obj, **changes)

    fixed: Settings = fix(settings)
    return fixed
