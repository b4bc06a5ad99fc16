"""Issue 12's parts one at a time: the Cloudflare API client and its retries (against the real fake API
server), wrangler failure classification, the journal and the release lock, the canary's version check,
and the backend's x-immcad-version."""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import httpx
import pytest

from cfops import journal, retry
from cfops.cloudflare_api import ApiFailed, CloudflareApi, retry_after_seconds
from cfops.errors import UsageError
from cfops.journal import Entry
from cfops.perf.report import answers_by_version, version_check
from cfops.records import PerfRecord
from cfops.wrangler import WranglerFailed
from tests.fakes.cloudflare_api import FakeCloudflare

NAME = "immcad-backend-native-python"
FAST = retry.RetryPolicy(attempts=4, max_seconds=20, initial_wait=0.01, max_wait=0.05)


def api_client(fake: FakeCloudflare, policy: retry.RetryPolicy = FAST) -> CloudflareApi:
    return CloudflareApi(token=fake.token, account_id=fake.account_id, base_url=fake.base_url, policy=policy)


# ------------------------------------------------------------------------------ reads over httpx


def test_reads_deployments_and_versions_as_wrangler_would(cloudflare_api: FakeCloudflare) -> None:
    old, new = cloudflare_api.seed(NAME, versions=2, deployed=0)
    api = api_client(cloudflare_api)
    deployments = api.deployments(NAME)
    assert [d.traffic for d in deployments] == [{old: 100.0}]
    assert [v.id for v in api.versions(NAME)] == [new, old]  # newest first
    assert api.version(NAME, new).message == "seed 1"
    request = cloudflare_api.calls("GET", r"/deployments$")[-1]
    assert request.headers["authorization"] == f"Bearer {cloudflare_api.token}"


def test_an_unknown_worker_reads_as_empty(cloudflare_api: FakeCloudflare) -> None:
    api = api_client(cloudflare_api)
    assert api.deployments("never-deployed") == []
    assert api.versions("never-deployed") == []


def test_an_auth_error_is_not_retried_and_carries_the_advice(cloudflare_api: FakeCloudflare) -> None:
    api = CloudflareApi(
        token="wrong-token", account_id=cloudflare_api.account_id, base_url=cloudflare_api.base_url
    )
    with pytest.raises(ApiFailed) as info:
        api.deployments(NAME)
    assert info.value.code == 10000
    assert "CLOUDFLARE_API_TOKEN needs the scopes" in str(info.value)
    assert "wrong-token" not in str(info.value)
    assert len(cloudflare_api.calls()) == 1


@pytest.mark.parametrize(
    "fault",
    [{"status": 502}, {"status": 500}, {"drop": True}],
    ids=["502", "500", "dropped connection"],
)
def test_transient_failures_are_retried_each_announced_once(
    cloudflare_api: FakeCloudflare, fault: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    (only,) = cloudflare_api.seed(NAME)
    cloudflare_api.inject("GET", r"/deployments$", times=3, **fault)  # type: ignore[arg-type]
    assert api_client(cloudflare_api).deployments(NAME)[-1].traffic == {only: 100.0}
    assert len(cloudflare_api.calls("GET", r"/deployments$")) == 4
    err = capsys.readouterr().err
    assert [line.split(";")[-1].split(" in ")[0].strip() for line in err.splitlines() if "retry" in line] == [
        "retry 1/3",
        "retry 2/3",
        "retry 3/3",
    ]


def test_a_429_waits_what_retry_after_asks(cloudflare_api: FakeCloudflare) -> None:
    cloudflare_api.seed(NAME)
    cloudflare_api.inject("GET", r"/versions$", status=429, retry_after=1)
    started = time.perf_counter()
    api_client(cloudflare_api).versions(NAME)
    assert time.perf_counter() - started >= 1.0
    assert len(cloudflare_api.calls("GET", r"/versions$")) == 2


def test_retries_are_bounded_in_attempts_and_time(cloudflare_api: FakeCloudflare) -> None:
    cloudflare_api.seed(NAME)
    cloudflare_api.inject("GET", r"/deployments$", status=503, times=10)
    with pytest.raises(retry.TransientError, match="HTTP 503"):
        api_client(
            cloudflare_api, retry.RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02)
        ).deployments(NAME)
    assert len(cloudflare_api.calls("GET", r"/deployments$")) == 3
    cloudflare_api.inject("GET", r"/versions$", status=429, retry_after=5, times=10)
    started = time.perf_counter()
    with pytest.raises(retry.TransientError):
        api_client(cloudflare_api, retry.RetryPolicy(attempts=10, max_seconds=3)).versions(NAME)
    assert time.perf_counter() - started < 8  # no attempt starts after max_seconds
    assert len(cloudflare_api.calls("GET", r"/versions$")) == 1


@pytest.mark.parametrize(
    ("code", "tail", "transient"),
    [
        (10013, "", True),
        (971, "", True),
        (10000, "", False),
        (10215, "", False),
        (None, "✘ [ERROR] fetch failed", True),
        (None, "✘ [ERROR] Missing entry-point", False),
    ],
)
def test_wrangler_failures_are_classified_by_code_or_connection_error(
    code: int | None, tail: str, transient: bool
) -> None:
    failed = WranglerFailed("wrangler versions deploy failed", code=code, returncode=1, output_tail=tail)
    assert failed.transient is transient


# ------------------------------------------------------------------------------ journal and lock


def test_the_journal_is_appended_atomically_and_says_where_it_stopped(tmp_path: Path) -> None:
    journal.record(tmp_path, Entry(release="r1", event="started", stable="s", stages=(10.0, 100.0)))
    journal.record(tmp_path, Entry(release="r1", event="uploading", tag="r1"))
    journal.record(tmp_path, Entry(release="r1", event="uploaded", new="n", stable="s"))
    journal.record(tmp_path, Entry(release="r1", event="split", new="n", traffic={"n": 0.0, "s": 100.0}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [journal.JOURNAL]  # no temp file left
    last = journal.last_release(tmp_path)
    assert last is not None and not last.finished
    assert (last.stable, last.new) == ("s", "n")
    assert last.where() == "after the split n@0 s@100"
    assert last.entries[0].stages == (10.0, 100.0)
    journal.record(tmp_path, Entry(release="r1", event="done", outcome="passed"))
    journal.record(tmp_path, Entry(release="r2", event="started", stable="n"))
    last = journal.last_release(tmp_path)
    assert last is not None and last.release == "r2" and len(last.entries) == 1
    lines = (tmp_path / journal.JOURNAL).read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["pid"] for line in lines)


def test_a_proxy_release_journals_its_worker_and_its_one_step_deploy(tmp_path: Path) -> None:
    journal.record(tmp_path, Entry(release="p1", event="started", worker="proxy", stable="s"))
    journal.record(tmp_path, Entry(release="p1", event="deploying", worker="proxy"))
    last = journal.last_release(tmp_path)
    assert last is not None and last.worker == "proxy" and not last.finished
    assert last.where() == "while deploying (straight to 100 %)"
    journal.record(tmp_path, Entry(release="p1", event="deployed", worker="proxy", new="n", stable="s"))
    last = journal.last_release(tmp_path)
    assert last is not None and (last.stable, last.new) == ("s", "n")
    assert last.where() == "after deployed n"


def test_an_unreadable_journal_is_bad_input_not_ignored(tmp_path: Path) -> None:
    (tmp_path / journal.JOURNAL).write_text('{"release": "r1", "event": "started"}\n{"release": \n')
    with pytest.raises(UsageError, match="line 2 is unreadable"):
        journal.last_release(tmp_path)


def test_the_release_lock_admits_one_holder(tmp_path: Path) -> None:
    held = r"another release or recovery is running .*\(pid \d+\)"
    with journal.release_lock(tmp_path, "starting a release"), pytest.raises(UsageError, match=held):  # noqa: SIM117
        with journal.release_lock(tmp_path, "starting a release"):
            pass
    with journal.release_lock(tmp_path, "starting a release"):  # released with its holder
        pass


# ------------------------------------------------------------------------------ which version answered


def test_the_canary_check_counts_answers_by_version() -> None:
    answers = answers_by_version([200, 200, 200, 0, 200], ["new", "old", "old", None, None])
    assert answers == {"old": 2, "new": 1, "unknown": 1}
    assert version_check("new", {"new": 20}).passed
    failed = version_check("new", {"old": 20})
    assert not failed.passed and failed.detail == "override not honoured: 20 of 20 answered by old"
    mixed = version_check("new", {"new": 15, "old": 4, "unknown": 1})
    assert mixed.detail == "override not honoured: 5 of 20 answered by old (4), unknown (1)"
    assert not version_check("new", {}).passed


def test_perf_record_reads_answers_by_version(tmp_path: Path) -> None:
    path = tmp_path / "perf.json"
    path.write_text(
        json.dumps(
            {
                "config": {"version_id": "new"},
                "stats": {"requests": 3, "latency_ms": {"p95": 1.5}, "answers_by_version": {"new": 3}},
                "verdict": {"passed": True, "line": "PASS"},
            }
        )
    )
    record = PerfRecord.read(path)
    assert record.answers_by_version == {"new": 3} and record.expected_version == "new"
    assert record.p95_ms == 1.5 and record.passed is True


def test_the_worker_names_its_version_from_the_version_metadata_binding() -> None:
    from tests.unit.bundle import load_bindings_module

    bindings = load_bindings_module()
    env = types.SimpleNamespace(CF_VERSION_METADATA=types.SimpleNamespace(id="v-123", tag="", timestamp=""))
    assert bindings.version_id(env) == "v-123"  # entry.py hands it to the app as IMMCAD_VERSION_ID
    assert bindings.version_id({}) is None


def test_the_fake_refuses_secret_edits_while_the_latest_version_is_not_deployed(
    cloudflare_api: FakeCloudflare,
) -> None:
    """As Cloudflare does (10214 for one secret, 10215 for settings): and a version built for secrets
    starts from the LATEST version's code."""
    deployed, latest = cloudflare_api.seed(NAME, versions=2, deployed=0)
    url = f"{cloudflare_api.base_url}/accounts/{cloudflare_api.account_id}/workers/scripts/{NAME}/secrets"
    headers = {"authorization": f"Bearer {cloudflare_api.token}"}
    refused = httpx.put(url, json={"name": "K", "text": "v1", "type": "secret_text"}, headers=headers)
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == 10214
    script = cloudflare_api.script(NAME)
    assert [v.id for v in script.versions] == [deployed, latest]
    script.versions[-1].modules["worker.js"] = (
        script.versions[-1]
        .modules["worker.js"]
        .__class__("worker.js", "worker.js", "application/javascript+module", b"// latest code")
    )
    cloudflare_api._deploy(NAME, [(latest, 100.0)], {})
    accepted = httpx.put(url, json={"name": "K", "text": "v1", "type": "secret_text"}, headers=headers)
    assert accepted.status_code == 200
    assert script.latest.secrets() == {"K": "v1"}
    assert script.latest.modules["worker.js"].data == b"// latest code"
    assert script.current().traffic() == {script.latest.id: 100.0}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        ("-3", 0.0),
        ("soon", None),  # neither seconds nor a date: the policy's own backoff, not a traceback
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: no wait
    ],
)
def test_retry_after_is_seconds_or_a_date_and_anything_else_is_ignored(
    header: str, expected: float | None
) -> None:
    response = httpx.Response(429, headers={"retry-after": header})
    assert retry_after_seconds(response) == expected
