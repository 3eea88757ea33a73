"""JSON Schema of the configuration file, generated from the attrs classes."""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from typing import Any
from typing import Literal
from typing import Union
from typing import get_args
from typing import get_origin

import attrs

from ._config import OrionConfig
from ._config import PluginEntry
from ._structure import CONSTRAINED

_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


def type_schema(kind: Any) -> dict[str, Any]:
    """JSON Schema for one annotation (attrs classes, containers, unions, literals, enums)."""
    if kind in _PRIMITIVES:
        return dict(_PRIMITIVES[kind])
    if kind in CONSTRAINED:
        base, keywords = CONSTRAINED[kind]
        return {**_PRIMITIVES[base], **keywords}
    if isinstance(kind, type) and attrs.has(kind):
        return class_schema(kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"enum": [member.value for member in kind]}
    origin, args = get_origin(kind), get_args(kind)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [type_schema(arg) for arg in args]}
    if origin in (list, tuple, set, frozenset, typing.Sequence) or (
        isinstance(origin, type) and issubclass(origin, (list, tuple))
    ):
        item = args[0] if args else Any
        return {"type": "array", "items": type_schema(item)}
    if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": type_schema(value)}
    return {}


def class_schema(cls: type) -> dict[str, Any]:
    """JSON Schema of an attrs class: every field with its type, default and doc."""
    attrs.resolve_types(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        name = field.alias or field.name
        prop = type_schema(field.type)
        doc = field.metadata.get("doc")
        if doc:
            prop["description"] = doc
        if field.default is attrs.NOTHING:
            required.append(name)
        elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = field.default
            if isinstance(default, enum.Enum):
                default = default.value
            if isinstance(default, tuple):
                default = list(default)
            if default is None or isinstance(default, str | int | float | bool | list | dict):
                prop["default"] = default
        properties[name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema["description"] = cls.__doc__.strip().split("\n", 1)[0]
    if required:
        schema["required"] = required
    return schema


def config_schema(plugin_configs: Mapping[str, type]) -> dict[str, Any]:
    """The whole file's schema; each known plugin's ``settings`` gets its ``Config`` schema."""
    schema = class_schema(OrionConfig)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "orion.toml"
    entry = class_schema(PluginEntry)
    plugins: dict[str, Any] = {}
    for name, config_cls in sorted(plugin_configs.items()):
        specific = dict(entry, properties=dict(entry["properties"]))
        specific["properties"]["settings"] = dict(class_schema(config_cls), description=f"Settings of plugin {name!r}.")
        plugins[name] = specific
    schema["properties"]["plugins"] = {
        "type": "object",
        "description": "One table per plugin, [plugins.NAME].",
        "properties": plugins,
        "propertyNames": {"pattern": "^[a-z][a-z0-9]*(_[a-z0-9]+)*$"},
        "additionalProperties": entry,
    }
    return schema
