"""Reading the upstream Dockerfile: stages, COPY, exec form, the shell commands of RUN, and the
users and groups its `addgroup`/`adduser` lines create."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Optional

from tests.e2e.upstream.common import UpstreamError

DOCKERFILE = "Dockerfile"  # the image component builds the context's default Dockerfile
WHO = "tests/e2e/upstream"

# Users and groups the base image (node:20-alpine) already has. `adduser -S` without `-G` puts
# a system user in `nogroup` (busybox adduser), so USER's primary group can come from here.
BASE_IMAGE_GROUPS = {"root": 0, "node": 1000, "nogroup": 65533, "nobody": 65534}
BASE_IMAGE_USERS = {"root": (0, 0), "node": (1000, 1000), "nobody": (65534, 65534)}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def __str__(self) -> str:
        return f"{self.keyword} {' '.join(self.args.split())}"


@dataclass
class Stage:
    index: int
    base: str
    name: Optional[str]
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions; continuation lines joined, comments dropped."""
    for raw in text.splitlines():
        directive = re.match(r"^#\s*escape\s*=\s*(\S)", raw)
        if directive and directive.group(1) != "\\":
            raise UpstreamError(f"the Dockerfile sets escape={directive.group(1)}: only the default \\ is read")
        if not raw.startswith("#"):
            break
    stages: list[Stage] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if raw.rstrip().endswith("\\"):
            parts.append(raw.rstrip()[:-1])
            continue
        parts.append(raw)
        logical = "".join(parts).strip()
        parts = []
        keyword, _, args = logical.partition(" ")
        ins = Instruction(keyword.upper(), args.strip(), start)
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), words[0], name))
        elif not stages:
            if ins.keyword != "ARG":
                raise UpstreamError(f"Dockerfile line {start}: {ins.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(ins)
    if parts:
        raise UpstreamError("the Dockerfile ends inside a continued line")
    if not stages:
        raise UpstreamError("the Dockerfile has no FROM")
    return stages


@dataclass(frozen=True)
class CopyInstruction:
    instruction: Instruction
    sources: list[str]
    dest: str
    chown: Optional[str]
    from_stage: Optional[str]


def parse_copy(ins: Instruction) -> CopyInstruction:
    rest = ins.args.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        rest = rest.lstrip()
        name, _, value = flag[2:].partition("=")
        if name not in ("chown", "from", "link"):
            raise UpstreamError(f"Dockerfile line {ins.line}: `{ins}`: COPY --{name} is not emulated by {WHO}")
        flags[name] = value
    if "$" in rest:
        raise UpstreamError(f"Dockerfile line {ins.line}: `{ins}`: variables in COPY are not emulated")
    parts = json.loads(rest) if rest.startswith("[") else rest.split()
    if not isinstance(parts, list) or len(parts) < 2 or not all(isinstance(p, str) for p in parts):
        raise UpstreamError(f"Dockerfile line {ins.line}: `{ins}`: expected sources and a destination")
    return CopyInstruction(ins, parts[:-1], parts[-1], flags.get("chown"), flags.get("from"))


def copies(stage: Stage) -> list[CopyInstruction]:
    return [parse_copy(i) for i in stage.instructions if i.keyword == "COPY"]


def exec_form(ins: Instruction) -> list[str]:
    """ENTRYPOINT/CMD: the JSON (exec) form as is; the shell form as Docker runs it."""
    text = ins.args.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    return ["/bin/sh", "-c", text]


def shell_commands(script: str, where: str) -> list[list[str]]:
    """`a && b && c` as [[a...], [b...], [c...]]; any other shell operator is refused."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == "&&":
            commands.append([])
        elif token in (";", "||", "|", "&", "(", ")", "<"):
            raise UpstreamError(f"{where}: `{script}`: shell operator {token!r} is not emulated by {WHO}")
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def parse_env(ins: Instruction) -> dict[str, str]:
    words = shlex.split(ins.args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    out = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise UpstreamError(f"Dockerfile line {ins.line}: `{ins}`: cannot read")
        out[key] = value
    return out


def resolve_in(workdir: str, path: str) -> PurePosixPath:
    return PurePosixPath(os.path.normpath(str(PurePosixPath(workdir) / path)))


def _getopt(args: list[str], with_value: str, long_names: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """busybox-style option parsing (options may follow operands)."""
    opts: dict[str, str] = {}
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, _, value = arg[2:].partition("=")
            short = long_names.get(name)
            if short is None:
                raise UpstreamError(f"option --{name} is not understood")
            if short in with_value and not value:
                i += 1
                value = args[i]
            opts[short] = value
        elif arg.startswith("-") and len(arg) > 1:
            for j, flag in enumerate(arg[1:], 1):
                if flag in with_value:
                    value = arg[j + 1 :]
                    if not value:
                        i += 1
                        value = args[i]
                    opts[flag] = value
                    break
                opts[flag] = ""
        else:
            operands.append(arg)
        i += 1
    return opts, operands


@dataclass
class Accounts:
    """Users and groups known in a stage: the base image's plus those its RUN lines add."""

    groups: dict[str, int] = field(default_factory=lambda: dict(BASE_IMAGE_GROUPS))
    users: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(BASE_IMAGE_USERS))

    def addgroup(self, args: list[str]) -> None:
        opts, operands = _getopt(args, "g", {"gid": "g", "system": "S"})
        if len(operands) == 2:  # `addgroup USER GROUP`: membership only
            return
        if len(operands) != 1 or "g" not in opts:
            raise UpstreamError(f"`addgroup {' '.join(args)}`: need a group name and -g GID")
        self.groups[operands[0]] = int(opts["g"])

    def adduser(self, args: list[str]) -> None:
        long_names = {"home": "h", "gecos": "g", "shell": "s", "ingroup": "G", "disabled-password": "D",
                      "empty-password": "D", "system": "S", "no-create-home": "H", "uid": "u", "skel": "k"}
        opts, operands = _getopt(args, "hgsGuk", long_names)
        if len(operands) != 1 or "u" not in opts:
            raise UpstreamError(f"`adduser {' '.join(args)}`: need a user name and -u UID")
        uid = int(opts["u"])
        # busybox adduser: -G GROUP, else a system user (-S) goes into nogroup, else a new group gid=uid.
        if "G" in opts:
            gid = self.gid_of(opts["G"])
        elif "S" in opts:
            gid = self.gid_of("nogroup")
        else:
            gid = uid
            self.groups.setdefault(operands[0], uid)
        self.users[operands[0]] = (uid, gid)

    def gid_of(self, group: str) -> int:
        if group.isdigit():
            return int(group)
        if group not in self.groups:
            raise UpstreamError(
                f"group {group!r} is not created in the Dockerfile's runtime stage nor known in its base image"
            )
        return self.groups[group]

    def uid_of(self, user: str) -> tuple[int, int]:
        if user.isdigit():
            return int(user), int(user)
        if user not in self.users:
            raise UpstreamError(
                f"user {user!r} is not created in the Dockerfile's runtime stage nor known in its base image"
            )
        return self.users[user]

    def owner(self, spec: Optional[str]) -> tuple[int, int]:
        """`--chown=user:group` (a user alone means gid = uid, as Docker does)."""
        if spec is None:
            return 0, 0
        user, _, group = spec.partition(":")
        uid = self.uid_of(user)[0]
        return uid, (self.gid_of(group) if group else uid)
