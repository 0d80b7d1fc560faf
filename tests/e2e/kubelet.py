"""A kubelet for one machine without Kubernetes: runs pod specs as the program renders them.

Each container is a bubblewrap sandbox in its pod's network namespace, with its own PID
namespace (the entrypoint is PID 1, so signal semantics are the kernel's, as in a real pod),
a read-only root when `readOnlyRootFilesystem` says so, the container's uid/gid and the pod's
fsGroup (via util-linux `setpriv`, all capabilities dropped, no_new_privs), and its volumes:
`emptyDir`, Secret and ConfigMap (items, modes, fsGroup ownership as the kubelet sets them),
and a persistent directory for a StatefulSet's claim.

Probes (exec, httpGet, tcpSocket) run on their periods with their timeouts and thresholds;
a failed liveness probe restarts the container; deleting a pod runs `preStop`, then SIGTERM to
PID 1, then SIGKILL when `terminationGracePeriodSeconds` is over. What it cannot do: no
seccomp profile, no cgroup limits, no image pull (an `Image` stands in for the image).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.e2e.images import Image

BWRAP, NSENTER, SETPRIV = "/usr/bin/bwrap", "/usr/bin/nsenter", "/usr/bin/setpriv"
# As the kubelet: the first restart comes at once, then 10 s doubling to 5 minutes.
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, unknown stay."""
    out = _VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), text.replace("$$(", "\0("))
    return out.replace("\0(", "$(")


@dataclass
class ObjectStore:
    """The Secrets and ConfigMaps of the stack, by name, with their real values."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)

    def secret(self, name: str, key: str) -> str:
        return self.secrets[name][key]

    def config_map(self, name: str, key: str) -> str:
        return self.config_maps[name][key]


@dataclass
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


@dataclass
class Events:
    """What happened, with timestamps, for the scenarios to assert on."""

    lines: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, who: str, what: str) -> None:
        with self.lock:
            self.lines.append((time.monotonic(), who, what))

    def since(self, t: float, who: Optional[str] = None) -> list[str]:
        with self.lock:
            return [w for ts, o, w in self.lines if ts >= t and (who is None or o == who)]


class Container:
    """One container of a pod: its process, restarts and probe state."""

    def __init__(self, pod: Pod, spec: dict[str, Any], image: Image) -> None:
        self.pod = pod
        self.spec = spec
        self.image = image
        self.name: str = spec["name"]
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.handled: Optional[subprocess.Popen[bytes]] = None
        self.pid1: Optional[int] = None
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.started = False  # the startup probe passed (or there is none)
        self.ready = False
        self.held = False  # stopped on purpose (a fault): not restarted until resumed
        self.terminating = False
        self.last_readiness: Optional[ProbeResult] = None
        self.lock = threading.Lock()
        self.env = self._environment()
        self.argv = self._argv()
        self.log_dir = pod.root / "logs"

    # -- what runs ------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """Image env, then envFrom, then env (later wins), with $(VAR) expansion in env."""
        store, pod = self.pod.store, self.pod
        env: dict[str, str] = {**self.image.env, "HOSTNAME": pod.name}
        for source in self.spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = store.config_maps[source["configMapRef"]["name"]]
            else:
                data = store.secrets[source["secretRef"]["name"]]
            env.update({prefix + k: v for k, v in data.items()})
        for item in self.spec.get("env") or []:
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
                raise ValueError(f"{pod.name}/{self.name}: unsupported env source {source}")
        # As runc: HOME, unless set, is the uid's home in the image's /etc/passwd, else "/".
        env.setdefault("HOME", self._home(self.security()[0]))
        return env

    def _home(self, uid: int) -> str:
        for line in self.pod.etc_files["passwd"].read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[2] == str(uid):
                return fields[5]
        return "/"

    def _argv(self) -> list[str]:
        """A `command` replaces the ENTRYPOINT, `args` the CMD; a command alone drops the CMD."""
        command, args = self.spec.get("command"), self.spec.get("args")
        entrypoint = list(command) if command is not None else list(self.image.entrypoint)
        if args is not None:
            cmd = list(args)
        elif command is not None:
            cmd = []
        else:
            cmd = list(self.image.cmd)
        return [expand(str(a), self.env) for a in entrypoint + cmd]

    def security(self) -> tuple[int, int, list[int], bool]:
        """uid, gid, supplementary groups (fsGroup) and read-only root, as pod + container say."""
        pod_sc = self.pod.spec.get("securityContext") or {}
        sc = self.spec.get("securityContext") or {}
        uid = int(sc.get("runAsUser", pod_sc.get("runAsUser", self.image.uid)))
        gid = int(sc.get("runAsGroup", pod_sc.get("runAsGroup", self.image.gid)))
        groups = [int(pod_sc["fsGroup"])] if "fsGroup" in pod_sc else []
        groups += [int(g) for g in pod_sc.get("supplementalGroups") or []]
        return uid, gid, sorted(set(groups) | {gid}), bool(sc.get("readOnlyRootFilesystem"))

    def _setpriv(self) -> list[str]:
        uid, gid, groups, _ = self.security()
        return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", f"--groups={','.join(map(str, groups))}",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    def _bwrap(self, info_fd: int) -> list[str]:
        pod = self.pod
        _, _, _, read_only = self.security()
        binds: list[tuple[str, str, str]] = [("--ro-bind", "/usr", "/usr"), ("--ro-bind", "/etc", "/etc")]
        binds += [("--ro-bind", str(path), f"/etc/{name}") for name, path in pod.etc_files.items()]
        binds += [("--ro-bind", str(host), inside) for host, inside in self.image.binds]
        for mount in self.spec.get("volumeMounts") or []:
            host_path = pod.volume_path(mount["name"])
            if mount.get("subPath"):
                host_path = host_path / mount["subPath"]
            flag = "--ro-bind" if mount.get("readOnly") or pod.volume_read_only(mount["name"]) else "--bind"
            binds.append((flag, str(host_path), mount["mountPath"]))
        args = [NSENTER, f"--net={pod.netns_path}", BWRAP,
                "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", pod.name,
                # No --die-with-parent: its PDEATHSIG fires when the starting *thread* ends.
                "--as-pid-1", "--info-fd", str(info_fd),
                "--perms", "0755", "--tmpfs", "/", "--perms", "1777", "--dir", "/tmp"]
        for src, dst in (("usr/bin", "/bin"), ("usr/sbin", "/sbin"), ("usr/lib", "/lib"), ("usr/lib64", "/lib64")):
            args += ["--symlink", src, dst]
        # Mount points on the image's root: their parents as an image has them (0755), which
        # bubblewrap would otherwise create 0700, unreadable to the container's user.
        made: set[str] = {"/", "/tmp"}
        for _, _, inside in binds:
            parents = [str(p) for p in reversed(Path(inside).parents)]
            for parent in parents:
                if parent in made or parent.startswith(("/usr", "/etc")):
                    continue
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        for flag, host, inside in binds:
            args += [flag, host, inside]
        args += ["--proc", "/proc", "--dev", "/dev"]
        if read_only:
            args += ["--remount-ro", "/"]
        args += ["--chdir", self.spec.get("workingDir") or self.image.workdir]
        return args

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        log = open(self.log_dir / f"{self.name}.{self.restarts}.log", "wb")  # noqa: SIM115 - held by the child
        with log:
            self.proc = subprocess.Popen(
                [*self._bwrap(write_end), *self._setpriv(), *self.argv],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(write_end,), start_new_session=True,
            )
        os.close(write_end)
        with os.fdopen(read_end) as info:
            text = info.read()
        try:
            self.pid1 = int(json.loads(text)["child-pid"])
        except (ValueError, KeyError) as error:
            raise RuntimeError(f"{self.pod.name}/{self.name}: sandbox did not start: {self.log_tail()}") from error
        self.started = "startupProbe" not in self.spec
        self.ready = False
        self.pod.events.add(self.pod.name, f"{self.name} started (pid {self.pid1})")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        logs = sorted(self.log_dir.glob(f"{self.name}.*.log"), key=lambda p: p.stat().st_mtime)
        if not logs:
            return ""
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:])

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}.*.log")))

    def signal_pid1(self, sig: signal.Signals) -> None:
        if self.pid1 is not None and self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, sig)

    def app_pid(self, pattern: str) -> Optional[int]:
        """Host pid of the innermost process in this container whose command line contains
        `pattern` (an init such as dumb-init carries its child's command line too)."""
        if self.pid1 is None:
            return None
        found, pending = None, [self.pid1]
        while pending:
            pid = pending.pop(0)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            if pattern in cmdline:
                found = pid
            pending.extend(int(c) for c in children)
        return found

    def kill(self, grace: float, reason: str, run_pre_stop: bool = True) -> float:
        """preStop, SIGTERM, then SIGKILL after the grace period; returns seconds to exit."""
        started = time.monotonic()
        self.terminating = True
        self.ready = False
        deadline = started + grace
        hook = ((self.spec.get("lifecycle") or {}).get("preStop") or {})
        if run_pre_stop and hook and self.running():
            if "exec" in hook:
                result = self.exec(hook["exec"]["command"], timeout=max(0.0, deadline - time.monotonic()))
                self.pod.events.add(self.pod.name, f"{self.name} preStop: {'ok' if result.ok else result.detail}")
            elif "sleep" in hook:
                time.sleep(min(float(hook["sleep"]["seconds"]), max(0.0, deadline - time.monotonic())))
        # As container runtimes do: the image's STOPSIGNAL, else SIGTERM.
        self.signal_pid1(self.image.stop_signal)
        assert self.proc is not None
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.pod.events.add(self.pod.name, f"{self.name} did not stop within {grace:.0f} s: SIGKILL")
            self.signal_pid1(signal.SIGKILL)
            self.proc.wait(10)
        seconds = time.monotonic() - started
        self.note_exit(f"stopped ({reason}) in {seconds:.1f} s")
        self.terminating = False
        return seconds

    def note_exit(self, how: str) -> None:
        """Record the exit of the current process once, however it ended."""
        if self.proc is not None and self.handled is not self.proc and self.proc.returncode is not None:
            self.handled = self.proc
            self.exit_codes.append(self.proc.returncode)
            self.pod.events.add(self.pod.name, f"{self.name} {how}, exit {self.proc.returncode}")

    # -- probes -----------------------------------------------------------------------

    def exec(self, command: list[str], timeout: float) -> ProbeResult:
        """Run a command inside the running container, as the container's user, with its env."""
        started = time.monotonic()
        if self.pid1 is None or not self.running():
            return ProbeResult(False, "container not running", 0.0)
        argv = [NSENTER, "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-r", "-w", *self._setpriv(),
                *[expand(str(a), self.env) for a in command]]
        proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return ProbeResult(False, f"timed out after {timeout:.0f} s", time.monotonic() - started)
        text = out.decode(errors="replace").strip()
        return ProbeResult(proc.returncode == 0, f"exit {proc.returncode}: {text[-400:]}", time.monotonic() - started)

    def _port(self, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in self.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"{self.pod.name}/{self.name}: no port named {port}")

    def probe(self, spec: dict[str, Any]) -> ProbeResult:
        timeout = float(spec.get("timeoutSeconds", 1))
        started = time.monotonic()
        if "exec" in spec:
            return self.exec(spec["exec"]["command"], timeout)
        if "httpGet" in spec:
            get = spec["httpGet"]
            url = f"http://{self.pod.ip}:{self._port(get['port'])}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    return ProbeResult(200 <= response.status < 400, f"HTTP {response.status}",
                                       time.monotonic() - started)
            except urllib.error.HTTPError as error:
                # The kubelet's event says only the code; the body (the deep check's report) is for the test's
                # own messages.
                body = error.read(400).decode(errors="replace").strip()
                return ProbeResult(200 <= error.code < 400, f"HTTP {error.code}: {body}", time.monotonic() - started)
            except (OSError, urllib.error.URLError) as error:
                return ProbeResult(False, str(error), time.monotonic() - started)
        if "tcpSocket" in spec:
            try:
                with socket.create_connection((self.pod.ip, self._port(spec["tcpSocket"]["port"])), timeout=timeout):
                    return ProbeResult(True, "connected", time.monotonic() - started)
            except OSError as error:
                return ProbeResult(False, str(error), time.monotonic() - started)
        raise ValueError(f"unsupported probe {spec}")


class Pod:
    """A pod: network namespace, volumes, containers, and the loops that probe and restart them."""

    def __init__(self, name: str, spec: dict[str, Any], ip: str, netns: str, root: Path, store: ObjectStore,
                 images: Callable[[str], Image], etc_files: dict[str, Path], events: Events,
                 claims: Optional[dict[str, Path]] = None, namespace: str = "default") -> None:
        self.name = name
        self.spec = spec
        self.ip = ip
        self.netns = netns
        self.root = root
        self.store = store
        self.etc_files = etc_files
        self.events = events
        self.claims = claims or {}
        self.namespace = namespace
        self.deleted = False
        self.phase = "Pending"
        self._stop = threading.Event()
        self._volumes: dict[str, tuple[Path, bool]] = {}
        self._prepare_volumes()
        self.containers = [Container(self, c, images(c["image"])) for c in spec["containers"]]

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    @property
    def restart_policy(self) -> str:
        return str(self.spec.get("restartPolicy", "Always"))

    @property
    def grace(self) -> float:
        return float(self.spec.get("terminationGracePeriodSeconds", 30))

    def field(self, path: str) -> str:
        values = {"status.podIP": self.ip, "metadata.name": self.name, "metadata.namespace": self.namespace,
                  "spec.nodeName": "e2e-node", "status.hostIP": self.ip}
        return values[path]

    # -- volumes ----------------------------------------------------------------------

    def _fs_group(self) -> Optional[int]:
        group = (self.spec.get("securityContext") or {}).get("fsGroup")
        return None if group is None else int(group)

    def _prepare_volumes(self) -> None:
        fs_group = self._fs_group()
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            if "emptyDir" in volume:
                path = self.root / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                # The kubelet makes emptyDir 0777; with fsGroup, group-owned and setgid.
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                os.chmod(path, 0o2777 if fs_group is not None else 0o777)
                self._volumes[name] = (path, False)
            elif "secret" in volume or "configMap" in volume:
                source = volume.get("secret") or volume["configMap"]
                data = (self.store.secrets[source["secretName"]] if "secret" in volume
                        else self.store.config_maps[source["name"]])
                self._volumes[name] = (self._projected(name, source, data, fs_group), True)
            elif name in self.claims:
                path = self.claims[name]
                self._volumes[name] = (path, False)
            else:
                raise ValueError(f"{self.name}: unsupported volume {volume}")
        for name, path in self.claims.items():
            if name not in self._volumes:
                # A fresh PersistentVolume: world-writable, then fsGroup applied as for emptyDir.
                path.mkdir(parents=True, exist_ok=True)
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                    os.chmod(path, 0o2777)
                self._volumes[name] = (path, False)

    def _projected(self, name: str, source: dict[str, Any], data: dict[str, str], fs_group: Optional[int]) -> Path:
        """Secret/ConfigMap files as the kubelet writes them: owner root, mode from the spec,
        and with fsGroup: group fsGroup plus group read (the read-only volume mask 0440)."""
        path = self.root / "volumes" / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        default_mode = int(source.get("defaultMode", 0o644))
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        for item in items:
            target = path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
            mode = int(item.get("mode", default_mode))
            if fs_group is not None:
                os.chown(target, 0, fs_group)
                mode |= 0o440
            os.chmod(target, mode)
        os.chmod(path, 0o755)
        return path

    def volume_path(self, name: str) -> Path:
        return self._volumes[name][0]

    def volume_read_only(self, name: str) -> bool:
        return self._volumes[name][1]

    # -- running ------------------------------------------------------------------------

    def start(self) -> None:
        self.phase = "Running"
        for container in self.containers:
            container.start()
            for kind in ("startup", "readiness", "liveness", "supervise"):
                threading.Thread(target=self._loop, args=(container, kind), daemon=True,
                                 name=f"{self.name}/{container.name}/{kind}").start()

    @property
    def ready(self) -> bool:
        return not self.deleted and all(c.ready for c in self.containers)

    def _loop(self, c: Container, kind: str) -> None:
        if kind == "supervise":
            self._supervise(c)
            return
        spec = c.spec.get(f"{kind}Probe")
        if not spec:
            if kind == "readiness":
                # No readiness probe: ready once started.
                while not self._stop.is_set():
                    c.ready = c.running() and c.started and not c.terminating
                    self._stop.wait(0.2)
            return
        period = float(spec.get("periodSeconds", 10))
        failures_allowed = int(spec.get("failureThreshold", 3))
        successes_needed = int(spec.get("successThreshold", 1))
        self._stop.wait(float(spec.get("initialDelaySeconds", 0)))
        failures = successes = 0
        generation = c.restarts
        while not self._stop.is_set():
            if generation != c.restarts:  # a new container instance: probes start over
                generation, failures, successes = c.restarts, 0, 0
                if kind == "startup":
                    c.started = False
            wanted = (kind == "startup" and not c.started) or (kind != "startup" and c.started)
            if not wanted or not c.running() or c.terminating or c.held:
                self._stop.wait(0.2)
                continue
            tick = time.monotonic()
            result = c.probe(spec)
            if kind == "readiness":
                c.last_readiness = result
            if result.ok:
                failures, successes = 0, successes + 1
                if kind == "startup":
                    c.started = True
                    self.events.add(self.name, f"{c.name} startup probe passed")
                elif kind == "readiness" and successes >= successes_needed and not c.ready:
                    c.ready = True
                    self.events.add(self.name, f"{c.name} ready")
            else:
                successes, failures = 0, failures + 1
                if kind == "readiness" and failures >= failures_allowed and c.ready:
                    c.ready = False
                    self.events.add(self.name, f"{c.name} not ready: {result.detail}")
                elif kind in ("liveness", "startup") and failures >= failures_allowed:
                    self.events.add(self.name, f"{c.name} {kind} probe failed {failures}x: {result.detail}")
                    failures = 0
                    threading.Thread(target=self._restart, args=(c, f"{kind} probe failed"), daemon=True).start()
                    self._stop.wait(1.0)
            self._stop.wait(max(0.0, period - (time.monotonic() - tick)))

    def _restart(self, c: Container, reason: str) -> None:
        with c.lock:
            if c.running() and not c.terminating:
                c.kill(self.grace, reason)

    def _supervise(self, c: Container) -> None:
        """Restart per restartPolicy when the container exits; Never ends the pod."""
        backoff = 0.0
        while not self._stop.is_set():
            if c.proc is None or c.proc.poll() is None or c.terminating:
                self._stop.wait(0.2)
                continue
            with c.lock:
                if c.proc.poll() is None or c.terminating:
                    continue
                c.note_exit("exited")
                c.ready = False
                if c.held or self.deleted:
                    self._stop.wait(0.2)
                    continue
                code = c.exit_codes[-1]
                if self.restart_policy == "Never" or (self.restart_policy == "OnFailure" and code == 0):
                    done = all(x.exit_codes and not x.running() for x in self.containers)
                    if done:
                        ok = all(x.exit_codes[-1] == 0 for x in self.containers)
                        self.phase = "Succeeded" if ok else "Failed"
                    return
            if self._stop.wait(backoff):
                return
            backoff = BACKOFF_START if backoff == 0 else min(BACKOFF_MAX, backoff * 2)
            with c.lock:
                if c.held or self.deleted or c.running():
                    continue
                c.restarts += 1
                c.start()

    def hold(self, container: Optional[str] = None) -> None:
        """Stop a container and keep it stopped (a service taken down on purpose)."""
        c = self.container(container)
        c.held = True
        with c.lock:
            if c.running():
                c.kill(self.grace, "held down", run_pre_stop=False)

    def resume(self, container: Optional[str] = None) -> None:
        c = self.container(container)
        with c.lock:
            c.held = False
            c.restarts += 1
            c.start()

    def container(self, name: Optional[str] = None) -> Container:
        return self.containers[0] if name is None else next(c for c in self.containers if c.name == name)

    def delete(self, grace: Optional[float] = None) -> float:
        """As `kubectl delete pod`: out of the endpoints at once, then each container stopped."""
        self.deleted = True  # never restarted from here on
        started = time.monotonic()
        grace = self.grace if grace is None else grace
        for c in self.containers:
            c.ready = False
        workers = []
        for c in self.containers:
            def stop(c: Container = c) -> None:
                with c.lock:
                    if c.running():
                        c.kill(grace, "pod deleted")
            thread = threading.Thread(target=stop, daemon=True)
            thread.start()
            workers.append(thread)
        for thread in workers:
            thread.join()
        self._stop.set()
        self.phase = "Deleted"
        return time.monotonic() - started

    def stop_all(self) -> None:
        """Tear-down at the end of a run: no grace beyond a second."""
        self._stop.set()
        for c in self.containers:
            if c.running():
                c.signal_pid1(signal.SIGKILL)
                assert c.proc is not None
                c.proc.wait(10)
