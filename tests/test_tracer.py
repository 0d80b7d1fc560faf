"""image/tracer/trace.mjs on a small /app: what it ships from the entry points, what its rules keep
that no tracer sees, and the mistakes that stop the build instead of shipping a tree that lacks a file.

Runs the real tracer (@vercel/nft from image/tracer's own lock, installed into build/ by `npm ci`)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.upstream.tracer import install

ARCH = {"x86_64": "x64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
MSGPACKR_PLATFORM = f"@msgpackr-extract/msgpackr-extract-linux-{ARCH}"


@pytest.fixture(scope="session")
def tracer() -> Path:
    return install()


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def package(name: str, main: str = "index.js", **extra: Any) -> str:
    return json.dumps({"name": name, "version": "1.0.0", "main": main, **extra})


APP: dict[str, str] = {
    "package.json": json.dumps({"name": "app", "scripts": {
        "db:migrate": "knex migrate:latest --knexfile lib/arch/db/knexfile.js"}}),
    "lib/index.js": "require('./router'); require('alpha');",
    "lib/router.js": "module.exports = require('fs').readFileSync('docs/openapi.yaml', 'utf8');",
    "lib/jobs/allWorkers.js": "require('msgpackr-extract');",
    "lib/arch/db/knexfile.js": "module.exports = { client: 'pg' };",
    "lib/migrations/001_init.js": "exports.up = () => {};",
    "lib/unreached.js": "require('unused');",
    "admin-server.js": "const ui = eval(\"require.resolve('@bull-board/ui/package.json')\");",
    "docs/openapi.yaml": "openapi: 3.0.0\n",
    "node_modules/alpha/package.json": package("alpha"),
    "node_modules/alpha/index.js": "module.exports = 1;",
    "node_modules/unused/package.json": package("unused"),
    "node_modules/unused/index.js": "module.exports = 2;",
    "node_modules/knex/package.json": package("knex", bin={"knex": "./bin/cli.js"}),
    "node_modules/knex/bin/cli.js": "require('../lib/knex');",
    "node_modules/knex/lib/knex.js": "module.exports = {};",
    "node_modules/pg/package.json": package("pg"),
    "node_modules/pg/index.js": "",
    "node_modules/ioredis/package.json": package("ioredis", main="built/index.js"),
    "node_modules/ioredis/built/index.js": "",
    "node_modules/@aws-sdk/client-s3/package.json": package("@aws-sdk/client-s3", main="dist-cjs/index.js"),
    "node_modules/@aws-sdk/client-s3/dist-cjs/index.js": "",
    "node_modules/@bull-board/ui/package.json": package("@bull-board/ui"),
    "node_modules/@bull-board/ui/dist/index.ejs": "<html></html>",
    "node_modules/@bull-board/ui/dist/static/app.js": "",
    "node_modules/msgpackr-extract/package.json": package(
        "msgpackr-extract", dependencies={"node-gyp-build-optional-packages": "5.2.2"},
        optionalDependencies={MSGPACKR_PLATFORM: "3.0.3"}),
    "node_modules/msgpackr-extract/binding.gyp": "{}",
    "node_modules/msgpackr-extract/index.js":
        "module.exports = require('node-gyp-build-optional-packages')(__dirname);",
    "node_modules/node-gyp-build-optional-packages/package.json": package("node-gyp-build-optional-packages"),
    "node_modules/node-gyp-build-optional-packages/index.js": "module.exports = () => ({});",
    f"node_modules/{MSGPACKR_PLATFORM}/package.json": package(MSGPACKR_PLATFORM),
    f"node_modules/{MSGPACKR_PLATFORM}/node.napi.glibc.node": "\x7fELF",
}


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    write(root, APP)
    (root / "node_modules/.bin").mkdir()
    (root / "node_modules/.bin/knex").symlink_to("../knex/bin/cli.js")
    (root / "node_modules/.bin/unused").symlink_to("../unused/index.js")
    return root


Trace = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def trace(tracer: Path, tmp_path: Path) -> Trace:
    def run(app: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["node", str(tracer), "--app", str(app), *args], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "NODE_OPTIONS": ""})
    return run


def traced(trace: Trace, app: Path, tmp_path: Path) -> set[str]:
    done = trace(app, "--list", str(tmp_path / "list.txt"))
    assert done.returncode == 0, done.stderr
    return set((tmp_path / "list.txt").read_text().split())


def test_it_ships_what_the_entry_points_reach_and_nothing_else(trace: Trace, app: Path, tmp_path: Path) -> None:
    files = traced(trace, app, tmp_path)
    assert {"lib/index.js", "lib/router.js", "node_modules/alpha/index.js", "lib/jobs/allWorkers.js",
            "admin-server.js", "lib/arch/db/knexfile.js", "node_modules/knex/bin/cli.js",
            "node_modules/knex/lib/knex.js", "lib/migrations/001_init.js"} <= files
    assert not {"lib/unreached.js", "node_modules/unused/index.js", "node_modules/.bin/unused"} & files


def test_the_probes_modules_ship_as_deep_check_loads_them(trace: Trace, app: Path, tmp_path: Path) -> None:
    assert {"node_modules/pg/index.js", "node_modules/ioredis/built/index.js",
            "node_modules/@aws-sdk/client-s3/dist-cjs/index.js"} <= traced(trace, app, tmp_path)


def test_its_rules_keep_what_code_finds_by_paths_no_tracer_sees(trace: Trace, app: Path, tmp_path: Path) -> None:
    files = traced(trace, app, tmp_path)
    assert {"docs/openapi.yaml", "package.json", "node_modules/.bin/knex",
            "node_modules/@bull-board/ui/package.json", "node_modules/@bull-board/ui/dist/index.ejs",
            "node_modules/@bull-board/ui/dist/static/app.js",
            f"node_modules/{MSGPACKR_PLATFORM}/node.napi.glibc.node"} <= files


def test_out_places_the_files_and_the_bin_links(trace: Trace, app: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = trace(app, "--out", str(out), "--report", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    placed = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() or p.is_symlink()}
    assert placed == set(report["files"]) and report["traced"]["files"] == len(placed)
    assert os.readlink(out / "node_modules/.bin/knex") == "../knex/bin/cli.js"
    assert (out / "lib/index.js").stat().st_ino == (app / "lib/index.js").stat().st_ino
    assert report["tree"]["files"] > report["traced"]["files"]


@pytest.mark.parametrize(("change", "says"), [
    pytest.param(lambda app: write(app, {"package.json": json.dumps({"scripts": {"db:migrate": "knex migrate:up"}})}),
                 "the upstream changed how it migrates", id="migration-command-changed"),
    pytest.param(lambda app: (app / "docs/openapi.yaml").unlink(), "kept path docs/openapi.yaml is not in",
                 id="kept-file-missing"),
    pytest.param(lambda app: shutil.rmtree(app / "node_modules" / MSGPACKR_PLATFORM.split("/")[0]),
                 "which is not installed for this platform", id="platform-addon-missing"),
    pytest.param(lambda app: write(app, {"node_modules/alpha/binding.gyp": "{}"}),
                 "node_modules/alpha build a native addon, and none is kept", id="addon-not-kept"),
])
def test_a_tree_it_cannot_trace_whole_stops_the_build(trace: Trace, app: Path, change: Callable[[Path], Any],
                                                      says: str) -> None:
    change(app)
    done = trace(app, "--list", os.devnull)
    assert done.returncode == 1 and says in done.stderr, done.stderr
