"""`make e2e`: the real bundler, run from what the program renders for every stack.

    python -m tests.e2e [--stack dev] [--stack local] [--stack prod]

Builds (or reuses) the upstream `/app` tree, then runs each stack in its own node network
namespace, in parallel, and prints one line per scenario,
`e2e: <stack>: <scenario>: ok|FAIL (<figure or reason>)`, and at the end `N passed, M failed`.
It needs root (network namespaces, bubblewrap as another uid): it says so and fails, never skips.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from tests.e2e.network import IP, delete_netns, node_namespace, run
from tests.e2e.stack import TEST_OVERRIDES
from tools.harness import ROOT, stack_config
from tools.upstream import UpstreamError, prepare

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
        problems.append("needs root: it creates network namespaces and runs each container as its own uid "
                        "(CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SETUID); run `sudo make e2e`")
    missing = sorted({pkg for path, pkg in NEEDED.items() if not Path(path).exists()})
    if missing:
        problems.append(f"missing Debian packages {', '.join(missing)}: run {INSTALL}")
    if not (ROOT / "node_modules" / "yarn" / "bin" / "yarn").exists():
        problems.append(f"node_modules/yarn missing (the image's yarn): run {INSTALL}")
    return problems


def run_stack(stack: str, workdir: Path, results: dict[str, dict[str, int]]) -> None:
    node = node_namespace(f"x402e2e-{stack}")
    delete_netns(node)
    run(IP, "netns", "add", node)
    try:
        proc = subprocess.Popen(
            ["/usr/bin/nsenter", f"--net=/run/netns/{node}", sys.executable, "-m", "tests.e2e.stack", "--stack", stack,
             "--workdir", str(workdir)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        log = (workdir.parent / f"{stack}.log").open("w")
        with log:
            for line in proc.stdout:
                log.write(line)
                if line.startswith("{") and '"passed"' in line:
                    results[stack] = json.loads(line)
                elif line.startswith("e2e: "):
                    print(line, end="", flush=True)
        proc.wait()
        if stack not in results:
            print(f"e2e: {stack}: runner: FAIL (exited {proc.returncode} without a result; "
                  f"see {workdir.parent}/{stack}.log)",
                  flush=True)
            results[stack] = {"passed": 0, "failed": 1}
    finally:
        delete_netns(node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", action="append", choices=sorted(TEST_OVERRIDES))
    args = parser.parse_args()
    stacks = args.stack or sorted(TEST_OVERRIDES)
    problems = preflight()
    try:
        app = prepare()
    except UpstreamError as error:
        problems.append(str(error))
    if problems:
        for p in problems:
            print(f"e2e: setup: FAIL ({p})", flush=True)
        print(f"0 passed, {len(problems)} failed")
        sys.exit(1)
    dev_ref = stack_config("dev").get("x402-bundler:imageGitRef", "")
    print(f"e2e: dev: upstream image is the commit the stack builds: {'ok' if app.commit == dev_ref else 'FAIL'} "
          f"({app.commit[:12]} from {app.source}, "
          f"Pulumi.dev.yaml imageGitRef {dev_ref[:12]})", flush=True)
    base = ROOT / "build" / "e2e"
    results: dict[str, dict[str, int]] = {
        "build": {"passed": int(app.commit == dev_ref), "failed": int(app.commit != dev_ref)},
    }
    threads = []
    for stack in stacks:
        workdir = base / stack
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        thread = threading.Thread(target=run_stack, args=(stack, workdir, results))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    passed = sum(r["passed"] for r in results.values())
    failed = sum(r["failed"] for r in results.values())
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
