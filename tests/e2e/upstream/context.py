"""The build context as Docker sends it: the source directory through its `.dockerignore`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.upstream.common import UpstreamError
from tests.e2e.upstream.dockerfile import DOCKERFILE, CopyInstruction


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's translation: `**` spans directories, `*` and `?` do not."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif ch in "[]-^":
            out += ch
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


@dataclass(frozen=True)
class DockerIgnore:
    patterns: tuple[tuple[bool, re.Pattern[str], str], ...]
    """(is_exception, regex, source line)."""

    @classmethod
    def read(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        return cls.parse(path.read_text() if path.is_file() else "")

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        patterns: list[tuple[bool, re.Pattern[str], str]] = []
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            exception = stripped.startswith("!")
            body = os.path.normpath(stripped[1:].strip() if exception else stripped).lstrip("/")
            if body not in ("", "."):
                patterns.append((exception, _pattern_regex(body), stripped))
        return cls(tuple(patterns))

    @property
    def has_exceptions(self) -> bool:
        return any(exc for exc, _, _ in self.patterns)

    def excluded(self, rel: str) -> bool:
        """As Docker decides: the last pattern matching the path or one of its parents wins."""
        parents = rel.split("/")[:-1]
        candidates = [rel] + ["/".join(parents[: i + 1]) for i in range(len(parents))]
        matched = False
        for exception, regex, _ in self.patterns:
            if any(regex.match(c) for c in candidates):
                matched = not exception
        return matched


@dataclass(frozen=True)
class Context:
    root: Path
    ignore: DockerIgnore

    @classmethod
    def of(cls, root: Path) -> Context:
        return cls(root, DockerIgnore.read(root))

    def walk(self, rel: str = "", *, skip_git: bool = False) -> Iterator[tuple[str, Path]]:
        """Paths under `rel` that the build context holds (directories first), as (rel, path)."""
        start = self.root / rel if rel else self.root
        for dirpath, dirnames, filenames in os.walk(start):
            here = Path(dirpath)
            keep: list[str] = []
            for name in sorted(dirnames):
                sub = (here / name).relative_to(self.root).as_posix()
                if skip_git and name == ".git":
                    continue
                if (here / name).is_symlink():
                    filenames.append(name)
                    continue
                if self.ignore.excluded(sub) and not self.ignore.has_exceptions:
                    continue
                keep.append(name)
                if not self.ignore.excluded(sub):
                    yield sub, here / name
            dirnames[:] = keep
            for name in sorted(filenames):
                sub = (here / name).relative_to(self.root).as_posix()
                if not self.ignore.excluded(sub) or sub in (DOCKERFILE, ".dockerignore"):
                    yield sub, here / name

    def digest(self, into: Any) -> int:
        """Feed every file of the context (path, kind, exec bit, content) into a hash; count them."""
        count = 0
        for rel, path in sorted(self.walk(skip_git=True)):
            if path.is_symlink():
                into.update(f"L {rel}\0{os.readlink(path)}\0".encode())
            elif path.is_file():
                into.update(f"F {rel}\0{os.stat(path).st_mode & 0o111:o}\0".encode())
                with path.open("rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        into.update(chunk)
                into.update(b"\0")
                count += 1
            else:
                into.update(f"D {rel}\0".encode())
        return count

    def sources(self, copy: CopyInstruction) -> list[str]:
        """What a COPY from the context names, relative to the context (globs expanded)."""
        found: list[str] = []
        for pattern in copy.sources:
            clean = os.path.normpath(pattern).lstrip("/")
            if clean.startswith(".."):
                raise UpstreamError(
                    f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: {pattern} is outside the context"
                )
            if any(ch in clean for ch in "*?["):
                matches = sorted(p.relative_to(self.root).as_posix() for p in self.root.glob(clean))
                matches = [m for m in matches if not self.ignore.excluded(m)]
            else:
                matches = [clean] if (self.root / clean).exists() and not self.ignore.excluded(clean) else []
            if not matches:
                raise UpstreamError(
                    f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: {pattern} is not in the context"
                )
            found += matches
        return found
