"""What stands in for each image the manifests name, since nothing can be pulled here.

The bundler image is the `/app` tree `tests.e2e.upstream` lays out from the pinned Dockerfile, with
that Dockerfile's ENTRYPOINT, CMD, WORKDIR and user. Third-party images are Debian's binaries
of the same programs (PostgreSQL, redis-server) or a stand-in speaking the same protocol
(moto for MinIO's S3, boto3 for `mc mb`), each with the entrypoint semantics of the image it
replaces, so the manifest's `command`/`args` mean what they mean in the cluster.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tests.e2e.loads import Recorder
from tests.e2e.registry import Reference
from tests.e2e.upstream import Prepared

HERE = Path(__file__).resolve().parent
STAND_INS = HERE / "images"
# Where the stand-in scripts and the generated `bin/` appear inside a container.
STAND_IN_DIR = "/opt/e2e"
STAND_IN_BIN = "/opt/e2e-bin"
# The S3 stand-in's record of requests, on the pod's /tmp volume.
REQUEST_LOG = "/tmp/s3-requests.log"
# PATH of the official images (node:20-alpine, postgres, redis, minio).
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# node:20-alpine ships yarn 1.22.22 under /opt/yarn-v1.22.22; here the project's pinned copy.
YARN_DIR = "/opt/yarn-v1.22.22"


@dataclass(frozen=True)
class Image:
    name: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    workdir: str = "/"
    uid: int = 0
    gid: int = 0
    env: dict[str, str] = field(default_factory=dict)
    binds: tuple[tuple[Path, str], ...] = ()
    users: tuple[tuple[str, int], ...] = ()
    """Accounts the image's /etc/passwd has (name, uid), which some programs look up."""
    stop_signal: signal.Signals = signal.SIGTERM
    """The image's STOPSIGNAL, which the runtime sends instead of SIGTERM."""
    writable: tuple[tuple[Path, str], ...] = ()
    """Directories of this machine the runner binds writable (the load recorder's output)."""
    recorder: Optional[Recorder] = None
    """Records what each of the image's node processes loads (tests.e2e.loads)."""


def _signal(name: Optional[str]) -> signal.Signals:
    """A Dockerfile STOPSIGNAL (`SIGINT`, `INT`) as a signal; none means SIGTERM."""
    if not name:
        return signal.SIGTERM
    return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]


# The project's venv, where the Python stand-ins' interpreter and packages are. At a fixed path:
# the checkout may live under /tmp, which a pod's /tmp volume would cover.
VENV_DIR = "/opt/e2e-venv"
PYTHON = f"{VENV_DIR}/bin/python"


def _python_binds() -> tuple[tuple[Path, str], ...]:
    """The venv, and the installation its interpreter links to (at its own path: the venv's
    `bin/python` is an absolute symlink to it)."""
    return ((Path(sys.prefix), VENV_DIR), (Path(sys.base_prefix).resolve(), str(Path(sys.base_prefix).resolve())))


class ImageSet:
    """The stand-in for each image a manifest may name."""

    def __init__(self, app: Prepared, bin_dir: Path, yarn_dir: Path, recorder: Recorder,
                 extra_env: dict[str, str], extra_binds: tuple[tuple[Path, str], ...] = ()) -> None:
        self.app = app
        self.extra_env = extra_env
        self.extra_binds = extra_binds
        self._write_bin(bin_dir)
        common = ((STAND_INS, STAND_IN_DIR), (bin_dir, STAND_IN_BIN), *_python_binds(), *extra_binds)
        path = f"{STAND_IN_BIN}:{IMAGE_PATH}"
        self.bundler = Image(
            name="bundler",
            entrypoint=tuple(app.entrypoint), cmd=tuple(app.cmd), workdir=app.workdir, uid=app.uid, gid=app.gid,
            env={"PATH": f"{IMAGE_PATH}:{YARN_DIR}/bin", "NODE_VERSION": "20", "YARN_VERSION": "1.22.22", **extra_env},
            binds=((app.app_dir, app.workdir), (yarn_dir, YARN_DIR), *recorder.binds, *extra_binds),
            users=(("bundler", app.uid),),
            stop_signal=_signal(app.stop_signal),
            writable=recorder.writable,
            recorder=recorder,
        )
        self.postgres = Image("postgres", (f"{STAND_IN_DIR}/postgres-entrypoint.sh",), ("postgres",),
                              env={"PATH": path, "PGDATA": "/var/lib/postgresql/data"}, binds=common,
                              users=(("postgres", 70),), stop_signal=signal.SIGINT)
        self.redis = Image("redis", ("docker-entrypoint.sh",), ("redis-server",), workdir="/data",
                           env={"PATH": path}, binds=common, users=(("redis", 999),))
        self.minio = Image("minio", (f"{STAND_IN_BIN}/minio",), ("minio",),
                           env={"PATH": path, "E2E_REQUEST_LOG": REQUEST_LOG, **extra_env},
                           binds=common)
        self.mc = Image("mc", ("mc",), (), env={"PATH": path}, binds=common)

    @staticmethod
    def _write_bin(bin_dir: Path) -> None:
        """Wrappers named as the images' programs, running the stand-ins with this interpreter."""
        bin_dir.mkdir(parents=True, exist_ok=True)
        for program, script in (("minio", "minio.py"), ("mc", "mc.py")):
            wrapper = bin_dir / program
            wrapper.write_text(f'#!/bin/sh\nexec {PYTHON} {STAND_IN_DIR}/{script} "$@"\n')
            wrapper.chmod(0o755)

    def stand_in(self, ref: str, built: bool) -> Image:
        """What runs for a reference the registry let the kubelet pull: the bundler tree for
        what a stack's build pushed, else the stand-in for the repository's program."""
        if built:
            return self.bundler
        name = Reference.parse(ref).repository.rsplit("/", 1)[-1]
        found = {"postgres": self.postgres, "redis": self.redis, "minio": self.minio, "mc": self.mc}.get(name)
        if found is None:
            raise LookupError(f"no stand-in for image {ref}")
        return found
