"""The GHCR package, read back: does its visibility match what the stack declares?

Seed risks 1 and 9: no GitHub API creates a container package or changes its visibility. The
first push creates it, private; only the web UI makes it public, once. So a stack that
declares the image public fails here, with the settings URL, instead of failing later with
ImagePullBackOff; a stack that declares it private pulls with a token (validated in config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_github as github

from components.names import PROJECT
from components.settings.image import ImageSettings

NOT_FOUND = "not-found"
# A registry on the building machine (the local stack): no GitHub package exists to read.
LOCAL = "local"


@dataclass(frozen=True)
class GhcrPackageArgs:
    image: ImageSettings
    """The repository, its owner and the visibility the stack declares."""
    github_token: Optional[pulumi.Output[str]]
    """Reads the package (read:packages); without it the provider's default credentials."""
    image_ref: pulumi.Input[str]
    """The pushed (or promoted) image; the package is read once it exists."""


def _owner_path(image: ImageSettings) -> str:
    return f"{'orgs' if image.owner_type == 'org' else 'users'}/{image.owner}"


def _package_name(image: ImageSettings) -> str:
    # GitHub addresses a nested package (ghcr.io/o/a/b) as `a%2Fb`.
    return image.package.replace("/", "%2F")


def package_url(image: ImageSettings) -> str:
    return f"https://github.com/{_owner_path(image)}/packages/container/package/{_package_name(image)}"


def settings_url(image: ImageSettings) -> str:
    return f"https://github.com/{_owner_path(image)}/packages/container/{_package_name(image)}/settings"


def rest_endpoint(image: ImageSettings) -> str:
    # Relative, as the provider documents it: resolved against its base URL (GHES included).
    return f"{_owner_path(image)}/packages/container/{_package_name(image)}"


def judge(image: ImageSettings, code: int, body: str) -> str:
    """The visibility found; an error when the stack declares public and the package is not."""
    if code == 404:
        make_public = (
            f" The stack declares it public: once it exists, change its visibility at {settings_url(image)}."
            if image.visibility == "public"
            else ""
        )
        pulumi.log.warn(
            f"GHCR package {image.repository} was not found. Before the first push that is expected: the first "
            "push creates it, private, linked to the repository named by its org.opencontainers.image.source."
            + make_public
            + f" If it was already pushed, {PROJECT}:githubToken cannot see it (it needs read:packages)."
        )
        return NOT_FOUND
    if code != 200:
        raise pulumi.RunError(
            f"Reading the GHCR package ({rest_endpoint(image)}) answered HTTP {code}. "
            f"Set {PROJECT}:githubToken to a classic token with read:packages."
        )
    found = str(json.loads(body).get("visibility", "unknown"))
    if image.visibility == "public" and found != "public":
        raise pulumi.RunError(
            f"GHCR package {image.repository} is {found}, but {PROJECT}:ghcrVisibility declares it public: "
            "pods without a pull Secret would fail with ImagePullBackOff. No API can change a package's "
            f"visibility. Once, by hand: open {settings_url(image)}, 'Change visibility' -> Public, confirm, "
            f"then run `pulumi up` again. Or keep it private: pulumi config set {PROJECT}:ghcrVisibility private "
            f"and pulumi config set --secret {PROJECT}:registryPullToken <read:packages token>."
        )
    return found


class GhcrPackage(pulumi.ComponentResource):
    """`visibility` is public, private or not-found; reading it fails a stack whose promise it breaks."""

    package_url: pulumi.Output[str]
    visibility: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    """The image reference, available only once the visibility check has passed."""

    def __init__(self, name: str, args: GhcrPackageArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:GhcrPackage", name, None, opts)
        image, token = args.image, args.github_token
        if image.local_registry:
            # Nothing to read and no GitHub provider: the local stack needs no GitHub account.
            self.package_url = pulumi.Output.from_input(f"http://{image.registry}/v2/{image.package}/tags/list")
            self.visibility = pulumi.Output.from_input(LOCAL)
            self.image_ref = pulumi.Output.from_input(args.image_ref)
            self.register_outputs(
                {"package_url": self.package_url, "visibility": self.visibility, "image_ref": self.image_ref}
            )
            return
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        if token is not None:
            provider = github.Provider(f"{name}-github", token=token, opts=pulumi.ResourceOptions(parent=self))
            invoke_opts = pulumi.InvokeOutputOptions(parent=self, provider=provider)
        image_ref = pulumi.Output.from_input(args.image_ref)
        # The endpoint waits for the image reference, so the read sees the package after the
        # push that creates it (and, in a preview that builds nothing, is not made at all).
        endpoint = image_ref.apply(lambda _: rest_endpoint(image))
        package = github.get_rest_api_output(endpoint=endpoint, opts=invoke_opts)
        self.package_url = pulumi.Output.from_input(package_url(image))
        self.visibility = package.apply(lambda p: judge(image, int(p.code), p.body))
        self.image_ref = pulumi.Output.all(image_ref, self.visibility).apply(lambda pair: str(pair[0]))
        self.register_outputs(
            {"package_url": self.package_url, "visibility": self.visibility, "image_ref": self.image_ref}
        )
