"""`cmisweep cluster check FILE`: validate a Ray cluster-launcher config against the schema that
ships inside the ray package (and Ray's own extra checks), with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

from cmisweep import configio
from cmisweep.errors import ConfigError


def schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def check(path: str | Path) -> dict:
    import jsonschema

    config = configio.read_yaml(path)
    try:
        jsonschema.validate(config, schema())
    except jsonschema.ValidationError as e:
        keys = [str(p) for p in e.absolute_path]
        message = e.message
        if e.validator == "required":
            missing = message.split("'")[1]
            keys.append(missing)
            message = "required key is missing"
        raise ConfigError(path, ".".join(keys) or None, message) from None
    types = config.get("available_node_types")
    if types is not None:
        head = config.get("head_node_type")
        if head is None:
            raise ConfigError(path, "head_node_type", "required when available_node_types is set")
        if head not in types:
            raise ConfigError(path, "head_node_type", f"{head!r} is not one of available_node_types {sorted(types)}")
        mins = sum(t.get("min_workers", 0) for t in types.values())
        if mins > config.get("max_workers", mins):
            raise ConfigError(path, "max_workers", f"{config['max_workers']} is below the sum of min_workers ({mins})")
    return config
