"""What the probes cost each pod: CPU seconds and peak memory per run, and the share of a core
they take at the stack's own periods.

    python bench/probe.py [--runs N] [--stack dev]

For every Deployment container of the rendered stack, a stand-in process is started with the
container's settings pointed at real local servers (PostgreSQL, both Redis, an S3 server, as the
probe tests run them): plain node for the API and admin, a real BullMQ worker for the workers,
each with the container's NODE_OPTIONS, so the probe server (components/probes/probe-server.js)
is preloaded as in the pod. Then each probe runs as the manifest gives it:
- httpGet probes to the deep-check port are asked N times; their cost is the CPU time the
  process spends answering (from /proc/<pid>/stat) and how much its resident memory grows;
- exec probes are run N times as commands; their cost is each run's CPU time and peak RSS, from
  the kernel's accounting (`wait4`);
- httpGet /health and tcpSocket probes are answered by the app's own server and cost it a
  request; they are listed, not measured.
`node -e 0` is the floor. Targets (issue 15): at most 1% of a core per pod, and no probe run
above 1.5x the floor's peak memory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from components.probes import DEEP_CHECK_PORT  # noqa: E402
from tests.probes.servers import (  # noqa: E402
    IDLE_APP,
    PostgresServer,
    RedisServer,
    S3Server,
    answers_http,
    free_port,
    http_get,
    require_node_modules,
    wait_until,
)
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


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(field)


@dataclass
class StandIn:
    """A process standing in for one container, with its env and preloads."""

    proc: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, container: dict[str, Any], env: dict[str, str]) -> StandIn:
        port = free_port()
        env = {**env, "DEEP_CHECK_PORT": str(port)}
        if container["name"] == "workers":
            argv = ["node", str(WORKER_HELPER), "bullmq_worker.js"]
        else:
            argv = ["node", "-e", IDLE_APP]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stand_in = cls(proc, port)
        wait_until(lambda: answers_http(port), 20, f"{container['name']} stand-in's probe server")
        return stand_in

    def measure(self, path: str, runs: int) -> tuple[Cost, list[int]]:
        """CPU per answer and resident growth over `runs` answers, after one warm-up answer
        (the first loads the client modules, once per process)."""
        pid = self.proc.pid
        codes = [http_get(self.port, path, 10)[0]]
        rss_before, cpu_before = rss_mb(pid), cpu_seconds(pid)
        codes += [http_get(self.port, path, 10)[0] for _ in range(runs)]
        cpu = (cpu_seconds(pid) - cpu_before) / runs
        return Cost(cpu, max(0.0, rss_mb(pid, "VmHWM") - rss_before)), codes

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def idle_rss(env: dict[str, str]) -> float:
    """Resident memory of an idle node process with this environment, once settled."""
    proc = subprocess.Popen(["node", "-e", IDLE_APP], env=env)
    time.sleep(1.0)
    try:
        return rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
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
    stand_ins: list[StandIn] = []
    try:
        rec = render(args.stack)
        floor, _, _ = measure(["node", "-e", "0"], {"PATH": os.environ["PATH"]}, max(5, args.runs // 4))
        bare = idle_rss({"PATH": os.environ["PATH"]})
        print(f"floor  node -e 0: {floor.cpu_seconds:.3f} s CPU, {floor.peak_rss_mb:.0f} MB peak; "
              f"an idle node process: {bare:.0f} MB resident")
        for r in rec.resources:
            if r.type != "kubernetes:apps/v1:Deployment":
                continue
            doc = manifest(rec, r)
            for container in doc["spec"]["template"]["spec"]["containers"]:
                env = local_env(container, servers, node_modules)
                stand_in = StandIn.start(container, env)
                stand_ins.append(stand_in)
                share = 0.0
                for kind in ("startup", "readiness", "liveness"):
                    spec = container.get(f"{kind}Probe") or {}
                    period = float(spec.get("periodSeconds", 10))
                    get = spec.get("httpGet") or {}
                    if get.get("port") == DEEP_CHECK_PORT:
                        cost, codes = stand_in.measure(get["path"], args.runs)
                        how = "in-process answer"
                        growth = f"resident +{cost.peak_rss_mb:.1f} MB over {args.runs} runs"
                    elif "exec" in spec:
                        cost, codes, _ = measure(probe_script(spec["exec"]["command"]), env, args.runs)
                        how = "exec"
                        growth = f"{cost.peak_rss_mb:.0f} MB peak ({cost.peak_rss_mb / floor.peak_rss_mb:.2f}x floor)"
                    else:
                        if spec:
                            print(f"{container['name']:8} {kind:9} every {period:.0f} s: "
                                  f"{'httpGet ' + get.get('path', '') if get else 'tcpSocket'} (the app's own server)")
                        continue
                    if kind != "startup":  # the startup probe stops once it has passed
                        share += cost.cpu_seconds / period
                    print(f"{container['name']:8} {kind:9} every {period:.0f} s: {how} {cost.cpu_seconds:.4f} s CPU "
                          f"({cost.cpu_seconds / floor.cpu_seconds:.2f}x floor), {growth}, "
                          f"answers {sorted(set(codes))}")
                resident = rss_mb(stand_in.proc.pid) - (bare if container["name"] != "workers" else 0.0)
                print(f"{container['name']:8} probes take {share * 100:.3f}% of one core on average (target <= 1%)"
                      + (f"; the probe server and its clients keep {resident:.0f} MB resident over an idle node "
                         f"(upper bound: the app loads most of these modules itself)"
                         if container["name"] != "workers" else ""))
    finally:
        for stand_in in stand_ins:
            stand_in.stop()
        servers["postgres"].destroy()
        for name in ("cache", "queue", "s3"):
            servers[name].stop()


if __name__ == "__main__":
    main()
