"""The verdict of one stage from the two versions' traffic (pure: no I/O, no clock)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cfops.analytics.query import VersionStats
from cfops.config import StageGates

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True, kw_only=True)
class Judgement:
    verdict: Verdict
    reason: str
    checks: tuple[tuple[str, bool, str], ...] = ()  # (gate, passed, "measured vs allowed")

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "checks": [{"gate": g, "passed": ok, "detail": d} for g, ok, d in self.checks],
        }


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f} %"


def judge(new: VersionStats, old: VersionStats | None, gates: StageGates) -> Judgement:
    """Pass when every gate holds; inconclusive below ``min_requests`` on the new version.

    ``old`` is None at 100 % (nothing to compare with) or when the old version served nothing in the
    window; the new version is then held to its own absolute numbers only where a comparison exists.
    """
    if new.requests < gates.min_requests:
        return Judgement(
            verdict="inconclusive",
            reason=f"too little traffic: {new.requests:g} user requests on the new version "
            f"(at least {gates.min_requests} needed for a verdict; cfops's own synthetic requests "
            "do not count)",
        )
    baseline = old if old is not None and old.requests > 0 else VersionStats(version="(none)")
    checks: list[tuple[str, bool, str]] = []
    allowed = baseline.error_rate + gates.error_rate_margin
    checks.append(
        (
            "5xx rate",
            new.error_rate <= allowed,
            f"{_pct(new.error_rate)} vs allowed {_pct(allowed)} (old {_pct(baseline.error_rate)})",
        )
    )
    allowed_4xx = baseline.client_error_rate + gates.client_error_rate_margin
    checks.append(
        (
            "4xx rate",
            new.client_error_rate <= allowed_4xx,
            f"{_pct(new.client_error_rate)} vs allowed {_pct(allowed_4xx)} "
            f"(old {_pct(baseline.client_error_rate)})",
        )
    )
    if new.p95_ms is not None and baseline.p95_ms is not None:
        limit = gates.p95_factor * baseline.p95_ms + gates.p95_slack_ms
        checks.append(
            (
                "p95",
                new.p95_ms <= limit,
                f"{new.p95_ms:g} ms vs allowed {limit:g} ms (old {baseline.p95_ms:g} ms)",
            )
        )
    failed = [c for c in checks if not c[1]]
    if failed:
        return Judgement(
            verdict="fail",
            reason="; ".join(f"{gate} {detail}" for gate, _, detail in failed),
            checks=tuple(checks),
        )
    compared = "" if baseline.requests else " (no old traffic in the window: absolute margins only)"
    return Judgement(
        verdict="pass",
        reason=f"{new.requests:g} requests on the new version, every gate held{compared}",
        checks=tuple(checks),
    )


def gates_record(gates: StageGates) -> dict[str, Any]:
    return {
        "min_requests": gates.min_requests,
        "error_rate_margin": gates.error_rate_margin,
        "client_error_rate_margin": gates.client_error_rate_margin,
        "p95_factor": gates.p95_factor,
        "p95_slack_ms": gates.p95_slack_ms,
        "inconclusive": gates.inconclusive,
    }
