"""The import layers: tasks.py -> noxfile.py -> cfops commands -> cfops plumbing -> cfops core.

Inside the packages import-linter checks them ([tool.importlinter] in pyproject.toml, run by
`nox -s lint`); here: that its contracts really fail on a cycle, an upward import and an app that imports
the tooling, and the two files import-linter cannot see (tasks.py and noxfile.py are not packages).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# What the front files may import from cfops: cfops.argv (stdlib only: the hand-off of secret arguments
# to the environment, used before any project environment exists), nothing of a command's internals.
ALLOWED = {
    "noxfile.py": {"cfops.argv"},
    "tasks.py": {"cfops.argv"},
}


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from cfops import deploy` imports the module cfops.deploy
            found.update(f"{node.module}.{alias.name}" for alias in node.names if node.module == "cfops")
    return found


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_the_front_files_import_only_the_public_surface(name: str) -> None:
    imported = _imported_modules(ROOT / name)
    ours = {m for m in imported if m == "cfops" or m.startswith(("cfops.", "immcad_api"))}
    assert ours <= ALLOWED[name], f"{name} imports {sorted(ours - ALLOWED[name])}"
    assert "noxfile" not in imported  # tasks.py runs nox; neither file imports the other
    assert "tasks" not in imported


def test_no_package_module_imports_the_front_files() -> None:
    for path in sorted((ROOT / "src").rglob("*.py")):
        imported = _imported_modules(path)
        assert not {"noxfile", "tasks"} & imported, f"{path.relative_to(ROOT)} imports a front file"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (the dev extra)")
def test_the_contracts_fail_on_a_cycle_an_upward_import_and_an_app_importing_cfops(tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    kept = _lint_imports(copy)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    def append(module: str, line: str) -> None:
        path = copy / "src" / module
        path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")

    append("cfops/sync.py", "from cfops import dev  # noqa: E402")  # dev imports sync: a cycle
    append("cfops/procs.py", "from cfops import deploy  # noqa: E402")  # core importing a command
    append("immcad_api/main.py", "import cfops.output  # noqa: E402")  # the app importing the tooling
    broken = _lint_imports(copy)
    text = broken.stdout + broken.stderr
    assert broken.returncode == 1, text
    # The three contracts each fail; a package's own layers contract may fail with them, because an upward
    # import from core closes a chain through it (cfops.config.cloud -> cfops.cloudflare -> cfops.procs ->
    # cfops.deploy -> cfops.config.load).
    assert re.search(r"Contracts: \d+ kept, \d+ broken\.", text), text
    for contract in ("cfops: entry point", "no import cycles", "immcad_api (the deployed backend)"):
        assert re.search(rf"^{re.escape(contract)}.* BROKEN$", text, re.MULTILINE), text
    assert "- .sync -> .dev (1 import)" in text, text  # the cycle, and the import that closes it
    assert "cfops.procs -> cfops.deploy" in text, text
    assert "immcad_api.main -> cfops.output" in text, text
