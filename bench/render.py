"""How long evaluating both stacks under mocks takes, against the cost of importing the SDKs.

    python bench/render.py [--runs N]

Each measurement is a fresh Python process (median of N). The floor only imports pulumi,
pulumi_kubernetes, pulumi_docker_build and pulumi_github; the program run evaluates dev and
prod through tools.harness (what `make render` and the tests do). Target: within 1.5x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "import pulumi, pulumi_kubernetes, pulumi_docker_build, pulumi_github"
# pulumi_kubernetes loads its API modules lazily; the program needs these, and loading them
# (core/v1 above all) costs more than the floor itself. Measured apart to show where time goes.
API_MODULES = FLOOR + (
    "\nimport pulumi_random, pulumi_kubernetes.core.v1, pulumi_kubernetes.apps.v1, pulumi_kubernetes.batch.v1,"
    " pulumi_kubernetes.networking.v1, pulumi_kubernetes.policy.v1, pulumi_kubernetes.meta.v1,"
    " pulumi_kubernetes.apiextensions"
)
PROGRAM = "from tools.render import render\nfor stack in ('dev', 'prod'):\n    render(stack)"


def median_seconds(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    floor = median_seconds(FLOOR, runs)
    modules = median_seconds(API_MODULES, runs)
    program = median_seconds(PROGRAM, runs)
    print(f"floor (import pulumi + providers):      {floor:.3f} s (median of {runs})")
    print(f"floor + Kubernetes API modules used:    {modules:.3f} s")
    print(f"both stacks under mocks:                {program:.3f} s")
    print(f"ratio to the floor: {program / floor:.2f}x (target <= 1.50x)")
    print(f"ratio to floor + API modules: {program / modules:.2f}x; evaluation itself: {program - modules:.3f} s")


if __name__ == "__main__":
    main()
