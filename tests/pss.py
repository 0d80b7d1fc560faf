"""The Kubernetes *restricted* Pod Security Standard, as a checker over a pod spec dict.

Stricter than the standard in one way that we promise: a read-only root filesystem.
"""

from __future__ import annotations

from typing import Any


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """Every way `pod_spec` (camelCase, as rendered) breaks the restricted profile."""
    problems: list[str] = []
    pod = pod_spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"pod sets {field}")
    for volume in pod_spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"volume {volume.get('name')} is a hostPath")
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    if not containers:
        problems.append("pod has no containers")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name", "?")
        non_root = sc.get("runAsNonRoot", pod.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        added = set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{name}: adds capabilities {sorted(added)}")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
    return problems
