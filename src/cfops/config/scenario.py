"""Latency scenarios: the weighted probes of `cfops perf`, checked as they are read (TOML or YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cfops.errors import ConfigError

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
