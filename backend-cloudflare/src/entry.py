"""Native Cloudflare Python Worker entry: hands each request to the FastAPI app over ASGI."""

from __future__ import annotations

import os

from workers import WorkerEntrypoint  # provided by the Python Workers runtime

from bindings import apply_env_bindings, version_id

_app = None
# The env of the isolate's requests: the analytics sink writes through its binding. A Worker's bindings
# are the same object for every request of one isolate, so the latest one is kept.
_env: object = None


def _write_data_point(point):  # type: ignore[no-untyped-def]
    # writeDataPoint is a JS method: a Python dict must become a plain JS object (to_js turns dicts into
    # Maps unless told to use Object.fromEntries). It does not block: the runtime sends it after the
    # response. A missing binding (a dev run without it) raises AttributeError, which the middleware
    # counts and swallows.
    from js import Object
    from pyodide.ffi import to_js

    from immcad_api.analytics import BINDING

    dataset = getattr(_env, BINDING)
    dataset.writeDataPoint(to_js(point.binding_args(), dict_converter=Object.fromEntries))


def _get_app(env: object):  # type: ignore[no-untyped-def]
    # Bindings exist only per request (self.env), so the app is built on first use and then kept for
    # the isolate's lifetime. Importing FastAPI lazily also keeps Worker startup under the 1 s limit.
    global _app
    if _app is None:
        apply_env_bindings(env, os.environ)
        version = version_id(env)
        if version:
            os.environ["IMMCAD_VERSION_ID"] = version
        from immcad_api.analytics import BINDING
        from immcad_api.main import create_app

        sink = _write_data_point if getattr(env, BINDING, None) is not None else None
        _app = create_app(analytics_sink=sink)
    return _app


class Default(WorkerEntrypoint):
    async def fetch(self, request):  # type: ignore[no-untyped-def]
        import asgi

        global _env
        _env = self.env
        return await asgi.fetch(_get_app(self.env), request.js_object, self.env)
