"""`python -m tests.e2e.upstream [--print-dir] [--relock]`: build (or reuse) the tree and print its path."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from tests.e2e.upstream import UpstreamError, build_report, prepare
from tests.e2e.upstream.common import CLI, quiet, rel, stderr_say
from tests.e2e.upstream.dependencies import LOCK_FILE


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog=CLI, description="Prepare the upstream bundler's image tree without Docker.")
    parser.add_argument("--print-dir", action="store_true", help="print only the path of the app tree (no progress)")
    parser.add_argument("--relock", action="store_true",
                        help=f"resolve the substituted dependencies anew and write {rel(LOCK_FILE)}")
    args = parser.parse_args(argv)
    try:
        prepared = prepare(relock_lock=args.relock, say=quiet if args.print_dir else stderr_say)
    except UpstreamError as exc:
        print(f"upstream: error: {exc}", file=sys.stderr)
        return 2
    if not args.print_dir:
        stderr_say(
            f"ready: commit {prepared.commit}, WORKDIR {prepared.workdir}, USER {prepared.user} "
            f"({prepared.uid}:{prepared.gid}, process gid {prepared.process_gid}), ENTRYPOINT {prepared.entrypoint}, "
            f"CMD {prepared.cmd}, EXPOSE {prepared.exposed_ports}"
        )
        for name, ok, detail in build_report(prepared):
            stderr_say(f"build: {name}: {'ok' if ok else 'FAIL'} ({detail})")
    print(prepared.app_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
