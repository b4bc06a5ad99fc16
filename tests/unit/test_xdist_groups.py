"""`--dist loadgroup` really keeps an xdist_group on one worker (the suite relies on it: one wrangler dev
per proxy config, one build of each image). pytest 9.2 broke it silently with pytest-xdist 3.8."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import clean_env

GROUPED = textwrap.dedent(
    """
    import os
    import pytest

    pytestmark = pytest.mark.xdist_group("shared")

    @pytest.mark.parametrize("i", range(6))
    def test_worker(i):
        with open(os.environ["WORKERS_FILE"], "a") as handle:
            handle.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
    """
)


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text(GROUPED)
    (tmp_path / "test_free.py").write_text("def test_free():\n    pass\n")
    workers = tmp_path / "workers.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"],
        cwd=tmp_path,
        env=clean_env(WORKERS_FILE=str(workers)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen = workers.read_text().split()
    assert len(seen) == 12 and len(set(seen)) == 1, seen
