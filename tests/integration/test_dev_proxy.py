"""`nox -s dev_proxy` (python -m cfops.proxy) as a real process, and `python -m cfops.tscheck`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from cfops import procs
from tests.conftest import clean_env, copy_project, repo_toolchain
from tests.integration.edge import raw_request, recording_backend

pytestmark = pytest.mark.integration

PROXY_FILES = (
    "backend-cloudflare/wrangler.backend-proxy.jsonc",
    "backend-cloudflare/src/worker.ts",
    "backend-cloudflare/src/allowlist.json",
    "backend-cloudflare/tsconfig.json",
    "backend-cloudflare/package.json",
    "backend-cloudflare/package-lock.json",
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """This repository's pinned toolchain (npm ci once), shared with fixture projects by symlink."""
    return repo_toolchain()


@pytest.fixture
def proxy_project(project: Path, node_modules: Path) -> Path:
    copy_project(project, PROXY_FILES)
    (project / "backend-cloudflare/node_modules").symlink_to(node_modules)
    return project


def run_module(
    project: Path, module: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project,
        env=clean_env(CFOPS_ROOT=str(project)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(url: str, proc: subprocess.Popen[str], timeout: float = 120) -> httpx.Response:
    return procs.poll_health(
        "cfops dev_proxy",
        url,
        timeout=timeout,
        healthy=lambda response: response.status_code == 200,
        expect="200",
        exit_code=proc.poll,
        # Only once it has ended: reading a live process's output would block.
        last_output=lambda: proc.stdout.read() if proc.stdout and proc.poll() is not None else "(running)",
        interval=0.3,
    ).response


def test_dev_proxy_serves_the_backend_through_workerd_and_stops_cleanly(proxy_project: Path) -> None:
    token = "proxy-dev-token-4821"
    (proxy_project / "backend-cloudflare/.dev.vars").write_text(f"IMMCAD_API_BEARER_TOKEN={token}\n")
    proxy_port, backend_port = procs.free_port(), procs.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfops.proxy", "--port", str(proxy_port), "--backend-port", str(backend_port)],
        cwd=proxy_project,
        env=clean_env(CFOPS_ROOT=str(proxy_project)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proxy_url, backend_url = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{backend_port}"
    try:
        health = wait_for(f"{proxy_url}/healthz", proc)
        # the real backend answered, through the Worker
        assert health.json()["service"] == "immcad-api"
        assert health.headers["x-trace-id"] == health.headers["x-immcad-trace-id"]
        chat = httpx.post(
            f"{proxy_url}/api/chat",
            json={"session_id": "proxy-1", "message": "Can I get a study permit?"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["citations"]
        # Authorization passes through: without it the backend (not the proxy) says 401
        denied = httpx.post(f"{proxy_url}/api/chat", json={"session_id": "p", "message": "m"}, timeout=20)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "UNAUTHORIZED"
        refused = raw_request(proxy_url, b"/api/%2e%2e%2fops/metrics")
        assert refused.status == 404 and refused.error()["code"] == "VALIDATION_ERROR"
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        assert "cfops.devserver" in names and "wrangler" in names and "workerd" in names
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    assert f"backend (uvicorn, synced bundle) ready at {backend_url}" in out
    assert f"edge proxy (wrangler dev, workerd) ready at {proxy_url} → {backend_url}" in out
    assert token not in out
    assert "Using secrets" not in out  # the proxy never loads the native Worker's .dev.vars
    assert "Request.cf" not in out  # no attempt to download it from workers.cloudflare.com
    for url in (proxy_url, backend_url):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=5)


def test_dev_proxy_fronts_a_running_origin_and_stops_on_sigterm(proxy_project: Path) -> None:
    with recording_backend() as origin:
        port = procs.free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "cfops.proxy", "--port", str(port), "--origin", origin.url],
            cwd=proxy_project,
            env=clean_env(CFOPS_ROOT=str(proxy_project)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/healthz", proc)
            children = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 143, out
        assert {(r["method"], r["path"]) for r in origin.records()} == {("GET", "/healthz")}
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running: {alive}"
    assert "backend (" not in out  # nothing was synced or started besides the proxy
    assert not (proxy_project / "backend-cloudflare/src/immcad_api").exists()


def test_a_worker_that_does_not_build_is_reported_in_one_line(proxy_project: Path) -> None:
    worker = proxy_project / "backend-cloudflare/src/worker.ts"
    worker.write_text(worker.read_text() + "\nexport const broken = {;\n")
    proc = run_module(
        proxy_project, "cfops.proxy", "--origin", "http://127.0.0.1:9", "--port", str(procs.free_port())
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: the edge proxy (wrangler dev) did not start: Build failed with 1 error:")
    assert 'Expected identifier but found ";"' in line and "(at src/worker.ts:" in line
    assert "\x1b[" not in proc.stdout + proc.stderr  # wrangler's colours are stripped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--var", "BACKEND_RETRY_ATTEMPTS"], "expected NAME:VALUE"),
        (["--var", "BACKEND_ORIGIN:http://x"], "use --origin URL instead"),
        (["--origin", "ftp://127.0.0.1:21"], "is not an http(s) URL"),
        (["--var", "CANLII_API_KEY:abcd1234"], "CANLII_API_KEY looks like a secret"),
        (["--port", "9", "--backend-port", "9"], "both 9"),
        (["--runtime", "docker"], "invalid choice: 'docker'"),
    ],
)
def test_bad_input_is_exit_2_in_one_line(proxy_project: Path, args: list[str], message: str) -> None:
    proc = run_module(proxy_project, "cfops.proxy", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert message in proc.stderr


def test_tscheck_passes_on_the_worker_and_fails_on_a_type_error(proxy_project: Path) -> None:
    ok = run_module(proxy_project, "cfops.tscheck")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "type-check" in ok.stdout

    worker = proxy_project / "backend-cloudflare/src/worker.ts"
    worker.write_text(worker.read_text() + '\nconst broken: number = "not a number";\n')
    bad = run_module(proxy_project, "cfops.tscheck")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "src/worker.ts" in bad.stdout and "error TS2322" in bad.stdout
    assert "tsc --noEmit: 1 error(s)" in bad.stderr
    assert "Traceback" not in bad.stderr
