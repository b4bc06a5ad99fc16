"""The session layer as nox runs it: failures reported by nox (failure line, summary, --stop-on-first-error),
secrets kept off every argv and log line, and `cfops perf --json -` / GitHub Actions output.

nox runs the real noxfile.py, copied into a fixture project, with ``--no-venv``: the sessions then call
``python -m cfops`` from this test environment (no environment to install), in the fixture's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from cfops import procs
from tests.conftest import REPO, clean_env
from tests.fakes.latency_server import latency_server

pytestmark = pytest.mark.integration

TOKEN = "server-side-token-0042-nox"
JSON_DASH = ("--requests", "3", "--json", "-")
NOX = (sys.executable, "-m", "nox", "-f")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with latency_server(FAKE_TOKEN=TOKEN) as url:
        yield url


@pytest.fixture
def fixture_project(tmp_path: Path) -> Path:
    root = _front_files(tmp_path / "proj")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '0'\n\n[tool.cfops]\n")
    return root


def _front_files(root: Path) -> Path:
    """noxfile.py and what it imports before any environment exists, copied into ``root``."""
    (root / "src" / "cfops").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "noxfile.py", root / "noxfile.py")
    for name in ("__init__.py", "argv.py"):
        shutil.copy2(REPO / "src" / "cfops" / name, root / "src" / "cfops" / name)
    return root


def _env(**extra: str) -> dict[str, str]:
    # `python` in the sessions is this test environment's interpreter (cfops installed).
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return clean_env(PATH=path, **extra)


def nox(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(root / "noxfile.py"), "--no-venv", *args],
        cwd=root,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_failing_sessions_are_reported_by_nox_with_its_summary(fixture_project: Path) -> None:
    result = nox(fixture_project, "-s", "sync", "versions", "preflight", "--", "--bogus")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # nox's code for a failed run; the command's own 2 is in the line
    assert "Command python -m cfops sync --bogus failed with exit code 2" in out
    assert "error: cfops sync: unrecognized arguments: --bogus (see --help)" in out
    assert "Session sync failed." in out
    for name in ("sync", "versions", "preflight"):  # every session ran and is in the summary
        assert f"* {name}: failed" in out, out
    assert "Traceback" not in out

    stopped = nox(fixture_project, "--stop-on-first-error", "-s", "sync", "versions", "--", "--bogus")
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1
    assert "Session sync failed." in out
    assert "cfops versions" not in out  # nox stopped after the first failure


def test_invoke_check_sessions_with_a_failing_lint_end_in_nox_s_summary(fixture_project: Path) -> None:
    """`nox -s lint tests preflight` (`invoke check`) where lint fails: nox says so and runs on."""
    (fixture_project / "src" / "broken.py").write_text("import os\n")  # F401: lint fails
    result = nox(fixture_project, "-s", "lint", "tests", "preflight", "--", "--only", "secrets")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "Session lint failed." in out
    assert "* lint: failed" in out and "* tests: failed" in out  # pytest rejects --only: exit 4
    assert "* preflight: success" in out, out  # the secrets check alone passes locally
    assert out.rstrip().splitlines()[-1].startswith("nox > * preflight")  # the summary ends the run


def test_a_secret_header_reaches_the_server_but_no_argv_log_or_artifact(
    fixture_project: Path, server: str
) -> None:
    artifact = fixture_project / "artifacts" / "perf-smoke.json"
    header = f"Authorization: Bearer {TOKEN}"
    argv = [sys.executable, "-m", "nox", "-f", str(fixture_project / "noxfile.py"), "--no-venv", "-s", "perf"]
    argv += ["--", "--base-url", server, "--chat-path", "/auth", "--duration", "2", "--rate", "20"]
    argv += ["--header", header]
    proc = subprocess.Popen(
        argv, cwd=fixture_project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: dict[int, list[str]] = {}
    nox_process = psutil.Process(proc.pid)
    own = nox_process.cmdline()  # a child between fork and exec still shows nox's own (user-typed) argv
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        # What nox started, as /proc/<pid>/cmdline shows it to anyone on the machine.
        for child in nox_process.children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if cmdline and cmdline != own:
                seen[child.pid] = cmdline
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out  # every request carried the right token (/auth answers 401 otherwise)
    children = [" ".join(cmdline) for cmdline in seen.values()]
    assert any("-m cfops perf" in line for line in children), "\n".join(children)  # the child was seen
    assert not [line for line in children if TOKEN in line]
    assert "Authorization: @env:CFOPS_SECRET_ARG_0" in out  # nox's log line names the reference only
    assert TOKEN not in out
    data = artifact.read_text()
    assert TOKEN not in data
    assert json.loads(data)["config"]["headers"] == {"Authorization": "***"}


def test_json_dash_prints_the_artifact_to_stdout_and_github_output(
    fixture_project: Path, server: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cfops", "perf", "--base-url", server, "--chat-path", "/auth", *JSON_DASH],
        cwd=fixture_project,
        env=clean_env(GITHUB_ACTIONS="true", IMMCAD_API_BEARER_TOKEN=TOKEN),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # stdout is the artifact and nothing else
    assert data["config"]["requests"] == 3 and data["verdict"]["passed"] is True
    assert not (fixture_project / "-").exists()
    assert not (fixture_project / "artifacts" / "perf-smoke.json").exists()
    # The token from the environment is masked for the rest of the job, the one place it is printed.
    assert f"::add-mask::{TOKEN}" in result.stderr.splitlines()

    bad = subprocess.run(
        [sys.executable, "-m", "cfops", "perf", "--requests", "x"],
        cwd=fixture_project,
        env=clean_env(GITHUB_ACTIONS="true"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "::error::--requests: expected an integer, got 'x'"


@pytest.mark.parametrize("how", ["ctrl-c", "nox killed"])
def test_a_session_stops_what_its_command_started(project: Path, how: str) -> None:
    """Ctrl-C reaches nox and the command (one process group): the command stops its backend. nox killed
    outright (SIGKILL: no handler runs): the command's parent-death signal stops it all the same."""
    _front_files(project)
    port = procs.free_port()
    port_args = ("--port", str(port))
    proc = subprocess.Popen(
        [
            *NOX,
            str(project / "noxfile.py"),
            "--no-venv",
            "-s",
            "dev",
            "--",
            "--runtime",
            "uvicorn",
            *port_args,
        ],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives it
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("-m cfops dev" in " ".join(c.cmdline()) for c in children)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
            proc.communicate(timeout=90)
        else:
            proc.kill()
            proc.communicate(timeout=30)
        _gone, alive = psutil.wait_procs(children, timeout=30)
        assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
