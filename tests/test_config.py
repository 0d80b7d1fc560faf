"""The stack configuration is validated before anything is deployed (risk 6 in docs/risks.md)."""

from __future__ import annotations

import base64
import inspect
import json
import subprocess
import sys
from typing import Any, Optional

import pulumi
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from components.settings import ConfigError, Settings, load_settings
from components.settings.reader import Reader
from components.settings.stack_file import StackFileError, declared_keys, read_stack_file, stack_file_problems
from components.settings.values import eip55, evm_address, has_checksum
from tests.helpers import PROMOTED
from tools.harness import ROOT, placeholder_secrets, run_program


def settings_for(
    stack: str, overrides: Optional[dict[str, Any]] = None, secrets: Optional[dict[str, Optional[str]]] = None
) -> Settings:
    loaded: list[Settings] = []
    run_program(stack, overrides=overrides, secrets=secrets, program=lambda: loaded.append(load_settings()))
    return loaded[0]


def config_error(
    stack: str, overrides: Optional[dict[str, Any]] = None, secrets: Optional[dict[str, Optional[str]]] = None
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_for(stack, overrides, secrets)
    return info.value


def jwk(bits: int = 4096, **changes: Any) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    priv = key.private_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    value = {"kty": "RSA", "n": b64(priv.public_numbers.n), "e": b64(priv.public_numbers.e), "d": b64(priv.d),
             "p": b64(priv.p), "q": b64(priv.q), "dp": b64(priv.dmp1), "dq": b64(priv.dmq1), "qi": b64(priv.iqmp)}
    value.update(changes)
    return json.dumps({k: v for k, v in value.items() if v is not None})


def test_dev_stack_loads_as_a_local_testnet_deployment() -> None:
    s = settings_for("dev")
    modes = (s.stack.environment, s.app.payment_network, s.data.mode, s.image.mode)
    assert modes == ("dev", "base-sepolia", "in-cluster", "build")
    assert (s.processes.api.replicas, s.processes.workers.replicas, s.processes.admin.replicas) == (1, 1, 1)
    assert s.data.protect is False


def test_prod_stack_loads_as_a_mainnet_deployment_with_managed_services() -> None:
    s = settings_for("prod")
    modes = (s.stack.environment, s.app.payment_network, s.data.mode, s.image.mode)
    assert modes == ("prod", "base", "external", "promote")
    assert s.app.public_url.startswith("https://")
    assert s.processes.api.replicas > 1
    assert s.data.protect is True


BAD_INPUTS = [
    pytest.param({}, {"arweaveWallet": None}, "arweaveWallet", "is not set", id="wallet-missing"),
    pytest.param({}, {"arweaveWallet": "{not json"}, "arweaveWallet", "not valid JSON", id="wallet-not-json"),
    pytest.param({}, {"arweaveWallet": '["a"]'}, "arweaveWallet", "not an object", id="wallet-not-object"),
    pytest.param({}, {"arweaveWallet": "EC"}, "arweaveWallet", "RSA", id="wallet-wrong-kty"),
    pytest.param({}, {"arweaveWallet": "no-d"}, "arweaveWallet", "lacks JWK member(s) d", id="wallet-public-only"),
    pytest.param({}, {"arweaveWallet": "bad-b64"}, "arweaveWallet", "not base64url", id="wallet-not-base64url"),
    pytest.param({}, {"arweaveWallet": "2048"}, "arweaveWallet", "2048-bit modulus", id="wallet-2048-bit"),
    pytest.param({"paymentAddress": "0x1234"}, {}, "paymentAddress", "not an EVM address", id="address-short"),
    pytest.param({"paymentAddress": "5Fb0C1C5a0d7f3E1F8cD06e1e5Bc1C0c1A0b9e42"}, {},
                 "paymentAddress", "not an EVM address", id="address-no-0x"),
    pytest.param({"paymentAddress": None}, {}, "paymentAddress", "is not set", id="address-missing"),
    pytest.param({"paymentNetwork": "base"}, {}, "cdpApiKeyId", "Base mainnet", id="mainnet-without-cdp-id"),
    pytest.param({"paymentNetwork": "base"}, {}, "cdpApiKeySecret", "Base mainnet", id="mainnet-without-cdp-secret"),
    pytest.param({"paymentNetwork": "ethereum"}, {}, "paymentNetwork", "not one of", id="unknown-network"),
    pytest.param({"environment": "prod", "publicUrl": "http://upload.example.com"}, {},
                 "publicUrl", "https://", id="prod-http-url"),
    pytest.param({"publicUrl": "upload.example.com"}, {}, "publicUrl", "not an http(s) URL", id="url-without-scheme"),
    pytest.param({"apiReplicas": 0}, {}, "apiReplicas", "outside the allowed range", id="zero-api-replicas"),
    pytest.param({"workerReplicas": "two"}, {}, "workerReplicas", "not a whole number", id="replicas-not-number"),
    pytest.param({"apiMemoryLimit": "1GB"}, {},
                 "apiMemoryLimit", "not a Kubernetes resource quantity", id="bad-memory-quantity"),
    pytest.param({"workerCpuRequest": "2", "workerCpuLimit": "500m"}, {},
                 "workerCpuRequest", "larger than workerCpuLimit", id="request-above-limit"),
    pytest.param({"apiPort": 70000}, {}, "apiPort", "outside the allowed range", id="port-out-of-range"),
    pytest.param({"adminPort": 3001}, {}, "adminPort", "same port as apiPort", id="port-clash"),
    pytest.param({"dbPoolMax": 50}, {}, "dbPoolMax", "connection budget exceeded", id="connection-budget"),
    pytest.param({}, {"dbPassword": "pa@ss-word-0123456789"},
                 "dbPassword", "unescaped into its postgres:// connection URL", id="db-password-url-delimiter"),
    pytest.param({"freeUploadLimit": -1}, {},
                 "freeUploadLimit", "outside the allowed range", id="negative-free-upload-limit"),
    pytest.param({"opticalBridgeUrl": "bridge.example.com"}, {"arIoAdminKey": "k"},
                 "opticalBridgeUrl", "not an http(s) URL", id="optical-bridge-not-a-url"),
    pytest.param({"opticalBridgeUrl": "https://bridge.example.com"}, {},
                 "arIoAdminKey", "required when opticalBridgeUrl is set", id="optical-bridge-without-admin-key"),
    pytest.param({"uploadDataSizeLimit": "20GB"}, {},
                 "uploadDataSizeLimit", "not a Kubernetes resource quantity", id="bad-upload-data-size"),
    pytest.param({"imageMode": "promote", "imageRef": "ghcr.io/example-org/ar-io-x402-bundler:latest"}, {},
                 "imageRef", "not pinned", id="promote-latest-tag"),
    pytest.param({"imageMode": "promote", "imageRef": "ghcr.io/example-org/ar-io-x402-bundler:1.0.0"}, {},
                 "imageRef", "not pinned", id="promote-version-tag"),
    pytest.param({"postgresImage": "postgres"}, {}, "postgresImage", "not pinned", id="bare-data-image"),
    pytest.param({"redisImage": "redis:latest"}, {}, "redisImage", "not pinned", id="latest-data-image"),
    pytest.param({"imageGitRef": "main"}, {}, "imageGitRef", "40-hex commit", id="build-from-branch"),
    pytest.param({"imageDockerfile": "slim"}, {}, "imageDockerfile", "not one of traced, upstream",
                 id="unknown-dockerfile"),
    pytest.param({"imageRepository": "docker.io/library/bundler"}, {},
                 "imageRepository", "not a GHCR repository", id="not-ghcr"),
    pytest.param({}, {"registryPushToken": None},
                 "registryPushToken", "required in build mode", id="build-without-push-token"),
    pytest.param({}, {"registryPullToken": None}, "registryPullToken", "private", id="private-without-pull-token"),
    pytest.param({"dataMode": "external"}, {},
                 "dbHost", "required when dataMode is external", id="external-without-host"),
    pytest.param({}, {"queueRedisPassword": "queue-secret"},
                 "queueRedisPassword", "cannot send a password", id="queue-redis-password"),
    pytest.param({"queueRedisTls": True}, {}, "queueRedisTls", "no TLS support", id="queue-redis-tls"),
    pytest.param({"adminAllowedCidrs": ["10.0.0.0/33"]}, {}, "adminAllowedCidrs", "not a CIDR", id="bad-cidr"),
    pytest.param({"namespace": "Bundler_NS"}, {}, "namespace", "not a valid Kubernetes namespace", id="bad-namespace"),
    pytest.param({}, {"adminPassword": "short"}, "adminPassword", "shorter than 16", id="weak-admin-password"),
    pytest.param({"githubDelivery": True, "githubRepository": "o/r", "githubProdReviewerIds": [123, "alice"]}, {},
                 "githubProdReviewerIds", "not numeric GitHub user ids", id="reviewer-login"),
    pytest.param({"cacheRedisMaxMemory": "lots"}, {},
                 "cacheRedisMaxMemory", "not a Redis memory size", id="bad-redis-memory"),
    pytest.param({"monitoringNamespace": "Mon_NS"}, {},
                 "monitoringNamespace", "not a valid Kubernetes namespace", id="bad-monitoring-namespace"),
    pytest.param({"imageMode": "promote", "imageRef": "ghcr.io/someone-else/bundler@sha256:" + "a" * 64}, {},
                 "imageRef", "not in imageRepository", id="promote-other-repository"),
    pytest.param({"imageMode": "promote", "imageRepository": None, "imagePromoteStack": "o/x402-bundler/dev"}, {},
                 "imageRepository", "not a GHCR repository", id="promote-without-repository"),
]


def _wallet_for(label: Optional[str]) -> Optional[str]:
    return {
        "EC": jwk(kty="EC"),
        "no-d": jwk(d=None),
        "bad-b64": jwk(qi="not/base64+url=="),
        "2048": jwk(bits=2048),
    }.get(label or "", label)


@pytest.mark.parametrize(("overrides", "secrets", "key", "fragment"), BAD_INPUTS)
def test_bad_input_is_refused_naming_the_key_and_the_fix(
    overrides: dict[str, Any], secrets: dict[str, Optional[str]], key: str, fragment: str
) -> None:
    if "arweaveWallet" in secrets:
        secrets = {**secrets, "arweaveWallet": _wallet_for(secrets["arweaveWallet"])}
    error = config_error("dev", overrides, secrets)
    matching = [p for p in error.problems if p.key == key]
    assert matching, f"no problem for {key}: {error}"
    assert any(fragment in p.message for p in matching), str(error)
    assert all(p.fix.startswith("pulumi config") for p in matching)
    assert f"x402-bundler:{key}:" in str(error)


def test_several_problems_are_all_reported_at_once() -> None:
    error = config_error(
        "dev",
        overrides={"paymentAddress": "0xnope", "apiReplicas": 0, "apiCpuLimit": "lots", "imageGitRef": "main"},
        secrets={"arweaveWallet": "{}"},
    )
    keys = {p.key for p in error.problems}
    assert {"paymentAddress", "apiReplicas", "apiCpuLimit", "imageGitRef", "arweaveWallet"} <= keys
    assert f"has {len(error.problems)} problem(s)" in str(error)
    # The fixes are bare `pulumi` commands: the last line says how to aim them at this stack.
    assert str(error).splitlines()[-1] == 'Run the fixes in a shell prepared with: eval "$(make -s env STACK=dev)"'


def test_connection_budget_error_itemises_the_peak_and_gives_the_fix() -> None:
    error = config_error("prod", overrides={"dbPoolMax": 40, "dbMaxConnections": 100})
    (problem,) = [p for p in error.problems if p.key == "dbPoolMax"]
    # prod: api 3 and workers 2 at 2 pools x 40; admin 5; one surge pod of each; 9 deep checks.
    for item in ("api 3 x 80", "workers 2 x 80", "admin 1 x 5", "api-surge 1 x 80", "workers-surge 1 x 80",
                 "admin-surge 1 x 5", "deep-check 9 x 1"):
        assert item in problem.message, item
    assert "= 579 connections" in problem.message
    assert "max_connections is 100 (97 usable after 3 superuser-reserved)" in problem.message
    # 14 x 5 + 19 = 89 fits in 97; 14 x 6 + 19 = 103 does not.
    assert problem.fix == "pulumi config set x402-bundler:dbPoolMax 5  (or raise x402-bundler:dbMaxConnections to 582)"


def test_connection_peak_counts_two_pools_per_app_process_the_admin_pool_surge_pods_and_probes() -> None:
    from components.settings.budget import connection_peak, peak_connections

    peak = connection_peak({"api": 3, "workers": 2, "admin": 1, "migration": 1}, pool_max=12)
    assert peak == {
        "api": {"pods": 3, "per_process": 24, "total": 72},
        "workers": {"pods": 2, "per_process": 24, "total": 48},
        "admin": {"pods": 1, "per_process": 5, "total": 5},
        "api-surge": {"pods": 1, "per_process": 24, "total": 24},
        "workers-surge": {"pods": 1, "per_process": 24, "total": 24},
        "admin-surge": {"pods": 1, "per_process": 5, "total": 5},
        "deep-check": {"pods": 9, "per_process": 1, "total": 9},
    }
    assert peak_connections({"api": 3, "workers": 2, "admin": 1, "migration": 1}, 12) == 187
    # The migration Job (one writer pool) runs before any Deployment rolls: it is at the peak
    # only when it is larger than the surge, e.g. with many migration pods.
    assert "migration" in connection_peak({"api": 1, "workers": 1, "admin": 1, "migration": 10}, 10)


@pytest.mark.parametrize(("max_connections", "fits"), [(99, True), (98, False)])
def test_the_dev_stack_budget_is_exact_to_the_connection(max_connections: int, fits: bool) -> None:
    # dev: 4 pods x 2 pools x 10 + 2 admin pods x 5 + 6 deep checks = 96 = 99 - 3 reserved.
    overrides = {"dbMaxConnections": max_connections}
    if fits:
        assert settings_for("dev", overrides).data.postgres.pool_max == 10
    else:
        problems = config_error("dev", overrides).problems
        assert any(p.key == "dbPoolMax" and "= 96 connections" in p.message for p in problems)


def test_the_default_pool_size_fits_the_default_database() -> None:
    s = settings_for("dev", overrides={"dbPoolMax": None, "dbMaxConnections": None})
    assert (s.data.postgres.pool_max, s.data.postgres.max_connections) == (10, 100)


URL_DELIMITERS = ["#", "/", ":", "?", "@", "%"]


@pytest.mark.parametrize("character", [*URL_DELIMITERS, " ", "\t"], ids=[*URL_DELIMITERS, "space", "tab"])
def test_a_database_password_that_breaks_the_apps_connection_url_is_refused(character: str) -> None:
    password = f"Secret{character}Value0123456789"
    error = config_error("prod", secrets={"dbPassword": password})
    (problem,) = [p for p in error.problems if p.key == "dbPassword"]
    named = "whitespace" if character.isspace() else f"'{character}'"
    assert problem.message.startswith(f"contains {named},")
    assert "only letters and digits" in problem.message
    assert problem.fix == "pulumi config set --secret x402-bundler:dbPassword <password without those characters>"
    assert "Value0123456789" not in str(error), "no part of the password is echoed"


def test_a_letters_and_digits_database_password_is_accepted() -> None:
    assert settings_for("prod", secrets={"dbPassword": "Abc123def456GHI789jkl012"}).data.postgres.password is not None


def test_the_admin_key_is_used_only_with_an_optical_bridge() -> None:
    assert settings_for("dev", secrets={"arIoAdminKey": "key-0123"}).app.ar_io_admin_key is None
    bridged = settings_for("dev", overrides={"opticalBridgeUrl": "https://bridge.example.com"},
                           secrets={"arIoAdminKey": "key-0123"})
    assert bridged.app.optical_bridge_url == "https://bridge.example.com"
    assert bridged.app.ar_io_admin_key is not None


def test_secret_values_never_appear_in_errors() -> None:
    wallet = jwk(bits=2048)
    secret_bits = [v for k, v in json.loads(wallet).items() if k != "kty"]
    error = config_error(
        "dev",
        overrides={"paymentNetwork": "base", "paymentAddress": "bad"},
        secrets={"arweaveWallet": wallet, "cdpApiKeyId": "cdp-id-SENTINEL", "adminPassword": "short-SENTINEL",
                 "queueRedisPassword": "queue-SENTINEL"},
    )
    text = str(error)
    assert "SENTINEL" not in text
    assert not any(bit[:16] in text for bit in secret_bits)


def test_secret_kept_in_plain_text_in_stack_file_is_refused() -> None:
    plain_wallet = placeholder_secrets("dev")["arweaveWallet"]
    error = config_error("dev", overrides={"arweaveWallet": plain_wallet}, secrets={"arweaveWallet": None})
    assert any(p.key == "arweaveWallet" and "plain text" in p.message for p in error.problems)
    assert plain_wallet[:40] not in str(error)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_no_resource_is_registered_when_validation_fails(stack: str) -> None:
    recording = run_program(stack, overrides={"paymentAddress": "bad", "apiReplicas": 0}, raise_errors=False)
    assert isinstance(recording.error, ConfigError)
    assert recording.resources == []
    assert recording.calls == []


def _declared() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]


def test_every_key_the_program_reads_is_declared_with_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    read: dict[str, Any] = {}
    for method in ("text", "choice", "integer", "boolean", "strings"):
        original = getattr(Reader, method)

        def recorder(self: Any, key: str, *rest: Any, _original: Any = original, **kw: Any) -> Any:
            bound = inspect.signature(_original).bind(self, key, *rest, **kw)
            read.setdefault(key, bound.arguments["default"])
            return _original(self, key, *rest, **kw)

        monkeypatch.setattr(Reader, method, recorder)
    original_secret = Reader.secret_text

    def secret_recorder(self: Any, key: str) -> Any:
        read.setdefault(key, "<secret>")
        return original_secret(self, key)

    monkeypatch.setattr(Reader, "secret_text", secret_recorder)
    for stack in ("dev", "prod"):
        settings_for(stack)
    settings_for("dev", overrides={"githubDelivery": True, "githubRepository": "o/r", "githubProdReviewerIds": [1]})

    declared = _declared()
    assert set(read) == set(declared), f"undeclared: {set(read) - set(declared)}; unused: {set(declared) - set(read)}"
    for key, spec in declared.items():
        if read[key] == "<secret>":
            assert spec.get("secret") is True and "default" not in spec, key
        elif "default" in spec:
            expected = read[key]
            if isinstance(expected, tuple):
                expected = list(expected)
            assert spec["default"] == expected, f"{key}: Pulumi.yaml says {spec['default']!r}, code uses {expected!r}"


def test_stack_files_commit_no_secret_values() -> None:
    declared = _declared()
    secret_keys = {k for k, v in declared.items() if v.get("secret")}
    for stack in ("dev", "prod"):
        values = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        committed = {k.split(":", 1)[1] for k in values if k.startswith("x402-bundler:")}
        assert not committed & secret_keys, f"Pulumi.{stack}.yaml commits secret keys {committed & secret_keys}"
        assert committed <= set(declared), f"Pulumi.{stack}.yaml sets undeclared keys {committed - set(declared)}"


# -- the stack file itself, EIP-55 and example values (issue 14) -----------------------------


def test_a_misspelled_key_in_the_stack_file_is_refused_with_the_key_it_meant(tmp_path: Any) -> None:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text("config:\n  x402-bundler:workersReplicas: 3\n  kubernetes:context: kind-dev\n")
    (problem,) = stack_file_problems(stack_file, declared_keys())
    assert problem.key == "workersReplicas"
    assert "did you mean workerReplicas?" in problem.message
    assert problem.fix == "rename it to x402-bundler:workerReplicas in Pulumi.dev.yaml"


def test_a_secret_written_in_plain_text_in_the_stack_file_is_refused(tmp_path: Any) -> None:
    stack_file = tmp_path / "Pulumi.prod.yaml"
    stack_file.write_text("config:\n  x402-bundler:registryPullToken: ghp_example\n"
                          "  x402-bundler:dbPassword:\n    secure: v1:abc\n")
    (problem,) = stack_file_problems(stack_file, declared_keys())
    assert problem.key == "registryPullToken" and "plain text" in problem.message
    assert "ghp_example" not in problem.message + problem.fix
    assert problem.fix.startswith("pulumi config set --secret x402-bundler:registryPullToken")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_committed_stack_files_declare_only_known_keys_and_encrypt_their_secrets(stack: str) -> None:
    assert stack_file_problems(ROOT / f"Pulumi.{stack}.yaml", declared_keys()) == []


@pytest.mark.parametrize("address, ok", [
    ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", True),   # EIP-55's own mixed-case test vector
    ("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", True),   # one case: no checksum, accepted
    ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", False),  # one letter's case off: a typo
    ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe0", False),  # one digit off in a checksummed address
])
def test_payment_addresses_in_mixed_case_must_pass_the_eip55_checksum(address: str, ok: bool) -> None:
    problems = evm_address("paymentAddress", address)
    assert (problems == []) is ok, problems
    if not ok:
        assert "EIP-55" in problems[0].message and eip55(address) not in problems[0].fix


def test_both_stacks_carry_checksummed_example_addresses() -> None:
    for stack in ("dev", "prod"):
        address = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["x402-bundler:paymentAddress"]
        assert has_checksum(address) and eip55(address) == address, stack


def test_prod_refuses_to_deploy_example_values_and_a_preview_only_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    promoted = {"example-org/x402-bundler/dev": {"imageRef": PROMOTED}}
    with pytest.raises(ConfigError) as raised:
        run_program("prod", stack_outputs=promoted, deploying=True)
    (problem,) = [p for p in raised.value.problems if p.key == "exampleValues"]
    assert "paymentAddress" in problem.message and "Pulumi.prod.yaml" in problem.fix
    # A preview of the same stack lists them as a warning and goes on.
    monkeypatch.setattr(pulumi.runtime, "is_dry_run", lambda: True)
    assert run_program("prod", stack_outputs=promoted, deploying=True).resources
    monkeypatch.undo()
    assert run_program("prod", overrides={"exampleValues": []}, stack_outputs=promoted, deploying=True).resources


def test_make_render_reports_config_problems_without_a_traceback(tmp_path: Any) -> None:
    done = subprocess.run([sys.executable, "-m", "tools.render", "--stack", "dev", "--out", str(tmp_path),
                           "--set", "workersReplicas=3", "--set", "paymentAddress=0x12"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "did you mean workerReplicas?" in done.stderr
    assert "fix: edit x402-bundler:paymentAddress in Pulumi.dev.yaml" in done.stderr


def test_local_stack_builds_into_the_kind_registry_without_tokens_or_github() -> None:
    s = settings_for("local", secrets={"registryPushToken": None, "registryPullToken": None, "githubToken": None})
    assert (s.stack.environment, s.app.payment_network, s.data.mode, s.image.mode) == (
        "dev", "base-sepolia", "in-cluster", "build")
    assert s.image.local_registry and s.image.registry == "localhost:5001"
    assert s.image.push_token is None and s.image.builder == "x402-bundler-local"
    assert s.image.platforms == ("linux/amd64",)


@pytest.mark.parametrize(("stack", "overrides", "key", "says"), [
    pytest.param("prod", {"imageRepository": "localhost:5001/ar-io-x402-bundler", "imagePromoteStack": None,
                          "imageRef": f"localhost:5001/ar-io-x402-bundler@sha256:{'0' * 64}"},
                 "imageRepository", "prod pulls from GHCR", id="prod-local-registry"),
    pytest.param("local", {"imageMode": "promote", "imageRef": f"localhost:5001/ar-io-x402-bundler@sha256:{'0' * 64}"},
                 "imageRepository", "only a stack that builds here", id="promote-from-local-registry"),
    pytest.param("local", {"imageRepository": "registry.example.com:5000/bundler"},
                 "imageRepository", "nor, outside prod, a local registry", id="other-registry"),
    pytest.param("dev", {"imageMode": "promote", "imageBuilder": "b", "imagePromoteStack": "o/x402-bundler/dev"},
                 "imageBuilder", "only build mode builds", id="builder-in-promote-mode"),
    pytest.param("prod", {"imageDockerfile": "upstream"}, "imageDockerfile", "only build mode builds",
                 id="dockerfile-in-promote-mode"),
])
def test_local_registry_rules_name_the_key_and_the_fix(stack: str, overrides: dict[str, Any], key: str,
                                                       says: str) -> None:
    problems = [p for p in config_error(stack, overrides).problems if p.key == key]
    assert problems and says in problems[0].message
    assert problems[0].fix.startswith("pulumi config")


def test_ghcr_still_needs_its_tokens_outside_the_local_registry() -> None:
    error = config_error("local", overrides={"imageRepository": "ghcr.io/example-org/ar-io-x402-bundler"},
                         secrets={"registryPushToken": None, "registryPullToken": None})
    assert {"registryPushToken", "registryUsername", "registryPullToken"} <= {p.key for p in error.problems}


def test_dev_refuses_to_deploy_an_example_registry_and_warns_what_it_does_with_the_rest() -> None:
    """dev's example registry and user cannot work (the push would fail after a two-platform build);
    its example payment address can, and the warning says where payments would go."""
    with pytest.raises(ConfigError) as raised:
        run_program("dev", deploying=True)
    (problem,) = [p for p in raised.value.problems if p.key == "exampleValues"]
    assert "imageRepository" in problem.message and "registryUsername" in problem.message
    assert "paymentAddress" not in problem.message
    assert run_program("dev", overrides={"exampleValues": ["paymentAddress"]}, deploying=True).resources


def test_the_local_sandbox_lists_no_example_values() -> None:
    """Its testnet payment address and local registry are what a sandbox should use."""
    assert "x402-bundler:exampleValues" not in yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]


@pytest.mark.parametrize("stack", ["dev", "prod", "local"])
def test_every_stack_names_its_cluster(stack: str) -> None:
    """So `pulumi up` deploys to the stack's own cluster whatever kubectl's current context is."""
    assert yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"].get("kubernetes:context")


# -- what an offline check used to let through (issue 24) ----------------------------------------


def render_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tools.render", *args], cwd=ROOT, capture_output=True, text=True)


def test_a_render_says_which_secrets_it_stood_in_for_that_up_needs(tmp_path: Any) -> None:
    """A green render is no green light: prod on mainnet renders with placeholder CDP keys."""
    done = render_cli("--stack", "prod", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("placeholders stood in for")]
    for key in ("arweaveWallet", "cdpApiKeyId", "cdpApiKeySecret", "dbPassword", "s3AccessKeyId"):
        assert key in line
    assert "make secret STACK=prod KEY=<key> < <file>" in line


def test_a_secret_given_to_render_on_the_command_line_is_refused(tmp_path: Any) -> None:
    done = render_cli("--stack", "dev", "--out", str(tmp_path), "--set", "arweaveWallet=not-on-the-command-line")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "x402-bundler:arweaveWallet: is a secret: a value on the command line" in done.stderr
    assert "not-on-the-command-line" not in done.stderr


def test_a_summary_of_a_directory_that_is_not_a_render_fails(tmp_path: Any) -> None:
    done = render_cli("--summary", str(tmp_path), str(tmp_path / "does-not-exist"))
    assert done.returncode == 2 and "is no render directory" in done.stderr


def test_a_key_under_a_misspelled_namespace_is_named_not_ignored(tmp_path: Any) -> None:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text("config:\n  x402-bundlr:workerReplicas: 3\n  kubernetes:context: kind-dev\n")
    (problem,) = stack_file_problems(stack_file, declared_keys())
    assert problem.qualified == "x402-bundlr:workerReplicas"
    assert "did you mean x402-bundler:workerReplicas?" in problem.message


def test_a_yaml_slip_in_a_stack_file_names_its_line_and_column_without_a_traceback(tmp_path: Any) -> None:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text("config:\n  x402-bundler:apiReplicas: 1\n   x402-bundler:workerReplicas: 2\n")
    with pytest.raises(StackFileError, match=r"Pulumi.dev.yaml is not valid YAML at line 3, column \d+: .*indentation"):
        read_stack_file(stack_file)


def test_an_unquoted_address_read_as_a_number_says_quote_it() -> None:
    as_read = str(int("5Fb0C1c5A0d7f3e1F8CD06e1e5Bc1c0c1A0b9E42", 16))
    (problem,) = evm_address("paymentAddress", as_read)
    assert "unquoted, so YAML read it as a hexadecimal number" in problem.message
    assert problem.fix == 'quote it in the stack file: x402-bundler:paymentAddress: "0x<40 hex digits>"'
