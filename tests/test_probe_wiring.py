"""The deep check is wired where it belongs: readiness everywhere, liveness only for workers."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from components import probes
from tests.helpers import CONFIG_MAP, DEPLOYMENT, container, deployment, render
from tools.harness import Recording

READINESS = {
    "api": {"postgres", "redis-cache", "redis-queue", "s3"},
    "admin": {"postgres", "redis-cache", "redis-queue"},
    "workers": {"postgres", "redis-queue", "s3"},
}


def query_of(probe: dict) -> dict[str, str]:
    get = probe["httpGet"]
    assert get["port"] == probes.DEEP_CHECK_PORT
    url = urlsplit(get["path"])
    assert url.path == probes.DEEP_CHECK_PATH
    return dict(parse_qsl(url.query, strict_parsing=True))


def checks_of(probe: dict) -> set[str]:
    return set(query_of(probe)["checks"].split(","))


@pytest.mark.parametrize("component", sorted(READINESS))
def test_readiness_is_the_deep_check_of_what_the_process_needs(dev: Recording, component: str) -> None:
    probe = container(deployment(dev, component))["readinessProbe"]
    assert checks_of(probe) == READINESS[component]


def test_worker_liveness_checks_the_worker_process_in_the_pod_with_a_generous_threshold(dev: Recording) -> None:
    c = container(deployment(dev, "workers"))
    assert checks_of(c["livenessProbe"]) == {"bullmq-worker"}
    assert c["livenessProbe"]["failureThreshold"] > c["readinessProbe"]["failureThreshold"]
    # The check finds the worker by its command line, the script the container runs, and
    # matches nothing against addresses the queue Redis sees (NAT would change them).
    default = re.search(r"const DEFAULT_WORKER_CMDLINE = '([^']+)'", probes.SCRIPT.read_text())
    assert default is not None and default.group(1) == c["args"][1] == "lib/jobs/allWorkers.js"
    env = {e["name"] for e in c["env"]}
    assert "DEEP_CHECK_WORKER_CMDLINE" not in env


def test_no_pod_needs_its_ip_any_more(dev: Recording, prod: Recording) -> None:
    for rec in (dev, prod):
        for d in rec.of_type(DEPLOYMENT):
            assert "POD_IP" not in {e["name"] for e in container(d)["env"]}, d.name
    assert "POD_IP" not in probes.SCRIPT.read_text()


def test_worker_start_up_is_the_node_process_not_dumb_init(dev: Recording) -> None:
    c = container(deployment(dev, "workers"))
    command = c["startupProbe"]["exec"]["command"]
    assert command[:2] == ["pgrep", "-f"]
    pattern = re.compile(command[2])
    assert pattern.search(" ".join(c["args"]))
    assert not pattern.search("/usr/bin/dumb-init -- " + " ".join(c["args"]))


@pytest.mark.parametrize("component", sorted(READINESS))
def test_the_checks_answer_before_the_kubelet_gives_up(dev: Recording, component: str) -> None:
    probe = container(deployment(dev, component))["readinessProbe"]
    budget_ms = int(query_of(probe)["timeout-ms"])
    # The checks' hard deadline is their timeout plus 250 ms; the answer must reach the kubelet.
    assert budget_ms + 250 < probe["timeoutSeconds"] * 1000
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 20, "a blip of a few seconds must not flip readiness"


def test_probe_timings_come_from_config() -> None:
    rec = render("dev", overrides={"probePeriodSeconds": 15, "probeTimeoutSeconds": 6, "probeFailureThreshold": 4})
    probe = container(deployment(rec, "api"))["readinessProbe"]
    assert (probe["periodSeconds"], probe["timeoutSeconds"], probe["failureThreshold"]) == (15, 6, 4)


def test_the_config_map_holds_the_scripts_and_is_mounted_read_only(dev: Recording) -> None:
    (cm,) = [r for r in dev.of_type(CONFIG_MAP) if "deep-check.js" in (r.inputs.get("data") or {})]
    assert cm.inputs["data"] == {
        "deep-check.js": probes.SCRIPT.read_text(),
        "probe-server.js": probes.SERVER_SCRIPT.read_text(),
        "graceful-shutdown.js": probes.DRAIN_SCRIPT.read_text(),
    }
    name = dev.k8s_name(cm)
    for d in dev.of_type(DEPLOYMENT):
        spec = d.get("spec.template.spec")
        (volume,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == name]
        (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True and mount["mountPath"] == probes.MOUNT_PATH


def test_a_changed_script_rolls_the_pods(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    before = {d.name: d.get("spec.template") for d in render("dev").of_type(DEPLOYMENT)}
    changed = tmp_path / "deep-check.js"
    changed.write_text(probes.SCRIPT.read_text() + "\n// changed\n")
    monkeypatch.setattr(probes, "SCRIPT", changed)
    after = {d.name: d.get("spec.template") for d in render("dev").of_type(DEPLOYMENT)}
    assert all(before[n] != after[n] for n in before)


def test_a_changed_script_does_not_re_run_the_migration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.helpers import migration_job

    before = render("dev")
    changed = tmp_path / "graceful-shutdown.js"
    changed.write_text(probes.DRAIN_SCRIPT.read_text() + "\n// changed\n")
    monkeypatch.setattr(probes, "DRAIN_SCRIPT", changed)
    after = render("dev")
    assert after.k8s_name(migration_job(after)) == before.k8s_name(migration_job(before)), "the Job mounts no script"
    assert deployment(after, "api").get("spec.template") != deployment(before, "api").get("spec.template")
