"""Request analytics: the data point the app writes, the SQL cfops sends (against the fake API's real SQL
endpoint), the gates, and one stage's soak → query → verdict → policy."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cfops.analytics import query
from cfops.analytics.client import AnalyticsAccessError, AnalyticsQueryError, AnalyticsUnavailable, SqlClient
from cfops.analytics.command import check_access, summary_line
from cfops.analytics.gates import judge
from cfops.analytics.query import VersionStats
from cfops.analytics.rehearsal import aggregate, rehearse
from cfops.config import StageGates, load_settings
from cfops.errors import CheckFailed, ConfigError, UsageError
from immcad_api import analytics as layout
from immcad_api.analytics import DataPoint
from immcad_api.main import create_app
from immcad_api.settings import Settings as AppSettings
from tests import analytics_fixtures
from tests.analytics_fixtures import DATASET, GATES, NEW, OLD, stage
from tests.conftest import clean_env, copy_project
from tests.fakes.analytics_engine import FakeAnalyticsEngine, Profile, SqlError
from tests.fakes.cloudflare_api import FakeCloudflare

# The shared fixtures (tests/analytics_fixtures.py), under the names these tests take.
api = analytics_fixtures.api
settings = analytics_fixtures.settings


# --------------------------------------------------------------------------------- the Worker's side


async def _call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return await client.request(method, path, **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_each_request_writes_one_point_with_the_route_template_not_the_raw_path(
    anyio_backend: str,
) -> None:
    points: list[DataPoint] = []
    app = create_app(AppSettings(version_id=NEW, bearer_token="t0ken"), analytics_sink=points.append)
    assert (await _call(app, "GET", "/healthz")).status_code == 200
    assert (await _call(app, "GET", "/no/such/secret-user-path")).status_code == 404
    assert (
        await _call(app, "POST", "/api/chat", json={"session_id": "s", "message": "hi"})
    ).status_code == 401
    answered = await _call(
        app, "POST", "/api/chat", json={"session_id": "s"}, headers={"authorization": "Bearer t0ken"}
    )
    assert answered.status_code == 422
    assert [(p.route, p.method, p.status, p.version) for p in points] == [
        ("/healthz", "GET", 200, NEW),
        ("unmatched", "GET", 404, NEW),
        ("/api/chat", "POST", 401, NEW),  # answered by auth before routing: still the template
        ("/api/chat", "POST", 422, NEW),
    ]
    assert all(p.latency_ms >= 0 for p in points)
    assert points[1].binding_args() == {
        "indexes": [NEW],
        "blobs": [NEW, "unmatched", "4xx", "GET", "user"],
        "doubles": [round(points[1].latency_ms, 3), 404.0],
    }
    assert "secret-user-path" not in repr([p.binding_args() for p in points])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failing_sink_never_fails_the_request_and_is_counted(anyio_backend: str) -> None:
    def broken(point: DataPoint) -> None:
        raise RuntimeError("binding exploded")

    app = create_app(AppSettings(version_id=NEW, bearer_token="t0ken"), analytics_sink=broken)
    assert (await _call(app, "GET", "/healthz")).status_code == 200
    metrics = await _call(app, "GET", "/ops/metrics", headers={"authorization": "Bearer t0ken"})
    # The /healthz request's point failed; the metrics request's own point is written after its answer.
    assert metrics.json()["analytics"] == {"written": 0, "write_failures": 1}
    assert metrics.json()["version_id"] == NEW


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_no_sink_is_a_no_op_and_the_local_file_sink_writes_the_layout(
    anyio_backend: str, tmp_path: Path
) -> None:
    app = create_app(AppSettings(version_id=NEW))
    assert (await _call(app, "GET", "/healthz")).status_code == 200
    target = tmp_path / "points.jsonl"
    app = create_app(AppSettings(version_id=NEW, analytics_file=str(target)))
    assert (await _call(app, "GET", "/healthz")).status_code == 200
    stats = aggregate([__import__("json").loads(line) for line in target.read_text().splitlines()], NEW)
    assert stats.requests == 1 and stats.errors_5xx == 0 and stats.p95_ms is not None


def test_the_worker_reads_its_version_from_the_version_metadata_binding() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "backend-cloudflare" / "src"))
    try:
        from bindings import version_id
    finally:
        sys.path.pop(0)
    assert version_id({"CF_VERSION_METADATA": {"id": NEW, "tag": ""}}) == NEW
    assert version_id({}) is None


# ------------------------------------------------------------------------------------------ the SQL


def _client(settings: Any, sleeps: list[float] | None = None) -> SqlClient:
    return SqlClient(settings, sleep=(sleeps if sleeps is not None else []).append)


def test_per_version_numbers_are_sample_weighted(api: FakeCloudflare, settings: Any) -> None:
    api.analytics.seed(DATASET, NEW, 1000, Profile(error_rate=0.05, latency_ms=100, sample_interval=10))
    api.analytics.seed(DATASET, OLD, 4000, Profile(error_rate=0.01, client_error_rate=0.02, latency_ms=40))
    api.analytics.seed(DATASET, "someone-else", 500, Profile())
    with _client(settings) as sql:
        answer = sql.query(query.per_version(DATASET, [NEW, OLD, "absent"], 60))
    stats = query.read_per_version(answer.data, [NEW, OLD, "absent"])
    assert stats[NEW].requests == 1000  # 100 points x sample interval 10
    assert stats[NEW].error_rate == pytest.approx(0.05)
    assert stats[OLD].requests == 4000
    assert stats[OLD].error_rate == pytest.approx(0.01) and stats[OLD].client_error_rate == pytest.approx(
        0.02
    )
    assert stats[NEW].p95_ms is not None and stats[OLD].p95_ms is not None
    assert 130 <= stats[NEW].p95_ms <= 150 and 52 <= stats[OLD].p95_ms <= 60
    assert stats["absent"] == VersionStats(version="absent")
    # The body is the query text, with the bearer token.
    (sent,) = api.calls("POST", "/analytics_engine/sql")
    assert sent.body.decode().startswith("SELECT blob1 AS version")
    assert sent.headers["authorization"] == f"Bearer {api.token}"


def test_the_window_follows_the_apis_clock(api: FakeCloudflare, settings: Any) -> None:
    api.analytics.clock_skew = timedelta(minutes=10)  # the API is 10 min ahead of the runner
    old_point = api.analytics.now() - timedelta(seconds=120)
    api.analytics.write(DATASET, NEW, status=500, at=old_point)
    api.analytics.seed(DATASET, NEW, 10, Profile())
    with _client(settings) as sql:
        answer = sql.query(query.per_version(DATASET, [NEW], 60))
    assert answer.server_time is not None
    stats = query.read_per_version(answer.data, [NEW])[NEW]
    assert stats.requests == 10 and stats.errors_5xx == 0  # the point from 2 min ago is outside


def test_the_stage_window_is_rounded_down_so_it_never_reaches_into_the_previous_split(
    api: FakeCloudflare, settings: Any
) -> None:
    from cfops.analytics.command import fetch

    api.analytics.seed(DATASET, NEW, 1, Profile())
    with _client(settings) as sql:
        fetch(settings, sql, [NEW], 3.9)  # 3.9 s since the split was asked: the last 3 s, not 4
        fetch(settings, sql, [NEW], 0.4)  # the API's smallest window
    sent = [call.body.decode() for call in api.calls("POST", "/analytics_engine/sql")]
    assert "INTERVAL '3' SECOND" in sent[0] and "INTERVAL '1' SECOND" in sent[1]


def test_a_token_without_analytics_read_is_one_line_naming_the_permission(
    api: FakeCloudflare, settings: Any
) -> None:
    api.analytics.readable = False
    with pytest.raises(AnalyticsAccessError) as caught:
        check_access(settings)
    message = str(caught.value)
    assert "Account Analytics Read" in message and "\n" not in message
    assert api.token not in message


def test_check_access_says_whether_the_dataset_has_data(api: FakeCloudflare, settings: Any) -> None:
    assert "has no data yet" in check_access(settings)
    api.analytics.seed(DATASET, NEW, 1, Profile())
    assert f"dataset {DATASET} has data" in check_access(settings)


@pytest.mark.parametrize(
    "text",
    [
        "SELECT blob1 FROM immcad_requests JOIN other",
        "SELECT nosuchcolumn FROM immcad_requests",
        "SELECT frobnicate(double1) FROM immcad_requests",
        "SELECT blob1, SUM(_sample_interval) FROM immcad_requests",  # blob1 not grouped
        "SELECT blob1 FROM nosuchdataset",
        "DROP TABLE immcad_requests",
    ],
)
def test_queries_outside_the_documented_subset_are_bad_sql(
    api: FakeCloudflare, settings: Any, text: str
) -> None:
    api.analytics.seed(DATASET, NEW, 1, Profile())
    with _client(settings) as sql, pytest.raises(AnalyticsQueryError, match="refused the query"):
        sql.query(text)


def test_the_evaluator_parses_rather_than_matches() -> None:
    engine = FakeAnalyticsEngine()
    engine.seed(DATASET, NEW, 10, Profile(error_rate=0.2))
    # The same meaning, written differently (order, case, spacing, extra clauses) gives the same answer.
    text = (
        "select   SUM( if (blob3 = '5xx', _sample_interval , 0) ) as e, count() AS n, blob1 as v "
        "from immcad_requests where index1 in ('x', '" + NEW + "') and double2 >= 100 "
        "group by v order by v desc limit 5"
    )
    assert engine.answer(text)["data"] == [{"e": "2", "n": "10", "v": NEW}]
    with pytest.raises(SqlError):
        engine.answer("SELECT blob1 AS v FROM immcad_requests GROUP BY v FORMAT CSV")


def test_the_sql_api_down_is_retried_within_bounds(api: FakeCloudflare, settings: Any) -> None:
    api.fail("POST", "/analytics_engine/sql", 10001 + 2, "service unavailable", status=503, times=2)
    sleeps: list[float] = []
    with _client(settings, sleeps) as sql:
        answer = sql.query(query.show_tables())
    # cfops.retry's backoff: 1 s then 2 s, each plus up to 1 s of jitter.
    assert answer.attempts == 3 and len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 2.0 and 2.0 <= sleeps[1] <= 3.0
    api.fail("POST", "/analytics_engine/sql", 10003, "down", status=503, times=10)
    with _client(settings, sleeps) as sql, pytest.raises(AnalyticsUnavailable, match="after 4 attempts"):
        sql.query(query.show_tables())


def test_the_sql_api_429_waits_what_retry_after_asks_and_a_dropped_connection_is_retried(
    api: FakeCloudflare, settings: Any
) -> None:
    api.inject("POST", r"/analytics_engine/sql", status=429, retry_after=7)
    api.inject("POST", r"/analytics_engine/sql", drop=True)
    sleeps: list[float] = []
    with _client(settings, sleeps) as sql:
        answer = sql.query(query.show_tables())
    assert answer.attempts == 3 and sleeps[0] == 7.0 and len(sleeps) == 2


def test_missing_credentials_are_bad_input(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project", ("pyproject.toml",))
    with pytest.raises(UsageError, match="CLOUDFLARE_API_TOKEN"):
        SqlClient(load_settings(root, {}))


def test_query_inputs_are_checked() -> None:
    with pytest.raises(ConfigError):
        query.per_version("requests; DROP", [NEW], 60)
    with pytest.raises(ConfigError):
        query.per_version(DATASET, ["x' OR '1'='1"], 60)


# ----------------------------------------------------------------------------------------- the gates


def _stats(
    version: str, requests: float, e5: float = 0, e4: float = 0, p95: float | None = 100
) -> VersionStats:
    return VersionStats(
        version=version, requests=requests, errors_5xx=e5, errors_4xx=e4, p50_ms=50, p95_ms=p95
    )


@pytest.mark.parametrize(
    ("new", "old", "verdict", "why"),
    [
        (_stats(NEW, 1000, 10), _stats(OLD, 9000, 90), "pass", "every gate held"),
        (_stats(NEW, 1000, 50), _stats(OLD, 9000, 90), "fail", "5xx rate 5.00 %"),
        (_stats(NEW, 1000, 0, 200), _stats(OLD, 9000, 0, 90), "fail", "4xx rate"),
        (_stats(NEW, 1000, p95=400), _stats(OLD, 9000, p95=100), "fail", "p95 400 ms"),
        (_stats(NEW, 1000, p95=160), _stats(OLD, 9000, p95=100), "pass", ""),  # 1.5 x 100 + 20 slack
        (_stats(NEW, 99), _stats(OLD, 9000), "inconclusive", "too little traffic: 99"),
        (_stats(NEW, 0), _stats(OLD, 0), "inconclusive", "too little traffic: 0"),
        (_stats(NEW, 1000), None, "pass", "absolute margins only"),
    ],
)
def test_gates(new: VersionStats, old: VersionStats | None, verdict: str, why: str) -> None:
    judgement = judge(new, old, StageGates(min_requests=100))
    assert judgement.verdict == verdict
    assert why in judgement.reason


# ------------------------------------------------------------------------------------------ a stage


def test_a_stage_with_a_higher_error_rate_fails(api: FakeCloudflare, settings: Any) -> None:
    api.analytics.seed(DATASET, NEW, 300, Profile(error_rate=0.08))
    api.analytics.seed(DATASET, OLD, 2700, Profile(error_rate=0.01))
    record = stage(settings, started_ago=30)
    assert record["verdict"] == "fail" and record["outcome"] == "fail"
    assert record["versions"]["new"]["error_rate"] == pytest.approx(0.08)
    assert record["versions"]["old"]["error_rate"] == pytest.approx(0.01)
    line = summary_line(record)
    assert line.startswith("fail (fail: 5xx rate 8.00 %") and "old 2700 req" in line


def test_an_inconclusive_stage_is_extended_then_the_policy_decides(
    api: FakeCloudflare, settings: Any
) -> None:
    api.analytics.seed(DATASET, NEW, 40, Profile())
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    gates = dataclasses.replace(GATES, max_soak_seconds=150)
    record = stage(
        settings, soak=60, gates=gates, sleep=sleep, clock=lambda: now[0], client=_client(settings)
    )
    assert sleeps == [60, 60, 30]  # the soak, then extensions up to the bound
    assert record["queries"] == 3 and record["verdict"] == "inconclusive" and record["outcome"] == "fail"
    assert "too little traffic: 40" in record["reason"] and "fail safe" in record["reason"]
    passing = dataclasses.replace(gates, inconclusive="pass", max_soak_seconds=0)
    record = stage(settings, gates=passing, sleep=sleep, client=_client(settings))
    assert record["outcome"] == "pass" and "passed on the smoke alone" in record["reason"]


def test_traffic_arriving_during_the_extension_gives_a_verdict(api: FakeCloudflare, settings: Any) -> None:
    api.analytics.seed(DATASET, OLD, 1000, Profile())

    def sleep(seconds: float) -> None:
        api.analytics.seed(DATASET, NEW, 150, Profile())

    gates = dataclasses.replace(GATES, max_soak_seconds=5)
    record = stage(settings, soak=1, gates=gates, sleep=sleep, client=_client(settings))
    assert record["verdict"] == "pass" and record["versions"]["new"]["requests"] == 150


def test_sql_api_down_and_dataset_missing_are_inconclusive(api: FakeCloudflare, settings: Any) -> None:
    record = stage(settings)
    assert record["verdict"] == "inconclusive" and f"dataset {DATASET} not found" in record["reason"]
    api.analytics.seed(DATASET, NEW, 500, Profile())
    api.fail("POST", "/analytics_engine/sql", 10003, "down", status=502, times=10)
    record = stage(settings)
    assert record["verdict"] == "inconclusive" and "did not answer after 4 attempts" in record["reason"]
    assert record["outcome"] == "fail"


def test_at_100_percent_the_old_numbers_come_from_the_earlierstage(
    api: FakeCloudflare, settings: Any
) -> None:
    api.analytics.seed(DATASET, NEW, 500, Profile(error_rate=0.04))
    baseline = _stats(OLD, 9000, 360)  # the old version failed 4 % too
    record = stage(settings, percent=100, baseline=baseline)
    assert record["verdict"] == "pass" and record["baseline_from_earlier_stage"] is True


def test_a_handful_of_old_requests_is_noise_the_earlier_stage_is_the_baseline(
    api: FakeCloudflare, settings: Any
) -> None:
    # After the promote to 100 % the old version still answers a few requests while the split propagates:
    # fast and error-free by chance. Judged against those, an unchanged new version would fail.
    api.analytics.seed(DATASET, NEW, 500, Profile(error_rate=0.04, latency_ms=100))
    api.analytics.seed(DATASET, OLD, 12, Profile(latency_ms=5))
    baseline = _stats(OLD, 9000, 360, p95=140)  # the 50 % stage's old side: 4 % errors too
    record = stage(settings, percent=100, baseline=baseline)
    assert record["verdict"] == "pass" and record["baseline_from_earlier_stage"] is True
    assert record["versions"]["old"]["requests"] == 9000
    assert [c["gate"] for c in record["checks"]] == ["5xx rate", "4xx rate", "p95"]
    # Enough old traffic (min_requests, as the new side needs) is the old version's own numbers.
    api.analytics.seed(DATASET, OLD, 300, Profile(error_rate=0.04, latency_ms=100))
    record = stage(settings, percent=100, baseline=baseline)
    assert record["baseline_from_earlier_stage"] is False and record["versions"]["old"]["requests"] == 312
    # Without a baseline, the few old requests are all there is to compare with.
    record = stage(settings, percent=100, old=NEW.replace("a", "c", 1))
    assert record["versions"]["old"]["requests"] == 0 and record["baseline_from_earlier_stage"] is False


def test_the_rehearsal_tries_the_gates_on_seeded_versions_and_reads_the_local_points(tmp_path: Path) -> None:
    points = tmp_path / "points.jsonl"
    sink = layout.jsonl_sink(str(points))
    for status in (200, 200, 503):
        sink(
            DataPoint(
                version="local-rehearsal", route="/api/chat", method="POST", status=status, latency_ms=5
            )
        )
    record = rehearse(points, StageGates(min_requests=200))
    # A real verdict on seeded numbers (not the local smoke's 3 requests, which are only reported).
    assert record["seeded"] is True and record["verdict"] == "pass" and record["outcome"] == "pass"
    assert record["local"]["version"] == "local-rehearsal" and record["local"]["requests"] == 3
    new, old = record["versions"]["new"], record["versions"]["old"]
    assert (new["version"], old["version"]) == ("seeded new", "seeded old")
    assert new["requests"] >= 200 and old["error_rate"] == 0.01 and old["p95_ms"] == 120
    assert [(t["gate"], t["caught"]) for t in record["self_test"]] == [
        ("5xx rate", True),
        ("4xx rate", True),
        ("p95", True),
    ]
    assert "[seeded]" in summary_line(record)
    # Sampled like Analytics Engine: a higher min_requests still gets a verdict.
    assert rehearse(points, StageGates(min_requests=5000))["versions"]["new"]["requests"] >= 5000


@pytest.mark.parametrize(
    ("gates", "missed"),
    [
        (
            {"error_rate_margin": 0.2},
            "seeded new, 5xx x6 passed the 5xx rate gate (6.00 % vs allowed 21.00 %",
        ),
        ({"client_error_rate_margin": 0.5}, "seeded new, 4xx x6 passed the 4xx rate gate"),
        ({"p95_factor": 4.0}, "seeded new, p95 x4 passed the p95 gate (480 ms vs allowed 500 ms"),
    ],
)
def test_gates_that_cannot_catch_a_degraded_version_fail_the_rehearsal(
    tmp_path: Path, gates: dict[str, float], missed: str
) -> None:
    record = rehearse(tmp_path / "none.jsonl", StageGates(**gates))  # type: ignore[arg-type]
    assert record["outcome"] == "fail"
    assert record["reason"].startswith("the gates cannot catch a regression: ")
    assert missed in record["reason"]


def test_gates_that_fail_a_version_within_noise_fail_the_rehearsal(tmp_path: Path) -> None:
    record = rehearse(tmp_path / "none.jsonl", StageGates(p95_factor=1.0, p95_slack_ms=0))
    assert record["outcome"] == "fail" and record["verdict"] == "fail"
    assert record["reason"].startswith("the gates fail a version within noise of the old one: p95 126 ms")


def test_a_malformed_local_point_is_one_line(tmp_path: Path) -> None:
    points = tmp_path / "points.jsonl"
    points.write_text('{"blob1": "local"}\n[1]\n')
    with pytest.raises(CheckFailed, match=r"points.jsonl:2 is not a data point"):
        rehearse(points, StageGates())
    points.write_text('{"blob1": "local"}\n')
    with pytest.raises(CheckFailed, match="does not follow the layout"):
        rehearse(points, StageGates())


def _rehearse_cli(root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfops", "analytics", "rehearse", "--points", str(tmp_path / "none.jsonl")],
        env=clean_env(CFOPS_ROOT=str(root)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_rehearsal_command_exits_1_when_the_gates_cannot_catch_a_regression(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "project", ("pyproject.toml",))
    text = (root / "pyproject.toml").read_text()
    (root / "pyproject.toml").write_text(text.replace("p95_factor = 1.5", "p95_factor = 10"))
    proc = _rehearse_cli(root, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "the gates cannot catch a regression: seeded new, p95 x4 passed the p95 gate" in proc.stderr


GATES_TABLE = "[tool.cfops.release.gates]"


@pytest.mark.parametrize(
    ("line", "bad", "error"),
    [
        ("p95_factor = 1.5", "0.9", f"{GATES_TABLE} p95_factor = 0.9: must be a finite number >= 1"),
        (
            "error_rate_margin = 0.01",
            "-0.01",
            f"{GATES_TABLE} error_rate_margin = -0.01: must be a finite number >= 0",
        ),
        ("min_requests = 200", "0", f"{GATES_TABLE} min_requests = 0: must be a finite number >= 1"),
        # TOML's nan/inf are turned away where every number setting is read (settings coercion)
        (
            "client_error_rate_margin = 0.05",
            "nan",
            f"{GATES_TABLE}.client_error_rate_margin: expected a finite number, got nan",
        ),
        ("p95_slack_ms = 20", "inf", f"{GATES_TABLE}.p95_slack_ms: expected a finite number, got inf"),
    ],
)
def test_bad_gate_values_are_one_line_exit_2(tmp_path: Path, line: str, bad: str, error: str) -> None:
    key = line.split(" = ")[0]
    root = copy_project(tmp_path / "project", ("pyproject.toml",))
    text = (root / "pyproject.toml").read_text()
    assert line in text
    (root / "pyproject.toml").write_text(text.replace(line, f"{key} = {bad}"))
    proc = _rehearse_cli(root, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == f"error: {error}"


def test_the_live_table_shows_each_versions_last_window(api: FakeCloudflare, settings: Any) -> None:
    from rich.console import Console

    from cfops.analytics.command import live_table

    api.analytics.seed(DATASET, NEW, 100, Profile(error_rate=0.1, latency_ms=10))
    api.analytics.seed(DATASET, OLD, 900, Profile(latency_ms=10))
    console = Console(width=200, record=True)
    console.print(live_table(settings, {NEW: 10.0, OLD: 90.0}, 300))
    text = console.export_text()
    new_row = next(line for line in text.splitlines() if NEW in line)
    assert "10%" in new_row and " 100 " in new_row and "10.00 %" in new_row
    old_row = next(line for line in text.splitlines() if OLD in line)
    assert " 900 " in old_row and "0.00 %" in old_row


def test_status_lists_each_stages_verdict(api: FakeCloudflare, settings: Any) -> None:
    from rich.console import Console

    from cfops import report as artifacts
    from cfops.status import artifacts_table

    api.analytics.seed(DATASET, NEW, 300, Profile(error_rate=0.08))
    api.analytics.seed(DATASET, OLD, 2700, Profile(error_rate=0.01))
    record = stage(settings)
    artifacts.write_json(settings.artifacts_dir / "analysis-10.json", record)
    (settings.artifacts_dir / "analysis-50.json").write_text('{"versions": 3}')
    console = Console(width=300, record=True)
    console.print(artifacts_table(settings))
    text = console.export_text()
    assert "analysis-10.json" in text and "fail (fail: 5xx rate 8.00 %" in text
    assert "analysis-50.json" in text  # a malformed record is listed, not a crash
