"""The runtime test's load recorder (tests/e2e/loads.js) in a real node process, and the verdict
(tests/e2e/loads.py) it leads to: what makes the load line fail, and that recording changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.e2e.loads import HERE, Records, judge, read

PROGRAM = """
const fs = require('fs');
const out = [require('./lib/a')];
try { require('optional-addon'); out.push('addon'); } catch (e) { out.push(e.code); }
out.push(fs.readFileSync('docs/spec.yaml', 'utf8').trim());
out.push(fs.existsSync('docs/gone.yaml'));
fs.promises.readFile('docs/also-gone.yaml').catch((e) => {
  out.push(e.code);
  const server = require('http').createServer().listen(0, () => {
    server.close();
    console.log(JSON.stringify(out));
  });
});
"""


def make_app(root: Path, *, addon: bool = False) -> Path:
    files = {"index.js": PROGRAM, "lib/a.js": "module.exports = 'a';", "docs/spec.yaml": "spec"}
    if addon:
        files |= {"node_modules/optional-addon/package.json": '{"name": "optional-addon", "main": "index.js"}',
                  "node_modules/optional-addon/index.js": "", "docs/gone.yaml": "here"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def run(app: Path, out: Path, *, record: bool) -> str:
    env = {**os.environ, "NODE_OPTIONS": ""}
    if record:
        env |= {"NODE_OPTIONS": f"--require {HERE / 'loads.js'}", "E2E_LOADS_DIR": str(out),
                "E2E_LOADS_NAME": "pod-0.api", "E2E_LOADS_APP": str(app)}
    done = subprocess.run(["node", "index.js"], cwd=app, env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, Records]:
    app = make_app(tmp_path / "app")
    out = tmp_path / "loads"
    out.mkdir()
    run(app, out, record=True)
    return app, read(out)


def test_recording_changes_nothing_the_process_does(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    (tmp_path / "loads").mkdir()
    plain = run(app, tmp_path / "loads", record=False)
    assert plain == run(app, tmp_path / "loads", record=True)
    assert json.loads(plain) == ["a", "MODULE_NOT_FOUND", "spec", False, "ENOENT"]


def test_it_records_loads_reads_misses_absences_and_ports(recorded: tuple[Path, Records]) -> None:
    app, records = recorded
    assert [who for who, _ in records.processes] == ["pod-0.api"]
    assert {str(app / "index.js"), str(app / "lib/a.js")} <= set(records.loads)
    assert str(app / "docs/spec.yaml") in records.reads
    assert [(m["req"], m["from"]) for m in records.misses] == [("optional-addon", str(app / "index.js"))]
    assert records.absent == {str(app / "docs/gone.yaml"): "existsSync",
                              str(app / "docs/also-gone.yaml"): "promises.readFile"}
    ((port, seconds),) = records.listens["pod-0.api"]
    assert port > 0 and 0 < seconds < 30


def verdict(app: Path, records: Records, untraced: Path, traced: set[str] | None = None,
            allowed: tuple[str, ...] = ()) -> tuple[bool, str]:
    files = {p.relative_to(app).as_posix() for p in app.rglob("*") if p.is_file()}
    v = judge(records, files if traced is None else traced, untraced, app, allowed, PurePosixPath(str(app)))
    return v.ok, v.detail


def test_a_run_whose_misses_the_untraced_tree_lacks_too_passes(recorded: tuple[Path, Records], tmp_path: Path) -> None:
    app, records = recorded
    ok, detail = verdict(app, records, untraced=make_app(tmp_path / "full"))
    assert ok, detail
    assert "1 failed requires (optional-addon x1), none resolving in the untraced tree" in detail


def test_a_require_that_the_untraced_tree_satisfies_fails_the_line(recorded: tuple[Path, Records],
                                                                    tmp_path: Path) -> None:
    """The optional addon the code carries on without: the trace lost it."""
    app, records = recorded
    ok, detail = verdict(app, records, untraced=make_app(tmp_path / "full", addon=True))
    assert not ok
    assert "failed requires resolve in the untraced tree" in detail and "optional-addon/index.js" in detail
    assert "files looked for under /app exist in the untraced tree" in detail and "gone.yaml" in detail


def test_a_loaded_file_outside_the_traced_set_fails_the_line(recorded: tuple[Path, Records], tmp_path: Path) -> None:
    app, records = recorded
    ok, detail = verdict(app, records, untraced=make_app(tmp_path / "full"), traced={"index.js", "docs/spec.yaml"})
    assert not ok and "1 loaded files are not in the traced set: ['lib/a.js']" in detail


def test_a_load_from_outside_the_app_fails_unless_allowed(recorded: tuple[Path, Records], tmp_path: Path) -> None:
    app, records = recorded
    records.loads["/opt/elsewhere/x.js"] = {"pod-0.api"}
    full = make_app(tmp_path / "full")
    assert not verdict(app, records, untraced=full)[0]
    assert verdict(app, records, untraced=full, allowed=("/opt/elsewhere/",))[0]


def test_no_records_at_all_fails_the_line(tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    ok, detail = verdict(app, Records(), untraced=app)
    assert not ok and "no process of the bundler image wrote a record" in detail
