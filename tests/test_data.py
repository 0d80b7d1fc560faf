"""Backing services: in-cluster for dev, managed endpoints for prod, data kept on purpose."""

from __future__ import annotations

from typing import Any

import pytest

from components.checks import pinned_image
from components.labels import DATA_COMPONENTS
from tests.pss import restricted_violations
from tests.test_workloads import CONFIG_MAP, DEPLOYMENT, JOB, container, deployment, migration_job, render, settings_map
from tools.harness import Recording

STATEFULSET, SERVICE = "kubernetes:apps/v1:StatefulSet", "kubernetes:core/v1:Service"


@pytest.fixture(scope="module")
def dev() -> Recording:
    return render("dev")


@pytest.fixture(scope="module")
def prod() -> Recording:
    return render("prod")


def statefulset(rec: Recording, component: str) -> Any:
    return rec.one(STATEFULSET, f"data-{component}")


def command_line(rec: Recording, component: str) -> list[str]:
    c = statefulset(rec, component).get("spec.template.spec.containers.0")
    return [*(c.get("command") or []), *(c.get("args") or [])]


def test_dev_runs_the_four_services_with_volumes_and_a_bucket_job(dev: Recording) -> None:
    sets = {s.name for s in dev.of_type(STATEFULSET)}
    assert sets == {f"data-{c}" for c in DATA_COMPONENTS}
    services = {s.name for s in dev.of_type(SERVICE)}
    assert {f"data-{c}-service" for c in DATA_COMPONENTS} <= services
    for component in ("postgres", "redis-queue", "minio"):
        (claim,) = statefulset(dev, component).get("spec.volumeClaimTemplates")
        assert claim["spec"]["resources"]["requests"]["storage"]
    (bucket,) = [j for j in dev.of_type(JOB) if j.name == "data-bucket"]
    command = container(bucket)["command"]
    assert command[-1] == "local/bundler-data-items" and "--ignore-existing" in command


def test_prod_runs_no_data_service_and_workloads_read_the_external_endpoints(prod: Recording) -> None:
    assert prod.of_type(STATEFULSET) == []
    assert [j.name for j in prod.of_type(JOB)] == ["migration-job"]
    data = settings_map(prod, container(deployment(prod, "api")))
    assert data["DB_HOST"] == "bundler-db.cluster-abc123.us-east-1.rds.amazonaws.com"
    assert data["ELASTICACHE_HOST"] == "bundler-cache.abc123.use1.cache.amazonaws.com"
    assert data["ELASTICACHE_USE_TLS"] == "true"
    assert data["REDIS_HOST"] == "bundler-queue.internal.example.com"
    assert data["DATA_ITEM_BUCKET"] == "example-bundler-data-items"
    assert "AWS_ENDPOINT" not in data


def test_dev_workloads_read_the_in_cluster_services(dev: Recording) -> None:
    data = settings_map(dev, container(deployment(dev, "api")))
    assert data["DB_HOST"] == "bundler-postgres.x402-bundler-dev.svc.cluster.local"
    assert data["REDIS_PORT_QUEUES"] == "6381"
    assert data["AWS_ENDPOINT"].startswith("http://bundler-minio.") and data["S3_FORCE_PATH_STYLE"] == "true"


def test_queue_redis_never_evicts_and_keeps_an_append_only_file(dev: Recording) -> None:
    args = command_line(dev, "redis-queue")
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--port") + 1] == "6381"
    assert "requirepass" not in " ".join(args)


def test_cache_redis_evicts_lru_and_keeps_its_password_out_of_the_pod_spec(dev: Recording) -> None:
    args = command_line(dev, "redis-cache")
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    (secret,) = [s for s in dev.of_type("kubernetes:core/v1:Secret") if s.name == "data-credentials"]
    password = secret.inputs["stringData"]["cache-redis-password"]
    assert secret.inputs["stringData"]["cache-redis-auth.conf"] == f"requirepass {password}\n"
    import json

    assert password not in json.dumps(statefulset(dev, "redis-cache").inputs)


def test_postgres_max_connections_is_the_budgeted_number(dev: Recording) -> None:
    args = command_line(dev, "postgres")
    assert "max_connections=100" in args


def test_migration_job_waits_for_the_data_services_in_dev(dev: Recording) -> None:
    job = migration_job(dev)
    for s in dev.of_type(STATEFULSET):
        assert dev.depends_on(job, s), s.name
    (bucket,) = [j for j in dev.of_type(JOB) if j.name == "data-bucket"]
    assert dev.depends_on(job, bucket)


@pytest.mark.parametrize("component", DATA_COMPONENTS)
def test_data_service_pods_pass_restricted_pss_with_probes_and_limits(dev: Recording, component: str) -> None:
    spec = statefulset(dev, component).get("spec.template.spec")
    assert restricted_violations(spec) == []
    c = spec["containers"][0]
    assert c["readinessProbe"] and c["livenessProbe"]
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}


def test_bucket_job_passes_restricted_pss(dev: Recording) -> None:
    (bucket,) = [j for j in dev.of_type(JOB) if j.name == "data-bucket"]
    assert restricted_violations(bucket.get("spec.template.spec")) == []
    assert "ttlSecondsAfterFinished" not in bucket.inputs["spec"]


def test_data_images_are_pinned(dev: Recording) -> None:
    for s in [*dev.of_type(STATEFULSET), *dev.of_type(JOB)]:
        for c in s.get("spec.template.spec.containers"):
            if "bundler@" in c["image"] or "ar-io-x402-bundler@" in c["image"]:
                continue
            assert pinned_image("image", c["image"], allow_exact_version=True) == [], c["image"]


@pytest.mark.parametrize(("protect", "retention"), [(True, "Retain"), (False, "Delete")])
def test_stateful_resources_are_protected_and_volumes_retained_when_asked(protect: bool, retention: str) -> None:
    rec = render("dev", overrides={"protectData": protect})
    stateful = [*rec.of_type(STATEFULSET), *[s for s in rec.of_type("kubernetes:core/v1:Secret") if s.name == "data-credentials"]]
    assert stateful and all(r.protect is protect for r in stateful)
    assert all(r.retain_on_delete is protect for r in rec.of_type(STATEFULSET))
    for s in rec.of_type(STATEFULSET):
        assert s.get("spec.persistentVolumeClaimRetentionPolicy") == {"whenDeleted": retention, "whenScaled": retention}
    (ns,) = rec.of_type("kubernetes:core/v1:Namespace")
    assert ns.protect is protect, "deleting the namespace would delete the volumes"


def test_prod_protects_its_namespace_by_default(prod: Recording) -> None:
    (ns,) = prod.of_type("kubernetes:core/v1:Namespace")
    assert ns.protect is True


def test_generated_passwords_reach_the_app_only_as_secret_references(dev: Recording) -> None:
    import json

    (secret,) = [s for s in dev.of_type("kubernetes:core/v1:Secret") if s.name == "data-credentials"]
    db_password = secret.inputs["stringData"]["postgres-password"]
    for r in [*dev.of_type(DEPLOYMENT), *dev.of_type(CONFIG_MAP), *dev.of_type(STATEFULSET)]:
        assert db_password not in json.dumps(r.inputs), r.name
