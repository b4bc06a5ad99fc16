from __future__ import annotations

from pathlib import Path

import pytest

from cfops.argv import is_sensitive
from cfops.config import is_secret_name, load_settings
from cfops.errors import ConfigError, UsageError


def write_pyproject(root: Path, body: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.cfops]\n" + body)


def test_defaults_then_table_then_dotenv_then_environment(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.cfops.dev]\nport = 9000\nhost = '127.0.0.2'\n")
    assert load_settings(tmp_path, {}).dev.port == 9000
    assert load_settings(tmp_path, {}).dev.runtime == "auto"  # default untouched
    (tmp_path / ".env").write_text("CFOPS_DEV_PORT=9100\n")
    assert load_settings(tmp_path, {}).dev.port == 9100
    assert load_settings(tmp_path, {"CFOPS_DEV_PORT": "9200"}).dev.port == 9200
    assert load_settings(tmp_path, {}).dev.host == "127.0.0.2"


def test_paths_are_resolved_against_the_project_root(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "worker_dir = 'workers'\n[tool.cfops.sync.map]\n'a' = 'workers/a'\n")
    settings = load_settings(tmp_path, {})
    assert settings.worker_dir == tmp_path.resolve() / "workers"
    assert settings.artifacts_dir == tmp_path.resolve() / "artifacts"
    assert settings.native.config == tmp_path.resolve() / "backend-cloudflare/wrangler.toml"
    (entry,) = settings.sync.map
    assert entry.source == tmp_path.resolve() / "a"
    assert entry.dest == tmp_path.resolve() / "workers/a"


@pytest.mark.parametrize(
    ("body", "environ", "message"),
    [
        ("portt = 1\n", {}, "unknown setting [tool.cfops].portt"),
        ("[tool.cfops.dev]\nprot = 1\n", {}, "unknown setting [tool.cfops.dev].prot"),
        ("[tool.cfops.dev]\nport = 'abc'\n", {}, "[tool.cfops.dev].port: expected an integer"),
        ("", {"CFOPS_DEV_PORT": "abc"}, "CFOPS_DEV_PORT: expected an integer, got 'abc'"),
        (
            "",
            {"CFOPS_DEV_RUNTIME": "docker"},
            "CFOPS_DEV_RUNTIME: 'docker' is not one of auto, uvicorn, pywrangler",
        ),
        ("[tool.cfops.sync]\nmap = 3\n", {}, "map must be a non-empty table"),
    ],
)
def test_bad_settings_are_config_errors(
    tmp_path: Path, body: str, environ: dict[str, str], message: str
) -> None:
    write_pyproject(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_malformed_pyproject_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.cfops\nx = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path, {})


def test_root_is_found_from_a_subdirectory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pyproject(tmp_path, "")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "deep" / "er")
    assert load_settings(None, {}).root == tmp_path.resolve()


def test_no_project_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"no pyproject.toml with a \[tool.cfops\] table"):
        load_settings(None, {})


def test_secret_values_stay_out_of_the_settings_repr(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "")
    settings = load_settings(tmp_path, {"IMMCAD_API_BEARER_TOKEN": "s3cr3t-token-value"})
    assert settings.env["IMMCAD_API_BEARER_TOKEN"] == "s3cr3t-token-value"
    assert "s3cr3t-token-value" not in repr(settings)


def test_generic_compat_variables_only_bind_the_command_that_uses_them(tmp_path: Path) -> None:
    """REQUESTS=abc in someone's shell must not break `nox -s sync`; perf still rejects it."""
    from cfops.config import with_deferred_env

    write_pyproject(tmp_path, "")
    settings = load_settings(tmp_path, {"REQUESTS": "abc", "CONCURRENCY": "7"})
    assert settings.perf.requests == 20  # not applied at load time
    assert with_deferred_env(settings.perf, load_settings(tmp_path, {"CONCURRENCY": "7"})).concurrency == 7
    with pytest.raises(ConfigError, match="REQUESTS: expected an integer, got 'abc'"):
        with_deferred_env(settings.perf, settings)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("CLOUDFLARE_API_TOKEN", True),
        ("MY_service_key", True),
        ("DB_PASSWORD", True),
        ("SOME_CREDENTIALS_FILE", True),
        ("CLIENT_SECRET", True),
        ("ENVIRONMENT", False),
        ("PYTHON_IMAGE", False),
    ],
)
def test_a_secret_name_is_one_the_argv_hand_off_hides_too(tmp_path: Path, name: str, secret: bool) -> None:
    """One list of the words that mark a secret (cfops.argv): settings and the argv hand-off agree."""
    write_pyproject(tmp_path, "")
    settings = load_settings(tmp_path, {})
    assert is_secret_name(settings, name) is secret
    assert is_sensitive(name) is secret
