"""The GHCR package check: its visibility read back after the push, judged against the stack's promise."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Optional

import pulumi
import pulumi_random as random
import pytest

from components.package_check import GhcrPackage, GhcrPackageArgs
from components.settings import load_settings
from tests.helpers import PROMOTED, render
from tools.harness import GITHUB_REST, Recording, run_program

Answer = Callable[[str, dict[str, Any]], Optional[dict[str, Any]]]
ORG_SETTINGS = "https://github.com/orgs/example-org/packages/container/ar-io-x402-bundler/settings"
PUBLIC = {"ghcrVisibility": "public"}
REF = PROMOTED
CONSUMER = "random:index/randomId:RandomId"


def rest(code: int, visibility: Optional[str] = None) -> Answer:
    """The REST data source's answer: GitHub's status code and body (it never fails on 404)."""

    def answer(token: str, args: dict[str, Any]) -> Optional[dict[str, Any]]:
        if token != GITHUB_REST:
            return None
        body = (
            {"name": "ar-io-x402-bundler", "visibility": visibility} if visibility
            else {"message": "Package not found."}
        )
        return {"code": code, "body": json.dumps(body)}

    return answer


def rest_calls(rec: Recording) -> list[dict[str, Any]]:
    return [args for token, args in rec.calls if token == GITHUB_REST]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_public_package_declared_public_passes_and_reads_the_org_endpoint(stack: str) -> None:
    rec = render(stack, overrides=PUBLIC, call_results=rest(200, "public"))
    assert rec.error is None
    assert rec.outputs["imagePackageVisibility"] == "public"
    assert rec.outputs["imagePackageUrl"] == "https://github.com/orgs/example-org/packages/container/package/ar-io-x402-bundler"
    (call,) = rest_calls(rec)
    assert call["endpoint"] == "orgs/example-org/packages/container/ar-io-x402-bundler"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_private_package_declared_public_fails_with_the_settings_url_and_the_manual_step(stack: str) -> None:
    rec = render(stack, overrides=PUBLIC, call_results=rest(200, "private"), raise_errors=False)
    assert rec.error is not None
    message = str(rec.error)
    assert ORG_SETTINGS in message
    assert "Change visibility" in message and "No API" in message
    assert "PLACEHOLDER" not in message


def test_missing_package_is_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        rec = render("dev", overrides=PUBLIC, call_results=rest(404))
    assert rec.error is None
    assert rec.outputs["imagePackageVisibility"] == "not-found"
    warning = " ".join(r.getMessage() for r in caplog.records if "was not found" in r.getMessage())
    assert "first push creates it, private" in warning
    assert ORG_SETTINGS in warning


def test_private_package_declared_private_passes_and_user_owners_use_the_users_endpoint() -> None:
    rec = render("dev", overrides={"ghcrOwnerType": "user"}, call_results=rest(200, "private"))
    assert rec.error is None
    assert rec.outputs["imagePackageVisibility"] == "private"
    assert rec.outputs["imagePackageUrl"].startswith("https://github.com/users/example-org/")
    (call,) = rest_calls(rec)
    assert call["endpoint"] == "users/example-org/packages/container/ar-io-x402-bundler"


def test_a_token_that_cannot_read_packages_fails_naming_the_key() -> None:
    rec = render("dev", call_results=rest(401), raise_errors=False)
    assert rec.error is not None and "x402-bundler:githubToken" in str(rec.error)
    assert "PLACEHOLDER" not in str(rec.error)


def test_the_read_uses_an_explicit_provider_holding_the_token_as_a_secret() -> None:
    rec = render("dev")
    provider = rec.one("pulumi:providers:github", "ghcr-package-github")
    assert provider.redacted_inputs["token"] == "[secret]"
    without = render("dev", secrets={"githubToken": None})
    assert [p for p in without.of_type("pulumi:providers:github") if p.name == "ghcr-package-github"] == []
    assert len(rest_calls(without)) == 1


def isolated(image_ref: Callable[[], Any], answer: Answer, overrides: Optional[dict[str, Any]] = None) -> Recording:
    """GhcrPackage alone, with a stand-in consumer of its checked `image_ref`."""

    def program() -> None:
        settings = load_settings()
        package = GhcrPackage(
            "pkg", GhcrPackageArgs(image=settings.image, github_token=settings.github.token, image_ref=image_ref())
        )
        random.RandomId("consumer", byte_length=4, keepers={"image": package.image_ref})

    return run_program("dev", overrides=overrides, call_results=answer, program=program, raise_errors=False)


def test_the_checked_image_ref_is_released_only_when_the_check_passes() -> None:
    passed = isolated(lambda: REF, rest(200, "public"), PUBLIC)
    assert passed.error is None
    assert passed.one(CONSUMER, "consumer").inputs["keepers"] == {"image": REF}
    failed = isolated(lambda: REF, rest(200, "private"), PUBLIC)
    assert failed.error is not None
    assert failed.of_type(CONSUMER) == []


def test_the_package_is_not_read_before_the_image_reference_exists() -> None:
    def unknown() -> pulumi.Output[str]:
        loop = asyncio.get_event_loop()
        value: asyncio.Future[str] = loop.create_future()
        known: asyncio.Future[bool] = loop.create_future()
        value.set_result("")
        known.set_result(False)
        return pulumi.Output(set(), value, known)

    rec = isolated(unknown, rest(200, "private"), PUBLIC)
    assert rec.error is None
    assert rest_calls(rec) == []
