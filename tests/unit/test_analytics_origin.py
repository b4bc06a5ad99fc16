"""cfops's own requests are synthetic: the middleware labels them, and a stage is judged by user traffic only.

A stage's smoke lands in the same window as the users' requests; counted as user traffic, healthy synthetic
requests would dilute a regression, or be all the "evidence" on a quiet Worker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from cfops.analytics import query
from cfops.analytics.rehearsal import rehearse
from cfops.config import StageGates
from immcad_api import analytics as layout
from immcad_api.analytics import DataPoint
from immcad_api.main import create_app
from immcad_api.settings import Settings as AppSettings
from tests import analytics_fixtures
from tests.analytics_fixtures import DATASET, NEW, OLD, stage
from tests.fakes.analytics_engine import FakeAnalyticsEngine, Profile
from tests.fakes.cloudflare_api import FakeCloudflare

# The shared fixtures (tests/analytics_fixtures.py), under the names these tests take.
api = analytics_fixtures.api
settings = analytics_fixtures.settings

SYNTHETIC = {layout.SYNTHETIC_HEADER: layout.SYNTHETIC_VALUE}


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_middleware_marks_a_request_with_the_header_synthetic_and_one_without_user(
    anyio_backend: str,
) -> None:
    points: list[DataPoint] = []
    app = create_app(AppSettings(version_id=NEW), analytics_sink=points.append)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        await client.get("/healthz", headers=SYNTHETIC)
        await client.get("/healthz")
        await client.get("/healthz", headers={layout.SYNTHETIC_HEADER.upper(): f" {layout.SYNTHETIC_VALUE} "})
        await client.get("/healthz", headers={layout.SYNTHETIC_HEADER: "something else"})
    assert [p.origin for p in points] == ["synthetic", "user", "synthetic", "user"]
    # The origin is the fifth blob, as the layout documents.
    assert points[0].binding_args()["blobs"][4] == "synthetic"
    assert points[1].columns()[layout.BLOB_ORIGIN] == "user"


def test_perf_sends_the_marker_on_every_probe_whatever_it_is_told() -> None:
    from cfops.config import PerfProbe
    from cfops.perf.config import RunConfig, Thresholds
    from cfops.perf.load import prepare

    config = RunConfig(
        base_url="http://127.0.0.1:1",
        probes=(
            PerfProbe(name="chat", path="/api/chat"),
            PerfProbe(name="sneaky", path="/healthz", headers={layout.SYNTHETIC_HEADER: "0"}),
        ),
        requests=1,
        concurrency=1,
        headers={layout.SYNTHETIC_HEADER: "no"},
        thresholds=Thresholds(max_p95_seconds=1),
    )
    assert all(p.headers[layout.SYNTHETIC_HEADER] == layout.SYNTHETIC_VALUE for p in prepare(config, "x"))


# ------------------------------------------------------------------------------------------ the SQL


def test_healthy_synthetic_points_do_not_mask_a_failing_user_profile(
    api: FakeCloudflare, settings: Any
) -> None:
    api.analytics.seed(DATASET, NEW, 300, Profile(error_rate=0.08))
    # The stage's smoke: ten times the users' requests to the new version, every one healthy. Counted,
    # they would bring the new version's 5xx rate to 0.7 % and pass the 2 % gate.
    api.analytics.seed(DATASET, NEW, 3000, Profile(), origin="synthetic")
    api.analytics.seed(DATASET, OLD, 2700, Profile(error_rate=0.01))
    api.analytics.seed(DATASET, OLD, 300, Profile(), origin="synthetic")
    record = stage(settings, started_ago=30)
    assert record["verdict"] == "fail" and record["outcome"] == "fail"
    assert record["origin"] == "user"
    assert record["versions"]["new"]["requests"] == 300
    assert record["versions"]["new"]["error_rate"] == pytest.approx(0.08)
    assert record["versions"]["old"]["requests"] == 2700
    assert "5xx rate 8.00 %" in record["reason"]
    assert f"{layout.BLOB_ORIGIN} != 'synthetic'" in api.analytics.queries[-1]


def test_synthetic_points_alone_are_an_inconclusive_stage_not_a_pass(
    api: FakeCloudflare, settings: Any
) -> None:
    api.analytics.seed(DATASET, NEW, 1000, Profile(), origin="synthetic")  # a quiet Worker: only the smoke
    api.analytics.seed(DATASET, OLD, 1000, Profile(), origin="synthetic")
    record = stage(settings, started_ago=30)
    assert record["verdict"] == "inconclusive" and record["outcome"] == "fail"
    assert "too little traffic: 0 user requests on the new version" in record["reason"]
    assert "synthetic requests do not count" in record["reason"]


def test_points_written_before_the_origin_field_count_as_user_traffic(
    api: FakeCloudflare, settings: Any
) -> None:
    api.analytics.seed(DATASET, OLD, 900, Profile(error_rate=0.01), origin=None)  # the old Worker's layout
    api.analytics.seed(DATASET, NEW, 100, Profile(error_rate=0.01))
    record = stage(settings, started_ago=30)
    assert record["versions"]["old"]["requests"] == 900 and record["verdict"] == "pass"


def test_the_evaluator_reads_an_unwritten_blob_as_an_empty_string() -> None:
    # Analytics Engine answers '' for a blob a point did not write: the filter keeps such points.
    engine = FakeAnalyticsEngine()
    engine.write(DATASET, NEW, origin=None)
    engine.write(DATASET, NEW, origin="user")
    engine.write(DATASET, NEW, origin="synthetic")
    text = "SELECT blob5 AS origin, COUNT() AS n FROM immcad_requests GROUP BY origin ORDER BY origin"
    assert engine.answer(text)["data"] == [
        {"origin": "", "n": "1"},
        {"origin": "synthetic", "n": "1"},
        {"origin": "user", "n": "1"},
    ]
    answer = engine.answer(query.per_version(DATASET, [NEW], 60))
    assert query.read_per_version(answer, [NEW])[NEW].requests == 2


# ------------------------------------------------------------------------------------- the rehearsal


def _points(path: Path, **origins: int) -> Path:
    sink = layout.jsonl_sink(str(path))
    for origin, count in origins.items():
        for _ in range(count):
            sink(
                DataPoint(
                    version="local-rehearsal",
                    route="/healthz",
                    method="GET",
                    status=200,
                    latency_ms=2,
                    origin=origin,
                )
            )
    return path


def test_the_rehearsal_shows_the_local_stacks_synthetic_points_labelled_and_does_not_judge_them(
    tmp_path: Path,
) -> None:
    record = rehearse(_points(tmp_path / "points.jsonl", synthetic=23), StageGates(min_requests=200))
    assert record["outcome"] == "pass" and record["versions"]["new"]["version"] == "seeded new"
    local = record["local"]
    assert local["requests"] == 23 and local["origins"] == {"synthetic": 23, "user": 0}
    assert local["judged"] is False
    assert record["reason"].endswith("local stack: 23 requests, all synthetic (shown, not judged)")
    assert json.loads((tmp_path / "points.jsonl").read_text().splitlines()[0])["blob5"] == "synthetic"
    mixed = rehearse(_points(tmp_path / "mixed.jsonl", synthetic=5, user=2), StageGates())
    assert mixed["local"]["origins"] == {"synthetic": 5, "user": 2}
    assert "local stack: 7 requests, 5 synthetic, 2 user (shown, not judged)" in mixed["reason"]


def test_an_adapter_that_hands_over_str_headers_is_read_the_same_way() -> None:
    assert layout.origin_of({"headers": [("X-Cfops-Synthetic", "1")]}) == "synthetic"
    assert layout.origin_of({"headers": [(b"x-cfops-synthetic", b"0")]}) == "user"
    assert layout.origin_of({}) == "user"
