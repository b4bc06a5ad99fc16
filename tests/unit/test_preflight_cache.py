"""The preflight cache: hits, a miss for each kind of input, policies, corrupt files, concurrent runs.

The end-to-end runs use the real Node-free cached checks (native-bundle, edge-contract: the latter
imports the synced app in a child Python). The key tests for the wrangler checks count calls of a
stand-in measurement registered under their ids, so that the toolchain inputs (wrangler version,
pin, Node binary) can change without reinstalling Node; tests/integration/test_preflight_wrangler.py
runs the real wrangler checks through the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cfops.config import load_settings
from cfops.preflight.cache import CACHED, Cache, Policy, policy_for
from cfops.preflight.model import Context, Finding, Target, Toolchain
from cfops.preflight.runner import run_one
from tests.conftest import REPO, clean_env
from tests.preflight_fixtures import Run, make_project, run_preflight, set_preflight

CHEAP_CACHED = "native-bundle,edge-contract"


@pytest.fixture
def pf_project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def preflight(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, **env: str
) -> Run:
    run = run_preflight(project, monkeypatch, capsys, "--only", CHEAP_CACHED, *args, **env)
    assert "Traceback" not in run.text
    return run


def cached_ids(run: Run) -> set[str]:
    return {f["id"] for f in run.report["findings"] if f["cached"]}


# ----------------------------------------------------------------------------------- end to end


def test_a_no_change_run_reuses_the_findings_and_says_so(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = preflight(pf_project, monkeypatch, capsys)
    assert first.code == 0, first.text
    assert cached_ids(first) == set()
    assert (pf_project / ".cfops-cache/preflight.json").is_file()

    second = preflight(pf_project, monkeypatch, capsys)
    assert second.code == first.code
    assert cached_ids(second) == {"native-bundle", "edge-contract"}
    for check_id in ("native-bundle", "edge-contract"):
        before, after = first.finding(check_id), second.finding(check_id)
        assert {k: after[k] for k in ("status", "message", "details", "measured", "limits")} == {
            k: before[k] for k in ("status", "message", "details", "measured", "limits")
        }
    # Per check on the terminal table, and counted in the summary line.
    table_rows = [
        line for line in second.out.splitlines() if "native-bundle" in line or "edge-contract" in line
    ]
    assert table_rows and all("cached" in row for row in table_rows)
    assert "2 cached" in second.out


def test_no_cache_measures_everything_and_refreshes_the_cache(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    preflight(pf_project, monkeypatch, capsys)
    forced = preflight(pf_project, monkeypatch, capsys, "--no-cache")
    assert cached_ids(forced) == set()
    assert "cached" not in forced.out
    assert cached_ids(preflight(pf_project, monkeypatch, capsys)) == {"native-bundle", "edge-contract"}
    # The same by setting: CFOPS_PREFLIGHT_CACHE=off.
    off = preflight(pf_project, monkeypatch, capsys, CFOPS_PREFLIGHT_CACHE="off")
    assert cached_ids(off) == set()


def test_a_changed_byte_in_a_synced_file_re_measures_even_with_the_manifest_stale(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    preflight(pf_project, monkeypatch, capsys)
    manifest = pf_project / "backend-cloudflare/sync-manifest.json"
    manifest_before = manifest.read_bytes()
    synced = pf_project / "backend-cloudflare/src/immcad_api/main.py"
    text = synced.read_text()
    stat = synced.stat()
    # One byte, same size, mtime put back: neither the manifest nor the file's stat says it changed.
    index = text.index("401")
    synced.write_text(text[:index] + "403" + text[index + 3 :])
    os.utime(synced, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert synced.stat().st_size == stat.st_size and manifest.read_bytes() == manifest_before

    run = run_preflight(pf_project, monkeypatch, capsys, "--only", f"{CHEAP_CACHED},sync")
    assert cached_ids(run) == set()  # both read the synced app: both measured again
    assert run.finding("sync")["status"] == "fail"  # and the drift is still reported


def test_a_changed_setting_or_wrangler_config_re_measures(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    preflight(pf_project, monkeypatch, capsys)
    set_preflight(pf_project, gzip_budget_kib="1")
    budget = preflight(pf_project, monkeypatch, capsys)
    assert cached_ids(budget) == set()
    assert budget.finding("native-bundle")["status"] == "fail"
    assert "over the 1.00 KiB gzip budget" in budget.finding("native-bundle")["message"]
    assert cached_ids(preflight(pf_project, monkeypatch, capsys)) == {"native-bundle", "edge-contract"}
    # The same setting from the environment is the same input.
    env_budget = preflight(pf_project, monkeypatch, capsys, CFOPS_PREFLIGHT_GZIP_BUDGET_KIB="2")
    assert cached_ids(env_budget) == set()

    config = pf_project / "backend-cloudflare/wrangler.toml"
    config.write_text(config.read_text() + "\n# a comment is still a changed input\n")
    assert cached_ids(preflight(pf_project, monkeypatch, capsys)) == set()


def test_a_failed_or_unmeasured_finding_is_not_kept(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The app cannot be built: edge-contract fails without measuring routes, so it is asked again.
    broken = pf_project / "backend-cloudflare/src/immcad_api/main.py"
    broken.write_text(broken.read_text() + "\nraise RuntimeError('broken on import')\n")
    first = preflight(pf_project, monkeypatch, capsys)
    assert first.finding("edge-contract")["status"] == "fail"
    second = preflight(pf_project, monkeypatch, capsys)
    assert "edge-contract" not in cached_ids(second)
    assert "native-bundle" in cached_ids(second)


# ------------------------------------------------------------------------------ corrupt / unreadable


@pytest.mark.parametrize(
    "content", ["{not json", '{"format": 1, "entries": []}', '{"format": 1, "entries": {"startup": 3}}', "[]"]
)
def test_a_corrupt_cache_is_a_warning_and_a_full_run(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    cache_file = pf_project / ".cfops-cache/preflight.json"
    cache_file.parent.mkdir()
    cache_file.write_text(content)
    run = preflight(pf_project, monkeypatch, capsys)
    assert run.code == 0, run.text
    assert cached_ids(run) == set()
    assert "warning: preflight cache" in run.err and "corrupt" in run.err
    # Replaced by a good one: the next run is cached and quiet.
    json.loads(cache_file.read_text())
    again = preflight(pf_project, monkeypatch, capsys)
    assert cached_ids(again) == {"native-bundle", "edge-contract"} and "warning" not in again.err


def test_an_unreadable_cache_is_a_warning_not_an_error(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (pf_project / ".cfops-cache/preflight.json").mkdir(parents=True)  # reading a directory fails
    run = preflight(pf_project, monkeypatch, capsys)
    assert run.code == 0, run.text
    assert "unreadable" in run.err and "not updated" in run.err
    assert run.finding("native-bundle")["status"] == "warn"


def test_cached_entries_with_a_wrong_shape_are_measured_again(pf_project: Path) -> None:
    settings = load_settings(pf_project, {})
    ctx = Context(settings=settings, toolchain=Toolchain(settings))
    cache = Cache(settings, "reuse")
    key = cache.key("native-bundle", ctx)
    settings.preflight.cache_file.parent.mkdir(parents=True)
    bad = {"format": 1, "entries": {"native-bundle": [{"key": key, "finding": {"status": "bogus"}}, "x"]}}
    settings.preflight.cache_file.write_text(json.dumps(bad))
    hit, _ = Cache(settings, "reuse").lookup("native-bundle", ctx)
    assert hit is None


# ------------------------------------------------------------- each input kind, with a counted check

MEASURED = {check_id: measure for check_id, (_, measure) in CACHED.items()}


class Counted:
    """Stands in for a cached check: counts how often it really measures."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, ctx: Context) -> Finding:
        check_id = ctx.settings.env.get("CHECK", "")
        self.calls.append(check_id)
        return Finding(id=check_id, status="pass", message="measured", measured={MEASURED[check_id]: 1})


def run_counted(
    project: Path, check_id: str, counted: Counted, *, policy: Policy = "reuse", target: Target = "local"
) -> Finding:
    settings = load_settings(project, {"CHECK": check_id})
    ctx = Context(settings=settings, target=target, toolchain=Toolchain(settings))
    cache = Cache(settings, policy)
    finding = run_one(check_id, counted, ctx, cache)
    cache.save()
    return finding


def fake_toolchain(project: Path, version: str) -> None:
    """An installed-looking node_modules (wrangler's package.json and the lock marker), no Node needed."""
    modules = project / "backend-cloudflare/node_modules"
    (modules / "wrangler").mkdir(parents=True, exist_ok=True)
    (modules / "wrangler/package.json").write_text(json.dumps({"name": "wrangler", "version": version}))
    (modules / ".cfops-lock-sha256").write_text("lock-digest\n")


WRANGLER_CHECKS = ("proxy-bundle", "startup")
ALL_CACHED = tuple(CACHED)


def first_and_second(project: Path, counted: Counted, ids: tuple[str, ...] = ALL_CACHED) -> None:
    for check_id in ids:
        assert not run_counted(project, check_id, counted).cached
        assert run_counted(project, check_id, counted).cached, f"{check_id} was not reused"


def remeasured(project: Path, ids: tuple[str, ...] = ALL_CACHED) -> set[str]:
    counted = Counted()
    for check_id in ids:
        run_counted(project, check_id, counted)
    return set(counted.calls)


def test_installed_wrangler_version_is_an_input_of_the_wrangler_checks_only(pf_project: Path) -> None:
    fake_toolchain(pf_project, "4.163.0")
    first_and_second(pf_project, Counted())
    fake_toolchain(pf_project, "4.164.0")
    assert remeasured(pf_project) == set(WRANGLER_CHECKS)
    assert remeasured(pf_project) == set()


def test_the_wrangler_pin_is_an_input(pf_project: Path) -> None:
    fake_toolchain(pf_project, "4.164.0")
    first_and_second(pf_project, Counted())
    package = pf_project / "backend-cloudflare/package.json"
    data = json.loads(package.read_text())
    data["devDependencies"]["wrangler"] = "4.165.0"
    package.write_text(json.dumps(data))
    assert remeasured(pf_project) == set(ALL_CACHED)  # part of the Worker directory, read by all


def test_the_node_binary_is_an_input_of_the_wrangler_checks(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_toolchain(pf_project, "4.164.0")
    # The pinned Node's place (node_modules/.bin/node): the one wrangler runs on (cfops.node.choice).
    node = pf_project / "backend-cloudflare/node_modules/.bin/node"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_text("#!/bin/sh\necho v24.22.3\n")
    node.chmod(0o755)
    first_and_second(pf_project, Counted())
    node.write_text("#!/bin/sh\necho v24.11.1 # another build\n")  # another Node on the same path
    assert remeasured(pf_project) == set(WRANGLER_CHECKS)
    monkeypatch.setenv("NODE_OPTIONS", "--max-old-space-size=64")  # a variable that steers it
    assert remeasured(pf_project) == set(WRANGLER_CHECKS)


def test_a_byte_of_the_proxy_source_is_an_input(pf_project: Path) -> None:
    first_and_second(pf_project, Counted())
    worker = pf_project / "backend-cloudflare/src/worker.ts"
    worker.write_text(worker.read_text().replace("15000", "15001", 1))
    assert remeasured(pf_project) == set(ALL_CACHED)


def test_a_config_outside_the_worker_directory_is_an_input(pf_project: Path) -> None:
    outside = pf_project / "allow.json"
    outside.write_text((pf_project / "backend-cloudflare/src/allowlist.json").read_text())
    pyproject = pf_project / "pyproject.toml"
    set_preflight(pf_project, allowlist='"allow.json"')
    assert "allow.json" in pyproject.read_text()
    first_and_second(pf_project, Counted())
    outside.write_text(outside.read_text().replace("[", "[ ", 1))
    assert remeasured(pf_project) == set(ALL_CACHED)


def test_the_same_tree_at_another_path_reuses_the_findings(pf_project: Path, tmp_path: Path) -> None:
    import shutil

    outside = pf_project / "allow.json"  # a config outside the Worker directory, named by its path
    outside.write_text((pf_project / "backend-cloudflare/src/allowlist.json").read_text())
    set_preflight(pf_project, allowlist='"allow.json"')
    fake_toolchain(pf_project, "4.164.0")
    first_and_second(pf_project, Counted())
    clone = tmp_path / "elsewhere" / "clone"
    shutil.copytree(pf_project, clone, symlinks=True)
    assert remeasured(clone) == set()  # a second clone, a CI workspace that restored .cfops-cache
    (clone / "allow.json").write_text(outside.read_text().replace("[", "[ ", 1))
    assert remeasured(clone) == set(ALL_CACHED)


def test_files_nothing_reads_are_not_inputs(pf_project: Path) -> None:
    first_and_second(pf_project, Counted())
    worker_dir = pf_project / "backend-cloudflare"
    (worker_dir / ".wrangler/tmp").mkdir(parents=True)
    (worker_dir / ".wrangler/tmp/scratch.js").write_text("// wrangler's scratch")
    (worker_dir / "src/immcad_api/__pycache__").mkdir(exist_ok=True)
    (worker_dir / "src/immcad_api/__pycache__/x.cpython-311.pyc").write_bytes(b"\0")
    (worker_dir / ".dev.vars").write_text("IMMCAD_API_BEARER_TOKEN=local-secret\n")
    (pf_project / "README.md").write_text("outside the Worker directory\n")
    assert remeasured(pf_project) == set()


def test_same_commit_policy_trusts_only_a_run_at_the_current_commit(pf_project: Path) -> None:
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=pf_project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=pf_project, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], cwd=pf_project, check=True)
    counted = Counted()
    assert not run_counted(pf_project, "native-bundle", counted, policy="same-commit").cached
    assert run_counted(pf_project, "native-bundle", counted, policy="same-commit").cached
    # A reuse run's finding (no commit in its key) is not trusted by a same-commit run, and vice versa.
    assert not run_counted(pf_project, "native-bundle", counted).cached
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "two"], cwd=pf_project, check=True)
    assert not run_counted(pf_project, "native-bundle", counted, policy="same-commit").cached
    assert counted.calls == ["native-bundle"] * 3


def test_same_commit_without_git_never_reuses(pf_project: Path) -> None:
    counted = Counted()  # the fixture project is not a git checkout
    for _ in range(2):
        assert not run_counted(pf_project, "native-bundle", counted, policy="same-commit").cached
    assert len(counted.calls) == 2


@pytest.mark.parametrize(
    ("env", "target", "no_cache", "expected"),
    [
        ({}, "local", False, "reuse"),
        ({}, "production", False, "same-commit"),
        ({"CI": "true"}, "local", False, "same-commit"),
        ({"CI": "true", "CFOPS_PREFLIGHT_CACHE": "off"}, "local", False, "off"),
        ({}, "local", True, "off"),
        ({}, "production", True, "off"),
    ],
)
def test_policy_is_the_strictest_that_applies(
    pf_project: Path, env: dict[str, str], target: Target, no_cache: bool, expected: Policy
) -> None:
    assert policy_for(load_settings(pf_project, env), target, no_cache=no_cache) == expected


def test_ci_and_production_policies_are_settings(pf_project: Path) -> None:
    set_preflight(pf_project, cache_ci='"reuse"', cache_production='"off"')
    settings = load_settings(pf_project, {"CI": "true"})
    assert policy_for(settings, "local", no_cache=False) == "reuse"
    assert policy_for(settings, "production", no_cache=False) == "off"


# ----------------------------------------------------------------------------------- concurrency

_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from cfops.config import load_settings
    from cfops.preflight.cache import Cache
    from cfops.preflight.model import Finding

    project, check_id, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    settings = load_settings(project, {})
    for n in range(rounds):
        cache = Cache(settings, "reuse")
        cache.store(check_id, f"{check_id}-{n}", Finding(id=check_id, status="pass", message=str(n),
                    measured={"raw_bytes": n, "startup_cpu_ms": n, "routes": n}))
        cache.save()
    """
)


def test_concurrent_writers_never_corrupt_the_cache_nor_lose_each_others_entries(pf_project: Path) -> None:
    rounds = 15
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(pf_project), check_id, str(rounds)],
            env=clean_env(),
            cwd=REPO,
        )
        for check_id in ALL_CACHED
    ]
    cache_file = pf_project / ".cfops-cache/preflight.json"
    reads = 0
    while any(w.poll() is None for w in writers):
        if cache_file.is_file():
            json.loads(cache_file.read_text())  # a reader never sees half a file
            reads += 1
    assert [w.wait(timeout=60) for w in writers] == [0] * len(writers)
    entries = json.loads(cache_file.read_text())["entries"]
    assert set(entries) == set(ALL_CACHED)  # no writer dropped another's check
    for check_id in ALL_CACHED:
        assert entries[check_id][0]["key"] == f"{check_id}-{rounds - 1}"
        assert len(entries[check_id]) <= 4
    assert reads > 0


def test_two_preflights_at_once_leave_a_cache_the_next_run_reuses(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env = clean_env(CFOPS_ROOT=str(pf_project))
    argv = [sys.executable, "-m", "cfops.preflight", "--only", CHEAP_CACHED]
    runs = [
        subprocess.Popen(argv, cwd=pf_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    assert all(b"warning" not in err for _, err in outputs)
    json.loads((pf_project / ".cfops-cache/preflight.json").read_text())
    assert cached_ids(preflight(pf_project, monkeypatch, capsys)) == {"native-bundle", "edge-contract"}


def test_a_worker_configured_outside_the_worker_directory_is_an_input(pf_project: Path) -> None:
    # The proxy's config and source at the project root: the root's files count, but not what the run
    # writes there itself (artifacts, this cache), or nothing would ever be reused.
    (pf_project / "wrangler.jsonc").write_text('{"name": "immcad-backend-proxy", "main": "edge.ts"}\n')
    (pf_project / "edge.ts").write_text("export default {};\n")
    pyproject = pf_project / "pyproject.toml"
    moved = pyproject.read_text().replace(
        'config = "backend-cloudflare/wrangler.backend-proxy.jsonc"', 'config = "wrangler.jsonc"'
    )
    assert moved != pyproject.read_text()
    pyproject.write_text(moved)
    first_and_second(pf_project, Counted())
    (pf_project / "artifacts").mkdir(exist_ok=True)
    (pf_project / "artifacts/preflight.json").write_text("{}")
    assert remeasured(pf_project) == set()
    (pf_project / "edge.ts").write_text("export default { fetch() {} };\n")
    assert remeasured(pf_project) == set(ALL_CACHED)


def test_another_environment_re_measures_only_the_check_that_imports_the_app(
    pf_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `nox -s preflight` and the release's preflight run in different environments of the project: the
    # wrangler checks and native-bundle do not depend on the installed packages, edge-contract does.
    first_and_second(pf_project, Counted())
    monkeypatch.setattr(sys, "executable", str(pf_project / "other-venv/bin/python"))
    assert remeasured(pf_project) == {"edge-contract"}
    assert remeasured(pf_project) == set()
