"""`make e2e`: the real bundler, run from what the program renders for every stack.

    python -m tests.e2e [--stack dev] [--stack local] [--stack prod]

Builds (or reuses) the upstream `/app` tree and reports the build's own lines, then runs each
stack in its own node network namespace, in parallel, and prints one line per scenario,
`e2e: <stack>: <scenario>: ok|FAIL (<figure or reason>)`, and at the end `N passed, M failed`.
A stack whose runner ends without reporting counts as a FAIL. It needs root (network
namespaces, cgroups, bubblewrap as another uid): it says so and fails, never skips.

On every exit path (a FAIL, an interrupt, SIGTERM) the stacks' runners are stopped and their
network namespaces and cgroups removed; a run killed outright (SIGKILL) takes its containers
with it (they die with their parent) and leaves namespaces and cgroups that the next run
removes first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.e2e.limits import Cgroup, CgroupError, remove_leftovers
from tests.e2e.network import IP, delete_netns, netns_names, node_namespace, run
from tests.e2e.stack import IMAGE_DOCKERFILE_ENV, TEST_OVERRIDES, building_render
from tests.e2e.upstream import BuildSpec, UpstreamError, build_report, prepare, prune
from tests.e2e.upstream.common import quiet
from tools.harness import ROOT

PREFIX = "x402e2e-"
NEEDED = {
    "/usr/bin/bwrap": "bubblewrap", "/usr/bin/nsenter": "util-linux", "/usr/bin/setpriv": "util-linux",
    "/usr/sbin/ip": "iproute2", "/usr/sbin/nft": "nftables", "/usr/bin/dumb-init": "dumb-init",
    "/usr/bin/redis-server": "redis-server", "/usr/bin/redis-cli": "redis-tools",
    # For initdb as a uid without a passwd entry (tests/e2e/images/postgres-entrypoint.sh).
    f"/usr/lib/{os.uname().machine}-linux-gnu/libnss_wrapper.so": "libnss-wrapper",
}
INSTALL = "bash scripts/install-test-deps.sh (as root)"


def preflight() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("needs root: it creates network namespaces and cgroups and runs each container as its own "
                        "uid (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SETUID); run `sudo make e2e`")
        return problems
    missing = sorted({pkg for path, pkg in NEEDED.items() if not Path(path).exists()})
    if missing:
        problems.append(f"missing Debian packages {', '.join(missing)}: run {INSTALL}")
    if not (ROOT / "node_modules" / "yarn" / "bin" / "yarn").exists():
        problems.append(f"node_modules/yarn missing (the image's yarn): run {INSTALL}")
    try:
        Cgroup.under_runner(f"{PREFIX}preflight").remove()
    except (CgroupError, OSError) as error:
        problems.append(f"cannot create cgroups to enforce limits: {error}")
    return problems


def clean_up(stacks: list[str]) -> None:
    """Whatever a run of these stacks left: their network namespaces and cgroups, by prefix."""
    for stack in stacks:
        for name in netns_names():
            if name.startswith(f"{PREFIX}{stack}-"):
                delete_netns(name)
        remove_leftovers(f"{PREFIX}{stack}")


class Stacks:
    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.results: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()

    def run(self, stack: str, workdir: Path) -> None:
        node = node_namespace(f"{PREFIX}{stack}")
        delete_netns(node)
        run(IP, "netns", "add", node)
        try:
            with self.lock:
                self.procs[stack] = proc = subprocess.Popen(
                    ["/usr/bin/nsenter", f"--net=/run/netns/{node}", sys.executable, "-m", "tests.e2e.stack",
                     "--stack", stack, "--workdir", str(workdir)],
                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert proc.stdout is not None
            with (workdir.parent / f"{stack}.log").open("w") as log:
                for line in proc.stdout:
                    log.write(line)
                    if line.startswith("{") and '"passed"' in line:
                        self.results[stack] = json.loads(line)
                    elif line.startswith("e2e: "):
                        print(line, end="", flush=True)
            proc.wait()
            if stack not in self.results:
                print(f"e2e: {stack}: runner: FAIL (exited {proc.returncode} without a result; "
                      f"see {workdir.parent}/{stack}.log)", flush=True)
                self.results[stack] = {"passed": 0, "failed": 1}
        finally:
            delete_netns(node)

    def stop(self) -> None:
        """Ask every runner to end (it tears its stack down), then make sure it has."""
        with self.lock:
            procs = list(self.procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", action="append", choices=sorted(TEST_OVERRIDES))
    parser.add_argument("--image-dockerfile", choices=("traced", "upstream"),
                        help="the building stacks' imageDockerfile, for make bench-image (default: the stack files')")
    args = parser.parse_args()
    if args.image_dockerfile:
        os.environ[IMAGE_DOCKERFILE_ENV] = args.image_dockerfile
    stacks = args.stack or sorted(TEST_OVERRIDES)
    problems = preflight()
    app = None
    if not problems:
        try:
            # Built once here, from what the building stack's program passes its docker-build Images;
            # each stack's runner reuses it (by key) or builds what its own rendering asks for.
            app = prepare(BuildSpec.of_resources(building_render().resources))
            if not args.image_dockerfile:  # the benchmark keeps both layouts
                prune({app.root}, quiet)
        except UpstreamError as error:
            problems.append(str(error))
    if problems or app is None:
        for p in problems:
            print(f"e2e: setup: FAIL ({p})", flush=True)
        print(f"0 passed, {len(problems)} failed")
        sys.exit(1)
    build = build_report(app)
    for name, ok, detail in build:
        print(f"e2e: build: {name}: {'ok' if ok else 'FAIL'} ({detail})", flush=True)
    runners = Stacks()
    runners.results["build"] = {"passed": sum(ok for _, ok, _ in build), "failed": sum(not ok for _, ok, _ in build)}

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    base = ROOT / "build" / "e2e"
    threads = []
    try:
        clean_up(stacks)
        for stack in stacks:
            workdir = base / stack
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            thread = threading.Thread(target=runners.run, args=(stack, workdir), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
    except KeyboardInterrupt as interrupt:
        print(f"e2e: interrupted ({interrupt}): stopping the stacks", flush=True)
        runners.stop()
        for stack in stacks:
            runners.results.setdefault(stack, {"passed": 0, "failed": 1})
    finally:
        clean_up(stacks)
    passed = sum(r["passed"] for r in runners.results.values())
    failed = sum(r["failed"] for r in runners.results.values())
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
