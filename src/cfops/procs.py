"""The one place that runs external programs: commands (run) and background services (Service).

Every child runs in its own session (process group) so that stopping it also stops what it spawned
(wrangler starts workerd, pywrangler starts npx …). On Linux the direct child also gets
PR_SET_PDEATHSIG, so it is told to stop even if this process is killed outright.

About 500 lines on purpose: one module owns every child process (commands, services, their health
polls, ports and the interruption handling), so that no other module starts or stops a process.
"""

from __future__ import annotations

import collections
import ctypes
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from cfops import output
from cfops.errors import CommandFailed, MissingToolError, ServiceError, UsageError

if TYPE_CHECKING:
    import httpx

Command = Sequence[str | Path]
_TAIL_LINES = 40
# Some tools colour their output even into a pipe (wrangler formats its errors with esbuild, colour on).
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """Text without terminal colour codes (wrangler colours its errors even into a pipe)."""
    return _ANSI_ESCAPE.sub("", text)


def which(program: str, *, hint: str) -> str:
    """Absolute path of ``program`` or MissingToolError saying how to install it."""
    found = shutil.which(program)
    if not found:
        raise MissingToolError(f"{program} not found on PATH: {hint}")
    return found


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once in the parent: between fork and exec the child should do as little as possible.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_starter(parent_pid: int) -> None:
    """In this process: ask for SIGTERM when ``parent_pid`` (the process that started it) dies, and stop
    now if it already has. For a child whose runner cannot pass ``die_with_parent()`` (nox's
    session.run): the same death signal, set up from the child's side."""
    if _PRCTL is None:
        return
    _set_pdeathsig()
    if os.getppid() != parent_pid:  # the parent died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` that has a child sent SIGTERM when this process dies (Linux), or None.

    The one parent-death setup: every Popen that starts a child passes this. The death signal follows
    the *thread* that forked; children started from worker threads would be killed when that thread
    ends, so only the main thread asks for it.
    """
    if _PRCTL is not None and threading.current_thread() is threading.main_thread():
        return _set_pdeathsig
    return None


def _child_env(env: Mapping[str, str] | None, inherit: bool) -> dict[str, str]:
    merged = dict(os.environ) if inherit else {}
    if env:
        merged.update(env)
    return merged


def _format_command(cmd: Command) -> str:
    return output.redact(shlex.join(str(part) for part in cmd))


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def terminate(proc: subprocess.Popen[bytes], *, grace: float = 10.0, first: int = signal.SIGTERM) -> int:
    """Stop ``proc`` and its process group: ``first`` signal, wait ``grace`` seconds, then SIGKILL."""
    if proc.poll() is None:
        _kill_group(proc, first)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait(timeout=5)
    # The leader may be gone while grandchildren linger in its group: sweep it once more.
    _kill_group(proc, signal.SIGKILL)
    return proc.returncode


# Commands `run` is waiting on, so that a runner whose commands run in worker threads can stop them.
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


def stop_running(grace: float = 5.0) -> None:
    """Stop every command ``run`` is still waiting on (SIGINT, then SIGKILL after ``grace``).

    Ctrl-C and SIGTERM reach only the main thread, and each child runs in its own session: a runner
    that waits on commands in worker threads calls this from its interrupt handler.
    """
    with _running_lock:
        live = list(_running)
    for proc in live:
        terminate(proc, grace=grace, first=signal.SIGINT)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    duration: float


def run(
    cmd: Command,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    input: str | None = None,
    timeout: float | None = None,
    capture: bool = True,
    stream: bool = False,
    check: bool = True,
    echo: bool = True,
    what: str | None = None,
) -> Result:
    """Run ``cmd`` (an argument list, never a shell string) to completion.

    ``input`` goes to stdin (how secrets reach a program: never argv). Output is captured unless
    ``capture`` is False, in which case it goes straight to the terminal; ``stream`` captures it *and*
    echoes each line (redacted) as it arrives, stderr merged into stdout. A non-zero exit raises
    CommandFailed carrying the redacted tail of its output, unless ``check`` is False.
    """
    argv = [str(part) for part in cmd]
    label = what or Path(argv[0]).name
    if echo:
        output.echo(f"+ {_format_command(argv)}", style="dim")
    pipe = subprocess.PIPE if capture or stream else None
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=_child_env(env, inherit_env),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=pipe,
            stderr=subprocess.STDOUT if stream else pipe,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    except FileNotFoundError:
        raise MissingToolError(f"{argv[0]} not found: is it installed and on PATH?") from None
    with _running_lock:
        _running.add(proc)
    try:
        if stream:
            out, err = _stream(proc, input, timeout), b""
        else:
            out, err = proc.communicate(input.encode() if input is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        terminate(proc, grace=3)
        raise CommandFailed(f"{label} timed out after {timeout:g} s: {_format_command(argv)}") from None
    except BaseException:
        # Ctrl-C / SIGTERM while waiting: the child is in its own session and did not see the signal.
        terminate(proc, grace=5, first=signal.SIGINT)
        raise
    finally:
        with _running_lock:
            _running.discard(proc)
    result = Result(
        returncode=proc.returncode,
        stdout=(out or b"").decode(errors="replace"),
        stderr=(err or b"").decode(errors="replace"),
        duration=time.perf_counter() - started,
    )
    if check and result.returncode != 0:
        tail = tail_lines(result.stderr + result.stdout)
        detail = f": {tail.splitlines()[-1]}" if tail else ""
        raise CommandFailed(
            f"{label} exited with {result.returncode}{detail}", returncode=result.returncode, output_tail=tail
        )
    return result


def _stream(proc: subprocess.Popen[bytes], input: str | None, timeout: float | None) -> bytes:
    """Echo the child's lines as they come (indented, redacted) and return them all."""
    lines: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            lines.append(raw)
            text = strip_ansi(raw.decode(errors="replace")).rstrip()
            if text:
                output.echo(f"  {text}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if proc.stdin is not None:
        with suppress(BrokenPipeError):
            proc.stdin.write((input or "").encode())
            proc.stdin.close()
    try:
        proc.wait(timeout=timeout)
    finally:
        reader.join(timeout=5)
    return b"".join(lines)


def tail_lines(text: str, count: int = 12) -> str:
    lines = [line for line in output.redact(text).splitlines() if line.strip()]
    return "\n".join(lines[-count:])


# --------------------------------------------------------------------------------------------- ports


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_port_free(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} is out of range (1-65535)")
    if not port_is_free(host, port):
        raise UsageError(f"port {port} on {host} is already in use; pass --port N or stop what is using it")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, for a service started soon after.

    Chosen below the kernel's ephemeral range where that range is known (Linux): a port from the range
    is also what every outgoing connection gets, and one of those (a load test's, say) may take it in
    the moment before the service binds it. Elsewhere, or when 50 tries find nothing, the kernel picks.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    span = range(max(1024, low - 12000), low) if low > 2048 else range(0)
    candidates = [random.choice(span) for _ in range(50)] if span else []  # noqa: S311 (not a secret)
    for port in [*candidates, 0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise ServiceError(f"no free port on {host}")


# ------------------------------------------------------------------------------------ health polls


@dataclass(frozen=True)
class Health:
    url: str
    response: httpx.Response
    seconds: float  # from the start of the poll to the healthy answer


def poll_health(
    what: str,
    url: str | Callable[[], str | None],
    *,
    timeout: float,
    healthy: Callable[[httpx.Response], bool] | None = None,
    expect: str = "2xx",
    exit_code: Callable[[], int | None] = lambda: None,
    last_output: Callable[[], str] = lambda: "(no output)",
    output_label: str = "last output",
    interval: float = 0.1,
) -> Health:
    """GET ``url`` until it answers healthy (by default: any 2xx); the one health poll of every service.

    ``url`` may be a function that returns None while the address is not known yet (a container's host
    port). ``exit_code`` says when the thing polled has ended (its exit code, else None): then waiting
    on is pointless. Bounded by ``timeout``; a failure is a ServiceError naming ``what``, the last answer
    and ``last_output()`` (called only then: it may print the logs).
    """
    # Imported here: httpx costs ~0.3 s of start-up that commands without a service never use.
    import httpx

    from immcad_api import analytics as layout

    judge = healthy or (lambda response: response.is_success)
    endpoint = (urlsplit(url).path or url) if isinstance(url, str) else "/healthz"
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer yet"
    # Marked as cfops's own request: a backend that records analytics leaves the poll out of user traffic.
    marker = {layout.SYNTHETIC_HEADER: layout.SYNTHETIC_VALUE}
    with httpx.Client(timeout=httpx.Timeout(2.0), trust_env=False, headers=marker) as client:
        while time.monotonic() < deadline:
            code = exit_code()
            if code is not None:
                raise ServiceError(f"{what} exited with {code} before {endpoint} answered: {last_output()}")
            target = url() if callable(url) else url
            if target is not None:
                try:
                    response = client.get(target)
                    if judge(response):
                        return Health(url=target, response=response, seconds=time.monotonic() - started)
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
            time.sleep(interval)
    raise ServiceError(
        f"{what} did not answer {expect} on {endpoint} within {timeout:g} s (last: {last}); "
        f"{output_label}: {last_output()}"
    )


# ------------------------------------------------------------------------------------------ services


class Service:
    """A background process with an owner: started, health-checked, and always stopped.

    Use as a context manager. Output lines are forwarded with a ``[name]`` prefix (redacted) and the
    last lines are kept for error messages. Leaving the block — normally, by exception or by Ctrl-C —
    stops the process group: ``stop_signal``, then SIGKILL after ``grace`` seconds.
    """

    def __init__(
        self,
        name: str,
        cmd: Command,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        health_url: str | None = None,
        ready_timeout: float = 30.0,
        stop_signal: int = signal.SIGTERM,
        grace: float = 10.0,
        forward_output: bool = True,
        log_file: Path | None = None,
        healthy: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        self.name = name
        self.cmd = [str(part) for part in cmd]
        self.cwd = cwd
        self.env = env
        self.inherit_env = inherit_env
        self.health_url = health_url
        self.ready_timeout = ready_timeout
        self.stop_signal = stop_signal
        self.grace = grace
        self.forward_output = forward_output
        self.log_file = log_file
        # What counts as healthy at ``health_url``: by default any 2xx. A proxy whose origin may be
        # down on purpose is up as soon as it answers for itself.
        self.healthy = healthy or (lambda response: response.is_success)
        self._expect = "2xx" if healthy is None else "as expected"
        self.proc: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def tail(self, count: int = 15) -> str:
        return "\n".join(list(self._tail)[-count:])

    def _pump(self, stream: IO[bytes]) -> None:
        log = self.log_file.open("a", encoding="utf-8") if self.log_file else None
        try:
            for raw in iter(stream.readline, b""):
                line = output.redact(strip_ansi(raw.decode(errors="replace")).rstrip())
                self._tail.append(line)
                if log:
                    log.write(line + "\n")
                    log.flush()
                if self.forward_output and line:
                    output.echo(f"[{self.name}] {line}", style="dim")
        finally:
            if log:
                log.close()

    def start(self) -> None:
        output.echo(f"+ {_format_command(self.cmd)}", style="dim")
        if self.log_file:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=self.cwd,
                env=_child_env(self.env, self.inherit_env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except FileNotFoundError:
            raise MissingToolError(f"{self.cmd[0]} not found: is it installed and on PATH?") from None
        self._reader = threading.Thread(
            target=self._pump,
            args=(self.proc.stdout,),
            daemon=True,
            name=f"{output.SERVICE_THREAD}{self.name}",
        )
        self._reader.start()

    def wait_healthy(self) -> None:
        """Poll ``health_url`` until it answers healthy, the process exits, or ``ready_timeout`` passes."""
        if not self.health_url or self.proc is None:
            return
        proc = self.proc

        def exit_code() -> int | None:
            if proc.poll() is None:
                return None
            self._join_reader()  # so that the last line it printed is in the tail
            return proc.returncode

        poll_health(
            self.name,
            self.health_url,
            timeout=self.ready_timeout,
            healthy=self.healthy,
            expect=self._expect,
            exit_code=exit_code,
            last_output=self.last_line,
        )

    def last_line(self) -> str:
        lines = [line for line in self._tail if line.strip()]
        return lines[-1] if lines else "(no output)"

    def _join_reader(self) -> None:
        if self._reader:
            self._reader.join(timeout=2)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc, grace=self.grace, first=self.stop_signal)
        self._join_reader()
        return code

    def __enter__(self) -> Service:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------ interruptions


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and ``with`` block runs its cleanup."""


_unwinding = False


def _unwind_once(signum: int, frame: FrameType | None) -> None:
    """The first Ctrl-C or SIGTERM unwinds: every ``finally`` and ``with`` block stops what it started.
    Later ones are ignored. A second Ctrl-C (an impatient user; a runner that signals twice) would
    otherwise cut that cleanup short, leaving a container or a process group behind, or arrive after
    Python restored the default handlers at exit and turn exit 130 into death by signal. The cleanup
    is bounded (grace, then SIGKILL), so there is nothing to hurry."""
    global _unwinding
    if _unwinding:
        return
    _unwinding = True
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def begin_unwinding() -> None:
    """Say that an interrupt taken by other means (asyncio.Runner's own Ctrl-C handling) now unwinds the
    process: from here on, further signals are ignored as after the first one ``_unwind_once`` sees."""
    global _unwinding
    _unwinding = True


@contextmanager
def interrupts_unwind_once() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM (what nox and CI runners send) unwind once, like Ctrl-C."""
    global _unwinding
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _unwinding = False
    # A signal the process was started with ignored (nohup, a background job's Ctrl-C) stays ignored.
    wanted = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, _unwind_once) for sig in wanted}
    try:
        yield
    finally:
        # After a signal the process is on its way out: later ones stay ignored to the end. SIG_IGN, not
        # this handler: Python's shutdown puts the default action back in place of a Python handler, and a
        # Ctrl-C arriving then would turn exit 130 into death by signal (seen in CI).
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if _unwinding else handler)


def wait_forever(services: Sequence[Service]) -> None:
    """Block until Ctrl-C/SIGTERM, or raise ServiceError when one of ``services`` exits on its own."""
    while True:
        for service in services:
            if service.proc is not None and service.proc.poll() is not None:
                raise ServiceError(
                    f"{service.name} exited with {service.proc.returncode}: {service.last_line()}"
                )
        time.sleep(0.25)
