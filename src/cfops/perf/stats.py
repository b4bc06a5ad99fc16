"""Statistics over measured latencies: exact nearest-rank percentiles, a summary, a histogram.

Latencies are integer nanoseconds (``perf_counter_ns`` differences), so nothing is rounded before the
report formats it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

PERCENTILES = (50, 90, 95, 99)
NS_PER_MS = 1_000_000


def nearest_rank(sorted_values: Sequence[int], percentile: float) -> int:
    """The nearest-rank percentile: the smallest value with at least ``percentile`` % of values <= it.

    rank = ceil(p/100 × n), 1-based; p = 0 gives the minimum. Computed with exact fractions so that
    p95 of 20 values is the 19th, never the 20th because 0.95 × 20 came out as 19.000000000000004.
    """
    if not sorted_values:
        raise ValueError("no values")
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile {percentile} is outside 0-100")
    rank = math.ceil(Fraction(str(percentile)) * len(sorted_values) / 100)
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True)
class LatencySummary:
    count: int
    min_ns: int
    mean_ns: float
    max_ns: int
    percentiles_ns: dict[int, int]

    def to_ms(self) -> dict[str, float]:
        out = {"min": self.min_ns / NS_PER_MS, "mean": self.mean_ns / NS_PER_MS}
        out.update({f"p{p}": v / NS_PER_MS for p, v in self.percentiles_ns.items()})
        out["max"] = self.max_ns / NS_PER_MS
        return {k: round(v, 3) for k, v in out.items()}


def summarize(latencies_ns: Sequence[int]) -> LatencySummary | None:
    if not latencies_ns:
        return None
    ordered = sorted(latencies_ns)
    return LatencySummary(
        count=len(ordered),
        min_ns=ordered[0],
        mean_ns=sum(ordered) / len(ordered),
        max_ns=ordered[-1],
        percentiles_ns={p: nearest_rank(ordered, p) for p in PERCENTILES},
    )


@dataclass(frozen=True)
class Bucket:
    low_ns: int
    high_ns: int  # inclusive for the last bucket, exclusive otherwise
    count: int


def histogram(latencies_ns: Sequence[int], buckets: int = 10) -> list[Bucket]:
    """Counts in ``buckets`` ranges from min to max: log-spaced when the spread is wide (latency
    distributions have long tails), linear when it is narrow."""
    if not latencies_ns:
        return []
    low, high = min(latencies_ns), max(latencies_ns)
    if high == low:
        return [Bucket(low, high, len(latencies_ns))]
    if low > 0 and high / low >= 4:
        ratio = (high / low) ** (1 / buckets)
        edges = [round(low * ratio**k) for k in range(buckets)] + [high]
    else:
        step = (high - low) / buckets
        edges = [round(low + step * k) for k in range(buckets)] + [high]
    edges = sorted(set(edges))
    counts = [0] * (len(edges) - 1)
    for value in latencies_ns:
        # the last bucket is closed so the maximum lands in it
        index = min(bisect.bisect_right(edges, value) - 1, len(counts) - 1)
        counts[index] += 1
    return [Bucket(edges[i], edges[i + 1], counts[i]) for i in range(len(counts))]
