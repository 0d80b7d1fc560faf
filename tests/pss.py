"""The restricted Pod Security Standard check for a bare pod spec, for the component tests.

One implementation only: the policy pack's rule (`policy/rules.py`).
"""

from __future__ import annotations

from typing import Any

from policy.rules import restricted_pod_security


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    return restricted_pod_security({"kind": "Pod", "spec": pod_spec})
