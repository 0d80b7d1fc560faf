"""Real throwaway servers for the deep-probe tests: PostgreSQL, Redis, S3 (moto), and a
listener that accepts TCP and never answers.

Nothing here is mocked: the probe has to be proven against the same wire protocols it
meets in a cluster. A missing binary is a failure that names the install script, never a
skip, so CI cannot go green without having run the tests.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "run `bash scripts/install-test-deps.sh` (as root) to install it"


class MissingDependency(RuntimeError):
    """A binary or package the tests need is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# A node process that stays up doing nothing: the host a preloaded probe server lives in.
IDLE_APP = "setInterval(() => {}, 1 << 30)"


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    """Status and body of a GET to 127.0.0.1:port, error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()


def answers_http(port: int) -> bool:
    """Whether anything answers HTTP on the port yet."""
    try:
        http_get(port, "/", timeout=1)
        return True
    except OSError:
        return False


def wait_until(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def require_binary(name: str, extra_globs: tuple[str, ...] = ()) -> str:
    found = shutil.which(name)
    if found:
        return found
    # Debian's postgresql package keeps the server binaries off PATH.
    for pattern in extra_globs:
        matches = sorted(glob.glob(pattern))
        if matches:
            return matches[-1]
    raise MissingDependency(f"`{name}` not found; {INSTALL_HINT}")


def pg_binary(name: str) -> str:
    return require_binary(name, (f"/usr/lib/postgresql/*/bin/{name}",))


# ---------------------------------------------------------------- Redis


def redis_command(port: int, *args: str, password: Optional[str] = None, timeout: float = 2.0) -> str:
    """Send one command over raw RESP and return the reply as text (errors start with '-')."""

    def encode(*parts: str) -> bytes:
        out = f"*{len(parts)}\r\n".encode()
        for p in parts:
            b = p.encode()
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        return out

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        payload = encode("AUTH", password) if password else b""
        s.sendall(payload + encode(*args))
        buf = b""
        replies: list[str] = []
        want = 2 if password else 1
        while len(replies) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            replies, buf = _parse_replies(buf, want)
        return replies[-1] if replies else ""


def _parse_replies(buf: bytes, want: int) -> tuple[list[str], bytes]:
    """Parse up to `want` simple/error/bulk replies; return what is complete."""
    replies: list[str] = []
    rest = buf
    while len(replies) < want and b"\r\n" in rest:
        head, _, tail = rest.partition(b"\r\n")
        if head[:1] == b"$":
            n = int(head[1:])
            if n < 0:
                replies.append("")
                rest = tail
                continue
            if len(tail) < n + 2:
                break
            replies.append(tail[:n].decode())
            rest = tail[n + 2 :]
        else:
            replies.append(head.decode())
            rest = tail
    if len(replies) < want:
        return [], buf
    return replies, rest


@dataclass
class RedisServer:
    """A real redis-server on a free loopback port, no persistence."""

    password: Optional[str] = None
    # Off for the queue Redis, as in the cluster (components/data.py): without a password,
    # protected mode refuses every client but 127.0.0.1 and ::1.
    protected_mode: bool = True
    port: int = field(default_factory=free_port)
    proc: Optional[subprocess.Popen[bytes]] = None
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="deepcheck-redis-"))

    def start(self) -> RedisServer:
        binary = require_binary("redis-server")
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self.workdir,
            # BullMQ refuses to trust a Redis that may evict its keys.
            "--maxmemory-policy", "noeviction",
            "--loglevel", "warning",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if not self.protected_mode:
            args += ["--protected-mode", "no"]
        with open(os.path.join(self.workdir, "redis.log"), "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 10, f"redis-server on {self.port}")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log()}")
        try:
            return redis_command(self.port, "PING", password=self.password) == "+PONG"
        except OSError:
            return False

    def log(self) -> str:
        return Path(self.workdir, "redis.log").read_text(errors="replace")

    def command(self, *args: str) -> str:
        return redis_command(self.port, *args, password=self.password)

    def client_names(self) -> list[str]:
        names = []
        for line in self.command("CLIENT", "LIST").splitlines():
            for kv in line.split(" "):
                if kv.startswith("name="):
                    names.append(kv[len("name=") :])
        return names

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------- PostgreSQL


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise MissingDependency(f"no `postgres` or `nobody` user to run PostgreSQL as; {INSTALL_HINT}")


@dataclass
class PostgresServer:
    """A throwaway cluster: superuser over the Unix socket (trust), the app role with a
    password over TCP on 127.0.0.1 (scram-sha-256), as in a real deployment."""

    app_user: str
    app_password: str
    database: str
    port: int = field(default_factory=free_port)
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="deepcheck-pg-"))
    proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def datadir(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def sockdir(self) -> str:
        return os.path.join(self.root, "sock")

    def _run(self, args: list[str], as_server_user: bool = True) -> None:
        kwargs = self._as_server_user() if as_server_user else {}
        done = subprocess.run(args, capture_output=True, text=True, cwd=self.root, **kwargs)  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}")

    def _as_server_user(self) -> dict[str, object]:
        # PostgreSQL refuses to run as root: drop to an unprivileged user in the child.
        if os.geteuid() != 0:
            return {}
        user = _unprivileged_user()
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def init(self) -> PostgresServer:
        os.chmod(self.root, 0o755)  # mkdtemp makes it 0700: the server user must traverse it
        for d in (self.datadir, self.sockdir):
            os.mkdir(d, 0o700)
            if os.geteuid() == 0:
                user = _unprivileged_user()
                os.chown(d, user.pw_uid, user.pw_gid)
        self._run([
            pg_binary("initdb"), "-D", self.datadir, "-U", "probe_admin",
            "--auth-local=trust", "--auth-host=scram-sha-256",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ])
        self.start()
        self.psql(
            f"CREATE ROLE {self.app_user} LOGIN PASSWORD '{self.app_password}';",
            f"CREATE DATABASE {self.database} OWNER {self.app_user};",
        )
        return self

    def start(self) -> None:
        with open(os.path.join(self.root, "postgres.log"), "ab") as log:
            self.proc = subprocess.Popen(  # type: ignore[call-overload]
                [
                    pg_binary("postgres"), "-D", self.datadir, "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.sockdir}",
                    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                    "-c", "max_connections=40", "-c", "shared_buffers=16MB",
                ],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, **self._as_server_user(),
            )
        wait_until(self._accepting, 30, f"postgres on {self.port}")

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {Path(self.root, 'postgres.log').read_text()}")
        probe = subprocess.run(
            [pg_binary("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return probe.returncode == 0

    def psql(self, *statements: str) -> None:
        args = [pg_binary("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", self.sockdir, "-p", str(self.port), "-U", "probe_admin", "-d", "postgres"]
        for s in statements:
            args += ["-c", s]
        self._run(args, as_server_user=False)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: no waiting for clients
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- S3


@dataclass
class S3Server:
    """moto's S3 in a thread of this process, with one bucket."""

    bucket: str
    access_key: str
    secret_key: str
    port: int = field(default_factory=free_port)
    server: object = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        try:
            import boto3
            from moto.server import ThreadedMotoServer
        except ImportError as e:
            raise MissingDependency(f"moto[server]/boto3 missing ({e}); install the project's dev requirements") from e
        # werkzeug logs every request to stderr even with verbose=False.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.server = server
        boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
        ).create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()  # type: ignore[attr-defined]
            self.server = None


# ---------------------------------------------------------------- a server that never answers


class SilentServer:
    """Accepts TCP connections and never sends a byte: the failure mode a plain TCP or
    'connect timeout' check cannot see (a wedged server, a half-dead proxy)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)  # held open, never read or written

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(2)
        for c in self.accepted:
            c.close()
        self.sock.close()


# ---------------------------------------------------------------- node processes


def require_node_modules() -> Path:
    node_modules = REPO / "node_modules"
    for pkg in ("pg", "ioredis", "@aws-sdk/client-s3", "bullmq"):
        if not (node_modules / pkg / "package.json").is_file():
            raise MissingDependency(f"node module `{pkg}` missing under {node_modules}; {INSTALL_HINT}")
    require_binary("node")
    return node_modules


# ---------------------------------------------------------------- NAT between a pod and Redis


class TcpProxy:
    """Forwards loopback connections to `upstream_port`, dialling out from `source_address`:
    the server then sees every client as that address, as it does behind SNAT."""

    def __init__(self, upstream_port: int, source_address: str = "127.0.0.2") -> None:
        self.upstream_port = upstream_port
        self.source_address = source_address
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, name="tcp-proxy", daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stopped.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)  # accepted sockets inherit the listener's polling timeout
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port),
                                                source_address=(self.source_address, 0))
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped.set()
        for s in [*self._open, self.sock]:
            s.close()


# ---------------------------------------------------------------- an S3 that records what it is asked


class RecordingS3:
    """A minimal S3 object endpoint (path style, no signature checks) that records every
    request, for asserting which calls the probe makes. `missing` is the status a HEAD of an
    absent key gets: 404, or 403 as S3 answers without s3:ListBucket. `deny` refuses every
    call as a bad key would."""

    def __init__(self, missing: int = 404, deny: bool = False) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str]] = []
        self.objects: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 200:
                    self.send_header("ETag", '"d41d8cd98f00b204e9800998ecf8427e"')
                if body:
                    self.send_header("Content-Type", "application/xml")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self, status: int, code: str) -> None:
                self._reply(status, f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode())

            def do_HEAD(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.requests.append(("HEAD", path))
                if outer.deny:
                    self._reply(403)
                elif path in outer.objects:
                    self._reply(200)
                else:
                    self._reply(outer.missing)

            def do_PUT(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.requests.append(("PUT", path))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if outer.deny:
                    self._error(403, "InvalidAccessKeyId")
                else:
                    outer.objects.add(path)
                    self._reply(200)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path.split("?", 1)[0]))
                self._error(403, "AccessDenied")

        self.missing = missing
        self.deny = deny
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="recording-s3", daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
