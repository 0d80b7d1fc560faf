"""prod looks the promoted digest up in the registry (pulumi-docker's getRegistryImage) before
anything runs it: the look-up the mock engine receives, where it stands in the graph, and how a
digest the registry does not serve fails."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from tests.helpers import DEPLOYMENT, JOB, PROMOTED, render
from tools.harness import REGISTRY_IMAGE, CallFailed, Recording
from tools.render import PLACEHOLDER_DIGEST

REPO = "ghcr.io/example-org/ar-io-x402-bundler"
SOURCE_STACK = "example-org/x402-bundler/dev"
CHECK, PROVIDER = "x402-bundler:index:PromotedDigest", "pulumi:providers:docker"
OTHER_DIGEST = "sha256:" + "b" * 64
EXPLICIT = f"{REPO}@sha256:" + "c" * 64


def lookups(rec: Recording) -> list[dict[str, Any]]:
    return [args for token, args in rec.calls if token == REGISTRY_IMAGE]


def answering(digest: Optional[str] = None, missing: bool = False) -> Any:
    """The registry: a fixed digest for every look-up, or the provider's error for a 404."""

    def answer(token: str, args: dict[str, Any]) -> Optional[dict[str, Any]]:
        if token != REGISTRY_IMAGE:
            return None
        if missing:
            # What the provider's data source returns when the registry answers 404.
            raise CallFailed(
                "Got error when attempting to fetch image version example-org/ar-io-x402-bundler:"
                f"{args['name'].partition('@')[2]} from registry: got bad response from registry: 404 Not Found"
            )
        return {"id": digest, "name": args["name"], "sha256Digest": digest}

    return answer


def provider_parse(image: str) -> tuple[str, str, str]:
    """(registry, repository, reference) as pulumi-docker's `parseImageOptions` splits a name
    (kreuzwerker/terraform-provider-docker internal/provider/resource_docker_image_funcs.go)."""
    first_slash = image.find("/")
    registry = ""
    if image.count("/") > 1 or (first_slash != -1 and (any(c in image[:first_slash] for c in ".:")
                                                       or image[:first_slash] == "localhost")):
        registry = image[:first_slash]
    repository, tag = image, ""
    tag_index = image[len(registry):].find(":")
    if tag_index != -1:
        repository, tag = image[:len(registry) + tag_index], image[len(registry) + tag_index + 1:]
        if "@" in tag:
            tag = tag[tag.index("@") + 1:]
    return registry, repository.replace(f"{registry}/", "", 1), tag or "latest"


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_prod_looks_the_promoted_digest_up_by_digest_once(preview: bool) -> None:
    rec = render("prod", preview=preview)
    assert rec.error is None
    (lookup,) = lookups(rec)
    # The provider's HEAD goes to /v2/<repository>/manifests/<reference>: the reference must be the digest.
    assert provider_parse(lookup["name"]) == ("ghcr.io", "example-org/ar-io-x402-bundler", PLACEHOLDER_DIGEST)
    assert provider_parse(PROMOTED) != ("ghcr.io", "example-org/ar-io-x402-bundler", PLACEHOLDER_DIGEST)


def test_a_build_stack_looks_nothing_up_and_has_no_check() -> None:
    rec = render("dev")
    assert lookups(rec) == []
    assert rec.of_type(CHECK) == [] and rec.of_type(PROVIDER) == []


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_the_migration_job_and_every_deployment_wait_for_the_check(preview: bool) -> None:
    rec = render("prod", preview=preview)
    (check,) = rec.of_type(CHECK)
    (stack_ref,) = rec.of_type("pulumi:pulumi:StackReference")
    assert rec.depends_on(check, stack_ref)
    # A dependency on a component reaches the engine as one on each of its resources: here the
    # provider the look-up runs through.
    (provider,) = [r for r in rec.resources if r.parent == check.urn]
    waiting = [*rec.of_type(JOB), *rec.of_type(DEPLOYMENT)]
    bundler = [r for r in waiting if r.name == "migration-job" or r.type == DEPLOYMENT]
    assert len(bundler) == 4
    assert [r.name for r in bundler if not rec.depends_on(r, provider)] == []
    assert rec.depends_on(rec.one("x402-bundler:index:GhcrPackage", "ghcr-package"), provider)


def test_the_registry_is_read_with_the_pull_token_as_a_secret_and_without_a_docker_daemon() -> None:
    rec = render("prod")
    provider = rec.one(PROVIDER, "promoted-digest-registry")
    (check,) = rec.of_type(CHECK)
    assert provider.parent == check.urn
    assert provider.redacted_inputs["registryAuth"] == "[secret]"
    assert "PLACEHOLDER-registry-pull-token" not in json.dumps(provider.redacted_inputs)
    auth = provider.inputs["registryAuth"]
    (entry,) = json.loads(auth) if isinstance(auth, str) else auth
    assert entry == {"address": "ghcr.io", "username": "example-org", "password": "PLACEHOLDER-registry-pull-token"}
    assert provider.inputs["disableDockerDaemonCheck"] in (True, "true")


def test_a_public_package_is_read_anonymously() -> None:
    rec = render("prod", overrides={"ghcrVisibility": "public"}, secrets={"registryPullToken": None})
    assert "registryAuth" not in rec.one(PROVIDER, "promoted-digest-registry").inputs
    assert len(lookups(rec)) == 1


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_a_digest_the_registry_does_not_hold_fails_naming_it_and_its_stack(preview: bool) -> None:
    rec = render("prod", preview=preview, call_results=answering(missing=True), raise_errors=False)
    assert len(lookups(rec)) == 1
    assert rec.error is not None
    message = str(rec.error)
    assert f"The promoted image {PLACEHOLDER_DIGEST} (stack {SOURCE_STACK} output imageRef) was not found" in message
    assert "404 Not Found" in message and "PLACEHOLDER-" not in message
    # Nothing that runs the image was registered.
    assert [r.name for r in [*rec.of_type(JOB), *rec.of_type(DEPLOYMENT)] if r.name != "data-bucket-job"] == []


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_a_registry_answering_another_digest_fails_naming_both(preview: bool) -> None:
    rec = render("prod", preview=preview, call_results=answering(OTHER_DIGEST), raise_errors=False)
    assert rec.error is not None
    message = str(rec.error)
    assert f"The promoted image {PLACEHOLDER_DIGEST} (stack {SOURCE_STACK} output imageRef)" in message
    assert f"answers {OTHER_DIGEST}" in message
    assert rec.of_type(DEPLOYMENT) == []


def test_an_explicit_digest_is_looked_up_too_and_named_by_its_config_key() -> None:
    overrides = {"imagePromoteStack": None, "imageRef": EXPLICIT}
    rec = render("prod", overrides=overrides, call_results=answering(missing=True), raise_errors=False)
    (lookup,) = lookups(rec)
    assert lookup["name"] == f"{REPO}:promoted@sha256:" + "c" * 64
    assert rec.error is not None and "(x402-bundler:imageRef) was not found" in str(rec.error)
    confirmed = render("prod", overrides=overrides)
    assert confirmed.error is None and confirmed.outputs["imageRef"] == EXPLICIT
