"""The registries a pod's images are pulled from, as the runner knows them.

This list is the runner's own, kept here and never read from the program's settings, so the
program can be wrong about an image and the pull then fails, as a registry would make it fail:
- the third-party images that exist, by repository, tag and digest (what `crane digest` answers
  for the tags the stacks pin; components/settings/data.py says where each digest came from);
- which repositories are private, and need a `kubernetes.io/dockerconfigjson` pull Secret with
  credentials for their registry host;
- the bundler image exists only where a stack's build pushed it (`push`), under the reference
  the build reported; a promoting stack pulls what the building stack pushed.

A reference that names a digest is pulled by digest (the tag is then only a label, as for
containerd); one without a digest by tag. Anything else is `ErrImagePull`.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Optional

# repository -> {tag: digest} of the images that exist (multi-platform index digests).
PUBLISHED: dict[str, dict[str, str]] = {
    "docker.io/library/postgres": {
        "16.6-alpine3.21": "sha256:1d04b9ba1d4996401f2552b51beda8187f175c0645c091e4781134fc9c9a3eef"},
    "docker.io/library/redis": {
        "7.4.2-alpine3.21": "sha256:02419de7eddf55aa5bcf49efb74e88fa8d931b4d77c07eff8a6b2144472b6952"},
    "quay.io/minio/minio": {
        "RELEASE.2025-04-22T22-12-26Z": "sha256:a1ea29fa28355559ef137d71fc570e508a214ec84ff8083e39bc5428980b015e"},
    "quay.io/minio/mc": {
        "RELEASE.2025-04-16T18-13-26Z": "sha256:aead63c77f9db9107f1696fb08ecb0faeda23729cde94b0f663edf4fe09728e3"},
}
# A GHCR package is private when first pushed; the stacks' package is in example-org.
PRIVATE = ("ghcr.io/example-org/",)


class PullError(Exception):
    """Why the kubelet could not pull an image; the first word is the waiting reason."""


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    """Including the registry host, as `docker.io/library/postgres`."""
    tag: Optional[str]
    digest: Optional[str]

    @classmethod
    def parse(cls, ref: str) -> Reference:
        name, _, digest = ref.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        if tag is not None:
            name = name[: -len(tag) - 1]
        first = name.split("/", 1)[0]
        if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
            name = f"docker.io/{name if '/' in name else 'library/' + name}"
        return cls(name.split("/", 1)[0], name, tag, digest or None)


@dataclass
class Registry:
    pushed: dict[str, set[str]] = field(default_factory=dict)
    """repository -> digests a build pushed there."""

    def push(self, ref: str) -> None:
        parsed = Reference.parse(ref)
        if parsed.digest is None:
            raise ValueError(f"a build reports its push by digest, not {ref}")
        self.pushed.setdefault(parsed.repository, set()).add(parsed.digest)

    def is_built(self, ref: str) -> bool:
        parsed = Reference.parse(ref)
        return parsed.repository in self.pushed

    def pull(self, ref: str, pull_secrets: list[dict[str, str]]) -> Reference:
        """The reference, if a pull with these Secrets' data would succeed; else PullError."""
        parsed = Reference.parse(ref)
        if parsed.repository.startswith(PRIVATE) and not _credentials_for(parsed.registry, pull_secrets):
            raise PullError(f"ErrImagePull: {ref}: pull access denied: {parsed.repository} is private and the pod "
                            f"has no imagePullSecrets with credentials for {parsed.registry}")
        digests = set(self.pushed.get(parsed.repository, set())) | set(PUBLISHED.get(parsed.repository, {}).values())
        if parsed.digest is not None:
            if parsed.digest not in digests:
                raise PullError(f"ErrImagePull: {ref}: manifest unknown: {parsed.repository} has no {parsed.digest}")
        elif parsed.tag not in PUBLISHED.get(parsed.repository, {}):
            raise PullError(f"ErrImagePull: {ref}: manifest unknown: {parsed.repository} has no tag {parsed.tag}")
        return parsed


def _credentials_for(registry: str, pull_secrets: list[dict[str, str]]) -> bool:
    """A dockerconfigjson Secret with a non-empty password or auth for the registry host."""
    for data in pull_secrets:
        try:
            auths = json.loads(data.get(".dockerconfigjson", "{}")).get("auths") or {}
        except json.JSONDecodeError:
            continue
        entry = auths.get(registry) or auths.get(f"https://{registry}") or {}
        auth = base64.b64decode(entry.get("auth", "")).decode(errors="replace") if entry.get("auth") else ""
        if entry.get("password") or auth.partition(":")[2]:
            return True
    return False
