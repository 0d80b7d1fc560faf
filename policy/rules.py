"""The promises this project makes, as pure functions over one Kubernetes manifest.

Each rule takes a manifest (a dict as `kubectl apply` takes it, camelCase) and returns the
list of its violations. The same functions run in three places: the unit tests, the test
suite over both stacks' rendered manifests, and the Pulumi policy pack (`__main__.py`) that
`pulumi preview --policy-pack policy` runs. This file imports nothing from the program, so the
pack runs in its own environment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

Manifest = Mapping[str, Any]
Rule = Callable[[Manifest], list[str]]

BUNDLER_COMPONENTS = {"api", "workers", "admin", "migration"}
LONG_RUNNING = {"Deployment", "StatefulSet", "DaemonSet"}
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_EXACT_TAG = re.compile(r":(v?\d+\.\d+[\w.-]*|RELEASE\.\d{4}-\d{2}-\d{2}T[\w-]+)$")
_SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE|JWK|(^|_)KEY$|_KEY_)", re.IGNORECASE)
# Volume types the restricted profile allows; anything else (hostPath, nfs, iscsi, ...) is refused.
_RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
# The "safe" sysctls of the baseline profile (Kubernetes 1.29); any other needs a privileged pod.
_SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
_SECRET_VALUE = re.compile(r'(-----BEGIN [A-Z ]*PRIVATE KEY-----|"d"\s*:\s*"[A-Za-z0-9_-]{40,}")')


def pod_spec(m: Manifest) -> Mapping[str, Any] | None:
    """The pod spec of a Pod, a workload or a Job (None for other kinds)."""
    kind = m.get("kind")
    spec = m.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in (*LONG_RUNNING, "Job", "ReplicaSet"):
        return (spec.get("template") or {}).get("spec")
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    return None


def containers(m: Manifest) -> list[Mapping[str, Any]]:
    spec = pod_spec(m) or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _component(m: Manifest) -> str:
    return str(((m.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/component", ""))


def images_pinned(m: Manifest) -> list[str]:
    """Bundler images by digest; third-party images by digest or an exact version tag."""
    problems = []
    ours = _component(m) in BUNDLER_COMPONENTS
    for c in containers(m):
        image = str(c.get("image", ""))
        if _DIGEST.search(image):
            continue
        if not ours and _EXACT_TAG.search(image) and not image.endswith(":latest"):
            continue
        problems.append(f"container {c.get('name')}: image {image!r} is not pinned" + (" by digest" if ours else ""))
    return problems


def resources_set(m: Manifest) -> list[str]:
    problems = []
    for c in containers(m):
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(res.get(kind) or {})
            if missing:
                problems.append(f"container {c.get('name')}: no {kind} for {', '.join(sorted(missing))}")
    return problems


def probes_set(m: Manifest) -> list[str]:
    """Long-running containers say when they are alive and when they can take work (Jobs excepted)."""
    if m.get("kind") not in LONG_RUNNING:
        return []
    spec = pod_spec(m) or {}
    return [
        f"container {c.get('name')}: no {probe}"
        for c in spec.get("containers") or []
        for probe in ("livenessProbe", "readinessProbe")
        if not c.get(probe)
    ]


def restricted_pod_security(m: Manifest) -> list[str]:
    """The restricted Pod Security Standard, plus a read-only root filesystem."""
    spec = pod_spec(m)
    if spec is None:
        return []
    problems: list[str] = []
    if not spec.get("containers"):
        problems.append("pod has no containers")
    pod = spec.get("securityContext") or {}
    problems += [f"pod sets {f}" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"volume {v.get('name')} is a hostPath")
        elif not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {v.get('name')} is of a type the restricted profile refuses: {sorted(kinds)}")
    unsafe = sorted(str(s.get("name")) for s in pod.get("sysctls") or [] if s.get("name") not in _SAFE_SYSCTLS)
    if unsafe:
        problems.append(f"pod sets unsafe sysctls {unsafe}")
    for c in containers(m):
        sc = c.get("securityContext") or {}
        name = c.get("name", "?")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{name}: adds capabilities {sorted(added)}")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount is {sc.get('procMount')!r}")
        problems += [f"{name}: binds hostPort {p.get('hostPort')}" for p in c.get("ports") or [] if p.get("hostPort")]
    return problems


def no_plain_secrets(m: Manifest) -> list[str]:
    """Secrets only in Secrets: no secret-looking ConfigMap entry or plain env value."""
    problems = []
    if m.get("kind") == "ConfigMap":
        for key, value in (m.get("data") or {}).items():
            if _SECRET_NAME.search(key) and not key.endswith("_FILE"):
                problems.append(f"ConfigMap key {key} looks like a secret")
            if _SECRET_VALUE.search(str(value)):
                problems.append(f"ConfigMap key {key} holds a private key")
    for c in containers(m):
        for env in c.get("env") or []:
            name = str(env.get("name", ""))
            # A secret-named variable comes from a Secret: a plain value or a ConfigMap reference
            # would put the secret where `kubectl describe` and the ConfigMap's readers see it.
            if (
                _SECRET_NAME.search(name) and not name.endswith("_FILE")
                and "secretKeyRef" not in (env.get("valueFrom") or {})
            ):
                problems.append(f"container {c.get('name')}: env {name} does not come from a secretKeyRef")
            if "value" in env and _SECRET_VALUE.search(str(env["value"])):
                problems.append(f"container {c.get('name')}: env {name} holds a private key")
    return problems


def no_job_ttl(m: Manifest) -> list[str]:
    """A TTL-deleted Job is drift that `pulumi refresh` + `up` re-creates and re-runs."""
    if m.get("kind") == "Job" and "ttlSecondsAfterFinished" in (m.get("spec") or {}):
        return ["Job sets ttlSecondsAfterFinished"]
    return []


MANIFEST_RULES: dict[str, Rule] = {
    "images-pinned": images_pinned,
    "resources-set": resources_set,
    "probes-set": probes_set,
    "restricted-pod-security": restricted_pod_security,
    "no-plain-secrets": no_plain_secrets,
    "no-job-ttl": no_job_ttl,
}


def check_manifest(m: Manifest) -> list[str]:
    return [f"{rule}: {problem}" for rule, fn in MANIFEST_RULES.items() for problem in fn(m)]


def migration_precedes_deployments(resources: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every bundler Deployment waits for the migration Job.

    `resources`: dicts with `urn`, `type`, `parent`, `dependencies` (URNs) and `labels`.
    Depending on a component counts as depending on all of its children.
    """
    items = list(resources)
    children: dict[str, list[str]] = {}
    for r in items:
        if r.get("parent"):
            children.setdefault(str(r["parent"]), []).append(str(r["urn"]))
    jobs = {
        r["urn"] for r in items
        if r["type"] == "kubernetes:batch/v1:Job"
        and (r.get("labels") or {}).get("app.kubernetes.io/component") == "migration"
    }
    problems = []
    deployments = [
        r for r in items
        if r["type"] == "kubernetes:apps/v1:Deployment"
        and (r.get("labels") or {}).get("app.kubernetes.io/component") in BUNDLER_COMPONENTS
    ]
    if deployments and not jobs:
        return ["no migration Job is registered"]
    by_urn = {str(r["urn"]): r for r in items}
    for d in deployments:
        seen: set[str] = set()
        frontier = [str(u) for u in d.get("dependencies") or []]
        found = False
        while frontier and not found:
            urn = frontier.pop()
            if urn in jobs:
                found = True
            elif urn not in seen:
                seen.add(urn)
                frontier.extend(children.get(urn, []))
                frontier.extend(str(u) for u in (by_urn.get(urn) or {}).get("dependencies") or [])
        if not found:
            problems.append(f"Deployment {d['urn']} does not wait for the migration Job")
    return problems
