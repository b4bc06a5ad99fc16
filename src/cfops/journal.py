"""The release journal: every transition of a production or proxy release, recorded as it happens.

``artifacts/release-journal.jsonl`` holds one JSON object per line (oldest first). Each transition is
written atomically — the whole file to a temp file, fsync, rename, fsync of the directory — so a release
killed with SIGKILL at any line leaves a journal that is whole and says where it stopped. An intent is
recorded before each remote change ("uploading" with the upload's tag, "splitting" with the traffic
asked for, "deploying" for the proxy's one-step deploy, "rolling-back"), its outcome after ("uploaded"
with the version id, "split", "deployed", "rolled-back"). Each entry names its Worker: production
releases the native one in stages, ``release proxy`` the edge proxy at once.

``recover`` (cfops.recover) reads the last release's entries (``ReleaseJournal``) with the live
deployment; ``release`` refuses to start while the last release is unfinished. ``ReleaseLock`` (flock on
``artifacts/release.lock``) keeps a second release in the same checkout from starting at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from cfops import output
from cfops.errors import UsageError

JOURNAL = "release-journal.jsonl"
LOCK = "release.lock"

Event = Literal[
    "started",  # stable: the version live at 100 % when the release began
    "uploading",  # tag: how the version is found if the answer is lost
    "uploaded",  # new, stable
    "deploying",  # the proxy: a new version straight to 100 % (one wrangler deploy)
    "deployed",  # new, stable: the proxy's new version serves 100 %
    "splitting",  # traffic asked for
    "split",  # traffic confirmed
    "canary",  # new version measured through the override header
    "stage",  # percent: the smoke at that share passed
    "foreign-deployment",  # traffic: live, not what this release set; it stops and leaves it alone
    "rolling-back",  # stable: the target
    "rolled-back",
    "rollback-failed",
    "done",  # outcome: passed | failed | rolled back | recovered | interrupted
]
EVENTS: tuple[Event, ...] = get_args(Event)
# After these the release has nothing left half-done.
_FINAL: frozenset[Event] = frozenset({"done"})


@dataclass(frozen=True, kw_only=True)
class Entry:
    release: str  # the release id (also the upload's tag)
    event: Event
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    pid: int = field(default_factory=os.getpid)
    worker: str = "native"
    stable: str | None = None
    new: str | None = None
    tag: str | None = None
    traffic: dict[str, float] | None = None
    percent: float | None = None
    stages: tuple[float, ...] = ()
    base_url: str | None = None
    outcome: str | None = None
    answers: dict[str, int] | None = None  # canary / stage: answers by version
    detail: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        event = data.get("event")
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["stages"] = tuple(float(s) for s in known.get("stages") or ())
        return cls(**known)

    def line(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v not in (None, "", ())}
        return json.dumps(data, sort_keys=False)


@dataclass(frozen=True)
class ReleaseJournal:
    """The last release's entries, and what they say."""

    entries: tuple[Entry, ...]

    @property
    def release(self) -> str:
        return self.entries[0].release

    @property
    def last(self) -> Entry:
        return self.entries[-1]

    @property
    def finished(self) -> bool:
        return self.last.event in _FINAL

    def latest(self, attribute: str) -> Any:
        """The most recent non-empty value of ``attribute`` in this release's entries."""
        for entry in reversed(self.entries):
            value = getattr(entry, attribute)
            if value not in (None, "", ()):
                return value
        return None

    @property
    def stable(self) -> str | None:
        return self.latest("stable")  # type: ignore[no-any-return]

    @property
    def new(self) -> str | None:
        return self.latest("new")  # type: ignore[no-any-return]

    def asked_at(self, percent: float) -> datetime | None:
        """When the split at ``percent`` was last asked for (its ``splitting`` entry): where the stage's
        analysis window starts, as in the release itself."""
        for entry in reversed(self.entries):
            if entry.event == "splitting" and entry.percent == percent:
                return datetime.fromisoformat(entry.at)
        return None

    @property
    def worker(self) -> str:
        return self.entries[0].worker

    def where(self) -> str:
        """Where it stopped, in one phrase."""
        last = self.last
        if last.event == "uploading":
            return f"while uploading (tag {last.tag})"
        if last.event == "deploying":
            return "while deploying (straight to 100 %)"
        if last.event == "splitting":
            return f"while deploying the split {_traffic(last.traffic)}"
        if last.event == "split":
            return f"after the split {_traffic(last.traffic)}"
        if last.event == "stage":
            return f"after the smoke at {last.percent:g} %"
        if last.event == "rolling-back":
            return f"while rolling back to {last.stable}"
        return f"after {last.event}" + (f" {last.new}" if last.new else "")


def _traffic(traffic: dict[str, float] | None) -> str:
    return " ".join(f"{v}@{p:g}" for v, p in (traffic or {}).items()) or "(none)"


def path_in(artifacts_dir: Path) -> Path:
    return artifacts_dir / JOURNAL


def read(artifacts_dir: Path) -> list[Entry]:
    """Every entry, oldest first; a journal that cannot be read is bad input (exit 2), never ignored."""
    journal = path_in(artifacts_dir)
    if not journal.is_file():
        return []
    entries = []
    for number, text in enumerate(journal.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            entries.append(Entry.from_json(json.loads(text)))
        except (ValueError, TypeError) as exc:
            raise UsageError(
                f"{journal} line {number} is unreadable ({exc}): inspect it, then move it aside to continue"
            ) from None
    return entries


def last_release(artifacts_dir: Path) -> ReleaseJournal | None:
    entries = read(artifacts_dir)
    if not entries:
        return None
    release = entries[-1].release
    return ReleaseJournal(tuple(e for e in entries if e.release == release))


def record(artifacts_dir: Path, entry: Entry) -> None:
    """Append ``entry``: the file is replaced whole (temp, fsync, rename), so it is never half-written."""
    journal = path_in(artifacts_dir)
    journal.parent.mkdir(parents=True, exist_ok=True)
    old = journal.read_bytes() if journal.is_file() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    fd, temp = tempfile.mkstemp(prefix=".release-journal-", dir=journal.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(old + output.redact(entry.line()).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        Path(temp).replace(journal)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(journal.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def release_lock(artifacts_dir: Path, what: str) -> Iterator[None]:
    """Hold ``artifacts/release.lock`` (flock) for the block; exit 2 when another process holds it.

    The kernel drops a flock when its holder dies, even by SIGKILL, so a killed release never leaves a
    stale lock behind; the pid written inside is for the message only.
    """
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    path = artifacts_dir / LOCK
    handle = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UsageError(
                f"another release or recovery is running in this checkout (pid {holder}): wait for it "
                f"to finish before {what}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
