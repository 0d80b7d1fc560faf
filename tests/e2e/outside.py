"""Services outside the cluster, served locally under the names the stacks use.

prod's managed PostgreSQL, cache Redis (TLS and a password), queue Redis and S3 (HTTPS,
virtual-hosted bucket names) run in the stack's "outside" namespace under prod's own host
names, and both stacks' Arweave gateway stand-in runs there too. The pods reach them through
the node's NAT, as a cluster reaches managed services. A test CA signs the certificates; the
bundler trusts it through NODE_EXTRA_CA_CERTS, standing in for the public CA chain a managed
service's certificate has.
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import spawn
from tests.e2e.images import STAND_INS
from tests.e2e.network import StackNetwork
from tests.probes.servers import pg_binary

NSENTER = "/usr/bin/nsenter"
GATEWAY_HOST, GATEWAY_PORT = "arweave-gateway.e2e.internal", 1984


def make_tls(directory: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `names`; returns (ca, cert, key) paths."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x402-bundler e2e test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    for p in paths:
        os.chmod(p, 0o644)
    return paths


def wait_port(address: str, port: int, timeout: float, what: str,
              proc: Optional[subprocess.Popen[bytes]] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} not listening on {address}:{port} after {timeout:.0f} s")


@dataclass
class OutsideService:
    """One process in the outside namespace, which a fault can stop and start again."""

    name: str
    netns: str
    argv: list[str]
    address: str
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    user: Optional[int] = None
    proc: Optional[subprocess.Popen[bytes]] = None
    secret_files: list[Path] = field(default_factory=list)
    """Files that hold a credential, removed at tear-down (`forget`)."""

    def start(self) -> OutsideService:
        # Killed with the runner, however it ends (setpriv sets the parent-death signal last,
        # after the uid change, which would clear it).
        prefix = [NSENTER, f"--net=/run/netns/{self.netns}", "/usr/bin/setpriv"]
        if self.user is not None:
            prefix += [f"--reuid={self.user}", f"--regid={self.user}", "--clear-groups"]
        prefix += ["--pdeathsig", "KILL"]
        with open(self.log, "ab") as out:
            self.proc = spawn.popen([*prefix, *self.argv], env={**os.environ, **self.env}, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.address, self.port, 30, self.name, self.proc)
        return self

    def forget(self) -> None:
        self.stop()
        for path in self.secret_files:
            path.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown; others stop on it too
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def postgres(netns: str, root: Path, address: str, port: int, user: str, password: str, database: str,
             max_connections: int) -> OutsideService:
    """A managed-database stand-in: the app's role with a password, no TLS (the app never uses it)."""
    server_user = int(subprocess.run(["id", "-u", "postgres"], capture_output=True, text=True, check=True).stdout)
    data = root / "pgdata"
    root.mkdir(parents=True, exist_ok=True)
    shutil.chown(root, server_user, server_user)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    shutil.chown(pwfile, server_user, server_user)
    subprocess.run(["/usr/bin/setpriv", f"--reuid={server_user}", f"--regid={server_user}", "--clear-groups",
                    pg_binary("initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth-local=trust",
                    "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C"],
                   check=True, capture_output=True)
    pwfile.unlink()
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
    service = OutsideService(
        "postgres", netns,
        [pg_binary("postgres"), "-D", str(data), "-c", f"listen_addresses={address}", "-p", str(port),
         "-c", f"unix_socket_directories={root}", "-c", f"max_connections={max_connections}",
         "-c", "fsync=off", "-c", "synchronous_commit=off"],
        address, port, root / "postgres.log", user=server_user).start()
    subprocess.run(["/usr/bin/setpriv", f"--reuid={server_user}", f"--regid={server_user}", "--clear-groups",
                    pg_binary("psql"), "-X", "-q", "-h", str(root), "-p", str(port), "-U", user, "-d", "postgres",
                    "-c", f'CREATE DATABASE "{database}"'], check=True, capture_output=True)
    return service


def redis(netns: str, root: Path, name: str, address: str, port: int, password: Optional[str] = None,
          tls: Optional[tuple[Path, Path, Path]] = None, noeviction: bool = False) -> OutsideService:
    root.mkdir(parents=True, exist_ok=True)
    conf = root / f"{name}.conf"
    lines = [f"bind {address}", "save \"\"", "appendonly no", f"dir {root}", "protected-mode no"]
    if password:
        lines.append(f"requirepass {password}")
    if noeviction:
        lines.append("maxmemory-policy noeviction")
    if tls:
        ca, cert, key = tls
        lines += ["port 0", f"tls-port {port}", f"tls-cert-file {cert}", f"tls-key-file {key}",
                  f"tls-ca-cert-file {ca}", "tls-auth-clients no"]
    else:
        lines.append(f"port {port}")
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    return OutsideService(name, netns, ["/usr/bin/redis-server", str(conf)], address, port,
                          root / f"{name}.log", secret_files=[conf] if password else []).start()


def s3(netns: str, root: Path, address: str, tls: tuple[Path, Path, Path], bucket: str) -> OutsideService:
    """S3 under AWS's names over HTTPS, holding the bucket (in memory: a restart empties it)."""
    _, cert, key = tls
    root.mkdir(parents=True, exist_ok=True)
    service = OutsideService(
        "s3", netns, [sys.executable, str(STAND_INS / "minio.py"), "server", str(root / "data"), "--address",
                      f"{address}:443"],
        address, 443, root / "s3.log",
        env={"E2E_TLS_CERT": str(cert), "E2E_TLS_KEY": str(key), "E2E_REQUEST_LOG": str(root / "requests.log"),
             "E2E_CREATE_BUCKET": bucket, "E2E_NO_AUTH": "1"}).start()
    return service


def gateway(netns: str, root: Path, address: str, port: int) -> OutsideService:
    root.mkdir(parents=True, exist_ok=True)
    return OutsideService(
        "arweave-gateway", netns,
        [sys.executable, "-m", "tests.e2e.gateway", "--host", address, "--port", str(port)],
        address, port, root / "gateway.log", env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])}).start()


@dataclass
class Outside:
    """Where the stack's external services live and how the runner reaches them."""

    hosts: dict[str, str] = field(default_factory=dict)
    services: dict[str, OutsideService] = field(default_factory=dict)
    tls: Optional[tuple[Path, Path, Path]] = None


def start_outside(net: StackNetwork, root: Path, config: dict[str, str], values: dict[str, str]) -> Outside:
    out = Outside()
    address = net.add_outside_address()
    out.hosts[GATEWAY_HOST] = address
    out.services["gateway"] = gateway(net.outside_ns, root / "gateway", address, GATEWAY_PORT)
    if config.get("x402-bundler:dataMode") != "external":
        return out
    k = "x402-bundler:"
    bucket, region = config.get(k + "s3Bucket", "bundler-data-items"), config.get(k + "s3Region", "us-east-1")
    s3_names = [f"{bucket}.s3.{region}.amazonaws.com", f"s3.{region}.amazonaws.com",
                f"{bucket}.s3.amazonaws.com", "s3.amazonaws.com"]
    cache_host = config[k + "cacheRedisHost"]
    out.tls = make_tls(root / "tls", [cache_host, *s3_names])
    addresses = {name: net.add_outside_address() for name in ("db", "cache", "queue", "s3")}
    out.hosts.update({config[k + "dbHost"]: addresses["db"], cache_host: addresses["cache"],
                      config[k + "queueRedisHost"]: addresses["queue"]})
    out.hosts.update({name: addresses["s3"] for name in s3_names})
    out.services["postgres"] = postgres(
        net.outside_ns, root / "db", addresses["db"], int(config.get(k + "dbPort", "5432")),
        config.get(k + "dbUser", "bundler"), values["dbPassword"], config.get(k + "dbDatabase", "bundler_lite"),
        int(config.get(k + "dbMaxConnections", "100")))
    out.services["redis-cache"] = redis(
        net.outside_ns, root / "cache", "cache", addresses["cache"], int(config.get(k + "cacheRedisPort", "6379")),
        password=values["cacheRedisPassword"], tls=out.tls if config.get(k + "cacheRedisTls") == "true" else None)
    out.services["redis-queue"] = redis(
        net.outside_ns, root / "queue", "queue", addresses["queue"], int(config.get(k + "queueRedisPort", "6381")),
        noeviction=True)
    # A managed bucket exists before the app runs: the operator made it.
    out.services["s3"] = s3(net.outside_ns, root / "s3", addresses["s3"], out.tls, bucket)
    return out
