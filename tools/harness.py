"""Run the real Pulumi program under mocks and record everything it registers.

Used by the tests and by the offline renderer. The mock monitor records the raw
registration requests (type, name, parent, dependencies, options, inputs with secrets
marked) rather than the outputs of `apply` callbacks, so an assertion cannot pass merely
because a value was unknown during a preview.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import reset_options
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.settings.stack import OFFLINE_ENV
from components.settings.stack_file import read_stack_file

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "x402-bundler"
SECRET = "[secret]"
GITHUB_REST = "github:index/getRestApi:getRestApi"
REGISTRY_IMAGE = "docker:index/getRegistryImage:getRegistryImage"
_SIG_KEY = rpc._special_sig_key
_SECRET_SIG = rpc._special_secret_sig


@dataclass
class Registered:
    """One resource registration as the engine would receive it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    inputs: dict[str, Any]
    redacted_inputs: dict[str, Any]
    dependencies: list[str]
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    custom_timeouts: dict[str, str]
    ignore_changes: list[str]
    replace_on_changes: list[str]
    provider: str
    outputs: dict[str, Any] = field(default_factory=dict)
    """What the mock engine answered (a build's pushed `ref`, a generated password)."""

    def get(self, path: str, default: Any = None) -> Any:
        """Dotted lookup into the inputs: `r.get("spec.template.spec.containers")`."""
        node: Any = self.inputs
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return default
        return node


@dataclass
class Recording:
    """What one program run registered, invoked and exported."""

    resources: list[Registered] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    secret_outputs: set[str] = field(default_factory=set)
    error: Optional[BaseException] = None

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Registered:
        found = [r for r in self.resources if r.type == type_ and r.name == name]
        assert len(found) == 1, (
            f"expected one {type_} named {name}, found {len(found)}: {[r.name for r in self.of_type(type_)]}"
        )
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def k8s_name(self, r: Registered) -> str:
        """The object's Kubernetes name (explicit, or what the mock's auto-naming gave it)."""
        name = r.get("metadata.name")
        return str(name) if name else auto_name(r.type, r.name)

    def depends_on(self, r: Registered, other: Registered) -> bool:
        """Whether `r` waits for `other`: directly, through a component it waits for, or through inputs."""
        targets = {other.urn}
        seen: set[str] = set()
        frontier = list(r.dependencies)
        while frontier:
            urn = frontier.pop()
            if urn in targets:
                return True
            if urn in seen:
                continue
            seen.add(urn)
            # Depending on a component means depending on all of its children.
            frontier.extend(c.urn for c in self.resources if c.parent == urn)
        return False


def auto_name(type_: str, name: str) -> str:
    """Deterministic stand-in for Pulumi's random auto-name suffix."""
    return f"{name}-{hashlib.sha256(f'{type_}::{name}'.encode()).hexdigest()[:8]}"


# pulumi-random's character classes (terraform-provider-random internal/random/string.go).
_CLASSES = {"numeric": "0123456789", "lower": "abcdefghijklmnopqrstuvwxyz", "upper": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
_SPECIAL = "!@#$%&*()-_=+[]{}<>:?"


def random_password(name: str, inputs: dict[str, Any]) -> str:
    """What pulumi-random's RandomPassword makes of its declared inputs, as its provider does:
    each `min*` drawn from its class, the rest from every enabled class, then shuffled. Seeded
    by the resource's name, so a render is reproducible; the characters are the inputs' own, so
    `special=True` puts `#`, `@` or `/` into the result just as the real provider would."""
    rng = random.Random(hashlib.sha256(f"RandomPassword::{name}".encode()).digest())
    special = str(inputs.get("overrideSpecial") or _SPECIAL)
    enabled = {**{k: inputs.get(k, True) is not False for k in _CLASSES}, "special": inputs.get("special", True)}
    if inputs.get("number") is False:  # the deprecated name of `numeric`
        enabled["numeric"] = False
    classes = {**_CLASSES, "special": special}
    chars = "".join(classes[k] for k in ("upper", "lower", "numeric", "special") if enabled[k] is not False)
    out = [rng.choice(classes[k]) for k in ("numeric", "lower", "upper", "special")
           for _ in range(int(inputs.get(f"min{k.capitalize()}", 0)))]
    out += [rng.choice(chars) for _ in range(int(inputs["length"]) - len(out))]
    rng.shuffle(out)
    return "".join(out)


def _digest(*parts: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _unwrap(node: Any) -> Any:
    """Inputs with every (nested) secret replaced by its plain value, for assertions."""
    if isinstance(node, dict):
        if node.get(_SIG_KEY) == _SECRET_SIG:
            return _unwrap(node.get("value"))
        return {k: _unwrap(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unwrap(v) for v in node]
    return node


def _redact(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get(_SIG_KEY) == _SECRET_SIG:
            return SECRET
        return {k: _redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_redact(v) for v in node]
    return node


class CallFailed(Exception):
    """Raised by a `call_results` answer: the function fails, as a provider error reaches the
    program (an invoke error it can catch), not as a crash of the engine connection."""


class ProgramMocks(pulumi.runtime.Mocks):
    """Outputs a real engine would compute, made deterministic."""

    def __init__(self, call_results: Optional[Callable[[str, dict[str, Any]], Optional[dict[str, Any]]]] = None,
                 stack_outputs: Optional[dict[str, dict[str, Any]]] = None,
                 stack_secret_outputs: Optional[dict[str, set[str]]] = None) -> None:
        self.call_results = call_results
        self.stack_outputs = stack_outputs or {}
        self.stack_secret_outputs = stack_secret_outputs or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict[str, Any]]:
        state = dict(args.inputs)
        if args.typ.startswith("kubernetes:"):
            metadata = dict(state.get("metadata") or {})
            metadata.setdefault("name", auto_name(args.typ, args.name))
            state["metadata"] = metadata
            # In a preview a computed name can be unknown; the engine's id is a string all the same.
            name = metadata["name"]
            return (name if isinstance(name, str) else auto_name(args.typ, args.name)), state
        if args.typ == "docker-build:index:Image":
            # As the provider answers: the first tag with the pushed digest appended.
            tags = state.get("tags") or ["registry.invalid/unknown:untagged"]
            state["digest"] = _digest(args.name, state.get("context"), state.get("dockerfile"), state.get("platforms"),
                                      state.get("buildArgs"), state.get("exports"), state.get("labels"))
            state["ref"] = f"{tags[0]}@{state['digest']}"
        elif args.typ == "docker-build:index:Index":
            state["ref"] = (
                f"{state.get('tag', 'registry.invalid/unknown:x')}@{_digest(sorted(state.get('sources') or []))}"
            )
        elif args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = random_password(args.name, state)
        elif args.typ == "pulumi:pulumi:StackReference":
            state["outputs"] = self.stack_outputs.get(str(state.get("name")), {})
            # As the engine answers: which outputs the referenced stack holds as secrets.
            state["secretOutputNames"] = sorted(self.stack_secret_outputs.get(str(state.get("name")), set()))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], Optional[list[tuple[str, str]]]]:
        inputs = dict(args.args)
        self.calls.append((args.token, inputs))
        try:
            result = self.call_results(args.token, inputs) if self.call_results else None
        except CallFailed as failed:
            return {}, [("", str(failed))]
        if args.token == GITHUB_REST:
            # Offline default: the package does not exist yet (as before a first push).
            result = {"endpoint": inputs.get("endpoint", ""), "id": inputs.get("endpoint", ""), "headers": "{}",
                      "status": "", "body": "{}", **(result or {"code": 404, "status": "404 Not Found"})}
        elif args.token == REGISTRY_IMAGE and result is None:
            # Offline default: the registry holds the digest asked for (`<repo>:<tag>@<digest>`).
            name = str(inputs.get("name", ""))
            result = {"id": name, "name": name, "sha256Digest": name.partition("@")[2]}
        return (result or {}), []


class RecordingMonitor(pmocks.MockMonitor):
    """A mock monitor that keeps each registration request as the engine would see it."""

    def __init__(self, mocks: ProgramMocks) -> None:
        super().__init__(mocks)
        self.recorded: list[Registered] = []

    def ReadResource(self, request: Any) -> Any:
        """Reads (such as a StackReference) are recorded too, with their read id as input."""
        response = super().ReadResource(request)
        props = _unwrap(rpc.deserialize_properties(request.properties))
        self.recorded.append(
            Registered(
                type=request.type, name=request.name, urn=response.urn, parent=request.parent, custom=True,
                inputs={**props, "id": request.id}, redacted_inputs={**_redact(props), "id": request.id},
                dependencies=list(request.dependencies), protect=False, retain_on_delete=False,
                delete_before_replace=False, custom_timeouts={}, ignore_changes=[], replace_on_changes=[],
                provider=request.provider,
            )
        )
        return response

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object, preserving_proto_field_name=True)
            timeouts = request.customTimeouts
            timeouts_by_op = (("create", timeouts.create), ("update", timeouts.update), ("delete", timeouts.delete))
            self.recorded.append(
                Registered(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    inputs=_unwrap(rpc.deserialize_properties(request.object, keep_unknowns=True)),
                    redacted_inputs=_redact(raw),
                    dependencies=list(request.dependencies),
                    protect=bool(request.protect),
                    retain_on_delete=bool(request.retainOnDelete),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    custom_timeouts={k: v for k, v in timeouts_by_op if v},
                    ignore_changes=list(request.ignoreChanges),
                    replace_on_changes=list(request.replaceOnChanges),
                    provider=request.provider,
                    outputs=_unwrap(rpc.deserialize_properties(response.object, keep_unknowns=True)),
                )
            )
        return response


@functools.cache
def stack_config(stack: str) -> dict[str, str]:
    """A stack file's plain (non-secret) config, as the CLI would pass it to the program.
    StackFileError, naming the line and column, when the file is not YAML."""
    data = read_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    result: dict[str, str] = {}
    for key, value in (data.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue
        full = key if ":" in key else f"{PROJECT}:{key}"
        result[full] = value if isinstance(value, str) else json.dumps(value)
    return result


def _bytes(label: str, size: int) -> bytes:
    out = b"".join(hashlib.sha256(f"{label}:{i}".encode()).digest() for i in range(size // 32 + 1))
    return out[:size]


@functools.cache
def test_wallet() -> str:
    """A placeholder Arweave JWK: the right shape (RSA, every member base64url, a 4096-bit
    modulus) from a fixed seed, so renders are reproducible. It is not a usable key, and says so."""
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    n = bytes([_bytes("n", 1)[0] | 0x80]) + _bytes("n", 512)[1:]
    members = {m: b64(_bytes(m, 512 if m == "d" else 256)) for m in ("d", "p", "q", "dp", "dq", "qi")}
    return json.dumps({"kty": "RSA", "kid": "PLACEHOLDER-not-a-real-key", "n": b64(n), "e": "AQAB", **members})


def placeholder_secrets(stack: str) -> dict[str, str]:
    """Clearly marked stand-ins for every secret key a stack needs to evaluate."""
    secrets = {
        "arweaveWallet": test_wallet(),
        "registryPushToken": "PLACEHOLDER-registry-push-token",
        "registryPullToken": "PLACEHOLDER-registry-pull-token",
        "githubToken": "PLACEHOLDER-github-token",
    }
    config = stack_config(stack)
    if config.get(f"{PROJECT}:paymentNetwork") == "base":
        secrets |= {"cdpApiKeyId": "PLACEHOLDER-cdp-key-id", "cdpApiKeySecret": "PLACEHOLDER-cdp-key-secret"}
    if config.get(f"{PROJECT}:dataMode") == "external":
        secrets |= {"dbPassword": "PLACEHOLDER-db-password", "cacheRedisPassword": "PLACEHOLDER-cache-password",
                    "s3AccessKeyId": "PLACEHOLDER-s3-key-id", "s3SecretAccessKey": "PLACEHOLDER-s3-secret-key"}
    # Read only when githubDelivery is on; always present so an override can turn it on.
    secrets |= {"ciPulumiAccessToken": "PLACEHOLDER-pulumi-token", "ciKubeconfigDev": "PLACEHOLDER-kubeconfig-dev",
                "ciKubeconfigProd": "PLACEHOLDER-kubeconfig-prod", "ciPulumiPassphrase": "PLACEHOLDER-passphrase",
                "ciPreviewKubeconfigDev": "PLACEHOLDER-preview-kubeconfig-dev",
                "ciPreviewKubeconfigProd": "PLACEHOLDER-preview-kubeconfig-prod"}
    return secrets


def run_program(
    stack: str,
    overrides: Optional[dict[str, Any]] = None,
    secrets: Optional[dict[str, Optional[str]]] = None,
    preview: bool = False,
    call_results: Optional[Callable[[str, dict[str, Any]], Optional[dict[str, Any]]]] = None,
    stack_outputs: Optional[dict[str, dict[str, Any]]] = None,
    program: Optional[Callable[[], Any]] = None,
    raise_errors: bool = True,
    deploying: bool = False,
    organization: Optional[str] = None,
) -> Recording:
    """Run `__main__.py` (or `program`) for `stack` under mocks and return what it registered.

    `overrides` are plain config values (None removes a key); `secrets` replace the
    placeholder secrets (None removes one). Keys are given without the project prefix.
    Exceptions from the program (such as a ConfigError) propagate after the run settles,
    or, with `raise_errors=False`, are kept in `Recording.error` beside what was registered.
    """
    config = dict(stack_config(stack))
    for key, value in (overrides or {}).items():
        full = f"{PROJECT}:{key}"
        if value is None:
            config.pop(full, None)
        else:
            config[full] = value if isinstance(value, str) else json.dumps(value)
    secret_values: dict[str, Optional[str]] = {**placeholder_secrets(stack), **(secrets or {})}
    secret_keys = []
    for key, value in secret_values.items():
        if value is not None:
            config[f"{PROJECT}:{key}"] = value
            secret_keys.append(f"{PROJECT}:{key}")

    mocks = ProgramMocks(call_results, stack_outputs)
    monitor = _start_mocks(mocks, PROJECT, stack, preview, config, secret_keys, organization)

    cwd = os.getcwd()
    os.chdir(ROOT)
    if not deploying:  # `deploying` stands for a real `pulumi up`; otherwise example values warn
        os.environ[OFFLINE_ENV] = "1"
    try:
        def main() -> None:
            if program is not None:
                program()
            else:
                runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

        _sync_await(run_pulumi_func(main))
    except Exception as error:  # handed to the caller below
        if raise_errors:
            raise
        return Recording(resources=monitor.recorded, calls=mocks.calls, error=error)
    finally:
        os.chdir(cwd)
        os.environ.pop(OFFLINE_ENV, None)

    return _exported(Recording(resources=monitor.recorded, calls=mocks.calls))


def _start_mocks(
    mocks: ProgramMocks,
    project: str,
    stack: str,
    preview: bool,
    config: dict[str, str],
    secret_keys: list[str],
    organization: Optional[str] = None,
) -> RecordingMonitor:
    """A fresh Pulumi runtime for one program run: its options, config and recording mocks."""
    monitor = RecordingMonitor(mocks)
    reset_options(project=project, stack=stack, preview=preview)
    set_all_config(config, secret_keys)
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=monitor,
                             organization=organization)
    return monitor


def _exported(recording: Recording) -> Recording:
    """The stack's outputs, and which of them are secret, added to what was registered."""
    root = pulumi.runtime.get_root_resource()
    for name, value in (getattr(root, "outputs", None) or {}).items():
        output = pulumi.Output.from_input(value)
        recording.outputs[name] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            recording.secret_outputs.add(name)
    return recording


def run_example(
    directory: Path,
    stack: str,
    config: dict[str, str],
    stack_outputs: dict[str, dict[str, Any]],
    stack_secret_outputs: dict[str, set[str]],
    preview: bool = False,
) -> Recording:
    """Run another Pulumi program (its own project, such as examples/consumer) under the same
    mocks, its StackReferences answering with `stack_outputs`, secret where `stack_secret_outputs` says."""
    project = str(yaml.safe_load((directory / "Pulumi.yaml").read_text())["name"])
    mocks = ProgramMocks(stack_outputs=stack_outputs, stack_secret_outputs=stack_secret_outputs)
    monitor = _start_mocks(mocks, project, stack, preview, {f"{project}:{k}": v for k, v in config.items()}, [])

    def main() -> None:
        runpy.run_path(str(directory / "__main__.py"), run_name="__main__")

    _sync_await(run_pulumi_func(main))
    return _exported(Recording(resources=monitor.recorded, calls=mocks.calls))
