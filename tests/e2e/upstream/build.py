"""The stages before the runtime stage, step by step as their Dockerfile says (an unknown step is an
error, so a change is noticed). Each stage has a directory standing for its `/`; `FROM <stage>`
goes on in that stage's. Steps: COPY from the context, a named context or an earlier stage;
`yarn install --frozen-lockfile` run for real with the image's yarn and the committed lock;
`yarn build` (rimraf lib, then tsc) on the source adapted to the substituted packages;
`find ... -delete`; the echo into /tmp; and `npm ci` and `node <script>` run for real with this
machine's npm and node (20.20, the image's), their absolute path arguments read as paths in the
stage (image/Dockerfile's tracer)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.upstream import dependencies
from tests.e2e.upstream.common import Say, UpstreamError, node_env, rel, run_logged, tail
from tests.e2e.upstream.context import Context
from tests.e2e.upstream.dockerfile import WHO, Instruction, Stage, parse_copy, resolve_in, shell_commands
from tests.e2e.upstream.layout import copy_in


@dataclass(frozen=True)
class Adaptation:
    """A source edit for a substituted package's changed API; applied to the builder's copy."""

    path: str
    old: str
    new: str
    count: int
    """Exactly this many occurrences are expected; anything else fails the build."""
    why: str


_TTL_WHY = ("ardrive-promise-cache 1.4.0 renamed cacheParams.cacheTTLMillis cacheTTL (an unknown name leaves the "
            "TTL undefined and the constructor throws)")
_EPHEMERAL_WHY = "simple-cache 3 has no TemporaryCache; its EphemeralCache takes the same (capacity, ttlMs)"
ADAPTATIONS = (
    Adaptation("src/utils/inFlightDataItemCache.ts", "import { EphemeralCache, TemporaryCache }",
               "import { EphemeralCache }", 1, _EPHEMERAL_WHY),
    Adaptation("src/utils/inFlightDataItemCache.ts", "TemporaryCache<TransactionId", "EphemeralCache<TransactionId",
               1, _EPHEMERAL_WHY),
    Adaptation("src/utils/inFlightDataItemCache.ts", "cacheTTLMillis:", "cacheTTL:", 1, _TTL_WHY),
    Adaptation("src/arch/arweaveGateway.ts", "cacheTTLMillis:", "cacheTTL:", 1, _TTL_WHY),
    Adaptation("src/utils/cacheServiceUtils.ts", "cacheTTLMillis:", "cacheTTL:", 3, _TTL_WHY),
    Adaptation("src/routes/multiPartUploads.ts", "cacheTTLMillis:", "cacheTTL:", 1, _TTL_WHY),
)


@dataclass(frozen=True)
class Tolerated:
    """tsc errors the image's build would not have, expected from a substituted package."""

    file: str
    code: str
    fragment: str
    count: int
    why: str


_METRICS = ("Object literal may only specify known properties, and 'metricsConfig' does not exist in type "
            "'ReadThroughPromiseCacheParams<")
_METRICS_WHY = "ardrive-promise-cache 1.4.0 has no metrics option: the cache registers no metrics; nothing else changes"
TOLERATED_ERRORS = (
    Tolerated("src/arch/arweaveGateway.ts", "TS2345", _METRICS, 1, _METRICS_WHY),
    Tolerated("src/routes/multiPartUploads.ts", "TS2345", _METRICS, 1, _METRICS_WHY),
    Tolerated("src/utils/cacheServiceUtils.ts", "TS2345", _METRICS, 3, _METRICS_WHY),
    Tolerated("src/utils/inFlightDataItemCache.ts", "TS2345", _METRICS, 1, _METRICS_WHY),
)


@dataclass(frozen=True)
class TscError:
    file: str
    line: int
    column: int
    code: str
    message: str
    """With its continuation lines (where tsc says which property is unknown)."""

    def __str__(self) -> str:
        # tsc's last line is the most specific (which property, which type).
        return f"{self.file}:{self.line} {self.code} {self.message.splitlines()[-1][:200]}"


_ERROR_LINE = re.compile(r"^(\S[^(]*)\((\d+),(\d+)\): error (TS\d+): (.*)$")


def parse_tsc(output: str) -> list[TscError]:
    errors: list[TscError] = []
    for line in output.splitlines():
        match = _ERROR_LINE.match(line)
        if match:
            file, row, col, code, message = match.groups()
            errors.append(TscError(file, int(row), int(col), code, message))
        elif errors and line.startswith(" "):
            last = errors[-1]
            errors[-1] = TscError(last.file, last.line, last.column, last.code, f"{last.message}\n{line.strip()}")
    return errors


def classify(errors: list[TscError], tolerated: tuple[Tolerated, ...] = TOLERATED_ERRORS
             ) -> tuple[list[tuple[TscError, Tolerated]], list[TscError], list[tuple[Tolerated, int]]]:
    """(tolerated errors with their entry, untolerated errors, entries seen fewer times than counted)."""
    seen = {t: 0 for t in tolerated}
    matched: list[tuple[TscError, Tolerated]] = []
    rest: list[TscError] = []
    for error in errors:
        entry = next((t for t in tolerated if (t.file, t.code) == (error.file, error.code)
                      and t.fragment in error.message and seen[t] < t.count), None)
        if entry is None:
            rest.append(error)
        else:
            seen[entry] += 1
            matched.append((error, entry))
    return matched, rest, [(t, n) for t, n in seen.items() if n < t.count]


@dataclass
class Builder:
    """Emulates a stage in `root` (standing for the stage's `/`), from `workdir`."""

    context: Context
    root: Path
    logs: Path
    say: Say
    named: dict[str, Context] = field(default_factory=dict)
    """The named build contexts (`--build-context name=path`)."""
    stages: dict[str, Path] = field(default_factory=dict)
    """Roots of the stages built before this one, by name and index."""
    workdir: str = "/"
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    """What image.json keeps: the dependency difference, the tsc errors and the trace."""

    @property
    def work(self) -> Path:
        """The stage's WORKDIR on this machine."""
        return self.at(self.workdir)

    def at(self, path: str) -> Path:
        return self.root / resolve_in(self.workdir, path).relative_to("/")

    def run(self, stage: Stage) -> str:
        """All of the stage's instructions; returns its WORKDIR."""
        self.root.mkdir(parents=True, exist_ok=True)
        label = f"{stage.name or stage.index} stage"
        for ins in stage.instructions:
            where = f"Dockerfile line {ins.line} ({label})"
            if ins.keyword == "WORKDIR":
                self.workdir = str(resolve_in(self.workdir, ins.args.strip()))
                self.work.mkdir(parents=True, exist_ok=True)
            elif ins.keyword == "COPY":
                copy_in(parse_copy(ins), self.context, self.named, self.stages, self.root, self.workdir, None, where,
                        "/")
            elif ins.keyword == "RUN":
                for command in shell_commands(ins.args, where):
                    self.command(command, where, ins)
            elif ins.keyword != "LABEL":
                raise UpstreamError(f"{where}: `{ins}`: {ins.keyword} in the {label} is not emulated")
        return self.workdir

    def command(self, command: list[str], where: str, ins: Instruction) -> None:
        if command[:2] == ["apk", "add"]:
            packages = [c for c in command[2:] if not c.startswith("-")]
            self.say(f"builder: `apk add {' '.join(packages)}`: system packages, taken from this machine")
        elif command == ["yarn", "install", "--frozen-lockfile"]:
            self.install()
        elif command == ["yarn", "build"]:
            self.build()
        elif len(command) == 5 and command[0] == "find" and command[2] == "-name" and command[4] == "-delete":
            self.find_delete(command[1], command[3])
        elif command[0] == "echo" and len(command) >= 3 and command[-2] == ">" and command[-1].startswith("/tmp/"):
            self.say(f"builder: `{' '.join(ins.args.split())}` writes outside the work dir: nothing the image copies")
        elif command[:2] == ["npm", "ci"]:
            self.run_tool("npm", command, "npm-ci.log")
        elif command[0] == "node" and len(command) >= 2 and command[1].endswith("/trace.mjs"):
            # The image keeps no report; the emulator asks for one, for the figures and the runtime check.
            report = self.logs / "trace.json"
            self.run_tool("node", command, "trace.log", extra=("--report", str(report)))
            traced = command[command.index("--app") + 1] if "--app" in command else ""
            self.results["trace"] = {"app": str(resolve_in(self.workdir, traced)), "report": json.loads(
                report.read_text())}
        else:
            raise UpstreamError(
                f"{where}: `{shlex.join(command)}` is a step {WHO} does not know how to emulate: the upstream "
                f"Dockerfile changed; teach Builder.command() what it does"
            )

    def run_tool(self, tool: str, command: list[str], log_name: str, extra: tuple[str, ...] = ()) -> None:
        """`npm`/`node` on this machine, in the WORKDIR, the step's absolute paths mapped into the stage
        (`extra`: the emulator's own arguments, paths on this machine)."""
        argv = [tool, *(str(self.at(a)) if a.startswith("/") else a for a in command[1:]), *extra]
        log = self.logs / log_name
        rc, seconds = run_logged(argv, self.work, log, self.say, node_env())
        self.timings[log_name.removesuffix(".log").replace("-", "_")] = seconds
        if rc != 0:
            raise UpstreamError(f"`{shlex.join(command)}` failed (exit {rc}); end of {log}:\n{tail(log)}")
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("trace: "):
                self.say(f"{tool}: {line.removeprefix('trace: ')[:400]}")

    def install(self) -> None:
        """`yarn install --frozen-lockfile` with the substitutions in package.json and the committed lock."""
        yarn = dependencies.check_yarn()
        upstream_package = json.loads((self.work / "package.json").read_text())
        upstream_lock = (self.work / "yarn.lock").read_text()
        patched = dependencies.patched_package_json(upstream_package)
        ours = dependencies.check_lock(upstream_lock, upstream_package)
        (self.work / "package.json").write_text(json.dumps(patched, indent=2) + "\n")
        (self.work / "yarn.lock").write_text(ours)
        subs = ", ".join(f"{s.package} {s.upstream} -> {s.here}" for s in dependencies.SUBSTITUTIONS)
        self.say(f"builder: yarn install --frozen-lockfile with {rel(dependencies.LOCK_FILE)} ({subs})")
        log = self.logs / "yarn-install.log"
        rc, seconds = run_logged([str(yarn), "install", "--frozen-lockfile", "--non-interactive", "--no-progress"],
                                 self.work, log, self.say, node_env())
        self.timings["yarn_install"] = seconds
        if rc != 0:
            raise UpstreamError(f"`yarn install --frozen-lockfile` failed (exit {rc}); end of {log}:\n{tail(log)}")
        installed = dependencies.installed_packages(self.work / "node_modules")
        entries = dependencies.parse_lock(upstream_lock)
        differences = dependencies.differences(dependencies.lock_versions(entries), installed)
        self.results["dependencies"] = {
            "differences": differences,
            "optional_only": dependencies.optional_only(entries, upstream_package, differences),
        }
        native = sum(1 for p in (self.work / "node_modules").rglob("*.node") if p.is_file())
        self.say(f"builder: yarn install: {sum(map(len, installed.values()))} packages in {seconds:.1f}s, "
                 f"{native} native .node files; {len(differences)} names differ from the upstream yarn.lock")

    def build(self) -> None:
        """`yarn build` (the image's `yarn clean && tsc`) on the adapted source; tsc's errors are kept."""
        for a in ADAPTATIONS:
            path = self.work / a.path
            text = path.read_text() if path.is_file() else ""
            if text.count(a.old) != a.count:
                raise UpstreamError(
                    f"adaptation: expected {a.count} x {a.old!r} in {a.path}, found {text.count(a.old)}; the upstream "
                    f"changed: review ADAPTATIONS in tests/e2e/upstream/build.py"
                )
            path.write_text(text.replace(a.old, a.new))
        self.say(f"builder: adapted the source at {sum(a.count for a in ADAPTATIONS)} places "
                 f"in {len({a.path for a in ADAPTATIONS})} files")
        log = self.logs / "yarn-build.log"
        rc, seconds = run_logged([str(dependencies.YARN), "build"], self.work, log, self.say, node_env())
        self.timings["yarn_build"] = seconds
        if not (self.work / "lib" / "index.js").is_file():
            raise UpstreamError(f"`yarn build` (exit {rc}) emitted no lib/index.js. Last lines of {log}:\n{tail(log)}")
        errors = parse_tsc(log.read_text(errors="replace"))
        tsc = self.work / "node_modules" / "typescript" / "package.json"
        self.results["tsc"] = {
            "exit": rc,
            "version": json.loads(tsc.read_text()).get("version", "") if tsc.is_file() else "",
            "errors": [asdict(e) for e in errors],
        }
        _, untolerated, _ = classify(errors)
        self.say(f"builder: yarn build exit {rc} in {seconds:.1f}s: {len(errors)} tsc errors, "
                 f"{len(untolerated)} not tolerated; lib/ emitted")
        for error in untolerated[:8]:
            self.say(f"  {error}")

    def find_delete(self, where: str, pattern: str) -> None:
        base = (self.work / where).resolve()
        if self.work.resolve() not in (base, *base.parents):
            raise UpstreamError(f"`find {where} ...` points outside the builder work dir")
        gone = [p for p in base.rglob(pattern) if p.is_file() or p.is_symlink()]
        for p in gone:
            p.unlink()
        self.say(f"builder: find {where} -name {pattern!r} -delete: {len(gone)} files")

