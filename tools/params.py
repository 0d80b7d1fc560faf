"""The parameters table of docs/configuration.md, generated from `Pulumi.yaml`, where every key is declared.

    python -m tools.params    # prints the table; tests/test_docs.py keeps docs/configuration.md's copy equal
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _default(spec: dict[str, Any]) -> str:
    if spec.get("secret"):
        return "secret, no default"
    if "default" not in spec:
        return ""
    value = spec["default"]
    return f"`{json.dumps(value) if not isinstance(value, str) else value}`"


def parameters_table(project: Path = ROOT / "Pulumi.yaml") -> str:
    """One row per config key, in the order Pulumi.yaml declares them (grouped by concern)."""
    config: dict[str, dict[str, Any]] = yaml.safe_load(project.read_text())["config"]
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, spec in config.items():
        description = _cell(str(spec.get("description", "")))
        rows.append(f"| `{key}` | {spec.get('type', 'string')} | {_default(spec)} | {description} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(parameters_table(), end="")
