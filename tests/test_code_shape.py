"""Small units with one job each (docs/design.md section 8): no function of the package runs over
60 lines (ruff's max-statements in pyproject.toml says the same in statements)."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cmisweep"
MAX_LINES = 60


def test_no_function_over_60_lines():
    long = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PKG.parent)}:{node.lineno} {node.name}: {lines} lines")
    assert not long, "\n".join(long)


MUTATORS = {"append", "appendleft", "extend", "extendleft", "insert", "pop", "popleft", "popitem", "clear",
            "update", "setdefault", "add", "discard", "remove", "__setitem__", "__delitem__"}


def _module_state_writes(tree: ast.Module) -> list[tuple[int, str]]:
    """Writes, inside the module's functions, to a name the module binds at its top level: a
    `global` statement, an item or attribute assigned, deleted or augmented, or a mutating method."""
    top = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
           for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}

    def base(node):
        while isinstance(node, (ast.Subscript, ast.Attribute)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.Global):
                found += [(n.lineno, f"global {name}") for name in n.names]
            targets = (n.targets if isinstance(n, (ast.Assign, ast.Delete)) else
                       [n.target] if isinstance(n, (ast.AugAssign, ast.AnnAssign)) else [])
            for t in targets:
                if isinstance(t, (ast.Subscript, ast.Attribute)) and base(t) in top:
                    found.append((n.lineno, f"writes {base(t)}"))
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in MUTATORS
                    and base(n.func.value) in top):
                found.append((n.lineno, f"{base(n.func.value)}.{n.func.attr}()"))
    return found


def test_no_module_level_mutable_state():
    """State lives in objects that own it (docs/design.md section 8): a module-level queue or
    counter outlives the sweep it belongs to, and Tune's pickled copy of a callback cannot share it."""
    found = [f"{path.relative_to(PKG.parent)}:{line} {what}" for path in sorted(PKG.rglob("*.py"))
             for line, what in _module_state_writes(ast.parse(path.read_text(), str(path)))]
    assert not found, "\n".join(found)
