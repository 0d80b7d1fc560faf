"""Network and exposure: the NetworkPolicies' peers, the optional Ingress, the ServiceMonitor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from components.settings.reader import Problem, Reader, list_command, set_command
from components.settings.values import cidr, namespace_name


@dataclass(frozen=True)
class NetworkSettings:
    enabled: bool
    ingress_namespace: str
    api_namespaces: tuple[str, ...]
    """Namespaces besides the ingress controller's whose pods may call the API (other teams)."""
    admin_namespaces: tuple[str, ...]
    admin_cidrs: tuple[str, ...]
    dns_namespace: str
    monitoring_namespace: str


@dataclass(frozen=True)
class IngressSettings:
    enabled: bool
    host: Optional[str]
    class_name: str
    tls_secret: Optional[str]
    cluster_issuer: Optional[str]


@dataclass(frozen=True)
class ExposureSettings:
    network: NetworkSettings
    ingress: IngressSettings
    service_monitor: bool


def ingress_host_required(ingress: IngressSettings) -> list[Problem]:
    if ingress.enabled and not ingress.host:
        return [Problem(
            "ingressHost",
            "is required when ingressEnabled is true.",
            set_command("ingressHost", "upload.example.com"),
        )]
    return []


def network_peers(network: NetworkSettings) -> list[Problem]:
    """Every namespace a policy names is a valid name, every CIDR a block."""
    problems: list[Problem] = []
    for key, ns in (
        ("ingressControllerNamespace", network.ingress_namespace),
        ("dnsNamespace", network.dns_namespace),
        ("monitoringNamespace", network.monitoring_namespace),
    ):
        problems += namespace_name(key, ns)
    for key, names in (("apiAllowedNamespaces", network.api_namespaces),
                       ("adminAllowedNamespaces", network.admin_namespaces)):
        for i, ns in enumerate(names):
            problems += namespace_name(key, ns, fix=list_command(key, "<namespace>", i))
    for block in network.admin_cidrs:
        problems += cidr("adminAllowedCidrs", block)
    return problems


def read_exposure(r: Reader) -> ExposureSettings:
    ingress = IngressSettings(
        enabled=r.boolean("ingressEnabled", False),
        host=r.text("ingressHost", None),
        class_name=r.text("ingressClassName", "nginx"),
        tls_secret=r.text("ingressTlsSecret", None),
        cluster_issuer=r.text("ingressClusterIssuer", None),
    )
    r.report(ingress_host_required(ingress))
    network = NetworkSettings(
        enabled=r.boolean("networkPolicies", True),
        ingress_namespace=r.text("ingressControllerNamespace", "ingress-nginx"),
        api_namespaces=r.strings("apiAllowedNamespaces", ()),
        admin_namespaces=r.strings("adminAllowedNamespaces", ()),
        admin_cidrs=r.strings("adminAllowedCidrs", ()),
        dns_namespace=r.text("dnsNamespace", "kube-system"),
        monitoring_namespace=r.text("monitoringNamespace", "monitoring"),
    )
    r.report(network_peers(network))
    return ExposureSettings(network=network, ingress=ingress, service_monitor=r.boolean("serviceMonitor", False))
