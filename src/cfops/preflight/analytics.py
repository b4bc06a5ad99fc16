"""analytics: the Analytics Engine binding agrees everywhere the names are written.

[tool.cfops.analytics] (the one place of truth) names the binding and the dataset; wrangler.toml must
declare exactly that ``[[analytics_engine_datasets]]`` entry, the Worker's code
(``immcad_api.analytics.BINDING``) must write through that binding, and the Worker needs its
``[version_metadata]`` binding under the name ``backend-cloudflare/src/bindings.py`` reads — else every
data point carries the version "local" and no stage can be judged. Offline: the token's permission is
checked by the release's first remote step (``python -m cfops.analytics check``).
"""

from __future__ import annotations

import ast

from cfops.errors import ConfigError
from cfops.preflight.model import Context, Finding, Outcome
from cfops.wrangler import read_config
from immcad_api import analytics as layout

CHECK_ID = "analytics"


def _version_binding_in_code(ctx: Context) -> str | None:
    """VERSION_METADATA_BINDING as backend-cloudflare/src/bindings.py assigns it (read, not imported)."""
    path = ctx.settings.worker_dir / "src" / "bindings.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "VERSION_METADATA_BINDING" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return None


def check(ctx: Context) -> Finding:
    out = Outcome(CHECK_ID)
    wanted = ctx.settings.analytics
    path = ctx.settings.native.config
    where = ctx.rel(path)
    out.limits.update({"binding": wanted.binding, "dataset": wanted.dataset})
    try:
        config = read_config(path)
    except ConfigError as exc:
        out.fail(str(exc).replace(str(path), where))
        return out.finding("")
    declared = config.get("analytics_engine_datasets") or []
    entries = [d for d in declared if isinstance(d, dict)] if isinstance(declared, list) else []
    mine = [d for d in entries if d.get("binding") == wanted.binding]
    if not mine:
        out.fail(
            f"{where}: no [[analytics_engine_datasets]] with binding = {wanted.binding!r} "
            "([tool.cfops.analytics] binding): the Worker would record no data points"
        )
    elif mine[0].get("dataset") != wanted.dataset:
        out.fail(
            f"{where}: binding {wanted.binding} writes dataset {mine[0].get('dataset')!r}, but "
            f"[tool.cfops.analytics] dataset is {wanted.dataset!r} (the release would read another dataset)"
        )
    if wanted.binding != layout.BINDING:
        out.fail(
            f"[tool.cfops.analytics] binding {wanted.binding!r} differs from the Worker's code "
            f"(immcad_api.analytics.BINDING = {layout.BINDING!r})"
        )
    metadata = config.get("version_metadata")
    expected = _version_binding_in_code(ctx)
    binding = metadata.get("binding") if isinstance(metadata, dict) else None
    if binding is None:
        out.fail(f"{where}: no [version_metadata] binding: data points could not name their version")
    elif expected is not None and binding != expected:
        out.fail(
            f"{where}: [version_metadata] binding {binding!r} differs from the one the Worker reads "
            f"({expected!r} in backend-cloudflare/src/bindings.py)"
        )
    out.measured.update({"declared": [d.get("binding") for d in entries], "version_metadata": binding})
    return out.finding(f"binding {wanted.binding} → dataset {wanted.dataset}, version metadata {binding}")
