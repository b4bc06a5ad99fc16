"""`npm ci` runs once when several cfops processes find the toolchain missing at the same time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
