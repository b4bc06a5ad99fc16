"""The SQL cfops sends to the Analytics Engine SQL API, and the typed reading of its answers.

Every column name comes from the data-point layout (``immcad_api.analytics``). The window is written
relative to the API's own clock (``NOW() - INTERVAL 'n' SECOND``): the runner only measures how long ago
the stage began (a duration, immune to clock skew), never a wall-clock timestamp.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cfops.errors import CheckFailed, ConfigError
from immcad_api import analytics as layout

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_VERSION = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
QUANTILES = {"p50_ms": 0.5, "p95_ms": 0.95}


def dataset_name(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ConfigError(
            f"[tool.cfops.analytics] dataset {name!r} is not a plain identifier (letters, digits, _)"
        )
    return name


def _literal(version: str) -> str:
    # Version ids are UUIDs; anything else is refused rather than quoted, so no input reaches the SQL.
    if not _VERSION.match(version):
        raise ConfigError(f"version id {version!r} is not a plain id")
    return f"'{version}'"


def show_tables() -> str:
    return "SHOW TABLES FORMAT JSON"


def per_version(dataset: str, versions: Iterable[str], window_seconds: int) -> str:
    """Requests, 5xx and 4xx counts and p50/p95 latency per version over the last ``window_seconds``.

    User traffic only: cfops's own requests (the stage's smoke, marked ``synthetic`` in the origin blob)
    would dilute a regression or, on a quiet Worker, be most of the evidence. A point written before the
    origin field existed has it empty (``''``), which is not ``synthetic``: old data still counts.
    Counts are sums of ``_sample_interval`` (each stored point stands for that many requests once
    Analytics Engine samples), and quantiles are weighted by it.
    """
    weight = layout.SAMPLE_INTERVAL
    status = layout.BLOB_STATUS_CLASS
    columns = [
        f"{layout.BLOB_VERSION} AS version",
        f"SUM({weight}) AS requests",
        f"SUM(IF({status} = '5xx', {weight}, 0)) AS errors_5xx",
        f"SUM(IF({status} = '4xx', {weight}, 0)) AS errors_4xx",
        *(
            f"quantileWeighted({q}, {layout.DOUBLE_LATENCY_MS}, {weight}) AS {name}"
            for name, q in QUANTILES.items()
        ),
    ]
    wanted = ", ".join(_literal(v) for v in versions)
    # Every interpolated piece is a layout constant, a checked identifier, a checked id or an int.
    return (
        f"SELECT {', '.join(columns)}"  # noqa: S608
        f" FROM {dataset_name(dataset)}"
        f" WHERE timestamp > NOW() - INTERVAL '{max(1, int(window_seconds))}' SECOND"
        f" AND {layout.INDEX_VERSION} IN ({wanted})"
        f" AND {layout.BLOB_ORIGIN} != '{layout.ORIGIN_SYNTHETIC}'"
        " GROUP BY version FORMAT JSON"
    )


@dataclass(frozen=True, kw_only=True)
class VersionStats:
    """One version's traffic in a window (sample-weighted)."""

    version: str
    requests: float = 0.0
    errors_5xx: float = 0.0
    errors_4xx: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors_5xx / self.requests if self.requests else 0.0

    @property
    def client_error_rate(self) -> float:
        return self.errors_4xx / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": round(self.requests, 3),
            "errors_5xx": round(self.errors_5xx, 3),
            "errors_4xx": round(self.errors_4xx, 3),
            "error_rate": round(self.error_rate, 6),
            "client_error_rate": round(self.client_error_rate, 6),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionStats:
        return cls(
            version=str(data["version"]),
            requests=float(data.get("requests") or 0),
            errors_5xx=float(data.get("errors_5xx") or 0),
            errors_4xx=float(data.get("errors_4xx") or 0),
            p50_ms=_number(data.get("p50_ms")),
            p95_ms=_number(data.get("p95_ms")),
        )


def _number(value: Any) -> float | None:
    # ClickHouse's JSON output quotes 64-bit integers and may answer nan for an empty quantile.
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"the SQL API answered a non-number {value!r}") from None
    return None if math.isnan(number) else round(number, 3)


def read_per_version(answer: Mapping[str, Any], versions: Iterable[str]) -> dict[str, VersionStats]:
    """The rows of a ``per_version`` answer (FORMAT JSON: ``{"meta", "data", "rows"}``), every asked
    version present (a version without a row served nothing in the window)."""
    rows = answer.get("data")
    if not isinstance(rows, list):
        raise CheckFailed("the SQL API's answer has no data rows (expected FORMAT JSON)")
    found: dict[str, VersionStats] = {}
    for row in rows:
        if not isinstance(row, dict) or "version" not in row:
            raise CheckFailed(f"the SQL API answered an unexpected row: {str(row)[:120]}")
        found[str(row["version"])] = VersionStats(
            version=str(row["version"]),
            requests=_number(row.get("requests")) or 0.0,
            errors_5xx=_number(row.get("errors_5xx")) or 0.0,
            errors_4xx=_number(row.get("errors_4xx")) or 0.0,
            p50_ms=_number(row.get("p50_ms")),
            p95_ms=_number(row.get("p95_ms")),
        )
    return {v: found.get(v, VersionStats(version=v)) for v in versions}


def read_tables(answer: Mapping[str, Any]) -> set[str]:
    rows = answer.get("data")
    if not isinstance(rows, list):
        raise CheckFailed("the SQL API's SHOW TABLES answer has no data rows")
    return {str(row.get("dataset") or row.get("name")) for row in rows if isinstance(row, dict)}
