"""The runtime test's scenarios against a real cluster, through kubectl (`.github/workflows/e2e-kind.yml`).

    python -m tests.e2e.remote [--stack local] [--namespace NS] [--context CTX] [--node-path DIR]

Runs the scenarios of `tests.e2e.scenarios` that need no emulated kubelet (those declared
`remote`), with the same code: `RemoteTest` gives them a cluster view and clients backed by
kubectl instead of the emulator's, and declares its plan's lines before it starts, as the
emulated run does. How it reaches the cluster is `tests.e2e.kubectl`'s.

Prints `e2e: <stack>: <scenario>: ok|FAIL (...)` lines and `N passed, M failed`; exit 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

from tests.e2e.context import Context
from tests.e2e.kubectl import Kubectl, KubectlClients, KubectlCluster, KubectlError
from tests.e2e.plan import Step, run_plan, scenario
from tests.e2e.report import Report
from tests.e2e.scenarios import capacity, data_path, probes, security, workloads
from tests.e2e.stack import test_secrets
from tools.harness import ROOT, Recording, run_program, stack_config
from tools.render import promote_outputs


@scenario(lines=workloads.workload_lines, remote=True, gate=True)
def applied(t: RemoteTest) -> None:
    """What `pulumi up` left: every workload ready, the Jobs complete, every migration applied."""
    listed = list(t.cluster.workloads.values())  # one listing: each read is a kubectl round trip
    for w in listed:
        if w.obj.kind == "Job":
            continue
        want = int(w.obj.manifest["spec"].get("replicas", 1))
        ready = int((w.obj.manifest.get("status") or {}).get("readyReplicas", 0))
        pods = ", ".join(f"{p.name} {'ready' if p.ready else 'NOT ready'} (restarts "
                         f"{sum(c.restarts for c in p.containers)})" for p in w.pods)
        t.ok(f"{w.obj.kind.lower()} {w.obj.name}", ready >= want, f"{ready} of {want} replicas ready; {pods}")
    jobs = [w for w in listed if w.obj.kind == "Job"]
    for job in jobs:
        status = job.obj.manifest.get("status") or {}
        done = int(status.get("succeeded", 0)) >= 1
        counts = f"succeeded {status.get('succeeded', 0)}, failed {status.get('failed', 0)}"
        if job.component == "migration":
            complete, seen = workloads.migrations_complete(t, done)
            t.ok("migration job", complete, f"{job.obj.name} {counts}; {seen}")
        else:
            t.ok(f"job {job.obj.name}", done, counts)
    if not any(j.component == "migration" for j in jobs):
        t.ok("migration job", False, "no Job labelled migration in the namespace")


# What the shared scenarios need of a real cluster only (no emulated kubelet), in the emulator's order.
REMOTE_PLAN: list[Step] = [
    applied,
    data_path.info,
    data_path.api_docs,
    data_path.stats_before,
    data_path.upload,
    capacity.burst,
    data_path.admin,
    security.database_password,
    probes.worker_liveness_source,
    security.secrets_in_logs,
]


class RemoteTest(Context):
    """The shared scenarios, unchanged, on a cluster kubectl reaches."""

    cluster: KubectlCluster
    clients: KubectlClients

    def __init__(self, stack: str, kubectl: Kubectl, workdir: Path, node_path: Optional[Path] = None) -> None:
        super().__init__()
        self.stack = stack
        self.root = workdir
        self.report = Report(stack)
        # What was deployed: the stack file as it is, no test overrides.
        self.config = stack_config(stack)
        self.cluster = KubectlCluster(kubectl)
        self.clients = KubectlClients(kubectl, self.cluster, workdir, node_path)

    def run(self) -> Report:
        try:
            if self.config.get("x402-bundler:dataMode") == "external":
                raise KubectlError("dataMode external: the data services are outside the cluster, "
                                   "where kubectl exec cannot reach them")
            self.clients.connect()
            # The render-only checks evaluate the program with the wallet that is deployed.
            self.values = {**test_secrets(self.stack), "arweaveWallet": self.clients.wallet}
            run_plan(self, REMOTE_PLAN)
        except Exception as error:  # a crash of the runner is a failure, never a skip
            self.ok("runner", False, f"{type(error).__name__}: {error}")
        finally:
            self.clients.close()
        self.report.finish()
        return self.report

    def render(self, overrides: Optional[dict[str, Any]] = None) -> Recording:
        return run_program(self.stack, overrides=overrides, secrets=dict(self.values),
                           stack_outputs=promote_outputs(self.stack))

    def source_migrations(self) -> list[str]:
        """The migrations in the image the cluster runs (the API's /app), not a local tree."""
        container = self.cluster.deployment("bundler-api")["spec"]["template"]["spec"]["containers"][0]["name"]
        listing = self.cluster.kubectl.run("exec", "deploy/bundler-api", "-c", container, "--",
                                           "ls", "/app/lib/migrations")
        return sorted(n[:-3] for n in listing.split() if n.endswith(".js"))

    def service_url(self, name: str) -> str:
        return self.clients.forward(name)

    def upload_data_entries(self) -> list[str]:
        path = self.cluster.config().get("FS_DATA_PATH", "")
        container = self.cluster.deployment("bundler-api")["spec"]["template"]["spec"]["containers"][0]["name"]
        listing = self.cluster.kubectl.run("exec", "deploy/bundler-api", "-c", container, "--",
                                           "ls", "-1", os.path.dirname(path) or "/", check=False)
        return listing.split()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="local")
    parser.add_argument("--namespace", help="default: the stack file's x402-bundler:namespace")
    parser.add_argument("--context", help="default: the stack file's kubernetes:context, else kubectl's current")
    parser.add_argument("--node-path", type=Path, help="node_modules for client.js (default: installed with npm)")
    return parser


def main() -> None:
    parser_ = parser()
    args = parser_.parse_args()
    config = stack_config(args.stack)
    namespace = args.namespace or config.get("x402-bundler:namespace")
    if not namespace:
        parser_.error(f"Pulumi.{args.stack}.yaml sets no x402-bundler:namespace: pass --namespace")
    if shutil.which("kubectl") is None:
        parser_.error("kubectl is not on the PATH")
    kubectl = Kubectl(namespace, args.context or config.get("kubernetes:context"))
    report = RemoteTest(args.stack, kubectl, ROOT / "build" / "e2e-remote" / args.stack, args.node_path).run()
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    sys.exit(0 if report.failed == 0 else 1)


if __name__ == "__main__":
    main()
