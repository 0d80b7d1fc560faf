"""The app's configuration objects: its settings ConfigMap and the credentials, wallet and
image pull Secrets, each named after its content.

Answers risk 2 in docs/risks.md (wallet files must exist before the container starts: here they are a
Secret mounted read-only as files, never env vars) and risk 9 (private image pulls: a
`dockerconfigjson` pull Secret on every pod when the package is private). It also fixes the
upstream trap that the docs say `ARWEAVE_WALLET_FILE` while the code reads `TURBO_JWK_FILE`,
which points to the mounted file.

What each bundler container receives from these objects is `components/process_env.py`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.endpoints import DataEndpoints
from components.names import PROJECT, content_named, labels, name_of
from components.settings.app import AppSettings
from components.settings.data import PostgresSettings
from components.settings.image import ImageSettings
from components.settings.stack import StackIdentity

WALLET_DIR = f"/var/run/secrets/{PROJECT}"
WALLET_FILE = f"{WALLET_DIR}/wallet.json"
RAW_DATA_WALLET_FILE = f"{WALLET_DIR}/raw-data-wallet.json"
# The API and the workers create FS_DATA_PATH at import and keep a file-system backup of uploads
# there; unset, it is /app/upload-service-data on the read-only root, and the workers crash-loop.
# Outside /app so the volume never shadows anything the image ships.
UPLOAD_DATA_DIR = f"/var/lib/{PROJECT}"
FS_DATA_PATH = f"{UPLOAD_DATA_DIR}/upload-service-data"
@dataclass(frozen=True)
class AppConfigurationArgs:
    stack: StackIdentity
    """Stack name and app version, for labels."""
    app: AppSettings
    """Wallets, payments and the app's own settings."""
    postgres: PostgresSettings
    """The knex pool sizes (`dbPoolMin`, `dbPoolMax`) every process is given."""
    image: ImageSettings
    """Registry, owner, visibility and pull token: the pull Secret, when the package is private."""
    admin_port: int
    """Where the admin dashboard listens (`BULL_BOARD_PORT`)."""
    namespace: pulumi.Input[str]
    """Namespace of every object created here."""
    endpoints: DataEndpoints
    """Connection settings of PostgreSQL, both Redis and S3, whichever mode provides them."""


def app_settings(args: AppConfigurationArgs) -> dict[str, pulumi.Input[str]]:
    """The non-secret environment, shared by the API, workers, admin and the migration Job."""
    s, e = args.app, args.endpoints
    data: dict[str, pulumi.Input[str]] = {
        "NODE_ENV": "production",
        "LOG_LEVEL": s.log_level,
        "LOG_FORMAT": "json",
        # Migrations run once, in the migration Job, never at pod start (risk 3 in docs/risks.md).
        "MIGRATE_ON_STARTUP": "false",
        "DB_HOST": e.db_host,
        "DB_WRITER_ENDPOINT": e.db_host,
        "DB_READER_ENDPOINT": e.db_host,
        "DB_PORT": str(e.db_port),
        "DB_USER": e.db_user,
        "DB_DATABASE": e.db_database,
        "DB_POOL_MIN": str(args.postgres.pool_min),
        "DB_POOL_MAX": str(args.postgres.pool_max),
        "POSTGRES_VERSION": "16",
        "ELASTICACHE_HOST": e.cache_host,
        "ELASTICACHE_PORT": str(e.cache_port),
        "ELASTICACHE_USE_TLS": str(e.cache_tls).lower(),
        "ELASTICACHE_NO_CLUSTERING": "true",
        "REDIS_HOST": e.queue_host,
        "REDIS_PORT_QUEUES": str(e.queue_port),
        "AWS_REGION": e.s3_region,
        "DATA_ITEM_BUCKET": e.s3_bucket,
        "S3_FORCE_PATH_STYLE": str(e.s3_force_path_style).lower(),
        "X402_PAYMENT_ADDRESS": s.payment_address,
        "X402_BASE_ENABLED": str(s.payment_network == "base").lower(),
        "X402_BASE_TESTNET_ENABLED": str(s.payment_network == "base-sepolia").lower(),
        "UPLOAD_SERVICE_PUBLIC_URL": s.public_url,
        "ARWEAVE_GATEWAY": s.arweave_gateway,
        "PUBLIC_ACCESS_GATEWAY": s.arweave_gateway,
        # Where the seed job posts bundles (`POST /tx`, `/chunk`); unset, the app posts to
        # arweave.net whatever arweaveGateway says.
        "ARWEAVE_UPLOAD_NODE": s.arweave_gateway,
        "ADMIN_USERNAME": s.admin_username,
        "BULL_BOARD_PORT": str(args.admin_port),
        "FS_DATA_PATH": FS_DATA_PATH,
        # Shown by /v1/info as the payment address.
        "ETHEREUM_ADDRESS": s.payment_address,
        "FREE_UPLOAD_LIMIT": str(s.free_upload_limit),
        # The app's default is on; without a bridge URL every upload would queue an
        # optical-post job that fails three times.
        "OPTICAL_BRIDGING_ENABLED": str(s.optical_bridge_url is not None).lower(),
    }
    if s.optical_bridge_url is not None:
        data["OPTICAL_BRIDGE_URL"] = s.optical_bridge_url
    if e.s3_endpoint is not None:
        data["AWS_ENDPOINT"] = e.s3_endpoint
        data["S3_ENDPOINT"] = e.s3_endpoint
    return data


def _dockerconfigjson(registry: str, username: str, token: str) -> str:
    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    return json.dumps({"auths": {registry: {"username": username, "password": token, "auth": auth}}})


class AppConfiguration(pulumi.ComponentResource):
    """The ConfigMap and Secrets every bundler pod reads, named after their content."""

    config_map_name: pulumi.Output[str]
    credentials_secret_name: pulumi.Output[str]
    wallet_secret_name: pulumi.Output[str]
    pull_secret_name: Optional[pulumi.Output[str]]
    admin_password: pulumi.Output[str]
    secret_names: pulumi.Output[dict[str, Any]]
    inputs: AppConfigurationArgs
    """What it was built from; `pod_environment` reads the wallets, limits and endpoints."""
    credential_keys: frozenset[str]
    """The keys the credentials Secret holds (optional credentials only when set)."""

    def __init__(self, name: str, args: AppConfigurationArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:AppConfiguration", name, None, opts)
        s, e = args.app, args.endpoints
        child = pulumi.ResourceOptions(parent=self)
        self.inputs = args

        if s.admin_password is not None:
            self.admin_password = s.admin_password
        else:
            generated = random.RandomPassword(f"{name}-admin-password", length=32, special=False, opts=child)
            self.admin_password = pulumi.Output.secret(generated.result)

        def metadata(base: str, data: pulumi.Input[Any]) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=content_named(base, data),
                namespace=args.namespace,
                labels=labels(args.stack.stack, "config", args.stack.app_version),
            )

        settings_data = app_settings(args)
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-settings", metadata=metadata("bundler-settings", settings_data), data=settings_data, opts=child
        )

        credentials: dict[str, pulumi.Input[str]] = {
            "db-password": e.db_password,
            "s3-access-key-id": e.s3_access_key_id,
            "s3-secret-access-key": e.s3_secret_access_key,
            "admin-password": self.admin_password,
        }
        for key, value in (
            ("cache-redis-password", e.cache_password),
            ("cdp-api-key-id", s.cdp_api_key_id),
            ("cdp-api-key-secret", s.cdp_api_key_secret),
            ("ar-io-admin-key", s.ar_io_admin_key),
        ):
            if value is not None:
                credentials[key] = value
        self.credential_keys = frozenset(credentials)

        def opaque(logical: str, base: str, data: dict[str, pulumi.Input[str]]) -> k8s.core.v1.Secret:
            return k8s.core.v1.Secret(f"{name}-{logical}", metadata=metadata(base, data), type="Opaque",
                                      string_data=data, opts=child)

        credentials_secret = opaque("credentials", "bundler-credentials", credentials)
        wallets: dict[str, pulumi.Input[str]] = {"wallet.json": s.arweave_wallet}
        if s.raw_data_wallet is not None:
            wallets["raw-data-wallet.json"] = s.raw_data_wallet
        wallet_secret = opaque("wallets", "bundler-wallets", wallets)

        self.pull_secret_name = None
        image = args.image
        if image.visibility == "private" and image.pull_token is not None and not image.local_registry:
            username = image.pull_username
            dockerconfig: pulumi.Output[str] = image.pull_token.apply(
                lambda token: _dockerconfigjson(image.registry, username, token)
            )
            pull_secret = k8s.core.v1.Secret(
                f"{name}-image-pull",
                metadata=metadata("bundler-image-pull", {"config": dockerconfig}),
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": dockerconfig},
                opts=child,
            )
            self.pull_secret_name = name_of(pull_secret)

        self.config_map_name = name_of(config_map)
        self.credentials_secret_name = name_of(credentials_secret)
        self.wallet_secret_name = name_of(wallet_secret)
        self.secret_names = pulumi.Output.all(
            self.wallet_secret_name, self.credentials_secret_name, self.pull_secret_name
        ).apply(lambda n: {"wallet": n[0], "credentials": n[1], "imagePull": n[2]})
        self.register_outputs(
            {
                "config_map_name": self.config_map_name,
                "secret_names": self.secret_names,
                "admin_password": self.admin_password,
            }
        )
