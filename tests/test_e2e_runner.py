"""The runtime test's own machinery, without root: accounting for every declared line, the
registry's pull decisions, admission, the container's credentials, limits as the kernel gets
them, the Services' rules, and the mock engine's passwords. (The runner itself runs in
`make e2e`; these pin the decisions it makes, so a change to one shows here first.)"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.admission import DEFAULT_CAPABILITIES, CreateContainerConfigError, admit, launch
from tests.e2e.context import Context
from tests.e2e.limits import Limits
from tests.e2e.plan import run_plan, scenario
from tests.e2e.registry import PUBLISHED, PullError, Reference, Registry
from tests.e2e.report import Report
from tests.e2e.services import Services
from tools.harness import ROOT, random_password

POSTGRES = "docker.io/library/postgres"
POSTGRES_DIGEST = PUBLISHED[POSTGRES]["16.6-alpine3.21"]
BUNDLER = "ghcr.io/example-org/ar-io-x402-bundler"


class Fake(Context):
    def __init__(self) -> None:
        super().__init__()
        self.stack = "dev"
        self.out = io.StringIO()
        self.report = Report("dev", out=self.out)

    def printed(self) -> list[str]:
        return self.out.getvalue().splitlines()


# ---------------------------------------------------------------- accounting


@scenario("first", "second")
def prints_one(t: Context) -> None:
    t.ok("first", True, "fine")


@scenario("raises")
def raises(t: Context) -> None:
    raise RuntimeError("the service did not answer\nsecond line")


@scenario("threaded a")
def threaded_a(t: Context) -> None:
    t.ok("threaded a", True, "a")


@scenario("threaded b")
def threaded_b(t: Context) -> None:
    raise ValueError("inside a thread")


@scenario("gate", gate=True)
def failing_gate(t: Context) -> None:
    t.ok("gate", False, "the stack did not come up")


def test_a_declared_line_that_never_comes_is_a_fail_with_no_result() -> None:
    t = Fake()
    run_plan(t, [prints_one])
    t.report.finish()
    assert t.printed()[1] == "e2e: dev: second: FAIL (no result: prints_one returned without printing it)"
    assert (t.report.passed, t.report.failed) == (1, 1)


def test_a_scenario_that_raises_fails_each_of_its_lines_with_the_first_line_of_the_error() -> None:
    t = Fake()
    run_plan(t, [raises])
    assert t.printed() == ["e2e: dev: raises: FAIL (RuntimeError in raises: the service did not answer)"]


def test_scenarios_in_threads_are_collected_and_an_exception_there_is_a_line() -> None:
    t = Fake()
    run_plan(t, [(threaded_a, threaded_b)])
    assert t.printed() == ["e2e: dev: threaded a: ok (a)",
                           "e2e: dev: threaded b: FAIL (ValueError in threaded_b: inside a thread)"]


def test_after_a_failed_gate_the_rest_is_reported_not_run() -> None:
    t = Fake()
    run_plan(t, [failing_gate, prints_one])
    assert t.printed()[1:] == ["e2e: dev: first: FAIL (not run: failing_gate failed, and the rest needs it)",
                               "e2e: dev: second: FAIL (not run: failing_gate failed, and the rest needs it)"]
    assert t.report.failed == 3


def test_an_undeclared_or_repeated_line_fails() -> None:
    report = Report("dev", out=io.StringIO())
    report.declare(["known"])
    assert report.line("unknown", True, "x") is False
    report.line("known", True, "x")
    assert report.line("known", True, "again") is False
    assert report.failed == 2
    with pytest.raises(ValueError, match="declared twice"):
        report.declare(["a", "a"])


# ---------------------------------------------------------------- images


def pull_secret(registry: str, password: str) -> dict[str, str]:
    auth = base64.b64encode(f"bot:{password}".encode()).decode()
    return {".dockerconfigjson": json.dumps({"auths": {registry: {"auth": auth}}})}


def test_references_normalise_as_containerd_reads_them() -> None:
    assert Reference.parse("postgres:16") == Reference("docker.io", POSTGRES, "16", None)
    assert Reference.parse("localhost:5001/app@sha256:ab").repository == "localhost:5001/app"
    assert Reference.parse(f"{BUNDLER}:1.0@sha256:ab") == Reference("ghcr.io", BUNDLER, "1.0", "sha256:ab")


def test_a_pinned_digest_pulls_only_if_the_registry_has_it() -> None:
    registry = Registry()
    registry.pull(f"{POSTGRES}:16.6-alpine3.21@{POSTGRES_DIGEST}", [])
    with pytest.raises(PullError, match=r"^ErrImagePull: .*has no sha256:0000"):
        registry.pull(f"{POSTGRES}:16.6-alpine3.21@sha256:{'0' * 64}", [])
    with pytest.raises(PullError, match="has no tag 17"):
        registry.pull("postgres:17", [])


def test_the_bundler_exists_only_where_a_build_pushed_it_and_needs_a_pull_secret() -> None:
    registry = Registry()
    ref = f"{BUNDLER}@sha256:{'1' * 64}"
    with pytest.raises(PullError, match="private"):
        registry.pull(ref, [])
    with pytest.raises(PullError, match="manifest unknown"):
        registry.pull(ref, [pull_secret("ghcr.io", "token")])
    registry.push(f"{BUNDLER}:1.0.0@sha256:{'1' * 64}")
    assert registry.pull(ref, [pull_secret("ghcr.io", "token")]).digest == f"sha256:{'1' * 64}"
    assert registry.is_built(ref) and not registry.is_built(f"{POSTGRES}@{POSTGRES_DIGEST}")
    with pytest.raises(PullError, match="private"):  # credentials for another registry
        registry.pull(ref, [pull_secret("docker.io", "token")])


# ---------------------------------------------------------------- admission and credentials


def restricted_spec(**container: Any) -> dict[str, Any]:
    sc = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "allowPrivilegeEscalation": False,
          "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
          "seccompProfile": {"type": "RuntimeDefault"}, **container}
    return {"securityContext": {"fsGroup": 10001, "runAsNonRoot": True},
            "containers": [{"name": "app", "image": "x", "securityContext": sc}]}


def test_a_restricted_namespace_refuses_a_pod_that_is_not() -> None:
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    assert admit(restricted_spec(), labels) == []
    assert admit(restricted_spec(allowPrivilegeEscalation=True), labels) == [
        "app: allowPrivilegeEscalation is not false"]
    assert admit(restricted_spec(allowPrivilegeEscalation=True), {}) == []


def test_the_container_gets_the_declared_credentials_and_capabilities() -> None:
    spec = restricted_spec()
    creds = launch(spec, spec["containers"][0], 1001, 65533)
    assert (creds.uid, creds.gid, creds.groups, creds.capabilities) == (10001, 10001, (10001,), ())
    assert creds.no_new_privs and creds.read_only_root
    assert "--bounding-set=-all" in creds.setpriv() and "--no-new-privs" in creds.setpriv()
    loose = {"containers": [{"name": "app", "securityContext": {"capabilities": {"drop": ["NET_RAW"],
                                                                                  "add": ["SYS_TIME"]}}}]}
    creds = launch(loose, loose["containers"][0], 999, 999)
    assert set(creds.capabilities) == set(DEFAULT_CAPABILITIES) - {"NET_RAW"} | {"SYS_TIME"}
    assert not creds.no_new_privs and "--no-new-privs" not in creds.setpriv()


def test_run_as_non_root_refuses_a_container_that_would_run_as_root() -> None:
    spec = {"securityContext": {"runAsNonRoot": True}, "containers": [{"name": "db"}]}
    with pytest.raises(CreateContainerConfigError, match="runAsNonRoot and image will run as root"):
        launch(spec, spec["containers"][0], 0, 0)


# ---------------------------------------------------------------- limits


def test_limits_as_the_kubelet_derives_them() -> None:
    api = Limits.of({"resources": {"limits": {"cpu": "1", "memory": "320Mi"}, "requests": {"cpu": "100m"}}})
    assert api == Limits(320 * 2**20, 1000, 100)
    assert Limits.of({"resources": {"limits": {"cpu": "250m"}}}).cpu_request_milli == 250
    assert Limits.pod([api, Limits(2**20, 500, 50)]) == Limits(321 * 2**20, 1500, 150)
    assert Limits.pod([api, Limits()]).memory is None


# ---------------------------------------------------------------- Services


class Backend:
    def __init__(self, name: str, ip: str, ready: bool, labels: dict[str, str], ports: dict[str, int]) -> None:
        self.name, self.ip, self.ready, self.labels, self.ports = name, ip, ready, labels, ports
        self.deleted_at: float | None = None

    def serving(self, now: float, removal_delay: float) -> bool:
        if self.deleted_at is not None:
            return now - self.deleted_at < removal_delay
        return self.ready

    def container_port(self, name: str) -> int | None:
        return self.ports.get(name)


def api_service(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "bundler-api"},
            "spec": {"selector": {"app": "api"}, "ports": [{"port": 80, "targetPort": "http"}], **spec}}


def test_endpoints_are_ready_pods_with_the_named_port_and_a_deleted_pod_leaves_after_the_delay() -> None:
    pods = [Backend("a", "10.244.1.10", True, {"app": "api"}, {"http": 3001}),
            Backend("b", "10.244.1.11", False, {"app": "api"}, {"http": 3001}),
            Backend("c", "10.244.1.12", True, {"app": "admin"}, {"http": 3002})]
    services = Services([api_service()], 1, lambda: pods, "ns", removal_delay=2.0)
    assert [e.ip for e in services.endpoints()[("bundler-api", 80)]] == ["10.244.1.10"]
    assert services.endpoints()[("bundler-api", 80)][0].port == 3001
    pods[0].deleted_at = 0.0  # long ago
    assert services.endpoints()[("bundler-api", 80)] == []


def test_the_ruleset_spreads_new_connections_and_masquerades_a_pod_reaching_itself() -> None:
    pods = [Backend(n, f"10.244.1.1{i}", True, {"app": "api"}, {"http": 3001}) for i, n in enumerate("ab")]
    services = Services([api_service()], 1, lambda: pods, "ns")
    address = services.address("bundler-api")
    rules = services.ruleset(services.endpoints())
    assert address == "10.96.1.10" and services.hosts(lambda s: [])["bundler-api.ns.svc.cluster.local"] == [address]
    assert f"ip daddr {address} tcp dport 80 goto svc-0" in rules
    assert "numgen random mod 2 vmap { 0 : goto ep-0-0, 1 : goto ep-0-1 }" in rules
    assert "ip saddr 10.244.1.10 meta mark set meta mark | 0x4000" in rules
    assert "meta l4proto tcp dnat to 10.244.1.11:3001" in rules
    assert rules.startswith("table ip e2e_services\ndelete table ip e2e_services\n")


def test_a_headless_service_resolves_to_its_pods() -> None:
    services = Services([api_service(clusterIP="None")], 1, lambda: [], "ns")
    assert services.hosts(lambda selector: ["10.244.1.20"])["bundler-api"] == ["10.244.1.20"]
    with pytest.raises(LookupError, match="headless"):
        services.address("bundler-api")


# ---------------------------------------------------------------- the mock engine's passwords


def test_generated_passwords_follow_the_declared_inputs() -> None:
    plain = random_password("db", {"length": 32.0, "special": False})
    assert len(plain) == 32 and plain.isalnum() and plain == random_password("db", {"length": 32, "special": False})
    special = random_password("db", {"length": 64, "special": True})
    assert set(special) & set("!@#$%&*()-_=+[]{}<>:?")
    narrow = random_password("x", {"length": 12, "overrideSpecial": "_", "minSpecial": 3, "upper": False,
                                   "numeric": False})
    assert narrow.count("_") >= 3 and set(narrow) <= set("abcdefghijklmnopqrstuvwxyz_")


# ---------------------------------------------------------------- hygiene


RUNNER = """
import sys, threading
sys.path.insert(0, {root!r})
from tests.e2e import spawn
# Started from a thread that ends at once, as a restart would start a container.
started = []
thread = threading.Thread(target=lambda: started.append(
    spawn.popen(["/usr/bin/setpriv", "--pdeathsig", "KILL", "sleep", "300"])))
thread.start()
thread.join()
print(started[0].pid, flush=True)
threading.Event().wait()
"""


def alive(pid: int) -> bool:
    """Running, not a zombie: an orphan killed under a subreaper that has not reaped it yet is dead."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_what_the_runner_starts_dies_with_it_even_when_it_is_killed() -> None:
    runner = subprocess.Popen([sys.executable, "-c", RUNNER.format(root=str(ROOT))], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    child = int(runner.stdout.readline())
    # setpriv sets the signal, then execs sleep: wait for the sleep, or the kill may come first.
    for _ in range(50):
        if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep"):
            break
        time.sleep(0.1)
    assert alive(child)  # while the runner lives, although the thread that started it ended
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    for _ in range(50):
        if not alive(child):
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the process the runner started outlived it")
