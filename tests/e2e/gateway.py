"""Stand-in for the Arweave gateway (ARWEAVE_GATEWAY, and ARWEAVE_UPLOAD_NODE if pointed here).

Nothing outside the machine is reachable in the e2e test, yet every upload asks the gateway for
the current block (src/arch/arweaveGateway.ts: `POST /graphql` `blocks(first: 1)` raced against
`GET /block/current`; no answer means 503) and the bundling jobs ask for a price, an anchor,
post the bundle, seed chunks and poll its status. This answers each of those with plausible
values in the shapes the app parses, and counts requests per path so a test can assert the
bundler really used it. `unavailable = True` makes every answer 503 (a gateway outage).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A height of the real chain's order; the app only does arithmetic on it (deadlines, drop checks).
BASE_HEIGHT = 1_600_000
SECONDS_PER_BLOCK = 120
WINSTON_PER_BYTE = 2_000  # of the order of mainnet prices; only stored and compared by the app


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Gateway:
    """Run with start(host, port) / stop(); `requests` counts requests by path (no query)."""

    def __init__(self, seconds_per_block: float = SECONDS_PER_BLOCK) -> None:
        # A test can make blocks fast, to see a bundle reach 18 confirmations (permanent).
        self.seconds_per_block = seconds_per_block
        self.requests: Counter[str] = Counter()
        self.posted_txs: dict[str, int] = {}  # bundle tx id -> height at which it was posted
        self.unavailable = False
        self._hashes: dict[int, str] = {}
        self._lock = threading.Lock()
        self._started = time.time()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- chain state ----------------------------------------------------------------------

    def height(self) -> int:
        return BASE_HEIGHT + int((time.time() - self._started) // self.seconds_per_block)

    def block_hash(self, height: int) -> str:
        # 48 random bytes per height, like a real indep_hash: the bundles' last_tx anchor.
        with self._lock:
            if height not in self._hashes:
                self._hashes[height] = _b64url(secrets.token_bytes(48))
            return self._hashes[height]

    def count(self, prefix: str) -> int:
        """Requests whose path starts with `prefix` (e.g. "/price/")."""
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.startswith(prefix))

    # -- HTTP ----------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """(status, JSON-able value or text) for one request."""
        with self._lock:
            self.requests[path] += 1
        if self.unavailable:
            return 503, "Service Unavailable"
        height = self.height()
        block = {"id": self.block_hash(height), "height": height, "timestamp": int(time.time())}
        if method == "GET" and path in ("/block/current", "/info"):
            return 200, {**block, "indep_hash": block["id"], "network": "arweave.N.1", "current": block["id"]}
        if method == "POST" and path == "/graphql":
            return 200, self._graphql(json.loads(body or b"{}").get("query", ""), block)
        if method == "GET" and path.startswith("/price/"):
            return 200, str(WINSTON_PER_BYTE * int(path.split("/")[2]) + 100_000_000)
        if method == "GET" and path == "/tx_anchor":
            return 200, self.block_hash(height)
        if method == "POST" and path == "/tx":
            tx_id = json.loads(body or b"{}").get("id", "")
            with self._lock:
                self.posted_txs.setdefault(tx_id, height)
            return 200, "OK"
        if method == "POST" and path in ("/chunk", "/ar-io/admin/queue-bundle"):
            return 200, "OK"
        status = re.fullmatch(r"/tx/([\w-]{43})/status", path)
        if method == "GET" and status:
            posted = self.posted_txs.get(status.group(1))
            if posted is None:
                return 404, "Not Found"
            # Confirmed once a block has passed since the post, as a real chain would.
            confirmations = height - posted
            if confirmations < 1:
                return 202, "Pending"
            return 200, {"block_height": posted + 1, "block_indep_hash": self.block_hash(posted + 1),
                         "number_of_confirmations": confirmations}
        if method == "GET" and re.fullmatch(r"/wallet/[\w-]{43}/balance", path):
            return 200, "1000000000000000"  # 1000 AR: enough that a failed post is not blamed on funds
        return 404, "Not Found"

    def _graphql(self, query: str, current: dict[str, Any]) -> dict[str, Any]:
        ids = re.search(r"blocks\s*\(\s*ids\s*:\s*\[([^\]]*)\]", query)
        if ids:
            wanted = re.findall(r'"([^"]+)"', ids.group(1))
            edges = [{"node": {"id": i, "height": self._anchor_height(i, current)}} for i in wanted]
            return {"data": {"blocks": {"edges": edges}}}
        if "blocks" in query:
            return {"data": {"blocks": {"edges": [{"node": current}]}}}
        return {"data": {"transactions": {"edges": [], "pageInfo": {"hasNextPage": False}}}}

    def _anchor_height(self, block_id: str, current: dict[str, Any]) -> int:
        # Anchors come from our /tx_anchor; any other id is taken as the current block.
        with self._lock:
            heights = {h: height for height, h in self._hashes.items()}
        return heights.get(block_id, int(current["height"]))

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve in a daemon thread; returns the port (useful with port=0)."""
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # axios keeps connections alive

            def _handle(self) -> None:
                body = self._body()
                status, value = gateway.answer(self.command, self.path.split("?")[0], body)
                text = value if isinstance(value, str) else json.dumps(value)
                kind = "text/plain" if isinstance(value, str) else "application/json"
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                # The body must be consumed whole, or the next request on a kept-alive
                # connection would start inside it.
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # counts in gateway.requests are the log

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="arweave-gateway", daemon=True)
        self._thread.start()
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1984)
    parser.add_argument("--seconds-per-block", type=float, default=SECONDS_PER_BLOCK)
    args = parser.parse_args()
    gateway = Gateway(args.seconds_per_block)
    gateway.start(args.host, args.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        gateway.stop()


if __name__ == "__main__":
    main()
