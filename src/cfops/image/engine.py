"""The Docker Engine: how to reach it, and the image-id and tag rules every other module shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import docker
import docker.errors

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


def remove_untagged(client: docker.DockerClient, image_ids: Sequence[str]) -> list[str]:
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
