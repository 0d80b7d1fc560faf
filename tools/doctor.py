"""`make doctor STACK=...`: everything the stack's `make up` needs, checked at once, each problem
with its fix. `make up` runs it first (scripts/pulumi-up.sh), so a missing tool, a cluster that
is not the stack's, a backend without a login or a secret `up` needs is found before anything runs.

    python -m tools.doctor --stack dev

The checks: the tools and their versions; Docker's daemon and buildx (stacks that build); QEMU
for a second platform; the kubeconfig context the stack file pins, and that it answers; the
backend login; the passphrase; the stack's configuration, validated offline by the program
itself; and the secrets that validation needs that the stack file does not hold.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from components.names import PROJECT
from components.settings.stack_file import StackFileError, read_stack_file
from tools.harness import ROOT
from tools.validate import validate

PULUMI_MINIMUM = (3, 272, 0)
MINIMUMS = {"docker buildx": (0, 13, 0), "kind": (0, 27, 0), "kubectl": (1, 29, 0), "node": (20, 0, 0)}
LOCAL_DIR = Path(os.environ.get("X402_LOCAL_DIR", ROOT / ".pulumi-local"))
# Where the kernel lists registered binfmt handlers (QEMU for another platform's build).
BINFMT = Path(os.environ.get("X402_BINFMT_DIR", "/proc/sys/fs/binfmt_misc"))
# What `make up` creates for the local stack by itself, so their absence is no problem there.
LOCAL_MAKES = "make up creates it"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str
    fix: str = ""


Run = Callable[[list[str]], tuple[int, str]]


def run(argv: list[str]) -> tuple[int, str]:
    """(exit code, stdout and stderr); 127 when the program is not there."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(argv)}: no answer within 20 s"
    return done.returncode, (done.stdout + done.stderr).strip()


def version_in(text: str) -> Optional[tuple[int, int, int]]:
    match = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)) if match else None


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class StackFile:
    name: str
    config: dict[str, object]

    @classmethod
    def read(cls, stack: str) -> StackFile:
        return cls(stack, dict(read_stack_file(ROOT / f"Pulumi.{stack}.yaml").get("config") or {}))

    def get(self, key: str) -> object:
        return self.config.get(key if ":" in key else f"{PROJECT}:{key}")

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    @property
    def builds(self) -> bool:
        return self.get("imageMode") != "promote"


def tool(run: Run, name: str, argv: list[str], minimum: Optional[tuple[int, int, int]], needed_for: str,
         fix: str) -> Finding:
    code, out = run(argv)
    if code == 127:
        return Finding(False, name, f"not installed; {needed_for}", fix)
    found = version_in(out)
    if code != 0 or found is None:
        return Finding(False, name, f"`{' '.join(argv)}` failed: {out[-200:]}", fix)
    if minimum and found < minimum:
        return Finding(False, name, f"{dotted(found)} is older than {dotted(minimum)}; {needed_for}", fix)
    return Finding(True, name, dotted(found))


def tools(stack: StackFile, run: Run) -> list[Finding]:
    found = [Finding(sys.version_info >= (3, 11), "Python", platform.python_version(),
                     "install Python 3.11 (the program's .venv is made with it)")]
    found.append(Finding(bool(shutil.which("curl")), "curl", "on the PATH" if shutil.which("curl") else
                         "not installed; make up installs the Pulumi CLI and make check reaches the API with it",
                         "install curl"))
    found.append(tool(run, "Node.js", ["node", "--version"], MINIMUMS["node"],
                      "the local stack's throwaway wallet and the tests need Node.js 20", "install Node.js 20"))
    found.append(tool(run, "kubectl", ["kubectl", "version", "--client"], MINIMUMS["kubectl"],
                      "make up and make check reach the cluster with it",
                      "install kubectl 1.29 or newer: https://kubernetes.io/docs/tasks/tools/"))
    if stack.builds:
        found += docker(run, stack)
    if stack.is_local:
        kind = tool(run, "kind", ["kind", "version"], MINIMUMS["kind"], "make up creates the local cluster with it",
                    "install kind 0.27 or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation")
        context = stack.get("kubernetes:context")
        if not kind.ok and isinstance(context, str) and run(["kubectl", "--context", context, "version",
                                                             "--request-timeout=5s"])[0] == 0:
            kind = Finding(True, "kind", f"not installed; not needed while context {context} answers")
        found.append(kind)
    found.append(pulumi_cli(run))
    return found


def docker(run: Run, stack: StackFile) -> list[Finding]:
    code, out = run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if code == 127:
        return [Finding(False, "Docker", f"not installed; {stack.name} builds its image with it",
                        "install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop")]
    if code != 0:
        return [Finding(False, "Docker", f"installed, but its daemon does not answer: {out[-160:]}",
                        "start Docker (Docker Desktop, or: sudo systemctl start docker) and join the docker group")]
    found = [Finding(True, "Docker", f"daemon {out}"),
             tool(run, "docker buildx", ["docker", "buildx", "version"], MINIMUMS["docker buildx"],
                  "the image is built with buildx", "install the buildx plugin: https://docs.docker.com/build/install-buildx/")]
    platforms = stack.get("imagePlatforms")
    wanted = platforms if isinstance(platforms, list) else ["linux/amd64", "linux/arm64"]
    native = "linux/arm64" if platform.machine() in ("aarch64", "arm64") else "linux/amd64"
    for other in sorted(set(wanted) - {native}):
        arch = {"linux/arm64": "aarch64", "linux/amd64": "x86_64"}.get(other, other)
        ready = (BINFMT / f"qemu-{arch}").exists()
        found.append(Finding(ready, f"QEMU for {other}", "registered" if ready else "not registered",
                             f"docker run --privileged --rm tonistiigi/binfmt --install {other.split('/')[1]}"))
    return found


def pulumi_cli(run: Run) -> Finding:
    installed = LOCAL_DIR / "pulumi" / "bin" / "pulumi"
    argv = ["pulumi", "version"] if shutil.which("pulumi") or not installed.exists() else [str(installed), "version"]
    code, out = run(argv)
    if code == 127:
        return Finding(True, "Pulumi CLI", f"not on the PATH; make up installs {dotted(PULUMI_MINIMUM)} into "
                       ".pulumi-local (it needs to reach get.pulumi.com)")
    found = version_in(out)
    if found is None or found < PULUMI_MINIMUM:
        return Finding(False, "Pulumi CLI", f"{out[:60]} is older than {dotted(PULUMI_MINIMUM)}",
                       "upgrade it (https://www.pulumi.com/docs/install/), or take it off the PATH")
    return Finding(True, "Pulumi CLI", dotted(found))


def cluster(stack: StackFile, run: Run) -> Finding:
    context = stack.get("kubernetes:context")
    where = f"Pulumi.{stack.name}.yaml"
    if not isinstance(context, str) or not context:
        return Finding(False, "cluster", f"{where} pins no kubernetes:context, so up would deploy wherever kubectl "
                       "points", f"set kubernetes:context in {where} to the {stack.name} cluster's context "
                       "(kubectl config get-contexts -o name)")
    code, out = run(["kubectl", "config", "get-contexts", "-o", "name"])
    if code == 0 and context not in out.split():
        if stack.is_local:
            return Finding(True, "cluster", f"context {context} does not exist yet; {LOCAL_MAKES}")
        return Finding(False, "cluster", f"context {context} ({where}) is not in your kubeconfig",
                       f"point KUBECONFIG at the {stack.name} cluster's kubeconfig, or correct kubernetes:context "
                       f"in {where}")
    code, out = run(["kubectl", "--context", context, "version", "--request-timeout=5s"])
    if code != 0:
        if stack.is_local:
            return Finding(True, "cluster", f"context {context} does not answer; {LOCAL_MAKES} (or starts it)")
        said = out.splitlines()[-1][:160] if out else "no answer"
        return Finding(False, "cluster", f"context {context} does not answer: {said}",
                       f"check the {stack.name} cluster is up and your credentials for it are current")
    return Finding(True, "cluster", f"context {context} answers")


def backend(stack: StackFile, run: Run) -> list[Finding]:
    if stack.is_local:
        found = [Finding(True, "backend", "a file backend in .pulumi-local/state (no login)")]
    elif os.environ.get("PULUMI_BACKEND_URL"):
        found = [Finding(True, "backend", f"PULUMI_BACKEND_URL={os.environ['PULUMI_BACKEND_URL']}")]
    else:
        code, out = run(["pulumi", "whoami"])
        found = [Finding(True, "backend", "not checked yet: no Pulumi CLI; make up installs it, then checks the login")
                 if code == 127 else
                 Finding(code == 0, "backend", f"logged in as {out}" if code == 0 else
                         "not logged in to Pulumi Cloud, where CI keeps this stack's state",
                         "pulumi login   (or PULUMI_ACCESS_TOKEN; or PULUMI_BACKEND_URL for your team's backend)")]
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE") or os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        found.append(Finding(True, "passphrase", "set in the environment"))
    elif stack.is_local:
        found.append(Finding(True, "passphrase", ".pulumi-local/passphrase" if (LOCAL_DIR / "passphrase").exists()
                             else f"not set; {LOCAL_MAKES}"))
    else:
        found.append(Finding(False, "passphrase", "PULUMI_CONFIG_PASSPHRASE(_FILE) is not set",
                             "export PULUMI_CONFIG_PASSPHRASE_FILE=<file holding the team's passphrase> (README, dev)"))
    return found


def configuration(stack: StackFile) -> list[Finding]:
    """The program's own validation, as `up` runs it, with only the secrets the stack file holds."""
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(said):
        checked = validate(stack.name, deploying=True)
    if checked.error is not None:
        return [Finding(False, "configuration", f"the program failed: {str(checked.error).splitlines()[0][:200]}",
                        f"make render STACK={stack.name} shows it")]
    found = []
    for p in checked.missing:
        if stack.is_local and p.key == "arweaveWallet":
            found.append(Finding(True, "secret arweaveWallet", "not set; make up generates a throwaway wallet"))
            continue
        found.append(Finding(False, f"secret {p.key}", f"up needs it, and Pulumi.{stack.name}.yaml does not hold it",
                             f"make secret STACK={stack.name} KEY={p.key} < <file>"))
    examples = [line for line in said.getvalue().splitlines() if line.startswith(f"{PROJECT}:exampleValues:")]
    if examples:
        found.append(Finding(True, "example values", examples[0].split(": ", 1)[1][:300]))
    found += [Finding(False, p.qualified, p.message, p.fix) for p in checked.other]
    if not checked.other:
        found.append(Finding(True, "configuration", "valid, as pulumi up validates it"))
    return found


def diagnose(stack: str, run: Run = run) -> list[Finding]:
    if not (ROOT / f"Pulumi.{stack}.yaml").is_file():
        return [Finding(False, "stack file", f"there is no Pulumi.{stack}.yaml", "STACK is local, dev or prod")]
    try:
        file = StackFile.read(stack)
    except StackFileError as error:
        return [Finding(False, "stack file", str(error), "fix the line and column it names")]
    return [*tools(file, run), cluster(file, run), *backend(file, run), *configuration(file)]


def report(stack: str, findings: list[Finding]) -> str:
    lines = [f"doctor: what make up STACK={stack} needs"]
    for f in findings:
        lines.append(f"  {'ok  ' if f.ok else 'FAIL'}  {f.what}: {f.detail}")
        if not f.ok and f.fix:
            lines.append(f"        fix: {f.fix}")
    failed = sum(not f.ok for f in findings)
    lines.append(f"doctor: {failed} problem(s); fix them and run make doctor STACK={stack} again" if failed
                 else f"doctor: all {len(findings)} checks pass")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--json", action="store_true", help="the findings as JSON")
    args = parser.parse_args(argv)
    findings = diagnose(args.stack)
    print(json.dumps([f.__dict__ for f in findings], indent=2) if args.json else report(args.stack, findings))
    return 1 if any(not f.ok for f in findings) else 0


if __name__ == "__main__":
    sys.exit(main())
