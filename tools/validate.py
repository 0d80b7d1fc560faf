"""The program's own validation of a stack, offline, with only the secrets its stack file holds:
what `make render` and `make doctor` say `pulumi up` will need (a render alone stands in
placeholders for every secret, so it passes where `up` would stop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from components.names import PROJECT
from components.settings.reader import ConfigError, Problem
from components.settings.stack_file import declared_keys, read_stack_file
from tools.harness import ROOT, run_program


@dataclass(frozen=True)
class Validation:
    """The program's own validation of a stack, offline, with only the secrets its file holds."""

    missing: list[Problem]
    """Secrets `pulumi up` needs that the stack file does not hold (the render stands in for them)."""
    other: list[Problem]
    error: Optional[BaseException]
    """A failure that is no configuration problem (None when the program ran or only config failed)."""


def held_secrets(stack: str) -> set[str]:
    config = read_stack_file(ROOT / f"Pulumi.{stack}.yaml").get("config") or {}
    return {k.split(":", 1)[1] for k, v in config.items()
            if str(k).startswith(f"{PROJECT}:") and isinstance(v, dict) and "secure" in v}


def validate(stack: str, overrides: Optional[dict[str, Any]] = None, deploying: bool = False) -> Validation:
    secret_keys = {k for k, v in declared_keys().items() if v.get("secret")}
    absent = secret_keys - held_secrets(stack)
    rec = run_program(stack, overrides=overrides, secrets={k: None for k in absent}, raise_errors=False,
                      deploying=deploying, stack_outputs=_promoted(stack))
    if rec.error is not None and not isinstance(rec.error, ConfigError):
        return Validation([], [], rec.error)
    problems = rec.error.problems if isinstance(rec.error, ConfigError) else []
    return Validation([p for p in problems if p.key in absent], [p for p in problems if p.key not in absent], None)


def _promoted(stack: str) -> dict[str, dict[str, Any]]:
    """What a promoting stack reads from the stack it promotes (a placeholder digest offline)."""
    from tools.render import promote_outputs  # tools.render imports this module

    return promote_outputs(stack)
