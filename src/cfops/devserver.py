"""Serve the *synced* Worker bundle's app with uvicorn, through the bundle's own env-binding function.

Run by `nox -s dev` as a child process when pywrangler cannot run (no internet for Pyodide):
``python -m cfops.devserver --bundle-src backend-cloudflare/src --port N``. The Worker bindings
(wrangler.toml [vars] + dev overrides + .dev.vars) arrive as JSON in CFOPS_WORKER_BINDINGS — the
environment, not argv, because .dev.vars may hold secrets.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import types
from pathlib import Path

BINDINGS_ENV = "CFOPS_WORKER_BINDINGS"


def use_bundle(bundle_src: Path) -> None:
    """Make ``import immcad_api`` and ``bindings`` resolve to the synced bundle, not the installed source."""
    bundle_src = bundle_src.resolve()
    # The bundle must stay byte-identical to the manifest: no __pycache__ written into it.
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(bundle_src))
    for name in [m for m in sys.modules if m == "immcad_api" or m.startswith("immcad_api.")]:
        del sys.modules[name]
    package = importlib.import_module("immcad_api")
    origin = Path(package.__file__ or "").resolve()
    if not origin.is_relative_to(bundle_src):
        raise RuntimeError(f"immcad_api resolved to {origin}, not the synced bundle under {bundle_src}")


def load_bundle_app(bindings: dict[str, str]) -> object:
    """Build the app exactly as entry.py does: copy the bindings into the environment, then create_app()."""
    binding_module = importlib.import_module("bindings")
    binding_module.apply_env_bindings(types.SimpleNamespace(**bindings), os.environ)
    return importlib.import_module("immcad_api.main").create_app()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfops.devserver")
    parser.add_argument("--bundle-src", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    bindings = json.loads(os.environ.pop(BINDINGS_ENV, "{}"))

    import uvicorn

    use_bundle(args.bundle_src)
    # Imported after use_bundle: these must be the bundle's classes, which the bundle's code raises.
    from immcad_api.resources import ResourceError
    from immcad_api.settings import SettingsError

    try:
        app = load_bundle_app(bindings)
    except (SettingsError, ResourceError) as exc:
        # One line the parent shows as the reason; no traceback for a configuration problem.
        print(f"backend refused to start: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"serving the synced bundle {args.bundle_src}/immcad_api", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
