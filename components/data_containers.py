"""The in-cluster data services' containers: PostgreSQL, the cache and queue Redis, MinIO.

Each builder returns a `ServicePod`, the container with what its StatefulSet needs around it
(uid, port, scratch volumes, storage); `components/data.py` wraps each in a StatefulSet and a
Service. The images' own users, ports, memory sizes and probes are decided here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components.names import MINIO, POSTGRES, REDIS_CACHE, REDIS_QUEUE
from components.pod import APP_UID, container_security, exec_probe, http_probe, resources
from components.settings.data import DataSettings, InClusterSettings
from components.settings.values import parse_redis_memory

# Each runs as a high uid (>= 10000, checkov CKV_K8S_40) that the image's /etc/passwd lacks.
# Redis, MinIO and mc never look theirs up; initdb does, and the postgres image's entrypoint then
# fakes a `postgres` entry with nss_wrapper for initdb alone (docker_init_database_dir).
POSTGRES_UID, REDIS_UID, MINIO_UID = 10070, 10999, APP_UID
MINIO_PORT = 9000
# MinIO's root credentials as files (name -> Secret key), for MinIO and for the bucket Job's mc.
MINIO_SECRET_FILES = {"root-user": "minio-root-user", "root-password": "minio-root-password"}
# Where each service's Secret files are mounted (read-only, group-readable through fsGroup).
POSTGRES_SECRETS, REDIS_SECRETS, MINIO_SECRETS = "/run/secrets/postgres", "/etc/redis", "/run/secrets/minio"
# The app's S3 access key is MinIO's root user: acceptable for a dev stack, not for shared data.
MINIO_ROOT_USER = "bundler-minio"
PGDATA_MOUNT = "/var/lib/postgresql/data"
# A full queue must make Redis refuse writes (noeviction), not grow until the kernel kills it:
# an append-only file larger than the memory limit would then never load again.
QUEUE_MAX_MEMORY = "384mb"
_MI = 1024**2


def redis_memory(max_memory: str) -> tuple[str, str]:
    """Memory request and limit for a Redis with this `maxmemory`.

    The limit adds half again for buffers and fragmentation, so raising `cacheRedisMaxMemory`
    cannot turn eviction into OOM kills; the request is `maxmemory` itself.
    """
    size = parse_redis_memory(max_memory)
    if size is None:
        raise ValueError(f"'{max_memory}' is not a Redis memory size (e.g. 256mb, 1gb)")
    return f"{math.ceil(size / _MI)}Mi", f"{max(256, math.ceil(size * 1.5 / _MI))}Mi"


def image_version(ref: str) -> str:
    """An image reference's tag (`16.6-alpine3.21`), else its digest's start, as a label value."""
    name, _, digest = ref.partition("@")
    tag = name.rsplit("/", 1)[-1].partition(":")[2]
    return (tag or digest.removeprefix("sha256:")[:12])[:63].strip("-._") or "unknown"


@dataclass(frozen=True)
class ServicePod:
    """One data service's container and what its StatefulSet needs around it."""

    component: str
    uid: int
    image: str
    container: k8s.core.v1.ContainerArgs
    port: int
    volumes: list[k8s.core.v1.VolumeArgs]
    storage: Optional[str]
    """Size of its persistent volume; None keeps no data across restarts (the cache)."""


# The data services' own probes answer in milliseconds; 5 s is for a node under load.
PROBE_TIMEOUT_SECONDS = 5


def _exec(command: list[str], period: int = 10, failures: int = 3) -> k8s.core.v1.ProbeArgs:
    return exec_probe(command, period, PROBE_TIMEOUT_SECONDS, failures)


def scratch(name: str, path: str) -> tuple[k8s.core.v1.VolumeArgs, k8s.core.v1.VolumeMountArgs]:
    return (
        k8s.core.v1.VolumeArgs(name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
        k8s.core.v1.VolumeMountArgs(name=name, mount_path=path),
    )


def secret_files(
    secret: pulumi.Input[str], mount_path: str, files: dict[str, str]
) -> tuple[k8s.core.v1.VolumeArgs, k8s.core.v1.VolumeMountArgs]:
    """Some keys of the Secret as files (file name -> key), readable by the owner and fsGroup only."""
    return (
        k8s.core.v1.VolumeArgs(
            name="secrets",
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=secret,
                items=[k8s.core.v1.KeyToPathArgs(key=key, path=path) for path, key in files.items()],
                default_mode=0o440,
            ),
        ),
        k8s.core.v1.VolumeMountArgs(name="secrets", mount_path=mount_path, read_only=True),
    )


def postgres(d: DataSettings, secret: pulumi.Input[str]) -> ServicePod:
    p, ic = d.postgres, d.in_cluster
    secret_volume, secret_mount = secret_files(secret, POSTGRES_SECRETS, {"password": "postgres-password"})
    run_volume, run_mount = scratch("run", "/var/run/postgresql")
    tmp_volume, tmp_mount = scratch("tmp", "/tmp")
    ready = ["pg_isready", "-h", "127.0.0.1", "-p", str(p.port), "-U", p.user, "-d", p.database]
    container = k8s.core.v1.ContainerArgs(
        name=POSTGRES,
        image=ic.postgres_image,
        # The connection budget check uses the same number (dbMaxConnections).
        args=["-c", f"max_connections={p.max_connections}", "-c", f"port={p.port}"],
        env=[
            k8s.core.v1.EnvVarArgs(name="POSTGRES_USER", value=p.user),
            k8s.core.v1.EnvVarArgs(name="POSTGRES_DB", value=p.database),
            # The entrypoint reads it (file_env) for initdb on a first start: no env var holds it.
            k8s.core.v1.EnvVarArgs(name="POSTGRES_PASSWORD_FILE", value=f"{POSTGRES_SECRETS}/password"),
            # initdb refuses a mount point that holds lost+found: use a subdirectory.
            k8s.core.v1.EnvVarArgs(name="PGDATA", value=f"{PGDATA_MOUNT}/pgdata"),
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name=POSTGRES, container_port=p.port)],
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="data", mount_path=PGDATA_MOUNT), run_mount, tmp_mount, secret_mount
        ],
        security_context=container_security(POSTGRES_UID),
        resources=resources("250m", "1", "256Mi", "1Gi"),
        # initdb on a first start can take minutes on slow volumes; liveness must not kill it
        # half-way (a half-initialised PGDATA never starts again). Up to 10 minutes here.
        startup_probe=_exec(ready, period=5, failures=120),
        readiness_probe=_exec(ready, period=5),
        liveness_probe=_exec(ready, period=10, failures=6),
    )
    return ServicePod(
        POSTGRES, POSTGRES_UID, ic.postgres_image, container, p.port, [run_volume, tmp_volume, secret_volume],
        ic.postgres_storage,
    )


# redis-cli takes a password from argv (`-a`, which every process can read in /proc) or from
# REDISCLI_AUTH: the shell (the image's busybox sh) reads the mounted file into that variable with
# its own `read`, so the password is on no command line and in no container env.
_READ_PASSWORD = f"read -r REDISCLI_AUTH < {REDIS_SECRETS}/password; export REDISCLI_AUTH; "
REDIS_CLI_WITH_AUTH = _READ_PASSWORD + 'exec redis-cli "$@"'
# redis-cli exits 0 on an error reply (NOAUTH, LOADING while the append-only file loads), so a
# probe compares the answer instead of trusting the exit status.
_ANSWERS_PONG = '[ "$(redis-cli "$@")" = PONG ]'


def authenticated_redis_cli(*args: str) -> list[str]:
    """`redis-cli ARGS` authenticated as the cache's clients are (the `$0` of the script is its name)."""
    return ["sh", "-c", REDIS_CLI_WITH_AUTH, "redis-cli", *args]


def redis_ping(port: int, authenticated: bool) -> list[str]:
    """A probe command that succeeds only when Redis answers PONG (authenticated from the file)."""
    script = (_READ_PASSWORD if authenticated else "") + _ANSWERS_PONG
    return ["sh", "-c", script, "redis-ping", "-p", str(port), "ping"]


def cache_redis(d: DataSettings, secret: pulumi.Input[str]) -> ServicePod:
    auth, auth_mount = secret_files(
        secret, REDIS_SECRETS, {"auth.conf": "cache-redis-auth.conf", "password": "cache-redis-password"}
    )
    data_volume, data_mount = scratch("data", "/data")
    ping = redis_ping(d.cache.port, authenticated=True)
    container = k8s.core.v1.ContainerArgs(
        name=REDIS_CACHE,
        image=d.in_cluster.redis_image,
        command=[
            "redis-server", f"{REDIS_SECRETS}/auth.conf",
            "--port", str(d.cache.port),
            "--maxmemory", d.in_cluster.cache_max_memory,
            "--maxmemory-policy", "allkeys-lru",
            "--save", "",
            "--appendonly", "no",
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name="redis", container_port=d.cache.port)],
        volume_mounts=[auth_mount, data_mount],
        security_context=container_security(REDIS_UID),
        # An LRU cache fills up to maxmemory under load, so that much is requested.
        resources=resources("50m", "500m", *redis_memory(d.in_cluster.cache_max_memory)),
        readiness_probe=_exec(ping, period=5),
        liveness_probe=_exec(ping, period=10, failures=6),
    )
    return ServicePod(
        REDIS_CACHE, REDIS_UID, d.in_cluster.redis_image, container, d.cache.port, [auth, data_volume], None
    )


def queue_redis(d: DataSettings) -> ServicePod:
    ping = redis_ping(d.queue.port, authenticated=False)
    container = k8s.core.v1.ContainerArgs(
        name=REDIS_QUEUE,
        image=d.in_cluster.redis_image,
        command=[
            "redis-server",
            "--port", str(d.queue.port),
            # BullMQ loses jobs if Redis evicts keys; the append-only file keeps them across restarts.
            "--maxmemory", QUEUE_MAX_MEMORY,
            "--maxmemory-policy", "noeviction",
            "--appendonly", "yes",
            "--dir", "/data",
            # No password (the bundler cannot send one), so protected mode would refuse every
            # remote client; the NetworkPolicies admit only the bundler pods instead.
            "--protected-mode", "no",
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name="redis", container_port=d.queue.port)],
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data")],
        security_context=container_security(REDIS_UID),
        # A queue is mostly empty: request little, allow up to maxmemory plus overhead.
        resources=resources("50m", "500m", "128Mi", redis_memory(QUEUE_MAX_MEMORY)[1]),
        readiness_probe=_exec(ping, period=5),
        liveness_probe=_exec(ping, period=10, failures=6),
    )
    return ServicePod(
        REDIS_QUEUE, REDIS_UID, d.in_cluster.redis_image, container, d.queue.port, [], d.in_cluster.queue_redis_storage
    )


def minio(ic: InClusterSettings, secret: pulumi.Input[str]) -> ServicePod:
    tmp_volume, tmp_mount = scratch("tmp", "/tmp")
    secret_volume, secret_mount = secret_files(secret, MINIO_SECRETS, MINIO_SECRET_FILES)

    def http(path: str, period: int, failures: int) -> k8s.core.v1.ProbeArgs:
        return http_probe(path, MINIO_PORT, period, PROBE_TIMEOUT_SECONDS, failures)

    container = k8s.core.v1.ContainerArgs(
        name=MINIO,
        image=ic.minio_image,
        args=["server", "/data", "--address", f":{MINIO_PORT}"],
        env=[
            # MinIO reads these files itself (loadEnvVarsFromFiles). A path that is not a file is
            # ignored there and MinIO falls back to minioadmin: the app's keys would then fail.
            k8s.core.v1.EnvVarArgs(name="MINIO_ROOT_USER_FILE", value=f"{MINIO_SECRETS}/root-user"),
            k8s.core.v1.EnvVarArgs(name="MINIO_ROOT_PASSWORD_FILE", value=f"{MINIO_SECRETS}/root-password"),
            k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name="s3", container_port=MINIO_PORT)],
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"), tmp_mount, secret_mount],
        security_context=container_security(MINIO_UID),
        resources=resources("100m", "1", "256Mi", "1Gi"),
        readiness_probe=http("/minio/health/ready", 5, 3),
        liveness_probe=http("/minio/health/live", 10, 6),
    )
    return ServicePod(
        MINIO, MINIO_UID, ic.minio_image, container, MINIO_PORT, [tmp_volume, secret_volume], ic.minio_storage
    )
