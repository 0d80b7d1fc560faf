"""How a configuration key is read: typed, defaulted, and every problem recorded, not raised.

`Reader` is what every section's reader takes; `Problem` is one finding with its fix command;
`ConfigError` lists them all once the whole configuration has been read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional, TypeVar

import pulumi

from components.names import PROJECT

T = TypeVar("T")


@dataclass(frozen=True)
class Problem:
    """One configuration problem: the key (without the project prefix), what is wrong, the fix."""

    key: str
    message: str
    fix: str

    @property
    def qualified(self) -> str:
        """The key as the stack file writes it (a key of another namespace keeps its own)."""
        return self.key if ":" in self.key else f"{PROJECT}:{self.key}"


def set_command(key: str, value: str, secret: bool = False) -> str:
    """The `pulumi config set` command that gives `key` the value."""
    return f"pulumi config set {'--secret ' if secret else ''}{PROJECT}:{key} {value}"


def list_command(key: str, value: str, index: int = 0) -> str:
    """The command that sets one item (the first unless told) of a list key."""
    return f"pulumi config set --path '{PROJECT}:{key}[{index}]' {value}"


class ConfigError(pulumi.RunError):
    """Raised with every configuration problem listed; nothing has been registered yet."""

    def __init__(self, stack: str, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [
            f"Stack '{stack}' configuration has {len(problems)} problem(s); nothing was deployed:"
        ]
        for p in problems:
            lines.append(f"  - {p.qualified}: {p.message}")
            lines.append(f"      fix: {p.fix}")
        # Bare `pulumi` commands reach whatever backend and stack the shell has selected; this
        # line points them at this stack's (docs/setup.md, "Backends").
        lines.append(f'Run the fixes in a shell prepared with: eval "$(make -s env STACK={stack})"')
        super().__init__("\n".join(lines))


def secret(value: Optional[str]) -> Optional[pulumi.Output[str]]:
    return None if value is None else pulumi.Output.secret(value)


class Reader:
    """Reads typed values from pulumi.Config, recording problems instead of raising."""

    def __init__(self, config: pulumi.Config) -> None:
        self.config = config
        self.problems: list[Problem] = []

    def fail(self, key: str, message: str, fix: str) -> None:
        self.problems.append(Problem(key, message, fix))

    def report(self, problems: Iterable[Problem]) -> None:
        self.problems.extend(problems)

    def text(self, key: str, default: T) -> str | T:
        value = self.config.get(key)
        return default if value is None or value == "" else value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        if value not in options:
            self.fail(key, f"'{value}' is not one of {', '.join(options)}.", set_command(key, options[0]))
            return default
        return value

    def integer(self, key: str, default: int, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
        raw = self.config.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            self.fail(key, f"'{raw}' is not a whole number.", set_command(key, str(default)))
            return default
        if not minimum <= value <= maximum:
            self.fail(
                key,
                f"{value} is outside the allowed range {minimum}..{maximum}.",
                set_command(key, str(max(default, minimum))),
            )
            # Already reported: later checks (the connection budget) use the default instead.
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.config.get(key)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        self.fail(key, f"'{raw}' is not true or false.", set_command(key, str(default).lower()))
        return default

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self.config.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            self.fail(key, "is not a list of strings.", list_command(key, "<value>"))
            return default
        return tuple(str(v) for v in value)

    def secret_text(self, key: str) -> Optional[str]:
        """The plain text of a secret key, for validation only; never stored or printed."""
        value = self.config.get(key)
        if value is not None and value != "" and not pulumi.runtime.is_config_secret(f"{PROJECT}:{key}"):
            self.fail(
                key,
                "is stored in plain text in the stack file; it must be a secret.",
                f"{set_command(key, '<value>', secret=True)}  (this re-encrypts it)",
            )
        return None if value == "" else value
