"""The build context: the repository root after .dockerignore, packed as the engine receives it."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from docker.utils.build import create_archive, exclude_paths

from cfops.config import Settings
from cfops.errors import ConfigError, UsageError


def dockerignore_patterns(root: Path) -> list[str]:
    """The .dockerignore patterns, read as the Docker CLI reads them (comments and blanks dropped)."""
    path = root / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def dockerfile_in_context(settings: Settings, dockerfile: Path) -> str:
    """``dockerfile`` relative to the context (the repository root), or why it cannot be built."""
    path = dockerfile if dockerfile.is_absolute() else settings.root / dockerfile
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"Dockerfile {dockerfile} not found (fix [tool.cfops.image] or --dockerfile)")
    if not path.is_relative_to(settings.root):
        raise UsageError(f"Dockerfile {path} is outside the build context {settings.root}")
    return path.relative_to(settings.root).as_posix()


def context_files(settings: Settings, dockerfile: Path) -> list[str]:
    """The paths the build context holds (after .dockerignore), as the engine will see them."""
    rel = dockerfile_in_context(settings, dockerfile)
    return sorted(exclude_paths(str(settings.root), dockerignore_patterns(settings.root), dockerfile=rel))


def build_context(settings: Settings, dockerfile: Path) -> tuple[IO[bytes], int]:
    """The build context as an uncompressed tar in a temporary file at its start, and its entry count."""
    files = context_files(settings, dockerfile)
    archive: IO[bytes] = create_archive(root=str(settings.root), files=files)
    return archive, len(files)
