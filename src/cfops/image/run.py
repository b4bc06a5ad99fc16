"""Running a built image: a container on 127.0.0.1 with an owner, healthy or removed (``--run``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from cfops import output, procs
from cfops.config import Settings
from cfops.errors import ServiceError, UsageError
from cfops.image.engine import connect, short
from cfops.image.report import ImageReport, RunReport

RUN_LABEL = "org.immcad.cfops.run"


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
        running = _wait_healthy(client, name, container_id, container_port, timeout)
        yield running
        ok = True
    finally:
        if not (ok and keep):
            _remove_container(client, name, settle=3.0 if creating else 0.0)
        client.close()


def _wait_healthy(
    client: docker.DockerClient, name: str, container_id: str, container_port: str, timeout: float
) -> Running:
    """procs.poll_health on the container's /healthz; its host port is known once the engine says so."""

    def exit_code() -> int | None:
        state = client.api.inspect_container(container_id).get("State") or {}
        return int(state.get("ExitCode") or 0) if state.get("Status") in ("exited", "dead") else None

    def url() -> str | None:
        host_port = _host_port(client, container_id, container_port)
        return None if host_port is None else f"http://127.0.0.1:{host_port}/healthz"

    health = procs.poll_health(
        f"container {name}",
        url,
        timeout=timeout,
        healthy=lambda response: response.status_code == 200,
        expect="200",
        exit_code=exit_code,
        last_output=lambda: short(_show_logs(client, name)),
        output_label="last log line",
        interval=0.2,
    )
    try:
        body: Any = health.response.json()
    except ValueError:
        body = health.response.text[:200]
    return Running(
        url=health.url.removesuffix("/healthz"),
        container=name,
        container_id=container_id,
        seconds_to_healthy=round(health.seconds, 3),
        healthz_status=health.response.status_code,
        healthz=body,
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
        raise ServiceError(f"could not tell the container's user: id -u printed {short(out)!r}") from None


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
