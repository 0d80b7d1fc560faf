"""The cluster and clients the shared scenarios read, backed by kubectl on a real cluster.

`KubectlCluster` has the members of `tests.e2e.cluster.Cluster` the shared scenarios read,
`KubectlClients` those of `tests.e2e.clients.Clients`: the API and admin through `kubectl
port-forward svc/...`, PostgreSQL and both Redis through `kubectl exec` in their pods (psql over
the local socket, redis-cli with the password the cache pod has as a file, read by its shell),
the bucket through a port-forward to MinIO and boto3. Secrets are read with `kubectl get secret`
into memory only: never printed, never put on a command line; the wallet client.js signs with
goes to a 0600 file under the work directory.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from components.data_containers import authenticated_redis_cli
from tests.e2e.clients import HERE, SMALL, endpoints, http_get
from tests.e2e.upstream.dependencies import locked_version
from tools.harness import ROOT

COMPONENT = "app.kubernetes.io/component"
# The upstream's modules client.js needs, at the versions the upstream tree here resolves.
CLIENT_PACKAGES = ("@dha-team/arbundles", "arweave")
FORWARDED = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")


class KubectlError(RuntimeError):
    pass


@dataclass
class Kubectl:
    namespace: str
    context: Optional[str] = None

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", *(["--context", self.context] if self.context else []), "-n", self.namespace, *args]

    def run(self, *args: str, stdin: Optional[str] = None, timeout: float = 60, check: bool = True) -> str:
        done = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            # The command, not its input: secrets only ever travel on stdin.
            raise KubectlError(f"kubectl {' '.join(args[:3])}: exit {done.returncode}: {done.stderr.strip()[-400:]}")
        return done.stdout

    def json(self, *args: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json"))
        return result

    def port_forward(self, target: str, port: int, timeout: float = 30) -> tuple[subprocess.Popen[str], int]:
        """`kubectl port-forward TARGET :PORT`: kubectl picks a free local port and says which."""
        proc = subprocess.Popen(self.argv("port-forward", "--address", "127.0.0.1", target, f":{port}"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
            match = FORWARDED.search(line)
            if match and int(match.group(2)) == port:
                return proc, int(match.group(1))
        proc.kill()
        proc.wait()
        raise KubectlError(f"port-forward {target} :{port}: no forwarding line within {timeout:.0f} s: {seen[-3:]}")


# ---------------------------------------------------------------- the cluster, as the scenarios read it


@dataclass
class RemoteContainer:
    kubectl: Kubectl
    pod: str
    name: str
    restarts: int
    is_running: bool

    def running(self) -> bool:
        return self.is_running

    def logs(self) -> str:
        return self.kubectl.run("logs", self.pod, "-c", self.name, check=False)


@dataclass
class RemotePod:
    name: str
    ip: str
    ready: bool
    containers: list[RemoteContainer]


@dataclass
class RemoteObject:
    kind: str
    name: str
    manifest: dict[str, Any]


@dataclass
class RemoteWorkload:
    component: str
    obj: RemoteObject
    pods: list[RemotePod]


@dataclass
class SecretStore:
    kubectl: Kubectl

    @property
    def secrets(self) -> dict[str, dict[str, str]]:
        items = self.kubectl.json("secrets")["items"]
        return {s["metadata"]["name"]: {k: base64.b64decode(v).decode(errors="replace")
                                        for k, v in (s.get("data") or {}).items()} for s in items}


class KubectlCluster:
    """The parts of `tests.e2e.cluster.Cluster` the shared scenarios read, from the real cluster."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.namespace = kubectl.namespace
        self.store = SecretStore(kubectl)
        self._config: Optional[dict[str, str]] = None

    def _pod(self, item: dict[str, Any]) -> RemotePod:
        status = item.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        statuses = {c["name"]: c for c in status.get("containerStatuses") or []}
        containers = [RemoteContainer(self.kubectl, item["metadata"]["name"], c["name"],
                                      int(statuses.get(c["name"], {}).get("restartCount", 0)),
                                      "running" in (statuses.get(c["name"], {}).get("state") or {}))
                      for c in item["spec"]["containers"]]
        return RemotePod(item["metadata"]["name"], status.get("podIP", ""), ready, containers)

    def _pods(self, component: str, live: bool) -> list[RemotePod]:
        items = self.kubectl.json("pods", "-l", f"{COMPONENT}={component}")["items"]
        if live:  # what a Service would send to: not finished, not terminating
            items = [i for i in items if (i.get("status") or {}).get("phase") == "Running"
                     and not i["metadata"].get("deletionTimestamp")]
        return [self._pod(i) for i in sorted(items, key=lambda i: i["metadata"]["name"])]

    def pods(self, component: str) -> list[RemotePod]:
        return self._pods(component, live=True)

    def all_pods(self, component: str) -> list[RemotePod]:
        return self._pods(component, live=False)

    @property
    def workloads(self) -> dict[str, RemoteWorkload]:
        found = {}
        for item in self.kubectl.json("deployments,statefulsets,jobs")["items"]:
            meta = item["metadata"]
            component = (meta.get("labels") or {}).get(COMPONENT, meta["name"])
            obj = RemoteObject(item["kind"], meta["name"], item)
            found[f"{item['kind']}/{meta['name']}"] = RemoteWorkload(
                component, obj, self._pods(component, live=item["kind"] != "Job"))
        return found

    def deployment(self, name: str) -> dict[str, Any]:
        return self.kubectl.json("deployment", name)

    def config(self) -> dict[str, str]:
        """The bundler's settings ConfigMap: the one the API Deployment takes its environment from."""
        if self._config is None:
            spec = self.deployment("bundler-api")["spec"]["template"]["spec"]
            names = [e["configMapRef"]["name"] for c in spec["containers"] for e in c.get("envFrom") or []
                     if "configMapRef" in e and e["configMapRef"]["name"].startswith("bundler-settings")]
            if not names:
                raise KubectlError("deployment bundler-api takes no bundler-settings ConfigMap")
            self._config = dict(self.kubectl.json("configmap", names[0]).get("data") or {})
        return self._config

    def wait(self, condition: Callable[[], bool], timeout: float) -> Optional[float]:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if condition():
                return time.monotonic() - started
            time.sleep(1)  # each check is a kubectl round trip
        return None


# ---------------------------------------------------------------- clients, as the scenarios use them


def client_modules(into: Path) -> Path:
    """node_modules with client.js's packages, at the committed yarn.lock's versions (installed once)."""
    specs = [f"{name}@{locked_version(name)}" for name in CLIENT_PACKAGES]
    stamp = into / "installed"
    if stamp.exists() and stamp.read_text().split() == specs:
        return into / "node_modules"
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "install", "--prefix", str(into), "--no-save", "--no-audit", "--no-fund", *specs],
                   check=True, capture_output=True, text=True, timeout=600)
    stamp.write_text("\n".join(specs))
    return into / "node_modules"


@dataclass
class KubectlClients:
    """`tests.e2e.stack.Clients`' interface (sql, redis, s3_keys, upload, http, endpoints), through kubectl."""

    kubectl: Kubectl
    cluster: KubectlCluster
    root: Path
    node_path: Optional[Path] = None
    endpoints: dict[str, Any] = field(default_factory=dict)
    wallet: str = ""
    forwards: dict[str, tuple[subprocess.Popen[str], int]] = field(default_factory=dict)

    def connect(self) -> None:
        """Read the app's credentials and wallet from the Secrets the API Deployment uses."""
        spec = self.cluster.deployment("bundler-api")["spec"]["template"]["spec"]
        refs = {e["valueFrom"]["secretKeyRef"]["name"] for c in spec["containers"] for e in c.get("env") or []
                if "secretKeyRef" in (e.get("valueFrom") or {})}
        wallets = {v["secret"]["secretName"] for v in spec.get("volumes") or [] if "secret" in v}
        stored = self.cluster.store.secrets
        creds = next(stored[n] for n in sorted(refs) if n.startswith("bundler-credentials"))
        self.wallet = next(stored[n]["wallet.json"] for n in sorted(wallets) if n.startswith("bundler-wallets"))
        self.endpoints = endpoints(creds)
        self.root.mkdir(parents=True, exist_ok=True)
        self.wallet_file.touch(mode=0o600)
        self.wallet_file.chmod(0o600)
        self.wallet_file.write_text(self.wallet)

    @property
    def wallet_file(self) -> Path:
        return self.root / "wallet.json"

    def close(self) -> None:
        for proc, _ in self.forwards.values():
            proc.terminate()
            proc.wait(10)
        self.forwards.clear()
        self.wallet_file.unlink(missing_ok=True)

    def forward(self, service: str) -> str:
        """http://127.0.0.1:PORT for a Service's first port, one port-forward per Service."""
        proc, local = self.forwards.get(service, (None, 0))
        if proc is None or proc.poll() is not None:
            port = int(self.kubectl.json("service", service)["spec"]["ports"][0]["port"])
            self.forwards[service] = proc, local = self.kubectl.port_forward(f"svc/{service}", port)
        return f"http://127.0.0.1:{local}"

    def sql(self, query: str) -> str:
        # The local socket in the postgres container, as its own user: no password leaves the pod.
        done = subprocess.run(
            self.kubectl.argv("exec", "-i", "statefulset/bundler-postgres", "-c", "postgres", "--", "sh", "-c",
                              'exec psql -X -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"'),
            input=query, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr.strip()}")
        return done.stdout.strip()

    def redis(self, which: str, *args: str) -> str:
        c = self.cluster.config()
        name, port = ("redis-queue", c["REDIS_PORT_QUEUES"]) if which == "queue" else ("redis-cache",
                                                                                         c["ELASTICACHE_PORT"])
        # The cache's redis-cli authenticates as its probes do, from the pod's mounted password file.
        cli = authenticated_redis_cli("-p", port, *args) if which == "cache" else ["redis-cli", "-p", port, *args]
        done = subprocess.run(self.kubectl.argv("exec", f"statefulset/bundler-{name}", "-c", name, "--", *cli),
                              capture_output=True, text=True, timeout=15)
        return done.stdout.strip()

    def s3_keys(self, prefix: str) -> list[str]:
        import boto3
        import botocore.config

        c = self.cluster.config()
        client = boto3.client("s3", endpoint_url=self.forward("bundler-minio"), region_name=c["AWS_REGION"],
                              aws_access_key_id=self.endpoints["s3_key"],
                              aws_secret_access_key=self.endpoints["s3_secret"],
                              config=botocore.config.Config(s3={"addressing_style": "path"}))
        listing = client.list_objects_v2(Bucket=c["DATA_ITEM_BUCKET"], Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents") or []]

    def upload(self, url: str, size: int = SMALL, slow_ms: int = 0) -> dict[str, Any]:
        if self.node_path is None:
            self.node_path = client_modules(ROOT / "build" / "e2e-remote" / "client")
        args = ["upload", "--jwk", str(self.wallet_file), "--url", url, "--size", str(size)]
        if slow_ms:
            args += ["--slow-ms", str(slow_ms)]
        env = {"PATH": os.environ["PATH"], "NODE_PATH": str(self.node_path)}
        done = subprocess.run(["node", str(HERE / "client.js"), *args], env=env, capture_output=True, text=True,
                              timeout=120)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"client.js printed no result (exit {done.returncode}): {done.stderr[-800:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def http(self, url: str, auth: Optional[tuple[str, str]] = None, timeout: float = 10) -> tuple[int, str]:
        return http_get(url, auth, timeout)
