"""The deep readiness probe (components/probes/deep-check.js) against real servers.

The promise it keeps for the cluster (risk 10 in docs/risks.md: "a health check that says healthy while
the database is down"): a pod is reported ready only when its own view of PostgreSQL,
both Redis servers and S3 works, and a worker pod is live only while its worker process runs
and holds a connection to the queue Redis (decided inside the pod, so NAT cannot fool it);
a dead or wedged dependency is named, within the probe's timeout, and no secret is ever
printed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import PROBE, BullmqProcess, ProbeRun, RunProbe, Secrets, StartBullmq
from .servers import (
    PostgresServer,
    RecordingS3,
    RedisServer,
    S3Server,
    SilentServer,
    TcpProxy,
    free_port,
    wait_until,
)

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


# ---------------------------------------------------------------- healthy


def test_reports_every_check_ok_when_all_dependencies_and_a_worker_are_up(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    worker = start_bullmq()
    run = run_probe(worker.probe_env(probe_env), ALL, timeout_ms=2500)

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


def test_fails_postgres_when_the_real_server_is_shut_down(
    stopped_postgres: PostgresServer, probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    run = run_probe(probe_env, SERVICES)

    assert_only_failure(run, "postgres")
    assert "ECONNREFUSED" in run.check("postgres")["error"]
    assert_within_budget(run)


@pytest.fixture(params=["redis-cache", "redis-queue"])
def own_redis(
    request: pytest.FixtureRequest, creds: Secrets, probe_env: dict[str, str]
) -> Iterator[tuple[str, RedisServer, dict[str, str]]]:
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


# ---------------------------------------------------------------- s3


def _s3_env(probe_env: dict[str, str], endpoint: str, bucket: str) -> dict[str, str]:
    return {**probe_env, "AWS_ENDPOINT": endpoint, "DATA_ITEM_BUCKET": bucket}


def test_s3_creates_its_probe_object_once_then_only_reads_it(
    probe_env: dict[str, str], run_probe: RunProbe, s3: S3Server, creds: Secrets
) -> None:
    import boto3

    bucket = f"fresh-{int(time.monotonic() * 1000)}"
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id=creds.s3_access_key, aws_secret_access_key=creds.s3_secret_key)
    client.create_bucket(Bucket=bucket)
    env = _s3_env(probe_env, s3.endpoint, bucket)

    assert run_probe(env, "s3").returncode == 0
    head = client.head_object(Bucket=bucket, Key=".x402-bundler-deep-check")
    assert head["ContentLength"] == 0
    assert run_probe(env, "s3").returncode == 0
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [".x402-bundler-deep-check"]


@pytest.fixture
def recording_s3(request: pytest.FixtureRequest) -> Iterator[RecordingS3]:
    server = RecordingS3(**getattr(request, "param", {}))
    yield server
    server.stop()


@pytest.mark.parametrize(
    "recording_s3", [{"missing": 403}, {"missing": 404}], indirect=True, ids=["403-without-listbucket", "404"]
)
def test_s3_uses_only_object_calls_and_one_head_in_steady_state(
    recording_s3: RecordingS3, probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    env = _s3_env(probe_env, recording_s3.endpoint, "data")
    key = "/data/.x402-bundler-deep-check"

    first = run_probe(env, "s3")
    assert first.returncode == 0, first.stdout
    assert recording_s3.requests == [("HEAD", key), ("PUT", key), ("HEAD", key)]

    recording_s3.requests.clear()
    assert run_probe(env, "s3").returncode == 0
    assert recording_s3.requests == [("HEAD", key)], "steady state is one HEAD, and never HeadBucket or a listing"


@pytest.mark.parametrize("recording_s3", [{"deny": True}], indirect=True)
def test_s3_fails_with_a_bad_key_naming_both_calls(
    recording_s3: RecordingS3, probe_env: dict[str, str], run_probe: RunProbe
) -> None:
    run = run_probe(_s3_env(probe_env, recording_s3.endpoint, "data"), "s3")

    assert run.returncode == 1
    error = run.check("s3")["error"]
    assert "answered 403 and PUT failed" in error and "InvalidAccessKeyId" in error, error
    assert [m for m, _ in recording_s3.requests] == ["HEAD", "PUT"]


# ---------------------------------------------------------------- bullmq-worker


def _worker_check(run: ProbeRun) -> dict:
    assert_only_failure(run, "bullmq-worker", checks="bullmq-worker")
    return run.check("bullmq-worker")


@pytest.mark.parametrize("worker_name", [None, "pod-a"], ids=["unnamed-like-the-app", "named"])
def test_passes_while_the_worker_process_holds_its_queue_connection_and_fails_once_it_has_exited(
    worker_name: str | None, probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq,
) -> None:
    worker = start_bullmq(worker_name=worker_name)
    env = worker.probe_env(probe_env)
    running = run_probe(env, "bullmq-worker")
    assert running.returncode == 0, running.stdout

    assert worker.close() == 0
    gone = _worker_check(run_probe(env, "bullmq-worker"))

    assert f'no process\'s command line contains "{worker.marker}"' in gone["error"]


def test_fails_while_the_worker_process_is_stopped_and_recovers_when_it_continues(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    worker = start_bullmq()
    env = worker.probe_env(probe_env)
    os.kill(worker.worker_pid, signal.SIGSTOP)
    try:
        stopped = _worker_check(run_probe(env, "bullmq-worker"))
    finally:
        os.kill(worker.worker_pid, signal.SIGCONT)

    assert f"worker process {worker.worker_pid} is stopped (state T)" in stopped["error"]
    assert run_probe(env, "bullmq-worker").returncode == 0


def test_fails_when_the_worker_process_runs_without_a_queue_connection(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq, redis_queue: RedisServer
) -> None:
    worker = start_bullmq()
    worker.proc.send_signal(signal.SIGUSR2)
    worker.wait_for_line("disconnected")

    result = _worker_check(run_probe(worker.probe_env(probe_env), "bullmq-worker"))

    # Sleeping (S) or, on a busy machine, runnable (R): either way not stopped.
    assert re.search(rf"worker process {worker.worker_pid} \(state [SR]\) "
                     r"holds no ESTABLISHED connection to the queue Redis",
                     result["error"]), result["error"]
    assert f"127.0.0.1:{redis_queue.port}" in result["error"]


def test_fails_when_the_worker_is_connected_to_another_redis_than_the_pods_queue(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    other = RedisServer().start()
    try:
        worker = start_bullmq(redis_port=other.port)
        result = _worker_check(run_probe(worker.probe_env(probe_env), "bullmq-worker"))
    finally:
        other.stop()

    assert "holds no ESTABLISHED connection to the queue Redis" in result["error"]
    assert re.search(r"it has [1-9]\d* established TCP connection\(s\) elsewhere", result["error"]), result["error"]


def test_a_queue_connection_of_another_process_in_the_pod_does_not_count(
    tmp_path: Path, probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq, node_modules: str
) -> None:
    # Same network namespace, so /proc/net/tcp lists the producer's sockets for the worker
    # too: only the worker's own file descriptors may count.
    start_bullmq(mode="producer")
    marker = f"idle-worker-{os.getpid()}"
    idle = subprocess.Popen(["node", "-e", "setInterval(() => {}, 1000)", marker], env={"PATH": os.environ["PATH"]})
    try:
        wait_until(lambda: marker in Path(f"/proc/{idle.pid}/cmdline").read_text(), 5, "idle node process")
        result = _worker_check(run_probe({**probe_env, "DEEP_CHECK_WORKER_CMDLINE": marker}, "bullmq-worker"))
    finally:
        idle.kill()
        idle.wait(5)

    assert re.search(rf"worker process {idle.pid} \(state [SR]\) holds no ESTABLISHED connection", result["error"]), \
        result["error"]


def test_passes_behind_nat_where_the_queue_redis_sees_another_source_address(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq, redis_queue: RedisServer
) -> None:
    nat = TcpProxy(redis_queue.port, source_address="127.0.0.2")
    try:
        worker = start_bullmq(redis_port=nat.port)
        seen_by_redis = {line.split(" addr=")[1].split(":")[0]
                         for line in redis_queue.command("CLIENT", "LIST").splitlines()
                         if " name=bull:" in line}
        run = run_probe({**worker.probe_env(probe_env), "REDIS_PORT_QUEUES": str(nat.port)}, "bullmq-worker")
    finally:
        nat.stop()

    assert "127.0.0.2" in seen_by_redis, "the queue Redis sees the NAT address, not the pod's"
    assert run.returncode == 0, run.stdout


def test_resolves_every_address_of_the_queue_redis_host_name(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    worker = start_bullmq(redis_host="localhost")

    run = run_probe({**worker.probe_env(probe_env), "REDIS_HOST": "localhost"}, "bullmq-worker")

    assert run.returncode == 0, run.stdout


def test_judges_the_worker_not_the_init_process_that_started_it(
    probe_env: dict[str, str], run_probe: RunProbe, start_bullmq: StartBullmq
) -> None:
    # Under dumb-init the init's own command line ends with the worker's; it holds no
    # connection and must neither satisfy nor fail the check in the worker's place.
    worker: BullmqProcess = start_bullmq(wrapper=True)
    env = worker.probe_env(probe_env)
    assert worker.worker_pid != worker.proc.pid
    assert run_probe(env, "bullmq-worker").returncode == 0

    os.kill(worker.worker_pid, signal.SIGSTOP)
    try:
        stopped = _worker_check(run_probe(env, "bullmq-worker"))
    finally:
        os.kill(worker.worker_pid, signal.SIGCONT)

    assert stopped["error"] == f"worker process {worker.worker_pid} is stopped (state T)"


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
