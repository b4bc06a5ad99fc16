"""`cfops deploy`, and the versions primitives the release pipeline composes: upload a version, split
traffic between two versions, read the deployments and versions, roll back.

One module per job (the layers are checked by `nox -s lint`): ``plan`` (what a deploy will do, decided
before anything runs: target, origin, runner, version ids, splits), ``reads`` (live state over httpx),
``results`` (what the writes return and the artifacts they leave), ``writes`` (the wrangler calls that
change a Worker), ``command`` (a whole deploy and its command line).
"""

from __future__ import annotations

from cfops.cloudflare_api import Deployment, VersionInfo
from cfops.deploy.command import deploy, main
from cfops.deploy.plan import (
    STRATEGIES,
    WORKERS,
    Runner,
    Strategy,
    Target,
    Worker,
    backend_origin,
    check_version_id,
    choose_runner,
    config_args,
    default_rollback_version,
    new_tag,
    rollback_hint,
    split_traffic,
    target,
)
from cfops.deploy.reads import (
    confirm_traffic,
    current_deployment,
    list_deployments,
    list_versions,
    previous_version,
    tagged_versions,
)
from cfops.deploy.results import (
    DeployResult,
    RollbackResult,
    SplitResult,
    VersionResult,
    artifact_name,
    write_artifact,
)
from cfops.deploy.writes import deploy_split, rollback, upload_version, version_args

__all__ = [
    "STRATEGIES",
    "WORKERS",
    "DeployResult",
    "Deployment",
    "RollbackResult",
    "Runner",
    "SplitResult",
    "Strategy",
    "Target",
    "VersionInfo",
    "VersionResult",
    "Worker",
    "artifact_name",
    "backend_origin",
    "check_version_id",
    "choose_runner",
    "config_args",
    "confirm_traffic",
    "current_deployment",
    "default_rollback_version",
    "deploy",
    "deploy_split",
    "list_deployments",
    "list_versions",
    "main",
    "new_tag",
    "previous_version",
    "rollback",
    "rollback_hint",
    "split_traffic",
    "tagged_versions",
    "target",
    "upload_version",
    "version_args",
    "write_artifact",
]
