"""Services as kube-proxy's nftables mode makes them: a virtual address, translated in the kernel.

Each ClusterIP Service gets an address from the stack's service range (10.96.N.0/24, or its
own `spec.clusterIP`), which its names resolve to. The node's nftables rules send each *new*
connection to that address and port to one of the Service's endpoints, chosen at random
(`numgen random`), with the target port resolved per pod as the endpoints controller does
(a named `targetPort` is looked up in the pod's container ports). An endpoint is a selected
pod that is Ready and not terminating; a deleted pod stays for `ENDPOINT_REMOVAL_DELAY` after
its deletion, the time a real cluster takes to propagate it (and the reason for a preStop
sleep). Established connections keep their translation (conntrack), as in a cluster. A
connection to a Service with no endpoints, or to a port it does not have, is refused.
Headless Services (`clusterIP: None`) get no address: their names resolve to the pods.

A pod connecting to itself through its Service is masqueraded (kube-proxy's hairpin mark), so
the reply comes back through the node.
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from tests.e2e import timeouts
from tests.e2e.network import IP, NFT, run

TABLE = "e2e_services"
HAIRPIN_MARK = 0x4000


class Backend(Protocol):
    """What the endpoints controller reads of a pod."""

    name: str
    ip: str
    labels: dict[str, str]

    def serving(self, now: float, removal_delay: float) -> bool: ...

    def container_port(self, name: str) -> Optional[int]: ...


@dataclass
class Service:
    name: str
    namespace: str
    selector: dict[str, str]
    ports: list[dict[str, Any]]
    cluster_ip: Optional[str]
    """None for a headless Service."""

    @property
    def names(self) -> list[str]:
        base = self.name
        return [base, f"{base}.{self.namespace}", f"{base}.{self.namespace}.svc",
                f"{base}.{self.namespace}.svc.cluster.local"]


@dataclass
class Endpoint:
    pod: str
    ip: str
    port: int


@dataclass
class Services:
    manifests: list[dict[str, Any]]
    index: int
    backends: Callable[[], Sequence[Backend]]
    namespace: str
    removal_delay: float = timeouts.ENDPOINT_REMOVAL_DELAY
    services: list[Service] = field(default_factory=list)
    current: dict[tuple[str, int], list[Endpoint]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """Rules the kernel refused, newest last (the Services line reports them)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None

    def __post_init__(self) -> None:
        addresses = (str(a) for a in self.cidr.hosts() if int(a) - int(self.cidr.network_address) >= 10)
        for m in self.manifests:
            spec = m["spec"]
            given = spec.get("clusterIP")
            ip = None if given == "None" else (given or next(addresses))
            self.services.append(Service(m["metadata"]["name"], m["metadata"].get("namespace", self.namespace),
                                         dict(spec.get("selector") or {}), list(spec.get("ports") or []), ip))

    @property
    def cidr(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.96.{self.index}.0/24")

    def hosts(self, planned: Callable[[dict[str, str]], list[str]]) -> dict[str, list[str]]:
        """Name -> addresses: the ClusterIP, or for a headless Service its pods' planned addresses."""
        out: dict[str, list[str]] = {}
        for s in self.services:
            addresses = [s.cluster_ip] if s.cluster_ip else planned(s.selector)
            for name in s.names:
                out[name] = addresses
        return out

    def address(self, name: str) -> str:
        found = next(s for s in self.services if s.name == name)
        if found.cluster_ip is None:
            raise LookupError(f"Service {name} is headless: it has no address")
        return found.cluster_ip

    # -- the controller -------------------------------------------------------------------

    def start(self) -> None:
        """Make the service range the node's own (as kube-proxy's IPVS mode binds it), so a
        connection to an address the rules do not translate is refused there; then keep the
        rules in step with the endpoints."""
        run(IP, "route", "add", "local", str(self.cidr), "dev", "lo")
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="e2e-endpoints", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(timeouts.ENDPOINTS_SYNC):
            try:
                self.sync()
            except RuntimeError as error:  # kept for the scenarios' lines; the loop goes on
                self.errors.append(str(error))

    def endpoints(self) -> dict[tuple[str, int], list[Endpoint]]:
        now = time.monotonic()
        backends = [b for b in self.backends() if b.serving(now, self.removal_delay)]
        found: dict[tuple[str, int], list[Endpoint]] = {}
        for s in self.services:
            if s.cluster_ip is None:
                continue
            for port in s.ports:
                target = port.get("targetPort", port["port"])
                chosen = []
                for b in sorted(backends, key=lambda b: b.name):
                    if not all(b.labels.get(k) == v for k, v in s.selector.items()):
                        continue
                    resolved = int(target) if str(target).isdigit() else b.container_port(str(target))
                    if resolved is not None:
                        chosen.append(Endpoint(b.name, b.ip, resolved))
                found[(s.name, int(port["port"]))] = chosen
        return found

    def sync(self) -> None:
        endpoints = self.endpoints()
        if endpoints == self.current:
            return
        done = subprocess.run([NFT, "-f", "-"], input=self.ruleset(endpoints), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nft (Services) failed: {done.stderr.strip()}")
        self.current = endpoints

    def ruleset(self, endpoints: dict[tuple[str, int], list[Endpoint]]) -> str:
        """The whole table, replaced in one transaction (existing connections keep their NAT)."""
        chains: list[str] = []
        dispatch: list[str] = []
        for i, ((name, port), eps) in enumerate(sorted(endpoints.items())):
            address = self.address(name)
            if not eps:
                continue  # no translation: the node itself refuses it (nothing listens there)
            dispatch.append(f"    ip daddr {address} tcp dport {port} goto svc-{i}")
            targets = ", ".join(f"{n} : goto ep-{i}-{n}" for n in range(len(eps)))
            chains.append(f"  chain svc-{i} {{\n    numgen random mod {len(eps)} vmap {{ {targets} }}\n  }}")
            for n, ep in enumerate(eps):
                chains.append(f"  chain ep-{i}-{n} {{\n"
                              f"    ip saddr {ep.ip} meta mark set meta mark | {HAIRPIN_MARK:#x}\n"
                              f"    meta l4proto tcp dnat to {ep.ip}:{ep.port}\n  }}")
        body = "\n".join([
            "  chain prerouting {\n    type nat hook prerouting priority -100; policy accept;\n"
            "    jump services\n  }",
            "  chain output {\n    type nat hook output priority -100; policy accept;\n    jump services\n  }",
            "  chain postrouting {\n    type nat hook postrouting priority 100; policy accept;\n"
            f"    meta mark & {HAIRPIN_MARK:#x} == {HAIRPIN_MARK:#x} masquerade\n  }}",
            "  chain services {\n" + "\n".join(dispatch) + "\n  }",
            *chains,
        ])
        return f"table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n{body}\n}}\n"
