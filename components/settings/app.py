"""Wallets and payments: what the bundler app signs with, charges to and tells its clients,
with the rest of the app's own settings (gateway, log level, admin login, limits)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Optional

import pulumi

from components.names import PROJECT
from components.settings.processes import DEFAULT_API_PORT
from components.settings.reader import Problem, Reader, secret, set_command
from components.settings.values import evm_address, has_checksum, http_url, quantity, wallet

PaymentNetwork = Literal["base-sepolia", "base"]


@dataclass(frozen=True)
class AppSettings:
    arweave_wallet: pulumi.Output[str]
    raw_data_wallet: Optional[pulumi.Output[str]]
    payment_address: str
    payment_network: PaymentNetwork
    cdp_api_key_id: Optional[pulumi.Output[str]]
    cdp_api_key_secret: Optional[pulumi.Output[str]]
    public_url: str
    admin_username: str
    admin_password: Optional[pulumi.Output[str]]
    arweave_gateway: str
    log_level: str
    free_upload_limit: int
    optical_bridge_url: Optional[str]
    ar_io_admin_key: Optional[pulumi.Output[str]]
    upload_data_size_limit: str


def cdp_credentials(network: str, key_id: Optional[str], key_secret: Optional[str]) -> list[Problem]:
    """Base mainnet payments settle through Coinbase's facilitator, which needs CDP keys."""
    if network != "base":
        return []
    return [
        Problem(
            name,
            "is required for Base mainnet payments (paymentNetwork=base).",
            set_command(name, "<value>", secret=True),
        )
        for name, value in (("cdpApiKeyId", key_id), ("cdpApiKeySecret", key_secret))
        if value is None
    ]


def public_url(key: str, url: str, require_https: bool) -> list[Problem]:
    match = re.fullmatch(r"(https?)://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?", url)
    if not match:
        what = "is not set" if not url else f"'{url}' is not an http(s) URL"
        return [Problem(key, f"{what}; uploads need the API's public URL.", set_command(key, "https://upload.example.com"))]
    if require_https and match.group(1) != "https":
        return [Problem(
            key,
            f"'{url}' must use https:// in prod (environment=prod).",
            set_command(key, url.replace("http://", "https://", 1)),
        )]
    return []


def optical_bridge(url: Optional[str], has_admin_key: bool) -> list[Problem]:
    problems = http_url("opticalBridgeUrl", url, "the AR.IO optical bridge that uploads are forwarded to")
    if url is not None and not has_admin_key:
        problems.append(
            Problem(
                "arIoAdminKey",
                "is required when opticalBridgeUrl is set (the bridge's admin key, sent as AR_IO_ADMIN_KEY).",
                set_command("arIoAdminKey", "<admin key>", secret=True),
            )
        )
    return problems


def admin_password_length(text: Optional[str]) -> list[Problem]:
    if text is not None and len(text) < 16:
        return [Problem(
            "adminPassword",
            "is shorter than 16 characters.",
            f"pulumi config rm {PROJECT}:adminPassword  (a 32-character one is then generated)",
        )]
    return []


def read_app(r: Reader, is_prod: bool) -> AppSettings:
    wallet_text = r.secret_text("arweaveWallet")
    raw_wallet_text = r.secret_text("rawDataWallet")
    r.report(wallet("arweaveWallet", wallet_text, required=True))
    r.report(wallet("rawDataWallet", raw_wallet_text, required=False))

    payment_address = r.text("paymentAddress", "")
    r.report(evm_address("paymentAddress", payment_address))
    if payment_address and not has_checksum(payment_address) and not evm_address("paymentAddress", payment_address):
        pulumi.log.warn(f"{PROJECT}:paymentAddress is in one case only: it carries no EIP-55 checksum, so a "
                        "mistyped character would not be caught. Prefer the checksummed form your wallet shows.")
    payment_network: PaymentNetwork = r.choice("paymentNetwork", ("base-sepolia", "base"), "base-sepolia")  # type: ignore[assignment]
    cdp_id = r.secret_text("cdpApiKeyId")
    cdp_secret = r.secret_text("cdpApiKeySecret")
    r.report(cdp_credentials(payment_network, cdp_id, cdp_secret))

    url = r.text("publicUrl", "" if is_prod else f"http://localhost:{DEFAULT_API_PORT}")
    r.report(public_url("publicUrl", url, require_https=is_prod))
    # Uploads up to this size are accepted unpaid and bundled at the operator's expense; the
    # app's own default (505 KiB) is never relied on.
    free_upload_limit = r.integer("freeUploadLimit", 0, minimum=0)
    optical_bridge_url = r.text("opticalBridgeUrl", None)
    # Used only with a bridge URL: with AR_IO_ADMIN_KEY set, the workers also send it to
    # arweaveGateway's admin queue, so a key left over from a bridge must not reach them.
    ar_io_admin_key_text = r.secret_text("arIoAdminKey")
    if not optical_bridge_url:
        ar_io_admin_key_text = None
    r.report(optical_bridge(optical_bridge_url, ar_io_admin_key_text is not None))
    upload_data_size_limit = r.text("uploadDataSizeLimit", "20Gi")
    r.report(quantity("uploadDataSizeLimit", upload_data_size_limit))

    admin_password_text = r.secret_text("adminPassword")
    r.report(admin_password_length(admin_password_text))
    return AppSettings(
        arweave_wallet=pulumi.Output.secret(wallet_text or ""),
        raw_data_wallet=secret(raw_wallet_text),
        payment_address=payment_address,
        payment_network=payment_network,
        cdp_api_key_id=secret(cdp_id),
        cdp_api_key_secret=secret(cdp_secret),
        public_url=url,
        admin_username=r.text("adminUsername", "admin"),
        admin_password=secret(admin_password_text),
        arweave_gateway=r.text("arweaveGateway", "https://arweave.net"),
        log_level=r.choice("logLevel", ("info", "debug", "warn", "error"), "info"),
        free_upload_limit=free_upload_limit,
        optical_bridge_url=optical_bridge_url,
        ar_io_admin_key=secret(ar_io_admin_key_text),
        upload_data_size_limit=upload_data_size_limit,
    )
