"""The API's drain preload (components/probes/graceful-shutdown.js) in a real node process.

The API installs no SIGTERM handler, so under dumb-init it would exit at once on SIGTERM and
cut uploads in flight. Preloaded as the API pod preloads it (NODE_OPTIONS=--require ...), a
plain Node http server must: finish a request that is in flight at SIGTERM, then exit 0;
exit within about a second when idle, even with an idle keep-alive connection open; and
leave node processes that never listen (the exec probes, which inherit NODE_OPTIONS) alone.
"""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from .conftest import PROBE
from .servers import REPO, require_binary

PRELOAD = REPO / "components" / "probes" / "graceful-shutdown.js"
SLOW_MS = 1500
SENTINEL = "drain-test-secret-value"

# Like the API: a Koa-style http server with the app's long keep-alive, and another handle
# (the app's DB pools and Redis clients) that keeps the event loop alive forever.
SERVER = """
const http = require('http');
const slowMs = Number(process.env.SLOW_MS);
const server = http.createServer((req, res) => {
  if (req.url === '/slow') {
    process.stdout.write('slow-started\\n');
    setTimeout(() => res.end('uploaded'), slowMs);
  } else {
    res.end('ok');
  }
});
server.keepAliveTimeout = 120000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${server.address().port}\\n`));
setInterval(() => {}, 60000);
"""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int

    def line(self, timeout: float = 10) -> str:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().strip() if readable else f"<no output in {timeout} s>"

    def sigterm(self) -> float:
        self.proc.send_signal(signal.SIGTERM)
        return time.monotonic()


StartServer = Callable[..., Server]


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_OPTIONS": f"--require {PRELOAD}",
            "DB_PASSWORD": SENTINEL, **extra}


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    require_binary("node")
    script = tmp_path / "server.js"
    script.write_text(SERVER)
    started: list[subprocess.Popen[str]] = []

    def start(**extra: str) -> Server:
        proc = subprocess.Popen(["node", str(script)], env=_env(**{"SLOW_MS": str(SLOW_MS), **extra}),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        server = Server(proc, 0)
        first = server.line()
        assert first.startswith("listening "), f"{first!r} {proc.stderr.read() if proc.stderr else ''}"
        server.port = int(first.split()[1])
        return server

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _keep_alive(port: int) -> http.client.HTTPConnection:
    """A client connection left open and idle after one request, as proxies keep them."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"ok")
    assert response.getheader("Connection", "").lower() == "keep-alive"
    return conn


def test_a_request_in_flight_at_sigterm_completes_and_the_process_then_exits_0(start_server: StartServer) -> None:
    server = start_server()
    idle = _keep_alive(server.port)
    result: dict[str, object] = {}

    def upload() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/slow")
        response = conn.getresponse()
        result["answer"] = (response.status, response.read())
        result["at"] = time.monotonic()

    client = threading.Thread(target=upload)
    client.start()
    assert server.line() == "slow-started"
    sent = server.sigterm()

    # Stops accepting at once, while the upload goes on.
    time.sleep(0.3)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
    client.join(10)
    returncode = server.proc.wait(10)
    exited = time.monotonic()

    assert result["answer"] == (200, b"uploaded")
    assert returncode == 0
    assert exited - float(result["at"]) < 1.0, "exits once the last request is done"  # type: ignore[arg-type]
    assert exited - sent >= SLOW_MS / 1000 - 0.5, "did not exit before the upload finished"
    idle.close()


def test_an_idle_server_exits_within_a_second_despite_an_open_keep_alive_connection(start_server: StartServer) -> None:
    server = start_server()
    idle = _keep_alive(server.port)

    sent = server.sigterm()
    returncode = server.proc.wait(10)
    took = time.monotonic() - sent

    assert returncode == 0
    assert took < 1.0, f"took {took:.2f} s"
    assert server.proc.stdout is not None and server.proc.stderr is not None
    printed = server.proc.stdout.read() + server.proc.stderr.read()
    assert printed.count("graceful-shutdown: SIGTERM received") == 1
    assert SENTINEL not in printed
    idle.close()


def test_shutdown_timeout_ms_caps_the_wait(start_server: StartServer) -> None:
    server = start_server(SHUTDOWN_TIMEOUT_MS="400", SLOW_MS="5000")
    threading.Thread(target=lambda: _slow_request_ignoring_errors(server.port), daemon=True).start()
    assert server.line() == "slow-started"

    sent = server.sigterm()
    returncode = server.proc.wait(10)

    assert returncode == 1, "a cut request is not a clean exit"
    assert time.monotonic() - sent < 2.0


def _slow_request_ignoring_errors(port: int) -> Optional[int]:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/slow")
        return conn.getresponse().status
    except OSError:
        return None


def test_node_processes_that_never_listen_keep_the_default_sigterm(tmp_path: Path) -> None:
    # The API's exec probes run node with the container's NODE_OPTIONS.
    proc = subprocess.Popen(["node", "-e", "setInterval(() => {}, 1000); process.stdout.write('up\\n')"],
                            env=_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == -signal.SIGTERM

    probe = subprocess.run(["node", str(PROBE), "--help"], env=_env(), capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0 and "usage: deep-check.js" in probe.stdout
