"""Where an image comes from: OCI labels from git (revision, commit time, source) and the project."""

from __future__ import annotations

import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cfops import procs
from cfops.config import ImageTarget, Settings
from cfops.errors import CommandFailed, MissingToolError, UsageError
from cfops.image.engine import split_tag


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
        "org.opencontainers.image.title": split_tag(target.tag)[0].rsplit("/", 1)[-1],
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": _strip_credentials(source),
        "org.opencontainers.image.version": project_version(settings.root),
        "org.opencontainers.image.base.name": settings.image.python_image,
    }
    return Provenance(revision=revision, dirty=dirty, labels=labels)
