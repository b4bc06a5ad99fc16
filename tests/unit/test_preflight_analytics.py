"""Preflight check "analytics": wrangler.toml, [tool.cfops.analytics] and the Worker's code agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.preflight_fixtures import Run, make_project, run_preflight


@pytest.fixture
def pf_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def _run(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    run = run_preflight(project, monkeypatch, capsys, "--only", "analytics")
    assert "Traceback" not in run.text
    return run


def test_this_projects_names_agree(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(pf_project, monkeypatch, capsys)
    assert run.code == 0, run.text
    assert run.finding("analytics")["message"] == (
        "binding IMMCAD_ANALYTICS → dataset immcad_requests, version metadata CF_VERSION_METADATA"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('dataset = "immcad_requests"', 'dataset = "other_requests"', "writes dataset 'other_requests'"),
        (
            'binding = "IMMCAD_ANALYTICS"',
            'binding = "STATS"',
            "no [[analytics_engine_datasets]] with binding",
        ),
        ('binding = "CF_VERSION_METADATA"', 'binding = "VERSION"', "differs from the one the Worker reads"),
        ('[version_metadata]\nbinding = "CF_VERSION_METADATA"\n', "", "no [version_metadata] binding"),
    ],
)
def test_a_disagreeing_wrangler_toml_fails(
    pf_project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    expected: str,
) -> None:
    config = pf_project / "backend-cloudflare/wrangler.toml"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    run = _run(pf_project, monkeypatch, capsys)
    assert run.code == 1
    assert expected in run.finding("analytics")["message"]


def test_pyproject_binding_must_match_the_workers_code(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (pf_project / "pyproject.toml", pf_project / "backend-cloudflare/wrangler.toml"):
        path.write_text(path.read_text().replace('binding = "IMMCAD_ANALYTICS"', 'binding = "STATS"'))
    run = _run(pf_project, monkeypatch, capsys)
    assert run.code == 1
    assert (
        "differs from the Worker's code (immcad_api.analytics.BINDING = 'IMMCAD_ANALYTICS')"
        in (run.finding("analytics")["message"])
    )
