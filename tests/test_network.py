"""NetworkPolicies, evaluated as a reachability table over the rendered policies.

The first tests pin the evaluator's own semantics (tests/netpol.py) on small hand-written
policies, so the table tests below cannot pass because the evaluator is lenient.
"""

from __future__ import annotations

from typing import Any

import pytest

from components.names import BUCKET_INIT, BUNDLER_COMPONENTS, DATA_COMPONENTS, selector_labels
from components.probes import ADMIN_READINESS, API_READINESS, WORKER_READINESS
from components.settings import ConfigError
from tests.helpers import render
from tests.netpol import Endpoint, Policies, admits, reachable, selects
from tools.harness import Recording

NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
INGRESS_NS = "ingress-nginx"
PORTS = {"postgres": 5432, "redis-cache": 6379, "redis-queue": 6381, "minio": 9000}


def policies(rec: Recording) -> Policies:
    return [(r.get("metadata.namespace"), r.inputs["spec"]) for r in rec.of_type(NETPOL)]


def pod(rec: Recording, component: str, stack: str = "dev") -> Endpoint:
    return Endpoint(rec.outputs["namespace"], selector_labels(stack, component))


def controller() -> Endpoint:
    return Endpoint(INGRESS_NS, {"app.kubernetes.io/name": "ingress-nginx"})


# -- the evaluator ------------------------------------------------------------------------

LABELS = {"app": "web", "tier": "front"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "web", "tier": "back"}}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "edge"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "In", "values": ["x"]}]}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["back"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["x"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "missing", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}],
            },
            False,
        ),
    ],
)
def test_evaluator_label_selectors_follow_kubernetes(selector: dict[str, Any], expected: bool) -> None:
    assert selects(selector, LABELS) is expected


DB = Endpoint("app", {"role": "db"})


def _ingress_only(*rules: dict[str, Any]) -> Policies:
    return [
        ("app", {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"], "ingress": list(rules)})
    ]


def test_evaluator_isolates_only_selected_pods_and_directions() -> None:
    deny = [("app", {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"]})]
    client = Endpoint("app", {"role": "client"})
    assert reachable([], client, DB, 5432)
    assert not reachable(deny, client, DB, 5432)
    assert reachable(deny, DB, client, 80), "the db is isolated for ingress only"
    # Without policyTypes a spec with egress rules isolates egress too.
    implicit = [("app", {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}]}]})]
    assert not reachable(implicit, client, DB, 5432)
    assert reachable(implicit, client, Endpoint(None, ip="198.51.100.1"), 53, "UDP")


def test_evaluator_peer_forms() -> None:
    pods_only = _ingress_only({"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]})
    assert reachable(pods_only, Endpoint("app", {"role": "client"}), DB, 5432)
    assert not reachable(pods_only, Endpoint("other", {"role": "client"}), DB, 5432), "podSelector alone: own namespace"

    ns_only = _ingress_only({"from": [{"namespaceSelector": {"matchLabels": {"team": "sre"}}}]})
    assert reachable(ns_only, Endpoint("ops", {"any": "pod"}, extra_namespace_labels={"team": "sre"}), DB, 5432)
    assert not reachable(ns_only, Endpoint("app", {"role": "client"}), DB, 5432)

    both = {"namespaceSelector": {"matchLabels": {"team": "sre"}}, "podSelector": {"matchLabels": {"role": "client"}}}
    anded = _ingress_only({"from": [both]})
    sre = {"team": "sre"}
    assert reachable(anded, Endpoint("ops", {"role": "client"}, extra_namespace_labels=sre), DB, 5432)
    assert not reachable(anded, Endpoint("ops", {"role": "other"}, extra_namespace_labels=sre), DB, 5432)
    ored = _ingress_only(
        {"from": [{"namespaceSelector": both["namespaceSelector"]}, {"podSelector": both["podSelector"]}]}
    )
    assert reachable(ored, Endpoint("ops", {"role": "other"}, extra_namespace_labels=sre), DB, 5432)

    block = _ingress_only({"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"]}}]})
    assert reachable(block, Endpoint(None, ip="10.8.0.1"), DB, 5432)
    assert not reachable(block, Endpoint(None, ip="10.9.0.1"), DB, 5432)
    assert not reachable(block, Endpoint(None, ip="192.0.2.1"), DB, 5432)


def test_evaluator_ports_protocols_and_ranges() -> None:
    ranged = _ingress_only({"ports": [{"protocol": "TCP", "port": 8000, "endPort": 8010}]})
    anyone = Endpoint("x", {})
    assert reachable(ranged, anyone, DB, 8005)
    assert not reachable(ranged, anyone, DB, 8011)
    assert not reachable(ranged, anyone, DB, 8005, "UDP")
    with pytest.raises(ValueError, match="named port"):
        reachable(_ingress_only({"ports": [{"port": "http"}]}), anyone, DB, 80)


# -- the rendered policies ------------------------------------------------------------------

def _sources(rec: Recording) -> dict[str, Endpoint]:
    ns = rec.outputs["namespace"]
    sources = {c: pod(rec, c) for c in (*BUNDLER_COMPONENTS, BUCKET_INIT, *DATA_COMPONENTS)}
    return sources | {
        "random pod in the namespace": Endpoint(ns, {"app": "debug"}),
        "another stack's api in the namespace": Endpoint(ns, selector_labels("prod", "api")),
        "ingress controller": controller(),
        "our api labels in another namespace": Endpoint("default", selector_labels("dev", "api")),
        "outside the cluster": Endpoint(None, ip="203.0.113.7"),
        "private address outside the cluster": Endpoint(None, ip="10.200.0.9"),
    }


# Who may open a connection to each data service (written out, not derived from the code).
DATA_CLIENTS = {
    "postgres": {"api", "workers", "admin", "migration"},
    # The admin's statistics cache uses the queue Redis (the cache Redis wants a password).
    "redis-cache": {"api", "workers"},
    "redis-queue": {"api", "workers", "admin"},
    "minio": {"api", "workers", BUCKET_INIT},
}
SOURCES = [*BUNDLER_COMPONENTS, BUCKET_INIT, *DATA_COMPONENTS, "random pod in the namespace",
           "another stack's api in the namespace", "ingress controller", "our api labels in another namespace",
           "outside the cluster", "private address outside the cluster"]


@pytest.mark.parametrize("service", DATA_COMPONENTS)
@pytest.mark.parametrize("source", SOURCES)
def test_data_services_are_reachable_only_from_the_processes_that_use_them(
    dev: Recording, service: str, source: str
) -> None:
    expected = source in DATA_CLIENTS[service]
    assert reachable(policies(dev), _sources(dev)[source], pod(dev, service), PORTS[service]) is expected


def test_queue_redis_is_reachable_from_the_bundler_processes_and_nothing_else(dev: Recording) -> None:
    """The issue's headline promise, as one table: the queue Redis has no password."""
    table = {name: reachable(policies(dev), src, pod(dev, "redis-queue"), 6381) for name, src in _sources(dev).items()}
    assert {name for name, ok in table.items() if ok} == {"api", "workers", "admin"}


def test_api_is_reachable_from_the_ingress_controller_on_its_port_only(dev: Recording) -> None:
    assert reachable(policies(dev), controller(), pod(dev, "api"), 3001)
    # The API admits any pod of its namespace; whether that pod may send is its own egress policy
    # (default-deny for everything in the namespace, so a debug pod needs one of its own).
    debug = Endpoint(dev.outputs["namespace"], {"app": "debug"})
    assert admits(policies(dev), pod(dev, "api"), debug, 3001)
    assert not reachable(policies(dev), debug, pod(dev, "api"), 3001)
    assert not reachable(policies(dev), controller(), pod(dev, "api"), 22)
    assert not reachable(policies(dev), controller(), pod(dev, "postgres"), 5432)
    assert not reachable(policies(dev), Endpoint("default", {}), pod(dev, "api"), 3001)


def test_admin_is_closed_to_the_ingress_namespace_and_the_namespace_unless_configured(dev: Recording) -> None:
    assert not reachable(policies(dev), controller(), pod(dev, "admin"), 3002)
    assert not reachable(policies(dev), pod(dev, "api"), pod(dev, "admin"), 3002)
    opened = render("dev", overrides={"adminAllowedNamespaces": [INGRESS_NS]})
    assert reachable(policies(opened), controller(), pod(opened, "admin"), 3002)
    assert not reachable(policies(opened), controller(), pod(opened, "admin"), 3001)


def test_admin_is_open_to_the_configured_namespace_and_cidr(prod: Recording) -> None:
    admin = pod(prod, "admin", "prod")
    assert reachable(policies(prod), Endpoint("ops", {"team": "sre"}), admin, 3002)
    assert reachable(policies(prod), Endpoint(None, ip="10.8.1.20"), admin, 3002)
    assert not reachable(policies(prod), Endpoint(None, ip="10.9.1.20"), admin, 3002)
    assert not reachable(policies(prod), controller(), admin, 3002)


def test_prometheus_scrapes_the_api_only_when_a_service_monitor_is_declared(dev: Recording, prod: Recording) -> None:
    prometheus = Endpoint("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert reachable(policies(prod), prometheus, pod(prod, "api", "prod"), 3001)
    assert not reachable(policies(prod), prometheus, pod(prod, "admin", "prod"), 3002)
    assert not reachable(policies(dev), prometheus, pod(dev, "api"), 3001)


def test_bucket_job_reaches_minio_and_nothing_else(dev: Recording) -> None:
    job = pod(dev, BUCKET_INIT)
    assert reachable(policies(dev), job, pod(dev, "minio"), 9000)
    assert not reachable(policies(dev), job, pod(dev, "postgres"), 5432)
    assert not reachable(policies(dev), job, Endpoint(None, ip="198.51.100.10"), 443)


def test_internet_egress_is_for_api_and_workers_only_and_not_into_private_ranges(dev: Recording) -> None:
    gateway = Endpoint(None, ip="198.51.100.10")
    for component in ("api", "workers"):
        assert reachable(policies(dev), pod(dev, component), gateway, 443)
        assert not reachable(policies(dev), pod(dev, component), gateway, 22)
        cloud_metadata = Endpoint(None, ip="169.254.169.254")
        assert not reachable(policies(dev), pod(dev, component), cloud_metadata, 80), "cloud metadata"
        assert not reachable(policies(dev), pod(dev, component), Endpoint(None, ip="10.0.0.1"), 443), "cluster ranges"
    for component in ("admin", "migration", *DATA_COMPONENTS):
        assert not reachable(policies(dev), pod(dev, component), gateway, 443), component


@pytest.mark.parametrize("component", [*BUNDLER_COMPONENTS, BUCKET_INIT, *DATA_COMPONENTS])
def test_every_pod_resolves_names(dev: Recording, component: str) -> None:
    dns = Endpoint("kube-system", {"k8s-app": "kube-dns"})
    assert reachable(policies(dev), pod(dev, component), dns, 53, "UDP")
    assert reachable(policies(dev), pod(dev, component), dns, 53, "TCP")
    assert not reachable(policies(dev), pod(dev, component), Endpoint("default", {}), 53, "UDP")


CHECK_TARGET = {"postgres": "postgres", "redis-cache": "redis-cache", "redis-queue": "redis-queue", "s3": "minio"}
# The admin's env points ELASTICACHE_HOST/PORT, and so its redis-cache check, at the queue Redis.
ADMIN_CHECK_TARGET = {**CHECK_TARGET, "redis-cache": "redis-queue"}


@pytest.mark.parametrize(
    ("component", "checks"), [("api", API_READINESS), ("workers", WORKER_READINESS), ("admin", ADMIN_READINESS)]
)
def test_every_readiness_check_can_reach_its_service(dev: Recording, component: str, checks: tuple[str, ...]) -> None:
    """A policy that forgot a path would keep the process unready forever."""
    targets = ADMIN_CHECK_TARGET if component == "admin" else CHECK_TARGET
    for check in checks:
        target = targets[check]
        assert reachable(policies(dev), pod(dev, component), pod(dev, target), PORTS[target]), check


def test_admin_reaches_postgres_and_the_queue_redis_but_not_the_cache_redis(dev: Recording) -> None:
    admin = pod(dev, "admin")
    assert reachable(policies(dev), admin, pod(dev, "postgres"), PORTS["postgres"])
    assert reachable(policies(dev), admin, pod(dev, "redis-queue"), PORTS["redis-queue"])
    assert not reachable(policies(dev), admin, pod(dev, "redis-cache"), PORTS["redis-cache"])


def test_prod_reaches_managed_services_on_their_ports_at_any_address(prod: Recording) -> None:
    managed = Endpoint(None, ip="10.20.30.40")
    migration, workers, admin = (pod(prod, c, "prod") for c in ("migration", "workers", "admin"))
    assert reachable(policies(prod), migration, managed, 5432)
    assert not reachable(policies(prod), migration, managed, 6379)
    assert reachable(policies(prod), workers, managed, 6379)
    assert reachable(policies(prod), workers, managed, 443), "S3 through a VPC endpoint"
    assert reachable(policies(prod), admin, managed, 6379)
    assert not reachable(policies(prod), admin, managed, 443)


def test_prod_external_s3_endpoint_port_is_allowed() -> None:
    rec = render("prod", overrides={"s3Endpoint": "https://s3.internal.example.com:9443"})
    assert reachable(policies(rec), pod(rec, "workers", "prod"), Endpoint(None, ip="10.20.30.40"), 9443)
    assert not reachable(policies(rec), pod(rec, "admin", "prod"), Endpoint(None, ip="10.20.30.40"), 9443)


def test_data_service_policies_exist_only_in_cluster(dev: Recording, prod: Recording) -> None:
    def names(rec: Recording) -> set[str]:
        return {str(r.get("metadata.name")) for r in rec.of_type(NETPOL)}

    data_policies = {f"bundler-{c}-ingress" for c in DATA_COMPONENTS} | {"bundler-bucket-init-egress"}
    assert data_policies <= names(dev)
    assert not data_policies & names(prod)
    assert {"bundler-default-deny", "bundler-allow-dns", "bundler-api-ingress"} <= names(prod)


def test_policies_can_be_turned_off() -> None:
    assert render("dev", overrides={"networkPolicies": False}).of_type(NETPOL) == []


def test_the_api_is_open_to_another_teams_namespace_only_when_configured(dev: Recording) -> None:
    consumer = Endpoint("orders", {"app": "orders"})
    assert not reachable(policies(dev), consumer, pod(dev, "api"), 3001)
    opened = render("dev", overrides={"apiAllowedNamespaces": ["orders"]})
    assert reachable(policies(opened), consumer, pod(opened, "api"), 3001)
    # The API port only: the team reaches neither the admin nor the data services.
    assert not reachable(policies(opened), consumer, pod(opened, "admin"), 3002)
    assert not reachable(policies(opened), consumer, pod(opened, "postgres"), 5432)


def test_a_bad_namespace_in_an_allow_list_is_refused_with_the_list_fix() -> None:
    with pytest.raises(ConfigError) as info:
        render("dev", overrides={"apiAllowedNamespaces": ["orders", "Orders_Team"]})
    (problem,) = [p for p in info.value.problems if p.key == "apiAllowedNamespaces"]
    assert "'Orders_Team' is not a valid Kubernetes namespace name" in problem.message
    assert problem.fix == "pulumi config set --path 'x402-bundler:apiAllowedNamespaces[1]' <namespace>"
