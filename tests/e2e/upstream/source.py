"""Where the upstream source comes from, and the proof, from its files, of which commit it is.

The files are hashed as git hashes a commit's tree (a throwaway index and object store, so the
source is never written to and uncommitted edits count), and that id is compared with the tree
of the commit the stack builds: from the checkout itself when the source is one, else from
`KNOWN_TREES`, recorded once from a clone.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from tests.e2e.upstream.common import BUILD_ROOT, ROOT, Say, UpstreamError, rel, rmtree
from tests.e2e.upstream.dockerfile import DOCKERFILE

STACK_FILE = ROOT / "Pulumi.dev.yaml"
CONFIG_CONTEXT = "x402-bundler:imageContext"
CONFIG_REF = "x402-bundler:imageGitRef"
DEFAULT_CONTEXT = "https://github.com/vilenarios/ar-io-x402-bundler.git"  # Pulumi.yaml's default
ENV_SRC = "X402_UPSTREAM_SRC"
GIT_CONTEXT_PREFIXES = ("https://", "git@", "git://")  # as components/image.py reads imageContext
HEX40 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Omitted:
    """A file of the commit that a copy leaves out, supplied to the hash by its blob id."""

    path: str
    mode: str
    blob: str


@dataclass(frozen=True)
class KnownTree:
    tree: str
    omitted: tuple[Omitted, ...] = ()


KNOWN_TREES: dict[str, KnownTree] = {
    # vilenarios/ar-io-x402-bundler 4c3bddc (2025-12-18): `git rev-parse 4c3bddc…^{tree}` in a full clone.
    # The offline copy (`git archive` of it) leaves out CLAUDE.md: `git ls-tree 4c3bddc… CLAUDE.md`.
    "4c3bddc7fa0bf054057f304e9ac16903ae03a275": KnownTree(
        "f7c392b602845707372b4231bd9decc7ffc62b4f",
        (Omitted("CLAUDE.md", "100644", "7a248d4e4d8fcf76c0b8140b479c9fd8872c767b"),),
    ),
}


@dataclass(frozen=True)
class TreeProof:
    commit: str
    """The commit the stack builds (Pulumi.dev.yaml's imageGitRef)."""
    tree: str
    """What the source's files hash to."""
    expected: Optional[str]
    """The commit's tree, when known."""
    how: str
    """Where `expected` came from, or why it is unknown."""

    @property
    def ok(self) -> bool:
        return self.tree == self.expected

    def detail(self) -> str:
        if self.expected is None:
            return f"files hash to tree {self.tree}; {self.how}"
        verdict = "equals" if self.ok else "differs from"
        return (f"files hash to tree {self.tree}, which {verdict} commit {self.commit[:12]}'s tree {self.expected} "
                f"({self.how})")


@dataclass(frozen=True)
class Source:
    path: Path
    commit: str
    proof: TreeProof


def _git(*args: str, cwd: Optional[Path] = None, env: Optional[dict[str, str]] = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="true", **(env or {}))
    return subprocess.run(["git", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout,
                          check=False)


def stack_image_config() -> tuple[str, str]:
    """(imageContext, imageGitRef) of the stack that builds the image."""
    try:
        data = yaml.safe_load(STACK_FILE.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UpstreamError(f"cannot read {STACK_FILE}: {exc}") from exc
    config = (data or {}).get("config") or {}
    context = config.get(CONFIG_CONTEXT)
    ref = config.get(CONFIG_REF)
    if not isinstance(ref, str) or not HEX40.fullmatch(ref):
        raise UpstreamError(f"{STACK_FILE.name} must set {CONFIG_REF} to a full 40-hex commit (it has {ref!r})")
    if not isinstance(context, str) or not context:
        context = DEFAULT_CONTEXT
    return context, ref


def tree_of_files(src: Path, omitted: tuple[Omitted, ...] = ()) -> str:
    """The tree id git would record for the files under `src` (its .gitignore applies), with the
    `omitted` files that are absent supplied by blob id."""
    with tempfile.TemporaryDirectory(prefix="upstream-tree-") as tmp:
        # Only the throwaway store and index: no user or system config (a global excludes file
        # or autocrlf would change what is hashed).
        env = {"GIT_DIR": f"{tmp}/git", "GIT_INDEX_FILE": f"{tmp}/index", "GIT_WORK_TREE": str(src),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
        init = _git("init", "-q", "--bare", f"{tmp}/git")
        if init.returncode != 0:
            raise UpstreamError(f"cannot hash {src}: `git init`: {init.stderr.strip()[-300:]}")
        steps: list[tuple[str, ...]] = [("add", "-A", ".")]
        steps += [("update-index", "--add", "--cacheinfo", f"{o.mode},{o.blob},{o.path}")
                  for o in omitted if not (src / o.path).exists()]
        for step in steps:
            done = _git(*step, cwd=src, env=env, timeout=300)
            if done.returncode != 0:
                raise UpstreamError(f"cannot hash {src}: `git {' '.join(step)}`: {done.stderr.strip()[-300:]}")
        done = _git("write-tree", "--missing-ok", cwd=src, env=env)
        if done.returncode != 0 or not HEX40.fullmatch(done.stdout.strip()):
            raise UpstreamError(f"cannot hash {src}: `git write-tree`: {done.stderr.strip()[-300:]}")
        return done.stdout.strip()


def _checkout_top(src: Path) -> Optional[Path]:
    """The checkout `src` is the top of, None when it is none (a copy inside some other
    repository's work tree is a copy, not that repository's checkout)."""
    top = _git("rev-parse", "--show-toplevel", cwd=src)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == src.resolve():
        return src
    return None


def how_to_record(commit: str) -> str:
    return (f"record it in KNOWN_TREES in tests/e2e/upstream/source.py: `git rev-parse {commit}^{{tree}}` in a "
            f"clone, plus `git ls-tree {commit} <path>` for each file the copy leaves out")


def prove(src: Path, commit: str, checkout: Optional[Path] = None) -> TreeProof:
    """Whether the files under `src` are `commit`'s tree (uncommitted edits included). `checkout`
    is the git checkout `src` is in (found when `src` is its top), else `KNOWN_TREES` has the tree."""
    checkout = checkout or _checkout_top(src)
    if checkout is not None:
        prefix = src.resolve().relative_to(checkout.resolve()).as_posix()
        spec = f"{commit}:{prefix}" if prefix != "." else f"{commit}^{{tree}}"
        found = _git("rev-parse", "--verify", "-q", spec, cwd=checkout)
        tree = tree_of_files(src)
        if found.returncode == 0:
            return TreeProof(commit, tree, found.stdout.strip(), f"`git rev-parse {spec}` in the checkout {checkout}")
        return TreeProof(commit, tree, None, f"the checkout {checkout} does not have commit {commit}: fetch it there")
    known = KNOWN_TREES.get(commit)
    if known is None:
        unknown = f"commit {commit} has no known tree; {how_to_record(commit)}"
        return TreeProof(commit, tree_of_files(src), None, unknown)
    supplied = [o for o in known.omitted if not (src / o.path).exists()]
    how = "KNOWN_TREES" + (
        f", with {', '.join(f'{o.path} (blob {o.blob[:12]})' for o in supplied)} supplied as the copy leaves "
        f"{'it' if len(supplied) == 1 else 'them'} out" if supplied else ""
    )
    return TreeProof(commit, tree_of_files(src, known.omitted), known.tree, how)


def clone(url: str, ref: str, say: Say) -> tuple[Path, Path]:
    """`url` at commit `ref` in build/upstream/clone-<ref> (reused when already there): (the
    context directory in it, the checkout)."""
    repo, _, fragment = url.partition("#")
    subdir = fragment.partition(":")[2]
    target = BUILD_ROOT / f"clone-{ref}"
    if (target / ".git").is_dir() and _git("rev-parse", "HEAD", cwd=target).stdout.strip() == ref:
        say(f"source: reusing the clone {rel(target)}")
        return (target / subdir if subdir else target), target
    say(f"source: {ENV_SRC} is unset; fetching {repo} at {ref} into {rel(target)}")
    tmp = BUILD_ROOT / f".tmp-clone-{ref}-{os.getpid()}"
    rmtree(tmp)
    tmp.mkdir(parents=True)
    for step in (("init", "-q"), ("fetch", "-q", "--depth", "1", repo, ref), ("checkout", "-q", "FETCH_HEAD")):
        try:
            result = _git(*step, cwd=tmp, timeout=900)
        except subprocess.TimeoutExpired as exc:
            rmtree(tmp)
            raise UpstreamError(f"`git {' '.join(step)}` timed out: {exc}") from exc
        if result.returncode != 0:
            rmtree(tmp)
            detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise UpstreamError(
                f"cannot fetch {repo} at {ref} ({'; '.join(detail) or 'git failed'}). Set {ENV_SRC} to a local "
                f"checkout of commit {ref}, or give this machine network access to {repo}."
            )
    rmtree(target)
    tmp.rename(target)
    return (target / subdir if subdir else target), target


def locate_source(say: Say) -> Source:
    """The source to build and whether its files are the commit Pulumi.dev.yaml builds (reported, not raised)."""
    context, ref = stack_image_config()
    given = os.environ.get(ENV_SRC)
    checkout: Optional[Path] = None
    if given:
        src = Path(given).expanduser().resolve()
        if not src.is_dir():
            raise UpstreamError(f"{ENV_SRC}={given} is not a directory")
    elif context.startswith(GIT_CONTEXT_PREFIXES):
        src, checkout = clone(context, ref, say)
    else:
        src = (ROOT / context).resolve()
        if not src.is_dir():
            raise UpstreamError(f"{CONFIG_CONTEXT} is the local path {context}, which is not a directory")
    if not (src / DOCKERFILE).is_file():
        raise UpstreamError(f"{src} has no {DOCKERFILE}: is it a checkout of the upstream bundler?")
    proof = prove(src, ref, checkout)
    say(f"source: {src}: {proof.detail()}")
    if not proof.ok:
        say(f"warning: the source is not {CONFIG_REF} {ref}'s tree: the build goes on, and its report says FAIL")
    return Source(src, ref, proof)
