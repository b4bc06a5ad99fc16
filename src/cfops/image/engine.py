"""The Docker Engine: how to reach it, and the image-id and tag rules every other module shares."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import docker
import docker.errors

from cfops import output
from cfops.config import Settings
from cfops.errors import MissingToolError

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


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
            f"no Docker Engine reachable at {engine_address(settings.env)}: {short(detail)}; "
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


def short(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters: engine messages can be long and multi-line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def same_image(one: str | None, other: str | None) -> bool:
    """Whether two image ids (full ``sha256:…`` or the builder's 12-digit short form) name one image."""
    if not one or not other:
        return False
    a, b = one.removeprefix("sha256:"), other.removeprefix("sha256:")
    return a.startswith(b) or b.startswith(a)


def split_tag(tag: str) -> tuple[str, str]:
    """``repo[:tag]`` as (repo, tag); a registry port is not a tag, no tag means ``latest``."""
    repo, sep, name = tag.rpartition(":")
    if not sep or "/" in name:
        return tag, "latest"
    return repo, name


def qualified(ref: str) -> str:
    """``ref`` as the engine lists it in RepoTags (an untagged reference means :latest)."""
    repo, tag = split_tag(ref)
    return f"{repo}:{tag}"


def remove_untagged(
    client: docker.DockerClient,
    image_ids: Sequence[str],
    *,
    patience: float = 0.0,
) -> list[str]:
    """Remove those of ``image_ids`` that no tag names (newest first); the ids a container still holds.

    A layer that a container uses cannot go. After a cancelled build that container is the step's,
    which the engine removes itself (forcerm), perhaps later than we ask: such a layer is tried again
    every 0.2 s for up to ``patience`` seconds. A layer with a tag or a child image is not dangling
    and is left alone, silently.
    """
    deadline = time.monotonic() + patience
    pending, waited = list(reversed(image_ids)), False
    while True:
        held = []
        for image_id in pending:
            try:
                info = client.api.inspect_image(image_id)
            except docker.errors.ImageNotFound:
                continue  # already pruned with a child removed before it
            if info.get("RepoTags"):
                continue
            try:
                client.api.remove_image(image_id, noprune=False)
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                # 409 "image is being used by stopped container …" may pass; "has dependent child
                # images" (or a tag) means it is not dangling, which is final
                if exc.status_code == 409 and "being used by" in str(exc.explanation or exc):
                    held.append(image_id)
        if not held or time.monotonic() >= deadline:
            return held
        if not waited:  # say once why it pauses
            output.info(f"waiting up to {patience:g} s for the engine to release {len(held)} layer(s)")
        waited, pending = True, held
        time.sleep(0.2)
