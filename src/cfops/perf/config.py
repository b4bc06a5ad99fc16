"""The resolved configuration of one latency run: settings < flags, validated against the hard bounds.

``RunConfig`` is what the library entry point (``run_smoke``) takes; ``resolve`` builds it from the
project settings (flags included: they are layered into the settings by cfops.cli) plus what is not a
setting (a scenario file, headers, a version to pin). Every rejection
is a UsageError: one line naming the input and what to do.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from cfops import cloudflare, output
from cfops.argv import ENV_REF, FILE_REF
from cfops.argv import is_sensitive as is_sensitive_header
from cfops.config import (
    Engine,
    PerfBounds,
    PerfProbe,
    PerfSettings,
    Settings,
    parse_scenario,
    with_deferred_env,
)
from cfops.errors import ConfigError, UsageError

ENGINES: tuple[Engine, ...] = typing.get_args(Engine)
# Ceilings no setting can raise: a canary is a probe, not a load test.
HARD_BOUNDS = PerfBounds()
# Every answer of the backend names the Worker version that produced it (the version-metadata binding in
# the Worker, IMMCAD_VERSION_ID locally): Cloudflare ignores an override silently, so this is the proof.
ANSWERED_BY_HEADER = "x-immcad-version"
DEFAULT_PROBE_BODY = {"session_id": "perf-smoke-{i}", "message": "performance canary probe"}
USER_AGENT = "cfops-perf"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_WORKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    max_p95_seconds: float
    max_p99_seconds: float | None = None
    max_error_rate: float = 0.0
    max_regression_percent: float = 20.0
    baseline: Path | None = None


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one run needs. ``base_url`` None means: start the local backend and measure it."""

    base_url: str | None
    probes: tuple[PerfProbe, ...]
    requests: int
    concurrency: int
    duration_seconds: float | None = None
    rate: float | None = None
    warmup: int = 0
    timeout_seconds: float = 10.0
    headers: Mapping[str, str] = field(default_factory=dict)
    bearer_token: str | None = field(default=None, repr=False)
    version_id: str | None = None
    worker: str | None = None
    engine: Engine = "aiohttp"
    thresholds: Thresholds
    bounds: PerfBounds = HARD_BOUNDS
    scenario_source: str = "default"

    @property
    def model(self) -> str:
        return "open" if self.rate else "closed"

    def describe(self) -> dict[str, Any]:
        """The configuration as the artifact records it: no secret values."""
        return {
            "base_url": self.base_url,
            "model": self.model,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "duration_seconds": self.duration_seconds,
            "rate_per_second": self.rate,
            "warmup": self.warmup,
            "timeout_seconds": self.timeout_seconds,
            "engine": self.engine,
            "scenario": self.scenario_source,
            "probes": [
                {
                    "name": p.name,
                    "method": p.method,
                    "path": p.path,
                    "weight": p.weight,
                    "expected_status": list(p.status),
                    "headers": {k: _shown(k, v) for k, v in p.headers.items()},
                }
                for p in self.probes
            ],
            "headers": {k: _shown(k, v) for k, v in self.headers.items()},
            "bearer_token": "set" if self.bearer_token else "not set",
            "version_id": self.version_id,
            "worker": self.worker,
            "bounds": dataclasses.asdict(self.bounds),
        }


def _shown(name: str, value: str) -> str:
    return output.REDACTED if is_sensitive_header(name) else value


def default_probe(chat_path: str) -> PerfProbe:
    """The probe the old make target sent: POST chat with a per-request session id."""
    return PerfProbe(name="chat", method="POST", path=chat_path, json=DEFAULT_PROBE_BODY)


def load_scenario_file(path: Path) -> tuple[PerfProbe, ...]:
    """A YAML file with the same shape as [tool.cfops.perf.scenario]: name -> {method, path, ...}."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"scenario file {path} not found; pass an existing YAML file to --scenario"
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"scenario file {path} is not readable YAML: {first}") from None
    probes = parse_scenario(raw, str(path))
    if not probes:
        raise ConfigError(f"scenario file {path} defines no probe")
    return probes


def parse_header(text: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``Name: value``; a value ``@env:VAR`` is read from the environment and ``@file:PATH`` from a file,
    so that a credential never has to be on a command line (cfops.argv)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.match(name):
        raise UsageError(f"--header {name or text!r}: expected 'Name: value'")
    if value.startswith(ENV_REF):
        var = value.removeprefix(ENV_REF)
        found = (env or {}).get(var)
        if found is None:
            raise UsageError(
                f"--header {name}: environment variable {var} (named by {ENV_REF}{var}) is not set"
            )
        value = found.strip()
    elif value.startswith(FILE_REF):
        source = Path(value.removeprefix(FILE_REF))
        try:
            value = source.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"--header {name}: cannot read {source}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
    if "\r" in value or "\n" in value:
        raise UsageError(f"--header {name}: the value must not contain line breaks")
    check_header_value(f"--header {name}", value)
    return name, value


def check_header_value(where: str, value: str) -> None:
    """HTTP header values are ASCII on the wire (clients refuse anything else mid-run)."""
    if not value.isascii() or not value.isprintable():
        raise UsageError(
            f"{where}: the value must be printable ASCII (HTTP headers are); percent-encode other characters"
        )


def validate_base_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials, query or fragment; returned without a
    trailing slash so that paths join cleanly."""
    shown = url if len(url) <= 80 else url[:77] + "..."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(
            f"base URL {shown!r} is malformed ({exc}); expected like https://api.example.com"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"base URL {shown!r} is not an absolute http(s) URL; set IMMCAD_API_BASE_URL or --base-url "
            "like https://api.example.com"
        )
    if parts.username or parts.password:
        output.add_secrets([parts.password, parts.username])
        raise UsageError("base URL must not contain credentials; put the token in IMMCAD_API_BEARER_TOKEN")
    if parts.query or parts.fragment:
        raise UsageError(f"base URL {shown!r} must not have a query or fragment")
    if port == 0:
        raise UsageError(f"base URL {shown!r} has port 0")
    return url.rstrip("/")


def _check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    bad = value <= low if low_open else value < low
    if bad or value > high or math.isnan(value):
        lower = f"above {low:g}" if low_open else f"at least {low:g}"
        raise UsageError(f"{name} must be {lower} and at most {high:g}, got {value:g}")


def check_bounds(bounds: PerfBounds) -> PerfBounds:
    for name in ("max_requests", "max_concurrency", "max_duration_seconds"):
        value, ceiling = getattr(bounds, name), getattr(HARD_BOUNDS, name)
        if not 0 < value <= ceiling:
            raise ConfigError(
                f"[tool.cfops.perf.bounds] {name} = {value:g}: must be above 0 and at most {ceiling:g}"
            )
    return bounds


def resolve(
    settings: Settings,
    *,
    baseline: Path | None = None,
    scenario: Path | None = None,
    headers: Sequence[str] = (),
    version_id: str | None = None,
    worker: str | None = None,
) -> RunConfig:
    """``settings.perf`` ([tool.cfops.perf] < .env < environment < flags, see cfops.cli) plus what is
    not a setting (files, headers, a version to pin), validated against the bounds."""
    perf: PerfSettings = with_deferred_env(settings.perf, settings)
    bounds = check_bounds(perf.bounds)
    url = validate_base_url(perf.base_url.strip()) if perf.base_url.strip() else None

    path = perf.chat_path
    if not path.startswith("/"):
        raise UsageError(f"chat path (CHAT_PATH / --chat-path) must start with /, got {path!r}")
    if scenario is not None:
        probes, source = load_scenario_file(scenario), str(scenario)
    elif perf.scenario:
        probes, source = perf.scenario, "[tool.cfops.perf.scenario]"
    else:
        probes, source = (default_probe(path),), f"default (POST {path})"

    duration, rate = perf.duration_seconds, perf.rate
    # A duration run is bounded by time; the request count only caps it when given explicitly.
    count_given = "perf.requests" in settings.flags
    count = perf.requests
    workers = perf.concurrency
    _check_range("concurrency (CONCURRENCY / --concurrency)", workers, 1, bounds.max_concurrency)
    if duration is not None:
        _check_range("--duration (seconds)", duration, 0, bounds.max_duration_seconds, low_open=True)
        if not count_given:
            count = bounds.max_requests if rate is None else math.ceil(rate * duration)
    if rate is not None:
        _check_range("--rate (requests per second)", rate, 0, 100_000, low_open=True)
        if duration is not None and count_given:
            count = min(count, math.ceil(rate * duration))
    _check_range("requests (REQUESTS / --requests)", count, 1, bounds.max_requests)
    if rate is not None and count / rate > bounds.max_duration_seconds:
        raise UsageError(
            f"{count} requests at {rate:g}/s take {count / rate:g} s, over the "
            f"{bounds.max_duration_seconds:g} s bound; lower --requests/--duration or raise --rate"
        )
    _check_range("--warmup (requests)", perf.warmup, 0, bounds.max_requests)
    _check_range("--timeout (seconds)", perf.timeout_seconds, 0, bounds.max_duration_seconds, low_open=True)

    p95, p99 = perf.max_p95_seconds, perf.max_p99_seconds
    _check_range("max p95 (MAX_P95_SECONDS / --max-p95)", p95, 0, 3600, low_open=True)
    if p99 is not None:
        _check_range("max p99 (MAX_P99_SECONDS / --max-p99)", p99, 0, 3600, low_open=True)
    error_rate = perf.max_error_rate
    _check_range("max error rate (MAX_ERROR_RATE / --max-error-rate, a fraction)", error_rate, 0, 1)
    regression = perf.max_regression_percent
    _check_range("--max-regression (percent)", regression, 0, 10_000)
    if baseline is not None and not baseline.is_file():
        raise UsageError(f"baseline {baseline} not found; pass an earlier perf-smoke.json to --baseline")

    extra: dict[str, str] = {}
    for text in headers:
        name, value = parse_header(text, settings.env)
        if is_sensitive_header(name):
            output.add_secrets([value])
        extra[name] = value
    worker_name = worker or settings.native.name
    if version_id is not None:
        if not _VERSION_ID.match(version_id):
            raise UsageError(f"--version-id {version_id!r} is not a Worker version id (letters, digits, -)")
        if not _WORKER_NAME.match(worker_name):
            raise UsageError(f"worker name {worker_name!r} is not a valid Worker name")
        # Cloudflare routes a request carrying this header to that version of the named Worker.
        extra[cloudflare.VERSION_OVERRIDE_HEADER] = f'{worker_name}="{version_id}"'

    token = cloudflare.bearer_token(settings.env)
    output.add_secrets([token])
    return RunConfig(
        base_url=url,
        probes=probes,
        requests=int(count),
        concurrency=int(workers),
        duration_seconds=duration,
        rate=rate,
        warmup=int(perf.warmup),
        timeout_seconds=perf.timeout_seconds,
        headers=extra,
        bearer_token=token,
        version_id=version_id,
        worker=worker_name if version_id is not None else None,
        engine=perf.engine,
        thresholds=Thresholds(
            max_p95_seconds=p95,
            max_p99_seconds=p99,
            max_error_rate=error_rate,
            max_regression_percent=regression,
            baseline=baseline,
        ),
        bounds=bounds,
        scenario_source=source,
    )


def probe_body(probe: PerfProbe) -> bytes | None:
    if probe.json is not None:
        return json.dumps(probe.json, separators=(",", ":")).encode()
    if probe.body is not None:
        return probe.body.encode()
    return None
