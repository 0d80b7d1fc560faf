"""The Dockerfile's stages, in the order the runtime stage needs them: each a directory standing for
its `/` (`FROM <stage>` goes on in that stage's), run by `build.Builder`; then the runtime stage
laid out into `app/` (`layout.py`) and measured (`figures.py`)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.e2e.upstream import dependencies
from tests.e2e.upstream.build import ADAPTATIONS, TOLERATED_ERRORS, Builder
from tests.e2e.upstream.common import Say, UpstreamError, version_of
from tests.e2e.upstream.context import Context
from tests.e2e.upstream.dockerfile import DOCKERFILE, Stage, copies, parse_dockerfile
from tests.e2e.upstream.figures import measure
from tests.e2e.upstream.layout import lay_out, verify
from tests.e2e.upstream.spec import BuildSpec


def _needed(final: Stage, stages: list[Stage]) -> list[Stage]:
    """The stages the runtime stage depends on (COPY --from, FROM), in Dockerfile order."""
    by_name = {s.name: s for s in stages if s.name} | {str(s.index): s for s in stages}
    wanted: set[int] = set()
    pending = [final]
    while pending:
        stage = pending.pop()
        for ref in [stage.base, *(c.from_stage for c in copies(stage) if c.from_stage)]:
            found = by_name.get(ref)
            if found is not None and found.index not in wanted:
                wanted.add(found.index)
                pending.append(found)
    return [s for s in stages if s.index in wanted]


def build_image(context: Context, spec: BuildSpec, commit: str, key: str, tmp: Path, say: Say) -> dict[str, Any]:
    """Every stage the runtime stage needs, then the runtime stage into `tmp/app`; image.json's content."""
    started = time.monotonic()
    text = spec.dockerfile if spec.dockerfile is not None else (context.root / DOCKERFILE).read_text()
    stages = parse_dockerfile(text)
    final = stages[-1]
    named = spec.contexts()
    roots: dict[str, Path] = {}
    workdirs: dict[str, str] = {}
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    logs = tmp / "logs"
    needed = _needed(final, stages)
    for stage in needed:
        keys = [k for k in (stage.name, str(stage.index)) if k]
        if stage.base in roots:
            # `FROM <stage>` goes on in that stage's tree, which no later step may then read as it was.
            later = [s for s in needed if s.index > stage.index]
            if any(stage.base in {c.from_stage for c in copies(s)} or s.base == stage.base for s in [*later, final]):
                raise UpstreamError(f"stage {keys[0]} goes on from {stage.base}, which a later stage also reads: "
                                    "not emulated")
            root, workdir = roots[stage.base], workdirs[stage.base]
        else:
            root, workdir = tmp / "stages" / keys[0], "/"
        say(f"{keys[0]} stage: `FROM {stage.base}{' AS ' + stage.name if stage.name else ''}` "
            f"({len(stage.instructions)} instructions)")
        builder = Builder(context, root, logs, say, named=named, stages=dict(roots), workdir=workdir)
        workdir = builder.run(stage)
        if "trace" in builder.results and "trace" not in results:
            traced = root / Path(builder.results["trace"]["app"]).relative_to("/")
            results["full_app"] = traced.relative_to(tmp).as_posix()
        results.update(builder.results)
        timings.update(builder.timings)
        for k in keys:
            roots[k], workdirs[k] = root, workdir
    layout_started = time.monotonic()
    image = lay_out(final, context, named, roots, tmp / "app", say)
    verify(tmp / "app")
    timings["layout"] = time.monotonic() - layout_started
    measuring = time.monotonic()
    results["figures"] = measure(tmp / "app")
    timings["measure"] = time.monotonic() - measuring
    timings["total"] = time.monotonic() - started
    return {
        "commit": commit, "key": key, "source": str(context.root), "spec": spec.label, **image, **results,
        "substitutions": [asdict(s) for s in dependencies.SUBSTITUTIONS],
        "adaptations": [asdict(a) for a in ADAPTATIONS],
        "tolerated_errors": [asdict(t) for t in TOLERATED_ERRORS],
        "lock_sha256": hashlib.sha256(dependencies.LOCK_FILE.read_bytes()).hexdigest(),
        "node": version_of(["node", "--version"]),
        "yarn": dependencies.IMAGE_YARN_VERSION,
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
