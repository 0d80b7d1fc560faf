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
from components.pod import APP_UID, container_security, exec_probe, http_probe, resources, secret_env
from components.settings.data import DataSettings, InClusterSettings
from components.settings.values import parse_redis_memory

# postgres keeps the official image's uid 70: initdb needs its uid in /etc/passwd (the image would
# fake one with nss_wrapper, which the runtime test cannot show; see docs/security.md). Redis, MinIO
# and mc run as any uid, so they take a high one (>= 10000, checkov CKV_K8S_40).
POSTGRES_UID, REDIS_UID, MINIO_UID = 70, 10999, APP_UID
MINIO_PORT = 9000
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
    exceptions: tuple[tuple[str, str], ...] = ()
    """checkov findings that stand for this container, with why (`scanner_exceptions`)."""


# The data services' own probes answer in milliseconds; 5 s is for a node under load.
PROBE_TIMEOUT_SECONDS = 5


def _exec(command: list[str], period: int = 10, failures: int = 3) -> k8s.core.v1.ProbeArgs:
    return exec_probe(command, period, PROBE_TIMEOUT_SECONDS, failures)


def scratch(name: str, path: str) -> tuple[k8s.core.v1.VolumeArgs, k8s.core.v1.VolumeMountArgs]:
    return (
        k8s.core.v1.VolumeArgs(name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
        k8s.core.v1.VolumeMountArgs(name=name, mount_path=path),
    )


def postgres(d: DataSettings, secret: pulumi.Input[str]) -> ServicePod:
    p, ic = d.postgres, d.in_cluster
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
            secret_env("POSTGRES_PASSWORD", secret, "postgres-password"),
            # initdb refuses a mount point that holds lost+found: use a subdirectory.
            k8s.core.v1.EnvVarArgs(name="PGDATA", value=f"{PGDATA_MOUNT}/pgdata"),
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name=POSTGRES, container_port=p.port)],
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path=PGDATA_MOUNT), run_mount, tmp_mount],
        security_context=container_security(POSTGRES_UID),
        resources=resources("250m", "1", "256Mi", "1Gi"),
        # initdb on a first start can take minutes on slow volumes; liveness must not kill it
        # half-way (a half-initialised PGDATA never starts again). Up to 10 minutes here.
        startup_probe=_exec(ready, period=5, failures=120),
        readiness_probe=_exec(ready, period=5),
        liveness_probe=_exec(ready, period=10, failures=6),
    )
    return ServicePod(
        POSTGRES, POSTGRES_UID, ic.postgres_image, container, p.port, [run_volume, tmp_volume], ic.postgres_storage,
        exceptions=(
            ("CKV_K8S_40", "initdb needs its uid in /etc/passwd: the image has postgres as 70 and fakes any other uid "
                           "with nss_wrapper, which the runtime test's Debian stand-in cannot show yet"),
            ("CKV_K8S_35", "the image also reads POSTGRES_PASSWORD_FILE, but the runtime test's stand-in entrypoint "
                           "reads only the variable: moving to the file waits until the stand-in is taught it"),
        ),
    )


def cache_redis(d: DataSettings, secret: pulumi.Input[str]) -> ServicePod:
    auth = k8s.core.v1.VolumeArgs(
        name="auth",
        secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=secret,
            items=[k8s.core.v1.KeyToPathArgs(key="cache-redis-auth.conf", path="auth.conf")],
            default_mode=0o440,
        ),
    )
    data_volume, data_mount = scratch("data", "/data")
    ping = ["redis-cli", "-p", str(d.cache.port), "ping"]
    container = k8s.core.v1.ContainerArgs(
        name=REDIS_CACHE,
        image=d.in_cluster.redis_image,
        command=[
            "redis-server", "/etc/redis/auth.conf",
            "--port", str(d.cache.port),
            "--maxmemory", d.in_cluster.cache_max_memory,
            "--maxmemory-policy", "allkeys-lru",
            "--save", "",
            "--appendonly", "no",
        ],
        # redis-cli reads the password from REDISCLI_AUTH: it stays off the command line.
        env=[secret_env("REDISCLI_AUTH", secret, "cache-redis-password")],
        ports=[k8s.core.v1.ContainerPortArgs(name="redis", container_port=d.cache.port)],
        volume_mounts=[
            k8s.core.v1.VolumeMountArgs(name="auth", mount_path="/etc/redis", read_only=True),
            data_mount,
        ],
        security_context=container_security(REDIS_UID),
        # An LRU cache fills up to maxmemory under load, so that much is requested.
        resources=resources("50m", "500m", *redis_memory(d.in_cluster.cache_max_memory)),
        readiness_probe=_exec(ping, period=5),
        liveness_probe=_exec(ping, period=10, failures=6),
    )
    return ServicePod(
        REDIS_CACHE, REDIS_UID, d.in_cluster.redis_image, container, d.cache.port, [auth, data_volume], None,
        exceptions=(("CKV_K8S_35", "REDISCLI_AUTH is for the probes' redis-cli, whose only other way to take the "
                                   "password is argv, which every process can read; the server reads auth.conf"),),
    )


def queue_redis(d: DataSettings) -> ServicePod:
    ping = ["redis-cli", "-p", str(d.queue.port), "ping"]
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

    def http(path: str, period: int, failures: int) -> k8s.core.v1.ProbeArgs:
        return http_probe(path, MINIO_PORT, period, PROBE_TIMEOUT_SECONDS, failures)

    container = k8s.core.v1.ContainerArgs(
        name=MINIO,
        image=ic.minio_image,
        args=["server", "/data", "--address", f":{MINIO_PORT}"],
        env=[
            secret_env("MINIO_ROOT_USER", secret, "minio-root-user"),
            secret_env("MINIO_ROOT_PASSWORD", secret, "minio-root-password"),
            k8s.core.v1.EnvVarArgs(name="HOME", value="/tmp"),
        ],
        ports=[k8s.core.v1.ContainerPortArgs(name="s3", container_port=MINIO_PORT)],
        volume_mounts=[k8s.core.v1.VolumeMountArgs(name="data", mount_path="/data"), tmp_mount],
        security_context=container_security(MINIO_UID),
        resources=resources("100m", "1", "256Mi", "1Gi"),
        readiness_probe=http("/minio/health/ready", 5, 3),
        liveness_probe=http("/minio/health/live", 10, 6),
    )
    return ServicePod(
        MINIO, MINIO_UID, ic.minio_image, container, MINIO_PORT, [tmp_volume], ic.minio_storage,
        exceptions=(("CKV_K8S_35", "dev's throwaway MinIO takes its root credentials from MINIO_ROOT_USER and "
                                   "MINIO_ROOT_PASSWORD, which the runtime test's S3 stand-in checks uploads "
                                   "against"),),
    )
