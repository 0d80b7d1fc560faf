"""Prepare the upstream bundler's `/app` tree as its Dockerfile's runtime stage lays it out, without Docker.

    python -m tools.upstream [--print-dir] [--relock]

For the runtime test that runs the real bundler (`node lib/index.js`, the workers, the admin) on
this machine. The tree is built from the commit the dev stack builds (`x402-bundler:imageGitRef`
in Pulumi.dev.yaml), so the test runs what `pulumi up` would put in the image:

* Source: `$X402_UPSTREAM_SRC` (a local checkout), else a clone of `imageContext` at
  `imageGitRef` into `build/upstream/clone-<ref>`. Its commit (`git rev-parse HEAD`, else
  `$X402_UPSTREAM_COMMIT`, else a `SNAPSHOT.md` beside it naming one) must be `imageGitRef`.
* Builder stage, emulated step by step from the Dockerfile (an unknown step is an error, so an
  upstream change is noticed): `yarn install --frozen-lockfile` becomes `npm ci` with the lock
  file committed at `tools/upstream/package-lock.json`, because the npm registry reached here
  lacks two pinned versions (see `SUBSTITUTIONS`); dev dependencies are installed, as `yarn install`
  does and the image keeps. `yarn build` runs the upstream's own `tsc`, whose type errors at the
  substituted packages are expected; the emitted JavaScript is adapted at exactly those places
  (see `ADAPTATIONS`).
* Runtime stage, read from the Dockerfile: WORKDIR, every COPY (from the build context through
  `.dockerignore`, or `--from=` the builder), the user and group ids from its `addgroup`/`adduser`
  RUN line, ENTRYPOINT, CMD, EXPOSE. The tree lands in `build/upstream/<key>/app` with
  `image.json` and the build logs beside it; `<key>` hashes the build context (what Docker would
  send: .dockerignore applied), this file, the lock file, the commit and node's version, so an
  unchanged input reuses a complete tree (marked `COMPLETE`, moved into place in one rename;
  older keys' trees are removed once a new one is complete).

`prepare()` returns a `Prepared`; the CLI prints the path of the tree (exit 2 on an
`UpstreamError`). Progress goes to stderr, prefixed `upstream: `.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOL_SOURCE = Path(__file__).resolve()
STACK_FILE = ROOT / "Pulumi.dev.yaml"
BUILD_ROOT = ROOT / "build" / "upstream"
LOCK_FILE = ROOT / "tools" / "upstream" / "package-lock.json"

CONFIG_CONTEXT = "x402-bundler:imageContext"
CONFIG_REF = "x402-bundler:imageGitRef"
ENV_SRC = "X402_UPSTREAM_SRC"
ENV_COMMIT = "X402_UPSTREAM_COMMIT"
GIT_CONTEXT_PREFIXES = ("https://", "git@", "git://")  # as components/image.py reads imageContext
DOCKERFILE = "Dockerfile"  # the image component builds the context's default Dockerfile

MARKER = "COMPLETE"
IMAGE_JSON = "image.json"
KEY_LEN = 16
KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_LEN}}}$")
SHA_RE = re.compile(r"\b[0-9a-f]{40}\b")
REQUIRED_FILES = ("lib/index.js", "lib/jobs/allWorkers.js", "lib/arch/db/knexfile.js", "admin-server.js")

# Users and groups the base image (node:20-alpine) already has. `adduser -S` without `-G` puts
# a system user in `nogroup` (busybox adduser), so USER's primary group can come from here.
BASE_IMAGE_GROUPS = {"root": 0, "node": 1000, "nogroup": 65533, "nobody": 65534}
BASE_IMAGE_USERS = {"root": (0, 0), "node": (1000, 1000), "nobody": (65534, 65534)}


@dataclass(frozen=True)
class Substitution:
    package: str
    upstream: str
    """The spec the upstream package.json asks for (checked, so a change upstream is noticed)."""
    here: str
    """The version the npm registry reached here has."""
    why: str


SUBSTITUTIONS = (
    Substitution("@alexsasharegan/simple-cache", "^1.2.1", "3.3.3", "the registry has no 1.x (only 3.3.3)"),
    Substitution("@ardrive/ardrive-promise-cache", "1.2.0-alpha.6", "1.4.0", "the registry has no 1.2.0-alpha.6"),
)


@dataclass(frozen=True)
class Adaptation:
    path: str
    """Emitted file, relative to the builder's work dir."""
    old: str
    new: str
    count: int
    """Exactly this many occurrences are expected; anything else fails the build."""
    why: str


_TTL_WHY = (
    "ardrive-promise-cache 1.4.0 names cacheParams.cacheTTLMillis cacheTTL (an unknown name leaves the TTL undefined "
    "and the constructor throws)"
)
_EPHEMERAL_WHY = "simple-cache 3 has no TemporaryCache; its EphemeralCache takes the same (capacity, ttlMs)"
ADAPTATIONS = (
    Adaptation(
        "lib/utils/inFlightDataItemCache.js",
        "(0, simple_cache_1.TemporaryCache)(",
        "(0, simple_cache_1.EphemeralCache)(",
        1,
        _EPHEMERAL_WHY,
    ),
    Adaptation("lib/utils/inFlightDataItemCache.js", "cacheTTLMillis:", "cacheTTL:", 1, _TTL_WHY),
    Adaptation("lib/arch/arweaveGateway.js", "cacheTTLMillis:", "cacheTTL:", 1, _TTL_WHY),
    Adaptation("lib/utils/cacheServiceUtils.js", "cacheTTLMillis:", "cacheTTL:", 3, _TTL_WHY),
    Adaptation("lib/routes/multiPartUploads.js", "cacheTTLMillis:", "cacheTTL:", 1, _TTL_WHY),
)
# After adapting, none of these may remain anywhere in the emitted JavaScript.
FORBIDDEN_AFTER_ADAPTING = ("TemporaryCache", "cacheTTLMillis")
# Where tsc is expected to report type errors (the substituted packages' call sites).
EXPECTED_TSC_ERROR_FILES = frozenset(
    {
        "src/utils/inFlightDataItemCache.ts",
        "src/arch/arweaveGateway.ts",
        "src/utils/cacheServiceUtils.ts",
        "src/routes/multiPartUploads.ts",
    }
)


class UpstreamError(Exception):
    """The tree cannot be prepared; the message says why and what to change."""


@dataclass(frozen=True)
class Prepared:
    """A prepared image tree: `app_dir` is what the image holds at `workdir`."""

    app_dir: Path
    root: Path
    """`build/upstream/<key>`: holds `app/`, `image.json` and the build logs."""
    source: Path
    """Where this run took the source from (a reused tree may have been built from another copy
    with the same content)."""
    key: str
    commit: str
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    user: str
    uid: int
    gid: int
    """The group that owns the tree (`COPY --chown=user:group`, from the `addgroup -g` line)."""
    process_gid: int
    """The primary group a process started as `USER` gets (busybox `adduser -S` without `-G`: nogroup)."""
    exposed_ports: list[int]
    env: dict[str, str]
    stop_signal: Optional[str]
    system_packages: list[str]
    """Packages the runtime stage `apk add`s (e.g. dumb-init, the ENTRYPOINT): not in the tree."""
    copied: list[str]
    """Paths the COPY lines created, relative to `app_dir`."""
    chowned: bool
    reused: bool


Say = Callable[[str], None]


def _stderr_say(message: str) -> None:
    print(f"upstream: {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# Dockerfile


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
        if stripped.startswith("#") or (not stripped and not parts) or (not stripped and parts):
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
            raise UpstreamError(
                f"Dockerfile line {ins.line}: `{ins}`: COPY --{name} is not emulated by tools/upstream.py"
            )
        flags[name] = value
    if "$" in rest:
        raise UpstreamError(f"Dockerfile line {ins.line}: `{ins}`: variables in COPY are not emulated")
    parts = json.loads(rest) if rest.startswith("[") else rest.split()
    if not isinstance(parts, list) or len(parts) < 2 or not all(isinstance(p, str) for p in parts):
        raise UpstreamError(f"Dockerfile line {ins.line}: `{ins}`: expected sources and a destination")
    return CopyInstruction(ins, parts[:-1], parts[-1], flags.get("chown"), flags.get("from"))


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
            raise UpstreamError(f"{where}: `{script}`: shell operator {token!r} is not emulated by tools/upstream.py")
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def resolve_in(workdir: str, path: str) -> PurePosixPath:
    joined = PurePosixPath(workdir) / path
    return PurePosixPath(os.path.normpath(str(joined)))


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
            j = 1
            while j < len(arg):
                flag = arg[j]
                if flag in with_value:
                    value = arg[j + 1 :] or args[i + 1]
                    if not arg[j + 1 :]:
                        i += 1
                    opts[flag] = value
                    break
                opts[flag] = ""
                j += 1
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
        opts, operands = _getopt(
            args,
            "hgsGuk",
            {"home": "h", "gecos": "g", "shell": "s", "ingroup": "G", "disabled-password": "D", "empty-password": "D",
             "system": "S", "no-create-home": "H", "uid": "u", "skel": "k"},
        )
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


# --------------------------------------------------------------------------------------------
# .dockerignore and the build context


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
        patterns: list[tuple[bool, re.Pattern[str], str]] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                exception = text.startswith("!")
                body = text[1:].strip() if exception else text
                body = os.path.normpath(body).lstrip("/")
                if body in ("", "."):
                    continue
                patterns.append((exception, _pattern_regex(body), text))
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


# --------------------------------------------------------------------------------------------
# Source and commit


def stack_image_config() -> tuple[str, str]:
    try:
        data = yaml.safe_load(STACK_FILE.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UpstreamError(f"cannot read {STACK_FILE}: {exc}") from exc
    config = (data or {}).get("config") or {}
    context = config.get(CONFIG_CONTEXT)
    ref = config.get(CONFIG_REF)
    if not isinstance(ref, str) or not re.fullmatch(r"[0-9a-f]{40}", ref):
        raise UpstreamError(f"{STACK_FILE.name} must set {CONFIG_REF} to a full 40-hex commit (it has {ref!r})")
    if not isinstance(context, str) or not context:
        context = "https://github.com/vilenarios/ar-io-x402-bundler.git"  # Pulumi.yaml's default
    return context, ref


def _git(*args: str, cwd: Optional[Path] = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true")
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def clone(url: str, ref: str, say: Say) -> Path:
    """`url` at commit `ref` in build/upstream/clone-<ref> (reused when already there)."""
    repo, _, fragment = url.partition("#")
    subdir = fragment.partition(":")[2]
    target = BUILD_ROOT / f"clone-{ref}"
    if (target / ".git").is_dir() and _git("rev-parse", "HEAD", cwd=target).stdout.strip() == ref:
        say(f"source: reusing the clone {target.relative_to(ROOT)}")
        return target / subdir if subdir else target
    say(f"source: {ENV_SRC} is unset; fetching {repo} at {ref} into {target.relative_to(ROOT)}")
    tmp = BUILD_ROOT / f".tmp-clone-{ref}-{os.getpid()}"
    _rmtree(tmp)
    tmp.mkdir(parents=True)
    steps = (("init", "-q"), ("fetch", "-q", "--depth", "1", repo, ref), ("checkout", "-q", "FETCH_HEAD"))
    for step in steps:
        try:
            result = _git(*step, cwd=tmp, timeout=900)
        except subprocess.TimeoutExpired as exc:
            _rmtree(tmp)
            raise UpstreamError(f"`git {' '.join(step)}` timed out: {exc}") from exc
        if result.returncode != 0:
            _rmtree(tmp)
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise UpstreamError(
                f"cannot fetch {repo} at {ref} ({'; '.join(detail) or 'git failed'}). Set {ENV_SRC} to a local "
                f"checkout of commit {ref}, or give this machine network access to {repo}."
            )
    _rmtree(target)
    tmp.rename(target)
    return target / subdir if subdir else target


def source_commit(src: Path) -> tuple[str, str, bool]:
    """(commit, how it was found, dirty) for the source tree."""
    top = _git("rev-parse", "--show-toplevel", cwd=src)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == src.resolve():
        head = _git("rev-parse", "HEAD", cwd=src)
        if head.returncode != 0:
            raise UpstreamError(f"{src} is a git checkout but `git rev-parse HEAD` fails: {head.stderr.strip()}")
        commit = head.stdout.strip()
        claimed = os.environ.get(ENV_COMMIT)
        if claimed and claimed != commit:
            raise UpstreamError(f"{ENV_COMMIT}={claimed} but {src} is a git checkout at {commit}: unset {ENV_COMMIT}")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=src).stdout.strip())
        return commit, "git rev-parse HEAD", dirty
    claimed = os.environ.get(ENV_COMMIT)
    if claimed:
        if not re.fullmatch(r"[0-9a-f]{40}", claimed):
            raise UpstreamError(f"{ENV_COMMIT} must be a 40-hex commit, not {claimed!r}")
        return claimed, f"${ENV_COMMIT}", False
    snapshot = src.parent / "SNAPSHOT.md"
    if snapshot.is_file():
        found = sorted(set(SHA_RE.findall(snapshot.read_text())))
        if len(found) == 1:
            return found[0], str(snapshot), False
        raise UpstreamError(f"{snapshot} names {len(found)} different 40-hex commits; set {ENV_COMMIT}")
    raise UpstreamError(
        f"cannot tell which commit {src} is: it is not a git checkout, {ENV_COMMIT} is unset and there is "
        f"no {snapshot}. Set {ENV_COMMIT} to its 40-hex commit."
    )


def locate_source(say: Say) -> tuple[Path, str, bool]:
    """(source dir, commit, dirty); the commit is the one Pulumi.dev.yaml builds, or an error."""
    context, ref = stack_image_config()
    given = os.environ.get(ENV_SRC)
    if given:
        src = Path(given).expanduser().resolve()
        if not src.is_dir():
            raise UpstreamError(f"{ENV_SRC}={given} is not a directory")
    elif context.startswith(GIT_CONTEXT_PREFIXES):
        src = clone(context, ref, say)
    else:
        src = (ROOT / context).resolve()
        if not src.is_dir():
            raise UpstreamError(f"{CONFIG_CONTEXT} is the local path {context}, which is not a directory")
    if not (src / DOCKERFILE).is_file():
        raise UpstreamError(f"{src} has no {DOCKERFILE}: is it a checkout of the upstream bundler?")
    commit, how, dirty = source_commit(src)
    if commit != ref:
        raise UpstreamError(
            f"the upstream source at {src} is commit {commit} (from {how}), but {STACK_FILE.name} builds "
            f"{CONFIG_REF} {ref}: set {CONFIG_REF} to {commit}, or point {ENV_SRC} at a checkout of {ref}"
        )
    say(f"source: {src} at {commit} ({how}){' with uncommitted changes' if dirty else ''}")
    if dirty:
        say("warning: the checkout has uncommitted changes: the tree is built from them, not from the commit alone")
    return src, commit, dirty


# --------------------------------------------------------------------------------------------
# npm, lock file


def patched_package_json(upstream: dict[str, Any]) -> dict[str, Any]:
    data = json.loads(json.dumps(upstream))
    deps = data.get("dependencies") or {}
    for sub in SUBSTITUTIONS:
        asked = deps.get(sub.package)
        if asked != sub.upstream:
            raise UpstreamError(
                f"the upstream package.json asks for {sub.package} {asked!r}, not {sub.upstream!r} as "
                f"tools/upstream.py expects: review SUBSTITUTIONS there (and ADAPTATIONS), then rerun with --relock"
            )
        deps[sub.package] = sub.here
    return data


def lock_mismatch(lock: dict[str, Any], package: dict[str, Any]) -> list[str]:
    root = (lock.get("packages") or {}).get("") or {}
    problems = []
    for section in ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies"):
        want = package.get(section) or {}
        have = root.get(section) or {}
        for name in sorted(set(want) | set(have)):
            if want.get(name) != have.get(name):
                problems.append(f"{section}.{name}: package.json {want.get(name)!r}, lock {have.get(name)!r}")
    return problems


def npm_env() -> dict[str, str]:
    dropped = ("NODE_ENV", "npm_config_production", "npm_config_omit", "NODE_OPTIONS")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(npm_config_update_notifier="false", npm_config_fund="false", npm_config_audit="false")
    return env


def run_logged(
    cmd: list[str], cwd: Path, log: Path, say: Say, env: Optional[dict[str, str]] = None
) -> tuple[int, float]:
    say(f"$ {shlex.join(cmd)}  (in {cwd.name}/, log {log.name})")
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        try:
            rc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False).returncode
        except FileNotFoundError as exc:
            raise UpstreamError(f"`{cmd[0]}` is not installed: {exc}") from exc
    return rc, time.monotonic() - started


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def relock(src: Path, say: Say) -> None:
    """Resolve the upstream package.json (with the substitutions) anew and write tools/upstream/package-lock.json."""
    work = BUILD_ROOT / f".tmp-relock-{os.getpid()}"
    _rmtree(work)
    work.mkdir(parents=True)
    try:
        package = patched_package_json(json.loads((src / "package.json").read_text()))
        (work / "package.json").write_text(json.dumps(package, indent=2) + "\n")
        # No yarn.lock here: npm would take it as resolution guidance, and the registry reached here lacks
        # some of the exact versions it names (e.g. @bull-board/koa 6.14.0), so resolution fails.
        log = BUILD_ROOT / "relock.log"
        rc, seconds = run_logged(
            ["npm", "install", "--package-lock-only", "--include=dev", "--ignore-scripts", "--no-audit", "--no-fund"],
            work,
            log,
            say,
            npm_env(),
        )
        if rc != 0 or not (work / "package-lock.json").is_file():
            raise UpstreamError(f"`npm install --package-lock-only` failed (exit {rc}; log {log}):\n{tail(log)}")
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        text = (work / "package-lock.json").read_text()
        changed = not LOCK_FILE.is_file() or LOCK_FILE.read_text() != text
        LOCK_FILE.write_text(text)
        count = len(json.loads(text).get("packages", {})) - 1
        say(
            f"relock: {count} packages resolved in {seconds:.1f}s; "
            f"{LOCK_FILE.relative_to(ROOT)} {'written' if changed else 'unchanged'}"
        )
    finally:
        _rmtree(work)


# --------------------------------------------------------------------------------------------
# Building


def _rmtree(path: Path) -> None:
    """Remove a tree, even one with read-only directories (copied from a read-only context)."""

    def onerror(func: Callable[..., Any], name: str, exc_info: Any) -> None:
        parent = Path(name).parent
        try:
            parent.chmod(parent.stat().st_mode | 0o700)
            func(name)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a file the build itself produced (same file system, no second copy), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _lchown_tree(path: Path, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, gid)


@dataclass
class Build:
    """One build: emulates the builder stage in `builder/`, lays out the runtime stage in `app/`."""

    src: Path
    commit: str
    key: str
    tmp: Path
    say: Say
    dirty: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def builder(self) -> Path:
        return self.tmp / "builder"

    @property
    def app(self) -> Path:
        return self.tmp / "app"

    @property
    def logs(self) -> Path:
        return self.tmp / "logs"

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        context = Context(self.src, DockerIgnore.read(self.src))
        stages = parse_dockerfile((self.src / DOCKERFILE).read_text())
        final = stages[-1]
        builders = {c.from_stage for c in self._copies(final) if c.from_stage}
        by_name = {s.name: s for s in stages if s.name} | {str(s.index): s for s in stages}
        if len(builders) > 1:
            raise UpstreamError(
                f"the runtime stage copies from several stages ({sorted(builders)}): only one builder is emulated"
            )
        builder_stage = by_name.get(next(iter(builders))) if builders else None
        if builders and builder_stage is None:
            raise UpstreamError(
                f"the runtime stage copies --from={next(iter(builders))}, which is no stage of the Dockerfile"
            )
        builder_workdir = "/"
        if builder_stage is not None:
            self.say(
                f"builder stage: `FROM {builder_stage.base} AS {builder_stage.name}` "
                f"({len(builder_stage.instructions)} instructions)"
            )
            builder_workdir = self.emulate_builder(builder_stage, context)
        image = self.lay_out(final, context, builder_workdir)
        _rmtree(self.builder)
        self.verify()
        self.timings["total"] = time.monotonic() - started
        image["timings"] = {k: round(v, 1) for k, v in self.timings.items()}
        image["notes"] = self.notes
        return image

    @staticmethod
    def _copies(stage: Stage) -> list[CopyInstruction]:
        return [parse_copy(i) for i in stage.instructions if i.keyword == "COPY"]

    # -- builder stage --------------------------------------------------------------------

    def emulate_builder(self, stage: Stage, context: Context) -> str:
        workdir = "/"
        self.builder.mkdir(parents=True)
        for ins in stage.instructions:
            where = f"Dockerfile line {ins.line} (builder stage)"
            if ins.keyword == "WORKDIR":
                workdir = str(resolve_in(workdir, ins.args.strip()))
            elif ins.keyword == "COPY":
                copy = parse_copy(ins)
                if copy.from_stage:
                    raise UpstreamError(f"{where}: `{ins}`: COPY --from inside the builder is not emulated")
                self.copy_from_context(copy, context, self.builder, workdir, owner=None)
            elif ins.keyword == "RUN":
                for command in shell_commands(ins.args, where):
                    self.builder_command(command, where, ins)
            elif ins.keyword != "LABEL":
                raise UpstreamError(f"{where}: `{ins}`: {ins.keyword} in the builder stage is not emulated")
        return workdir

    def builder_command(self, command: list[str], where: str, ins: Instruction) -> None:
        text = shlex.join(command)
        if command[:2] == ["apk", "add"]:
            packages = [c for c in command[2:] if not c.startswith("-")]
            self.say(f"builder: `apk add {' '.join(packages)}`: system packages, taken from this machine")
        elif command == ["yarn", "install", "--frozen-lockfile"]:
            self.install()
        elif command == ["yarn", "build"]:
            self.yarn_build()
        elif len(command) == 5 and command[0] == "find" and command[2] == "-name" and command[4] == "-delete":
            self.find_delete(command[1], command[3])
        elif command[0] == "echo" and len(command) >= 3 and command[-2] == ">" and command[-1].startswith("/tmp/"):
            self.say(f"builder: `{' '.join(ins.args.split())}` writes outside the work dir: nothing the image copies")
        else:
            raise UpstreamError(
                f"{where}: `{text}` is a step tools/upstream.py does not know how to emulate: the upstream Dockerfile "
                f"changed; teach builder_command() what it does"
            )

    def install(self) -> None:
        """`yarn install --frozen-lockfile`, as `npm ci` with the committed lock (dev dependencies included)."""
        package_path = self.builder / "package.json"
        package = patched_package_json(json.loads(package_path.read_text()))
        package_path.write_text(json.dumps(package, indent=2) + "\n")
        subs = ", ".join(f"{s.package} {s.upstream} -> {s.here}" for s in SUBSTITUTIONS)
        self.say(
            f"builder: yarn install --frozen-lockfile -> npm ci with {LOCK_FILE.relative_to(ROOT)}; substituted {subs}"
        )
        if not LOCK_FILE.is_file():
            raise UpstreamError(
                f"{LOCK_FILE.relative_to(ROOT)} does not exist: run `python -m tools.upstream --relock` to create it, "
                f"then commit it"
            )
        lock = json.loads(LOCK_FILE.read_text())
        problems = lock_mismatch(lock, package)
        if problems:
            raise UpstreamError(
                f"{LOCK_FILE.relative_to(ROOT)} does not match the upstream package.json at {self.commit} (with the "
                f"substitutions): {'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}. Regenerate it with "
                f"`python -m tools.upstream --relock`, review the diff and commit it."
            )
        shutil.copyfile(LOCK_FILE, self.builder / "package-lock.json")
        packages = lock.get("packages") or {}
        scripts = sorted(
            {p.rpartition("node_modules/")[2] for p, v in packages.items() if p and v.get("hasInstallScript")}
        )
        log = self.logs / "npm-ci.log"
        # yarn 1 runs every dependency's install scripts; npm 11 runs only those its allow-scripts setting names
        # (project-scoped: .npmrc or package.json), so name them all, from the committed lock. Their output
        # goes to the log.
        (self.builder / ".npmrc").write_text(f"allow-scripts={','.join(scripts)}\n")
        cmd = ["npm", "ci", "--include=dev", "--no-audit", "--no-fund", "--foreground-scripts"]
        rc, seconds = run_logged(cmd, self.builder, log, self.say, npm_env())
        self.timings["npm_ci"] = seconds
        if rc != 0:
            text = log.read_text(errors="replace")
            hint = ""
            if "in sync" in text or "EUSAGE" in text:
                hint = " The lock file does not match package.json: run `python -m tools.upstream --relock`."
            raise UpstreamError(f"`npm ci` failed (exit {rc}).{hint} Last lines of {log.name}:\n{tail(log)}")
        text = log.read_text(errors="replace")
        if "not yet covered by allowScripts" in text:
            self.say("warning: npm skipped some install scripts (see npm-ci.log); yarn in the image runs them all")
            self.notes.append("npm skipped some install scripts")
        warnings = [line for line in text.splitlines() if line.lower().startswith("npm warn")]
        deprecated = [w for w in warnings if "deprecated" in w]
        native = sorted(
            str(p.relative_to(self.builder / "node_modules"))
            for p in (self.builder / "node_modules").rglob("*.node")
            if p.is_file()
        )
        self.say(
            f"builder: npm ci: {len(packages) - 1} packages in {seconds:.1f}s; install scripts of "
            f"{len(scripts)} ({', '.join(scripts) or 'none'}); {len(native)} native .node files; "
            f"{len(warnings)} npm warnings ({len(deprecated)} deprecations)"
        )
        for w in [w for w in warnings if "deprecated" not in w][:5]:
            self.say(f"  {w}")
        self.notes.append(f"install scripts: {', '.join(scripts) or 'none'}")
        self.notes.append(f"native modules: {', '.join(native) or 'none'}")

    def yarn_build(self) -> None:
        package = json.loads((self.builder / "package.json").read_text())
        scripts = package.get("scripts") or {}
        if scripts.get("build") != "yarn clean && tsc" or scripts.get("clean") != "rimraf lib":
            raise UpstreamError(
                f"the upstream `yarn build` is now {scripts.get('build')!r} (clean: {scripts.get('clean')!r}), not "
                f"'yarn clean && tsc' / 'rimraf lib': update yarn_build() in tools/upstream.py"
            )
        _rmtree(self.builder / "lib")
        tsc = self.builder / "node_modules" / ".bin" / "tsc"
        log = self.logs / "tsc.log"
        rc, seconds = run_logged([str(tsc), "-p", "tsconfig.json"], self.builder, log, self.say)
        self.timings["tsc"] = seconds
        error_line = re.compile(r"^(\S[^(]*)\((\d+),(\d+)\): error (TS\d+): (.*)$")
        errors = [m for m in (error_line.match(line) for line in log.read_text(errors="replace").splitlines()) if m]
        emitted = (self.builder / "lib" / "index.js").is_file()
        if rc != 0 and not emitted:
            raise UpstreamError(
                f"tsc failed (exit {rc}) and emitted no lib/index.js. Last lines of {log.name}:\n{tail(log)}"
            )
        files = sorted({m.group(1) for m in errors})
        version = subprocess.run([str(tsc), "--version"], capture_output=True, text=True, check=False).stdout.strip()
        self.say(
            f"builder: tsc ({version}) exit {rc} in {seconds:.1f}s: {len(errors)} type errors in {len(files)} files "
            f"({', '.join(files) or 'none'}); lib/ emitted"
        )
        for m in errors[:8]:
            self.say(f"  {m.group(1)}:{m.group(2)} {m.group(4)} {m.group(5)[:110]}")
        unexpected = [f for f in files if f not in EXPECTED_TSC_ERROR_FILES]
        if unexpected:
            self.say(
                f"warning: type errors outside the substituted packages' call sites: {', '.join(unexpected)} "
                f"(see {log})"
            )
            self.notes.append(f"unexpected tsc errors in {', '.join(unexpected)}")
        self.notes.append(f"tsc: exit {rc}, {len(errors)} type errors in {', '.join(files) or 'no files'}")
        self.adapt()

    def adapt(self) -> None:
        for a in ADAPTATIONS:
            path = self.builder / a.path
            if not path.is_file():
                raise UpstreamError(
                    f"adaptation: {a.path} was not emitted; the upstream changed: "
                    f"review ADAPTATIONS in tools/upstream.py"
                )
            text = path.read_text()
            found = text.count(a.old)
            if found != a.count:
                raise UpstreamError(
                    f"adaptation: expected {a.count} x {a.old!r} in {a.path}, found {found}; the upstream changed: "
                    f"review ADAPTATIONS in tools/upstream.py"
                )
            path.write_text(text.replace(a.old, a.new))
        left = []
        for path in (self.builder / "lib").rglob("*.js"):
            text = path.read_text()
            left += [f"{path.relative_to(self.builder)}: {word}" for word in FORBIDDEN_AFTER_ADAPTING if word in text]
        if left:
            raise UpstreamError(
                f"adaptation: still present after adapting: {', '.join(left)}; review ADAPTATIONS in tools/upstream.py"
            )
        self.say(
            f"builder: adapted the emitted JS at {sum(a.count for a in ADAPTATIONS)} places "
            f"in {len({a.path for a in ADAPTATIONS})} files"
        )

    def find_delete(self, where: str, pattern: str) -> None:
        base = (self.builder / where).resolve()
        if self.builder.resolve() not in (base, *base.parents):
            raise UpstreamError(f"`find {where} ...` points outside the builder work dir")
        gone = [p for p in base.rglob(pattern) if p.is_file() or p.is_symlink()]
        for p in gone:
            p.unlink()
        self.say(f"builder: find {where} -name {pattern!r} -delete: {len(gone)} files")

    # -- runtime stage ---------------------------------------------------------------------

    def copy_from_context(
        self, copy: CopyInstruction, context: Context, root: Path, workdir: str, owner: Optional[tuple[int, int]]
    ) -> list[str]:
        """COPY from the build context through .dockerignore. Modes are those of a git checkout (what buildx
        gets from the Git URL the stack builds): files 0644, or 0755 when executable; directories 0755."""
        sources: list[str] = []
        for pattern in copy.sources:
            clean = os.path.normpath(pattern).lstrip("/")
            if clean.startswith(".."):
                raise UpstreamError(
                    f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: {pattern} is outside the context"
                )
            if any(ch in clean for ch in "*?["):
                matches = sorted(p.relative_to(context.root).as_posix() for p in context.root.glob(clean))
                matches = [m for m in matches if not context.ignore.excluded(m)]
            else:
                matches = [clean] if (context.root / clean).exists() and not context.ignore.excluded(clean) else []
            if not matches:
                raise UpstreamError(
                    f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: "
                    f"{pattern} is not in the build context"
                )
            sources += matches

        def copy_file(src: Path, target: Path) -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            target.chmod(0o755 if src.stat().st_mode & 0o111 else 0o644)

        def place(rel: str, dest: Path) -> None:
            src = context.root / rel
            if src.is_dir() and not src.is_symlink():
                dest.mkdir(mode=0o755, parents=True, exist_ok=True)
                for sub, path in context.walk("" if rel == "." else rel):
                    target = dest / Path(sub).relative_to(Path(rel) if rel != "." else Path(""))
                    if path.is_symlink():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(os.readlink(path))
                    elif path.is_dir():
                        target.mkdir(mode=0o755, parents=True, exist_ok=True)
                    else:
                        copy_file(path, target)
            else:
                copy_file(src, dest)

        return self._copy(copy, sources, root, workdir, owner, place)

    def _copy(
        self,
        copy: CopyInstruction,
        sources: list[str],
        root: Path,
        workdir: str,
        owner: Optional[tuple[int, int]],
        place: Callable[[str, Path], None],
    ) -> list[str]:
        """Docker's COPY destination rules; returns the created paths relative to `root` (= workdir)."""
        dest_abs = resolve_in(workdir, copy.dest)
        try:
            dest_rel = dest_abs.relative_to(workdir)
        except ValueError as exc:
            raise UpstreamError(
                f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: copies outside {workdir}"
            ) from exc
        dest = root / dest_rel
        into_dir = copy.dest.endswith("/") or len(sources) > 1 or (dest.is_dir() and not dest.is_symlink())
        if len(sources) > 1 and not copy.dest.endswith("/"):
            raise UpstreamError(
                f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: "
                f"several sources need a destination ending in /"
            )
        created = []
        for rel in sources:
            target = dest / PurePosixPath(rel).name if into_dir and not self._is_dir_source(rel, copy) else dest
            place(rel, target)
            created.append(target)
        if owner is not None and owner != (-1, -1):
            for target in created:
                if os.geteuid() == 0:
                    _lchown_tree(target, *owner)
        return [t.relative_to(root).as_posix() or "." for t in created]

    def _is_dir_source(self, rel: str, copy: CopyInstruction) -> bool:
        if copy.from_stage:
            return (self.builder / rel).is_dir() and not (self.builder / rel).is_symlink()
        return (self.src / rel).is_dir() and not (self.src / rel).is_symlink()

    def copy_from_builder(
        self, copy: CopyInstruction, builder_workdir: str, workdir: str, owner: tuple[int, int]
    ) -> list[str]:
        sources = []
        for pattern in copy.sources:
            path = resolve_in(builder_workdir, pattern)
            try:
                rel = path.relative_to(builder_workdir).as_posix()
            except ValueError as exc:
                raise UpstreamError(
                    f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: "
                    f"{pattern} is outside the builder work dir {builder_workdir}"
                ) from exc
            if not (self.builder / rel).exists():
                raise UpstreamError(
                    f"Dockerfile line {copy.instruction.line}: `{copy.instruction}`: the builder produced no {pattern}"
                )
            sources.append(rel)

        def place(rel: str, dest: Path) -> None:
            src = self.builder / rel
            if src.is_dir() and not src.is_symlink():
                shutil.copytree(src, dest, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(str(src), str(dest))

        return self._copy(copy, sources, self.app, workdir, owner, place)

    def lay_out(self, stage: Stage, context: Context, builder_workdir: str) -> dict[str, Any]:
        started = time.monotonic()
        accounts = Accounts()
        workdir: Optional[str] = None
        workdir_owner = (0, 0)
        entrypoint: Optional[list[str]] = None
        cmd: Optional[list[str]] = None
        user = "root"
        ports: list[int] = []
        env: dict[str, str] = {}
        packages: list[str] = []
        copied: list[dict[str, Any]] = []
        healthcheck: Optional[str] = None
        stop_signal: Optional[str] = None
        chowned = os.geteuid() == 0
        for ins in stage.instructions:
            where = f"Dockerfile line {ins.line} (runtime stage)"
            if ins.keyword == "WORKDIR":
                workdir = str(resolve_in(workdir or "/", ins.args.strip()))
                self.app.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "RUN":
                for command in shell_commands(ins.args, where):
                    if command[:2] == ["apk", "add"]:
                        packages += [c for c in command[2:] if not c.startswith("-")]
                    elif command[0] == "addgroup":
                        accounts.addgroup(command[1:])
                    elif command[0] == "adduser":
                        accounts.adduser(command[1:])
                    elif (
                        command[0] == "chown" and len(command) == 3
                        and workdir and resolve_in(workdir, command[2]) == PurePosixPath(workdir)
                    ):
                        workdir_owner = accounts.owner(command[1])
                    else:
                        raise UpstreamError(
                            f"{where}: `{shlex.join(command)}` is not emulated by tools/upstream.py: "
                            f"the upstream Dockerfile changed"
                        )
            elif ins.keyword == "COPY":
                if workdir is None:
                    raise UpstreamError(
                        f"{where}: COPY before WORKDIR: the tree is laid out relative to the runtime WORKDIR"
                    )
                copy = parse_copy(ins)
                owner = accounts.owner(copy.chown)
                if copy.from_stage:
                    paths = self.copy_from_builder(copy, builder_workdir, workdir, owner)
                else:
                    paths = self.copy_from_context(copy, context, self.app, workdir, owner)
                copied.append(
                    {
                        "instruction": str(ins),
                        "from": copy.from_stage or "context",
                        "paths": paths,
                        "owner": list(owner),
                    }
                )
            elif ins.keyword == "USER":
                user = ins.args.strip()
            elif ins.keyword == "EXPOSE":
                for port in ins.args.split():
                    number = port.split("/")[0]
                    if not number.isdigit():
                        raise UpstreamError(f"{where}: EXPOSE {port} is not emulated")
                    ports.append(int(number))
            elif ins.keyword == "ENTRYPOINT":
                entrypoint = exec_form(ins)
                if cmd is None:
                    cmd = []  # ENTRYPOINT resets an inherited CMD
            elif ins.keyword == "CMD":
                cmd = exec_form(ins)
            elif ins.keyword == "ENV":
                env.update(_parse_env(ins))
            elif ins.keyword == "HEALTHCHECK":
                healthcheck = " ".join(ins.args.split())
            elif ins.keyword == "STOPSIGNAL":
                stop_signal = ins.args.strip()
            elif ins.keyword in ("LABEL", "ARG"):
                continue
            else:
                raise UpstreamError(
                    f"{where}: `{ins}`: {ins.keyword} in the runtime stage is not emulated by tools/upstream.py"
                )
        if workdir is None:
            raise UpstreamError("the Dockerfile's runtime stage sets no WORKDIR")
        if entrypoint is None or cmd is None:
            raise UpstreamError(
                "the Dockerfile's runtime stage sets no ENTRYPOINT (it would inherit the base image's, "
                "which this tool cannot read)"
            )
        name, _, group = user.partition(":")
        uid, process_gid = accounts.uid_of(name)
        if group:
            process_gid = accounts.gid_of(group)
        if chowned:
            os.lchown(self.app, *workdir_owner)
        else:
            self.say("not root: ownership is left as is (recorded as chowned: false in image.json)")
        self.timings["layout"] = time.monotonic() - started
        return {
            "commit": self.commit,
            "dirty": self.dirty,
            "key": self.key,
            "source": str(self.src),
            "base_image": stage.base,
            "workdir": workdir,
            "user": user,
            "uid": uid,
            "gid": workdir_owner[1],
            "process_gid": process_gid,
            "entrypoint": entrypoint,
            "cmd": cmd,
            "exposed_ports": ports,
            "env": env,
            "healthcheck": healthcheck,
            "stop_signal": stop_signal,
            "system_packages": packages,
            "copied": copied,
            "chowned": chowned,
            "substitutions": [
                {"package": s.package, "upstream": s.upstream, "here": s.here, "why": s.why} for s in SUBSTITUTIONS
            ],
            "adaptations": [
                {"path": a.path, "old": a.old, "new": a.new, "count": a.count, "why": a.why} for a in ADAPTATIONS
            ],
            "lock_sha256": hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest() if LOCK_FILE.is_file() else None,
            "node": _version(["node", "--version"]),
            "npm": _version(["npm", "--version"]),
        }

    def verify(self) -> None:
        missing = [f for f in REQUIRED_FILES if not (self.app / f).is_file()]
        if missing:
            raise UpstreamError(f"the prepared tree lacks {', '.join(missing)}")
        typings = [p for p in (self.app / "lib").rglob("*") if p.name.endswith((".d.ts", ".d.ts.map"))]
        if typings:
            raise UpstreamError(
                f"the prepared tree still has {len(typings)} .d.ts files under lib/ (e.g. {typings[0]})"
            )


def _parse_env(ins: Instruction) -> dict[str, str]:
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


def _version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
# Cache and entry points


def cache_key(context: Context, commit: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    digest.update(f"commit {commit}\0node {_version(['node', '--version'])}\0".encode())
    digest.update(b"tool\0" + TOOL_SOURCE.read_bytes() + b"\0")
    digest.update(b"lock\0" + (LOCK_FILE.read_bytes() if LOCK_FILE.is_file() else b"(none)") + b"\0")
    files = context.digest(digest)
    return digest.hexdigest()[:KEY_LEN], files


@contextmanager
def _build_lock(say: Say) -> Iterator[None]:
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with (BUILD_ROOT / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("waiting for another build of the upstream tree to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _from_image_json(root: Path, reused: bool, source: Path) -> Prepared:
    data = json.loads((root / IMAGE_JSON).read_text())
    return Prepared(
        app_dir=root / "app",
        root=root,
        source=source,
        key=data["key"],
        commit=data["commit"],
        entrypoint=list(data["entrypoint"]),
        cmd=list(data["cmd"]),
        workdir=data["workdir"],
        user=data["user"],
        uid=int(data["uid"]),
        gid=int(data["gid"]),
        process_gid=int(data["process_gid"]),
        exposed_ports=[int(p) for p in data["exposed_ports"]],
        env=dict(data["env"]),
        stop_signal=data.get("stop_signal"),
        system_packages=list(data["system_packages"]),
        copied=[p for c in data["copied"] for p in c["paths"]],
        chowned=bool(data["chowned"]),
        reused=reused,
    )


def _du(path: Path) -> tuple[int, int]:
    total = files = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_blocks * 512
            files += 1
    return total, files


def prepare(*, relock_lock: bool = False, say: Optional[Say] = None) -> Prepared:
    """Build (or reuse) the image tree of the commit Pulumi.dev.yaml builds. Raises UpstreamError."""
    say = say or _stderr_say
    src, commit, dirty = locate_source(say)
    with _build_lock(say):
        for stale in BUILD_ROOT.glob(".tmp-*"):
            _rmtree(stale)
        if relock_lock:
            relock(src, say)
        context = Context(src, DockerIgnore.read(src))
        started = time.monotonic()
        key, files = cache_key(context, commit)
        root = BUILD_ROOT / key
        say(
            f"key {key} ({files} context files, {LOCK_FILE.name}, tools/upstream.py; "
            f"hashed in {time.monotonic() - started:.1f}s)"
        )
        if (
            (root / MARKER).is_file() and (root / IMAGE_JSON).is_file()
            and all((root / "app" / f).is_file() for f in REQUIRED_FILES)
        ):
            say(
                f"reusing {root.relative_to(ROOT)}: complete since {(root / MARKER).read_text().strip()}; nothing to do"
            )
            return _from_image_json(root, reused=True, source=src)
        if root.exists():
            say(f"{root.relative_to(ROOT)} exists but is not complete: removing it")
            _rmtree(root)
        tmp = BUILD_ROOT / f".tmp-{key}-{os.getpid()}"
        build = Build(src=src, commit=commit, key=key, tmp=tmp, say=say, dirty=dirty)
        try:
            tmp.mkdir(parents=True)
            image = build.run()
            (tmp / IMAGE_JSON).write_text(json.dumps(image, indent=2) + "\n")
            (tmp / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
            tmp.rename(root)
        except BaseException:
            if build.logs.is_dir():
                kept = BUILD_ROOT / "last-failed-logs"
                _rmtree(kept)
                shutil.copytree(build.logs, kept)
                say(f"build failed; its logs are kept in {kept.relative_to(ROOT)}")
            _rmtree(tmp)
            raise
        _rmtree(BUILD_ROOT / "last-failed-logs")
        for old in BUILD_ROOT.iterdir():
            if old != root and old.is_dir() and KEY_RE.match(old.name):
                say(f"removing the older tree {old.relative_to(ROOT)}")
                _rmtree(old)
        size, count = _du(root / "app")
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in build.timings.items())
        say(f"built {root.relative_to(ROOT)}: {count} files, {size / 2**20:.0f} MiB; {timings}")
        return _from_image_json(root, reused=False, source=src)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.upstream", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--print-dir", action="store_true", help="print only the path of the app tree (no progress)")
    parser.add_argument(
        "--relock", action="store_true", help=f"resolve the dependencies anew and write {LOCK_FILE.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    try:
        prepared = prepare(relock_lock=args.relock, say=_quiet if args.print_dir else _stderr_say)
    except UpstreamError as exc:
        print(f"upstream: error: {exc}", file=sys.stderr)
        return 2
    if not args.print_dir:
        _stderr_say(
            f"ready: commit {prepared.commit}, WORKDIR {prepared.workdir}, USER {prepared.user} "
            f"({prepared.uid}:{prepared.gid}, process gid {prepared.process_gid}), ENTRYPOINT {prepared.entrypoint}, "
            f"CMD {prepared.cmd}, EXPOSE {prepared.exposed_ports}"
        )
    print(prepared.app_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
