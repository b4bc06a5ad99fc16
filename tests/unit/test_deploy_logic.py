"""Pure logic of deploys, versions and secrets: origins, runners, events, advice, rollback targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfops import output
from cfops.cloudflare import advice_for
from cfops.config import load_settings
from cfops.deploy import (
    Deployment,
    backend_origin,
    choose_runner,
    default_rollback_version,
    split_traffic,
    target,
    write_artifact,
)
from cfops.deploy import plan as deploy_plan
from cfops.errors import ConfigError, MissingToolError, UsageError
from cfops.secrets import plan, skip_reason
from cfops.wrangler import WranglerRun, parse_events, require_credentials, wrangler_env

V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
V3 = "33333333-3333-4333-8333-333333333333"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://api.example.com", "https://api.example.com"),
        ("  https://API.example.com/ ", "https://api.example.com"),
        ("https://api.example.com:8443", "https://api.example.com:8443"),
        ("https://10.0.0.5", "https://10.0.0.5"),
        ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
    ],
)
def test_backend_origin_accepts_https_origins(raw: str, expected: str) -> None:
    assert backend_origin(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "IMMCAD_BACKEND_ORIGIN (or BACKEND_ORIGIN) is not set"),
        ("http://api.example.com", "must be an https:// URL"),
        ("api.example.com", "must be an https:// URL"),
        ("https://api.example.com/v1", "without path or query"),
        ("https://api.example.com/?a=1", "without path or query"),
        ("https://", "has no valid host name"),
        ("https://exa mple.com", "has no valid host name"),
        ("https://[::zz]", "not a valid URL"),
        ("https://api.example.com:99999", "not a valid URL"),
    ],
)
def test_backend_origin_rejects_anything_else(raw: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        backend_origin(raw)
    assert info.value.exit_code == 2


def test_backend_origin_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(UsageError) as info:
        backend_origin("https://admin:hunter2-password@api.example.com")
    assert "hunter2-password" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "unset"),
        ("", "empty"),
        ("   ", "empty"),
        ("your-gemini-api-key", "placeholder"),
        ("YOUR_TOKEN", "placeholder"),
        ("changeme", "placeholder"),
        ("replace-with-a-token", "placeholder"),
        ("placeholder", "placeholder"),
        ("<token>", "placeholder"),
        ("todo", "placeholder"),
        (" TODO ", "placeholder"),
        ("xxxxxxxx", "placeholder"),
        ("tok-1234", None),
        ("redis://user:pw@cache:6379/0", None),
    ],
)
def test_skip_reason(value: str | None, reason: str | None, tmp_path: Path) -> None:
    assert skip_reason(load_settings(_root(tmp_path), {}), value) == reason


def test_a_todo_placeholder_is_never_pushed(tmp_path: Path) -> None:
    """What preflight flags as a placeholder ("todo" among them), secrets sync does not push."""
    settings = load_settings(
        _root(tmp_path), {"IMMCAD_API_BEARER_TOKEN": "todo", "GEMINI_API_KEY": "g-real-1"}
    )
    result = plan(settings)
    assert "IMMCAD_API_BEARER_TOKEN" not in result.values
    assert result.skipped["IMMCAD_API_BEARER_TOKEN"] == "placeholder"
    assert result.values == {"GEMINI_API_KEY": "g-real-1"}


def test_secrets_plan_names_what_it_skips_and_refuses_differing_bearer_aliases(tmp_path: Path) -> None:
    settings = load_settings(
        _root(tmp_path), {"IMMCAD_API_BEARER_TOKEN": "tok-aaaa", "GEMINI_API_KEY": "your-key"}
    )
    result = plan(settings)
    assert result.values == {"IMMCAD_API_BEARER_TOKEN": "tok-aaaa"}
    assert result.skipped == {
        "API_BEARER_TOKEN": "unset",
        "GEMINI_API_KEY": "placeholder",
        "CANLII_API_KEY": "unset",
        "REDIS_URL": "unset",
    }
    assert "tok-aaaa" not in repr(result)
    same = plan(
        load_settings(_root(tmp_path), {"IMMCAD_API_BEARER_TOKEN": "tok-a", "API_BEARER_TOKEN": "tok-a"})
    )
    assert same.names == ("IMMCAD_API_BEARER_TOKEN", "API_BEARER_TOKEN")
    # a placeholder alias does not count as a second token
    plan(load_settings(_root(tmp_path), {"IMMCAD_API_BEARER_TOKEN": "tok-a", "API_BEARER_TOKEN": "changeme"}))
    with pytest.raises(UsageError, match="both set and differ") as info:
        plan(
            load_settings(
                _root(tmp_path), {"IMMCAD_API_BEARER_TOKEN": "tok-a1", "API_BEARER_TOKEN": "tok-b2"}
            )
        )
    assert "tok-a1" not in str(info.value) and "tok-b2" not in str(info.value)


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "p"
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text("[tool.cfops]\n")
    return root


def test_deploy_settings_layering(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "pyproject.toml").write_text("[tool.cfops.deploy]\nnative_runner = 'wrangler'\ntimeout = 60\n")
    settings = load_settings(
        root, {"BACKEND_ORIGIN": "https://b.example", "IMMCAD_BACKEND_ORIGIN": "https://a.example"}
    )
    assert settings.deploy.backend_origin == "https://a.example"  # IMMCAD_ wins
    assert settings.deploy.native_runner == "wrangler" and settings.deploy.timeout == 60
    with pytest.raises(ConfigError, match="CFOPS_NATIVE_RUNNER"):
        load_settings(root, {"CFOPS_NATIVE_RUNNER": "npx"})


def test_require_credentials_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID not set") as info:
        require_credentials(load_settings(_root(tmp_path), {}), "deploying x")
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match=r"^CLOUDFLARE_ACCOUNT_ID not set"):
        require_credentials(load_settings(_root(tmp_path), {"CLOUDFLARE_API_TOKEN": "t"}), "deploying x")
    require_credentials(
        load_settings(_root(tmp_path), {"CLOUDFLARE_API_TOKEN": "t", "CLOUDFLARE_ACCOUNT_ID": "a"}), "x"
    )


def test_wrangler_env_takes_credentials_from_dotenv_and_drops_them_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_KEY", "legacy-global-key")
    root = _root(tmp_path)
    (root / ".env").write_text("CLOUDFLARE_API_TOKEN=from-dotenv\nCLOUDFLARE_ACCOUNT_ID=acc\n")
    settings = load_settings(root, {})
    online = wrangler_env(settings, offline=False)
    assert online["CLOUDFLARE_API_TOKEN"] == "from-dotenv" and online["CLOUDFLARE_ACCOUNT_ID"] == "acc"
    assert online["WRANGLER_SEND_METRICS"] == "false" and online["WRANGLER_HIDE_BANNER"] == "true"
    offline = wrangler_env(settings, offline=True)
    assert not {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_KEY"} & set(offline)


def _run(events: list[dict[str, object]], returncode: int = 1, stderr: str = "") -> WranglerRun:
    return WranglerRun(
        command=("wrangler", "deploy", "--config", "wrangler.toml"),
        returncode=returncode,
        events=tuple(events),
        stdout="",
        stderr=stderr,
        duration=1.0,
    )


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (10027, "cfops preflight"),
        (10021, "move imports and heavy work out of global scope"),
        (10214, "versions secret bulk"),
        (10215, "versions secret bulk"),
        (10000, "token"),
        (9109, "scopes"),
    ],
)
def test_cloudflare_error_codes_become_advice(code: int, advice: str) -> None:
    assert advice in (advice_for(code) or "")
    failure = _run(
        [{"type": "command-failed", "code": code, "message": "A request to the Cloudflare API failed."}]
    )
    error = failure.failure()
    assert error.code == code and error.exit_code == 1
    assert str(error).startswith(
        f"wrangler deploy failed (Cloudflare error {code}): A request to the Cloudflare API"
    )
    assert advice in str(error) and "\n" not in str(error)


def test_failure_without_event_uses_the_error_line_of_output_and_redacts_it() -> None:
    output.add_secrets(["s3cr3t-value"])
    stderr = "\x1b[31mX [ERROR]\x1b[0m something broke with s3cr3t-value\n\nLogs were written to /tmp/x.log\n"
    error = _run([], stderr=stderr).failure()
    assert error.code is None and advice_for(None) is None
    assert str(error) == "wrangler deploy failed: something broke with ***"


def test_failure_without_event_or_error_line_uses_the_last_line_of_output() -> None:
    error = _run([], stderr="starting\nsegmentation fault\n").failure()
    assert str(error) == "wrangler deploy failed: segmentation fault"


def test_parse_events_reads_nd_json_and_skips_garbage() -> None:
    text = "\n".join(
        [
            json.dumps({"type": "wrangler-session", "version": 1}),
            "not json",
            json.dumps({"type": "deploy", "version_id": V1, "targets": ["https://x.workers.dev"]}),
            json.dumps({"type": "deploy", "version_id": V2}),
            "[1, 2]",
        ]
    )
    run = _run(list(parse_events(text)), returncode=0)
    assert [e["type"] for e in run.events] == ["wrangler-session", "deploy", "deploy"]
    assert run.event("deploy") == {"type": "deploy", "version_id": V2}  # the last one
    assert run.event("version-upload") is None and run.error_code is None


def _deployment(day: int, traffic: dict[str, float]) -> Deployment:
    return Deployment(id=f"d{day}", created_on=f"2026-01-{day:02d}T00:00:00Z", traffic=traffic)


def test_default_rollback_version_is_the_last_stable_one_before_the_current_deployment() -> None:
    history = [
        _deployment(1, {V1: 100}),
        _deployment(2, {V2: 100}),
        _deployment(3, {V3: 10, V2: 90}),
        _deployment(4, {V3: 100}),
    ]
    assert default_rollback_version(history) == V2  # skips the current (V3@100) and the split
    assert default_rollback_version(list(reversed(history))) == V2  # order of the input does not matter
    assert default_rollback_version(history[:3]) == V2
    with pytest.raises(UsageError, match="pass --version"):
        default_rollback_version([_deployment(1, {V1: 100})])
    assert _deployment(3, {V3: 10, V2: 90}).primary_version == V2


def test_split_traffic() -> None:
    assert split_traffic(V2, V1, 10) == {V2: 10.0, V1: 90.0}
    assert split_traffic(V2, V1, 100) == {V2: 100.0}
    assert split_traffic(V2, None, 100) == {V2: 100.0}
    assert split_traffic(V2, V1, 0) == {V2: 0.0, V1: 100.0}  # the canary's version stays deployed
    for new, old, share, message in [
        (V2, V1, 101, "between 0 and 100"),
        (V2, V2, 50, "must differ"),
        (V2, None, 50, "needs the old version"),
        ("latest", V1, 50, "is not a version id"),
    ]:
        with pytest.raises(UsageError, match=message):
            split_traffic(new, old, share)


def test_target_checks_the_worker_name_against_its_config(project: Path) -> None:
    settings = load_settings(project, {})
    assert target(settings, "native").name == "immcad-backend-native-python"
    config = project / "backend-cloudflare/wrangler.toml"
    config.write_text(config.read_text().replace('name = "immcad-backend-native-python"', 'name = "other"'))
    with pytest.raises(ConfigError, match="names the Worker 'other'"):
        target(settings, "native")


def test_runner_choice(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(project, {})
    monkeypatch.setattr(deploy_plan, "wrangler_bin", lambda s: Path("/pinned/wrangler"))
    monkeypatch.setattr(deploy_plan, "pywrangler_problem", lambda s: "cannot reach index.pyodide.org:443")
    dry = choose_runner(settings, "auto", dry_run=True)
    assert dry.name == "wrangler" and "pywrangler cannot run here" in dry.note
    with pytest.raises(MissingToolError, match="--runner wrangler"):
        choose_runner(settings, "auto", dry_run=False)
    with pytest.raises(MissingToolError):
        choose_runner(settings, "pywrangler", dry_run=True)
    stand_in = choose_runner(settings, "wrangler", dry_run=False)
    assert stand_in.program == Path("/pinned/wrangler") and "without vendored packages" in stand_in.note
    monkeypatch.setattr(deploy_plan, "pywrangler_problem", lambda s: None)
    monkeypatch.setattr(deploy_plan.shutil, "which", lambda name: f"/venv/bin/{name}")
    real = choose_runner(settings, "auto", dry_run=False)
    assert real.name == "pywrangler" and real.program == Path("/venv/bin/pywrangler") and real.note == ""


def test_artifacts_are_written_whole_and_redacted(tmp_path: Path) -> None:
    settings = load_settings(_root(tmp_path), {})
    output.add_secrets(["tok-should-not-appear"])
    path = write_artifact(
        settings, "deploy-x.json", {"command": ["--var", "X:tok-should-not-appear"], "n": 1}
    )
    assert json.loads(path.read_text()) == {"command": ["--var", "X:***"], "n": 1}
    assert [p.name for p in path.parent.iterdir()] == ["deploy-x.json"]


V1, V2 = "1b2c3d4e-0000-4000-8000-000000000001", "1b2c3d4e-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("module", "argv", "hint"),
    [
        ("versions", [], False),
        ("promote", ["--new", V2, "--old", V1, "--percent", "10"], False),
        ("rollback", ["--version", V1], False),
        ("deploy", ["proxy", "--origin", "https://origin.example.com"], True),
        ("secrets", [], True),
    ],
)
def test_missing_credentials_mention_dry_run_only_where_the_command_has_one(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: str,
    argv: list[str],
    hint: bool,
) -> None:
    import importlib
    import shutil

    from cfops import cli

    jsonc = "backend-cloudflare/wrangler.backend-proxy.jsonc"
    shutil.copy2(Path(__file__).resolve().parents[2] / jsonc, project / jsonc)
    monkeypatch.setenv("CFOPS_ROOT", str(project))
    monkeypatch.setenv("IMMCAD_API_BEARER_TOKEN", "a-real-looking-token-1234")
    for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    entry = importlib.import_module(f"cfops.{module}")
    assert cli.main(entry.main, argv) == 2
    err = capsys.readouterr().err
    assert "CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID not set" in err
    assert ("--dry-run needs neither" in err) is hint
