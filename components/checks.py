"""Named configuration checks, each returning the problems it finds (never raising).

Every message names what is wrong without echoing a secret, and every problem carries the
exact command that fixes it. `components.config.load_settings` runs them all and reports
them together, in the style of the GitLab chart's `_checkConfig` templates.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from components.config import ImageSettings

P = "x402-bundler"

# PostgreSQL keeps superuser_reserved_connections (3 by default) out of max_connections.
RESERVED_CONNECTIONS = 3
SUPPORTED_PLATFORMS = ("linux/amd64", "linux/arm64")

_JWK_MEMBERS = ("n", "e", "d", "p", "q", "dp", "dq", "qi")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_SUFFIX = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60), "n": Decimal("1e-9"), "u": Decimal("1e-6"),
    "m": Decimal("1e-3"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
}
_DIGEST_REF = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[\w.-]+)?@sha256:[0-9a-f]{64}$")
_EXACT_VERSION_TAG = re.compile(r":(v?\d+\.\d+[\w.-]*|RELEASE\.\d{4}-\d{2}-\d{2}T[\w-]+)$")
_GHCR_REPO = re.compile(r"^ghcr\.io/[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9._-]*(/[a-z0-9._-]+)*$")
_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# URL delimiters that end or split the password part of `postgres://user:password@host`.
_URL_UNSAFE = ("#", "/", ":", "?", "@", "%")


@dataclass(frozen=True)
class Problem:
    """One configuration problem: the key (without the project prefix), what is wrong, the fix."""

    key: str
    message: str
    fix: str


def _set(key: str, value: str, secret: bool = False) -> str:
    return f"pulumi config set {'--secret ' if secret else ''}{P}:{key} {value}"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wallet(key: str, text: Optional[str], required: bool) -> list[Problem]:
    """An Arweave JWK: RSA, all private members as base64url, a 4096-bit modulus."""
    fix = f"{_set(key, '', secret=True).rstrip()} < /path/to/wallet.json"
    if text is None:
        return [Problem(key, "is not set; the bundler cannot sign bundles without it.", fix)] if required else []
    try:
        jwk = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return [Problem(key, "is not valid JSON (expected an Arweave JWK file's contents).", fix)]
    if not isinstance(jwk, dict):
        return [Problem(key, "is JSON but not an object (expected an Arweave JWK).", fix)]
    problems: list[Problem] = []
    if jwk.get("kty") != "RSA":
        problems.append(Problem(key, 'is not an RSA JWK (member "kty" must be "RSA").', fix))
    missing = [m for m in _JWK_MEMBERS if m not in jwk]
    if missing:
        problems.append(Problem(key, f"lacks JWK member(s) {', '.join(missing)}: a wallet needs the private key.", fix))
    malformed = [m for m in _JWK_MEMBERS if m in jwk and not (isinstance(jwk[m], str) and _B64URL.match(jwk[m]))]
    if malformed:
        problems.append(Problem(key, f"has member(s) {', '.join(malformed)} that are not base64url strings.", fix))
    n = jwk.get("n")
    if isinstance(n, str) and "n" not in malformed:
        try:
            bits = int.from_bytes(_b64url_decode(n), "big").bit_length()
        except (binascii.Error, ValueError):
            bits = 0
        if bits != 4096:
            problems.append(Problem(key, f"has a {bits}-bit modulus; Arweave wallets are 4096-bit RSA keys.", fix))
    return problems


def evm_address(key: str, value: str) -> list[Problem]:
    if re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        return []
    what = "is not set" if not value else f"'{value}' is not an EVM address"
    return [Problem(key, f"{what} (expected 0x followed by 40 hex digits).", _set(key, "0x<40 hex digits>"))]


def cdp_credentials(network: str, key_id: Optional[str], key_secret: Optional[str]) -> list[Problem]:
    if network != "base":
        return []
    return [
        Problem(name, "is required for Base mainnet payments (paymentNetwork=base).", _set(name, "<value>", secret=True))
        for name, value in (("cdpApiKeyId", key_id), ("cdpApiKeySecret", key_secret))
        if value is None
    ]


def public_url(key: str, url: str, require_https: bool) -> list[Problem]:
    match = re.fullmatch(r"(https?)://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?", url)
    if not match:
        what = "is not set" if not url else f"'{url}' is not an http(s) URL"
        return [Problem(key, f"{what}; uploads need the API's public URL.", _set(key, "https://upload.example.com"))]
    if require_https and match.group(1) != "https":
        return [Problem(key, f"'{url}' must use https:// in prod (environment=prod).", _set(key, url.replace("http://", "https://", 1)))]
    return []


def parse_quantity(value: str) -> Optional[Decimal]:
    """A Kubernetes resource quantity as a number, or None when it does not parse."""
    match = _QUANTITY.fullmatch(value.strip()) if value else None
    if not match:
        return None
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation:
        return None
    suffix = match.group("suffix") or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _SUFFIX.get(suffix, Decimal(1))


def quantity(key: str, value: str) -> list[Problem]:
    if parse_quantity(value) is None:
        return [Problem(key, f"'{value}' is not a Kubernetes resource quantity (e.g. 250m, 1, 512Mi, 2Gi).", _set(key, "<quantity>"))]
    return []


def parse_redis_memory(value: str) -> Optional[int]:
    """A Redis memory setting (`256mb`, `1gb`, `100000`) in bytes, or None when Redis would reject it."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?b?)", value.strip().lower())
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)] if match else None


def redis_memory(key: str, value: str) -> list[Problem]:
    if parse_redis_memory(value) is None:
        return [Problem(key, f"'{value}' is not a Redis memory size (e.g. 256mb, 1gb).", _set(key, "256mb"))]
    return []


def request_within_limit(prefix: str, request: str, limit: str, kind: str) -> list[Problem]:
    req, lim = parse_quantity(request), parse_quantity(limit)
    if req is not None and lim is not None and req > lim:
        key = f"{prefix}{kind}Request"
        return [Problem(key, f"({request}) is larger than {prefix}{kind}Limit ({limit}).", _set(key, limit))]
    return []


# What each process really opens (read in the bundler's source, see UPSTREAM.md): the API and
# the workers keep a writer AND a reader knex pool (src/arch/db/knexConfig.ts), each up to
# DB_POOL_MAX; the admin's statistics (admin/statsCollector.js) keep one pool of at most 5; the
# migration Job's knexfile is the writer config, so one pool of DB_POOL_MAX.
POOLS_PER_APP_PROCESS = 2
ADMIN_POOL_MAX = 5
# The deep readiness check opens one short-lived PostgreSQL connection per pod and run.
DEEP_CHECK_CONNECTIONS = 1
# maxSurge 1 on each Deployment: one extra pod of each during a rolling update.
SURGE_PODS_PER_DEPLOYMENT = 1
DEPLOYMENTS = ("api", "workers", "admin")


def _per_process(kind: str, pool_max: int) -> int:
    if kind == "admin":
        return ADMIN_POOL_MAX
    if kind == "migration":
        return pool_max
    return POOLS_PER_APP_PROCESS * pool_max


def connection_peak(replicas: Mapping[str, int], pool_max: int) -> dict[str, dict[str, int]]:
    """The itemised peak of PostgreSQL connections: kind -> {"pods", "per_process", "total"}.

    Kinds are the steady Deployments (`api`, `workers`, `admin`), then whichever is larger of
    the migration Job (`migration`) and the rolling-update surge pods (`api-surge`, ...): the
    Job finishes before any Deployment rolls, so the two never overlap. `deep-check` is the
    readiness probe's transient connection, one per bundler pod that exists at the peak.
    Each bundler pod runs one such process. Public, so the runtime test can set it beside
    what PostgreSQL reports in pg_stat_activity.
    """
    steady = {k: {"pods": replicas.get(k, 1), "per_process": _per_process(k, pool_max)} for k in DEPLOYMENTS}
    surge = {f"{k}-surge": {"pods": SURGE_PODS_PER_DEPLOYMENT, "per_process": _per_process(k, pool_max)} for k in DEPLOYMENTS}
    migration = {"migration": {"pods": replicas.get("migration", 1), "per_process": _per_process("migration", pool_max)}}

    def total(items: Mapping[str, Mapping[str, int]]) -> int:
        return sum(v["pods"] * v["per_process"] for v in items.values())

    # A surge pod also runs the deep check; the Job runs none.
    surge_cost = total(surge) + DEEP_CHECK_CONNECTIONS * sum(v["pods"] for v in surge.values())
    extra = surge if surge_cost >= total(migration) else migration
    probed = sum(v["pods"] for k, v in {**steady, **extra}.items() if k != "migration")
    peak = {**steady, **extra, "deep-check": {"pods": probed, "per_process": DEEP_CHECK_CONNECTIONS}}
    return {k: {**v, "total": v["pods"] * v["per_process"]} for k, v in peak.items()}


def peak_connections(replicas: Mapping[str, int], pool_max: int) -> int:
    return sum(v["total"] for v in connection_peak(replicas, pool_max).values())


def connection_budget(replicas: Mapping[str, int], pool_max: int, max_connections: int, in_cluster: bool) -> list[Problem]:
    """Peak PostgreSQL connections (see `connection_peak`) must fit in max_connections less the
    superuser-reserved ones."""
    usable = max_connections - RESERVED_CONNECTIONS
    peak = peak_connections(replicas, pool_max)
    if peak <= usable:
        return []
    items = connection_peak(replicas, pool_max)
    parts = " + ".join(f"{k} {v['pods']} x {v['per_process']}" for k, v in items.items())
    where = "the in-cluster PostgreSQL's max_connections" if in_cluster else "the database's max_connections"
    fitting = next((p for p in range(pool_max - 1, 0, -1) if peak_connections(replicas, p) <= usable), None)
    needed = str(peak + RESERVED_CONNECTIONS)
    if fitting is None:
        fix = _set("dbMaxConnections", needed)
    else:
        fix = f"{_set('dbPoolMax', str(fitting))}  (or raise {P}:dbMaxConnections to {needed})"
    return [
        Problem(
            "dbPoolMax",
            f"connection budget exceeded: at peak {parts} (pods x connections; api and workers keep a writer and a"
            f" reader pool of dbPoolMax {pool_max} each, admin a pool of {ADMIN_POOL_MAX}) = {peak} connections,"
            f" but {where} is {max_connections} ({usable} usable after {RESERVED_CONNECTIONS} superuser-reserved).",
            fix,
        )
    ]


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
            _set(key, "<password without those characters>", secret=True),
        )
    ]


def http_url(key: str, url: Optional[str], purpose: str) -> list[Problem]:
    if url is None or re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?", url):
        return []
    return [Problem(key, f"'{url}' is not an http(s) URL ({purpose}).", _set(key, "https://<host>"))]


def optical_bridge(url: Optional[str], has_admin_key: bool) -> list[Problem]:
    problems = http_url("opticalBridgeUrl", url, "the AR.IO optical bridge that uploads are forwarded to")
    if url is not None and not has_admin_key:
        problems.append(
            Problem(
                "arIoAdminKey",
                "is required when opticalBridgeUrl is set (the bridge's admin key, sent as AR_IO_ADMIN_KEY).",
                _set("arIoAdminKey", "<admin key>", secret=True),
            )
        )
    return problems


def cidr(key: str, value: str) -> list[Problem]:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return [Problem(key, f"'{value}' is not a CIDR block (e.g. 10.0.0.0/8).", f"pulumi config set --path '{P}:{key}[0]' 10.0.0.0/8")]
    return []


def namespace_name(key: str, value: str) -> list[Problem]:
    if _DNS_LABEL.fullmatch(value):
        return []
    return [Problem(key, f"'{value}' is not a valid Kubernetes namespace name (lowercase DNS label, at most 63 characters).", _set(key, "x402-bundler"))]


def repository_of(ref: str) -> str:
    """The repository of an image reference, without its digest or tag."""
    name = ref.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def pinned_image(key: str, ref: str, allow_exact_version: bool) -> list[Problem]:
    """An image must be pinned: by digest, or (third-party images only) by an exact version tag."""
    if _DIGEST_REF.fullmatch(ref):
        return []
    if allow_exact_version and _EXACT_VERSION_TAG.search(ref) and not ref.endswith(":latest"):
        return []
    return [
        Problem(
            key,
            f"'{ref}' is not pinned: use a digest (image@sha256:...)"
            + (" or an exact version tag (e.g. :16.6-alpine3.21)" if allow_exact_version else "")
            + "; bare and 'latest' tags change under you.",
            _set(key, "<registry>/<image>@sha256:<64 hex digits>"),
        )
    ]


def image(settings: ImageSettings, has_push_token: bool, has_pull_token: bool) -> list[Problem]:
    problems: list[Problem] = []
    # Both modes: the pull Secret, the package check and the labels all name this repository.
    if not _GHCR_REPO.fullmatch(settings.repository):
        problems.append(Problem("imageRepository", f"'{settings.repository}' is not a GHCR repository (ghcr.io/<owner>/<name>, lowercase).", _set("imageRepository", "ghcr.io/<owner>/ar-io-x402-bundler")))
    if settings.mode == "build":
        is_git = settings.context.startswith(("https://", "git@", "git://"))
        if is_git and not (settings.git_ref and re.fullmatch(r"[0-9a-f]{40}", settings.git_ref)):
            problems.append(Problem("imageGitRef", "must be a full 40-hex commit when imageContext is a Git URL: a branch or tag can move.", _set("imageGitRef", "<commit sha>")))
        if not settings.platforms or any(p not in SUPPORTED_PLATFORMS for p in settings.platforms):
            problems.append(Problem("imagePlatforms", f"must be a non-empty subset of {', '.join(SUPPORTED_PLATFORMS)}.", "pulumi config set --path 'x402-bundler:imagePlatforms[0]' linux/amd64"))
        if not has_push_token:
            problems.append(Problem("registryPushToken", "is required in build mode (a token with write:packages, to push to GHCR).", _set("registryPushToken", "<token>", secret=True)))
        if not settings.registry_username:
            problems.append(Problem("registryUsername", "is required in build mode (the GitHub user that owns registryPushToken).", _set("registryUsername", "<github user>")))
        if settings.version in ("", "latest"):
            problems.append(Problem("appVersion", f"'{settings.version}' is not a version; images are tagged with it.", _set("appVersion", "1.0.0")))
    else:
        if bool(settings.promote_stack) == bool(settings.promote_ref):
            problems.append(Problem("imagePromoteStack", "promote mode needs exactly one source: imagePromoteStack (a stack that built the image) or imageRef (repository@sha256:...).", _set("imagePromoteStack", "<org>/x402-bundler/dev")))
        if settings.promote_ref:
            problems.extend(pinned_image("imageRef", settings.promote_ref, allow_exact_version=False))
            if settings.repository and repository_of(settings.promote_ref) != settings.repository:
                problems.append(Problem("imageRef", f"'{settings.promote_ref}' is not in imageRepository ({settings.repository}): the pull Secret and the package check are for that repository.", _set("imageRef", f"{settings.repository}@sha256:<64 hex digits>")))
    if settings.visibility == "private" and not has_pull_token:
        problems.append(Problem("registryPullToken", "is required when ghcrVisibility is private: the cluster cannot pull without it (a read:packages token).", _set("registryPullToken", "<read-only token>", secret=True)))
    return problems


def queue_redis(has_password: bool, tls: bool) -> list[Problem]:
    """The bundler's BullMQ connection takes neither a password nor TLS (see UPSTREAM.md)."""
    problems: list[Problem] = []
    if has_password:
        problems.append(Problem("queueRedisPassword", "is set, but the bundler cannot send a password to the queue Redis (REDIS_HOST/REDIS_PORT_QUEUES only). Use a queue Redis without AUTH, reachable only from the bundler pods (the NetworkPolicies here enforce that).", f"pulumi config rm {P}:queueRedisPassword"))
    if tls:
        problems.append(Problem("queueRedisTls", "is true, but the bundler's queue connection has no TLS support.", f"pulumi config set {P}:queueRedisTls false"))
    return problems


def external_data(external: bool, hosts: dict[str, Optional[str]], secrets: dict[str, Optional[str]]) -> list[Problem]:
    if not external:
        return []
    problems = [Problem(k, "is required when dataMode is external.", _set(k, "<host>")) for k, v in hosts.items() if not v]
    problems += [Problem(k, "is required when dataMode is external.", _set(k, "<value>", secret=True)) for k, v in secrets.items() if v is None]
    return problems


def github_delivery(enabled: bool, repository: Optional[str], reviewers: tuple[int, ...], has_token: bool) -> list[Problem]:
    if not enabled:
        return []
    problems: list[Problem] = []
    if not (repository and re.fullmatch(r"[\w.-]+/[\w.-]+", repository)):
        problems.append(Problem("githubRepository", "must be owner/name when githubDelivery is true.", _set("githubRepository", "<owner>/<repo>")))
    if not reviewers:
        problems.append(Problem("githubProdReviewerIds", "must list at least one GitHub user id: prod deploys need a reviewer.", f"pulumi config set --path '{P}:githubProdReviewerIds[0]' <user id>"))
    if not has_token:
        problems.append(Problem("githubToken", "is required when githubDelivery is true (repo and admin:org scopes).", _set("githubToken", "<token>", secret=True)))
    return problems
