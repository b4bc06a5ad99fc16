"""The Python Cloudflare runs the native Worker on, and vendored packages built for another one.

The stand-in packages are real wheels built here (a zip with a .dist-info, tagged for a chosen Python)
and vendored the way an installer does it: unpacked into backend-cloudflare/python_modules/.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cfops import cloudflare, pyruntime, sync
from cfops.config import load_settings
from cfops.errors import CheckFailed, CommandFailed, UsageError
from tests.conftest import REPO, clean_env
from tests.preflight_fixtures import make_project, run_preflight


def build_wheel(dest: Path, name: str, version: str, tag: str, *, native_python: str | None = None) -> Path:
    """A minimal wheel ``name-version-tag.whl``; ``native_python`` adds a compiled module named for it."""
    files: dict[str, bytes] = {f"{name}/__init__.py": b"VALUE = 1\n"}
    if native_python:
        files[f"{name}/_speed.cpython-{native_python.replace('.', '')}-wasm32-emscripten.so"] = b"\0asm"
    dist = f"{name}-{version}.dist-info"
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{dist}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n".encode()
    )
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    wheel = dest / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return wheel


def vendor_wheel(wheel: Path, vendor: Path) -> None:
    """Install a wheel into a --target directory: unpack it (what pip/uv --target do for a wheel)."""
    vendor.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(vendor)


def set_date(project: Path, date: str, flags: str = '["python_workers"]') -> None:
    config = project / "backend-cloudflare/wrangler.toml"
    lines = config.read_text().splitlines()
    lines = [
        f'compatibility_date = "{date}"'
        if line.startswith("compatibility_date")
        else f"compatibility_flags = {flags}"
        if line.startswith("compatibility_flags")
        else line
        for line in lines
    ]
    config.write_text("\n".join(lines) + "\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


# ------------------------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("date", "flags", "python"),
    [
        ("2025-09-28", ["python_workers"], "3.12"),
        ("2025-09-29", ["python_workers"], "3.13"),
        ("2026-09-07", ["python_workers"], "3.13"),
        ("2026-09-08", ["python_workers"], "3.14"),
        ("2026-11-01", ["python_workers"], "3.14"),
        ("2025-01-20", ["python_workers", "python_workers_20250116"], "3.13"),  # a flag opts in early
        ("2025-01-20", ["python_workers", "python_workers_314"], "3.14"),
    ],
)
def test_runtime_python_by_date_and_flags(date: str, flags: list[str], python: str) -> None:
    found = cloudflare.python_workers_runtime(dt.date.fromisoformat(date), flags)
    assert found is not None and found[0] == python


def test_not_a_python_worker_without_the_flag() -> None:
    assert cloudflare.python_workers_runtime(dt.date(2026, 11, 1), ["nodejs_compat"]) is None


def test_dates_that_run_each_python() -> None:
    assert cloudflare.python_workers_dates("3.12") == "before 2025-09-29"
    assert cloudflare.python_workers_dates("3.13") == "from 2025-09-29 to 2026-09-07"
    assert cloudflare.python_workers_dates("3.14") == "from 2026-09-08"
    assert cloudflare.python_workers_dates("2.7") is None


def test_this_projects_worker_runs_python_314(project: Path) -> None:
    runtime = pyruntime.runtime_python(load_settings(project, {}), today=dt.date(2026, 12, 1))
    assert runtime.version == "3.14"
    assert runtime.reason == "compatibility_date 2026-11-01 >= 2026-09-08"


def test_a_future_compatibility_date_is_bad_input(project: Path) -> None:
    set_date(project, "2027-01-01")
    with pytest.raises(
        UsageError, match=r"compatibility_date 2027-01-01 is in the future .* Cloudflare rejects"
    ):
        pyruntime.runtime_python(load_settings(project, {}), today=dt.date(2026, 12, 1))


# ------------------------------------------------------------------------------ vendored packages


def test_wheel_tags_and_compiled_modules_name_their_python(tmp_path: Path) -> None:
    vendor = tmp_path / "python_modules"
    vendor_wheel(build_wheel(tmp_path, "purepkg", "1.0", "py3-none-any"), vendor)
    vendor_wheel(build_wheel(tmp_path, "fitpkg", "2.0", "cp314-cp314-pyodide_2026_0_wasm32"), vendor)
    vendor_wheel(build_wheel(tmp_path, "oldpkg", "3.1", "cp312-cp312-pyodide_2024_0_wasm32"), vendor)
    # tagged as if pure, but carrying a module compiled for 3.13
    vendor_wheel(build_wheel(tmp_path, "sneaky", "0.1", "py3-none-any", native_python="3.13"), vendor)
    stray = vendor / "loose/_mod.cpython-312-wasm32-emscripten.so"  # no .dist-info owns it
    stray.parent.mkdir()
    stray.write_bytes(b"\0asm")
    found = {m.package: m for m in pyruntime.vendored_mismatches(vendor, "3.14")}
    assert set(found) == {"oldpkg 3.1", "sneaky 0.1", "loose"}
    assert found["oldpkg 3.1"].built_for == "3.12"
    assert found["oldpkg 3.1"].evidence.endswith("WHEEL: Tag cp312-cp312-pyodide_2024_0_wasm32")
    assert found["sneaky 0.1"].built_for == "3.13"
    assert found["loose"].evidence == "python_modules/loose/_mod.cpython-312-wasm32-emscripten.so"
    assert pyruntime.vendored_mismatches(vendor / "missing", "3.14") == []


def test_a_stable_abi_wheel_fits_its_python_and_every_later_one(tmp_path: Path) -> None:
    vendor = tmp_path / "python_modules"
    vendor_wheel(build_wheel(tmp_path, "stable", "1.0", "cp313-abi3-pyodide_2025_0_wasm32"), vendor)
    assert pyruntime.vendored_mismatches(vendor, "3.13") == []
    assert pyruntime.vendored_mismatches(vendor, "3.14") == []
    (too_new,) = pyruntime.vendored_mismatches(vendor, "3.12")
    assert (too_new.package, too_new.built_for) == ("stable 1.0", "3.13")


def test_preflight_strict_fails_on_a_package_vendored_for_another_python(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    vendor = project / "backend-cloudflare/python_modules"
    vendor_wheel(build_wheel(tmp_path, "standin", "1.0", "cp312-cp312-pyodide_2024_0_wasm32"), vendor)
    vendor_wheel(build_wheel(tmp_path, "purepkg", "1.0", "py3-none-any"), vendor)

    loose = run_preflight(project, monkeypatch, capsys, "--only", "native-bundle")
    finding = loose.finding("native-bundle")
    assert loose.code == 0 and finding["status"] == "warn"
    assert finding["message"] == (
        "vendored for another Python than the runtime's 3.14 (compatibility_date 2026-11-01 >= 2026-09-08): "
        "standin 1.0 (Python 3.12): re-vendor with `nox -s sync -- --vendor`, or a compatibility_date "
        "before 2025-09-29 (Python 3.12)"
    )
    assert finding["measured"]["runtime_python"] == "3.14"
    assert finding["measured"]["vendored_python_mismatches"] == ["standin 1.0"]

    strict = run_preflight(project, monkeypatch, capsys, "--only", "native-bundle", "--strict")
    assert strict.code == 1
    assert "standin 1.0 (Python 3.12)" in strict.finding("native-bundle")["message"]
    assert "Traceback" not in strict.text

    # Re-vendored for the runtime's Python: the same check passes.
    for path in vendor.glob("standin*"):
        shutil.rmtree(path)
    vendor_wheel(build_wheel(tmp_path, "standin", "1.1", "cp314-cp314-pyodide_2026_0_wasm32"), vendor)
    fixed = run_preflight(project, monkeypatch, capsys, "--only", "native-bundle", "--strict")
    assert fixed.code == 0, fixed.text


# ------------------------------------------------------------------------------------ sync --vendor


@pytest.fixture
def reachable() -> Iterator[str]:
    """A listening socket on 127.0.0.1 standing in for the Pyodide host pywrangler's probe asks for."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def fake_pywrangler(bin_dir: Path, script: str) -> None:
    """pywrangler (needs the internet) and uv stand-ins on PATH: the subject is what cfops does around."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pywrangler").write_text(f"#!{sys.executable}\n{script}")
    (bin_dir / "uv").write_text("#!/bin/sh\nexit 0\n")
    for name in ("pywrangler", "uv"):
        (bin_dir / name).chmod(0o755)


def vendor_settings(project: Path, probe: str, bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pyproject = project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'pywrangler_probe = ["index.pyodide.org:443"]', f'pywrangler_probe = ["{probe}"]'
        )
    )
    monkeypatch.setattr(sync, "toolchain_env", lambda settings: {})  # no npm ci: pywrangler is a stand-in
    return load_settings(project, {})


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("outcome", ["wrong-python", "crash"])
def test_failed_vendoring_puts_the_previous_packages_back(
    project: Path, tmp_path: Path, reachable: str, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    vendor = project / "backend-cloudflare/python_modules"
    vendor_wheel(build_wheel(tmp_path, "goodpkg", "1.0", "cp314-cp314-pyodide_2026_0_wasm32"), vendor)
    before = snapshot(vendor)
    wrong = build_wheel(tmp_path, "newpkg", "2.0", "cp312-cp312-pyodide_2024_0_wasm32")
    # Like pywrangler: remove python_modules/, then fill it (here with a wheel for the wrong Python).
    fake_pywrangler(
        tmp_path / "bin",
        "import shutil, sys, zipfile\n"
        "shutil.rmtree('python_modules')\n"
        f"zipfile.ZipFile({str(wrong)!r}).extractall('python_modules')\n"
        f"sys.exit({1 if outcome == 'crash' else 0})\n",
    )
    settings = vendor_settings(project, reachable, tmp_path / "bin", monkeypatch)
    expected = CommandFailed if outcome == "crash" else CheckFailed
    with pytest.raises(expected) as failure:
        sync.vendor(settings)  # type: ignore[arg-type]
    if outcome == "wrong-python":
        assert "newpkg 2.0 (Python 3.12)" in str(failure.value)
    assert snapshot(vendor) == before
    assert not (project / "backend-cloudflare/.python_modules.cfops-previous").exists()


def test_vendoring_for_the_runtimes_python_replaces_the_packages(
    project: Path, tmp_path: Path, reachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = project / "backend-cloudflare/python_modules"
    vendor_wheel(build_wheel(tmp_path, "oldpkg", "1.0", "cp312-cp312-pyodide_2024_0_wasm32"), vendor)
    good = build_wheel(tmp_path, "newpkg", "2.0", "cp314-cp314-pyodide_2026_0_wasm32")
    fake_pywrangler(
        tmp_path / "bin",
        "import shutil, zipfile\n"
        "shutil.rmtree('python_modules')\n"
        f"zipfile.ZipFile({str(good)!r}).extractall('python_modules')\n",
    )
    settings = vendor_settings(project, reachable, tmp_path / "bin", monkeypatch)
    assert sync.vendor(settings) is None  # type: ignore[arg-type]
    assert sorted(p.name for p in vendor.glob("*.dist-info")) == ["newpkg-2.0.dist-info"]
    assert not (project / "backend-cloudflare/.python_modules.cfops-previous").exists()


def test_vendoring_with_a_future_date_touches_nothing(
    project: Path, tmp_path: Path, reachable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = project / "backend-cloudflare/python_modules"
    vendor_wheel(build_wheel(tmp_path, "goodpkg", "1.0", "cp314-cp314-pyodide_2026_0_wasm32"), vendor)
    before = snapshot(vendor)
    fake_pywrangler(tmp_path / "bin", "raise SystemExit('must not run')\n")
    set_date(project, (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)).isoformat())
    settings = vendor_settings(project, reachable, tmp_path / "bin", monkeypatch)
    with pytest.raises(UsageError, match="in the future"):
        sync.vendor(settings)  # type: ignore[arg-type]
    assert snapshot(vendor) == before


# ---------------------------------------------------------------------------------------- CFOPS_NODE


def _node_stand_in(path: Path, version: str) -> Path:
    """Answers --version like Node; wrangler never starts on it (cfops refuses it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho v{version}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("version", "message"),
    [
        (
            "20.20.2",
            "Node v20.20.2 from CFOPS_NODE is older than wrangler needs (>= 22.12.0): point CFOPS_NODE at a "
            "Node >= 22.12.0 or unset it to use the pinned one",
        ),
        (None, "CFOPS_NODE points at"),  # not a file at all
    ],
)
def test_an_unusable_cfops_node_is_one_line_and_exit_2(
    node_modules: Path, tmp_path: Path, version: str | None, message: str
) -> None:
    node = tmp_path / "old/bin/node"
    if version:
        _node_stand_in(node, version)
    proc = subprocess.run(
        [sys.executable, "-m", "cfops", "tscheck"],
        cwd=REPO,
        env=clean_env(CFOPS_NODE=str(node), CFOPS_ROOT=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
