"""`nox -s perf_smoke` (cfops.perf) against real local servers with a scripted latency distribution."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cfops import cli, perf, procs
from tests.conftest import clean_env
from tests.fakes.latency_server import latency_server

# One worker runs the whole module under parallel runs: one latency server per module.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("latency-server")]

FAST_MS, SLOW_MS = 5, 400
# Generous: the machine is shared; what matters is which side of the fast/slow gap a percentile is on.
FAST_LIMIT_MS = FAST_MS + 150


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with latency_server(FAKE_TOKEN="server-side-token-0042") as url:
        yield url


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (
        "IMMCAD_API_BASE_URL",
        "IMMCAD_API_BEARER_TOKEN",
        "API_BEARER_TOKEN",
        "REQUESTS",
        "CONCURRENCY",
        "MAX_P95_SECONDS",
        "CHAT_PATH",
        "GITHUB_STEP_SUMMARY",
        "CI",
    ):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "proj"
    path.mkdir()
    (path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.cfops]\n")
    monkeypatch.setenv("CFOPS_ROOT", str(path))
    monkeypatch.chdir(path)
    return path


def run(root: Path, *argv: str) -> tuple[int, dict[str, object]]:
    artifact = root / "artifacts" / "perf-smoke.json"
    artifact.unlink(missing_ok=True)
    code = cli.main(perf.main, list(argv))
    return code, json.loads(artifact.read_text())


def latency(data: dict[str, object]) -> dict[str, float]:
    stats = data["stats"]
    assert isinstance(stats, dict)
    return stats["latency_ms"]  # type: ignore[no-any-return]


@pytest.mark.serial
@pytest.mark.parametrize(
    ("every", "engine", "fast", "slow"),
    [
        (20, "aiohttp", ("p50", "p90", "p95"), ("p99", "max")),  # 5 of 100 slow: p95 is rank 95, still fast
        (10, "aiohttp", ("p50", "p90"), ("p95", "p99", "max")),  # 10 of 100 slow: p90 rank 90 fast, p95 slow
        (20, "httpx", ("p50", "p90", "p95"), ("p99", "max")),  # the comparison engine measures the same
    ],
)
def test_percentiles_match_the_scripted_distribution(
    root: Path, server: str, every: int, engine: str, fast: tuple[str, ...], slow: tuple[str, ...]
) -> None:
    path = f"/script?fast_ms={FAST_MS}&slow_ms={SLOW_MS}&every={every}&tag={engine}-{every}"
    code, data = run(
        root,
        "--base-url",
        server,
        "--chat-path",
        path,
        "--requests",
        "100",
        "--concurrency",
        "5",
        "--engine",
        engine,
    )
    assert code == 0, data["verdict"]
    lat = latency(data)
    for name in fast:
        assert FAST_MS <= lat[name] < FAST_LIMIT_MS, (name, lat)
    for name in slow:
        assert SLOW_MS <= lat[name] < SLOW_MS + 300, (name, lat)
    assert data["stats"]["requests"] == 100  # type: ignore[index]
    assert data["stats"]["status_codes"] == {"200": 100}  # type: ignore[index]


def test_thresholds_decide_the_exit_code_both_ways(
    root: Path, server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = f"/script?fast_ms={FAST_MS}&slow_ms={SLOW_MS}&every=10&tag=thresholds-pass"
    code, data = run(root, "--base-url", server, "--chat-path", path, "--requests", "50", "--max-p95", "1.0")
    assert code == 0
    assert data["verdict"]["passed"] is True  # type: ignore[index]
    failing = f"/script?fast_ms={FAST_MS}&slow_ms={SLOW_MS}&every=10&tag=thresholds-fail"
    code, data = run(
        root, "--base-url", server, "--chat-path", failing, "--requests", "50", "--max-p95", "0.1"
    )
    assert code == 1
    assert data["verdict"]["failed"] == ["p95"]  # type: ignore[index]
    out = capsys.readouterr().out
    assert "FAIL: p95 4" in out and "> 100.0 ms" in out  # names the threshold and by how much
    # p99 alone: 1 slow request in 50 is past p95 (rank 48) but is p99 (rank 50)
    p99 = f"/script?fast_ms={FAST_MS}&slow_ms={SLOW_MS}&every=50&tag=p99"
    code, data = run(
        root,
        "--base-url",
        server,
        "--chat-path",
        p99,
        "--requests",
        "50",
        "--max-p95",
        "0.2",
        "--max-p99",
        "0.2",
    )
    assert code == 1
    assert data["verdict"]["failed"] == ["p99"]  # type: ignore[index]


def test_failures_and_timeouts_are_counted_and_classified(root: Path, server: str, tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "ok: {path: '/sleep?ms=1'}\n"
        "missing: {path: /nope}\n"
        "broken: {path: '/status?code=503&every=1'}\n"
        "moved: {path: /redirect}\n"
        "slow: {path: '/sleep?ms=3000'}\n"
        "dropped: {path: /drop}\n"
    )
    code, data = run(
        root,
        "--base-url",
        server,
        "--scenario",
        str(scenario),
        "--requests",
        "12",
        "--concurrency",
        "6",
        "--timeout",
        "0.5",
    )
    stats = data["stats"]
    assert code == 1
    assert stats["errors"] == {"4xx": 2, "5xx": 2, "protocol": 2, "timeout": 2, "unexpected status": 2}  # type: ignore[index]
    assert stats["status_codes"] == {"200": 2, "302": 2, "404": 2, "503": 2}  # type: ignore[index]
    assert stats["failed"] == 10 and stats["error_rate"] == pytest.approx(10 / 12)  # type: ignore[index]
    assert "HTTP 503" in stats["error_examples"]["5xx"]  # type: ignore[index]
    per_probe = stats["per_probe"]  # type: ignore[index]
    assert per_probe["ok"]["failed"] == 0 and per_probe["slow"]["failed"] == 2


def test_connection_refused_is_a_counted_failure_not_a_crash(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = procs.free_port()  # nothing listens there
    code, data = run(root, "--base-url", f"http://127.0.0.1:{port}", "--requests", "10")
    assert code == 1
    assert data["stats"]["errors"] == {"connect": 10}  # type: ignore[index]
    assert data["stats"]["latency_ms"] is None  # type: ignore[index]
    out = capsys.readouterr().out
    assert "error rate 100.0% > 0.0% (10 of 10 failed: 10 connect)" in out
    assert "Traceback" not in out


def test_open_model_reports_the_stall_a_closed_model_hides(root: Path, server: str) -> None:
    # The server holds every request that arrives between 0.3 s and 1.3 s after the first one.
    stall = "/stall?after_ms=300&for_ms=1000"
    code, open_data = run(
        root,
        "--base-url",
        server,
        "--chat-path",
        f"{stall}&tag=open",
        "--rate",
        "40",
        "--requests",
        "60",
        "--concurrency",
        "4",
        "--max-p95",
        "5",
    )
    assert code == 0
    open_lat = latency(open_data)
    # ~40 of 60 requests were due inside the stall; measured from their due time they waited up to 1 s.
    assert open_lat["max"] >= 850, open_lat
    assert open_lat["p90"] >= 600, open_lat
    assert open_data["stats"]["open_model"]["late_starts"] >= 20  # type: ignore[index]
    # Closed model, same server, same workers: the 4 stuck requests are all it sees of the stall.
    code, closed_data = run(
        root,
        "--base-url",
        server,
        "--chat-path",
        f"{stall}&tag=closed",
        "--duration",
        "1.5",
        "--concurrency",
        "4",
        "--max-p95",
        "5",
    )
    assert code == 0
    closed_lat = latency(closed_data)
    assert closed_lat["max"] >= 850
    assert closed_lat["p90"] < 100, closed_lat


def test_version_id_reaches_the_server_as_the_override_header(root: Path, server: str) -> None:
    expected = 'immcad-backend-native-python="5d2f0c7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"'
    from urllib.parse import quote

    path = f"/require-header?name=Cloudflare-Workers-Version-Overrides&value={quote(expected)}"
    code, data = run(
        root,
        "--base-url",
        server,
        "--chat-path",
        path,
        "--requests",
        "3",
        "--version-id",
        "5d2f0c7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f",
    )
    assert code == 0, data["stats"]
    assert data["config"]["version_id"] == "5d2f0c7e-1b2a-4c3d-9e8f-0a1b2c3d4e5f"  # type: ignore[index]


@pytest.mark.parametrize("engine", ["aiohttp", "httpx", "httpx-aiohttp"])
def test_every_engine_marks_its_requests_synthetic(root: Path, server: str, engine: str) -> None:
    # The server answers 412 unless the marker arrives: the run passes only if every request (warm-up
    # included) carried it, so the release's analysis leaves them out of the users' traffic.
    from urllib.parse import quote

    from immcad_api.analytics import SYNTHETIC_HEADER, SYNTHETIC_VALUE

    path = f"/require-header?name={SYNTHETIC_HEADER}&value={quote(SYNTHETIC_VALUE)}"
    args = ("--base-url", server, "--chat-path", path, "--requests", "4", "--warmup", "2")
    code, data = run(root, *args, "--engine", engine)
    assert code == 0, data["stats"]
    stats = data["stats"]
    assert isinstance(stats, dict) and stats["failed"] == 0 and stats["requests"] == 4, stats
    assert stats["warmup"] == {"sent": 2, "failed": 0} and stats["engine"] == engine


def _cli(root: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfops.perf", *argv],
        cwd=root,
        env=clean_env(CFOPS_ROOT=str(root), **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bearer_token_never_appears_in_output_artifact_or_summary(root: Path, server: str) -> None:
    summary = root / "summary.md"
    secret_header = "header-secret-value-77"
    # Right token: the requests pass.
    ok = _cli(
        root,
        "--base-url",
        server,
        "--chat-path",
        "/auth",
        "--requests",
        "5",
        "--header",
        f"X-Api-Key: {secret_header}",
        IMMCAD_API_BEARER_TOKEN="server-side-token-0042",
        GITHUB_STEP_SUMMARY=str(summary),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Wrong token: the server echoes it back in its 401 body, and the client must not repeat it.
    wrong = _cli(
        root,
        "--base-url",
        server,
        "--chat-path",
        "/auth",
        "--requests",
        "5",
        IMMCAD_API_BEARER_TOKEN="client-token-that-leaks-9999",
        GITHUB_STEP_SUMMARY=str(summary),
        CI="true",
    )
    assert wrong.returncode == 1
    artifact = (root / "artifacts/perf-smoke.json").read_text()
    assert "invalid credentials: Bearer ***" in artifact  # the example is kept, the token is not
    everything = ok.stdout + ok.stderr + wrong.stdout + wrong.stderr + artifact + summary.read_text()
    for secret in ("server-side-token-0042", "client-token-that-leaks-9999", secret_header):
        assert secret not in everything
    assert json.loads(artifact)["config"]["bearer_token"] == "set"
    assert summary.read_text().count("## ") == 2  # both runs appended a Markdown summary
    assert "4xx" in summary.read_text()
    # CI: plain progress lines, no live display escape codes
    assert "\x1b[" not in wrong.stdout


def test_embedded_default_starts_and_stops_the_local_backend(project: Path) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = _cli(project, "--requests", "10", "--concurrency", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((project / "artifacts/perf-smoke.json").read_text())
    assert data["target"]["embedded_local_backend"] is True
    assert data["stats"]["status_codes"] == {"200": 10}  # the real /api/chat answered the old probe
    assert data["config"]["probes"][0]["path"] == "/api/chat"
    url = data["target"]["url"]
    port = int(url.rsplit(":", 1)[1])
    assert procs.port_is_free("127.0.0.1", port), "the backend still listens"
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "cfops.devserver" in " ".join(p.info["cmdline"] or []) and str(port) in (p.info["cmdline"] or [])
    ]
    assert not leftovers
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before
    assert "no base URL: measuring the local backend" in result.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_a_run_stops_the_embedded_backend(project: Path, sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfops.perf", "--duration", "60", "--concurrency", "2"],
        cwd=project,
        env=clean_env(CFOPS_ROOT=str(project), CI="true"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "perf:" not in seen:  # the first progress line: the backend is up and being measured
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stdout.readline()
        backends = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "cfops.devserver" in " ".join(p.cmdline())
        ]
        assert backends, "the local backend runs as a child"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), seen + out
    _gone, alive = psutil.wait_procs(backends, timeout=5)
    assert not alive, f"left running: {alive}"
    assert "Traceback" not in seen + out
