"""Live state read back from Cloudflare over httpx (cfops.cloudflare_api): deployments, versions, and a
traffic split confirmed within the retry policy.
"""

from __future__ import annotations

from cfops import cloudflare_api, retry
from cfops.cloudflare_api import Deployment, VersionInfo
from cfops.config import Settings
from cfops.deploy.plan import Worker, target


def list_deployments(settings: Settings, worker: Worker) -> list[Deployment]:
    """The Worker's recent deployments, oldest first (empty when it was never deployed); over httpx."""
    t = target(settings, worker)
    return cloudflare_api.client(settings, f"reading the deployments of {t.name}").deployments(t.name)


def current_deployment(settings: Settings, worker: Worker) -> Deployment | None:
    deployments = list_deployments(settings, worker)
    return deployments[-1] if deployments else None


def list_versions(settings: Settings, worker: Worker) -> list[VersionInfo]:
    """The Worker's recent versions, newest first; over httpx."""
    t = target(settings, worker)
    return cloudflare_api.client(settings, f"reading the versions of {t.name}").versions(t.name)


def tagged_versions(settings: Settings, worker: Worker, tag: str) -> list[VersionInfo]:
    """The versions carrying ``tag``, newest first (more than one: a retried upload landed twice)."""
    return [v for v in list_versions(settings, worker) if v.tag == tag]


def confirm_traffic(settings: Settings, worker: Worker, traffic: dict[str, float]) -> Deployment | None:
    """The current deployment once it shows ``traffic`` (re-read within the retry policy), else None."""
    t = target(settings, worker)

    def read() -> Deployment:
        current = current_deployment(settings, worker)
        if current is None or current.traffic != traffic:
            seen = current.traffic if current else "no deployment"
            raise retry.TransientError(f"{t.name} shows {seen}, not {traffic} yet")
        return current

    try:
        return retry.call(f"reading back the deployment of {t.name}", read, cloudflare_api.policy(settings))
    except retry.TransientError:
        return None


def previous_version(settings: Settings, worker: Worker) -> str | None:
    current = current_deployment(settings, worker)
    return current.primary_version if current else None
