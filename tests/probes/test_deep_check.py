"""The deep readiness probe (components/probes/deep-check.js) against real servers.

The promise it keeps for the cluster (seed risk: "a health check that says healthy while
the database is down"): a pod is reported ready only when its own view of PostgreSQL,
both Redis servers and S3 works, and a worker pod only while it really holds BullMQ
worker connections; a dead or wedged dependency is named, within the probe's timeout,
and no secret is ever printed.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PROBE, ProbeRun, RunProbe, Secrets, StartBullmq
from .servers import PostgresServer, RedisServer, SilentServer, free_port, wait_until

SERVICES = "postgres,redis-cache,redis-queue,s3"
ALL = SERVICES + ",bullmq-worker"
TIMEOUT_MS = 1500
# Node start-up and module loading, on top of the probe's own budget.
START_MARGIN_S = 1.5
# The probe's own deadline ("timed out after N ms") normally wins; a client library's
# timeout set to the same budget ("timeout expired", "Command timed out") may win a race.
TIMED_OUT = re.compile(r"timed out|timeout|ETIMEDOUT")


def assert_within_budget(run: ProbeRun, timeout_ms: int = TIMEOUT_MS) -> None:
    assert run.elapsed < timeout_ms / 1000 + START_MARGIN_S, f"took {run.elapsed:.2f} s"


def assert_only_failure(run: ProbeRun, failing: str, checks: str = SERVICES) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.report is not None and run.report["ok"] is False
    assert set(run.report["checks"]) == set(checks.split(","))
    bad = run.check(failing)
    assert bad["ok"] is False
    assert bad["error"]
    for name in checks.split(","):
        if name != failing:
            assert run.check(name) == {"ok": True, "ms": run.check(name)["ms"]}, name


def wait_for_no_bullmq_workers(redis: RedisServer) -> None:
    """Redis drops a client when it reads the EOF; give it that moment before asserting."""
    wait_until(lambda: not any(n.startswith("bull:") for n in redis.client_names()), 5,
               "queue Redis to drop the closed worker's connections")


# ---------------------------------------------------------------- healthy


def test_reports_every_check_ok_when_all_dependencies_and_a_worker_are_up(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    start_bullmq()
    run = run_probe(probe_env, ALL, timeout_ms=2500)

    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""
    assert run.report is not None and run.report["ok"] is True
    assert list(run.report["checks"]) == ALL.split(",")
    for name in ALL.split(","):
        result = run.check(name)
        assert result["ok"] is True and "error" not in result
        assert isinstance(result["ms"], int) and result["ms"] >= 0
    assert_within_budget(run, 2500)


def test_accepts_the_alternative_variable_names_the_app_reads(
    probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    env = dict(probe_env)
    # The app's knex writer prefers DB_WRITER_ENDPOINT over DB_HOST, and S3_ENDPOINT over
    # AWS_ENDPOINT; a wrong precedence would send the probe to the dead DB_HOST below.
    env["DB_WRITER_ENDPOINT"] = "127.0.0.1"
    env["DB_HOST"] = "127.0.0.1.invalid"
    env["S3_ENDPOINT"] = env.pop("AWS_ENDPOINT")

    run = run_probe(env, "postgres,s3")

    assert run.returncode == 0, run.stdout


# ---------------------------------------------------------------- one broken dependency at a time


def _closed_port() -> str:
    return str(free_port())


FAULTS = {
    "postgres-not-listening": ("postgres", lambda silent: {"DB_PORT": _closed_port()}),
    "postgres-wrong-password": ("postgres", lambda silent: {"DB_PASSWORD": "not-the-password"}),
    "postgres-missing-database": ("postgres", lambda silent: {"DB_DATABASE": "no_such_db"}),
    "postgres-never-answers": ("postgres", lambda silent: {"DB_PORT": str(silent.port)}),
    "redis-cache-not-listening": ("redis-cache", lambda silent: {"ELASTICACHE_PORT": _closed_port()}),
    "redis-cache-wrong-password": ("redis-cache", lambda silent: {"ELASTICACHE_PASSWORD": "not-the-password"}),
    "redis-cache-never-answers": ("redis-cache", lambda silent: {"ELASTICACHE_PORT": str(silent.port)}),
    "redis-queue-not-listening": ("redis-queue", lambda silent: {"REDIS_PORT_QUEUES": _closed_port()}),
    "redis-queue-never-answers": ("redis-queue", lambda silent: {"REDIS_PORT_QUEUES": str(silent.port)}),
    "s3-bucket-missing": ("s3", lambda silent: {"DATA_ITEM_BUCKET": "no-such-bucket"}),
    "s3-not-listening": ("s3", lambda silent: {"AWS_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}),
    "s3-never-answers": ("s3", lambda silent: {"AWS_ENDPOINT": f"http://127.0.0.1:{silent.port}"}),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_names_the_broken_dependency_and_still_reports_the_others_within_the_timeout(
    fault: str, probe_env: dict[str, str], run_probe: RunProbe, silent: SilentServer
) -> None:
    failing, change = FAULTS[fault]
    env = {**probe_env, **change(silent)}

    run = run_probe(env, SERVICES, timeout_ms=TIMEOUT_MS)

    assert_only_failure(run, failing)
    assert_within_budget(run)
    if fault.endswith("never-answers"):
        assert TIMED_OUT.search(run.check(failing)["error"])
    if fault == "s3-bucket-missing":
        assert "404" in run.check(failing)["error"]


@pytest.fixture
def stopped_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """Stops the session's PostgreSQL for one test and always brings it back."""
    postgres.stop()
    try:
        yield postgres
    finally:
        postgres.start()


def test_fails_postgres_when_the_real_server_is_shut_down(
    stopped_postgres: PostgresServer, probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    run = run_probe(probe_env, SERVICES)

    assert_only_failure(run, "postgres")
    assert "ECONNREFUSED" in run.check("postgres")["error"]
    assert_within_budget(run)


@pytest.fixture(params=["redis-cache", "redis-queue"])
def own_redis(request: pytest.FixtureRequest, creds: Secrets, probe_env: dict[str, str]) -> Iterator[tuple[str, RedisServer, dict[str, str]]]:
    """A redis-server of this test's own, so killing or freezing it spares the session's."""
    role = request.param
    server = RedisServer(password=creds.cache_password if role == "redis-cache" else None).start()
    port_var = "ELASTICACHE_PORT" if role == "redis-cache" else "REDIS_PORT_QUEUES"
    try:
        yield role, server, {**probe_env, port_var: str(server.port)}
    finally:
        server.stop()


def test_fails_redis_when_the_real_server_is_killed(
    own_redis: tuple[str, RedisServer, dict[str, str]], run_probe: RunProbe
) -> None:
    role, server, env = own_redis
    assert run_probe(env, SERVICES).returncode == 0

    server.signal(signal.SIGKILL)
    assert server.proc is not None
    server.proc.wait(5)
    run = run_probe(env, SERVICES)

    assert_only_failure(run, role)
    assert "ECONNREFUSED" in run.check(role)["error"]
    assert_within_budget(run)


def test_times_out_redis_when_the_real_server_is_frozen(
    own_redis: tuple[str, RedisServer, dict[str, str]], run_probe: RunProbe
) -> None:
    # SIGSTOP: the kernel still completes TCP handshakes, the server never replies.
    role, server, env = own_redis
    server.signal(signal.SIGSTOP)
    try:
        run = run_probe(env, SERVICES)
    finally:
        server.signal(signal.SIGCONT)

    assert_only_failure(run, role)
    assert TIMED_OUT.search(run.check(role)["error"])
    assert_within_budget(run)


# ---------------------------------------------------------------- bullmq-worker


@pytest.mark.parametrize("worker_name", [None, "pod-a"], ids=["unnamed-like-the-app", "named"])
def test_passes_while_this_pod_runs_a_worker_and_fails_once_it_has_closed(
    worker_name: str | None, probe_env: dict[str, str], run_probe: RunProbe,
    start_bullmq: StartBullmq, redis_queue: RedisServer,
) -> None:
    worker = start_bullmq(worker_name=worker_name)
    running = run_probe(probe_env, "bullmq-worker")
    assert running.returncode == 0, running.stdout

    assert worker.close() == 0
    wait_for_no_bullmq_workers(redis_queue)
    closed = run_probe(probe_env, "bullmq-worker")

    assert_only_failure(closed, "bullmq-worker", checks="bullmq-worker")
    assert "no BullMQ worker connection from POD_IP 127.0.0.1" in closed.check("bullmq-worker")["error"]


def test_fails_for_a_pod_whose_ip_holds_no_worker_even_while_another_pod_has_one(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    start_bullmq()
    run = run_probe({**probe_env, "POD_IP": "10.255.255.1"}, "redis-queue,bullmq-worker")

    assert_only_failure(run, "bullmq-worker", checks="redis-queue,bullmq-worker")
    assert "worker connection(s) from other IPs" in run.check("bullmq-worker")["error"]


def test_does_not_count_queue_producers_or_queue_events_as_workers(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq, redis_queue: RedisServer
) -> None:
    wait_for_no_bullmq_workers(redis_queue)
    start_bullmq(mode="producer")
    assert any(n.startswith("bull:") and n.endswith(":qe") for n in redis_queue.client_names())

    run = run_probe(probe_env, "bullmq-worker")

    assert_only_failure(run, "bullmq-worker", checks="bullmq-worker")


def test_fails_with_a_clear_message_when_pod_ip_is_not_set(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    start_bullmq()
    env = {k: v for k, v in probe_env.items() if k != "POD_IP"}

    run = run_probe(env, "bullmq-worker")

    assert_only_failure(run, "bullmq-worker", checks="bullmq-worker")
    assert "POD_IP is not set" in run.check("bullmq-worker")["error"]


# ---------------------------------------------------------------- secrets


SECRET_CASES = {
    "healthy": {},
    "wrong-db-password": {"DB_PASSWORD": "wrong-db-password-value"},
    "wrong-cache-password": {"ELASTICACHE_PASSWORD": "wrong-cache-password-value"},
    "dependencies-down": {"DB_PORT": "1", "ELASTICACHE_PORT": "1", "AWS_ENDPOINT": "http://127.0.0.1:1"},
}
SECRET_VARS = ("DB_PASSWORD", "ELASTICACHE_PASSWORD", "AWS_SECRET_ACCESS_KEY")


@pytest.mark.parametrize("case", list(SECRET_CASES))
def test_never_prints_a_password_or_secret_key(
    case: str, probe_env: dict[str, str], run_probe: RunProbe, creds: Secrets
) -> None:
    env = {**probe_env, **SECRET_CASES[case]}

    run = run_probe(env, SERVICES)

    assert run.report is not None
    printed = run.stdout + run.stderr
    for secret in {*creds.all(), *(env[v] for v in SECRET_VARS)}:
        assert secret not in printed


def test_scrubs_a_secret_even_when_a_server_echoes_it_back(
    probe_env: dict[str, str], run_probe: RunProbe, creds: Secrets
) -> None:
    # PostgreSQL quotes the user name in its auth error; make that name the password.
    env = {**probe_env, "DB_USER": creds.db_password}

    run = run_probe(env, "postgres")

    assert run.returncode == 1
    assert creds.db_password not in run.stdout + run.stderr
    assert "***" in run.check("postgres")["error"]


# ---------------------------------------------------------------- usage and packaging


@pytest.mark.parametrize(
    "args",
    [
        ["--checks", "postgres,nonsense"],
        [],
        ["--checks"],
        ["--checks", "postgres", "--timeout-ms", "soon"],
        ["--checks", "postgres", "--timeout-ms", "0"],
        ["--checks", "postgres", "--verbose"],
    ],
    ids=["unknown-check", "no-checks", "checks-without-value", "timeout-not-a-number", "timeout-zero", "unknown-flag"],
)
def test_rejects_bad_usage_with_exit_2_and_a_usage_message(
    args: list[str], probe_env: dict[str, str]
) -> None:
    proc = subprocess.run(["node", str(PROBE), *args], env=probe_env, capture_output=True, text=True, timeout=30)

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "usage: deep-check.js" in proc.stderr


def test_runs_from_wherever_the_configmap_mounts_it(
    tmp_path: Path, probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    mounted = tmp_path / "probes" / "deep-check.js"
    mounted.parent.mkdir()
    shutil.copy(PROBE, mounted)

    assert run_probe(probe_env, SERVICES, script=str(mounted)).returncode == 0


def test_reports_a_missing_client_library_as_a_failed_check_not_a_crash(
    tmp_path: Path, probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    assert not Path("/app/node_modules/pg").exists(), "this test needs a machine without the bundler image's /app"
    env = {**probe_env, "NODE_PATH": str(tmp_path)}  # an empty directory

    started = time.monotonic()
    run = run_probe(env, "postgres")

    assert run.returncode == 1
    assert "cannot load pg" in run.check("postgres")["error"]
    assert "/app/node_modules" in run.check("postgres")["error"]
    assert time.monotonic() - started < START_MARGIN_S + 1
