"""The engine's build stream as steps: parsing (BuildLog), showing (plain lines or a progress bar), and
turning a failed build into one error that names the step."""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from cfops import output
from cfops.errors import CommandFailed, ConfigError, MissingToolError
from cfops.image.engine import same_image, short

# Lines of a failed step's output shown with the error.
OUTPUT_TAIL = 15
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_RUNNING_RE = re.compile(r"^ ---> Running in ([0-9a-f]{12,64})$")
_RESULT_RE = re.compile(r"^ ---> ([0-9a-f]{12,64})$")
FROM_RE = re.compile(r"^FROM\s+(?:--\S+\s+)*\S+(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
# What the engine says when it cannot get the base image: the fix is a local base, not a retry.
_PULL_FAILURE_RE = re.compile(
    r"pull access denied|repository does not exist|manifest unknown|not found: manifest|"
    r"registry-1\.docker\.io|dial tcp|no such host|TLS handshake timeout|i/o timeout",
    re.IGNORECASE,
)


@dataclass
class Step:
    number: int
    total: int
    instruction: str
    started: float
    cached: bool = False
    image_id: str | None = None
    container_id: str | None = None
    seconds: float = 0.0
    finished: bool = False
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=OUTPUT_TAIL * 4))

    @property
    def label(self) -> str:
        return f"step {self.number}/{self.total} ({short(self.instruction, 90)})"


class Display(Protocol):
    def step_started(self, step: Step) -> None: ...
    def step_finished(self, step: Step) -> None: ...
    def output(self, step: Step | None, line: str) -> None: ...


class BuildLog:
    """Turns the engine's JSON build messages into steps: number, instruction, cached, image, output.

    The classic builder's stream is text in JSON envelopes, split at arbitrary points; lines are
    reassembled here before they are parsed.
    """

    def __init__(self, display: Display) -> None:
        self.display = display
        self.steps: list[Step] = []
        # (stage name, image id of its last step) for every completed stage except the last one
        self.stages: list[tuple[str, str]] = []
        self.created: list[str] = []  # image ids this build made (not cache hits): removed on failure
        self.image_id: str | None = None
        self.error: str | None = None
        self._buffer = ""
        self._stage_name: str | None = None
        self._stage_index = -1

    @property
    def current(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    @property
    def running_container(self) -> str | None:
        step = self.current
        return step.container_id if step and step.image_id is None else None

    def feed(self, message: Mapping[str, Any]) -> None:
        if "errorDetail" in message or "error" in message:
            detail = message.get("errorDetail") or {}
            self.error = str(detail.get("message") or message.get("error") or "unknown build error").strip()
            return
        aux = message.get("aux")
        if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
            self.image_id = aux["ID"]
        text = message.get("stream")
        if isinstance(text, str):
            self._buffer += text.replace("\r\n", "\n").replace("\r", "\n")
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._line(line)
        status = message.get("status")
        if isinstance(status, str) and not message.get("progressDetail"):
            # Pull progress of a base image: one line per layer state, not per byte.
            ident = message.get("id")
            self.display.output(self.current, f"{ident}: {status}" if ident else status)

    def finish(self) -> None:
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        self._end_step(time.perf_counter(), completed=self.error is None)

    def _line(self, line: str) -> None:
        now = time.perf_counter()
        match = _STEP_RE.match(line)
        if match:
            self._end_step(now, completed=True)
            new = Step(number=int(match[1]), total=int(match[2]), instruction=match[3].strip(), started=now)
            from_match = FROM_RE.match(new.instruction)
            if from_match:
                self._end_stage()
                self._stage_index += 1
                self._stage_name = from_match[1] or f"stage{self._stage_index}"
            self.steps.append(new)
            self.display.step_started(new)
            return
        step = self.current
        if step is not None and step.image_id is None:
            if line.strip() == "---> Using cache":
                step.cached = True
                return
            running = _RUNNING_RE.match(line)
            if running:
                step.container_id = running[1]
                return
            result = _RESULT_RE.match(line)
            if result:
                step.image_id = result[1]
                is_from = FROM_RE.match(step.instruction) is not None
                if not step.cached and not is_from:
                    self.created.append(result[1])
                return
        if line.startswith("Removing intermediate container") or line.startswith("Successfully "):
            return
        if step is not None:
            step.output.append(line)
        self.display.output(step, line)

    def _end_step(self, now: float, *, completed: bool) -> None:
        step = self.current
        if step is not None and not step.finished and completed:
            step.finished = True
            step.seconds = now - step.started
            self.display.step_finished(step)

    def _end_stage(self) -> None:
        if self._stage_name is None:
            return
        last = self.current
        if last is not None and last.image_id:
            # The engine follows each stage with its full id (aux); the step line has the short form.
            full = self.image_id if same_image(self.image_id, last.image_id) else None
            self.stages.append((self._stage_name, full or last.image_id))


class PlainDisplay:
    """CI logs and pipes: one line per finished step; RUN output only with --verbose."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose

    def step_started(self, step: Step) -> None:
        if self.verbose:
            output.echo(f"[{step.number}/{step.total}] {step.instruction}", style="bold")

    def step_finished(self, step: Step) -> None:
        if not self.verbose:
            output.echo(_step_line(step))
        elif step.container_id is not None:
            output.echo(f"  done in {step.seconds:.1f} s", style="dim")

    def output(self, step: Step | None, line: str) -> None:
        if self.verbose and line.strip():
            output.echo(f"  {line}", style="dim")


class ProgressDisplay(PlainDisplay):
    """On a terminal: a live progress bar over the steps, finished steps printed above it."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(verbose)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=output.console(),
            transient=True,
        )
        self.task = self.progress.add_task("sending the build context", total=None)

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def step_started(self, step: Step) -> None:
        description = f"[{step.number}/{step.total}] {short(step.instruction, 60)}"
        self.progress.update(self.task, total=step.total, completed=step.number - 1, description=description)
        super().step_started(step)


def _step_line(step: Step) -> str:
    outcome = "cached" if step.cached else f"{step.seconds:.1f} s"
    return f"[{step.number}/{step.total}] {short(step.instruction, 88)}  {outcome}"


def raise_build_error(log: BuildLog, python_image: str) -> None:
    step = log.current
    error = short(log.error or "unknown error", 300)
    if step is None:
        raise ConfigError(f"the engine rejected the Dockerfile before the first step: {error}")
    tail = [line for line in step.output if line.strip()][-OUTPUT_TAIL:]
    if FROM_RE.match(step.instruction) and _PULL_FAILURE_RE.search(log.error or ""):
        raise MissingToolError(
            f"cannot get the base image {python_image} at {step.label}: {error}; where Docker Hub is out of "
            "reach build a local one (scripts/make_base_image.sh) and set PYTHON_IMAGE to its tag"
        )
    if tail:
        output.echo(f"last output of {step.label}:", style="bold")
        for line in tail:
            output.echo(f"  {line}", style="dim")
    raise CommandFailed(f"build failed at {step.label}: {error}", output_tail="\n".join(tail))
