"""cfops.perf verdicts from known samples: thresholds, baseline regression, and the client self-check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfops.config import PerfProbe
from cfops.errors import UsageError
from cfops.perf.config import RunConfig, Thresholds
from cfops.perf.load import Prepared, RunResult, Samples
from cfops.perf.report import build_report, markdown, write_json

MS = 1_000_000


def config(**thresholds: object) -> RunConfig:
    return RunConfig(
        base_url="http://127.0.0.1:1",
        probes=(PerfProbe(name="chat", path="/api/chat"),),
        requests=100,
        concurrency=5,
        thresholds=Thresholds(**{"max_p95_seconds": 2.5, **thresholds}),  # type: ignore[arg-type]
    )


def result(
    latencies_ms: list[float],
    *,
    wall_s: float,
    cpu_s: float,
    kinds: list[str | None] | None = None,
    lag_ms: list[float] | None = None,
) -> RunResult:
    kinds = kinds or [None] * len(latencies_ms)
    samples = Samples(
        latency_ns=[int(ms * MS) for ms in latencies_ms],
        status=[0 if k in ("timeout", "connect") else (503 if k == "5xx" else 200) for k in kinds],
        kind=kinds,
        probe=[0] * len(latencies_ms),
        lag_ns=[0] * len(latencies_ms),
    )
    probe = Prepared("chat", "POST", "http://127.0.0.1:1/api/chat", {}, frozenset({200}), None, False)
    return RunResult(
        samples=samples,
        probes=[probe],
        wall_ns=int(wall_s * 1e9),
        cpu_seconds=cpu_s,
        warmup_sent=0,
        warmup_failed=0,
        examples={},
        loop="uvloop",
        engine="aiohttp",
        stopped_by_bound=False,
        loop_lag_ns=[int(ms * MS) for ms in lag_ms or []],
    )


# 100 requests of 10 ms with 5 workers take 0.2 s: occupancy 1.0, and a modest CPU share.
HEALTHY = {"wall_s": 0.2, "cpu_s": 0.05}


def test_pass_reports_every_statistic() -> None:
    report = build_report(config(), result([10.0] * 95 + [40.0] * 5, **HEALTHY), target="t", embedded=False)
    data = report.to_dict()
    assert report.exit_code == 0
    assert data["stats"]["latency_ms"] == {
        "min": 10.0,
        "mean": 11.5,
        "p50": 10.0,
        "p90": 10.0,
        "p95": 10.0,
        "p99": 40.0,
        "max": 40.0,
    }
    assert data["stats"]["throughput_rps"] == 500.0
    assert data["verdict"]["passed"] and data["verdict"]["trustworthy"]
    assert report.verdict.startswith("PASS: p95 10.0 ms ≤ 2.50 s, error rate 0.0% ≤ 0.0%")


def test_threshold_failures_name_the_check_and_the_margin() -> None:
    report = build_report(
        config(max_p95_seconds=0.02, max_p99_seconds=0.5),
        result([10.0] * 90 + [30.0] * 10, **HEALTHY),
        target="t",
        embedded=False,
    )
    assert report.exit_code == 1
    assert report.to_dict()["verdict"]["failed"] == ["p95"]
    assert "p95 30.0 ms > 20.0 ms (+10.0 ms, 50% over)" in report.verdict


def test_failures_are_counted_by_kind_and_fail_at_the_default_error_rate() -> None:
    kinds: list[str | None] = [None] * 96 + ["timeout", "timeout", "connect", "5xx"]
    report = build_report(config(), result([10.0] * 100, kinds=kinds, **HEALTHY), target="t", embedded=False)
    stats = report.to_dict()["stats"]
    assert stats["errors"] == {"5xx": 1, "connect": 1, "timeout": 2}
    assert (stats["failed"], stats["error_rate"], stats["responses"]) == (4, 0.04, 97)
    assert stats["status_codes"] == {"200": 96, "503": 1}
    assert "error rate 4.0% > 0.0% (4 of 100 failed: 1 5xx, 1 connect, 2 timeout)" in report.verdict
    tolerant = build_report(
        config(max_error_rate=0.05), result([10.0] * 100, kinds=kinds, **HEALTHY), target="t", embedded=False
    )
    assert tolerant.passed


def test_no_response_at_all_fails_the_latency_check() -> None:
    kinds: list[str | None] = ["connect"] * 10
    report = build_report(
        config(max_error_rate=1.0),
        result([0.1] * 10, kinds=kinds, wall_s=0.01, cpu_s=0.0),
        target="t",
        embedded=False,
    )
    assert not report.passed
    assert "p95: no response to measure" in report.verdict


def test_cpu_bound_client_is_named_in_verdict_and_artifact(tmp_path: Path) -> None:
    report = build_report(config(), result([10.0] * 100, wall_s=0.2, cpu_s=0.19), target="t", embedded=False)
    assert report.passed  # the thresholds decide the exit code...
    assert report.self_check.client_bottleneck  # ...and the verdict says whom to blame
    assert "the load generator was the bottleneck" in report.verdict
    assert "used 95% of a CPU core" in report.verdict
    data = json.loads(write_json(report, tmp_path / "a.json").read_text())
    assert data["self_check"]["client_bottleneck"] is True
    assert data["self_check"]["cpu_ratio"] == 0.95
    assert data["verdict"]["trustworthy"] is False
    assert "load generator was the bottleneck" in markdown(report)


def test_littles_law_flags_time_lost_between_requests() -> None:
    # 100 requests of 10 ms, 5 workers, but 1 s of wall time: only 1 request was in flight on average.
    report = build_report(config(), result([10.0] * 100, wall_s=1.0, cpu_s=0.1), target="t", embedded=False)
    assert report.self_check.occupancy == pytest.approx(0.2)
    assert report.self_check.client_bottleneck
    assert "Little's law" in report.verdict


def test_baseline_regression(tmp_path: Path) -> None:
    earlier = build_report(config(), result([10.0] * 100, **HEALTHY), target="t", embedded=False)
    baseline = write_json(earlier, tmp_path / "baseline.json")
    slower = result([14.0] * 100, wall_s=0.28, cpu_s=0.05)
    failing = build_report(config(baseline=baseline), slower, target="t", embedded=False)
    assert failing.to_dict()["verdict"]["failed"] == ["p95 regression"]
    assert "p95 14.0 ms vs baseline 10.0 ms: +40.0% > +20%" in failing.verdict
    assert failing.to_dict()["baseline"]["regression_percent"] == pytest.approx(40.0)
    passing = build_report(
        config(baseline=baseline, max_regression_percent=50), slower, target="t", embedded=False
    )
    assert passing.passed
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match=r"not a perf-smoke\.json"):
        build_report(config(baseline=tmp_path / "bad.json"), slower, target="t", embedded=False)


def test_event_loop_lag_flags_a_starved_client() -> None:
    # Timers 20 ms late while the server answers in 10 ms: the client, not the server, adds the delay.
    lagging = result([10.0] * 100, wall_s=0.2, cpu_s=0.05, lag_ms=[20.0] * 40)
    report = build_report(config(), lagging, target="t", embedded=False)
    assert report.self_check.client_bottleneck
    assert "event loop ran timers 20.0 ms late (p95; limit 2.0 ms)" in report.verdict
    assert report.to_dict()["self_check"]["event_loop_lag_ms"]["p95"] == 20.0
    punctual = result([10.0] * 100, wall_s=0.2, cpu_s=0.05, lag_ms=[0.5] * 40)
    assert not build_report(config(), punctual, target="t", embedded=False).self_check.client_bottleneck
