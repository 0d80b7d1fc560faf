"""The bundler image, by digest: built and pushed here, or promoted from the stack that built it.

Answers risks 1 in docs/risks.md (the first GHCR push: the program pushes with its own token, and the
`org.opencontainers.image.source` label and index annotation on that first push link the
package to its repository), 4 (multi-arch failures: one build per platform, so a stack can
drop arm64 and a failing platform is named), 5 (image size: `imageDockerfile=traced` builds
image/Dockerfile, whose /app holds only the files the processes load), 7 (Actions quota: `imageBuildOnPreview` is off,
and an unchanged context, commit, platform list and cache version is no diff, so no build),
8 (cache corruption: the registry cache ref carries `imageCacheVersion`, so bumping one number
starts a clean cache) and the "prod runs what dev tested" rule: promote mode deploys the exact
digest another stack exported.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker_build as docker_build

from components.names import PROJECT
from components.settings.image import ImageSettings
from components.settings.values import repository_of

DIGEST_MARK = "@sha256:"
# The upstream commit whose image the runtime test (tests/e2e) builds and runs end to end, and
# the one Pulumi.dev.yaml builds (tests/test_image.py keeps the two equal). Earlier commits do
# not start: before 418d89d the image lacks admin-server.js, admin/ and docs/; before 46a6312
# it keeps lib/**/*.d.ts, which knex loads as migrations. Move both together, after a green run.
VERIFIED_UPSTREAM_COMMIT = "4c3bddc7fa0bf054057f304e9ac16903ae03a275"
GIT_CONTEXT_PREFIXES = ("https://", "git@", "git://")
# imageDockerfile=traced (seed risk 5, image size): the upstream builder stage, then only the files
# the processes load (docs/image.md). Passed inline: with a Git context, buildx reads a relative
# Dockerfile path inside the repository, and an absolute one would differ on every machine.
IMAGE_DIR = Path(__file__).resolve().parents[1] / "image"
TRACED_DOCKERFILE = IMAGE_DIR / "Dockerfile"
TRACER_CONTEXT = IMAGE_DIR / "tracer"
TRACER_CONTEXT_NAME = "tracer"


@dataclass(frozen=True)
class BundlerImageArgs:
    image: ImageSettings
    """Where the image comes from and how it is built or promoted."""


def platform_suffix(platform: str) -> str:
    """`linux/amd64` -> `amd64`, `linux/arm/v7` -> `armv7`: the tag and resource-name suffix."""
    return platform.split("/", 1)[1].replace("/", "")


def build_context(image: ImageSettings) -> str:
    """A local path as is; a Git URL pinned to the validated commit (buildx `<url>#<ref>`)."""
    if image.context.startswith(GIT_CONTEXT_PREFIXES):
        return f"{image.context}#{image.git_ref}"
    return image.context


def build_files(image: ImageSettings) -> tuple[Optional[docker_build.DockerfileArgs],
                                                 Optional[dict[str, docker_build.ContextArgs]]]:
    """The Dockerfile and named contexts of the build: none for the context's own Dockerfile."""
    if image.dockerfile == "upstream":
        return None, None
    # Relative to the project directory, where Pulumi runs the program and its providers: the
    # same input on every machine, so a checkout elsewhere is no diff and no rebuild.
    tracer = os.path.relpath(TRACER_CONTEXT, Path.cwd())
    return (docker_build.DockerfileArgs(inline=TRACED_DOCKERFILE.read_text()),
            {TRACER_CONTEXT_NAME: docker_build.ContextArgs(location=tracer)})


def index_tags(image: ImageSettings) -> dict[str, str]:
    """The multi-arch tags, by kind. A local context has no pinned commit, so no revision tag."""
    tags = {"version": image.version}
    if image.git_ref:
        tags["revision"] = image.git_ref[:12]
    return tags


def platform_tags(image: ImageSettings, platform: str) -> list[str]:
    # Suffixed, so a per-platform push never overwrites the multi-arch tag of the same name.
    return [f"{image.repository}:{tag}-{platform_suffix(platform)}" for tag in index_tags(image).values()]


def cache_ref(image: ImageSettings, platform: str) -> str:
    # One cache per platform (a multi-platform cache export keeps only one), and per cache
    # generation: bumping imageCacheVersion abandons a corrupted cache without touching images.
    return f"{image.repository}:buildcache-v{image.cache_version}-{platform_suffix(platform)}"


def oci_metadata(image: ImageSettings) -> dict[str, str]:
    """OCI keys GHCR shows on the package page; `source` is the one that links the repository.

    `source` is `https://github.com/<owner>/<name>` of `ghcr.io/<owner>/<name>`, not the upstream
    repository: GHCR links a package only to a repository of the same owner, so the upstream URL
    would be ignored for any owner but its author. No `created`: a timestamp would change the
    digest of every rebuild of the same commit.
    """
    metadata = {
        "org.opencontainers.image.source": image.source_url,
        "org.opencontainers.image.version": image.version,
        "org.opencontainers.image.title": image.package,
        "org.opencontainers.image.description": (
            "AR.IO x402 bundler: upload API with BullMQ workers and admin dashboard"
        ),
        "org.opencontainers.image.licenses": "AGPL-3.0",
    }
    if image.git_ref:
        metadata["org.opencontainers.image.revision"] = image.git_ref
    return metadata


def registry_export(image: ImageSettings) -> str:
    """The push, as one buildx `--output` entry carrying index and manifest annotations.

    The provider's typed export annotations are written as `annotation.<key>`, which BuildKit
    puts on the manifest only, and its `Index` (imagetools create) takes no annotations at all.
    The index level is reachable only through BuildKit's `annotation-index.<key>` attribute, so
    the push is a raw `type=registry` export (CSV-quoted, as buildx parses it).
    """
    fields = ["type=registry", "oci-mediatypes=true"]
    for key, value in sorted(oci_metadata(image).items()):
        fields += [f"annotation-index.{key}={value}", f"annotation-manifest.{key}={value}"]
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue()


def require_digest(ref: Optional[str], source: str, repository: str = "") -> str:
    """`repository@sha256:...`, dropping a tag the provider keeps in front of the digest."""
    if not ref or DIGEST_MARK not in ref:
        raise pulumi.RunError(
            f"{source} gave image reference {ref!r}, which is not pinned by digest (expected repository@sha256:...). "
            f"Deploy only digests: run `pulumi up` on the building stack first, or set {PROJECT}:imageRef."
        )
    name, digest = repository_of(ref), ref.split("@", 1)[1]
    if repository and name != repository:
        # The pull Secret and the GHCR visibility check are for imageRepository: an image from
        # elsewhere would deploy unchecked, or not pull at all.
        raise pulumi.RunError(
            f"{source} gave {name}@{digest}, which is not in {PROJECT}:imageRepository ({repository}). "
            f"Promote an image of {repository}, or set {PROJECT}:imageRepository {name}."
        )
    return f"{name}@{digest}"


class BundlerImage(pulumi.ComponentResource):
    """`ref` is the full reference by digest that the Job and every Deployment run."""

    ref: pulumi.Output[str]
    promoted_from: Optional[str]
    """Where a promoted digest came from (None when built here): named when it cannot be pulled."""

    def __init__(self, name: str, args: BundlerImageArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:BundlerImage", name, None, opts)
        image = args.image
        self.promoted_from = None
        if image.mode == "build":
            self.ref = self._build(name, image)
        elif image.promote_ref:
            self.promoted_from = f"{PROJECT}:imageRef"
            ref = require_digest(image.promote_ref, self.promoted_from, image.repository)
            self.ref = pulumi.Output.from_input(ref)
        else:
            source = self.promoted_from = f"stack {image.promote_stack} output imageRef"
            built_by = pulumi.StackReference(str(image.promote_stack), opts=pulumi.ResourceOptions(parent=self))
            self.ref = built_by.get_output("imageRef").apply(lambda ref: require_digest(ref, source, image.repository))
        self.register_outputs({"ref": self.ref})

    def _build(self, name: str, image: ImageSettings) -> pulumi.Output[str]:
        # A local registry takes anonymous pushes: no credentials to hand the builder.
        registry = None if image.local_registry else docker_build.RegistryArgs(
            address=image.registry, username=image.registry_username, password=image.push_token
        )
        # The local stack's builder is set up to reach its plain-HTTP registry (scripts/pulumi-up.sh).
        builder = docker_build.BuilderConfigArgs(name=image.builder) if image.builder else None
        # Replacing or deleting an Image or Index deletes its pushed tags and manifests; a
        # digest that a cluster runs (or may roll back to) must outlive the resource.
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        dockerfile, named = build_files(image)
        builds = [
            docker_build.Image(
                f"{name}-{platform_suffix(platform)}",
                context=docker_build.BuildContextArgs(location=build_context(image), named=named),
                dockerfile=dockerfile,
                platforms=[docker_build.Platform(platform)],
                # The push is the registry export below: `push=True` would add a second,
                # annotation-less registry export of the same tags.
                push=False,
                exports=[docker_build.ExportArgs(raw=registry_export(image))],
                # Always an OCI index, even for one platform and with attestations off, so the
                # index annotations have an index to go on (BuildKit refuses them otherwise).
                build_args={"BUILDKIT_MULTI_PLATFORM": "1"},
                # Pulumi previews build (never push) by default; off, pull-request previews
                # spend no build minutes.
                build_on_preview=image.build_on_preview,
                tags=platform_tags(image, platform),
                # Labels live in the image config, which GHCR reads for a single manifest.
                labels=oci_metadata(image),
                cache_from=[
                    docker_build.CacheFromArgs(
                        registry=docker_build.CacheFromRegistryArgs(ref=cache_ref(image, platform))
                    )
                ],
                cache_to=[
                    docker_build.CacheToArgs(
                        registry=docker_build.CacheToRegistryArgs(
                            ref=cache_ref(image, platform),
                            mode=docker_build.CacheMode.MAX,
                            image_manifest=True,
                            oci_media_types=True,
                            # The image is pushed before the cache is exported: a cache failure
                            # must not fail the deploy (bump imageCacheVersion if it persists).
                            ignore_error=True,
                        )
                    )
                ],
                registries=[registry] if registry else None,
                builder=builder,
                opts=keep,
            )
            for platform in image.platforms
        ]
        # The provider's Index has only tag/sources/push/registry: the joined multi-arch index
        # carries no annotations of its own. The package is created, and linked, by the
        # per-platform pushes above, which come first and carry label and index annotation.
        indexes = [
            docker_build.Index(
                f"{name}-index-{kind}",
                tag=f"{image.repository}:{tag}",
                sources=[b.ref for b in builds],
                push=True,
                registry=registry,
                opts=keep,
            )
            for kind, tag in index_tags(image).items()
        ]
        # Every multi-arch tag exists before anything runs the digest.
        return pulumi.Output.all(*[i.ref for i in indexes]).apply(
            lambda refs: require_digest(refs[0], "the image index", image.repository)
        )
