"""One stack's runtime test: render it, run it, break it, and report one line per scenario.

Runs inside the stack's node network namespace (see `tests.e2e.__main__`). The program is
evaluated for the stack with test secrets (a real Arweave wallet generated now) and the few
test-only overrides in `TEST_OVERRIDES`; every other value is the stack file's. `PLAN` is the
order of the scenarios; each stack declares the lines of its plan before anything starts.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from tests.e2e.clients import Clients, endpoints
from tests.e2e.cluster import Cluster, Node
from tests.e2e.context import Context
from tests.e2e.images import ImageSet
from tests.e2e.kubelet import Events
from tests.e2e.limits import Cgroup
from tests.e2e.loads import Recorder
from tests.e2e.network import StackNetwork
from tests.e2e.outside import GATEWAY_HOST, GATEWAY_PORT, Outside, start_outside
from tests.e2e.plan import Step, declared, run_plan
from tests.e2e.registry import Registry
from tests.e2e.report import Report
from tests.e2e.scenarios import capacity, data_path, image, probes, security, signals, workloads
from tests.e2e.upstream import BuildSpec, Prepared, prepare
from tests.e2e.usage import Meter
from tests.e2e.wallet import generate_jwk
from tools.harness import ROOT, Recording, run_program, stack_config

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
# `make bench-image` only: the building stacks' imageDockerfile, to measure the upstream layout
# against the traced one with everything else the same (tests.e2e --image-dockerfile).
IMAGE_DOCKERFILE_ENV = "X402_E2E_IMAGE_DOCKERFILE"
STACK_INDEX = {"dev": 1, "prod": 2, "local": 3}
# The stack that builds the image a promoting stack pulls (Pulumi.prod.yaml's imagePromoteStack).
BUILDING_STACK = "dev"
CLEAN_LINE = "no key or password left in the run's files"

PLAN: list[Step] = [
    workloads.applied,
    image.time_to_ready,
    capacity.idle,
    data_path.info,
    data_path.api_docs,
    security.app_user,
    security.data_secret_files,
    security.admitted_and_pulled,
    data_path.stats_before,
    data_path.upload,
    capacity.burst,
    data_path.admin,
    capacity.resources,
    capacity.limits_applied,
    data_path.s3_probe_calls,
    security.database_password,
    probes.worker_liveness_source,
    probes.service_follows_readiness,
    (probes.cache_outage, probes.frozen_worker),
    probes.postgres_outage,
    signals.termination,
    workloads.failed_migration,
    image.loads_in_traced_set,
    security.secrets_in_logs,
]


def test_secrets(stack: str) -> dict[str, str]:
    """Real values for the secrets the stack's config holds (those the program generates, it
    generates); letters and digits only."""
    values = {"arweaveWallet": generate_jwk()}
    if stack_config(stack).get("x402-bundler:dataMode") == "external":
        values |= {key: secrets.token_hex(16) for key in
                   ("dbPassword", "cacheRedisPassword", "s3AccessKeyId", "s3SecretAccessKey")}
    if stack_config(stack).get("x402-bundler:paymentNetwork") == "base":
        values |= {"cdpApiKeyId": secrets.token_hex(8), "cdpApiKeySecret": secrets.token_hex(16)}
    return values


def overrides_for(stack: str) -> dict[str, Any]:
    """TEST_OVERRIDES, and for a stack that builds, the benchmark's imageDockerfile if one is asked for."""
    chosen = os.environ.get(IMAGE_DOCKERFILE_ENV)
    builds = not stack_config(stack).get("x402-bundler:imagePromoteStack")
    return {**TEST_OVERRIDES[stack], **({"imageDockerfile": chosen} if chosen and builds else {})}


def building_render() -> Recording:
    """The building stack's program, as a promoting stack's runner and the orchestrator see it."""
    return run_program(BUILDING_STACK, overrides=overrides_for(BUILDING_STACK))


def pushed(rec: Recording) -> list[str]:
    """What a building stack's image resources pushed, as their provider reported it."""
    return [str(r.outputs["ref"]) for r in rec.resources if r.type.startswith("docker-build:") and r.outputs.get("ref")]


class StackTest(Context):
    """The emulated run: a Cluster on this machine, Clients on its node."""

    cluster: Cluster
    clients: Clients

    app: Prepared

    def __init__(self, stack: str, workdir: Path) -> None:
        super().__init__()
        self.stack = stack
        self.root = workdir
        self.report = Report(stack)
        self.events = Events()
        self.config = {**stack_config(stack), **{f"x402-bundler:{k}": str(v) for k, v in overrides_for(stack).items()}}
        self.values = test_secrets(stack)
        self.net = StackNetwork(prefix=f"x402e2e-{stack}", index=STACK_INDEX[stack])
        self.meter = Meter()
        self.registry = Registry()
        self.promoted: dict[str, dict[str, Any]] = {}
        self.out = Outside()
        self.recorder = Recorder(workdir / "loads")

    def render(self, overrides: Optional[dict[str, Any]] = None) -> Recording:
        return run_program(self.stack, overrides=overrides_for(self.stack) if overrides is None else overrides,
                           secrets=dict(self.values), stack_outputs=self.promoted)

    def _images(self) -> None:
        """The registry holds what the building stack pushed, and the bundler tree is what that
        build's Dockerfile lays out; a promoting stack reads the building stack's output."""
        source = self.config.get("x402-bundler:imagePromoteStack")
        built: Optional[Recording] = None
        if source:
            built = building_render()
            self.promoted = {source: {"imageRef": built.outputs["imageRef"]}}
        self.rec = self.render()
        build = built or self.rec
        for ref in pushed(build):
            self.registry.push(ref)
        self.app = prepare(BuildSpec.of_resources(build.resources))

    def run(self) -> Report:
        self.net.setup()
        cgroup: Optional[Cgroup] = None
        try:
            self.out = start_outside(self.net, self.root / "outside", self.config, self.values)
            self._images()
            ca_binds: tuple[tuple[Path, str], ...] = ()
            extra_env: dict[str, str] = {}
            if self.out.tls:
                ca_binds = ((self.out.tls[0].parent, "/opt/e2e-ca"),)
                extra_env = {"NODE_EXTRA_CA_CERTS": "/opt/e2e-ca/ca.pem"}
            self.recorder.prepare()
            images = ImageSet(self.app, self.root / "bin", ROOT / "node_modules" / "yarn", self.recorder, extra_env,
                              ca_binds)
            cgroup = Cgroup.under_runner(self.net.prefix)
            node = Node(self.net, self.root, images, self.registry, self.events, cgroup, self.meter)
            self.cluster = Cluster(self.stack, self.rec, node, self.out.hosts)
            self.state.db_password_inputs = next(
                (r.inputs for r in self.rec.resources if r.type == "random:index/randomPassword:RandomPassword"
                 and r.name.endswith("postgres-password")), None)
            wallet = self.root / "wallet.json"
            wallet.write_text(self.values["arweaveWallet"])
            # The test's own client runs on the untraced tree: its modules are not the image's.
            self.clients = Clients(self.cluster, self.app.full_app, wallet, self.out.tls[0] if self.out.tls else None,
                                   endpoints(next(v for k, v in self.cluster.store.secrets.items()
                                                  if k.startswith("bundler-credentials"))))
            self.cluster.services.start()
            self.meter.start()
            run_plan(self, PLAN, extra=[CLEAN_LINE])
        except Exception as error:  # a crash of the harness is a failure, never a skip
            traceback.print_exc()
            if not self.report.declared:
                self.report.declare([*self._safe_declared(), CLEAN_LINE])
            self.report.line("runner", False, f"{type(error).__name__}: {error}")
        finally:
            self.teardown(cgroup)
        self.report.line(CLEAN_LINE, *self.clean())
        self.report.finish()
        return self.report

    def _safe_declared(self) -> list[str]:
        try:
            return ["runner", *declared(self, PLAN)]
        except Exception:  # the plan needs the cluster, which did not come up
            return ["runner"]

    # -- what scenarios ask of the emulated stack ---------------------------------------------

    def service_url(self, name: str) -> str:
        """The in-cluster URL of a Service, as its rendered spec gives it."""
        service = next(s for s in self.cluster.services.services if s.name == name)
        return f"http://{name}.{self.cluster.namespace}.svc.cluster.local:{service.ports[0]['port']}"

    def upload_data_entries(self) -> list[str]:
        data_dir = self.cluster.pods("api")[0].volume_path("upload-data")
        return [p.name for p in data_dir.iterdir()] if data_dir.exists() else []

    def source_migrations(self) -> list[str]:
        return sorted(p.stem for p in (self.app.app_dir / "lib" / "migrations").glob("*.js"))

    def data_service(self, component: str) -> tuple[Callable[[], None], Callable[[], None]]:
        """Stop and start a backing service, wherever the stack has it."""
        pods = self.cluster.pods(component)
        if pods:
            pod = pods[0]
            return (lambda: pod.hold()), (lambda: pod.resume())
        service = self.out.services[component]

        def start() -> None:
            service.start()

        return service.stop, start

    # -- the end -----------------------------------------------------------------------

    def teardown(self, cgroup: Optional[Cgroup]) -> None:
        with (self.root / "events.log").open("w") as log:
            log.writelines(f"{t:.1f} {who}: {what}\n" for t, who, what in self.events.lines)
        self.meter.stop()
        if hasattr(self, "cluster"):
            self.cluster.stop()
        if hasattr(self, "clients"):
            self.clients.close()
        for service in self.out.services.values():
            service.forget()
        if cgroup is not None:
            cgroup.remove()
        if self.out.tls:
            self.out.tls[2].unlink(missing_ok=True)
        self.net.teardown()

    def clean(self) -> tuple[bool, str]:
        """Every file the run left under its work directory, searched for every secret it had."""
        stored = list(self.cluster.store.secrets.values()) if hasattr(self, "cluster") else []
        values = security.secret_values([*stored, self.values], self.values["arweaveWallet"])
        found, files = [], 0
        for path in self.root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            files += 1
            data = path.read_bytes()
            if b"PRIVATE KEY" in data or any(v.encode() in data for v in values):
                found.append(str(path.relative_to(self.root)))
        return not found, (f"{files} files under build/e2e/{self.stack} searched for {len(values)} secret values and "
                           f"private keys after tear-down; holding one: {found[:5] or 'none'}")


def _die_with_parent() -> None:
    """This runner ends when the orchestrator does (SIGTERM, so tear-down still runs)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", required=True, choices=sorted(TEST_OVERRIDES))
    parser.add_argument("--workdir", required=True, type=Path)
    args = parser.parse_args()
    _die_with_parent()
    report = StackTest(args.stack, args.workdir).run()
    print(json.dumps({"stack": args.stack, "passed": report.passed, "failed": report.failed}), flush=True)
    sys.exit(0 if report.failed == 0 else 1)


if __name__ == "__main__":
    main()
