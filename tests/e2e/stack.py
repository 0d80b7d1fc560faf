"""One stack's runtime test: render it, run it, break it, and report one line per scenario.

Runs inside the stack's node network namespace (see `tests.e2e.__main__`). The program is
evaluated for the stack with test secrets (a real Arweave wallet generated now) and the few
test-only overrides in `TEST_OVERRIDES`; every other value is the stack file's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from components.data_containers import redis_ping
from components.settings.budget import connection_peak
from tests.e2e import outside
from tests.e2e.cluster import Cluster
from tests.e2e.images import ImageSet
from tests.e2e.kubelet import Container, Events, Pod
from tests.e2e.network import StackNetwork
from tests.e2e.usage import MEMORY_MARGIN, Meter
from tests.e2e.wallet import address_of, generate_jwk
from tools.harness import ROOT, Recording, run_program, stack_config
from tools.render import promote_outputs
from tools.upstream import Prepared, prepare

HERE = Path(__file__).resolve().parent
GATEWAY_HOST, GATEWAY_PORT = "arweave-gateway.e2e.internal", 1984
# Test-only changes to the stacks, each with its reason. Nothing else differs from the files.
TEST_OVERRIDES: dict[str, dict[str, Any]] = {
    # Nothing outside this machine answers: every stack uses the local gateway stand-in.
    "dev": {"arweaveGateway": f"http://{GATEWAY_HOST}:{GATEWAY_PORT}"},
    "local": {"arweaveGateway": f"http://{GATEWAY_HOST}:{GATEWAY_PORT}"},
    # prod takes no free uploads (freeUploadLimit 0, checked below as rendered), and paying
    # needs a live x402 facilitator; a 10 KiB free tier lets an unpaid upload exercise prod's
    # whole path (TLS cache, managed PostgreSQL, S3 by virtual-hosted name) here.
    "prod": {"arweaveGateway": f"http://{GATEWAY_HOST}:{GATEWAY_PORT}", "freeUploadLimit": 10240},
}
STACK_INDEX = {"dev": 1, "prod": 2, "local": 3}
# Where the client pod finds the stack's wallet.
CLIENT_WALLET = "/run/e2e/wallet.json"
# Upload sizes: well under and over dev's 10 KiB free tier.
SMALL, LARGE = 1024, 64 * 1024
# How long the pods are left alone, Ready, to measure their idle use (probes included).
IDLE_SECONDS = 20


@dataclass
class Report:
    stack: str
    passed: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, scenario: str, ok: bool, detail: str) -> bool:
        with self.lock:
            if ok:
                self.passed += 1
            else:
                self.failed += 1
            print(f"e2e: {self.stack}: {scenario}: {'ok' if ok else 'FAIL'} ({detail})", flush=True)
        return ok


# ---------------------------------------------------------------- the stack's environment


@dataclass
class Outside:
    """Where the stack's external services live and how the runner reaches them."""

    hosts: dict[str, str] = field(default_factory=dict)
    services: dict[str, outside.OutsideService] = field(default_factory=dict)
    tls: Optional[tuple[Path, Path, Path]] = None


def test_secrets(stack: str) -> dict[str, str]:
    """Real values for the secrets the stack needs; letters and digits only, as generated ones."""
    values = {"arweaveWallet": generate_jwk()}
    if stack_config(stack).get("x402-bundler:dataMode") == "external":
        values |= {key: secrets.token_hex(16) for key in
                   ("dbPassword", "cacheRedisPassword", "s3AccessKeyId", "s3SecretAccessKey")}
    if stack_config(stack).get("x402-bundler:paymentNetwork") == "base":
        values |= {"cdpApiKeyId": secrets.token_hex(8), "cdpApiKeySecret": secrets.token_hex(16)}
    return values


def start_outside(stack: str, net: StackNetwork, root: Path, config: dict[str, str], values: dict[str, str]) -> Outside:
    out = Outside()
    address = net.add_outside_address()
    out.hosts[GATEWAY_HOST] = address
    out.services["gateway"] = outside.gateway(net.outside_ns, root / "gateway", address, GATEWAY_PORT)
    if config.get("x402-bundler:dataMode") != "external":
        return out
    k = "x402-bundler:"
    bucket, region = config.get(k + "s3Bucket", "bundler-data-items"), config.get(k + "s3Region", "us-east-1")
    s3_names = [f"{bucket}.s3.{region}.amazonaws.com", f"s3.{region}.amazonaws.com",
                f"{bucket}.s3.amazonaws.com", "s3.amazonaws.com"]
    cache_host = config[k + "cacheRedisHost"]
    out.tls = outside.make_tls(root / "tls", [cache_host, *s3_names])
    addresses = {name: net.add_outside_address() for name in ("db", "cache", "queue", "s3")}
    out.hosts.update({config[k + "dbHost"]: addresses["db"], cache_host: addresses["cache"],
                      config[k + "queueRedisHost"]: addresses["queue"]})
    out.hosts.update({name: addresses["s3"] for name in s3_names})
    out.services["postgres"] = outside.postgres(
        net.outside_ns, root / "db", addresses["db"], int(config.get(k + "dbPort", "5432")),
        config.get(k + "dbUser", "bundler"), values["dbPassword"], config.get(k + "dbDatabase", "bundler_lite"),
        int(config.get(k + "dbMaxConnections", "100")))
    out.services["redis-cache"] = outside.redis(
        net.outside_ns, root / "cache", "cache", addresses["cache"], int(config.get(k + "cacheRedisPort", "6379")),
        password=values["cacheRedisPassword"], tls=out.tls if config.get(k + "cacheRedisTls") == "true" else None)
    out.services["redis-queue"] = outside.redis(
        net.outside_ns, root / "queue", "queue", addresses["queue"], int(config.get(k + "queueRedisPort", "6381")),
        noeviction=True)
    # A managed bucket exists before the app runs: the operator made it.
    out.services["s3"] = outside.s3(net.outside_ns, root / "s3", addresses["s3"], out.tls, bucket)
    return out


# ---------------------------------------------------------------- clients the runner uses


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


@dataclass
class Clients:
    """The runner's own view of the data (psql, redis-cli, boto3) and an in-cluster client pod."""

    cluster: Cluster
    app: Prepared
    root: Path
    wallet_file: Path
    out: Outside
    endpoints: dict[str, Any] = field(default_factory=dict)
    client_ns: str = ""

    def __post_init__(self) -> None:
        self.client_ns, self.client_ip = self.cluster.net.add_pod("e2e-client")
        self.client_etc = self.cluster._etc_files("e2e-client", self.client_ip, {"containers": []})

    # Where the runner (on the node) reaches each service: a pod IP or an outside address.
    def _target(self, component: str, host: str) -> str:
        pods = self.cluster.pods(component)
        if pods:
            return pods[0].ip
        return self.out.hosts[host]

    def sql(self, query: str) -> str:
        c = self.cluster.config()
        env = {"PGPASSWORD": self.endpoints["db_password"], "PATH": os.environ["PATH"], "PGCONNECT_TIMEOUT": "5"}
        done = subprocess.run(
            ["psql", "-X", "-At", "-h", self._target("postgres", c["DB_HOST"]), "-p", c["DB_PORT"],
             "-U", c["DB_USER"], "-d", c["DB_DATABASE"], "-c", query],
            env=env, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"psql: {done.stderr.strip()}")
        return done.stdout.strip()

    def redis(self, which: str, *args: str) -> str:
        c = self.cluster.config()
        if which == "queue":
            host, port, extra = c["REDIS_HOST"], c["REDIS_PORT_QUEUES"], []
            target = self._target("redis-queue", host)
        else:
            host, port = c["ELASTICACHE_HOST"], c["ELASTICACHE_PORT"]
            target = self._target("redis-cache", host)
            extra = ["--no-auth-warning", "-a", self.endpoints["cache_password"]]
            if c.get("ELASTICACHE_USE_TLS") == "true" and self.out.tls:
                extra += ["--tls", "--cacert", str(self.out.tls[0]), "--sni", host, "--insecure"]
        done = subprocess.run(["redis-cli", "-h", target, "-p", port, *extra, *args],
                              capture_output=True, text=True, timeout=15)
        return done.stdout.strip()

    def s3_keys(self, prefix: str) -> list[str]:
        import boto3
        import botocore.config

        c = self.cluster.config()
        endpoint = c.get("AWS_ENDPOINT")
        if endpoint:
            url = endpoint.replace(endpoint.split("//", 1)[1].split(":")[0], self._target("minio", ""))
        else:
            url = f"https://{self.out.hosts['s3.' + c['AWS_REGION'] + '.amazonaws.com']}"
        client = boto3.client("s3", endpoint_url=url, region_name=c["AWS_REGION"], verify=False,
                              aws_access_key_id=self.endpoints["s3_key"],
                              aws_secret_access_key=self.endpoints["s3_secret"],
                              config=botocore.config.Config(s3={"addressing_style": "path"}))
        listing = client.list_objects_v2(Bucket=c["DATA_ITEM_BUCKET"], Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents") or []]

    def node(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        """Run tests/e2e/client.js in a client pod: the cluster's hosts file, the app's modules."""
        # Fixed mount points: the checkout may be under /tmp, which the client's own /tmp covers.
        argv = [outside.NSENTER, f"--net=/run/netns/{self.client_ns}", "/usr/bin/bwrap", "--die-with-parent",
                "--tmpfs", "/", "--tmpfs", "/tmp", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
                "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
                "--ro-bind", str(self.client_etc["hosts"]), "/etc/hosts",
                "--ro-bind", str(self.client_etc["resolv.conf"]), "/etc/resolv.conf",
                "--ro-bind", str(self.app.app_dir), "/app", "--ro-bind", str(HERE), "/opt/e2e-tests",
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
        host = url.split("//", 1)[1].split("/")[0].split(":")[0]
        return http_get(url.replace(host, self.resolve(url), 1), auth, timeout)

    def resolve(self, url: str) -> str:
        host = url.split("//", 1)[1].split("/")[0].split(":")[0]
        return self.cluster.hosts.get(host, [host])[0]


# ---------------------------------------------------------------- scenarios


class StackTest:
    def __init__(self, stack: str, workdir: Path, app: Prepared) -> None:
        self.stack = stack
        self.root = workdir
        self.app = app
        self.report = Report(stack)
        self.events = Events()
        self.config = {**stack_config(stack), **{f"x402-bundler:{k}": str(v) for k, v in TEST_OVERRIDES[stack].items()}}
        self.values = test_secrets(stack)
        self.net = StackNetwork(prefix=f"x402e2e-{stack}", index=STACK_INDEX[stack])

    def ok(self, scenario: str, ok: bool, detail: str) -> bool:
        return self.report.line(scenario, ok, detail)

    def render(self, overrides: Optional[dict[str, Any]] = None) -> Recording:
        values: dict[str, Optional[str]] = {**self.values}
        return run_program(self.stack, overrides=TEST_OVERRIDES[self.stack] if overrides is None else overrides,
                           secrets=values,
                           stack_outputs=promote_outputs(self.stack))

    def run(self) -> Report:
        self.net.setup()
        try:
            self.out = start_outside(self.stack, self.net, self.root / "outside", self.config, self.values)
            self.rec = self.render()
            ca_binds: tuple[tuple[Path, str], ...] = ()
            extra_env: dict[str, str] = {}
            if self.out.tls:
                ca_binds = ((self.out.tls[0].parent, "/opt/e2e-ca"),)
                extra_env = {"NODE_EXTRA_CA_CERTS": "/opt/e2e-ca/ca.pem"}
            images = ImageSet(self.app, self.config["x402-bundler:imageRepository"], self.root / "bin",
                              ROOT / "node_modules" / "yarn", extra_env, ca_binds)
            self.cluster = Cluster(self.stack, self.rec, images, self.net, self.root, self.out.hosts, self.events)
            wallet = self.root / "wallet.json"
            wallet.write_text(self.values["arweaveWallet"])
            self.clients = Clients(self.cluster, self.app, self.root, wallet, self.out, self._endpoints())
            self.scenarios()
        except Exception as error:  # a crash of the harness is a failure, never a skip
            self.ok("runner", False, f"{type(error).__name__}: {error}")
            import traceback

            traceback.print_exc()
        finally:
            self.teardown()
        return self.report

    def _endpoints(self) -> dict[str, Any]:
        store = self.cluster.store
        creds = next(v for k, v in store.secrets.items() if k.startswith("bundler-credentials"))
        return {"db_password": creds["db-password"], "cache_password": creds.get("cache-redis-password", ""),
                "s3_key": creds["s3-access-key-id"], "s3_secret": creds["s3-secret-access-key"],
                "admin_password": creds["admin-password"]}

    def teardown(self) -> None:
        with (self.root / "events.log").open("w") as log:
            log.writelines(f"{t:.1f} {who}: {what}\n" for t, who, what in self.events.lines)
        if hasattr(self, "cluster"):
            self.cluster.stop()
        for service in getattr(self, "out", Outside()).services.values():
            service.stop()
        self.net.teardown()

    # -- the list ----------------------------------------------------------------------

    def scenarios(self) -> None:
        applied = self.apply()
        if not applied:
            return
        meter = self.meter()
        with meter.window("idle"):
            time.sleep(IDLE_SECONDS)
        self.info()
        self.app_user()
        self.data_secret_files()
        self.upload()
        self.admin()
        with meter.window("burst"):
            self.connections()
        self.resources(meter)
        self.s3_probe_calls()
        self.database_password()
        self.worker_liveness_source()
        self.faults()
        self.termination()
        self.failed_migration()
        self.restarts_and_logs()

    def apply(self) -> bool:
        started = time.monotonic()
        workloads = self.cluster.apply(timeout=420)
        elapsed = time.monotonic() - started
        for w in workloads.values():
            if w.obj.kind == "Job" and w.component == "migration":
                continue
            if w.obj.kind == "Job":
                pods = ", ".join(f"{p.name} {p.phase}" for p in w.pods)
            else:
                pods = ", ".join(f"{p.name} ready" if p.ready else f"{p.name}: {self._why(p)}" for p in w.pods)
            self.ok(f"{w.obj.kind.lower()} {w.obj.name}", w.state == "done",
                    f"{w.state}{': ' + w.detail if w.detail else ''}; {pods}")
        job = self.cluster.workload("migration", "Job")
        container = job.template["spec"]["containers"][0]
        refs = sorted(e["name"] for e in container.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {}))
        complete = self._migrations_complete(job.state)
        self.ok("migration job", job.state == "done" and complete,
                f"{job.state}{' ' + job.detail if job.detail else ''}; {self.migration_detail}; "
                f"it receives only the secrets {refs} and the wallet file")
        return all(w.state == "done" for w in workloads.values()) and bool(elapsed)

    def _why(self, p: Pod) -> str:
        c = p.containers[0]
        last = c.last_readiness.detail if c.last_readiness else "no readiness result"
        return f"not ready ({last}); restarts {c.restarts}; log: {c.log_tail(8)[-600:]}"

    migration_detail = ""

    def _source_migrations(self) -> list[str]:
        return sorted(p.stem for p in (self.app.app_dir / "lib" / "migrations").glob("*.js"))

    def _migrations_complete(self, state: str) -> bool:
        expected = self._source_migrations()
        if state != "done":
            job = self.cluster.workload("migration", "Job")
            log = job.pods[-1].containers[0].log_tail(40).splitlines() if job.pods else ["no pod"]
            errors = [line.strip() for line in log if "Error" in line] or log[-1:]
            self.migration_detail = f"last pod's log: {errors[0][:200] if errors else 'empty'}"
            return False
        rows = self.clients.sql("SELECT name FROM knex_migrations ORDER BY name").splitlines()
        applied = sorted(r.rsplit(".", 1)[0] for r in rows)
        self.migration_detail = f"knex_migrations holds {len(applied)} of {len(expected)} migrations in the source"
        return applied == expected and len(expected) > 0

    def info(self) -> None:
        c = self.cluster.config()
        api = self._api_url()
        status, body = self.clients.http(f"{api}/v1/info")
        try:
            info = json.loads(body)
        except json.JSONDecodeError:
            info = {}
        wallet = address_of(self.values["arweaveWallet"])
        text = json.dumps(info)
        self.ok("GET /v1/info shows the stack's wallet and payment address",
                status == 200 and wallet in text and c["X402_PAYMENT_ADDRESS"].lower() in text.lower(),
                f"HTTP {status}; wallet {wallet[:10]}… {'present' if wallet in text else 'MISSING'}; "
                f"payment address {'present' if c['X402_PAYMENT_ADDRESS'].lower() in text.lower() else 'MISSING'}")

    # Inside a bundler container: its ids, what in /app it could not read or enter, and the wallet file.
    APP_USER_CHECK: ClassVar[list[str]] = ["sh", "-c", 'echo "$(id -u) $(id -g) $(id -G)"; '
                                           "find /app ! -perm -o+r | wc -l; find /app -type d ! -perm -o+x | wc -l; "
                                           'stat -c "%u %g %a" "$TURBO_JWK_FILE"; head -c 12 "$TURBO_JWK_FILE"']

    def app_user(self) -> None:
        """The processes run as the manifest's high uid, not the image's owner of /app: /app must be
        world-readable for them, and the wallet (root's, 0400 in the spec) readable only through fsGroup."""
        image_uid = self.app.uid
        for component in ("api", "workers", "admin"):
            pod = self.cluster.workload(component, "Deployment").pods[0]
            c = pod.containers[0]
            uid, gid, _, _ = c.security()
            fs_group = (pod.spec.get("securityContext") or {}).get("fsGroup")
            result = c.exec(self.APP_USER_CHECK, timeout=60)
            lines = result.detail.partition(": ")[2].splitlines()
            ids, unreadable, closed, wallet, head = (lines + [""] * 5)[:5]
            owner, group, mode = [*wallet.split(), "", "", ""][:3]
            read = "ok" if head.startswith("{") else "FAILED"
            ok = (result.ok and ids.split()[:2] == [str(uid), str(gid)] and str(fs_group) in ids.split()[2:]
                  and uid >= 10000 and uid != image_uid and unreadable == "0" and closed == "0"
                  and owner == "0" and group == str(fs_group) and not int(mode or "7", 8) & 0o007
                  and head.startswith("{"))
            self.ok(f"{component} runs as uid {uid} (image's /app owner {image_uid}); /app world-readable; "
                    "wallet read through fsGroup", ok,
                    f"id {ids}; /app entries not world-readable {unreadable}, directories not enterable {closed}; "
                    f"wallet owner {owner} group {group} mode {mode}, read {read}")

    # Inside the postgres container: its uid, the passwd entry for it (none expected), PGDATA's owner.
    POSTGRES_USER_CHECK: ClassVar[list[str]] = ["sh", "-c", 'id -u; getent passwd "$(id -u)" || echo no-entry; '
                                                'stat -c %u "$PGDATA"']

    def data_secret_files(self) -> None:
        """The in-cluster data services and the bucket Job hold no credential in their containers'
        env (checkov CKV_K8S_35): postgres initialised from POSTGRES_PASSWORD_FILE as a uid its
        image has no account for (initdb through nss_wrapper), the cache's probes authenticate from
        the password file, and MinIO and mc use the Secret's keys, which the upload then proves."""
        if not self.cluster.pods("postgres"):
            return  # external data: nothing in the namespace
        creds = next(v for k, v in self.cluster.store.secrets.items() if k.startswith("bundler-data-credentials"))
        values = [creds[k] for k in ("postgres-password", "cache-redis-password", "minio-root-password")]
        pods = [p for c in ("postgres", "redis-cache", "minio", "bucket-init") for p in self.cluster.pods(c)[:1]]
        in_env = sorted(f"{p.name}/{c.name}" for p in pods for c in p.containers if set(values) & set(c.env.values()))
        self.ok("data services and the bucket Job hold no credential in their env", len(pods) == 4 and not in_env,
                f"containers checked {len(pods)}; with a credential in env {in_env}")

        postgres = self.cluster.pods("postgres")[0].containers[0]
        lines = postgres.exec(self.POSTGRES_USER_CHECK, timeout=30).detail.partition(": ")[2].splitlines()
        uid, entry, owner = [*lines, "", "", ""][:3]
        initialised = "init process complete" in "\n".join(
            path.read_text(errors="replace") for path in postgres.log_dir.glob(f"{postgres.name}.*.log"))
        from_file = "POSTGRES_PASSWORD_FILE" in postgres.env and "POSTGRES_PASSWORD" not in postgres.env
        self.ok("postgres initialised from POSTGRES_PASSWORD_FILE as a uid without a passwd entry",
                uid.isdigit() and int(uid) >= 10000 and entry == "no-entry" and owner == uid and initialised
                and from_file,
                f"uid {uid}, passwd entry {entry}, PGDATA owner {owner}, "
                f"initdb {'done' if initialised else 'MISSING'}, password from file {from_file}; "
                "the app's connections use the same password")

        cache = self.cluster.pods("redis-cache")[0].containers[0]
        port = str(cache.spec["ports"][0]["containerPort"])
        probe = cache.exec(cache.spec["readinessProbe"]["exec"]["command"], timeout=15)
        bare = cache.exec(["redis-cli", "-p", port, "ping"], timeout=15)
        # The same PONG check without the password file must fail: redis-cli itself exits 0 on NOAUTH.
        unauthenticated = cache.exec(redis_ping(int(port), authenticated=False), timeout=15)
        self.ok("cache Redis probes authenticate from the password file",
                probe.ok and "NOAUTH" in bare.detail and not unauthenticated.ok,
                f"probe: {probe.detail}; redis-cli without the file: {bare.detail}; "
                f"the probe's check without the file: {unauthenticated.detail}")

    def _service_url(self, name: str) -> str:
        """The in-cluster URL of a Service, as its rendered spec gives it."""
        service = next(o for o in self.cluster.objects if o.kind == "Service" and o.name == name)
        port = service.manifest["spec"]["ports"][0]["port"]
        return f"http://{name}.{self.cluster.namespace}.svc.cluster.local:{port}"

    def _api_url(self) -> str:
        return self._service_url("bundler-api")

    def upload(self) -> None:
        result = self.clients.upload(self._api_url())
        item = str(result.get("id", ""))
        ok = result.get("status") == 200 and result.get("receipt_valid") is True
        self.ok("signed upload through the API Service", ok,
                f"HTTP {result.get('status')}, receipt {'verified' if result.get('receipt_valid') else 'NOT verified'} "
                f"against the stack wallet, id {item[:12]}…, {result.get('elapsed_ms')} ms"
                + ("" if ok else f"; body {str(result.get('body'))[:300]}"))
        self.item_id = item
        in_db = self.cluster.wait(lambda: self._in_database(item), 60)
        keys = self.clients.s3_keys(f"raw-data-item/{item}") if item else []
        self.ok("upload stored: PostgreSQL and the bucket", in_db is not None and bool(keys),
                f"row in PostgreSQL after {in_db if in_db is None else round(in_db, 1)} s (a worker inserts it from "
                f"the upload-new-data-item queue); bucket key {keys[0] if keys else 'MISSING'}")
        def counts() -> dict[str, str]:
            return {state: self.clients.redis("queue", command, f"bull:upload-new-data-item:{state}")
                    for state, command in (("wait", "LLEN"), ("active", "LLEN"),
                                           ("completed", "ZCARD"), ("failed", "ZCARD"))}

        took = self.cluster.wait(lambda: counts()["completed"] not in ("", "0"), 30)
        now = counts()
        self.ok("a worker took the upload off the queue", took is not None and now["failed"] in ("", "0"),
                f"new-data-item queue after {took if took is None else round(took, 1)} s: {now}")
        # BullMQ numbers jobs from the queue's `id` key: no key, no job was ever added.
        optical = self.clients.redis("queue", "GET", "bull:upload-optical-post:id")
        self.ok("optical bridging off (no bridge URL): nothing queued for it",
                self.cluster.config().get("OPTICAL_BRIDGING_ENABLED") == "false" and optical in ("", "0"),
                f"OPTICAL_BRIDGING_ENABLED={self.cluster.config().get('OPTICAL_BRIDGING_ENABLED')}; "
                f"upload-optical-post jobs ever added: {optical or 0}")
        limit = int(self.cluster.config().get("FREE_UPLOAD_LIMIT", "-1"))
        large = self.clients.upload(self._api_url(), size=LARGE)
        rendered = self.render(overrides={})
        real_limit = self._rendered_config(rendered).get("FREE_UPLOAD_LIMIT")
        expected_real = "0" if self.stack == "prod" else self.config.get("x402-bundler:freeUploadLimit")
        self.ok("free uploads only up to freeUploadLimit",
                large.get("status") == 402 and limit > 0 and real_limit == expected_real,
                f"{LARGE} B unpaid upload -> HTTP {large.get('status')} (limit {limit} B in this run); "
                f"the stack file renders FREE_UPLOAD_LIMIT={real_limit}")
        fs_path = self.cluster.config().get("FS_DATA_PATH", "")
        created = self._upload_data_entries()
        self.ok("writable FS_DATA_PATH on a read-only root", bool(fs_path) and "upload-service-data" in created,
                f"FS_DATA_PATH={fs_path}; the upload-data volume holds {created}")

    def _upload_data_entries(self) -> list[str]:
        """What the API wrote into its upload-data volume (FS_DATA_PATH's parent)."""
        data_dir = self.cluster.pods("api")[0].volume_path("upload-data")
        return [p.name for p in data_dir.iterdir()] if data_dir.exists() else []

    def _in_database(self, item: str) -> bool:
        tables = ("new_data_item", "planned_data_item", "permanent_data_items", "failed_data_item")
        union = " UNION ALL ".join(f"SELECT 1 FROM {t} WHERE data_item_id = '{item}'" for t in tables)
        try:
            return self.clients.sql(f"SELECT count(*) FROM ({union}) x") not in ("", "0")
        except RuntimeError:
            return False

    @staticmethod
    def _rendered_config(rec: Recording) -> dict[str, str]:
        maps = [r for r in rec.resources if r.type == "kubernetes:core/v1:ConfigMap"
                and str(r.get("metadata.name", "")).startswith("bundler-settings")]
        return dict(maps[0].inputs.get("data") or {}) if maps else {}

    def admin(self) -> None:
        c = self.cluster.config()
        base = self._service_url("bundler-admin")
        user, password = c.get("ADMIN_USERNAME", "admin"), self.clients.endpoints["admin_password"]
        anonymous, _ = self.clients.http(f"{base}/admin/dashboard/")
        dashboard, page = self.clients.http(f"{base}/admin/dashboard/", auth=(user, password))
        stats, body = self.clients.http(f"{base}/admin/stats", auth=(user, password))
        try:
            stats_json = json.loads(body)
        except json.JSONDecodeError:
            stats_json = {}
        self.ok("admin dashboard behind the stack's admin password", anonymous == 401 and dashboard == 200,
                f"without credentials HTTP {anonymous}, with HTTP {dashboard} ({len(page)} bytes)")
        self.ok("admin statistics", stats == 200 and "timestamp" in stats_json,
                f"/admin/stats HTTP {stats}; sections {sorted(k for k, v in stats_json.items() if v is not None)}"
                + ("" if stats == 200 else f"; {body[:200]}"))

    def connections(self) -> None:
        """A burst of uploads; PostgreSQL's own count against what the program budgets."""
        peak = 0
        stop = threading.Event()
        by_client: dict[str, int] = {}

        def sample() -> None:
            nonlocal peak, by_client
            while not stop.is_set():
                try:
                    rows = self.clients.sql(
                        "SELECT coalesce(host(client_addr), 'local'), count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend' AND datname = current_database() GROUP BY 1")
                except RuntimeError:
                    rows = ""
                counts = {r.split("|")[0]: int(r.split("|")[1]) for r in rows.splitlines() if "|" in r}
                total = sum(counts.values()) - 1  # this query's own connection
                if total > peak:
                    peak, by_client = total, counts
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=self.clients.upload, args=(self._api_url(),), daemon=True)
                   for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        time.sleep(2)
        stop.set()
        sampler.join()
        replicas = {w.component: int(w.obj.manifest["spec"].get("replicas", 1))
                    for w in self.cluster.workloads.values() if w.obj.kind == "Deployment"}
        budget = connection_peak(replicas, int(self.cluster.config()["DB_POOL_MAX"]))
        total = sum(v["total"] for v in budget.values())
        pods = {p.ip: p.name for w in self.cluster.workloads.values() for p in w.pods}
        named = ", ".join(f"{pods.get(ip, ip)} {n}" for ip, n in sorted(by_client.items()))
        self.ok("database connections within the budget", 0 < peak <= total,
                f"observed peak {peak} in pg_stat_activity under 12 concurrent uploads ({named}); counted peak "
                f"{total} = " + " + ".join(f"{k} {v['pods']} x {v['per_process']}" for k, v in budget.items()))

    def meter(self) -> Meter:
        containers: dict[str, list[Container]] = {}
        for w in self.cluster.workloads.values():
            if w.obj.kind != "Job":
                for p in w.pods:
                    for c in p.containers:
                        containers.setdefault(f"{w.component}/{c.name}", []).append(c)
        return Meter(containers)

    def resources(self, meter: Meter) -> None:
        """Each container's measured use against its requests and limits (the sizing table)."""
        specs = {key: cs[0].spec for key, cs in meter.containers.items()}
        for row in meter.table(specs):
            print(f"e2e: {self.stack}: usage | {row}", flush=True)
        short = meter.short_limits(specs)
        self.ok(f"memory limits cover the measured peak + {MEMORY_MARGIN:.0%}", not short,
                f"{len(specs) - len(short)} of {len(specs)} containers; {'; '.join(short) or 'none short'} "
                f"(idle {IDLE_SECONDS} s, burst of 12 uploads; table above)")

    def s3_probe_calls(self) -> None:
        """The readiness probe's S3 check needs only object permissions, as the app does."""
        minio = self.cluster.pods("minio")
        log = (minio[0].volume_path("tmp") / "s3-requests.log" if minio
               else self.root / "outside" / "s3" / "requests.log")
        bucket = self.cluster.config()["DATA_ITEM_BUCKET"]
        # Lines are "client method host path"; the bucket Job creates the bucket, so its calls are bucket-level.
        bucket_job = {p.ip for w in self.cluster.workloads.values() if w.component == "bucket-init" for p in w.pods}
        lines = [line.split(" ") for line in (log.read_text().splitlines() if log.exists() else [])]
        app = [f for f in lines if len(f) == 4 and f[0] not in bucket_job]
        probe = [f for f in app if ".x402-bundler-deep-check" in f[3]]
        bucket_level = [" ".join(f[1:]) for f in app if f[3] in ("/", f"/{bucket}", f"/{bucket}/")]
        methods = sorted({f[1] for f in probe})
        self.ok("S3 probe uses object calls only (no s3:ListBucket)", bool(probe) and not bucket_level,
                f"{len(probe)} probe requests ({', '.join(methods)} on the probe object); bucket-level requests "
                f"from the app and its probes: {len(bucket_level)}"
                f"{' ' + str(bucket_level[:3]) if bucket_level else ''}")

    def database_password(self) -> None:
        """The app puts DB_PASSWORD unescaped into a URL: the stack refuses such passwords."""
        used = self.clients.endpoints["db_password"]
        try:
            run_program(self.stack, overrides={**TEST_OVERRIDES.get(self.stack, {}), "dataMode": "external",
                                               "dbHost": "db.example.internal",
                                               "cacheRedisHost": "cache.example.internal",
                                               "queueRedisHost": "queue.example.internal"},
                        secrets={**self.values, "dbPassword": "pa#ss@word/with:url?chars%",
                                 "s3AccessKeyId": "k", "s3SecretAccessKey": "s"},
                        stack_outputs=promote_outputs(self.stack))
            refused = ""
        except Exception as error:  # the ConfigError the program raises
            refused = str(error)
        named = "dbPassword" in refused and "pa#ss" not in refused
        unsafe = sorted(set(used) & set("#/:?@% \t\n"))
        self.ok("database password with URL characters refused; the one in use is URL-safe",
                named and not unsafe,
                f"a password with # @ / : ? % -> "
                f"{'ConfigError naming dbPassword, password not echoed' if named else 'NOT refused'}; "
                f"the password this run's pods use: {len(used)} characters, URL characters in it: {unsafe or 'none'}")

    # -- faults --------------------------------------------------------------------------

    def _bound(self, pod: Pod, probe: str = "readiness") -> float:
        spec = pod.containers[0].spec[f"{probe}Probe"]
        return (float(spec.get("failureThreshold", 3)) * float(spec.get("periodSeconds", 10))
                + float(spec.get("timeoutSeconds", 1)))

    def _data(self, component: str) -> tuple[Callable[[], None], Callable[[], None]]:
        """Stop and start a backing service, wherever the stack has it."""
        pods = self.cluster.pods(component)
        if pods:
            pod = pods[0]
            return (lambda: pod.hold()), (lambda: pod.resume())
        service = self.out.services[component]

        def start() -> None:
            service.start()

        return service.stop, start

    def _outage(self, component: str, affected: list[Pod], label: str) -> None:
        stop, start = self._data(component)
        restarts = {p.name: p.containers[0].restarts for p in affected}
        bound = max(self._bound(p) for p in affected)
        stop()
        t0 = time.monotonic()  # from when the service is down
        took = self.cluster.wait(lambda: all(not p.ready for p in affected), bound + 5)
        not_ready = {p.name: round(time.monotonic() - t0, 1) for p in affected if not p.ready}
        self.ok(f"{label} down: pods NotReady", took is not None and took <= bound,
                f"{', '.join(p.name for p in affected)} NotReady after {None if took is None else round(took, 1)} s "
                f"(bound failureThreshold x period + timeout = {bound:.0f} s); {not_ready}")
        start()
        back = self.cluster.wait(lambda: all(p.ready for p in affected), 90)
        same = all(p.containers[0].restarts == restarts[p.name] for p in affected)
        self.ok(f"{label} back: pods Ready without a restart", back is not None and same,
                f"Ready {None if back is None else round(back, 1)} s after it returned; restarts "
                f"{ {p.name: p.containers[0].restarts - restarts[p.name] for p in affected} }")

    def faults(self) -> None:
        api, workers = self.cluster.pods("api"), self.cluster.pods("workers")
        cache = threading.Thread(target=self._outage, args=("redis-cache", api, "cache Redis"))
        frozen = threading.Thread(target=self.frozen_worker)
        cache.start()
        frozen.start()
        cache.join()
        frozen.join()
        self._outage("postgres", api + workers, "PostgreSQL")

    def frozen_worker(self) -> None:
        pod = self.cluster.pods("workers")[0]
        c = pod.containers[0]
        pid = c.app_pid("lib/jobs/allWorkers.js")
        before = c.restarts
        if pid is None:
            self.ok("frozen worker restarted by liveness", False, "no worker process found")
            return
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        bound = self._bound(pod, "liveness") + pod.grace + 15
        took = self.cluster.wait(lambda: c.restarts > before and c.running(), bound)
        ready = self.cluster.wait(lambda: pod.ready, 120) if took is not None else None
        self.ok("frozen worker (SIGSTOP) restarted by its liveness probe", took is not None and ready is not None,
                f"restarted after {None if took is None else round(took, 1)} s (liveness bound "
                f"{self._bound(pod, 'liveness'):.0f} s + grace), "
                f"Ready again after {ready if ready is None else round(ready, 1)} s; "
                f"{[e for e in self.events.since(t0, pod.name) if 'liveness' in e][:1]}")

    def worker_liveness_source(self) -> None:
        """Which address the queue Redis sees for the workers: the pod IP, or the node's (NAT)."""
        pods = self.cluster.pods("workers")

        def sources() -> list[str]:
            listing = self.clients.redis("queue", "CLIENT", "LIST")
            return sorted({kv.split("=", 1)[1].rsplit(":", 1)[0] for line in listing.splitlines()
                           for kv in line.split() if kv.startswith("addr=") and "name=bull:" in line})

        self.cluster.wait(lambda: bool(sources()), 30)
        seen = sources()
        nat = not any(p.ip in seen for p in pods)
        live = all(p.containers[0].running() and p.ready for p in pods)
        self.ok(f"worker liveness {'behind NAT' if nat else 'without NAT'}", live and bool(seen),
                f"queue Redis sees BullMQ connections from {seen}; worker pod IPs {[p.ip for p in pods]}; "
                f"liveness passing, restarts {[p.containers[0].restarts for p in pods]}")

    # -- termination -----------------------------------------------------------------------

    def termination(self) -> None:
        api = self.cluster.pods("api")
        spec = api[0].containers[0].spec
        pre_stop = float((spec.get("lifecycle") or {}).get("preStop", {}).get("exec", {})
                         .get("command", ["", "", "0"])[-1])
        pid1 = Path(f"/proc/{api[0].containers[0].pid1}/cmdline").read_bytes().split(b"\0")[0].decode()
        self.ok("API runs under an init as PID 1", pid1.endswith("dumb-init"), f"PID 1 in the API container: {pid1}")
        # An upload in flight when its pod is deleted.
        busy = api[0]
        url = f"http://{busy.ip}:{self._api_url().rsplit(':', 1)[1]}"
        result: dict[str, Any] = {}
        slow_ms = int((pre_stop + 8) * 1000)
        uploader = threading.Thread(target=lambda: result.update(self.clients.upload(url, slow_ms=slow_ms)))
        uploader.start()
        time.sleep(2)
        exit_seconds = busy.delete()
        uploader.join(120)
        self.ok("upload in flight when its API pod is deleted completes",
                result.get("status") == 200 and result.get("receipt_valid") is True,
                f"HTTP {result.get('status')} after {result.get('elapsed_ms')} ms; the pod exited "
                f"{exit_seconds:.1f} s after deletion (preStop {pre_stop:.0f} s), exit codes "
                f"{busy.containers[0].exit_codes}")
        idle = api[1] if len(api) > 1 else self.replace(busy)
        seconds = idle.delete()
        self.ok("idle API pod exits soon after the endpoint-removal delay", seconds <= pre_stop + 5
                and idle.containers[0].exit_codes[-1:] == [0],
                f"{seconds:.1f} s from deletion to exit (target preStop {pre_stop:.0f} s + 5 s; grace "
                f"{idle.grace:.0f} s), exit code {idle.containers[0].exit_codes[-1:]}")
        for component in ("workers", "admin"):
            pod = self.cluster.pods(component)[0]
            seconds = pod.delete()
            self.ok(f"{component} pod stops on SIGTERM",
                    seconds < pod.grace and pod.containers[0].exit_codes[-1:] == [0],
                    f"{seconds:.1f} s to exit, exit code {pod.containers[0].exit_codes[-1:]} (grace {pod.grace:.0f} s)")

    def replace(self, old: Pod) -> Pod:
        """What the Deployment controller does after a deletion: a new pod, new address."""
        w = next(w for w in self.cluster.workloads.values() if old in w.pods)
        name = f"{old.name}-r"
        ns, ip = self.cluster.net.add_pod(name)
        pod = self.cluster._pod(name, ns, ip, w.template["spec"])
        w.pods.append(pod)
        pod.start()
        self.cluster.wait(lambda: pod.ready, 120)
        return pod

    # -- a migration that cannot reach its database ----------------------------------------------

    def failed_migration(self) -> None:
        stop, _ = self._data("postgres")
        stop()
        job = self.cluster.workload("migration", "Job")
        deployments = [w for w in self.cluster.workloads.values() if w.obj.kind == "Deployment"]
        before = {w.obj.key: len(w.pods) for w in deployments}
        for w in [job, *deployments]:
            w.state, w.detail = "pending", ""
            w.planned = []
        t0 = time.monotonic()
        keys = {w.obj.key for w in [job, *deployments]}
        self.cluster.apply(timeout=400, only=keys)
        created = {w.obj.key: len(w.pods) - before[w.obj.key] for w in deployments}
        log = job.pods[-1].containers[0].log_tail(3) if job.pods else ""
        self.ok("migration Job that cannot reach its database fails; no Deployment starts",
                job.state == "failed" and not any(created.values()) and all(w.state == "blocked" for w in deployments),
                f"Job {job.state} ({job.detail}) after {time.monotonic() - t0:.0f} s; Deployments "
                f"{sorted({w.state for w in deployments})}, new pods {sum(created.values())}; last log: {log[-200:]}")

    def restarts_and_logs(self) -> None:
        """Secrets never reach a log line (the runner's logs are what the pods printed)."""
        leaked = []
        secret_values = [v for s in self.cluster.store.secrets.values() for k, v in s.items()
                         if len(v) >= 12 and not k.endswith(".json")]
        secret_values.append(json.loads(self.values["arweaveWallet"])["d"])
        for w in self.cluster.workloads.values():
            for p in w.pods:
                for c in p.containers:
                    text = c.logs()
                    leaked += [f"{p.name}" for v in secret_values if v in text]
        self.ok("no secret value in any container log", not leaked,
                f"checked {len(secret_values)} values; leaks in {sorted(set(leaked))}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", required=True, choices=sorted(TEST_OVERRIDES))
    parser.add_argument("--workdir", required=True, type=Path)
    args = parser.parse_args()
    os.environ["X402_UPSTREAM_QUIET"] = "1"
    app = prepare()
    report = StackTest(args.stack, args.workdir, app).run()
    print(json.dumps({"stack": args.stack, "passed": report.passed, "failed": report.failed}), flush=True)
    sys.exit(0 if report.failed == 0 else 1)


if __name__ == "__main__":
    main()
