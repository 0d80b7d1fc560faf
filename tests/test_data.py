"""Backing services: in-cluster for dev, managed endpoints for prod, data kept on purpose."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from components.data import MC_WITH_MINIO_HOST, DataServices, DataServicesArgs
from components.data_containers import (
    MINIO_SECRETS,
    REDIS_CLI_WITH_AUTH,
    REDIS_SECRETS,
    authenticated_redis_cli,
    image_version,
    redis_memory,
    redis_ping,
)
from components.names import BUCKET_INIT, DATA_COMPONENTS, selector_labels
from components.settings import load_settings
from components.settings.values import parse_redis_memory, pinned_image
from tests.helpers import (
    CONFIG_MAP,
    DEPLOYMENT,
    JOB,
    SECRET,
    container,
    deployment,
    migration_job,
    render,
    settings_map,
)
from tests.pss import restricted_violations
from tools.harness import Recording, Registered, run_program

STATEFULSET, SERVICE = "kubernetes:apps/v1:StatefulSet", "kubernetes:core/v1:Service"
PASSWORD = "random:index/randomPassword:RandomPassword"
PERSISTENT = ("postgres", "redis-queue", "minio")
MI = 1024**2


def statefulset(rec: Recording, component: str) -> Registered:
    return rec.one(STATEFULSET, f"data-{component}")


def data_container(rec: Recording, component: str) -> dict[str, Any]:
    return container(statefulset(rec, component))


def command_line(rec: Recording, component: str) -> list[str]:
    c = data_container(rec, component)
    return [*(c.get("command") or []), *(c.get("args") or [])]


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def bucket_job(rec: Recording) -> Registered:
    return rec.one(JOB, "data-bucket")


def credentials(rec: Recording) -> Registered:
    return rec.one(SECRET, "data-credentials")


# -- what each stack registers ----------------------------------------------------------------

def test_dev_runs_the_four_services_with_services_volumes_and_a_bucket_job(dev: Recording) -> None:
    assert {s.name for s in dev.of_type(STATEFULSET)} == {f"data-{c}" for c in DATA_COMPONENTS}
    for component in DATA_COMPONENTS:
        service = dev.one(SERVICE, f"data-{component}-service")
        sts = statefulset(dev, component)
        assert service.get("spec.selector") == sts.get("spec.selector.matchLabels") == selector_labels("dev", component)
        (port,) = service.get("spec.ports")
        assert port["targetPort"] in [p["containerPort"] for p in data_container(dev, component)["ports"]]
        assert sts.get("spec.serviceName") == service.get("metadata.name")
    for component in PERSISTENT:
        (claim,) = statefulset(dev, component).get("spec.volumeClaimTemplates")
        assert claim["metadata"]["name"] == "data" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert claim["spec"]["resources"]["requests"]["storage"]
        assert "data" in [m["name"] for m in data_container(dev, component)["volumeMounts"]]
    # The cache is a cache: no volume to keep (no RDB, no AOF).
    assert statefulset(dev, "redis-cache").get("spec.volumeClaimTemplates") is None
    command = container(bucket_job(dev))["command"]
    assert command[-1] == "local/bundler-data-items" and "--ignore-existing" in command
    assert dev.depends_on(bucket_job(dev), statefulset(dev, "minio"))


def test_an_image_bump_changes_no_immutable_statefulset_field(dev: Recording) -> None:
    """volumeClaimTemplates and selector cannot change in place: an image bump must not touch them."""
    bumped = render("dev", overrides={"postgresImage": "docker.io/library/postgres:16.9-alpine3.22"})
    for path in ("spec.volumeClaimTemplates", "spec.selector", "spec.serviceName"):
        assert statefulset(bumped, "postgres").get(path) == statefulset(dev, "postgres").get(path), path
    assert data_container(bumped, "postgres")["image"].endswith("16.9-alpine3.22")


def test_storage_sizes_and_class_come_from_config() -> None:
    rec = render("dev", overrides={"storageClass": "fast-ssd", "postgresStorage": "7Gi"})
    (claim,) = statefulset(rec, "postgres").get("spec.volumeClaimTemplates")
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "7Gi"


def test_external_mode_registers_no_kubernetes_object() -> None:
    def program() -> None:
        settings = load_settings()
        DataServices("data", DataServicesArgs(stack=settings.stack, data=settings.data, namespace="ns"))

    rec = run_program("prod", program=program)
    assert [r.type for r in rec.resources] == ["x402-bundler:index:DataServices"]


def test_prod_runs_no_data_service_and_workloads_read_the_external_endpoints(prod: Recording) -> None:
    assert prod.of_type(STATEFULSET) == []
    assert [j.name for j in prod.of_type(JOB)] == ["migration-job"]
    assert not [r.name for r in prod.resources if r.name.startswith("data-")]
    data = settings_map(prod, container(deployment(prod, "api")))
    assert data["DB_HOST"] == "bundler-db.cluster-abc123.us-east-1.rds.amazonaws.com"
    assert data["ELASTICACHE_HOST"] == "bundler-cache.abc123.use1.cache.amazonaws.com"
    assert data["ELASTICACHE_USE_TLS"] == "true"
    assert data["REDIS_HOST"] == "bundler-queue.internal.example.com"
    assert data["DATA_ITEM_BUCKET"] == "example-bundler-data-items"
    assert "AWS_ENDPOINT" not in data


def test_dev_workloads_read_the_in_cluster_services(dev: Recording) -> None:
    data = settings_map(dev, container(deployment(dev, "api")))
    ns = dev.outputs["namespace"]

    def host(component: str) -> str:
        return f"{dev.one(SERVICE, f'data-{component}-service').get('metadata.name')}.{ns}.svc.cluster.local"

    assert data["DB_HOST"] == host("postgres")
    assert data["ELASTICACHE_HOST"] == host("redis-cache") and data["ELASTICACHE_PORT"] == "6379"
    assert data["REDIS_HOST"] == host("redis-queue") and data["REDIS_PORT_QUEUES"] == "6381"
    assert data["AWS_ENDPOINT"] == f"http://{host('minio')}:9000" and data["S3_FORCE_PATH_STYLE"] == "true"


# -- how each service runs ---------------------------------------------------------------------

def test_queue_redis_never_evicts_keeps_an_append_only_file_and_needs_no_password(dev: Recording) -> None:
    args = command_line(dev, "redis-queue")
    assert flag(args, "--maxmemory-policy") == "noeviction"
    assert flag(args, "--appendonly") == "yes"
    assert flag(args, "--port") == "6381"
    assert "requirepass" not in " ".join(args) and not data_container(dev, "redis-queue").get("env")


def test_queue_redis_refuses_writes_before_the_kernel_kills_it(dev: Recording) -> None:
    c = data_container(dev, "redis-queue")
    max_memory = parse_redis_memory(flag(command_line(dev, "redis-queue"), "--maxmemory"))
    limit = c["resources"]["limits"]["memory"]
    assert max_memory and limit.endswith("Mi") and max_memory < int(limit[:-2]) * MI


def test_cache_redis_evicts_lru_within_its_configured_memory(dev: Recording) -> None:
    args = command_line(dev, "redis-cache")
    assert flag(args, "--maxmemory-policy") == "allkeys-lru"
    assert flag(args, "--maxmemory") == "256mb"
    big = render("dev", overrides={"cacheRedisMaxMemory": "1gb"})
    c = data_container(big, "redis-cache")
    assert flag(command_line(big, "redis-cache"), "--maxmemory") == "1gb"
    assert c["resources"]["requests"]["memory"] == "1024Mi" and c["resources"]["limits"]["memory"] == "1536Mi"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("256mb", 256 * MI), ("1gb", 1024 * MI), ("1g", 10**9), ("100k", 100_000), ("4096", 4096), ("2 MB", 2 * MI),
        ("lots", None), ("1tb", None),
    ],
)
def test_redis_memory_sizes_parse_as_redis_reads_them(value: str, expected: Optional[int]) -> None:
    assert parse_redis_memory(value) == expected


def test_redis_memory_limit_has_headroom_and_a_floor() -> None:
    assert redis_memory("256mb") == ("256Mi", "384Mi")
    assert redis_memory("64mb") == ("64Mi", "256Mi")
    with pytest.raises(ValueError, match="not a Redis memory size"):
        redis_memory("lots")


def test_cache_redis_password_stays_out_of_the_pod_spec(dev: Recording) -> None:
    secret = credentials(dev)
    password = secret.inputs["stringData"]["cache-redis-password"]
    assert secret.inputs["stringData"]["cache-redis-auth.conf"] == f"requirepass {password}\n"
    sts = statefulset(dev, "redis-cache")
    assert password not in json.dumps(sts.inputs)
    c = data_container(dev, "redis-cache")
    assert c["command"][:2] == ["redis-server", f"{REDIS_SECRETS}/auth.conf"]
    assert secret_files(sts.get("spec.template.spec"), c) == {
        f"{REDIS_SECRETS}/auth.conf": "cache-redis-auth.conf", f"{REDIS_SECRETS}/password": "cache-redis-password",
    }
    # The probes' redis-cli authenticates from REDISCLI_AUTH, which their shell reads from the file.
    assert "env" not in c
    for probe in ("readinessProbe", "livenessProbe"):
        command = c[probe]["exec"]["command"]
        assert command == redis_ping(6379, authenticated=True) and "-a" not in command
    assert f"read -r REDISCLI_AUTH < {REDIS_SECRETS}/password" in REDIS_CLI_WITH_AUTH
    assert redis_ping(6379, authenticated=True)[2].startswith(f"read -r REDISCLI_AUTH < {REDIS_SECRETS}/password")
    assert authenticated_redis_cli("-p", "6379", "get", "k")[-4:] == ["-p", "6379", "get", "k"]


def secret_files(spec: dict[str, Any], c: dict[str, Any]) -> dict[str, str]:
    """The files a container sees from Secret volumes: path -> Secret key."""
    volumes = {v["name"]: v for v in spec.get("volumes") or [] if "secret" in v}
    files = {}
    for mount in c.get("volumeMounts") or []:
        if mount["name"] in volumes:
            for item in volumes[mount["name"]]["secret"]["items"]:
                files[f"{mount['mountPath']}/{item['path']}"] = item["key"]
    return files


def data_pods(rec: Recording) -> list[tuple[str, dict[str, Any]]]:
    """Each in-cluster data service's pod spec, and the bucket Job's."""
    pods = [(s.name, s.get("spec.template.spec")) for s in rec.of_type(STATEFULSET)]
    return [*pods, ("bucket", bucket_job(rec).get("spec.template.spec"))]


def test_data_services_take_their_secrets_as_files_their_uid_can_read(dev: Recording) -> None:
    """No data container has a secret in its env (checkov CKV_K8S_35); every Secret volume is
    read-only, 0440 and group-owned by the pod's fsGroup, which is the container's own uid."""
    for name, spec in data_pods(dev):
        for c in spec["containers"]:
            assert not [e for e in c.get("env") or [] if "valueFrom" in e], name
            assert "envFrom" not in c, name
        for volume in (v for v in spec.get("volumes") or [] if "secret" in v):
            assert volume["secret"]["defaultMode"] == 0o440, name
            (c,) = spec["containers"]
            (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
            assert mount["readOnly"] is True, name
            assert spec["securityContext"]["fsGroup"] == c["securityContext"]["runAsUser"], name


def test_every_file_variable_names_a_mounted_secret_file(dev: Recording) -> None:
    # A *_FILE path that is not a file is ignored by MinIO (it then starts as minioadmin) and
    # fails postgres's first start: each must name a file the container has.
    expected = {
        "postgres": {"POSTGRES_PASSWORD_FILE": "postgres-password"},
        "minio": {"MINIO_ROOT_USER_FILE": "minio-root-user", "MINIO_ROOT_PASSWORD_FILE": "minio-root-password"},
    }
    for component, variables in expected.items():
        c = data_container(dev, component)
        files = secret_files(statefulset(dev, component).get("spec.template.spec"), c)
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert {name: files.get(str(env.get(name))) for name in variables} == variables, component
        assert not {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} & set(env), component


def test_minio_credentials_and_bucket_job_read_the_secret(dev: Recording) -> None:
    secret_name = credentials(dev).get("metadata.name")
    for spec in (statefulset(dev, "minio").get("spec.template.spec"), bucket_job(dev).get("spec.template.spec")):
        (volume,) = [v for v in spec["volumes"] if "secret" in v]
        assert volume["secret"]["secretName"] == secret_name
    job = bucket_job(dev)
    c = container(job)
    assert secret_files(job.get("spec.template.spec"), c) == {
        f"{MINIO_SECRETS}/root-user": "minio-root-user", f"{MINIO_SECRETS}/root-password": "minio-root-password",
    }
    # The shell builds MC_HOST_local from the files and hands mc only its own arguments.
    assert c["command"][:4] == ["sh", "-c", MC_WITH_MINIO_HOST, "mc"]
    assert c["command"][4:] == ["--config-dir", "/tmp/mc", "mb", "--ignore-existing", "local/bundler-data-items"]
    for path in (f"{MINIO_SECRETS}/root-user", f"{MINIO_SECRETS}/root-password"):
        assert f"< {path};" in MC_WITH_MINIO_HOST
    (endpoint,) = c["env"]
    assert endpoint["name"] == "MINIO_ENDPOINT" and endpoint["value"].endswith(".svc.cluster.local:9000")
    assert "mc-host" not in credentials(dev).inputs["stringData"]


def test_postgres_max_connections_is_the_budgeted_number(dev: Recording) -> None:
    args = command_line(dev, "postgres")
    assert "max_connections=100" in args
    rec = render("dev", overrides={"dbMaxConnections": 150})
    assert "max_connections=150" in command_line(rec, "postgres")


def test_postgres_keeps_pgdata_below_the_mount_and_survives_a_slow_first_start(dev: Recording) -> None:
    c = data_container(dev, "postgres")
    env = {e["name"]: e.get("value") for e in c["env"]}
    data_mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "data")
    assert env["PGDATA"].startswith(data_mount + "/")
    assert "/var/run/postgresql" in [m["mountPath"] for m in c["volumeMounts"]]
    startup = c["startupProbe"]
    assert startup["exec"]["command"][0] == "pg_isready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


@pytest.mark.parametrize(
    ("component", "readiness", "liveness"),
    [
        ("postgres", "pg_isready", "pg_isready"),
        ("redis-cache", "redis-cli", "redis-cli"),
        ("redis-queue", "redis-cli", "redis-cli"),
        ("minio", "/minio/health/ready", "/minio/health/live"),
    ],
)
def test_data_services_have_meaningful_probes(dev: Recording, component: str, readiness: str, liveness: str) -> None:
    c = data_container(dev, component)
    assert readiness in json.dumps(c["readinessProbe"])
    assert liveness in json.dumps(c["livenessProbe"])


def test_migration_job_waits_for_the_data_services_in_dev(dev: Recording) -> None:
    job = migration_job(dev)
    for s in dev.of_type(STATEFULSET):
        assert dev.depends_on(job, s), s.name
    assert dev.depends_on(job, bucket_job(dev))


# -- hardening -------------------------------------------------------------------------------

@pytest.mark.parametrize("component", DATA_COMPONENTS)
def test_data_service_pods_pass_restricted_pss_with_limits(dev: Recording, component: str) -> None:
    spec = statefulset(dev, component).get("spec.template.spec")
    assert restricted_violations(spec) == []
    assert spec["automountServiceAccountToken"] is False
    c = spec["containers"][0]
    assert set(c["resources"]["limits"]) == set(c["resources"]["requests"]) == {"cpu", "memory"}


def test_bucket_job_passes_restricted_pss_and_is_kept(dev: Recording) -> None:
    job = bucket_job(dev)
    assert restricted_violations(job.get("spec.template.spec")) == []
    assert "ttlSecondsAfterFinished" not in job.inputs["spec"]
    assert selector_labels("dev", BUCKET_INIT).items() <= job.get("spec.template.metadata.labels").items()


def test_data_images_are_pinned_and_label_their_own_version(dev: Recording) -> None:
    for r in [*dev.of_type(STATEFULSET), bucket_job(dev)]:
        (c,) = r.get("spec.template.spec.containers")
        assert pinned_image("image", c["image"], allow_exact_version=True) == [], c["image"]
        assert r.get("spec.template.metadata.labels")["app.kubernetes.io/version"] == image_version(c["image"])
    assert data_container(dev, "postgres")["image"].startswith("docker.io/library/postgres:16.")


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("docker.io/library/postgres:16.6-alpine3.21", "16.6-alpine3.21"),
        ("quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z", "RELEASE.2025-04-22T22-12-26Z"),
        ("registry.local:5000/redis:7.4.2@sha256:" + "b" * 64, "7.4.2"),
        ("registry.local:5000/redis@sha256:" + "c" * 64, "c" * 12),
    ],
)
def test_image_version_is_a_valid_label_value(ref: str, version: str) -> None:
    assert image_version(ref) == version


# -- keeping data ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("stack", "overrides", "protect"),
    [
        ("dev", {}, False),
        ("dev", {"protectData": True}, True),
        ("prod", {"dataMode": "in-cluster"}, True),
    ],
    ids=["dev-default", "dev-protectData", "prod-in-cluster-default"],
)
def test_stateful_resources_are_protected_and_volumes_retained_when_asked(
    stack: str, overrides: dict[str, Any], protect: bool
) -> None:
    rec = render(stack, overrides=overrides)
    sets = rec.of_type(STATEFULSET)
    stateful = [*sets, *[rec.one(SERVICE, f"data-{c}-service") for c in DATA_COMPONENTS], credentials(rec), *[
        p for p in rec.of_type(PASSWORD) if p.name.startswith("data-")
    ]]
    assert len(sets) == 4
    assert all(r.protect is protect for r in stateful), [(r.name, r.protect) for r in stateful]
    assert all(r.retain_on_delete is protect for r in sets)
    for s in sets:
        assert s.get("spec.persistentVolumeClaimRetentionPolicy") == {
            "whenDeleted": "Retain" if protect else "Delete",
            "whenScaled": "Retain",
        }
    (ns,) = rec.of_type("kubernetes:core/v1:Namespace")
    assert ns.protect is protect, "deleting the namespace would delete the volumes"


def test_prod_protects_its_namespace_by_default(prod: Recording) -> None:
    (ns,) = prod.of_type("kubernetes:core/v1:Namespace")
    assert ns.protect is True


def test_generated_passwords_are_stable_and_url_safe(dev: Recording) -> None:
    passwords = [p for p in dev.of_type(PASSWORD) if p.name.startswith("data-")]
    assert len(passwords) == 3
    for p in passwords:
        assert "keepers" not in p.inputs, "a changing keeper would rotate the password on an `up`"
        assert p.inputs["special"] is False and p.inputs["length"] >= 32


def test_generated_passwords_reach_pods_only_as_secret_references(dev: Recording) -> None:
    string_data = credentials(dev).inputs["stringData"]
    plain = [string_data["postgres-password"], string_data["cache-redis-password"], string_data["minio-root-password"]]
    for r in [*dev.of_type(DEPLOYMENT), *dev.of_type(CONFIG_MAP), *dev.of_type(STATEFULSET), *dev.of_type(JOB)]:
        text = json.dumps(r.inputs)
        assert not [p for p in plain if p in text], r.name
