"""Copy a Worker's env bindings into the environment the app reads its settings from.

Kept free of Worker-only imports so that CPython (tests, and the uvicorn fallback of `nox -s dev`)
runs exactly the code the Worker runs.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from immcad_api.settings import ENV_NAMES


def apply_env_bindings(
    env: object, target: MutableMapping[str, str], names: Iterable[str] = ENV_NAMES
) -> list[str]:
    """Copy each named binding that is a plain string (a var or a secret) into ``target``.

    A Worker's ``env`` is a JS proxy that cannot be enumerated reliably, so the names come from the
    app's own list. Non-string bindings (KV, R2, service bindings) are skipped. Returns the names copied,
    never their values.
    """
    copied: list[str] = []
    for name in names:
        value = env.get(name) if isinstance(env, dict) else getattr(env, name, None)
        if isinstance(value, str):
            target[name] = value
            copied.append(name)
    return copied


# The version-metadata binding ([version_metadata] in wrangler.toml): its ``id`` is the Worker version
# serving this request, which every analytics data point carries.
VERSION_METADATA_BINDING = "CF_VERSION_METADATA"


def version_id(env: object, binding: str = VERSION_METADATA_BINDING) -> str | None:
    """The serving version's id from the version-metadata binding, or None (local dev: no binding)."""
    metadata = env.get(binding) if isinstance(env, dict) else getattr(env, binding, None)
    if metadata is None:
        return None
    value = metadata.get("id") if isinstance(metadata, dict) else getattr(metadata, "id", None)
    return value if isinstance(value, str) and value else None
