"""The bundler's backing services: in the namespace for dev, managed endpoints for prod.

Either way the result is one `DataEndpoints`, so nothing downstream knows the mode. In-cluster,
PostgreSQL 16, a cache Redis (allkeys-lru, as upstream), a queue Redis (noeviction and an
append-only file, which BullMQ needs; no password, which the bundler cannot send) and MinIO
run as StatefulSets; a Job creates the data bucket. The migration Job depends on this
component, so a first `up` on an empty cluster waits for ready services before migrating
(risk 10 in docs/risks.md: "healthy" while the database is down). With `protectData` the StatefulSets,
their Services, the credentials and the volumes survive `pulumi destroy` and renames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import data_containers
from components.data_containers import (
    MINIO_PORT,
    MINIO_ROOT_USER,
    MINIO_SECRET_FILES,
    MINIO_SECRETS,
    ServicePod,
    image_version,
    scratch,
    secret_files,
)
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
    pod_spec,
    resources,
    run_once_job_spec,
)
from components.settings.data import DataSettings
from components.settings.stack import StackIdentity

# mc takes an alias's keys only from MC_HOST_<alias> or a config.json: the Job's shell (the mc
# image's, from ubi-micro; its Dockerfile's `RUN chmod` needs one) reads the mounted files with its
# own `read` and exports MC_HOST_local to mc alone, so the keys are in no argv and no container env.
# MINIO_ENDPOINT (host:port) is not secret; the script's arguments are mc's.
MC_WITH_MINIO_HOST = (
    f'read -r user < {MINIO_SECRETS}/root-user; read -r password < {MINIO_SECRETS}/root-password; '
    'export MC_HOST_local="http://$user:$password@$MINIO_ENDPOINT"; exec mc "$@"'
)

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
            },
            opts=child,
        )
        secret_name = name_of(secret)

        postgres = self._statefulset(data_containers.postgres(d, secret_name))
        cache = self._statefulset(data_containers.cache_redis(d, secret_name))
        queue = self._statefulset(data_containers.queue_redis(d))
        minio = self._statefulset(data_containers.minio(d.in_cluster, secret_name))
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

    def _statefulset(self, pod: ServicePod) -> k8s.apps.v1.StatefulSet:
        """The service's StatefulSet and the Service that names its pod."""
        d, stack, name = self._data, self._stack.stack, self._name
        component, port, storage = pod.component, pod.port, pod.storage
        opts = pulumi.ResourceOptions(parent=self, protect=d.protect, retain_on_delete=d.protect)
        object_name = k8s_name("bundler", component)
        selector = selector_labels(stack, component)
        version = image_version(pod.image)
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
                    spec=pod_spec([pod.container], pod.volumes, uid=pod.uid),
                ),
            ),
            opts=opts,
        )

    def _bucket_job(self, secret: pulumi.Input[str], minio: k8s.apps.v1.StatefulSet) -> k8s.batch.v1.Job:
        d = self._data
        tmp_volume, tmp_mount = scratch("tmp", "/tmp")
        secret_volume, secret_mount = secret_files(secret, MINIO_SECRETS, MINIO_SECRET_FILES)
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
                volumes=[tmp_volume, secret_volume],
                containers=[
                    k8s.core.v1.ContainerArgs(
                        name="create-bucket",
                        image=d.in_cluster.minio_client_image,
                        # Idempotent: an existing bucket is success.
                        command=["sh", "-c", MC_WITH_MINIO_HOST, "mc",
                                 "--config-dir", "/tmp/mc", "mb", "--ignore-existing", f"local/{d.s3.bucket}"],
                        env=[k8s.core.v1.EnvVarArgs(
                            name="MINIO_ENDPOINT",
                            value=pulumi.Output.concat(self._host(MINIO), ":", str(MINIO_PORT)),
                        )],
                        volume_mounts=[tmp_mount, secret_mount],
                        security_context=container_security(),
                        resources=resources("50m", "200m", "32Mi", "128Mi"),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[minio]),
        )
