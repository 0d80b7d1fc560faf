"""What a tree costs as an image layer: apparent bytes (what `du --apparent-size` counts), bytes on
disk (blocks, as a node's disk pays for an unpacked layer), files, and the gzip-compressed size of
its tar (what a registry stores and a node pulls; gzip level 6, BuildKit's default)."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path


class _Count:
    """A sink that only counts what is written to it."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def measure(tree: Path) -> dict[str, int]:
    apparent = disk = files = 0
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            apparent += st.st_size
            disk += st.st_blocks * 512
            files += 1
            paths.append(path)
    sink = _Count()
    with (gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as zipped,
          tarfile.open(fileobj=zipped, mode="w|", format=tarfile.PAX_FORMAT) as tar):
        for path in paths:
            tar.add(path, arcname=path.relative_to(tree).as_posix(), recursive=False)
    return {"apparent": apparent, "disk": disk, "files": files, "compressed": sink.bytes}
