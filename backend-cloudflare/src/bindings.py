"""Copy a Worker's env bindings into the environment the app reads its settings from.

Kept free of Worker-only imports so that CPython (tests, and the uvicorn fallback of `nox -s dev`)
runs exactly the code the Worker runs.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

from immcad_api.settings import ENV_NAMES

# wrangler.toml: [version_metadata] binding = "CF_VERSION_METADATA" ({id, tag, timestamp} per version).
VERSION_METADATA_BINDING = "CF_VERSION_METADATA"
VERSION_ID_NAME = "IMMCAD_VERSION_ID"


def version_metadata_id(env: object) -> str | None:
    """The id of the Worker version this isolate runs, from the version-metadata binding."""
    if isinstance(env, dict):
        binding = env.get(VERSION_METADATA_BINDING)
    else:
        binding = getattr(env, VERSION_METADATA_BINDING, None)
    if binding is None:
        return None
    value = binding.get("id") if isinstance(binding, dict) else getattr(binding, "id", None)
    return value if isinstance(value, str) and value else None


def apply_env_bindings(
    env: object, target: MutableMapping[str, str], names: Iterable[str] = ENV_NAMES
) -> list[str]:
    """Copy each named binding that is a plain string (a var or a secret) into ``target``.

    A Worker's ``env`` is a JS proxy that cannot be enumerated reliably, so the names come from the
    app's own list. Non-string bindings (KV, R2, service bindings) are skipped. Returns the names copied,
    never their values.
    """
    copied: list[str] = []
    version_id = version_metadata_id(env)
    if version_id:
        # The app names the version that answered (x-immcad-version) from this variable.
        target[VERSION_ID_NAME] = version_id
        copied.append(VERSION_ID_NAME)
    for name in names:
        if name == VERSION_ID_NAME and version_id:
            continue
        value = env.get(name) if isinstance(env, dict) else getattr(env, name, None)
        if isinstance(value, str):
            target[name] = value
            copied.append(name)
    return copied
