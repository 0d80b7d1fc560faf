"""`make doctor` (tools/doctor.py) on a laptop of stand-in tools (tests/laptop.py): every problem at
once, each with its fix, and nothing reported that `make up` would take care of itself."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.laptop import Laptop
from tools.harness import ROOT


def doctor(laptop: Laptop, stack: str, **env: str) -> subprocess.CompletedProcess[str]:
    binfmt = laptop.tmp / "binfmt"  # QEMU registered for arm64, unless a test removes it
    binfmt.mkdir(exist_ok=True)
    (binfmt / "qemu-aarch64").touch()
    base = {"PATH": str(laptop.bin), "HOME": str(laptop.tmp), "STUB_LOG": str(laptop.log),
            "STUB_STATE": str(laptop.state), "STUB_POOL": str(laptop.tmp / "pool"),
            "X402_LOCAL_DIR": str(laptop.local_dir), "X402_BINFMT_DIR": str(binfmt)}
    keep = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
    return subprocess.run([sys.executable, "-m", "tools.doctor", "--stack", stack], cwd=ROOT,
                          env={**keep, **base, **env}, capture_output=True, text=True, timeout=120)


def lines(done: subprocess.CompletedProcess[str], kind: str) -> list[str]:
    return [line.strip() for line in done.stdout.splitlines() if line.strip().startswith(kind)]


def test_a_fresh_laptop_can_bring_up_the_sandbox(laptop: Laptop) -> None:
    """What make up creates itself (the cluster, the passphrase, the wallet, the CLI) is no problem."""
    done = doctor(laptop, "local")
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1].startswith("doctor: all ") and not lines(done, "FAIL")
    assert any("Pulumi CLI: not on the PATH; make up installs 3.272.0" in line for line in lines(done, "ok"))
    assert any("cluster: context kind-x402-bundler-local does not exist yet" in line for line in lines(done, "ok"))


def test_every_missing_tool_is_reported_at_once_with_its_fix(laptop: Laptop) -> None:
    for tool in ("docker", "kind", "kubectl"):
        laptop.remove(tool)
    done = doctor(laptop, "local")
    assert done.returncode == 1
    failed = lines(done, "FAIL")
    assert [f.split(":")[0] for f in failed] == ["FAIL  kubectl", "FAIL  Docker", "FAIL  kind"]
    assert len(lines(done, "fix:")) == 3 and "doctor: 3 problem(s)" in done.stdout


def test_a_local_cluster_that_answers_needs_no_kind(laptop: Laptop) -> None:
    (laptop.state / "cluster-kind-x402-bundler-local").write_text("")
    laptop.remove("kind")
    done = doctor(laptop, "local")
    assert done.returncode == 0, done.stdout
    assert "kind: not installed; not needed while context kind-x402-bundler-local answers" in done.stdout


def test_dev_names_its_cluster_backend_passphrase_secrets_and_examples(laptop: Laptop) -> None:
    done = doctor(laptop, "dev")
    assert done.returncode == 1
    out = done.stdout
    assert "FAIL  cluster: context dev-cluster (Pulumi.dev.yaml) is not in your kubeconfig" in out
    assert "FAIL  passphrase: PULUMI_CONFIG_PASSPHRASE(_FILE) is not set" in out
    for key in ("arweaveWallet", "registryPushToken", "registryPullToken"):
        assert f"FAIL  secret {key}: up needs it" in out and f"make secret STACK=dev KEY={key} < <file>" in out
    assert "FAIL  x402-bundler:exampleValues: still lists imageRepository, registryUsername" in out
    # dev can deploy with its example payment address: said, with what it does, not refused.
    assert "ok    example values: Pulumi.dev.yaml still holds examples: payments go to 0x5Fb0" in out


def test_dev_with_its_cluster_login_and_passphrase_lacks_only_its_secrets_and_real_values(laptop: Laptop) -> None:
    (laptop.state / "cluster-dev-cluster").write_text("")
    (laptop.bin / "pulumi").symlink_to(laptop.tmp / "pool" / "pulumi")
    done = doctor(laptop, "dev", STUB_LOGGED_IN="1", PULUMI_CONFIG_PASSPHRASE="team")
    out = done.stdout
    assert "ok    cluster: context dev-cluster answers" in out and "ok    backend: logged in" in out
    assert "ok    passphrase: set in the environment" in out
    assert {line.split(":")[0] for line in lines(done, "FAIL")} == {
        "FAIL  secret arweaveWallet", "FAIL  secret registryPushToken", "FAIL  secret registryPullToken",
        "FAIL  x402-bundler"}


def test_prod_needs_no_docker_and_refuses_every_example(laptop: Laptop) -> None:
    laptop.remove("docker")
    done = doctor(laptop, "prod")
    assert "Docker" not in done.stdout
    assert "their values in Pulumi.prod.yaml are examples, and prod does not deploy examples" in done.stdout
    for key in ("cdpApiKeyId", "cdpApiKeySecret", "dbPassword", "s3AccessKeyId", "s3SecretAccessKey"):
        assert f"FAIL  secret {key}: up needs it" in done.stdout


def test_a_two_platform_build_without_qemu_says_how_to_register_it(laptop: Laptop) -> None:
    done = doctor(laptop, "dev", X402_BINFMT_DIR=str(laptop.tmp / "no-binfmt"))
    assert "FAIL  QEMU for linux/arm64: not registered" in done.stdout
    assert "docker run --privileged --rm tonistiigi/binfmt --install arm64" in done.stdout
    assert "QEMU" not in doctor(laptop, "local", X402_BINFMT_DIR=str(laptop.tmp / "no-binfmt")).stdout
