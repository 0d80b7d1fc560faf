"""examples/consumer, another team's program, against the outputs this program really exports:
the bundler stack is run under the harness first, and its outputs (secret ones marked secret, as
the engine marks them) are what the consumer's StackReference reads."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import CONFIG_MAP, JOB, SECRET, STACKS, recording
from tests.test_outputs_doc import documented
from tools.harness import ROOT, Recording, run_example

CONSUMER = ROOT / "examples" / "consumer"
BUNDLER_STACK = "example-org/x402-bundler/{stack}"


def consume(stack: str, preview: bool = False) -> tuple[Recording, Recording]:
    bundler = recording(stack)
    source = BUNDLER_STACK.format(stack=stack)
    consumer = run_example(
        CONSUMER, "dev", {"bundlerStack": source}, {source: bundler.outputs}, {source: bundler.secret_outputs},
        preview=preview,
    )
    return bundler, consumer


def test_the_consumer_reads_only_documented_outputs_and_a_secret_one() -> None:
    source = (CONSUMER / "__main__.py").read_text()
    read = set(re.findall(r'require_output\("(\w+)"\)', source))
    assert read and read <= set(documented())
    assert {"apiInternalUrl", "namespace"} <= read
    assert any(documented()[name] for name in read), "the example reads no secret output"


@pytest.mark.parametrize("stack", STACKS)
def test_the_consumer_puts_the_api_url_and_namespace_in_its_configmap(stack: str) -> None:
    bundler, consumer = consume(stack)
    (config_map,) = consumer.of_type(CONFIG_MAP)
    assert config_map.inputs["data"] == {
        "BUNDLER_API_URL": bundler.outputs["apiInternalUrl"],
        "BUNDLER_ADMIN_URL": bundler.outputs["adminInternalUrl"],
        "BUNDLER_NAMESPACE": bundler.outputs["namespace"],
    }
    assert consumer.outputs["bundlerApiUrl"] == bundler.outputs["apiInternalUrl"]
    assert bundler.outputs["apiInternalUrl"].startswith(f"http://bundler-api.{bundler.outputs['namespace']}.svc")
    # Its objects live in its own namespace, not the bundler's.
    (namespace,) = consumer.of_type("kubernetes:core/v1:Namespace")
    assert namespace.inputs["metadata"]["name"] == "bundler-consumer" != bundler.outputs["namespace"]


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_the_admin_password_stays_secret_from_stack_output_to_pod(preview: bool) -> None:
    bundler, consumer = consume("prod", preview=preview)
    password = bundler.outputs["adminPassword"]
    assert "adminPassword" in bundler.secret_outputs and password
    (secret,) = consumer.of_type(SECRET)
    # Recorded as the engine receives it: the value travels marked secret.
    assert secret.redacted_inputs["stringData"] == "[secret]"
    assert secret.inputs["stringData"]["ADMIN_PASSWORD"] == password
    for r in consumer.resources:
        if r.type != SECRET:
            assert password not in json.dumps(r.inputs), f"{r.type} {r.name} holds the admin password"
    # The export derived from it is secret only because the StackReference kept it secret.
    assert consumer.outputs["adminBasicAuth"] == f"{bundler.outputs['adminUsername']}:{password}"
    assert consumer.secret_outputs == {"adminBasicAuth"}


def test_the_smoke_job_reads_the_url_from_the_configmap_and_the_password_from_the_secret() -> None:
    _, consumer = consume("dev")
    (job,) = consumer.of_type(JOB)
    (config_map,) = consumer.of_type(CONFIG_MAP)
    (secret,) = consumer.of_type(SECRET)
    (container,) = job.get("spec.template.spec.containers")
    sources = container["envFrom"]
    assert {s["configMapRef"]["name"] for s in sources if "configMapRef" in s} == {consumer.k8s_name(config_map)}
    assert {s["secretRef"]["name"] for s in sources if "secretRef" in s} == {consumer.k8s_name(secret)}
    script = " ".join(container["command"])
    assert '"$BUNDLER_API_URL/health"' in script and "$ADMIN_PASSWORD" in script
    assert consumer.depends_on(job, config_map) and consumer.depends_on(job, secret)


def test_the_smoke_job_gives_curl_the_password_on_stdin_never_on_its_command_line(tmp_path: Path) -> None:
    _, consumer = consume("dev")
    (job,) = consumer.of_type(JOB)
    (container,) = job.get("spec.template.spec.containers")
    assert container["command"][:2] == ["sh", "-c"] and "@sha256:" in container["image"]
    # The Job's own script, run by a real sh with a curl that records what it was given.
    (tmp_path / "curl").write_text('#!/bin/sh\necho "$*" >> "$LOG"\ncase "$*" in *"-K -"*) cat >> "$LOG";; esac\n')
    (tmp_path / "curl").chmod(0o755)
    log = tmp_path / "log"
    password = 'pa"ss\\word-0123456789'
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "LOG": str(log), "BUNDLER_API_URL": "http://api:3001",
           "BUNDLER_ADMIN_URL": "http://admin:3002", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": password}
    done = subprocess.run(container["command"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    argv_lines = [line for line in log.read_text().splitlines() if line.startswith("-fsS")]
    assert argv_lines == ["-fsS http://api:3001/health", "-fsS -o /dev/null -K - http://admin:3002/admin/stats"]
    # curl's config syntax, with " and \\ escaped inside the quoted value.
    assert 'user = "admin:pa\\"ss\\\\word-0123456789"' in log.read_text().splitlines()


def test_a_renamed_output_fails_the_consumer_at_preview() -> None:
    bundler = recording("dev")
    source = BUNDLER_STACK.format(stack="dev")
    outputs = {k: v for k, v in bundler.outputs.items() if k != "apiInternalUrl"}
    with pytest.raises(Exception, match="apiInternalUrl"):
        run_example(CONSUMER, "dev", {"bundlerStack": source}, {source: outputs}, {source: bundler.secret_outputs},
                    preview=True)
