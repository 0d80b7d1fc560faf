"""Value validators that several sections share: each takes a key and a value and returns the
problems it finds (never raising, never echoing a secret), with the command that fixes them.

Quantities, Redis memory sizes, CIDR blocks, EVM addresses, Arweave wallets (JWK), pinned
image references, namespace names and http(s) URLs.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Optional

from Crypto.Hash import keccak

from components.names import PROJECT
from components.settings.reader import Problem, list_command, set_command

_JWK_MEMBERS = ("n", "e", "d", "p", "q", "dp", "dq", "qi")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_QUANTITY = re.compile(
    r"^(?P<num>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60), "n": Decimal("1e-9"), "u": Decimal("1e-6"),
    "m": Decimal("1e-3"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
}
# registry[:port]/path[:tag]@sha256:<64 hex>
_DIGEST_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]+)?"
    r"(/[a-z0-9]+([._-][a-z0-9]+)*)+(:[\w.-]+)?@sha256:[0-9a-f]{64}$"
)
_EXACT_VERSION_TAG = re.compile(r":(v?\d+\.\d+[\w.-]*|RELEASE\.\d{4}-\d{2}-\d{2}T[\w-]+)$")
_REDIS_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HTTP_URL = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wallet(key: str, text: Optional[str], required: bool) -> list[Problem]:
    """An Arweave JWK: RSA, all private members as base64url, a 4096-bit modulus."""
    fix = f"{set_command(key, '', secret=True).rstrip()} < /path/to/wallet.json"
    if text is None:
        return [Problem(key, "is not set; the bundler cannot sign bundles without it.", fix)] if required else []
    try:
        jwk = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return [Problem(key, "is not valid JSON (expected an Arweave JWK file's contents).", fix)]
    if not isinstance(jwk, dict):
        return [Problem(key, "is JSON but not an object (expected an Arweave JWK).", fix)]
    problems: list[Problem] = []
    if jwk.get("kty") != "RSA":
        problems.append(Problem(key, 'is not an RSA JWK (member "kty" must be "RSA").', fix))
    missing = [m for m in _JWK_MEMBERS if m not in jwk]
    if missing:
        problems.append(Problem(key, f"lacks JWK member(s) {', '.join(missing)}: a wallet needs the private key.", fix))
    malformed = [m for m in _JWK_MEMBERS if m in jwk and not (isinstance(jwk[m], str) and _B64URL.match(jwk[m]))]
    if malformed:
        problems.append(Problem(key, f"has member(s) {', '.join(malformed)} that are not base64url strings.", fix))
    n = jwk.get("n")
    if isinstance(n, str) and "n" not in malformed:
        try:
            bits = int.from_bytes(_b64url_decode(n), "big").bit_length()
        except (binascii.Error, ValueError):
            bits = 0
        if bits != 4096:
            problems.append(Problem(key, f"has a {bits}-bit modulus; Arweave wallets are 4096-bit RSA keys.", fix))
    return problems


def eip55(address: str) -> str:
    """The EIP-55 checksummed form of an address: each letter's case from Keccak-256 of the hex."""
    digits = address[2:].lower()
    digest = keccak.new(digest_bits=256, data=digits.encode()).hexdigest()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(digits))


def evm_address(key: str, value: str) -> list[Problem]:
    """0x and 40 hex digits; in mixed case, the EIP-55 checksum must hold, so a one-character
    typo cannot send payments to another address. (All one case carries no checksum: accepted,
    with a warning from the caller.)"""
    if re.fullmatch(r"[0-9]{20,}", value):
        # YAML reads an unquoted 0x... as a hexadecimal number, which arrives here in decimal.
        return [Problem(key, f"is the number {value[:12]}…, not an address: the stack file has the 0x address "
                             "unquoted, so YAML read it as a hexadecimal number.",
                        f'quote it in the stack file: {PROJECT}:{key}: "0x<40 hex digits>"')]
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", value):
        what = "is not set" if not value else f"'{value}' is not an EVM address"
        return [Problem(key, f"{what} (expected 0x followed by 40 hex digits).", set_command(key, "0x<40 hex digits>"))]
    hex_digits = value[2:]
    if hex_digits not in (hex_digits.lower(), hex_digits.upper()) and eip55(value) != value:
        # The checksummed form of a mistyped address would be a valid, wrong address: not offered.
        return [Problem(key, f"'{value}' fails its EIP-55 checksum: a character is probably mistyped.",
                        f"{set_command(key, '<the address, copied again from its source>')}")]
    return []


def has_checksum(value: str) -> bool:
    return value[2:] not in (value[2:].lower(), value[2:].upper())


def is_http_url(url: str) -> bool:
    return re.fullmatch(_HTTP_URL, url) is not None


def http_url(key: str, url: Optional[str], purpose: str) -> list[Problem]:
    if url is None or is_http_url(url):
        return []
    return [Problem(key, f"'{url}' is not an http(s) URL ({purpose}).", set_command(key, "https://<host>"))]


def parse_quantity(value: str) -> Optional[Decimal]:
    """A Kubernetes resource quantity as a number, or None when it does not parse."""
    match = _QUANTITY.fullmatch(value.strip()) if value else None
    if not match:
        return None
    try:
        number = Decimal(match.group("num"))
    except InvalidOperation:
        return None
    suffix = match.group("suffix") or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _SUFFIX.get(suffix, Decimal(1))


def quantity(key: str, value: str) -> list[Problem]:
    if parse_quantity(value) is None:
        return [Problem(
            key,
            f"'{value}' is not a Kubernetes resource quantity (e.g. 250m, 1, 512Mi, 2Gi).",
            set_command(key, "<quantity>"),
        )]
    return []


def parse_redis_memory(value: str) -> Optional[int]:
    """A Redis memory setting (`256mb`, `1gb`, `100000`) in bytes, or None when Redis would reject it."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?b?)", value.strip().lower())
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)] if match else None


def redis_memory(key: str, value: str) -> list[Problem]:
    if parse_redis_memory(value) is None:
        return [Problem(key, f"'{value}' is not a Redis memory size (e.g. 256mb, 1gb).", set_command(key, "256mb"))]
    return []


def cidr(key: str, value: str) -> list[Problem]:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        return [Problem(key, f"'{value}' is not a CIDR block (e.g. 10.0.0.0/8).", list_command(key, "10.0.0.0/8"))]
    return []


def namespace_name(key: str, value: str, fix: Optional[str] = None) -> list[Problem]:
    if _DNS_LABEL.fullmatch(value):
        return []
    return [Problem(
        key,
        f"'{value}' is not a valid Kubernetes namespace name (lowercase DNS label, at most 63 characters).",
        fix or set_command(key, PROJECT),
    )]


def repository_of(ref: str) -> str:
    """The repository of an image reference, without its digest or tag."""
    name = ref.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def pinned_image(key: str, ref: str, allow_exact_version: bool) -> list[Problem]:
    """An image must be pinned: by digest, or (third-party images only) by an exact version tag."""
    if _DIGEST_REF.fullmatch(ref):
        return []
    if allow_exact_version and _EXACT_VERSION_TAG.search(ref) and not ref.endswith(":latest"):
        return []
    return [
        Problem(
            key,
            f"'{ref}' is not pinned: use a digest (image@sha256:...)"
            + (" or an exact version tag (e.g. :16.6-alpine3.21)" if allow_exact_version else "")
            + "; bare and 'latest' tags change under you.",
            set_command(key, "<registry>/<image>@sha256:<64 hex digits>"),
        )
    ]
