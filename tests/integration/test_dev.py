"""`nox -s dev`'s entry point (python -m cfops.dev) as a real process: serve, interrupt, leave nothing."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from cfops import procs
from tests.conftest import clean_env

pytestmark = pytest.mark.integration


def start_dev(project: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cfops.dev", *args],
        cwd=project,
        env=clean_env(CFOPS_ROOT=str(project), **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], url: str, timeout: float = 60) -> None:
    procs.poll_health(
        "cfops dev",
        f"{url}/healthz",
        timeout=timeout,
        healthy=lambda response: response.status_code == 200,
        expect="200",
        exit_code=proc.poll,
        # Only once it has ended: reading a live process's output would block.
        last_output=lambda: proc.stdout.read() if proc.stdout and proc.poll() is not None else "(running)",
        interval=0.2,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_dev_serves_the_synced_bundle_and_stops_cleanly(project: Path, sig: int) -> None:
    (project / "backend-cloudflare/.dev.vars").write_text("IMMCAD_API_BEARER_TOKEN=dev-vars-token-123\n")
    port = procs.free_port()
    proc = start_dev(project, "--port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url)
        # the bundle was synced before serving, and the app in it is what answers
        assert (project / "backend-cloudflare/src/immcad_api/main.py").is_file()
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        # .dev.vars reached the app through the Worker's binding function: /api now needs the token
        assert httpx.post(f"{url}/api/chat", json={"session_id": "a", "message": "b"}).status_code == 401
        ok = httpx.post(
            f"{url}/api/chat",
            json={"session_id": "a", "message": "b"},
            headers={"Authorization": "Bearer dev-vars-token-123"},
        )
        assert ok.status_code == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the backend runs as a child process"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (130 if sig == signal.SIGINT else 143)
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
    assert "pywrangler unavailable" in out  # this machine has no internet: the fallback says why
    assert "serving the synced bundle" in out
    assert "dev-vars-token-123" not in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def run_dev(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfops.dev", *args],
        cwd=project,
        env=clean_env(CFOPS_ROOT=str(project), **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_usage_error(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert message in proc.stderr


def test_port_in_use_is_exit_2(project: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_dev(project, "--port", str(port))
    assert_usage_error(proc, f"port {port} on 127.0.0.1 is already in use")


def test_unknown_runtime_is_exit_2(project: Path) -> None:
    assert_usage_error(run_dev(project, "--runtime", "docker"), "invalid choice: 'docker'")


def test_malformed_wrangler_toml_is_exit_2(project: Path) -> None:
    (project / "backend-cloudflare/wrangler.toml").write_text('name = "x"\n[vars\n')
    assert_usage_error(run_dev(project, "--port", str(procs.free_port())), "wrangler.toml is not valid TOML")


def test_forced_pywrangler_without_internet_is_exit_2_quickly(project: Path) -> None:
    started = time.monotonic()
    proc = run_dev(project, "--runtime", "pywrangler", "--port", str(procs.free_port()))
    assert_usage_error(proc, "pywrangler cannot run here")
    assert time.monotonic() - started < 15


def test_backend_that_refuses_to_start_is_reported(project: Path) -> None:
    """A hardened environment without a token: the child's one-line reason reaches the user."""
    (project / "backend-cloudflare/.dev.vars").write_text(
        "ENVIRONMENT=production\nIMMCAD_ENVIRONMENT=production\n"
    )
    proc = run_dev(project, "--port", str(procs.free_port()))
    assert proc.returncode == 1
    assert "backend refused to start: refusing to start: ENVIRONMENT=production is hardened" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if "cfops.devserver" in " ".join(p.info["cmdline"] or [])
        and str(project) in " ".join(p.info["cmdline"] or [])
    ]


def test_project_root_is_found_from_a_subdirectory(project: Path) -> None:
    env = clean_env()
    proc = subprocess.run(
        [sys.executable, "-m", "cfops.sync", "--check"],
        cwd=project / "backend-cloudflare" / "src",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "missing: backend-cloudflare/src/immcad_api/main.py" in proc.stdout


def test_a_second_ctrl_c_does_not_cut_the_cleanup_short(project: Path) -> None:
    # An impatient user (or a runner) signals again while the first one's cleanup runs: still exit 130,
    # still nothing left running.
    port = procs.free_port()
    proc = start_dev(project, "--port", str(port))
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the backend runs as a child process"
        proc.send_signal(signal.SIGINT)
        for _ in range(5):
            time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"left running: {alive}"
