"""tools/image_size.py (the kind workflow's image-size step) against a registry on loopback that
answers the OCI distribution API for one multi-platform index, as kind's local registry does."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tools.image_size import main, sizes

INDEX, AMD64, ARM64, ATTEST = (f"sha256:{c * 64}" for c in "abcd")
MANIFESTS: dict[str, dict[str, Any]] = {
    INDEX: {"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"digest": AMD64, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": ARM64, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": ATTEST, "platform": {"os": "unknown", "architecture": "unknown"}},
    ]},
    AMD64: {"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"size": 1000},
            "layers": [{"size": 3 * 2**20}, {"size": 2**20}]},
    ARM64: {"mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"size": 2000},
            "layers": [{"size": 2**20}]},
}


class Registry(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        reference = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/v2/ar-io-x402-bundler/manifests/") or reference not in MANIFESTS:
            self.send_error(404)
            return
        body = json.dumps(MANIFESTS[reference]).encode()
        self.send_response(200)
        self.send_header("Content-Type", MANIFESTS[reference]["mediaType"])
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()


def test_each_platform_counts_its_layers_and_config_and_attestations_are_left_out(registry: str) -> None:
    found = sizes(f"{registry}/ar-io-x402-bundler@{INDEX}")
    assert [(s.platform, s.compressed, s.layers) for s in found] == [
        ("linux/amd64", 4 * 2**20 + 1000, 2), ("linux/arm64", 2**20 + 2000, 1)]


def test_it_prints_one_line_per_platform(registry: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"{registry}/ar-io-x402-bundler@{INDEX}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("linux/amd64: 4.0 MiB compressed in 2 layers") and len(lines) == 2


def test_a_reference_that_is_not_a_digest_is_refused() -> None:
    with pytest.raises(ValueError, match="not repository@sha256"):
        sizes("localhost:5001/ar-io-x402-bundler:1.0.0")
