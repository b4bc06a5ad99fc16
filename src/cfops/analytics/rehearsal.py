"""The rehearsal's analysis (`cfops analytics rehearse`): the configured gates tried on seeded versions.

A seeded old and new version with chosen numbers get a real verdict, and deliberately degraded new
versions must fail their gates (docs/analytics.md, "Rehearsal"). The seeded numbers go through the
data-point layout and the sample-weighted aggregation the SQL mirrors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfops.analytics.gates import gates_record, judge
from cfops.analytics.query import VersionStats
from cfops.config import StageGates
from cfops.errors import CheckFailed


def _weighted_quantile(values: list[tuple[float, float]], q: float) -> float | None:
    """The smallest value whose cumulative weight reaches q of the total (ClickHouse's exact rule)."""
    if not values:
        return None
    ordered = sorted(values)
    total = sum(w for _, w in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= q * total:
            return round(value, 3)
    return round(ordered[-1][0], 3)


def aggregate(points: Sequence[dict[str, Any]], version: str, *, user_only: bool = False) -> VersionStats:
    """A version's numbers from raw data points (the layout's columns), weighted like the SQL.

    ``user_only`` leaves out cfops's own (synthetic) points as the stage's SQL does; a point without
    the origin field (written before it existed) counts as user traffic there too.
    """
    from immcad_api import analytics as layout

    mine = [
        p
        for p in points
        if p.get(layout.BLOB_VERSION) == version
        and not (user_only and p.get(layout.BLOB_ORIGIN) == layout.ORIGIN_SYNTHETIC)
    ]
    weight = [float(p.get(layout.SAMPLE_INTERVAL, 1)) for p in mine]
    latency = [(float(p[layout.DOUBLE_LATENCY_MS]), w) for p, w in zip(mine, weight, strict=True)]
    return VersionStats(
        version=version,
        requests=sum(weight),
        errors_5xx=sum(
            w for p, w in zip(mine, weight, strict=True) if p.get(layout.BLOB_STATUS_CLASS) == "5xx"
        ),
        errors_4xx=sum(
            w for p, w in zip(mine, weight, strict=True) if p.get(layout.BLOB_STATUS_CLASS) == "4xx"
        ),
        p50_ms=_weighted_quantile(latency, 0.5),
        p95_ms=_weighted_quantile(latency, 0.95),
    )


@dataclass(frozen=True, kw_only=True)
class Seed:
    """A seeded version's chosen numbers (the rehearsal's labelled stand-in for real traffic)."""

    label: str
    error_rate: float
    client_error_rate: float
    p95_ms: float
    regression: str | None = None  # the gate that must fail it (a deliberately degraded version)


# The rehearsal's scenario (docs/analytics.md, "Rehearsal"). The healthy new version differs from the
# old one by what two equal versions differ by in a window: gates that fail it would roll back releases
# on noise. Each degraded version breaks one gate's dimension by a margin no sane gate lets through:
# gates that pass one cannot catch that regression in production.
SEED_BASELINE = Seed(label="seeded old", error_rate=0.01, client_error_rate=0.02, p95_ms=120.0)
SEED_HEALTHY = Seed(label="seeded new", error_rate=0.011, client_error_rate=0.022, p95_ms=126.0)
SEED_DEGRADED = (
    Seed(
        label="seeded new, 5xx x6",
        error_rate=0.06,
        client_error_rate=0.02,
        p95_ms=120.0,
        regression="5xx rate",
    ),
    Seed(
        label="seeded new, 4xx x6",
        error_rate=0.01,
        client_error_rate=0.12,
        p95_ms=120.0,
        regression="4xx rate",
    ),
    Seed(label="seeded new, p95 x4", error_rate=0.01, client_error_rate=0.02, p95_ms=480.0, regression="p95"),
)
SEED_POINTS = 1000  # data points per seeded version; each stands for enough requests for a verdict


def seeded_points(seed: Seed, gates: StageGates) -> list[dict[str, Any]]:
    """A seeded version's data points in the layout's columns, sampled so they reach ``min_requests``.

    Latencies rise evenly so the weighted p95 is exactly ``seed.p95_ms``; the first points carry the 5xx,
    the next the 4xx answers.
    """
    from immcad_api import analytics as layout

    weight = max(1, math.ceil(gates.min_requests / SEED_POINTS))
    n5 = round(seed.error_rate * SEED_POINTS)
    n4 = round(seed.client_error_rate * SEED_POINTS)
    points = []
    for i in range(SEED_POINTS):
        status = 503 if i < n5 else 404 if i < n5 + n4 else 200
        point = layout.DataPoint(
            version=seed.label,
            route="/api/chat",
            method="POST",
            status=status,
            latency_ms=seed.p95_ms * (i + 1) / (0.95 * SEED_POINTS),
        )
        points.append({layout.SAMPLE_INTERVAL: weight, **point.columns()})
    return points


def _read_points(points_file: Path) -> list[dict[str, Any]]:
    try:
        lines = points_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    points = []
    for number, line in enumerate(lines, start=1):
        try:
            point = json.loads(line) if line.strip() else None
        except ValueError:
            point = "?"
        if point is None:
            continue
        if not isinstance(point, dict):
            raise CheckFailed(f"{points_file}:{number} is not a data point (one JSON object per line)")
        points.append(point)
    return points


def _local_note(origins: dict[str, float]) -> str:
    synthetic, user = origins["synthetic"], origins["user"]
    total = synthetic + user
    if not total:
        return "local stack: no data points (shown, not judged)"
    if not user:
        split = "all synthetic"
    elif not synthetic:
        split = "all user"
    else:
        split = f"{synthetic:g} synthetic, {user:g} user"
    return f"local stack: {total:g} requests, {split} (shown, not judged)"


def rehearse(points_file: Path, gates: StageGates) -> dict[str, Any]:
    """Try the configured gates on seeded versions (labelled so) before a production run.

    A seeded old and new version with chosen numbers get a real verdict (the healthy new one must pass),
    and each deliberately degraded new version must fail its gate: a self-test that the gates can catch a
    regression at all. The seeded numbers go through the data-point layout and the sample-weighted
    aggregation the SQL mirrors; the local stack's own points (the perf smoke's: synthetic) are read the
    same way and reported beside them, labelled by origin, never judged. The SQL API itself is exercised
    only against the fake API (tests) and in production.
    """
    points = _read_points(points_file)
    from immcad_api import analytics as layout

    try:
        versions = sorted({str(p.get(layout.BLOB_VERSION)) for p in points})
        version = versions[-1] if versions else layout.LOCAL_VERSION
        local = aggregate(points, version)
        local_user = aggregate(points, version, user_only=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckFailed(f"{points_file}: a data point does not follow the layout ({exc!r})") from None
    # The local stack's traffic is the perf smoke's and cfops's health polls: all synthetic, so a stage
    # would judge none of it. Shown (labelled by origin), never judged.
    origins = {
        layout.ORIGIN_SYNTHETIC: local.requests - local_user.requests,
        layout.ORIGIN_USER: local_user.requests,
    }

    def stats(seed: Seed) -> VersionStats:
        return aggregate(seeded_points(seed, gates), seed.label)

    old, new = stats(SEED_BASELINE), stats(SEED_HEALTHY)
    judgement = judge(new, old, gates)
    self_test = []
    for seed in SEED_DEGRADED:
        verdict = judge(stats(seed), old, gates)
        check = next(((ok, d) for gate, ok, d in verdict.checks if gate == seed.regression), None)
        self_test.append(
            {
                "seed": seed.label,
                "gate": seed.regression,
                "caught": check is not None and not check[0],
                "detail": check[1] if check else verdict.reason,
                "verdict": verdict.verdict,
            }
        )
    missed = [t for t in self_test if not t["caught"]]
    if missed:
        outcome = "fail"
        reason = "the gates cannot catch a regression: " + "; ".join(
            f"{t['seed']} passed the {t['gate']} gate ({t['detail']})" for t in missed
        )
    elif judgement.verdict != "pass":
        outcome = "fail"
        reason = f"the gates fail a version within noise of the old one: {judgement.reason}"
    else:
        outcome = "pass"
        reason = (
            f"{judgement.reason}; each seeded regression failed its gate "
            f"({', '.join(str(s.regression) for s in SEED_DEGRADED)})"
        )
    return {
        "stage_percent": None,
        "seeded": True,
        "source": str(points_file),
        "points": len(points),
        "local": local.as_dict() | {"origins": origins, "judged": False},
        "versions": {"new": new.as_dict(), "old": old.as_dict()},
        "baseline_from_earlier_stage": False,
        "verdict": judgement.verdict,
        "reason": f"{reason}; {_local_note(origins)}",
        "outcome": outcome,
        "checks": judgement.as_dict()["checks"],
        "self_test": self_test,
        "gates": gates_record(gates),
    }
