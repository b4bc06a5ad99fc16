"""cfops.image without an engine: the build-log parser, labels, context, arguments, pins and Dockerfiles."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cfops import image, output
from cfops.config import ImageTarget, load_settings
from cfops.errors import CommandFailed, MissingToolError, UsageError
from cfops.image.buildlog import FROM_RE, raise_build_error
from tests.conftest import PROJECT_FILES, REPO, copy_project

# What the classic builder streams for a two-stage Dockerfile (recorded, ids shortened): text arrives
# split at arbitrary points, step lines and their newline in separate messages.
RECORDED: list[dict[str, Any]] = [
    {"stream": "Step 1/7 : ARG PYTHON_IMAGE=python:3.12-slim"},
    {"stream": "\n"},
    {"stream": "Step 2/7 : FROM ${PYTHON_IMAGE} AS deps"},
    {"stream": "\n"},
    {"stream": " ---> 9b4aa60dedf1\n"},
    {"stream": "Step 3/7 : RUN pip install x"},
    {"stream": "\n ---> Using cache\n ---> 5b6d59d08c53\n"},
    {"aux": {"ID": "sha256:5b6d59d08c53"}},
    {"stream": "Step 4/7 : FROM ${PYTHON_IMAGE}\n"},
    {"stream": " ---> 9b4aa60dedf1\n"},
    {"stream": "Step 5/7 : COPY --from=deps /opt/venv /opt/venv\n"},
    {"stream": " ---> 1d2e17e41935\n"},
    {"stream": "Step 6/7 : RUN echo one && echo two\n ---> Running in 6a60320d1aad\n"},
    {"stream": "one\ntw"},
    {"stream": "o\n"},
    {"stream": "Removing intermediate container 6a60320d1aad\n ---> d431169c55a3\n"},
    {"stream": "Step 7/7 : LABEL a=b\n ---> Running in c7ce015922d2\n"},
    {"stream": "Removing intermediate container c7ce015922d2\n ---> a8a8e94e7fa6\n"},
    {"aux": {"ID": "sha256:a8a8e94e7fa6"}},
    {"stream": "Successfully built a8a8e94e7fa6\n"},
    {"stream": "Successfully tagged x:y\n"},
]


class Recorder:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []
        self.lines: list[str] = []

    def step_started(self, step: image.Step) -> None:
        self.started.append(step.number)

    def step_finished(self, step: image.Step) -> None:
        self.finished.append(step.number)

    def output(self, step: image.Step | None, line: str) -> None:
        self.lines.append(line)


def test_build_log_parses_steps_cache_hits_stages_and_output() -> None:
    shown = Recorder()
    log = image.BuildLog(shown)
    for message in RECORDED:
        log.feed(message)
    log.finish()
    assert log.error is None
    assert [s.number for s in log.steps] == [1, 2, 3, 4, 5, 6, 7]
    assert shown.started == shown.finished == [1, 2, 3, 4, 5, 6, 7]
    assert [s.cached for s in log.steps] == [False, False, True, False, False, False, False]
    # new layers only: not the base image of a FROM, not a cache hit
    assert log.created == ["1d2e17e41935", "d431169c55a3", "a8a8e94e7fa6"]
    assert log.stages == [("deps", "sha256:5b6d59d08c53")]  # the full id the engine sent
    assert log.image_id == "sha256:a8a8e94e7fa6"
    assert list(log.steps[5].output) == ["one", "two"]  # reassembled across messages
    assert shown.lines == ["one", "two"]  # builder chatter is not output
    assert log.running_container is None


def test_build_log_error_names_the_running_step_and_keeps_its_output() -> None:
    log = image.BuildLog(Recorder())
    for message in RECORDED[:13]:
        log.feed(message)
    log.feed({"stream": "about to fail\n"})
    assert log.running_container == "6a60320d1aad"
    log.feed(
        {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c x' returned a non-zero code: 3"}}
    )
    log.finish()
    assert log.current is not None and log.current.number == 6 and not log.current.finished
    with pytest.raises(CommandFailed) as info:
        raise_build_error(log, "base:1")
    message = str(info.value)
    assert message.startswith("build failed at step 6/7 (RUN echo one && echo two): The command")
    assert "non-zero code: 3" in message
    assert info.value.exit_code == 1
    assert info.value.output_tail.splitlines()[-1] == "about to fail"


def test_unreachable_base_image_is_a_missing_prerequisite() -> None:
    log = image.BuildLog(Recorder())
    log.feed({"stream": "Step 1/3 : FROM python:3.12-slim\n"})
    log.feed(
        {
            "error": "pull access denied for python",
            "errorDetail": {
                "message": "Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io"
            },
        }
    )
    with pytest.raises(MissingToolError) as info:
        raise_build_error(log, "python:3.12-slim")
    assert info.value.exit_code == 2
    assert "scripts/make_base_image.sh" in str(info.value)
    assert "PYTHON_IMAGE" in str(info.value)


@pytest.mark.parametrize(
    ("instruction", "stage"),
    [("FROM base AS deps", "deps"), ("from --platform=linux/amd64 base as b2", "b2"), ("FROM base", None)],
)
def test_from_lines(instruction: str, stage: str | None) -> None:
    match = FROM_RE.match(instruction)
    assert match is not None and match[1] == stage


def write_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1.2.3"\n\n[tool.cfops]\n')
    (root / "Dockerfile").write_text("FROM scratch\n")
    return root


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
    return subprocess.run(
        ["git", "-C", str(root), *identity, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_labels_name_the_commit_and_are_stable_between_builds(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "one")
    git(root, "remote", "add", "origin", "https://user:s3cret-token@example.invalid/org/repo.git")
    settings = load_settings(root, {"PYTHON_IMAGE": "base:7"})
    target = ImageTarget(dockerfile=root / "Dockerfile", tag="registry.local:5000/team/app:dev")
    first = image.provenance(settings, target)
    labels = first.labels
    assert labels["org.opencontainers.image.revision"] == git(root, "rev-parse", "HEAD")
    assert labels["org.opencontainers.image.created"] == git(root, "log", "-1", "--format=%cI")
    assert labels["org.opencontainers.image.source"] == "https://example.invalid/org/repo.git"
    assert labels["org.opencontainers.image.version"] == "1.2.3"
    assert labels["org.opencontainers.image.title"] == "app"
    assert labels["org.opencontainers.image.base.name"] == "base:7"
    assert not first.dirty
    # a second build of the same commit carries the same labels: the label step stays a cache hit
    assert image.provenance(settings, target).labels == labels
    (root / "Dockerfile").write_text("FROM scratch\nENV A=1\n")
    assert image.provenance(settings, target).dirty
    epoch = load_settings(root, {"SOURCE_DATE_EPOCH": "86400"})
    assert (
        image.provenance(epoch, target).labels["org.opencontainers.image.created"]
        == "1970-01-02T00:00:00+00:00"
    )
    with pytest.raises(UsageError):
        image.provenance(load_settings(root, {"SOURCE_DATE_EPOCH": "yesterday"}), target)


def test_labels_outside_git(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    settings = load_settings(root, {"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    prov = image.provenance(settings, ImageTarget(dockerfile=root / "Dockerfile", tag="app"))
    assert prov.labels["org.opencontainers.image.revision"] == "unknown"
    assert prov.labels["org.opencontainers.image.source"] == root.resolve().as_uri()


def test_assignments_read_names_from_the_environment_and_refuse_secrets_on_argv(tmp_path: Path) -> None:
    settings = load_settings(
        write_project(tmp_path / "p"), {"ENVIRONMENT": "production", "IMMCAD_API_BEARER_TOKEN": "tok-123456"}
    )
    values = image.parse_assignments(
        settings, ["ENVIRONMENT", "LEVEL=debug", "IMMCAD_API_BEARER_TOKEN"], what="--env"
    )
    assert values == {"ENVIRONMENT": "production", "LEVEL": "debug", "IMMCAD_API_BEARER_TOKEN": "tok-123456"}
    assert output.redact("tok-123456") == "***"
    with pytest.raises(UsageError, match="secret value on the command line"):
        image.parse_assignments(settings, ["GEMINI_API_KEY=abcdef"], what="--env")
    with pytest.raises(UsageError, match="not set in the environment"):
        image.parse_assignments(settings, ["MISSING_NAME"], what="--env")
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        image.parse_assignments(settings, ["=x"], what="--build-arg")


def test_settings_defaults_and_overrides(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p")
    settings = load_settings(root, {})
    assert settings.image.python_image == "python:3.12-slim"
    assert settings.image.spike.dockerfile == root.resolve() / "backend-cloudflare/Dockerfile"
    assert settings.image.origin.tag == "immcad-backend-origin:local"
    assert load_settings(root, {"PYTHON_IMAGE": "local/base:1"}).image.python_image == "local/base:1"
    repo = load_settings(REPO, {})
    assert repo.image.spike.tag == "immcad-backend-spike:local"
    assert repo.image.spike.dockerfile == REPO / "backend-cloudflare/Dockerfile"


def test_dockerfile_must_be_inside_the_context(tmp_path: Path) -> None:
    settings = load_settings(write_project(tmp_path / "p"), {})
    (tmp_path / "outside.Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(UsageError, match="outside the build context"):
        image.context_files(settings, tmp_path / "outside.Dockerfile")
    with pytest.raises(UsageError, match="not found"):
        image.context_files(settings, Path("nope.Dockerfile"))


IMAGE_FILES = ("Dockerfile", "backend-cloudflare/Dockerfile", ".dockerignore", "requirements/image.txt")


@pytest.mark.parametrize("which", image.IMAGES)
def test_repository_context_is_small_and_holds_only_what_the_image_needs(which: image.Which) -> None:
    settings = load_settings(REPO, {})
    target = image.target_for(settings, which)
    files = image.context_files(settings, target.dockerfile)
    archive, count = image.build_context(settings, target.dockerfile)
    size = archive.seek(0, 2)
    archive.close()
    assert count == len(files)
    assert size <= 1 << 20, f"{which} context is {size} bytes"
    assert {f.split("/")[0] for f in files} <= {
        "src",
        "config",
        "data",
        "backend-cloudflare",
        "requirements",
        "Dockerfile",
        ".dockerignore",  # the client always sends it
    }
    assert not [f for f in files if f.startswith(("src/cfops", "backend-cloudflare/node_modules", "tests"))]
    assert "requirements/image.txt" in files
    assert target.dockerfile.relative_to(REPO).as_posix() in files


def test_context_leaves_out_secrets_tooling_and_caches(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p", (*PROJECT_FILES, *IMAGE_FILES))
    planted = [
        ".env",
        "backend-cloudflare/.dev.vars",
        ".git/config",
        ".nox/tests/bin/python",
        ".venv/bin/python",
        "artifacts/spike-image.json",
        "backend-cloudflare/node_modules/wrangler/package.json",
        "src/immcad_api/__pycache__/main.cpython-311.pyc",
        "data/.DS_Store",
    ]
    for rel in planted:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("SECRET_TOKEN=do-not-send\n")
    settings = load_settings(root, {})
    files = image.context_files(settings, settings.image.origin.dockerfile)
    assert "src/immcad_api/main.py" in files and "config/source_policy.yaml" in files
    assert not [f for f in files if any(f == p or f.startswith(p.split("/")[0] + "/.") for p in planted)]
    assert not set(planted) & set(files)
    assert not [
        f for f in files if f.startswith((".git", ".nox", ".venv", "artifacts")) or "__pycache__" in f
    ]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def test_image_requirements_are_the_lock_pins_with_hashes() -> None:
    image_pins = _pins(REPO / "requirements/image.txt")
    lock = _pins(REPO / "requirements/lock.txt")
    assert {"fastapi", "uvicorn", "pyyaml"} <= set(image_pins)
    drift = {
        name: (version, lock.get(name)) for name, version in image_pins.items() if lock.get(name) != version
    }
    assert not drift, (
        f"requirements/image.txt differs from the lock (recompile it, see requirements/image.in): {drift}"
    )
    text = (REPO / "requirements/image.txt").read_text()
    assert text.count("--hash=sha256:") >= len(image_pins)


@pytest.mark.parametrize("path", ["Dockerfile", "backend-cloudflare/Dockerfile"])
def test_dockerfiles_follow_the_contract(path: str) -> None:
    text = (REPO / path).read_text()
    instructions = [line.split()[0].upper() for line in text.splitlines() if line and line[0].isalpha()]
    first_arg = next(line for line in text.splitlines() if line.startswith("ARG"))
    assert first_arg == "ARG PYTHON_IMAGE=python:3.12-slim"
    assert instructions.count("FROM") >= 2  # multi-stage
    assert re.search(r"^USER (?!root|0)\S+", text, re.MULTILINE)
    assert "HEALTHCHECK" in instructions and "/healthz" in text
    assert "EXPOSE" in instructions
    assert "requirements/image.txt" in text and "--require-hashes" in text
    source = "backend-cloudflare/src/immcad_api" if path.startswith("backend") else "src/immcad_api"
    assert re.search(rf"^COPY {source} /app/immcad_api$", text, re.MULTILINE)
