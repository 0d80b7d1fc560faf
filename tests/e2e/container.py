"""One container: its instances, how they stop, and how the kubelet probes them.

Each instance is the sandbox `tests.e2e.sandbox` describes, with the credentials and
capabilities `tests.e2e.admission.launch` derives from the spec (applied with util-linux
`setpriv`) and a cgroup of its own with the spec's limits (`tests.e2e.limits`), joined before
the first instruction runs. It dies with the runner (`tests.e2e.spawn`).

A container whose cgroup saw an OOM kill when it exited is `OOMKilled`, as the runtime reports
it. Deleting runs `preStop`, then the image's STOPSIGNAL to PID 1, then SIGKILL when the grace
period is over. What it does not do: no seccomp profile; bubblewrap always sets no_new_privs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from tests.e2e import spawn, timeouts
from tests.e2e.admission import Launch
from tests.e2e.images import Image
from tests.e2e.limits import Cgroup, Limits
from tests.e2e.sandbox import NSENTER, SETPRIV, bwrap, command_line, environment, expand, process_tree

if TYPE_CHECKING:
    from tests.e2e.kubelet import Pod



@dataclass
class ProbeResult:
    ok: bool
    detail: str
    seconds: float


class Container:
    def __init__(self, pod: Pod, spec: dict[str, Any], image: Image, launch: Launch) -> None:
        self.pod = pod
        self.spec = spec
        self.image = image
        self.launch = launch
        self.name: str = spec["name"]
        self.limits = Limits.of(spec)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.handled: Optional[subprocess.Popen[bytes]] = None
        self.cgroup: Optional[Cgroup] = None
        self.pid1: Optional[int] = None
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.reasons: list[str] = []
        """Why each instance ended: Completed, Error or OOMKilled (as `kubectl describe` says)."""
        self.waiting = ""
        self.started = False  # the startup probe passed (or there is none)
        self.ready = False
        self.held = False  # stopped on purpose (a fault): not restarted until resumed
        self.terminating = False
        self.last_readiness: Optional[ProbeResult] = None
        self.lock = threading.Lock()
        self.env = environment(spec, image, pod, launch.uid)
        if image.recorder is not None:
            self.env = image.recorder.env(self.env, pod.name, self.name)
        self.argv = command_line(spec, image, self.env)
        self.log_dir = pod.root / "logs"

    def _setpriv(self) -> list[str]:
        # The uid change clears the parent-death signal bubblewrap set: set it again, last, so
        # the container's PID 1 (and with it its PID namespace) dies when its sandbox does.
        return [SETPRIV, *self.launch.setpriv(), "--pdeathsig", "KILL", "--"]

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """A new instance: a fresh cgroup with the spec's limits, then the sandbox inside it."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.cgroup = self.pod.cgroup.child(f"{self.name}-{self.restarts}")
        self.cgroup.set_limits(self.limits)
        read_end, write_end = os.pipe()
        log = open(self.log_dir / f"{self.name}.{self.restarts}.log", "wb")  # noqa: SIM115 - held by the child
        with log:
            sandbox = bwrap(self.pod, self.spec, self.image, self.launch, write_end)
            self.proc = spawn.popen(
                spawn.cgroup_join(self.cgroup.procs_files, [*sandbox, *self._setpriv(), *self.argv]),
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
        self.waiting = ""
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
        found = None
        for pid in process_tree(self.pid1):
            with contextlib.suppress(OSError):
                if pattern in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found = pid
        return found

    def kill(self, grace: float, reason: str, run_pre_stop: bool = True) -> float:
        """preStop, STOPSIGNAL, then SIGKILL after the grace period; returns seconds to exit."""
        started = time.monotonic()
        self.terminating = True
        self.ready = False
        deadline = started + grace
        hook = ((self.spec.get("lifecycle") or {}).get("preStop") or {})
        if run_pre_stop and hook and self.running():
            if "exec" in hook:
                result = self.exec(hook["exec"]["command"], timeout=max(0.0, deadline - time.monotonic()))
                self.pod.events.add(self.pod.name, f"{self.name} preStop {'ok' if result.ok else result.detail} "
                                                   f"after {result.seconds:.1f} s")
            elif "sleep" in hook:
                time.sleep(min(float(hook["sleep"]["seconds"]), max(0.0, deadline - time.monotonic())))
                self.pod.events.add(self.pod.name, f"{self.name} preStop ok after {time.monotonic() - started:.1f} s")
        # As container runtimes do: the image's STOPSIGNAL, else SIGTERM.
        self.signal_pid1(self.image.stop_signal)
        assert self.proc is not None
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.pod.events.add(self.pod.name, f"{self.name} did not stop within {grace:.0f} s: SIGKILL")
            self.signal_pid1(signal.SIGKILL)
            self.proc.wait(timeouts.REAP)
        seconds = time.monotonic() - started
        self.note_exit(f"stopped ({reason}) in {seconds:.1f} s")
        self.terminating = False
        return seconds

    def note_exit(self, how: str) -> None:
        """Record the exit of the current instance once, however it ended, and free its cgroup."""
        if self.proc is None or self.handled is self.proc or self.proc.returncode is None:
            return
        self.handled = self.proc
        code = self.proc.returncode
        oom = self.cgroup is not None and self.cgroup.oom_kills() > 0
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        self.exit_codes.append(code)
        self.reasons.append(reason)
        self.pod.events.add(self.pod.name, f"{self.name} {how}, exit {code}, reason {reason}")
        self.pod.meter_final(self)
        if self.cgroup is not None:
            self.cgroup.remove()

    # -- probes -----------------------------------------------------------------------

    def exec(self, command: list[str], timeout: float) -> ProbeResult:
        """Run a command inside the running container, as the container's user, with its env,
        in its cgroup (what it uses counts against the container's limits, as in a cluster)."""
        started = time.monotonic()
        if self.pid1 is None or not self.running() or self.cgroup is None:
            return ProbeResult(False, "container not running", 0.0)
        argv = spawn.cgroup_join(self.cgroup.procs_files, [
            NSENTER, "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-r", "-w", *self._setpriv(),
            *[expand(str(a), self.env) for a in command]])
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

    def port(self, port: Any) -> int:
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
            url = f"http://{self.pod.ip}:{self.port(get['port'])}{get.get('path', '/')}"
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
                with socket.create_connection((self.pod.ip, self.port(spec["tcpSocket"]["port"])), timeout=timeout):
                    return ProbeResult(True, "connected", time.monotonic() - started)
            except OSError as error:
                return ProbeResult(False, str(error), time.monotonic() - started)
        raise ValueError(f"unsupported probe {spec}")
