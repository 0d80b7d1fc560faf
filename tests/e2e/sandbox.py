"""What a container runs, and the sandbox it runs in: its environment and command line as
Kubernetes builds them from the spec and the image, and the bubblewrap arguments that give it
the pod's network namespace, its own PID namespace (the entrypoint as PID 1, so signals behave
as in a pod), a root of the image's shape (read-only when `readOnlyRootFilesystem` says so) and
its volumes. Pure functions of the spec: the lifecycle is `tests.e2e.container`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.e2e.admission import Launch
from tests.e2e.images import Image

if TYPE_CHECKING:
    from tests.e2e.kubelet import Pod

BWRAP, NSENTER, SETPRIV = "/usr/bin/bwrap", "/usr/bin/nsenter", "/usr/bin/setpriv"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, unknown stay."""
    out = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text.replace("$$(", "\0("))
    return out.replace("\0(", "$(")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, parents first (what is gone by the time it is read is left out)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop(0)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found.append(current)
        pending.extend(int(c) for c in children)
    return found


def environment(spec: dict[str, Any], image: Image, pod: Pod, uid: int) -> dict[str, str]:
    """Image env, then envFrom, then env (later wins), with $(VAR) expansion in env."""
    store = pod.store
    env: dict[str, str] = {**image.env, "HOSTNAME": pod.name}
    for source in spec.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = store.config_maps[source["configMapRef"]["name"]]
        else:
            data = store.secrets[source["secretRef"]["name"]]
        env.update({prefix + k: v for k, v in data.items()})
    for item in spec.get("env") or []:
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        source = item.get("valueFrom") or {}
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[item["name"]] = store.secret(ref["name"], ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = store.config_map(ref["name"], ref["key"])
        elif "fieldRef" in source:
            env[item["name"]] = pod.field(source["fieldRef"]["fieldPath"])
        else:
            raise ValueError(f"{pod.name}/{spec['name']}: unsupported env source {source}")
    # As runc: HOME, unless set, is the uid's home in the image's /etc/passwd, else "/".
    env.setdefault("HOME", _home(pod.etc_files["passwd"], uid))
    return env


def _home(passwd: Path, uid: int) -> str:
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5]
    return "/"


def command_line(spec: dict[str, Any], image: Image, env: Mapping[str, str]) -> list[str]:
    """A `command` replaces the ENTRYPOINT, `args` the CMD; a command alone drops the CMD."""
    command, args = spec.get("command"), spec.get("args")
    entrypoint = list(command) if command is not None else list(image.entrypoint)
    if args is not None:
        cmd = list(args)
    elif command is not None:
        cmd = []
    else:
        cmd = list(image.cmd)
    return [expand(str(a), env) for a in entrypoint + cmd]


def bwrap(pod: Pod, spec: dict[str, Any], image: Image, launch: Launch, info_fd: int) -> list[str]:
    """nsenter into the pod's network namespace, then bubblewrap; it dies with the runner."""
    binds: list[tuple[str, str, str]] = [("--ro-bind", "/usr", "/usr"), ("--ro-bind", "/etc", "/etc")]
    binds += [("--ro-bind", str(path), f"/etc/{name}") for name, path in pod.etc_files.items()]
    binds += [("--ro-bind", str(host), inside) for host, inside in image.binds]
    binds += [("--bind", str(host), inside) for host, inside in image.writable]
    for mount in spec.get("volumeMounts") or []:
        volume = pod.volumes[mount["name"]]
        host_path = volume.path / mount["subPath"] if mount.get("subPath") else volume.path
        flag = "--ro-bind" if mount.get("readOnly") or volume.read_only else "--bind"
        binds.append((flag, str(host_path), mount["mountPath"]))
    args = [NSENTER, f"--net={pod.netns_path}", BWRAP, "--die-with-parent",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", pod.name,
            "--as-pid-1", "--info-fd", str(info_fd),
            "--perms", "0755", "--tmpfs", "/", "--perms", "1777", "--dir", "/tmp"]
    for src, dst in (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64")):
        args += ["--symlink", src, dst]
    # Mount points on the image's root: their parents as an image has them (0755), which
    # bubblewrap would otherwise create 0700, unreadable to the container's user.
    made: set[str] = {"/", "/tmp"}
    for _, _, inside in binds:
        for parent in (str(p) for p in reversed(Path(inside).parents)):
            if parent in made or parent.startswith(("/usr", "/etc")):
                continue
            made.add(parent)
            args += ["--perms", "0755", "--dir", parent]
    for flag, host, inside in binds:
        args += [flag, host, inside]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if launch.read_only_root:
        args += ["--remount-ro", "/"]
    args += ["--chdir", spec.get("workingDir") or image.workdir]
    return args
