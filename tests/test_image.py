"""Image delivery: per-platform builds pushed here, or a promoted digest; GHCR checked."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from components.config import ConfigError
from tests.test_workloads import DEPLOYMENT, JOB, PROMOTED, container, render
from tools.harness import GITHUB_REST, Recording, run_program

IMAGE, INDEX = "docker-build:index:Image", "docker-build:index:Index"
REPO = "ghcr.io/example-org/ar-io-x402-bundler"


@pytest.fixture(scope="module")
def dev() -> Recording:
    return render("dev")


def test_build_mode_pushes_one_image_per_platform_and_keeps_it(dev: Recording) -> None:
    both = dev.of_type(IMAGE)
    assert sorted(p for i in both for p in i.inputs["platforms"]) == ["linux/amd64", "linux/arm64"]
    amd64_only = render("dev", overrides={"imagePlatforms": ["linux/amd64"]}).of_type(IMAGE)
    assert [i.inputs["platforms"] for i in amd64_only] == [["linux/amd64"]]
    for image in both:
        assert image.inputs["push"] is True
        assert image.retain_on_delete is True
        assert image.inputs["buildOnPreview"] is False
        assert image.inputs["context"]["location"] == "https://github.com/vilenarios/ar-io-x402-bundler.git#fa651d707a4012f8e4a045a3eba5a59a47aa89c1"
        assert image.inputs["labels"]["org.opencontainers.image.source"] == "https://github.com/example-org/ar-io-x402-bundler"
        assert all(t.startswith(f"{REPO}:") for t in image.inputs["tags"])
        assert image.redacted_inputs["registries"][0]["password"] == "[secret]"


def test_index_joins_the_platform_images_under_the_version_and_revision_tags(dev: Recording) -> None:
    indexes = dev.of_type(INDEX)
    assert sorted(i.inputs["tag"] for i in indexes) == [f"{REPO}:1.0.0", f"{REPO}:fa651d707a40"]
    image_urns = {i.urn for i in dev.of_type(IMAGE)}
    for index in indexes:
        assert image_urns <= set(index.dependencies)
        assert index.retain_on_delete is True


def test_cache_is_per_platform_mode_max_and_versioned(dev: Recording) -> None:
    refs = set()
    for image in dev.of_type(IMAGE):
        cache_to = image.inputs["cacheTo"][0]["registry"]
        assert cache_to["mode"] == "max"
        assert image.inputs["cacheFrom"][0]["registry"]["ref"] == cache_to["ref"]
        refs.add(cache_to["ref"])
    assert refs == {f"{REPO}:buildcache-v1-amd64", f"{REPO}:buildcache-v1-arm64"}
    bumped = render("dev", overrides={"imageCacheVersion": 2}).of_type(IMAGE)
    assert {i.inputs["cacheTo"][0]["registry"]["ref"] for i in bumped} == {f"{REPO}:buildcache-v2-amd64", f"{REPO}:buildcache-v2-arm64"}


def workload_images(rec: Recording) -> set[str]:
    return {container(w)["image"] for w in [*rec.of_type(DEPLOYMENT), *[j for j in rec.of_type(JOB) if j.name == "migration-job"]]}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_workload_runs_the_image_by_digest(stack: str) -> None:
    images = workload_images(render(stack))
    assert len(images) == 1
    (ref,) = images
    assert ref.startswith(f"{REPO}@sha256:") and len(ref.split("@sha256:")[1]) == 64


def test_promote_mode_deploys_exactly_the_digest_dev_exported() -> None:
    rec = render("prod")
    assert rec.of_type(IMAGE) == [] and rec.of_type(INDEX) == []
    assert workload_images(rec) == {PROMOTED}
    assert rec.outputs["imageRef"] == PROMOTED
    (ref,) = rec.of_type("pulumi:pulumi:StackReference")
    assert ref.inputs["name"] == "example-org/x402-bundler/dev"


def test_promote_mode_takes_an_explicit_digest() -> None:
    other = f"{REPO}@sha256:" + "c" * 64
    rec = render("prod", overrides={"imagePromoteStack": None, "imageRef": other})
    assert workload_images(rec) == {other}
    assert rec.of_type("pulumi:pulumi:StackReference") == []


def test_promoting_a_stack_that_exported_a_tag_fails() -> None:
    rec = render("prod", stack_outputs={"example-org/x402-bundler/dev": {"imageRef": f"{REPO}:1.0.0"}}, raise_errors=False)
    assert rec.error is not None and "not pinned by digest" in str(rec.error)


def test_promote_mode_refuses_a_mutable_tag_in_config() -> None:
    with pytest.raises(ConfigError, match="imageRef"):
        run_program("prod", overrides={"imagePromoteStack": None, "imageRef": f"{REPO}:latest"})


def rest(visibility: Optional[str]) -> Any:
    def answer(token: str, args: dict[str, Any]) -> Optional[dict[str, Any]]:
        if token != GITHUB_REST:
            return None
        if visibility is None:
            return {"code": 404, "body": json.dumps({"message": "Package not found."})}
        return {"code": 200, "body": json.dumps({"name": "ar-io-x402-bundler", "visibility": visibility})}

    return answer


def test_public_package_declared_public_passes() -> None:
    rec = render("dev", overrides={"ghcrVisibility": "public"}, call_results=rest("public"))
    assert rec.outputs["imagePackageVisibility"] == "public"
    assert rec.outputs["imagePackageUrl"] == "https://github.com/orgs/example-org/packages/container/package/ar-io-x402-bundler"
    (call,) = [c for c in rec.calls if c[0] == GITHUB_REST]
    assert call[1]["endpoint"] == "/orgs/example-org/packages/container/ar-io-x402-bundler"


def test_private_package_declared_public_fails_with_the_settings_url() -> None:
    rec = render("dev", overrides={"ghcrVisibility": "public"}, call_results=rest("private"), raise_errors=False)
    assert rec.error is not None
    assert "https://github.com/orgs/example-org/packages/container/ar-io-x402-bundler/settings" in str(rec.error)


def test_missing_package_is_reported_not_fatal() -> None:
    rec = render("dev", overrides={"ghcrVisibility": "public"}, call_results=rest(None))
    assert rec.error is None
    assert rec.outputs["imagePackageVisibility"] == "not-found"


def test_private_package_declared_private_passes_and_user_owners_use_the_users_endpoint() -> None:
    rec = render("dev", overrides={"ghcrOwnerType": "user"}, call_results=rest("private"))
    assert rec.outputs["imagePackageVisibility"] == "private"
    (call,) = [c for c in rec.calls if c[0] == GITHUB_REST]
    assert call[1]["endpoint"].startswith("/users/example-org/")
