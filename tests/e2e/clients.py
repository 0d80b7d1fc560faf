"""The runner's own view of a stack's data (psql, redis-cli, boto3) and a client pod for uploads.

The runner sits on the node and reaches everything by the names the pods use: a Service name
resolves to its virtual address (translated by the node's rules, as kube-proxy does), an
external service's name to its address in the outside namespace. Uploads come from a client
pod of their own, with the cluster's hosts file and the app's modules, signing with the
stack's wallet (tests/e2e/client.js).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.e2e import timeouts
from tests.e2e.cluster import Cluster
from tests.e2e.network import delete_netns

HERE = Path(__file__).resolve().parent
NSENTER = "/usr/bin/nsenter"
# Where the client pod finds the stack's wallet.
CLIENT_WALLET = "/run/e2e/wallet.json"
# Upload sizes: well under and over dev's 10 KiB free tier.
SMALL, LARGE = 1024, 64 * 1024


def http_get(url: str, auth: Optional[tuple[str, str]] = None, timeout: float = 10) -> tuple[int, str]:
    """(status, body); status 0 and the error as body when nothing answered."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError as error:
        return 0, str(error)


def endpoints(credentials: dict[str, str]) -> dict[str, Any]:
    """What the runner's clients need from the app's credentials Secret (bundler-credentials-*)."""
    return {"db_password": credentials["db-password"], "cache_password": credentials.get("cache-redis-password", ""),
            "s3_key": credentials["s3-access-key-id"], "s3_secret": credentials["s3-secret-access-key"],
            "admin_password": credentials["admin-password"]}


def host_of(url: str) -> str:
    return url.split("//", 1)[1].split("/")[0].split(":")[0]


@dataclass
class Clients:
    cluster: Cluster
    app_dir: Path
    wallet_file: Path
    tls_ca: Optional[Path]
    endpoints: dict[str, Any] = field(default_factory=dict)
    client_ns: str = ""

    def __post_init__(self) -> None:
        self.client_ns, self.client_ip = self.cluster.net.add_pod("e2e-client")
        self.client_etc = self.cluster.etc_files("e2e-client", self.client_ip, {"containers": []})

    def resolve(self, host: str) -> str:
        """What the host name resolves to for a pod (a Service's address, an outside address)."""
        return self.cluster.hosts.get(host, [host])[0]

    def sql(self, query: str) -> str:
        c = self.cluster.config()
        env = {"PGPASSWORD": self.endpoints["db_password"], "PATH": os.environ["PATH"], "PGCONNECT_TIMEOUT": "5"}
        done = subprocess.run(
            ["psql", "-X", "-At", "-h", self.resolve(c["DB_HOST"]), "-p", c["DB_PORT"],
             "-U", c["DB_USER"], "-d", c["DB_DATABASE"], "-c", query],
            env=env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr.strip()}")
        return done.stdout.strip()

    def redis(self, which: str, *args: str) -> str:
        c = self.cluster.config()
        if which == "queue":
            host, port, extra = c["REDIS_HOST"], c["REDIS_PORT_QUEUES"], []
        else:
            host, port = c["ELASTICACHE_HOST"], c["ELASTICACHE_PORT"]
            extra = ["--no-auth-warning", "-a", self.endpoints["cache_password"]]
            if c.get("ELASTICACHE_USE_TLS") == "true" and self.tls_ca:
                extra += ["--tls", "--cacert", str(self.tls_ca), "--sni", host, "--insecure"]
        done = subprocess.run(["redis-cli", "-h", self.resolve(host), "-p", port, *extra, *args],
                              capture_output=True, text=True, timeout=15)
        return done.stdout.strip()

    def s3_keys(self, prefix: str) -> list[str]:
        import boto3
        import botocore.config

        c = self.cluster.config()
        endpoint = c.get("AWS_ENDPOINT")
        if endpoint:
            url = endpoint.replace(host_of(endpoint), self.resolve(host_of(endpoint)), 1)
        else:
            url = f"https://{self.resolve('s3.' + c['AWS_REGION'] + '.amazonaws.com')}"
        client = boto3.client("s3", endpoint_url=url, region_name=c["AWS_REGION"], verify=False,
                              aws_access_key_id=self.endpoints["s3_key"],
                              aws_secret_access_key=self.endpoints["s3_secret"],
                              config=botocore.config.Config(s3={"addressing_style": "path"}))
        listing = client.list_objects_v2(Bucket=c["DATA_ITEM_BUCKET"], Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents") or []]

    def node(self, *args: str, timeout: float = timeouts.REQUEST) -> dict[str, Any]:
        """Run tests/e2e/client.js in the client pod: the cluster's hosts file, the app's modules."""
        # Fixed mount points: the checkout may be under /tmp, which the client's own /tmp covers.
        argv = [NSENTER, f"--net=/run/netns/{self.client_ns}", "/usr/bin/bwrap", "--die-with-parent",
                "--tmpfs", "/", "--tmpfs", "/tmp", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
                "--ro-bind", str(self.client_etc["hosts"]), "/etc/hosts",
                "--ro-bind", str(self.client_etc["resolv.conf"]), "/etc/resolv.conf",
                "--ro-bind", str(self.app_dir), "/app", "--ro-bind", str(HERE), "/opt/e2e-tests",
                "--ro-bind", str(self.wallet_file), CLIENT_WALLET,
                "--dev", "/dev", "--proc", "/proc",
                "node", "/opt/e2e-tests/client.js", *args]
        env = {"PATH": "/usr/bin:/bin", "NODE_PATH": "/app/node_modules"}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"client.js printed no result (exit {done.returncode}): {done.stderr[-800:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def upload(self, url: str, size: int = SMALL, slow_ms: int = 0) -> dict[str, Any]:
        args = ["upload", "--jwk", CLIENT_WALLET, "--url", url, "--size", str(size)]
        if slow_ms:
            args += ["--slow-ms", str(slow_ms)]
        return self.node(*args)

    def http(self, url: str, auth: Optional[tuple[str, str]] = None, timeout: float = 10) -> tuple[int, str]:
        """GET as a pod would: the host name resolved through the cluster's hosts file."""
        host = host_of(url)
        return http_get(url.replace(host, self.resolve(host), 1), auth, timeout)

    def close(self) -> None:
        delete_netns(self.client_ns)
        self.wallet_file.unlink(missing_ok=True)
