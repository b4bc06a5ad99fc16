"""What a deploy will do, decided before anything runs: the Worker and its config, the proxy's origin, who
uploads the native Worker, version ids, traffic splits, the rollback target, an upload's tag.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from cfops.cloudflare_api import Deployment
from cfops.config import NativeRunner, Settings
from cfops.errors import ConfigError, MissingToolError, UsageError
from cfops.wrangler import pywrangler_problem, read_config, wrangler_bin

Worker = Literal["native", "proxy"]
Strategy = Literal["direct", "versions"]
WORKERS: tuple[Worker, ...] = get_args(Worker)
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


@dataclass(frozen=True)
class Target:
    worker: Worker
    name: str
    config: Path


def target(settings: Settings, worker: Worker) -> Target:
    """The Worker ``worker`` names, checked against its wrangler config (the name wrangler will use)."""
    if worker not in WORKERS:
        raise UsageError(f"unknown worker {worker!r}: use one of {', '.join(WORKERS)}")
    configured = settings.native if worker == "native" else settings.proxy
    declared = read_config(configured.config).get("name")
    if declared != configured.name:
        raise ConfigError(
            f"{configured.config.name} names the Worker {declared!r} but [tool.cfops.{worker}] name is "
            f"{configured.name!r}: make them agree"
        )
    return Target(worker=worker, name=configured.name, config=configured.config)


def config_args(settings: Settings, t: Target) -> list[str]:
    config = t.config
    shown = config.relative_to(settings.worker_dir) if config.is_relative_to(settings.worker_dir) else config
    return ["--config", str(shown)]


def backend_origin(raw: str) -> str:
    """The proxy's container origin, validated: ``https://host[:port]`` and nothing else."""
    value = raw.strip()
    if not value:
        raise UsageError(
            "IMMCAD_BACKEND_ORIGIN (or BACKEND_ORIGIN) is not set: the edge proxy needs the https origin it "
            "forwards to, e.g. https://api.example.com (or pass --origin)"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise UsageError("the backend origin is not a valid URL: use https://host[:port]") from None
    if parts.username is not None or parts.password is not None:
        # Said without the value: it holds a password.
        raise UsageError("the backend origin must not carry credentials (user:password@): use https://host")
    if parts.scheme != "https":
        raise UsageError(f"the backend origin {value!r} must be an https:// URL")
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal, which urlsplit returns without its brackets
        try:
            host = f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            host = ""
    elif not _HOST.match(host):
        host = ""
    if not host:
        raise UsageError(f"the backend origin {value!r} has no valid host name")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"the backend origin {value!r} must be scheme://host[:port], without path or query")
    return f"https://{host}" + (f":{port}" if port is not None else "")


@dataclass(frozen=True)
class Runner:
    name: Literal["pywrangler", "wrangler"]
    program: Path
    note: str  # said aloud when the runner is not the obvious one


def choose_runner(settings: Settings, requested: NativeRunner, *, dry_run: bool) -> Runner:
    """Who uploads the native Worker.

    pywrangler vendors the packages of backend-cloudflare/pyproject.toml into python_modules/ and then
    runs the pinned wrangler. Where it cannot run (it downloads Pyodide and a CPython build), a dry run
    still bundles and validates the synced source with the pinned wrangler and says so; a real deploy
    refuses unless the stand-in is asked for, because the Worker would ship without its packages.
    """
    if requested == "wrangler":
        vendored = (settings.worker_dir / "python_modules").is_dir()
        packages = "with the python_modules/ vendored earlier" if vendored else "without vendored packages"
        return Runner(
            "wrangler",
            wrangler_bin(settings),
            "the pinned wrangler stands in for pywrangler (requested): it uploads the synced source "
            + packages,
        )
    problem = pywrangler_problem(settings)
    if problem is None:
        found = shutil.which("pywrangler")
        assert found is not None  # pywrangler_problem checked it
        wrangler_bin(settings)  # pywrangler runs `npx wrangler` in the worker dir: the pinned one
        return Runner("pywrangler", Path(found), "")
    if requested == "pywrangler" or not dry_run:
        raise MissingToolError(
            f"pywrangler cannot run here: {problem}. A native deploy needs it to vendor the Python packages; "
            "deploy from a machine where it runs, or pass --runner wrangler to upload the synced source "
            "without vendored packages"
        )
    return Runner(
        "wrangler",
        wrangler_bin(settings),
        f"pywrangler cannot run here ({problem}): the dry run bundles the synced source with the pinned "
        "wrangler instead; Python packages are not vendored",
    )


def default_rollback_version(deployments: Sequence[Deployment]) -> str:
    """The last version that had 100% of the traffic before the current deployment (wrangler's rule)."""
    ordered = sorted(deployments, key=lambda d: d.created_on)
    for deployment in reversed(ordered[:-1]):
        if deployment.stable_version:
            return deployment.stable_version
    raise UsageError("no earlier deployment had a version at 100%: pass --version ID to choose one")


def check_version_id(version_id: str) -> str:
    if not _UUID.match(version_id):
        raise UsageError(f"{version_id!r} is not a version id (a UUID like 1b2c3d4e-…; see cfops versions)")
    return version_id


def split_traffic(new_version: str, old_version: str | None, percent: float) -> dict[str, float]:
    """``new@P old@100-P``; at 100 (or without an old version) only the new one.

    ``new@0 old@100`` stays a two-version deployment on purpose: a canary reaches a version through the
    ``Cloudflare-Workers-Version-Overrides`` header only while it is part of the current deployment.
    """
    check_version_id(new_version)
    if not 0 <= percent <= 100:
        raise UsageError(f"traffic percentage {percent:g} must be between 0 and 100")
    if old_version is None or percent == 100:
        if percent != 100:
            raise UsageError("a split below 100% needs the old version that keeps the rest of the traffic")
        return {new_version: 100.0}
    check_version_id(old_version)
    if old_version == new_version:
        raise UsageError("the new and the old version of a split must differ")
    return {new_version: float(percent), old_version: 100.0 - percent}


def rollback_hint(settings: Settings, worker: Worker, version_id: str) -> str:
    """The exact command that puts the Worker back by hand: cfops's own (the pinned toolchain, retries,
    a read-back), and wrangler's on the pinned Node (`npx` would take the system Node, which may be too
    old for the pinned wrangler)."""
    t = target(settings, worker)
    config = " ".join(config_args(settings, t))
    return (
        f"cfops rollback --worker {worker} --version {version_id} (without cfops: cd {settings.worker_dir} "
        f'&& PATH="$PWD/node_modules/.bin:$PATH" wrangler rollback {version_id} {config} -y)'
    )


def new_tag() -> str:
    """A tag no other upload carries: how an upload is found again when its answer was lost."""
    return f"cfops-{uuid.uuid4().hex[:12]}"
