"""NetworkPolicies, evaluated as a reachability table over the rendered policies."""

from __future__ import annotations

from typing import Any

import pytest

from components.labels import selector_labels
from tests.netpol import Endpoint, reachable
from tests.test_workloads import render
from tools.harness import Recording

NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def policies(rec: Recording) -> list[tuple[str, dict[str, Any]]]:
    return [(r.get("metadata.namespace"), r.inputs["spec"]) for r in rec.of_type(NETPOL)]


@pytest.fixture(scope="module")
def dev() -> Recording:
    return render("dev")


def pod(rec: Recording, component: str, stack: str = "dev") -> Endpoint:
    return Endpoint(rec.outputs["namespace"], selector_labels(stack, component))


BUNDLER = ["api", "workers", "admin", "migration"]


@pytest.mark.parametrize("component", ["api", "workers", "admin"])
def test_queue_redis_is_reachable_from_bundler_pods(dev: Recording, component: str) -> None:
    assert reachable(policies(dev), pod(dev, component), pod(dev, "redis-queue"), 6381)


def _strangers(rec: Recording) -> dict[str, Endpoint]:
    ns = rec.outputs["namespace"]
    return {
        "random pod in the namespace": Endpoint(ns, {"app": "debug"}),
        "ingress controller": Endpoint("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
        "pod in another namespace": Endpoint("default", selector_labels("dev", "api")),
        "bucket job": pod(rec, "bucket-init"),
        "migration job (needs only PostgreSQL)": pod(rec, "migration"),
        "minio": pod(rec, "minio"),
        "outside the cluster": Endpoint(None, ip="203.0.113.7"),
    }


@pytest.mark.parametrize("stranger", ["random pod in the namespace", "ingress controller", "pod in another namespace", "bucket job", "migration job (needs only PostgreSQL)", "minio", "outside the cluster"])
def test_queue_redis_is_reachable_from_nothing_else(dev: Recording, stranger: str) -> None:
    assert not reachable(policies(dev), _strangers(dev)[stranger], pod(dev, "redis-queue"), 6381)


def test_api_is_reachable_from_the_ingress_controller_on_its_port_only(dev: Recording) -> None:
    controller = Endpoint("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    assert reachable(policies(dev), controller, pod(dev, "api"), 3001)
    assert not reachable(policies(dev), controller, pod(dev, "api"), 22)
    assert not reachable(policies(dev), controller, pod(dev, "postgres"), 5432)


def test_admin_is_closed_to_the_ingress_namespace_unless_configured(dev: Recording) -> None:
    controller = Endpoint("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    assert not reachable(policies(dev), controller, pod(dev, "admin"), 3002)
    opened = render("dev", overrides={"adminAllowedNamespaces": ["ingress-nginx"]})
    assert reachable(policies(opened), controller, pod(opened, "admin"), 3002)


def test_admin_is_open_to_the_configured_namespace_and_cidr() -> None:
    prod = render("prod")
    admin = pod(prod, "admin", "prod")
    assert reachable(policies(prod), Endpoint("ops", {"team": "sre"}), admin, 3002)
    assert reachable(policies(prod), Endpoint(None, ip="10.8.1.20"), admin, 3002)
    assert not reachable(policies(prod), Endpoint(None, ip="10.9.1.20"), admin, 3002)


def test_bucket_job_reaches_minio_and_nothing_else(dev: Recording) -> None:
    job = pod(dev, "bucket-init")
    assert reachable(policies(dev), job, pod(dev, "minio"), 9000)
    assert not reachable(policies(dev), job, pod(dev, "postgres"), 5432)


def test_internet_egress_is_for_api_and_workers_only(dev: Recording) -> None:
    gateway = Endpoint(None, ip="198.51.100.10")
    for component in ("api", "workers"):
        assert reachable(policies(dev), pod(dev, component), gateway, 443)
    for component in ("admin", "migration"):
        assert not reachable(policies(dev), pod(dev, component), gateway, 443)
    assert reachable(policies(dev), pod(dev, "migration"), pod(dev, "postgres"), 5432)


def test_every_pod_resolves_names(dev: Recording) -> None:
    dns = Endpoint("kube-system", {"k8s-app": "kube-dns"})
    for component in [*BUNDLER, "bucket-init"]:
        assert reachable(policies(dev), pod(dev, component), dns, 53, "UDP")


def test_prod_reaches_managed_services_on_their_ports(dev: Recording) -> None:
    prod = render("prod")
    managed = Endpoint(None, ip="10.20.30.40")
    assert reachable(policies(prod), pod(prod, "migration", "prod"), managed, 5432)
    assert not reachable(policies(prod), pod(prod, "migration", "prod"), managed, 6379)
    assert reachable(policies(prod), pod(prod, "workers", "prod"), managed, 6379)


def test_policies_can_be_turned_off() -> None:
    assert render("dev", overrides={"networkPolicies": False}).of_type(NETPOL) == []
