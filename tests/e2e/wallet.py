"""Arweave wallets for the e2e test, made at run time so no private key is ever committed.

The bundler reads its wallet (TURBO_JWK_FILE) as a JWK and the uploader signs data items with
one; both must be real 4096-bit RSA keys, as Arweave verifies RSA-PSS over the full modulus.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import rsa


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_int(value: int) -> str:
    # Big-endian, minimal length: how JWK (RFC 7518) encodes RSA parameters.
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def generate_jwk() -> str:
    """A new Arweave JWK (JSON text); takes about a second."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    priv = key.private_numbers()
    pub = priv.public_numbers
    jwk = {
        "kty": "RSA",
        "n": _b64url_int(pub.n),
        "e": _b64url_int(pub.e),
        "d": _b64url_int(priv.d),
        "p": _b64url_int(priv.p),
        "q": _b64url_int(priv.q),
        "dp": _b64url_int(priv.dmp1),
        "dq": _b64url_int(priv.dmq1),
        "qi": _b64url_int(priv.iqmp),
    }
    return json.dumps(jwk)


def address_of(jwk_json: str) -> str:
    """The wallet's Arweave address: base64url(sha256(modulus bytes))."""
    n = json.loads(jwk_json)["n"]
    raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    return _b64url(hashlib.sha256(raw).digest())
