"""Image: where the bundler image comes from (built here, or a digest promoted from the stack
that built it), the registry credentials, and the package visibility the stack declares."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, Optional

import pulumi

from components.names import PROJECT
from components.settings.reader import Problem, Reader, list_command, secret, set_command
from components.settings.values import pinned_image, repository_of

ImageMode = Literal["build", "promote"]
Visibility = Literal["public", "private"]
# traced: image/Dockerfile, whose /app holds only the files the processes load; upstream: the
# context's own Dockerfile, unchanged.
ImageDockerfile = Literal["traced", "upstream"]
DOCKERFILES = ("traced", "upstream")
SUPPORTED_PLATFORMS = ("linux/amd64", "linux/arm64")
_GHCR_REPO = re.compile(r"^ghcr\.io/[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9._-]*(/[a-z0-9._-]+)*$")
# A registry on this machine (kind's local registry is localhost:5001): plain HTTP, no login,
# and no GitHub package behind it. Sandbox stacks only: nothing shared can pull from a laptop.
LOCAL_REGISTRY_HOSTS = ("localhost", "127.0.0.1")
_LOCAL_REPO = re.compile(
    rf"^({'|'.join(map(re.escape, LOCAL_REGISTRY_HOSTS))}):[0-9]{{1,5}}/[a-z0-9][a-z0-9._-]*(/[a-z0-9._-]+)*$"
)


@dataclass(frozen=True)
class ImageSettings:
    mode: ImageMode
    repository: str
    context: str
    git_ref: Optional[str]
    version: str
    platforms: tuple[str, ...]
    cache_version: int
    build_on_preview: bool
    promote_stack: Optional[str]
    promote_ref: Optional[str]
    registry_username: Optional[str]
    push_token: Optional[pulumi.Output[str]]
    visibility: Visibility
    owner_type: Literal["org", "user"]
    pull_token: Optional[pulumi.Output[str]]
    builder: Optional[str] = None
    """The buildx builder to build with (unset: the current one)."""
    dockerfile: ImageDockerfile = "traced"
    """Which Dockerfile builds the image (build mode)."""

    @property
    def local_registry(self) -> bool:
        """A registry on the building machine: no token, no pull Secret, no GHCR package to read."""
        return self.registry.split(":", 1)[0] in LOCAL_REGISTRY_HOSTS

    @property
    def registry(self) -> str:
        return self.repository.split("/", 1)[0]

    @property
    def pull_username(self) -> str:
        """GHCR reads only the token; a login still needs a user name."""
        return self.registry_username or self.owner

    @property
    def owner(self) -> str:
        """The GHCR owner; a local registry has none."""
        return "" if self.local_registry else self.repository.split("/")[1]

    @property
    def package(self) -> str:
        """The repository path under its owner (GHCR) or under the registry (local)."""
        return self.repository.split("/", 1 if self.local_registry else 2)[-1]

    @property
    def source_url(self) -> str:
        """Repository whose package this is (org.opencontainers.image.source). A local registry
        has no package page to link, so the label names the source that was built."""
        if self.local_registry:
            return self.context.removesuffix(".git")
        return f"https://github.com/{self.owner}/{self.package.split('/')[0]}"


def ghcr_repository(image: ImageSettings, is_prod: bool) -> list[Problem]:
    """Both modes: the pull Secret, the package check and the labels all name this repository.
    A dev-tier stack may instead build into a registry on this machine (the local stack)."""
    if _GHCR_REPO.fullmatch(image.repository):
        return []
    if _LOCAL_REPO.fullmatch(image.repository):
        if is_prod:
            return [Problem(
                "imageRepository",
                f"'{image.repository}' is a registry on the deploying machine; prod pulls from GHCR.",
                set_command("imageRepository", "ghcr.io/<owner>/ar-io-x402-bundler"),
            )]
        if image.mode != "build":
            return [Problem(
                "imageRepository",
                f"'{image.repository}' is a local registry, which only a stack that builds here fills.",
                f"{set_command('imageMode', 'build')}  (or set {PROJECT}:imageRepository to the GHCR repository)",
            )]
        return []
    return [Problem(
        "imageRepository",
        f"'{image.repository}' is not a GHCR repository (ghcr.io/<owner>/<name>, lowercase) "
        "nor, outside prod, a local registry (localhost:<port>/<name>).",
        set_command("imageRepository", "ghcr.io/<owner>/ar-io-x402-bundler"),
    )]


def build_mode(image: ImageSettings, has_push_token: bool) -> list[Problem]:
    """A build is reproducible (a pinned commit), on a supported platform, and can push."""
    if image.mode != "build":
        return []
    problems: list[Problem] = []
    is_git = image.context.startswith(("https://", "git@", "git://"))
    if is_git and not (image.git_ref and re.fullmatch(r"[0-9a-f]{40}", image.git_ref)):
        problems.append(Problem(
            "imageGitRef",
            "must be a full 40-hex commit when imageContext is a Git URL: a branch or tag can move.",
            set_command("imageGitRef", "<commit sha>"),
        ))
    if not image.platforms or any(p not in SUPPORTED_PLATFORMS for p in image.platforms):
        problems.append(Problem(
            "imagePlatforms",
            f"must be a non-empty subset of {', '.join(SUPPORTED_PLATFORMS)}.",
            list_command("imagePlatforms", "linux/amd64"),
        ))
    if image.version in ("", "latest"):
        problems.append(Problem(
            "appVersion",
            f"'{image.version}' is not a version; images are tagged with it.",
            set_command("appVersion", "1.0.0"),
        ))
    if image.local_registry:
        return problems  # a local registry takes no login: no token, no user
    if not has_push_token:
        problems.append(Problem(
            "registryPushToken",
            "is required in build mode (a token with write:packages, to push to GHCR).",
            set_command("registryPushToken", "<token>", secret=True),
        ))
    if not image.registry_username:
        problems.append(Problem(
            "registryUsername",
            "is required in build mode (the GitHub user that owns registryPushToken).",
            set_command("registryUsername", "<github user>"),
        ))
    return problems


def promote_mode(image: ImageSettings) -> list[Problem]:
    """A promotion names exactly one source, pinned by digest, in imageRepository."""
    if image.mode != "promote":
        return []
    problems: list[Problem] = []
    if bool(image.promote_stack) == bool(image.promote_ref):
        problems.append(Problem(
            "imagePromoteStack",
            "promote mode needs exactly one source: imagePromoteStack (a stack that built the image) or imageRef "
            "(repository@sha256:...).",
            set_command("imagePromoteStack", f"<org>/{PROJECT}/dev"),
        ))
    if image.promote_ref:
        problems.extend(pinned_image("imageRef", image.promote_ref, allow_exact_version=False))
        if image.repository and repository_of(image.promote_ref) != image.repository:
            problems.append(Problem(
                "imageRef",
                f"'{image.promote_ref}' is not in imageRepository ({image.repository}): the pull Secret and the "
                "package check are for that repository.",
                set_command("imageRef", f"{image.repository}@sha256:<64 hex digits>"),
            ))
    return problems


# Every stack on a self-managed backend (file://, s3://, azblob://, gs://) belongs to this
# organization; only Pulumi Cloud has real ones.
SELF_MANAGED_ORG = "organization"


def promote_stack_resolves(image: ImageSettings, backend_org: Optional[str]) -> list[Problem]:
    """imagePromoteStack must be a fully qualified name this backend can resolve, or the
    StackReference fails at `up` with a message that does not name the key."""
    if image.mode != "promote" or not image.promote_stack:
        return []
    parts = image.promote_stack.split("/")
    if len(parts) != 3 or not all(parts):
        return [Problem(
            "imagePromoteStack",
            f"'{image.promote_stack}' is not a fully qualified stack name <org>/<project>/<stack>.",
            set_command("imagePromoteStack", f"{backend_org or '<org>'}/{PROJECT}/dev"),
        )]
    if backend_org == SELF_MANAGED_ORG and parts[0] != SELF_MANAGED_ORG:
        return [Problem(
            "imagePromoteStack",
            f"'{image.promote_stack}' cannot resolve on this backend: a self-managed backend (file://, s3://, ...) "
            f"names every stack's organization '{SELF_MANAGED_ORG}' (docs/setup.md, \"Backends\").",
            set_command("imagePromoteStack", "/".join([SELF_MANAGED_ORG, *parts[1:]])),
        )]
    return []


def private_pull(image: ImageSettings, has_pull_token: bool) -> list[Problem]:
    # The local registry answers anonymous pulls (kind's nodes reach it by its container name).
    if image.visibility == "private" and not has_pull_token and not image.local_registry:
        return [Problem(
            "registryPullToken",
            "is required when ghcrVisibility is private: the cluster cannot pull without it (a read:packages token).",
            set_command("registryPullToken", "<read-only token>", secret=True),
        )]
    return []


def build_keys_only_in_build_mode(image: ImageSettings, dockerfile_set: bool) -> list[Problem]:
    if image.mode == "build":
        return []
    given = (("imageBuilder", bool(image.builder)), ("imageDockerfile", dockerfile_set))
    keys = [key for key, is_set in given if is_set]
    return [Problem(key, "is set, but only build mode builds.", f"pulumi config rm {PROJECT}:{key}") for key in keys]


def read_image(r: Reader, is_prod: bool) -> ImageSettings:
    mode: ImageMode = r.choice("imageMode", ("build", "promote"), "build")  # type: ignore[assignment]
    visibility: Visibility = r.choice("ghcrVisibility", ("public", "private"), "private")  # type: ignore[assignment]
    image = ImageSettings(
        mode=mode,
        repository=r.text("imageRepository", ""),
        context=r.text("imageContext", "https://github.com/vilenarios/ar-io-x402-bundler.git"),
        git_ref=r.text("imageGitRef", None),
        version=r.text("appVersion", "0.0.0-dev"),
        platforms=r.strings("imagePlatforms", SUPPORTED_PLATFORMS),
        cache_version=r.integer("imageCacheVersion", 1, minimum=1, maximum=10_000),
        build_on_preview=r.boolean("imageBuildOnPreview", False),
        promote_stack=r.text("imagePromoteStack", None),
        promote_ref=r.text("imageRef", None),
        registry_username=r.text("registryUsername", None),
        push_token=None,
        visibility=visibility,
        owner_type=r.choice("ghcrOwnerType", ("org", "user"), "org"),  # type: ignore[arg-type]
        pull_token=None,
        builder=r.text("imageBuilder", None),
        dockerfile=r.choice("imageDockerfile", DOCKERFILES, "traced"),  # type: ignore[arg-type]
    )
    push_token = r.secret_text("registryPushToken")
    pull_token = r.secret_text("registryPullToken")
    r.report(ghcr_repository(image, is_prod))
    r.report(build_keys_only_in_build_mode(image, r.text("imageDockerfile", None) is not None))
    r.report(build_mode(image, push_token is not None))
    r.report(promote_mode(image))
    r.report(promote_stack_resolves(image, pulumi.get_organization()))
    r.report(private_pull(image, pull_token is not None))
    return replace(image, push_token=secret(push_token), pull_token=secret(pull_token))
