"""Reading the settings: find the project, then layer defaults < ``[tool.cfops]`` < ``.env`` < environment
< command-line flags, every value through the same coercion (``cfops.config.coerce``)."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from cfops.config.coerce import coerce
from cfops.config.settings import Settings
from cfops.errors import ConfigError, UsageError

T = TypeVar("T")

PYPROJECT = "pyproject.toml"


def find_root(start: Path) -> Path:
    """The nearest directory at or above ``start`` whose pyproject.toml has a [tool.cfops] table."""
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / PYPROJECT
        if candidate.is_file() and "[tool.cfops" in candidate.read_text(encoding="utf-8", errors="replace"):
            return directory
    raise UsageError(f"no {PYPROJECT} with a [tool.cfops] table at or above {start}; run from the project")


def _read_table(root: Path) -> dict[str, Any]:
    path = root / PYPROJECT
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("tool", {}).get("cfops", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.cfops] must be a table")
    return table


def build(
    base: T,
    table: Mapping[str, Any],
    env: Mapping[str, str],
    root: Path,
    where: str,
    flags: Mapping[str, Any] | None = None,
    path: str = "",
) -> T:
    """Overlay a config table, then the environment, then command-line flags on ``base`` (a settings
    dataclass instance). ``flags`` maps dotted field paths ("perf.requests") to the parsed text."""
    flags = flags or {}
    hints = typing.get_type_hints(type(base))
    fields = {f.name: f for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields) - {"root", "env", "flags"})
    if unknown:
        known = ", ".join(sorted(set(fields) - {"root", "env", "flags"}))
        raise ConfigError(f"unknown setting {where}.{unknown[0]} (known: {known})")
    changes: dict[str, Any] = {}
    for name, f in fields.items():
        if name in {"root", "env", "flags"}:
            continue
        key = f"{where}.{name}"
        current = getattr(base, name)
        if dataclasses.is_dataclass(current):
            sub = table.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"{key} must be a table")
            changes[name] = build(current, sub, env, root, f"{where[:-1]}.{name}]", flags, f"{path}{name}.")
            continue
        if name in table:
            convert: Callable[[Any, Path], Any] | None = f.metadata.get("convert")
            changes[name] = (
                convert(table[name], root) if convert else coerce(table[name], hints[name], key, root)
            )
        if not f.metadata.get("deferred"):
            override = _env_override(f, hints[name], env, root)
            if override is not _UNSET:
                changes[name] = override
        override = _flag_override(f, hints[name], flags.get(f"{path}{name}", _UNSET))
        if override is not _UNSET:
            changes[name] = override
    return dataclasses.replace(base, **changes)  # type: ignore[type-var]


_UNSET: Any = object()


def _env_override(f: dataclasses.Field[Any], tp: Any, env: Mapping[str, str], root: Path) -> Any:
    for var in f.metadata.get("env", ()):
        if env.get(var) is not None:
            return coerce(env[var], tp, var, root)
    return _UNSET


def _flag_override(f: dataclasses.Field[Any], tp: Any, value: Any) -> Any:
    if value is _UNSET or value is None:
        return _UNSET
    # A path on the command line is relative to where the user stands, not to the project root.
    return coerce(value, tp, str(f.metadata.get("flag") or f.name), Path.cwd())


def with_deferred_env(section: T, settings: Settings) -> T:
    """``section`` with its deferred environment overrides applied (ConfigError if one is malformed);
    a field given as a command-line flag keeps the flag's value."""
    hints = typing.get_type_hints(type(section))
    prefix = next(
        (
            f"{f.name}."
            for f in dataclasses.fields(settings)
            if type(getattr(settings, f.name)) is type(section)
        ),
        "",
    )
    changes = {}
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        if f.metadata.get("deferred") and f"{prefix}{f.name}" not in settings.flags:
            override = _env_override(f, hints[f.name], settings.env, settings.root)
            if override is not _UNSET:
                changes[f.name] = override
    return dataclasses.replace(section, **changes)  # type: ignore[type-var]


def read_env(root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """``.env`` under ``root`` overlaid by the process environment (which wins)."""
    merged: dict[str, str] = {}
    dotenv = root / ".env"
    if dotenv.is_file():
        merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    merged.update(environ)
    return merged


def load_settings(
    root: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the settings for the project at ``root`` (found from the cwd when not given).

    ``flags``: command-line overrides by dotted field path ("dev.port" -> "8790"), the top layer.
    """
    environ = {} if environ is None else environ
    if root is None:
        explicit = environ.get("CFOPS_ROOT")
        root = Path(explicit).resolve() if explicit else find_root(Path.cwd())
    root = root.resolve()
    env = read_env(root, environ)
    table = _read_table(root)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    settings = build(_with_resolved_paths(Settings(root=root)), table, env, root, "[tool.cfops]", given)
    return dataclasses.replace(settings, env=env, flags=given)


def _with_resolved_paths(settings: Settings) -> Settings:
    """Defaults are written relative to the project root; make them absolute like configured ones."""
    root = settings.root

    def fix(obj: Any) -> Any:
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            return obj
        changes = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name in {"root", "env", "flags"}:
                continue
            if isinstance(value, Path) and not value.is_absolute():
                changes[f.name] = (root / value).resolve()
            elif dataclasses.is_dataclass(value):
                changes[f.name] = fix(value)
        return dataclasses.replace(obj, **changes)

    fixed: Settings = fix(settings)
    return fixed
