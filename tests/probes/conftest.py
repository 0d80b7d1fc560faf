"""Session-wide real servers for the deep-probe tests, and a runner for the probe itself.

Every fixture starts a real process (PostgreSQL, two redis-servers, moto's S3) on a free
loopback port and removes it at the end of the session. A missing dependency FAILS the
fixture with the command that installs it: CI must never pass by skipping.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from .servers import (
    REPO,
    MissingDependency,
    PostgresServer,
    RedisServer,
    S3Server,
    SilentServer,
    require_node_modules,
)

PROBE = REPO / "components" / "probes" / "deep-check.js"
WORKER_HELPER = REPO / "tests" / "probes" / "bullmq_worker.js"


@dataclass(frozen=True)
class Secrets:
    """Distinct random values, so a leak test can tell exactly which one leaked."""

    db_password: str = field(default_factory=lambda: "dbpw-" + secrets.token_hex(12))
    cache_password: str = field(default_factory=lambda: "cachepw-" + secrets.token_hex(12))
    s3_access_key: str = field(default_factory=lambda: "AKIA" + secrets.token_hex(8).upper())
    s3_secret_key: str = field(default_factory=lambda: "s3secret-" + secrets.token_hex(16))

    def all(self) -> list[str]:
        return [self.db_password, self.cache_password, self.s3_secret_key]


@dataclass(frozen=True)
class ProbeRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    report: Optional[dict]

    def check(self, name: str) -> dict:
        assert self.report is not None, f"no JSON report; stdout={self.stdout!r} stderr={self.stderr!r}"
        result: dict = self.report["checks"][name]
        return result


def _fail_on_missing(e: MissingDependency) -> None:
    pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def node_modules() -> str:
    try:
        return str(require_node_modules())
    except MissingDependency as e:
        _fail_on_missing(e)
        raise


@pytest.fixture(scope="session")
def creds() -> Secrets:
    return Secrets()


@pytest.fixture(scope="session")
def postgres(creds: Secrets) -> Iterator[PostgresServer]:
    server = PostgresServer(app_user="bundler", app_password=creds.db_password, database="bundler_lite")
    try:
        server.init()
    except MissingDependency as e:
        server.destroy()
        _fail_on_missing(e)
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def redis_cache(creds: Secrets) -> Iterator[RedisServer]:
    yield from _redis(creds.cache_password)


@pytest.fixture(scope="session")
def redis_queue() -> Iterator[RedisServer]:
    # The app's queue connection has no password support, so neither does this one.
    yield from _redis(None, protected_mode=False)


def _redis(password: Optional[str], protected_mode: bool = True) -> Iterator[RedisServer]:
    server = RedisServer(password=password, protected_mode=protected_mode)
    try:
        server.start()
    except MissingDependency as e:
        server.stop()
        _fail_on_missing(e)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(creds: Secrets) -> Iterator[S3Server]:
    server = S3Server(bucket="bundler-data-items-test", access_key=creds.s3_access_key, secret_key=creds.s3_secret_key)
    try:
        server.start()
    except MissingDependency as e:
        _fail_on_missing(e)
    yield server
    server.stop()


@pytest.fixture
def stopped_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """Stops the session's PostgreSQL for one test and always brings it back."""
    postgres.stop()
    try:
        yield postgres
    finally:
        postgres.start()


@pytest.fixture(scope="session")
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture
def probe_env(
    node_modules: str,
    creds: Secrets,
    postgres: PostgresServer,
    redis_cache: RedisServer,
    redis_queue: RedisServer,
    s3: S3Server,
) -> dict[str, str]:
    """The environment a bundler pod would give the probe, pointed at the test servers.
    Built from scratch (not os.environ) so nothing from the host leaks in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "NODE_PATH": node_modules,
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(postgres.port),
        "DB_USER": postgres.app_user,
        "DB_PASSWORD": creds.db_password,
        "DB_DATABASE": postgres.database,
        "ELASTICACHE_HOST": "127.0.0.1",
        "ELASTICACHE_PORT": str(redis_cache.port),
        "ELASTICACHE_PASSWORD": creds.cache_password,
        "ELASTICACHE_USE_TLS": "false",
        "ELASTICACHE_NO_CLUSTERING": "true",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT_QUEUES": str(redis_queue.port),
        "AWS_ENDPOINT": s3.endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": creds.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": creds.s3_secret_key,
        "DATA_ITEM_BUCKET": s3.bucket,
        "S3_FORCE_PATH_STYLE": "true",
    }


RunProbe = Callable[..., ProbeRun]


@pytest.fixture
def run_probe(node_modules: str) -> RunProbe:
    def run(env: dict[str, str], checks: Optional[str], timeout_ms: Optional[int] = 1500,
            script: str = str(PROBE)) -> ProbeRun:
        args = ["node", script]
        if checks is not None:
            args += ["--checks", checks]
        if timeout_ms is not None:
            args += ["--timeout-ms", str(timeout_ms)]
        started = time.monotonic()
        # The outer timeout only guards the test run; the assertions on `elapsed` are the test.
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)
        elapsed = time.monotonic() - started
        report = None
        lines = proc.stdout.splitlines()
        if len(lines) == 1:
            report = json.loads(lines[0])
        return ProbeRun(proc.returncode, proc.stdout, proc.stderr, elapsed, report)

    return run


@dataclass
class BullmqProcess:
    proc: subprocess.Popen[str]
    marker: str
    """On the process's command line; DEEP_CHECK_WORKER_CMDLINE=marker makes the probe find it."""

    @property
    def worker_pid(self) -> int:
        """The node process itself (the launched process, or its child under a wrapper)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        return int(children[0]) if children else self.proc.pid

    def probe_env(self, env: dict[str, str]) -> dict[str, str]:
        return {**env, "DEEP_CHECK_WORKER_CMDLINE": self.marker}

    def wait_for_line(self, expected: str, timeout: float = 20) -> None:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().strip() if readable else f"<no output in {timeout} s>"
        if line != expected:
            raise RuntimeError(f"bullmq helper said {line!r}, expected {expected!r}")

    def close(self) -> int:
        """SIGTERM, as the kubelet sends it; the helper awaits worker.close() and exits."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


StartBullmq = Callable[..., BullmqProcess]


@pytest.fixture
def start_bullmq(node_modules: str, redis_queue: RedisServer) -> Iterator[StartBullmq]:
    started: list[BullmqProcess] = []

    def start(mode: str = "worker", worker_name: Optional[str] = None, queue: str = "upload-new-data-item",
              redis_host: str = "127.0.0.1", redis_port: Optional[int] = None, wrapper: bool = False,
              extra_env: Optional[dict[str, str]] = None) -> BullmqProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NODE_PATH": node_modules,
            "REDIS_HOST": redis_host,
            "REDIS_PORT_QUEUES": str(redis_port or redis_queue.port),
            "QUEUE_NAME": queue,
            "MODE": mode,
        }
        if worker_name:
            env["WORKER_NAME"] = worker_name
        env.update(extra_env or {})
        marker = f"bullmq-test-{secrets.token_hex(6)}"
        args = ["node", str(WORKER_HELPER), marker]
        if wrapper:
            # As dumb-init runs the worker: a parent process whose command line matches too.
            # (`; exit` keeps sh from exec'ing node in its own place.)
            args = ["sh", "-c", f"{' '.join(args)}; exit $?"]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        handle = BullmqProcess(proc, marker)
        started.append(handle)
        try:
            handle.wait_for_line("ready")
        except RuntimeError as e:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"{e}: {proc.stderr.read() if proc.stderr else ''}") from None
        return handle

    yield start
    for handle in started:
        if handle.proc.poll() is None:
            try:
                os.killpg(handle.proc.pid, signal.SIGCONT)
                os.killpg(handle.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            handle.proc.wait(5)
