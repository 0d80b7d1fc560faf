"""Network namespaces for one stack: a node, a pod network, and an "outside" reached by NAT.

Layout (all namespaces made by this test and removed after it; no traffic reaches the host's
own interfaces or leaves the machine):

    outside (10.245.N.0/24)  <- veth ->  node (runner, kubelet, 10.244.N.1)  <- a veth per pod ->  pods (10.244.N.x/32)

The node namespace plays the Kubernetes node: the runner runs there, so httpGet/tcpSocket
probes come from the node, as the kubelet's do. Each pod has its own namespace and address,
so `status.podIP` is real and several replicas can listen on the same port. Pods are routed,
not bridged (as Calico and the cloud CNIs do): each pod's only route is the node, so every
packet between pods, and to a Service address, crosses the node's netfilter, where
`tests.e2e.services` translates Service addresses as kube-proxy does. Traffic from pods to the
outside is masqueraded by the node (nftables), as a cluster's egress NAT does: that is how
prod's managed services see the pods, and why a probe must not rely on the pod address.
"""

from __future__ import annotations

import ipaddress
import re
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
    def outside_gateway(self) -> str:
        """The node's address towards the outside: a source no probe uses."""
        return str(self.outside_cidr.network_address + 1)

    @property
    def outside_ns(self) -> str:
        return f"{self.prefix}-outside"

    def setup(self) -> None:
        """Bridge and NAT in this (node) namespace, and the outside namespace."""
        run(IP, "link", "set", "lo", "up")
        run("/usr/sbin/sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        self.teardown()  # what an interrupted run left
        run(IP, "netns", "add", self.outside_ns)
        run(IP, "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", self.outside_ns)
        run(IP, "addr", "add", f"{self.outside_gateway}/24", "dev", "vout")
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
        # The node answers for the gateway on every pod link; the pod is a /32 behind it.
        run(IP, "addr", "add", f"{self.gateway}/32", "dev", host_if)
        run(IP, "link", "set", host_if, "up")
        run(IP, "route", "add", f"{address}/32", "dev", host_if)
        for args in (("link", "set", "lo", "up"), ("link", "set", "eth0", "up"),
                     ("addr", "add", f"{address}/32", "dev", "eth0"),
                     ("route", "add", self.gateway, "dev", "eth0", "scope", "link"),
                     ("route", "add", "default", "via", self.gateway, "dev", "eth0")):
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


def partition(netns: str, address: str, port: int, on: bool) -> None:
    """Inside one pod: refuse (or allow again) its connections to address:port, a network fault
    that the pod's other traffic does not see."""
    rules = "table ip e2e_fault\ndelete table ip e2e_fault\n"
    if on:
        rules += ("table ip e2e_fault {\n  chain output {\n    type filter hook output priority 0;\n"
                  f"    ip daddr {address} tcp dport {port} reject with tcp reset\n  }}\n}}\n")
    done = subprocess.run(["/usr/bin/nsenter", f"--net=/run/netns/{netns}", NFT, "-f", "-"], input=rules,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nft in {netns} failed: {done.stderr.strip()}")


def count_syns(netns: str, source: str, port: int) -> None:
    """Inside one pod: count the connections from `source` to its `port` (a counter in the pod's
    own netfilter, so it sees what reached the pod, whatever routed it there)."""
    rules = ("table ip e2e_count\ndelete table ip e2e_count\ntable ip e2e_count {\n  chain input {\n"
             "    type filter hook input priority 0;\n"
             f"    ip saddr {source} tcp dport {port} tcp flags & (syn | ack) == syn counter\n  }}\n}}\n")
    done = subprocess.run(["/usr/bin/nsenter", f"--net=/run/netns/{netns}", NFT, "-f", "-"], input=rules,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nft in {netns} failed: {done.stderr.strip()}")


def syns_counted(netns: str) -> int:
    done = subprocess.run(["/usr/bin/nsenter", f"--net=/run/netns/{netns}", NFT, "list", "table", "ip", "e2e_count"],
                          capture_output=True, text=True)
    found = re.search(r"counter packets (\d+)", done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"no connection counter in {netns}: {done.stderr.strip()}")
    return int(found.group(1))
