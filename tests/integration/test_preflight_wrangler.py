"""`nox -s preflight` with the real pinned wrangler: dry-run sizes, startup profile, whoami, Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from cfops import procs
from cfops.config import load_settings
from cfops.preflight.runner import CHECKS
from cfops.wrangler import QUIET_ENV, toolchain_env, wrangler_bin
from tests.conftest import REPO, clean_env
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.preflight_fixtures import Run, link_node_modules, make_project, run_preflight, set_preflight

pytestmark = pytest.mark.integration

TOKEN = "cf-api-token-7d1e0b9a55"
WRANGLER_PIN = json.loads((REPO / "backend-cloudflare/package.json").read_text())["devDependencies"][
    "wrangler"
]


@pytest.fixture
def wr_project(tmp_path: Path) -> Path:
    project = make_project(tmp_path / "project")
    link_node_modules(project)
    return project


def wrangler_total_upload(project: Path, config: str, outdir: Path) -> tuple[float, float]:
    """wrangler's own 'Total Upload: X KiB / gzip: Y KiB' line for a dry-run (the cross-check)."""
    settings = load_settings(project, {})
    result = procs.run(
        [wrangler_bin(settings), "deploy", "--dry-run", "--outdir", outdir, "--config", config],
        cwd=project / "backend-cloudflare",
        env={**QUIET_ENV, **toolchain_env(settings)},
        echo=False,
    )
    match = re.search(r"Total Upload: ([\d.]+) KiB / gzip: ([\d.]+) KiB", result.stdout)
    assert match, result.stdout
    return float(match.group(1)), float(match.group(2))


def test_real_dry_run_sizes_match_wranglers_own_figures(
    wr_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run = run_preflight(
        wr_project, monkeypatch, capsys, "--only", "proxy-bundle,native-bundle,startup,tooling"
    )
    assert "Traceback" not in run.text
    assert run.code == 0, run.text
    proxy = run.finding("proxy-bundle")
    assert proxy["status"] == "pass"
    assert proxy["measured"]["wrangler"] == WRANGLER_PIN
    assert list(proxy["measured"]["modules"]) == ["worker.js"]
    assert proxy["limits"]["size_limit_bytes"] == 64 * 1024 * 1024
    startup = run.finding("startup")
    assert startup["status"] == "pass", startup
    assert 0 <= startup["measured"]["startup_cpu_ms"] < 1000 and startup["measured"]["samples"] >= 1
    assert run.finding("tooling")["status"] == "pass"
    assert run.finding("tooling")["measured"]["whoami"] == "skipped"

    # Our sizes, measured from the files, agree with what wrangler itself prints for the same builds.
    raw, gz = wrangler_total_upload(wr_project, "wrangler.backend-proxy.jsonc", tmp_path / "proxy")
    assert round(proxy["measured"]["raw_bytes"] / 1024, 2) == raw
    assert abs(proxy["measured"]["gzip_bytes"] / 1024 - gz) < 0.05
    native = run.finding("native-bundle")
    raw, gz = wrangler_total_upload(wr_project, "wrangler.toml", tmp_path / "native")
    assert round(native["measured"]["raw_bytes"] / 1024, 2) == raw
    assert abs(native["measured"]["gzip_bytes"] / 1024 - gz) < 0.05
    written = sorted(
        p.relative_to(tmp_path / "native").as_posix() for p in (tmp_path / "native").rglob("*") if p.is_file()
    )
    assert native["measured"]["file_count"] == len([p for p in written if p != "README.md"])


def test_oversize_proxy_and_slow_startup_fail_with_cloudflares_codes(
    wr_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A Worker that burns CPU in its global scope, a 1 KiB size limit and a 20 ms startup limit.
    padding = "x" * 2048  # a used string literal survives bundling (comments would not)
    (wr_project / "backend-cloudflare/src/worker.ts").write_text(
        f'const PAD = "{padding}";\n'
        "let x = 0;\nfor (let i = 0; i < 60_000_000; i++) { x += Math.sqrt(i); }\n"
        "export default { async fetch(): Promise<Response> { return new Response(String(x) + PAD); } };\n"
    )
    set_preflight(wr_project, size_limit_kib="1", startup_limit_ms="20")
    run = run_preflight(wr_project, monkeypatch, capsys, "--only", "proxy-bundle,startup")
    assert "Traceback" not in run.text
    assert run.code == 1
    proxy = run.finding("proxy-bundle")
    assert proxy["status"] == "fail"
    assert "over the 1.00 KiB limit: Cloudflare would reject the upload (error 10027)" in proxy["message"]
    startup = run.finding("startup")
    assert startup["status"] == "fail", startup
    assert startup["measured"]["startup_cpu_ms"] > 20
    assert "over the 20 ms limit: Cloudflare would reject the deploy (error 10021)" in startup["message"]


def test_wrangler_error_text_reaches_the_finding(
    wr_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = wr_project / "backend-cloudflare/wrangler.backend-proxy.jsonc"
    config.write_text(config.read_text().replace('"main": "src/worker.ts"', '"main": "src/missing.ts"'))
    run = run_preflight(wr_project, monkeypatch, capsys, "--only", "proxy-bundle,startup")
    assert "Traceback" not in run.text
    assert run.code == 1
    proxy = run.finding("proxy-bundle")
    assert proxy["status"] == "fail"
    assert proxy["message"].startswith("wrangler deploy --dry-run failed (exit 1): ")
    assert "src/missing.ts" in proxy["message"]
    startup = run.finding("startup")
    assert startup["status"] == "warn"  # unmeasured is not a pass
    assert startup["message"].startswith(f"proxy startup not measurable with wrangler {WRANGLER_PIN}: ")
    assert "src/missing.ts" in run.out


@pytest.fixture
def fake_api() -> Iterator[str]:
    """The fake Cloudflare API (the endpoints `wrangler whoami` reads), accepting only TOKEN."""
    with FakeCloudflare(token=TOKEN) as api:
        yield api.base_url


def test_whoami_runs_only_with_credentials_and_never_shows_them(
    wr_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_api: str
) -> None:
    ok = run_preflight(
        wr_project,
        monkeypatch,
        capsys,
        "--only",
        "tooling",
        CLOUDFLARE_API_TOKEN=TOKEN,
        CLOUDFLARE_API_BASE_URL=fake_api,
    )
    assert ok.code == 0, ok.text
    assert ok.finding("tooling")["measured"]["whoami"] == "ok"
    bad_token = "cf-api-token-wrong-31f0"
    bad = run_preflight(
        wr_project,
        monkeypatch,
        capsys,
        "--only",
        "tooling",
        CLOUDFLARE_API_TOKEN=bad_token,
        CLOUDFLARE_API_BASE_URL=fake_api,
    )
    assert bad.code == 1
    assert bad.finding("tooling")["message"].startswith(
        "wrangler whoami failed with the configured credentials: "
    )
    for run, secret in ((ok, TOKEN), (bad, bad_token)):
        assert "Traceback" not in run.text
        assert secret not in run.text
        assert secret not in json.dumps(run.report)


def test_with_token_and_account_the_credentials_are_checked_over_the_api_without_wrangler(
    wr_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeCloudflare(token=TOKEN) as api:

        def tooling(account: str = api.account_id, token: str = TOKEN) -> Run:
            env = {"CLOUDFLARE_API_TOKEN": token, "CLOUDFLARE_API_BASE_URL": api.base_url}
            return run_preflight(
                wr_project, monkeypatch, capsys, "--only", "tooling", CLOUDFLARE_ACCOUNT_ID=account, **env
            )

        ok = tooling()
        assert ok.code == 0, ok.text
        assert ok.finding("tooling")["measured"]["whoami"] == "ok"
        # One read by cfops itself (httpx), none of the reads `wrangler whoami` makes (/user first).
        reads = api.calls("GET")
        assert [(r.path, r.headers.get("user-agent")) for r in reads] == [("/accounts", "cfops")]
        assert reads[0].headers["authorization"] == f"Bearer {TOKEN}"
        # A token that sees many accounts: the list is read page by page until the account shows up.
        api.other_accounts = 120
        paged = tooling()
        assert paged.code == 0, paged.text
        assert [r.query["page"] for r in api.calls("GET", "/accounts")][1:] == [["1"], ["2"], ["3"]]
        other = "ffffffffffffffffffffffffffffffff"  # an account the token does not see
        elsewhere = tooling(account=other)
        assert elsewhere.code == 1
        assert elsewhere.finding("tooling")["message"] == (
            "the configured credentials do not reach the account: the token sees 121 account(s), not "
            f"CLOUDFLARE_ACCOUNT_ID {other}: check the account id, or give the token access to that account"
        )
        bad_token = "cf-api-token-wrong-77aa"
        bad = tooling(token=bad_token)
        assert bad.code == 1
        message = bad.finding("tooling")["message"]
        assert message.startswith("the configured credentials do not reach the account: listing the token")
        assert "Cloudflare error 10000" in message
        for run, secret in ((ok, TOKEN), (elsewhere, TOKEN), (bad, bad_token)):
            assert "Traceback" not in run.text
            assert secret not in run.text and secret not in json.dumps(run.report)


def _preflight_process(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cfops.preflight", *args],
        cwd=project,
        env={
            k: v
            for k, v in clean_env(CFOPS_ROOT=str(project), **env).items()
            if not k.startswith("CLOUDFLARE_")
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_whole_run_as_a_process_writes_every_report(wr_project: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    proc = _preflight_process(wr_project, "--target", "local", GITHUB_STEP_SUMMARY=str(summary))
    out, err = proc.communicate(timeout=240)
    assert "Traceback" not in out + err
    # native-bundle warns (dependencies cannot be vendored offline), workflows/git skip: exit 0
    assert proc.returncode == 0, out + err
    report = json.loads((wr_project / "artifacts/preflight.json").read_text())
    assert [f["id"] for f in report["findings"]] == list(CHECKS)
    statuses = {f["id"]: f["status"] for f in report["findings"]}
    assert statuses["native-bundle"] == "warn" and statuses["git"] == "skip"
    assert all(statuses[c] == "pass" for c in ("configs", "proxy-bundle", "startup", "sync", "edge-contract"))
    # the checks overlapped: the run took about as long as its slowest check, not the sum
    durations = [f["duration_seconds"] for f in report["findings"]]
    assert report["wall_seconds"] < sum(durations)
    assert "## Preflight ⚠️ warn" in summary.read_text()
    assert "preflight warn:" in out

    strict = _preflight_process(wr_project, "--strict", "--only", "native-bundle")
    out, err = strict.communicate(timeout=120)
    assert strict.returncode == 1, out + err


def _node_descendants(proc: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in proc.children(recursive=True):
        try:
            if child.name().startswith("node") or child.name() == "workerd":
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_ctrl_c_stops_wrangler_and_workerd_and_exits_130(wr_project: Path) -> None:
    # A Worker whose startup runs for minutes: only stopping the commands ends the run in time.
    (wr_project / "backend-cloudflare/src/worker.ts").write_text(
        "let x = 0;\nfor (let i = 0; i < 20_000_000_000; i++) { x += i % 7; }\n"
        "export default { async fetch(): Promise<Response> { return new Response(String(x)); } };\n"
    )
    proc = _preflight_process(wr_project, "--only", "startup,proxy-bundle")
    me = psutil.Process(proc.pid)
    everything: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            if any(p.name() == "workerd" for p in _node_descendants(me)):
                break
            time.sleep(0.1)
        everything = me.children(recursive=True)
        assert any(p.name() == "workerd" for p in everything), "the startup profile never began"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=45)
        assert proc.returncode == 130, out + err
        assert "interrupted" in err
        assert "Traceback" not in out + err
        _gone, alive = psutil.wait_procs(everything, timeout=10)
        assert not alive, f"left running: {alive}"
    finally:
        # On a failure, leave nothing behind on the shared machine.
        for leftover in [me, *everything]:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        proc.wait(timeout=10)


def test_wrangler_checks_are_cached_until_a_byte_of_their_input_changes(
    wr_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run() -> dict[str, dict[str, object]]:
        result = run_preflight(wr_project, monkeypatch, capsys, "--only", "proxy-bundle,startup")
        assert result.code == 0, result.text
        return {check_id: result.finding(check_id) for check_id in ("proxy-bundle", "startup")}

    measured = run()
    assert not any(f["cached"] for f in measured.values())
    reused = run()
    assert all(f["cached"] for f in reused.values())
    for check_id, finding in reused.items():
        assert finding["measured"] == measured[check_id]["measured"]
        assert finding["message"] == measured[check_id]["message"]
    # One byte of the proxy's source: both wrangler checks run again (no reuse).
    worker = wr_project / "backend-cloudflare/src/worker.ts"
    worker.write_text(worker.read_text().replace("TIMEOUT_DEFAULT_MS = 15000", "TIMEOUT_DEFAULT_MS = 15001"))
    again = run()
    assert not any(f["cached"] for f in again.values())
    # esbuild prints 15000 as 15e3: the new bundle is one byte longer, measured, not the stored size.
    assert (
        again["proxy-bundle"]["measured"]["raw_bytes"]
        == measured["proxy-bundle"]["measured"]["raw_bytes"] + 1
    )
