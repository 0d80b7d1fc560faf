"""What an image costs to pull, read from its registry: per platform, the compressed bytes of its
layers and config (what a node downloads) and the layer count.

    python -m tools.image_size localhost:5001/ar-io-x402-bundler@sha256:...

Speaks the OCI distribution API over plain HTTP to a local registry (kind's, which `make up`
creates) or HTTPS elsewhere, anonymously: a private registry needs a pull of its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
LOCAL = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class PlatformSize:
    platform: str
    compressed: int
    layers: int


def _split(ref: str) -> tuple[str, str, str]:
    registry, _, rest = ref.partition("/")
    name, _, digest = rest.partition("@")
    if not digest.startswith("sha256:"):
        raise ValueError(f"{ref} is not repository@sha256:<digest>")
    return registry, name.split(":", 1)[0], digest


def _get(registry: str, name: str, reference: str) -> dict[str, Any]:
    scheme = "http" if registry.split(":", 1)[0] in LOCAL else "https"
    request = urllib.request.Request(f"{scheme}://{registry}/v2/{name}/manifests/{reference}",
                                     headers={"Accept": ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))})
    with urllib.request.urlopen(request, timeout=30) as response:
        data: dict[str, Any] = json.load(response)
        return data


def sizes(ref: str) -> list[PlatformSize]:
    registry, name, digest = _split(ref)
    top = _get(registry, name, digest)
    if top.get("mediaType") in INDEX_TYPES or "manifests" in top:
        entries = [(m, _get(registry, name, m["digest"])) for m in top["manifests"]
                   if (m.get("platform") or {}).get("os") != "unknown"]  # attestation manifests
    else:
        entries = [({"platform": {"os": "?", "architecture": "?"}}, top)]
    found = []
    for entry, manifest in entries:
        p = entry.get("platform") or {}
        layers = manifest.get("layers") or []
        name = "/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k))
        found.append(PlatformSize(name, sum(int(x["size"]) for x in layers) + int(manifest["config"]["size"]),
                                  len(layers)))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("ref")
    args = parser.parse_args(argv)
    for s in sizes(args.ref):
        print(f"image-size: {args.ref} {s.platform}: {s.compressed / 2**20:.1f} MiB compressed in {s.layers} layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
