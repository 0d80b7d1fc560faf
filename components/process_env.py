"""What each bundler container receives: the shared settings ConfigMap, plus only the
credentials, wallet files, volumes and overrides its process reads.

`pod_environment` is the one place that decides it, for `api`, `workers`, `admin` and the
migration Job, from the objects `AppConfiguration` and `ProbeScript` created.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.app_config import RAW_DATA_WALLET_FILE, UPLOAD_DATA_DIR, WALLET_DIR, WALLET_FILE, AppConfiguration
from components.names import ADMIN, API, MIGRATION, WORKERS
from components.pod import secret_env
from components.probes import ProbeScript

# Read-only for the owner (root); with fsGroup the kubelet adds group read, which is how the app's uid
# (APP_UID, never the file's owner) reads it.
WALLET_FILE_MODE = 0o400

# Secret env var -> key in the credentials Secret.
SECRET_ENV = {
    "DB_PASSWORD": "db-password",
    "AWS_ACCESS_KEY_ID": "s3-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "s3-secret-access-key",
    "ADMIN_PASSWORD": "admin-password",
    "ELASTICACHE_PASSWORD": "cache-redis-password",
    "CDP_API_KEY_ID": "cdp-api-key-id",
    "CDP_API_KEY_SECRET": "cdp-api-key-secret",
    "AR_IO_ADMIN_KEY": "ar-io-admin-key",
}
_APP_SECRETS = tuple(v for v in SECRET_ENV if v != "AR_IO_ADMIN_KEY")
# Which credentials each process reads (a credential it does not read is not given to it).
SECRETS_READ_BY: dict[str, tuple[str, ...]] = {
    API: _APP_SECRETS,
    # The optical-post and post-bundle jobs, the only readers of AR_IO_ADMIN_KEY, run here.
    WORKERS: (*_APP_SECRETS, "AR_IO_ADMIN_KEY"),
    # admin/statsCollector.js cannot send a cache password: the admin uses the queue Redis.
    ADMIN: tuple(v for v in _APP_SECRETS if v != "ELASTICACHE_PASSWORD"),
    # knex with the writer config, and the app's constants: only the database password.
    MIGRATION: ("DB_PASSWORD",),
}


@dataclass(frozen=True)
class PodEnvironment:
    """What one bundler container receives: env, mounts, volumes and pull secrets."""

    env: list[k8s.core.v1.EnvVarArgs]
    env_from: list[k8s.core.v1.EnvFromSourceArgs]
    volumes: list[k8s.core.v1.VolumeArgs]
    volume_mounts: list[k8s.core.v1.VolumeMountArgs]
    image_pull_secrets: list[k8s.core.v1.LocalObjectReferenceArgs]
    object_names: pulumi.Output[list[str]]
    """Names of the content-named objects the pods read; they change whenever content does."""


def pod_environment(config: AppConfiguration, probes: ProbeScript, component: str) -> PodEnvironment:
    """The env, volumes and mounts of one bundler container: `api`, `workers`, `admin` or
    `migration`. The ConfigMap is shared; the rest is what that process reads."""
    s, e = config.inputs.app, config.inputs.endpoints
    runs_app = component != MIGRATION
    env = [k8s.core.v1.EnvVarArgs(name="TURBO_JWK_FILE", value=WALLET_FILE)]
    if runs_app:
        # Read by no code of the app, only by upstream's scripts; kept for operators who
        # follow upstream's docs, which name it.
        env.append(k8s.core.v1.EnvVarArgs(name="ARWEAVE_WALLET_FILE", value=WALLET_FILE))
        if s.raw_data_wallet is not None:
            env += [
                k8s.core.v1.EnvVarArgs(name="RAW_DATA_ITEM_JWK_FILE", value=RAW_DATA_WALLET_FILE),
                k8s.core.v1.EnvVarArgs(name="RAW_DATA_UPLOADS_ENABLED", value="true"),
            ]
    if component == ADMIN:
        # admin/statsCollector.js caches its statistics in the Redis at ELASTICACHE_HOST/PORT
        # but sends no password and no TLS, which the cache Redis requires. The queue Redis
        # takes neither; one key with a 30 s TTL is all it stores there. Container env wins
        # over the ConfigMap's envFrom, and the admin's redis-cache probe follows it.
        env += [
            k8s.core.v1.EnvVarArgs(name="ELASTICACHE_HOST", value=e.queue_host),
            k8s.core.v1.EnvVarArgs(name="ELASTICACHE_PORT", value=str(e.queue_port)),
            k8s.core.v1.EnvVarArgs(name="ELASTICACHE_USE_TLS", value="false"),
        ]
    env += [
        secret_env(var, config.credentials_secret_name, SECRET_ENV[var])
        for var in SECRETS_READ_BY[component]
        if SECRET_ENV[var] in config.credential_keys
    ]
    volumes = [
        k8s.core.v1.VolumeArgs(
            name="wallets",
            secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=config.wallet_secret_name, default_mode=WALLET_FILE_MODE
            ),
        ),
        k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="1Gi")),
    ]
    mounts = [
        k8s.core.v1.VolumeMountArgs(name="wallets", mount_path=WALLET_DIR, read_only=True),
        k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
    ]
    names = [config.config_map_name, config.credentials_secret_name, config.wallet_secret_name]
    if runs_app:
        volumes += [
            k8s.core.v1.VolumeArgs(
                name="upload-data",
                empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=s.upload_data_size_limit),
            ),
            probes.volume,
        ]
        mounts += [
            k8s.core.v1.VolumeMountArgs(name="upload-data", mount_path=UPLOAD_DATA_DIR),
            probes.volume_mount,
        ]
        names.append(probes.config_map_name)
    pull = []
    if config.pull_secret_name is not None:
        pull = [k8s.core.v1.LocalObjectReferenceArgs(name=config.pull_secret_name)]
    return PodEnvironment(
        env=env,
        env_from=[
            k8s.core.v1.EnvFromSourceArgs(
                config_map_ref=k8s.core.v1.ConfigMapEnvSourceArgs(name=config.config_map_name)
            )
        ],
        volumes=volumes,
        volume_mounts=mounts,
        image_pull_secrets=pull,
        object_names=pulumi.Output.all(*names).apply(list),
    )
