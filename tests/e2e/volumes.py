"""A pod's volumes as the kubelet lays them out, and what its eviction manager measures of them.

`emptyDir` is a fresh directory (mode 0777; with an fsGroup, group-owned and setgid), Secret
and ConfigMap volumes are files written from the objects (owner root, the spec's modes; with
an fsGroup, group fsGroup plus group read, as the kubelet's read-only volumes are), and a
StatefulSet's claim is a directory that outlives the pod. `over_limit` is what the eviction
manager compares with an emptyDir's `sizeLimit` (the kubelet's `du`); `scrub` removes every file
a Secret was written to, so nothing secret stays on disk after the run.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.e2e.limits import quantity


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
class Volume:
    name: str
    path: Path
    read_only: bool
    size_limit: Optional[int] = None
    secret: bool = False


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


@dataclass
class PodVolumes:
    root: Path
    spec: dict[str, Any]
    store: ObjectStore
    claims: dict[str, Path]
    volumes: dict[str, Volume] = field(default_factory=dict)

    def __post_init__(self) -> None:
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        group = None if fs_group is None else int(fs_group)
        for volume in self.spec.get("volumes") or []:
            name = volume["name"]
            if "emptyDir" in volume:
                limit = (volume["emptyDir"] or {}).get("sizeLimit")
                path = self._writable(self.root / "volumes" / name, group)
                self.volumes[name] = Volume(name, path, False, int(quantity(limit)) if limit else None)
            elif "secret" in volume or "configMap" in volume:
                source = volume.get("secret") or volume["configMap"]
                data = (self.store.secrets[source["secretName"]] if "secret" in volume
                        else self.store.config_maps[source["name"]])
                self.volumes[name] = Volume(name, self._projected(name, source, data, group), True,
                                            secret="secret" in volume)
            elif name in self.claims:
                self.volumes[name] = Volume(name, self.claims[name], False)
            else:
                raise ValueError(f"unsupported volume {volume}")
        for name, path in self.claims.items():
            if name not in self.volumes:
                # A fresh PersistentVolume: world-writable, then fsGroup applied as for emptyDir.
                self.volumes[name] = Volume(name, self._writable(path, group), False)

    @staticmethod
    def _writable(path: Path, fs_group: Optional[int]) -> Path:
        new = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        if fs_group is not None:
            os.chown(path, 0, fs_group)
        if new or fs_group is not None:
            os.chmod(path, 0o2777 if fs_group is not None else 0o777)
        return path

    def _projected(self, name: str, source: dict[str, Any], data: dict[str, str], fs_group: Optional[int]) -> Path:
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

    def __getitem__(self, name: str) -> Volume:
        return self.volumes[name]

    def over_limit(self) -> list[str]:
        """emptyDirs whose usage exceeds their sizeLimit, as the eviction manager words it."""
        over = []
        for v in self.volumes.values():
            if v.size_limit is not None:
                used = _du(v.path)
                if used > v.size_limit:
                    over.append(f"Usage of EmptyDir volume \"{v.name}\" exceeds the limit \"{v.size_limit}\" "
                                f"(used {used})")
        return over

    def scrub(self) -> None:
        for v in self.volumes.values():
            if v.secret and v.path.exists():
                shutil.rmtree(v.path)
