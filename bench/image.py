"""Seed risk 5, image size: the upstream Dockerfile's /app against the traced one (imageDockerfile).

    python bench/image.py [--stack dev] [--no-runs]

Lays out both trees from the same source as the runtime test does (tests.e2e.upstream) and
prints, for each, /app's apparent and on-disk size, its files and its gzip layer size; then,
unless --no-runs, runs the stack's runtime test once on each layout (`python -m tests.e2e
--image-dockerfile ...`, root needed) and prints each process's time to Ready and when its port
listened, from the run's own line. Figures, not a test: it exits 0 whatever they are.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.scenarios.image import LOADS, READY  # noqa: E402 - after the path
from tests.e2e.upstream import BuildSpec, prepare  # noqa: E402
from tests.e2e.upstream.common import quiet  # noqa: E402
from tools.harness import run_program  # noqa: E402

LAYOUTS = ("upstream", "traced")
FIGURE = re.compile(r"(\w+) (never|[\d.]+ s) \(budget [\d.]+ s(?:, listening after ([\d.]+) s)?\)")


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def runs(stack: str) -> dict[str, dict[str, tuple[str, str]]]:
    """Per layout, per process: (time to Ready, listening after), from the runtime test's line."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    kept = ROOT / "build" / "bench-image"
    kept.mkdir(parents=True, exist_ok=True)
    for layout in LAYOUTS:
        done = subprocess.run([sys.executable, "-m", "tests.e2e", "--stack", stack, "--image-dockerfile", layout],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        (kept / f"{stack}-{layout}.txt").write_text(done.stdout)
        for name in (READY, LOADS):
            shown = next((x for x in done.stdout.splitlines() if f": {name}:" in x), f"{name}: no line")
            print(f"bench-image: {layout}: {shown}")
        line = next((x for x in done.stdout.splitlines() if f": {READY}:" in x), "")
        found[layout] = {m.group(1): (m.group(2), f"{m.group(3)} s" if m.group(3) else "-")
                         for m in FIGURE.finditer(line)}
        print(f"bench-image: {layout}: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'no output'}",
              flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--no-runs", action="store_true", help="only lay out and measure the two trees")
    args = parser.parse_args()
    trees = {layout: prepare(BuildSpec.of_resources(
        run_program(args.stack, overrides={"imageDockerfile": layout}).resources), say=quiet) for layout in LAYOUTS}
    print(f"| /app ({args.stack}) | {' | '.join(LAYOUTS)} | traced / upstream |")
    print("| --- | --- | --- | --- |")
    for key, label, fmt in (("apparent", "apparent size", mib), ("disk", "on disk", mib), ("files", "files", str),
                            ("compressed", "gzip layer", mib)):
        a, b = (trees[x].figures[key] for x in LAYOUTS)
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {b / a:.3f} |")
    if args.no_runs:
        return
    ready = runs(args.stack)
    print(f"\n| process ({args.stack}) | time to Ready, upstream | traced | port listening after, upstream | traced |")
    print("| --- | --- | --- | --- | --- |")
    for process in sorted({p for r in ready.values() for p in r}):
        (ru, lu), (rt, lt) = (ready[x].get(process, ("?", "?")) for x in LAYOUTS)
        print(f"| {process} | {ru} | {rt} | {lu} | {lt} |")


if __name__ == "__main__":
    main()
