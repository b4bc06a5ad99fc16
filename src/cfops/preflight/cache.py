"""The preflight cache: the expensive checks' findings, reused while nothing they read has changed.

A cached finding is stored under a key that digests every input its check reads:

- the bytes of every file of the Worker directory (both Workers' sources, the synced app, configs,
  package.json + lock, vendored packages; not node_modules, wrangler's scratch dir or secret files),
  plus the configured Worker configs and the allowlist wherever they live. Content, not the sync
  manifest: a file edited after the last sync, or with its mtime restored, still re-measures;
- for the wrangler checks: the installed wrangler's version, the toolchain's lock digest, and the Node
  binary the wrangler child would run (resolved path, size, mtime) and the variables that steer it;
- the measuring code: cfops's own source, the zlib and Python version; for edge-contract, which builds
  the app in a child of this interpreter, also the interpreter and its installed distributions;
- the check's settings (the whole preflight table, the Worker settings, the sync excludes);
- with the ``same-commit`` policy, the commit HEAD points at.

A finding is stored only when its check measured something (wrangler that failed or timed out is
asked again next time). The file is read once per run and written once at its end, under a lock and
through a temporary file and a rename, so concurrent runs never see or leave half a file; an
unreadable cache is a warning and a full run, never an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cfops import output, procs
from cfops.config import PreflightCachePolicy, Settings
from cfops.errors import CfopsError
from cfops.node import choice
from cfops.preflight.model import Context, Finding, Target
from cfops.report import write_json

Policy = PreflightCachePolicy
# Strictest first: a combination of policies takes the strictest of them.
_STRICTNESS: dict[Policy, int] = {"reuse": 0, "same-commit": 1, "off": 2}

FORMAT = 1
# Keys kept per check: switching between a few states (branches, a setting and back) stays cached.
_KEEP_PER_CHECK = 4
_LOCK_TIMEOUT = 5.0

Part = Literal["tree", "toolchain", "code", "python", "settings", "commit"]
# The cached checks, what they read, and the measurement without which a finding is not kept. Only
# edge-contract depends on the environment's packages (it builds the app with them): the others reuse a
# finding measured from another of the project's environments (`nox -s preflight`'s for the release's).
CACHED: dict[str, tuple[tuple[Part, ...], str]] = {
    "proxy-bundle": (("tree", "toolchain", "code", "settings"), "raw_bytes"),
    "startup": (("tree", "toolchain", "code", "settings"), "startup_cpu_ms"),
    "native-bundle": (("tree", "code", "settings"), "raw_bytes"),
    "edge-contract": (("tree", "code", "python", "settings"), "routes"),
}
# Never digested: installed, generated, scratch, or holding secrets (a digest of a short secret would
# be a brute-force target, and no cached check reads them).
_SKIP_DIRS = {
    "node_modules",
    ".wrangler",
    "__pycache__",
    ".git",
    ".venv",
    ".nox",
    ".mypy_cache",
    ".ruff_cache",
}
_SKIP_FILES = (".dev.vars", ".env")
_SKIP_SUFFIXES = (".pyc", ".pyo")
# Variables of the environment that change what the wrangler children build or run.
_WRANGLER_ENV = (
    "NODE_OPTIONS",
    "NODE_PATH",
    "CLOUDFLARE_ENV",
    "WRANGLER_BUILD_CONDITIONS",
    "WRANGLER_BUILD_PLATFORM",
)


def policy_for(settings: Settings, target: Target, *, no_cache: bool) -> Policy:
    """The cache policy of a run: the strictest of the local one, CI's (when CI is set) and production's."""
    facts = settings.preflight
    chosen: list[Policy] = [facts.cache]
    if (settings.env.get("CI") or "").strip().lower() in {"1", "true", "yes"}:
        chosen.append(facts.cache_ci)
    if target == "production":
        chosen.append(facts.cache_production)
    if no_cache:
        chosen.append("off")
    return max(chosen, key=lambda p: _STRICTNESS[p])


@dataclass
class _Stored:
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class Cache:
    """One run's view of the cache file: lookups from what was read at the start, stores kept until save."""

    def __init__(self, settings: Settings, policy: Policy, path: Path | None = None) -> None:
        self.settings = settings
        self.policy = policy
        self.path = path or settings.preflight.cache_file
        self._parts: dict[Part, str | None] = {}
        self._parts_lock = threading.Lock()
        self._new: dict[str, dict[str, Any]] = {}
        self._stored = _Stored() if policy == "off" else self._load()

    # ---------------------------------------------------------------------------------- file

    def _load(self) -> _Stored:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return _Stored()
        except OSError as exc:
            output.warn(
                f"preflight cache {self.path} unreadable ({exc.strerror or exc}): measuring everything"
            )
            return _Stored()
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                return _Stored()  # another cfops's layout: re-measure and replace it
            entries = data["entries"]
            if not isinstance(entries, dict) or not all(isinstance(v, list) for v in entries.values()):
                raise ValueError("entries is not a table of lists")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            output.warn(f"preflight cache {self.path} is corrupt ({exc}): ignoring it, measuring everything")
            return _Stored()
        return _Stored(entries=entries)

    def save(self) -> None:
        """Merge this run's new findings into the file (under a lock: a concurrent run's stay too)."""
        if not self._new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(self.path.with_name(self.path.name + ".lock")):
                current = self._load_quietly()
                for check_id, entry in self._new.items():
                    kept = [e for e in current.get(check_id, []) if e.get("key") != entry["key"]]
                    current[check_id] = [entry, *kept][:_KEEP_PER_CHECK]
                write_json(self.path, {"format": FORMAT, "entries": current})
        except (OSError, TimeoutError) as exc:
            output.warn(f"preflight cache {self.path} not updated: {exc}")

    def _load_quietly(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            entries = data["entries"] if data.get("format") == FORMAT else {}
            return {k: v for k, v in entries.items() if isinstance(v, list)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}  # missing or corrupt: already warned about at load; replaced now

    # ------------------------------------------------------------------------- lookup / store

    def key(self, check_id: str, ctx: Context) -> str | None:
        """The digest of everything ``check_id`` reads, or None when an input cannot be read."""
        parts, _ = CACHED[check_id]
        values = {"check": check_id}
        for part in parts:
            value = self._part(part, ctx)
            if value is None:
                return None
            values[part] = value
        if self.policy == "same-commit":
            commit = self._part("commit", ctx)
            if commit is None:
                return None
            values["commit"] = commit
        return _sha(json.dumps(values, sort_keys=True))

    def lookup(self, check_id: str, ctx: Context) -> tuple[Finding | None, str | None]:
        """(the cached finding or None, the key to store a new one under or None)."""
        if check_id not in CACHED:
            return None, None
        key = self.key(check_id, ctx)
        if key is None or self.policy == "off":
            return None, key
        for entry in self._stored.entries.get(check_id, []):
            if isinstance(entry, dict) and entry.get("key") == key:
                finding = _finding(check_id, entry.get("finding"))
                if finding is not None:
                    return finding, key
        return None, key

    def store(self, check_id: str, key: str | None, finding: Finding) -> None:
        if key is None or check_id not in CACHED or finding.usage_error or finding.status == "skip":
            return
        if CACHED[check_id][1] not in finding.measured:
            return  # nothing was measured (the tool failed): ask again next time
        self._new[check_id] = {
            "key": key,
            "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "finding": {
                "status": finding.status,
                "message": finding.message,
                "details": list(finding.details),
                "measured": dict(finding.measured),
                "limits": dict(finding.limits),
                "measured_seconds": round(finding.duration, 3),
            },
        }

    # ------------------------------------------------------------------------------ key parts

    def _part(self, part: Part, ctx: Context) -> str | None:
        with self._parts_lock:  # each part is computed once per run, whichever check asks first
            if part not in self._parts:
                self._parts[part] = _PARTS[part](ctx)
            return self._parts[part]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _finding(check_id: str, raw: Any) -> Finding | None:
    if not isinstance(raw, dict) or raw.get("status") not in ("pass", "warn", "fail"):
        return None
    try:
        return Finding(
            id=check_id,
            status=raw["status"],
            message=str(raw["message"]),
            details=tuple(str(d) for d in raw.get("details", [])),
            measured=dict(raw.get("measured", {})),
            limits=dict(raw.get("limits", {})),
            cached=True,
        )
    except (KeyError, TypeError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` for a read-merge-write (bounded wait)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the rename alone keeps the file whole
        yield
        return
    with path.open("a") as handle:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} stayed locked for {_LOCK_TIMEOUT:g} s") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------- key parts


def digest_files(files: Mapping[str, Path]) -> str:
    """One digest of the names and bytes of ``files`` (name -> path)."""
    total = hashlib.sha256()
    for name in sorted(files):
        with files[name].open("rb") as handle:
            total.update(f"{name}\0".encode())
            total.update(hashlib.file_digest(handle, "sha256").digest())
    return total.hexdigest()


def tree_files(directory: Path, skip: frozenset[Path] = frozenset()) -> dict[str, Path]:
    """Every file under ``directory`` a cached check may read, by relative POSIX path (``skip``: what
    the run itself writes, such as its artifacts and this cache)."""
    found: dict[str, Path] = {}
    for base, dirs, names in os.walk(directory):
        dirs[:] = [
            d
            for d in dirs
            if d not in _SKIP_DIRS and not d.startswith(".sync-") and Path(base, d) not in skip
        ]
        for name in names:
            if name.startswith(_SKIP_FILES) or name.endswith(_SKIP_SUFFIXES) or name == ".DS_Store":
                continue
            path = Path(base, name)
            found[path.relative_to(directory).as_posix()] = path
    return found


def _tree(ctx: Context) -> str | None:
    settings = ctx.settings
    files = {f"worker/{k}": v for k, v in tree_files(settings.worker_dir).items()}
    # The configs and the allowlist count even when configured outside the Worker directory, and so does
    # the directory of a config kept elsewhere (its `main` and modules are found relative to it).
    for path in (settings.proxy.config, settings.native.config, settings.preflight.allowlist):
        if path.is_file():
            files[f"file:{_portable(path, ctx)}"] = path
    written = frozenset({settings.artifacts_dir, settings.preflight.cache_file.parent})
    for config in (settings.proxy.config, settings.native.config):
        if not config.parent.is_relative_to(settings.worker_dir) and config.parent.is_dir():
            inside = tree_files(config.parent, written)
            files.update({f"dir:{_portable(config.parent, ctx)}/{k}": v for k, v in inside.items()})
    try:
        return digest_files(files)
    except OSError:
        return None  # a file vanished while being read: no key, so no reuse


def _portable(value: Any, ctx: Context) -> Any:
    """``value`` with every path inside the checkout written relative to it (``<root>/…``), through
    dataclasses and containers: the same tree and settings at another path (a second clone, a CI
    workspace that restored .cfops-cache) measure the same. Only whole path values change, never text
    that merely contains the root's characters."""
    if isinstance(value, Path):
        return (
            f"<root>/{value.relative_to(ctx.root).as_posix()}"
            if value.is_relative_to(ctx.root)
            else str(value)
        )
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            {f.name: _portable(getattr(value, f.name), ctx) for f in dataclasses.fields(value)},
        )
    if isinstance(value, (list, tuple)):
        return [_portable(item, ctx) for item in value]
    if isinstance(value, dict):
        return {key: _portable(item, ctx) for key, item in value.items()}
    return value


def node_fingerprint(node: Path | None) -> str:
    """The Node binary wrangler would run on: resolved path, size and mtime (no start-up)."""
    if node is None:
        return "no node"
    real = node.resolve()
    try:
        stat = real.stat()
    except OSError:
        return f"{real} unreadable"
    return f"{real}:{stat.st_size}:{stat.st_mtime_ns}"


def _toolchain(ctx: Context) -> str | None:
    modules = ctx.settings.worker_dir / "node_modules"
    try:
        marker = (modules / ".cfops-lock-sha256").read_text().strip()
    except OSError:
        marker = "not installed"
    steering = {name: os.environ.get(name, "") for name in _WRANGLER_ENV}
    return _sha(
        json.dumps(
            {
                "wrangler": ctx.toolchain.wrangler_version(),
                "lock": marker,
                "node": node_fingerprint(choice(ctx.settings)),
                "env": steering,
            },
            sort_keys=True,
        )
    )


def _code(_ctx: Context) -> str | None:
    """cfops's own source (the measuring code), and the zlib that computes the gzip sizes."""
    package = Path(__file__).resolve().parents[1]
    files = {p.relative_to(package).as_posix(): p for p in package.rglob("*.py")}
    try:
        source = digest_files(files)
    except OSError:
        return None
    return _sha(json.dumps([source, zlib.ZLIB_RUNTIME_VERSION, sys.version_info[:2]]))


def _python(_ctx: Context) -> str | None:
    """The interpreter and the installed distributions (edge-contract's child imports the app with them)."""
    installed: list[str] = []
    for entry in sys.path:
        site = Path(entry)
        if entry.endswith("-packages") and site.is_dir():
            installed += sorted(p.name for p in site.iterdir() if p.suffix in (".dist-info", ".egg-info"))
    return _sha(json.dumps([sys.version, sys.executable, installed]))


def _settings(ctx: Context) -> str | None:
    s = ctx.settings
    facts = s.preflight
    # The cache's own policy is not an input of any check.
    neutral = {k: v for k, v in vars(facts).items() if not k.startswith("cache")}
    return _sha(
        repr(
            _portable(
                (sorted(neutral.items()), s.proxy, s.native, s.worker_dir, s.sync.exclude, ctx.mode), ctx
            )
        )
    )


def _commit(ctx: Context) -> str | None:
    if shutil.which("git") is None:
        return None
    try:
        result = procs.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=ctx.root, check=False, echo=False, timeout=30
        )
    except CfopsError:  # timed out, or vanished from PATH: no commit, so nothing is trusted
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


_PARTS: dict[Part, Callable[[Context], str | None]] = {
    "tree": _tree,
    "toolchain": _toolchain,
    "code": _code,
    "python": _python,
    "settings": _settings,
    "commit": _commit,
}
