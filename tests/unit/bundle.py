"""Load the Worker bundle's hand-written modules (backend-cloudflare/src) under CPython."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BUNDLE_SRC = Path(__file__).resolve().parents[2] / "backend-cloudflare" / "src"


def load_bindings_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worker_bindings", BUNDLE_SRC / "bindings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
