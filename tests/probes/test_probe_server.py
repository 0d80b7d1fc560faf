"""probe-server.js: the deep checks served from inside a node process, against real servers.

The host process here stands in for a bundler process: plain node, with the preload given
the way the pods give it (NODE_OPTIONS and DEEP_CHECK_PORT), so what is tested is what the
kubelet's httpGet probe reaches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from .conftest import Secrets, StartBullmq
from .servers import IDLE_APP, REPO, PostgresServer, RedisServer, answers_http, free_port, http_get, wait_until

SERVER = REPO / "components" / "probes" / "probe-server.js"
PROBE = REPO / "components" / "probes" / "deep-check.js"
API_CHECKS = "postgres,redis-cache,redis-queue,s3"


def preload_env(env: dict[str, str], port: int) -> dict[str, str]:
    return {**env, "NODE_OPTIONS": f"--require {SERVER}", "DEEP_CHECK_PORT": str(port)}


@dataclass
class Answer:
    status: int
    body: dict


def ask(port: int, path: str, timeout: float = 5) -> Answer:
    status, body = http_get(port, path, timeout)
    return Answer(status, json.loads(body))


def deep(checks: str, timeout_ms: int = 1500) -> str:
    return f"/deep-check?checks={checks}&timeout-ms={timeout_ms}"


@dataclass
class Host:
    proc: subprocess.Popen[str]
    port: int

    def stdout_lines(self) -> list[str]:
        """Everything the process has logged so far (it is stopped to read it)."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        return out.splitlines()


StartHost = Callable[..., Host]


@pytest.fixture
def start_host(probe_env: dict[str, str]) -> Iterator[StartHost]:
    hosts: list[Host] = []

    def start(port: int | None = None, env: dict[str, str] | None = None, wait: bool = True) -> Host:
        port = port or free_port()
        proc = subprocess.Popen(["node", "-e", IDLE_APP], env=preload_env(env or probe_env, port),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        host = Host(proc, port)
        hosts.append(host)
        if wait:
            wait_until(lambda: answers_http(port), 10, f"probe server on port {port}")
        return host

    yield start
    for host in hosts:
        if host.proc.poll() is None:
            host.proc.kill()
            host.proc.communicate()


def test_answers_200_with_the_report_of_every_check_when_all_are_up(start_host: StartHost) -> None:
    host = start_host()

    answer = ask(host.port, deep(API_CHECKS))

    assert answer.status == 200
    assert answer.body["ok"] is True
    assert set(answer.body["checks"]) == set(API_CHECKS.split(","))
    assert all(c["ok"] for c in answer.body["checks"].values())


def test_answers_503_naming_the_dead_service_logs_it_once_and_logs_the_recovery(
    start_host: StartHost, postgres: PostgresServer, creds: Secrets
) -> None:
    host = start_host()
    assert ask(host.port, deep(API_CHECKS)).status == 200
    postgres.stop()
    try:
        failed = [ask(host.port, deep(API_CHECKS)) for _ in range(3)]
    finally:
        postgres.start()
    recovered = ask(host.port, deep(API_CHECKS))
    lines = host.stdout_lines()

    assert [a.status for a in failed] == [503, 503, 503]
    assert not failed[0].body["checks"]["postgres"]["ok"]
    assert "ECONNREFUSED" in failed[0].body["checks"]["postgres"]["error"]
    assert all(failed[0].body["checks"][c]["ok"] for c in ("redis-cache", "redis-queue", "s3"))
    assert recovered.status == 200
    logged = [json.loads(line) for line in lines if "deep-check:" in line]
    # One line when it broke (not one per probe), one when it came back.
    assert [entry["message"] for entry in logged] == [
        f"deep-check: {API_CHECKS}: failing: postgres",
        f"deep-check: {API_CHECKS}: ok again",
    ]
    assert logged[0]["level"] == "warn" and logged[0]["result"]["checks"]["postgres"]["ok"] is False
    text = "\n".join(lines) + json.dumps([a.body for a in failed])
    assert not [s for s in creds.all() if s in text], "a secret reached a probe answer or log"


def test_overlapping_requests_share_one_run(start_host: StartHost, redis_cache: RedisServer) -> None:
    host = start_host()

    def connections() -> int:
        info = redis_cache.command("INFO", "stats")
        return int(next(v for k, v in (line.split(":", 1) for line in info.splitlines() if ":" in line)
                        if k == "total_connections_received"))

    before = connections()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: ask(host.port, deep("redis-cache")), range(6)))

    assert [a.status for a in answers] == [200] * 6
    # Six concurrent probes, not six connections: a slow backend is not piled on.
    assert connections() - before < 6


def test_refuses_unknown_checks_and_paths(start_host: StartHost) -> None:
    host = start_host()

    unknown = ask(host.port, deep("postgres,bogus"))
    elsewhere = ask(host.port, "/health")
    bad_timeout = ask(host.port, deep("postgres", timeout_ms=0))

    assert (unknown.status, unknown.body["error"]) == (400, "unknown check(s): bogus")
    assert elsewhere.status == 404
    assert bad_timeout.status == 400


def test_never_keeps_a_process_alive(probe_env: dict[str, str]) -> None:
    started = time.monotonic()
    done = subprocess.run(["node", "-e", "console.log('done')"], env=preload_env(probe_env, free_port()),
                          capture_output=True, text=True, timeout=20)

    assert (done.returncode, done.stdout) == (0, "done\n")
    assert time.monotonic() - started < 5


def test_a_port_in_use_leaves_the_process_running_and_serving_nothing(start_host: StartHost) -> None:
    first = start_host()
    second = start_host(port=first.port, wait=False)
    time.sleep(1.5)

    assert second.proc.poll() is None, "the app must outlive a probe port it cannot have"
    assert ask(first.port, deep("redis-queue")).status == 200
    lines = second.stdout_lines()
    assert any(f"not serving probes on port {first.port}: EADDRINUSE" in line for line in lines), lines


def test_the_command_line_check_runs_by_hand_beside_the_server(
    start_host: StartHost, probe_env: dict[str, str]
) -> None:
    host = start_host()
    # What an operator runs with `kubectl exec`: the container's NODE_OPTIONS come along.
    by_hand = subprocess.run(["node", str(PROBE), "--checks", "redis-queue"], env=preload_env(probe_env, host.port),
                             capture_output=True, text=True, timeout=20)

    assert by_hand.returncode == 0, by_hand.stdout + by_hand.stderr
    assert json.loads(by_hand.stdout)["checks"]["redis-queue"]["ok"] is True
    assert "EADDRINUSE" not in by_hand.stdout + by_hand.stderr


def test_worker_liveness_served_by_the_worker_itself(
    probe_env: dict[str, str], start_bullmq: StartBullmq
) -> None:
    port = free_port()
    # The helper's script name is on its own command line, as lib/jobs/allWorkers.js is on the app's.
    worker = start_bullmq(extra_env={**preload_env({}, port), "DEEP_CHECK_WORKER_CMDLINE": "bullmq_worker.js"})
    alive = ask(port, deep("bullmq-worker"))

    os.kill(worker.worker_pid, signal.SIGSTOP)
    try:
        with pytest.raises(OSError):
            # A frozen process cannot answer: the kubelet counts a timeout as a failure.
            ask(port, deep("bullmq-worker"), timeout=2)
    finally:
        os.kill(worker.worker_pid, signal.SIGCONT)

    assert alive.status == 200, alive.body
    assert ask(port, deep("bullmq-worker")).status == 200

    worker.proc.send_signal(signal.SIGUSR2)  # the helper drops every Redis connection, keeps running
    worker.wait_for_line("disconnected")
    lost = ask(port, deep("bullmq-worker"))
    assert lost.status == 503
    assert "holds no ESTABLISHED connection to the queue Redis" in lost.body["checks"]["bullmq-worker"]["error"]


def test_worker_liveness_fails_in_a_process_that_is_not_the_worker(start_host: StartHost) -> None:
    host = start_host()

    answer = ask(host.port, deep("bullmq-worker"))

    assert answer.status == 503
    assert "this process is not the worker" in answer.body["checks"]["bullmq-worker"]["error"]
