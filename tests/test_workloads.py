"""The bundler on Kubernetes: wallets as files, one migration Job, three Deployments after it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.app_config import WALLET_FILE
from components.probes import DEEP_CHECK_PORT, DRAIN_SCRIPT_PATH, MOUNT_PATH, SERVER_SCRIPT_PATH
from tests.helpers import (
    APP_PROCESSES,
    CONFIG_MAP,
    DEPLOYMENT,
    JOB,
    PROMOTED,
    SECRET,
    STACKS,
    container,
    deployment,
    env_of,
    migration_job,
    render,
    secret_refs,
    settings_map,
)
from tests.helpers import (
    recording as rendered,
)
from tests.pss import restricted_violations
from tools.harness import Recording, placeholder_secrets, stack_config


@pytest.fixture(scope="module", params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def recording(stack: str) -> Recording:
    return rendered(stack)


def test_graph_has_one_job_and_three_deployments_that_wait_for_it(recording: Recording) -> None:
    job = migration_job(recording)
    deployments = recording.of_type(DEPLOYMENT)
    assert sorted(d.name for d in deployments) == ["admin-deployment", "api-deployment", "workers-deployment"]
    for d in deployments:
        assert recording.depends_on(d, job), f"{d.name} does not wait for the migration Job"


def test_wallet_is_a_mounted_secret_file_named_by_both_env_vars(recording: Recording, stack: str) -> None:
    wallet_text = placeholder_secrets(stack)["arweaveWallet"]
    (wallet_secret,) = [s for s in recording.of_type(SECRET) if "wallet.json" in (s.inputs.get("stringData") or {})]
    assert wallet_secret.inputs["stringData"]["wallet.json"] == wallet_text
    redacted = wallet_secret.redacted_inputs["stringData"]
    assert redacted == "[secret]" or redacted["wallet.json"] == "[secret]"
    secret_name = recording.k8s_name(wallet_secret)
    for workload in [*recording.of_type(DEPLOYMENT), migration_job(recording)]:
        spec = workload.get("spec.template.spec")
        (volume,) = [v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == secret_name]
        assert volume["secret"]["defaultMode"] == 0o400
        # The file is root's, 0400: the app's uid reads it only as a member of fsGroup, which
        # is why the container's group list must hold it and the uid must not be 0.
        c = container(workload)
        uid = c["securityContext"]["runAsUser"]
        assert uid >= 10000 and spec["securityContext"]["fsGroup"] == c["securityContext"]["runAsGroup"] == uid
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        assert WALLET_FILE.startswith(mount["mountPath"] + "/")
        env = env_of(c)
        # TURBO_JWK_FILE is what the code reads (the migration too, through the constants);
        # ARWEAVE_WALLET_FILE only upstream's scripts read, so the Job does without it.
        assert env["TURBO_JWK_FILE"] == WALLET_FILE
        assert env.get("ARWEAVE_WALLET_FILE") == (None if workload.type == JOB else WALLET_FILE)
        assert "RAW_DATA_ITEM_JWK_FILE" not in env and "RAW_DATA_UPLOADS_ENABLED" not in env


def test_wallet_text_appears_in_no_workload_or_config_map(recording: Recording, stack: str) -> None:
    wallet = json.loads(placeholder_secrets(stack)["arweaveWallet"])
    for r in [*recording.of_type(DEPLOYMENT), *recording.of_type(JOB), *recording.of_type(CONFIG_MAP)]:
        text = json.dumps(r.inputs)
        assert wallet["d"] not in text and wallet["n"] not in text, f"wallet material in {r.type} {r.name}"


def test_raw_data_wallet_is_mounted_only_when_configured() -> None:
    from tools.harness import test_wallet

    rec = render("dev", secrets={"rawDataWallet": test_wallet()})
    env = env_of(container(deployment(rec, "api")))
    assert env["RAW_DATA_UPLOADS_ENABLED"] == "true"
    assert env["RAW_DATA_ITEM_JWK_FILE"].endswith("/raw-data-wallet.json")


@pytest.mark.parametrize(
    ("component", "args", "port"),
    [
        ("api", ["node", "lib/index.js"], 3001),
        ("workers", ["node", "lib/jobs/allWorkers.js"], None),
        ("admin", ["node", "admin-server.js"], 3002),
    ],
)
def test_each_process_runs_its_real_entrypoint_under_the_images_init(
    recording: Recording, component: str, args: list[str], port: int | None
) -> None:
    c = container(deployment(recording, component))
    # `command` would replace the image's ENTRYPOINT (dumb-init) and make node PID 1.
    assert "command" not in c
    assert c["args"] == args
    ports = [p["containerPort"] for p in c.get("ports", [])]
    assert ports == ([port] if port else [])
    services = [s for s in recording.of_type("kubernetes:core/v1:Service") if s.name == f"{component}-service"]
    assert [s.get("spec.ports.0.port") for s in services] == ([port] if port else [])


def test_api_listens_on_3001_and_nothing_migrates_at_start(recording: Recording) -> None:
    api = container(deployment(recording, "api"))
    assert env_of(api)["PORT"] == "3001"
    for d in recording.of_type(DEPLOYMENT):
        assert settings_map(recording, container(d))["MIGRATE_ON_STARTUP"] == "false"


def test_migration_job_runs_once_with_only_what_it_reads(recording: Recording) -> None:
    job = migration_job(recording)
    c = container(job)
    api = container(deployment(recording, "api"))
    assert "command" not in c and c["args"] == ["yarn", "db:migrate"]
    assert c["image"] == api["image"]
    # knex reads the DB_* settings; the app's constants read X402_PAYMENT_ADDRESS and the wallet.
    assert c["envFrom"] == api["envFrom"]
    assert secret_refs(c) == {"DB_PASSWORD"}
    assert set(env_of(c)) == {"TURBO_JWK_FILE", "DB_PASSWORD", "HOME", "YARN_CACHE_FOLDER"}
    assert {v["name"] for v in job.get("spec.template.spec.volumes")} == {"wallets", "tmp"}, "no probe or drain scripts"
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/var/run/secrets/x402-bundler", "/tmp"}
    spec = job.inputs["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] <= 2
    assert spec["activeDeadlineSeconds"] > 0
    assert "ttlSecondsAfterFinished" not in spec
    assert job.get("metadata.annotations")["pulumi.com/replaceUnready"] == "true"
    create = int(job.custom_timeouts["create"].rstrip("s"))
    assert create > spec["activeDeadlineSeconds"]


def _job_name(**kwargs: Any) -> str:
    rec = render("prod", **kwargs)
    return rec.k8s_name(migration_job(rec))


def test_migration_job_name_follows_the_image_digest() -> None:
    other = "ghcr.io/example-org/ar-io-x402-bundler@sha256:" + "b" * 64
    first = _job_name()
    assert _job_name() == first, "an unchanged stack must give the same Job (no diff)"
    assert _job_name(overrides={"imagePromoteStack": None, "imageRef": other}) != first
    assert _job_name(overrides={"imagePromoteStack": None, "imageRef": PROMOTED}) == first


def test_every_container_passes_restricted_pss_and_has_requests_and_limits(recording: Recording) -> None:
    for w in [*recording.of_type(DEPLOYMENT), migration_job(recording)]:
        spec = w.get("spec.template.spec")
        assert restricted_violations(spec) == [], w.name
        assert spec["automountServiceAccountToken"] is False
        for c in spec["containers"]:
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, (w.name, kind)


@pytest.mark.parametrize("component", APP_PROCESSES)
def test_root_filesystem_is_read_only_and_fs_data_path_is_on_a_writable_volume(
    recording: Recording, stack: str, component: str
) -> None:
    d = deployment(recording, component)
    c = container(d)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    data_path = settings_map(recording, c)["FS_DATA_PATH"]
    assert not data_path.startswith("/app/"), "a volume under /app would shadow the image's files"
    writable = [
        m for m in c["volumeMounts"]
        if not m.get("readOnly") and (data_path + "/").startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert [m["mountPath"] for m in writable] == ["/var/lib/x402-bundler"], (
        "the API and workers create FS_DATA_PATH at import"
    )
    (volume,) = [v for v in d.get("spec.template.spec.volumes") if v["name"] == writable[0]["name"]]
    # The stack file's size, or the declared default (20Gi).
    assert volume["emptyDir"]["sizeLimit"] == stack_config(stack).get(
        "x402-bundler:uploadDataSizeLimit", "20Gi")
    assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


def test_no_temp_dir_the_app_never_uses(recording: Recording) -> None:
    for w in [*recording.of_type(DEPLOYMENT), migration_job(recording)]:
        c = container(w)
        assert "TEMP_DIR" not in env_of(c) and "TEMP_DIR" not in settings_map(recording, c)
        assert "/app/temp" not in {m["mountPath"] for m in c["volumeMounts"]}


def test_upload_data_size_comes_from_config() -> None:
    rec = render("dev", overrides={"uploadDataSizeLimit": "50Gi"})
    (volume,) = [v for v in deployment(rec, "workers").get("spec.template.spec.volumes") if v["name"] == "upload-data"]
    assert volume["emptyDir"]["sizeLimit"] == "50Gi"


def test_every_process_serves_its_deep_checks_and_only_the_api_preloads_the_drain(recording: Recording) -> None:
    for component in APP_PROCESSES:
        c = container(deployment(recording, component))
        preloads = env_of(c)["NODE_OPTIONS"].split("--require")
        preloads = [p.strip() for p in preloads if p.strip()]
        assert env_of(c)["DEEP_CHECK_PORT"] == str(DEEP_CHECK_PORT)
        assert all(p.startswith(MOUNT_PATH + "/") for p in preloads)
        assert MOUNT_PATH in {m["mountPath"] for m in c["volumeMounts"]}
        # The probe server first: the drain, loaded after it, must not wait for it to close.
        assert preloads[0] == SERVER_SCRIPT_PATH, component
        if component == "api":
            assert preloads == [SERVER_SCRIPT_PATH, DRAIN_SCRIPT_PATH]
            assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
        else:
            # Workers and admin handle SIGTERM themselves.
            assert preloads == [SERVER_SCRIPT_PATH], component
    assert "NODE_OPTIONS" not in env_of(container(migration_job(recording)))


def test_admin_statistics_use_the_queue_redis_it_can_reach(recording: Recording) -> None:
    admin = container(deployment(recording, "admin"))
    settings = settings_map(recording, admin)
    env = env_of(admin)
    # Container env wins over envFrom: these replace the ConfigMap's cache Redis settings.
    assert (env["ELASTICACHE_HOST"], env["ELASTICACHE_PORT"]) == (settings["REDIS_HOST"], settings["REDIS_PORT_QUEUES"])
    assert env["ELASTICACHE_USE_TLS"] == "false"
    assert "ELASTICACHE_PASSWORD" not in env
    for component in ("api", "workers"):
        other = env_of(container(deployment(recording, component)))
        assert not {"ELASTICACHE_HOST", "ELASTICACHE_PORT", "ELASTICACHE_USE_TLS"} & set(other), component
        assert "ELASTICACHE_PASSWORD" in other, component


def test_payment_address_free_uploads_and_optical_bridging_are_explicit(recording: Recording, stack: str) -> None:
    settings = settings_map(recording, container(deployment(recording, "api")))
    assert settings["ETHEREUM_ADDRESS"] == settings["X402_PAYMENT_ADDRESS"]
    # What each stack file says (dev and local: a 10 KiB testnet free tier; prod: none).
    assert settings["FREE_UPLOAD_LIMIT"] == {"dev": "10240", "local": "10240", "prod": "0"}[stack]
    assert settings["OPTICAL_BRIDGING_ENABLED"] == "false"
    assert "OPTICAL_BRIDGE_URL" not in settings
    for w in [*recording.of_type(DEPLOYMENT), migration_job(recording)]:
        assert "AR_IO_ADMIN_KEY" not in env_of(container(w))


def test_bundles_are_posted_to_the_configured_gateway_not_arweave_net() -> None:
    rec = render("dev", overrides={"arweaveGateway": "https://gateway.example.net"})
    settings = settings_map(rec, container(deployment(rec, "workers")))
    assert settings["ARWEAVE_UPLOAD_NODE"] == settings["ARWEAVE_GATEWAY"] == "https://gateway.example.net"


def test_free_uploads_default_to_none() -> None:
    rec = render("dev", overrides={"freeUploadLimit": None})
    assert settings_map(rec, container(deployment(rec, "api")))["FREE_UPLOAD_LIMIT"] == "0"


def test_an_optical_bridge_turns_bridging_on_with_its_admin_key_for_the_workers() -> None:
    rec = render(
        "dev", overrides={"opticalBridgeUrl": "https://bridge.example.com"}, secrets={"arIoAdminKey": "bridge-key-0123"}
    )
    settings = settings_map(rec, container(deployment(rec, "api")))
    assert (settings["OPTICAL_BRIDGING_ENABLED"], settings["OPTICAL_BRIDGE_URL"]) == ("true", "https://bridge.example.com")
    (credentials,) = [s for s in rec.of_type(SECRET) if "db-password" in (s.inputs.get("stringData") or {})]
    assert credentials.inputs["stringData"]["ar-io-admin-key"] == "bridge-key-0123"
    key = env_of(container(deployment(rec, "workers")))["AR_IO_ADMIN_KEY"]["secretKeyRef"]
    assert key == {"name": rec.k8s_name(credentials), "key": "ar-io-admin-key"}
    # The optical-post and post-bundle jobs run in the workers; nothing else reads the key.
    for w in [deployment(rec, "api"), deployment(rec, "admin"), migration_job(rec)]:
        assert "AR_IO_ADMIN_KEY" not in env_of(container(w)), w.name
    assert "bridge-key-0123" not in json.dumps([d.inputs for d in rec.of_type(DEPLOYMENT)])


def _probe_text(probe: dict[str, Any]) -> str:
    return json.dumps(probe)


@pytest.mark.parametrize("component", ["api", "workers", "admin"])
def test_liveness_and_startup_never_touch_the_database(recording: Recording, component: str) -> None:
    c = container(deployment(recording, component))
    for probe in ("livenessProbe", "startupProbe"):
        text = _probe_text(c[probe])
        assert "postgres" not in text and "s3" not in text and "redis-cache" not in text, (component, probe)
    if component != "workers":
        live = c["livenessProbe"]
        shallow = live.get("tcpSocket") or (live.get("httpGet") or {}).get("path") == "/health"
        assert shallow and "exec" not in live, "API and admin liveness stays shallow (never the deep check)"
    else:
        get = c["livenessProbe"]["httpGet"]
        assert get["port"] == DEEP_CHECK_PORT and get["path"].startswith("/deep-check?checks=bullmq-worker&")


def test_api_liveness_is_the_health_endpoint(recording: Recording) -> None:
    c = container(deployment(recording, "api"))
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"


def test_rollouts_never_drop_ready_pods_and_api_drains_uploads(recording: Recording) -> None:
    for d in recording.of_type(DEPLOYMENT):
        assert d.get("spec.strategy.rollingUpdate.maxUnavailable") == 0
    api = deployment(recording, "api")
    pre_stop = container(api)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and int(pre_stop[1]) > 0
    assert api.get("spec.template.spec.terminationGracePeriodSeconds") > int(pre_stop[1])
    workers = deployment(recording, "workers")
    assert workers.get("spec.template.spec.terminationGracePeriodSeconds") > 30


def test_api_grace_period_defaults_to_the_upstream_request_timeout() -> None:
    rec = render("prod", overrides={"apiGracePeriodSeconds": None})
    assert deployment(rec, "api").get("spec.template.spec.terminationGracePeriodSeconds") >= 600


def test_disruption_budgets_and_spread_where_replicas_allow() -> None:
    prod, dev = render("prod"), render("dev")
    pdbs = {p.name for p in prod.of_type("kubernetes:policy/v1:PodDisruptionBudget")}
    assert "api-pdb" in pdbs and "workers-pdb" not in pdbs
    assert dev.of_type("kubernetes:policy/v1:PodDisruptionBudget") == []
    spread = deployment(prod, "api").get("spec.template.spec.topologySpreadConstraints")
    assert any(
        c["topologyKey"] == "kubernetes.io/hostname" and c["whenUnsatisfiable"] == "DoNotSchedule" for c in spread
    )
    assert deployment(dev, "api").get("spec.template.spec.topologySpreadConstraints") is None


@pytest.mark.parametrize(("visibility", "expect_pull_secret"), [("private", True), ("public", False)])
def test_pull_secret_on_every_pod_only_for_private_images(visibility: str, expect_pull_secret: bool) -> None:
    rec = render(
        "dev",
        overrides={"ghcrVisibility": visibility},
        call_results=lambda token, args: (
            {"code": 200, "body": json.dumps({"visibility": visibility})} if "getRestApi" in token else None
        ),
    )
    pull = [s for s in rec.of_type(SECRET) if s.inputs.get("type") == "kubernetes.io/dockerconfigjson"]
    assert len(pull) == (1 if expect_pull_secret else 0)
    for w in [*rec.of_type(DEPLOYMENT), migration_job(rec)]:
        refs = w.get("spec.template.spec.imagePullSecrets") or []
        assert [r["name"] for r in refs] == ([rec.k8s_name(pull[0])] if expect_pull_secret else [])


def _pod_templates(rec: Recording) -> dict[str, str]:
    return {d.name: json.dumps(d.get("spec.template"), sort_keys=True) for d in rec.of_type(DEPLOYMENT)}


@pytest.mark.parametrize(
    "change",
    [
        {"secrets": {"cacheRedisPassword": "another-cache-password"}},
        {"secrets": {"adminPassword": "a-new-admin-password-0123456789"}},
        {"secrets": {"arweaveWallet": "regenerate"}},
        {"overrides": {"logLevel": "warn"}},
    ],
    ids=["credential", "admin-password", "wallet", "configmap"],
)
def test_changing_a_secret_or_setting_rolls_the_pods_that_use_it(change: dict[str, Any]) -> None:
    before = _pod_templates(render("prod"))
    kwargs = {k: dict(v) for k, v in change.items()}
    if kwargs.get("secrets", {}).get("arweaveWallet") == "regenerate":
        from tests.test_config import jwk

        kwargs["secrets"]["arweaveWallet"] = jwk()
    after = _pod_templates(render("prod", **kwargs))
    assert set(before) == set(after)
    assert all(before[name] != after[name] for name in before), "every bundler pod reads these objects"
    assert _pod_templates(render("prod")) == before, "no change, no roll"


def test_outputs_name_everything_and_reveal_no_secret(recording: Recording) -> None:
    out = recording.outputs
    for key in (
        "namespace", "apiServiceName", "apiInternalUrl", "publicUrl", "adminServiceName", "imageRef",
        "migrationJobName", "secretNames",
    ):
        assert out.get(key), key
    assert out["migrationJobName"] == recording.k8s_name(migration_job(recording))
    assert "adminPassword" in recording.secret_outputs
    assert set(out["secretNames"]) >= {"wallet", "credentials"}
    wallet = placeholder_secrets("dev")["arweaveWallet"]
    plain = {k: v for k, v in out.items() if k not in recording.secret_outputs}
    assert wallet not in json.dumps(plain, default=str)


def test_api_metrics_are_scraped_and_admin_is_not_exposed() -> None:
    rec = render("prod")
    annotations = deployment(rec, "api").get("spec.template.metadata.annotations")
    assert annotations["prometheus.io/path"] == "/bundler_metrics"
    ingresses = rec.of_type("kubernetes:networking.k8s.io/v1:Ingress")
    backends = {i.get("spec.rules.0.http.paths.0.backend.service.name") for i in ingresses}
    assert backends == {rec.outputs["apiServiceName"]}
    monitors = [r for r in rec.resources if r.inputs.get("kind") == "ServiceMonitor"]
    assert len(monitors) == 1
    assert render("dev").of_type("kubernetes:networking.k8s.io/v1:Ingress") == []


RECOMMENDED = ("name", "instance", "component", "part-of", "managed-by", "version")


def test_every_kubernetes_object_carries_the_recommended_labels(recording: Recording, stack: str) -> None:
    objects = [r for r in recording.resources if r.type.startswith("kubernetes:")]
    assert objects
    for r in objects:
        labels = r.get("metadata.labels") or {}
        missing = [k for k in RECOMMENDED if f"app.kubernetes.io/{k}" not in labels]
        assert not missing, f"{r.type} {r.name} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == f"x402-bundler-{stack}"
        assert labels["app.kubernetes.io/managed-by"] == "pulumi"


def test_namespace_enforces_the_restricted_pod_security_standard(recording: Recording) -> None:
    (ns,) = recording.of_type("kubernetes:core/v1:Namespace")
    assert ns.get("metadata.labels")["pod-security.kubernetes.io/enforce"] == "restricted"
