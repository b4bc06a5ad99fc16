"""Deploys, versions, secrets and rollbacks: the real pinned wrangler (4.164) against the fake Cloudflare API.

Commands run as real processes (``python -m cfops …``) in a fixture project; the fake records what wrangler
sent. Nothing here may reach a real host: the fake also receives (and refuses) anything proxied elsewhere,
and every test checks ``api.stray`` is empty.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cfops.config import load_settings
from cfops.deploy import deploy, deploy_split, rollback
from tests.conftest import clean_env
from tests.fakes.cloudflare_api import FakeCloudflare

pytestmark = pytest.mark.integration

PROXY = "immcad-backend-proxy"
NATIVE = "immcad-backend-native-python"
ORIGIN = "https://origin.example.com"
# Anything on the host that could change what a command does (real credentials, real secrets).
_HOST_VARS = (
    "CLOUDFLARE_API_TOKEN",
    "CLOUDFLARE_ACCOUNT_ID",
    "CLOUDFLARE_API_KEY",
    "CLOUDFLARE_EMAIL",
    "CLOUDFLARE_API_BASE_URL",
    "BACKEND_ORIGIN",
    "CANLII_API_KEY",
    "REDIS_URL",
    "XDG_CONFIG_HOME",
)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    argvs: set[str]  # every command line seen in the process tree while it ran

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def ran_wrangler(self) -> bool:
        return any("wrangler-dist/cli.js" in argv or "/.bin/wrangler" in argv for argv in self.argvs)


def environment(
    project: Path, api: FakeCloudflare, *, credentials: bool = True, **extra: str
) -> dict[str, str]:
    env = clean_env(CFOPS_ROOT=str(project), HOME=str(project.parent / "home"), **api.wrangler_env())
    for name in _HOST_VARS:
        if name in env and name not in api.wrangler_env():
            del env[name]
    if not credentials:
        del env["CLOUDFLARE_API_TOKEN"], env["CLOUDFLARE_ACCOUNT_ID"]
    env.update(extra)
    return env


def cfops(project: Path, api: FakeCloudflare, *args: str, credentials: bool = True, **extra: str) -> Ran:
    """Run ``python -m cfops args`` and sample the command lines of its whole process tree meanwhile."""
    (project.parent / "home").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfops", *args],
        cwd=project,
        env=environment(project, api, credentials=credentials, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[str] = set()

    def sample() -> None:
        while proc.poll() is None:
            try:
                tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            except psutil.Error:
                continue
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    seen.add(" ".join(process.cmdline()))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        sampler.join(timeout=5)
    return Ran(proc.returncode, out, err, seen)


def artifact(project: Path, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((project / "artifacts" / name).read_text())
    return data


def files_containing(root: Path, needle: str, *, skip: tuple[Path, ...] = ()) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file() or any(path.is_relative_to(s) for s in skip):
            continue
        if needle.encode() in path.read_bytes():
            found.append(path)
    return found


@pytest.fixture
def api(cloudflare_api: FakeCloudflare) -> Iterator[FakeCloudflare]:
    yield cloudflare_api
    assert cloudflare_api.stray == [], "wrangler tried to reach a host other than the fake API"


# ------------------------------------------------------------------------------------------ deploys


def test_proxy_deploy_uploads_the_worker_with_backend_origin_and_records_it(
    worker_project: Path, api: FakeCloudflare
) -> None:
    ran = cfops(worker_project, api, "deploy", "proxy", IMMCAD_BACKEND_ORIGIN=ORIGIN + "/")
    assert ran.returncode == 0, ran.output

    (upload,) = api.calls("PUT", rf"/workers/scripts/{PROXY}$")  # first deploy: upload + deploy at 100%
    metadata = upload.metadata()
    bindings = {b["name"]: b for b in metadata["bindings"]}
    assert bindings["BACKEND_ORIGIN"] == {"name": "BACKEND_ORIGIN", "type": "plain_text", "text": ORIGIN}
    assert bindings["BACKEND_REQUEST_TIMEOUT_MS"]["text"] == "15000"  # the config's vars come along
    assert "plain_text" in metadata["keep_bindings"]  # --keep-vars
    assert metadata["compatibility_date"] == "2026-05-01"
    script = upload.form()[metadata["main_module"]]
    assert script.content_type == "application/javascript+module"
    assert "BACKEND_ORIGIN" in script.text() and "/healthz" in script.text()  # worker.ts + allowlist.json

    version = api.script(PROXY).latest
    assert api.script(PROXY).current().traffic() == {version.id: 100.0}
    record = artifact(worker_project, "deploy-proxy.json")
    assert record["version_id"] == version.id
    assert record["previous_version_id"] is None
    assert record["urls"] == [f"https://{PROXY}.immcad-test.workers.dev"]
    assert record["command"][:4] == ["wrangler", "deploy", "--config", "wrangler.backend-proxy.jsonc"]
    assert f"BACKEND_ORIGIN:{ORIGIN}" in record["command"] and "--keep-vars" in record["command"]
    assert isinstance(record["duration"], float) and record["duration"] > 0
    assert f"deployed {PROXY} version {version.id}" in ran.stdout


def test_proxy_dry_run_sends_nothing_even_with_credentials(worker_project: Path, api: FakeCloudflare) -> None:
    ran = cfops(worker_project, api, "deploy", "proxy", "--dry-run", IMMCAD_BACKEND_ORIGIN=ORIGIN)
    assert ran.returncode == 0, ran.output
    assert api.requests == []
    assert "bindings" in ran.stdout.lower()  # wrangler really bundled it and listed the bindings
    assert artifact(worker_project, "deploy-proxy.dry-run.json")["dry_run"] is True
    assert not (worker_project / "artifacts" / "deploy-proxy.json").exists()


def test_proxy_deploy_refuses_a_bad_origin_before_any_call(worker_project: Path, api: FakeCloudflare) -> None:
    # (every rule of the origin check is covered in tests/unit/test_deploy_logic.py)
    ran = cfops(worker_project, api, "deploy", "proxy", BACKEND_ORIGIN="http://origin.example.com")
    assert ran.returncode == 2
    assert (
        ran.stderr.strip() == "error: the backend origin 'http://origin.example.com' must be an https:// URL"
    )
    assert api.requests == [] and not ran.ran_wrangler


def test_native_deploy_with_wrangler_standing_in_for_pywrangler_uploads_the_synced_bundle(
    worker_project: Path, api: FakeCloudflare
) -> None:
    # pywrangler cannot fetch its toolchain here: the pinned wrangler does the upload, and says so.
    ran = cfops(worker_project, api, "deploy", "native", "--runner", "wrangler")
    assert ran.returncode == 0, ran.output
    assert "stands in for pywrangler" in ran.stderr

    (upload,) = api.calls("PUT", rf"/workers/scripts/{NATIVE}$")
    metadata = upload.metadata()
    form = upload.form()
    assert metadata["main_module"] == "entry.py"
    assert "python_workers" in metadata["compatibility_flags"]
    local = worker_project / "backend-cloudflare" / "src"
    assert form["entry.py"].data == (local / "entry.py").read_bytes()
    assert form["entry.py"].content_type == "text/x-python"
    # the synced backend went up with it: the app and the data it reads
    assert form["immcad_api/main.py"].data == (worker_project / "src/immcad_api/main.py").read_bytes()
    assert "data/sources/canada-immigration/registry.json" in form
    assert "config/source_policy.yaml" in form
    bindings = {b["name"]: b.get("text") for b in metadata["bindings"]}
    assert bindings["ENVIRONMENT"] == "production"
    record = artifact(worker_project, "deploy-native.json")
    assert record["runner"] == "wrangler" and "stands in for pywrangler" in str(record["note"])
    assert record["version_id"] == api.script(NATIVE).latest.id


def test_native_deploy_refuses_packages_vendored_for_another_python_before_any_upload(
    worker_project: Path, api: FakeCloudflare, tmp_path: Path
) -> None:
    from tests.unit.test_runtime_python import build_wheel, vendor_wheel

    api.seed(NATIVE)
    before = len(api.requests)
    vendor = worker_project / "backend-cloudflare/python_modules"
    vendor_wheel(build_wheel(tmp_path, "standin", "1.0", "cp312-cp312-pyodide_2024_0_wasm32"), vendor)
    ran = cfops(worker_project, api, "deploy", "native", "--runner", "wrangler")
    assert ran.returncode == 1, ran.output
    assert "standin 1.0 (Python 3.12)" in ran.stderr and "runtime's 3.14" in ran.stderr
    assert "nox -s sync -- --vendor" in ran.stderr
    assert api.requests[before:] == []  # nothing was sent: the check runs before the upload
    assert not ran.ran_wrangler


def test_native_dry_run_without_credentials_bundles_with_wrangler_and_sends_nothing(
    worker_project: Path, api: FakeCloudflare
) -> None:
    ran = cfops(worker_project, api, "deploy", "native", "--dry-run", credentials=False)
    assert ran.returncode == 0, ran.output
    assert "pywrangler cannot run here" in ran.stderr  # the auto runner says why wrangler stands in
    assert "immcad_api/main.py" in ran.stdout  # wrangler bundled the synced app
    assert api.requests == []


@pytest.mark.parametrize(
    "args",
    [
        ("deploy", "proxy", "--strategy", "versions"),
        ("deploy", "native", "--runner", "wrangler"),
        ("secrets",),
        ("rollback", "--worker", "proxy"),
    ],
)
def test_missing_credentials_exit_2_before_any_request(
    worker_project: Path, api: FakeCloudflare, args: tuple[str, ...]
) -> None:
    ran = cfops(
        worker_project,
        api,
        *args,
        credentials=False,
        IMMCAD_BACKEND_ORIGIN=ORIGIN,
        GEMINI_API_KEY="gem-12345678",
    )
    assert ran.returncode == 2, ran.output
    (error,) = [line for line in ran.stderr.splitlines() if line.startswith("error:")]
    assert "CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID not set" in error
    assert "Traceback" not in ran.stderr
    assert api.requests == []
    assert not ran.ran_wrangler
    assert not (worker_project / "backend-cloudflare" / "sync-manifest.json").exists()  # nothing synced


def test_authentication_error_exits_1_with_token_scope_advice(
    worker_project: Path, api: FakeCloudflare
) -> None:
    api.seed(PROXY)
    ran = cfops(worker_project, api, "versions", "--worker", "proxy", CLOUDFLARE_API_TOKEN="a-revoked-token")
    assert ran.returncode == 1
    error = ran.stderr.strip().splitlines()[-1]
    assert "Cloudflare error 10000" in error and "Workers Scripts · Edit" in error
    assert "a-revoked-token" not in ran.output


def test_size_error_10027_exits_1_with_preflight_advice_and_keeps_the_last_record(
    worker_project: Path, api: FakeCloudflare
) -> None:
    (live,) = api.seed(PROXY)
    previous_record = worker_project / "artifacts" / "deploy-proxy.json"
    previous_record.parent.mkdir()
    previous_record.write_text('{"version_id": "the last good deploy"}\n')
    api.script_size_limit = 512  # the proxy bundle is ~1 KiB: the fake answers like Cloudflare, 10027

    ran = cfops(worker_project, api, "deploy", "proxy", IMMCAD_BACKEND_ORIGIN=ORIGIN)

    assert ran.returncode == 1
    error = ran.stderr.strip().splitlines()[-1]
    assert "Cloudflare error 10027" in error and "too large" in error and "cfops preflight" in error
    assert api.calls("POST", r"/versions$"), "the upload reached the API"
    assert previous_record.read_text() == '{"version_id": "the last good deploy"}\n'
    failed = artifact(worker_project, "deploy-proxy.failed.json")
    assert failed["ok"] is False and failed["error"]["code"] == 10027  # type: ignore[index]
    assert failed["previous_version_id"] == live
    assert api.script(PROXY).current().traffic() == {live: 100.0}  # still serving the old version


# ----------------------------------------------------------------------------------------- versions


def test_version_ids_flow_from_upload_to_split_to_rollback(
    worker_project: Path, api: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primitives the release pipeline composes, in process, against one consistent fake state."""
    env = environment(worker_project, api, IMMCAD_BACKEND_ORIGIN=ORIGIN)
    (worker_project.parent / "home").mkdir()
    for key in (*api.wrangler_env(), "HOME"):
        monkeypatch.setenv(key, env[key])
    settings = load_settings(worker_project, env)

    first = deploy(settings, "proxy")
    assert first.version_id == api.script(PROXY).latest.id

    candidate = deploy(settings, "proxy", strategy="versions", message="candidate")
    assert candidate.previous_version_id == first.version_id
    assert candidate.version_id is not None and candidate.version_id != first.version_id
    assert api.script(PROXY).current().traffic() == {first.version_id: 100.0}  # uploaded, no traffic
    assert api.script(PROXY).latest.annotations["workers/message"] == "candidate"

    split = deploy_split(settings, "proxy", candidate.version_id, first.version_id, 10, message="canary")
    assert split.traffic == {candidate.version_id: 10.0, first.version_id: 90.0}
    assert api.script(PROXY).current().traffic() == split.traffic
    assert split.deployment_id == api.script(PROXY).current().id

    back = rollback(settings, "proxy")  # default: the last version that had 100%
    assert back.version_id == first.version_id
    assert back.previous_traffic == split.traffic
    assert api.script(PROXY).current().traffic() == {first.version_id: 100.0}
    assert artifact(worker_project, "rollback-proxy.json")["version_id"] == first.version_id

    promoted = deploy_split(settings, "proxy", candidate.version_id, first.version_id, 100)
    assert api.script(PROXY).current().traffic() == {candidate.version_id: 100.0} == promoted.traffic
    posted = [c.json() for c in api.calls("POST", r"/deployments$")]
    assert posted[-1]["versions"] == [{"version_id": candidate.version_id, "percentage": 100}]


def test_versions_table_and_rollback_command(worker_project: Path, api: FakeCloudflare) -> None:
    old, new = api.seed(PROXY, versions=2)
    shown = cfops(worker_project, api, "versions", "--worker", "proxy")
    assert shown.returncode == 0, shown.output
    assert new in shown.stdout and old in shown.stdout and "100%" in shown.stdout

    ran = cfops(
        worker_project, api, "rollback", "--worker", "proxy", "--version", old, "--message", "bad canary"
    )
    assert ran.returncode == 0, ran.output
    assert api.script(PROXY).current().traffic() == {old: 100.0}
    assert api.script(PROXY).current().annotations["workers/message"] == "bad canary"
    record = artifact(worker_project, "rollback-proxy.json")
    assert record["version_id"] == old and record["previous_traffic"] == {new: 100.0}

    bad = cfops(worker_project, api, "rollback", "--worker", "proxy", "--version", "not-a-version")
    assert bad.returncode == 2 and "is not a version id" in bad.stderr


# ------------------------------------------------------------------------------------------ secrets

SECRETS = {
    "IMMCAD_API_BEARER_TOKEN": "tok-9f8e7d6c5b4a",
    "API_BEARER_TOKEN": "tok-9f8e7d6c5b4a",
    "GEMINI_API_KEY": "gem-0a1b2c3d4e5f",
}


def assert_no_leak(ran: Ran, project: Path) -> None:
    for value in set(SECRETS.values()):
        assert value not in ran.output
        assert not [argv for argv in ran.argvs if value in argv]
        # artifacts, wrangler's files under the project and HOME; the .env we wrote is the source
        assert files_containing(project.parent, value, skip=(project / ".env",)) == []


def test_secrets_reach_the_api_in_one_bulk_call_and_never_argv_output_or_files(
    worker_project: Path, api: FakeCloudflare
) -> None:
    api.seed(NATIVE)
    # from .env and from the environment; placeholders and empty values are skipped and named
    (worker_project / ".env").write_text(
        f"IMMCAD_API_BEARER_TOKEN={SECRETS['IMMCAD_API_BEARER_TOKEN']}\nCANLII_API_KEY=your-canlii-api-key\n"
    )
    ran = cfops(
        worker_project,
        api,
        "secrets",
        API_BEARER_TOKEN=SECRETS["API_BEARER_TOKEN"],
        GEMINI_API_KEY=SECRETS["GEMINI_API_KEY"],
        REDIS_URL="",
    )
    assert ran.returncode == 0, ran.output

    assert len(api.calls("PATCH", rf"/workers/scripts/{NATIVE}/secrets-bulk$")) == 1  # one bulk call
    assert sorted(api.secret_values_received()) == sorted(SECRETS.values())
    assert api.script(NATIVE).latest.secrets() == SECRETS
    assert api.script(NATIVE).current().traffic() == {api.script(NATIVE).latest.id: 100.0}
    assert "skipping CANLII_API_KEY: placeholder" in ran.stderr
    assert "skipping REDIS_URL: empty" in ran.stderr
    assert any("secret bulk" in argv for argv in ran.argvs) and ran.ran_wrangler, "the sampler saw wrangler"
    assert_no_leak(ran, worker_project)
    record = artifact(worker_project, "secrets-native.json")
    assert record["pushed"] == list(SECRETS) and record["method"] == "secret bulk"
    assert set(record["skipped"]) == {"CANLII_API_KEY", "REDIS_URL"}  # type: ignore[arg-type]


def test_secrets_go_into_a_new_version_when_the_latest_is_not_deployed(
    worker_project: Path, api: FakeCloudflare
) -> None:
    live, pending = api.seed(NATIVE, versions=2, deployed=0)  # e.g. after a versions upload: 10215
    ran = cfops(worker_project, api, "secrets", **SECRETS)
    assert ran.returncode == 0, ran.output
    # wrangler 4.164 reports 10215 as a message without the code; cfops names the codes itself.
    assert "10215" in ran.stderr and "new version" in ran.stderr
    assert len(api.calls("PATCH", rf"/workers/workers/{NATIVE}/versions/latest$")) == 1

    script = api.script(NATIVE)
    created = script.latest
    assert created.id not in (live, pending)
    assert created.secrets() == SECRETS
    assert created.modules.keys() == script.version(pending).modules.keys()  # copied from the latest version
    assert script.current().traffic() == {live: 100.0}  # nothing deployed behind the operator's back
    record = artifact(worker_project, "secrets-native.json")
    assert record["method"] == "versions secret bulk" and record["version_id"] == created.id
    assert created.id in ran.stdout
    assert_no_leak(ran, worker_project)


def test_secrets_refuse_differing_bearer_tokens_and_dry_run_lists_names_only(
    worker_project: Path, api: FakeCloudflare
) -> None:
    differ = cfops(
        worker_project,
        api,
        "secrets",
        IMMCAD_API_BEARER_TOKEN="tok-one-1234",
        API_BEARER_TOKEN="tok-two-5678",
    )
    assert differ.returncode == 2
    assert "IMMCAD_API_BEARER_TOKEN and API_BEARER_TOKEN are both set and differ" in differ.stderr
    assert "tok-one-1234" not in differ.output and "tok-two-5678" not in differ.output

    dry = cfops(worker_project, api, "secrets", "--dry-run", credentials=False, **SECRETS)
    assert dry.returncode == 0, dry.output
    assert "would push 3 secret(s)" in dry.stdout and "GEMINI_API_KEY" in dry.stdout
    assert api.requests == []
    assert not differ.ran_wrangler and not dry.ran_wrangler
    assert_no_leak(dry, worker_project)


# ------------------------------------------------------------------------------ reads and uploads (issue 12)


def test_reads_of_live_state_start_no_node_process(worker_project: Path, api: FakeCloudflare) -> None:
    old, new = api.seed(PROXY, versions=2)
    shown = cfops(worker_project, api, "versions", "--worker", "proxy")
    assert shown.returncode == 0, shown.output
    assert new in shown.stdout and old in shown.stdout
    assert not shown.ran_wrangler  # straight to the API over httpx
    assert [c.path.rsplit("/", 1)[-1] for c in api.calls("GET")] == ["deployments", "versions"]


def _upload_proxy(worker_project: Path, api: FakeCloudflare, tag: str, **env: str) -> Ran:
    """`cfops deploy proxy --strategy versions` with upload tag ``tag``: how the upload tests deploy."""
    return cfops(
        worker_project,
        api,
        "deploy",
        "proxy",
        "--strategy",
        "versions",
        "--origin",
        ORIGIN,
        "--tag",
        tag,
        **env,
    )


def test_an_upload_whose_answer_was_lost_is_found_by_its_tag_not_uploaded_again(
    worker_project: Path, api: FakeCloudflare
) -> None:
    api.seed(PROXY)
    # Every answer to the upload is lost: wrangler retries it itself and gives up; each attempt landed.
    api.inject("POST", r"/versions$", lose_answer=True, times=10)
    ran = _upload_proxy(worker_project, api, "rel-42")
    assert ran.returncode == 0, ran.output
    landed = [v for v in api.script(PROXY).versions if v.annotations.get("workers/tag") == "rel-42"]
    attempts = len(api.calls("POST", r"/versions$"))
    assert len(landed) == attempts >= 1  # cfops did not upload once more: it looked first
    record = artifact(worker_project, "deploy-proxy.json")
    assert record["version_id"] == landed[-1].id and record["tag"] == "rel-42"
    assert "carrying tag rel-42 landed" in ran.stderr
    # After a failure wrangler asks npm for a newer version of itself (refused here): not an API call.
    assert set(api.stray) <= {"CONNECT registry.npmjs.org:443"}
    api.stray.clear()


def test_an_upload_is_not_repeated_when_nothing_can_tell_whether_it_landed(
    worker_project: Path, api: FakeCloudflare
) -> None:
    api.seed(PROXY)
    api.inject("POST", r"/versions$", lose_answer=True, times=10)  # every upload lands, unanswered
    api.inject("GET", r"/versions$", status=503, times=100)  # and the versions list does not answer
    ran = _upload_proxy(worker_project, api, "rel-44", CFOPS_RETRY_ATTEMPTS="3", CFOPS_RETRY_MAX_SECONDS="10")
    assert ran.returncode == 1, ran.output
    (line,) = ran.stderr.strip().splitlines()[-1:]
    assert "whether a version with tag rel-44 landed is unknown" in line
    assert "cfops versions --worker proxy" in line
    uploads = len(api.calls("POST", r"/versions$"))
    landed = [v for v in api.script(PROXY).versions if v.annotations.get("workers/tag") == "rel-44"]
    assert len(landed) == uploads <= 3  # one wrangler run (its own retries), never a blind second one
    api.stray.clear()


def test_an_upload_retried_by_wrangler_deploys_the_version_wrangler_reported(
    worker_project: Path, api: FakeCloudflare
) -> None:
    api.seed(PROXY)
    api.inject("POST", r"/versions$", lose_answer=True, times=1)  # the first answer is lost
    ran = _upload_proxy(worker_project, api, "rel-43")
    assert ran.returncode == 0, ran.output
    landed = [v.id for v in api.script(PROXY).versions if v.annotations.get("workers/tag") == "rel-43"]
    assert len(landed) == 2  # wrangler's own retry landed it twice
    assert artifact(worker_project, "deploy-proxy.json")["version_id"] == landed[-1]
    assert "landed twice" in ran.stderr


def test_a_rollback_that_cannot_be_confirmed_exits_1_with_the_manual_command(
    worker_project: Path, api: FakeCloudflare
) -> None:
    old, _new = api.seed(PROXY, versions=2)
    api.freeze_deployments()  # the API takes the rollback but every read-back still shows the old state
    ran = cfops(
        worker_project,
        api,
        "rollback",
        "--worker",
        "proxy",
        "--version",
        old,
        CFOPS_RETRY_ATTEMPTS="3",
        CFOPS_RETRY_MAX_SECONDS="10",
    )
    assert ran.returncode == 1, ran.output
    assert f"the rollback to {old} is not confirmed" in ran.stderr
    assert f"run by hand: cfops rollback --worker proxy --version {old} (without cfops:" in ran.stderr
    assert f"wrangler rollback {old} --config wrangler.backend-proxy.jsonc -y)" in ran.stderr
    assert "npx" not in ran.stderr  # npx would run the system Node
    assert ran.stderr.count("not confirmed") == 1 and "Traceback" not in ran.stderr
    assert api.script(PROXY).current().traffic() == {old: 100.0}  # the write itself went through
    assert len(api.calls("GET", r"/deployments$")) >= 1 + 3  # wrangler's read, then the read-backs
