"""Native Cloudflare Python Worker entry: hands each request to the FastAPI app over ASGI."""

from __future__ import annotations

import os

from workers import WorkerEntrypoint  # provided by the Python Workers runtime

from bindings import apply_env_bindings

_app = None


def _get_app(env: object):  # type: ignore[no-untyped-def]
    # Bindings exist only per request (self.env), so the app is built on first use and then kept for
    # the isolate's lifetime. Importing FastAPI lazily also keeps Worker startup under the 1 s limit.
    global _app
    if _app is None:
        apply_env_bindings(env, os.environ)
        from immcad_api.main import create_app

        _app = create_app()
    return _app


class Default(WorkerEntrypoint):
    async def fetch(self, request):  # type: ignore[no-untyped-def]
        import asgi

        return await asgi.fetch(_get_app(self.env), request.js_object, self.env)
