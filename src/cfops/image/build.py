"""Building an image: sync (spike), pack the context, stream the engine's build, keep the stage caches,
clean up after a failure or Ctrl-C, and report (``artifacts/<which>-image.json``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
import requests
from docker.utils.build import match_tag

from cfops import output
from cfops.config import ImageTarget, Settings
from cfops.errors import CommandFailed, UsageError
from cfops.image.buildlog import BuildLog, Display, PlainDisplay, ProgressDisplay, raise_build_error
from cfops.image.context import build_context, dockerfile_in_context
from cfops.image.engine import (
    connect,
    engine_address,
    qualified,
    remove_untagged,
    same_image,
    short,
    split_tag,
)
from cfops.image.provenance import Provenance, provenance
from cfops.image.report import ImageReport, Which, write_report
from cfops.sync import sync

# What the engine's image listing says a tag names now: image id and size.
_Tagged = dict[str, tuple[str, int | None]]


# How long a cancelled build's layers wait for the engine to remove the step's container.
ABORT_PATIENCE = 15.0


def target_for(settings: Settings, which: Which) -> ImageTarget:
    target: ImageTarget = getattr(settings.image, which)
    return target


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
    rel_dockerfile = dockerfile_in_context(settings, target.dockerfile)
    client = connect(settings)  # before the sync: no engine is exit 2 with nothing written
    try:
        if which == "spike" and sync_bundle:
            result = sync(settings)
            changes = "no changes" if result.drift.clean else f"{result.drift.count} change(s)"
            output.info(f"synced the Worker bundle ({result.files} files, {changes})")
        job = _Job(
            settings=settings,
            client=client,
            which=which,
            target=target,
            dockerfile=rel_dockerfile,
            build_args={"PYTHON_IMAGE": settings.image.python_image, **dict(build_args or {})},
            extra_labels=dict(labels or {}),
            no_cache=no_cache,
            pull=pull,
        )
        return _build(job, verbose=verbose, display=display)
    finally:
        client.close()


@dataclass(frozen=True, kw_only=True)
class _Job:
    settings: Settings
    client: docker.DockerClient
    which: Which
    target: ImageTarget
    dockerfile: str  # relative to the context
    build_args: dict[str, str]
    extra_labels: dict[str, str]
    no_cache: bool
    pull: bool


@dataclass(kw_only=True)
class _Inputs:
    """What the build sends and what it starts from, gathered before the engine is asked."""

    context: IO[bytes]
    context_files: int
    context_bytes: int
    provenance: Provenance
    labels: dict[str, str]
    tagged: _Tagged


@dataclass(kw_only=True)
class _StageTags:
    """Tags each completed non-final stage ``<repo>-<stage>:<tag>`` so it stays as build cache.

    ``before`` remembers what every tag this build moves named before it: once the tag has moved on,
    that image is garbage (it would dangle) and is removed after a successful build.
    """

    client: docker.DockerClient
    target: ImageTarget
    tagged: _Tagged
    refs: list[str] = field(default_factory=list)
    before: dict[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.before[self.target.tag] = self.tagged.get(qualified(self.target.tag), (None, None))[0]

    def update(self, log: BuildLog) -> None:
        repo, tag_name = split_tag(self.target.tag)
        while len(log.stages) > len(self.refs):
            stage, image_id = log.stages[len(self.refs)]
            stage_ref = f"{repo}-{stage}:{tag_name}"
            self.before.setdefault(stage_ref, self.tagged.get(stage_ref, (None, None))[0])
            if not same_image(image_id, self.before[stage_ref]):
                self.client.api.tag(image_id, f"{repo}-{stage}", tag_name)
            self.refs.append(stage_ref)

    def replaced(self, image_id: str, log: BuildLog) -> list[str]:
        """The images the moved tags named before, now that nothing of this build is them."""
        current = [image_id, *(i for _, i in log.stages)]
        return [old for old in self.before.values() if old and not any(same_image(old, n) for n in current)]


def _build(job: _Job, *, verbose: bool, display: Display | None) -> ImageReport:
    started = time.perf_counter()
    inputs = _gather(job)
    _announce(job, inputs)
    own_display = display is None and output.is_terminal()
    shown: Display = display or (ProgressDisplay(verbose) if own_display else PlainDisplay(verbose))
    log = BuildLog(shown)
    stages = _StageTags(client=job.client, target=job.target, tagged=inputs.tagged)
    live = shown if isinstance(shown, ProgressDisplay) and own_display else None
    image_id = _stream_build(job, inputs, log, stages, started, live=live)
    build_seconds = time.perf_counter() - started
    image = job.client.api.inspect_image(image_id)
    remove_untagged(job.client, stages.replaced(image["Id"], log))
    report = _report(job, inputs, image, log, stage_tags=stages.refs, build_seconds=build_seconds)
    write_report(report)
    return report


def _gather(job: _Job) -> _Inputs:
    """Pack the context while the git queries and the engine's image list run.

    Each of those costs a process start or a round trip, and a no-change rebuild is otherwise little
    more than them.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        prov_job = pool.submit(provenance, job.settings, job.target)
        listing_job = pool.submit(job.client.api.images)
        context, files = build_context(job.settings, Path(job.dockerfile))
        try:
            prov, listing = prov_job.result(), listing_job.result()
        except BaseException:
            context.close()
            raise
    size = context.seek(0, 2)
    context.seek(0)
    # One listing answers every "what does this tag name now" question of the build.
    tagged = {tag: (i["Id"], i.get("Size")) for i in listing for tag in i.get("RepoTags") or []}
    return _Inputs(
        context=context,
        context_files=files,
        context_bytes=size,
        provenance=prov,
        labels={**prov.labels, **job.extra_labels},
        tagged=tagged,
    )


def _announce(job: _Job, inputs: _Inputs) -> None:
    python_image = job.settings.image.python_image
    if qualified(python_image) not in inputs.tagged and not job.pull:
        output.warn(f"base image {python_image} is not present locally: the engine will try to pull it")
    output.info(
        f"building {job.target.tag} from {job.dockerfile} (context {inputs.context_bytes / 1024:.0f} KiB, "
        f"{inputs.context_files} entries; base {python_image})"
    )


def _stream_build(
    job: _Job,
    inputs: _Inputs,
    log: BuildLog,
    stages: _StageTags,
    started: float,
    *,
    live: ProgressDisplay | None,
) -> str:
    """Send the context, follow the engine's build messages into ``log``; the new image's id.

    ``live`` (a progress bar) shows while the messages stream and is gone before an error prints. Any
    failure (the build's, the engine's, a timeout, Ctrl-C) cancels the build and removes what it made
    (_abort); the context file is closed either way.
    """
    tag, timeout = job.target.tag, job.settings.image.build_timeout
    responses: list[requests.Response] = []

    def capture(response: requests.Response, *_: Any, **__: Any) -> None:
        responses.append(response)

    ok = False
    job.client.api.hooks["response"].append(capture)
    deadline = started + timeout
    try:
        with ExitStack() as stack:
            if live is not None:
                stack.enter_context(live)
            stream = job.client.api.build(
                fileobj=inputs.context,
                custom_context=True,
                dockerfile=job.dockerfile,
                tag=tag,
                buildargs=job.build_args,
                labels=inputs.labels,
                nocache=job.no_cache,
                pull=job.pull,
                rm=True,
                forcerm=True,  # also remove the container of a failed step
                decode=True,
                timeout=timeout,
            )
            job.client.api.hooks["response"].remove(capture)
            for message in stream:
                log.feed(message)
                stages.update(log)
                if log.error or time.perf_counter() > deadline:
                    break
            log.finish()
        if time.perf_counter() > deadline and not log.error:
            raise CommandFailed(f"building {tag} took longer than {timeout:g} s")
        if log.error:
            raise_build_error(log, job.settings.image.python_image)
        if log.image_id is None:
            raise CommandFailed(f"the engine ended the build of {tag} without an image id")
        ok = True
        return log.image_id
    except docker.errors.APIError as exc:
        raise CommandFailed(
            f"the engine refused the build of {tag}: {short(exc.explanation or str(exc))}"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise CommandFailed(f"lost the engine during the build of {tag}: {short(str(exc))}") from None
    finally:
        with suppress(ValueError):
            job.client.api.hooks["response"].remove(capture)
        inputs.context.close()
        if not ok:
            _abort(job.client, log, responses)


def _abort(client: docker.DockerClient, log: BuildLog, responses: list[requests.Response]) -> None:
    """After a failure or Ctrl-C: stop the build, remove its container and the layers it made.

    Closing the response is what cancels a classic build on the engine; the engine then removes the
    step's container itself (forcerm). The explicit removal covers an engine that is slow to notice;
    while the engine is still removing it, the layers under it cannot go yet, so they get a few seconds.
    """
    for response in responses:
        with suppress(Exception):
            response.close()
    container = log.running_container
    if container:
        with suppress(docker.errors.NotFound, docker.errors.APIError, requests.exceptions.RequestException):
            client.api.remove_container(container, force=True)
    try:
        held = remove_untagged(client, log.created, patience=ABORT_PATIENCE)
    except requests.exceptions.RequestException as exc:
        output.warn(f"could not remove the layers of the stopped build: {short(str(exc))}")
        return
    if held:
        ids = " ".join(image_id.removeprefix("sha256:")[:12] for image_id in held)
        output.warn(
            f"a container still uses {len(held)} layer(s) of the stopped build; later: docker image rm {ids}"
        )


def _report(
    job: _Job,
    inputs: _Inputs,
    image: Mapping[str, Any],
    log: BuildLog,
    *,
    stage_tags: list[str],
    build_seconds: float,
) -> ImageReport:
    """The report of a finished build (``image`` is the engine's inspect of the result)."""
    settings = job.settings
    base_size = inputs.tagged.get(qualified(settings.image.python_image), (None, None))[1]
    return ImageReport(
        name=job.which,
        tag=job.target.tag,
        image_id=image["Id"],
        tags=sorted(image.get("RepoTags") or []),
        stage_tags=stage_tags,
        size_bytes=int(image["Size"]),
        base_image=settings.image.python_image,
        base_size_bytes=int(base_size) if base_size is not None else None,
        layers=len(image.get("RootFS", {}).get("Layers", [])),
        context_bytes=inputs.context_bytes,
        context_files=inputs.context_files,
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
        labels={k: v for k, v in (image.get("Config", {}).get("Labels") or {}).items() if k in inputs.labels},
        dockerfile=job.dockerfile,
        engine=engine_address(settings.env),
        revision=inputs.provenance.revision,
        dirty=inputs.provenance.dirty,
        artifact=settings.artifacts_dir / f"{job.which}-image.json",
    )
