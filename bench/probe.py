"""What the exec probes cost each pod: CPU seconds and peak memory per run, and the share of a
core they take at the stack's own periods.

    python bench/probe.py [--runs N] [--stack dev]

Runs every exec probe of every Deployment container exactly as the rendered manifest gives it
(command and arguments), with the container's settings pointed at real local servers
(PostgreSQL, both Redis, an S3 server and a BullMQ worker, as the probe tests run them), N
times each, and measures each run's CPU time and peak RSS from the kernel's accounting
(`wait4`). `node -e 0` is the floor. httpGet and tcpSocket probes run in the kubelet, not in the
pod, and cost the pod nothing measurable here. Targets (issue 15): at most 1% of a core per
pod, and no probe run above 1.5x the floor's peak memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.probes.servers import PostgresServer, RedisServer, S3Server, require_node_modules  # noqa: E402
from tools.render import manifest, render  # noqa: E402

WORKER_HELPER = ROOT / "tests" / "probes" / "bullmq_worker.js"


@dataclass(frozen=True)
class Cost:
    cpu_seconds: float
    peak_rss_mb: float


# A child's ru_maxrss includes what it had before exec: forked from this process (Pulumi
# loaded, ~150 MB) it would count that. A minimal interpreter forks and measures instead.
LAUNCHER = (
    "import os,sys\npid=os.fork()\nif pid==0:\n os.execvpe(sys.argv[1],sys.argv[1:],os.environ)\n"
    "_,st,u=os.wait4(pid,0)\nprint(os.waitstatus_to_exitcode(st),u.ru_utime+u.ru_stime,u.ru_maxrss)"
)


def measure(argv: list[str], env: dict[str, str], runs: int) -> tuple[Cost, list[int], str]:
    """Median CPU time and peak RSS of `runs` runs, from the kernel's accounting (wait4)."""
    cpus, rss, codes = [], [], []
    detail = ""
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, *argv], env=env, capture_output=True, text=True)
        *output, last = done.stdout.strip().splitlines() or [""]
        code, cpu, maxrss = last.split()
        codes.append(int(code))
        cpus.append(float(cpu))
        rss.append(int(maxrss) / 1024)  # KiB on Linux
        detail = "\n".join(output)[-300:]
    return Cost(statistics.median(cpus), statistics.median(rss)), codes, detail


def local_env(container: dict[str, Any], servers: dict[str, Any], node_modules: str) -> dict[str, str]:
    """The container's own settings, with the backing services' addresses made local."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_PATH": node_modules}
    env.update({e["name"]: str(e["value"]).replace(MOUNT, SCRIPTS) for e in container.get("env") or [] if "value" in e})
    pg, cache, queue, s3 = servers["postgres"], servers["cache"], servers["queue"], servers["s3"]
    env.update({
        "DB_HOST": "127.0.0.1", "DB_WRITER_ENDPOINT": "127.0.0.1", "DB_READER_ENDPOINT": "127.0.0.1",
        "DB_PORT": str(pg.port), "DB_USER": pg.app_user, "DB_PASSWORD": pg.app_password, "DB_DATABASE": pg.database,
        "ELASTICACHE_HOST": "127.0.0.1", "ELASTICACHE_PORT": str(cache.port), "ELASTICACHE_USE_TLS": "false",
        "ELASTICACHE_PASSWORD": cache.password or "",
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT_QUEUES": str(queue.port),
        "AWS_ENDPOINT": s3.endpoint, "S3_ENDPOINT": s3.endpoint, "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "DATA_ITEM_BUCKET": s3.bucket, "S3_FORCE_PATH_STYLE": "true",
        # The bench's worker stands in for lib/jobs/allWorkers.js.
        "DEEP_CHECK_WORKER_CMDLINE": "bullmq_worker.js",
    })
    if container["name"] == "admin":
        env.update({"ELASTICACHE_PORT": str(queue.port), "ELASTICACHE_PASSWORD": ""})
    return env


MOUNT, SCRIPTS = "/opt/x402-bundler-probes/", f"{ROOT / 'components' / 'probes'}/"


def probe_script(command: list[str]) -> list[str]:
    """The rendered command, with the ConfigMap-mounted scripts taken from this checkout."""
    return [a.replace(MOUNT, SCRIPTS) for a in command]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stack", default="dev", choices=("dev", "prod"))
    args = parser.parse_args()
    node_modules = str(require_node_modules())
    servers: dict[str, Any] = {
        "postgres": PostgresServer(app_user="bundler", app_password="benchpw0123456789",
                                   database="bundler_lite").init(),
        "cache": RedisServer(password="benchcache0123456789").start(),
        "queue": RedisServer().start(),
        "s3": S3Server(bucket="bench-bucket", access_key="AKIABENCH", secret_key="benchsecret").start(),
    }
    worker = subprocess.Popen(["node", str(WORKER_HELPER), "bullmq_worker.js"], stdout=subprocess.PIPE,
                              env={"PATH": os.environ["PATH"], "NODE_PATH": node_modules, "REDIS_HOST": "127.0.0.1",
                                   "REDIS_PORT_QUEUES": str(servers["queue"].port)})
    assert worker.stdout is not None
    worker.stdout.readline()
    try:
        rec = render(args.stack)
        floor, _, _ = measure(["node", "-e", "0"], {"PATH": os.environ["PATH"]}, args.runs)
        print(f"floor  node -e 0: {floor.cpu_seconds:.3f} s CPU, {floor.peak_rss_mb:.0f} MB peak")
        for r in rec.resources:
            if r.type != "kubernetes:apps/v1:Deployment":
                continue
            doc = manifest(rec, r)
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env = local_env(container, servers, node_modules)
                share = 0.0
                for kind in ("startup", "readiness", "liveness"):
                    spec = container.get(f"{kind}Probe") or {}
                    if "exec" not in spec:
                        continue
                    cost, codes, output = measure(probe_script(spec["exec"]["command"]), env, args.runs)
                    period = float(spec.get("periodSeconds", 10))
                    if kind != "startup":  # the startup probe stops once it has passed
                        share += cost.cpu_seconds / period
                    print(f"{container['name']:8} {kind:9} every {period:.0f} s: {cost.cpu_seconds:.3f} s CPU "
                          f"({cost.cpu_seconds / floor.cpu_seconds:.1f}x floor), {cost.peak_rss_mb:.0f} MB peak "
                          f"({cost.peak_rss_mb / floor.peak_rss_mb:.2f}x floor), exit codes {sorted(set(codes))}"
                          + (f"\n         {output}" if any(codes) else ""))
                print(f"{container['name']:8} probes take {share * 100:.2f}% of one core on average (target <= 1%)")
    finally:
        worker.terminate()
        worker.wait(10)
        servers["postgres"].destroy()
        for name in ("cache", "queue", "s3"):
            servers[name].stop()


if __name__ == "__main__":
    main()
