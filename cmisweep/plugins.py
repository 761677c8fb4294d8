"""Plug-ins: a regularizer or a model that lives outside cmisweep (docs/design.md section 9).

A plug-in is named by a reference, one of:

    mypkg.reg:Club          an importable module and an attribute of it
    path/to/club.py:Club    an explicit local file (relative to the working directory)
    club                    an entry point of an installed package, in the group
                            cmisweep.regularizers (regularizers) or cmisweep.models (models)

A plug-in is code that runs: cmisweep imports it only from these three places, and never from a
string it was not given. A reference that does not resolve is a PluginError, one line naming it.
On Ray, the module of a plug-in that is not an installed package travels to the workers through
`runtime_env={"py_modules": ...}` (runtime_modules); there a file reference imports by its stem.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

GROUPS = {"regularizer": "cmisweep.regularizers", "model": "cmisweep.models"}


class PluginError(ValueError):
    """A plug-in reference that does not resolve to what it should; the message is one line."""


def _split(ref: str) -> tuple[str, str] | None:
    if ":" not in ref:
        return None
    module, _, attr = ref.rpartition(":")
    return (module, attr) if module and attr else None


def _import_file(path: Path):
    """A local file as a module named by its stem (as Ray's py_modules ships it to the workers)."""
    name = path.stem
    if name in sys.modules and Path(getattr(sys.modules[name], "__file__", "") or "").resolve() == path.resolve():
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _module(module: str):
    if module.endswith(".py"):
        path = Path(module)
        if path.is_file():
            return _import_file(path)
        try:
            return importlib.import_module(path.stem)  # on a Ray worker: shipped by py_modules
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"no file {path} here, and no importable module {path.stem!r}") from None
    return importlib.import_module(module)


@lru_cache(maxsize=None)
def load(ref: str, kind: str):
    """The object a reference names (kind: 'regularizer' or 'model'), or a PluginError."""
    where = f"{kind} plug-in {ref!r}"
    parts = _split(ref)
    if parts is None:
        found = [e for e in entry_points(group=GROUPS[kind]) if e.name == ref]
        if not found:
            raise PluginError(f"{where}: no entry point of that name in group {GROUPS[kind]}; expected "
                              "'module:Attribute', 'path/file.py:Attribute' or an installed entry point")
        try:
            return found[0].load()
        except Exception as e:  # noqa: BLE001 - any import failure is the plug-in's, named in one line
            raise PluginError(f"{where}: its entry point {found[0].value} failed to import "
                              f"({type(e).__name__}: {_line(e)})") from None
    module, attr = parts
    try:
        obj = _module(module)
    except Exception as e:  # noqa: BLE001
        raise PluginError(f"{where}: module {module!r} failed to import ({type(e).__name__}: {_line(e)})") from None
    if not hasattr(obj, attr):
        raise PluginError(f"{where}: module {module!r} has no attribute {attr!r}")
    return getattr(obj, attr)


def load_checked(ref: str, kind: str, needs: tuple[str, ...], expected: str):
    """A plug-in class that has every attribute in `needs`, or a PluginError naming what it lacks."""
    cls = load(ref, kind)
    missing = [a for a in needs if not hasattr(cls, a)]
    if not isinstance(cls, type) or missing:
        raise PluginError(f"{kind} plug-in {ref!r} lacks {', '.join(missing) or 'a class'}: expected {expected}")
    return cls


def check_params(cls, params: dict, kind: str) -> None:
    """Validate a plug-in's parameters with its pydantic Params: the first problem as one line
    (ValueError) under the key the user wrote (params.<key>)."""
    from pydantic import ValidationError

    try:
        cls.Params.model_validate(params)
    except ValidationError as e:
        err = e.errors()[0]
        raise ValueError(f"params.{'.'.join(map(str, err['loc']))}: {err['msg']} ({kind} plug-in "
                         f"{getattr(cls, 'name', cls.__name__)}, got {err.get('input')!r})") from None


def runtime_modules(refs: list[str]) -> list[str]:
    """Local paths Ray's runtime_env py_modules needs so that workers import these plug-ins: a file
    reference's file, or the top-level package (or single module) of an import path outside the
    installed packages. Entry points come with their installed package and need nothing."""
    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    out: list[str] = []
    for ref in refs:
        parts = _split(ref)
        if parts is None:
            continue
        module = parts[0]
        if module.endswith(".py"):
            path = Path(module).resolve()
        else:
            spec = importlib.util.find_spec(module.split(".")[0])
            if spec is None or spec.origin in (None, "built-in", "frozen"):
                path = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations \
                    else None
            else:
                path = Path(spec.origin)
                path = path.parent if path.name == "__init__.py" else path
            if path is None or any(p in path.resolve().parents for p in installed):
                continue
            path = path.resolve()
        if str(path) not in out:
            out.append(str(path))
    return out


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else ""
