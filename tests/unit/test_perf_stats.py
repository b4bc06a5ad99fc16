"""cfops.perf statistics and request planning: nearest-rank percentiles on known arrays."""

from __future__ import annotations

import itertools

import pytest

from cfops.config import PerfProbe
from cfops.perf.load import classify_status, schedule
from cfops.perf.stats import histogram, nearest_rank, summarize


@pytest.mark.parametrize(
    ("values", "percentile", "expected"),
    [
        (list(range(1, 21)), 95, 19),  # 0.95 x 20 = 19 exactly: the 19th, not the 20th
        (list(range(1, 21)), 50, 10),
        (list(range(1, 11)), 90, 9),
        (list(range(1, 11)), 91, 10),  # ceil(9.1) = 10
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 99.5, 100),
        ([1, 2, 3], 50, 2),  # ceil(1.5) = 2
        ([7], 99, 7),
        ([3, 5, 9], 0, 3),
        ([3, 5, 9], 100, 9),
    ],
)
def test_nearest_rank(values: list[int], percentile: float, expected: int) -> None:
    assert nearest_rank(values, percentile) == expected


def test_nearest_rank_on_a_scripted_distribution() -> None:
    # 95 fast, 5 slow: p95 is the last fast value, p96 and p99 are slow.
    values = sorted([5] * 95 + [400] * 5)
    assert (nearest_rank(values, 95), nearest_rank(values, 96), nearest_rank(values, 99)) == (5, 400, 400)


def test_nearest_rank_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 50)
    with pytest.raises(ValueError, match="outside"):
        nearest_rank([1], 101)


def test_summary_is_exact_in_nanoseconds() -> None:
    summary = summarize([3_000_000, 1_000_000, 2_000_000, 10_000_000])
    assert summary is not None
    assert (summary.min_ns, summary.max_ns, summary.mean_ns) == (1_000_000, 10_000_000, 4_000_000)
    assert summary.percentiles_ns == {50: 2_000_000, 90: 10_000_000, 95: 10_000_000, 99: 10_000_000}
    assert summary.to_ms() == {
        "min": 1.0,
        "mean": 4.0,
        "p50": 2.0,
        "p90": 10.0,
        "p95": 10.0,
        "p99": 10.0,
        "max": 10.0,
    }
    assert summarize([]) is None


@pytest.mark.parametrize("values", [[5] * 50 + [400] * 3, list(range(100, 200)), [7, 7, 7]])
def test_histogram_counts_every_value_once_and_spans_min_to_max(values: list[int]) -> None:
    buckets = histogram(values)
    assert sum(b.count for b in buckets) == len(values)
    assert buckets[0].low_ns == min(values)
    assert buckets[-1].high_ns == max(values)
    assert all(a.high_ns == b.low_ns for a, b in itertools.pairwise(buckets))


def test_histogram_puts_a_long_tail_in_the_top_bucket() -> None:
    buckets = histogram([5] * 95 + [400] * 5)
    assert buckets[0].count == 95
    assert buckets[-1].count == 5


def test_schedule_follows_the_weights_evenly() -> None:
    probes = [PerfProbe(name="a", path="/a", weight=3), PerfProbe(name="b", path="/b", weight=1)]
    order = schedule(probes)
    assert sorted(order) == [0, 0, 0, 1]
    assert schedule([PerfProbe(name="only", path="/")]) == [0]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (201, "unexpected status"),
        (302, "unexpected status"),
        (404, "4xx"),
        (429, "4xx"),
        (503, "5xx"),
    ],
)
def test_status_classification(status: int, kind: str | None) -> None:
    assert classify_status(status, frozenset({200})) == kind


def test_an_expected_error_status_is_a_success() -> None:
    assert classify_status(404, frozenset({404})) is None
