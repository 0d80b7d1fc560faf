"""e2e-kind.yml, and the kubectl-backed runner it calls (tests/e2e/remote.py), without a cluster.

The runner is driven against stub `kubectl` and `node` executables placed first on the PATH:
they record their argv and stdin and answer in kubectl's own formats (`-o json` lists, the
port-forward's "Forwarding from" line, psql's and redis-cli's plain output). The answers are
written here from those formats, not recorded from a live cluster: none is reachable here. The
port-forward stub serves real HTTP on the port it announces, so the runner's GETs go through it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.data_containers import REDIS_CLI_WITH_AUTH
from tests.e2e import kubectl, remote
from tests.e2e.plan import run_one
from tests.e2e.report import Report
from tests.e2e.scenarios import data_path
from tests.e2e.wallet import address_of, generate_jwk
from tools.harness import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yml"
NS, CONTEXT = "x402-bundler-local", "kind-x402-bundler-local"
PAYMENT = "0x5Fb0C1c5A0d7f3e1F8CD06e1e5Bc1c0c1A0b9E42"
SECRETS = {"admin-password": "adminPw0123456789abcdef", "db-password": "dbPw0123456789abcdef",
           "cache-redis-password": "cachePw0123456789abcd", "s3-access-key-id": "s3key0123456789",
           "s3-secret-access-key": "s3secret0123456789abcdef"}

STUB = r'''#!{python}
import base64, http.server, json, os, sys
argv = sys.argv[1:]
stdin = sys.stdin.read() if "-i" in argv else ""  # only `exec -i` is given input
with open({log!r}, "a") as log:
    log.write(json.dumps({{"tool": os.path.basename(sys.argv[0]), "argv": argv, "stdin": stdin,
                          "node_path": os.environ.get("NODE_PATH")}}) + "\n")
answers = json.load(open({answers!r}))
if os.path.basename(sys.argv[0]) == "node":
    print("upload progress"); print(json.dumps(answers["node"])); sys.exit(0)
if "port-forward" in argv and argv[-2] == "svc/missing":
    print('Error from server (NotFound): services "missing" not found', flush=True); sys.exit(1)
if "port-forward" in argv:
    routes = answers["http"]
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            route = routes.get(self.path.split("?")[0], {{"status": 404, "body": "not found"}})
            status = route["status"]
            if route.get("user"):
                want = "Basic " + base64.b64encode(route["user"].encode()).decode()
                status = status if self.headers.get("Authorization") == want else 401
            body = route["body"].encode()
            self.send_response(status); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args): pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    remote_port = argv[-1].lstrip(":")
    for address in ("127.0.0.1", "[::1]"):
        print(f"Forwarding from {{address}}:{{server.server_port}} -> {{remote_port}}", flush=True)
    server.serve_forever()
key = " ".join(argv[argv.index("-n") + 2:] if "-n" in argv else argv)
for prefix, answer in answers["kubectl"]:
    if key.startswith(prefix) and answer.get("stdin", stdin) in stdin:
        sys.stdout.write(answer.get("stdout", "")); sys.stderr.write(answer.get("stderr", ""))
        sys.exit(answer.get("rc", 0))
sys.stderr.write("stub: no answer for " + key); sys.exit(1)
'''


def k8s_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}})


def stats(timestamp: str, completed: int) -> str:
    """The admin's statistics as admin/statsCollector.js shapes them."""
    queue = {"waiting": 0, "active": 0, "completed": completed, "failed": 0, "delayed": 0}  # no name: see data_path
    return json.dumps({"upload": {"allTime": {}}, "x402": {}, "bundles": {}, "system": {}, "timestamp": timestamp,
                       "queues": {"byQueue": [queue], "totals": queue}})


def pod(name: str, component: str, ip: str, ready: bool = True, phase: str = "Running", restarts: int = 0,
        deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": {kubectl.COMPONENT: component}}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": component, "image": "localhost:5001/x@sha256:00"}]},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "containerStatuses": [{"name": component, "ready": ready, "restartCount": restarts,
                                              "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
                                              if phase == "Running" else {"terminated": {"exitCode": 0}}}]}}


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def api_deployment() -> dict[str, Any]:
    env = [{"name": n, "valueFrom": {"secretKeyRef": {"name": "bundler-credentials-e98730b189", "key": k}}}
           for n, k in (("DB_PASSWORD", "db-password"), ("ADMIN_PASSWORD", "admin-password"))]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bundler-api", "labels": {kubectl.COMPONENT: "api"}},
            "spec": {"replicas": 1, "template": {"spec": {
                "containers": [{"name": "api", "env": env,
                                "envFrom": [{"configMapRef": {"name": "bundler-settings-fa2ab65b00"}}]}],
                "volumes": [{"name": "wallet", "secret": {"secretName": "bundler-wallets-ed97703201"}}]}}},
            "status": {"replicas": 1, "readyReplicas": 1}}


@pytest.fixture()
def stubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Stub kubectl and node first on the PATH; `answers` is what they say, `calls()` what they were asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log, answers_file = tmp_path / "calls.jsonl", tmp_path / "answers.json"
    for tool in ("kubectl", "node"):
        # Paths written in: client.js runs with only PATH and NODE_PATH in its environment.
        (bin_dir / tool).write_text(STUB.format(python=sys.executable, log=str(log), answers=str(answers_file)))
        (bin_dir / tool).chmod(0o755)
    wallet = generate_jwk()
    config = {"REDIS_PORT_QUEUES": "6381", "ELASTICACHE_PORT": "6379", "AWS_REGION": "us-east-1",
              "DATA_ITEM_BUCKET": "bundler-data-items", "X402_PAYMENT_ADDRESS": PAYMENT, "ADMIN_USERNAME": "admin"}
    answers: dict[str, Any] = {
        "kubectl": [
            ["get deployment bundler-api -o json", {"stdout": json.dumps(api_deployment())}],
            ["get configmap bundler-settings-fa2ab65b00 -o json",
             {"stdout": json.dumps({"kind": "ConfigMap", "data": config})}],
            ["get secrets -o json", {"stdout": k8s_list([
                # A credentials Secret of an earlier rollout that no Deployment uses any more.
                secret("bundler-credentials-0000000000", {**SECRETS, "admin-password": "stale-password-0000"}),
                secret("bundler-credentials-e98730b189", SECRETS),
                secret("bundler-wallets-ed97703201", {"wallet.json": wallet})])}],
            ["get pods -l app.kubernetes.io/component=api -o json", {"stdout": k8s_list([
                pod("bundler-api-7d9-abcde", "api", "10.244.0.12", restarts=1),
                pod("bundler-api-6c1-old00", "api", "10.244.0.9", deleting=True)])}],
            ["get pods -l app.kubernetes.io/component=migration -o json", {"stdout": k8s_list([
                pod("bundler-migrate-f62b33f9e7-x1", "migration", "10.244.0.7", ready=False, phase="Succeeded")])}],
            ["get service bundler-api -o json", {"stdout": json.dumps({"spec": {"ports": [{"port": 3001}]}})}],
            ["get service bundler-admin -o json", {"stdout": json.dumps({"spec": {"ports": [{"port": 3002}]}})}],
            ["exec -i statefulset/bundler-postgres", {"stdin": "knex_migrations", "stdout": "1|x\n", "rc": 1,
                                                      "stderr": 'ERROR:  relation "knex_migrations" does not exist'}],
            ["exec -i statefulset/bundler-postgres", {"stdout": "local|1\n10.244.0.12|3\n"}],
            ["exec statefulset/bundler-redis-queue", {"stdout": "4\n"}],
            ["exec statefulset/bundler-redis-cache", {"stdout": "PONG\n"}],
        ],
        "http": {
            "/v1/info": {"status": 200, "body": json.dumps({"addresses": {"arweave": address_of(wallet)},
                                                            "x402": {"payTo": PAYMENT.lower()}})},
            "/admin/dashboard/": {"status": 200, "body": "<html>dashboard</html>",
                                  "user": f"admin:{SECRETS['admin-password']}"},
            "/admin/stats": {"status": 200, "body": stats("later", completed=5),
                             "user": f"admin:{SECRETS['admin-password']}"},
            "/admin/queues/": {"status": 200, "body": '<script src="static/js/main.js"></script>',
                               "user": f"admin:{SECRETS['admin-password']}"},
            "/admin/queues/static/js/main.js": {"status": 200, "body": "main()",
                                                "user": f"admin:{SECRETS['admin-password']}"},
            "/admin/queues/api/queues": {"status": 200,
                                         "body": json.dumps({"queues": [{"name": "upload-plan-bundle"}]}),
                                         "user": f"admin:{SECRETS['admin-password']}"},
        },
        "node": {"status": 200, "id": "itemid", "receipt_valid": True, "elapsed_ms": 12},
    }
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[dict[str, Any]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    state: dict[str, Any] = {"answers": answers, "calls": calls, "wallet": wallet, "root": tmp_path / "work",
             "save": lambda: answers_file.write_text(json.dumps(answers))}
    state["save"]()
    yield state


def clients(stubs: dict[str, Any]) -> kubectl.KubectlClients:
    k = kubectl.Kubectl(NS, CONTEXT)
    return kubectl.KubectlClients(k, kubectl.KubectlCluster(k), stubs["root"], node_path=Path("/nm"))


def kubectl_calls(stubs: dict[str, Any]) -> list[list[str]]:
    return [c["argv"] for c in stubs["calls"]() if c["tool"] == "kubectl"]


def test_every_kubectl_call_names_the_context_and_namespace(stubs: dict[str, Any]) -> None:
    c = clients(stubs)
    c.connect()
    c.redis("queue", "LLEN", "bull:upload-new-data-item:wait")
    calls = kubectl_calls(stubs)
    assert calls and all(argv[:4] == ["--context", CONTEXT, "-n", NS] for argv in calls)


def test_connect_takes_the_credentials_the_api_uses_and_keeps_them_off_every_command_line(
        stubs: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    c = clients(stubs)
    c.connect()
    assert c.endpoints == {"db_password": SECRETS["db-password"], "cache_password": SECRETS["cache-redis-password"],
                           "s3_key": SECRETS["s3-access-key-id"], "s3_secret": SECRETS["s3-secret-access-key"],
                           "admin_password": SECRETS["admin-password"]}
    assert c.wallet_file.read_text() == stubs["wallet"] and c.wallet_file.stat().st_mode & 0o777 == 0o600
    c.redis("cache", "PING")
    c.sql("SELECT 1")
    c.upload("http://127.0.0.1:1/")
    out = capsys.readouterr()
    recorded = json.dumps([{k: v for k, v in call.items() if k != "stdin"} for call in stubs["calls"]()])
    for value in [*SECRETS.values(), json.loads(stubs["wallet"])["d"]]:
        assert value not in recorded and value not in out.out + out.err
    c.close()
    assert not c.wallet_file.exists()


def test_sql_runs_psql_in_the_postgres_pod_with_the_query_on_stdin(stubs: dict[str, Any]) -> None:
    c = clients(stubs)
    assert c.sql("SELECT coalesce(host(client_addr), 'local'), count(*) FROM pg_stat_activity") == \
        "local|1\n10.244.0.12|3"
    (call,) = [x for x in stubs["calls"]() if x["tool"] == "kubectl"]
    assert call["argv"][4:] == ["exec", "-i", "statefulset/bundler-postgres", "-c", "postgres", "--", "sh", "-c",
                                'exec psql -X -At -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"']
    assert call["stdin"].startswith("SELECT coalesce")
    with pytest.raises(RuntimeError, match='relation "knex_migrations" does not exist'):
        c.sql("SELECT name FROM knex_migrations")


def test_redis_cli_runs_in_each_redis_pod_on_the_configured_port(stubs: dict[str, Any]) -> None:
    c = clients(stubs)
    assert c.redis("queue", "ZCARD", "bull:upload-new-data-item:completed") == "4"
    assert c.redis("cache", "PING") == "PONG"
    queue, cache = [argv[4:] for argv in kubectl_calls(stubs) if argv[4] == "exec"]
    assert queue == ["exec", "statefulset/bundler-redis-queue", "-c", "redis-queue", "--", "redis-cli", "-p", "6381",
                     "ZCARD", "bull:upload-new-data-item:completed"]
    # The cache's password file is read by the pod's shell: it is on no command line.
    assert cache == ["exec", "statefulset/bundler-redis-cache", "-c", "redis-cache", "--", "sh", "-c",
                     REDIS_CLI_WITH_AUTH, "redis-cli", "-p", "6379", "PING"]
    assert SECRETS["cache-redis-password"] not in " ".join(cache)


def test_http_goes_through_one_port_forward_per_service(stubs: dict[str, Any]) -> None:
    c = clients(stubs)
    try:
        api = c.forward("bundler-api")
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", api)
        status, body = c.http(f"{api}/v1/info")
        assert status == 200 and PAYMENT.lower() in body
        assert c.forward("bundler-api") == api
        assert c.http(f"{api}/nowhere")[0] == 404
    finally:
        c.close()
    forwards = [argv[4:] for argv in kubectl_calls(stubs) if "port-forward" in argv]
    assert forwards == [["port-forward", "--address", "127.0.0.1", "svc/bundler-api", ":3001"]]


def test_a_port_forward_that_fails_says_what_kubectl_printed(stubs: dict[str, Any]) -> None:
    k = kubectl.Kubectl(NS, CONTEXT)
    with pytest.raises(kubectl.KubectlError, match=r"no forwarding line .*NotFound.*services .missing. not found"):
        k.port_forward("svc/missing", 3001, timeout=10)


def test_upload_runs_client_js_with_the_deployed_wallet(stubs: dict[str, Any]) -> None:
    c = clients(stubs)
    c.connect()
    assert c.upload("http://127.0.0.1:4000", size=65536) == stubs["answers"]["node"]
    (call,) = [x for x in stubs["calls"]() if x["tool"] == "node"]
    assert call["argv"] == [str(ROOT / "tests" / "e2e" / "client.js"), "upload", "--jwk", str(c.wallet_file),
                            "--url", "http://127.0.0.1:4000", "--size", "65536"]
    assert call["node_path"] == "/nm"


def test_the_cluster_view_reads_pods_as_a_service_would_pick_them(stubs: dict[str, Any]) -> None:
    cluster = kubectl.KubectlCluster(kubectl.Kubectl(NS, CONTEXT))
    (api,) = cluster.pods("api")
    assert (api.name, api.ip, api.ready, api.containers[0].restarts, api.containers[0].running()) == \
        ("bundler-api-7d9-abcde", "10.244.0.12", True, 1, True)
    assert cluster.pods("migration") == []
    assert cluster.config()["REDIS_PORT_QUEUES"] == "6381"


def test_the_shared_scenarios_run_on_the_kubectl_view(stubs: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared info and admin scenarios, unchanged, through the port-forward stub."""
    monkeypatch.setattr(data_path, "STATS_CACHE_SECONDS", 0.1)  # the stub's statistics never refresh
    test = remote.RemoteTest("dev", kubectl.Kubectl(NS, CONTEXT), stubs["root"], node_path=Path("/nm"))
    test.values = {"arweaveWallet": stubs["wallet"]}

    def run(completed_before: int) -> list[str]:
        """info and admin on a fresh report, the statistics first read with `completed_before` jobs."""
        test.report = Report("dev")
        test.state.stats_before = json.loads(stats("earlier", completed=completed_before))
        test.clients.connect()
        try:
            for s in (data_path.info, data_path.admin):
                run_one(test, s, test.report)
        finally:
            test.clients.close()
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("e2e: ")]

    # One upload accepted since the first reading of the statistics (4 completed then, 5 now).
    test.state.accepted_uploads = 1
    lines = run(completed_before=4)
    assert lines[0].startswith("e2e: dev: GET /v1/info shows the stack's wallet and payment address: ok")
    assert lines[1].startswith("e2e: dev: admin dashboard behind the stack's admin password: ok "
                               "(without credentials HTTP 401, with HTTP 200")
    assert lines[2].startswith("e2e: dev: queue board (bull-board): its page, its scripts and its queue list, "
                               "behind the admin password: ok (without credentials HTTP 401; page HTTP 200 naming 1")
    assert lines[3].startswith("e2e: dev: admin statistics: ok")
    assert (test.report.passed, test.report.failed) == (4, 0)
    # A wallet the API does not show is a FAIL, not a pass; so are statistics that did not move.
    stubs["answers"]["http"]["/v1/info"]["body"] = json.dumps({"x402": {"payTo": PAYMENT}})
    stubs["save"]()
    lines = run(completed_before=5)
    assert "wallet" in lines[0] and "MISSING" in lines[0] and ": FAIL (" in lines[0]
    assert lines[3].startswith("e2e: dev: admin statistics: FAIL (") and "moved 0 with the 1 uploads" in lines[3]
    assert (test.report.passed, test.report.failed) == (2, 2)


# ---------------------------------------------------------------- the workflow


def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True)  # YAML 1.1 reads the key `on` as True
    return dict(doc)


def job_steps() -> list[dict[str, Any]]:
    (job,) = workflow()["jobs"].values()
    return list(job["steps"])


def index(predicate: Any) -> int:
    return next(i for i, s in enumerate(job_steps()) if predicate(s))


def test_it_runs_nightly_on_demand_and_on_labelled_pull_requests() -> None:
    doc = workflow()
    assert doc["on"]["schedule"][0]["cron"].split()[2:] == ["*", "*", "*"]
    assert "workflow_dispatch" in doc["on"]
    assert set(doc["on"]["pull_request"]["types"]) == {"labeled", "synchronize", "opened", "reopened"}
    (job,) = doc["jobs"].values()
    condition = " ".join(job["if"].split())
    assert condition.startswith("github.event_name != 'pull_request' || (")
    assert "contains(github.event.pull_request.labels.*.name, 'e2e-kind')" in condition
    assert "github.event.action != 'labeled' || github.event.label.name == 'e2e-kind'" in condition
    # A run whose job the condition skips must not cancel the one in progress: the group is the job's.
    assert "concurrency" not in doc and job["concurrency"]["cancel-in-progress"] is True


def test_it_needs_no_secret_and_keeps_no_token() -> None:
    text = WORKFLOW.read_text()
    doc = workflow()
    assert doc["permissions"] == {"contents": "read"}
    assert "secrets." not in text and all("permissions" not in j for j in doc["jobs"].values())
    checkouts = [s for s in job_steps() if s.get("uses", "").startswith("actions/checkout@")]
    assert checkouts and all(s["with"]["persist-credentials"] is False for s in checkouts)
    assert not any("${{" in s.get("run", "") for s in job_steps())


def test_make_up_then_the_remote_scenarios_then_destroy_always() -> None:
    steps = job_steps()
    kind = steps[index(lambda s: s.get("uses", "").startswith("helm/kind-action@"))]
    up = index(lambda s: s.get("run", "").strip() == "make up")
    scenarios = index(lambda s: "-m tests.e2e.remote" in s.get("run", ""))
    logs = index(lambda s: "kubectl" in s.get("run", "") and "logs" in s.get("run", ""))
    artifact = index(lambda s: s.get("uses", "").startswith("actions/upload-artifact@"))
    destroy = index(lambda s: s.get("run", "").strip() == "make destroy STACK=local")
    # make up creates the cluster; the action only installs kind, under the name make up gives it.
    assert kind["with"]["install_only"] is True and kind["with"]["cluster_name"] == CONTEXT.removeprefix("kind-")
    assert up < scenarios < logs < artifact < destroy == len(steps) - 1
    assert steps[destroy]["if"] == "always()"
    assert steps[logs]["if"] == steps[artifact]["if"] == "failure()"
    assert steps[artifact]["with"]["path"].rstrip("/") in steps[logs]["run"]
    # Nothing in the collected state is a Secret.
    assert not re.search(r"secret", steps[logs]["run"], re.IGNORECASE)
    assert workflow()["jobs"]["e2e-kind"]["env"]["PULUMI_SKIP_CONFIRMATIONS"] == "true"


def test_the_workflow_calls_the_runner_with_arguments_it_takes() -> None:
    run = job_steps()[index(lambda s: "-m tests.e2e.remote" in s.get("run", ""))]["run"]
    command = shlex.split(run.split("-m tests.e2e.remote", 1)[1].replace("\\\n", " ").splitlines()[0])
    args = remote.parser().parse_args([a.replace('"$namespace"', NS).replace("$namespace", NS) for a in command])
    assert (args.stack, args.namespace, args.context) == ("local", NS, CONTEXT)
    assert 'namespace="$(pulumi stack output namespace)"' in run
    # The local stack's own file names the same cluster.
    assert yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]["kubernetes:context"] == CONTEXT
