"""Stand-in for `minio server /data --address :9000`, serving moto's S3 in-process.

The e2e test has no MinIO binary; moto's S3 speaks the same API the bundler uses. What MinIO
does and moto does not, and our manifests rely on, is added here: the unauthenticated health
endpoints the probes call, and credential checks (a wrong MINIO_ROOT_PASSWORD wired into the
app must fail as it would against MinIO, not pass silently), with the root credentials read as
MinIO reads them (`root_credentials`). Objects live in memory: a restart loses them, unlike
MinIO's /data volume. E2E_NO_AUTH=1 checks no signature (the AWS stand-in of `outside.s3`).

With E2E_TLS_CERT/E2E_TLS_KEY it serves HTTPS, to stand in for AWS S3 under its own host names
(`<bucket>.s3.<region>.amazonaws.com`, virtual-hosted style, which moto routes by Host).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

from werkzeug.serving import BaseWSGIServer, make_server

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
HEALTH_PATHS = ("/minio/health/live", "/minio/health/ready", "/minio/health/cluster")


def _error(start_response: StartResponse, status: str, code: str, message: str) -> list[bytes]:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body.encode()]


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def _canonical_query(query: str) -> str:
    # Split by hand: parse_qsl would turn '+' into a space, which SigV4 does not.
    pairs = []
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        pairs.append((_uri_encode(unquote(key)), _uri_encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _header(environ: dict[str, Any], name: str) -> str:
    key = name.upper().replace("-", "_")
    value = environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}", "")
    return " ".join(str(value).split())


def sigv4_valid(environ: dict[str, Any], access_key: str, secret_key: str) -> tuple[bool, str]:
    """Check a header-signed SigV4 request (AWS SDKs, boto3). Needs no body: S3 signs its hash header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False, "AccessDenied"
    fields = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(",") if "=" in p)
    key_id, _, scope = fields.get("Credential", "").partition("/")
    if key_id != access_key:
        return False, "InvalidAccessKeyId"
    signed = fields.get("SignedHeaders", "").split(";")
    payload_hash = _header(environ, "x-amz-content-sha256")
    if not payload_hash:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        payload_hash = hashlib.sha256(body).hexdigest()
    raw_path, _, query = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "/").partition("?")
    canonical = "\n".join(
        [
            environ["REQUEST_METHOD"],
            raw_path,
            _canonical_query(query),
            "".join(f"{h}:{_header(environ, h)}\n" for h in signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    date = _header(environ, "x-amz-date")
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("Signature", "")), "SignatureDoesNotMatch"


def minio_app(s3: WSGIApp, access_key: str | None, secret_key: str | None, request_log: str | None = None) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in HEALTH_PATHS and environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if request_log:
            # Which S3 operations clients use (the probe must not need bucket-level calls).
            with open(request_log, "a") as log:
                client = environ.get("REMOTE_ADDR", "").removeprefix("::ffff:")
                log.write(f"{client} {environ['REQUEST_METHOD']} {environ.get('HTTP_HOST', '')} "
                          f"{environ.get('PATH_INFO', '')}"
                          f"{'?' + environ['QUERY_STRING'] if environ.get('QUERY_STRING') else ''}\n")
        if access_key is not None and secret_key is not None:
            ok, code = sigv4_valid(environ, access_key, secret_key)
            if not ok:
                return _error(start_response, "403 Forbidden", code, "Request rejected by the e2e S3 stand-in.")
        host = environ.get("HTTP_HOST", "")
        if not host.partition(":")[0].endswith(".amazonaws.com"):
            # MinIO (no MINIO_DOMAIN) is path-style only, but moto would read a dotted host
            # name such as minio.e2e as a bucket: hide it (the signature was checked above).
            environ["HTTP_HOST"] = "localhost"
        return s3(environ, start_response)

    return app


def _serve(host: str, port: int, app: WSGIApp, ssl: tuple[str, str] | None) -> BaseWSGIServer:
    from moto.server import MotoRequestHandler

    try:
        return make_server(host or "::", port, app, threaded=True, request_handler=MotoRequestHandler, ssl_context=ssl)
    except OSError:
        if host or not socket.has_ipv6:
            raise
        # A namespace without IPv6: all IPv4 addresses is what MinIO would then listen on.
        return make_server("0.0.0.0", port, app, threaded=True, request_handler=MotoRequestHandler, ssl_context=ssl)


# What MinIO uses when no root credentials are given (cmd/server-main.go: auth.DefaultCredentials).
DEFAULT_ROOT = ("minioadmin", "minioadmin")


def _read_from_secret(path: str) -> str:
    """MinIO's readFromSecret (cmd/common-main.go, RELEASE.2025-04-22T22-12-26Z): a name is tried
    under /run/secrets/ first; a missing file is no error and gives ""; the content is trimmed."""
    under_run_secrets = os.path.join("/run/secrets/", path.lstrip("/"))
    if os.path.isfile(under_run_secrets):
        path = under_run_secrets
    try:
        with open(path, "rb") as f:
            return f.read().strip().decode()
    except FileNotFoundError:
        return ""


def root_credentials(environ: dict[str, str]) -> tuple[str, str]:
    """MinIO's loadEnvVarsFromFiles, then its checks and loadRootCredentials (cmd/common-main.go,
    cmd/server-main.go): MINIO_ROOT_USER_FILE and MINIO_ROOT_PASSWORD_FILE, when their files have
    content, set MINIO_ROOT_USER/PASSWORD; one without the other stops MinIO; with neither, it
    starts with minioadmin:minioadmin (and clients with other keys fail)."""
    env = dict(environ)
    for var in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"):
        if f"{var}_FILE" in env:
            value = _read_from_secret(env[f"{var}_FILE"])
            if value:
                env[var] = value
    user, password = env.get("MINIO_ROOT_USER"), env.get("MINIO_ROOT_PASSWORD")
    if not user and not password:
        return DEFAULT_ROOT
    if not user or not password:
        raise SystemExit("minio: MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must both be set")
    return user, password


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "server" or argv[2] != "--address":
        print("usage: minio.py server DIR --address [HOST]:PORT", file=sys.stderr)
        return 2
    host, _, port = argv[3].rpartition(":")
    host = host.strip("[]")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import create_backend_app

    cert, key = os.environ.get("E2E_TLS_CERT"), os.environ.get("E2E_TLS_KEY")
    user, password = (None, None) if os.environ.get("E2E_NO_AUTH") else root_credentials(dict(os.environ))
    app = minio_app(create_backend_app("s3"), user, password, os.environ.get("E2E_REQUEST_LOG"))
    server = _serve(host, int(port), app, (cert, key) if cert and key else None)
    if os.environ.get("E2E_CREATE_BUCKET"):
        # A managed bucket exists before any client comes: made here, so no request shows it.
        from moto.backends import get_backend
        from moto.core import DEFAULT_ACCOUNT_ID

        get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"].create_bucket(os.environ["E2E_CREATE_BUCKET"], "us-east-1")

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # Kubernetes stops a pod with SIGTERM; exit at once, as MinIO does with no requests in flight.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
