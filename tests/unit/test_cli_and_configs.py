from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from cfops import cli, dev
from cfops.errors import ConfigError
from cfops.wrangler import config_vars, read_config


def test_bad_flag_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def entry(argv: Sequence[str]) -> int:
        parser = cli.parser("demo", "Demo.")
        parser.add_argument("--runtime", choices=["uvicorn", "pywrangler"])
        parser.parse_args(argv)
        return 0

    assert cli.main(entry, ["--runtime", "docker"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "invalid choice: 'docker'" in err
    assert err.startswith("error: cfops demo:")


def test_keyboard_interrupt_is_130(capsys: pytest.CaptureFixture[str]) -> None:
    def entry(argv: Sequence[str]) -> int:
        raise KeyboardInterrupt

    assert cli.main(entry, []) == 130
    assert "interrupted" in capsys.readouterr().err


def test_jsonc_with_comments_and_trailing_commas(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonc"
    path.write_text('{\n  // the name\n  "name": "x", /* block */\n  "vars": {"A": "1", "B": 2,},\n}\n')
    config = read_config(path)
    assert config["name"] == "x"
    assert config_vars(config, path) == {"A": "1", "B": "2"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("wrangler.toml", 'name = "x"\n[vars\nA = 1\n', "is not valid TOML"),
        ("w.jsonc", '{"name": "x",, }', "is not valid JSONC"),
        ("w.jsonc", "[1, 2]", "top level must be a table"),
    ],
)
def test_malformed_configs(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_config(path)


def test_dev_bindings_layering(project: Path) -> None:
    from cfops.config import load_settings

    (project / "backend-cloudflare/.dev.vars").write_text(
        "IMMCAD_API_BEARER_TOKEN=dev-secret-token\nENVIRONMENT=ci\n"
    )
    settings = load_settings(project, {})
    bindings = dev.dev_bindings(settings, {"EXTRA": "1"})
    assert bindings["IMMCAD_SERVICE_NAME"] == "immcad-api"  # from wrangler.toml [vars]
    assert bindings["IMMCAD_ENVIRONMENT"] == "development"  # [tool.cfops.dev] vars over wrangler.toml
    assert bindings["ENVIRONMENT"] == "ci"  # .dev.vars over both
    assert bindings["EXTRA"] == "1"
    from cfops import output

    assert output.redact("token=dev-secret-token") == "token=***"
