"""Data services: PostgreSQL, the cache and queue Redis and S3, in the namespace (dev) or as
managed endpoints (prod), with what the bundler can and cannot send to each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import pulumi

from components.names import PROJECT
from components.settings.reader import Problem, Reader, secret, set_command
from components.settings.values import pinned_image, quantity, redis_memory

DataMode = Literal["in-cluster", "external"]
# URL delimiters that end or split the password part of `postgres://user:password@host`.
_URL_UNSAFE = ("#", "/", ":", "?", "@", "%")



# The data services' images by tag and digest: a tag can be re-pushed, a digest cannot, and the
# kubelet never pulls a digest it has (checkov CKV_K8S_43 and CKV_K8S_15). No registry is reachable
# from where this was written: each digest is the multi-platform index that several unrelated public
# repositories pin for the same tag (compose files, testcontainers and Kubernetes manifests on
# GitHub), MinIO's under both its quay.io and docker.io names. The official postgres tag was rebuilt
# once (sha256:aba1fab9... is the earlier build's index); the later one is used. Check with
# `crane digest <tag>` before changing any of them.
POSTGRES_IMAGE = (
    "docker.io/library/postgres:16.6-alpine3.21"
    "@sha256:1d04b9ba1d4996401f2552b51beda8187f175c0645c091e4781134fc9c9a3eef"
)
REDIS_IMAGE = (
    "docker.io/library/redis:7.4.2-alpine3.21"
    "@sha256:02419de7eddf55aa5bcf49efb74e88fa8d931b4d77c07eff8a6b2144472b6952"
)
MINIO_IMAGE = (
    "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
    "@sha256:a1ea29fa28355559ef137d71fc570e508a214ec84ff8083e39bc5428980b015e"
)
MINIO_CLIENT_IMAGE = (
    "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z"
    "@sha256:aead63c77f9db9107f1696fb08ecb0faeda23729cde94b0f663edf4fe09728e3"
)

@dataclass(frozen=True)
class PostgresSettings:
    host: Optional[str]
    port: int
    database: str
    user: str
    password: Optional[pulumi.Output[str]]
    max_connections: int
    pool_min: int
    pool_max: int


@dataclass(frozen=True)
class RedisSettings:
    host: Optional[str]
    port: int
    password: Optional[pulumi.Output[str]]
    tls: bool


@dataclass(frozen=True)
class S3Settings:
    endpoint: Optional[str]
    region: str
    bucket: str
    access_key_id: Optional[pulumi.Output[str]]
    secret_access_key: Optional[pulumi.Output[str]]
    force_path_style: bool


@dataclass(frozen=True)
class InClusterSettings:
    """Images and storage of the in-cluster data services (dev)."""

    postgres_image: str
    redis_image: str
    minio_image: str
    minio_client_image: str
    storage_class: Optional[str]
    postgres_storage: str
    queue_redis_storage: str
    minio_storage: str
    cache_max_memory: str


@dataclass(frozen=True)
class DataSettings:
    mode: DataMode
    protect: bool
    postgres: PostgresSettings
    cache: RedisSettings
    queue: RedisSettings
    s3: S3Settings
    in_cluster: InClusterSettings


def in_cluster_pinned_and_sized(ic: InClusterSettings) -> list[Problem]:
    problems: list[Problem] = []
    for key, ref in (
        ("postgresImage", ic.postgres_image),
        ("redisImage", ic.redis_image),
        ("minioImage", ic.minio_image),
        ("minioClientImage", ic.minio_client_image),
    ):
        problems += pinned_image(key, ref, allow_exact_version=True)
    for key, q in (
        ("postgresStorage", ic.postgres_storage),
        ("queueRedisStorage", ic.queue_redis_storage),
        ("minioStorage", ic.minio_storage),
    ):
        problems += quantity(key, q)
    problems += redis_memory("cacheRedisMaxMemory", ic.cache_max_memory)
    return problems


def db_password(key: str, text: Optional[str]) -> list[Problem]:
    """The bundler builds `postgres://user:password@host` without escaping the password
    (src/arch/db/knexConfig.ts), so URL delimiters in it break every connection of the app and
    the migration, while the deep check (which passes an object config) still passes."""
    if text is None:
        return []
    found = [f"'{c}'" for c in _URL_UNSAFE if c in text]
    if any(c.isspace() for c in text):
        found.append("whitespace")
    if not found:
        return []
    return [
        Problem(
            key,
            f"contains {', '.join(found)}, which the bundler puts unescaped into its postgres:// connection URL;"
            " the app and the migration could not connect. A password of only letters and digits"
            " (as generated with special characters off) avoids this.",
            set_command(key, "<password without those characters>", secret=True),
        )
    ]


def pool_min_within_max(p: PostgresSettings) -> list[Problem]:
    if p.pool_min > p.pool_max:
        return [Problem(
            "dbPoolMin",
            f"({p.pool_min}) is larger than dbPoolMax ({p.pool_max}).",
            set_command("dbPoolMin", str(p.pool_max)),
        )]
    return []


def queue_redis(has_password: bool, tls: bool) -> list[Problem]:
    """The bundler's BullMQ connection takes neither a password nor TLS (see UPSTREAM.md)."""
    problems: list[Problem] = []
    if has_password:
        problems.append(Problem(
            "queueRedisPassword",
            "is set, but the bundler cannot send a password to the queue Redis (REDIS_HOST/REDIS_PORT_QUEUES only)."
            " Use a queue Redis without AUTH, reachable only from the bundler pods"
            " (the NetworkPolicies here enforce that).",
            f"pulumi config rm {PROJECT}:queueRedisPassword",
        ))
    if tls:
        problems.append(Problem(
            "queueRedisTls",
            "is true, but the bundler's queue connection has no TLS support.",
            set_command("queueRedisTls", "false"),
        ))
    return problems


def external_data(external: bool, hosts: dict[str, Optional[str]], secrets: dict[str, Optional[str]]) -> list[Problem]:
    if not external:
        return []
    required = "is required when dataMode is external."
    problems = [Problem(k, required, set_command(k, "<host>")) for k, v in hosts.items() if not v]
    problems += [Problem(k, required, set_command(k, "<value>", secret=True)) for k, v in secrets.items() if v is None]
    return problems


def read_data(r: Reader, is_prod: bool) -> DataSettings:
    mode: DataMode = r.choice("dataMode", ("in-cluster", "external"), "in-cluster")  # type: ignore[assignment]
    external = mode == "external"
    in_cluster = InClusterSettings(
        postgres_image=r.text("postgresImage", POSTGRES_IMAGE),
        redis_image=r.text("redisImage", REDIS_IMAGE),
        minio_image=r.text("minioImage", MINIO_IMAGE),
        minio_client_image=r.text("minioClientImage", MINIO_CLIENT_IMAGE),
        storage_class=r.text("storageClass", None),
        postgres_storage=r.text("postgresStorage", "10Gi"),
        queue_redis_storage=r.text("queueRedisStorage", "2Gi"),
        minio_storage=r.text("minioStorage", "20Gi"),
        cache_max_memory=r.text("cacheRedisMaxMemory", "256mb"),
    )
    if not external:
        r.report(in_cluster_pinned_and_sized(in_cluster))

    db_password_text = r.secret_text("dbPassword")
    r.report(db_password("dbPassword", db_password_text))
    cache_password = r.secret_text("cacheRedisPassword")
    queue_password = r.secret_text("queueRedisPassword")
    s3_key_id = r.secret_text("s3AccessKeyId")
    s3_secret = r.secret_text("s3SecretAccessKey")
    postgres = PostgresSettings(
        host=r.text("dbHost", None),
        port=r.integer("dbPort", 5432, minimum=1, maximum=65535),
        database=r.text("dbDatabase", "bundler_lite"),
        user=r.text("dbUser", "bundler"),
        password=secret(db_password_text),
        max_connections=r.integer("dbMaxConnections", 100, minimum=5, maximum=100_000),
        pool_min=r.integer("dbPoolMin", 2, minimum=0, maximum=1000),
        # 10 keeps the default stack (one pod each, max_connections 100) within the budget.
        pool_max=r.integer("dbPoolMax", 10, minimum=1, maximum=1000),
    )
    r.report(pool_min_within_max(postgres))
    cache = RedisSettings(
        host=r.text("cacheRedisHost", None),
        port=r.integer("cacheRedisPort", 6379, minimum=1, maximum=65535),
        password=secret(cache_password),
        tls=r.boolean("cacheRedisTls", False),
    )
    queue = RedisSettings(
        host=r.text("queueRedisHost", None),
        port=r.integer("queueRedisPort", 6381, minimum=1, maximum=65535),
        password=None,
        tls=r.boolean("queueRedisTls", False),
    )
    s3 = S3Settings(
        endpoint=r.text("s3Endpoint", None),
        region=r.text("s3Region", "us-east-1"),
        bucket=r.text("s3Bucket", "bundler-data-items"),
        access_key_id=secret(s3_key_id),
        secret_access_key=secret(s3_secret),
        force_path_style=r.boolean("s3ForcePathStyle", not external),
    )
    r.report(queue_redis(queue_password is not None, queue.tls))
    r.report(
        external_data(
            external,
            {"dbHost": postgres.host, "cacheRedisHost": cache.host, "queueRedisHost": queue.host},
            {"dbPassword": db_password_text, "s3AccessKeyId": s3_key_id, "s3SecretAccessKey": s3_secret},
        )
    )
    return DataSettings(
        mode=mode,
        protect=r.boolean("protectData", is_prod),
        postgres=postgres,
        cache=cache,
        queue=queue,
        s3=s3,
        in_cluster=in_cluster,
    )
