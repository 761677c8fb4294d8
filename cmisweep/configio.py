"""Reading YAML config files safely and turning validation failures into one-line errors.

Every failure names the file, the key (or the line) and what was expected, as a ConfigError.
"""
from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from cmisweep.errors import ConfigError

M = TypeVar("M", bound=pydantic.BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.1 reads 1e-4 (no dot) as a string; every researcher writes learning rates that way.
_UniqueKeyLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _safe_load(text: str):
    """yaml.safe_load with duplicate keys refused and 1e-4 read as a number."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML file into a mapping with safe loading only (no python/* tags)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, None, "file not found")
    if path.is_dir():
        raise ConfigError(path, None, "expected a YAML file, found a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not a text file (expected UTF-8 YAML)") from None
    if not text.strip():
        raise ConfigError(path, None, "file is empty (expected a YAML mapping)")
    try:
        data = _safe_load(text)
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        problem = e.problem or str(e)
        if "could not determine a constructor" in problem:
            tag = problem.split("tag", 1)[-1].strip(" '").replace("tag:yaml.org,2002:", "!!")
            problem = f"tag {tag} is not allowed (plain YAML only: no python/object or other tags)"
        raise ConfigError(path, f"line {line}", problem) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(path, line, f"not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def _walk(model: type[pydantic.BaseModel], loc: tuple) -> tuple[Any, list[str]]:
    """Follow a pydantic error location through the models; returns (the innermost model, the
    user's key path without the union tags pydantic inserts, e.g. 'pixelcnn_vae')."""
    current: Any = model
    keys: list[str] = []
    for part in loc:
        if isinstance(part, int):
            keys.append(f"[{part}]")
            current = _unwrap(current)
            continue
        members = _model_args(current) if not _is_model(current) else []
        tagged = [m for m in members if part in typing.get_args(m.model_fields["kind"].annotation)] if members else []
        if tagged:
            current = tagged[0]
            continue
        if _is_model(current) and part not in current.model_fields and "kind" in current.model_fields and (
            part in typing.get_args(current.model_fields["kind"].annotation)
        ):
            continue  # the tag of a one-member union
        keys.append(str(part))
        fields = getattr(current, "model_fields", {}) if _is_model(current) else {}
        current = _unwrap(fields[part].annotation) if part in fields else None
    return current, keys


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _model_args(tp: Any) -> list:
    return [a for a in typing.get_args(_strip_annotated(tp)) if _is_model(a) and "kind" in a.model_fields]


def _unwrap(tp: Any) -> Any:
    """Optional[X] / Annotated[X, ...] / list[X] -> X; a union of several models stays a union."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
        return tp
    if origin in (list, tuple, dict):
        args = typing.get_args(tp)
        return _unwrap(args[-1]) if args else tp
    return tp


def _strip_annotated(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is typing.Annotated else tp


_SCALAR_MEMBERS = {"float", "int", "str", "bool"}  # union members pydantic names in a location
_TYPE_ERRORS = {"list_type", "dict_type", "model_type", "model_attributes_type", "float_type", "int_type",
                "string_type", "bool_type", "float_parsing", "int_parsing", "literal_error", "union_tag_invalid"}


def _user_loc(loc: tuple) -> tuple:
    """pydantic's location without the union-member names it inserts ('list[...]', 'Range')."""
    return tuple(p for p in loc if isinstance(p, int) or not (p[:1].isupper() or "[" in p or p.startswith("function-")
                                                                or p in _SCALAR_MEMBERS))


def format_validation_error(err: pydantic.ValidationError, model: type[pydantic.BaseModel]) -> tuple[str | None, str]:
    """(key, expected) for the first error, in words a user can act on. Where a value may take
    several forms (a list or a range), the branch that matched the value's form explains it."""
    errors = err.errors()
    first = errors[0]
    top = _user_loc(first["loc"])
    # a value of the right form with a bad part (a range with high: .inf) explains itself better
    # than the other forms' "expected a list"
    inner = [e for e in errors if _user_loc(e["loc"])[:len(top)] == top and len(_user_loc(e["loc"])) > len(top)
             and e["type"] not in _TYPE_ERRORS]
    if first["type"] in _TYPE_ERRORS and inner:
        first = inner[0]
    here = [e for e in errors if _user_loc(e["loc"]) == _user_loc(first["loc"])]
    specific = [e for e in here if e["type"] not in _TYPE_ERRORS]
    if specific:
        first = specific[0]
    elif len(here) > 1:
        _, keys = _walk(model, _user_loc(first["loc"]))
        forms = sorted({e["msg"].replace("Input should be ", "").replace(
            "a valid dictionary or instance of Range", "a range {low, high}") for e in here})
        return _join(keys), f"expected {' or '.join(forms)}, got {first.get('input')!r}"
    loc = _user_loc(first["loc"])
    kind = first["type"]
    e = first
    if kind == "extra_forbidden":
        parent, keys = _walk(model, loc[:-1])
        keys.append(str(loc[-1]))
        allowed = list(parent.model_fields) if _is_model(parent) else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        msg = "unknown key"
        if hint:
            msg += f"; did you mean '{hint[0]}'?"
        elif allowed:
            msg += f"; expected one of: {', '.join(allowed)}"
        return _join(keys), msg
    _, keys = _walk(model, loc)
    if kind == "missing":
        return _join(keys), "required key is missing"
    msg = e["msg"]
    if msg.startswith("Value error, "):
        return _join(keys), msg[len("Value error, "):]
    if kind == "union_tag_invalid":
        ctx = e.get("ctx", {})
        return _join(keys + [ctx.get("discriminator", "kind").strip("'")]), (
            f"expected one of {ctx.get('expected_tags')}, got {ctx.get('tag')!r}")
    if msg.startswith("Input should be "):
        msg = msg[len("Input should be "):]
        if msg.startswith(("greater", "less")):
            msg = "a value " + msg
    expected = f"expected {msg}, got {e.get('input')!r}"
    if kind == "literal_error" and isinstance(e.get("input"), str):
        options = re.findall(r"'([^']*)'", e["ctx"]["expected"])
        hint = difflib.get_close_matches(e["input"], options, n=1)
        if hint:
            expected += f"; did you mean '{hint[0]}'?"
    return _join(keys), expected


def _join(keys: list[str]) -> str | None:
    return ".".join(keys).replace(".[", "[") or None


def apply_overrides(data: dict, overrides: list[str], file: str | Path | None = None) -> dict:
    """Apply KEY=VALUE overrides (dotted keys, YAML values) to a nested mapping, returning a copy."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(file, item, "an override must look like key.path=value")
        try:
            value = _safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(file, key, f"override value {text!r} is not valid YAML") from None
        try:
            set_dotted(out, key, value)
        except TypeError as err:
            raise ConfigError(file, key, str(err)) from None
    return out


def set_dotted(data: dict, key: str, value) -> None:
    """data["a"]["b"]["c"] = value for key "a.b.c", creating missing mappings on the way."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise TypeError(f"{part} is not a mapping")
        node = child
    node[parts[-1]] = value



def validate(model: type[M], data: dict, file: str | Path | None) -> M:
    """Validate a mapping against a pydantic model; a failure is a ConfigError naming file and key."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as err:
        key, expected = format_validation_error(err, model)
        raise ConfigError(file, key, expected) from None

