"""procs.poll_health (the one health poll of services and containers) and the parent-death setup."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cfops import procs
from cfops.errors import ServiceError


@contextmanager
def answering(*statuses: int) -> Iterator[str]:
    """A server on 127.0.0.1 answering the given statuses in turn, then the last one forever."""
    remaining = list(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = remaining.pop(0) if len(remaining) > 1 else remaining[0]
            body = b'{"status": "ok"}'
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_poll_health_waits_through_unhealthy_answers() -> None:
    with answering(503, 503, 200) as url:
        health = procs.poll_health("svc", f"{url}/healthz", timeout=10, interval=0.01)
    assert health.url == f"{url}/healthz" and health.response.status_code == 200
    assert health.response.json() == {"status": "ok"} and health.seconds >= 0


def test_poll_health_waits_for_an_address_and_takes_its_own_rule() -> None:
    calls = []

    def address() -> str | None:
        calls.append(1)
        return None if len(calls) < 3 else f"{base}/ready"

    with answering(404) as base:
        health = procs.poll_health(
            "svc", address, timeout=10, interval=0.01, healthy=lambda r: r.status_code == 404
        )
    assert len(calls) == 3 and health.response.status_code == 404


@pytest.mark.serial
def test_poll_health_gives_up_at_the_timeout_with_the_last_answer_and_output() -> None:
    with answering(503) as url, pytest.raises(ServiceError) as info:
        procs.poll_health(
            "container c1",
            f"{url}/healthz",
            timeout=0.3,
            expect="200",
            interval=0.01,
            last_output=lambda: "booting",
            output_label="last log line",
        )
    assert str(info.value) == (
        "container c1 did not answer 200 on /healthz within 0.3 s (last: HTTP 503); last log line: booting"
    )


def test_poll_health_stops_when_the_process_has_exited() -> None:
    with pytest.raises(ServiceError) as info:
        procs.poll_health(
            "backend",
            "http://127.0.0.1:9/healthz",
            timeout=30,
            exit_code=lambda: 3,
            last_output=lambda: "ImportError: no module x",
        )
    assert str(info.value) == "backend exited with 3 before /healthz answered: ImportError: no module x"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_started_with_die_with_parent_gets_sigterm_when_its_parent_dies() -> None:
    # The middle process starts a sleeping grandchild with the death signal, prints its pid and exits.
    middle = (
        "import subprocess, sys; from cfops import procs; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "preexec_fn=procs.die_with_parent()); print(p.pid, flush=True)"
    )
    out = subprocess.run(
        [sys.executable, "-c", middle], capture_output=True, text=True, timeout=30, check=True
    )
    grandchild = int(out.stdout.strip())
    import psutil

    # Without the death signal it would sleep on for a minute: wait() would raise TimeoutExpired.
    with contextlib.suppress(psutil.NoSuchProcess):  # already gone and reaped: it did not outlive it
        psutil.Process(grandchild).wait(timeout=10)


_INTERRUPTED_COMMAND = """
import sys, time
from cfops import cli

def main(argv):
    print("ready", flush=True)
    time.sleep(30)
    return 0

sys.exit(cli.main(main, []))
"""


def test_a_storm_of_ctrl_c_still_ends_in_exit_130_not_death_by_signal() -> None:
    """The first Ctrl-C unwinds; every later one, including those that arrive while Python shuts down
    (it puts the default handler back in place of a Python one), is ignored: the exit code stays 130."""
    import os
    import signal
    import time

    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _INTERRUPTED_COMMAND], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.0005)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 130, err.decode()
        assert b"interrupted; everything started was stopped" in err


def test_free_ports_come_from_below_the_ephemeral_range_that_outgoing_connections_use() -> None:
    proc_range = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if not proc_range.exists():
        pytest.skip("no /proc ephemeral range here: the kernel picks the port")
    low = int(proc_range.read_text().split()[0])
    ports = {procs.free_port() for _ in range(20)}
    assert all(max(1024, low - 12000) <= port < low for port in ports), ports
    for port in ports:  # each was free: it binds
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
