"""`make up` from nothing, run against stand-ins of pulumi, kubectl, kind, docker and curl.

The stand-ins (tests/cli_stubs/stub.py) record every call and answer as the real tools do, so
these tests see what scripts/pulumi-up.sh would run on a laptop, in which order, what it skips
the second time, and what it says when something is missing.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.laptop import SCRIPT, Laptop
from tools.harness import ROOT


def in_order(commands: list[str], *expected: str) -> bool:
    """Each expected prefix matches a command after the previous one."""
    it = iter(commands)
    return all(any(c.startswith(prefix) for c in it) for prefix in expected)


def test_first_make_up_installs_the_cli_creates_kind_with_a_registry_and_sets_the_secrets(laptop: Laptop) -> None:
    done = laptop.run()
    assert done.returncode == 0, done.stderr
    commands = laptop.commands()
    assert in_order(
        commands,
        "curl -fsSL https://get.pulumi.com",
        "pulumi version",
        "docker info",
        "docker buildx version",
        "kubectl --context kind-x402-bundler-local version",
        "kind get clusters",
        "docker inspect -f {{.State.Running}} kind-registry",
        "docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name kind-registry registry:3",
        "kind create cluster --name x402-bundler-local --config=-",
        "kind get nodes --name x402-bundler-local",
        "docker exec -i x402-bundler-local-control-plane cp /dev/stdin "
        "/etc/containerd/certs.d/localhost:5001/hosts.toml",
        "docker network connect kind kind-registry",
        "kubectl --context kind-x402-bundler-local apply -f -",
        "docker buildx create --name x402-bundler-local --driver docker-container --driver-opt network=host",
        "pulumi stack select local",
        "pulumi stack init local --secrets-provider passphrase",
        "pulumi config get x402-bundler:arweaveWallet --stack local",
        "pulumi config set --secret x402-bundler:arweaveWallet --stack local",
        "pulumi up --stack local",
        "pulumi stack output",
    ), commands
    # The installer's flags, with the pinned version, into the project's git-ignored folder.
    (installer,) = [c for c in laptop.calls() if c["program"] == "curl"]
    assert installer["args"] == ["-fsSL", "https://get.pulumi.com", "-o", str(laptop.local_dir / "install-pulumi.sh")]
    assert not (laptop.local_dir / "install-pulumi.sh").exists()
    assert (laptop.local_dir / "pulumi" / "bin" / "pulumi").exists()
    assert ".pulumi-local/" in (ROOT / ".gitignore").read_text().split()
    # kind's documented layout: containerd reads certs.d, the node maps localhost:5001 to the registry.
    assert 'config_path = "/etc/containerd/certs.d"' in laptop.state_of("kind-config-x402-bundler-local")
    assert laptop.state_of("hosts-x402-bundler-local-control-plane") == '[host."http://kind-registry:5000"]\n'
    assert "name: local-registry-hosting" in laptop.state_of("applied-kind-x402-bundler-local")
    assert laptop.state_of("builder-x402-bundler-local") == '[registry."localhost:5001"]\n  http = true\n'


def test_every_pulumi_call_of_local_uses_its_file_backend_and_generated_passphrase(laptop: Laptop) -> None:
    assert laptop.run().returncode == 0
    passphrase = laptop.local_dir / "passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    assert len(passphrase.read_text()) >= 40
    for call in (c for c in laptop.calls() if c["program"] == "pulumi" and c["args"] != ["version"]):
        assert call["env"] == {"PULUMI_BACKEND_URL": f"file://{laptop.local_dir}/state",
                               "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase)}, call


def test_the_generated_wallet_is_a_4096_bit_jwk_given_only_to_pulumi_as_a_secret(laptop: Laptop) -> None:
    done = laptop.run()
    wallet = json.loads(laptop.state_of("config-local-x402-bundler:arweaveWallet"))
    assert wallet["kty"] == "RSA" and wallet["e"] == "AQAB"
    assert {"n", "d", "p", "q", "dp", "dq", "qi"} <= set(wallet)
    assert len(base64.urlsafe_b64decode(wallet["n"] + "==")) * 8 == 4096
    transcript = done.stdout + done.stderr
    assert wallet["d"] not in transcript and wallet["n"] not in transcript
    assert "holds no AR" in transcript and "local sandbox only" in transcript
    assert not any(wallet["d"] in p.read_text(errors="replace") for p in laptop.local_dir.rglob("*") if p.is_file())


def test_make_up_ends_with_the_url_the_port_forward_and_the_admin_password_command(laptop: Laptop) -> None:
    out = laptop.run().stdout
    assert "API (once forwarded): http://localhost:3001" in out
    assert ("kubectl --context kind-x402-bundler-local -n x402-bundler-local port-forward svc/bundler-api 3001:3001"
            in out)
    assert 'make pulumi STACK=local ARGS="stack output adminPassword --show-secrets"' in out
    assert "stub-admin-password" not in out


def test_a_second_make_up_skips_every_finished_step(laptop: Laptop) -> None:
    assert laptop.run().returncode == 0
    laptop.log.unlink()
    again = laptop.run()
    assert again.returncode == 0, again.stderr
    commands = laptop.commands()
    for finished in ("curl", "kind create", "docker run", "docker network connect", "docker buildx create",
                     "pulumi stack init", "pulumi config set", "docker exec -i"):
        assert not any(c.startswith(finished) for c in commands), (finished, commands)
    assert in_order(commands, "kubectl --context kind-x402-bundler-local version", "pulumi stack select local",
                    "pulumi config get x402-bundler:arweaveWallet", "pulumi up --stack local")
    assert "context kind-x402-bundler-local answers" in again.stdout
    assert "using .pulumi-local/passphrase" in again.stdout


def test_make_up_runs_make_doctor_first_and_stops_on_its_problems_before_anything_is_created(
        laptop: Laptop) -> None:
    laptop.remove("docker")
    laptop.remove("kind")
    done = laptop.run()
    assert done.returncode == 1
    assert "FAIL  Docker: not installed" in done.stdout and "https://docs.docker.com/engine/install/" in done.stdout
    assert "FAIL  kind: not installed" in done.stdout and "doctor: 2 problem(s)" in done.stdout
    assert "the problems above stop make up" in done.stderr
    assert not any(c.startswith(("kind create", "pulumi", "curl")) for c in laptop.commands())


def test_missing_docker_is_named_by_the_script_too(laptop: Laptop) -> None:
    laptop.remove("docker")
    done = laptop.run(doctor=False)
    assert done.returncode == 1
    assert "Docker is not installed" in done.stderr and "https://docs.docker.com/engine/install/" in done.stderr
    assert not any(c.startswith(("kind create", "pulumi stack init", "pulumi up")) for c in laptop.commands())


def test_without_network_to_the_pulumi_installer_make_up_ends_in_its_own_message(laptop: Laptop) -> None:
    done = laptop.run(STUB_OFFLINE="1")
    assert done.returncode == 1
    assert done.stderr.startswith("make up STACK=local: cannot download Pulumi's installer from get.pulumi.com: "
                                  "curl: (6) Could not resolve host")
    assert "install Pulumi 3.272.0 or newer yourself" in done.stderr


def test_missing_buildx_is_named(laptop: Laptop) -> None:
    (laptop.bin / "docker").unlink()
    real = laptop.tmp / "pool" / "docker"
    (laptop.bin / "docker").write_text(
        '#!/bin/sh\n[ "$1" = buildx ] && [ "$2" = version ] && '
        '{ echo "docker: \'buildx\' is not a docker command." >&2; exit 1; }\n'
        f'exec "{real}" "$@"\n')
    (laptop.bin / "docker").chmod(0o755)
    done = laptop.run()
    assert done.returncode == 1 and "FAIL  docker buildx:" in done.stdout and "install-buildx" in done.stdout
    done = laptop.run(doctor=False)
    assert done.returncode == 1 and "buildx plugin is missing" in done.stderr


def test_missing_kind_without_a_cluster_says_what_to_install(laptop: Laptop) -> None:
    laptop.remove("kind")
    done = laptop.run(doctor=False)
    assert done.returncode == 1
    assert "kind is not installed" in done.stderr and "kind.sigs.k8s.io" in done.stderr
    assert not any(c.startswith(("docker run", "pulumi up")) for c in laptop.commands())


def test_an_answering_cluster_is_used_as_it_is_even_without_kind(laptop: Laptop) -> None:
    (laptop.state / "cluster-kind-x402-bundler-local").write_text("")
    laptop.remove("kind")
    done = laptop.run()
    assert done.returncode == 0, done.stderr
    assert "pulumi up --stack local" in laptop.commands()


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dev_and_prod_never_generate_a_passphrase(laptop: Laptop, stack: str) -> None:
    (laptop.state / f"cluster-{stack}-cluster").write_text("")
    done = laptop.run(stack, doctor=False, STUB_LOGGED_IN="1")
    assert done.returncode == 1
    assert "PULUMI_CONFIG_PASSPHRASE is not set" in done.stderr
    assert not (laptop.local_dir / "passphrase").exists()
    assert not any(c.startswith(("pulumi stack init", "pulumi up")) for c in laptop.commands())


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dev_and_prod_never_generate_a_wallet(laptop: Laptop, stack: str) -> None:
    (laptop.state / f"cluster-{stack}-cluster").write_text("")
    done = laptop.run(stack, doctor=False, STUB_LOGGED_IN="1", PULUMI_CONFIG_PASSPHRASE="team-passphrase")
    assert done.returncode == 1
    assert f"x402-bundler:arweaveWallet is not set; {stack} signs bundles" in done.stderr
    assert not any(c.startswith(("pulumi config set", "pulumi up")) for c in laptop.commands())


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dev_and_prod_keep_their_state_where_ci_does(laptop: Laptop, stack: str) -> None:
    done = laptop.run(stack, doctor=False)
    assert done.returncode == 1
    assert "pulumi login" in done.stderr
    assert not any(c.startswith("pulumi stack") for c in laptop.commands())


def test_only_stacks_that_build_check_docker(laptop: Laptop) -> None:
    for stack in ("dev", "prod"):
        (laptop.state / f"cluster-{stack}-cluster").write_text("")
    laptop.remove("docker")
    assert "Docker is not installed" in laptop.run("dev", doctor=False, STUB_LOGGED_IN="1").stderr
    prod = laptop.run("prod", doctor=False, STUB_LOGGED_IN="1", PULUMI_CONFIG_PASSPHRASE="p")
    assert "Docker" not in prod.stderr and "arweaveWallet is not set" in prod.stderr


def test_an_old_pulumi_on_the_path_is_refused_with_the_minimum(laptop: Laptop) -> None:
    old = laptop.bin / "pulumi"
    old.write_text('#!/bin/sh\n[ "$1" = version ] && echo v3.100.0\n')
    old.chmod(0o755)
    done = laptop.run()
    assert done.returncode == 1 and "FAIL  Pulumi CLI: v3.100.0 is older than 3.272.0" in done.stdout
    done = laptop.run(doctor=False)
    assert done.returncode == 1 and "pulumi 3.100.0 is older than 3.272.0" in done.stderr


def test_the_pinned_cli_is_the_sdk_version() -> None:
    pinned = next(line for line in SCRIPT.read_text().splitlines() if line.startswith("PULUMI_VERSION="))
    sdk = next(line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("pulumi=="))
    assert pinned.split("=", 1)[1] == sdk.split("==", 1)[1]


def test_make_up_defaults_to_the_local_stack() -> None:
    done = subprocess.run(["make", "-n", "up"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "MAKEFLAGS": ""})
    assert "bash scripts/pulumi-up.sh local up" in done.stdout


def test_make_check_reaches_health_and_the_admin_dashboard_without_printing_the_password(laptop: Laptop) -> None:
    assert laptop.run().returncode == 0
    laptop.log.unlink()
    done = laptop.run(action="check")
    assert done.returncode == 0, done.stderr
    commands = laptop.commands()
    # The port-forwards run in the background, so they may log after the first request.
    forwards = {c for c in commands if " port-forward " in c}
    assert forwards == {f"kubectl --context kind-x402-bundler-local -n x402-bundler-local port-forward {s}"
                        for s in ("svc/bundler-api 3001:3001", "svc/bundler-admin 3002:3002")}
    assert in_order(commands, "curl -fsS", "curl -fsS -o /dev/null")
    assert any(c.endswith("http://localhost:3001/health") for c in commands)
    # The password reaches curl on stdin only: never in an argument list or the transcript.
    assert "stub-admin-password" in laptop.state_of("admin-auth")
    assert "stub-admin-password" not in json.dumps(laptop.calls()) + done.stdout + done.stderr
    # The outputs are read once; only the password is asked for on its own, to reveal it.
    assert [c for c in commands if c.startswith("pulumi stack output")] == [
        "pulumi stack output --json --stack local",
        "pulumi stack output adminPassword --show-secrets --stack local",
    ]
    # Both port-forwards were running, and none outlives `make check`.
    pids = [int(p.name.rsplit("-", 1)[1]) for p in laptop.state.glob("port-forward-*")]
    assert len(pids) == 2
    deadline = time.monotonic() + 5  # SIGTERM was sent as the script exited; give it a moment
    while (running := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running, "a port-forward was left running"


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its (gone) parent to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_make_check_before_any_up_says_to_run_make_up(laptop: Laptop) -> None:
    done = laptop.run(action="check")
    assert done.returncode == 1 and "Run make up STACK=local first." in done.stderr


def test_the_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: bash scripts/install-test-deps.sh installs it"
    done = subprocess.run([shellcheck, *sorted(str(p) for p in (ROOT / "scripts").glob("*.sh"))],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_a_bare_make_lists_every_target_with_what_it_does() -> None:
    done = subprocess.run(["make"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "is up to date" not in done.stdout
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.startswith("  ")}
    assert {"up", "check", "destroy", "doctor", "secret", "diff", "render", "test", "help"} <= listed


def test_an_empty_stack_is_refused_before_anything_runs() -> None:
    done = subprocess.run(["make", "up", "STACK="], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "STACK is empty: name a stack, STACK=local, dev or prod" in done.stderr


def test_make_secret_takes_the_key_by_name_and_the_value_only_on_stdin() -> None:
    done = subprocess.run(["make", "secret", "STACK=dev"], cwd=ROOT, input="s3cr3t-in-stdin", capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "name the key, KEY=<key>" in done.stderr and "s3cr3t" not in done.stderr
    dry = subprocess.run(["make", "-n", "secret", "STACK=dev", "KEY=arweaveWallet"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30).stdout
    assert "scripts/pulumi-up.sh dev config set --secret x402-bundler:arweaveWallet" in dry
