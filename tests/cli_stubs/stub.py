"""One stand-in for pulumi, kubectl, kind, docker and curl: `stub.py <program> <args...>`.

Each call appends one JSON line to $STUB_LOG (the program, its arguments and the environment
that matters) and answers as the real tool does for the calls scripts/pulumi-up.sh makes: the
same exit codes, and output in the real tool's shape. What a call creates (a cluster, a stack,
a secret) is a file in $STUB_STATE, so a second run finds it done.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

STATE = Path(os.environ["STUB_STATE"])
ENV_KEYS = ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_CONFIG_PASSPHRASE")
OUTPUTS = {
    "namespace": "x402-bundler-local",
    "publicUrl": "http://localhost:3001",
    "apiServiceName": "bundler-api",
    "apiInternalUrl": "http://bundler-api.x402-bundler-local.svc.cluster.local:3001",
    "adminServiceName": "bundler-admin",
    "adminInternalUrl": "http://bundler-admin.x402-bundler-local.svc.cluster.local:3002",
    "adminUsername": "admin",
}


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1] if name in args else ""


def done(name: str) -> bool:
    return (STATE / name).exists()


def mark(name: str, content: str = "") -> None:
    (STATE / name).write_text(content)


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def pulumi(args: list[str]) -> int:
    stack = flag(args, "--stack")
    match args:
        case ["version"]:
            print("v3.272.0")
        case ["whoami", *_]:
            return 0 if os.environ.get("STUB_LOGGED_IN") else fail(
                "error: PULUMI_ACCESS_TOKEN must be set for login during non-interactive CLI sessions", 255)
        case ["stack", "select", name]:
            return 0 if done(f"stack-{name}") else fail(f"error: no stack named '{name}' found", 255)
        case ["stack", "init", name, *_]:
            mark(f"stack-{name}")
            print(f"Created stack '{name}'")
        case ["config", "get", key, *_]:
            if not done(f"config-{stack}-{key}"):
                return fail(f"error: configuration key '{key}' not found for stack '{stack}'", 255)
            print((STATE / f"config-{stack}-{key}").read_text())
        case ["config", "set", "--secret", key, *_]:
            mark(f"config-{stack}-{key}", sys.stdin.read())
        case ["config", "set", key, value, "--stack", _]:
            mark(f"config-{stack}-{key}", value)
        case ["config", "rm", key, *_]:
            (STATE / f"config-{stack}-{key}").unlink(missing_ok=True)
        case ["preview", *_]:
            print(f"Previewing update ({stack})\n\nResources:\n    ~ 4 to update\n    52 unchanged")
        case ["destroy", *_]:
            (STATE / f"up-{stack}").unlink(missing_ok=True)
            print(f"Destroying ({stack})\n\nResources:\n    - 52 deleted")
        case ["up", *_]:
            mark(f"up-{stack}")
            print(f"Updating ({stack})\n\nResources:\n    + 52 created\n\nDuration: 3m12s")
        case ["stack", "output", "--json", *_]:
            if not done(f"up-{stack}"):
                print("{}")
                return 0
            print(json.dumps({**OUTPUTS, "adminPassword": "[secret]"}, indent=2))
        case ["stack", "output", name, *rest]:
            if not done(f"up-{stack}"):
                return fail(f"error: current stack does not have output property '{name}'", 255)
            if name == "adminPassword":
                print("stub-admin-password-0123" if "--show-secrets" in rest else "[secret]")
            else:
                print(OUTPUTS[name])
        case _:
            return fail(f"stub pulumi: unexpected {args}", 2)
    return 0


def kubectl(args: list[str]) -> int:
    context = flag(args, "--context") or "current"
    rest = [a for a in args if a not in ("--context", flag(args, "--context"))]
    match rest:
        case ["version", "--client"]:
            print("Client Version: v1.31.0\nKustomize Version: v5.4.2")
        case ["config", "get-contexts", "-o", "name"]:
            print("\n".join(sorted(p.name.removeprefix("cluster-") for p in STATE.glob("cluster-*"))))
        case ["version", *_]:
            if done(f"cluster-{context}"):
                print("Client Version: v1.31.0\nServer Version: v1.31.0")
                return 0
            return fail("The connection to the server 127.0.0.1:6443 was refused - "
                        "did you specify the right host or port?")
        case ["config", "current-context"]:
            print(context)
        case ["-n", _, "port-forward", service, ports]:
            # As the real one, it keeps running until it is killed; the script must end it.
            print(f"Forwarding from 127.0.0.1:{ports.split(':')[0]} -> {ports.split(':')[1]} ({service})", flush=True)
            mark(f"port-forward-{os.getpid()}", service)
            time.sleep(30)
        case ["apply", "-f", "-"]:
            mark(f"applied-{context}", sys.stdin.read())
            print("configmap/local-registry-hosting created")
        case _:
            return fail(f"stub kubectl: unexpected {args}", 2)
    return 0


def kind(args: list[str]) -> int:
    match args:
        case ["version"]:
            print("kind v0.27.0 go1.23.6 linux/amd64")
        case ["get", "clusters"]:
            names = sorted(p.name.removeprefix("cluster-kind-") for p in STATE.glob("cluster-kind-*"))
            if not names:
                return fail("No kind clusters found.", 0)
            print("\n".join(names))
        case ["create", "cluster", "--name", name, "--config=-"]:
            mark(f"kind-config-{name}", sys.stdin.read())
            mark(f"cluster-kind-{name}")
            print(f"Creating cluster \"{name}\" ...\nSet kubectl context to \"kind-{name}\"")
        case ["get", "nodes", "--name", name]:
            print(f"{name}-control-plane")
        case _:
            return fail(f"stub kind: unexpected {args}", 2)
    return 0


def docker(args: list[str]) -> int:
    match args:
        case ["info", "--format", template]:
            print("27.3.1" if "ServerVersion" in template else os.environ.get("STUB_DOCKER_ARCH", "x86_64"))
        case ["info"]:
            print("Server:\n Server Version: 27.3.1")
        case ["buildx", "version"]:
            print("github.com/docker/buildx v0.17.1 257815a")
        case ["buildx", "inspect", name]:
            return 0 if done(f"builder-{name}") else fail(f'ERROR: no builder "{name}" found')
        case ["buildx", "create", "--name", name, *rest]:
            mark(f"builder-{name}", Path(flag(rest, "--buildkitd-config")).read_text())
            print(name)
        case ["inspect", "-f", "{{.State.Running}}", _]:
            if not done("registry"):
                return fail("Error: No such object: kind-registry")
            print("true")
        case ["inspect", "-f", "{{json .NetworkSettings.Networks.kind}}", _]:
            print('{"NetworkID": "kind"}' if done("registry-on-kind") else "null")
        case ["run", "-d", *_]:
            mark("registry", " ".join(args))
            print("3f4e5d6c7b8a")
        case ["exec", node, "test", "-f", _]:
            return 0 if done(f"hosts-{node}") else 1
        case ["exec", _, "mkdir", "-p", _]:
            pass
        case ["exec", "-i", node, "cp", "/dev/stdin", _]:
            mark(f"hosts-{node}", sys.stdin.read())
        case ["network", "connect", "kind", _]:
            mark("registry-on-kind")
        case _:
            return fail(f"stub docker: unexpected {args}", 2)
    return 0


INSTALLER = """#!/bin/sh
# stand-in for https://get.pulumi.com/install.sh: the flags the real one takes
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version="$2"; shift 2 ;;
    --install-root) root="$2"; shift 2 ;;
    --no-edit-path) shift ;;
    *) echo "unknown flag $1" >&2; exit 1 ;;
  esac
done
mkdir -p "$root/bin"
ln -s "{stub}" "$root/bin/pulumi"
echo "=== Installing Pulumi v$version ==="
"""


def curl(args: list[str]) -> int:
    if "https://get.pulumi.com" in args:
        if os.environ.get("STUB_OFFLINE"):
            return fail("curl: (6) Could not resolve host: get.pulumi.com", 6)
        installer = INSTALLER.replace("{stub}", str(Path(os.environ["STUB_POOL"]) / "pulumi"))
        if "-o" in args:
            Path(flag(args, "-o")).write_text(installer)
        else:
            print(installer)
        return 0
    url = args[-1]
    if url.endswith("/health") and done("up-local"):
        print("OK")
        return 0
    if url.endswith("/admin/stats") and "-K" in args and done("up-local"):
        config = sys.stdin.read()  # curl -K - reads `user = "name:password"` from stdin
        mark("admin-auth", config)
        return 0 if 'user = "admin:stub-admin-password-0123"' in config else fail("curl: (22) 401", 22)
    return fail(f"curl: (7) Failed to connect to {url}", 7)


def main() -> int:
    program, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["STUB_LOG"], "a") as log:
        log.write(json.dumps({"program": program, "args": args,
                              "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ}}) + "\n")
    return {"pulumi": pulumi, "kubectl": kubectl, "kind": kind, "docker": docker, "curl": curl}[program](args)


if __name__ == "__main__":
    sys.exit(main())
