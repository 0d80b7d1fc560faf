"""Network namespaces for one stack: a node, a pod network, and an "outside" reached by NAT.

Layout (all namespaces made by this test and removed after it; no traffic reaches the host's
own interfaces or leaves the machine):

    outside (10.245.N.0/24)  <- veth ->  node (runner, kubelet, bridge 10.244.N.1)  <- bridge ->  pods (10.244.N.x)

The node namespace plays the Kubernetes node: the runner runs there, so httpGet/tcpSocket
probes come from the node, as the kubelet's do. Each pod has its own namespace and address,
so `status.podIP` is real and several replicas can listen on the same port. Traffic from pods
to the outside is masqueraded by the node (nftables), as a cluster's egress NAT does: that is
how prod's managed services see the pods, and why a probe must not rely on the pod address.
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass, field

IP = "/usr/sbin/ip"
NFT = "/usr/sbin/nft"


def run(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def node_namespace(prefix: str) -> str:
    """The stack's node namespace: the orchestrator makes it and runs the stack's runner in it."""
    return f"{prefix}-node"


def netns_names() -> list[str]:
    out = subprocess.run([IP, "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_exists(name: str) -> bool:
    return name in netns_names()


def delete_netns(name: str) -> None:
    """Remove a namespace and end whatever still runs in it (a crashed run's leftovers)."""
    if netns_exists(name):
        pids = subprocess.run([IP, "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            subprocess.run(["/usr/bin/kill", "-KILL", pid], capture_output=True)
        subprocess.run([IP, "netns", "delete", name], capture_output=True)


@dataclass
class StackNetwork:
    """Created from inside the node namespace (the runner's own); pods and outside hang off it."""

    prefix: str
    index: int
    pods: dict[str, str] = field(default_factory=dict)
    outside_addresses: list[str] = field(default_factory=list)
    _next_pod: int = 10
    _next_outside: int = 10

    @property
    def pod_cidr(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{self.index}.0/24")

    @property
    def outside_cidr(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.245.{self.index}.0/24")

    @property
    def gateway(self) -> str:
        return str(self.pod_cidr.network_address + 1)

    @property
    def outside_ns(self) -> str:
        return f"{self.prefix}-outside"

    def setup(self) -> None:
        """Bridge and NAT in this (node) namespace, and the outside namespace."""
        run(IP, "link", "set", "lo", "up")
        run(IP, "link", "add", "br0", "type", "bridge")
        run(IP, "addr", "add", f"{self.gateway}/24", "dev", "br0")
        run(IP, "link", "set", "br0", "up")
        run("/usr/sbin/sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        self.teardown()  # what an interrupted run left
        run(IP, "netns", "add", self.outside_ns)
        outside_gateway = str(self.outside_cidr.network_address + 1)
        run(IP, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", self.outside_ns)
        run(IP, "addr", "add", f"{outside_gateway}/24", "dev", "vout")
        run(IP, "link", "set", "vout", "up")
        for args in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up")):
            run(IP, "-n", self.outside_ns, *args)
        rules = (
            "table ip e2e_nat {\n"
            "  chain postrouting {\n"
            "    type nat hook postrouting priority 100;\n"
            f'    ip saddr {self.pod_cidr} oifname "vout" masquerade\n'
            "  }\n"
            "}\n"
        )
        done = subprocess.run([NFT, "-f", "-"], input=rules, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nft failed: {done.stderr.strip()}")

    def add_outside_address(self) -> str:
        """A new address in the outside namespace, for one external service host name."""
        address = str(self.outside_cidr.network_address + self._next_outside)
        self._next_outside += 1
        run(IP, "-n", self.outside_ns, "addr", "add", f"{address}/24", "dev", "eth0")
        run(IP, "-n", self.outside_ns, "route", "replace", "default", "via",
            str(self.outside_cidr.network_address + 1))
        self.outside_addresses.append(address)
        return address

    def add_pod(self, pod: str) -> tuple[str, str]:
        """A namespace and address for a pod; returns (netns name, pod IP)."""
        ns = f"{self.prefix}-p{self._next_pod}"
        address = str(self.pod_cidr.network_address + self._next_pod)
        host_if = f"vp{self._next_pod}"
        self._next_pod += 1
        delete_netns(ns)
        run(IP, "netns", "add", ns)
        run(IP, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run(IP, "link", "set", host_if, "master", "br0", "up")
        for args in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                     ("addr", "add", f"{address}/24", "dev", "eth0"),
                     ("route", "add", "default", "via", self.gateway)):
            run(IP, "-n", ns, *args)
        self.pods[pod] = ns
        return ns, address

    def teardown(self) -> None:
        """Every namespace of this stack, by prefix: a pod name used twice (a Job run again)
        replaces its entry in `pods`, and a crashed run leaves its own behind."""
        for ns in netns_names():
            # Not the node: this runner lives there (the orchestrator removes it).
            if ns.startswith(f"{self.prefix}-") and ns != node_namespace(self.prefix):
                delete_netns(ns)
