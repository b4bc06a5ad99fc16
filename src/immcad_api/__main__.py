"""`python -m immcad_api --port N`: serve the API with uvicorn (the origin the edge proxy fronts)."""

from __future__ import annotations

import argparse
import sys

from immcad_api.resources import ResourceError
from immcad_api.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m immcad_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    import uvicorn

    from immcad_api.main import create_app

    try:
        app = create_app(Settings.from_env())
    except (SettingsError, ResourceError) as exc:
        print(f"immcad_api: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
