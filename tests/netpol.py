"""A small NetworkPolicy evaluator: may this pod reach that pod (or address) on this port?

Implements the networking.k8s.io/v1 semantics over rendered specs (camelCase dicts):
- a pod is isolated for a direction when any policy in its namespace selects it with that
  policy type (`policyTypes` defaults to Ingress, plus Egress when the spec has egress rules);
  an isolated pod admits traffic only if some selecting policy has a rule whose peers and
  ports both match; a rule without peers matches every peer, one without ports every port;
- a peer is an `ipBlock` (cidr minus `except`), a `podSelector` alone (pods in the policy's
  namespace), a `namespaceSelector` alone (every pod in matching namespaces) or both in one
  peer (matching pods in matching namespaces);
- selectors: matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist, ANDed; `{}`
  selects everything;
- ports: protocol (default TCP), numeric `port` with optional `endPort`; a named port is
  refused (it would need the pod's container ports), so a policy using one fails loudly here.
A connection needs both the source's egress and the destination's ingress to allow it. An
`ipBlock` is matched against a pod's IP too, as common CNIs (Calico, Cilium) do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional

Policies = list[tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or, with namespace None, an address outside the cluster."""

    namespace: Optional[str]
    labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.1.2.3"
    extra_namespace_labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        """Every namespace carries its name as `kubernetes.io/metadata.name` (since 1.22)."""
        if self.namespace is None:
            return {}
        return {**self.extra_namespace_labels, "kubernetes.io/metadata.name": self.namespace}


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
        excepted = any(ip in ipaddress.ip_network(e) for e in block.get("except") or [])
        return ip in ipaddress.ip_network(block["cidr"]) and not excepted
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
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        if isinstance(p["port"], str) and not p["port"].isdigit():
            raise ValueError(f"named port {p['port']!r}: the evaluator needs numeric ports")
        if int(p["port"]) <= port <= int(p.get("endPort", p["port"])):
            return True
    return False


def policy_types(spec: dict[str, Any]) -> list[str]:
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def _allowed(policies: Policies, subject: Endpoint, other: Endpoint, port: int, protocol: str, kind: str) -> bool:
    if subject.namespace is None:
        return True
    key, peers_key = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    selecting = [
        spec for ns, spec in policies
        if ns == subject.namespace and kind in policy_types(spec) and selects(spec.get("podSelector"), subject.labels)
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


def admits(policies: Policies, dst: Endpoint, src: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """The ingress half only: whether `dst` accepts `src` on `port`, whatever `src` may send."""
    return _allowed(policies, dst, src, port, protocol, "Ingress")


def reachable(policies: Policies, src: Endpoint, dst: Endpoint, port: int, protocol: str = "TCP") -> bool:
    """Whether `src` may open a connection to `dst:port` under `policies` ((namespace, spec) pairs)."""
    return _allowed(policies, src, dst, port, protocol, "Egress") and admits(policies, dst, src, port, protocol)
