"""`npm ci` runs once when several cfops processes find the toolchain missing at the same time."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import clean_env, copy_project


def test_concurrent_processes_run_npm_ci_once(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", ("pyproject.toml", "backend-cloudflare/package.json"))
    (project / "backend-cloudflare/package-lock.json").write_text('{"lockfileVersion": 3}\n')
    # A stand-in npm (the real one would download 450 MB): it records each run and takes long enough
    # that the processes overlap.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "npm-calls"
    npm = bin_dir / "npm"
    npm.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "$*" >> {calls}
            sleep 1
            mkdir -p node_modules/.bin
            """
        )
    )
    npm.chmod(0o755)
    (bin_dir / "node").symlink_to(sys.executable)  # only looked up, never run here
    env = {**clean_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    code = (
        "import sys; from pathlib import Path; from cfops.config import load_settings; "
        "from cfops.wrangler import ensure_node_toolchain; "
        "print(ensure_node_toolchain(load_settings(Path(sys.argv[1]), {})))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(project)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60)[0].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert set(outputs) == {str(project / "backend-cloudflare/node_modules/.bin")}
    assert calls.read_text().splitlines() == ["ci --no-audit --no-fund"]


def test_cfops_toolchain_installs_once_and_the_cloudflare_sessions_run_it_at_install_time(
    tmp_path: Path,
) -> None:
    repo = Path(__file__).resolve().parents[2]
    pinned = repo / "backend-cloudflare/node_modules/.bin/node"
    if not pinned.exists():
        pytest.skip("the pinned Node is not installed in this checkout (npm ci in backend-cloudflare)")
    project = copy_project(tmp_path / "project", ("pyproject.toml", "backend-cloudflare/package.json"))
    (project / "backend-cloudflare/package-lock.json").write_text('{"lockfileVersion": 3}\n')
    bin_dir, calls = tmp_path / "bin", tmp_path / "npm-calls"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nmkdir -p node_modules/wrangler\n')
    npm.chmod(0o755)
    env = clean_env(
        CFOPS_ROOT=str(project),
        CFOPS_NODE=str(pinned),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "cfops", "toolchain"], env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Node toolchain in backend-cloudflare/node_modules matches the lock" in proc.stdout
    assert calls.read_text().splitlines() == ["ci --no-audit --no-fund"]  # the second run found the marker
    # `nox -s release recover --install-only` (the deploy workflows' step without secrets) runs it.
    tree = ast.parse((repo / "noxfile.py").read_text())
    with_node = {
        func.name
        for func in tree.body
        if isinstance(func, ast.FunctionDef)
        for call in ast.walk(func)
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "install"
        if any(k.arg == "node" and ast.unparse(k.value) == "True" for k in call.keywords)
    }
    assert {"release", "recover", "deploy", "secrets", "promote", "rollback", "versions"} <= with_node
    install = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "install")
    assert 'session.run_install("python", "-m", "cfops", "toolchain")' in ast.unparse(install).replace(
        "'", '"'
    )
