"""docs/configuration.md is generated from the settings' metadata; a stale page fails here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cfops import cli, docs
from cfops.config import Settings

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_configuration_reference_is_current() -> None:
    page = (REPO / docs.PAGE).read_text(encoding="utf-8")
    assert page == docs.render(), "docs/configuration.md is stale: run `cfops docs` (or `nox -s docs`)"


def test_every_flag_and_env_var_of_the_settings_is_in_the_reference() -> None:
    text = docs.render()

    def walk(cls: type) -> None:
        for f in dataclasses.fields(cls):
            for name in (*f.metadata.get("env", ()), f.metadata.get("flag")):
                if name:
                    assert f"`{name}`" in text, name
            tp = cls.__dataclass_fields__[f.name].default_factory  # nested sections
            if callable(tp) and dataclasses.is_dataclass(section := tp()):
                walk(type(section))

    walk(Settings)


def test_check_mode_fails_on_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    (root / "docs").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.cfops]\n")
    (root / "docs" / "configuration.md").write_text("# old\n")
    monkeypatch.setenv("CFOPS_ROOT", str(root))
    assert cli.main(docs.main, ["--check"]) == 1
    assert cli.main(docs.main, []) == 0
    assert cli.main(docs.main, ["--check"]) == 0
