"""A small NetworkPolicy evaluator: may this pod reach that pod (or address) on this port?

Implements the networking.k8s.io/v1 semantics the policies here use: a pod is isolated for a
direction when any policy in its namespace selects it with that policy type; then traffic is
allowed only if some selecting policy has a rule whose peers and ports match. A connection
needs both the source's egress and the destination's ingress to allow it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or, with namespace None, an address outside the cluster."""

    namespace: Optional[str]
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.1.2.3"

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace} if self.namespace else {}


def selects(selector: Optional[dict[str, Any]], labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
    if other.namespace is None:
        return False
    pod_ok = selects(peer["podSelector"], other.labels) if "podSelector" in peer else True
    if "namespaceSelector" in peer:
        ns_ok = selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        ns_ok = other.namespace == policy_ns
    return pod_ok and ns_ok


def _port_matches(ports: Optional[list[dict[str, Any]]], port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and ("port" not in p or int(p["port"]) == port) for p in ports)


def _allowed(policies: list[tuple[str, dict[str, Any]]], subject: Endpoint, other: Endpoint, port: int, protocol: str, kind: str) -> bool:
    if subject.namespace is None:
        return True
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    selecting = [
        spec for ns, spec in policies
        if ns == subject.namespace and kind in spec.get("policyTypes", ["Ingress"]) and selects(spec.get("podSelector"), subject.labels)
    ]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(_peer_matches(p, subject.namespace, other) for p in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def reachable(policies: list[tuple[str, dict[str, Any]]], src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Whether `src` may open a connection to `dst:port` under `policies` ((namespace, spec) pairs)."""
    return _allowed(policies, src, dst, port, protocol, "Egress") and _allowed(policies, dst, src, port, protocol, "Ingress")
