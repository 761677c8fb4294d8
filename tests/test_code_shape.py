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
