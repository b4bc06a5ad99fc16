"""One value from the config file, the environment or a flag into its field's type, or a ConfigError."""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from cfops.errors import ConfigError


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def coerce(value: Any, tp: Any, where: str, root: Path) -> Any:
    """Turn a TOML value or an environment string into the field's type, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    is_text = isinstance(value, str)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(str(a) for a in args)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None or (is_text and value == "" and type(None) in args):
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where, root)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if is_text and value.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if is_text and value.strip().lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):  # nan passes every range check that follows
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return (root / value).resolve()
    if origin is tuple:
        items = [p.strip() for p in value.split(",") if p.strip()] if is_text else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(coerce(item, args[0], where, root) for item in items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return {str(k): coerce(v, args[1], f"{where}.{k}", root) for k, v in value.items()}
    raise ConfigError(f"{where}: unsupported setting type {_describe(tp)}")  # pragma: no cover
