"""What the stack file itself says, whatever values a run sees: keys `Pulumi.yaml` does not
declare (a misspelled key is otherwise silently ignored, and its default used), and secrets
written in plain text (the offline render substitutes placeholder secrets, so only the file
shows that a real one was committed unencrypted)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

from components.names import PROJECT
from components.settings.reader import Problem, set_command

ROOT = Path(__file__).resolve().parents[2]


def declared_keys(project_file: Path = ROOT / "Pulumi.yaml") -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = yaml.safe_load(project_file.read_text()).get("config") or {}
    return config


def unknown_key(key: str, declared: dict[str, dict[str, Any]], where: str) -> Problem:
    """A key no code reads: said loudly, with the declared key it was probably meant to be."""
    near = difflib.get_close_matches(key, list(declared), n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    fix = f"rename it to {PROJECT}:{near[0]} in {where}" if near else f"remove it from {where}"
    return Problem(key, f"is not a key of this project (Pulumi.yaml declares no such key, so no code reads it){hint}",
                   fix)


# The packages whose keys a stack file may set besides the project's: its providers and Pulumi's.
PACKAGES = ("kubernetes", "docker-build", "docker", "github", "random", "pulumi")


class StackFileError(ValueError):
    """A stack file that is not YAML: the file, the line and column, and what is wrong there."""


def read_stack_file(stack_file: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(stack_file.read_text()) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise StackFileError(f"{stack_file.name} is not valid YAML{where}: {error.problem or error.context}; "
                             "check that line's indentation (two spaces under `config:`) and quoting") from None
    except yaml.YAMLError as error:
        raise StackFileError(f"{stack_file.name} is not valid YAML: {error}") from None
    return dict(data)


def foreign_key(full_key: str, namespace: str) -> Problem:
    """A key under a namespace nothing reads (a misspelled project name, say): said, not ignored."""
    near = difflib.get_close_matches(namespace, [PROJECT, *PACKAGES], n=1)
    hint = f"; did you mean {near[0]}:{full_key.partition(':')[2]}?" if near else ""
    return Problem(full_key, f"is under the namespace {namespace}, which neither this project nor its providers "
                             f"read, so it has no effect{hint}", "rename or remove it in the stack file")


def stack_file_problems(stack_file: Path, declared: dict[str, dict[str, Any]]) -> list[Problem]:
    """Unknown keys (with the nearest declared key), keys under a namespace nothing reads, and
    secret keys held in plain text."""
    if not stack_file.is_file():
        return []  # configuration kept elsewhere (an ESC environment, say): nothing to read here
    config: dict[str, Any] = read_stack_file(stack_file).get("config") or {}
    problems = []
    for full_key, value in config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != PROJECT:
            if namespace not in PACKAGES:
                problems.append(foreign_key(str(full_key), namespace))
            continue  # another package's keys (kubernetes:context, ...)
        if key not in declared:
            problems.append(unknown_key(key, declared, stack_file.name))
        elif declared[key].get("secret") and not (isinstance(value, dict) and "secure" in value):
            problems.append(Problem(
                key, f"is a secret, but {stack_file.name} holds it in plain text.",
                f"{set_command(key, '<value>', secret=True)}  (this encrypts it in {stack_file.name}; "
                "then rotate the value, it has been committed)",
            ))
    return problems
