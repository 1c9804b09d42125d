"""The package's layers, read from the source: no import runs up a layer, and no module-level cycle.

Every module under brushpen/ is parsed with `ast`, and every `import` and `from ... import` in it
is checked, including those inside functions, since a lazy import is still a dependency. Top to
bottom, the layers are:

    cli  ->  studio_ui, api  ->  generators  ->  gan, text, safety, edge  ->  core

An import may go down any number of layers, and it may stay inside its own package. Between two
packages of one layer ("sideways") it is refused unless `SIDEWAYS` lists that edge with its
reason. `importlib.import_module("brushpen....")` takes a string and is not an import here: the
family record (`brushpen.families`) names each family's modules that way.

The cycle check covers module-level imports only (functions excluded), which are the ones that
run when a module is first imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "brushpen"

# Lower rank = lower layer. Core is the package's own top-level modules (brushpen/__init__, config,
# errors, store, adapters, registry, checkpoint, families, ziputil and any new one).
LAYERS = {"core": 0, "gan": 1, "text": 1, "safety": 1, "edge": 1, "generators": 2, "api": 3, "studio_ui": 3,
          "cli": 4}

# Imports between two packages of one layer that are allowed, as (importer, imported): reason.
SIDEWAYS = {
    ("edge", "gan"): "edge exports the GAN generator to ONNX and distils its student",
    ("edge", "text"): "edge exports the copywriter LM to ONNX and serves it under onnxruntime",
    ("edge", "safety"): "edge exports the deepfake detector to ONNX and distils its student",
    ("safety", "gan"): "the detector's fake set is sampled from a StyleGAN trained on the real patches",
}


@dataclass(frozen=True)
class Import:
    file: Path
    line: int
    source: str          # the statement as written
    importer: str        # dotted module name of the file
    target: str          # the brushpen module it loads (a submodule when `from pkg import submodule`)
    top_level: bool      # outside any function


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_module(name: str) -> bool:
    return name in MODULES or (PACKAGE.parent / name.replace(".", "/")).is_dir()


def layer_package(module: str) -> str:
    """'brushpen.gan.lora' -> 'gan'; a top-level module ('brushpen.store', 'brushpen') -> 'core'."""
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "core"


def function_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    return inside


def imports_of(path: Path) -> list[Import]:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    importer = module_name(path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    inside = function_nodes(tree)
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against this module's package
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from brushpen.edge import gan` loads the submodule brushpen.edge.gan
            subs = [f"{module}.{a.name}" for a in node.names if is_module(f"{module}.{a.name}")]
            targets = subs if len(subs) == len(node.names) else [module, *subs]
        for target in targets:
            if target == "brushpen" or target.startswith("brushpen."):
                found.append(Import(path, node.lineno, ast.get_source_segment(text, node) or ast.unparse(node),
                                    importer, target, id(node) not in inside))
    return found


def all_imports() -> list[Import]:
    return [imp for path in MODULES.values() for imp in imports_of(path)]


def where(imp: Import) -> str:
    kind = "module level" if imp.top_level else "inside a function"
    return f"{imp.file.relative_to(ROOT)}:{imp.line} ({kind}): {' '.join(imp.source.split())}"


def test_the_walk_sees_every_layer() -> None:
    """A guard on the walker itself: it finds modules in every layer and imports of both kinds."""
    found = all_imports()
    assert {layer_package(m) for m in MODULES} == set(LAYERS)
    assert any(i.top_level for i in found) and any(not i.top_level for i in found)
    assert len(MODULES) > 100


def test_no_import_runs_up_a_layer() -> None:
    problems = []
    for imp in all_imports():
        src, dst = layer_package(imp.importer), layer_package(imp.target)
        if LAYERS[dst] > LAYERS[src]:
            problems.append(f"{where(imp)}\n    {src} (layer {LAYERS[src]}) imports {dst} (layer {LAYERS[dst]}), "
                            "a higher layer: move what both need down, or call it from above")
        elif LAYERS[dst] == LAYERS[src] and src != dst and src != "core" and (src, dst) not in SIDEWAYS:
            problems.append(f"{where(imp)}\n    {src} imports {dst}, a package of the same layer: an edge not in "
                            "SIDEWAYS (tests/test_layers.py); add it there with its reason only if it is needed")
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_every_allowed_sideways_edge_is_used() -> None:
    """An exception that no import needs any more is removed, so the list stays honest."""
    used = {(layer_package(i.importer), layer_package(i.target)) for i in all_imports()}
    assert not set(SIDEWAYS) - used, f"unused SIDEWAYS entries: {sorted(set(SIDEWAYS) - used)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_module_level_import_cycle() -> None:
    edges: dict[tuple[str, str], Import] = {}
    for imp in all_imports():
        if imp.top_level and imp.target in MODULES and imp.target != imp.importer:
            edges.setdefault((imp.importer, imp.target), imp)
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b in edges:
        graph[a].add(b)
    cycle = find_cycle(graph)
    assert cycle is None, "module-level import cycle:\n" + "\n".join(
        f"  {where(edges[a, b])}" for a, b in pairwise(cycle))


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
