"""What stands between a pod spec and a running process: admission, then the container's settings.

Admission: a namespace labelled `pod-security.kubernetes.io/enforce: restricted` refuses a pod
that breaks the restricted Pod Security Standard; the check is the project's own
(`policy.rules.restricted_pod_security`, which the policy pack also runs), so a pod the program
renders wrongly never starts here either. A refused pod is never created: its controller
reports `FailedCreate` and the workload never becomes ready.

The kubelet's part: `runAsNonRoot` is verified against the uid the container would run as
(`CreateContainerConfigError` otherwise), and the container gets the uid, gid and groups the
pod and container set, the runtime's default capabilities less `drop` plus `add` (as the
bounding set), and no_new_privs when `allowPrivilegeEscalation` is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policy.rules import restricted_pod_security

ENFORCE = "pod-security.kubernetes.io/enforce"
# containerd's (and Docker's) default capability set for a container.
DEFAULT_CAPABILITIES = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                        "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")


class CreateContainerConfigError(Exception):
    """The kubelet will not start this container as specified."""


def admit(pod_spec: dict[str, Any], namespace_labels: dict[str, str]) -> list[str]:
    """Why the namespace's Pod Security admission refuses the pod (empty: admitted)."""
    level = namespace_labels.get(ENFORCE, "privileged")
    if level == "restricted":
        return restricted_pod_security({"kind": "Pod", "spec": pod_spec})
    if level == "baseline":
        raise NotImplementedError("only the restricted and privileged levels are checked here")
    return []


@dataclass(frozen=True)
class Launch:
    uid: int
    gid: int
    groups: tuple[int, ...]
    capabilities: tuple[str, ...]
    """The bounding set, upper case without CAP_."""
    no_new_privs: bool
    read_only_root: bool

    def setpriv(self) -> list[str]:
        """util-linux setpriv's arguments for these credentials, before the command."""
        bounding = ",".join(["-all", *(f"+{c.lower()}" for c in self.capabilities)])
        return [f"--reuid={self.uid}", f"--regid={self.gid}", f"--groups={','.join(map(str, self.groups))}",
                "--inh-caps=-all", f"--bounding-set={bounding}", *(["--no-new-privs"] if self.no_new_privs else [])]


def launch(pod_spec: dict[str, Any], container: dict[str, Any], image_uid: int, image_gid: int) -> Launch:
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    uid = int(sc.get("runAsUser", pod_sc.get("runAsUser", image_uid)))
    gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", image_gid)))
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
        raise CreateContainerConfigError(f"{container['name']}: container has runAsNonRoot and image will run as root")
    groups = [int(pod_sc["fsGroup"])] if "fsGroup" in pod_sc else []
    groups += [int(g) for g in pod_sc.get("supplementalGroups") or []]
    caps = sc.get("capabilities") or {}
    drop = {c.upper().removeprefix("CAP_") for c in caps.get("drop") or []}
    add = {c.upper().removeprefix("CAP_") for c in caps.get("add") or []}
    bounding = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    return Launch(uid, gid, tuple(sorted(set(groups) | {gid})), tuple(sorted(bounding | add)),
                  sc.get("allowPrivilegeEscalation") is False, bool(sc.get("readOnlyRootFilesystem")))
