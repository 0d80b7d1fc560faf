"""`python -m tests.e2e.upstream [--stack dev] [--print-dir] [--relock]`: build (or reuse) the tree the
stack's docker-build Images are given, and print its path."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from tests.e2e.upstream import BuildSpec, UpstreamError, build_report, describe, prepare, prune
from tests.e2e.upstream.common import CLI, quiet, rel, stderr_say
from tests.e2e.upstream.dependencies import LOCK_FILE
from tools.harness import run_program


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=CLI, description="Prepare the upstream bundler's image tree without Docker.")
    parser.add_argument("--stack", default="dev", help="the stack whose build to lay out (default dev)")
    parser.add_argument("--print-dir", action="store_true", help="print only the path of the app tree (no progress)")
    parser.add_argument("--relock", action="store_true",
                        help=f"resolve the substituted dependencies anew and write {rel(LOCK_FILE)}")
    args = parser.parse_args(argv)
    try:
        say = quiet if args.print_dir else stderr_say
        prepared = prepare(BuildSpec.of_resources(run_program(args.stack).resources), relock_lock=args.relock, say=say)
        prune({prepared.root}, say)
    except UpstreamError as exc:
        print(f"upstream: error: {exc}", file=sys.stderr)
        return 2
    if not args.print_dir:
        stderr_say(
            f"ready: commit {prepared.commit}, WORKDIR {prepared.workdir}, USER {prepared.user} "
            f"({prepared.uid}:{prepared.gid}, process gid {prepared.process_gid}), ENTRYPOINT {prepared.entrypoint}, "
            f"CMD {prepared.cmd}, EXPOSE {prepared.exposed_ports}; from {prepared.spec}; {describe(prepared.figures)}"
        )
        for name, ok, detail in build_report(prepared):
            stderr_say(f"build: {name}: {'ok' if ok else 'FAIL'} ({detail})")
    print(prepared.app_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
