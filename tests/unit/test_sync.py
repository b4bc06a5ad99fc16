from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cfops import cli, sync
from cfops.config import load_settings
from cfops.errors import CfopsError, ConfigError


def settings_for(project: Path):  # type: ignore[no-untyped-def]
    return load_settings(project, {})


def bundle(project: Path) -> Path:
    return project / "backend-cloudflare"


def test_sync_copies_the_map_and_writes_a_manifest(project: Path) -> None:
    (project / "src/immcad_api/__pycache__").mkdir()
    (project / "src/immcad_api/__pycache__/main.cpython-311.pyc").write_bytes(b"x")
    (project / "src/immcad_api/stale.pyc").write_bytes(b"x")
    result = sync.sync(settings_for(project))
    assert (bundle(project) / "src/immcad_api/main.py").read_bytes() == (
        project / "src/immcad_api/main.py"
    ).read_bytes()
    assert (bundle(project) / "src/config/source_policy.yaml").is_file()
    assert (bundle(project) / "src/data/sources/canada-immigration/registry.json").is_file()
    assert not list(bundle(project).rglob("*.pyc"))
    assert not list(bundle(project).rglob("__pycache__"))
    manifest = json.loads((bundle(project) / "sync-manifest.json").read_text())
    assert manifest["files"]["src/immcad_api/main.py"] == sync.sha256_file(project / "src/immcad_api/main.py")
    assert len(manifest["files"]) == result.files
    # hand-written Worker files next to the synced ones are not touched
    assert (bundle(project) / "src/entry.py").is_file()
    assert sync.check(settings_for(project)).clean


def test_sync_deletes_stale_files(project: Path) -> None:
    settings = settings_for(project)
    sync.sync(settings)
    stale = bundle(project) / "src/immcad_api/removed_module.py"
    stale.write_text("old = True\n")
    (bundle(project) / "src/data/old").mkdir()
    (bundle(project) / "src/data/old/file.json").write_text("{}")
    result = sync.sync(settings)
    assert not stale.exists()
    assert not (bundle(project) / "src/data/old").exists()
    assert "backend-cloudflare/src/immcad_api/removed_module.py" in result.drift.extra


def test_check_lists_every_missing_extra_and_changed_file(project: Path) -> None:
    settings = settings_for(project)
    sync.sync(settings)
    (bundle(project) / "src/immcad_api/resources.py").unlink()
    (bundle(project) / "src/immcad_api/extra.py").write_text("x = 1\n")
    (project / "src/immcad_api/main.py").write_text("# edited\n")
    drift = sync.check(settings)
    assert drift.missing == ["backend-cloudflare/src/immcad_api/resources.py"]
    assert drift.extra == ["backend-cloudflare/src/immcad_api/extra.py"]
    assert "backend-cloudflare/src/immcad_api/main.py" in drift.changed
    assert "backend-cloudflare/sync-manifest.json" in drift.changed


def test_check_command_exits_1_and_writes_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CFOPS_ROOT", str(project))
    assert cli.main(sync.main, ["--check"]) == 1
    out, err = capsys.readouterr()
    assert "missing: backend-cloudflare/src/immcad_api/main.py" in out
    assert "missing: backend-cloudflare/sync-manifest.json" in out
    assert "run cfops sync" in err
    assert not (bundle(project) / "src/immcad_api").exists()
    assert cli.main(sync.main, []) == 0
    assert cli.main(sync.main, ["--check"]) == 0


def test_failure_mid_copy_keeps_the_previous_bundle(project: Path) -> None:
    settings = settings_for(project)
    sync.sync(settings)
    before = {p: p.read_bytes() for p in bundle(project).rglob("*") if p.is_file()}
    (project / "src/immcad_api/main.py").write_text("# a new version that must not half-land\n")
    copied: list[Path] = []

    def flaky_copy(src: Path, dst: Path) -> None:
        if len(copied) == 3:
            raise OSError(28, "No space left on device")
        shutil.copy2(src, dst)
        copied.append(dst)

    with pytest.raises(CfopsError, match="previous bundle is unchanged"):
        sync.sync(settings, copy=flaky_copy)
    after = {p: p.read_bytes() for p in bundle(project).rglob("*") if p.is_file()}
    assert after == before
    assert not list(bundle(project).glob(".sync-*"))


def test_failure_during_swap_restores_what_was_moved(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(project)
    sync.sync(settings)
    before = {p: p.read_bytes() for p in bundle(project).rglob("*") if p.is_file()}
    (project / "config/source_policy.yaml").write_text("version: 2\n")
    real_rename = Path.rename
    calls = {"n": 0}

    def failing_rename(self: Path, target: Path) -> Path:
        calls["n"] += 1
        if calls["n"] == 4:  # after the first destination was swapped in and the second moved aside
            raise OSError(5, "I/O error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(CfopsError, match="previous bundle is unchanged"):
        sync.sync(settings)
    monkeypatch.undo()
    after = {p: p.read_bytes() for p in bundle(project).rglob("*") if p.is_file()}
    assert after == before


def test_missing_source_is_exit_2_and_touches_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sync.sync(settings_for(project))
    before = sorted(p for p in bundle(project).rglob("*"))
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('"data" = ', '"dataz" = '))
    monkeypatch.setenv("CFOPS_ROOT", str(project))
    assert cli.main(sync.main, []) == 2
    err = capsys.readouterr().err
    assert "sync map source does not exist: dataz" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p for p in bundle(project).rglob("*")) == before


def test_destination_outside_the_worker_dir_is_refused(project: Path) -> None:
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text.replace('"backend-cloudflare/src/data"', '"elsewhere/data"'))
    with pytest.raises(ConfigError, match="must be inside backend-cloudflare"):
        sync.sync(settings_for(project))


def test_leftovers_of_a_killed_sync_are_cleared(project: Path) -> None:
    leftover = bundle(project) / ".sync-staging-deadbeef" / "src"
    leftover.mkdir(parents=True)
    sync.sync(settings_for(project))
    assert not leftover.parent.exists()


def test_vendor_says_why_it_cannot_and_keeps_the_sync(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Vendoring needs pywrangler and the internet; without them the sync still lands, with a warning."""
    monkeypatch.setenv("CFOPS_ROOT", str(project))
    monkeypatch.setattr(sync, "pywrangler_problem", lambda settings: "cannot reach index.pyodide.org:443")
    assert cli.main(sync.main, ["--vendor"]) == 0
    err = capsys.readouterr().err
    assert "Python packages not vendored: cannot reach index.pyodide.org:443" in err
    assert sync.check(settings_for(project)).clean
    assert cli.main(sync.main, ["--check", "--vendor"]) == 2
