"""Artifacts and the GitHub step summary: the contract between steps, and what people read after a run.

Every JSON artifact is written atomically (a reader never sees half a file, a failed write keeps the
previous one) with every string redacted before it is serialized — redacting the serialized text would
miss a secret that JSON escaping changed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cfops import output


def redacted(value: Any) -> Any:
    """``value`` with every string in it (keys included) redacted."""
    if isinstance(value, str):
        return output.redact(value)
    if isinstance(value, Mapping):
        return {redacted(str(k)): redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v) for v in value]
    return value


def write_text(path: Path, text: str) -> Path:
    """Write ``path`` atomically: a temporary file next to it, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ``--json -``: the artifact goes to stdout instead of a file.
STDOUT = "-"


def dumps(data: Any) -> str:
    """``data`` as the redacted JSON text of an artifact."""
    return json.dumps(redacted(data), indent=2, ensure_ascii=False, default=str) + "\n"


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as a redacted JSON artifact, atomically."""
    return write_text(path, dumps(data))


def emit_json(target: Path | str, data: Any) -> Path | None:
    """``write_json`` to ``target``, or print the artifact to stdout when ``target`` is ``-``."""
    if str(target) == STDOUT:
        output.print_json(dumps(data))
        return None
    return write_json(Path(target), data)


def append_step_summary(env: Mapping[str, str], markdown: str) -> Path | None:
    """Append ``markdown`` (redacted) to $GITHUB_STEP_SUMMARY when it is set; returns the file, if any."""
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(output.redact(markdown).rstrip("\n") + "\n")
    return path
