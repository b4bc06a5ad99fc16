from __future__ import annotations

import types

import pytest

from immcad_api.settings import Settings, SettingsError


def test_development_needs_no_token() -> None:
    settings = Settings.from_env({})
    assert settings.environment == "development"
    assert not settings.hardened
    assert settings.bearer_token is None


@pytest.mark.parametrize("environment", ["production", "prod", "ci", "PRODUCTION"])
def test_hardened_environment_refuses_without_token(environment: str) -> None:
    with pytest.raises(SettingsError, match=r"refusing to start.*requires IMMCAD_API_BEARER_TOKEN"):
        Settings.from_env({"ENVIRONMENT": environment})


def test_hardened_environment_accepts_either_token_name() -> None:
    assert (
        Settings.from_env({"ENVIRONMENT": "prod", "API_BEARER_TOKEN": "tok-123456"}).bearer_token
        == "tok-123456"
    )
    assert Settings.from_env({"ENVIRONMENT": "prod", "IMMCAD_API_BEARER_TOKEN": "tok-1"}).hardened


def test_differing_token_names_are_refused_without_echoing_values() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"IMMCAD_API_BEARER_TOKEN": "first-secret", "API_BEARER_TOKEN": "second-secret"})
    assert "differ" in str(info.value)
    assert "first-secret" not in str(info.value) and "second-secret" not in str(info.value)


def test_environment_names_must_agree() -> None:
    with pytest.raises(SettingsError, match="disagree"):
        Settings.from_env(
            {"ENVIRONMENT": "production", "IMMCAD_ENVIRONMENT": "development", "API_BEARER_TOKEN": "t"}
        )


def test_synthetic_citations_are_refused_in_production() -> None:
    env = {"ENVIRONMENT": "production", "API_BEARER_TOKEN": "t", "ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS": "true"}
    with pytest.raises(SettingsError, match="ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS"):
        Settings.from_env(env)


def test_repr_hides_the_token() -> None:
    assert "tok-secret" not in repr(Settings.from_env({"API_BEARER_TOKEN": "tok-secret"}))


def test_worker_binding_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The function entry.py calls copies string bindings by name and skips objects (KV, services)."""
    from tests.unit.bundle import load_bindings_module

    bindings = load_bindings_module()
    env = types.SimpleNamespace(ENVIRONMENT="ci", API_BEARER_TOKEN="tok-abc", REDIS_URL=object(), OTHER="x")
    target: dict[str, str] = {}
    copied = bindings.apply_env_bindings(env, target)
    assert target == {"ENVIRONMENT": "ci", "API_BEARER_TOKEN": "tok-abc"}
    assert copied == ["ENVIRONMENT", "API_BEARER_TOKEN"]
    assert bindings.apply_env_bindings({"ENVIRONMENT": "dev"}, target) == ["ENVIRONMENT"]
    assert Settings.from_env(target).environment == "dev"
