"""`nox -s spike_image` / `nox -s origin_image` against a real Docker Engine.

Needs an engine and the base image named by PYTHON_IMAGE (python:3.12-slim by default; where Docker Hub is
out of reach, scripts/make_base_image.sh builds one). Without them these tests skip with the reason,
unless CFOPS_REQUIRE_DOCKER=1 (set by .ci/run), which turns the skip into a failure.

Everything the tests create carries a per-session marker: images the label org.immcad.cfops.test=<run>
and tags cfops-test-*:<run>, failing/interrupted builds a marker in their RUN commands. That is what the
leftover checks look for, so they cannot be fooled (or tripped) by other images on the same engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from cfops import image
from cfops.config import load_settings
from cfops.image.engine import remove_untagged
from tests.conftest import PROJECT_FILES, REPO, clean_env, copy_project

# One worker runs the whole module under parallel runs: both images are built once per session.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("docker-images")]

RUN_ID = uuid.uuid4().hex[:10]
TEST_LABEL = "org.immcad.cfops.test"
IMAGE_FILES = ("Dockerfile", "backend-cloudflare/Dockerfile", ".dockerignore", "requirements/image.txt")
GIT_IDENTITY = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CFOPS_REQUIRE_DOCKER") == "1":
        pytest.fail(f"CFOPS_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(f"NO DOCKER ENGINE FOR THE IMAGE TESTS: {reason}")


def _images(client: docker.DockerClient, **filters: Any) -> list[Any]:
    """``images.list``, again if an image vanished between the engine's list and the SDK's inspect of
    it: other tests (the release rehearsal's spike image) build and remove images at the same time."""
    for _ in range(5):
        try:
            return list(client.images.list(**filters))
        except docker.errors.ImageNotFound:
            continue
    return list(client.images.list(**filters))


def _our_dangling(client: docker.DockerClient) -> set[str]:
    """Dangling images this session's tests made: labelled with the run, or built from a Dockerfile that
    names it. Other tests build images at the same time (the release rehearsal rebuilds the spike
    image, which leaves its predecessor dangling for a moment), so the engine-wide list is no witness."""
    ours = set()
    for found in _images(client, filters={"dangling": True}):
        if (found.labels or {}).get(TEST_LABEL) == RUN_ID:
            ours.add(found.id)
            continue
        try:
            history = " ".join(str(h.get("CreatedBy", "")) for h in client.api.history(found.id))
        except docker.errors.NotFound:
            continue  # removed by its owner since the list
        if RUN_ID in history:
            ours.add(found.id)
    return ours


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.DockerClient]:
    settings = load_settings(REPO, os.environ)
    problem = image.engine_problem(settings)
    if problem:
        _unavailable(problem)
    client = docker.DockerClient.from_env(timeout=120)
    base = settings.image.python_image
    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        _unavailable(f"base image {base} is not present (scripts/make_base_image.sh, then set PYTHON_IMAGE)")
    yield client
    # Session teardown: remove what the tests tagged, then prove nothing of theirs is left behind.
    for tagged in _images(client, filters={"label": f"{TEST_LABEL}={RUN_ID}"}):
        for tag in tagged.tags:
            if tag.startswith("cfops-test-"):
                client.images.remove(tag)
    for tag in [t for i in _images(client) for t in i.tags if t.startswith("cfops-test-") and RUN_ID in t]:
        client.images.remove(tag)  # the -deps stage tags (the label sits on final images only)
    containers = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"})
    dangling = _our_dangling(client)
    client.close()
    assert not containers, f"containers left by the tests: {containers}"
    assert not dangling, f"dangling images left: {dangling}"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *GIT_IDENTITY, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, engine: docker.DockerClient) -> Path:
    """A copy of this project (backend, Worker files, Dockerfiles) as its own git repository."""
    root = copy_project(tmp_path_factory.mktemp("image") / "project", (*PROJECT_FILES, *IMAGE_FILES))
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "fixture")
    return root


def _env(project: Path, **extra: str) -> dict[str, str]:
    return clean_env(CFOPS_ROOT=str(project), **extra)


@pytest.fixture(scope="session")
def built(project: Path) -> dict[str, image.ImageReport]:
    """Both images, built once per session through the library (what the release pipeline calls)."""
    settings = load_settings(project, _env(project))
    reports = {}
    for which in image.IMAGES:
        started = time.perf_counter()
        reports[which] = image.build_image(
            settings, which, tag=f"cfops-test-{which}:{RUN_ID}", labels={TEST_LABEL: RUN_ID}
        )
        print(f"built {which} in {time.perf_counter() - started:.1f} s")  # measured for the CI budget
    return reports


def cfops_image(
    project: Path, *args: str, timeout: float = 240, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cfops.image", *args],
        cwd=project,
        env=_env(project, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _containers(engine: docker.DockerClient) -> list[str]:
    return [c.name for c in engine.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"})]


# ------------------------------------------------------------------------------- both real images


@pytest.mark.parametrize("which", image.IMAGES)
def test_build_is_labelled_reported_and_a_rebuild_is_all_cache_hits(
    which: image.Which, project: Path, built: dict[str, image.ImageReport], engine: docker.DockerClient
) -> None:
    first = built[which]
    labels = engine.images.get(first.image_id).labels
    assert labels["org.opencontainers.image.revision"] == _git(project, "rev-parse", "HEAD")
    assert labels["org.opencontainers.image.created"] == _git(project, "log", "-1", "--format=%cI")
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"] == project.resolve().as_uri()
    assert labels[TEST_LABEL] == RUN_ID
    assert first.stage_tags == [f"cfops-test-{which}-deps:{RUN_ID}"]
    assert engine.images.get(first.stage_tags[0])  # the dependency stage stays as tagged cache

    result = cfops_image(
        project, which, "--tag", f"cfops-test-{which}:{RUN_ID}", "--label", f"{TEST_LABEL}={RUN_ID}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((project / "artifacts" / f"{which}-image.json").read_text())
    # same commit, same inputs: every step a cache hit and the very same image
    assert report["steps_built"] == 0, result.stdout
    assert report["image_id"] == first.image_id
    assert f"cfops-test-{which}:{RUN_ID}" in report["tags"]
    assert report["layers"] >= 3
    assert 0 < report["context_bytes"] <= 1 << 20
    assert report["size_bytes"] > report["base_size_bytes"] > 0
    assert report["added_bytes"] <= 80 << 20
    assert (
        report["labels"]["org.opencontainers.image.revision"] == labels["org.opencontainers.image.revision"]
    )
    assert report["build_seconds"] > 0
    if which == "spike":
        assert "synced the Worker bundle" in result.stdout
        assert (project / "backend-cloudflare/sync-manifest.json").is_file()


@pytest.mark.parametrize("which", image.IMAGES)
def test_image_serves_healthz_through_the_mapped_port_as_non_root(
    which: image.Which, project: Path, built: dict[str, image.ImageReport], engine: docker.DockerClient
) -> None:
    settings = load_settings(project, _env(project))
    name = f"cfops-test-{which}-{RUN_ID}"
    with image.run_container(
        settings, built[which].image_id, name=name, labels={TEST_LABEL: RUN_ID}
    ) as running:
        assert running.url.startswith("http://127.0.0.1:")
        response = httpx.get(f"{running.url}/healthz", timeout=5)
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        container = engine.containers.get(running.container_id)
        assert container.attrs["Config"]["User"] == "app:app"
        exit_code, out = container.exec_run(["id", "-u"])
        assert exit_code == 0 and int(out) != 0
        bindings = container.attrs["HostConfig"]["PortBindings"]["8000/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]  # never published on other interfaces
        # the app cannot rewrite its own code
        exit_code, _ = container.exec_run(["sh", "-c", "touch /app/immcad_api/x"])
        assert exit_code != 0
    assert name not in _containers(engine)
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(name)


def test_cli_run_keep_leaves_a_serving_container(
    project: Path, built: dict[str, image.ImageReport], engine: docker.DockerClient
) -> None:
    result = cfops_image(
        project,
        "origin",
        "--tag",
        f"cfops-test-origin:{RUN_ID}",
        "--label",
        f"{TEST_LABEL}={RUN_ID}",
        "--run",
        "--keep",
    )
    run = json.loads((project / "artifacts/origin-image.json").read_text()).get("run") or {}
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "answered 200" in result.stdout and f"URL: {run['url']}" in result.stdout
        assert run["healthz_status"] == 200 and run["healthz"]["status"] == "ok"
        assert run["uid"] != 0 and run["kept"]
        assert f"docker rm -f {run['container']}" in result.stdout
        assert engine.containers.get(run["container"]).status == "running"
        assert httpx.get(f"{run['url']}/healthz", timeout=5).status_code == 200
    finally:
        if run.get("container"):
            engine.api.remove_container(run["container"], force=True)


def test_rebuild_after_a_change_removes_the_image_it_replaced(
    mini: Path, engine: docker.DockerClient
) -> None:
    tag = f"cfops-test-mini:{RUN_ID}"
    ids = []
    for version in ("1", "2"):
        (mini / "Dockerfile").write_text(
            f"ARG PYTHON_IMAGE\nFROM ${{PYTHON_IMAGE}}\nRUN echo {RUN_ID}-{version} > /v\n"
        )
        result = cfops_image(mini, "origin", "--tag", tag, "--label", f"{TEST_LABEL}={RUN_ID}")
        assert result.returncode == 0, result.stdout + result.stderr
        ids.append(json.loads((mini / "artifacts/origin-image.json").read_text())["image_id"])
    assert ids[0] != ids[1]
    assert engine.images.get(tag).id == ids[1]
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(ids[0])  # untagged by the rebuild, so removed rather than left dangling
    assert not _our_dangling(engine)


def test_env_is_given_at_run_time_and_secrets_go_by_name(
    project: Path, built: dict[str, image.ImageReport], engine: docker.DockerClient
) -> None:
    tag = ["--tag", f"cfops-test-origin:{RUN_ID}", "--label", f"{TEST_LABEL}={RUN_ID}"]
    # hardened without a token: the app refuses to start, and the run says why
    refused = cfops_image(project, "origin", *tag, "--run", "--env", "ENVIRONMENT=production")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    err = refused.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in refused.stdout + err
    assert "exited with 2 before /healthz answered" in err
    assert "refusing to start" in err and "last log lines" in refused.stdout
    # with the token named (its value comes from the environment, never from argv)
    token = f"tok-{uuid.uuid4().hex}"
    ok = cfops_image(
        project,
        "origin",
        *tag,
        "--run",
        "--env",
        "ENVIRONMENT=production",
        "--env",
        "IMMCAD_API_BEARER_TOKEN",
        IMMCAD_API_BEARER_TOKEN=token,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert token not in ok.stdout + ok.stderr
    assert token not in (project / "artifacts/origin-image.json").read_text()
    assert not _containers(engine)


# ------------------------------------------------------------------- failures and interruptions


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A tiny project for Dockerfiles that fail, hang or never become healthy."""
    root = tmp_path / "mini"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "mini"\nversion = "0"\n\n[tool.cfops]\n')
    return root


def _leftovers(engine: docker.DockerClient, marker: str, images_before: set[str]) -> list[str]:
    """Containers and images that a build whose RUN commands carry ``marker`` left behind."""
    found = [
        f"container {c['Id'][:12]}"
        for c in engine.api.containers(all=True)
        if marker in str(c.get("Command", ""))
    ]
    for image_id in {i["Id"] for i in engine.api.images(all=True)} - images_before:
        history = " ".join(str(h.get("CreatedBy", "")) for h in engine.api.history(image_id))
        if marker in history:
            found.append(f"image {image_id[:19]}")
    return found


def _all_images(engine: docker.DockerClient) -> set[str]:
    return {i["Id"] for i in engine.api.images(all=True)}


def test_failing_run_step_exits_1_naming_the_step_and_leaves_nothing(
    mini: Path, engine: docker.DockerClient
) -> None:
    marker = f"m{uuid.uuid4().hex[:12]}"
    (mini / "fail.Dockerfile").write_text(
        "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\n"
        f"RUN echo layer-{marker} > /marker\n"
        f'RUN echo "compiling {marker}" && echo "error: no such thing" && exit 3\n'
    )
    before = _all_images(engine)
    result = cfops_image(
        mini, "origin", "--dockerfile", "fail.Dockerfile", "--tag", f"cfops-test-fail:{RUN_ID}"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: build failed at step 4/")
    assert f'(RUN echo "compiling {marker}"' in err and "returned a non-zero code: 3" in err
    assert "last output of step 4/" in result.stdout
    assert "error: no such thing" in result.stdout  # the step's own last lines
    assert _leftovers(engine, marker, before) == []
    assert not (mini / "artifacts").exists()  # nothing reported for an image that does not exist


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_interrupted_build_leaves_no_container_and_no_layers(mini: Path, engine: docker.DockerClient) -> None:
    marker = f"m{uuid.uuid4().hex[:12]}"
    (mini / "slow.Dockerfile").write_text(
        "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\n"
        f"RUN echo layer-{marker} > /marker\n"
        f'RUN echo "$((40+2))-{marker}" && sleep 120\n'
    )
    before = _all_images(engine)
    log = mini / "out.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cfops.image", "origin", "--dockerfile", "slow.Dockerfile", "--verbose"],
            cwd=mini,
            env=_env(mini),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        # the slow step is running (its own output, not the echoed instruction, says so)
        _wait_for(lambda: f"42-{marker}" in log.read_text(), 120, "the slow RUN step to start")
        running = [c for c in engine.api.containers() if marker in str(c.get("Command"))]
        assert running, f"no build container; cfops exited {proc.poll()} after:\n{log.read_text()[-3000:]}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted" in log.read_text()
    assert _leftovers(engine, marker, before) == []


@pytest.fixture
def held_layer(engine: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """An untagged layer (labelled with the run) and a stopped container that uses it, as a cancelled
    build leaves them while the engine is still removing the step's container."""
    base = os.environ.get("PYTHON_IMAGE", "python:3.12-slim")
    maker = engine.containers.run(base, ["sh", "-c", f"echo {RUN_ID} > /m"], detach=True)
    try:
        maker.wait(timeout=60)
        layer = engine.api.commit(maker.id, conf={"Labels": {TEST_LABEL: RUN_ID}})["Id"]
    finally:
        maker.remove(force=True)
    holder = engine.api.create_container(layer, ["true"], labels={TEST_LABEL: RUN_ID})["Id"]
    yield layer, holder
    with contextlib.suppress(docker.errors.NotFound):
        engine.api.remove_container(holder, force=True)
    with contextlib.suppress(docker.errors.ImageNotFound):
        engine.api.remove_image(layer)


def _timed_removal(engine: docker.DockerClient, layer: str, patience: float) -> tuple[list[str], float]:
    """What ``remove_untagged`` left held, and how long it took."""
    started = time.monotonic()
    held = remove_untagged(engine, [layer], patience=patience)
    return held, time.monotonic() - started


def test_a_layer_waits_for_the_container_the_engine_is_still_removing(
    engine: docker.DockerClient, held_layer: tuple[str, str]
) -> None:
    # The CI failure this covers: Ctrl-C during a build; the engine was still removing the step's
    # container when cfops removed the layers, so the layer under it was left dangling.
    layer, holder = held_layer
    remover = threading.Timer(1.0, engine.api.remove_container, args=(holder,))
    remover.start()
    try:
        held, seconds = _timed_removal(engine, layer, patience=30)
    finally:
        remover.join()
    assert held == []
    assert seconds >= 1.0  # it did wait for the container
    with pytest.raises(docker.errors.ImageNotFound):
        engine.api.inspect_image(layer)


def test_a_layer_a_container_keeps_is_reported_once_patience_runs_out(
    engine: docker.DockerClient, held_layer: tuple[str, str]
) -> None:
    held, seconds = _timed_removal(engine, held_layer[0], patience=0.6)
    assert held == [held_layer[0]]
    assert 0.6 <= seconds < 10
    assert (
        engine.api.inspect_image(held_layer[0])["Id"] == held_layer[0]
    )  # left for the user, who is told its id


UNHEALTHY = """\
import http.server, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503)
        self.end_headers()

print("unhealthy-MARKER listening", flush=True)
http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""


def _unhealthy(mini: Path) -> str:
    marker = f"m{uuid.uuid4().hex[:12]}"
    (mini / "unhealthy.py").write_text(UNHEALTHY.replace("MARKER", marker))
    (mini / "unhealthy.Dockerfile").write_text(
        "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\nCOPY unhealthy.py /unhealthy.py\nEXPOSE 8000\n"
        'CMD ["python3", "/unhealthy.py"]\n'
    )
    return marker


def test_never_healthy_container_exits_1_with_its_logs_and_is_removed(
    mini: Path, engine: docker.DockerClient
) -> None:
    marker = _unhealthy(mini)
    result = cfops_image(
        mini,
        "origin",
        "--dockerfile",
        "unhealthy.Dockerfile",
        "--tag",
        f"cfops-test-unhealthy:{RUN_ID}",
        "--label",
        f"{TEST_LABEL}={RUN_ID}",
        "--run",
        "--health-timeout",
        "4",
    )
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "did not answer 200 on /healthz within 4 s (last: HTTP 503)" in err
    assert "last log lines of container" in result.stdout
    assert f"unhealthy-{marker} listening" in result.stdout  # the container's own log
    assert "GET /healthz" in result.stdout
    assert _containers(engine) == []


def test_interrupted_run_removes_the_container(mini: Path, engine: docker.DockerClient) -> None:
    marker = _unhealthy(mini)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cfops.image",
            "origin",
            "--dockerfile",
            "unhealthy.Dockerfile",
            "--tag",
            f"cfops-test-unhealthy:{RUN_ID}",
            "--label",
            f"{TEST_LABEL}={RUN_ID}",
            "--run",
            "--health-timeout",
            "120",
        ],
        cwd=mini,
        env=_env(mini),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def serving() -> bool:
        for container in engine.containers.list(filters={"label": f"{TEST_LABEL}={RUN_ID}"}):
            if marker in container.logs().decode(errors="replace"):
                return True
        return False

    try:
        _wait_for(serving, 120, "the run container to serve")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _containers(engine) == []


def test_no_engine_is_exit_2_in_one_line(tmp_path: Path) -> None:
    dead = tmp_path / "nothing-listens-here.sock"
    result = subprocess.run(
        [sys.executable, "-m", "cfops.image", "origin", "--no-sync"],
        cwd=REPO,
        env=clean_env(DOCKER_HOST=f"unix://{dead}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"no Docker Engine reachable at unix://{dead} (DOCKER_HOST)" in err
    assert "dockerd" in err and "DOCKER_HOST" in err
    assert result.stdout == ""
