"""Who may talk to whom: default deny, then the paths the bundler needs.

The queue Redis cannot have a password (the bundler cannot send one), so the network is its
only guard: these policies admit the bundler pods to it and nothing else. The admin dashboard
is reachable only from the namespaces and CIDRs a stack names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, cast

import pulumi
import pulumi_kubernetes as k8s

from components.config import Settings
from components.data import MINIO_PORT
from components.labels import (
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
    k8s_name,
    labels,
)

Rule = dict[str, Any]
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
# Cluster-internal ranges: "the internet" for API and workers means everything but these.
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]


@dataclass(frozen=True)
class NetworkPoliciesArgs:
    settings: Settings
    """Validated stack settings (`network`, ports and data mode)."""
    namespace: pulumi.Input[str]
    """Namespace whose pods the policies govern."""


def pods(*components: str) -> Rule:
    """A podSelector for bundler-owned pods of the given components."""
    return {
        "matchLabels": {"app.kubernetes.io/name": APP},
        "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": sorted(components)}],
    }


def tcp(*ports: int) -> list[Rule]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def data_ports(s: Settings) -> dict[str, int]:
    return {POSTGRES: s.data.postgres.port, REDIS_CACHE: s.data.cache.port, REDIS_QUEUE: s.data.queue.port, MINIO: MINIO_PORT}


# Which data services each workload talks to.
DATA_CLIENTS: dict[str, tuple[str, ...]] = {
    API: (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO),
    WORKERS: (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO),
    ADMIN: (POSTGRES, REDIS_CACHE, REDIS_QUEUE),
    MIGRATION: (POSTGRES,),
    BUCKET_INIT: (MINIO,),
}


def policies(s: Settings) -> dict[str, Rule]:
    """Policy name -> NetworkPolicy spec. Pure, so tests can evaluate it as a reachability table."""
    in_cluster = s.data.mode == "in-cluster"
    ports = data_ports(s)
    specs: dict[str, Rule] = {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: s.network.dns_namespace}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
        "api-ingress": {
            "podSelector": pods(API),
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: s.network.ingress_namespace}}},
                        {"podSelector": {}},
                    ],
                    "ports": tcp(s.api_port),
                }
            ],
        },
    }
    admin_from: list[Rule] = [
        {"namespaceSelector": {"matchExpressions": [{"key": NAMESPACE_LABEL, "operator": "In", "values": sorted(s.network.admin_namespaces)}]}}
    ] if s.network.admin_namespaces else []
    admin_from += [{"ipBlock": {"cidr": cidr}} for cidr in s.network.admin_cidrs]
    if admin_from:
        specs["admin-ingress"] = {
            "podSelector": pods(ADMIN),
            "policyTypes": ["Ingress"],
            "ingress": [{"from": admin_from, "ports": tcp(s.admin_port)}],
        }

    if in_cluster:
        for service in (POSTGRES, REDIS_CACHE, REDIS_QUEUE, MINIO):
            clients = [c for c, needs in DATA_CLIENTS.items() if service in needs]
            specs[f"{service}-ingress"] = {
                "podSelector": pods(service),
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": pods(*clients)}], "ports": tcp(ports[service])}],
            }

    for client, services in DATA_CLIENTS.items():
        if client == BUCKET_INIT and not in_cluster:
            continue
        if in_cluster:
            egress = [{"to": [{"podSelector": pods(svc)}], "ports": tcp(ports[svc])} for svc in services]
        else:
            # Managed services live at addresses we do not know (often private ranges): allow
            # their ports anywhere; S3 is reached over HTTPS, covered below for API and workers.
            egress = [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": tcp(ports[svc])} for svc in services if svc != MINIO]
        if client in (API, WORKERS):
            # Arweave gateways, payment facilitators and S3 over HTTPS; not the cluster's own ranges.
            egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}], "ports": tcp(443, 80)})
            if not in_cluster:
                egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": tcp(443)})
        specs[f"{client}-egress"] = {"podSelector": pods(client), "policyTypes": ["Egress"], "egress": egress}
    return specs


class NetworkPolicies(pulumi.ComponentResource):
    names: list[str]

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:NetworkPolicies", name, None, opts)
        s = args.settings
        self.names = []
        if s.network.enabled:
            for policy, spec in policies(s).items():
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-{policy}",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=k8s_name("bundler", policy), namespace=args.namespace,
                        labels=labels(s.stack, "network", s.app_version),
                    ),
                    spec=cast(k8s.networking.v1.NetworkPolicySpecArgsDict, spec),
                    opts=pulumi.ResourceOptions(parent=self),
                )
                self.names.append(k8s_name("bundler", policy))
        self.register_outputs({"names": self.names})
