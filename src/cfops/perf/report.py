"""From samples to a verdict: statistics, thresholds, baseline, self-check; JSON, Markdown, terminal.

Latency statistics cover every request that got an HTTP response (any status); requests without one
(connect, timeout, protocol errors) have no latency to report and count as failures. Failures by kind
and the status-code distribution sit next to the percentiles, so a fast 503 cannot pass unnoticed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cfops import output
from cfops import report as artifacts
from cfops.errors import UsageError
from cfops.perf.config import RunConfig
from cfops.perf.load import RunResult
from cfops.perf.stats import NS_PER_MS, LatencySummary, histogram, summarize

SCHEMA = "cfops.perf-smoke/1"
# Above this share of one core the client's own event loop delays responses it is timing.
CPU_LIMIT = 0.6
# Closed model: C workers are always waiting on a request, so throughput x mean latency ~ C (Little's
# law). Well below C, time went into the client between requests, not into the server.
OCCUPANCY_LIMIT = 0.7
# A timer due in 5 ms fires this much later at p95: the delay the client adds to what it times. The
# floor covers timer granularity (libuv timers tick in whole milliseconds).
LAG_FLOOR_MS = 2.0
LAG_SHARE = 0.1  # ... of the median latency
LATE_START_NS = 5 * NS_PER_MS
_BAR_WIDTH = 40


def fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.1f} ms"


@dataclass(frozen=True)
class Check:
    name: str
    limit: float
    actual: float | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limit": self.limit,
            "actual": self.actual,
            "passed": self.passed,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SelfCheck:
    cpu_seconds: float
    wall_seconds: float
    cpu_ratio: float
    occupancy: float | None
    loop_lag_ms: dict[str, float] | None
    lag_limit_ms: float | None
    client_bottleneck: bool
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu_seconds": round(self.cpu_seconds, 4),
            "wall_seconds": round(self.wall_seconds, 4),
            "cpu_ratio": round(self.cpu_ratio, 3),
            "cpu_ratio_limit": CPU_LIMIT,
            "littles_law_occupancy": None if self.occupancy is None else round(self.occupancy, 3),
            "occupancy_limit": OCCUPANCY_LIMIT,
            "event_loop_lag_ms": self.loop_lag_ms,
            "event_loop_lag_p95_limit_ms": self.lag_limit_ms,
            "client_bottleneck": self.client_bottleneck,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class Report:
    config: RunConfig
    target: str
    embedded: bool
    started_at: str
    stats: dict[str, Any]
    checks: tuple[Check, ...]
    self_check: SelfCheck
    baseline: dict[str, Any] | None
    verdict: str
    histogram: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "target": {"url": self.target, "embedded_local_backend": self.embedded},
            "config": self.config.describe(),
            "stats": self.stats,
            "histogram_ms": self.histogram,
            "thresholds": {
                "max_p95_seconds": self.config.thresholds.max_p95_seconds,
                "max_p99_seconds": self.config.thresholds.max_p99_seconds,
                "max_error_rate": self.config.thresholds.max_error_rate,
                "max_regression_percent": self.config.thresholds.max_regression_percent
                if self.baseline
                else None,
            },
            "checks": [check.to_dict() for check in self.checks],
            "baseline": self.baseline,
            "self_check": self.self_check.to_dict(),
            "verdict": {
                "passed": self.passed,
                # False when the client limited the run: the numbers describe the client, not the server.
                "trustworthy": not self.self_check.client_bottleneck,
                "line": self.verdict,
                "failed": [check.name for check in self.checks if not check.passed],
            },
        }


def _summary_ms(summary: LatencySummary | None) -> dict[str, float] | None:
    return summary.to_ms() if summary else None


UNKNOWN_VERSION = "unknown"  # an answer without x-immcad-version


def answers_by_version(status: list[int], version: list[str | None]) -> dict[str, int]:
    """How many answers each Worker version gave (requests without an answer are not counted)."""
    counts = Counter(v or UNKNOWN_VERSION for s, v in zip(status, version, strict=True) if s)
    return dict(counts.most_common())


def version_check(expected: str, answers: dict[str, int]) -> Check:
    """Every answer must come from ``expected``: Cloudflare silently ignores an override for a version
    that is not in the current deployment, and then the old version would be measured."""
    total = sum(answers.values())
    others = {v: n for v, n in answers.items() if v != expected}
    if not total:
        return Check(
            "answered by", 1.0, None, False, f"no answer to tell which version answered ({expected})"
        )
    if not others:
        return Check("answered by", 1.0, 1.0, True, f"all {total} answered by {expected}")
    wrong = sum(others.values())
    who = ", ".join(f"{v} ({n})" if len(others) > 1 else v for v, n in others.items())
    return Check(
        "answered by",
        1.0,
        (total - wrong) / total,
        False,
        f"override not honoured: {wrong} of {total} answered by {who}",
    )


def build_stats(config: RunConfig, result: RunResult) -> dict[str, Any]:
    s = result.samples
    count = len(s)
    responded = [lat for lat, status in zip(s.latency_ns, s.status, strict=True) if status]
    failures = Counter(kind for kind in s.kind if kind is not None)
    failed = sum(failures.values())
    wall = result.wall_ns / 1e9
    per_probe = {}
    for index, probe in enumerate(result.probes):
        mine = [i for i, p in enumerate(s.probe) if p == index]
        per_probe[probe.name] = {
            "requests": len(mine),
            "failed": sum(1 for i in mine if s.kind[i] is not None),
            "latency_ms": _summary_ms(summarize([s.latency_ns[i] for i in mine if s.status[i]])),
        }
    stats: dict[str, Any] = {
        "requests": count,
        "succeeded": count - failed,
        "failed": failed,
        "error_rate": round(failed / count, 6) if count else 0.0,
        "responses": len(responded),
        "wall_seconds": round(wall, 4),
        "throughput_rps": round(count / wall, 2) if wall > 0 else 0.0,
        "latency_ms": _summary_ms(summarize(responded)),
        "status_codes": {str(k): v for k, v in sorted(Counter(x for x in s.status if x).items())},
        # Samples built without versions (older callers) count as answers of an unknown version.
        "answers_by_version": answers_by_version(
            s.status, [*s.version, *[None] * (len(s.status) - len(s.version))]
        ),
        "errors": dict(sorted(failures.items())),
        "error_examples": dict(sorted(result.examples.items())),
        "per_probe": per_probe,
        "warmup": {"sent": result.warmup_sent, "failed": result.warmup_failed},
        "engine": result.engine,
        "event_loop": result.loop,
        "stopped_by_time_bound": result.stopped_by_bound,
    }
    if config.rate:
        lag = summarize(s.lag_ns)
        stats["open_model"] = {
            "latency_from": "intended send time",
            "send_lag_ms": _summary_ms(lag),
            "late_starts": sum(1 for x in s.lag_ns if x > LATE_START_NS),
        }
    return stats


def self_check(config: RunConfig, result: RunResult, stats: dict[str, Any]) -> SelfCheck:
    wall = result.wall_ns / 1e9
    ratio = result.cpu_seconds / wall if wall > 0 else 0.0
    reasons = []
    if ratio > CPU_LIMIT:
        reasons.append(
            f"the load generator used {ratio:.0%} of a CPU core (limit {CPU_LIMIT:.0%}): its own event loop "
            "delays the responses it times"
        )
    occupancy = None
    s = result.samples
    if config.rate is None and len(s) >= 2 * config.concurrency and wall > 0:
        mean_s = sum(s.latency_ns) / len(s) / 1e9
        occupancy = (len(s) / wall) * mean_s / config.concurrency
        if occupancy < OCCUPANCY_LIMIT:
            reasons.append(
                f"Little's law: throughput x mean latency = {occupancy * config.concurrency:.1f} requests in "
                f"flight of {config.concurrency} workers: time went into the client between requests"
            )
    lag = summarize(result.loop_lag_ns)
    lag_ms = lag.to_ms() if lag else None
    lag_limit = None
    latency = stats["latency_ms"]
    if lag_ms is not None and latency:
        lag_limit = round(max(LAG_FLOOR_MS, LAG_SHARE * latency["p50"]), 3)
        if lag_ms["p95"] > lag_limit:
            reasons.append(
                f"its event loop ran timers {fmt_ms(lag_ms['p95'])} late (p95; limit {fmt_ms(lag_limit)}): "
                "responses waited that long to be timed (a busy loop, or a CPU shared with other work)"
            )
    return SelfCheck(
        cpu_seconds=result.cpu_seconds,
        wall_seconds=wall,
        cpu_ratio=ratio,
        occupancy=occupancy,
        loop_lag_ms=lag_ms,
        lag_limit_ms=lag_limit,
        client_bottleneck=bool(reasons),
        reasons=tuple(reasons),
    )


def load_baseline(path: Path) -> float:
    """The p95 (ms) of an earlier perf-smoke.json."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        p95 = data["stats"]["latency_ms"]["p95"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"baseline {path} is not a perf-smoke.json with stats.latency_ms.p95") from None
    if not isinstance(p95, int | float) or p95 <= 0:
        raise UsageError(f"baseline {path} has no positive p95 to compare with")
    return float(p95)


def _latency_check(name: str, actual_ms: float | None, limit_s: float) -> Check:
    limit_ms = limit_s * 1000
    if actual_ms is None:
        return Check(name, limit_s, None, False, f"{name}: no response to measure (limit {fmt_ms(limit_ms)})")
    if actual_ms <= limit_ms:
        return Check(
            name, limit_s, actual_ms / 1000, True, f"{name} {fmt_ms(actual_ms)} ≤ {fmt_ms(limit_ms)}"
        )
    over = actual_ms - limit_ms
    return Check(
        name,
        limit_s,
        actual_ms / 1000,
        False,
        f"{name} {fmt_ms(actual_ms)} > {fmt_ms(limit_ms)} (+{fmt_ms(over)}, {over / limit_ms:.0%} over)",
    )


def evaluate(config: RunConfig, stats: dict[str, Any]) -> tuple[list[Check], dict[str, Any] | None]:
    latency = stats["latency_ms"] or {}
    t = config.thresholds
    checks = [_latency_check("p95", latency.get("p95"), t.max_p95_seconds)]
    if t.max_p99_seconds is not None:
        checks.append(_latency_check("p99", latency.get("p99"), t.max_p99_seconds))
    rate, failed, count = stats["error_rate"], stats["failed"], stats["requests"]
    kinds = ", ".join(f"{n} {kind}" for kind, n in stats["errors"].items())
    detail = f"error rate {rate:.1%} {'≤' if rate <= t.max_error_rate else '>'} {t.max_error_rate:.1%}"
    if failed:
        detail += f" ({failed} of {count} failed: {kinds})"
    checks.append(Check("error rate", t.max_error_rate, rate, rate <= t.max_error_rate, detail))
    if config.version_id is not None:
        checks.insert(0, version_check(config.version_id, stats["answers_by_version"]))
    baseline = None
    if t.baseline is not None:
        base = load_baseline(t.baseline)
        p95 = latency.get("p95")
        change = None if p95 is None else (p95 - base) / base * 100
        ok = change is not None and change <= t.max_regression_percent
        text = (
            "p95 regression: no response to compare"
            if change is None
            else f"p95 {fmt_ms(p95 or 0)} vs baseline {fmt_ms(base)}: {change:+.1f}% "
            f"{'≤' if ok else '>'} +{t.max_regression_percent:g}%"
        )
        checks.append(Check("p95 regression", t.max_regression_percent, change, ok, text))
        baseline = {"file": str(t.baseline), "p95_ms": base, "regression_percent": change}
    return checks, baseline


def verdict_line(config: RunConfig, stats: dict[str, Any], checks: list[Check], check: SelfCheck) -> str:
    failed = [c for c in checks if not c.passed]
    shape = (
        f"{stats['requests']} requests, "
        + (f"{config.rate:g}/s open model" if config.rate else f"{config.concurrency} in flight")
        + f", {stats['throughput_rps']:g} req/s"
    )
    if failed:
        line = "FAIL: " + "; ".join(c.detail for c in failed) + f" ({shape})"
    else:
        line = "PASS: " + ", ".join(c.detail for c in checks) + f" ({shape})"
    if check.client_bottleneck:
        line += (
            " — but the load generator was the bottleneck, so these latencies overstate the server's: "
            + "; ".join(check.reasons)
        )
    return line


def build_report(
    config: RunConfig, result: RunResult, *, target: str, embedded: bool, started_at: datetime | None = None
) -> Report:
    stats = build_stats(config, result)
    checks, baseline = evaluate(config, stats)
    check = self_check(config, result, stats)
    responded = [
        lat for lat, status in zip(result.samples.latency_ns, result.samples.status, strict=True) if status
    ]
    return Report(
        config=config,
        target=target,
        embedded=embedded,
        started_at=(started_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        stats=stats,
        checks=tuple(checks),
        self_check=check,
        baseline=baseline,
        verdict=verdict_line(config, stats, checks, check),
        histogram=[
            {"from_ms": b.low_ns / NS_PER_MS, "to_ms": b.high_ns / NS_PER_MS, "count": b.count}
            for b in histogram(responded)
        ],
    )


# ------------------------------------------------------------------------------------------ outputs


def write_json(report: Report, path: Path | str) -> Path | None:
    """Write the artifact (atomically, redacted): a failure keeps the previous one. ``-``: to stdout."""
    return artifacts.emit_json(path, report.to_dict())


def histogram_lines(report: Report) -> list[str]:
    buckets = report.histogram
    if not buckets:
        return []
    peak = max(b["count"] for b in buckets) or 1
    total = sum(b["count"] for b in buckets)
    lines = []
    for b in buckets:
        bar = "█" * max(1 if b["count"] else 0, round(b["count"] / peak * _BAR_WIDTH))
        share = b["count"] / total
        lines.append(
            f"  {b['from_ms']:>9.2f} – {b['to_ms']:>9.2f} ms │{bar:<{_BAR_WIDTH}} {b['count']} ({share:.1%})"
        )
    return lines


def terminal_lines(report: Report) -> list[str]:
    s = report.stats
    lat = s["latency_ms"]
    lines = [
        f"target {report.target}" + (" (local backend, started for this run)" if report.embedded else "")
    ]
    if lat:
        lines.append(
            "latency  "
            + "  ".join(f"{k} {fmt_ms(lat[k])}" for k in ("min", "p50", "p90", "p95", "p99", "max", "mean"))
        )
    lines.append(
        f"requests {s['requests']}  ok {s['succeeded']}  failed {s['failed']}  "
        f"error rate {s['error_rate']:.1%}  throughput {s['throughput_rps']:g} req/s  "
        f"status {', '.join(f'{k}×{v}' for k, v in s['status_codes'].items()) or 'none'}"
    )
    for kind, count in s["errors"].items():
        example = s["error_examples"].get(kind, "")
        lines.append(f"  {kind}: {count}" + (f"  e.g. {example}" if example else ""))
    if s["stopped_by_time_bound"]:
        bound = report.config.bounds.max_duration_seconds
        lines.append(f"stopped at the {bound:g} s bound after {s['requests']} requests")
    if "open_model" in s:
        lag = s["open_model"]["send_lag_ms"] or {}
        lines.append(
            f"open model: latency from the intended send time; {s['open_model']['late_starts']} requests "
            f"started > {LATE_START_NS // NS_PER_MS} ms late (max {fmt_ms(lag.get('max', 0.0))}), because "
            f"all {report.config.concurrency} connections were busy"
        )
    if len(s["per_probe"]) > 1:
        for name, probe in s["per_probe"].items():
            plat = probe["latency_ms"] or {}
            lines.append(
                f"  probe {name}: {probe['requests']} requests, {probe['failed']} failed"
                + (f", p50 {fmt_ms(plat['p50'])}, p95 {fmt_ms(plat['p95'])}" if plat else "")
            )
    sc = report.self_check
    lines.append(
        f"self-check: client CPU {sc.cpu_ratio:.0%} of wall time"
        + (f", Little's-law occupancy {sc.occupancy:.0%}" if sc.occupancy is not None else "")
        + (f", event-loop lag p95 {fmt_ms(sc.loop_lag_ms['p95'])}" if sc.loop_lag_ms else "")
        + f" ({s['engine']} on {s['event_loop']})"
    )
    return lines


def markdown(report: Report) -> str:
    s = report.stats
    lat = s["latency_ms"] or {}
    icon = "✅" if report.passed else "❌"
    rows = [
        f"## {icon} perf smoke: {'passed' if report.passed else 'failed'}",
        "",
        report.verdict,
        "",
        f"Target `{report.target}`"
        + (" (local backend)" if report.embedded else "")
        + f" · {report.config.model} model · {s['requests']} requests · {s['throughput_rps']:g} req/s",
        "",
        "| min | p50 | p90 | p95 | p99 | max | mean |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| "
        + " | ".join(
            fmt_ms(lat[k]) if k in lat else "–" for k in ("min", "p50", "p90", "p95", "p99", "max", "mean")
        )
        + " |",
        "",
        "| check | result |",
        "| --- | --- |",
        *(f"| {c.name} | {'✅' if c.passed else '❌'} {c.detail} |" for c in report.checks),
        "",
        f"Status codes: {', '.join(f'`{k}` × {v}' for k, v in s['status_codes'].items()) or 'none'}."
        + (f" Failures: {', '.join(f'{k} × {v}' for k, v in s['errors'].items())}." if s["errors"] else ""),
    ]
    if report.self_check.client_bottleneck:
        rows += ["", "⚠️ The load generator was the bottleneck: " + "; ".join(report.self_check.reasons)]
    return output.redact("\n".join(rows)) + "\n"


def write_step_summary(report: Report, env: Mapping[str, str]) -> Path | None:
    return artifacts.append_step_summary(env, markdown(report))
