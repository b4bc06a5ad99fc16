"""The Python the native Worker runs on Cloudflare, and whether the vendored packages were built for it.

Cloudflare picks the Python Workers runtime from the Worker's compatibility date and flags (the table
is ``cloudflare.PYTHON_WORKERS_RUNTIMES``). Packages vendored into python_modules/ for another Python
import fine locally and break in production after the upload, so preflight and the native deploy check
the wheel tags (``*.dist-info/WHEEL``) and the CPython tags of compiled modules (``*.cpython-312-*.so``)
against it first.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cfops import cloudflare
from cfops.config import Settings
from cfops.errors import CheckFailed, ConfigError, UsageError
from cfops.wrangler import read_config

VENDOR_DIR = "python_modules"


@dataclass(frozen=True)
class RuntimePython:
    version: str  # "3.14"
    compatibility_date: dt.date
    reason: str  # "compatibility_date 2026-11-01 (>= 2026-09-08)" or "flag python_workers_314"


def runtime_python(settings: Settings, *, today: dt.date | None = None) -> RuntimePython:
    """The Python Cloudflare will run the native Worker on, from its wrangler config.

    UsageError (exit 2) when the config cannot say: no or malformed compatibility_date, a date in the
    future (Cloudflare rejects the upload), no python_workers flag.
    """
    path = settings.native.config
    config = read_config(path)
    where = path.name
    raw = config.get("compatibility_date")
    if raw is None:
        raise ConfigError(f"{where}: compatibility_date is missing (it decides the Worker's Python)")
    try:
        date = raw if isinstance(raw, dt.date) else dt.date.fromisoformat(str(raw))
    except ValueError:
        raise ConfigError(f"{where}: compatibility_date {raw!r} is not a YYYY-MM-DD date") from None
    today = today or dt.datetime.now(dt.UTC).date()
    if date > today:
        raise UsageError(
            f"{where}: compatibility_date {date} is in the future (today is {today} UTC): Cloudflare rejects "
            "the upload; set it to today or earlier"
        )
    flags = config.get("compatibility_flags") or []
    if not isinstance(flags, list):
        raise ConfigError(f"{where}: compatibility_flags must be a list")
    found = cloudflare.python_workers_runtime(date, [str(f) for f in flags])
    if found is None:
        raise ConfigError(f"{where}: compatibility_flags lacks python_workers (a Python Worker needs it)")
    version, reason = found
    return RuntimePython(version=version, compatibility_date=date, reason=reason)


# ------------------------------------------------------------------------------- vendored packages

# cp312, py312, py3 (any 3.x), abi3 (stable ABI: 3.x and later); the tail of a compiled module's name
_TAG = re.compile(r"^(?:cp|py)(\d)(\d+)?$")
_SO_TAG = re.compile(r"\.cpython-(\d)(\d+)[^/]*\.so$")


@dataclass(frozen=True)
class Mismatch:
    package: str  # "pydantic_core 2.41.5"
    built_for: str  # "3.12"
    evidence: (
        str  # "python_modules/pydantic_core-2.41.5.dist-info/WHEEL: Tag cp312-cp312-pyodide_2024_0_wasm32"
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _tag_python(tag: str, runtime: str) -> str | None:
    """The Python version a wheel tag was built for ("3.12"), or None when it fits ``runtime``: a pure
    tag (py3) fits any 3.x, a stable-ABI tag (cp312-abi3) that version and every later one."""
    python, abi = tag.split("-")[:2] if tag.count("-") >= 2 else (tag, "none")
    found = _TAG.match(python)
    if abi == "abi3" and found and found.group(2) is not None:
        minimum = f"{found.group(1)}.{found.group(2)}"
        return None if _version(runtime) >= _version(minimum) else minimum
    for part in (abi, python):
        found = _TAG.match(part)
        if found and found.group(2) is not None and part.startswith("cp"):
            return f"{found.group(1)}.{found.group(2)}"
    return None


def _dist_name(dist_info: Path) -> str:
    metadata = dist_info / "METADATA"
    name = version = ""
    if metadata.is_file():
        for line in metadata.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
    if not name:
        name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
    return f"{name} {version}".strip()


def _record_paths(dist_info: Path) -> list[str]:
    record = dist_info / "RECORD"
    if not record.is_file():
        return []
    return [
        line.split(",", 1)[0] for line in record.read_text(encoding="utf-8", errors="replace").splitlines()
    ]


def _so_python(path: str) -> str | None:
    """ "3.12" for ``pkg/_core.cpython-312-wasm32-emscripten.so``; None for an untagged module."""
    match = _SO_TAG.search(path)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _wheel_tags(dist_info: Path) -> list[str]:
    wheel = dist_info / "WHEEL"
    if not wheel.is_file():
        return []
    lines = wheel.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.partition(":")[2].strip() for line in lines if line.startswith("Tag:")]


def vendored_mismatches(vendor: Path, python: str) -> list[Mismatch]:
    """Every vendored distribution (or stray compiled module) built for another Python than ``python``."""
    if not vendor.is_dir():
        return []
    found: list[Mismatch] = []
    owned: set[str] = set()
    for dist_info in sorted(vendor.glob("*.dist-info")):
        package = _dist_name(dist_info)
        paths = _record_paths(dist_info)
        owned.update(paths)
        tags = _wheel_tags(dist_info)
        wanted = {_tag_python(tag, python) for tag in tags}
        if tags and None not in wanted and python not in wanted:
            versions = ", ".join(sorted(v for v in wanted if v))
            evidence = f"{VENDOR_DIR}/{dist_info.name}/WHEEL: Tag {tags[0]}"
            found.append(Mismatch(package, versions, evidence))
            continue
        for module in paths:
            version = _so_python(module)
            if version is not None and version != python:
                found.append(Mismatch(package, version, f"{VENDOR_DIR}/{module}"))
                break
    for path in sorted(vendor.rglob("*.so")):
        rel = path.relative_to(vendor).as_posix()
        version = _so_python(rel)
        if rel not in owned and version is not None and version != python:
            found.append(Mismatch(rel.split("/", 1)[0], version, f"{VENDOR_DIR}/{rel}"))
    return found


def describe(mismatches: Sequence[Mismatch], runtime: RuntimePython) -> str:
    """One line: which packages, for which Python, and the two ways out."""
    names = ", ".join(f"{m.package} (Python {m.built_for})" for m in mismatches[:5])
    more = f" and {len(mismatches) - 5} more" if len(mismatches) > 5 else ""
    built = sorted({m.built_for for m in mismatches})
    dates = cloudflare.python_workers_dates(built[0]) if len(built) == 1 else None
    hint = f", or a compatibility_date {dates} (Python {built[0]})" if dates else ""
    return (
        f"vendored for another Python than the runtime's {runtime.version} "
        f"({runtime.reason}): {names}{more}: re-vendor with `nox -s sync -- --vendor`{hint}"
    )


def check_before_upload(settings: Settings, *, vendored: bool) -> RuntimePython:
    """The runtime's Python; CheckFailed when ``vendored`` python_modules/ were built for another one.

    ``vendored``: the upload carries python_modules/ as it is (the wrangler runner); pywrangler
    re-vendors for the runtime's Python itself.
    """
    runtime = runtime_python(settings)
    if vendored:
        mismatches = vendored_mismatches(settings.worker_dir / VENDOR_DIR, runtime.version)
        if mismatches:
            raise CheckFailed(describe(mismatches, runtime))
    return runtime


def details(mismatches: Iterable[Mismatch]) -> list[str]:
    return [f"{m.package}: built for Python {m.built_for} ({m.evidence})" for m in mismatches]
