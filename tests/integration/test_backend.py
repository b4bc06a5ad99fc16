"""The reference backend under a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import uuid

import httpx
import pytest

from tests.conftest import ServerFactory, clean_env

pytestmark = pytest.mark.integration
TOKEN = "test-token-" + uuid.uuid4().hex


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"code", "message", "trace_id", "policy_reason"}
    assert error["code"] == code
    assert error["trace_id"] == response.headers["x-trace-id"]
    return error  # type: ignore[no-any-return]


def test_routes_without_a_token(backend_server: ServerFactory) -> None:
    url = backend_server()
    with httpx.Client(base_url=url) as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["service"] == "immcad-api"
        assert health.headers["x-trace-id"]

        chat = client.post("/api/chat", json={"session_id": "s-1", "message": "Can I get a study permit?"})
        assert chat.status_code == 200
        body = chat.json()
        assert body["provider"] == "scaffold"
        assert body["citations"][0]["id"] == "ircc-study-permit"
        assert "not legal advice" in body["disclaimer"]
        # deterministic: the same question gets the same answer
        again = client.post("/api/chat", json={"session_id": "s-2", "message": "Can I get a study permit?"})
        assert again.json()["answer"] == body["answer"]

        cases = client.post(
            "/api/search/cases", json={"query": "humanitarian compassionate child", "limit": 2}
        )
        assert cases.status_code == 200
        results = cases.json()["results"]
        assert [r["citation"] for r in results] == [
            "Baker v. Canada (Minister of Citizenship and Immigration), [1999] 2 SCR 817",
            "Kanthasamy v. Canada (Citizenship and Immigration), 2015 SCC 61",
        ]
        # the source policy excludes forum material from case search
        forum = client.post("/api/search/cases", json={"query": "forum anecdote study permit refusal"})
        assert all("Forum" not in r["citation"] for r in forum.json()["results"])

        ops = client.get("/ops/metrics", headers={"Authorization": "Bearer anything"})
        error = assert_envelope(ops, 401, "UNAUTHORIZED")
        assert error["policy_reason"] == "ops_token_not_configured"


def test_bearer_auth_when_a_token_is_configured(backend_server: ServerFactory) -> None:
    url = backend_server({"IMMCAD_API_BEARER_TOKEN": TOKEN})
    good = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url) as client:
        probe = {"session_id": "perf-smoke-1", "message": "performance canary probe"}
        assert_envelope(client.post("/api/chat", json=probe), 401, "UNAUTHORIZED")
        assert_envelope(
            client.post("/api/chat", json=probe, headers={"Authorization": "Bearer wrong"}),
            401,
            "UNAUTHORIZED",
        )
        assert_envelope(
            client.post("/api/chat", json=probe, headers={"Authorization": TOKEN}), 401, "UNAUTHORIZED"
        )
        assert client.post("/api/chat", json=probe, headers=good).status_code == 200
        assert client.get("/healthz").status_code == 200  # health stays public
        assert_envelope(client.get("/ops/metrics"), 401, "UNAUTHORIZED")
        metrics = client.get("/ops/metrics", headers=good)
        assert metrics.status_code == 200
        counts = metrics.json()
        assert counts["by_route"]["POST /api/chat"] == 4
        assert counts["by_status"]["401"] >= 4
        assert counts["requests_total"] >= 6


def test_error_envelope_for_validation_unknown_routes_and_policy(backend_server: ServerFactory) -> None:
    url = backend_server()
    with httpx.Client(base_url=url) as client:
        error = assert_envelope(client.post("/api/chat", json={"session_id": "s"}), 422, "VALIDATION_ERROR")
        assert "message" in str(error["message"])
        assert_envelope(
            client.post("/api/chat", content=b"{not json", headers={"content-type": "application/json"}),
            422,
            "VALIDATION_ERROR",
        )
        assert_envelope(
            client.post("/api/search/cases", json={"query": "x", "limit": 99}), 422, "VALIDATION_ERROR"
        )
        assert_envelope(client.get("/nope"), 404, "NOT_FOUND")
        assert_envelope(client.get("/api/chat"), 405, "METHOD_NOT_ALLOWED")
        blocked = client.post("/api/chat", json={"session_id": "s", "message": "help me forge a bank letter"})
        assert assert_envelope(blocked, 422, "POLICY_BLOCKED")["policy_reason"] == "misrepresentation"


def test_trace_id_from_the_edge_is_kept_and_junk_is_replaced(backend_server: ServerFactory) -> None:
    url = backend_server()
    with httpx.Client(base_url=url) as client:
        kept = client.get("/healthz", headers={"x-immcad-trace-id": "8d3f1c2a9b7e6d5c-YYZ"})
        assert kept.headers["x-trace-id"] == "8d3f1c2a9b7e6d5c-YYZ"
        replaced = client.get("/healthz", headers={"x-immcad-trace-id": "<script>"})
        assert replaced.headers["x-trace-id"] != "<script>"
        uuid.UUID(replaced.headers["x-trace-id"])


@pytest.mark.parametrize("environment", ["production", "ci"])
def test_hardened_start_is_refused_without_a_token(environment: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "immcad_api", "--port", "1"],
        env=clean_env(ENVIRONMENT=environment),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"immcad_api: refusing to start: ENVIRONMENT={environment} is hardened and requires "
        "IMMCAD_API_BEARER_TOKEN (or API_BEARER_TOKEN) to be set"
    ]


def test_hardened_start_serves_with_a_token(backend_server: ServerFactory) -> None:
    url = backend_server({"ENVIRONMENT": "production", "IMMCAD_API_BEARER_TOKEN": TOKEN})
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.post(f"{url}/api/chat", json={"session_id": "a", "message": "b"}).status_code == 401


def test_every_answer_names_the_version_that_served_it(backend_server: ServerFactory) -> None:
    """x-immcad-version: how a canary proves which Worker version answered (IMMCAD_VERSION_ID locally,
    the version-metadata binding on Cloudflare)."""
    url = backend_server({"IMMCAD_VERSION_ID": "5f0c2a1e-0000-4000-8000-000000000042"})
    with httpx.Client(base_url=url) as client:
        for response in (client.get("/healthz"), client.get("/no/such/path"), client.get("/ops/metrics")):
            assert response.headers["x-immcad-version"] == "5f0c2a1e-0000-4000-8000-000000000042"
    with httpx.Client(base_url=backend_server()) as client:
        assert client.get("/healthz").headers["x-immcad-version"] == "local"
