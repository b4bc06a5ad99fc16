"""cfops.perf inputs: compatible env vars, flags over them, scenarios, and bad input -> exit 2 in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfops import cli, perf
from cfops.cloudflare import VERSION_OVERRIDE_HEADER as VERSION_HEADER
from cfops.config import load_settings
from cfops.errors import ConfigError, UsageError
from cfops.perf.config import resolve

PERF_VARS = (
    "IMMCAD_API_BASE_URL",
    "IMMCAD_API_BEARER_TOKEN",
    "API_BEARER_TOKEN",
    "REQUESTS",
    "CONCURRENCY",
    "MAX_P95_SECONDS",
    "MAX_P99_SECONDS",
    "MAX_ERROR_RATE",
    "CHAT_PATH",
    "GITHUB_STEP_SUMMARY",
)


def make_root(tmp_path: Path, extra: str = "") -> Path:
    root = tmp_path / "proj"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.cfops]\n" + extra)
    return root


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in PERF_VARS:
        monkeypatch.delenv(name, raising=False)
    path = make_root(tmp_path)
    monkeypatch.setenv("CFOPS_ROOT", str(path))
    return path


def test_defaults_are_the_old_make_target(root: Path) -> None:
    config = resolve(load_settings(root, {}))
    assert (config.requests, config.concurrency, config.thresholds.max_p95_seconds) == (20, 5, 2.5)
    assert config.thresholds.max_error_rate == 0.0
    assert config.base_url is None  # -> the local backend
    (probe,) = config.probes
    assert (probe.method, probe.path, probe.status) == ("POST", "/api/chat", (200,))
    assert probe.json == {"session_id": "perf-smoke-{i}", "message": "performance canary probe"}
    assert config.timeout_seconds == 10.0


def test_env_vars_keep_working_and_flags_override_them(root: Path) -> None:
    env = {
        "REQUESTS": "40",
        "CONCURRENCY": "8",
        "MAX_P95_SECONDS": "1.5",
        "CHAT_PATH": "/v2/chat",
        "IMMCAD_API_BASE_URL": "https://api.example.test/",
        "IMMCAD_API_BEARER_TOKEN": "tok-abcdef",
    }
    settings = load_settings(root, env)
    config = resolve(settings)
    assert (config.requests, config.concurrency, config.thresholds.max_p95_seconds) == (40, 8, 1.5)
    assert config.base_url == "https://api.example.test"
    assert config.probes[0].path == "/v2/chat"
    assert config.bearer_token == "tok-abcdef"
    assert "tok-abcdef" not in repr(config) and "tok-abcdef" not in str(config.describe())
    flags = {
        "perf.requests": "3",
        "perf.concurrency": "2",
        "perf.max_p95_seconds": "0.5",
        "perf.chat_path": "/x",
        "perf.base_url": "http://127.0.0.1:9",
    }
    flagged = resolve(load_settings(root, env, flags=flags))
    assert (flagged.requests, flagged.concurrency, flagged.thresholds.max_p95_seconds) == (3, 2, 0.5)
    assert (flagged.probes[0].path, flagged.base_url) == ("/x", "http://127.0.0.1:9")


def test_version_id_adds_the_override_header_for_the_native_worker(root: Path) -> None:
    settings = load_settings(root, {})
    config = resolve(settings, version_id="0a1b2c3d-0000-4000-8000-123456789abc")
    assert (
        config.headers[VERSION_HEADER]
        == 'immcad-backend-native-python="0a1b2c3d-0000-4000-8000-123456789abc"'
    )
    other = resolve(settings, version_id="v1", worker="immcad-backend-proxy")
    assert other.headers[VERSION_HEADER] == 'immcad-backend-proxy="v1"'


def test_scenario_from_pyproject_and_from_yaml(root: Path, tmp_path: Path) -> None:
    table = (
        "[tool.cfops.perf.scenario.chat]\nmethod = 'post'\npath = '/api/chat'\nweight = 3\n"
        "json = { session_id = 's-{i}', message = 'm' }\n"
        "[tool.cfops.perf.scenario.health]\npath = '/healthz'\nstatus = [200, 204]\n"
    )
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.cfops]\n" + table)
    config = resolve(load_settings(root, {}))
    assert [(p.name, p.method, p.weight, p.status) for p in config.probes] == [
        ("chat", "POST", 3, (200,)),
        ("health", "GET", 1, (200, 204)),
    ]
    yaml_file = tmp_path / "scenario.yaml"
    yaml_file.write_text("search:\n  method: POST\n  path: /api/search/cases\n  json: {query: visa}\n")
    from_file = resolve(load_settings(root, {}), scenario=yaml_file)
    assert [p.name for p in from_file.probes] == ["search"]
    assert from_file.scenario_source == str(yaml_file)


def test_bounds_can_be_lowered_but_not_raised(tmp_path: Path) -> None:
    low = make_root(tmp_path / "low", "[tool.cfops.perf.bounds]\nmax_requests = 50\n")
    with pytest.raises(UsageError, match="at most 50"):
        resolve(load_settings(low, {}, flags={"perf.requests": "51"}))
    high = make_root(tmp_path / "high", "[tool.cfops.perf.bounds]\nmax_concurrency = 5000\n")
    with pytest.raises(ConfigError, match="at most 1000"):
        resolve(load_settings(high, {}))


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"REQUESTS": "abc"}, [], "REQUESTS: expected an integer, got 'abc'"),
        ({"CONCURRENCY": "0"}, [], "concurrency (CONCURRENCY / --concurrency) must be at least 1"),
        ({"MAX_P95_SECONDS": "-1"}, [], "max p95 (MAX_P95_SECONDS / --max-p95) must be above 0"),
        ({"MAX_P95_SECONDS": "soon"}, [], "MAX_P95_SECONDS: expected a number"),
        ({"MAX_P95_SECONDS": "nan"}, [], "MAX_P95_SECONDS: expected a finite number, got 'nan'"),
        ({}, ["--max-p99", "inf"], "--max-p99: expected a finite number, got 'inf'"),
        ({"IMMCAD_API_BASE_URL": "not a url"}, [], "is not an absolute http(s) URL"),
        ({"IMMCAD_API_BASE_URL": "ftp://example.test"}, [], "is not an absolute http(s) URL"),
        ({"IMMCAD_API_BASE_URL": "http://example.test:99999"}, [], "is malformed"),
        ({"IMMCAD_API_BASE_URL": "https://u:hunter22@example.test"}, [], "must not contain credentials"),
        ({"CHAT_PATH": "api/chat"}, [], "must start with /"),
        ({}, ["--requests", "100001"], "at most 100000"),
        ({}, ["--requests", "x"], "--requests: expected an integer, got 'x'"),
        (
            {},
            ["--engine", "httpx", "--header", "X-Name: héllo"],
            "--header X-Name: the value must be printable ASCII",
        ),
        ({}, ["--header", "Authorization: @env:CFOPS_TEST_UNSET"], "CFOPS_TEST_UNSET (named by @env:"),
        ({}, ["--header", "Authorization: @file:missing.txt"], "cannot read missing.txt"),
        ({}, ["--concurrency", "1001"], "at most 1000"),
        ({}, ["--duration", "601"], "at most 600"),
        ({}, ["--rate", "10", "--requests", "10000"], "over the 600 s bound"),
        ({}, ["--rate", "0"], "--rate (requests per second) must be above 0"),
        ({}, ["--timeout", "0"], "--timeout (seconds) must be above 0"),
        ({}, ["--max-error-rate", "2"], "at most 1"),
        ({}, ["--max-p99", "-0.5"], "must be above 0"),
        ({}, ["--header", "no colon here"], "expected 'Name: value'"),
        ({}, ["--version-id", 'x" evil'], "is not a Worker version id"),
        ({}, ["--scenario", "missing.yaml"], "scenario file missing.yaml not found"),
        ({}, ["--baseline", "missing.json"], "baseline missing.json not found"),
        ({}, ["--engine", "curl"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(root)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli.main(perf.main, argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert "hunter22" not in captured.out + captured.err


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("chat: {path: /x, weigth: 2}\n", "unknown key"),
        ("chat: {path: x}\n", "must be a string starting with /"),
        ("chat: {path: /x, weight: 0}\n", "weight must be an integer from 1"),
        ("chat: {path: /x, status: 700}\n", "status must be an HTTP status"),
        ("chat: {path: /x, method: FETCH}\n", "method must be one of"),
        ("chat: {path: /x, json: {}, body: 'a'}\n", "give json or body, not both"),
        ("- just a list\n", "must be a table of probe name"),
        ("chat: [unclosed\n", "is not readable YAML"),
        ("{}\n", "defines no probe"),
        (
            "chat: {path: /x, json: {when: 2024-01-01}}\n",
            "json.when = 2024-01-01 is a YAML date, not a JSON value",
        ),
        ("chat: {path: /x, headers: {X-Name: héllo}}\n", "must be printable ASCII"),
    ],
)
def test_bad_scenario_files(root: Path, tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        resolve(load_settings(root, {}), scenario=path)
