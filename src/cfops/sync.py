"""`cfops sync`: copy the backend source, config and data into the Worker bundle (backend-cloudflare/).

The copy is staged next to the bundle and swapped in, so a failure never leaves a half-written tree:
the previous bundle stays as it was. A manifest records the sha256 of every synced file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cfops import cli, output, procs, pyruntime
from cfops.config import Settings, SyncEntry
from cfops.errors import CfopsError, CheckFailed, ConfigError, UsageError
from cfops.wrangler import pywrangler_problem, toolchain_env

Copier = Callable[[Path, Path], object]
_STAGING_PREFIX = ".sync-staging-"
_BACKUP_PREFIX = ".sync-old-"


@dataclass(frozen=True)
class Drift:
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.changed)

    @property
    def count(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.changed)

    def lines(self) -> list[str]:
        return (
            [f"missing: {p}" for p in self.missing]
            + [f"extra:   {p}" for p in self.extra]
            + [f"changed: {p}" for p in self.changed]
        )


@dataclass(frozen=True)
class SyncResult:
    files: int
    drift: Drift
    manifest: Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _excluded(rel: Path, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.parts for pattern in patterns)


def walk_files(base: Path, patterns: Sequence[str]) -> Iterator[Path]:
    """Files under ``base`` (or ``base`` itself if it is a file), minus excluded names."""
    if base.is_file():
        yield base
        return
    for path in sorted(base.rglob("*")):
        if path.is_file() and not _excluded(path.relative_to(base), patterns):
            yield path


def _validate(settings: Settings) -> tuple[SyncEntry, ...]:
    entries = settings.sync.map
    worker_dir = settings.worker_dir
    if not entries:
        raise ConfigError("[tool.cfops.sync.map] is empty: nothing to sync")
    missing = [e.source for e in entries if not e.source.exists()]
    if missing:
        rel = ", ".join(_rel(p, settings.root) for p in missing)
        raise ConfigError(
            f"sync map source does not exist: {rel} (fix [tool.cfops.sync.map] in pyproject.toml)"
        )
    dests = [e.dest for e in entries]
    for entry in entries:
        if entry.dest == worker_dir or not entry.dest.is_relative_to(worker_dir):
            raise ConfigError(
                f"sync destination {_rel(entry.dest, settings.root)} must be inside "
                f"{_rel(worker_dir, settings.root)} (the sync deletes what it does not own)"
            )
        if any(other != entry.dest and entry.dest.is_relative_to(other) for other in dests):
            raise ConfigError(f"sync destination {_rel(entry.dest, settings.root)} is nested in another one")
    return entries


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def desired_files(settings: Settings) -> dict[Path, Path]:
    """Destination file -> source file, for every file the bundle should hold."""
    patterns = settings.sync.exclude
    wanted: dict[Path, Path] = {}
    for entry in _validate(settings):
        if entry.source.is_file():
            wanted[entry.dest] = entry.source
            continue
        for src in walk_files(entry.source, patterns):
            wanted[entry.dest / src.relative_to(entry.source)] = src
    return wanted


def _manifest_text(settings: Settings, hashes: dict[Path, str]) -> str:
    worker_dir = settings.worker_dir
    body = {
        "generator": "cfops sync",
        "map": {_rel(e.source, settings.root): _rel(e.dest, settings.root) for e in settings.sync.map},
        "files": {str(dest.relative_to(worker_dir)): digest for dest, digest in sorted(hashes.items())},
    }
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def check(settings: Settings) -> Drift:
    """Compare the bundle with the source; write nothing."""
    wanted = desired_files(settings)
    root = settings.root
    missing, changed = [], []
    hashes: dict[Path, str] = {}
    for dest, src in sorted(wanted.items()):
        hashes[dest] = sha256_file(src)
        if not dest.is_file():
            missing.append(_rel(dest, root))
        elif sha256_file(dest) != hashes[dest]:
            changed.append(_rel(dest, root))
    extra = []
    for entry in settings.sync.map:
        if entry.dest.is_dir():
            extra += [_rel(p, root) for p in walk_files(entry.dest, settings.sync.exclude) if p not in wanted]
    manifest = settings.sync.manifest
    if not manifest.is_file():
        missing.append(_rel(manifest, root))
    elif manifest.read_text(encoding="utf-8") != _manifest_text(settings, hashes):
        changed.append(_rel(manifest, root))
    return Drift(missing=missing, extra=sorted(extra), changed=changed)


def _clear_leftovers(worker_dir: Path) -> None:
    # A sync killed outright (SIGKILL) can leave its staging or backup tree behind; the new sync
    # rebuilds every destination from source, so they hold nothing worth keeping.
    for prefix in (_STAGING_PREFIX, _BACKUP_PREFIX):
        for leftover in worker_dir.glob(f"{prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)


def sync(settings: Settings, *, copy: Copier = shutil.copy2) -> SyncResult:
    """Stage the whole bundle, then swap each destination in; on failure the old bundle stays."""
    drift = check(settings)
    wanted = desired_files(settings)
    worker_dir = settings.worker_dir
    worker_dir.mkdir(parents=True, exist_ok=True)
    _clear_leftovers(worker_dir)
    token = uuid.uuid4().hex[:8]
    staging = worker_dir / f"{_STAGING_PREFIX}{token}"
    backup = worker_dir / f"{_BACKUP_PREFIX}{token}"
    targets = [e.dest for e in settings.sync.map] + [settings.sync.manifest]
    try:
        hashes: dict[Path, str] = {}
        for dest, src in wanted.items():
            staged = staging / dest.relative_to(worker_dir)
            staged.parent.mkdir(parents=True, exist_ok=True)
            copy(src, staged)
            hashes[dest] = sha256_file(staged)
        staged_manifest = staging / settings.sync.manifest.relative_to(worker_dir)
        staged_manifest.parent.mkdir(parents=True, exist_ok=True)
        staged_manifest.write_text(_manifest_text(settings, hashes), encoding="utf-8")
        _swap(targets, worker_dir, staging, backup)
    except OSError as exc:
        raise CfopsError(f"sync failed, the previous bundle is unchanged: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    return SyncResult(files=len(wanted), drift=drift, manifest=settings.sync.manifest)


def _swap(targets: list[Path], worker_dir: Path, staging: Path, backup: Path) -> None:
    """Move each current target aside and the staged one in; undo every move if one fails."""
    done: list[tuple[Path, Path, Path]] = []
    try:
        for target in targets:
            rel = target.relative_to(worker_dir)
            staged, saved = staging / rel, backup / rel
            if target.exists():
                saved.parent.mkdir(parents=True, exist_ok=True)
                target.rename(saved)
            done.append((target, staged, saved))
            if staged.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                staged.rename(target)
    except BaseException:
        for target, _staged, saved in reversed(done):
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            if saved.exists():
                saved.rename(target)
        raise


# Where the packages vendored before a `sync --vendor` wait until the new ones are known good.
_VENDOR_BACKUP = ".python_modules.cfops-previous"


def vendor(settings: Settings) -> str | None:
    """Vendor the Worker's Python packages into python_modules/ for the runtime's Python.

    ``pywrangler sync`` resolves Pyodide wheels for the Python the compatibility date selects (the same
    table as cloudflare.PYTHON_WORKERS_RUNTIMES) — not the host's. Afterwards every vendored package must
    carry that Python's tags. Until then the previous python_modules/ is kept aside and put back when
    vendoring fails, is interrupted, or produced packages for another Python: nothing vendored is lost.

    Returns None when done, else why it could not run: pywrangler downloads Pyodide and a CPython build,
    so without the internet the bundle stays source-only (preflight says so, and --strict fails on it).
    """
    target = settings.worker_dir / pyruntime.VENDOR_DIR
    backup = settings.worker_dir / _VENDOR_BACKUP
    if backup.is_dir():  # a run killed mid-way: its packages are the last known good ones
        shutil.rmtree(target, ignore_errors=True)
        backup.rename(target)
        output.warn(f"put back the {pyruntime.VENDOR_DIR}/ an interrupted vendoring had set aside")
    runtime = pyruntime.runtime_python(settings)  # a future date is bad input: exit 2, nothing touched
    problem = pywrangler_problem(settings)
    if problem is not None:
        return problem
    output.info(f"vendoring for Python {runtime.version} ({runtime.reason})")
    env = toolchain_env(settings)  # pywrangler runs `npx wrangler`: the pinned one, on the chosen Node
    if target.is_dir():
        # pywrangler replaces python_modules/ itself (delete, then copy): keep the old one until it is done.
        shutil.copytree(target, backup, symlinks=True)
    try:
        procs.run(
            ["pywrangler", "sync"],
            cwd=settings.worker_dir,
            env=env,
            stream=True,
            timeout=900,
            what="pywrangler",
        )
        mismatches = pyruntime.vendored_mismatches(target, runtime.version)
        if mismatches:
            raise CheckFailed(f"pywrangler sync {pyruntime.describe(mismatches, runtime)}")
    except BaseException:
        if backup.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            backup.rename(target)
            output.warn(f"vendoring failed: {pyruntime.VENDOR_DIR}/ is back as it was")
        raise
    shutil.rmtree(backup, ignore_errors=True)
    return None


def main(argv: Sequence[str]) -> int:
    parser = cli.parser("sync", __doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 listing every difference")
    parser.add_argument(
        "--vendor", action="store_true", help="then vendor the Worker's Python packages (pywrangler sync)"
    )
    args = parser.parse_args(argv)
    if args.check and args.vendor:
        raise UsageError("--check writes nothing; it cannot be combined with --vendor")
    settings = cli.settings_from_env()
    if args.check:
        drift = check(settings)
        for line in drift.lines():
            output.echo(line)
        if not drift.clean:
            raise CheckFailed(
                f"the Worker bundle differs from the source in {drift.count} file(s): run cfops sync"
            )
        output.success(f"bundle in sync with the source ({len(desired_files(settings))} files)")
        return 0
    result = sync(settings)
    for line in result.drift.lines():
        output.echo(f"  {line}")
    verb = "no changes" if result.drift.clean else f"{result.drift.count} change(s)"
    output.success(
        f"synced {result.files} files into {_rel(settings.worker_dir, settings.root)} ({verb}); "
        f"manifest {_rel(result.manifest, settings.root)}"
    )
    if args.vendor:
        problem = vendor(settings)
        if problem is None:
            output.success(
                f"vendored the Python packages into {settings.worker_dir.name}/{pyruntime.VENDOR_DIR}/"
            )
        else:
            output.warn(f"Python packages not vendored: {problem}; the native bundle is source-only")
    return 0


if __name__ == "__main__":
    cli.run_main(main)
