"""`make diff [BASE=main]`: what this working tree changes, offline, for every stack.

Renders each stack at BASE (a temporary git worktree, with BASE's own program and tools) and in
the working tree (uncommitted edits included) into build/diff/{base,head}/<stack>, then prints,
per stack, `tools.render --summary` (added, removed, replaced, changed, which roll their pods)
and the unified diff of the rendered objects. No Pulumi CLI, cluster or secret is needed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from tools.harness import ROOT
from tools.render import summary

OUT = ROOT / "build" / "diff"
NO_CHANGE = "no change to any rendered object"  # what tools.render's summary says


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def render(tree: Path, stack: str, out: Path) -> Optional[str]:
    """Render `stack` with the program in `tree`; the error's text when it does not render."""
    done = subprocess.run([sys.executable, "-m", "tools.render", "--stack", stack, "--out", str(out)], cwd=tree,
                          capture_output=True, text=True, check=False)
    return None if done.returncode == 0 else (done.stderr.strip() or done.stdout.strip())


def stacks_of(tree: Path) -> set[str]:
    return {p.name.split(".")[1] for p in tree.glob("Pulumi.*.yaml")}


def compare(base_tree: Path, stacks: list[str]) -> list[str]:
    lines: list[str] = []
    for stack in stacks:
        base, head = OUT / "base" / stack, OUT / "head" / stack
        failed = {side: render(tree, stack, out) for side, tree, out in (("base", base_tree, base),
                                                                          ("head", ROOT, head))}
        if any(failed.values()):
            lines.append(f"== {stack}: does not render")
            lines += [f"  {side}: {text.splitlines()[0] if text else ''}" for side, text in failed.items() if text]
            continue
        changes = summary(base, head)
        if changes == [NO_CHANGE]:
            lines.append(f"== {stack}: no change")
            continue
        lines.append(f"== {stack}: {len(changes)} change(s)")
        lines += [f"  {c}" for c in changes]
        lines += subprocess.run(["diff", "-ru", f"base/{stack}", f"head/{stack}"], cwd=OUT, capture_output=True,
                                text=True, check=False).stdout.splitlines()
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", default="main", help="the commit, branch or tag to compare with (default main)")
    parser.add_argument("--stack", action="append", help="only these stacks (default: every stack file)")
    args = parser.parse_args(argv)
    rev = git("rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    if rev.returncode != 0:
        print(f"make diff: BASE={args.base} is no commit here; fetch it, or name another: make diff BASE=<rev>",
              file=sys.stderr)
        return 2
    shutil.rmtree(OUT, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="x402-diff-") as tmp:
        tree = Path(tmp) / "base"
        added = git("worktree", "add", "--detach", "--quiet", str(tree), rev.stdout.strip())
        if added.returncode != 0:
            print(f"make diff: cannot check out {args.base}: {added.stderr.strip()}", file=sys.stderr)
            return 2
        try:
            stacks = sorted(args.stack or (stacks_of(tree) | stacks_of(ROOT)))
            print(f"make diff: {args.base} ({rev.stdout.strip()[:12]}) against the working tree; renders in "
                  f"{OUT.relative_to(ROOT)}")
            print("\n".join(compare(tree, stacks)))
        finally:
            git("worktree", "remove", "--force", str(tree))
    return 0


if __name__ == "__main__":
    sys.exit(main())
