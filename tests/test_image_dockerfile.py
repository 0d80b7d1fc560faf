"""image/Dockerfile (imageDockerfile=traced): the upstream build unchanged, the upstream runtime
contract kept, and a runtime stage that takes nothing but the traced /app."""

from __future__ import annotations

import re

import pytest

from components.image import TRACED_DOCKERFILE, TRACER_CONTEXT, TRACER_CONTEXT_NAME
from tests.e2e.upstream.dockerfile import Accounts, Stage, copies, exec_form, parse_dockerfile, shell_commands
from tests.helpers import upstream_dockerfile

PINNED_NODE = re.compile(r"^node:(20)\.(\d+)\.(\d+)-alpine@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def ours() -> list[Stage]:
    return parse_dockerfile(TRACED_DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def theirs() -> list[Stage]:
    return parse_dockerfile(upstream_dockerfile())


def steps(stage: Stage) -> list[tuple[str, str]]:
    return [(i.keyword, " ".join(i.args.split())) for i in stage.instructions]


def accounts_of(stage: Stage) -> Accounts:
    accounts = Accounts()
    for ins in stage.instructions:
        if ins.keyword == "RUN":
            for command in shell_commands(ins.args, "test"):
                if command[0] == "addgroup":
                    accounts.addgroup(command[1:])
                elif command[0] == "adduser":
                    accounts.adduser(command[1:])
    return accounts


def only(stage: Stage, keyword: str) -> str:
    (value,) = [i.args.strip() for i in stage.instructions if i.keyword == keyword]
    return value


def test_the_builder_stage_is_the_upstream_builder_step_for_step(ours: list[Stage], theirs: list[Stage]) -> None:
    """The same install, build and clean-up as the image upstream ships, so the traced /app is cut
    from the same tree (a changed upstream builder fails here when imageGitRef moves)."""
    builder = next(s for s in ours if s.name == "builder")
    upstream_builder = next(s for s in theirs if s.name == "builder")
    assert steps(builder) == steps(upstream_builder)
    assert upstream_builder.base == "node:20-alpine"


def test_every_base_image_is_node_20_alpine_pinned_by_digest_at_a_version_with_require_esm(ours: list[Stage]) -> None:
    """p-limit 6, which the jobs require, is an ES module: Node 20 loads it through require() only
    from 20.19 on."""
    bases = [s.base for s in ours if not any(s.base == o.name for o in ours)]
    assert len(bases) == 2 and len(set(bases)) == 1
    match = PINNED_NODE.match(bases[0])
    assert match, bases[0]
    assert (int(match.group(2)), int(match.group(3))) >= (19, 0)


def test_the_runtime_stage_keeps_the_upstream_runtime_contract(ours: list[Stage], theirs: list[Stage]) -> None:
    runtime, upstream_runtime = ours[-1], theirs[-1]
    for keyword in ("WORKDIR", "USER", "EXPOSE"):
        assert only(runtime, keyword) == only(upstream_runtime, keyword)
    for keyword in ("ENTRYPOINT", "CMD"):
        ins, upstream_ins = (next(i for i in s.instructions if i.keyword == keyword)
                             for s in (runtime, upstream_runtime))
        assert exec_form(ins) == exec_form(upstream_ins)
    assert exec_form(next(i for i in runtime.instructions if i.keyword == "ENTRYPOINT"))[0] == "/usr/bin/dumb-init"
    ids = accounts_of(runtime)
    assert ids.uid_of("bundler")[0] == 1001 and ids.gid_of("bundler") == 1001
    assert "dumb-init" in " ".join(i.args for i in runtime.instructions if i.keyword == "RUN")


def test_the_runtime_stage_copies_only_the_traced_tree(ours: list[Stage]) -> None:
    trace = next(s for s in ours if s.name == "trace")
    (copy,) = copies(ours[-1])
    assert (copy.from_stage, copy.sources, copy.dest, copy.chown) == ("trace", ["/out/app"], "./", "bundler:bundler")
    runs = [i.args for i in trace.instructions if i.keyword == "RUN"]
    assert runs[-1].split() == ["node", "/opt/tracer/trace.mjs", "--app", "/app", "--out", "/out/app"]
    assert trace.base == "builder"


def test_what_the_trace_stage_takes_from_the_tracer_context_is_in_the_repository(ours: list[Stage]) -> None:
    trace = next(s for s in ours if s.name == "trace")
    named = [c for c in copies(trace) if c.from_stage == TRACER_CONTEXT_NAME]
    taken = {source for c in named for source in c.sources}
    assert taken == {"package.json", "package-lock.json", "trace.mjs"}
    assert all((TRACER_CONTEXT / name).is_file() for name in taken)
    assert "npm ci" in " ".join(i.args for i in trace.instructions if i.keyword == "RUN")
