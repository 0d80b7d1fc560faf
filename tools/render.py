"""Offline render: what a stack would create, with no Pulumi CLI, no cluster, no secrets.

    python -m tools.render --stack dev --out build/render/dev
    python -m tools.render --summary render/base/dev render/head/dev   # what a change does

Runs the real program under mocks (`tools.harness`) with placeholder secrets and writes one
YAML per Kubernetes object (`<kind>-<logical name>.yaml`, keys in a canonical order, as
`kubectl apply` takes it, secret values redacted), `graph.json` (every resource, its parent,
dependencies and redacted inputs), `graph.mmd` (the objects by component and the dependencies
that order the rollout, as Mermaid) and `architecture.mmd` (the components and the order
between them: docs/architecture.md's diagram). Two runs give byte-identical files, so the render of a
base branch and of a pull request can be diffed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from components.settings import ConfigError
from components.settings.reader import Problem
from components.settings.stack_file import StackFileError, declared_keys, unknown_key
from tools.harness import ROOT, Recording, Registered, run_program, stack_config
from tools.validate import validate

REDACTED = "REDACTED"
# The digest a promoting stack would read from the building stack: clearly not a real one.
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64


def normalise(node: Any) -> Any:
    """JSON numbers arrive as floats through protobuf; whole numbers become ints again."""
    if isinstance(node, float) and node.is_integer():
        return int(node)
    if isinstance(node, dict):
        return {k: normalise(v) for k, v in node.items()}
    if isinstance(node, list):
        return [normalise(v) for v in node]
    return node


def manifest(rec: Recording, r: Registered) -> dict[str, Any]:
    """The object as `kubectl apply` takes it, built only from redacted inputs."""
    body = normalise(r.redacted_inputs)
    metadata = dict(body.get("metadata") or {})
    metadata["name"] = rec.k8s_name(r)
    body["metadata"] = metadata
    if body.get("kind") == "Secret":
        # Keys stay visible (reviewers see what a Secret holds), values never.
        for field in ("data", "stringData"):
            if field in r.inputs:
                body[field] = {key: REDACTED for key in sorted(r.inputs[field] or {})}
    ordered = {k: canonical(body[k]) for k in ("apiVersion", "kind", "metadata") if k in body}
    ordered.update({k: canonical(v) for k, v in sorted(body.items()) if k not in ordered})
    return ordered


def canonical(node: Any) -> Any:
    """Maps with `name` first and the other keys sorted, so a diff shows values, not reorderings.
    Lists keep their order: in env, containers and ports it means something."""
    if isinstance(node, dict):
        keys = sorted(node, key=lambda k: (k != "name", k))
        return {k: canonical(node[k]) for k in keys}
    if isinstance(node, list):
        return [canonical(v) for v in node]
    return node


def file_name(r: Registered, doc: dict[str, Any]) -> str:
    """`<kind>-<logical name>.yaml`: stable across content changes (the content-hashed object
    name stays inside), so a changed value diffs within one file instead of a removal and an add."""
    return f"{str(doc['kind']).lower()}-{r.name}.yaml"


def promote_outputs(stack: str) -> dict[str, dict[str, Any]]:
    """A stand-in for the building stack's outputs, for stacks in promote mode."""
    config = stack_config(stack)
    source = config.get("x402-bundler:imagePromoteStack")
    repository = config.get("x402-bundler:imageRepository", "registry.invalid/promoted")
    return {source: {"imageRef": f"{repository}@{PLACEHOLDER_DIGEST}"}} if source else {}


def render(stack: str, overrides: Optional[dict[str, Any]] = None) -> Recording:
    # No network: the harness answers the GHCR package read as not yet pushed.
    return run_program(stack, overrides=overrides, stack_outputs=promote_outputs(stack))


def graph(rec: Recording) -> dict[str, Any]:
    resources = []
    for r in sorted(rec.resources, key=lambda r: r.urn):
        resources.append(
            {
                "type": r.type,
                "name": r.name,
                "urn": r.urn,
                "parent": r.parent,
                "dependencies": sorted(set(r.dependencies)),
                "options": {
                    "protect": r.protect,
                    "retainOnDelete": r.retain_on_delete,
                    "customTimeouts": r.custom_timeouts,
                },
                "inputs": normalise(r.redacted_inputs),
            }
        )
    return {"resources": resources, "outputs": sorted(rec.outputs)}


def _component_of(by_urn: dict[str, Registered], urn: str) -> Optional[Registered]:
    """The top-level component a resource belongs to (itself, if it is one)."""
    r = by_urn.get(urn)
    while r is not None and r.parent in by_urn:
        r = by_urn[r.parent]
    return r


def _node_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def mermaid(rec: Recording) -> str:
    """Every object, grouped by its component, and the dependencies that order the rollout.

    Node ids are the logical names, and lines are sorted, so adding an object adds lines and
    rewrites none. The namespace edges every object has are left out; a dependency on a
    component is drawn to the objects it holds (the package check holds its GitHub provider).
    """
    by_urn = {r.urn: r for r in rec.resources}
    children: dict[str, list[Registered]] = {}
    for r in rec.resources:
        children.setdefault(r.parent, []).append(r)

    def leaves(r: Registered) -> list[Registered]:
        if r.custom:
            return [r]
        return [leaf for c in children.get(r.urn, []) for leaf in leaves(c)]

    groups = sorted((r for r in rec.resources if r.parent not in by_urn), key=lambda r: r.name)
    nodes = sorted({leaf.urn: leaf for r in groups for leaf in leaves(r)}.values(), key=lambda r: r.name)
    ids = {r.urn: _node_id(r.name) for r in nodes}
    if len(set(ids.values())) != len(ids):  # two kinds share a logical name: say which is which
        ids = {r.urn: _node_id(f"{r.name}_{r.type.split(':')[-1]}") for r in nodes}
    skipped = {r.urn for r in nodes if r.type == "kubernetes:core/v1:Namespace"}
    lines = ["flowchart LR"]
    # A component with nothing in it yet is an empty group: its first object then adds a line.
    for group in groups:
        lines.append(f'  subgraph {_node_id(group.name)}_group["{group.name} ({group.type.split(":")[-1]})"]')
        lines += [f'    {ids[r.urn]}["{r.type.split(":")[-1]} {r.name}"]' for r in nodes
                  if _component_of(by_urn, r.urn) is group]
        lines.append("  end")
    edges: set[tuple[str, str]] = set()
    for r in rec.resources:  # components' own dependencies too: the package check waits for the image
        for dep in r.dependencies:
            if dep not in by_urn:
                continue
            edges.update((ids[d.urn], ids[t.urn]) for d in leaves(by_urn[dep]) for t in leaves(r)
                         if d.urn not in skipped and d.urn in ids and t.urn in ids)
    lines += [f"  {a} --> {b}" for a, b in sorted(edges) if a != b]
    return "\n".join(lines) + "\n"


def architecture(rec: Recording) -> str:
    """The components and the order between them, as Mermaid: an edge A --> B when something in
    B waits for something in A, without the edges that a longer path already implies."""
    by_urn = {r.urn: r for r in rec.resources}
    nodes = {c.name: c.type.split(":")[-1] for r in rec.resources if (c := _component_of(by_urn, r.urn)) is not None}
    edges: set[tuple[str, str]] = set()
    for r in rec.resources:
        target = _component_of(by_urn, r.urn)
        for dep in r.dependencies:
            source = _component_of(by_urn, dep)
            if source is not None and target is not None and source.name != target.name:
                edges.add((source.name, target.name))

    def reachable(start: str, skip: tuple[str, str]) -> set[str]:
        seen, frontier = set(), [start]
        while frontier:
            node = frontier.pop()
            for a, b in edges:
                if a == node and (a, b) != skip and b not in seen:
                    seen.add(b)
                    frontier.append(b)
        return seen

    kept = sorted(e for e in edges if e[1] not in reachable(e[0], skip=e))
    lines = ["flowchart LR"]
    lines += [f"  {name}[{name}<br/>{kind}]" for name, kind in sorted(nodes.items())]
    lines += [f"  {a} --> {b}" for a, b in kept]
    return "\n".join(lines) + "\n"


def write(stack: str, out: Path, overrides: Optional[dict[str, Any]] = None) -> int:
    rec = render(stack, overrides)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    count = 0
    for r in rec.resources:
        if not r.type.startswith("kubernetes:") or not r.custom:
            continue
        doc = manifest(rec, r)
        path = out / file_name(r, doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
        count += 1
    (out / "graph.json").write_text(json.dumps(graph(rec), indent=2, sort_keys=True) + "\n")
    (out / "graph.mmd").write_text(mermaid(rec))
    (out / "architecture.mmd").write_text(architecture(rec))
    return count


# Workloads whose pod template change makes Kubernetes replace their pods.
ROLLING_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def summary(base: Path, head: Path) -> list[str]:
    """What a change does to the rendered objects: added, removed, replaced (a new object name:
    content-named ConfigMaps and Secrets, a Job that runs again) or changed, and which roll pods."""
    def objects(root: Path) -> dict[str, dict[str, Any]]:
        return {str(p.relative_to(root)): yaml.safe_load(p.read_text()) for p in sorted(root.rglob("*.yaml"))}

    old, new = objects(base), objects(head)
    lines = [f"added    {k}" for k in sorted(set(new) - set(old))]
    lines += [f"removed  {k}" for k in sorted(set(old) - set(new))]
    for key in sorted(set(old) & set(new)):
        a, b = old[key], new[key]
        if a == b:
            continue
        how = "replaced" if a["metadata"]["name"] != b["metadata"]["name"] else "changed "
        why = []
        if b["kind"] in ROLLING_KINDS and a.get("spec", {}).get("template") != b.get("spec", {}).get("template"):
            why.append("rolls its pods")
        if b["kind"] == "Job" and how == "replaced":
            why.append("runs again")
        lines.append(f"{how} {key}" + (f" ({', '.join(why)})" if why else ""))
    return lines or ["no change to any rendered object"]


def offline_message(stack: str, error: ConfigError) -> str:
    """The problems with fixes for someone without the Pulumi CLI: which stack file to edit."""
    lines = [f"Stack '{stack}' configuration has {len(error.problems)} problem(s); nothing was rendered:"]
    for p in error.problems:
        fix = f"edit {p.qualified} in Pulumi.{stack}.yaml (with the CLI: {p.fix})" if p.fix.startswith("pulumi ") \
            else p.fix
        lines += [f"  - {p.qualified}: {p.message}", f"      fix: {fix}"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stacks = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
    parser.add_argument("--stack", choices=stacks)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summary", nargs=2, type=Path, metavar=("BASE", "HEAD"),
                        help="print what changes between two render directories, and exit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="render as if the stack file set KEY (without the project prefix) to VALUE")
    args = parser.parse_args(argv)
    if args.summary:
        for directory in args.summary:
            if not (directory.is_dir() and any(directory.glob("*.yaml"))):
                parser.error(f"--summary: {directory} is no render directory (make render writes one: "
                             "build/render/<stack>)")
        print("\n".join(summary(*args.summary)))
        return
    if not (args.stack and args.out):
        parser.error("--stack and --out are required (or --summary BASE HEAD)")
    overrides = dict(item.split("=", 1) for item in args.set)
    declared = declared_keys()
    problems = [unknown_key(k, declared, "--set") for k in overrides if k not in declared]
    problems += [Problem(k, "is a secret: a value on the command line would land in the shell's history, and the "
                            "render stands in a placeholder for it anyway.", f"drop --set {k}=...")
                 for k in overrides if declared.get(k, {}).get("secret")]
    usable = {k: v for k, v in overrides.items() if k in declared and not declared[k].get("secret")}
    try:
        count = write(args.stack, args.out, usable or None)
        needed = validate(args.stack, usable or None)
    except StackFileError as error:
        print(f"make render STACK={args.stack}: {error}", file=sys.stderr)
        sys.exit(2)
    except ConfigError as error:
        problems += error.problems
    if problems:
        # A config problem is the user's to fix: all of them, with their fixes, and no traceback.
        print(offline_message(args.stack, ConfigError(args.stack, problems)), file=sys.stderr)
        sys.exit(2)
    print(f"rendered stack {args.stack}: {count} Kubernetes objects, graph.json, graph.mmd and architecture.mmd "
          f"in {args.out}")
    if needed.missing:
        # A green render is no green light: say what it stood in for that `up` will need.
        keys = ", ".join(p.key for p in needed.missing)
        print(f"placeholders stood in for secrets that pulumi up needs and Pulumi.{args.stack}.yaml does not hold: "
              f"{keys}; set each with make secret STACK={args.stack} KEY=<key> < <file>")


if __name__ == "__main__":
    main()
