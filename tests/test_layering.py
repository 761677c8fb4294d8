"""The package's layers (docs/design.md, "Modules and layers"): no circle of imports, and no import
that runs back up a layer. Every import counts, at module level or inside a function."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cmisweep"

# (who, must not import, why): module-name prefixes, as docs/design.md states them
RULES = [
    ("cmisweep.vocabulary", "cmisweep.", "the vocabulary is the bottom layer"),
    ("cmisweep.migrate", "cmisweep.", "every reader of stored files, the configs included, uses it"),
    ("cmisweep.reports", "cmisweep.sweep", "reports read trials, not Tune state"),
    ("cmisweep.trial", "cmisweep.sweep", "a trial runs without Ray"),
    ("cmisweep.training", "cmisweep.sweep", "a trial runs without Ray"),
    ("cmisweep.saved", "cmisweep.sweep", "a trial runs without Ray"),
    ("cmisweep.generation", "cmisweep.sweep", "a trial runs without Ray"),
    ("cmisweep.models", "cmisweep.training", "models know no trainer"),
    ("cmisweep.metrics", "cmisweep.sweep", "metrics know no sweep"),
    ("cmisweep.metrics", "cmisweep.reports", "metrics know no report"),
    ("cmisweep.metrics", "cmisweep.training", "metrics know no trainer"),
    ("cmisweep.metrics", "cmisweep.trial", "metrics know no trial"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        anchor = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(anchor[: len(anchor) - (node.level - 1)] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in modules:
                    n = n.rpartition(".")[0]
                if n and n != mod and n.startswith("cmisweep"):
                    edges[mod].add(n)
    return edges


def is_face(mod: str, edges: dict[str, set[str]]) -> bool:
    """A package's __init__ that only hands its submodules' names on: importing a submodule runs
    it anyway, so its imports are no edge of the structure."""
    path = PKG.parent / Path(*mod.split(".")) / "__init__.py"
    if not path.exists():
        return False
    tree = ast.parse(path.read_text())
    return not any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) for n in tree.body)


def test_no_import_runs_back_up_a_layer():
    broken = [f"{who} imports {target}: {why}" for who, targets in graph().items() for target in targets
              for prefix, banned, why in RULES
              if (who == prefix or who.startswith(prefix + ".")) and target.startswith(banned)]
    assert not broken, "\n".join(broken)


def test_no_circle_of_imports():
    edges = graph()
    edges = {m: {t for t in ts if not is_face(t, edges)} for m, ts in edges.items() if not is_face(m, edges)}
    # Tarjan's strongly connected components, iteratively
    index, low, on, stack, circles, counter = {}, {}, set(), [], [], [0]

    def strong(root):
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        circles.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = counter[0]
                counter[0] += 1
                stack.append(w)
                on.add(w)
                work.append((w, iter(sorted(edges.get(w, ())))))
            elif w in on:
                low[v] = min(low[v], index[w])

    for m in sorted(edges):
        if m not in index:
            strong(m)
    assert not circles, circles
