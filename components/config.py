"""Typed, validated stack settings: the answer to seed risk 6.

Upstream's container "starts even if critical env vars are missing, then fails at runtime".
Here every value the program reads comes from one frozen `Settings` object, built by
`load_settings()`, which reports *every* problem at once (key, what is wrong, the command that
fixes it) and raises before a single resource is registered.

Secret values are read as plain text only to be checked, then kept as secret Outputs; no
check ever echoes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Optional, TypeVar

import pulumi

from components import checks
from components.checks import Problem

PROJECT = "x402-bundler"

Environment = Literal["dev", "prod"]
PaymentNetwork = Literal["base-sepolia", "base"]
ImageMode = Literal["build", "promote"]
DataMode = Literal["in-cluster", "external"]
Visibility = Literal["public", "private"]

T = TypeVar("T")


class ConfigError(pulumi.RunError):
    """Raised with every configuration problem listed; nothing has been registered yet."""

    def __init__(self, stack: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [
            f"Stack '{stack}' configuration has {len(problems)} problem(s); nothing was deployed:"
        ]
        for p in problems:
            lines.append(f"  - {PROJECT}:{p.key}: {p.message}")
            lines.append(f"      fix: {p.fix}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ProcessSettings:
    """Replicas and container resources of one bundler process (api, workers, admin, migration)."""

    replicas: int
    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


@dataclass(frozen=True)
class ImageSettings:
    """Where the bundler image comes from (build here, or promote a digest built elsewhere)."""

    mode: ImageMode
    repository: str
    context: str
    git_ref: Optional[str]
    version: str
    platforms: tuple[str, ...]
    cache_version: int
    build_on_preview: bool
    promote_stack: Optional[str]
    promote_ref: Optional[str]
    registry_username: Optional[str]
    push_token: Optional[pulumi.Output[str]]
    visibility: Visibility
    owner_type: Literal["org", "user"]
    pull_token: Optional[pulumi.Output[str]]

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def owner(self) -> str:
        return self.repository.split("/")[1]

    @property
    def package(self) -> str:
        return self.repository.split("/", 2)[2]

    @property
    def source_url(self) -> str:
        """Repository whose package this is (org.opencontainers.image.source)."""
        return f"https://github.com/{self.owner}/{self.package.split('/')[0]}"


@dataclass(frozen=True)
class GithubSettings:
    """Opt-in declaration of the delivery pipeline's GitHub side."""

    token: Optional[pulumi.Output[str]]
    delivery: bool
    repository: Optional[str]
    prod_reviewer_ids: tuple[int, ...]
    ci_pulumi_access_token: Optional[pulumi.Output[str]]
    ci_pulumi_passphrase: Optional[pulumi.Output[str]]
    ci_kubeconfig_dev: Optional[pulumi.Output[str]]
    ci_kubeconfig_prod: Optional[pulumi.Output[str]]
    ci_preview_kubeconfig_dev: Optional[pulumi.Output[str]]
    ci_preview_kubeconfig_prod: Optional[pulumi.Output[str]]


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


@dataclass(frozen=True)
class NetworkSettings:
    enabled: bool
    ingress_namespace: str
    admin_namespaces: tuple[str, ...]
    admin_cidrs: tuple[str, ...]
    dns_namespace: str
    monitoring_namespace: str


@dataclass(frozen=True)
class ProbeSettings:
    period_seconds: int
    timeout_seconds: int
    failure_threshold: int
    worker_liveness_failure_threshold: int


@dataclass(frozen=True)
class IngressSettings:
    enabled: bool
    host: Optional[str]
    class_name: str
    tls_secret: Optional[str]
    cluster_issuer: Optional[str]


@dataclass(frozen=True)
class Settings:
    """Everything the program reads, validated. Built once by `load_settings()`."""

    stack: str
    environment: Environment
    namespace: str
    app_version: str
    arweave_wallet: pulumi.Output[str]
    raw_data_wallet: Optional[pulumi.Output[str]]
    payment_address: str
    payment_network: PaymentNetwork
    cdp_api_key_id: Optional[pulumi.Output[str]]
    cdp_api_key_secret: Optional[pulumi.Output[str]]
    public_url: str
    admin_username: str
    admin_password: Optional[pulumi.Output[str]]
    arweave_gateway: str
    log_level: str
    free_upload_limit: int
    optical_bridge_url: Optional[str]
    ar_io_admin_key: Optional[pulumi.Output[str]]
    upload_data_size_limit: str
    api: ProcessSettings
    workers: ProcessSettings
    admin: ProcessSettings
    migration: ProcessSettings
    api_port: int
    admin_port: int
    api_grace_period_seconds: int
    api_pre_stop_seconds: int
    worker_grace_period_seconds: int
    migration_timeout_seconds: int
    migration_backoff_limit: int
    image: ImageSettings
    github: GithubSettings
    data: DataSettings
    network: NetworkSettings
    probes: ProbeSettings
    ingress: IngressSettings
    service_monitor: bool
    extra_env: tuple[tuple[str, str], ...] = field(default=())

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


class _Reader:
    """Reads typed values from pulumi.Config, recording problems instead of raising."""

    def __init__(self, config: pulumi.Config) -> None:
        self.config = config
        self.problems: list[Problem] = []

    def fail(self, key: str, message: str, fix: str) -> None:
        self.problems.append(Problem(key, message, fix))

    def text(self, key: str, default: T) -> str | T:
        value = self.config.get(key)
        return default if value is None or value == "" else value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        if value not in options:
            self.fail(
                key,
                f"'{value}' is not one of {', '.join(options)}.",
                f"pulumi config set {PROJECT}:{key} {options[0]}",
            )
            return default
        return value

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
        raw = self.config.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.fail(key, f"'{raw}' is not a whole number.", f"pulumi config set {PROJECT}:{key} {default}")
            return default
        if not minimum <= value <= maximum:
            self.fail(
                key,
                f"{value} is outside the allowed range {minimum}..{maximum}.",
                f"pulumi config set {PROJECT}:{key} {max(default, minimum)}",
            )
            # Already reported: later checks (the connection budget) use the default instead.
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.config.get(key)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        self.fail(key, f"'{raw}' is not true or false.", f"pulumi config set {PROJECT}:{key} {str(default).lower()}")
        return default

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self.config.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.fail(
                key,
                "is not a list of strings.",
                f"pulumi config set --path '{PROJECT}:{key}[0]' <value>",
            )
            return default
        return tuple(str(v) for v in value)

    def secret_text(self, key: str) -> Optional[str]:
        """The plain text of a secret key, for validation only; never stored or printed."""
        value = self.config.get(key)
        if value is not None and value != "" and not pulumi.runtime.is_config_secret(
            f"{PROJECT}:{key}"
        ):
            self.fail(
                key,
                "is stored in plain text in the stack file; it must be a secret.",
                f"pulumi config set --secret {PROJECT}:{key} <value>  (this re-encrypts it)",
            )
        return None if value == "" else value


def _secret(value: Optional[str]) -> Optional[pulumi.Output[str]]:
    return None if value is None else pulumi.Output.secret(value)


def _process(r: _Reader, prefix: str, replicas: Optional[int], cpu: tuple[str, str], mem: tuple[str, str]) -> ProcessSettings:
    """`replicas=None` for the migration Job, which always runs one pod."""
    settings = ProcessSettings(
        replicas=1 if replicas is None else r.integer(f"{prefix}Replicas", replicas, minimum=1, maximum=100),
        cpu_request=r.text(f"{prefix}CpuRequest", cpu[0]),
        cpu_limit=r.text(f"{prefix}CpuLimit", cpu[1]),
        memory_request=r.text(f"{prefix}MemoryRequest", mem[0]),
        memory_limit=r.text(f"{prefix}MemoryLimit", mem[1]),
    )
    for suffix, value in (
        ("CpuRequest", settings.cpu_request),
        ("CpuLimit", settings.cpu_limit),
        ("MemoryRequest", settings.memory_request),
        ("MemoryLimit", settings.memory_limit),
    ):
        r.problems.extend(checks.quantity(f"{prefix}{suffix}", value))
    r.problems.extend(checks.request_within_limit(prefix, settings.cpu_request, settings.cpu_limit, "Cpu"))
    r.problems.extend(
        checks.request_within_limit(prefix, settings.memory_request, settings.memory_limit, "Memory")
    )
    return settings


def load_settings(config: Optional[pulumi.Config] = None) -> Settings:
    """Read and validate the stack configuration; raise ConfigError listing every problem."""
    r = _Reader(config or pulumi.Config(PROJECT))
    stack = pulumi.get_stack()

    environment: Environment = r.choice("environment", ("dev", "prod"), "dev")  # type: ignore[assignment]
    is_prod = environment == "prod"

    wallet_text = r.secret_text("arweaveWallet")
    raw_wallet_text = r.secret_text("rawDataWallet")
    r.problems.extend(checks.wallet("arweaveWallet", wallet_text, required=True))
    r.problems.extend(checks.wallet("rawDataWallet", raw_wallet_text, required=False))

    payment_address = r.text("paymentAddress", "")
    r.problems.extend(checks.evm_address("paymentAddress", payment_address))
    payment_network: PaymentNetwork = r.choice("paymentNetwork", ("base-sepolia", "base"), "base-sepolia")  # type: ignore[assignment]
    cdp_id = r.secret_text("cdpApiKeyId")
    cdp_secret = r.secret_text("cdpApiKeySecret")
    r.problems.extend(checks.cdp_credentials(payment_network, cdp_id, cdp_secret))

    public_url = r.text("publicUrl", "" if is_prod else "http://localhost:3001")
    r.problems.extend(checks.public_url("publicUrl", public_url, require_https=is_prod))
    # Uploads up to this size are accepted unpaid and bundled at the operator's expense; the
    # app's own default (505 KiB) is never relied on.
    free_upload_limit = r.integer("freeUploadLimit", 0, minimum=0)
    optical_bridge_url = r.text("opticalBridgeUrl", None)
    # Used only with a bridge URL: with AR_IO_ADMIN_KEY set, the workers also send it to
    # arweaveGateway's admin queue, so a key left over from a bridge must not reach them.
    ar_io_admin_key_text = r.secret_text("arIoAdminKey")
    if not optical_bridge_url:
        ar_io_admin_key_text = None
    r.problems.extend(checks.optical_bridge(optical_bridge_url, ar_io_admin_key_text is not None))
    upload_data_size_limit = r.text("uploadDataSizeLimit", "20Gi")
    r.problems.extend(checks.quantity("uploadDataSizeLimit", upload_data_size_limit))

    api_port = r.integer("apiPort", 3001, minimum=1, maximum=65535)
    admin_port = r.integer("adminPort", 3002, minimum=1, maximum=65535)
    if api_port == admin_port:
        r.fail("adminPort", f"is the same port as apiPort ({api_port}).", f"pulumi config set {PROJECT}:adminPort 3002")

    image = _image(r)
    data = _data(r, environment)

    api = _process(r, "api", 1, ("250m", "1"), ("512Mi", "1Gi"))
    workers = _process(r, "worker", 1, ("250m", "1"), ("512Mi", "1Gi"))
    admin = _process(r, "admin", 1, ("50m", "250m"), ("128Mi", "256Mi"))
    migration = _process(r, "migration", None, ("100m", "500m"), ("256Mi", "512Mi"))
    r.problems.extend(
        checks.connection_budget(
            replicas={"api": api.replicas, "workers": workers.replicas, "admin": admin.replicas, "migration": 1},
            pool_max=data.postgres.pool_max,
            max_connections=data.postgres.max_connections,
            in_cluster=data.mode == "in-cluster",
        )
    )

    probes = ProbeSettings(
        period_seconds=r.integer("probePeriodSeconds", 10, minimum=1, maximum=300),
        timeout_seconds=r.integer("probeTimeoutSeconds", 5, minimum=2, maximum=60),
        failure_threshold=r.integer("probeFailureThreshold", 3, minimum=1, maximum=30),
        worker_liveness_failure_threshold=r.integer("workerLivenessFailureThreshold", 6, minimum=1, maximum=60),
    )
    if probes.timeout_seconds >= probes.period_seconds:
        r.fail(
            "probeTimeoutSeconds",
            f"({probes.timeout_seconds}s) must be shorter than probePeriodSeconds ({probes.period_seconds}s).",
            f"pulumi config set {PROJECT}:probeTimeoutSeconds {max(2, probes.period_seconds // 2)}",
        )

    ingress = IngressSettings(
        enabled=r.boolean("ingressEnabled", False),
        host=r.text("ingressHost", None),
        class_name=r.text("ingressClassName", "nginx"),
        tls_secret=r.text("ingressTlsSecret", None),
        cluster_issuer=r.text("ingressClusterIssuer", None),
    )
    if ingress.enabled and not ingress.host:
        r.fail("ingressHost", "is required when ingressEnabled is true.", f"pulumi config set {PROJECT}:ingressHost upload.example.com")

    network = NetworkSettings(
        enabled=r.boolean("networkPolicies", True),
        ingress_namespace=r.text("ingressControllerNamespace", "ingress-nginx"),
        admin_namespaces=r.strings("adminAllowedNamespaces", ()),
        admin_cidrs=r.strings("adminAllowedCidrs", ()),
        dns_namespace=r.text("dnsNamespace", "kube-system"),
        monitoring_namespace=r.text("monitoringNamespace", "monitoring"),
    )
    for key, ns in (
        ("ingressControllerNamespace", network.ingress_namespace),
        ("dnsNamespace", network.dns_namespace),
        ("monitoringNamespace", network.monitoring_namespace),
    ):
        r.problems.extend(checks.namespace_name(key, ns))
    for cidr in network.admin_cidrs:
        r.problems.extend(checks.cidr("adminAllowedCidrs", cidr))

    api_pre_stop = r.integer("apiPreStopSeconds", 15, minimum=0, maximum=300)
    # Upstream's REQUEST_TIMEOUT_MS is 10 minutes: an upload that started just before SIGTERM
    # may need that long, plus the preStop delay, to finish.
    api_grace = r.integer("apiGracePeriodSeconds", 630, minimum=1, maximum=7200)
    if api_grace <= api_pre_stop:
        r.fail(
            "apiGracePeriodSeconds",
            f"({api_grace}s) must exceed apiPreStopSeconds ({api_pre_stop}s) or pods are killed mid-drain.",
            f"pulumi config set {PROJECT}:apiGracePeriodSeconds {api_pre_stop + 615}",
        )
    worker_grace = r.integer("workerGracePeriodSeconds", 60, minimum=31, maximum=3600)

    reviewer_ids = r.strings("githubProdReviewerIds", ())
    logins = [v for v in reviewer_ids if not v.isdigit()]
    if logins:
        r.fail(
            "githubProdReviewerIds",
            f"{', '.join(logins)}: not numeric GitHub user ids (logins are not accepted).",
            f"pulumi config set --path '{PROJECT}:githubProdReviewerIds[0]' <id>  (the id: gh api users/<login> --jq .id)",
        )
    github = GithubSettings(
        token=_secret(r.secret_text("githubToken")),
        delivery=r.boolean("githubDelivery", False),
        repository=r.text("githubRepository", None),
        prod_reviewer_ids=tuple(int(v) for v in reviewer_ids if v.isdigit()),
        ci_pulumi_access_token=_secret(r.secret_text("ciPulumiAccessToken")),
        ci_pulumi_passphrase=_secret(r.secret_text("ciPulumiPassphrase")),
        ci_kubeconfig_dev=_secret(r.secret_text("ciKubeconfigDev")),
        ci_kubeconfig_prod=_secret(r.secret_text("ciKubeconfigProd")),
        ci_preview_kubeconfig_dev=_secret(r.secret_text("ciPreviewKubeconfigDev")),
        ci_preview_kubeconfig_prod=_secret(r.secret_text("ciPreviewKubeconfigProd")),
    )
    r.problems.extend(checks.github_delivery(github.delivery, github.repository, github.prod_reviewer_ids, github.token is not None))

    admin_password_text = r.secret_text("adminPassword")
    if admin_password_text is not None and len(admin_password_text) < 16:
        r.fail("adminPassword", "is shorter than 16 characters.", f"pulumi config rm {PROJECT}:adminPassword  (a 32-character one is then generated)")

    settings = Settings(
        stack=stack,
        environment=environment,
        namespace=r.text("namespace", "x402-bundler"),
        app_version=image.version,
        arweave_wallet=pulumi.Output.secret(wallet_text or ""),
        raw_data_wallet=_secret(raw_wallet_text),
        payment_address=payment_address,
        payment_network=payment_network,
        cdp_api_key_id=_secret(cdp_id),
        cdp_api_key_secret=_secret(cdp_secret),
        public_url=public_url,
        admin_username=r.text("adminUsername", "admin"),
        admin_password=_secret(admin_password_text),
        arweave_gateway=r.text("arweaveGateway", "https://arweave.net"),
        log_level=r.choice("logLevel", ("info", "debug", "warn", "error"), "info"),
        free_upload_limit=free_upload_limit,
        optical_bridge_url=optical_bridge_url,
        ar_io_admin_key=_secret(ar_io_admin_key_text),
        upload_data_size_limit=upload_data_size_limit,
        api=api,
        workers=workers,
        admin=admin,
        migration=migration,
        api_port=api_port,
        admin_port=admin_port,
        api_grace_period_seconds=api_grace,
        api_pre_stop_seconds=api_pre_stop,
        worker_grace_period_seconds=worker_grace,
        migration_timeout_seconds=r.integer("migrationTimeoutSeconds", 600, minimum=30, maximum=86400),
        migration_backoff_limit=r.integer("migrationBackoffLimit", 1, minimum=0, maximum=5),
        image=image,
        github=github,
        data=data,
        network=network,
        probes=probes,
        ingress=ingress,
        service_monitor=r.boolean("serviceMonitor", False),
    )
    r.problems.extend(checks.namespace_name("namespace", settings.namespace))
    if r.problems:
        raise ConfigError(stack, r.problems)
    return settings


def _image(r: _Reader) -> ImageSettings:
    mode: ImageMode = r.choice("imageMode", ("build", "promote"), "build")  # type: ignore[assignment]
    visibility: Visibility = r.choice("ghcrVisibility", ("public", "private"), "private")  # type: ignore[assignment]
    image = ImageSettings(
        mode=mode,
        repository=r.text("imageRepository", ""),
        context=r.text("imageContext", "https://github.com/vilenarios/ar-io-x402-bundler.git"),
        git_ref=r.text("imageGitRef", None),
        version=r.text("appVersion", "0.0.0-dev"),
        platforms=r.strings("imagePlatforms", ("linux/amd64", "linux/arm64")),
        cache_version=r.integer("imageCacheVersion", 1, minimum=1, maximum=10_000),
        build_on_preview=r.boolean("imageBuildOnPreview", False),
        promote_stack=r.text("imagePromoteStack", None),
        promote_ref=r.text("imageRef", None),
        registry_username=r.text("registryUsername", None),
        push_token=None,
        visibility=visibility,
        owner_type=r.choice("ghcrOwnerType", ("org", "user"), "org"),  # type: ignore[arg-type]
        pull_token=None,
    )
    push_token = r.secret_text("registryPushToken")
    pull_token = r.secret_text("registryPullToken")
    r.problems.extend(checks.image(image, push_token is not None, pull_token is not None))
    return ImageSettings(**{**image.__dict__, "push_token": _secret(push_token), "pull_token": _secret(pull_token)})


def _data(r: _Reader, environment: Environment) -> DataSettings:
    mode: DataMode = r.choice("dataMode", ("in-cluster", "external"), "in-cluster")  # type: ignore[assignment]
    external = mode == "external"
    in_cluster = InClusterSettings(
        postgres_image=r.text("postgresImage", "docker.io/library/postgres:16.6-alpine3.21"),
        redis_image=r.text("redisImage", "docker.io/library/redis:7.4.2-alpine3.21"),
        minio_image=r.text("minioImage", "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"),
        minio_client_image=r.text("minioClientImage", "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z"),
        storage_class=r.text("storageClass", None),
        postgres_storage=r.text("postgresStorage", "10Gi"),
        queue_redis_storage=r.text("queueRedisStorage", "2Gi"),
        minio_storage=r.text("minioStorage", "20Gi"),
        cache_max_memory=r.text("cacheRedisMaxMemory", "256mb"),
    )
    if not external:
        for key, ref in (
            ("postgresImage", in_cluster.postgres_image),
            ("redisImage", in_cluster.redis_image),
            ("minioImage", in_cluster.minio_image),
            ("minioClientImage", in_cluster.minio_client_image),
        ):
            r.problems.extend(checks.pinned_image(key, ref, allow_exact_version=True))
        for key, q in (
            ("postgresStorage", in_cluster.postgres_storage),
            ("queueRedisStorage", in_cluster.queue_redis_storage),
            ("minioStorage", in_cluster.minio_storage),
        ):
            r.problems.extend(checks.quantity(key, q))
        r.problems.extend(checks.redis_memory("cacheRedisMaxMemory", in_cluster.cache_max_memory))

    db_password = r.secret_text("dbPassword")
    r.problems.extend(checks.db_password("dbPassword", db_password))
    cache_password = r.secret_text("cacheRedisPassword")
    queue_password = r.secret_text("queueRedisPassword")
    s3_key_id = r.secret_text("s3AccessKeyId")
    s3_secret = r.secret_text("s3SecretAccessKey")
    postgres = PostgresSettings(
        host=r.text("dbHost", None),
        port=r.integer("dbPort", 5432, minimum=1, maximum=65535),
        database=r.text("dbDatabase", "bundler_lite"),
        user=r.text("dbUser", "bundler"),
        password=_secret(db_password),
        max_connections=r.integer("dbMaxConnections", 100, minimum=5, maximum=100_000),
        pool_min=r.integer("dbPoolMin", 2, minimum=0, maximum=1000),
        # 10 keeps the default stack (one pod each, max_connections 100) within the budget.
        pool_max=r.integer("dbPoolMax", 10, minimum=1, maximum=1000),
    )
    if postgres.pool_min > postgres.pool_max:
        r.fail("dbPoolMin", f"({postgres.pool_min}) is larger than dbPoolMax ({postgres.pool_max}).", f"pulumi config set {PROJECT}:dbPoolMin {postgres.pool_max}")
    cache = RedisSettings(
        host=r.text("cacheRedisHost", None),
        port=r.integer("cacheRedisPort", 6379, minimum=1, maximum=65535),
        password=_secret(cache_password),
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
        access_key_id=_secret(s3_key_id),
        secret_access_key=_secret(s3_secret),
        force_path_style=r.boolean("s3ForcePathStyle", not external),
    )
    r.problems.extend(checks.queue_redis(queue_password is not None, queue.tls))
    r.problems.extend(
        checks.external_data(
            external,
            {"dbHost": postgres.host, "cacheRedisHost": cache.host, "queueRedisHost": queue.host},
            {"dbPassword": db_password, "s3AccessKeyId": s3_key_id, "s3SecretAccessKey": s3_secret},
        )
    )
    return DataSettings(
        mode=mode,
        protect=r.boolean("protectData", environment == "prod"),
        postgres=postgres,
        cache=cache,
        queue=queue,
        s3=s3,
        in_cluster=in_cluster,
    )
