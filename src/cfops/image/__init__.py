"""`cfops image`: build a container image (spike or origin) through the Docker Engine API.

Builds ``backend-cloudflare/Dockerfile`` (spike: the synced Worker bundle, synced first) or ``Dockerfile``
(origin: the backend from src/) with the repository root as the context, streams the build as step lines,
labels the image with its provenance (OCI labels) and reports id, tags, size, layers, context size and
build time to ``artifacts/<name>-image.json``. ``--run`` then starts the image on 127.0.0.1, waits for
``/healthz`` and removes the container again (unless ``--keep``).

One module per job (the layers are checked by `nox -s lint`): ``engine`` (reaching the Docker Engine, image
ids and tags), ``context`` (the build context), ``provenance`` (OCI labels from git), ``buildlog`` (the
engine's build stream as steps, its display and its errors), ``report`` (the artifact), ``build``
(building and cleaning up), ``run`` (a container with an owner), ``command`` (the command line).
"""

from __future__ import annotations

from cfops.image.build import build_image, target_for
from cfops.image.buildlog import BuildLog, Display, PlainDisplay, ProgressDisplay, Step
from cfops.image.command import main, parse_assignments
from cfops.image.context import build_context, context_files, dockerignore_patterns
from cfops.image.engine import connect, engine_address, engine_problem, same_image
from cfops.image.provenance import Provenance, project_version, provenance
from cfops.image.report import IMAGES, ImageReport, RunReport, Which, write_report
from cfops.image.run import RUN_LABEL, Running, container_uid, run_container, smoke_run

__all__ = [
    "IMAGES",
    "RUN_LABEL",
    "BuildLog",
    "Display",
    "ImageReport",
    "PlainDisplay",
    "ProgressDisplay",
    "Provenance",
    "RunReport",
    "Running",
    "Step",
    "Which",
    "build_context",
    "build_image",
    "connect",
    "container_uid",
    "context_files",
    "dockerignore_patterns",
    "engine_address",
    "engine_problem",
    "main",
    "parse_assignments",
    "project_version",
    "provenance",
    "run_container",
    "same_image",
    "smoke_run",
    "target_for",
    "write_report",
]
