"""The promoted digest, looked up in the registry before anything runs it.

A promote stack deploys a digest it did not push: another stack's `imageRef` output, or a
digest from config. If that digest is not in the registry (a typo, a deleted package version,
a building stack whose push never finished), the Job and every Deployment would end in
ImagePullBackOff. Here the stack asks the registry first, at preview, and fails with the digest
and where it came from.

What pulumi-docker can look up: the `docker_registry_image` data source (getRegistryImage),
which HEADs `/v2/<repository>/manifests/<reference>` and returns the registry's
`Docker-Content-Digest` as `sha256Digest` (kreuzwerker/terraform-provider-docker,
internal/provider/data_source_docker_registry_image.go). Its name parser
(`parseImageOptions` in internal/provider/resource_docker_image_funcs.go) splits at the first
`:` after the registry, so `repo@sha256:<hex>` would be read as repository `repo@sha256`, tag
`<hex>`; `repo:<tag>@sha256:<hex>` is read as the digest, the tag dropped. So the look-up is
by digest, with a tag that is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from components.names import PROJECT
from components.settings.image import ImageSettings

LOOKUP_TOKEN = "docker:index/getRegistryImage:getRegistryImage"
# Only there to make the name parse as `<repository>:<tag>@<digest>`; the provider drops it.
PARSER_TAG = "promoted"


@dataclass(frozen=True)
class PromotedDigestArgs:
    image: ImageSettings
    """The repository and the pull token the registry is read with."""
    image_ref: pulumi.Input[str]
    """`<repository>@sha256:<digest>`, as promoted."""
    source: str
    """Where the digest came from (a stack output or a config key), for the error message."""


def lookup_name(ref: str) -> str:
    repository, digest = ref.split("@", 1)
    return f"{repository}:{PARSER_TAG}@{digest}"


def judge(ref: str, source: str, found: Optional[str]) -> str:
    """The reference, once the registry's digest for it is the promoted one."""
    repository, digest = ref.split("@", 1)
    if found != digest:
        answer = f"answers {found}" if found else "answers without a digest"
        raise pulumi.RunError(
            f"The promoted image {digest} ({source}) could not be confirmed: asked for it, the registry of "
            f"{repository} {answer}. Nothing was rolled out."
        )
    return ref


def not_found(ref: str, source: str, error: BaseException) -> pulumi.RunError:
    repository, digest = ref.split("@", 1)
    return pulumi.RunError(
        f"The promoted image {digest} ({source}) was not found in {repository}: {error}. Nothing was rolled out. "
        f"Run `pulumi up` on the stack that builds the image first, or promote a digest that exists; if it was "
        f"pushed, {PROJECT}:registryPullToken cannot read it (it needs read:packages)."
    )


class PromotedDigest(pulumi.ComponentResource):
    """`image_ref` is the promoted reference, resolved only once the registry has confirmed it."""

    image_ref: pulumi.Output[str]

    def __init__(self, name: str, args: PromotedDigestArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:PromotedDigest", name, None, opts)
        image, source = args.image, args.source
        auth = (
            [docker.ProviderRegistryAuthArgs(address=image.registry, username=image.pull_username,
                                             password=image.pull_token)]
            if image.pull_token is not None
            else None  # a public package: the provider fetches an anonymous token
        )
        provider = docker.Provider(
            f"{name}-registry",
            registry_auth=auth,
            # Only the registry is read: no Docker daemon where `pulumi preview` runs.
            disable_docker_daemon_check=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        invoke_opts = pulumi.InvokeOutputOptions(parent=self, provider=provider)

        async def confirmed(ref: str) -> str:
            # Awaited here, not chained: a failed look-up must fail with the digest and its source,
            # which the provider's own error does not name.
            try:
                found = await docker.get_registry_image_output(name=lookup_name(ref), opts=invoke_opts).future()
            except Exception as error:
                raise not_found(ref, source, error) from error
            return judge(ref, source, found.sha256_digest if found is not None else None)

        self.image_ref = pulumi.Output.from_input(args.image_ref).apply(confirmed)
        self.register_outputs({"image_ref": self.image_ref})
