"""`cfops image`: build a container image (spike or origin) through the Docker Engine API.

Builds ``backend-cloudflare/Dockerfile`` (spike: the synced Worker bundle, synced first) or ``Dockerfile``
(origin: the backend from src/) with the repository root as the context, streams the build as step lines,
labels the image with its provenance (OCI labels) and reports id, tags, size, layers, context size and
build time to ``artifacts/<name>-image.json``. ``--run`` then starts the image on 127.0.0.1, waits for
``/healthz`` and removes the container again (unless ``--keep``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import docker
import docker.errors
import httpx
import requests
from docker.utils.build import create_archive, exclude_paths, match_tag
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cfops import cli, output, procs
from cfops.config import ImageTarget, Settings, is_secret_name
from cfops.errors import CommandFailed, ConfigError, MissingToolError, ServiceError, UsageError
from cfops.report import write_json
from cfops.sync import sync

Which = Literal["spike", "origin"]
IMAGES: tuple[Which, ...] = ("spike", "origin")
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
RUN_LABEL = "org.immcad.cfops.run"
_OUTPUT_TAIL = 15
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_RUNNING_RE = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
_RESULT_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
_FROM_RE = re.compile(r"^FROM\s+(?:--\S+\s+)*\S+(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
# What the engine says when it cannot get the base image: the fix is a local base, not a retry.
_PULL_FAILURE_RE = re.compile(
    r"pull access denied|repository does not exist|manifest unknown|not found: manifest|"
    r"registry-1\.docker\.io|dial tcp|no such host|TLS handshake timeout|i/o timeout",
    re.IGNORECASE,
)


# ------------------------------------------------------------------------------------------- engine


def engine_address(env: Mapping[str, str]) -> str:
    host = env.get("DOCKER_HOST", "").strip()
    return f"{host} (DOCKER_HOST)" if host else f"{DEFAULT_SOCKET} (the default; DOCKER_HOST is unset)"


def connect(settings: Settings, *, probe_timeout: float = 5.0) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the default socket), or MissingToolError (exit 2)."""
    try:
        # version="auto" asks the engine for its API version: this is the reachability probe.
        client = docker.DockerClient.from_env(environment=dict(settings.env), timeout=int(probe_timeout))
    except docker.errors.DockerException as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingToolError(
            f"no Docker Engine reachable at {engine_address(settings.env)}: {_short(detail)}; "
            "start one (sudo dockerd &, or sudo systemctl start docker) or set DOCKER_HOST to a running one"
        ) from None
    client.api.timeout = 120  # later calls (remove, inspect, logs) may wait on a busy engine
    return client


def engine_problem(settings: Settings) -> str | None:
    """Why no Docker Engine can be used here (one line), or None when one answers."""
    try:
        connect(settings).close()
    except MissingToolError as exc:
        return str(exc)
    return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def same_image(one: str | None, other: str | None) -> bool:
    """Whether two image ids (full ``sha256:…`` or the builder's 12-digit short form) name one image."""
    if not one or not other:
        return False
    a, b = one.removeprefix("sha256:"), other.removeprefix("sha256:")
    return a.startswith(b) or b.startswith(a)


# ------------------------------------------------------------------------------------------ context


def dockerignore_patterns(root: Path) -> list[str]:
    """The .dockerignore patterns, read as the Docker CLI reads them (comments and blanks dropped)."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _dockerfile_in_context(settings: Settings, dockerfile: Path) -> str:
    path = dockerfile if dockerfile.is_absolute() else settings.root / dockerfile
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"Dockerfile {dockerfile} not found (fix [tool.cfops.image] or --dockerfile)")
    if not path.is_relative_to(settings.root):
        raise UsageError(f"Dockerfile {path} is outside the build context {settings.root}")
    return path.relative_to(settings.root).as_posix()


def context_files(settings: Settings, dockerfile: Path) -> list[str]:
    """The paths the build context holds (after .dockerignore), as the engine will see them."""
    rel = _dockerfile_in_context(settings, dockerfile)
    return sorted(exclude_paths(str(settings.root), dockerignore_patterns(settings.root), dockerfile=rel))


def build_context(settings: Settings, dockerfile: Path) -> tuple[IO[bytes], int]:
    """The build context as an uncompressed tar in a temporary file at its start, and its entry count."""
    files = context_files(settings, dockerfile)
    archive: IO[bytes] = create_archive(root=str(settings.root), files=files)
    return archive, len(files)


# ------------------------------------------------------------------------------------------- labels


def _git(settings: Settings, *args: str) -> str | None:
    try:
        result = procs.run(["git", "-C", str(settings.root), *args], check=False, echo=False, timeout=15)
    except (MissingToolError, CommandFailed):
        return None
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else None


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def project_version(root: Path) -> str:
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"
    version = data.get("project", {}).get("version")
    return str(version) if version else "unknown"


@dataclass(frozen=True, kw_only=True)
class Provenance:
    revision: str
    dirty: bool
    labels: dict[str, str]


def provenance(settings: Settings, target: ImageTarget) -> Provenance:
    """OCI labels for the image.

    ``created`` is the commit time (or SOURCE_DATE_EPOCH), not the wall clock: a label that changed on
    every build would make the last step a cache miss and the image id new each time, so a no-change
    rebuild would neither hit the cache nor keep the image id.
    """
    # Three short git processes at once: started one after another they cost a no-change rebuild more
    # than the engine's own work on a loaded machine.
    with ThreadPoolExecutor(max_workers=3) as pool:
        head_job = pool.submit(_git, settings, "log", "-1", "--format=%H%n%cI")
        status_job = pool.submit(_git, settings, "status", "--porcelain", "--untracked-files=no")
        remote = None if settings.image.source else pool.submit(_git, settings, "remote", "get-url", "origin")
        head = (head_job.result() or "").split("\n")
        dirty = bool(status_job.result())
        origin = remote.result() if remote else None
    revision, committed = (head[0], head[1]) if len(head) == 2 else ("unknown", None)
    epoch = settings.env.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            created = datetime.fromtimestamp(int(epoch), tz=UTC).isoformat()
        except ValueError:
            raise UsageError(f"SOURCE_DATE_EPOCH must be seconds since 1970, got {epoch!r}") from None
    else:
        created = committed or datetime.now(tz=UTC).isoformat(timespec="seconds")
    source = settings.image.source or origin or settings.root.as_uri()
    labels = {
        "org.opencontainers.image.title": _split_tag(target.tag)[0].rsplit("/", 1)[-1],
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": _strip_credentials(source),
        "org.opencontainers.image.version": project_version(settings.root),
        "org.opencontainers.image.base.name": settings.image.python_image,
    }
    return Provenance(revision=revision, dirty=dirty, labels=labels)


# ---------------------------------------------------------------------------------------- build log


@dataclass
class Step:
    number: int
    total: int
    instruction: str
    started: float
    cached: bool = False
    image_id: str | None = None
    container_id: str | None = None
    seconds: float = 0.0
    finished: bool = False
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_OUTPUT_TAIL * 4))

    @property
    def label(self) -> str:
        return f"step {self.number}/{self.total} ({_short(self.instruction, 90)})"


class Display(Protocol):
    def step_started(self, step: Step) -> None: ...
    def step_finished(self, step: Step) -> None: ...
    def output(self, step: Step | None, line: str) -> None: ...


class BuildLog:
    """Turns the engine's JSON build messages into steps: number, instruction, cached, image, output.

    The classic builder's stream is text in JSON envelopes, split at arbitrary points; lines are
    reassembled here before they are parsed.
    """

    def __init__(self, display: Display) -> None:
        self.display = display
        self.steps: list[Step] = []
        # (stage name, image id of its last step) for every completed stage except the last one
        self.stages: list[tuple[str, str]] = []
        self.created: list[str] = []  # image ids this build made (not cache hits): removed on failure
        self.image_id: str | None = None
        self.error: str | None = None
        self._buffer = ""
        self._stage_name: str | None = None
        self._stage_index = -1

    @property
    def current(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def running_container(self) -> str | None:
        step = self.current
        return step.container_id if step and step.image_id is None else None

    def feed(self, message: Mapping[str, Any]) -> None:
        if "errorDetail" in message or "error" in message:
            detail = message.get("errorDetail") or {}
            self.error = str(detail.get("message") or message.get("error") or "unknown build error").strip()
            return
        aux = message.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = message.get("stream")
        if isinstance(text, str):
            self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._line(line)
        status = message.get("status")
        if isinstance(status, str) and not message.get("progressDetail"):
            # Pull progress of a base image: one line per layer state, not per byte.
            ident = message.get("id")
            self.display.output(self.current, f"{ident}: {status}" if ident else status)

    def finish(self) -> None:
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        self._end_step(time.perf_counter(), completed=self.error is None)

    def _line(self, line: str) -> None:
        now = time.perf_counter()
        match = _STEP_RE.match(line)
        if match:
            self._end_step(now, completed=True)
            new = Step(number=int(match[1]), total=int(match[2]), instruction=match[3].strip(), started=now)
            from_match = _FROM_RE.match(new.instruction)
            if from_match:
                self._end_stage()
                self._stage_index += 1
                self._stage_name = from_match[1] or f"stage{self._stage_index}"
            self.steps.append(new)
            self.display.step_started(new)
            return
        step = self.current
        if step is not None and step.image_id is None:
            if line.strip() == "---> Using cache":
                step.cached = True
                return
            running = _RUNNING_RE.match(line)
            if running:
                step.container_id = running[1]
                return
            result = _RESULT_RE.match(line)
            if result:
                step.image_id = result[1]
                is_from = _FROM_RE.match(step.instruction) is not None
                if not step.cached and not is_from:
                    self.created.append(result[1])
                return
        if line.startswith("Removing intermediate container") or line.startswith("Successfully "):
            return
        if step is not None:
            step.output.append(line)
        self.display.output(step, line)

    def _end_step(self, now: float, *, completed: bool) -> None:
        step = self.current
        if step is not None and not step.finished and completed:
            step.finished = True
            step.seconds = now - step.started
            self.display.step_finished(step)

    def _end_stage(self) -> None:
        if self._stage_name is None:
            return
        last = self.current
        if last is not None and last.image_id:
            # The engine follows each stage with its full id (aux); the step line has the short form.
            full = self.image_id if same_image(self.image_id, last.image_id) else None
            self.stages.append((self._stage_name, full or last.image_id))


class PlainDisplay:
    """CI logs and pipes: one line per finished step; RUN output only with --verbose."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def step_started(self, step: Step) -> None:
        if self.verbose:
            output.echo(f"[{step.number}/{step.total}] {step.instruction}", style="bold")

    def step_finished(self, step: Step) -> None:
        if not self.verbose:
            output.echo(_step_line(step))
        elif step.container_id is not None:
            output.echo(f"  done in {step.seconds:.1f} s", style="dim")

    def output(self, step: Step | None, line: str) -> None:
        if self.verbose and line.strip():
            output.echo(f"  {line}", style="dim")


class ProgressDisplay(PlainDisplay):
    """On a terminal: a live progress bar over the steps, finished steps printed above it."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(verbose)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=output.console(),
            transient=True,
        )
        self.task = self.progress.add_task("sending the build context", total=None)

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def step_started(self, step: Step) -> None:
        description = f"[{step.number}/{step.total}] {_short(step.instruction, 60)}"
        self.progress.update(self.task, total=step.total, completed=step.number - 1, description=description)
        super().step_started(step)


def _step_line(step: Step) -> str:
    outcome = "cached" if step.cached else f"{step.seconds:.1f} s"
    return f"[{step.number}/{step.total}] {_short(step.instruction, 88)}  {outcome}"


# -------------------------------------------------------------------------------------------- build


@dataclass(frozen=True, kw_only=True)
class RunReport:
    url: str
    container: str
    healthz_status: int
    healthz: Any
    seconds_to_healthy: float
    uid: int
    kept: bool


@dataclass(frozen=True, kw_only=True)
class ImageReport:
    name: str
    tag: str
    image_id: str
    tags: list[str]
    stage_tags: list[str]
    size_bytes: int
    base_image: str
    base_size_bytes: int | None
    layers: int
    context_bytes: int
    context_files: int
    build_seconds: float
    steps_total: int
    steps_cached: int
    steps_built: int
    steps: list[dict[str, Any]]
    labels: dict[str, str]
    dockerfile: str
    engine: str
    revision: str
    dirty: bool
    artifact: Path
    run: RunReport | None = None

    @property
    def added_bytes(self) -> int | None:
        return None if self.base_size_bytes is None else self.size_bytes - self.base_size_bytes

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["artifact"] = str(self.artifact)
        body["added_bytes"] = self.added_bytes
        body["size_mib"] = round(self.size_bytes / 2**20, 1)
        return body


def target_for(settings: Settings, which: Which) -> ImageTarget:
    target: ImageTarget = getattr(settings.image, which)
    return target


def _split_tag(tag: str) -> tuple[str, str]:
    repo, sep, name = tag.rpartition(":")
    if not sep or "/" in name:
        return tag, "latest"
    return repo, name


def parse_assignments(settings: Settings, items: Sequence[str], *, what: str) -> dict[str, str]:
    """``NAME=VALUE`` or ``NAME`` (value from the environment/.env). Secret values never come from argv."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", name):
            raise UsageError(f"{what} {item!r}: expected NAME=VALUE or NAME")
        if not sep:
            if name not in settings.env:
                raise UsageError(f"{what} {name}: not set in the environment or .env (or pass {name}=VALUE)")
            value = settings.env[name]
        elif is_secret_name(settings, name):
            raise UsageError(
                f"{what} {name}=…: a secret value on the command line is visible to other users; "
                "pass the name alone and set the value in the environment or .env"
            )
        if is_secret_name(settings, name):
            output.add_secrets([value])
        values[name] = value
    return values


def build_image(
    settings: Settings,
    which: Which,
    *,
    tag: str | None = None,
    dockerfile: Path | None = None,
    build_args: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    no_cache: bool = False,
    pull: bool = False,
    sync_bundle: bool = True,
    verbose: bool = False,
    display: Display | None = None,
) -> ImageReport:
    """Build ``which`` (spike/origin) with the repository root as context; write artifacts/<which>-image.json.

    A failed or interrupted build leaves no container, and removes the layers it made that nothing
    tags (they would be dangling images). Completed non-final stages (the dependency stage) are
    tagged ``<repo>-<stage>:<tag>`` so that they stay as build cache instead of dangling.
    """
    configured = target_for(settings, which)
    target = ImageTarget(dockerfile=dockerfile or configured.dockerfile, tag=tag or configured.tag)
    if not match_tag(target.tag):
        raise UsageError(f"invalid image tag {target.tag!r} (expected e.g. name:tag, lower case)")
    rel_dockerfile = _dockerfile_in_context(settings, target.dockerfile)
    client = connect(settings)  # before the sync: no engine is exit 2 with nothing written
    try:
        if which == "spike" and sync_bundle:
            result = sync(settings)
            changes = "no changes" if result.drift.clean else f"{result.drift.count} change(s)"
            output.info(f"synced the Worker bundle ({result.files} files, {changes})")
        return _build(
            settings,
            client,
            which,
            target,
            rel_dockerfile,
            build_args=dict(build_args or {}),
            labels=dict(labels or {}),
            no_cache=no_cache,
            pull=pull,
            verbose=verbose,
            display=display,
        )
    finally:
        client.close()


def _qualified(ref: str) -> str:
    """``ref`` as the engine lists it in RepoTags (an untagged reference means :latest)."""
    repo, tag = _split_tag(ref)
    return f"{repo}:{tag}"


def _remove_untagged(client: docker.DockerClient, image_ids: Sequence[str]) -> list[str]:
    """Remove those of ``image_ids`` that no tag names (newest first). Returns the ids removed."""
    removed = []
    for image_id in reversed(image_ids):
        try:
            info = client.api.inspect_image(image_id)
        except docker.errors.ImageNotFound:
            continue  # already pruned with a child removed before it
        if info.get("RepoTags"):
            continue
        try:
            client.api.remove_image(image_id, noprune=False)
            removed.append(image_id)
        except docker.errors.APIError:
            pass  # a child image or a container still uses it: then it is not dangling either
    return removed


def _build(
    settings: Settings,
    client: docker.DockerClient,
    which: Which,
    target: ImageTarget,
    rel_dockerfile: str,
    *,
    build_args: dict[str, str],
    labels: dict[str, str],
    no_cache: bool,
    pull: bool,
    verbose: bool,
    display: Display | None,
) -> ImageReport:
    python_image = settings.image.python_image
    args = {"PYTHON_IMAGE": python_image, **build_args}
    started = time.perf_counter()
    # The git queries and the engine's image list run while the context is packed: each costs a process
    # start or a round trip, and a no-change rebuild is otherwise little more than those.
    with ThreadPoolExecutor(max_workers=2) as pool:
        prov_job = pool.submit(provenance, settings, target)
        listing_job = pool.submit(client.api.images)
        context, files = build_context(settings, Path(rel_dockerfile))
        try:
            prov, listing = prov_job.result(), listing_job.result()
        except BaseException:
            context.close()
            raise
    all_labels = {**prov.labels, **labels}
    # One listing answers every "what does this tag name now" question below.
    tagged = {tag: (i["Id"], i.get("Size")) for i in listing for tag in i.get("RepoTags") or []}
    base_id, base_size = tagged.get(_qualified(python_image), (None, None))
    if base_id is None and not pull:
        output.warn(f"base image {python_image} is not present locally: the engine will try to pull it")
    repo, tag_name = _split_tag(target.tag)
    before = {target.tag: tagged.get(_qualified(target.tag), (None, None))[0]}

    context_bytes = context.seek(0, 2)
    context.seek(0)
    output.info(
        f"building {target.tag} from {rel_dockerfile} (context {context_bytes / 1024:.0f} KiB, "
        f"{files} entries; base {python_image})"
    )
    own_display = display is None and output.is_terminal()
    shown: Display = display or (ProgressDisplay(verbose) if own_display else PlainDisplay(verbose))
    log = BuildLog(shown)
    responses: list[requests.Response] = []

    def capture(response: requests.Response, *_: Any, **__: Any) -> None:
        responses.append(response)

    stage_tags: list[str] = []
    ok = False
    client.api.hooks["response"].append(capture)
    try:
        with ExitStack() as stack:
            if isinstance(shown, ProgressDisplay) and own_display:
                stack.enter_context(shown)
            stream = client.api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=rel_dockerfile,
                tag=target.tag,
                buildargs=args,
                labels=all_labels,
                nocache=no_cache,
                pull=pull,
                rm=True,
                forcerm=True,  # also remove the container of a failed step
                decode=True,
                timeout=settings.image.build_timeout,
            )
            client.api.hooks["response"].remove(capture)
            deadline = started + settings.image.build_timeout
            for message in stream:
                log.feed(message)
                while len(log.stages) > len(stage_tags):
                    stage, image_id = log.stages[len(stage_tags)]
                    stage_ref = f"{repo}-{stage}:{tag_name}"
                    before.setdefault(stage_ref, tagged.get(stage_ref, (None, None))[0])
                    if not same_image(image_id, before[stage_ref]):
                        client.api.tag(image_id, f"{repo}-{stage}", tag_name)
                    stage_tags.append(stage_ref)
                if log.error or time.perf_counter() > deadline:
                    break
            log.finish()
        if time.perf_counter() > deadline and not log.error:
            raise CommandFailed(f"building {target.tag} took longer than {settings.image.build_timeout:g} s")
        if log.error:
            _raise_build_error(log, python_image)
        if log.image_id is None:
            raise CommandFailed(f"the engine ended the build of {target.tag} without an image id")
        ok = True
    except docker.errors.APIError as exc:
        raise CommandFailed(
            f"the engine refused the build of {target.tag}: {_short(exc.explanation or str(exc))}"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise CommandFailed(f"lost the engine during the build of {target.tag}: {_short(str(exc))}") from None
    finally:
        with suppress(ValueError):
            client.api.hooks["response"].remove(capture)
        context.close()
        if not ok:
            _abort(client, log, responses)
    build_seconds = time.perf_counter() - started

    image = client.api.inspect_image(log.image_id)
    # The image a tag named before is garbage once the tag moved on (it would be dangling): remove it.
    current = [image["Id"], *(i for _, i in log.stages)]
    _remove_untagged(
        client, [old for old in before.values() if old and not any(same_image(old, new) for new in current)]
    )
    report = _report(
        settings,
        which,
        target,
        image,
        log,
        prov,
        stage_tags=stage_tags,
        labels=all_labels,
        base_size=base_size,
        context_bytes=context_bytes,
        context_files=files,
        build_seconds=build_seconds,
        dockerfile=rel_dockerfile,
    )
    write_report(report)
    return report


def _report(
    settings: Settings,
    which: Which,
    target: ImageTarget,
    image: Mapping[str, Any],
    log: BuildLog,
    prov: Provenance,
    *,
    stage_tags: list[str],
    labels: Mapping[str, str],
    base_size: int | None,
    context_bytes: int,
    context_files: int,
    build_seconds: float,
    dockerfile: str,
) -> ImageReport:
    """The report of a finished build (``image`` is the engine's inspect of the result)."""
    return ImageReport(
        name=which,
        tag=target.tag,
        image_id=image["Id"],
        tags=sorted(image.get("RepoTags") or []),
        stage_tags=stage_tags,
        size_bytes=int(image["Size"]),
        base_image=settings.image.python_image,
        base_size_bytes=int(base_size) if base_size is not None else None,
        layers=len(image.get("RootFS", {}).get("Layers", [])),
        context_bytes=context_bytes,
        context_files=context_files,
        build_seconds=round(build_seconds, 3),
        steps_total=len(log.steps),
        steps_cached=sum(1 for s in log.steps if s.cached),
        steps_built=len(log.created),
        steps=[
            {
                "step": s.number,
                "instruction": s.instruction,
                "cached": s.cached,
                "seconds": round(s.seconds, 3),
            }
            for s in log.steps
        ],
        labels={k: v for k, v in (image.get("Config", {}).get("Labels") or {}).items() if k in labels},
        dockerfile=dockerfile,
        engine=engine_address(settings.env),
        revision=prov.revision,
        dirty=prov.dirty,
        artifact=settings.artifacts_dir / f"{which}-image.json",
    )


def _abort(client: docker.DockerClient, log: BuildLog, responses: list[requests.Response]) -> None:
    """After a failure or Ctrl-C: stop the build, remove its container and the layers it made.

    Closing the response is what cancels a classic build on the engine; the engine then removes the
    step's container itself (forcerm). The explicit removal covers an engine that is slow to notice.
    """
    for response in responses:
        with suppress(Exception):
            response.close()
    container = log.running_container
    if container:
        with suppress(docker.errors.NotFound, docker.errors.APIError, requests.exceptions.RequestException):
            client.api.remove_container(container, force=True)
    with suppress(requests.exceptions.RequestException):
        _remove_untagged(client, log.created)


def _raise_build_error(log: BuildLog, python_image: str) -> None:
    step = log.current
    error = _short(log.error or "unknown error", 300)
    if step is None:
        raise ConfigError(f"the engine rejected the Dockerfile before the first step: {error}")
    tail = [line for line in step.output if line.strip()][-_OUTPUT_TAIL:]
    if _FROM_RE.match(step.instruction) and _PULL_FAILURE_RE.search(log.error or ""):
        raise MissingToolError(
            f"cannot get the base image {python_image} at {step.label}: {error}; where Docker Hub is out of "
            "reach build a local one (scripts/make_base_image.sh) and set PYTHON_IMAGE to its tag"
        )
    if tail:
        output.echo(f"last output of {step.label}:", style="bold")
        for line in tail:
            output.echo(f"  {line}", style="dim")
    raise CommandFailed(f"build failed at {step.label}: {error}", output_tail="\n".join(tail))


def write_report(report: ImageReport) -> Path:
    """Write the report (atomically, redacted): a failure never leaves a half-written artifact."""
    return write_json(report.artifact, report.to_json())


# ---------------------------------------------------------------------------------------------- run


@dataclass(frozen=True, kw_only=True)
class Running:
    url: str
    container: str
    container_id: str
    seconds_to_healthy: float
    healthz_status: int
    healthz: Any


def _exposed_port(client: docker.DockerClient, image: str) -> str:
    exposed = (client.api.inspect_image(image).get("Config") or {}).get("ExposedPorts") or {}
    tcp = sorted(str(p) for p in exposed if str(p).endswith("/tcp"))
    if not tcp:
        raise UsageError(f"image {image} exposes no TCP port (add EXPOSE to its Dockerfile)")
    return tcp[0]


def _host_port(client: docker.DockerClient, container_id: str, container_port: str) -> int | None:
    ports = (client.api.inspect_container(container_id).get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(container_port) or []:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def _remove_container(client: docker.DockerClient, name: str, *, settle: float = 0.0) -> None:
    """Force-remove ``name``; when a create request may still be in flight, wait ``settle`` s for it."""
    deadline = time.monotonic() + settle
    while True:
        try:
            client.api.remove_container(name, force=True)
            return
        except docker.errors.NotFound:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.2)
        except requests.exceptions.RequestException:
            return


def _show_logs(client: docker.DockerClient, name: str, count: int = 20) -> str:
    try:
        raw = client.api.logs(name, stdout=True, stderr=True, tail=count)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        return ""
    lines = [output.redact(line) for line in raw.decode(errors="replace").splitlines() if line.strip()]
    if lines:
        output.echo(f"last log lines of container {name}:", style="bold")
        for line in lines:
            output.echo(f"  {line}", style="dim")
    return lines[-1] if lines else "(no output)"


@contextmanager
def run_container(
    settings: Settings,
    image: str,
    *,
    name: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    health_timeout: float | None = None,
    keep: bool = False,
) -> Iterator[Running]:
    """Start ``image`` on 127.0.0.1 (``port``, or one the engine picks), wait for GET /healthz → 200.

    The container is removed when the block ends — normally, on error or on Ctrl-C — unless ``keep``
    is set and the block ended normally.
    """
    timeout = settings.image.health_timeout if health_timeout is None else health_timeout
    if port is not None:
        procs.ensure_port_free("127.0.0.1", port)
    client = connect(settings)
    ok = creating = False
    try:
        container_port = _exposed_port(client, image)
        host_config = client.api.create_host_config(port_bindings={container_port: ("127.0.0.1", port)})
        # The name is known before the engine answers: a Ctrl-C between create and start still finds it.
        creating = True
        created = client.api.create_container(
            image,
            name=name,
            environment=dict(env or {}),
            labels={RUN_LABEL: name, **dict(labels or {})},
            ports=[container_port],
            host_config=host_config,
            detach=True,
        )
        creating = False
        container_id: str = created["Id"]
        client.api.start(container_id)
        started = time.monotonic()
        running = _wait_healthy(client, name, container_id, container_port, started, timeout)
        yield running
        ok = True
    finally:
        if not (ok and keep):
            _remove_container(client, name, settle=3.0 if creating else 0.0)
        client.close()


def _wait_healthy(
    client: docker.DockerClient,
    name: str,
    container_id: str,
    container_port: str,
    started: float,
    timeout: float,
) -> Running:
    deadline = started + timeout
    last = "no answer yet"
    with httpx.Client(timeout=httpx.Timeout(2.0), trust_env=False) as http:
        while time.monotonic() < deadline:
            state = client.api.inspect_container(container_id).get("State") or {}
            if state.get("Status") in ("exited", "dead"):
                line = _show_logs(client, name)
                raise ServiceError(
                    f"container {name} exited with {state.get('ExitCode')} before /healthz answered: "
                    f"{_short(line)}"
                )
            host_port = _host_port(client, container_id, container_port)
            if host_port is not None:
                url = f"http://127.0.0.1:{host_port}"
                try:
                    response = http.get(f"{url}/healthz")
                    if response.status_code == 200:
                        try:
                            body: Any = response.json()
                        except ValueError:
                            body = response.text[:200]
                        return Running(
                            url=url,
                            container=name,
                            container_id=container_id,
                            seconds_to_healthy=round(time.monotonic() - started, 3),
                            healthz_status=response.status_code,
                            healthz=body,
                        )
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
            time.sleep(0.2)
    line = _show_logs(client, name)
    raise ServiceError(
        f"container {name} did not answer 200 on /healthz within {timeout:g} s (last: {last}); "
        f"last log line: {_short(line)}"
    )


def container_uid(settings: Settings, container_id: str) -> int:
    client = connect(settings)
    try:
        result = client.api.exec_create(container_id, ["id", "-u"])
        out = client.api.exec_start(result["Id"]).decode(errors="replace").strip()
    finally:
        client.close()
    try:
        return int(out)
    except ValueError:
        raise ServiceError(f"could not tell the container's user: id -u printed {_short(out)!r}") from None


def smoke_run(
    settings: Settings,
    report: ImageReport,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    health_timeout: float | None = None,
    keep: bool = False,
) -> RunReport:
    """Run the built image, wait for /healthz, check it runs as non-root; remove it unless ``keep``."""
    name = f"cfops-{report.name}-{uuid.uuid4().hex[:8]}"
    output.info(f"starting {report.tag} as {name} on 127.0.0.1")
    with run_container(
        settings,
        report.image_id,
        name=name,
        port=port,
        env=env,
        labels=labels,
        health_timeout=health_timeout,
        keep=keep,
    ) as running:
        uid = container_uid(settings, running.container_id)
        if uid == 0:
            raise ServiceError(f"container {name} runs as root (uid 0): the image must set a non-root USER")
    return RunReport(
        url=running.url,
        container=name,
        healthz_status=running.healthz_status,
        healthz=running.healthz,
        seconds_to_healthy=running.seconds_to_healthy,
        uid=uid,
        kept=keep,
    )


# --------------------------------------------------------------------------------------------- main


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.1f} MiB"


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("image", __doc__)
    parser.add_argument(
        "which", choices=IMAGES, help="spike (backend-cloudflare/Dockerfile) or origin (Dockerfile)"
    )
    parser.add_argument("--tag", help="image tag (default: [tool.cfops.image.<which>] tag)")
    parser.add_argument(
        "--dockerfile", type=Path, help="Dockerfile inside the project (default: from the config)"
    )
    cli.settings_flags(parser, "image", only=("python_image", "health_timeout"))
    parser.add_argument("--build-arg", action="append", default=[], metavar="NAME[=VALUE]")
    parser.add_argument(
        "--label", action="append", default=[], metavar="NAME=VALUE", help="extra image label"
    )
    parser.add_argument("--no-cache", action="store_true", help="build every step anew")
    parser.add_argument("--pull", action="store_true", help="pull a newer base image first")
    parser.add_argument(
        "--no-sync", action="store_true", help="spike: build the bundle as it is, without syncing"
    )
    parser.add_argument("--verbose", action="store_true", help="show the output of every step")
    parser.add_argument("--run", action="store_true", help="start it, wait for /healthz, then remove it")
    parser.add_argument("--keep", action="store_true", help="with --run: leave the container running")
    parser.add_argument("--port", type=int, help="with --run: host port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]", help="with --run")
    args = parser.parse_args(argv)
    health_flag = "image.health_timeout" in cli.flags_of(args)
    if (args.keep or args.port is not None or args.env or health_flag) and not args.run:
        raise UsageError("--keep, --port, --env and --health-timeout only apply with --run")
    settings = cli.load(args)
    if health_flag and settings.image.health_timeout <= 0:
        raise UsageError("--health-timeout must be positive")
    build_args = parse_assignments(settings, args.build_arg, what="--build-arg")
    secret_args = [name for name in build_args if is_secret_name(settings, name)]
    if secret_args:
        raise UsageError(
            f"--build-arg {secret_args[0]}: build args are stored in the image history; pass secrets at run "
            "time (--run --env NAME) instead"
        )
    labels = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--label {item!r}: expected NAME=VALUE")
        labels[name] = value
    run_env = parse_assignments(settings, args.env, what="--env") if args.run else {}

    report = build_image(
        settings,
        args.which,
        tag=args.tag,
        dockerfile=args.dockerfile,
        build_args=build_args,
        labels=labels,
        no_cache=args.no_cache,
        pull=args.pull,
        sync_bundle=not args.no_sync,
        verbose=args.verbose,
    )
    output.success(
        f"built {report.tag} {report.image_id[7:19]}: {_mib(report.size_bytes)} "
        f"({_mib(report.added_bytes)} over {report.base_image}), {report.layers} layers, "
        f"{report.steps_built} steps built, {report.steps_cached} cached, "
        f"context {report.context_bytes / 1024:.0f} KiB, {report.build_seconds:.1f} s"
    )
    if report.stage_tags:
        output.echo(f"  build cache kept as {', '.join(report.stage_tags)}", style="dim")
    if report.dirty:
        output.warn(
            f"uncommitted changes: the revision label names {report.revision[:12]}, the image holds more"
        )
    if args.run:
        run = smoke_run(
            settings,
            report,
            port=args.port,
            env=run_env,
            labels=labels,
            health_timeout=settings.image.health_timeout,
            keep=args.keep,
        )
        report = dataclasses.replace(report, run=run)
        write_report(report)
        output.success(
            f"{run.url}/healthz answered {run.healthz_status} after {run.seconds_to_healthy:.1f} s "
            f"(uid {run.uid}): {json.dumps(run.healthz)}"
        )
        output.echo(f"URL: {run.url}")
        if run.kept:
            output.info(
                f"container {run.container} keeps running; stop it with: docker rm -f {run.container}"
            )
        else:
            output.echo(f"container {run.container} removed", style="dim")
    output.echo(f"report: {report.artifact}", style="dim")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
