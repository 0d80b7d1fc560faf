"""The GHCR package, read back: does its visibility match what the stack declares?

Seed risk 1: no GitHub API creates a container package or changes its visibility. The first
push creates it, private; only the web UI makes it public. So a stack that declares the image
public fails here, with the settings URL, instead of failing later with ImagePullBackOff.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_github as github

from components.config import ImageSettings, Settings

NOT_FOUND = "not-found"


@dataclass(frozen=True)
class GhcrPackageArgs:
    settings: Settings
    """Validated stack settings (`image` and `github` sections)."""
    image_ref: pulumi.Input[str]
    """The pushed image; the package is read after it exists."""


def _owner_path(image: ImageSettings) -> str:
    return f"{'orgs' if image.owner_type == 'org' else 'users'}/{image.owner}"


def package_url(image: ImageSettings) -> str:
    return f"https://github.com/{_owner_path(image)}/packages/container/package/{image.package}"


def settings_url(image: ImageSettings) -> str:
    return f"https://github.com/{_owner_path(image)}/packages/container/{image.package}/settings"


def rest_endpoint(image: ImageSettings) -> str:
    # Nested package names are URL-encoded in the packages API.
    return f"/{_owner_path(image)}/packages/container/{image.package.replace('/', '%2F')}"


def judge(image: ImageSettings, code: int, body: str) -> str:
    """The visibility found, or an error when the stack declares public and it is not."""
    if code == 404:
        pulumi.log.warn(
            f"GHCR package {image.repository} does not exist yet: the first push creates it as private. "
            + (f"To make it public, change its visibility once at {settings_url(image)}." if image.visibility == "public" else "")
        )
        return NOT_FOUND
    if code != 200:
        raise pulumi.RunError(f"reading {rest_endpoint(image)} answered HTTP {code}; check x402-bundler:githubToken (read:packages).")
    found = str(json.loads(body).get("visibility", "unknown"))
    if image.visibility == "public" and found != "public":
        raise pulumi.RunError(
            f"GHCR package {image.repository} is {found}, but x402-bundler:ghcrVisibility declares it public, so clusters "
            f"without a pull token would fail with ImagePullBackOff. No API can change this: open {settings_url(image)}, "
            "'Change visibility' -> Public (once), then run `pulumi up` again. Or declare it private and set "
            "x402-bundler:registryPullToken."
        )
    return found


class GhcrPackage(pulumi.ComponentResource):
    package_url: pulumi.Output[str]
    visibility: pulumi.Output[str]

    def __init__(self, name: str, args: GhcrPackageArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("x402-bundler:index:GhcrPackage", name, None, opts)
        image, token = args.settings.image, args.settings.github.token
        invoke_opts = pulumi.InvokeOutputOptions(parent=self)
        if token is not None:
            provider = github.Provider(f"{name}-github", token=token, opts=pulumi.ResourceOptions(parent=self))
            invoke_opts = pulumi.InvokeOutputOptions(parent=self, provider=provider)
        # Reading through the image ref makes the read wait for the push.
        endpoint = pulumi.Output.from_input(args.image_ref).apply(lambda _: rest_endpoint(image))
        package = github.get_rest_api_output(endpoint=endpoint, opts=invoke_opts)
        self.package_url = pulumi.Output.from_input(package_url(image))
        self.visibility = package.apply(lambda p: judge(image, int(p.code), p.body))
        self.register_outputs({"package_url": self.package_url, "visibility": self.visibility})
