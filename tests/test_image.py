"""The bundler image: built per platform and pushed here, or promoted by digest from dev."""

from __future__ import annotations

import csv
import re
from typing import Any

import pytest

from components.image import TRACED_DOCKERFILE, VERIFIED_UPSTREAM_COMMIT
from components.settings import ConfigError
from tests.helpers import DEPLOYMENT, JOB, PROMOTED, container, recording, render
from tools.harness import Recording, Registered, run_program
from tools.render import promote_outputs

IMAGE, INDEX, STACK_REF = "docker-build:index:Image", "docker-build:index:Index", "pulumi:pulumi:StackReference"
REPO = "ghcr.io/example-org/ar-io-x402-bundler"
SOURCE = "https://github.com/example-org/ar-io-x402-bundler"
COMMIT = VERIFIED_UPSTREAM_COMMIT
BOTH = {"imagePlatforms": ["linux/amd64", "linux/arm64"]}
AMD64 = {"imagePlatforms": ["linux/amd64"]}
BY_DIGEST = re.compile(rf"^{re.escape(REPO)}@sha256:[0-9a-f]{{64}}$")


@pytest.fixture(scope="module")
def multi_arch() -> Recording:
    return render("dev", overrides=BOTH)


def export_fields(image: Registered) -> dict[str, str]:
    """The image's one export, parsed as buildx parses an `--output` entry."""
    (export,) = image.inputs["exports"]
    (row,) = csv.reader([export["raw"]])
    return dict(field.split("=", 1) for field in row)


def platforms_of(rec: Recording) -> list[str]:
    return sorted(p for i in rec.of_type(IMAGE) for p in i.inputs["platforms"])


@pytest.mark.parametrize(
    ("platforms", "names"),
    [
        (["linux/amd64", "linux/arm64"], ["image-amd64", "image-arm64"]),
        (["linux/amd64"], ["image-amd64"]),
        (["linux/arm64"], ["image-arm64"]),
    ],
)
def test_one_image_per_configured_platform_so_dropping_arm64_drops_its_build(
    platforms: list[str], names: list[str]
) -> None:
    rec = render("dev", overrides={"imagePlatforms": platforms})
    assert sorted(i.name for i in rec.of_type(IMAGE)) == names
    assert platforms_of(rec) == sorted(platforms)
    assert all(len(i.inputs["platforms"]) == 1 for i in rec.of_type(IMAGE))


def test_each_platform_image_is_pushed_once_with_the_push_token_and_kept_on_delete(multi_arch: Recording) -> None:
    for image in multi_arch.of_type(IMAGE):
        fields = export_fields(image)
        # The registry export is the push; `push` itself would add a second, unannotated one.
        assert fields["type"] == "registry" and fields.get("push", "true") == "true"
        assert image.inputs["push"] is False
        assert image.retain_on_delete is True
        (registry,) = image.redacted_inputs["registries"]
        assert registry["address"] == "ghcr.io" and registry["username"] == "example-bot"
        assert registry["password"] == "[secret]"


def test_build_context_is_the_upstream_repository_at_the_verified_commit(multi_arch: Recording) -> None:
    # Older commits do not start (no admin-server.js before 418d89d; .d.ts files loaded as
    # migrations before 46a6312); the runtime test builds VERIFIED_UPSTREAM_COMMIT.
    for image in multi_arch.of_type(IMAGE):
        location = image.inputs["context"]["location"]
        assert location == f"https://github.com/vilenarios/ar-io-x402-bundler.git#{COMMIT}", (
            "Pulumi.dev.yaml x402-bundler:imageGitRef and components/image.py VERIFIED_UPSTREAM_COMMIT differ: "
            "build the verified commit, or verify the new one with the runtime test and move the constant"
        )


def test_a_local_checkout_is_built_as_is_and_gets_no_revision_tag() -> None:
    rec = render("dev", overrides={**AMD64, "imageContext": "../ar-io-x402-bundler", "imageGitRef": None})
    (image,) = rec.of_type(IMAGE)
    assert image.inputs["context"]["location"] == "../ar-io-x402-bundler"
    assert image.inputs["tags"] == [f"{REPO}:1.0.0-amd64"]
    assert [i.inputs["tag"] for i in rec.of_type(INDEX)] == [f"{REPO}:1.0.0"]
    assert "org.opencontainers.image.revision" not in image.inputs["labels"]


def test_source_repository_is_named_by_label_and_by_index_and_manifest_annotations(multi_arch: Recording) -> None:
    for image in multi_arch.of_type(IMAGE):
        fields = export_fields(image)
        assert image.inputs["labels"]["org.opencontainers.image.source"] == SOURCE
        assert fields["annotation-index.org.opencontainers.image.source"] == SOURCE
        assert fields["annotation-manifest.org.opencontainers.image.source"] == SOURCE
        assert fields["annotation-index.org.opencontainers.image.revision"] == COMMIT
        assert fields["annotation-index.org.opencontainers.image.version"] == "1.0.0"
        # One platform still pushes an index, so BuildKit has an index to annotate.
        assert image.inputs["buildArgs"] == {"BUILDKIT_MULTI_PLATFORM": "1"}
        assert "org.opencontainers.image.created" not in image.inputs["labels"]


@pytest.mark.parametrize(("setting", "expected"), [(None, False), (True, True), (False, False)])
def test_previews_build_only_when_the_stack_asks(setting: Any, expected: bool) -> None:
    rec = render("dev", overrides={**AMD64, "imageBuildOnPreview": setting})
    assert [i.inputs["buildOnPreview"] for i in rec.of_type(IMAGE)] == [expected]


def test_platform_tags_never_clobber_the_multi_arch_tags(multi_arch: Recording) -> None:
    platform_tags = sorted(t for i in multi_arch.of_type(IMAGE) for t in i.inputs["tags"])
    assert platform_tags == sorted(
        f"{REPO}:{tag}-{arch}" for tag in ("1.0.0", COMMIT[:12]) for arch in ("amd64", "arm64")
    )
    index_tags = {i.inputs["tag"] for i in multi_arch.of_type(INDEX)}
    assert index_tags == {f"{REPO}:1.0.0", f"{REPO}:{COMMIT[:12]}"}
    assert not index_tags & set(platform_tags)


def test_indexes_join_every_platform_image_and_are_kept_on_delete(multi_arch: Recording) -> None:
    images = multi_arch.of_type(IMAGE)
    for index in multi_arch.of_type(INDEX):
        assert len(index.inputs["sources"]) == len(images) == 2
        assert all("@sha256:" in s for s in index.inputs["sources"])
        assert all(multi_arch.depends_on(index, image) for image in images)
        assert index.inputs["push"] is True
        assert index.retain_on_delete is True
        assert index.redacted_inputs["registry"]["password"] == "[secret]"


def test_cache_is_per_platform_mode_max_in_the_registry(multi_arch: Recording) -> None:
    refs = []
    for image in multi_arch.of_type(IMAGE):
        (cache_to,) = image.inputs["cacheTo"]
        (cache_from,) = image.inputs["cacheFrom"]
        assert cache_to["registry"]["mode"] == "max"
        assert cache_to["registry"]["imageManifest"] is True and cache_to["registry"]["ociMediaTypes"] is True
        assert cache_from["registry"]["ref"] == cache_to["registry"]["ref"]
        refs.append(cache_to["registry"]["ref"])
    assert sorted(refs) == [f"{REPO}:buildcache-v1-amd64", f"{REPO}:buildcache-v1-arm64"]


def test_bumping_the_cache_version_moves_every_cache_ref() -> None:
    rec = render("dev", overrides={**BOTH, "imageCacheVersion": 7})
    refs = sorted(
        ref
        for i in rec.of_type(IMAGE)
        for c in ("cacheTo", "cacheFrom")
        for ref in [i.inputs[c][0]["registry"]["ref"]]
    )
    assert refs == sorted(2 * [f"{REPO}:buildcache-v7-amd64", f"{REPO}:buildcache-v7-arm64"])


def test_build_mode_exports_the_index_digest_without_its_tag(multi_arch: Recording) -> None:
    # The provider's Index answers `<tag>@<digest>` (so does the mock); workloads get `<repository>@<digest>`.
    assert BY_DIGEST.match(multi_arch.outputs["imageRef"])


def workload_images(rec: Recording) -> list[str]:
    return [
        container(w)["image"]
        for w in [*rec.of_type(DEPLOYMENT), *[j for j in rec.of_type(JOB) if j.name == "migration-job"]]
    ]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_every_workload_runs_the_one_image_by_digest(stack: str) -> None:
    rec = render(stack)
    images = workload_images(rec)
    assert len(images) == 4  # api, workers, admin, migration
    assert set(images) == {rec.outputs["imageRef"]}
    assert all(BY_DIGEST.match(i) for i in images)


def test_promote_mode_builds_nothing_and_deploys_exactly_the_digest_dev_exported() -> None:
    rec = render("prod")
    assert rec.of_type(IMAGE) == [] and rec.of_type(INDEX) == []
    assert set(workload_images(rec)) == {PROMOTED}
    assert rec.outputs["imageRef"] == PROMOTED
    (ref,) = rec.of_type(STACK_REF)
    assert ref.inputs["name"] == "example-org/x402-bundler/dev"


def test_promote_mode_takes_an_explicit_digest_instead_of_a_stack() -> None:
    other = f"{REPO}@sha256:" + "c" * 64
    rec = render("prod", overrides={"imagePromoteStack": None, "imageRef": other})
    assert set(workload_images(rec)) == {other}
    assert rec.of_type(STACK_REF) == [] and rec.of_type(IMAGE) == []


def test_a_promoted_tag_in_front_of_the_digest_is_dropped() -> None:
    digest = "sha256:" + "d" * 64
    rec = render("prod", stack_outputs={"example-org/x402-bundler/dev": {"imageRef": f"{REPO}:1.0.0@{digest}"}})
    assert set(workload_images(rec)) == {f"{REPO}@{digest}"}


@pytest.mark.parametrize(
    ("exported", "message"),
    [
        (f"{REPO}:1.0.0", "not pinned by digest"),
        (None, "not pinned by digest"),
        ("ghcr.io/someone-else/bundler@sha256:" + "e" * 64, "not in x402-bundler:imageRepository"),
    ],
    ids=["tag", "missing", "other-repository"],
)
def test_promoting_anything_but_a_digest_of_our_repository_fails(exported: Any, message: str) -> None:
    outputs = {} if exported is None else {"imageRef": exported}
    rec = render("prod", stack_outputs={"example-org/x402-bundler/dev": outputs}, raise_errors=False)
    assert rec.error is not None and message in str(rec.error)


def test_promote_mode_refuses_a_mutable_tag_in_config() -> None:
    with pytest.raises(ConfigError, match="imageRef"):
        run_program("prod", overrides={"imagePromoteStack": None, "imageRef": f"{REPO}:latest"})


def test_local_stack_pushes_to_the_kind_registry_with_its_builder_and_touches_no_github() -> None:
    rec = recording("local")
    (build,) = rec.of_type("docker-build:index:Image")
    assert build.get("builder") == {"name": "x402-bundler-local"}
    assert not build.get("registries"), "the local registry takes anonymous pushes: no credentials"
    assert all(t.startswith("localhost:5001/ar-io-x402-bundler:") for t in build.get("tags"))
    assert not [r for r in rec.resources if r.type.startswith("github:")]
    assert not [token for token, _ in rec.calls if token.startswith("github:")]
    assert rec.outputs["imagePackageVisibility"] == "local"
    assert rec.outputs["secretNames"]["imagePull"] is None
    workloads = [*rec.of_type("kubernetes:apps/v1:Deployment"), *rec.of_type("kubernetes:batch/v1:Job")]
    bundler = [c["image"] for w in workloads for c in w.get("spec.template.spec.containers")
               if "x402-bundler" in c["image"]]
    assert bundler and all(i.startswith("localhost:5001/ar-io-x402-bundler@sha256:") for i in bundler)
    # The sandbox runs the commit the runtime test verified, as dev does.
    assert build.get("context.location").endswith(f"#{VERIFIED_UPSTREAM_COMMIT}")


def test_a_promote_stack_from_another_org_is_refused_on_a_self_managed_backend() -> None:
    # On file:// or s3:// backends every stack's organization is "organization" (Pulumi's own).
    with pytest.raises(ConfigError) as info:
        run_program("prod", organization="organization")
    (problem,) = [p for p in info.value.problems if p.key == "imagePromoteStack"]
    assert "'example-org/x402-bundler/dev' cannot resolve on this backend" in problem.message
    assert problem.fix == "pulumi config set x402-bundler:imagePromoteStack organization/x402-bundler/dev"


def test_a_promote_stack_resolves_on_pulumi_cloud_and_by_its_own_org_on_a_self_managed_backend() -> None:
    (outputs,) = promote_outputs("prod").values()
    cloud = run_program("prod", organization="example-org", stack_outputs=promote_outputs("prod"))
    self_managed = run_program("prod", organization="organization",
                               overrides={"imagePromoteStack": "organization/x402-bundler/dev"},
                               stack_outputs={"organization/x402-bundler/dev": outputs})
    for rec, source in ((cloud, "example-org/x402-bundler/dev"), (self_managed, "organization/x402-bundler/dev")):
        refs = [r for r in rec.resources if r.type == "pulumi:pulumi:StackReference"]
        assert [r.inputs.get("name") for r in refs] == [source]


@pytest.mark.parametrize("name", ["x402-bundler/dev", "dev", "org//dev"])
def test_a_promote_stack_must_be_fully_qualified(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_program("prod", overrides={"imagePromoteStack": name})
    (problem,) = [p for p in info.value.problems if p.key == "imagePromoteStack"]
    assert "is not a fully qualified stack name <org>/<project>/<stack>" in problem.message


# ---------------------------------------------------------------- which Dockerfile builds it (seed risk 5)


def test_the_traced_dockerfile_is_passed_inline_with_the_tracer_as_a_named_context() -> None:
    """Inline: with a Git context buildx would read a relative Dockerfile path inside the upstream
    repository; the named context is relative, so another checkout is no diff and no rebuild."""
    images = render("dev", overrides=BOTH).of_type(IMAGE)
    assert len(images) == 2
    for image in images:
        assert image.inputs["dockerfile"] == {"inline": TRACED_DOCKERFILE.read_text()}
        assert image.inputs["context"]["named"] == {"tracer": {"location": "image/tracer"}}
        assert image.inputs["context"]["location"].endswith(f".git#{COMMIT}")


def test_imagedockerfile_upstream_builds_the_contexts_own_dockerfile_unchanged() -> None:
    (image,) = render("dev", overrides={**AMD64, "imageDockerfile": "upstream"}).of_type(IMAGE)
    assert "dockerfile" not in image.inputs and "named" not in image.inputs["context"]


def test_changing_the_dockerfile_is_a_new_digest() -> None:
    traced = render("dev", overrides=AMD64).outputs["imageRef"]
    upstream = render("dev", overrides={**AMD64, "imageDockerfile": "upstream"}).outputs["imageRef"]
    assert BY_DIGEST.match(traced) and BY_DIGEST.match(upstream) and traced != upstream
