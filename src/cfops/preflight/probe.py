"""Ask the *synced* app for its route table and how its protected routes answer without a token.

Run by the edge-contract check in a child process — ``python -m cfops.preflight.probe --bundle-src
backend-cloudflare/src --out FILE`` — because importing the bundle's ``immcad_api`` must not collide
with the installed one in the preflight process. The app is built exactly as the Worker builds it
(cfops.devserver: the bundle's own binding function); the bindings arrive as JSON in the environment
variable CFOPS_PROBE_BINDINGS. Requests go to the app in-process (httpx's ASGI transport): nothing
listens on a port.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

BINDINGS_ENV = "CFOPS_PROBE_BINDINGS"
PROBE_TOKEN_ENV = "CFOPS_PROBE_WRONG_TOKEN"  # noqa: S105 - a variable name
_PARAM = re.compile(r"\{[^}]+\}")


def route_table(app: Any) -> list[dict[str, Any]]:
    """Every HTTP route and mount of a Starlette/FastAPI app: path template and methods."""
    from starlette.routing import Mount, Route

    table: list[dict[str, Any]] = []
    for route in app.routes:
        if isinstance(route, Route):
            methods = sorted((route.methods or {"GET"}) - {"HEAD"})
            table.append({"path": route.path, "methods": methods, "name": route.name})
        elif isinstance(route, Mount):
            table.append({"path": route.path.rstrip("/") + "/", "methods": ["*"], "name": route.name})
    return table


async def probe_protected(
    app: Any, routes: list[dict[str, Any]], prefixes: list[str], wrong_token: str
) -> list[dict[str, Any]]:
    """For every route under a protected prefix: the status without a token and with a wrong one."""
    import httpx

    results: list[dict[str, Any]] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://preflight.invalid") as client:
        for route in routes:
            if not any(route["path"].startswith(prefix) for prefix in prefixes):
                continue
            path = _PARAM.sub("preflight", route["path"])
            for method in route["methods"] if route["methods"] != ["*"] else ["GET"]:
                body = b"{}" if method in {"POST", "PUT", "PATCH"} else None
                headers = {"content-type": "application/json"} if body else {}
                bare = await client.request(method, path, content=body, headers=headers)
                wrong = await client.request(
                    method, path, content=body, headers={**headers, "authorization": f"Bearer {wrong_token}"}
                )
                results.append(
                    {
                        "method": method,
                        "path": route["path"],
                        "no_token": bare.status_code,
                        "wrong_token": wrong.status_code,
                    }
                )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfops.preflight.probe")
    parser.add_argument("--bundle-src", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--protected-prefix", action="append", default=[])
    args = parser.parse_args(argv)
    bindings = json.loads(os.environ.pop(BINDINGS_ENV, "{}"))
    wrong_token = os.environ.pop(PROBE_TOKEN_ENV, "preflight-wrong-token")
    report: dict[str, Any]
    # Imported here: the preflight process imports this module for its constants only.
    import asyncio

    try:
        # Imported before use_bundle turns off bytecode writing (the bundle must stay as synced):
        # the installed libraries keep their cached bytecode, which halves this process's start-up.
        import fastapi  # noqa: F401
        import httpx  # noqa: F401

        from cfops.devserver import load_bundle_app, use_bundle

        use_bundle(args.bundle_src)
        from immcad_api.settings import ENV_NAMES

        # Only the Worker's bindings may configure the app, not the caller's shell.
        for name in ENV_NAMES:
            os.environ.pop(name, None)
        app = load_bundle_app(bindings)
        routes = route_table(app)
        probes = asyncio.run(probe_protected(app, routes, args.protected_prefix, wrong_token))
        report = {"routes": routes, "probes": probes}
    except Exception as exc:  # the parent reports any failure to import or build the app as the finding
        report = {"error": f"{type(exc).__name__}: {exc}"}
    args.out.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
