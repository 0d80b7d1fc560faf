"""Who may talk to whom: default deny, then the paths the bundler needs.

The queue Redis cannot have a password (the bundler cannot send one: UPSTREAM.md), so the
network is its only guard: these policies admit the bundler pods to it and nothing else.

Design, one NetworkPolicy per concern:
- `default-deny`: every pod in the namespace (ours or not) is isolated for ingress and egress.
- `allow-dns`: every pod may resolve names (UDP/TCP 53 in the DNS namespace).
- `api-ingress`: the API port from the ingress controller's namespace, from any pod in the
  namespace, and from `apiAllowedNamespaces` (other teams' services that call the API);
  `api-metrics-ingress` (only with `serviceMonitor`): the API port, where `/bundler_metrics` is
  served, from the `monitoring` namespace.
- `admin-ingress`: the admin port from `adminAllowedNamespaces` / `adminAllowedCidrs` only. With
  neither, nothing reaches it over the network, not even pods in the namespace; operators use
  `kubectl port-forward`, which enters the pod's own network namespace and is not filtered.
- `<service>-ingress` (in-cluster data only): each data service from the processes that use it.
- `<process>-egress`: each process reaches the data services it uses (pods in-cluster; their
  ports at any address in external mode, since managed services usually live in private
  ranges), and API and workers reach the internet (Arweave gateways, payment facilitators,
  OTEL) on 80/443 outside the private ranges. Admin and the Jobs get no internet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, cast
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from components.data_containers import MINIO_PORT
from components.names import (
    ADMIN,
    API,
    APP,
    BUCKET_INIT,
    MIGRATION,
    MINIO,
    POSTGRES,
    REDIS_CACHE,
    REDIS_QUEUE,
    WORKERS,
    instance,
    k8s_name,
    labels,
)
from components.settings.data import DataSettings
from components.settings.exposure import ExposureSettings
from components.settings.stack import StackIdentity

Rule = dict[str, Any]
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
# Private, link-local and carrier-grade NAT ranges: where pods, Services, nodes and cloud
# metadata live. "The internet" for API and workers is everything else.
PRIVATE_RANGES = ["10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"]
ANYWHERE = "0.0.0.0/0"

# Which data services each process talks to (MINIO stands for S3 in external mode). Kept in
# step with each process's readiness checks by tests/test_network.py.
DATA_CLIENTS: dict[str, tuple[str, ...]] = {
    API: (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO),
    WORKERS: (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO),
    # The admin's statistics cache is pointed at the queue Redis (components/app_config.py).
    ADMIN: (POSTGRES, REDIS_QUEUE),
    MIGRATION: (POSTGRES,),
    BUCKET_INIT: (MINIO,),
}


@dataclass(frozen=True)
class NetworkPoliciesArgs:
    stack: StackIdentity
    """Stack name (the pods' instance label) and app version."""
    exposure: ExposureSettings
    """Which peers may reach the API and the admin, and whether Prometheus scrapes the API."""
    data: DataSettings
    """Data mode and ports: which data services exist, and where the processes reach them."""
    api_port: int
    admin_port: int
    namespace: pulumi.Input[str]
    """Namespace whose pods the policies govern."""


def pods(stack: str, *components: str) -> Rule:
    """A podSelector for this stack's pods of the given components."""
    return {
        "matchLabels": {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": instance(stack)},
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": sorted(components)}],
    }


def namespace(name: str) -> Rule:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: name}}}


def tcp(*ports: int) -> list[Rule]:
    return [{"protocol": "TCP", "port": p} for p in sorted(set(ports))]


def s3_port(d: DataSettings) -> int:
    """MinIO's port in-cluster; externally the endpoint's port (AWS S3, without one: HTTPS)."""
    if d.mode == "in-cluster":
        return MINIO_PORT
    if not d.s3.endpoint:
        return 443
    url = urlsplit(d.s3.endpoint)
    return url.port or (80 if url.scheme == "http" else 443)


def data_ports(d: DataSettings) -> dict[str, int]:
    return {POSTGRES: d.postgres.port, REDIS_CACHE: d.cache.port, REDIS_QUEUE: d.queue.port, MINIO: s3_port(d)}


def _egress(stack: str, d: DataSettings, client: str) -> list[Rule]:
    ports = data_ports(d)
    services = DATA_CLIENTS[client]
    if d.mode == "in-cluster":
        rules = [{"to": [{"podSelector": pods(stack, svc)}], "ports": tcp(ports[svc])} for svc in services]
    else:
        rules = [{"to": [{"ipBlock": {"cidr": ANYWHERE}}], "ports": tcp(*(ports[svc] for svc in services))}]
    if client in (API, WORKERS):
        rules.append({"to": [{"ipBlock": {"cidr": ANYWHERE, "except": PRIVATE_RANGES}}], "ports": tcp(443, 80)})
    return rules


def policies(args: NetworkPoliciesArgs) -> dict[str, Rule]:
    """Policy name -> NetworkPolicy spec. Pure, so tests can evaluate it as a reachability table."""
    s, d, stack = args.exposure, args.data, args.stack.stack
    in_cluster = d.mode == "in-cluster"
    ports = data_ports(d)
    specs: dict[str, Rule] = {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [namespace(s.network.dns_namespace)],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
        "api-ingress": {
            "podSelector": pods(stack, API),
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        namespace(s.network.ingress_namespace),
                        {"podSelector": {}},
                        *(namespace(n) for n in sorted(s.network.api_namespaces)),
                    ],
                    "ports": tcp(args.api_port),
                }
            ],
        },
    }
    if s.service_monitor:
        specs["api-metrics-ingress"] = {
            "podSelector": pods(stack, API),
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [namespace(s.network.monitoring_namespace)], "ports": tcp(args.api_port)}],
        }

    admin_from: list[Rule] = [namespace(n) for n in sorted(s.network.admin_namespaces)]
    admin_from += [{"ipBlock": {"cidr": cidr}} for cidr in s.network.admin_cidrs]
    if admin_from:
        specs["admin-ingress"] = {
            "podSelector": pods(stack, ADMIN),
            "policyTypes": ["Ingress"],
            "ingress": [{"from": admin_from, "ports": tcp(args.admin_port)}],
        }

    if in_cluster:
        for service in (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO):
            clients = [c for c, needs in DATA_CLIENTS.items() if service in needs]
            specs[f"{service}-ingress"] = {
                "podSelector": pods(stack, service),
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": pods(stack, *clients)}], "ports": tcp(ports[service])}],
            }

    for client in DATA_CLIENTS:
        if client == BUCKET_INIT and not in_cluster:
            continue
        specs[f"{client}-egress"] = {
            "podSelector": pods(stack, client),
            "policyTypes": ["Egress"],
            "egress": _egress(stack, d, client),
        }
    return specs


class NetworkPolicies(pulumi.ComponentResource):
    """The namespace's NetworkPolicies, or nothing when `networkPolicies` is false."""

    names: list[str]

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:NetworkPolicies", name, None, opts)
        self.names = []
        if args.exposure.network.enabled:
            for policy, spec in policies(args).items():
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-{policy}",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=k8s_name("bundler", policy), namespace=args.namespace,
                        labels=labels(args.stack.stack, "network", args.stack.app_version),
                    ),
                    spec=cast(k8s.networking.v1.NetworkPolicySpecArgsDict, spec),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                self.names.append(k8s_name("bundler", policy))
        self.register_outputs({"names": self.names})
