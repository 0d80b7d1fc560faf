"""The bundler image, by digest: built and pushed here, or promoted from the stack that built it.

Answers seed risks 1 (the first GHCR push: the program pushes with its own token, and the
`org.opencontainers.image.source` label on that first push links the package to its
repository), 4 (multi-arch failures: one build per platform, so a stack can drop arm64 and a
failing platform is named), 8 (cache corruption: the registry cache ref carries
`imageCacheVersion`, so bumping one number starts a clean cache) and the "prod runs what dev
tested" rule: promote mode deploys the exact digest another stack exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker_build as docker_build

from components.config import ImageSettings, Settings

DIGEST_MARK = "@sha256:"


@dataclass(frozen=True)
class BundlerImageArgs:
    settings: Settings
    """Validated stack settings (`image` section)."""


def platform_suffix(platform: str) -> str:
    return platform.split("/", 1)[1].replace("/", "")


def build_context(image: ImageSettings) -> str:
    """A local path as is; a Git URL pinned to the validated commit (buildx `<url>#<ref>`)."""
    if image.context.startswith(("https://", "git@", "git://")):
        return f"{image.context}#{image.git_ref}"
    return image.context


def revision_tag(image: ImageSettings) -> str:
    return (image.git_ref or image.version)[:12]


def cache_ref(image: ImageSettings, platform: str) -> str:
    # One cache per platform (a multi-platform cache export keeps only one), and per cache
    # generation: bumping imageCacheVersion abandons a corrupted cache without touching images.
    return f"{image.repository}:buildcache-v{image.cache_version}-{platform_suffix(platform)}"


def oci_labels(image: ImageSettings) -> dict[str, str]:
    # No `created`: a timestamp would change the digest on every build of the same source.
    return {
        "org.opencontainers.image.source": image.source_url,
        "org.opencontainers.image.version": image.version,
        "org.opencontainers.image.revision": image.git_ref or image.version,
        "org.opencontainers.image.title": image.package,
        "org.opencontainers.image.licenses": "AGPL-3.0",
    }


def _require_digest(ref: Optional[str], source: str) -> str:
    """`repository@sha256:...`, dropping a tag the provider may keep in front of the digest."""
    if not ref or DIGEST_MARK not in ref:
        raise pulumi.RunError(
            f"{source} gave image reference {ref!r}, which is not pinned by digest (expected repository@sha256:...). "
            "Deploy only digests: run `pulumi up` on the building stack first, or set x402-bundler:imageRef."
        )
    name, digest = ref.split("@", 1)
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{digest}"


class BundlerImage(pulumi.ComponentResource):
    """`ref` is the full reference by digest that the Job and every Deployment run."""

    ref: pulumi.Output[str]

    def __init__(self, name: str, args: BundlerImageArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:BundlerImage", name, None, opts)
        image = args.settings.image
        if image.mode == "promote":
            if image.promote_ref:
                self.ref = pulumi.Output.from_input(_require_digest(image.promote_ref, "x402-bundler:imageRef"))
            else:
                source = pulumi.StackReference(str(image.promote_stack), opts=pulumi.ResourceOptions(parent=self))
                self.ref = source.get_output("imageRef").apply(
                    lambda ref: _require_digest(ref, f"stack {image.promote_stack} output imageRef")
                )
        else:
            self.ref = self._build(name, image)
        self.register_outputs({"ref": self.ref})

    def _build(self, name: str, image: ImageSettings) -> pulumi.Output[str]:
        registry = docker_build.RegistryArgs(
            address=image.registry, username=image.registry_username, password=image.push_token
        )
        # Replacing or deleting an Image would delete its pushed tags; a deployed digest must
        # outlive the resource that built it.
        keep = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        builds = []
        for platform in image.platforms:
            suffix = platform_suffix(platform)
            builds.append(
                docker_build.Image(
                    f"{name}-{suffix}",
                    context=docker_build.BuildContextArgs(location=build_context(image)),
                    platforms=[docker_build.Platform(platform)],
                    push=True,
                    # Pulumi previews build (never push) unless told otherwise: pull requests
                    # then spend no build minutes.
                    build_on_preview=image.build_on_preview,
                    # Per-platform tags, so they never clobber the multi-arch tags of the Index.
                    tags=[f"{image.repository}:{image.version}-{suffix}", f"{image.repository}:{revision_tag(image)}-{suffix}"],
                    # The label GHCR reads to link the package to its repository. The first
                    # push of a new package is one of these single-platform manifests, so the
                    # link is made at creation; the provider's Index (imagetools create)
                    # cannot carry index annotations, so the link cannot rely on them.
                    labels=oci_labels(image),
                    cache_from=[docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache_ref(image, platform)))],
                    cache_to=[
                        docker_build.CacheToArgs(
                            registry=docker_build.CacheToRegistryArgs(
                                ref=cache_ref(image, platform),
                                mode=docker_build.CacheMode.MAX,
                                image_manifest=True,
                                oci_media_types=True,
                            )
                        )
                    ],
                    registries=[registry],
                    opts=keep,
                )
            )
        indexes = [
            docker_build.Index(
                f"{name}-index-{kind}",
                tag=f"{image.repository}:{tag}",
                sources=[b.ref for b in builds],
                push=True,
                registry=registry,
                opts=keep,
            )
            for kind, tag in (("version", image.version), ("revision", revision_tag(image)))
        ]
        return indexes[0].ref.apply(lambda ref: _require_digest(ref, "the image index"))
