"""The bundler's backing services: in the namespace for dev, managed endpoints for prod.

Either way the result is one `DataEndpoints`, so nothing downstream knows the mode. In-cluster,
PostgreSQL 16, a cache Redis (allkeys-lru, as upstream), a queue Redis (noeviction and an
append-only file, which BullMQ needs; no password, which the bundler cannot send) and MinIO
run as StatefulSets; a Job creates the data bucket. The migration Job depends on this
component, so a first `up` on an empty cluster waits for ready services before migrating
(seed risk 10: "healthy" while the database is down). With `protectData` the StatefulSets,
their Services, the credentials and the volumes survive `pulumi destroy` and renames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.endpoints import DataEndpoints
from components.names import (
    BUCKET_INIT,
    MINIO,
    POSTGRES,
    REDIS_CACHE,
    REDIS_QUEUE,
    k8s_name,
    labels,
    name_of,
    selector_labels,
)
from components.pod import (
    REPLACE_UNREADY,
    container_security,
    exec_probe,
    http_probe,
    pod_spec,
    resources,
    run_once_job_spec,
    secret_env,
)
from components.settings.data import DataSettings
from components.settings.stack import StackIdentity
from components.settings.values import parse_redis_memory

# Users of the official images (alpine): postgres is uid 70, redis uid 999; both exist in the
# image's /etc/passwd, which initdb needs. MinIO and mc run as any uid.
POSTGRES_UID, REDIS_UID, MINIO_UID = 70, 999, 1001
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
class DataServicesArgs:
    stack: StackIdentity
    """Stack name and app version, for names and labels."""
    data: DataSettings
    """Which mode, and the services' settings."""
    namespace: pulumi.Input[str]
    """Namespace of the in-cluster services."""


def _external(d: DataSettings) -> DataEndpoints:
    if d.postgres.password is None or d.s3.access_key_id is None or d.s3.secret_access_key is None:
        raise ValueError("external data mode needs dbPassword and the S3 keys (validation should have said so)")
    return DataEndpoints(
        db_host=str(d.postgres.host),
        db_port=d.postgres.port,
        db_database=d.postgres.database,
        db_user=d.postgres.user,
        db_password=d.postgres.password,
        db_max_connections=d.postgres.max_connections,
        cache_host=str(d.cache.host),
        cache_port=d.cache.port,
        cache_password=d.cache.password,
        cache_tls=d.cache.tls,
        queue_host=str(d.queue.host),
        queue_port=d.queue.port,
        s3_endpoint=d.s3.endpoint,
        s3_region=d.s3.region,
        s3_bucket=d.s3.bucket,
        s3_access_key_id=d.s3.access_key_id,
        s3_secret_access_key=d.s3.secret_access_key,
        s3_force_path_style=d.s3.force_path_style,
    )


# The data services' own probes answer in milliseconds; 5 s is for a node under load.
PROBE_TIMEOUT_SECONDS = 5


def _exec(command: list[str], period: int = 10, failures: int = 3) -> k8s.core.v1.ProbeArgs:
    return exec_probe(command, period, PROBE_TIMEOUT_SECONDS, failures)


def _scratch(name: str, path: str) -> tuple[k8s.core.v1.VolumeArgs, k8s.core.v1.VolumeMountArgs]:
    return (
        k8s.core.v1.VolumeArgs(name=name, empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
        k8s.core.v1.VolumeMountArgs(name=name, mount_path=path),
    )


class DataServices(pulumi.ComponentResource):
    """PostgreSQL, two Redis and S3: StatefulSets in-cluster, or the configured endpoints."""

    endpoints: DataEndpoints

    def __init__(self, name: str, args: DataServicesArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:DataServices", name, None, opts)
        d = args.data
        if d.mode == "external":
            self.endpoints = _external(d)
            self.register_outputs({"mode": "external"})
            return

        self._stack, self._data, self._ns, self._name = args.stack, d, args.namespace, name
        # Stable across `up`s: no keepers, so the passwords change only if these are replaced.
        child = pulumi.ResourceOptions(parent=self, protect=d.protect)
        db_password = random.RandomPassword(f"{name}-postgres-password", length=32, special=False, opts=child)
        cache_password = random.RandomPassword(f"{name}-cache-redis-password", length=32, special=False, opts=child)
        minio_password = random.RandomPassword(f"{name}-minio-password", length=32, special=False, opts=child)

        hosts = {c: self._host(c) for c in (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO)}
        minio_url = pulumi.Output.concat("http://", hosts[MINIO], ":", str(MINIO_PORT))
        secret = k8s.core.v1.Secret(
            f"{name}-credentials",
            metadata=self._meta("bundler-data-credentials", "data", args.stack.app_version),
            type="Opaque",
            string_data={
                "postgres-password": db_password.result,
                "cache-redis-password": cache_password.result,
                # Read by redis-server as a config file, so the password is in no pod arg or env.
                "cache-redis-auth.conf": pulumi.Output.concat("requirepass ", cache_password.result, "\n"),
                "minio-root-user": MINIO_ROOT_USER,
                "minio-root-password": minio_password.result,
                # mc reads MC_HOST_<alias> as a URL with credentials: no shell, no config file.
                "mc-host": pulumi.Output.concat(
                    "http://", MINIO_ROOT_USER, ":", minio_password.result, "@", hosts[MINIO], ":", str(MINIO_PORT)
                ),
            },
            opts=child,
        )
        secret_name = name_of(secret)

        postgres = self._postgres(secret_name)
        cache = self._cache_redis(secret_name)
        queue = self._queue_redis()
        minio = self._minio(secret_name)
        self._bucket_job(secret_name, minio)

        self.endpoints = DataEndpoints(
            db_host=hosts[POSTGRES],
            db_port=d.postgres.port,
            db_database=d.postgres.database,
            db_user=d.postgres.user,
            db_password=pulumi.Output.secret(db_password.result),
            db_max_connections=d.postgres.max_connections,
            cache_host=hosts[REDIS_CACHE],
            cache_port=d.cache.port,
            cache_password=pulumi.Output.secret(cache_password.result),
            cache_tls=False,
            queue_host=hosts[REDIS_QUEUE],
            queue_port=d.queue.port,
            s3_endpoint=minio_url,
            s3_region=d.s3.region,
            s3_bucket=d.s3.bucket,
            s3_access_key_id=pulumi.Output.secret(MINIO_ROOT_USER),
            s3_secret_access_key=pulumi.Output.secret(minio_password.result),
            s3_force_path_style=True,
        )
        self.register_outputs(
            {"mode": "in-cluster", "statefulsets": [postgres.id, cache.id, queue.id, minio.id]}
        )

    # -- helpers -------------------------------------------------------------------------

    def _meta(self, object_name: str, component: str, version: str) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(
            name=k8s_name(object_name), namespace=self._ns, labels=labels(self._stack.stack, component, version)
        )

    def _host(self, component: str) -> pulumi.Output[str]:
        return pulumi.Output.concat(k8s_name("bundler", component), ".", self._ns, ".svc.cluster.local")

    def _statefulset(
        self,
        component: str,
        uid: int,
        image: str,
        container: k8s.core.v1.ContainerArgs,
        port: int,
        volumes: list[k8s.core.v1.VolumeArgs],
        storage: Optional[str],
    ) -> k8s.apps.v1.StatefulSet:
        d, stack, name = self._data, self._stack.stack, self._name
        opts = pulumi.ResourceOptions(parent=self, protect=d.protect, retain_on_delete=d.protect)
        object_name = k8s_name("bundler", component)
        selector = selector_labels(stack, component)
        version = image_version(image)
        service = k8s.core.v1.Service(
            f"{name}-{component}-service",
            metadata=self._meta(object_name, component, version),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector=selector, ports=[k8s.core.v1.ServicePortArgs(name=component, port=port, target_port=port)]
            ),
            opts=opts,
        )
        claims = None
        if storage:
            claims = [
                k8s.core.v1.PersistentVolumeClaimArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(name="data", labels=selector),
                    spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                        access_modes=["ReadWriteOnce"],
                        storage_class_name=d.in_cluster.storage_class,
                        resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": storage}),
                    ),
                )
            ]
        # A dev `destroy` cleans up its volumes; a protected stack keeps them. Scaling down
        # (e.g. to 0 to save resources) never deletes data in any stack.
        when_deleted = "Retain" if d.protect else "Delete"
        return k8s.apps.v1.StatefulSet(
            f"{name}-{component}",
            metadata=self._meta(object_name, component, version),
            spec=k8s.apps.v1.StatefulSetSpecArgs(
                replicas=1,
                service_name=name_of(service),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                persistent_volume_claim_retention_policy=k8s.apps.v1.StatefulSetPersistentVolumeClaimRetentionPolicyArgs(
                    when_deleted=when_deleted, when_scaled="Retain"
                ),
                volume_claim_templates=claims,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels(stack, component, version)),
                    spec=pod_spec([container], volumes, uid=uid),
                ),
            ),
            opts=opts,
        )

    def _postgres(self, secret: pulumi.Input[str]) -> k8s.apps.v1.StatefulSet:
        p, ic = self._data.postgres, self._data.in_cluster
        run_volume, run_mount = _scratch("run", "/var/run/postgresql")
        tmp_volume, tmp_mount = _scratch("tmp", "/tmp")
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
        return self._statefulset(
            POSTGRES, POSTGRES_UID, ic.postgres_image, container, p.port, [run_volume, tmp_volume], ic.postgres_storage
        )

    def _cache_redis(self, secret: pulumi.Input[str]) -> k8s.apps.v1.StatefulSet:
        d = self._data
        auth = k8s.core.v1.VolumeArgs(
            name="auth",
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=secret,
                items=[k8s.core.v1.KeyToPathArgs(key="cache-redis-auth.conf", path="auth.conf")],
                default_mode=0o440,
            ),
        )
        data_volume, data_mount = _scratch("data", "/data")
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
        return self._statefulset(
            REDIS_CACHE, REDIS_UID, d.in_cluster.redis_image, container, d.cache.port, [auth, data_volume], None
        )

    def _queue_redis(self) -> k8s.apps.v1.StatefulSet:
        d = self._data
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
        return self._statefulset(
            REDIS_QUEUE, REDIS_UID, d.in_cluster.redis_image, container, d.queue.port, [], d.in_cluster.queue_redis_storage
        )

    def _minio(self, secret: pulumi.Input[str]) -> k8s.apps.v1.StatefulSet:
        ic = self._data.in_cluster
        tmp_volume, tmp_mount = _scratch("tmp", "/tmp")

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
        return self._statefulset(MINIO, MINIO_UID, ic.minio_image, container, MINIO_PORT, [tmp_volume], ic.minio_storage)

    def _bucket_job(self, secret: pulumi.Input[str], minio: k8s.apps.v1.StatefulSet) -> k8s.batch.v1.Job:
        d = self._data
        tmp_volume, tmp_mount = _scratch("tmp", "/tmp")
        job_labels = labels(self._stack.stack, BUCKET_INIT, image_version(d.in_cluster.minio_client_image))
        return k8s.batch.v1.Job(
            f"{self._name}-bucket",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=k8s_name("bundler-bucket", d.s3.bucket),
                namespace=self._ns,
                labels=job_labels,
                annotations=REPLACE_UNREADY,
            ),
            spec=run_once_job_spec(
                pod_labels=job_labels,
                backoff_limit=6,
                deadline_seconds=300,
                volumes=[tmp_volume],
                containers=[
                    k8s.core.v1.ContainerArgs(
                        name="create-bucket",
                        image=d.in_cluster.minio_client_image,
                        # Idempotent: an existing bucket is success.
                        command=["mc", "--config-dir", "/tmp/mc", "mb", "--ignore-existing", f"local/{d.s3.bucket}"],
                        env=[secret_env("MC_HOST_local", secret, "mc-host")],
                        volume_mounts=[tmp_mount],
                        security_context=container_security(),
                        resources=resources("50m", "200m", "32Mi", "128Mi"),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[minio]),
        )
