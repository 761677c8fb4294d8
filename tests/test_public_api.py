"""cmisweep and its tests use Ray, MLflow and Optuna through their public APIs only (issue 28): a
private attribute or module changes without notice between releases, and the pins move. A scan of
the source, so that a private use is refused where it is written, not found at the next upgrade."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Ray internals cmisweep used to reach: the Repeater's groups, Tune's trial metadata and storage
FORBIDDEN = ("ray._private", "_trial_id_to_group", "_TrialGroup", "run_metadata", "experiment_driver_staging_path",
             "storage_filesystem", "trial_fs_path")


def _sources() -> list[Path]:
    me = Path(__file__).resolve()
    return sorted(p for d in ("cmisweep", "tests") for p in (ROOT / d).rglob("*.py") if p.resolve() != me)


def _private_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import of a module whose dotted path has a private component."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if any(part.startswith(("_private", "_internal")) for part in name.split(".")):
                found.append((node.lineno, name))
    return found


def test_the_scan_sees_every_source_file():
    files = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert {"cmisweep/cli.py", "cmisweep/sweep/search.py", "tests/test_cluster.py"} <= files


def test_the_scan_finds_what_it_forbids():
    tree = ast.parse("import ray._private.state\nfrom ray.autoscaler._private.x import Y\n"
                     "from ray.train._internal import storage\nfrom ray.tune import Callback\n")
    assert [m for _, m in _private_imports(tree)] == [
        "ray._private.state", "ray.autoscaler._private.x", "ray.autoscaler._private.x.Y", "ray.train._internal",
        "ray.train._internal.storage"]


def test_no_private_api_of_ray_mlflow_or_optuna():
    bad = []
    for path in _sources():
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        for i, line in enumerate(text.splitlines(), 1):
            bad += [f"{rel}:{i}: {s}" for s in FORBIDDEN if s in line]
        bad += [f"{rel}:{line}: import of {module}" for line, module in _private_imports(ast.parse(text))]
    assert not bad, "private APIs in use:\n" + "\n".join(bad)
